//! The ingest role: one exchange's public market data, normalised to `Tick` and `Trade` and
//! published to `md.tick.<exchange>.<symbol>` / `md.trade.<exchange>.<symbol>`.
//!
//! Flow: discovery over REST (retried with backoff until it succeeds or the role stops) ->
//! the selected symbols split into connections within the exchange's caps -> one task per
//! connection (`connection`) -> a bounded channel -> one publisher task (`publish`) with
//! bounded in-flight acknowledgements. On stop the connections close, the channel drains, the
//! publisher flushes, and `run` returns.

pub mod connection;
pub mod discovery;
pub mod exchange;
pub mod publish;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use spreadagg_bus::Bus;
use spreadagg_model::{ExchangeId, Symbol};
use spreadagg_runtime::Health;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{Connection, ConnectionSettings};
use crate::exchange::SymbolMap;

/// This replica's share of the symbols: `index` of `count` (`--shard I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `I < N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: expected I/N"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: bad index"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {s:?}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

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
    /// Events waiting for the publisher; past it events are dropped and counted.
    pub queue_capacity: usize,
    /// Publishes awaiting acknowledgement.
    pub max_in_flight: usize,
    /// A connection silent this long is recycled.
    pub stale_after_s: u64,
    pub connect_timeout_s: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Failures in a row after which `/health` shows the connection's circuit open.
    pub breaker_threshold: u32,
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
            queue_capacity: 10_000,
            max_in_flight: 512,
            stale_after_s: 30,
            connect_timeout_s: 10,
            backoff_min_ms: 250,
            backoff_max_ms: 30_000,
            breaker_threshold: 5,
        }
    }
}

/// Why the role could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no adapter for exchange {0} yet")]
    Unsupported(ExchangeId),
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
        if self.queue_capacity == 0 || self.max_in_flight == 0 {
            return Err(IngestError::Config(
                "queue_capacity and max_in_flight must be > 0".into(),
            ));
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
    let adapter: Arc<dyn exchange::Adapter> = exchange::adapter(exchange)
        .ok_or(IngestError::Unsupported(exchange))?
        .into();
    let ex = exchange.as_str();
    let rest_url = config
        .rest_url
        .clone()
        .unwrap_or_else(|| adapter.default_rest_url().to_owned());
    let ws_url = config
        .ws_url
        .clone()
        .unwrap_or_else(|| adapter.default_ws_url().to_owned());
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
    let symbols: Vec<&str> = selection.keys().map(Symbol::as_str).collect();
    tracing::info!(exchange = ex, count = symbols.len(), symbols = ?symbols, "symbols selected");
    discovery_component.set(true, json!({"state": "done", "symbols": symbols}));
    metrics::gauge!("spreadagg_ingest_symbols", "exchange" => ex).set(selection.len() as f64);

    let symbol_map: Arc<SymbolMap> = Arc::new(
        selection
            .values()
            .map(|i| (i.native.clone(), i.symbol.clone()))
            .collect(),
    );
    let natives: Vec<String> = selection.values().map(|i| i.native.clone()).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity);
    let tasks = TaskTracker::new();
    let settings = ConnectionSettings {
        ws_url,
        connect_timeout: Duration::from_secs(config.connect_timeout_s),
        stale_after: Duration::from_secs(config.stale_after_s),
        backoff_min: Duration::from_millis(config.backoff_min_ms),
        backoff_max: Duration::from_millis(config.backoff_max_ms),
        breaker_threshold: config.breaker_threshold,
    };
    for (i, chunk) in natives
        .chunks(adapter.symbols_per_connection().max(1))
        .enumerate()
    {
        let conn = Connection {
            adapter: adapter.clone(),
            settings: settings.clone(),
            natives: chunk.to_vec(),
            symbols: symbol_map.clone(),
            events: tx.clone(),
            component: health.register(format!("ingest.{ex}.conn{i}")),
            stop: stop.clone(),
            start_delay: CONNECTION_STAGGER * u32::try_from(i).unwrap_or(u32::MAX),
        };
        tasks.spawn(conn.run());
    }
    // The publisher ends when every connection has dropped its sender.
    drop(tx);
    tasks.spawn(publish::run(
        exchange,
        bus,
        config.max_in_flight,
        rx,
        health.register(format!("ingest.{ex}.publisher")),
    ));
    tasks.close();
    tasks.wait().await;
    tracing::info!(exchange = ex, "ingest stopped");
    Ok(())
}

/// Delay between an exchange's connection starts: connection-rate limits (OKX: 3 per second
/// per IP) and reconnect storms both call for spacing them out.
const CONNECTION_STAGGER: Duration = Duration::from_millis(500);

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
    use backon::BackoffBuilder;
    let ex = adapter.id().as_str();
    let mut backoff = backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(config.backoff_min_ms))
        .with_max_delay(Duration::from_millis(config.backoff_max_ms))
        .with_jitter()
        .without_max_times()
        .build();
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
                let delay = backoff
                    .next()
                    .unwrap_or(Duration::from_millis(config.backoff_max_ms));
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
