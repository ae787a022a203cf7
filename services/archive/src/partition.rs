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

    /// The start of the partition's hour, in Unix nanoseconds.
    pub fn hour_start_ns(&self) -> i64 {
        self.hour_end_ns().saturating_sub(HOUR_NS)
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

/// `<stream>-<first_stream_seq>-<last_stream_seq>-<flush>[.<replica>].parquet`: one flush's
/// file. `flush` (hex) names this archiver run and the flush within it, so no two flushes ever
/// share a name (stream sequences start again at 1 after the in-process bus restarts, or after
/// a stream is recreated, and two flushes can span the same first and last sequence with other
/// rows between); a retried write of one flush keeps its name, so it overwrites its own earlier
/// attempt instead of adding a copy; `replica` keeps replicas apart.
pub fn file_name(
    kind: StreamKind,
    first_seq: u64,
    last_seq: u64,
    run: &str,
    replica: &str,
) -> String {
    format!(
        "{}-{first_seq}-{last_seq}-{run}{}.parquet",
        kind.name(),
        replica_tag(replica)
    )
}

/// `<stream>-<first_stream_seq>-<last_stream_seq>-<sources>[.<replica>].compacted.parquet`:
/// a file merged from one replica's flush files, `sources` a hash of their names, so two
/// merges of different files never share a name (and never overwrite each other).
pub fn compacted_name(
    kind: StreamKind,
    first_seq: u64,
    last_seq: u64,
    sources: &[String],
    replica: &str,
) -> String {
    let mut sorted: Vec<&str> = sources.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    format!(
        "{}-{first_seq}-{last_seq}-{:016x}{}{COMPACTED_SUFFIX}",
        kind.name(),
        fnv1a(sorted.join(",").as_bytes()),
        replica_tag(replica)
    )
}

/// FNV-1a, 64 bits: a stable hash for names (the standard library's may change between
/// releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a data file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The replica that wrote it (empty: a single archiver).
    pub replica: &'a str,
    pub compacted: bool,
}

/// Parses a data file's name as the archiver writes it for `kind` (also the untagged
/// `<stream>-<first>-<last>.parquet` of earlier versions); `None` for anything else, which
/// the archiver leaves alone.
pub fn parse_name(kind: StreamKind, name: &str) -> Option<FileName<'_>> {
    let (stem, compacted) = match name.strip_suffix(COMPACTED_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".parquet")?, false),
    };
    let (base, replica) = stem.split_once('.').unwrap_or((stem, ""));
    if !replica.is_empty() && !valid_replica(replica) {
        return None;
    }
    let mut parts = base
        .strip_prefix(kind.name())?
        .strip_prefix('-')?
        .split('-');
    let first_seq = parts.next()?.parse().ok()?;
    let last_seq = parts.next()?.parse().ok()?;
    match parts.next() {
        None if !compacted => {}
        Some(tag) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {}
        _ => return None,
    }
    if parts.next().is_some() || first_seq > last_seq {
        return None;
    }
    Some(FileName {
        first_seq,
        last_seq,
        replica,
        compacted,
    })
}

/// The replica that wrote a file named `name` (empty for a single archiver's files, or for a
/// name that is not one of the archiver's).
pub fn replica_of(name: &str) -> &str {
    StreamKind::ALL
        .iter()
        .find_map(|kind| parse_name(*kind, name))
        .map_or("", |n| n.replica)
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
    // `compacted` would read as the suffix of a compacted file's name.
    id != "compacted"
        && (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A token for this archiver run's file names: 8 hex digits from the start time and the
/// process id.
pub fn run_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}-{}", std::process::id());
    format!("{:08x}", fnv1a(seed.as_bytes()) as u32)
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
        let name = file_name(StreamKind::Ticks, 17, 4242, "0a1b", "");
        assert_eq!(name, "ticks-17-4242-0a1b.parquet");
        assert_eq!(
            p.file_path(&Path::from("archive/v1"), StreamKind::Ticks, &name)
                .as_ref(),
            "archive/v1/ticks/exchange=okx/date=2025-01-02/hour=07/ticks-17-4242-0a1b.parquet"
        );
        assert_eq!(
            p.file_path(&Path::default(), StreamKind::Ticks, &name)
                .as_ref(),
            "ticks/exchange=okx/date=2025-01-02/hour=07/ticks-17-4242-0a1b.parquet"
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
        let k = StreamKind::Ticks;
        let flush = |name| parse_name(k, name).filter(|n| !n.compacted);
        assert!(
            flush("ticks-1-2.parquet").is_some(),
            "earlier versions' names"
        );
        let tagged = file_name(k, 1, 2, "00ff", "archive-1");
        assert_eq!(tagged, "ticks-1-2-00ff.archive-1.parquet");
        assert_eq!(
            parse_name(k, &tagged),
            Some(FileName {
                first_seq: 1,
                last_seq: 2,
                replica: "archive-1",
                compacted: false
            })
        );
        assert_eq!(replica_of(&tagged), "archive-1");
        assert_eq!(replica_of("ticks-1-2.parquet"), "");
        let sources = vec![
            "ticks-1-1-00ff.parquet".to_owned(),
            "ticks-2-2-00ff.parquet".to_owned(),
        ];
        let compacted = compacted_name(k, 1, 2, &sources, "archive-1");
        assert!(
            compacted.ends_with(".archive-1.compacted.parquet"),
            "{compacted}"
        );
        assert!(parse_name(k, &compacted).is_some_and(|n| n.compacted && n.replica == "archive-1"));
        let other = compacted_name(k, 1, 2, &sources[..1], "archive-1");
        assert_ne!(compacted, other, "other sources, another name");
        let reordered = vec![sources[1].clone(), sources[0].clone()];
        assert_eq!(compacted, compacted_name(k, 1, 2, &reordered, "archive-1"));
        for foreign in [
            "part-0.parquet",
            "ticks-1-2.parquet#3",
            "trades-1-2.parquet",
            "ticks-2-1.parquet",
            "ticks-1-2-xyz.parquet",
            "ticks-1-2-00ff.Archive.parquet",
            "ticks-1-2-00ff-7.parquet",
            "ticks-1.parquet",
            "ticks-1-2.compacted.parquet",
        ] {
            assert_eq!(parse_name(k, foreign), None, "{foreign}");
        }
        assert!(valid_replica("archive-0") && !valid_replica("") && !valid_replica("a.b"));
        assert!(!valid_replica("compacted"));
        assert!(!valid_replica("Archive") && !valid_replica(&"a".repeat(64)));
        let (a, b) = (run_token(), run_token());
        assert_eq!((a.len(), b.len()), (8, 8));
    }

    #[test]
    fn file_names_are_deterministic() {
        assert_eq!(
            file_name(StreamKind::Spreads, 1, 9, "ab", ""),
            file_name(StreamKind::Spreads, 1, 9, "ab", "")
        );
        assert_ne!(
            file_name(StreamKind::Spreads, 1, 9, "ab", ""),
            file_name(StreamKind::Trades, 1, 9, "ab", "")
        );
        assert_ne!(
            file_name(StreamKind::Spreads, 1, 9, "ab", ""),
            file_name(StreamKind::Spreads, 1, 9, "cd", ""),
            "another run, another name"
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
