//! `spreadagg archive verify`: reads what the archive holds and proves, per stream, whether
//! every stream sequence is there, by the `stream_seq` column.
//!
//! For each stream it lists the files under `<prefix>/<stream>/`, reads only the `stream_seq`
//! column of each, and reports the sequences present, duplicates (the same message in two
//! files: allowed by the contract, see docs/archive.md), gaps (sequences missing between the
//! lowest and highest archived), messages kept aside as poison (`_rejected/`, accounted, not
//! missing), and rows per partition. Given the stream's first and last sequence (from NATS,
//! when reachable), it also reports the head still in the stream but not archived and the tail
//! not yet archived. Complete means no gap and, when checked against NATS, nothing missing at
//! either end.
//!
//! With a time window, sequences interleave across partitions near its edges (a tick received
//! just before the hour can be published just after one received just after it), so one hour
//! either side is read as margin and only gaps between the window's own lowest and highest
//! sequence count. Memory: 8 bytes per archived row read (the sequences are sorted in memory);
//! verify a large archive by windows.

use std::collections::BTreeMap;

use arrow_array::Array as _;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::StreamExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::partition::{Partition, StreamKind};
use crate::store::{ArchiveStore, StoreError};

/// Files read at once.
const READ_CONCURRENCY: usize = 8;
/// At most this many gap ranges and duplicate examples are listed (all are counted).
const LISTED: usize = 100;
const HOUR_NS: i64 = 3_600_000_000_000;

/// Why the archive could not be verified (as opposed to: verified and found incomplete).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: not a readable Parquet file with a stream_seq column: {reason}")]
    File { path: String, reason: String },
}

/// A stream's first and last sequence as the broker reports them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamBounds {
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A window of partition hours, inclusive, as Unix nanoseconds of the hours' starts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Window {
    /// Parses `--from` / `--to`: RFC 3339 (`2025-01-02T07:00:00Z`), `YYYY-MM-DDTHH:MM[:SS]`
    /// (UTC) or a date (`2025-01-02`: from its start, or to its end).
    ///
    /// # Errors
    /// A message naming the value that does not parse.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Option<Self>, String> {
        if from.is_none() && to.is_none() {
            return Ok(None);
        }
        let from_ns = from.map_or(Ok(i64::MIN), |v| parse_time(v, false))?;
        let to_ns = to.map_or(Ok(i64::MAX), |v| parse_time(v, true))?;
        if from_ns > to_ns {
            return Err("--from is after --to".into());
        }
        Ok(Some(Self { from_ns, to_ns }))
    }

    fn widened(self) -> Self {
        Self {
            from_ns: self.from_ns.saturating_sub(HOUR_NS),
            to_ns: self.to_ns.saturating_add(HOUR_NS),
        }
    }

    /// Whether the partition hour starting at `hour_ns` overlaps the window.
    pub(crate) fn holds_hour(self, hour_ns: i64) -> bool {
        hour_ns.saturating_add(HOUR_NS) > self.from_ns && hour_ns <= self.to_ns
    }
}

/// `value` as Unix nanoseconds; a bare date is its first (or, for `end`, last) nanosecond.
pub fn parse_time(value: &str, end: bool) -> Result<i64, String> {
    let bad = || format!("{value:?} is not a time (2025-01-02T07:00:00Z or 2025-01-02)");
    let at: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S") {
        t.and_utc()
    } else if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M") {
        t.and_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let start = d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc();
        if end {
            start
                .checked_add_signed(chrono::Duration::days(1))
                .and_then(|t| t.checked_sub_signed(chrono::Duration::nanoseconds(1)))
                .ok_or_else(bad)?
        } else {
            start
        }
    } else {
        return Err(bad());
    };
    at.timestamp_nanos_opt().ok_or_else(bad)
}

/// One stream's findings.
#[derive(Debug, Default, Serialize)]
pub struct StreamReport {
    pub files: usize,
    pub rows: u64,
    /// Distinct sequences archived (in the window, when one was given).
    pub distinct: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Rows beyond the first of their sequence.
    pub duplicates: u64,
    pub duplicate_examples: Vec<u64>,
    /// Missing sequences between `first_seq` and `last_seq`, as inclusive ranges.
    pub gaps: Vec<[u64; 2]>,
    pub gap_ranges: usize,
    pub missing: u64,
    /// Messages kept aside as poison (`_rejected/`): accounted for, not missing.
    pub rejected: u64,
    /// The broker's bounds, when checked against it.
    pub stream: Option<StreamBounds>,
    /// Sequences still in the stream below the lowest archived one (not yet archived).
    pub unarchived_head: u64,
    /// Sequences in the stream above the highest archived one (not yet archived).
    pub unarchived_tail: u64,
    /// Objects that are not data files: a write in progress or a crash's staging leftover
    /// (hidden from readers), or foreign objects.
    pub other_objects: Vec<String>,
    pub rows_by_partition: BTreeMap<String, u64>,
    pub complete: bool,
}

/// The whole report, as printed.
#[derive(Debug, Serialize)]
pub struct Report {
    pub store: String,
    pub complete: bool,
    /// No data file in any stream (a wrong store or prefix, or nothing archived yet).
    pub found_nothing: bool,
    /// Every stream's bounds were read from NATS and applied (whole-archive runs only).
    pub checked_against_nats: bool,
    pub streams: BTreeMap<&'static str, StreamReport>,
}

/// Verifies every stream of the archive in `store` (optionally within `window`, and against
/// the broker's `bounds` per stream when known).
///
/// # Errors
/// When the store cannot be listed or a data file cannot be read.
pub async fn verify(
    store: &ArchiveStore,
    window: Option<Window>,
    bounds: &BTreeMap<StreamKind, StreamBounds>,
) -> Result<Report, VerifyError> {
    let mut streams = BTreeMap::new();
    for kind in StreamKind::ALL {
        let report = verify_stream(store, kind, window, bounds.get(&kind).copied()).await?;
        streams.insert(kind.name(), report);
    }
    // An archive with no data file at all is not "complete" unless the streams say they are
    // empty too: a mistyped store or prefix must not pass.
    let found_nothing = streams.values().all(|s| s.files == 0 && s.rejected == 0);
    let streams_empty = StreamKind::ALL.iter().all(|k| {
        // Only a stream that never held a message: one whose messages all expired did.
        bounds.get(k).is_some_and(|b| b.last_seq == 0)
    });
    Ok(Report {
        store: store.location().to_owned(),
        complete: streams.values().all(|s| s.complete) && (!found_nothing || streams_empty),
        found_nothing,
        checked_against_nats: window.is_none()
            && StreamKind::ALL.iter().all(|k| bounds.contains_key(k)),
        streams,
    })
}

async fn verify_stream(
    store: &ArchiveStore,
    kind: StreamKind,
    window: Option<Window>,
    bounds: Option<StreamBounds>,
) -> Result<StreamReport, VerifyError> {
    let mut report = StreamReport {
        stream: bounds,
        ..StreamReport::default()
    };
    let root = store.base().clone().join(kind.name());
    let prefix_len = root.as_ref().len() + 1;
    let read_window = window.map(Window::widened);
    // (path, partition label, whether it is inside the window proper)
    let mut data = Vec::new();
    for object in store.list(&root).await? {
        let relative =
            object.location.as_ref()[prefix_len.min(object.location.as_ref().len())..].to_owned();
        let partition = Partition::of_path(kind, &relative);
        match partition {
            Some(p) if relative.ends_with(".parquet") => {
                let hour_ns = p.hour_start_ns();
                let label = relative
                    .rsplit_once('/')
                    .map_or(String::new(), |(dir, _)| dir.to_owned());
                if read_window.is_none_or(|w| w.holds_hour(hour_ns)) {
                    let core = window.is_none_or(|w| w.holds_hour(hour_ns));
                    data.push((object.location, label, core));
                }
            }
            _ => report.other_objects.push(relative),
        }
    }
    let mut reads =
        futures_util::stream::iter(data.into_iter().map(|(path, label, core)| async move {
            let bytes = store.get(&path).await?;
            let seqs = stream_seqs(&path, bytes)?;
            Ok::<_, VerifyError>((label, core, seqs))
        }))
        .buffer_unordered(READ_CONCURRENCY);
    let (mut all, mut core_seqs) = (Vec::new(), Vec::new());
    while let Some(read) = reads.next().await {
        let (label, core, seqs) = read?;
        if core {
            report.files += 1;
            report.rows += seqs.len() as u64;
            *report.rows_by_partition.entry(label).or_default() += seqs.len() as u64;
            core_seqs.extend_from_slice(&seqs);
        }
        all.extend(seqs);
    }
    drop(reads);

    let mut rejected = Vec::new();
    let aside = store.base().clone().join("_rejected").join(kind.name());
    for object in store.list(&aside).await? {
        if let Some(seq) = object
            .location
            .filename()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            rejected.push(seq);
        }
    }

    core_seqs.sort_unstable();
    let before = core_seqs.len();
    let mut examples = Vec::new();
    for pair in core_seqs.windows(2) {
        if pair[0] == pair[1] && examples.len() < LISTED && examples.last() != Some(&pair[0]) {
            examples.push(pair[0]);
        }
    }
    core_seqs.dedup();
    report.duplicates = (before - core_seqs.len()) as u64;
    report.duplicate_examples = examples;
    report.distinct = core_seqs.len() as u64;
    report.first_seq = core_seqs.first().copied();
    report.last_seq = core_seqs.last().copied();

    // Gaps over everything read (margin included) and the poison kept aside, counted only
    // between the window's own lowest and highest sequence.
    all.extend(&rejected);
    all.sort_unstable();
    all.dedup();
    if let (Some(low), Some(high)) = (report.first_seq, report.last_seq) {
        report.rejected = rejected
            .iter()
            .filter(|s| (low..=high).contains(*s) || window.is_none())
            .count() as u64;
        for pair in all.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b > a + 1 && a >= low && b <= high {
                report.missing += b - a - 1;
                report.gap_ranges += 1;
                if report.gaps.len() < LISTED {
                    report.gaps.push([a + 1, b - 1]);
                }
            }
        }
    } else {
        report.rejected = rejected.len() as u64;
    }
    if window.is_none()
        && let Some(b) = bounds
        && b.last_seq > 0
    {
        match (all.first().copied(), all.last().copied()) {
            (Some(lowest), Some(highest)) => {
                report.unarchived_head = lowest.min(b.last_seq + 1).saturating_sub(b.first_seq);
                report.unarchived_tail = b.last_seq.saturating_sub(highest);
            }
            // Nothing archived: what the stream still holds is the tail (if it expired
            // everything, `found_nothing` keeps the archive from passing).
            _ => {
                report.unarchived_tail = b
                    .last_seq
                    .saturating_sub(b.first_seq.saturating_sub(1).min(b.last_seq));
            }
        }
    }
    report.complete =
        report.missing == 0 && report.unarchived_head == 0 && report.unarchived_tail == 0;
    Ok(report)
}

/// The `stream_seq` column of one Parquet file, read alone.
fn stream_seqs(path: &Path, bytes: Bytes) -> Result<Vec<u64>, VerifyError> {
    let bad = |reason: String| VerifyError::File {
        path: path.to_string(),
        reason,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(e.to_string()))?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["stream_seq"]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let column = batch
            .column_by_name("stream_seq")
            .ok_or_else(|| bad("no stream_seq column".into()))?;
        let seqs = column
            .as_any()
            .downcast_ref::<arrow_array::UInt64Array>()
            .ok_or_else(|| bad("stream_seq is not uint64".into()))?;
        if seqs.null_count() > 0 {
            return Err(bad("stream_seq has nulls".into()));
        }
        out.extend(seqs.values().iter().copied());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let at_7 = 1_735_801_200_000_000_000; // 2025-01-02T07:00:00Z
        assert_eq!(parse_time("2025-01-02T07:00:00Z", false), Ok(at_7));
        assert_eq!(parse_time("2025-01-02T08:00:00+01:00", false), Ok(at_7));
        assert_eq!(parse_time("2025-01-02T07:00", false), Ok(at_7));
        assert_eq!(
            parse_time("2025-01-02", false),
            Ok(at_7 - 7 * HOUR_NS),
            "a date starts at midnight"
        );
        assert_eq!(
            parse_time("2025-01-02", true),
            Ok(at_7 + 17 * HOUR_NS - 1),
            "and ends at its last nanosecond"
        );
        assert!(parse_time("yesterday", false).is_err());
        assert!(
            parse_time("+262143-12-31", true).is_err(),
            "no overflow past chrono's range"
        );
        assert!(Window::parse(Some("2025-01-03"), Some("2025-01-02")).is_err());
        assert!(Window::parse(None, None).expect("ok").is_none());
    }

    #[tokio::test]
    async fn an_archive_with_nothing_in_it_is_not_complete() {
        let store = crate::store::open("memory://", "", crate::StoreOptions::default())
            .expect("memory store");
        let report = verify(&store, None, &BTreeMap::new())
            .await
            .expect("verifies");
        assert!(report.found_nothing && !report.complete);
        // ... unless the streams say they are empty too.
        let empty: BTreeMap<StreamKind, StreamBounds> = StreamKind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    StreamBounds {
                        first_seq: 0,
                        last_seq: 0,
                    },
                )
            })
            .collect();
        let report = verify(&store, None, &empty).await.expect("verifies");
        assert!(report.complete && report.checked_against_nats);
    }

    #[test]
    fn windows_hold_the_hours_they_overlap() {
        let w = Window::parse(Some("2025-01-02T07:30:00Z"), Some("2025-01-02T08:00:00Z"))
            .expect("parses")
            .expect("some");
        let h = |n: i64| 1_735_801_200_000_000_000 + n * HOUR_NS; // hour 07 + n
        assert!(!w.holds_hour(h(-1)));
        assert!(w.holds_hour(h(0)), "07:00-08:00 overlaps 07:30");
        assert!(w.holds_hour(h(1)), "08:00 is the window's last instant");
        assert!(!w.holds_hour(h(2)));
    }
}
