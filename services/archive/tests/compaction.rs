//! Compaction end to end: many small flush files per partition merged into one sorted,
//! deduplicated file per partition (on the local filesystem and on a real S3-compatible
//! server), the archive still complete by `verify`; and the crash between writing a compacted
//! file and deleting its sources repaired at the next start.

mod common;

use common::files_under;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use spreadagg_archive::store::{self, ArchiveStore, StoreOptions};
use spreadagg_archive::verify;
use spreadagg_archive::{ArchiveConfig, read, run};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use spreadagg_testkit::s3::S3Server;
use tokio_util::sync::CancellationToken;

/// 2025-01-02T06:58:00Z: the ticks span hours 06 and 07, both long closed.
const START_NS: i64 = 1_735_801_080_000_000_000;
const TICKS: usize = 1_200;

/// Tick `i` of a run starting at `start_ns`.
fn tick_from(start_ns: i64, i: usize) -> Tick {
    Tick {
        exchange: ["binance", "okx"][i % 2].into(),
        symbol: ["SOL-USDT", "BTC-USDT", "ETH-USDT"][i % 3].into(),
        bid_px: 100.0 + i as f64,
        bid_qty: 1.0,
        ask_px: 100.5 + i as f64,
        ask_qty: 1.0,
        book_spread_pct: 0.5,
        exchange_ts_ns: 0,
        // 200 ms apart: 1,200 ticks span 4 minutes across 07:00.
        recv_ts_ns: start_ns + i64::try_from(i).expect("small") * 200_000_000,
        seq: i as u64,
    }
}

async fn publish_ticks(bus: &Bus, range: std::ops::Range<usize>) {
    publish_ticks_from(bus, START_NS, range).await;
}

async fn publish_ticks_from(bus: &Bus, start_ns: i64, range: std::ops::Range<usize>) {
    for i in range {
        let t = tick_from(start_ns, i);
        bus.publish(&OutMessage {
            subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
            msg_id: format!("t{i}"),
            payload: Bytes::from(t.encode_to_vec()),
        })
        .await
        .expect("published");
    }
}

fn config(store: String, compaction: bool) -> ArchiveConfig {
    ArchiveConfig {
        store,
        // Small flushes: many files per partition.
        flush_rows: 50,
        flush_interval_ms: 50,
        max_ack_pending: 100,
        compaction,
        compaction_check_s: 1,
        ..ArchiveConfig::default()
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), spreadagg_archive::ArchiveError>>,
}

fn start(config: ArchiveConfig, bus: &Bus) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config, bus.clone(), Health::new(), stop.clone()));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(8), self.task)
            .await
            .expect("stops promptly")
            .expect("joins")
            .expect("clean stop");
    }
}

async fn wait_acked(bus: &Bus, floor: u64) {
    for _ in 0..600 {
        if bus
            .consumer_state("MD_TICKS", "archiver-ticks")
            .await
            .is_ok_and(|s| s.ack_floor >= floor)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ticks not acknowledged up to {floor}");
}

/// File names by partition directory (relative to `<prefix>/ticks`).
async fn layout(store: &ArchiveStore) -> BTreeMap<String, Vec<String>> {
    let root = store.base().clone().join("ticks");
    let skip = root.as_ref().len() + 1;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in store.list(&root).await.expect("lists") {
        let rel = &o.location.as_ref()[skip..];
        let (dir, name) = rel.rsplit_once('/').expect("in a partition");
        out.entry(dir.to_owned()).or_default().push(name.to_owned());
    }
    for names in out.values_mut() {
        names.sort();
    }
    out
}

async fn wait_compacted(store: &ArchiveStore) -> BTreeMap<String, Vec<String>> {
    for _ in 0..300 {
        let l = layout(store).await;
        if !l.is_empty()
            && l.values().all(|names| {
                // Merged as far as it goes: at most one flush file left (a lone last flush
                // after an earlier merge stays as it is until another joins it).
                names.iter().any(|n| n.ends_with(".compacted.parquet"))
                    && names
                        .iter()
                        .filter(|n| !n.ends_with(".compacted.parquet"))
                        .count()
                        <= 1
            })
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not compacted: {:?}", layout(store).await);
}

/// Reads every compacted file: rows sorted by symbol, time, sequence, each sequence once,
/// in the right partition; returns all ticks by stream sequence.
async fn check_files(store: &ArchiveStore) -> BTreeMap<u64, Tick> {
    let mut all = BTreeMap::new();
    for (dir, names) in layout(store).await {
        let exchange = dir
            .split('/')
            .find_map(|s| s.strip_prefix("exchange="))
            .expect("exchange")
            .to_owned();
        let root = store.base().clone().join("ticks");
        for name in names {
            let path = object_store::path::Path::from(format!("{root}/{dir}/{name}"));
            let bytes = store.get(&path).await.expect("get");
            if name.ends_with(".compacted.parquet") {
                let sources = read::metadata(bytes.clone()).expect("footer");
                assert!(
                    sources
                        .iter()
                        .any(|(k, v)| k == "spreadagg.compacted_from" && v.split(',').count() >= 2),
                    "{sources:?}"
                );
            }
            let rows = read::ticks(bytes, &exchange).expect("rows");
            let keys: Vec<(String, i64, u64)> = rows
                .iter()
                .map(|r| (r.msg.symbol.clone(), r.msg.recv_ts_ns, r.stream_seq))
                .collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{dir}/{name}: sorted, no repeats"
            );
            for r in rows {
                assert!(
                    all.insert(r.stream_seq, r.msg).is_none(),
                    "one file per sequence"
                );
            }
        }
    }
    all
}

fn expected() -> BTreeMap<u64, Tick> {
    expected_from(START_NS)
}

fn expected_from(start_ns: i64) -> BTreeMap<u64, Tick> {
    (0..TICKS)
        .map(|i| (i as u64 + 1, tick_from(start_ns, i)))
        .collect()
}

/// Two minutes before the start of the previous hour: recent enough for the restart's
/// adoption (which looks at the last days' partitions).
fn recent_start_ns() -> i64 {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("in range");
    now - now.rem_euclid(HOUR_NS) - HOUR_NS - 120_000_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_files_are_merged_into_one_sorted_file_per_partition() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf8").to_owned();
    let bus = Bus::in_process(&StreamSettings::default());
    publish_ticks(&bus, 0..TICKS).await;
    let archiver = start(config(dir.clone(), true), &bus);
    wait_acked(&bus, TICKS as u64).await;
    let store = store::open(&dir, "", StoreOptions::default()).expect("opens");
    let l = wait_compacted(&store).await;
    archiver.stop().await;
    assert_eq!(l.len(), 4, "two exchanges x two hours: {l:?}");
    assert_eq!(check_files(&store).await, expected());
    let report = verify::verify(&store, None, &BTreeMap::new())
        .await
        .expect("verify");
    assert!(report.complete);
    assert_eq!(report.streams["ticks"].duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_files_are_merged_on_s3() {
    let s3 = S3Server::start().expect("moto_server");
    s3.create_bucket("arch").expect("bucket");
    let bus = Bus::in_process(&StreamSettings::default());
    publish_ticks(&bus, 0..TICKS).await;
    let cfg = ArchiveConfig {
        store_options: s3.store_options().into_iter().collect(),
        ..config("s3://arch/p".into(), true)
    };
    let archiver = start(cfg, &bus);
    wait_acked(&bus, TICKS as u64).await;
    let store = store::open(
        "s3://arch/p",
        "",
        StoreOptions {
            config: s3.store_options(),
            ..StoreOptions::default()
        },
    )
    .expect("opens");
    wait_compacted(&store).await;
    archiver.stop().await;
    assert_eq!(check_files(&store).await, expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_merge_and_delete_is_repaired_at_the_next_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf8").to_owned();
    let bus = Bus::in_process(&StreamSettings::default());
    let start_ns = recent_start_ns();
    publish_ticks_from(&bus, start_ns, 0..TICKS).await;
    // The later hour may still be open (or just closed): merge by age.
    let config = |dir: String, compaction| ArchiveConfig {
        file_age_s: 1,
        hour_grace_s: 0,
        ..config(dir, compaction)
    };

    // Flush files only, kept aside.
    let first = start(config(dir.clone(), false), &bus);
    wait_acked(&bus, TICKS as u64).await;
    first.stop().await;
    let flushes: Vec<(PathBuf, Vec<u8>)> = files_under(&tmp.path().join("ticks"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    assert!(flushes.len() > 8, "many small files: {}", flushes.len());

    // Merged; then the sources put back, as a crash after the merge's write would leave them.
    let store = store::open(&dir, "", StoreOptions::default()).expect("opens");
    let second = start(config(dir.clone(), true), &bus);
    wait_compacted(&store).await;
    second.stop().await;
    for (path, bytes) in &flushes {
        std::fs::write(path, bytes).expect("restore");
    }
    let report = verify::verify(&store, None, &BTreeMap::new())
        .await
        .expect("verify");
    assert_eq!(
        report.streams["ticks"].duplicates, TICKS as u64,
        "every row twice now"
    );

    // The next start deletes the sources its compacted files list.
    let third = start(config(dir.clone(), true), &bus);
    wait_compacted(&store).await;
    third.stop().await;
    let report = verify::verify(&store, None, &BTreeMap::new())
        .await
        .expect("verify");
    assert!(report.complete);
    assert_eq!(report.streams["ticks"].duplicates, 0);
    assert_eq!(check_files(&store).await, expected_from(start_ns));
}
