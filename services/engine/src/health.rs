//! What the engine reports: its metrics, the `/health` detail (state sizes, evictions,
//! completeness, staleness per pair) and the consumer lag.

use std::time::Duration;

use metrics::{Counter, Histogram};
use serde_json::{Value, json};
use spreadagg_bus::Bus;
use spreadagg_model::subjects::STREAM_TICKS;
use spreadagg_runtime::Component;
use tokio_util::sync::CancellationToken;

use crate::state::{SignalKind, SpreadState};

/// How often gauges and the `/health` detail are refreshed.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Pairs listed with their staleness in `/health`, worst p99 first.
const STALENESS_PAIRS_SHOWN: usize = 50;

/// Counters of the hot path, registered once.
pub(crate) struct Meters {
    pub ticks: u64,
    pub matched_ticks: u64,
    pub points: u64,
    pub ticks_total: Counter,
    pub matched: Counter,
    pub points_total: Counter,
    pub superseded: Counter,
    pub redelivered: Counter,
    pub other_shard: Counter,
    pub gap_filled: Counter,
    pub conflated: Counter,
    pub gap_skipped: Counter,
    pub gap_gone: Counter,
    pub staleness: Histogram,
    /// From the engine taking a tick to its points acknowledged, since the last report.
    pub latency: crate::LatencyHistogram,
    /// The same since start (never cleared): a run's p99, not a median of per-second ones.
    pub latency_total: crate::LatencyHistogram,
    /// The last report's figures (p50, p99 in ms, ticks).
    last_latency: (Option<f64>, Option<f64>, u64),
    entries: Counter,
    exits: Counter,
    /// Evictions already added to the counters.
    reported: crate::state::Evictions,
}

impl Meters {
    pub fn new() -> Self {
        let m = Self {
            ticks: 0,
            matched_ticks: 0,
            points: 0,
            ticks_total: metrics::counter!("spreadagg_engine_ticks_total"),
            matched: metrics::counter!("spreadagg_engine_ticks_matched_total"),
            points_total: metrics::counter!("spreadagg_engine_points_total"),
            superseded: metrics::counter!("spreadagg_engine_rejected_total", "reason" => "superseded"),
            redelivered: metrics::counter!("spreadagg_engine_redelivered_total"),
            other_shard: metrics::counter!("spreadagg_engine_other_shard_total"),
            conflated: metrics::counter!("spreadagg_engine_points_conflated_total"),
            gap_filled: metrics::counter!("spreadagg_engine_gap_ticks_total", "outcome" => "read_back"),
            gap_skipped: metrics::counter!("spreadagg_engine_gap_ticks_total", "outcome" => "skipped"),
            gap_gone: metrics::counter!("spreadagg_engine_gap_ticks_total", "outcome" => "gone"),
            staleness: metrics::histogram!("spreadagg_engine_point_staleness_seconds"),
            entries: metrics::counter!("spreadagg_engine_signals_total", "kind" => "entry"),
            exits: metrics::counter!("spreadagg_engine_signals_total", "kind" => "exit"),
            reported: crate::state::Evictions::default(),
            latency: crate::LatencyHistogram::default(),
            latency_total: crate::LatencyHistogram::default(),
            last_latency: (None, None, 0),
        };
        // Exported from the start (at zero), so dashboards and alerts see the series before
        // the first event and `increase()` counts that one too.
        for c in [
            &m.ticks_total,
            &m.matched,
            &m.points_total,
            &m.superseded,
            &m.redelivered,
            &m.other_shard,
            &m.gap_filled,
            &m.conflated,
            &m.gap_skipped,
            &m.gap_gone,
            &m.entries,
            &m.exits,
        ] {
            c.increment(0);
        }
        for bound in ["ticks", "windows", "points_count", "points_age"] {
            metrics::counter!("spreadagg_engine_evictions_total", "bound" => bound).increment(0);
        }
        m
    }

    pub fn signal(&self, kind: SignalKind) {
        match kind {
            SignalKind::Entry => self.entries.increment(1),
            SignalKind::Exit => self.exits.increment(1),
        }
    }
}

/// Refreshes the gauges, the eviction counters and the `/health` detail.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn report(
    state: &SpreadState,
    meters: &mut Meters,
    component: &Component,
    in_flight: usize,
    shedding: bool,
    held: usize,
) {
    let e = state.evictions();
    let r = meters.reported;
    for (bound, now, before) in [
        ("ticks", e.ticks, r.ticks),
        ("windows", e.windows, r.windows),
        ("points_count", e.points_by_count, r.points_by_count),
        ("points_age", e.points_by_age, r.points_by_age),
    ] {
        metrics::counter!("spreadagg_engine_evictions_total", "bound" => bound)
            .increment(now - before);
    }
    meters.reported = e;
    // Latency over the last reporting period (1 s); none when it acknowledged nothing (a
    // stalled engine does not keep showing its last good figure).
    meters.last_latency = (
        meters.latency.quantile_ms(0.5),
        meters.latency.quantile_ms(0.99),
        meters.latency.count(),
    );
    meters.latency.clear();
    let now_ns = spreadagg_model::time::now_ns();
    metrics::gauge!("spreadagg_engine_ticks").set(state.ticks() as f64);
    metrics::gauge!("spreadagg_engine_windows").set(state.windows() as f64);
    metrics::gauge!("spreadagg_engine_symbols").set(state.symbols() as f64);
    metrics::gauge!("spreadagg_engine_chart_points").set(state.chart_points() as f64);
    let active = state.active_signals(now_ns);
    metrics::gauge!("spreadagg_engine_active_signals").set(active as f64);
    metrics::gauge!("spreadagg_engine_points_held").set(held as f64);
    metrics::gauge!("spreadagg_engine_shedding").set(if shedding { 1.0 } else { 0.0 });
    metrics::gauge!("spreadagg_engine_points_per_window_cap").set(state.caps().0 as f64);
    let completeness = if meters.ticks == 0 {
        Value::Null
    } else {
        json!(meters.matched_ticks as f64 / meters.ticks as f64)
    };
    component.set(
        true,
        json!({
            "state": "running",
            "ticks": meters.ticks,
            "points": meters.points,
            "completeness": completeness,
            "in_flight": in_flight,
            "held": {
                "ticks": state.ticks(),
                "windows": state.windows(),
                "symbols": state.symbols(),
                "chart_points": state.chart_points(),
            },
            "limits": {
                "ticks": state.limits().max_ticks.get(),
                "windows": state.caps().1,
                "points_per_window": state.caps().0,
                "shedding": shedding,
            },
            "evicted": {
                "ticks": e.ticks,
                "windows": e.windows,
                "points_by_count": e.points_by_count,
                "points_by_age": e.points_by_age,
            },
            "active_signals": active,
            "tick_to_ack_ms": {
                "p50": meters.last_latency.0,
                "p99": meters.last_latency.1,
                "ticks": meters.last_latency.2,
                "since_start": {
                    "p50": meters.latency_total.quantile_ms(0.5),
                    "p99": meters.latency_total.quantile_ms(0.99),
                    "ticks": meters.latency_total.count(),
                },
            },
            "staleness_ms": staleness_by_pair(state),
        }),
    );
}

/// p50/p95/p99 staleness per pair (upper bounds of power-of-two millisecond buckets), the
/// worst `STALENESS_PAIRS_SHOWN` by p99, so `/health` stays small with 10,000 windows.
fn staleness_by_pair(state: &SpreadState) -> Value {
    let mut pairs: Vec<(f64, Value)> = state
        .each_window()
        .filter_map(|(symbol, a, b, w)| {
            let h = w.staleness();
            let q = |q: f64| {
                h.quantile_ms(q).map(|v| {
                    if v.is_finite() {
                        json!(v)
                    } else {
                        json!("inf")
                    }
                })
            };
            let p99 = h.quantile_ms(0.99)?;
            Some((
                p99,
                json!({
                    "symbol": symbol, "a": a.as_str(), "b": b.as_str(),
                    "p50": q(0.5), "p95": q(0.95), "p99": q(0.99),
                }),
            ))
        })
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
    let total = pairs.len();
    pairs.truncate(STALENESS_PAIRS_SHOWN);
    json!({
        "pairs": total,
        "worst": pairs.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    })
}

/// How often the engine's consumer lag is measured.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Keeps `spreadagg_engine_lag_messages` (ticks in MD_TICKS past the consumer's acknowledged
/// floor) current until stop. A query that fails or takes over 2 s leaves it NaN (unknown).
pub(crate) async fn report_lag(bus: Bus, durable: String, stop: CancellationToken) {
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
                #[allow(clippy::cast_precision_loss)]
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
