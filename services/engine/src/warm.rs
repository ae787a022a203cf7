//! Warm restart: before the durable consumer is opened, the state is rebuilt by replaying the
//! ticks stored in the last `warm_start_s` seconds through the same code, up to the highest
//! tick the durable had delivered. Ticks past its acknowledged floor may not have had their
//! points published (the previous engine may have died first), so theirs are published again
//! (the stream's duplicate window drops what was stored); the durable then redelivers them and
//! they are acknowledged without being applied twice.
//!
//! A durable that does not exist yet (a first start, or a new shard layout) begins after the
//! last tick stored now; the replay rebuilds the state up to that tick without publishing
//! (those ticks were the previous engines' to publish). A first start therefore does not
//! re-publish a day of retained ticks, and a new shard starts with warm bands.
//!
//! Unacknowledged ticks the replay does not reach (it stopped early, or the horizon begins
//! after the ack floor) are read back by sequence and processed before the durable opens.
//!
//! The state is then exactly that of an engine that never stopped whenever the replay reaches
//! back far enough: every pair's last `band_points` values and chart window within the
//! horizon (by default the chart window's length), every symbol's signal state decided there.

use std::time::{Duration, Instant};

use serde_json::json;
use spreadagg_bus::{Bus, BusError};
use spreadagg_model::subjects::{ALL_TICKS, STREAM_TICKS};
use spreadagg_runtime::Component;
use tokio_util::sync::CancellationToken;

use crate::{EngineConfig, Stopped, Work};

/// A replay that has received nothing for this long has read everything there is.
const IDLE: Duration = Duration::from_secs(5);

/// How often progress is written to `/health`.
const PROGRESS_EVERY: u64 = 10_000;

/// How far the replay goes and what it publishes.
struct Plan {
    /// Replay through this stream sequence.
    through: u64,
    /// Publish what ticks past this one make.
    floor: u64,
    /// Where a durable created now must begin.
    start_seq: Option<u64>,
}

/// Rebuilds `work`'s state (not ready meanwhile) and returns where a new durable begins.
pub(crate) async fn start(
    work: &mut Work,
    bus: &Bus,
    config: &EngineConfig,
    component: &Component,
    stop: &CancellationToken,
) -> Result<Option<u64>, Stopped> {
    let Plan {
        through,
        floor,
        start_seq,
    } = plan(bus, &config.durable_name(), component, stop).await?;
    // Where delivery stands is known from here on: a delivery past `through + 1` is a gap.
    work.baseline_known = through > 0 || start_seq.is_some();
    if through == 0 {
        return Ok(start_seq);
    }
    if config.warm_start_s == 0 {
        // No replay, but the unacknowledged ticks must still be applied and published before
        // the durable redelivers them (behind newer ticks), or they would be taken for applied.
        work.fill(floor + 1, through + 1, stop).await?;
        work.applied_through = through;
        return Ok(start_seq);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(config.warm_start_timeout_s);
    let progress = |replayed: u64, at: u64, state: &str| {
        json!({
            "state": state, "replayed": replayed, "at_seq": at, "through_seq": through,
            "ack_floor": floor, "seconds": started.elapsed().as_secs_f64(),
        })
    };
    component.set(false, progress(0, 0, "warming"));
    let mut reader = match bus
        .history(
            STREAM_TICKS,
            ALL_TICKS,
            Duration::from_secs(config.warm_start_s),
        )
        .await
    {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(%error, "warm start: cannot read MD_TICKS; starting empty");
            work.fill(floor + 1, through + 1, stop).await?;
            work.applied_through = through;
            return Ok(start_seq);
        }
    };
    let (mut replayed, mut at) = (0_u64, 0_u64);
    let outcome = loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(Stopped),
            () = tokio::time::sleep_until(deadline.into()) => break "timed out",
            next = tokio::time::timeout(IDLE, reader.next()) => next,
        };
        let d = match next {
            Err(_) => break "nothing more stored",
            Ok(Err(error)) => {
                tracing::debug!(%error, "warm start: read error; retrying");
                continue;
            }
            Ok(Ok(d)) => d,
        };
        if at == 0 && d.stream_seq > floor + 1 {
            // The horizon starts after the ack floor: the unacknowledged ticks before it are
            // read back first, in order (their points may never have been published).
            work.fill(floor + 1, d.stream_seq.min(through + 1), stop)
                .await?;
            at = (d.stream_seq - 1).min(through);
        }
        if d.stream_seq > through {
            break "done";
        }
        let publish = d.stream_seq > floor;
        work.process(&d.subject, &d.payload, d.stream_seq, publish, stop)
            .await?;
        (replayed, at) = (replayed + 1, d.stream_seq);
        if replayed % PROGRESS_EVERY == 0 {
            component.set(false, progress(replayed, at, "warming"));
        }
        if d.stream_seq == through {
            break "done";
        }
    };
    // Unacknowledged ticks the replay did not reach (it stopped early, or found nothing) are
    // read back by sequence: the durable will redeliver them, and they must be applied and
    // published before it does, or they would be taken for applied.
    if at < through {
        work.fill(at.max(floor) + 1, through + 1, stop).await?;
    }
    work.applied_through = through;
    metrics::counter!("spreadagg_engine_warm_replayed_total").increment(replayed);
    metrics::gauge!("spreadagg_engine_warm_start_seconds").set(started.elapsed().as_secs_f64());
    tracing::info!(
        replayed,
        through_seq = through,
        reached_seq = at,
        ack_floor = floor,
        seconds = started.elapsed().as_secs_f64(),
        outcome,
        "warm start finished"
    );
    component.set(false, progress(replayed, at, outcome));
    Ok(start_seq)
}

/// Asks the bus (until it answers) where the durable stands.
async fn plan(
    bus: &Bus,
    durable: &str,
    component: &Component,
    stop: &CancellationToken,
) -> Result<Plan, Stopped> {
    loop {
        let answer = match bus.consumer_state(STREAM_TICKS, durable).await {
            // The floor can pass the delivered sequence when undelivered ticks aged out.
            Ok(c) => Ok(Plan {
                through: c.delivered_seq,
                floor: c.ack_floor.min(c.delivered_seq),
                start_seq: None,
            }),
            Err(BusError::NoConsumer { .. }) => {
                bus.stream_state(STREAM_TICKS).await.map(|s| Plan {
                    through: s.last_seq,
                    floor: s.last_seq,
                    start_seq: Some(s.last_seq + 1),
                })
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(plan) => return Ok(plan),
            Err(e) => {
                tracing::warn!(error = %e, "engine: bus not available; retrying");
                component.set(
                    false,
                    json!({"state": "waiting for bus", "error": e.to_string()}),
                );
                tokio::select! {
                    () = stop.cancelled() => return Err(Stopped),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
