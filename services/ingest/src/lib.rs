//! The ingest role: one exchange's public market data, normalised to `Tick` and `Trade` and
//! published to `md.tick.<exchange>.<symbol>` / `md.trade.<exchange>.<symbol>`.
//!
//! Flow: discovery over REST (retried with backoff until it selects something, then again
//! every `rediscover_every_s`) -> the selected symbols, interned (`symbols`), split into
//! connections within the exchange's caps -> one supervisor per connection (`connection`)
//! running sessions of the exchange's protocol (`exchange`) -> the conflator (`conflate`:
//! latest quote per symbol, bounded trade FIFO) -> one publisher (`publish`) with bounded
//! in-flight acknowledgements. On stop the connections close, the publisher drains the
//! conflator and flushes until the drain deadline, and `run` returns.

pub mod codec;
pub mod conflate;
pub(crate) mod connection;
pub mod discovery;
pub mod event;
pub mod exchange;
mod freshness;
mod groups;
pub mod publish;
pub mod symbols;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use spreadagg_bus::Bus;
use spreadagg_model::{ExchangeId, Symbol};
use spreadagg_runtime::Health;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conflate::Conflator;
use crate::connection::breaker::Breaker;
use crate::connection::pacing::{AttemptLimiter, Backoff};
use crate::connection::{Connection, ConnectionSettings, Shared};
use crate::groups::Groups;
use crate::symbols::SymbolTable;

pub use spreadagg_model::Shard;

/// Configuration of one ingestor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The exchange to ingest (required).
    pub exchange: Option<ExchangeId>,
    /// Explicit canonical symbols; when set, discovery filters are not applied.
    pub symbols: Vec<Symbol>,
    /// Quote assets kept by discovery.
    pub quotes: Vec<String>,
    /// Minimum 24 h quote volume (inclusive).
    pub min_volume: Option<f64>,
    /// Maximum 24 h quote volume (inclusive).
    pub max_volume: Option<f64>,
    /// Replaces the exchange's whole WebSocket endpoint.
    pub ws_url: Option<String>,
    /// Replaces the exchange's REST scheme and host.
    pub rest_url: Option<String>,
    pub shard: Shard,
    /// Trades buffered while the bus is slower than the feed; past it new trades are dropped
    /// and counted. (Quotes conflate per symbol and need no such bound.)
    pub trade_buffer: usize,
    /// Publishes awaiting acknowledgement.
    pub max_in_flight: usize,
    /// Link watchdog: a connection on which no frame at all arrived for this long is recycled.
    pub stale_after_s: u64,
    /// Data watchdog: a subscribed connection with no market data for this long is recycled
    /// (keep-alive answers and acks do not count).
    pub data_stale_after_s: u64,
    /// How long a subscribe request may wait for its ack before it is sent again.
    pub ack_timeout_s: u64,
    pub connect_timeout_s: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Failed connection attempts in a row that open the exchange's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker pauses attempts (doubling after a failed probe, up to 10x).
    pub breaker_cooldown_s: u64,
    /// Least time between two connection attempts to this exchange.
    pub connect_interval_ms: u64,
    /// Rotate connections at this age; 0: at the exchange's maximum age less
    /// `rotate_margin_s` (Binance and MEXC close at 24 h).
    pub rotate_after_s: u64,
    pub rotate_margin_s: u64,
    /// Re-discovery period (jittered by up to a tenth); 0 turns it off.
    pub rediscover_every_s: u64,
    /// On shutdown, how long the publisher may flush before the rest is counted as lost.
    pub drain_timeout_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            exchange: None,
            symbols: Vec::new(),
            quotes: vec!["USDT".into(), "USDC".into()],
            min_volume: None,
            max_volume: None,
            ws_url: None,
            rest_url: None,
            shard: Shard::default(),
            trade_buffer: 100_000,
            max_in_flight: 1024,
            stale_after_s: 30,
            data_stale_after_s: 60,
            ack_timeout_s: 10,
            connect_timeout_s: 10,
            backoff_min_ms: 250,
            backoff_max_ms: 30_000,
            breaker_threshold: 5,
            breaker_cooldown_s: 30,
            connect_interval_ms: 500,
            rotate_after_s: 0,
            rotate_margin_s: 600,
            rediscover_every_s: 900,
            drain_timeout_ms: 3_000,
        }
    }
}

/// Why the role could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no exchange given (--exchange)")]
    NoExchange,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

impl IngestConfig {
    /// # Errors
    /// When a bound or capacity is out of range.
    pub fn validate(&self) -> Result<(), IngestError> {
        if self.exchange.is_none() {
            return Err(IngestError::NoExchange);
        }
        if let (Some(min), Some(max)) = (self.min_volume, self.max_volume)
            && min > max
        {
            return Err(IngestError::Config(format!(
                "min_volume {min} > max_volume {max}"
            )));
        }
        if self.trade_buffer == 0 || self.max_in_flight == 0 {
            return Err(IngestError::Config(
                "trade_buffer and max_in_flight must be > 0".into(),
            ));
        }
        for (name, v) in [
            ("stale_after_s", self.stale_after_s),
            ("data_stale_after_s", self.data_stale_after_s),
            ("ack_timeout_s", self.ack_timeout_s),
            ("connect_timeout_s", self.connect_timeout_s),
            ("breaker_cooldown_s", self.breaker_cooldown_s),
        ] {
            if v == 0 {
                return Err(IngestError::Config(format!("{name} must be > 0")));
            }
        }
        // A successor needs time to connect and subscribe (three ack timeouts) before the old
        // connection's age or margin runs out.
        let handover = self.ack_timeout_s.saturating_mul(3);
        if self.rotate_after_s != 0 && self.rotate_after_s <= handover {
            return Err(IngestError::Config(format!(
                "rotate_after_s must be 0 (the exchange's maximum age) or more than 3 x ack_timeout_s ({handover}), got {}",
                self.rotate_after_s
            )));
        }
        if self.rotate_margin_s <= handover || self.rotate_margin_s > 6 * 3600 {
            return Err(IngestError::Config(format!(
                "rotate_margin_s must be more than 3 x ack_timeout_s ({handover}) and at most 21600, got {}",
                self.rotate_margin_s
            )));
        }
        if self.rediscover_every_s != 0 && self.rediscover_every_s < 10 {
            return Err(IngestError::Config(format!(
                "rediscover_every_s must be 0 (off) or at least 10, got {}",
                self.rediscover_every_s
            )));
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err(IngestError::Config(
                "need 0 < backoff_min_ms <= backoff_max_ms".into(),
            ));
        }
        Ok(())
    }
}

/// Runs the ingestor until `stop` is cancelled.
///
/// # Errors
/// When the exchange is missing or has no adapter, or the configuration is invalid. Network
/// failures are not errors: they are retried for as long as the role runs.
pub async fn run(
    mut config: IngestConfig,
    bus: Bus,
    health: Health,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    config.validate()?;
    let exchange = config.exchange.ok_or(IngestError::NoExchange)?;
    for q in &mut config.quotes {
        q.make_ascii_uppercase();
    }
    let adapter: Arc<dyn exchange::Adapter> = exchange::adapter(exchange).into();
    let ex = exchange.as_str();
    let rest_url = config
        .rest_url
        .clone()
        .unwrap_or_else(|| adapter.default_rest_url().to_owned());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| IngestError::Http(e.to_string()))?;

    let discovery_component = health.register(format!("ingest.{ex}.discovery"));
    let Some(selection) = discover_until_selected(
        adapter.as_ref(),
        &http,
        &rest_url,
        &config,
        &discovery_component,
        &stop,
    )
    .await
    else {
        return Ok(());
    };
    let mut table = SymbolTable::new(exchange);
    let natives = intern(&mut table, &selection);
    report_selection(ex, &selection, &discovery_component);

    let selected = Arc::new(std::sync::Mutex::new(ids(&table, &natives)));
    let symbols = Arc::new(RwLock::new(Arc::new(table)));
    let sink = Arc::new(Conflator::new(exchange, config.trade_buffer));
    let shared = Arc::new(Shared {
        adapter: adapter.clone(),
        settings: ConnectionSettings {
            connect_timeout: Duration::from_secs(config.connect_timeout_s),
            stale_after: Duration::from_secs(config.stale_after_s),
            data_stale_after: Duration::from_secs(config.data_stale_after_s),
            ack_timeout: Duration::from_secs(config.ack_timeout_s),
            backoff_min: Duration::from_millis(config.backoff_min_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            rotate_after: (config.rotate_after_s > 0)
                .then(|| Duration::from_secs(config.rotate_after_s)),
            rotate_margin: Duration::from_secs(config.rotate_margin_s),
            handover_timeout: Duration::from_secs(config.ack_timeout_s.saturating_mul(3)),
        },
        http: http.clone(),
        rest_url: rest_url.clone(),
        ws_url: config.ws_url.clone(),
        symbols: symbols.clone(),
        sink: sink.clone(),
        breaker: Breaker::new(
            exchange,
            config.breaker_threshold,
            Duration::from_secs(config.breaker_cooldown_s),
            Duration::from_secs(config.breaker_cooldown_s.saturating_mul(10)),
        ),
        attempts: AttemptLimiter::new(Duration::from_millis(config.connect_interval_ms)),
    });

    let connections = TaskTracker::new();
    let mut groups = Groups::new(adapter.limits().symbols_per_connection);
    for list in groups.assign(&natives) {
        spawn_connection(&connections, &shared, &health, &stop, list);
    }

    // The publisher outlives the connections: it drains what they left, until the deadline.
    let abandon = CancellationToken::new();
    let publisher = tokio::spawn(publish::run(
        exchange,
        bus,
        config.max_in_flight,
        sink.clone(),
        symbols.clone(),
        health.register(format!("ingest.{ex}.publisher")),
        abandon.clone(),
    ));
    let breaker_component = health.register(format!("ingest.{ex}.breaker"));
    let rediscover = Rediscovery {
        adapter: adapter.clone(),
        http,
        rest_url,
        config: config.clone(),
        symbols: symbols.clone(),
        shared: shared.clone(),
        health: health.clone(),
        stop: stop.clone(),
        connections: connections.clone(),
        component: discovery_component,
        selected: selected.clone(),
    };
    let freshness = freshness::Freshness {
        exchange: ex,
        sink: sink.clone(),
        symbols: symbols.clone(),
        selected: selected.clone(),
        stale_after: Duration::from_secs(config.data_stale_after_s),
        component: health.register(format!("ingest.{ex}.freshness")),
    };
    tokio::select! {
        () = rediscover.run(&mut groups) => {}
        () = watch_breaker(&shared, &breaker_component, &stop) => {}
        () = freshness.run(stop.clone()) => {}
    }
    // Stopping: the connections close their sessions (they watch `stop`).
    groups.close();
    connections.close();
    // Each connection closes its sessions within a second; the wait is bounded all the same,
    // so the drain below always gets its time within the role's shutdown budget.
    if tokio::time::timeout(CONNECTIONS_STOP_WITHIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            exchange = ex,
            "connections still closing at the shutdown deadline; draining the publisher"
        );
    }
    sink.close();
    let deadline = tokio::time::sleep(Duration::from_millis(config.drain_timeout_ms));
    tokio::pin!(deadline);
    let mut publisher = publisher;
    tokio::select! {
        _ = &mut publisher => {}
        () = &mut deadline => {
            abandon.cancel();
            let _ = publisher.await;
        }
    }
    tracing::info!(exchange = ex, "ingest stopped");
    Ok(())
}

fn spawn_connection(
    tracker: &TaskTracker,
    shared: &Arc<Shared>,
    health: &Health,
    stop: &CancellationToken,
    (index, natives): (usize, watch::Receiver<Vec<String>>),
) {
    let ex = shared.adapter.id().as_str();
    tracker.spawn(
        Connection {
            shared: shared.clone(),
            index,
            natives,
            component: health.register(format!("ingest.{ex}.conn{index}")),
            stop: stop.clone(),
        }
        .run(),
    );
}

/// The ids of `natives` in `table`.
fn ids(table: &SymbolTable, natives: &[String]) -> Vec<symbols::SymbolId> {
    natives.iter().filter_map(|n| table.lookup(n)).collect()
}

/// Interns the selection; returns the native spellings to subscribe, in symbol order.
fn intern(table: &mut SymbolTable, selection: &discovery::Selection) -> Vec<String> {
    let mut natives = Vec::with_capacity(selection.len());
    for inst in selection.values() {
        if table.intern(&inst.native, &inst.symbol).is_some() {
            natives.push(inst.native.clone());
        } else {
            metrics::counter!("spreadagg_ingest_symbols_refused_total").increment(1);
            tracing::warn!(native = %inst.native, symbol = %inst.symbol, "symbol refused: it collides with another native spelling, or the symbol table is full");
        }
    }
    natives
}

fn report_selection(
    ex: &'static str,
    selection: &discovery::Selection,
    component: &spreadagg_runtime::Component,
) {
    let symbols: Vec<&str> = selection.keys().map(Symbol::as_str).collect();
    tracing::info!(exchange = ex, count = symbols.len(), symbols = %symbols.join(","), "symbols selected");
    component.set(true, json!({"state": "done", "symbols": symbols}));
    metrics::gauge!("spreadagg_ingest_symbols", "exchange" => ex).set(selection.len() as f64);
}

/// Keeps `/health` and readiness in step with the exchange's breaker until `stop`.
async fn watch_breaker(
    shared: &Shared,
    component: &spreadagg_runtime::Component,
    stop: &CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        component.set(!shared.breaker.is_open(), shared.breaker.report());
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

/// Periodic re-discovery: listings, delistings and symbols crossing the volume bounds are
/// subscribed or unsubscribed without a restart (each changed connection rotates onto its
/// new list, make-before-break).
struct Rediscovery {
    adapter: Arc<dyn exchange::Adapter>,
    http: reqwest::Client,
    rest_url: String,
    config: IngestConfig,
    symbols: Arc<RwLock<Arc<SymbolTable>>>,
    shared: Arc<Shared>,
    health: Health,
    stop: CancellationToken,
    connections: TaskTracker,
    component: spreadagg_runtime::Component,
    /// The subscribed symbols' ids, for the freshness watch.
    selected: Arc<std::sync::Mutex<Vec<symbols::SymbolId>>>,
}

impl Rediscovery {
    async fn run(self, groups: &mut Groups) {
        let ex = self.adapter.id().as_str();
        if self.config.rediscover_every_s == 0 {
            return self.stop.cancelled().await;
        }
        let every = Duration::from_secs(self.config.rediscover_every_s);
        loop {
            let jitter = Backoff::new(every / 10, every / 10).next_delay();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(every - every / 20 + jitter) => {}
            }
            let selection = match discovery::discover(
                self.adapter.as_ref(),
                &self.http,
                &self.rest_url,
                &self.config,
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    metrics::counter!("spreadagg_ingest_discovery_errors_total", "exchange" => ex)
                        .increment(1);
                    tracing::warn!(exchange = ex, error = %e, "re-discovery failed; keeping the current symbols");
                    continue;
                }
            };
            if selection.is_empty() {
                tracing::warn!(
                    exchange = ex,
                    "re-discovery selected nothing; keeping the current symbols"
                );
                continue;
            }
            let natives = {
                let mut guard = self
                    .symbols
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut table = SymbolTable::clone(&guard);
                let natives = intern(&mut table, &selection);
                *self
                    .selected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = ids(&table, &natives);
                *guard = Arc::new(table);
                natives
            };
            report_selection(ex, &selection, &self.component);
            for spawn in groups.assign(&natives) {
                spawn_connection(
                    &self.connections,
                    &self.shared,
                    &self.health,
                    &self.stop,
                    spawn,
                );
            }
            tracing::info!(
                exchange = ex,
                symbols = natives.len(),
                "re-discovery applied"
            );
        }
    }
}

/// How long stopping connections may take before the publisher's drain starts regardless.
const CONNECTIONS_STOP_WITHIN: Duration = Duration::from_millis(1_500);

/// How often discovery is retried when it selects nothing (a listing may appear later).
const EMPTY_SELECTION_RETRY: Duration = Duration::from_secs(60);

/// Runs discovery until it selects at least one symbol; `None` when stopped first. Failures
/// back off exponentially with jitter; an empty selection is retried slowly.
async fn discover_until_selected(
    adapter: &dyn exchange::Adapter,
    http: &reqwest::Client,
    rest_url: &str,
    config: &IngestConfig,
    component: &spreadagg_runtime::Component,
    stop: &CancellationToken,
) -> Option<discovery::Selection> {
    let ex = adapter.id().as_str();
    let mut backoff = Backoff::new(
        Duration::from_millis(config.backoff_min_ms),
        Duration::from_millis(config.backoff_max_ms),
    );
    loop {
        let delay = match discovery::discover(adapter, http, rest_url, config).await {
            Ok(s) if !s.is_empty() => return Some(s),
            Ok(_) => {
                tracing::warn!(
                    exchange = ex,
                    retry_s = EMPTY_SELECTION_RETRY.as_secs(),
                    "discovery selected no symbols; check --symbols, --quotes and the volume bounds"
                );
                component.set(false, json!({"state": "no symbols selected"}));
                EMPTY_SELECTION_RETRY
            }
            Err(e) => {
                metrics::counter!("spreadagg_ingest_discovery_errors_total", "exchange" => ex)
                    .increment(1);
                let delay = backoff.next_delay();
                tracing::warn!(exchange = ex, error = %e, retry_ms = delay.as_millis() as u64, "discovery failed");
                component.set(false, json!({"state": "retrying", "error": e.to_string()}));
                delay
            }
        };
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
