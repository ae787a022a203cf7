//! The spread engine role: reads ticks from `MD_TICKS`, keeps the latest tick per exchange
//! and symbol, publishes a cross-exchange spread point with quantile bands to
//! `md.spread.<symbol>.<exA>.<exB>` whenever either side ticks (last-tick matching), keeps a
//! chart window per pair, and publishes deviation signals to `md.signal.<symbol>`.
//!
//! Exactly-once effect on redelivery (docs/engine.md):
//! - each tick is applied to the state once: the consumer hands new ticks over in stream
//!   order, so a delivery at or below the highest stream sequence applied is a redelivery, and
//!   it is acknowledged without touching the state;
//! - a tick is acknowledged only once every point and signal it made is acknowledged by the
//!   stream, and publishes are retried until they are (the intake stops meanwhile: the
//!   consumer's `max_ack_pending` is the backpressure), so no point is lost to a broker
//!   outage;
//! - points and signals carry message ids made from the tick's stream sequence, so a tick
//!   processed again after a crash stores nothing twice within the duplicate window.

mod chart;
mod config;
mod health;
mod pressure;
mod state;
mod warm;

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use spreadagg_bus::{Bus, ConsumerSpec, Delivery, OutMessage, Publisher};
use spreadagg_model::subjects::{self, STREAM_TICKS};
use spreadagg_model::wire::Tick;
use spreadagg_model::{ExchangeId, Shard, Symbol};
use spreadagg_runtime::Health;
use tokio_util::sync::CancellationToken;

pub use config::{EngineConfig, EngineError};
pub use pressure::{Caps, Decision, Governor, Marks};
pub use state::{
    ChartPoint, Deviation, Evictions, Limits, PairWindow, Point, SignalEvent, SignalKind,
    SignalLimits, SignalState, SpreadState, StalenessHistogram, Superseded, TickIn, Trimmed,
    WindowLimits, signal_to_wire,
};

/// How long a stopping engine waits for its last publishes before it leaves their ticks to
/// redelivery.
const STOP_FLUSH: Duration = Duration::from_secs(3);

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
    let mut work = Work {
        state: SpreadState::new(limits),
        publisher: bus.publisher(config.max_in_flight).retry_forever(),
        scratch: Vec::new(),
        waiting: VecDeque::new(),
        applied_through: 0,
        shard: config.shard,
        meters: health::Meters::new(),
    };
    // Rebuilt before the durable is opened: its delivered sequence must not move meanwhile.
    let Ok(start_seq) = warm::start(&mut work, &bus, &config, &component, &stop).await else {
        return Ok(());
    };
    let durable = config.durable_name();
    let spec = ConsumerSpec {
        stream: STREAM_TICKS.into(),
        durable: durable.clone(),
        filter: subjects::ALL_TICKS.into(),
        ack_wait: Duration::from_secs(config.ack_wait_s),
        max_ack_pending: config.max_ack_pending,
        batch: config.ack_batch,
        start_seq,
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
    let mut charts = loop {
        match bus.serve(subjects::ALL_CHARTS).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "chart service not available; retrying");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    component.set(true, json!({"state": "running"}));
    let lag = tokio::spawn(health::report_lag(bus.clone(), durable, stop.clone()));

    let mut report = tokio::time::interval(health::REPORT_EVERY);
    let cgroup = spreadagg_runtime::process::CgroupRoot(config.cgroup_root.clone());
    let mut governor = Governor::new(
        Marks {
            low: config.memory_low_water,
            high: config.memory_high_water,
            critical: config.memory_critical,
        },
        Caps {
            points: limits.window.max_points,
            windows: limits.max_windows,
        },
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = report.tick() => {
                pressure::relieve(&mut governor, &cgroup, &mut work.state);
                health::report(&work.state, &mut work.meters, &component, work.publisher.in_flight(), governor.shedding());
            }
            Some(request) = charts.next() => work.answer_chart(request).await,
            // Publishes are retried in here while the consumer is quiet.
            _ = work.publisher.settle() => work.ack_settled().await,
            delivery = consumer.next() => match delivery {
                Ok(d) => {
                    if work.handle(d, &stop).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    metrics::counter!("spreadagg_engine_bus_errors_total").increment(1);
                    tracing::debug!(error = %e, "tick consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Stopping: the publishes still in flight get a short while; ticks whose points did not
    // all make it stay unacknowledged and go to the next engine.
    if tokio::time::timeout(STOP_FLUSH, work.publisher.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = work.publisher.in_flight(),
            "spreads still unacknowledged at stop; their ticks are left to redelivery"
        );
    }
    work.ack_settled().await;
    if let Err(e) = bus.flush().await {
        tracing::warn!(error = %e, "could not flush acknowledgements; those ticks will be redelivered");
    }
    let _ = lag.await;
    tracing::info!(
        ticks = work.meters.ticks,
        points = work.meters.points,
        unacknowledged = work.waiting.len(),
        "engine stopped"
    );
    Ok(())
}

/// Stop was requested while a publish was waiting for room.
struct Stopped;

struct Work {
    state: SpreadState,
    publisher: Publisher,
    /// Reused buffer for one tick's points.
    scratch: Vec<state::Point>,
    /// Deliveries in arrival order, each with the publisher's `sent` count after its own
    /// publishes: it is acknowledged once that many are settled.
    waiting: VecDeque<(Delivery, u64)>,
    /// The highest stream sequence applied to the state.
    applied_through: u64,
    shard: Shard,
    meters: health::Meters,
}

impl Work {
    async fn handle(
        &mut self,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        if delivery.stream_seq <= self.applied_through {
            // Applied already (its acknowledgement was late or lost): its points were published
            // with the ones in flight now, so it is acknowledged with them.
            self.meters.redelivered.increment(1);
            self.waiting.push_back((delivery, self.publisher.sent()));
            self.ack_settled().await;
            return Ok(());
        }
        self.applied_through = delivery.stream_seq;
        self.process(
            &delivery.subject,
            &delivery.payload,
            delivery.stream_seq,
            true,
            stop,
        )
        .await?;
        self.waiting.push_back((delivery, self.publisher.sent()));
        self.ack_settled().await;
        Ok(())
    }

    /// Applies one stored tick (if this shard owns its symbol and it is valid) and, when
    /// `publish`, publishes what it made.
    async fn process(
        &mut self,
        subject: &str,
        payload: &[u8],
        seq: u64,
        publish: bool,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        // `md.tick.<exchange>.<symbol>`: the symbol is the last token; no decoding needed to
        // skip another shard's tick.
        let symbol = subject.rsplit('.').next().unwrap_or_default();
        if !self.shard.owns(symbol) {
            self.meters.other_shard.increment(1);
            return Ok(());
        }
        match decode(payload) {
            Ok(tick) => self.apply(&tick, seq, publish, stop).await,
            Err(reason) => {
                metrics::counter!("spreadagg_engine_rejected_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(subject, reason, "tick rejected");
                Ok(())
            }
        }
    }

    async fn apply(
        &mut self,
        tick: &Tick,
        seq: u64,
        publish: bool,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let Some(input) = TickIn::from_wire(tick) else {
            return Ok(());
        };
        let mut points = std::mem::take(&mut self.scratch);
        let signal = match self.state.apply(&input, &mut points) {
            Ok(signal) => signal,
            Err(Superseded) => {
                self.meters.superseded.increment(1);
                self.scratch = points;
                return Ok(());
            }
        };
        if !publish {
            self.scratch = points;
            return Ok(());
        }
        self.meters.ticks += 1;
        self.meters.ticks_total.increment(1);
        if !points.is_empty() {
            self.meters.matched_ticks += 1;
            self.meters.matched.increment(1);
        }
        let mut result = Ok(());
        for point in &points {
            self.meters.points += 1;
            self.meters.points_total.increment(1);
            self.meters
                .staleness
                .record(point.ts_a_ns.abs_diff(point.ts_b_ns) as f64 / 1e9);
            let (a, b) = (point.exchange_a.as_str(), point.exchange_b.as_str());
            let msg = OutMessage {
                subject: subjects::spread(&tick.symbol, a, b),
                msg_id: format!("spread:{}:{a}:{b}:{seq}", tick.symbol),
                payload: point
                    .to_wire(&tick.symbol, input.exchange)
                    .encode_to_vec()
                    .into(),
            };
            if self.send(msg, stop).await.is_err() {
                result = Err(Stopped);
                break;
            }
        }
        self.scratch = points;
        result?;
        if let Some(event) = signal {
            self.meters.signal(event.kind);
            let msg = OutMessage {
                subject: format!("md.signal.{}", tick.symbol),
                msg_id: format!("signal:{}:{seq}", tick.symbol),
                payload: signal_to_wire(&tick.symbol, &event).encode_to_vec().into(),
            };
            self.send(msg, stop).await?;
        }
        Ok(())
    }

    /// Publishes; never fails (the publisher retries for ever) but gives way to `stop` while
    /// it waits for room.
    async fn send(&mut self, msg: OutMessage, stop: &CancellationToken) -> Result<(), Stopped> {
        tokio::select! {
            biased;
            () = stop.cancelled() => Err(Stopped),
            r = self.publisher.publish(msg) => {
                if let Err(failed) = r {
                    // Unreachable with retry_forever; kept loud in case that ever changes.
                    tracing::error!(error = %failed, "spread publish given up");
                }
                Ok(())
            }
        }
    }

    async fn answer_chart(&mut self, request: spreadagg_bus::Request) {
        // Encoded before the await: the state is not borrowed across it.
        let (body, outcome) = match chart::answer(&self.state, self.shard, &request.subject) {
            chart::Answer::NotOurs => return,
            chart::Answer::Snapshot(snapshot, outcome) => (snapshot.encode_to_vec(), outcome),
        };
        if let Err(e) = request.respond(body.into()).await {
            tracing::debug!(error = %e, "chart answer not sent");
        }
        metrics::counter!("spreadagg_engine_chart_requests_total", "outcome" => outcome)
            .increment(1);
    }

    /// Acknowledges, in order, every waiting tick whose publishes are all settled.
    async fn ack_settled(&mut self) {
        let settled = self.publisher.settled();
        while self
            .waiting
            .front()
            .is_some_and(|(_, needs)| *needs <= settled)
        {
            if let Some((d, _)) = self.waiting.pop_front()
                && let Err(e) = d.ack().await
            {
                tracing::debug!(error = %e, "tick ack failed; it will be redelivered");
            }
        }
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
