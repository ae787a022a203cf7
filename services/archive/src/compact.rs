//! Compaction: the files a partition's flushes make are small on purpose (a flush every
//! couple of seconds keeps unacknowledged messages few, so a crash costs seconds, not
//! minutes); the compactor merges them into one large file per partition for analytics.
//!
//! A partition's flush files are merged once there are at least two and any of: their rows
//! reach `file_rows`, their bytes `file_bytes`, the oldest is `file_age` old, or the
//! partition's hour ended `hour_grace` ago (late rows after that make a new, later file).
//! The merge reads the files back, sorts the rows by symbol, time and stream sequence, drops
//! repeated sequences, writes `<stream>-<first>-<last>-<sources>.compacted.parquet` (its footer lists
//! the files it replaces under `spreadagg.compacted_from`), and only then deletes the sources.
//! Between that write and those deletes a reader can see a row twice (readers deduplicate by
//! `stream_seq`, see docs/archive.md); the messages themselves were acknowledged when their
//! flush file was written, so compaction never holds an acknowledgement back.
//!
//! After a crash, [`Compactor::run`] first adopts what is on the store for the last
//! `lookback` hours: flush files become candidates again, and sources a compacted file lists
//! but that still exist (a crash between the write and the deletes) are deleted.
//!
//! Memory: one merge at a time per process (a shared permit), holding at most `file_rows`
//! rows plus one flush file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{NaiveDate, Utc};
use object_store::path::Path;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::partition::{Partition, StreamKind, compacted_name, parse_name};
use crate::read;
use crate::record::{Record, sort_rows};
use crate::schema;
use crate::store::ArchiveStore;

/// The footer key listing the flush files a compacted file replaces (comma-separated names).
pub const COMPACTED_FROM: &str = "spreadagg.compacted_from";
/// A write or read during compaction that takes longer fails the merge (retried next round).
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Sources whose delete failed, kept for another try; past this they are counted
/// (`spreadagg_archive_compaction_undeleted_total`) and left to the next start's adoption.
const MAX_TO_DELETE: usize = 10_000;
/// Bytes read from a compacted file's end to find its footer in one request, usually.
const FOOTER_GUESS: u64 = 64 * 1024;
/// An adopted flush file's rows, estimated from its size as if each took this many bytes.
const ADOPTED_BYTES_PER_ROW: u64 = 16;

/// When and how large the compacted files are.
#[derive(Debug, Clone)]
pub(crate) struct CompactSettings {
    /// This replica: it merges and adopts only its own flush files.
    pub replica: Arc<str>,
    pub file_rows: u64,
    pub file_bytes: u64,
    pub file_age: Duration,
    pub hour_grace: Duration,
    pub lookback_hours: u32,
    pub check_every: Duration,
}

/// One flush file waiting to be compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlushFile {
    pub path: Path,
    pub rows: u64,
    pub bytes: u64,
    /// When it was written, Unix milliseconds (the store's clock after a restart).
    pub written_ms: i64,
}

/// Flush files not yet compacted, by partition: the writer adds each file it writes, the
/// compactor takes what is due. Bounded by what compaction has not yet caught up with (a
/// gauge, `spreadagg_archive_files_pending_compaction`).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<BTreeMap<Partition, Vec<FlushFile>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Partition, Vec<FlushFile>>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn add(&self, partition: Partition, file: FlushFile) {
        let mut map = self.lock();
        let files = map.entry(partition).or_default();
        if !files.iter().any(|f| f.path == file.path) {
            files.push(file);
        }
    }

    fn put_back(&self, partition: Partition, files: Vec<FlushFile>) {
        for file in files {
            self.add(partition.clone(), file);
        }
    }

    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Takes the groups due for a merge (see the module documentation); files that are
    /// large enough alone are dropped from the candidates.
    fn take_due(&self, s: &CompactSettings, now_ms: i64) -> Vec<(Partition, Vec<FlushFile>)> {
        let mut due = Vec::new();
        let mut map = self.lock();
        for (partition, files) in map.iter_mut() {
            files.retain(|f| f.rows < s.file_rows && f.bytes < s.file_bytes);
            let hour_closed_ms = (partition.hour_end_ns() / 1_000_000)
                .saturating_add(i64::try_from(s.hour_grace.as_millis()).unwrap_or(i64::MAX));
            if files.len() < 2 {
                if now_ms >= hour_closed_ms {
                    // The hour is over and one file is all it has: nothing left to merge.
                    files.clear();
                }
                continue;
            }
            files.sort_by_key(|f| f.written_ms);
            let rows: u64 = files.iter().map(|f| f.rows).sum();
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let age_ms = now_ms.saturating_sub(files[0].written_ms);
            let ripe = rows >= s.file_rows
                || bytes >= s.file_bytes
                || u128::try_from(age_ms).unwrap_or(0) >= s.file_age.as_millis()
                || now_ms >= hour_closed_ms;
            if !ripe {
                continue;
            }
            // Oldest first, up to one file past the size limits.
            let (mut take, mut r, mut b) = (0, 0, 0);
            while take < files.len() && r < s.file_rows && b < s.file_bytes {
                r += files[take].rows;
                b += files[take].bytes;
                take += 1;
            }
            if take >= 2 {
                let group: Vec<FlushFile> = files.drain(..take).collect();
                due.push((partition.clone(), group));
            }
        }
        map.retain(|_, files| !files.is_empty());
        due
    }
}

/// The wall clock in Unix milliseconds (file ages are compared with the store's times).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What adoption finds in a partition: this replica's flush files, and its compacted files
/// with their sizes.
type Found = (Vec<FlushFile>, Vec<(Path, u64)>);

/// Compacts one stream's partitions until stop.
pub(crate) struct Compactor {
    kind: StreamKind,
    store: ArchiveStore,
    settings: CompactSettings,
    pending: Arc<Pending>,
    /// One merge at a time in the process (memory).
    permit: Arc<Semaphore>,
    stop: CancellationToken,
    /// Sources of a written compacted file whose delete failed; retried each round.
    to_delete: Vec<Path>,
}

impl Compactor {
    pub(crate) fn new(
        kind: StreamKind,
        store: ArchiveStore,
        settings: CompactSettings,
        pending: Arc<Pending>,
        permit: Arc<Semaphore>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            kind,
            store,
            settings,
            pending,
            permit,
            stop,
            to_delete: Vec::new(),
        }
    }

    fn label(&self) -> &'static str {
        self.kind.name()
    }

    /// Adopts what an earlier run left, then merges what is due every `check_every`. Stops
    /// at once on stop: a merge cut short leaves its sources in place (and at worst a
    /// compacted file beside them, cleaned up by the next start's adoption).
    pub(crate) async fn run<T: Record>(mut self) {
        metrics::counter!("spreadagg_archive_compactions_total", "stream" => self.label())
            .increment(0);
        metrics::counter!("spreadagg_archive_compaction_errors_total", "stream" => self.label())
            .increment(0);
        let stop = self.stop.clone();
        let mut adopted = false;
        let mut tick = tokio::time::interval(self.settings.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let round = async {
                if !adopted {
                    match self.adopt().await {
                        Ok(()) => adopted = true,
                        Err(error) => {
                            metrics::counter!("spreadagg_archive_compaction_errors_total", "stream" => self.label()).increment(1);
                            tracing::warn!(stream = self.label(), %error, "cannot list the archive to adopt earlier files; retrying");
                        }
                    }
                }
                self.retry_deletes().await;
                let due = self.pending.take_due(&self.settings, now_ms());
                for (partition, files) in due {
                    self.merge::<T>(&partition, files).await;
                }
                metrics::gauge!("spreadagg_archive_files_pending_compaction", "stream" => self.label())
                    .set(self.pending.len() as f64);
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = round => {}
            }
        }
    }

    async fn retry_deletes(&mut self) {
        let mut failed = Vec::new();
        for path in std::mem::take(&mut self.to_delete) {
            if self.store.delete(&path).await.is_err() {
                failed.push(path);
            }
        }
        self.to_delete = failed;
    }

    /// Merges `files` (one partition's) into one compacted file, then deletes them. A source
    /// that is gone is dropped from the group; one that cannot be read is left as it is
    /// (counted): neither holds the others back. On a failed write the readable sources go
    /// back to the candidates.
    async fn merge<T: Record>(&mut self, partition: &Partition, files: Vec<FlushFile>) {
        let Ok(_permit) = self.permit.clone().acquire_owned().await else {
            return;
        };
        let started = std::time::Instant::now();
        let mut rows = Vec::new();
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            match self.read_source::<T>(partition, &file).await {
                Ok(read) => {
                    rows.extend(read);
                    sources.push(file);
                }
                Err(reason) => {
                    metrics::counter!("spreadagg_archive_compaction_skipped_files_total", "stream" => self.label()).increment(1);
                    tracing::warn!(stream = self.label(), path = %file.path, %reason, "a flush file is left out of compaction (it stays as it is)");
                }
            }
        }
        if sources.len() < 2 {
            self.pending.put_back(partition.clone(), sources);
            return;
        }
        match self.write_merged::<T>(partition, rows, &sources).await {
            Ok((path, count, repeated, size)) => {
                for file in &sources {
                    if let Err(error) = self.store.delete(&file.path).await {
                        tracing::warn!(stream = self.label(), path = %file.path, %error, "cannot delete a compacted file's source yet; its rows are there twice until it is");
                        if self.to_delete.len() < MAX_TO_DELETE {
                            self.to_delete.push(file.path.clone());
                        } else {
                            metrics::counter!("spreadagg_archive_compaction_undeleted_total", "stream" => self.label()).increment(1);
                        }
                    }
                }
                let label = self.label();
                metrics::counter!("spreadagg_archive_compactions_total", "stream" => label)
                    .increment(1);
                metrics::counter!("spreadagg_archive_compacted_sources_total", "stream" => label)
                    .increment(sources.len() as u64);
                metrics::histogram!("spreadagg_archive_compaction_seconds", "stream" => label)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(
                    stream = label,
                    path = %path,
                    sources = sources.len(),
                    rows = count,
                    repeated,
                    bytes = size,
                    "compacted"
                );
            }
            Err(error) => {
                metrics::counter!("spreadagg_archive_compaction_errors_total", "stream" => self.label()).increment(1);
                tracing::warn!(stream = self.label(), %error, files = sources.len(), "compaction failed; the files stay and are merged later");
                self.pending.put_back(partition.clone(), sources);
            }
        }
    }

    async fn read_source<T: Record>(
        &self,
        partition: &Partition,
        file: &FlushFile,
    ) -> Result<Vec<crate::schema::Row<T>>, String> {
        let bytes = tokio::time::timeout(IO_TIMEOUT, self.store.get(&file.path))
            .await
            .map_err(|_| "reading timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let exchange = partition.exchange().map(str::to_owned);
        tokio::task::spawn_blocking(move || T::read(bytes, exchange.as_deref()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Sorts, deduplicates, encodes and writes the merged rows; the path, rows, repeats
    /// dropped and bytes.
    async fn write_merged<T: Record>(
        &self,
        partition: &Partition,
        mut rows: Vec<crate::schema::Row<T>>,
        sources: &[FlushFile],
    ) -> Result<(Path, usize, usize, usize), String> {
        let names: Vec<String> = sources
            .iter()
            .filter_map(|f| f.path.filename().map(str::to_owned))
            .collect();
        let listed = names.join(",");
        let encoded = tokio::task::spawn_blocking(move || {
            sort_rows(&mut rows);
            let before = rows.len();
            // Equal sequences are the same message, so the same sort key: adjacent.
            rows.dedup_by_key(|r| r.stream_seq);
            let repeated = before - rows.len();
            let first = rows.iter().map(|r| r.stream_seq).min();
            let last = rows.iter().map(|r| r.stream_seq).max();
            let batch = T::batch(&rows).map_err(|e| e.to_string())?;
            let bytes = schema::to_parquet_with(&batch, vec![(COMPACTED_FROM.into(), listed)])
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((bytes, rows.len(), repeated, first, last))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (bytes, count, repeated, Some(first), Some(last)) = encoded else {
            return Err("the files hold no rows".into());
        };
        let path = partition.file_path(
            self.store.base(),
            self.kind,
            &compacted_name(self.kind, first, last, &names, &self.settings.replica),
        );
        let size = bytes.len();
        tokio::time::timeout(IO_TIMEOUT, self.store.put(&path, bytes))
            .await
            .map_err(|_| format!("writing {path} timed out"))?
            .map_err(|e| e.to_string())?;
        Ok((path, count, repeated, size))
    }

    /// The flush files a compacted file's footer lists, reading only the footer (a ranged
    /// read of the file's tail, a second one when the footer is longer).
    async fn sources_of(&self, path: &Path, size: u64) -> Result<Vec<String>, String> {
        let tail_len = size.min(FOOTER_GUESS);
        let read = |len: u64| async move {
            tokio::time::timeout(IO_TIMEOUT, self.store.get_range(path, size - len..size))
                .await
                .map_err(|_| "reading timed out".to_owned())?
                .map_err(|e| e.to_string())
        };
        let tail = read(tail_len).await?;
        let metadata = match read::footer_metadata(&tail).map_err(|e| e.to_string())? {
            Ok(metadata) => metadata,
            Err(needed) if (needed as u64) <= size => {
                let tail = read(needed as u64).await?;
                read::footer_metadata(&tail)
                    .map_err(|e| e.to_string())?
                    .map_err(|_| "the footer is longer than it says".to_owned())?
            }
            Err(_) => return Err("the footer is longer than the file".into()),
        };
        Ok(metadata
            .into_iter()
            .filter(|(k, _)| k == COMPACTED_FROM)
            .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .collect())
    }

    /// What an earlier run left in the last `lookback` hours: flush files become candidates;
    /// sources that a compacted file already holds are deleted.
    async fn adopt(&mut self) -> Result<(), String> {
        let root = self.store.base().clone().join(self.kind.name());
        let roots = if self.kind == StreamKind::Spreads {
            vec![root.clone()]
        } else {
            self.store
                .list_dirs(&root)
                .await
                .map_err(|e| e.to_string())?
        };
        let today = Utc::now().date_naive();
        let days = i64::from(self.settings.lookback_hours.div_ceil(24));
        let dates: Vec<NaiveDate> = (0..=days)
            .filter_map(|back| today.checked_sub_days(chrono::Days::new(back as u64)))
            .collect();
        let skip = root.as_ref().len() + 1;
        let mut found: BTreeMap<Partition, Found> = BTreeMap::new();
        for dir in roots {
            for date in &dates {
                let prefix = dir
                    .clone()
                    .join(format!("date={}", date.format("%Y-%m-%d")));
                for object in self.store.list(&prefix).await.map_err(|e| e.to_string())? {
                    let full = object.location.as_ref();
                    let relative = &full[skip.min(full.len())..];
                    let (Some(partition), Some(name)) = (
                        Partition::of_path(self.kind, relative),
                        object.location.filename(),
                    ) else {
                        continue;
                    };
                    // Only this replica's files: not another replica's (it merges them), not
                    // anything else someone put under the dataset's paths.
                    let Some(parsed) = parse_name(self.kind, name) else {
                        continue;
                    };
                    if parsed.replica != &*self.settings.replica {
                        continue;
                    }
                    let entry = found.entry(partition).or_default();
                    if !parsed.compacted {
                        entry.0.push(FlushFile {
                            path: object.location.clone(),
                            // Not in the name: estimated high from the size (a tick row
                            // takes 20-40 bytes), so merges of adopted files stay small.
                            rows: object.size.div_ceil(ADOPTED_BYTES_PER_ROW),
                            bytes: object.size,
                            written_ms: object.last_modified.timestamp_millis(),
                        });
                    } else {
                        entry.1.push((object.location.clone(), object.size));
                    }
                }
            }
        }
        let (mut adopted, mut cleaned) = (0usize, 0usize);
        for (partition, (mut flushes, compacted)) in found {
            if flushes.is_empty() {
                continue;
            }
            for (path, size) in compacted {
                let listed = match self.sources_of(&path, size).await {
                    Ok(listed) => listed,
                    Err(reason) => {
                        // Its sources (if any are listed) stay: at worst their rows are
                        // there twice, which readers drop; never lost.
                        metrics::counter!("spreadagg_archive_compaction_errors_total", "stream" => self.label()).increment(1);
                        tracing::warn!(stream = self.label(), path = %path, %reason, "cannot read a compacted file's footer; its sources are kept");
                        continue;
                    }
                };
                let (merged, kept): (Vec<FlushFile>, Vec<FlushFile>) =
                    flushes.into_iter().partition(|f| {
                        f.path
                            .filename()
                            .is_some_and(|n| listed.iter().any(|l| l == n))
                    });
                for file in merged {
                    self.store
                        .delete(&file.path)
                        .await
                        .map_err(|e| e.to_string())?;
                    cleaned += 1;
                }
                flushes = kept;
            }
            for file in flushes {
                self.pending.add(partition.clone(), file);
                adopted += 1;
            }
        }
        if adopted + cleaned > 0 {
            tracing::info!(
                stream = self.label(),
                adopted,
                cleaned,
                "adopted flush files from an earlier run"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_7: i64 = 1_735_801_200_000_000_000; // 2025-01-02T07:00:00Z

    fn settings() -> CompactSettings {
        CompactSettings {
            replica: "".into(),
            file_rows: 100,
            file_bytes: 1_000_000,
            file_age: Duration::from_secs(60),
            hour_grace: Duration::from_secs(300),
            lookback_hours: 48,
            check_every: Duration::from_secs(1),
        }
    }

    fn file(name: &str, rows: u64, written_ms: i64) -> FlushFile {
        FlushFile {
            path: Path::from(name),
            rows,
            bytes: rows * 10,
            written_ms,
        }
    }

    #[test]
    fn groups_are_due_by_rows_age_or_a_closed_hour() {
        let p = Partition::new(Some("okx"), HOUR_7);
        let open_hour_ms = HOUR_7 / 1_000_000 + 10_000; // 07:00:10, the hour still open
        let s = settings();

        let pending = Pending::default();
        pending.add(p.clone(), file("a", 30, open_hour_ms));
        pending.add(p.clone(), file("b", 30, open_hour_ms + 1));
        assert!(
            pending.take_due(&s, open_hour_ms + 2).is_empty(),
            "small and young"
        );
        pending.add(p.clone(), file("c", 50, open_hour_ms + 2));
        let due = pending.take_due(&s, open_hour_ms + 3);
        assert_eq!(due.len(), 1, "rows reached file_rows");
        let names: Vec<&str> = due[0].1.iter().map(|f| f.path.as_ref()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(pending.len(), 0);

        pending.add(p.clone(), file("d", 1, open_hour_ms));
        pending.add(p.clone(), file("e", 1, open_hour_ms));
        assert!(pending.take_due(&s, open_hour_ms + 59_000).is_empty());
        assert_eq!(pending.take_due(&s, open_hour_ms + 60_000).len(), 1, "aged");

        let closed = (HOUR_7 + 3_600_000_000_000) / 1_000_000 + 300_000;
        // Young files (30 s), so only the hour's end can make them due.
        pending.add(p.clone(), file("f", 1, closed - 30_000));
        pending.add(p.clone(), file("g", 1, closed - 30_000));
        assert!(pending.take_due(&s, closed - 1).is_empty());
        assert_eq!(pending.take_due(&s, closed).len(), 1, "the hour closed");
    }

    #[test]
    fn large_files_stay_as_they_are_and_one_file_is_never_merged() {
        let p = Partition::new(Some("okx"), HOUR_7);
        let s = settings();
        let pending = Pending::default();
        pending.add(p.clone(), file("big", 100, 0));
        pending.add(p.clone(), file("small", 1, 0));
        assert!(pending.take_due(&s, 0).is_empty());
        assert_eq!(pending.len(), 1, "the big one is no candidate");
        pending.add(p.clone(), file("small", 1, 0));
        assert_eq!(pending.len(), 1, "a file is added once");
        let closed = (HOUR_7 + 3_600_000_000_000) / 1_000_000 + 300_000;
        assert!(pending.take_due(&s, closed - 1).is_empty());
        assert_eq!(pending.len(), 1, "the hour may still bring another file");
        assert!(pending.take_due(&s, closed).is_empty());
        assert_eq!(pending.len(), 0, "a closed hour's lone file is forgotten");
    }

    #[test]
    fn a_group_takes_the_oldest_files_up_to_the_limit() {
        let p = Partition::new(None, HOUR_7);
        let s = settings();
        let pending = Pending::default();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            pending.add(p.clone(), file(name, 40, i64::try_from(i).expect("small")));
        }
        let due = pending.take_due(&s, 10);
        let names: Vec<&str> = due[0].1.iter().map(|f| f.path.as_ref()).collect();
        assert_eq!(names, ["a", "b", "c"], "120 rows: one past the limit");
        assert_eq!(pending.len(), 2);
    }
}
