//! `spreadagg replay`: archived ticks and trades published back into NATS in time order, for
//! backtests and for rebuilding state.
//!
//! The archive is read one partition hour at a time (every exchange's tick and trade files of
//! that hour): rows are read back into wire messages, kept if their `recv_ts_ns` is inside the
//! window, deduplicated by stream sequence (the archive may hold a message twice, see
//! docs/archive.md), and ordered by `recv_ts_ns` (then by stream and sequence, so ties keep
//! their original order). Partitions are by `recv_ts_ns`, so hour after hour is time order.
//! At speed `s > 0` a message is published `(recv_ts - first_recv_ts) / s` after the first
//! (the market's pacing at 1); at speed 0 as fast as the broker acknowledges (a pipelining
//! publisher, every publish acknowledged before the replay reports done).
//!
//! Subjects are the contract's (`md.tick.<exchange>.<symbol>`), with `md` replaced by the
//! subject prefix when one is given; each publish carries `Nats-Msg-Id`
//! `replay-<stream>-<stream_seq>`, so a replay repeated within the duplicate window stores
//! nothing twice. Memory: one partition hour of ticks and trades at a time.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use prost::Message;
use serde::Serialize;
use spreadagg_bus::{Bus, OutMessage};
use spreadagg_model::wire::{Tick, Trade};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::partition::{Partition, StreamKind};
use crate::read;
use crate::store::{ArchiveStore, StoreError};
use crate::verify::Window;

/// Files read at once.
const READ_CONCURRENCY: usize = 8;
/// Publishes awaiting their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 1024;
const MIN_SPEED: f64 = 1e-3;
const MAX_SPEED: f64 = 1e6;
/// A message due less than this far ahead is published at once (timers are not finer).
const PACING_SLACK: Duration = Duration::from_millis(1);

/// What to replay, how fast and where.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    pub window: Window,
    /// 1 is the original pacing, 0 as fast as possible.
    pub speed: f64,
    /// Replaces `md` at the front of every subject.
    pub subject_prefix: String,
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "publishing {subject} failed: {reason} (does a stream take these subjects? with --subject-prefix, create one for them)"
    )]
    Publish { subject: String, reason: String },
    #[error("--speed must be 0 (as fast as possible) or between 0.001 and 1000000, not {0}")]
    Speed(f64),
    #[error("--subject-prefix {0:?} must be a non-empty NATS subject prefix without wildcards")]
    Prefix(String),
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub ticks: u64,
    pub trades: u64,
    /// Rows read more than once (the same stream sequence in two files), published once.
    pub duplicates_skipped: u64,
    pub hours: u64,
    /// Rows whose exchange or symbol cannot be a subject token (empty, `.`, `*`, `>` or
    /// whitespace): counted and left out, never a broken publish.
    pub skipped_bad_subject: u64,
    pub first_recv_ts_ns: Option<i64>,
    pub last_recv_ts_ns: Option<i64>,
    /// Whether it stopped before the end (a signal).
    pub interrupted: bool,
}

enum Item {
    Tick(Tick),
    Trade(Trade),
}

struct Timed {
    recv_ts_ns: i64,
    kind: StreamKind,
    stream_seq: u64,
    item: Item,
}

/// Checks the spec without touching the store or the bus.
///
/// # Errors
/// A bad speed or prefix.
pub fn check(spec: &ReplaySpec) -> Result<(), ReplayError> {
    // 0 (as fast as possible) or a pace between a thousandth and a million times the
    // market's: slower would wait for years, faster is as fast as possible anyway.
    if !(spec.speed == 0.0 || (MIN_SPEED..=MAX_SPEED).contains(&spec.speed)) {
        return Err(ReplayError::Speed(spec.speed));
    }
    let p = &spec.subject_prefix;
    if p.is_empty()
        || p.starts_with('.')
        || p.ends_with('.')
        || p.contains("..")
        || p.chars().any(|c| c == '*' || c == '>' || c.is_whitespace())
    {
        return Err(ReplayError::Prefix(p.clone()));
    }
    Ok(())
}

/// Replays the window; returns early (with `interrupted`) when `stop` is cancelled.
///
/// # Errors
/// When the store cannot be read or a publish fails for good.
pub async fn replay(
    store: &ArchiveStore,
    bus: &Bus,
    spec: &ReplaySpec,
    stop: &CancellationToken,
) -> Result<ReplayReport, ReplayError> {
    check(spec)?;
    let hours = files_by_hour(store, spec.window).await?;
    let mut report = ReplayReport::default();
    let mut publisher = bus.publisher(MAX_IN_FLIGHT);
    // (first message's time, the instant it was published)
    let mut origin: Option<(i64, Instant)> = None;
    for (_, files) in hours {
        report.hours += 1;
        let mut batch = read_hour(store, files, spec.window, &mut report).await?;
        batch.sort_by(|a, b| {
            (a.recv_ts_ns, a.kind, a.stream_seq).cmp(&(b.recv_ts_ns, b.kind, b.stream_seq))
        });
        for timed in batch {
            if spec.speed > 0.0 {
                let (t0, w0) = *origin.get_or_insert((timed.recv_ts_ns, Instant::now()));
                let offset = timed.recv_ts_ns.saturating_sub(t0).max(0) as f64 / 1e9 / spec.speed;
                // A timestamp too far ahead to be a clock reading waits a century, never
                // overflows.
                let due = Duration::try_from_secs_f64(offset)
                    .ok()
                    .and_then(|d| w0.checked_add(d))
                    .unwrap_or_else(|| w0 + Duration::from_secs(100 * 365 * 86_400));
                if due > Instant::now() + PACING_SLACK {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            report.first_recv_ts_ns.get_or_insert(timed.recv_ts_ns);
            report.last_recv_ts_ns = Some(timed.recv_ts_ns);
            let (exchange, symbol) = match &timed.item {
                Item::Tick(t) => (&t.exchange, &t.symbol),
                Item::Trade(t) => (&t.exchange, &t.symbol),
            };
            if !subject_token(exchange) || !subject_token(symbol) {
                if report.skipped_bad_subject == 0 {
                    tracing::warn!(exchange = %exchange, symbol = %symbol, "a row's exchange or symbol cannot be a subject token; such rows are left out");
                }
                report.skipped_bad_subject += 1;
                continue;
            }
            let (subject, payload) = match &timed.item {
                Item::Tick(t) => {
                    report.ticks += 1;
                    (
                        format!("{}.tick.{}.{}", spec.subject_prefix, t.exchange, t.symbol),
                        t.encode_to_vec(),
                    )
                }
                Item::Trade(t) => {
                    report.trades += 1;
                    (
                        format!("{}.trade.{}.{}", spec.subject_prefix, t.exchange, t.symbol),
                        t.encode_to_vec(),
                    )
                }
            };
            let msg = OutMessage {
                subject,
                msg_id: format!("replay-{}-{}", timed.kind.name(), timed.stream_seq),
                payload: Bytes::from(payload),
            };
            publisher
                .publish(msg)
                .await
                .map_err(|f| ReplayError::Publish {
                    subject: f.message.subject.clone(),
                    reason: f.error.to_string(),
                })?;
        }
        if report.interrupted {
            break;
        }
    }
    publisher.flush().await.map_err(|f| ReplayError::Publish {
        subject: f.message.subject.clone(),
        reason: f.error.to_string(),
    })?;
    Ok(report)
}

/// Whether `s` can be one token of a NATS subject.
fn subject_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}

/// Tick and trade files per partition hour (in time order) that overlap the window, each
/// with its stream and exchange.
async fn files_by_hour(
    store: &ArchiveStore,
    window: Window,
) -> Result<BTreeMap<i64, Vec<(StreamKind, String, Path)>>, ReplayError> {
    let mut hours: BTreeMap<i64, Vec<(StreamKind, String, Path)>> = BTreeMap::new();
    for kind in [StreamKind::Ticks, StreamKind::Trades] {
        let root = store.base().clone().join(kind.name());
        let skip = root.as_ref().len() + 1;
        for object in store.list(&root).await? {
            let full = object.location.as_ref();
            let relative = &full[skip.min(full.len())..];
            if !relative.ends_with(".parquet") {
                continue;
            }
            let Some(partition) = Partition::of_path(kind, relative) else {
                continue;
            };
            let hour_ns = partition.hour_start_ns();
            if let Some(exchange) = partition.exchange().map(str::to_owned)
                && window.holds_hour(hour_ns)
            {
                hours
                    .entry(hour_ns)
                    .or_default()
                    .push((kind, exchange, object.location));
            }
        }
    }
    Ok(hours)
}

/// Every message of one hour's files inside the window, deduplicated by stream sequence.
async fn read_hour(
    store: &ArchiveStore,
    files: Vec<(StreamKind, String, Path)>,
    window: Window,
    report: &mut ReplayReport,
) -> Result<Vec<Timed>, ReplayError> {
    let mut reads =
        futures_util::stream::iter(files.into_iter().map(|(kind, exchange, path)| async move {
            let bytes = store.get(&path).await?;
            let bad = |e: read::ReadError| ReplayError::File {
                path: path.to_string(),
                reason: e.to_string(),
            };
            let items: Vec<Timed> = match kind {
                StreamKind::Ticks => read::ticks(bytes, &exchange)
                    .map_err(bad)?
                    .into_iter()
                    .map(|r| Timed {
                        recv_ts_ns: r.msg.recv_ts_ns,
                        kind,
                        stream_seq: r.stream_seq,
                        item: Item::Tick(r.msg),
                    })
                    .collect(),
                _ => read::trades(bytes, &exchange)
                    .map_err(bad)?
                    .into_iter()
                    .map(|r| Timed {
                        recv_ts_ns: r.msg.recv_ts_ns,
                        kind,
                        stream_seq: r.stream_seq,
                        item: Item::Trade(r.msg),
                    })
                    .collect(),
            };
            Ok::<_, ReplayError>(items)
        }))
        .buffer_unordered(READ_CONCURRENCY);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while let Some(items) = reads.next().await {
        for timed in items? {
            if !(window.from_ns..=window.to_ns).contains(&timed.recv_ts_ns) {
                continue;
            }
            if seen.insert((timed.kind, timed.stream_seq)) {
                out.push(timed);
            } else {
                report.duplicates_skipped += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(speed: f64, prefix: &str) -> ReplaySpec {
        ReplaySpec {
            window: Window {
                from_ns: 0,
                to_ns: 1,
            },
            speed,
            subject_prefix: prefix.into(),
        }
    }

    #[test]
    fn speed_and_prefix_are_checked() {
        assert!(check(&spec(1.0, "md")).is_ok());
        assert!(check(&spec(0.0, "backtest.run1")).is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e-300, 1e-4, 1e7] {
            assert!(matches!(
                check(&spec(bad, "md")),
                Err(ReplayError::Speed(_))
            ));
        }
        for bad in ["", ".md", "md.", "a..b", "md.*", "md.>", "m d"] {
            assert!(
                matches!(check(&spec(1.0, bad)), Err(ReplayError::Prefix(_))),
                "{bad:?}"
            );
        }
    }
}
