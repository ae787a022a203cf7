//! Archive throughput: rows per CPU-second into Parquet on the local filesystem, the archiver
//! (in-process bus delivery, protobuf decode, partitioning, sort, encode, fsynced write, acks)
//! against a minimal arrow-rs writer of the same rows (arrays built from the decoded ticks,
//! one zstd file per partition, no bus, no sort, no fsync) in the same run; then bytes per tick
//! in the flush files and after compaction, and the compaction's own rate.
//!
//! `cargo run --release -p spreadagg-archive --example archive_throughput`
//! Environment: `ROWS` (default 500000: the in-process bus keeps at most 64 MiB a stream, and
//! every tick must still be there when the archiver starts; the run checks with `verify`),
//! `SYMBOLS` per exchange (default 200), `PAUSE_BEFORE_ARCHIVE` (attach a profiler).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use prost::Message;
use spreadagg_archive::{ArchiveConfig, run};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use tokio_util::sync::CancellationToken;

const EXCHANGES: [&str; 11] = [
    "binance", "okx", "bybit", "gateio", "kucoin", "bitget", "htx", "bingx", "coinbase", "kraken",
    "mexc",
];
/// The start of the hour two hours ago: closed (so compaction is due at once) and recent
/// (so a restarted archiver adopts its files).
fn start_ns() -> i64 {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0));
    now - now.rem_euclid(HOUR_NS) - 2 * HOUR_NS
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) from /proc/self/stat, in seconds (100 Hz ticks).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Realistic ticks: random-walk prices per (exchange, symbol), spread over one hour.
fn ticks(rows: usize, symbols: usize) -> Vec<Tick> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pairs = EXCHANGES.len() * symbols;
    let mut mid = vec![100.0f64; pairs];
    let step_ns = 3_600_000_000_000i64 / i64::try_from(rows.max(1)).unwrap_or(1);
    let start = start_ns();
    (0..rows)
        .map(|i| {
            let pair = (next() % pairs as u64) as usize;
            let step = ((next() % 2001) as f64 - 1000.0) / 1e6;
            mid[pair] *= 1.0 + step;
            let m = mid[pair];
            let ts = start + i64::try_from(i).unwrap_or(0) * step_ns;
            Tick {
                exchange: EXCHANGES[pair % EXCHANGES.len()].into(),
                symbol: format!("S{}-USDT", pair / EXCHANGES.len()),
                bid_px: (m * 0.9999 * 1e4).round() / 1e4,
                bid_qty: (next() % 10_000) as f64 / 100.0,
                ask_px: (m * 1.0001 * 1e4).round() / 1e4,
                ask_qty: (next() % 10_000) as f64 / 100.0,
                book_spread_pct: 0.02,
                exchange_ts_ns: ts - 1_000_000,
                recv_ts_ns: ts,
                seq: i as u64,
            }
        })
        .collect()
}

/// The minimal writer: one zstd Parquet file per exchange, arrays straight from the ticks.
fn minimal_writer(ticks: &[Tick], dir: &std::path::Path) -> u64 {
    let mut by_exchange: BTreeMap<&str, Vec<(usize, &Tick)>> = BTreeMap::new();
    for (i, t) in ticks.iter().enumerate() {
        by_exchange.entry(&t.exchange).or_default().push((i, t));
    }
    let mut bytes = 0;
    for (exchange, rows) in by_exchange {
        let f = |g: fn(&Tick) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|(_, t)| g(t)),
            ))
        };
        let ts = |g: fn(&Tick) -> i64| -> ArrayRef {
            Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|(_, t)| g(t)))
                    .with_timezone("UTC"),
            )
        };
        let symbols: ArrayRef = Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, t)| t.symbol.as_str()),
        ));
        let seqs: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, t)| t.seq),
        ));
        let stream_seqs: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(i, _)| *i as u64 + 1),
        ));
        let batch = RecordBatch::try_from_iter(vec![
            ("symbol", symbols),
            ("bid_px", f(|t| t.bid_px)),
            ("bid_qty", f(|t| t.bid_qty)),
            ("ask_px", f(|t| t.ask_px)),
            ("ask_qty", f(|t| t.ask_qty)),
            ("book_spread_pct", f(|t| t.book_spread_pct)),
            ("exchange_ts_ns", ts(|t| t.exchange_ts_ns)),
            ("recv_ts_ns", ts(|t| t.recv_ts_ns)),
            ("seq", seqs),
            ("stream_seq", stream_seqs),
        ])
        .expect("batch");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let path = dir.join(format!("{exchange}.parquet"));
        let file = std::fs::File::create(&path).expect("file");
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        bytes += std::fs::metadata(&path).expect("meta").len();
    }
    bytes
}

fn parquet_bytes(dir: &std::path::Path) -> (u64, usize) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                files += 1;
            }
        }
    }
    (bytes, files)
}

async fn wait_floor(bus: &Bus, floor: u64) {
    loop {
        if bus
            .consumer_state("MD_TICKS", "archiver-ticks")
            .await
            .is_ok_and(|s| s.ack_floor >= floor)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env("ROWS", 500_000);
    let symbols = env("SYMBOLS", 200);
    let data = ticks(rows, symbols);
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "{rows} ticks, {} exchanges x {symbols} symbols",
        EXCHANGES.len()
    );

    // The minimal arrow-rs writer.
    let dir = tmp.path().join("minimal");
    std::fs::create_dir_all(&dir).expect("dir");
    let (c0, w0) = (cpu_s(), Instant::now());
    let minimal_bytes = minimal_writer(&data, &dir);
    let (minimal_cpu, minimal_wall) = (cpu_s() - c0, w0.elapsed());
    let minimal_rate = rows as f64 / minimal_cpu;
    println!(
        "minimal writer   {minimal_rate:>10.0} rows/CPU-s  ({minimal_cpu:.2} CPU-s, {minimal_wall:.2?} wall), {:.1} bytes/tick",
        minimal_bytes as f64 / rows as f64
    );

    // The archiver, fed from the in-process bus (publishing is done before it starts).
    let settings = StreamSettings {
        max_bytes: 0,
        ..StreamSettings::default()
    };
    let bus = Bus::in_process(&settings);
    let mut publisher = bus.publisher(4096);
    for (i, t) in data.iter().enumerate() {
        publisher
            .publish(OutMessage {
                subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
                msg_id: format!("t{i}"),
                payload: Bytes::from(t.encode_to_vec()),
            })
            .await
            .expect("published");
    }
    publisher.flush().await.expect("flushed");
    let store = tmp.path().join("archive");
    let config = ArchiveConfig {
        store: store.to_str().expect("utf8").into(),
        compaction: false,
        ..ArchiveConfig::default()
    };
    if std::env::var_os("PAUSE_BEFORE_ARCHIVE").is_some() {
        // Time for a profiler to attach to this phase only (`perf record -p`).
        println!("archiving in 2 s, pid {}", std::process::id());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (c0, w0) = (cpu_s(), Instant::now());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config, bus.clone(), Health::new(), stop.clone()));
    wait_floor(&bus, rows as u64).await;
    let (archive_cpu, archive_wall) = (cpu_s() - c0, w0.elapsed());
    stop.cancel();
    task.await.expect("joins").expect("clean stop");
    let archive_rate = rows as f64 / archive_cpu;
    let (flush_bytes, flush_files) = parquet_bytes(&store);
    let local = spreadagg_archive::store::open(
        store.to_str().expect("utf8"),
        "",
        spreadagg_archive::StoreOptions::default(),
    )
    .expect("opens");
    let report = spreadagg_archive::verify::verify(&local, None, &BTreeMap::new())
        .await
        .expect("verifies");
    let archived = &report.streams["ticks"];
    assert!(
        report.complete && archived.distinct == rows as u64 && archived.duplicates == 0,
        "the archive holds every tick once: {} distinct, {} duplicates",
        archived.distinct,
        archived.duplicates
    );
    println!(
        "archiver         {archive_rate:>10.0} rows/CPU-s  ({archive_cpu:.2} CPU-s, {archive_wall:.2?} wall), {:.1} bytes/tick in {flush_files} flush files",
        flush_bytes as f64 / rows as f64
    );
    println!(
        "ratio archiver / minimal writer: {:.2}",
        archive_rate / minimal_rate
    );

    // Compaction of those flush files (their hour is long closed: due at once).
    let config = ArchiveConfig {
        store: store.to_str().expect("utf8").into(),
        compaction: true,
        compaction_check_s: 1,
        ..ArchiveConfig::default()
    };
    let (c0, w0) = (cpu_s(), Instant::now());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config, bus.clone(), Health::new(), stop.clone()));
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, files) = parquet_bytes(&store);
        if files <= EXCHANGES.len() {
            break;
        }
    }
    let (compact_cpu, compact_wall) = (cpu_s() - c0, w0.elapsed());
    stop.cancel();
    task.await.expect("joins").expect("clean stop");
    let (compacted_bytes, files) = parquet_bytes(&store);
    println!(
        "compaction       {:>10.0} rows/CPU-s  ({compact_cpu:.2} CPU-s, {compact_wall:.2?} wall), {:.1} bytes/tick in {files} files",
        rows as f64 / compact_cpu,
        compacted_bytes as f64 / rows as f64
    );
}
