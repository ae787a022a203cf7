//! The archive's layout: which stream a file belongs to, the Hive partition a row falls in
//! (`ticks/exchange=<id>/date=<YYYY-MM-DD>/hour=<HH>/`, the same for `trades/`, and
//! `spreads/date=/hour=/`), and the deterministic file name of a flushed batch.
//!
//! Partitions come from the row's own time (UTC), never from the wall clock of the archiver,
//! so a redelivered or replayed message lands in the same directory as it did the first time.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use object_store::path::Path;
use spreadagg_model::subjects::{STREAM_SPREADS, STREAM_TICKS, STREAM_TRADES};

/// One archived stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    Ticks,
    Trades,
    Spreads,
}

impl StreamKind {
    /// Every archived stream.
    pub const ALL: [StreamKind; 3] = [StreamKind::Ticks, StreamKind::Trades, StreamKind::Spreads];

    /// Top-level directory, file-name stem and metric label: `ticks`, `trades`, `spreads`.
    pub const fn name(self) -> &'static str {
        match self {
            StreamKind::Ticks => "ticks",
            StreamKind::Trades => "trades",
            StreamKind::Spreads => "spreads",
        }
    }

    /// The JetStream stream read.
    pub const fn stream(self) -> &'static str {
        match self {
            StreamKind::Ticks => STREAM_TICKS,
            StreamKind::Trades => STREAM_TRADES,
            StreamKind::Spreads => STREAM_SPREADS,
        }
    }

    /// The durable consumer's name: progress survives archiver restarts.
    pub const fn durable(self) -> &'static str {
        match self {
            StreamKind::Ticks => "archiver-ticks",
            StreamKind::Trades => "archiver-trades",
            StreamKind::Spreads => "archiver-spreads",
        }
    }

    /// The consumer's subject filter.
    pub const fn filter(self) -> &'static str {
        match self {
            StreamKind::Ticks => spreadagg_model::subjects::ALL_TICKS,
            StreamKind::Trades => spreadagg_model::subjects::ALL_TRADES,
            StreamKind::Spreads => spreadagg_model::subjects::ALL_SPREADS,
        }
    }

    /// The health component's name (`archive.ticks`).
    pub const fn component(self) -> &'static str {
        match self {
            StreamKind::Ticks => "archive.ticks",
            StreamKind::Trades => "archive.trades",
            StreamKind::Spreads => "archive.spreads",
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest exchange id accepted as a partition value; real ids are far shorter.
const MAX_EXCHANGE_LEN: usize = 32;

/// Whether `id` is safe as the value of `exchange=<id>`: lowercase ASCII letters, digits, `_`
/// and `-`. Anything else (empty, `/`, `..`, `=`, upper case) would break the layout or
/// escape it. Ids outside the contract's list are still archived: a newer ingestor must not
/// lose data to an older archiver during a rolling update.
pub fn valid_exchange(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_EXCHANGE_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The Hive partition one row belongs to. Ordered, so a flush writes partitions in a stable
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// `None` for spreads, which span two exchanges.
    exchange: Option<String>,
    date: NaiveDate,
    hour: u32,
}

impl Partition {
    /// The partition of a row timed `ts_ns` (Unix nanoseconds, UTC). `exchange` must satisfy
    /// [`valid_exchange`]; the caller checks, this only lays out.
    pub fn new(exchange: Option<&str>, ts_ns: i64) -> Self {
        let at: DateTime<Utc> = DateTime::from_timestamp_nanos(ts_ns);
        Self {
            exchange: exchange.map(str::to_owned),
            date: at.date_naive(),
            hour: at.hour(),
        }
    }

    /// The partition's directory under the store prefix, as path segments:
    /// `["ticks", "exchange=binance", "date=2025-01-02", "hour=07"]`.
    pub fn segments(&self, kind: StreamKind) -> Vec<String> {
        let mut out = Vec::with_capacity(4);
        out.push(kind.name().to_owned());
        if let Some(exchange) = &self.exchange {
            out.push(format!("exchange={exchange}"));
        }
        out.push(format!(
            "date={:04}-{:02}-{:02}",
            self.date.year(),
            self.date.month(),
            self.date.day()
        ));
        out.push(format!("hour={:02}", self.hour));
        out
    }

    /// The partition's directory under `base` (the store prefix).
    pub fn dir(&self, base: &Path, kind: StreamKind) -> Path {
        self.segments(kind)
            .into_iter()
            .fold(base.clone(), |p, segment| p.join(segment))
    }

    /// The object path of a file in this partition under `base` (the store prefix).
    pub fn file_path(&self, base: &Path, kind: StreamKind, file_name: &str) -> Path {
        self.dir(base, kind).join(file_name)
    }

    /// The exchange of a tick or trade partition.
    pub fn exchange(&self) -> Option<&str> {
        self.exchange.as_deref()
    }

    /// The end of the partition's hour (exclusive), in Unix nanoseconds.
    pub fn hour_end_ns(&self) -> i64 {
        self.date
            .and_hms_opt(self.hour, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .map_or(i64::MAX, |start| start.saturating_add(HOUR_NS))
    }

    /// The partition of a file at `relative` (its path under `<prefix>/<stream>/`), from its
    /// `exchange=`, `date=` and `hour=` segments; `None` when they are not all there.
    pub fn of_path(kind: StreamKind, relative: &str) -> Option<Self> {
        let dir = relative.rsplit_once('/')?.0;
        let (mut exchange, mut date, mut hour) = (None, None, None);
        for segment in dir.split('/') {
            if let Some(e) = segment.strip_prefix("exchange=") {
                exchange = Some(e.to_owned());
            } else if let Some(d) = segment.strip_prefix("date=") {
                date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
            } else if let Some(h) = segment.strip_prefix("hour=") {
                hour = h.parse::<u32>().ok().filter(|h| *h < 24);
            }
        }
        let needs_exchange = kind != StreamKind::Spreads;
        if needs_exchange != exchange.is_some() {
            return None;
        }
        Some(Self {
            exchange,
            date: date?,
            hour: hour?,
        })
    }
}

const HOUR_NS: i64 = 3_600_000_000_000;

/// Suffix of a compacted file (several flushes merged); a plain `.parquet` file is one flush.
pub const COMPACTED_SUFFIX: &str = ".compacted.parquet";

/// `<stream>-<first_stream_seq>-<last_stream_seq>[.<replica>].compacted.parquet`: a file
/// merged from one replica's flush files by its compactor.
pub fn compacted_name(kind: StreamKind, first_seq: u64, last_seq: u64, replica: &str) -> String {
    format!(
        "{}-{first_seq}-{last_seq}{}{COMPACTED_SUFFIX}",
        kind.name(),
        replica_tag(replica)
    )
}

/// Whether `name` is one flush's file (a compaction candidate), not a compacted one.
pub fn is_flush_file(name: &str) -> bool {
    name.ends_with(".parquet") && !name.ends_with(COMPACTED_SUFFIX)
}

/// The replica that wrote a file named `name` (empty for a single archiver's files).
pub fn replica_of(name: &str) -> &str {
    let stem = name
        .strip_suffix(COMPACTED_SUFFIX)
        .or_else(|| name.strip_suffix(".parquet"))
        .unwrap_or(name);
    stem.split_once('.').map_or("", |(_, replica)| replica)
}

fn replica_tag(replica: &str) -> String {
    if replica.is_empty() {
        String::new()
    } else {
        format!(".{replica}")
    }
}

/// Whether `id` can name a replica in file names: 1 to 63 lowercase ASCII letters, digits or
/// `-` (a Kubernetes pod name fits).
pub fn valid_replica(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `<stream>-<first_stream_seq>-<last_stream_seq>[.<replica>].parquet`: a function of the
/// rows in the file and the replica that wrote it only, so a retried or repeated flush of the
/// same messages overwrites its own earlier file instead of adding a second copy, and two
/// replicas never write the same name.
pub fn file_name(kind: StreamKind, first_seq: u64, last_seq: u64, replica: &str) -> String {
    format!(
        "{}-{first_seq}-{last_seq}{}.parquet",
        kind.name(),
        replica_tag(replica)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-01-02T07:59:59.999999999Z
    const LATE_IN_HOUR_7: i64 = 1_735_804_799_999_999_999;

    #[test]
    fn tick_partitions_carry_exchange_date_and_hour() {
        let p = Partition::new(Some("binance"), LATE_IN_HOUR_7);
        assert_eq!(
            p.segments(StreamKind::Ticks),
            ["ticks", "exchange=binance", "date=2025-01-02", "hour=07"]
        );
        let next_hour = Partition::new(Some("binance"), LATE_IN_HOUR_7 + 1);
        assert_eq!(
            next_hour.segments(StreamKind::Trades),
            ["trades", "exchange=binance", "date=2025-01-02", "hour=08"]
        );
    }

    #[test]
    fn spread_partitions_have_no_exchange() {
        let p = Partition::new(None, 0);
        assert_eq!(
            p.segments(StreamKind::Spreads),
            ["spreads", "date=1970-01-01", "hour=00"]
        );
        // Before the epoch the hour still floors towards the past.
        let before = Partition::new(None, -1);
        assert_eq!(
            before.segments(StreamKind::Spreads),
            ["spreads", "date=1969-12-31", "hour=23"]
        );
    }

    #[test]
    fn file_paths_join_prefix_partition_and_name() {
        let p = Partition::new(Some("okx"), LATE_IN_HOUR_7);
        let name = file_name(StreamKind::Ticks, 17, 4242, "");
        assert_eq!(name, "ticks-17-4242.parquet");
        assert_eq!(
            p.file_path(&Path::from("archive/v1"), StreamKind::Ticks, &name)
                .as_ref(),
            "archive/v1/ticks/exchange=okx/date=2025-01-02/hour=07/ticks-17-4242.parquet"
        );
        assert_eq!(
            p.file_path(&Path::default(), StreamKind::Ticks, &name)
                .as_ref(),
            "ticks/exchange=okx/date=2025-01-02/hour=07/ticks-17-4242.parquet"
        );
    }

    #[test]
    fn partitions_read_back_from_paths_and_know_their_hour() {
        let p = Partition::new(Some("okx"), LATE_IN_HOUR_7);
        let rel = "exchange=okx/date=2025-01-02/hour=07/ticks-1-2.parquet";
        assert_eq!(Partition::of_path(StreamKind::Ticks, rel), Some(p.clone()));
        assert_eq!(p.hour_end_ns(), LATE_IN_HOUR_7 + 1);
        assert_eq!(p.exchange(), Some("okx"));
        assert_eq!(Partition::of_path(StreamKind::Spreads, rel), None);
        let spread = "date=2025-01-02/hour=07/spreads-1-2.parquet";
        assert_eq!(
            Partition::of_path(StreamKind::Spreads, spread),
            Some(Partition::new(None, LATE_IN_HOUR_7))
        );
        assert_eq!(
            Partition::of_path(StreamKind::Ticks, "date=x/hour=07/a.parquet"),
            None
        );
        assert_eq!(
            Partition::of_path(StreamKind::Spreads, "date=2025-01-02/hour=24/a.parquet"),
            None
        );
        assert!(is_flush_file("ticks-1-2.parquet"));
        assert!(!is_flush_file(&compacted_name(StreamKind::Ticks, 1, 2, "")));
        let tagged = file_name(StreamKind::Ticks, 1, 2, "archive-1");
        assert_eq!(tagged, "ticks-1-2.archive-1.parquet");
        assert_eq!(replica_of(&tagged), "archive-1");
        assert_eq!(replica_of("ticks-1-2.parquet"), "");
        let compacted = compacted_name(StreamKind::Ticks, 1, 2, "archive-1");
        assert_eq!(compacted, "ticks-1-2.archive-1.compacted.parquet");
        assert_eq!(replica_of(&compacted), "archive-1");
        assert_eq!(replica_of(&compacted_name(StreamKind::Ticks, 1, 2, "")), "");
        assert!(valid_replica("archive-0") && !valid_replica("") && !valid_replica("a.b"));
        assert!(!valid_replica("Archive") && !valid_replica(&"a".repeat(64)));
        assert!(!is_flush_file("ticks-1-2.parquet#3"));
    }

    #[test]
    fn file_names_are_deterministic() {
        assert_eq!(
            file_name(StreamKind::Spreads, 1, 9, ""),
            file_name(StreamKind::Spreads, 1, 9, "")
        );
        assert_ne!(
            file_name(StreamKind::Spreads, 1, 9, ""),
            file_name(StreamKind::Trades, 1, 9, "")
        );
    }

    #[test]
    fn exchange_ids_must_be_path_safe() {
        for good in ["binance", "gateio", "okx", "new-venue_2"] {
            assert!(valid_exchange(good), "{good}");
        }
        for bad in [
            "",
            "Binance",
            "a/b",
            "..",
            "x=y",
            "b\u{e4}r",
            &"a".repeat(33),
        ] {
            assert!(!valid_exchange(bad), "{bad}");
        }
    }

    #[test]
    fn stream_kinds_name_their_consumers() {
        assert_eq!(StreamKind::Ticks.stream(), "MD_TICKS");
        assert_eq!(StreamKind::Trades.durable(), "archiver-trades");
        assert_eq!(StreamKind::Spreads.filter(), "md.spread.>");
        assert_eq!(StreamKind::Ticks.component(), "archive.ticks");
    }
}
