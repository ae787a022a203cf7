//! The archiver role: ticks, trades and spreads from their JetStream streams to Parquet files
//! in Hive partitions on an object store, each message acknowledged only after the file that
//! holds it is durably written.
//!
//! [`run`] opens one durable pull consumer per stream (`archiver-ticks`, `archiver-trades`,
//! `archiver-spreads`), each driven by its own task (the `writer` module), a compactor per
//! stream (merging each partition's flush files, `compact`), one task that measures the lag
//! (messages not yet archived) and one that probes the store. All are joined before [`run`]
//! returns. Layout and columns: [`partition`] and [`schema`]; where the files go: [`store`];
//! reading back: [`read`], [`verify`], [`replay`]; the crash behaviour and what a reader must
//! do about duplicates: `docs/archive.md`.

mod compact;
pub mod partition;
pub mod read;
mod record;
pub mod replay;
pub mod schema;
mod status;
pub mod store;
pub mod verify;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use spreadagg_bus::Bus;
use spreadagg_model::wire::{Spread, Tick, Trade};
use spreadagg_runtime::Health;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use partition::StreamKind;
pub use record::Rejection;
pub use store::{StoreError, StoreOptions};

use compact::{CompactSettings, Compactor, Pending};
use status::StreamStatus;
use writer::{Writer, WriterSettings};

/// How long the start-up write probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The archiver's configuration. Every field has a default; unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where the archive lives: `file:///abs/dir` or a plain directory path (relative to the
    /// working directory; created when missing), `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `memory://`. Cloud credentials, region and endpoint come
    /// from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), never from this value.
    pub store: String,
    /// Key prefix inside the store, after the URL's own path; files go to
    /// `<prefix>/ticks/...`. Empty: the store root (or the URL's path).
    pub prefix: String,
    /// S3 only: virtual-hosted-style addressing (`bucket.host`). Off: path style
    /// (`host/bucket`), which S3-compatible servers need.
    pub s3_virtual_hosted_style: bool,
    /// `object_store` configuration for a cloud store, over the environment: for example
    /// `aws_endpoint`, `aws_allow_http`, `aws_region`. Credentials belong in the environment
    /// (a Secret), not here. An unknown key fails the start.
    pub store_options: std::collections::BTreeMap<String, String>,
    /// Seconds between checks that the store still takes writes while the archiver runs;
    /// readiness follows the last check and the last write.
    pub store_check_interval_s: u64,
    /// A stream's buffer is flushed when it holds this many rows. Larger means bigger files
    /// (better for analytics) and more messages awaiting their ack.
    pub flush_rows: usize,
    /// ... or this many bytes of messages: the buffer's memory bound (with one message more,
    /// at most the bus's 1 MiB payload limit).
    pub flush_bytes: usize,
    /// A row waits at most this long (ms) in the buffer before its flush starts.
    pub flush_interval_ms: u64,
    /// The consumers' cap on unacknowledged messages: the backpressure that keeps memory flat
    /// when the store is slow. At least `flush_rows`, or a flush could never fill.
    pub max_ack_pending: usize,
    /// This replica's name when several archivers share the durable consumers: it tags the
    /// file names each writes and compacts (`ticks-1-9-<flush>.<replica>.parquet`), so two replicas
    /// never write or merge the same file. Empty (the default): a single archiver. Lowercase
    /// letters, digits and `-`, at most 63 (a StatefulSet pod's name: stable across restarts,
    /// so a restarted replica merges what it left). `SPREADAGG_REPLICA_ID` sets it.
    pub replica_id: String,
    /// Merge each partition's flush files into large files (docs/archive.md, Compaction).
    pub compaction: bool,
    /// A compacted file holds about this many rows (a merge's memory: about 250 bytes a row).
    pub file_rows: u64,
    /// ... or merges about this many bytes of flush files.
    pub file_bytes: u64,
    /// ... or is made once its oldest flush file is this old (seconds).
    pub file_age_s: u64,
    /// ... or once its hour ended this long ago (seconds; late rows make a later file).
    pub hour_grace_s: u64,
    /// After a restart, flush files of the last this many hours are adopted for compaction.
    pub compaction_lookback_h: u32,
    /// Seconds between looks for partitions due a merge.
    pub compaction_check_s: u64,
    /// Seconds before the server redelivers an unacknowledged message: how soon a crashed
    /// archiver's messages reach its successor. Short on purpose; a flush that takes longer
    /// keeps its messages with in-progress acknowledgements. At least twice the flush
    /// interval, so a buffered row never needs one while it waits for its flush.
    pub ack_wait_s: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            store: "./data".into(),
            prefix: String::new(),
            s3_virtual_hosted_style: false,
            store_options: std::collections::BTreeMap::new(),
            store_check_interval_s: 15,
            flush_rows: 50_000,
            flush_bytes: 32 * 1024 * 1024,
            flush_interval_ms: 2_000,
            max_ack_pending: 100_000,
            replica_id: String::new(),
            compaction: true,
            file_rows: 1_000_000,
            file_bytes: 128 * 1024 * 1024,
            file_age_s: 900,
            hour_grace_s: 300,
            compaction_lookback_h: 48,
            compaction_check_s: 10,
            ack_wait_s: 5,
        }
    }
}

impl ArchiveConfig {
    /// Checks the limits against each other.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] naming the first field that is out of range.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        let bad = |msg: String| Err(ArchiveError::Config(msg));
        if self.store.trim().is_empty() {
            return bad("store must be a directory or a store URL".into());
        }
        if !store::is_local(&self.store) {
            // Builds the client only (no network): a bad URL or option fails here, at start.
            store::open(&self.store, &self.prefix, self.store_options())?;
        }
        if !self.replica_id.is_empty() && !partition::valid_replica(&self.replica_id) {
            return bad(format!(
                "replica_id '{}' must be 1 to 63 lowercase letters, digits or '-'",
                self.replica_id
            ));
        }
        if self.flush_rows == 0 {
            return bad("flush_rows must be at least 1".into());
        }
        // Each in range, named: out-of-range durations would overflow the clock's arithmetic.
        let ranges: [(&str, u64, u64, u64); 10] = [
            ("file_rows", self.file_rows, 1, u64::MAX),
            ("file_bytes", self.file_bytes, 1, u64::MAX),
            ("file_age_s", self.file_age_s, 1, 7 * 86_400),
            ("hour_grace_s", self.hour_grace_s, 0, 7 * 86_400),
            ("compaction_check_s", self.compaction_check_s, 1, 86_400),
            (
                "compaction_lookback_h",
                u64::from(self.compaction_lookback_h),
                1,
                31 * 24,
            ),
            (
                "store_check_interval_s",
                self.store_check_interval_s,
                1,
                86_400,
            ),
            ("flush_interval_ms", self.flush_interval_ms, 1, 3_600_000),
            ("ack_wait_s", self.ack_wait_s, 1, 86_400),
            ("flush_bytes", self.flush_bytes as u64, 1, 1 << 34),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return bad(format!("{name} ({value}) must be between {low} and {high}"));
            }
        }
        if self.max_ack_pending < self.flush_rows {
            return bad(format!(
                "max_ack_pending ({}) must be at least flush_rows ({}), or a flush by row count could never start",
                self.max_ack_pending, self.flush_rows
            ));
        }
        if self.ack_wait_s == 0
            || u128::from(self.ack_wait_s) * 1000 < 2 * u128::from(self.flush_interval_ms)
        {
            return bad(format!(
                "ack_wait_s ({}) must be at least twice flush_interval_ms ({} ms), or buffered messages are redelivered before their flush",
                self.ack_wait_s, self.flush_interval_ms
            ));
        }
        Ok(())
    }

    /// How [`store::open`] reaches this configuration's store.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            s3_virtual_hosted_style: self.s3_virtual_hosted_style,
            config: self
                .store_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn compact_settings(&self) -> CompactSettings {
        CompactSettings {
            replica: self.replica_id.as_str().into(),
            file_rows: self.file_rows,
            file_bytes: self.file_bytes,
            file_age: Duration::from_secs(self.file_age_s),
            hour_grace: Duration::from_secs(self.hour_grace_s),
            lookback_hours: self.compaction_lookback_h,
            check_every: Duration::from_secs(self.compaction_check_s),
        }
    }

    fn writer_settings(&self, run: &str) -> WriterSettings {
        WriterSettings {
            replica: self.replica_id.as_str().into(),
            run: run.into(),
            flush_rows: self.flush_rows,
            flush_bytes: self.flush_bytes,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_ack_pending: self.max_ack_pending,
            ack_wait: Duration::from_secs(self.ack_wait_s),
        }
    }
}

/// Why the archiver stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store {location} did not take the start-up probe write within {secs} s")]
    ProbeTimeout { location: String, secs: u64 },
    /// A bug: every decoded message has a column type.
    #[error("{stream}: encoding a Parquet file failed: {reason}")]
    Encode { stream: StreamKind, reason: String },
    /// Not a loss: the rows were never acknowledged and are redelivered after `ack_wait`.
    #[error(
        "{stream}: {rows} buffered rows were not written before the shutdown deadline; they stay unacknowledged and will be redelivered"
    )]
    Unflushed { stream: StreamKind, rows: usize },
    #[error("archive task failed: {0}")]
    Task(String),
}

/// Archives the three streams until `stop` is cancelled, then flushes, acknowledges and
/// returns (within a few seconds).
///
/// Registers the health components `archive.ticks`, `archive.trades` and `archive.spreads`,
/// each ready once its consumer is open and while its writes succeed.
///
/// # Errors
/// On an invalid config or an unusable store at start; at the end, the first error of any
/// stream's task (the others are stopped and flushed first).
pub async fn run(
    config: ArchiveConfig,
    bus: Bus,
    health: Health,
    stop: CancellationToken,
) -> Result<(), ArchiveError> {
    config.validate()?;
    let store = store::open(&config.store, &config.prefix, config.store_options())?;
    tokio::select! {
        biased;
        () = stop.cancelled() => return Ok(()),
        probed = tokio::time::timeout(PROBE_TIMEOUT, store.probe()) => match probed {
            Ok(result) => result?,
            Err(_) => {
                return Err(ArchiveError::ProbeTimeout {
                    location: store.location().to_owned(),
                    secs: PROBE_TIMEOUT.as_secs(),
                });
            }
        },
    }
    let sweeper = store.clone();
    let swept = tokio::task::spawn_blocking(move || sweeper.remove_local_staging())
        .await
        .map_err(|e| ArchiveError::Task(e.to_string()))??;
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed staging files an earlier crash left behind"
        );
    }
    tracing::info!(
        store = store.location(),
        prefix = %config.prefix,
        bus = bus.kind(),
        flush_rows = config.flush_rows,
        flush_interval_ms = config.flush_interval_ms,
        "archiver starting"
    );

    // A failing stream stops its siblings too; they still flush what they hold.
    let inner = stop.child_token();
    let run = partition::run_token();
    let settings = config.writer_settings(&run);
    let mut tasks = JoinSet::new();
    let mut statuses = Vec::with_capacity(StreamKind::ALL.len());
    // One merge at a time in the process: its memory is the compaction's bound.
    let merge_permit = Arc::new(tokio::sync::Semaphore::new(1));
    for kind in StreamKind::ALL {
        let status = Arc::new(StreamStatus::new(&health, kind));
        statuses.push(Arc::clone(&status));
        let pending = config.compaction.then(|| Arc::new(Pending::default()));
        if let Some(pending) = &pending {
            let compactor = Compactor::new(
                kind,
                store.clone(),
                config.compact_settings(),
                Arc::clone(pending),
                Arc::clone(&merge_permit),
                inner.clone(),
            );
            tasks.spawn(async move {
                match kind {
                    StreamKind::Ticks => compactor.run::<Tick>().await,
                    StreamKind::Trades => compactor.run::<Trade>().await,
                    StreamKind::Spreads => compactor.run::<Spread>().await,
                }
                Ok(())
            });
        }
        let (bus, store, stop) = (bus.clone(), store.clone(), inner.clone());
        let settings = settings.clone();
        match kind {
            StreamKind::Ticks => {
                tasks.spawn(Writer::<Tick>::new(bus, store, settings, status, pending, stop).run())
            }
            StreamKind::Trades => {
                tasks.spawn(Writer::<Trade>::new(bus, store, settings, status, pending, stop).run())
            }
            StreamKind::Spreads => tasks
                .spawn(Writer::<Spread>::new(bus, store, settings, status, pending, stop).run()),
        };
    }
    let (check_store, check_stop) = (store.clone(), inner.clone());
    let check_every = Duration::from_secs(config.store_check_interval_s);
    let store_component = health.register("archive.store");
    tasks.spawn(async move {
        status::watch_store(check_store, store_component, check_every, check_stop).await;
        Ok(())
    });
    let lag_stop = inner.clone();
    tasks.spawn(async move {
        status::watch_lag(bus, statuses, lag_stop).await;
        Ok(())
    });

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| Err(ArchiveError::Task(e.to_string())));
        if let Err(error) = result {
            tracing::error!(%error, "archive stream stopped");
            inner.cancel();
            first_error.get_or_insert(error);
        }
    }
    tracing::info!("archiver stopped");
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = ArchiveConfig::default();
        c.validate().expect("defaults validate");
        assert_eq!(
            (
                c.flush_rows,
                c.flush_interval_ms,
                c.max_ack_pending,
                c.ack_wait_s
            ),
            (50_000, 2_000, 100_000, 5)
        );
    }

    #[test]
    fn limits_are_checked_against_each_other() {
        let base = ArchiveConfig::default();
        let cases = [
            ArchiveConfig {
                max_ack_pending: 10,
                flush_rows: 11,
                ..base.clone()
            },
            ArchiveConfig {
                flush_rows: 0,
                ..base.clone()
            },
            ArchiveConfig {
                ack_wait_s: 19,
                flush_interval_ms: 10_000,
                ..base.clone()
            },
            ArchiveConfig {
                ack_wait_s: 0,
                ..base.clone()
            },
            ArchiveConfig {
                ack_wait_s: u64::MAX,
                ..base.clone()
            },
            ArchiveConfig {
                compaction_lookback_h: u32::MAX,
                ..base.clone()
            },
            ArchiveConfig {
                replica_id: "Archive.0".into(),
                ..base.clone()
            },
            ArchiveConfig {
                store: " ".into(),
                ..base.clone()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(ArchiveError::Config(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn config_rejects_unknown_fields_and_fills_defaults() {
        let c: ArchiveConfig =
            serde_json::from_str(r#"{"store": "/x", "flush_rows": 10}"#).expect("parses");
        assert_eq!(
            (c.store.as_str(), c.flush_rows, c.ack_wait_s),
            ("/x", 10, 5)
        );
        assert!(serde_json::from_str::<ArchiveConfig>(r#"{"stor": "/x"}"#).is_err());
    }

    #[tokio::test]
    async fn unknown_store_schemes_fail_at_start_with_a_clear_error() {
        let config = ArchiveConfig {
            store: "ftp://host/archive".into(),
            ..ArchiveConfig::default()
        };
        let bus = Bus::in_process(&spreadagg_bus::StreamSettings::default());
        let err = run(config, bus, Health::new(), CancellationToken::new())
            .await
            .expect_err("ftp is no store");
        assert!(matches!(
            err,
            ArchiveError::Store(StoreError::Unsupported { .. })
        ));
        assert!(err.to_string().contains("ftp://"), "{err}");
    }
}
