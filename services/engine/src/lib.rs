//! The spread engine role: reads ticks from `MD_TICKS`, keeps the latest tick per exchange
//! and symbol, and publishes a cross-exchange spread point with quantile bands to
//! `md.spread.<symbol>.<exA>.<exB>` whenever either side ticks (last-tick matching).
//!
//! Ticks are acknowledged only after the spreads they made are acknowledged by the bus, in
//! batches; a crash before that redelivers them. A redelivered tick older than its exchange's
//! latest is ignored; after a restart (empty state) redelivered ticks are processed afresh,
//! and the spread's message id (the triggering tick's stream sequence) lets the duplicate
//! window drop the points that come out the same.
//!
//! This is the correct first version. Signals, memory-pressure shedding, symbol shards and
//! warm restart from history are the engine issue's.

mod state;

use std::num::NonZeroUsize;
use std::time::Duration;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use spreadagg_bus::{Bus, ConsumerSpec, Delivery, OutMessage, Publisher};
use spreadagg_model::subjects::{self, STREAM_TICKS};
use spreadagg_model::wire::Tick;
use spreadagg_model::{ExchangeId, Symbol};
use spreadagg_runtime::traces::HOT;
use spreadagg_runtime::{Component, Health};
use tokio_util::sync::CancellationToken;

pub use state::{Limits, SpreadState, Superseded};

/// Configuration of the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// A tick pairs only with another exchange's tick at most this much older.
    pub max_staleness_ms: u64,
    /// Bands are quantiles of this many latest `bid_bid` values per window.
    pub band_points: usize,
    pub upper_quantile: f64,
    pub lower_quantile: f64,
    /// Symbols whose latest ticks are kept (LRU); each holds at most one tick per exchange
    /// (11 known), so 4,500 symbols keep at most 49,500 ticks.
    pub max_symbols: usize,
    /// Band windows kept (LRU).
    pub max_windows: usize,
    /// Spread publishes awaiting acknowledgement.
    pub max_in_flight: usize,
    /// Ticks acknowledged together once their spreads are acknowledged.
    pub ack_batch: usize,
    /// Unacknowledged ticks the bus will hand over at once (backpressure).
    pub max_ack_pending: usize,
    pub ack_wait_s: u64,
    /// Durable consumer name. One engine per durable: a second replica on the same durable
    /// would split the ticks between them and break last-tick matching.
    pub durable: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_staleness_ms: 5_000,
            band_points: 200,
            upper_quantile: 0.97,
            lower_quantile: 0.03,
            max_symbols: 4_500,
            max_windows: 10_000,
            max_in_flight: 512,
            ack_batch: 256,
            max_ack_pending: 4_096,
            ack_wait_s: 30,
            durable: "engine".into(),
        }
    }
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl EngineConfig {
    /// # Errors
    /// When a limit is zero or a quantile is outside (0, 1].
    pub fn limits(&self) -> Result<Limits, EngineError> {
        let nz = |n: usize, name: &str| {
            NonZeroUsize::new(n).ok_or_else(|| EngineError::Config(format!("{name} must be > 0")))
        };
        for (q, name) in [
            (self.upper_quantile, "upper_quantile"),
            (self.lower_quantile, "lower_quantile"),
        ] {
            if !(q > 0.0 && q <= 1.0) {
                return Err(EngineError::Config(format!("{name} must be in (0, 1]")));
            }
        }
        if self.band_points == 0
            || self.ack_batch == 0
            || self.max_in_flight == 0
            || self.max_ack_pending < self.ack_batch
        {
            return Err(EngineError::Config("band_points, ack_batch, max_in_flight must be > 0 and max_ack_pending >= ack_batch".into()));
        }
        Ok(Limits {
            max_staleness_ns: i64::try_from(self.max_staleness_ms).unwrap_or(i64::MAX / 1_000_000)
                * 1_000_000,
            band_points: self.band_points,
            upper_quantile: self.upper_quantile,
            lower_quantile: self.lower_quantile,
            max_symbols: nz(self.max_symbols, "max_symbols")?,
            max_windows: nz(self.max_windows, "max_windows")?,
        })
    }
}

/// Runs the engine until `stop` is cancelled, then publishes and acknowledges what it holds.
///
/// # Errors
/// When the configuration is invalid. Bus failures are retried for as long as the role runs.
pub async fn run(
    config: EngineConfig,
    bus: Bus,
    health: Health,
    stop: CancellationToken,
) -> Result<(), EngineError> {
    let limits = config.limits()?;
    let component = health.register("engine.ticks");
    let spec = ConsumerSpec {
        stream: STREAM_TICKS.into(),
        durable: config.durable.clone(),
        filter: subjects::ALL_TICKS.into(),
        ack_wait: Duration::from_secs(config.ack_wait_s),
        max_ack_pending: config.max_ack_pending,
        batch: config.ack_batch,
    };
    let mut consumer = loop {
        match bus.durable(&spec).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "engine consumer not available; retrying");
                component.set(
                    false,
                    json!({"state": "waiting for bus", "error": e.to_string()}),
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    component.set(true, json!({"state": "running"}));
    // Exported from the start (at zero), so dashboards and alerts see the series before the
    // first rejection and `increase()` counts that one too.
    metrics::counter!("spreadagg_engine_rejected_total", "reason" => "superseded").increment(0);
    let lag = tokio::spawn(report_lag(
        bus.clone(),
        config.durable.clone(),
        stop.clone(),
    ));

    let mut work = Work {
        state: SpreadState::new(limits),
        publisher: bus.publisher(config.max_in_flight),
        unacked: Vec::with_capacity(config.ack_batch),
        ack_batch: config.ack_batch,
        publish_failed: false,
        component,
        ticks: 0,
        points: 0,
    };
    let mut idle_flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = idle_flush.tick() => work.settle().await,
            delivery = consumer.next() => match delivery {
                Ok(d) => work.handle(d).await,
                Err(e) => {
                    metrics::counter!("spreadagg_engine_bus_errors_total").increment(1);
                    tracing::debug!(error = %e, "tick consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    work.settle().await;
    if let Err(e) = bus.flush().await {
        tracing::warn!(error = %e, "could not flush acknowledgements; those ticks will be redelivered");
    }
    let _ = lag.await;
    tracing::info!(ticks = work.ticks, points = work.points, "engine stopped");
    Ok(())
}

/// How often the engine's consumer lag is measured.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Keeps `spreadagg_engine_lag_messages` (ticks in MD_TICKS past the consumer's acknowledged
/// floor) current until stop. A query that fails or takes over 2 s leaves it NaN (unknown).
async fn report_lag(bus: Bus, durable: String, stop: CancellationToken) {
    let gauge = metrics::gauge!("spreadagg_engine_lag_messages", "stream" => STREAM_TICKS);
    let mut every = tokio::time::interval(LAG_REFRESH);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let query = async {
            let stream = bus.stream_state(STREAM_TICKS).await?;
            let consumer = bus.consumer_state(STREAM_TICKS, &durable).await?;
            Ok::<_, spreadagg_bus::BusError>(stream.last_seq.saturating_sub(consumer.ack_floor))
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            measured = tokio::time::timeout(Duration::from_secs(2), query) => match measured {
                Ok(Ok(lag)) => gauge.set(lag as f64),
                // Unknown, not the last value: a stale number could hold an alert or hide one.
                Ok(Err(error)) => {
                    gauge.set(f64::NAN);
                    tracing::debug!(%error, "engine lag query failed");
                }
                Err(_) => {
                    gauge.set(f64::NAN);
                    tracing::debug!("engine lag query timed out");
                }
            },
        }
    }
}

struct Work {
    state: SpreadState,
    publisher: Publisher,
    unacked: Vec<Delivery>,
    ack_batch: usize,
    /// A spread of the current batch failed to publish: do not acknowledge the batch.
    publish_failed: bool,
    component: Component,
    ticks: u64,
    points: u64,
}

impl Work {
    async fn handle(&mut self, delivery: Delivery) {
        match decode(&delivery.payload) {
            Ok(tick) => {
                self.ticks += 1;
                metrics::counter!("spreadagg_engine_ticks_total").increment(1);
                let made = match self.state.on_tick(&tick) {
                    Ok(points) => points,
                    Err(state::Superseded) => {
                        metrics::counter!("spreadagg_engine_rejected_total", "reason" => "superseded").increment(1);
                        Vec::new()
                    }
                };
                for point in made {
                    let msg = OutMessage {
                        subject: subjects::spread(
                            &point.symbol,
                            &point.exchange_a,
                            &point.exchange_b,
                        ),
                        msg_id: format!(
                            "spread:{}:{}:{}:{}",
                            point.symbol, point.exchange_a, point.exchange_b, delivery.stream_seq
                        ),
                        payload: point.encode_to_vec().into(),
                    };
                    self.points += 1;
                    if let Err(failed) = self.publisher.publish(msg).await {
                        // The failed point belongs to a tick of this unacknowledged batch:
                        // the batch is not acknowledged, the bus redelivers it after the ack
                        // wait, and the points are made again under the same message ids.
                        tracing::warn!(error = %failed, "spread publish failed");
                        self.publish_failed = true;
                    }
                }
            }
            Err(reason) => {
                metrics::counter!("spreadagg_engine_rejected_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(subject = %delivery.subject, reason, "tick rejected");
            }
        }
        self.unacked.push(delivery);
        if self.unacked.len() >= self.ack_batch {
            self.settle().await;
        }
    }

    /// Waits for every spread publish, then acknowledges the ticks that made them.
    async fn settle(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        // The stage span: waiting for a batch's spreads, then acknowledging its ticks.
        let _stage = tracing::debug_span!(target: HOT, "engine.settle_batch", ticks = i64::try_from(self.unacked.len()).unwrap_or(i64::MAX));
        let flushed = self.publisher.flush().await;
        if let Err(failed) = &flushed {
            tracing::warn!(error = %failed, "spread publish failed");
        }
        if flushed.is_err() || std::mem::take(&mut self.publish_failed) {
            tracing::warn!(
                ticks = self.unacked.len(),
                "spreads not all acknowledged; their ticks are left to redelivery"
            );
            metrics::counter!("spreadagg_engine_unacked_batches_total").increment(1);
            self.unacked.clear();
            return;
        }
        for d in self.unacked.drain(..) {
            if let Err(e) = d.ack().await {
                tracing::debug!(error = %e, "tick ack failed; it will be redelivered");
            }
        }
        metrics::gauge!("spreadagg_engine_symbols").set(self.state.symbols() as f64);
        metrics::gauge!("spreadagg_engine_windows").set(self.state.windows() as f64);
        self.component.set(
            true,
            json!({
                "state": "running",
                "ticks": self.ticks,
                "points": self.points,
                "symbols": self.state.symbols(),
                "windows": self.state.windows(),
                "evicted_symbols": self.state.evicted_symbols,
                "evicted_windows": self.state.evicted_windows,
            }),
        );
    }
}

/// Decodes and checks a tick; the error is a metric label.
fn decode(payload: &[u8]) -> Result<Tick, &'static str> {
    let tick = Tick::decode(payload).map_err(|_| "undecodable")?;
    if tick.exchange.parse::<ExchangeId>().is_err() {
        return Err("unknown_exchange");
    }
    if tick.symbol.parse::<Symbol>().is_err() {
        return Err("invalid_symbol");
    }
    spreadagg_model::formulas::validate_quote(tick.bid_px, tick.bid_qty, tick.ask_px, tick.ask_qty)
        .map_err(|e| e.label())?;
    Ok(tick)
}
