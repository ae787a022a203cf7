//! The conformance suite: the same checks for every adapter, through the real connection
//! layer, against that exchange's simulator (`spreadagg-simulate`, in process, speaking the
//! exchange's documented protocol): discovery over REST, subscribe and acks, best bid/ask and
//! trades for every symbol, keep-alive past the exchange's idle deadline, and rotation with no
//! gap. Faults (disconnects, garbage, refusals, stalls) are in `faults.rs`.
//!
//! One macro line per exchange below; an adapter without a line fails
//! `every_adapter_has_a_conformance_line`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spreadagg_model::{ExchangeId, Symbol};
use spreadagg_runtime::Health;
use spreadagg_simulate::{SimConfig, Simulator};
use tokio::time::Instant;

use super::*;
use crate::IngestConfig;
use crate::event::Event;
use crate::exchange::adapter;

pub(super) const SYMBOLS: [&str; 3] = ["BTC-USDT", "ETH-USDT", "SOL-USDT"];

pub(super) fn settings() -> ConnectionSettings {
    ConnectionSettings {
        connect_timeout: Duration::from_secs(3),
        stale_after: Duration::from_secs(15),
        data_stale_after: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(3),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        rotate_after: None,
        rotate_margin: Duration::from_secs(600),
        handover_timeout: Duration::from_secs(9),
    }
}

/// A simulator serving `exchanges` (quick keep-alive timings where the protocol lets the
/// server choose them), every symbol quoted every 20 ms or so.
pub(super) async fn simulator(exchanges: &[ExchangeId], stop: &CancellationToken) -> Simulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig {
        exchanges: exchanges.to_vec(),
        symbols: SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(11),
        binance_ping_interval_s: 1,
        kucoin_ping_interval_ms: 2_000,
        kucoin_ping_timeout_ms: 2_000,
        // Bybit drops a client that has not pinged for this long (we ping every 20 s).
        bybit_idle_timeout_s: 25,
        ..SimConfig::default()
    };
    Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts")
}

/// One exchange's connection under test, and what it delivers.
pub(super) struct Feed {
    pub exchange: ExchangeId,
    pub shared: Arc<Shared>,
    pub health: Health,
    task: JoinHandle<()>,
    _natives: watch::Sender<Vec<String>>,
    /// Canonical symbol per interned id, for messages.
    pub names: Vec<Symbol>,
}

/// Discovers `SYMBOLS` over the simulated exchange's REST API with the real adapter, and runs
/// one connection for them until `stop`.
pub(super) async fn feed(
    sim: &Simulator,
    exchange: ExchangeId,
    settings: ConnectionSettings,
    stop: &CancellationToken,
) -> Feed {
    let adapter = adapter(exchange).into();
    feed_with(sim, exchange, adapter, settings, stop).await
}

/// [`feed`] with a given adapter (a test's wrapper around the exchange's own).
pub(super) async fn feed_with(
    sim: &Simulator,
    exchange: ExchangeId,
    adapter: Arc<dyn crate::exchange::Adapter>,
    settings: ConnectionSettings,
    stop: &CancellationToken,
) -> Feed {
    let endpoint = sim.endpoint(exchange).expect("simulated").clone();
    let http = reqwest::Client::new();
    let wanted = IngestConfig {
        exchange: Some(exchange),
        symbols: SYMBOLS
            .iter()
            .map(|s| s.parse().expect("canonical"))
            .collect(),
        ..IngestConfig::default()
    };
    let selection =
        crate::discovery::discover(adapter.as_ref(), &http, &endpoint.rest_url, &wanted)
            .await
            .unwrap_or_else(|e| panic!("{exchange}: discovery against the simulator: {e}"));
    assert_eq!(
        selection.len(),
        SYMBOLS.len(),
        "{exchange}: discovery finds every listed symbol: {selection:?}"
    );
    let mut table = SymbolTable::new(exchange);
    let mut natives = Vec::new();
    let mut names = Vec::new();
    for inst in selection.values() {
        table
            .intern(&inst.native, &inst.symbol)
            .expect("room in the table");
        natives.push(inst.native.clone());
        names.push(inst.symbol.clone());
    }
    let shared = Arc::new(Shared {
        adapter,
        settings,
        http,
        rest_url: endpoint.rest_url.clone(),
        // KuCoin's endpoint comes from its bootstrap, as in production.
        ws_url: (exchange != ExchangeId::Kucoin).then(|| endpoint.ws_url.clone()),
        symbols: Arc::new(RwLock::new(Arc::new(table))),
        sink: Arc::new(Conflator::new(exchange, 10_000)),
        breaker: Breaker::new(
            exchange,
            5,
            Duration::from_millis(300),
            Duration::from_secs(2),
        ),
        attempts: AttemptLimiter::new(Duration::from_millis(10)),
    });
    let health = Health::new();
    let (tx, rx) = watch::channel(natives);
    let task = tokio::spawn(
        Connection {
            shared: shared.clone(),
            index: 0,
            natives: rx,
            component: health.register("conformance"),
            stop: stop.clone(),
        }
        .run(),
    );
    Feed {
        exchange,
        shared,
        health,
        task,
        _natives: tx,
        names,
    }
}

/// One exchange's simulator and its connection.
pub(super) struct Rig {
    pub sim: Simulator,
    pub stop: CancellationToken,
    pub feed: Feed,
}

impl std::ops::Deref for Rig {
    type Target = Feed;
    fn deref(&self) -> &Feed {
        &self.feed
    }
}

pub(super) async fn rig(exchange: ExchangeId, settings: ConnectionSettings) -> Rig {
    let stop = CancellationToken::new();
    let sim = simulator(&[exchange], &stop).await;
    let feed = feed(&sim, exchange, settings, &stop).await;
    Rig { sim, stop, feed }
}

impl Rig {
    pub async fn stop(self) {
        self.stop.cancel();
        self.feed.join().await;
        tokio::time::timeout(Duration::from_secs(5), self.sim.join())
            .await
            .expect("the simulator stops within 5 s");
    }
}

/// What arrived during a window: per symbol the arrival times of quotes, and the trades.
#[derive(Default)]
pub(super) struct Seen {
    pub quotes: HashMap<u32, Vec<Instant>>,
    /// Each symbol's quotes as (update id, exchange time), in the order they were taken.
    pub updates: HashMap<u32, Vec<(u64, i64)>>,
    pub trades: Vec<crate::event::Print>,
}

impl Seen {
    /// The longest wait between two quotes of one symbol, over all symbols.
    pub fn worst_gap(&self) -> Duration {
        self.quotes
            .values()
            .flat_map(|t| t.windows(2).map(|w| w[1] - w[0]))
            .max()
            .unwrap_or(Duration::MAX)
    }
}

impl Feed {
    /// The connection's `/health` detail.
    pub fn detail(&self) -> Value {
        let report = self.health.report();
        report["components"]["conformance"]["detail"].clone()
    }

    /// Collects events for `window`, checking each one as it comes.
    pub async fn collect(&self, window: Duration) -> Seen {
        let ex = self.exchange;
        let mut seen = Seen::default();
        let mut out = Vec::new();
        let until = Instant::now() + window;
        loop {
            out.clear();
            match tokio::time::timeout_at(until, self.shared.sink.take(256, &mut out)).await {
                Err(_) => return seen,
                Ok(more) => assert!(more, "{ex}: the conflator closed"),
            }
            let now = Instant::now();
            for e in out.drain(..) {
                match e {
                    Event::Quote(q) => {
                        assert!(q.bid_px > 0.0 && q.bid_px < q.ask_px, "{ex}: {q:?}");
                        assert!(q.bid_qty > 0.0 && q.ask_qty > 0.0, "{ex}: {q:?}");
                        assert!(
                            q.exchange_ts_ns == 0 || q.exchange_ts_ns > 1_600_000_000_000_000_000,
                            "{ex}: exchange time in ns: {q:?}"
                        );
                        seen.quotes.entry(q.symbol.0).or_default().push(now);
                        seen.updates
                            .entry(q.symbol.0)
                            .or_default()
                            .push((q.seq, q.exchange_ts_ns));
                    }
                    Event::Print(p) => {
                        assert!(p.price > 0.0 && p.qty > 0.0, "{ex}: {p:?}");
                        assert!(!p.trade_id.is_empty(), "{ex}: a trade id: {p:?}");
                        assert!(
                            p.exchange_ts_ns > 1_600_000_000_000_000_000,
                            "{ex}: trade time in ns: {p:?}"
                        );
                        seen.trades.push(p);
                    }
                }
            }
        }
    }

    /// Waits until the connection reports itself subscribed (every ack in).
    pub async fn wait_connected(&self, within: Duration) {
        let until = Instant::now() + within;
        while self.detail()["state"] != "connected" {
            assert!(
                Instant::now() < until,
                "{}: not connected within {within:?}: {}",
                self.exchange,
                self.health.report()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn generation(&self) -> u64 {
        self.detail()["generation"].as_u64().unwrap_or(0)
    }

    /// Waits for the connection to end (after its `stop` was cancelled).
    pub async fn join(self) {
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the connection stops within 5 s")
            .expect("no panic");
    }
}

/// How long to stay connected to prove keep-alive: past the exchange's idle deadline, as the
/// simulator enforces it (each arm says which).
fn keepalive_window(exchange: ExchangeId) -> Duration {
    Duration::from_secs(match exchange {
        // OKX: 30 s without a message.
        ExchangeId::Okx => 35,
        // MEXC: a minute without PING.
        ExchangeId::Mexc => 65,
        // HTX and BingX: two unanswered 5 s pings.
        ExchangeId::Htx | ExchangeId::Bingx => 13,
        // KuCoin: ping interval + timeout as the simulator sets them here.
        ExchangeId::Kucoin => 7,
        // The simulator closes a Gate connection whose client is silent for 30 s.
        ExchangeId::Gateio => 35,
        // No `ping` for 30 s closes a Bitget connection; the adapter pings every 25 s.
        ExchangeId::Bitget => 35,
        // Bybit: 25 s without a ping, as the simulator sets it here.
        ExchangeId::Bybit => 30,
        // The simulator closes a Kraken client silent for a minute; the adapter pings every 30 s.
        ExchangeId::Kraken => 65,
        // Binance: pongs to 1 s pings.
        _ => 5,
    })
}

async fn streams_best_bid_ask_and_trades_for_every_symbol(exchange: ExchangeId) {
    let rig = rig(exchange, settings()).await;
    rig.wait_connected(Duration::from_secs(15)).await;
    let seen = rig.collect(Duration::from_secs(3)).await;
    for (i, name) in rig.names.iter().enumerate() {
        let n = seen.quotes.get(&(i as u32)).map_or(0, Vec::len);
        assert!(n >= 10, "{exchange}: {n} quotes of {name} in 3 s");
    }
    assert!(
        seen.trades.len() >= 5,
        "{exchange}: {} trades in 3 s",
        seen.trades.len()
    );
    rig.stop().await;
}

async fn stays_connected_past_the_keepalive_deadline(exchange: ExchangeId) {
    let rig = rig(exchange, settings()).await;
    rig.wait_connected(Duration::from_secs(15)).await;
    let generation = rig.generation();
    let seen = rig.collect(keepalive_window(exchange)).await;
    assert_eq!(
        rig.generation(),
        generation,
        "{exchange}: the session was replaced: {}",
        rig.health.report()
    );
    assert!(
        seen.worst_gap() < Duration::from_secs(2),
        "{exchange}: a {:?} gap in quotes",
        seen.worst_gap()
    );
    rig.stop().await;
}

async fn rotates_without_a_gap(exchange: ExchangeId) {
    let rig = rig(
        exchange,
        ConnectionSettings {
            rotate_after: Some(Duration::from_secs(2)),
            ..settings()
        },
    )
    .await;
    rig.wait_connected(Duration::from_secs(15)).await;
    let seen = rig.collect(Duration::from_secs(9)).await;
    // Handovers, not attempts: a successor took over (subscribed, then the old one closed).
    let handovers = rig.detail()["handovers"].as_u64().unwrap_or(0);
    assert!(
        handovers >= 2,
        "{exchange}: {handovers} completed handovers in 9 s at a 2 s age: {}",
        rig.health.report()
    );
    assert!(
        rig.generation() >= 3,
        "{exchange}: the serving session is a successor's successor"
    );
    // Make before break: quotes never pause for a reconnect (the simulator quotes each symbol
    // every 20 ms, jittered).
    assert!(
        seen.worst_gap() < Duration::from_millis(1_000),
        "{exchange}: a {:?} gap in quotes across rotations",
        seen.worst_gap()
    );
    // Both connections feed the conflator during the overlap; what it hands on never goes back
    // in time: no quote after a later one of its symbol (by update id where there is one, by
    // exchange time where there is none).
    for (symbol, updates) in &seen.updates {
        for w in updates.windows(2) {
            let ((seq0, ts0), (seq1, ts1)) = (w[0], w[1]);
            let back = if seq0 != 0 && seq1 != 0 {
                seq1 < seq0
            } else {
                ts0 != 0 && ts1 != 0 && ts1 < ts0
            };
            assert!(
                !back,
                "{exchange}: symbol {symbol} went back from {:?} to {:?} across a rotation",
                w[0], w[1]
            );
        }
    }
    // A trade seen twice is the same trade (same id, same values), which the stream's
    // duplicate window stores once.
    let mut by_id: HashMap<(u32, &str), &crate::event::Print> = HashMap::new();
    for p in &seen.trades {
        if let Some(first) = by_id.insert((p.symbol.0, p.trade_id.as_str()), p) {
            assert_eq!(
                (first.price, first.qty, first.side, first.exchange_ts_ns),
                (p.price, p.qty, p.side, p.exchange_ts_ns),
                "{exchange}: one trade id, two different trades"
            );
        }
    }
    rig.stop().await;
}

async fn survives_malformed_frames(exchange: ExchangeId) {
    let rig = rig(exchange, settings()).await;
    rig.wait_connected(Duration::from_secs(15)).await;
    let generation = rig.generation();
    rig.sim
        .inject(exchange, spreadagg_simulate::Fault::Garbage { count: 5 })
        .expect("fault accepted");
    let seen = rig.collect(Duration::from_secs(2)).await;
    assert_eq!(
        rig.generation(),
        generation,
        "{exchange}: malformed frames ended the session: {}",
        rig.health.report()
    );
    assert_eq!(seen.quotes.len(), SYMBOLS.len(), "{exchange}: data goes on");
    rig.stop().await;
}

async fn resubscribes_after_a_disconnect(exchange: ExchangeId) {
    let rig = rig(exchange, settings()).await;
    rig.wait_connected(Duration::from_secs(15)).await;
    let generation = rig.generation();
    rig.sim
        .inject(exchange, spreadagg_simulate::Fault::Disconnect)
        .expect("fault accepted");
    let until = Instant::now() + Duration::from_secs(10);
    while rig.generation() == generation {
        assert!(
            Instant::now() < until,
            "{exchange}: no new session after a disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.wait_connected(Duration::from_secs(10)).await;
    let seen = rig.collect(Duration::from_secs(2)).await;
    for (i, name) in rig.names.iter().enumerate() {
        let n = seen.quotes.get(&(i as u32)).map_or(0, Vec::len);
        assert!(
            n >= 5,
            "{exchange}: {n} quotes of {name} after resubscribing"
        );
    }
    rig.stop().await;
}

macro_rules! conformance {
    ($($name:ident => $exchange:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn streams_best_bid_ask_and_trades_for_every_symbol() {
                    super::streams_best_bid_ask_and_trades_for_every_symbol($exchange).await;
                }

                #[tokio::test]
                async fn stays_connected_past_the_keepalive_deadline() {
                    super::stays_connected_past_the_keepalive_deadline($exchange).await;
                }

                #[tokio::test]
                async fn rotates_without_a_gap() {
                    super::rotates_without_a_gap($exchange).await;
                }

                #[tokio::test]
                async fn survives_malformed_frames() {
                    super::survives_malformed_frames($exchange).await;
                }

                #[tokio::test]
                async fn resubscribes_after_a_disconnect() {
                    super::resubscribes_after_a_disconnect($exchange).await;
                }
            }
        )*

        #[test]
        fn every_adapter_has_a_conformance_line() {
            let covered = [$($exchange),*];
            for id in ExchangeId::ALL {
                assert!(covered.contains(&id), "{id} has an adapter but no conformance line");
            }
        }
    };
}

conformance! {
    binance => ExchangeId::Binance,
    bybit => ExchangeId::Bybit,
    okx => ExchangeId::Okx,
    htx => ExchangeId::Htx,
    kucoin => ExchangeId::Kucoin,
    mexc => ExchangeId::Mexc,
    kraken => ExchangeId::Kraken,
    coinbase => ExchangeId::Coinbase,
    bitget => ExchangeId::Bitget,
    gateio => ExchangeId::Gateio,
    bingx => ExchangeId::Bingx,
}
