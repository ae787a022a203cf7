//! The simulator role (`spreadagg simulate`): serves the Binance spot, OKX v5 and HTX spot
//! public market-data protocols on local ports, exactly as the exchanges document them, so that any
//! ingest client (ours or anyone's) can connect to it instead of the real exchange.
//!
//! Every exchange quotes from one shared random-walk market (`market/`), so a symbol moves
//! together across exchanges and cross-exchange spreads look real: a few basis points,
//! mean-reverting, occasionally wide. Each exchange has its own module with its wire encoding,
//! WebSocket session and REST routes (`exchange/binance/`, `exchange/okx/`, `exchange/htx/`), and its own listener: exchanges
//! never share a port (MEXC will reuse Binance's REST paths).
//!
//! Everything is owned and bounded: every task is on the simulator's [`TaskTracker`] and ends
//! when the `stop` token is cancelled (WebSocket sessions with a Close frame), sessions per
//! exchange are capped, a slow session skips market events (counted in
//! `spreadagg_sim_lagged_events_total`) and never slows the market, and a client that does not
//! read is dropped.

mod exchange;
mod fault;
mod format;
mod market;
mod ws;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spreadagg_model::ExchangeId;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fault::Faults;
pub use crate::fault::{
    ActiveFault, Fault, FaultError, MAX_ACTIVE, MAX_DELAY_MS, MAX_DURATION_MS, MAX_GARBAGE_FRAMES,
    MAX_REFUSALS, OVERSIZED_BYTES,
};
use crate::market::{Board, Model, Universe, now_us};
use crate::ws::{ExchangeCtx, MAX_SESSIONS};

/// The exchanges whose protocols the simulator speaks.
pub const SIMULATED_EXCHANGES: [ExchangeId; 3] =
    [ExchangeId::Binance, ExchangeId::Okx, ExchangeId::Htx];

/// Most symbols one simulator serves; each costs a few hundred bytes and its share of the
/// market's events.
pub const MAX_SYMBOLS: usize = 2_000;

/// Market events buffered per symbol on each exchange's broadcast channel (about ten seconds
/// of quotes and trades at the default rate); a session further behind skips the oldest.
const EVENTS_PER_SYMBOL: usize = 128;
/// Bounds on each exchange's broadcast channel, whatever the symbol count.
const EVENT_BUFFER_BOUNDS: (usize, usize) = (1_024, 65_536);

/// Configuration of the simulator. Every field has a default, so an empty file (or none)
/// simulates Binance, OKX and HTX on free local ports.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Address every exchange's listener binds to. Default `127.0.0.1`; `0.0.0.0` serves other
    /// hosts too (the endpoints then name the loopback address).
    pub host: IpAddr,
    /// Exchanges to serve, by id. Default: every simulated exchange ([`SIMULATED_EXCHANGES`]); any other id is refused with
    /// "not simulated yet" until its protocol is added.
    #[serde(
        serialize_with = "exchange_list::serialize",
        deserialize_with = "exchange_list::deserialize"
    )]
    pub exchanges: Vec<ExchangeId>,
    /// Port per exchange. An exchange absent here, or given 0, gets a free port from the OS;
    /// the ports actually bound are in [`Simulator::endpoints`]. Two exchanges may not share a
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
        }
    }
}

impl SimConfig {
    /// Checks the configuration without binding anything.
    ///
    /// # Errors
    /// [`SimError::NotSimulated`] for an exchange the simulator cannot serve yet;
    /// [`SimError::InvalidConfig`] for anything else out of range, naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::InvalidConfig(msg));
        if self.exchanges.is_empty() {
            return invalid("exchanges: at least one exchange is needed".into());
        }
        for (i, exchange) in self.exchanges.iter().enumerate() {
            if !SIMULATED_EXCHANGES.contains(exchange) {
                return Err(SimError::NotSimulated(*exchange));
            }
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
        Universe::new(&self.symbols, &self.exchanges)
            .map(|_| ())
            .map_err(SimError::InvalidConfig)
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("exchange {0} is not simulated yet (the simulator serves binance, okx and htx)")]
    NotSimulated(ExchangeId),
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

/// Where one simulated exchange is served: the values for `ingest --ws-url` and `--rest-url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub exchange: ExchangeId,
    /// The whole WebSocket endpoint as the exchange publishes it, on our host and port:
    /// `ws://127.0.0.1:PORT/ws` (Binance), `ws://127.0.0.1:PORT/ws/v5/public` (OKX).
    pub ws_url: String,
    /// Scheme and host of the REST API: `http://127.0.0.1:PORT`.
    pub rest_url: String,
}

/// A running simulator: every exchange's listener bound and the market moving.
#[derive(Debug)]
pub struct Simulator {
    endpoints: Vec<Endpoint>,
    tracker: TaskTracker,
    seed: u64,
    /// Each exchange's faults, shared with its sessions and its admin routes.
    faults: Vec<(ExchangeId, Arc<Faults>)>,
}

/// The address clients should dial: the bound one, or loopback if bound to "any".
fn advertised(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

impl Simulator {
    /// Binds every exchange's listener and starts the market. Ports are bound before this
    /// returns, so the endpoints can be dialled at once.
    ///
    /// # Errors
    /// An invalid configuration, an exchange not simulated yet, or a port that cannot be
    /// bound; nothing keeps running after an error.
    pub async fn start(config: SimConfig, stop: CancellationToken) -> Result<Simulator, SimError> {
        config.validate()?;
        let universe = Arc::new(
            Universe::new(&config.symbols, &config.exchanges).map_err(SimError::InvalidConfig)?,
        );
        // Bind everything first: a port conflict fails the start with nothing running.
        let mut listeners = Vec::with_capacity(config.exchanges.len());
        for &exchange in &config.exchanges {
            let addr = SocketAddr::new(
                config.host,
                config.ports.get(&exchange).copied().unwrap_or(0),
            );
            let bind_error = |source| SimError::Bind {
                exchange,
                addr,
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            listeners.push((exchange, listener, local));
        }

        let seed = config.seed.unwrap_or_else(rand::random);
        let model = Model::new(
            universe.clone(),
            Duration::from_millis(config.update_interval_ms),
            config.trade_probability,
            seed,
        );
        let board = Arc::new(Board::new(
            universe.instruments.len(),
            model.snapshot(now_us()),
        ));
        let capacity = (universe.instruments.len() * EVENTS_PER_SYMBOL)
            .clamp(EVENT_BUFFER_BOUNDS.0, EVENT_BUFFER_BOUNDS.1);
        let tracker = TaskTracker::new();
        let mut channels = Vec::with_capacity(listeners.len());
        let mut endpoints = Vec::with_capacity(listeners.len());
        let mut routers = Vec::with_capacity(listeners.len());
        let mut fault_sets = Vec::with_capacity(listeners.len());
        for (index, (exchange, listener, local)) in listeners.into_iter().enumerate() {
            let (events, _) = broadcast::channel(capacity);
            let faults = Arc::new(Faults::new(exchange));
            fault_sets.push((exchange, faults.clone()));
            channels.push(events.clone());
            let ctx = Arc::new(ExchangeCtx {
                exchange,
                index,
                universe: universe.clone(),
                board: board.clone(),
                events,
                stop: stop.clone(),
                tracker: tracker.clone(),
                sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
                binance_ping_interval: Duration::from_secs(config.binance_ping_interval_s),
                faults: faults.clone(),
            });
            let (router, ws_path) = match exchange {
                ExchangeId::Binance => (exchange::binance::router(ctx), "/ws"),
                ExchangeId::Okx => (exchange::okx::router(ctx), "/ws/v5/public"),
                ExchangeId::Htx => (exchange::htx::router(ctx), exchange::htx::WS_PATH),
                other => return Err(SimError::NotSimulated(other)),
            };
            let at = advertised(local);
            endpoints.push(Endpoint {
                exchange,
                ws_url: format!("ws://{at}{ws_path}"),
                rest_url: format!("http://{at}"),
            });
            let router = router.merge(fault::admin::router(faults));
            routers.push((exchange, listener, router));
        }
        for (exchange, listener, router) in routers {
            let stop = stop.clone();
            tracker.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(exchange = exchange.as_str(), error = %e, "simulated exchange stopped serving");
                }
            });
        }
        tracker.spawn(market::run(model, board, channels, stop));
        for e in &endpoints {
            tracing::info!(
                exchange = e.exchange.as_str(),
                ws_url = %e.ws_url,
                rest_url = %e.rest_url,
                "simulated exchange listening"
            );
        }
        tracing::info!(
            seed,
            symbols = universe.instruments.len(),
            "simulated market started"
        );
        Ok(Simulator {
            endpoints,
            tracker,
            seed,
            faults: fault_sets,
        })
    }

    /// Where each simulated exchange is served, in the order of `exchanges`.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint of one exchange, if it is simulated here.
    pub fn endpoint(&self, exchange: ExchangeId) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.exchange == exchange)
    }

    /// The market's seed (the configured one, or the one drawn for this run).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn faults_of(&self, exchange: ExchangeId) -> Result<&Faults, FaultError> {
        self.faults
            .iter()
            .find(|(e, _)| *e == exchange)
            .map(|(_, f)| f.as_ref())
            .ok_or(FaultError::NotSimulated(exchange))
    }

    /// Injects a fault on one exchange, as `POST /sim/faults` does: one-shot faults hit the
    /// sessions open now, windowed and counted ones also those opened while they last.
    ///
    /// # Errors
    /// The exchange is not simulated here, or a parameter is out of range.
    pub fn inject(&self, exchange: ExchangeId, fault: Fault) -> Result<(), FaultError> {
        self.faults_of(exchange)?.inject(fault)
    }

    /// Ends every windowed and counted fault on one exchange (`DELETE /sim/faults`).
    ///
    /// # Errors
    /// The exchange is not simulated here.
    pub fn clear_faults(&self, exchange: ExchangeId) -> Result<(), FaultError> {
        self.faults_of(exchange)?.clear();
        Ok(())
    }

    /// The windowed and counted faults in force on one exchange (`GET /sim/faults`).
    ///
    /// # Errors
    /// The exchange is not simulated here.
    pub fn active_faults(&self, exchange: ExchangeId) -> Result<Vec<ActiveFault>, FaultError> {
        Ok(self
            .faults_of(exchange)?
            .active(tokio::time::Instant::now()))
    }

    /// Waits until `stop` is cancelled and every task has finished: the market, the
    /// listeners, and every WebSocket session (each closed with a Close frame).
    pub async fn join(self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_realistic() {
        let c = SimConfig::default();
        c.validate().expect("defaults validate");
        for s in [
            "BTC-USDT",
            "ETH-USDT",
            "SOL-USDT",
            "XRP-USDT",
            "DOGE-USDT",
            "BTC-USDC",
            "ETH-BTC",
            "NULS-USDT",
        ] {
            assert!(c.symbols.iter().any(|x| x == s), "{s}");
        }
        assert_eq!(c.exchanges, SIMULATED_EXCHANGES.to_vec());
        assert_eq!((c.update_interval_ms, c.binance_ping_interval_s), (100, 20));
    }

    #[test]
    fn config_files_use_exchange_ids() {
        let c: SimConfig = serde_json::from_value(serde_json::json!({
            "exchanges": ["okx"],
            "ports": {"okx": 18443},
            "seed": 7
        }))
        .expect("parses");
        assert_eq!(c.exchanges, vec![ExchangeId::Okx]);
        assert_eq!(c.ports.get(&ExchangeId::Okx), Some(&18443));
        assert_eq!(c.seed, Some(7));
        let round: SimConfig =
            serde_json::from_value(serde_json::to_value(&c).expect("serialises"))
                .expect("round trip");
        assert_eq!(round, c);
        for bad in [
            serde_json::json!({"exchange": ["okx"]}),
            serde_json::json!({"exchanges": ["ftx"]}),
            serde_json::json!({"ports": {"Binance": 1}}),
        ] {
            assert!(
                serde_json::from_value::<SimConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_configs_name_the_problem() {
        let cases: Vec<(SimConfig, &str)> = vec![
            (
                SimConfig {
                    exchanges: vec![ExchangeId::Bybit],
                    ..Default::default()
                },
                "not simulated yet",
            ),
            (
                SimConfig {
                    exchanges: vec![],
                    ..Default::default()
                },
                "exchanges",
            ),
            (
                SimConfig {
                    exchanges: vec![ExchangeId::Okx, ExchangeId::Okx],
                    ..Default::default()
                },
                "twice",
            ),
            (
                SimConfig {
                    ports: BTreeMap::from([(ExchangeId::Binance, 9000), (ExchangeId::Okx, 9000)]),
                    ..Default::default()
                },
                "each exchange needs its own",
            ),
            (
                SimConfig {
                    exchanges: vec![ExchangeId::Okx],
                    ports: BTreeMap::from([(ExchangeId::Binance, 9000)]),
                    ..Default::default()
                },
                "ports",
            ),
            (
                SimConfig {
                    symbols: vec![],
                    ..Default::default()
                },
                "symbols",
            ),
            (
                SimConfig {
                    symbols: vec!["btcusdt".into()],
                    ..Default::default()
                },
                "symbols",
            ),
            (
                SimConfig {
                    update_interval_ms: 0,
                    ..Default::default()
                },
                "update_interval_ms",
            ),
            (
                SimConfig {
                    trade_probability: 1.5,
                    ..Default::default()
                },
                "trade_probability",
            ),
            (
                SimConfig {
                    trade_probability: f64::NAN,
                    ..Default::default()
                },
                "trade_probability",
            ),
            (
                SimConfig {
                    binance_ping_interval_s: 0,
                    ..Default::default()
                },
                "binance_ping_interval_s",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn unspecified_hosts_advertise_loopback() {
        let any: SocketAddr = "0.0.0.0:1234".parse().expect("addr");
        assert_eq!(advertised(any).to_string(), "127.0.0.1:1234");
        let any6: SocketAddr = "[::]:1234".parse().expect("addr");
        assert_eq!(advertised(any6).to_string(), "[::1]:1234");
        let one: SocketAddr = "10.1.2.3:99".parse().expect("addr");
        assert_eq!(advertised(one), one);
    }

    #[tokio::test]
    async fn a_taken_port_fails_the_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let config = SimConfig {
            ports: BTreeMap::from([(ExchangeId::Okx, port)]),
            ..Default::default()
        };
        let err = Simulator::start(config, CancellationToken::new())
            .await
            .expect_err("port taken");
        assert!(
            matches!(
                err,
                SimError::Bind {
                    exchange: ExchangeId::Okx,
                    ..
                }
            ),
            "{err}"
        );
    }
}
