//! The archiver role: ticks, trades and spreads from their JetStream streams to Parquet files
//! in Hive partitions on an object store, each message acknowledged only after the file that
//! holds it is durably written.
//!
//! [`run`] opens one durable pull consumer per stream (`archiver-ticks`, `archiver-trades`,
//! `archiver-spreads`), each driven by its own task (the `writer` module), plus one task that measures
//! the lag (messages not yet archived). All are joined before [`run`] returns. Layout and
//! columns: [`partition`] and [`schema`]; where the files go: [`store`]; the crash behaviour
//! and what a reader must do about duplicates: `docs/archive.md`.

pub mod partition;
mod record;
pub mod schema;
mod status;
pub mod store;
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
pub use store::StoreError;

use status::StreamStatus;
use writer::{Writer, WriterSettings};

/// How long the start-up write probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The archiver's configuration. Every field has a default; unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where the archive lives: `file:///abs/dir` or a plain directory path (relative to the
    /// working directory; created when missing). This build has the local filesystem only;
    /// `s3://`, `gs://` and `az://` are refused at start with an error saying so.
    pub store: String,
    /// Key prefix inside the store; files go to `<prefix>/ticks/...`. Empty: the store root.
    pub prefix: String,
    /// A stream's buffer is flushed when it holds this many rows. Larger means bigger files
    /// (better for analytics) and more messages awaiting their ack.
    pub flush_rows: usize,
    /// A row waits at most this long (ms) in the buffer before its flush starts.
    pub flush_interval_ms: u64,
    /// The consumers' cap on unacknowledged messages: the backpressure that keeps memory flat
    /// when the store is slow. At least `flush_rows`, or a flush could never fill.
    pub max_ack_pending: usize,
    /// Seconds before the server redelivers an unacknowledged message. Must cover a buffered
    /// row's whole wait (the flush interval) plus the write; at least twice the flush interval.
    pub ack_wait_s: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            store: "./data".into(),
            prefix: String::new(),
            flush_rows: 50_000,
            flush_interval_ms: 10_000,
            max_ack_pending: 100_000,
            ack_wait_s: 60,
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
            return bad("store must name a directory or a file:// URL".into());
        }
        if self.flush_rows == 0 {
            return bad("flush_rows must be at least 1".into());
        }
        if self.flush_interval_ms == 0 {
            return bad("flush_interval_ms must be at least 1".into());
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

    fn writer_settings(&self) -> WriterSettings {
        WriterSettings {
            flush_rows: self.flush_rows,
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
    let store = store::open(&config.store, &config.prefix)?;
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
    let settings = config.writer_settings();
    let mut tasks = JoinSet::new();
    let mut statuses = Vec::with_capacity(StreamKind::ALL.len());
    for kind in StreamKind::ALL {
        let status = Arc::new(StreamStatus::new(&health, kind));
        statuses.push(Arc::clone(&status));
        let (bus, store, stop) = (bus.clone(), store.clone(), inner.clone());
        match kind {
            StreamKind::Ticks => {
                tasks.spawn(Writer::<Tick>::new(bus, store, settings, status, stop).run())
            }
            StreamKind::Trades => {
                tasks.spawn(Writer::<Trade>::new(bus, store, settings, status, stop).run())
            }
            StreamKind::Spreads => {
                tasks.spawn(Writer::<Spread>::new(bus, store, settings, status, stop).run())
            }
        };
    }
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
            (50_000, 10_000, 100_000, 60)
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
            ("/x", 10, 60)
        );
        assert!(serde_json::from_str::<ArchiveConfig>(r#"{"stor": "/x"}"#).is_err());
    }

    #[tokio::test]
    async fn cloud_stores_fail_at_start_with_a_clear_error() {
        let config = ArchiveConfig {
            store: "s3://bucket/archive".into(),
            ..ArchiveConfig::default()
        };
        let bus = Bus::in_process(&spreadagg_bus::StreamSettings::default());
        let err = run(config, bus, Health::new(), CancellationToken::new())
            .await
            .expect_err("s3 is not in this build");
        assert!(matches!(
            err,
            ArchiveError::Store(StoreError::Unsupported { .. })
        ));
        assert!(err.to_string().contains("s3://"), "{err}");
    }
}
