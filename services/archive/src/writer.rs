//! One archived stream: its durable consumer, the buffer of rows per Hive partition, the
//! flush that writes one Parquet file per partition, and the acknowledgements that follow
//! the write, never precede it.
//!
//! Bounds and policies:
//! - The buffer holds at most `flush_rows` rows and about `flush_bytes` bytes (message sizes;
//!   a payload is dropped once decoded, so a row is held once): a flush starts when either is
//!   reached, or `flush_interval` after the first buffered row. The consumer's
//!   `max_ack_pending` (>= `flush_rows`) caps what the server hands out, so a slow store stops
//!   the flow to this consumer and memory stays flat.
//! - `ack_wait` is short (a crashed archiver's messages come back within it, whatever the
//!   file size). While a flush is slow (a large file, a failing store), every held message
//!   gets an in-progress acknowledgement each half `ack_wait`, so the server does not hand it
//!   to another archiver meanwhile.
//! - A failed write is retried with exponential backoff (capped) for as long as it takes:
//!   the encoded files are kept, nothing is acknowledged, nothing more is pulled. Retrying in
//!   place beats dropping the buffer and waiting for redelivery: the files written on retry are
//!   byte-identical and have the same names (so a partial earlier attempt is overwritten, not
//!   duplicated), nothing is re-read or re-encoded, and no batch is split differently. A
//!   redelivery of a buffered sequence only replaces its acknowledgement handle, and one of a
//!   sequence the last flush acknowledged is acknowledged again and skipped.
//! - Poison: a payload that cannot be decoded or partitioned, or a row that cannot be encoded,
//!   is counted, written whole to `_rejected/<stream>/<stream_seq>.json` under the prefix
//!   (with its subject and the reason) and terminated, so it is never redelivered and never
//!   stops the rest. If that write fails it stays unacknowledged and is tried again on its
//!   redelivery.
//! - On stop: pulling stops, the buffer is flushed and acknowledged within a fixed budget;
//!   what cannot be written in time stays unacknowledged and is redelivered to the next
//!   archiver after `ack_wait`.

use base64::Engine as _;
use futures_util::FutureExt as _;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::path::Path;
use spreadagg_bus::{Bus, BusError, Consumer, ConsumerSpec, Delivery};
use spreadagg_runtime::traces::HOT;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ArchiveError;
use crate::compact::{FlushFile, Pending, now_ms};
use crate::partition::Partition;
use crate::record::{EncodedFile, Record, Rejection, count_rejection, decode, encode_all};
use crate::schema::Row;
use crate::status::{STATE_RUNNING, STATE_STOPPED, STATE_STORE_FAILING, StreamStatus};
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
/// How long keeping a rejected message aside may take before it is left for redelivery.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a consumer error before pulling again.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Settings every stream writer shares, from the validated config.
#[derive(Debug, Clone)]
pub(crate) struct WriterSettings {
    /// Tags this replica's file names (empty: a single archiver).
    pub replica: Arc<str>,
    /// This run's token in file names (`partition::run_token`).
    pub run: Arc<str>,
    pub flush_rows: usize,
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub max_ack_pending: usize,
    pub ack_wait: Duration,
}

/// Archives one stream until `stop`; see the module documentation.
pub(crate) struct Writer<T: Record> {
    bus: Bus,
    store: ArchiveStore,
    settings: WriterSettings,
    status: Arc<StreamStatus>,
    /// Where written files go to await compaction (none when compaction is off).
    compaction: Option<Arc<Pending>>,
    stop: CancellationToken,
    /// Buffered rows by partition.
    rows: BTreeMap<Partition, Vec<Row<T>>>,
    /// The delivery of every buffered row, by stream sequence (ascending: acks go in order).
    deliveries: BTreeMap<u64, Delivery>,
    /// Sequences the last flush acknowledged; a redelivery of one is already archived.
    last_acked: HashSet<u64>,
    /// Message bytes of the buffered rows.
    buffered_bytes: usize,
    /// Flushes started in this run (part of each file's name).
    flushes: u64,
    /// When the oldest buffered row must be flushed.
    flush_at: Option<Instant>,
    /// When the held messages next need an in-progress acknowledgement (half `ack_wait`
    /// after the oldest was taken, then every half `ack_wait`).
    progress_at: Option<Instant>,
    /// Set when stop is first seen: the end of the shutdown budget.
    shutdown_deadline: Option<Instant>,
}

impl<T: Record> Writer<T> {
    pub(crate) fn new(
        bus: Bus,
        store: ArchiveStore,
        settings: WriterSettings,
        status: Arc<StreamStatus>,
        compaction: Option<Arc<Pending>>,
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
            compaction,
            stop,
            rows: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            last_acked: HashSet::new(),
            buffered_bytes: 0,
            flushes: 0,
            flush_at: None,
            progress_at: None,
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
                        // Take what is already there without a round through the select
                        // (its timer and stop check cost more than a ready message).
                        let mut taken = 1;
                        while !self.buffer_full() && taken < MAX_PULL_BATCH {
                            match consumer.next().now_or_never() {
                                Some(Ok(delivery)) => self.accept(delivery).await,
                                Some(Err(error)) => {
                                    self.consumer_error(&error).await;
                                    break;
                                }
                                None => break,
                            }
                            taken += 1;
                        }
                        if self.buffer_full() {
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
            start_seq: None,
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
            Err(rejection) => self.reject(delivery, rejection).await,
            Ok((msg, partition)) => {
                let mut delivery = delivery;
                self.buffered_bytes += delivery.payload.len();
                // The decoded row is what is kept: the payload would hold every byte twice.
                delivery.payload = bytes::Bytes::new();
                self.rows.entry(partition).or_default().push(Row {
                    stream_seq: seq,
                    msg,
                });
                self.deliveries.insert(seq, delivery);
                if self.flush_at.is_none() {
                    let now = Instant::now();
                    self.flush_at = Some(now + self.settings.flush_interval);
                    self.progress_at = Some(now + self.settings.ack_wait / 2);
                }
                self.set_buffered();
            }
        }
    }

    /// Keeps a message that can never be archived aside: counted, written whole with its
    /// reason to `_rejected/<stream>/<stream_seq>.json`, then terminated (never redelivered).
    /// If it cannot be written now it stays unacknowledged and comes back after `ack_wait`.
    async fn reject(&self, delivery: Delivery, rejection: Rejection) {
        count_rejection(T::KIND, &rejection);
        let seq = delivery.stream_seq;
        tracing::warn!(
            stream = self.label(),
            subject = %delivery.subject,
            stream_seq = seq,
            error = %rejection,
            "rejected a message that cannot be archived; keeping it aside"
        );
        let path = self
            .store
            .base()
            .clone()
            .join("_rejected")
            .join(self.label())
            .join(format!("{seq}.json"));
        let record = serde_json::json!({
            "stream": T::KIND.stream(),
            "stream_seq": seq,
            "subject": delivery.subject,
            "reason": rejection.to_string(),
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(&delivery.payload),
        });
        let body = bytes::Bytes::from(record.to_string());
        // Stopping: leave it for redelivery rather than spend the drain's time on it.
        if self.stop.is_cancelled() {
            return;
        }
        let write = tokio::time::timeout(REJECT_WRITE_TIMEOUT, self.store.put(&path, body));
        let written = tokio::select! {
            biased;
            () = self.stop.cancelled() => return,
            written = write => written,
        };
        match written {
            Ok(Ok(())) => {
                if let Err(error) = delivery.term().await {
                    metrics::counter!("spreadagg_archive_ack_errors_total", "stream" => self.label())
                        .increment(1);
                    tracing::warn!(stream = self.label(), %error, "terminating a rejected message failed; it will be redelivered and kept aside again");
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(stream = self.label(), stream_seq = seq, %error, "cannot keep the rejected message aside now; it will be redelivered");
            }
            Err(_) => {
                tracing::warn!(
                    stream = self.label(),
                    stream_seq = seq,
                    "keeping the rejected message aside timed out; it will be redelivered"
                );
            }
        }
    }

    fn buffer_full(&self) -> bool {
        self.deliveries.len() >= self.settings.flush_rows
            || self.buffered_bytes >= self.settings.flush_bytes
    }

    /// Forgets the buffer without acknowledging it (its messages are redelivered).
    fn clear_buffer(&mut self) {
        self.deliveries.clear();
        self.rows.clear();
        self.buffered_bytes = 0;
        self.progress_at = None;
        self.set_buffered();
    }

    /// Runs `work` while keeping the held messages from being redelivered: each half
    /// `ack_wait` every one of them gets an in-progress acknowledgement.
    async fn keeping_alive<F: std::future::Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        loop {
            let progress_at = self.progress_at;
            tokio::select! {
                out = &mut work => return out,
                () = sleep_until_opt(progress_at), if progress_at.is_some() => self.send_progress().await,
            }
        }
    }

    /// In-progress acknowledgements for every held message, then the next one is due half
    /// `ack_wait` from now.
    async fn send_progress(&mut self) {
        let mut failed = 0u64;
        for delivery in self.deliveries.values() {
            if delivery.in_progress().await.is_err() {
                failed += 1;
            }
        }
        metrics::counter!("spreadagg_archive_progress_acks_total", "stream" => self.label())
            .increment(self.deliveries.len() as u64);
        if failed > 0 {
            tracing::warn!(
                stream = self.label(),
                failed,
                "in-progress acknowledgements failed; those messages may be redelivered while their file is written"
            );
        }
        self.progress_at = Some(Instant::now() + self.settings.ack_wait / 2);
    }

    fn set_buffered(&self) {
        let n = self.deliveries.len();
        self.status.buffered.store(n as u64, Ordering::Relaxed);
        // The gauges every 1,024 rows and whenever the buffer empties: a labelled metric's
        // lookup per row was a measurable part of the archiver's cost.
        if n.is_multiple_of(1024) {
            metrics::gauge!("spreadagg_archive_rows_buffered", "stream" => self.label())
                .set(n as f64);
            metrics::gauge!("spreadagg_archive_bytes_buffered", "stream" => self.label())
                .set(self.buffered_bytes as f64);
        }
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
        self.flushes += 1;
        let flush = format!("{}{:x}", self.settings.run, self.flushes);
        let replica = self.settings.replica.clone();
        let encoding =
            tokio::task::spawn_blocking(move || encode_all::<T>(&base, &flush, &replica, groups));
        let encoded = match self.keeping_alive(encoding).await {
            Ok(encoded) => encoded,
            // Nothing was written or acknowledged: the buffer's messages come back after
            // `ack_wait`.
            Err(join) => {
                let rows = self.deliveries.len();
                self.clear_buffer();
                return Err(ArchiveError::Task(format!(
                    "{}: encoding {rows} rows panicked: {join}",
                    T::KIND
                )));
            }
        };
        for rejected in encoded.rejected {
            if let Some(mut delivery) = self.deliveries.remove(&rejected.stream_seq) {
                delivery.payload = rejected.payload;
                self.reject(delivery, rejected.reason).await;
            }
        }
        let files = encoded.files;
        for file in &files {
            if !self.put_with_retry(file).await {
                let rows = self.deliveries.len();
                self.clear_buffer();
                return Err(ArchiveError::Unflushed {
                    stream: T::KIND,
                    rows,
                });
            }
            if let Some(pending) = &self.compaction {
                pending.add(
                    file.partition.clone(),
                    FlushFile {
                        path: file.path.clone(),
                        rows: file.rows as u64,
                        bytes: file.bytes.len() as u64,
                        written_ms: now_ms(),
                    },
                );
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
            let put_deadline = Instant::now() + PUT_TIMEOUT;
            let outcome = loop {
                let progress_at = self.progress_at;
                tokio::select! {
                    result = &mut put => break Some(result),
                    () = tokio::time::sleep_until(put_deadline) => break Some(Err(timeout(&file.path, PUT_TIMEOUT))),
                    () = stop.cancelled() => break None,
                    () = sleep_until_opt(progress_at), if progress_at.is_some() => self.send_progress().await,
                }
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
                let backing_off = async {
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => {}
                        () = stop.cancelled() => {}
                    }
                };
                self.keeping_alive(backing_off).await;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Acknowledges every buffered delivery in stream order, then makes sure the acks reached
    /// the server. Called only once every file of the flush is written.
    async fn ack_all(&mut self) {
        let deliveries = std::mem::take(&mut self.deliveries);
        self.buffered_bytes = 0;
        self.progress_at = None;
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
