//! The simulator's configuration (`[simulate]`) and its validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spreadagg_model::ExchangeId;

use crate::market::{self, Universe};

/// The exchanges whose protocols the simulator speaks: every exchange of the contract.
pub const SIMULATED_EXCHANGES: [ExchangeId; 11] = ExchangeId::ALL;

/// Most symbols one simulator serves; each costs a few hundred bytes and its share of the
/// market's events.
pub const MAX_SYMBOLS: usize = 2_000;

/// Configuration of the simulator. Every field has a default, so an empty file (or none)
/// simulates every exchange of [`SIMULATED_EXCHANGES`] on free local ports.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Address every exchange's listener binds to. Default `127.0.0.1`; `0.0.0.0` serves other
    /// hosts too (the endpoints then name the loopback address).
    pub host: IpAddr,
    /// Exchanges to serve, by id. Default: all eleven ([`SIMULATED_EXCHANGES`]).
    #[serde(
        serialize_with = "exchange_list::serialize",
        deserialize_with = "exchange_list::deserialize"
    )]
    pub exchanges: Vec<ExchangeId>,
    /// Port per exchange. An exchange absent here, or given 0, gets a free port from the OS;
    /// the ports actually bound are in [`crate::Simulator::endpoints`]. Two exchanges may not share a
    /// port.
    #[serde(
        serialize_with = "port_map::serialize",
        deserialize_with = "port_map::deserialize"
    )]
    pub ports: BTreeMap<ExchangeId, u16>,
    /// Canonical symbols (`BASE-QUOTE`) every simulated exchange lists and quotes. Default: the
    /// majors against USDT, a USDC pair, a non-USD quote (`ETH-BTC`) and a low-volume pair
    /// (`NULS-USDT`). Unknown symbols get a made-up but stable price, tick and volume.
    pub symbols: Vec<String>,
    /// Each exchange publishes a best bid/ask per symbol about this often, in milliseconds,
    /// jittered ±50 %. Default 100; at least 5.
    pub update_interval_ms: u64,
    /// Chance that an update also prints a trade, per update per symbol. Default 0.3.
    pub trade_probability: f64,
    /// Seed of the market's random walk: the same seed gives the same prices, sizes and
    /// trades. Default: a fresh seed per run, logged at start.
    pub seed: Option<u64>,
    /// Seconds between Binance's server Ping frames. Default 20 (as Binance); a client must
    /// answer with a Pong within 60 s.
    pub binance_ping_interval_s: u64,
    /// KuCoin's `pingInterval` in the bullet-public response, in milliseconds. Default 18000
    /// (as KuCoin); between 1000 and 60000.
    pub kucoin_ping_interval_ms: u64,
    /// KuCoin's `pingTimeout`, in milliseconds: a client silent for `pingInterval +
    /// pingTimeout` is dropped. Default 10000 (as KuCoin); between 1000 and 60000.
    pub kucoin_ping_timeout_ms: u64,
    /// Seconds a Bybit client may go without sending `{"op":"ping"}` before it is dropped.
    /// Default 600 (Bybit cuts a connection after 10 minutes without ping-pong or data; the
    /// simulator counts pings only); between 1 and 3600.
    pub bybit_idle_timeout_s: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            exchanges: SIMULATED_EXCHANGES.to_vec(),
            ports: BTreeMap::new(),
            symbols: market::DEFAULT_SYMBOLS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            update_interval_ms: 100,
            trade_probability: 0.3,
            seed: None,
            binance_ping_interval_s: 20,
            kucoin_ping_interval_ms: crate::exchange::kucoin::DEFAULT_PING_INTERVAL_MS,
            kucoin_ping_timeout_ms: crate::exchange::kucoin::DEFAULT_PING_TIMEOUT_MS,
            bybit_idle_timeout_s: crate::exchange::bybit::DEFAULT_IDLE_TIMEOUT_S,
        }
    }
}

impl SimConfig {
    /// Checks the configuration without binding anything.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] for anything out of range, naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::InvalidConfig(msg));
        if self.exchanges.is_empty() {
            return invalid("exchanges: at least one exchange is needed".into());
        }
        for (i, exchange) in self.exchanges.iter().enumerate() {
            if self.exchanges[..i].contains(exchange) {
                return invalid(format!("exchanges: {exchange} is listed twice"));
            }
        }
        let mut taken: BTreeMap<u16, ExchangeId> = BTreeMap::new();
        for (exchange, port) in &self.ports {
            if !self.exchanges.contains(exchange) {
                return invalid(format!("ports: {exchange} is not in `exchanges`"));
            }
            if *port != 0
                && let Some(other) = taken.insert(*port, *exchange)
            {
                return invalid(format!(
                    "ports: {other} and {exchange} both want port {port}; each exchange needs its own"
                ));
            }
        }
        if self.symbols.is_empty() || self.symbols.len() > MAX_SYMBOLS {
            return invalid(format!(
                "symbols: between 1 and {MAX_SYMBOLS} symbols, got {}",
                self.symbols.len()
            ));
        }
        if !(5..=60_000).contains(&self.update_interval_ms) {
            return invalid(format!(
                "update_interval_ms: between 5 and 60000, got {}",
                self.update_interval_ms
            ));
        }
        if !(self.trade_probability.is_finite() && (0.0..=1.0).contains(&self.trade_probability)) {
            return invalid(format!(
                "trade_probability: between 0 and 1, got {}",
                self.trade_probability
            ));
        }
        if !(1..=3_600).contains(&self.binance_ping_interval_s) {
            return invalid(format!(
                "binance_ping_interval_s: between 1 and 3600, got {}",
                self.binance_ping_interval_s
            ));
        }
        if !(1..=3_600).contains(&self.bybit_idle_timeout_s) {
            return invalid(format!(
                "bybit_idle_timeout_s: between 1 and 3600, got {}",
                self.bybit_idle_timeout_s
            ));
        }
        // The ingest adapter refuses a pingInterval outside 1..60 s; so does KuCoin's range.
        for (field, value) in [
            ("kucoin_ping_interval_ms", self.kucoin_ping_interval_ms),
            ("kucoin_ping_timeout_ms", self.kucoin_ping_timeout_ms),
        ] {
            if !(1_000..=60_000).contains(&value) {
                return invalid(format!("{field}: between 1000 and 60000, got {value}"));
            }
        }
        Universe::new(&self.symbols, &self.exchanges)
            .map(|_| ())
            .map_err(SimError::InvalidConfig)
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot listen for {exchange} on {addr}: {source}")]
    Bind {
        exchange: ExchangeId,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `exchanges` as lowercase ids in configuration files.
mod exchange_list {
    use super::*;
    use serde::de::Error as _;

    pub(super) fn serialize<S: Serializer>(list: &[ExchangeId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|e| e.as_str()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ExchangeId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|name| name.parse().map_err(D::Error::custom))
            .collect()
    }
}

/// `ports` as a table keyed by lowercase exchange id in configuration files.
mod port_map {
    use super::*;
    use serde::de::Error as _;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<ExchangeId, u16>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(e, p)| (e.as_str(), p)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ExchangeId, u16>, D::Error> {
        BTreeMap::<String, u16>::deserialize(d)?
            .into_iter()
            .map(|(name, port)| Ok((name.parse().map_err(D::Error::custom)?, port)))
            .collect()
    }
}
