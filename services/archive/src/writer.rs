//! One archived stream: its durable consumer, the buffer of rows per Hive partition, the
//! flush that writes one Parquet file per partition, and the acknowledgements that follow
//! the write, never precede it.
//!
//! Bounds and policies:
//! - The buffer holds at most `flush_rows` rows (a flush starts when it is reached), and the
//!   consumer's `max_ack_pending` (>= `flush_rows`) caps what the server hands out, so a slow
//!   store stops the flow to this consumer and memory stays flat.
//! - A failed write is retried with exponential backoff (capped) for as long as it takes:
//!   the encoded files are kept, nothing is acknowledged, nothing more is pulled. Retrying in
//!   place beats dropping the buffer and waiting for redelivery: the files written on retry are
//!   byte-identical and have the same names (so a partial earlier attempt is overwritten, not
//!   duplicated), nothing is re-read or re-encoded, and no batch is split differently. If the
//!   outage outlasts `ack_wait` the server redelivers the held messages; a redelivery of a
//!   buffered sequence only replaces its acknowledgement handle, and one of a sequence the last
//!   flush acknowledged is acknowledged again and skipped.
//! - An undecodable or unpartitionable payload can never be archived: it is counted, logged
//!   and acknowledged at once.
//! - On stop: pulling stops, the buffer is flushed and acknowledged within a fixed budget;
//!   what cannot be written in time stays unacknowledged and is redelivered to the next
//!   archiver after `ack_wait`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use bytes::Bytes;
use object_store::path::Path;
use serde_json::{Value, json};
use spreadagg_bus::{Bus, BusError, Consumer, ConsumerSpec, Delivery};
use spreadagg_model::wire::{Spread, Tick, Trade};
use spreadagg_runtime::traces::HOT;
use spreadagg_runtime::{Component, Health};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ArchiveError;
use crate::partition::{Partition, StreamKind, file_name, valid_exchange};
use crate::schema::{self, EncodeError, Row};
use crate::store::{ArchiveStore, StoreError};

/// Largest pull batch; the client holds at most this many fetched, unprocessed messages.
const MAX_PULL_BATCH: usize = 1000;
/// Backoff between failed writes: starts here, doubles, stops growing at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A single write that takes longer than this is treated as failed and retried (same name,
/// same bytes, so a late completion of the first attempt is harmless).
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sending a flush's acknowledgements may take in normal operation.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// From the moment stop is seen, everything (final writes, acks, bus flush) must fit in this,
/// so the process exits well inside the 5 s target.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);
/// Acks and the bus flush get at least this long even when the budget is spent.
const MIN_ACK_TIME: Duration = Duration::from_millis(500);
/// How often the lag (stream last sequence minus the consumer's ack floor) is refreshed.
const LAG_REFRESH: Duration = Duration::from_secs(3);
/// A lag query that takes longer is skipped until the next refresh.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a consumer error before pulling again.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Why a payload can never be archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("payload is not a valid protobuf message: {0}")]
    Decode(String),
    #[error("exchange id {0:?} cannot name a partition")]
    Exchange(String),
    #[error("symbol is empty")]
    Symbol,
}

impl Rejection {
    /// The `reason` label of `spreadagg_archive_rejected_total`.
    pub const fn label(&self) -> &'static str {
        match self {
            Rejection::Decode(_) => "decode",
            Rejection::Exchange(_) => "exchange",
            Rejection::Symbol => "symbol",
        }
    }
}

/// A wire message that is archived: where its rows go and how they become a batch.
pub(crate) trait Record: prost::Message + Default + Send + Sync + 'static {
    const KIND: StreamKind;
    /// The partition of a decoded message, or why it has none.
    fn partition(&self) -> Result<Partition, Rejection>;
    /// Rows in a file are sorted by this (symbol, then the partitioning time), then by
    /// stream sequence.
    fn sort_key(&self) -> (&str, i64);
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError>;
}

fn symbol_present(symbol: &str) -> Result<(), Rejection> {
    if symbol.is_empty() {
        Err(Rejection::Symbol)
    } else {
        Ok(())
    }
}

fn exchange_partition(exchange: &str, ts_ns: i64) -> Result<Partition, Rejection> {
    if valid_exchange(exchange) {
        Ok(Partition::new(Some(exchange), ts_ns))
    } else {
        Err(Rejection::Exchange(exchange.chars().take(64).collect()))
    }
}

impl Record for Tick {
    const KIND: StreamKind = StreamKind::Ticks;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        exchange_partition(&self.exchange, self.recv_ts_ns)
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.recv_ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::ticks_batch(rows)
    }
}

impl Record for Trade {
    const KIND: StreamKind = StreamKind::Trades;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        exchange_partition(&self.exchange, self.recv_ts_ns)
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.recv_ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::trades_batch(rows)
    }
}

impl Record for Spread {
    const KIND: StreamKind = StreamKind::Spreads;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        Ok(Partition::new(None, self.ts_ns))
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::spreads_batch(rows)
    }
}

/// Decodes a payload and finds its partition.
///
/// # Errors
/// The [`Rejection`] when the payload can never be archived.
pub(crate) fn decode<T: Record>(payload: &[u8]) -> Result<(T, Partition), Rejection> {
    let msg = T::decode(payload).map_err(|e| Rejection::Decode(e.to_string()))?;
    let partition = msg.partition()?;
    Ok((msg, partition))
}

/// Sorts rows for a file: symbol, then time, then stream sequence.
pub(crate) fn sort_rows<T: Record>(rows: &mut [Row<T>]) {
    rows.sort_by(|a, b| {
        a.msg
            .sort_key()
            .cmp(&b.msg.sort_key())
            .then(a.stream_seq.cmp(&b.stream_seq))
    });
}

/// One encoded Parquet file, ready to put.
#[derive(Debug)]
pub(crate) struct EncodedFile {
    pub path: Path,
    pub bytes: Bytes,
    pub rows: usize,
}

/// Encodes each partition's rows as one file named after its first and last stream sequence.
pub(crate) fn encode_all<T: Record>(
    base: &Path,
    groups: BTreeMap<Partition, Vec<Row<T>>>,
) -> Result<Vec<EncodedFile>, EncodeError> {
    let mut files = Vec::with_capacity(groups.len());
    for (partition, mut rows) in groups {
        let (Some(first), Some(last)) = (
            rows.iter().map(|r| r.stream_seq).min(),
            rows.iter().map(|r| r.stream_seq).max(),
        ) else {
            continue;
        };
        sort_rows(&mut rows);
        let batch = T::batch(&rows)?;
        files.push(EncodedFile {
            path: partition.file_path(base, T::KIND, &file_name(T::KIND, first, last)),
            bytes: schema::to_parquet(&batch)?,
            rows: rows.len(),
        });
    }
    Ok(files)
}

/// Settings every stream writer shares, from the validated config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterSettings {
    pub flush_rows: usize,
    pub flush_interval: Duration,
    pub max_ack_pending: usize,
    pub ack_wait: Duration,
}

const STATE_STARTING: u8 = 0;
const STATE_RUNNING: u8 = 1;
const STATE_STORE_FAILING: u8 = 2;
const STATE_STOPPED: u8 = 3;

/// A stream's state as `/health` shows it; shared by its writer and the lag watcher.
#[derive(Debug)]
pub(crate) struct StreamStatus {
    kind: StreamKind,
    component: Component,
    state: AtomicU8,
    opened: AtomicBool,
    buffered: AtomicU64,
    files_written: AtomicU64,
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

    fn set_state(&self, state: u8) {
        if self.state.swap(state, Ordering::Relaxed) != state {
            self.publish();
        }
    }

    /// Writes the current state into the health registry. Ready while the consumer is open
    /// and the store takes writes.
    fn publish(&self) {
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

/// Archives one stream until `stop`; see the module documentation.
pub(crate) struct Writer<T: Record> {
    bus: Bus,
    store: ArchiveStore,
    settings: WriterSettings,
    status: Arc<StreamStatus>,
    stop: CancellationToken,
    /// Buffered rows by partition.
    rows: BTreeMap<Partition, Vec<Row<T>>>,
    /// The delivery of every buffered row, by stream sequence (ascending: acks go in order).
    deliveries: BTreeMap<u64, Delivery>,
    /// Sequences the last flush acknowledged; a redelivery of one is already archived.
    last_acked: HashSet<u64>,
    /// When the oldest buffered row must be flushed.
    flush_at: Option<Instant>,
    /// Set when stop is first seen: the end of the shutdown budget.
    shutdown_deadline: Option<Instant>,
}

impl<T: Record> Writer<T> {
    pub(crate) fn new(
        bus: Bus,
        store: ArchiveStore,
        settings: WriterSettings,
        status: Arc<StreamStatus>,
        stop: CancellationToken,
    ) -> Self {
        // Exported from the start (at zero), so dashboards and alerts see the series before
        // the first failure and `increase()` counts that one too.
        metrics::counter!("spreadagg_archive_ack_errors_total", "stream" => T::KIND.name())
            .increment(0);
        Self {
            bus,
            store,
            settings,
            status,
            stop,
            rows: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            last_acked: HashSet::new(),
            flush_at: None,
            shutdown_deadline: None,
        }
    }

    fn label(&self) -> &'static str {
        T::KIND.name()
    }

    /// Runs until stop, then flushes and acknowledges what it holds.
    ///
    /// # Errors
    /// When a file cannot be encoded (a bug), or rows are still unwritten when the shutdown
    /// budget runs out (they stay unacknowledged and are redelivered).
    pub(crate) async fn run(mut self) -> Result<(), ArchiveError> {
        let result = self.archive().await;
        self.status.buffered.store(0, Ordering::Relaxed);
        self.status.set_state(STATE_STOPPED);
        result
    }

    async fn archive(&mut self) -> Result<(), ArchiveError> {
        let Some(mut consumer) = self.open().await else {
            return Ok(());
        };
        self.status.opened.store(true, Ordering::Relaxed);
        self.status.set_state(STATE_RUNNING);
        tracing::info!(
            stream = self.label(),
            durable = T::KIND.durable(),
            "archiving"
        );
        let stop = self.stop.clone();
        loop {
            let flush_at = self.flush_at;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = sleep_until_opt(flush_at), if flush_at.is_some() => self.flush().await?,
                next = consumer.next() => match next {
                    Ok(delivery) => {
                        self.accept(delivery).await;
                        if self.deliveries.len() >= self.settings.flush_rows {
                            self.flush().await?;
                        }
                    }
                    Err(error) => self.consumer_error(&error).await,
                },
            }
        }
        // The shutdown budget starts now. Stop pulling first: what the client fetched but we
        // never took is redelivered after `ack_wait`.
        let _ = self.shutdown_deadline();
        drop(consumer);
        let held = self.deliveries.len();
        tracing::info!(stream = self.label(), rows = held, "stopping: final flush");
        self.flush().await
    }

    /// Opens the durable consumer, retrying with backoff; `None` when stopped first.
    async fn open(&mut self) -> Option<Consumer> {
        let spec = ConsumerSpec {
            stream: T::KIND.stream().to_owned(),
            durable: T::KIND.durable().to_owned(),
            filter: T::KIND.filter().to_owned(),
            ack_wait: self.settings.ack_wait,
            max_ack_pending: self.settings.max_ack_pending,
            batch: self.settings.flush_rows.clamp(1, MAX_PULL_BATCH),
        };
        let stop = self.stop.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                opened = self.bus.durable(&spec) => match opened {
                    Ok(consumer) => return Some(consumer),
                    Err(error) => {
                        metrics::counter!("spreadagg_archive_consumer_errors_total", "stream" => self.label()).increment(1);
                        tracing::warn!(stream = self.label(), %error, "cannot open the consumer; retrying");
                    }
                },
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn consumer_error(&self, error: &BusError) {
        metrics::counter!("spreadagg_archive_consumer_errors_total", "stream" => self.label())
            .increment(1);
        tracing::warn!(stream = self.label(), %error, "consumer error; pulling again");
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(CONSUMER_ERROR_PAUSE) => {}
        }
    }

    /// Takes one delivery into the buffer, or acknowledges it at once when it is already
    /// archived or can never be.
    async fn accept(&mut self, delivery: Delivery) {
        let seq = delivery.stream_seq;
        if delivery.redelivered && self.last_acked.contains(&seq) {
            metrics::counter!("spreadagg_archive_redelivered_skipped_total", "stream" => self.label())
                .increment(1);
            self.ack_now(delivery).await;
            return;
        }
        if let Some(held) = self.deliveries.get_mut(&seq) {
            // Redelivered while buffered: same message, fresher acknowledgement handle.
            *held = delivery;
            return;
        }
        match decode::<T>(&delivery.payload) {
            Err(rejection) => {
                count_rejection(T::KIND, &rejection);
                tracing::warn!(
                    stream = self.label(),
                    subject = %delivery.subject,
                    stream_seq = seq,
                    error = %rejection,
                    "rejected a message that cannot be archived; acknowledging it"
                );
                self.ack_now(delivery).await;
            }
            Ok((msg, partition)) => {
                self.rows.entry(partition).or_default().push(Row {
                    stream_seq: seq,
                    msg,
                });
                self.deliveries.insert(seq, delivery);
                if self.flush_at.is_none() {
                    self.flush_at = Some(Instant::now() + self.settings.flush_interval);
                }
                self.set_buffered();
            }
        }
    }

    fn set_buffered(&self) {
        let n = self.deliveries.len();
        metrics::gauge!("spreadagg_archive_rows_buffered", "stream" => self.label()).set(n as f64);
        self.status.buffered.store(n as u64, Ordering::Relaxed);
    }

    async fn ack_now(&self, delivery: Delivery) {
        if let Err(error) = delivery.ack().await {
            metrics::counter!("spreadagg_archive_ack_errors_total", "stream" => self.label())
                .increment(1);
            tracing::warn!(stream = self.label(), %error, "ack failed; the message will be redelivered");
        }
    }

    /// The end of the shutdown budget once stop has been seen, else `None`.
    fn shutdown_deadline(&mut self) -> Option<Instant> {
        if !self.stop.is_cancelled() {
            return None;
        }
        Some(
            *self
                .shutdown_deadline
                .get_or_insert_with(|| Instant::now() + SHUTDOWN_BUDGET),
        )
    }

    /// Writes every buffered partition as one file, then acknowledges the buffer.
    async fn flush(&mut self) -> Result<(), ArchiveError> {
        self.flush_at = None;
        if self.deliveries.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // The stage span: encoding, writing and acknowledging one flush.
        let _stage = tracing::debug_span!(target: HOT, "archive.flush", stream = self.label(), messages = i64::try_from(self.deliveries.len()).unwrap_or(i64::MAX));
        let groups = std::mem::take(&mut self.rows);
        let base = self.store.base().clone();
        let encoded = tokio::task::spawn_blocking(move || encode_all::<T>(&base, groups))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let files = match encoded {
            Ok(files) => files,
            Err(reason) => {
                self.deliveries.clear();
                self.set_buffered();
                return Err(ArchiveError::Encode {
                    stream: T::KIND,
                    reason,
                });
            }
        };
        for file in &files {
            if !self.put_with_retry(file).await {
                let rows = self.deliveries.len();
                self.deliveries.clear();
                self.set_buffered();
                return Err(ArchiveError::Unflushed {
                    stream: T::KIND,
                    rows,
                });
            }
        }
        let rows: usize = files.iter().map(|f| f.rows).sum();
        let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
        let label = self.label();
        metrics::counter!("spreadagg_archive_files_written_total", "stream" => label)
            .increment(files.len() as u64);
        metrics::counter!("spreadagg_archive_rows_written_total", "stream" => label)
            .increment(rows as u64);
        metrics::counter!("spreadagg_archive_bytes_written_total", "stream" => label)
            .increment(bytes as u64);
        self.status
            .files_written
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        self.ack_all().await;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("spreadagg_archive_flush_seconds", "stream" => label).record(seconds);
        tracing::debug!(
            stream = label,
            files = files.len(),
            rows,
            bytes,
            seconds,
            "flushed"
        );
        self.status.publish();
        Ok(())
    }

    /// Puts one file until it is written; `false` when the shutdown budget ran out first.
    async fn put_with_retry(&mut self, file: &EncodedFile) -> bool {
        let stop = self.stop.clone();
        let store = self.store.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let put = store.put(&file.path, file.bytes.clone());
            tokio::pin!(put);
            let outcome = tokio::select! {
                result = &mut put => Some(result),
                () = tokio::time::sleep(PUT_TIMEOUT) => Some(Err(timeout(&file.path, PUT_TIMEOUT))),
                () = stop.cancelled() => None,
            };
            let outcome = match outcome {
                Some(result) => result,
                // Stopping: the write in progress may finish within the budget.
                None => {
                    let deadline = self.shutdown_deadline().unwrap_or_else(Instant::now);
                    tokio::time::timeout_at(deadline, &mut put)
                        .await
                        .unwrap_or_else(|_| Err(timeout(&file.path, SHUTDOWN_BUDGET)))
                }
            };
            match outcome {
                Ok(()) => {
                    if self.status.state.load(Ordering::Relaxed) == STATE_STORE_FAILING {
                        tracing::info!(stream = self.label(), "store writes recovered");
                        self.status.set_state(STATE_RUNNING);
                    }
                    return true;
                }
                Err(error) => {
                    metrics::counter!("spreadagg_archive_write_errors_total", "stream" => self.label())
                        .increment(1);
                    tracing::warn!(
                        stream = self.label(),
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "write failed; nothing acknowledged, retrying"
                    );
                    self.status.set_state(STATE_STORE_FAILING);
                }
            }
            let wake = Instant::now() + backoff;
            if let Some(deadline) = self.shutdown_deadline() {
                if wake >= deadline {
                    tracing::warn!(
                        stream = self.label(),
                        rows = self.deliveries.len(),
                        "shutdown budget spent with the store failing; buffered rows stay unacknowledged and will be redelivered"
                    );
                    return false;
                }
                tokio::time::sleep_until(wake).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = stop.cancelled() => {}
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Acknowledges every buffered delivery in stream order, then makes sure the acks reached
    /// the server. Called only once every file of the flush is written.
    async fn ack_all(&mut self) {
        let deliveries = std::mem::take(&mut self.deliveries);
        self.set_buffered();
        self.last_acked = deliveries.keys().copied().collect();
        let limit = match self.shutdown_deadline() {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .max(MIN_ACK_TIME),
            None => ACK_TIMEOUT,
        };
        let total = deliveries.len();
        let mut sent = 0usize;
        let mut failed = 0usize;
        let acks = async {
            for delivery in deliveries.into_values() {
                match delivery.ack().await {
                    Ok(()) => sent += 1,
                    Err(_) => failed += 1,
                }
            }
        };
        let _finished = tokio::time::timeout(limit, acks).await;
        let unsent = total - sent;
        if unsent > 0 {
            metrics::counter!("spreadagg_archive_ack_errors_total", "stream" => self.label())
                .increment(unsent as u64);
            tracing::warn!(
                stream = self.label(),
                unsent,
                failed,
                "acks not sent after the write; those messages will be redelivered and archived again"
            );
        }
        match tokio::time::timeout(limit, self.bus.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(stream = self.label(), %error, "bus flush after acks failed")
            }
            Err(_) => tracing::warn!(stream = self.label(), "bus flush after acks timed out"),
        }
    }
}

/// Counts a rejection in `spreadagg_archive_rejected_total{stream,reason}`.
fn count_rejection(kind: StreamKind, rejection: &Rejection) {
    metrics::counter!(
        "spreadagg_archive_rejected_total",
        "stream" => kind.name(),
        "reason" => rejection.label()
    )
    .increment(1);
}

fn timeout(path: &Path, after: Duration) -> StoreError {
    StoreError::Timeout {
        path: path.to_string(),
        secs: after.as_secs(),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn tick(exchange: &str, symbol: &str, recv_ts_ns: i64) -> Tick {
        Tick {
            exchange: exchange.into(),
            symbol: symbol.into(),
            bid_px: 1.0,
            ask_px: 2.0,
            recv_ts_ns,
            ..Tick::default()
        }
    }

    #[test]
    fn bad_payloads_are_rejected_with_a_reason() {
        let garbage = decode::<Tick>(b"not a protobuf").expect_err("garbage");
        assert_eq!(garbage.label(), "decode");
        let truncated = decode::<Trade>(&[0xff; 8]).expect_err("truncated varint");
        assert_eq!(truncated.label(), "decode");
        // An empty payload decodes to the default message, which has no symbol.
        assert_eq!(decode::<Spread>(b""), Err(Rejection::Symbol));
        let no_exchange = tick("", "BTC-USDT", 1).encode_to_vec();
        assert_eq!(
            decode::<Tick>(&no_exchange),
            Err(Rejection::Exchange(String::new()))
        );
        let escaping = tick("../etc", "BTC-USDT", 1).encode_to_vec();
        assert_eq!(
            decode::<Tick>(&escaping)
                .map(|_| ())
                .expect_err("path")
                .label(),
            "exchange"
        );
    }

    #[test]
    fn good_payloads_decode_to_their_partition() {
        let t = tick("binance", "BTC-USDT", 1_735_804_799_999_999_999);
        let (back, partition) = decode::<Tick>(&t.encode_to_vec()).expect("valid");
        assert_eq!(back, t);
        assert_eq!(
            partition.segments(StreamKind::Ticks),
            ["ticks", "exchange=binance", "date=2025-01-02", "hour=07"]
        );
    }

    #[test]
    fn rows_sort_by_symbol_then_time_then_sequence() {
        let mut rows = vec![
            Row {
                stream_seq: 4,
                msg: tick("okx", "ETH-USDT", 10),
            },
            Row {
                stream_seq: 3,
                msg: tick("okx", "BTC-USDT", 20),
            },
            Row {
                stream_seq: 2,
                msg: tick("okx", "BTC-USDT", 10),
            },
            Row {
                stream_seq: 1,
                msg: tick("okx", "BTC-USDT", 20),
            },
        ];
        sort_rows(&mut rows);
        let order: Vec<u64> = rows.iter().map(|r| r.stream_seq).collect();
        assert_eq!(order, [2, 1, 3, 4]);
    }

    #[test]
    fn one_file_per_partition_named_by_its_sequences() {
        let hour = 3_600_000_000_000;
        let mut groups: BTreeMap<Partition, Vec<Row<Tick>>> = BTreeMap::new();
        for (seq, exchange, ts) in [
            (5, "okx", 0),
            (6, "binance", 0),
            (7, "okx", 0),
            (9, "okx", hour),
        ] {
            let msg = tick(exchange, "BTC-USDT", ts);
            let partition = msg.partition().expect("valid");
            groups.entry(partition).or_default().push(Row {
                stream_seq: seq,
                msg,
            });
        }
        let again = groups.clone();
        let files = encode_all::<Tick>(&Path::from("pre"), groups).expect("encodes");
        let names: Vec<(&str, usize)> = files.iter().map(|f| (f.path.as_ref(), f.rows)).collect();
        assert_eq!(
            names,
            [
                (
                    "pre/ticks/exchange=binance/date=1970-01-01/hour=00/ticks-6-6.parquet",
                    1
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=00/ticks-5-7.parquet",
                    2
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=01/ticks-9-9.parquet",
                    1
                ),
            ]
        );
        // The same rows give the same names and the same bytes: a retried flush overwrites.
        let repeat = encode_all::<Tick>(&Path::from("pre"), again).expect("encodes");
        for (a, b) in files.iter().zip(&repeat) {
            assert_eq!((&a.path, &a.bytes), (&b.path, &b.bytes));
        }
    }

    #[test]
    fn rejections_are_counted_by_stream_and_reason() {
        use metrics_exporter_prometheus::PrometheusBuilder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rejection = decode::<Tick>(b"not a protobuf").expect_err("garbage");
            count_rejection(StreamKind::Ticks, &rejection);
        });
        let text = handle.render();
        assert!(
            text.lines()
                .any(|l| l.starts_with("spreadagg_archive_rejected_total")
                    && l.contains("stream=\"ticks\"")
                    && l.contains("reason=\"decode\"")
                    && l.ends_with(" 1")),
            "{text}"
        );
    }
}
