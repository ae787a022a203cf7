//! The archiver against a real S3-compatible server (moto's server mode, started here on a
//! free port) and a real `nats-server`: files written and read back through S3, a multipart
//! upload, and an outage (the server paused) during which nothing is acknowledged, the role
//! is not ready and memory stays bounded, after which everything is archived exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use spreadagg_archive::store::{self, ArchiveStore, StoreOptions};
use spreadagg_archive::{ArchiveConfig, run};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use spreadagg_testkit::s3::S3Server;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "archive";
/// 2025-01-02T06:59:00Z.
const START_NS: i64 = 1_735_801_140_000_000_000;

fn tick(i: usize) -> Tick {
    let exchange = ["binance", "okx", "bybit"][i % 3];
    Tick {
        exchange: exchange.into(),
        symbol: ["BTC-USDT", "ETH-USDT"][i % 2].into(),
        bid_px: 100.0 + i as f64,
        bid_qty: 1.0,
        ask_px: 101.0 + i as f64,
        ask_qty: 2.0,
        book_spread_pct: 0.5,
        exchange_ts_ns: START_NS,
        // 200 ms apart: ticks from 300 on fall in the next hour.
        recv_ts_ns: START_NS + i64::try_from(i).expect("small") * 200_000_000,
        seq: u64::try_from(i).expect("small"),
    }
}

async fn publish_ticks(bus: &Bus, range: std::ops::Range<usize>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in range {
        let t = tick(i);
        let ack = bus
            .publish(&OutMessage {
                subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
                msg_id: format!("tick-{i}"),
                payload: Bytes::from(t.encode_to_vec()),
            })
            .await
            .expect("published");
        seqs.push(ack.stream_seq);
    }
    seqs
}

fn options(s3: &S3Server) -> BTreeMap<String, String> {
    s3.store_options().into_iter().collect()
}

fn s3_store(s3: &S3Server) -> ArchiveStore {
    store::open(
        &format!("s3://{BUCKET}"),
        "",
        StoreOptions {
            config: s3.store_options(),
            ..StoreOptions::default()
        },
    )
    .expect("opens")
}

/// Every archived tick's `stream_seq`, read back from the files through S3, with how many
/// times each appears.
async fn archived_seqs(store: &ArchiveStore) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for object in store.list(&Path::from("arch/ticks")).await.expect("lists") {
        assert!(
            object.location.as_ref().ends_with(".parquet"),
            "only complete data files under the dataset: {}",
            object.location
        );
        let bytes = store.get(&object.location).await.expect("reads");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("footer")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let col = batch
                .column_by_name("stream_seq")
                .expect("stream_seq")
                .as_primitive::<UInt64Type>();
            for seq in col.values() {
                *seen.entry(*seq).or_default() += 1;
            }
        }
    }
    seen
}

struct Setup {
    s3: S3Server,
    _nats: NatsServer,
    bus: Bus,
}

async fn setup() -> Setup {
    let s3 = S3Server::start().expect("moto_server starts");
    s3.create_bucket(BUCKET).expect("bucket");
    let nats = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .expect("connects");
    Setup {
        s3,
        _nats: nats,
        bus,
    }
}

fn config(s3: &S3Server) -> ArchiveConfig {
    ArchiveConfig {
        store: format!("s3://{BUCKET}"),
        prefix: "arch".into(),
        store_options: options(s3),
        flush_rows: 100,
        flush_interval_ms: 200,
        max_ack_pending: 200,
        ack_wait_s: 2,
        store_check_interval_s: 1,
        // Each flush's file is checked here; tests/compaction.rs merges on S3.
        compaction: false,
        ..ArchiveConfig::default()
    }
}

async fn ack_floor(bus: &Bus) -> u64 {
    bus.consumer_state("MD_TICKS", "archiver-ticks")
        .await
        .map_or(0, |s| s.ack_floor)
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_are_archived_to_s3_exactly_once() {
    let Setup { s3, _nats, bus } = setup().await;
    let seqs = publish_ticks(&bus, 0..450).await;
    let (stop, health) = (CancellationToken::new(), Health::new());
    let task = tokio::spawn(run(config(&s3), bus.clone(), health.clone(), stop.clone()));
    let last = *seqs.last().expect("some");
    wait_for("every tick is acknowledged", 30, async || {
        ack_floor(&bus).await >= last
    })
    .await;
    wait_for("the role is ready", 30, async || health.is_ready()).await;
    stop.cancel();
    task.await.expect("joins").expect("clean stop");

    let store = s3_store(&s3);
    let seen = archived_seqs(&store).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), seqs);
    assert!(seen.values().all(|n| *n == 1), "no duplicates: {seen:?}");
    // Partitioned as on the local filesystem.
    let listed = store.list(&Path::from("arch/ticks")).await.expect("lists");
    assert!(
        listed.iter().any(|o| o
            .location
            .as_ref()
            .starts_with("arch/ticks/exchange=okx/date=2025-01-02/hour=07/")),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_uploaded_in_parts() {
    let s3 = S3Server::start().expect("moto_server starts");
    s3.create_bucket(BUCKET).expect("bucket");
    let store = s3_store(&s3);
    let big: Vec<u8> = (0..store::MULTIPART_THRESHOLD + 5 * 1024 * 1024)
        .map(|i| (i % 253) as u8)
        .collect();
    let path = Path::from("big/file.parquet");
    store
        .put(&path, Bytes::from(big.clone()))
        .await
        .expect("multipart upload");
    assert_eq!(store.get(&path).await.expect("reads").as_ref(), &big[..]);
    let listed = store.list(&Path::from("big")).await.expect("lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, big.len() as u64);
    store.probe().await.expect("the probe passes against S3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_acks_keeps_memory_bounded_and_loses_nothing() {
    let Setup { mut s3, _nats, bus } = setup().await;
    let mut seqs = publish_ticks(&bus, 0..100).await;
    let (stop, health) = (CancellationToken::new(), Health::new());
    let cfg = config(&s3);
    let max_ack_pending = cfg.max_ack_pending as u64;
    let task = tokio::spawn(run(cfg, bus.clone(), health.clone(), stop.clone()));
    let first_batch = *seqs.last().expect("some");
    wait_for("the first ticks are archived", 30, async || {
        ack_floor(&bus).await >= first_batch
    })
    .await;

    s3.pause().expect("pauses");
    seqs.extend(publish_ticks(&bus, 100..1_100).await);
    wait_for("the role reports the store down", 30, async || {
        !health.is_ready()
    })
    .await;
    let report = health.report();
    assert_eq!(
        report["components"]["archive.store"]["ready"], false,
        "{report}"
    );
    // While the store is down: nothing acknowledged past what was written, and what is
    // held stays within the consumer's bound.
    for _ in 0..5 {
        let state = bus
            .consumer_state("MD_TICKS", "archiver-ticks")
            .await
            .expect("state");
        assert!(state.ack_floor < *seqs.last().expect("some"));
        assert!(
            state.ack_pending <= max_ack_pending,
            "held {} > {max_ack_pending}",
            state.ack_pending
        );
        let buffered = health.report()["components"]["archive.ticks"]["detail"]["buffered"]
            .as_u64()
            .unwrap_or(0);
        assert!(buffered <= 100, "buffer bounded by flush_rows: {buffered}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    s3.resume().expect("resumes");
    let last = *seqs.last().expect("some");
    wait_for("everything is archived after the outage", 90, async || {
        ack_floor(&bus).await >= last
    })
    .await;
    wait_for("the role is ready again", 30, async || health.is_ready()).await;
    stop.cancel();
    task.await.expect("joins").expect("clean stop");

    let seen = archived_seqs(&s3_store(&s3)).await;
    let missing: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|s| !seen.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "missing after the outage: {missing:?}");
    assert_eq!(seen.len(), seqs.len(), "nothing but the published ticks");
}
