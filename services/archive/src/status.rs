//! Each archived stream's state as `/health` shows it ([`StreamStatus`], shared by its writer
//! and the lag watcher), and the lag watcher: the messages each stream holds that the archive
//! does not yet (what a whole-cluster power loss would put at risk).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use spreadagg_bus::{Bus, BusError};
use spreadagg_runtime::{Component, Health};
use tokio_util::sync::CancellationToken;

use crate::partition::StreamKind;
use crate::store::ArchiveStore;

/// How often the lag (stream last sequence minus the consumer's ack floor) is refreshed.
const LAG_REFRESH: Duration = Duration::from_secs(3);
/// A lag query that takes longer is skipped until the next refresh.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const STATE_STARTING: u8 = 0;
pub(crate) const STATE_RUNNING: u8 = 1;
pub(crate) const STATE_STORE_FAILING: u8 = 2;
pub(crate) const STATE_STOPPED: u8 = 3;

/// A stream's state as `/health` shows it; shared by its writer and the lag watcher.
#[derive(Debug)]
pub(crate) struct StreamStatus {
    kind: StreamKind,
    component: Component,
    pub(crate) state: AtomicU8,
    pub(crate) opened: AtomicBool,
    pub(crate) buffered: AtomicU64,
    pub(crate) files_written: AtomicU64,
    /// -1 until first measured.
    lag: AtomicI64,
}

impl StreamStatus {
    pub(crate) fn new(health: &Health, kind: StreamKind) -> Self {
        Self {
            kind,
            component: health.register(kind.component()),
            state: AtomicU8::new(STATE_STARTING),
            opened: AtomicBool::new(false),
            buffered: AtomicU64::new(0),
            files_written: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
        }
    }

    pub(crate) fn set_state(&self, state: u8) {
        if self.state.swap(state, Ordering::Relaxed) != state {
            self.publish();
        }
    }

    /// Writes the current state into the health registry. Ready while the consumer is open
    /// and the store takes writes.
    pub(crate) fn publish(&self) {
        let state = self.state.load(Ordering::Relaxed);
        let lag = self.lag.load(Ordering::Relaxed);
        let detail = json!({
            "state": match state {
                STATE_STARTING => "starting",
                STATE_RUNNING => "running",
                STATE_STORE_FAILING => "store_failing",
                _ => "stopped",
            },
            "buffered": self.buffered.load(Ordering::Relaxed),
            "files_written": self.files_written.load(Ordering::Relaxed),
            "lag": if lag < 0 { Value::Null } else { json!(lag) },
        });
        self.component.set(state == STATE_RUNNING, detail);
    }
}

/// Refreshes each opened stream's lag every few seconds: its stream's last sequence minus the
/// consumer's ack floor, the messages not yet archived (what a whole-cluster power loss would
/// put at risk). Also republishes each stream's health detail.
pub(crate) async fn watch_lag(bus: Bus, statuses: Vec<Arc<StreamStatus>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for status in &statuses {
            if !status.opened.load(Ordering::Relaxed) {
                continue;
            }
            let kind = status.kind;
            let measured = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                measured = tokio::time::timeout(LAG_QUERY_TIMEOUT, lag_of(&bus, kind)) => measured,
            };
            match measured {
                Ok(Ok(lag)) => {
                    metrics::gauge!("spreadagg_archive_lag_messages", "stream" => kind.name())
                        .set(lag as f64);
                    status
                        .lag
                        .store(i64::try_from(lag).unwrap_or(i64::MAX), Ordering::Relaxed);
                }
                // Unknown, not the last value: a stale number could hold an alert or hide one.
                Ok(Err(error)) => {
                    metrics::gauge!("spreadagg_archive_lag_messages", "stream" => kind.name())
                        .set(f64::NAN);
                    tracing::debug!(stream = kind.name(), %error, "lag query failed");
                }
                Err(_) => {
                    metrics::gauge!("spreadagg_archive_lag_messages", "stream" => kind.name())
                        .set(f64::NAN);
                    tracing::debug!(stream = kind.name(), "lag query timed out");
                }
            }
            status.publish();
        }
    }
}

async fn lag_of(bus: &Bus, kind: StreamKind) -> Result<u64, BusError> {
    let stream = bus.stream_state(kind.stream()).await?;
    let consumer = bus.consumer_state(kind.stream(), kind.durable()).await?;
    Ok(stream.last_seq.saturating_sub(consumer.ack_floor))
}

/// How long one store check may take before it counts as failed.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes the store every `every` (a small write, read and delete) and reports the result as
/// the `archive.store` health component, so readiness follows the store even while no file
/// is due. `spreadagg_archive_store_up` is 1 after a good check and 0 after a failed one.
pub(crate) async fn watch_store(
    store: ArchiveStore,
    component: Component,
    every: Duration,
    stop: CancellationToken,
) {
    let mut failures: u64 = 0;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checked = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            checked = tokio::time::timeout(STORE_CHECK_TIMEOUT, store.probe()) => checked,
        };
        let error = match checked {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!(
                "no answer within {} s",
                STORE_CHECK_TIMEOUT.as_secs()
            )),
        };
        metrics::gauge!("spreadagg_archive_store_up").set(if error.is_none() { 1.0 } else { 0.0 });
        if let Some(error) = &error {
            failures += 1;
            metrics::counter!("spreadagg_archive_store_check_failures_total").increment(1);
            tracing::warn!(store = store.location(), %error, "store check failed");
        }
        component.set(
            error.is_none(),
            json!({
                "location": store.location(),
                "ok": error.is_none(),
                "last_error": error,
                "failed_checks": failures,
            }),
        );
    }
}
