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
mod conflate;
mod health;
mod latency;
mod pressure;
mod state;
mod warm;

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::json;
use spreadagg_bus::{Bus, ConsumerSpec, Delivery, OutMessage, Publisher};
use spreadagg_model::subjects::{self, STREAM_TICKS};
use spreadagg_model::wire::Tick;
use spreadagg_model::{ExchangeId, Shard, Symbol};
use spreadagg_runtime::Health;
use spreadagg_runtime::traces::HOT;
use tokio_util::sync::CancellationToken;

pub use config::{EngineConfig, EngineError};
pub use latency::LatencyHistogram;
pub use pressure::{Caps, Decision, Governor, Marks, relieve as relieve_memory_pressure};
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
    let mut work = Work::new(&config, limits, &bus);
    // Rebuilt before the durable is opened: its delivered sequence must not move meanwhile.
    let Ok(start_seq) = warm::start(&mut work, &bus, &config, &component, &stop).await else {
        return Ok(());
    };
    if let Some(start) = start_seq {
        // A new durable: everything before its start is history, not a gap to read back.
        work.applied_through = start - 1;
    }
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
    let mut governor = Governor::for_config(&config, &limits);
    let mut conflation = tokio::time::interval(
        work.conflator
            .as_ref()
            .map_or(Duration::from_secs(3600), conflate::Conflator::check_every),
    );
    conflation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = conflation.tick(), if work.conflator.is_some() => {
                if work.publish_due(&stop).await.is_err() {
                    break;
                }
            }
            _ = report.tick() => {
                pressure::relieve(&mut governor, &cgroup, &mut work.state);
                let held = work.conflator.as_ref().map_or(0, conflate::Conflator::held);
                health::report(&work.state, &mut work.meters, &component, work.publisher.in_flight(), governor.shedding(), held);
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
    // Stopping, within one deadline: held points go out, then the publishes still in flight
    // get their acknowledgements, then the tick acknowledgements are flushed. Ticks whose
    // points did not all make it stay unacknowledged and go to the next engine.
    let finish = async {
        if let Some(c) = work.conflator.as_mut() {
            for msg in c.take_all() {
                let _ = work.publisher.publish(msg).await;
            }
        }
        let _ = work.publisher.flush().await;
        work.ack_settled().await;
        bus.flush().await
    };
    match tokio::time::timeout(STOP_FLUSH, finish).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not flush acknowledgements; those ticks will be redelivered");
        }
        Err(_) => tracing::warn!(
            in_flight = work.publisher.in_flight(),
            "stop deadline reached; unacknowledged ticks are left to redelivery"
        ),
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
    /// publishes (it is acknowledged once that many are settled) and when it arrived.
    waiting: VecDeque<(Delivery, u64, Instant)>,
    /// The highest stream sequence applied to the state.
    applied_through: u64,
    /// Whether `applied_through` says where delivery stands (after the warm start learned
    /// it, or the first delivery): only then is a skipped sequence a gap.
    baseline_known: bool,
    /// Stream sequences in `waiting`: a second redelivery of one is not queued again.
    waiting_seqs: HashSet<u64>,
    shard: Shard,
    meters: health::Meters,
    /// For reading ticks missing from the delivery order by sequence.
    bus: Bus,
    /// At most this many missing ticks are read back at once (the consumer's max_ack_pending:
    /// more cannot be in flight).
    max_gap: u64,
    /// Ticks further ahead of this clock than this are refused.
    max_future_ns: i64,
    charts: chart::Limiter,
    /// `publish_min_interval_ms` > 0: points held per pair (see `conflate`).
    conflator: Option<conflate::Conflator>,
}

impl Work {
    fn new(config: &EngineConfig, limits: Limits, bus: &Bus) -> Self {
        Work {
            state: SpreadState::new(limits),
            publisher: bus.publisher(config.max_in_flight).retry_forever(),
            scratch: Vec::new(),
            waiting: VecDeque::new(),
            applied_through: 0,
            baseline_known: false,
            waiting_seqs: HashSet::new(),
            shard: config.shard,
            meters: health::Meters::new(),
            bus: bus.clone(),
            max_gap: config.max_ack_pending as u64,
            max_future_ns: i64::try_from(config.max_future_ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            charts: chart::Limiter::new(config.chart_requests_per_s),
            conflator: (config.publish_min_interval_ms > 0).then(|| {
                conflate::Conflator::new(Duration::from_millis(config.publish_min_interval_ms))
            }),
        }
    }

    async fn handle(
        &mut self,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let arrived = Instant::now();
        let seq = delivery.stream_seq;
        if seq <= self.applied_through {
            // Applied already (its acknowledgement was late or lost): its points were published
            // with the ones in flight now, so it is acknowledged with them.
            self.meters.redelivered.increment(1);
            if self.waiting_seqs.insert(seq) {
                self.waiting
                    .push_back((delivery, self.publisher.sent(), arrived));
            }
            self.ack_settled().await;
            return Ok(());
        }
        if self.baseline_known && seq > self.applied_through + 1 {
            // Ticks in between were delivered and lost on the way (a connection drop): JetStream
            // would redeliver them after the ack wait, behind newer ticks. They are read back
            // now and applied in order, so none is taken for applied when it was not.
            self.fill(self.applied_through + 1, seq, stop).await?;
        }
        self.applied_through = seq;
        self.baseline_known = true;
        self.process(&delivery.subject, &delivery.payload, seq, true, stop)
            .await?;
        self.waiting_seqs.insert(seq);
        self.waiting
            .push_back((delivery, self.publisher.sent(), arrived));
        self.ack_settled().await;
        Ok(())
    }

    /// Reads ticks `from..to` back by stream sequence and processes them (publishing), in
    /// order; retries while the bus cannot answer. A gap wider than `max_gap` cannot come from
    /// lost deliveries (the stream's limits removed them): only its last `max_gap` are read,
    /// the rest counted.
    async fn fill(&mut self, from: u64, to: u64, stop: &CancellationToken) -> Result<(), Stopped> {
        if from >= to {
            return Ok(());
        }
        let from = if to - from > self.max_gap {
            self.meters.gap_skipped.increment(to - from - self.max_gap);
            to - self.max_gap
        } else {
            from
        };
        for seq in from..to {
            let stored = loop {
                let got = tokio::select! {
                    biased;
                    () = stop.cancelled() => return Err(Stopped),
                    got = self.bus.get(STREAM_TICKS, seq) => got,
                };
                match got {
                    Ok(m) => break m,
                    Err(e) => {
                        tracing::warn!(error = %e, seq, "cannot read a missing tick back; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return Err(Stopped),
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            if let Some(m) = stored {
                self.meters.gap_filled.increment(1);
                self.process(&m.subject, &m.payload, seq, true, stop)
                    .await?;
            } else {
                // Removed by the stream's limits before it could be read.
                self.meters.gap_gone.increment(1);
            }
        }
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
        let checked = decode(payload).and_then(|tick| {
            if subject != subjects::tick_of(&tick.exchange, &tick.symbol) {
                // The shard owns the subject's symbol: a payload naming another would be
                // applied by the wrong shard.
                return Err("subject_mismatch");
            }
            if tick.recv_ts_ns > spreadagg_model::time::now_ns().saturating_add(self.max_future_ns)
            {
                // One tick from the future would supersede every real one after it.
                return Err("future_time");
            }
            Ok(tick)
        });
        match checked {
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
            let msg = match self.conflator.as_mut() {
                None => Some(msg),
                Some(c) => {
                    let (now, replaced) = c.offer(msg, Instant::now());
                    if replaced {
                        self.meters.conflated.increment(1);
                    }
                    now
                }
            };
            if let Some(msg) = msg
                && self.send(msg, stop).await.is_err()
            {
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

    /// Publishes the held points whose interval has passed.
    async fn publish_due(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        let due = match self.conflator.as_mut() {
            Some(c) => c.due(Instant::now()),
            None => return Ok(()),
        };
        let mut due = due.into_iter();
        while let Some(msg) = due.next() {
            let kept = msg.clone();
            if self.send(msg, stop).await.is_err() {
                // Held again (with the rest), so the stop path publishes them.
                if let Some(c) = self.conflator.as_mut() {
                    for m in std::iter::once(kept).chain(due) {
                        c.hold_again(m);
                    }
                }
                return Err(Stopped);
            }
        }
        Ok(())
    }

    async fn answer_chart(&mut self, request: spreadagg_bus::Request) {
        if !chart::is_ours(self.shard, &request.subject) {
            return;
        }
        if !request.can_reply() {
            metrics::counter!("spreadagg_engine_chart_requests_total", "outcome" => "bad_reply_subject")
                .increment(1);
            return;
        }
        if !self.charts.admit(Instant::now()) {
            metrics::counter!("spreadagg_engine_chart_requests_total", "outcome" => "rate_limited")
                .increment(1);
            return;
        }
        // Encoded before the await: the state is not borrowed across it.
        let (body, outcome) = match chart::answer(&self.state, self.shard, &request.subject) {
            chart::Answer::NotOurs => return,
            chart::Answer::Snapshot(snapshot, outcome) => (snapshot.encode_to_vec(), outcome),
        };
        let outcome = match request.respond(body.into()).await {
            Ok(()) => outcome,
            Err(e) => {
                tracing::debug!(error = %e, "chart answer not sent");
                "send_failed"
            }
        };
        metrics::counter!("spreadagg_engine_chart_requests_total", "outcome" => outcome)
            .increment(1);
    }

    /// Acknowledges, in order, every waiting tick whose publishes are all settled.
    async fn ack_settled(&mut self) {
        let settled = self.publisher.settled();
        let ready = self
            .waiting
            .iter()
            .take_while(|(_, needs, _)| *needs <= settled)
            .count();
        if ready == 0 {
            return;
        }
        // The stage span: acknowledging the ticks whose points the stream has acknowledged.
        let _stage = tracing::debug_span!(target: HOT, "engine.settle_batch", ticks = i64::try_from(ready).unwrap_or(i64::MAX));
        while self
            .waiting
            .front()
            .is_some_and(|(_, needs, _)| *needs <= settled)
        {
            if let Some((d, _, arrived)) = self.waiting.pop_front() {
                self.waiting_seqs.remove(&d.stream_seq);
                // From the tick's arrival to its points acknowledged by the stream.
                let took = arrived.elapsed();
                self.meters.latency.record(took);
                self.meters.latency_total.record(took);
                if let Err(e) = d.ack().await {
                    tracing::debug!(error = %e, "tick ack failed; it will be redelivered");
                }
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

#[cfg(test)]
mod tests;
