//! Black-box tests of the archiver: publish to the bus, run `spreadagg_archive::run`, stop it,
//! and read the Parquet files back with the `parquet` crate's Arrow reader. The main cases run
//! against both the in-process bus and a real `nats-server`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use chrono::{DateTime, Timelike};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use spreadagg_archive::{ArchiveConfig, ArchiveError, run};
use spreadagg_bus::{Bus, ConsumerState, OutMessage, StreamSettings};
use spreadagg_model::wire::{Side, Spread, Tick, Trade};
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2025-01-02T06:59:00Z: one message a second from here spans two hourly partitions.
const START_NS: i64 = 1_735_801_140_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;
const EXCHANGES: [&str; 3] = ["binance", "bybit", "okx"];
const SYMBOLS: [&str; 2] = ["ETH-USDT", "BTC-USDT"];

/// A bus under test; keeps its server (if any) alive.
struct Fixture {
    bus: Bus,
    _server: Option<NatsServer>,
}

fn inproc() -> Fixture {
    Fixture {
        bus: Bus::in_process(&StreamSettings::default()),
        _server: None,
    }
}

async fn jetstream() -> Fixture {
    let server = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&server.url(), &StreamSettings::default())
        .await
        .expect("connects");
    Fixture {
        bus,
        _server: Some(server),
    }
}

fn tick(i: usize) -> Tick {
    let i64i = i64::try_from(i).expect("small");
    let bid = 100.0 + i as f64;
    Tick {
        exchange: EXCHANGES[i % 3].into(),
        symbol: SYMBOLS[i % 2].into(),
        bid_px: bid,
        bid_qty: 1.0 + (i % 7) as f64,
        ask_px: bid + 0.5,
        ask_qty: 2.0,
        book_spread_pct: 0.5 / (bid + 0.5) * 100.0,
        // Every fifth exchange sent no time of its own.
        exchange_ts_ns: if i.is_multiple_of(5) {
            0
        } else {
            START_NS + i64i * SECOND_NS - 7
        },
        // Out of order within a symbol now and then, so the files' sort is visible.
        recv_ts_ns: START_NS + (i64i ^ 1) * SECOND_NS,
        seq: 1000 + i as u64,
    }
}

fn trade(i: usize) -> Trade {
    let i64i = i64::try_from(i).expect("small");
    Trade {
        exchange: EXCHANGES[i % 3].into(),
        symbol: SYMBOLS[i % 2].into(),
        price: 50.0 + i as f64,
        qty: 0.1 * (1 + i % 4) as f64,
        side: if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        } as i32,
        trade_id: format!("tr-{i}"),
        exchange_ts_ns: if i.is_multiple_of(4) {
            0
        } else {
            START_NS + i64i * SECOND_NS - 3
        },
        recv_ts_ns: START_NS + i64i * SECOND_NS,
    }
}

fn spread(i: usize) -> Spread {
    let i64i = i64::try_from(i).expect("small");
    let f = i as f64;
    Spread {
        symbol: SYMBOLS[i % 2].into(),
        exchange_a: "binance".into(),
        exchange_b: "okx".into(),
        bid_a: 100.0 + f,
        ask_a: 100.5 + f,
        bid_b: 100.2 + f,
        ask_b: 100.7 + f,
        ts_a_ns: START_NS + i64i * SECOND_NS - 2,
        ts_b_ns: START_NS + i64i * SECOND_NS - 1,
        a_to_b_pct: 0.1 + f,
        b_to_a_pct: -0.4 - f,
        bid_bid_pct: -0.2,
        staleness_ms: 1.0,
        triggered_by: "okx".into(),
        upper_band: 0.3,
        lower_band: -0.3,
        ts_ns: START_NS + i64i * 10 * SECOND_NS,
    }
}

async fn publish(bus: &Bus, subject: String, id: String, payload: Vec<u8>) -> u64 {
    let ack = bus
        .publish(&OutMessage {
            subject,
            msg_id: id,
            payload: Bytes::from(payload),
        })
        .await
        .expect("published");
    assert!(!ack.duplicate);
    ack.stream_seq
}

/// What was published, by stream sequence.
#[derive(Default)]
struct Published {
    ticks: BTreeMap<u64, Tick>,
    trades: BTreeMap<u64, Trade>,
    spreads: BTreeMap<u64, Spread>,
}

impl Published {
    async fn ticks(&mut self, bus: &Bus, range: std::ops::Range<usize>) {
        for i in range {
            let t = tick(i);
            let subject = format!("md.tick.{}.{}", t.exchange, t.symbol);
            let seq = publish(bus, subject, format!("tick-{i}"), t.encode_to_vec()).await;
            self.ticks.insert(seq, t);
        }
    }

    async fn trades(&mut self, bus: &Bus, range: std::ops::Range<usize>) {
        for i in range {
            let t = trade(i);
            let subject = format!("md.trade.{}.{}", t.exchange, t.symbol);
            let seq = publish(bus, subject, format!("trade-{i}"), t.encode_to_vec()).await;
            self.trades.insert(seq, t);
        }
    }

    async fn spreads(&mut self, bus: &Bus, range: std::ops::Range<usize>) {
        for i in range {
            let s = spread(i);
            let subject = format!("md.spread.{}.{}.{}", s.symbol, s.exchange_a, s.exchange_b);
            let seq = publish(bus, subject, format!("spread-{i}"), s.encode_to_vec()).await;
            self.spreads.insert(seq, s);
        }
    }
}

fn config(store: &Path, flush_rows: usize, flush_interval_ms: u64) -> ArchiveConfig {
    ArchiveConfig {
        store: store.to_str().expect("utf8").to_owned(),
        prefix: "arch".into(),
        flush_rows,
        flush_interval_ms,
        max_ack_pending: flush_rows * 2,
        ack_wait_s: 30,
        // These tests check each flush's file; tests/compaction.rs checks the merges.
        compaction: false,
        ..ArchiveConfig::default()
    }
}

struct Running {
    stop: CancellationToken,
    health: Health,
    task: JoinHandle<Result<(), ArchiveError>>,
}

fn start(config: ArchiveConfig, bus: &Bus) -> Running {
    let stop = CancellationToken::new();
    let health = Health::new();
    let task = tokio::spawn(run(config, bus.clone(), health.clone(), stop.clone()));
    Running { stop, health, task }
}

impl Running {
    /// Cancels and waits; the archiver must be done well inside the 5 s grace period (the
    /// timeout here only keeps a hung test from hanging the suite).
    async fn stop(self) -> Result<(), ArchiveError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(8), self.task)
            .await
            .expect("the archiver stops promptly")
            .expect("the archiver task does not panic")
    }
}

async fn consumer_state(bus: &Bus, stream: &str, durable: &str) -> Option<ConsumerState> {
    bus.consumer_state(stream, durable).await.ok()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn wait_ack_floor(bus: &Bus, stream: &str, durable: &str, floor: u64) {
    wait_until(&format!("{durable} acks up to {floor}"), || async {
        consumer_state(bus, stream, durable)
            .await
            .is_some_and(|s| s.ack_floor >= floor)
    })
    .await;
}

/// Every `.parquet` file under `dir`, as (path relative to `dir`, batches).
fn parquet_files(dir: &Path) -> Vec<(PathBuf, Vec<RecordBatch>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(dir).expect("under dir").to_path_buf();
            let name = rel.to_str().expect("utf8");
            assert!(
                name.ends_with(".parquet"),
                "only finished Parquet files in the archive, found {name}"
            );
            let file = std::fs::File::open(&path).expect("open");
            let batches = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("a complete Parquet file")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect();
            (rel, batches)
        })
        .collect()
}

fn f64s(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let col = batch.column_by_name(name).expect(name);
    col.as_primitive::<Float64Type>().values().to_vec()
}

fn u64s(batch: &RecordBatch, name: &str) -> Vec<u64> {
    let col = batch.column_by_name(name).expect(name);
    col.as_primitive::<UInt64Type>().values().to_vec()
}

/// Timestamps with NULL read as 0, the wire's "none".
fn times(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let col = batch
        .column_by_name(name)
        .expect(name)
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(col.timezone(), Some("UTC"), "{name} is a UTC timestamp");
    (0..col.len())
        .map(|i| if col.is_null(i) { 0 } else { col.value(i) })
        .collect()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).expect(name).as_string::<i32>();
    (0..col.len())
        .map(|i| (!col.is_null(i)).then(|| col.value(i).to_owned()))
        .collect()
}

fn string(v: Option<String>) -> String {
    v.expect("not null")
}

/// The Hive partition values of a file path: `exchange`, `date`, `hour`.
fn partition_values(rel: &Path) -> BTreeMap<String, String> {
    rel.iter()
        .filter_map(|c| c.to_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn date_hour(ts_ns: i64) -> (String, String) {
    let t = DateTime::from_timestamp_nanos(ts_ns);
    (t.format("%Y-%m-%d").to_string(), format!("{:02}", t.hour()))
}

/// Checks what every file must satisfy and returns (stream, partition values, rows by seq).
struct FileRows<T> {
    rel: PathBuf,
    partition: BTreeMap<String, String>,
    rows: Vec<(u64, T)>,
}

fn check_file_name(rel: &Path, stream: &str, seqs: &[u64]) {
    let name = rel.file_name().and_then(|n| n.to_str()).expect("name");
    let (min, max) = (
        seqs.iter().min().expect("rows"),
        seqs.iter().max().expect("rows"),
    );
    let tag = name
        .strip_prefix(&format!("{stream}-{min}-{max}-"))
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .unwrap_or_else(|| panic!("{name} is <stream>-<first>-<last>-<run>.parquet"));
    assert!(
        tag.len() > 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}: the run token and the flush number"
    );
}

fn tick_files(root: &Path) -> Vec<FileRows<Tick>> {
    parquet_files(&root.join("arch/ticks"))
        .into_iter()
        .map(|(rel, batches)| {
            let partition = partition_values(&rel);
            let exchange = partition.get("exchange").expect("exchange=").clone();
            let mut rows = Vec::new();
            for b in &batches {
                assert!(b.column_by_name("exchange").is_none());
                let symbol = strings(b, "symbol");
                let (bid_px, bid_qty, ask_px, ask_qty, pct) = (
                    f64s(b, "bid_px"),
                    f64s(b, "bid_qty"),
                    f64s(b, "ask_px"),
                    f64s(b, "ask_qty"),
                    f64s(b, "book_spread_pct"),
                );
                let (ex_ts, recv_ts) = (times(b, "exchange_ts_ns"), times(b, "recv_ts_ns"));
                let (seq, stream_seq) = (u64s(b, "seq"), u64s(b, "stream_seq"));
                for i in 0..b.num_rows() {
                    rows.push((
                        stream_seq[i],
                        Tick {
                            exchange: exchange.clone(),
                            symbol: string(symbol[i].clone()),
                            bid_px: bid_px[i],
                            bid_qty: bid_qty[i],
                            ask_px: ask_px[i],
                            ask_qty: ask_qty[i],
                            book_spread_pct: pct[i],
                            exchange_ts_ns: ex_ts[i],
                            recv_ts_ns: recv_ts[i],
                            seq: seq[i],
                        },
                    ));
                }
            }
            FileRows {
                rel,
                partition,
                rows,
            }
        })
        .collect()
}

fn trade_files(root: &Path) -> Vec<FileRows<Trade>> {
    parquet_files(&root.join("arch/trades"))
        .into_iter()
        .map(|(rel, batches)| {
            let partition = partition_values(&rel);
            let exchange = partition.get("exchange").expect("exchange=").clone();
            let mut rows = Vec::new();
            for b in &batches {
                assert!(b.column_by_name("exchange").is_none());
                let (symbol, side, id) = (
                    strings(b, "symbol"),
                    strings(b, "side"),
                    strings(b, "trade_id"),
                );
                let (price, qty) = (f64s(b, "price"), f64s(b, "qty"));
                let (ex_ts, recv_ts) = (times(b, "exchange_ts_ns"), times(b, "recv_ts_ns"));
                let stream_seq = u64s(b, "stream_seq");
                for i in 0..b.num_rows() {
                    let side = match side[i].as_deref() {
                        Some("BUY") => Side::Buy,
                        Some("SELL") => Side::Sell,
                        other => panic!("unexpected side {other:?}"),
                    };
                    rows.push((
                        stream_seq[i],
                        Trade {
                            exchange: exchange.clone(),
                            symbol: string(symbol[i].clone()),
                            price: price[i],
                            qty: qty[i],
                            side: side as i32,
                            trade_id: string(id[i].clone()),
                            exchange_ts_ns: ex_ts[i],
                            recv_ts_ns: recv_ts[i],
                        },
                    ));
                }
            }
            FileRows {
                rel,
                partition,
                rows,
            }
        })
        .collect()
}

fn spread_files(root: &Path) -> Vec<FileRows<Spread>> {
    parquet_files(&root.join("arch/spreads"))
        .into_iter()
        .map(|(rel, batches)| {
            let partition = partition_values(&rel);
            let mut rows = Vec::new();
            for b in &batches {
                let s = |n| strings(b, n);
                let f = |n| f64s(b, n);
                let t = |n| times(b, n);
                let (symbol, ea, eb, trig) = (
                    s("symbol"),
                    s("exchange_a"),
                    s("exchange_b"),
                    s("triggered_by"),
                );
                let (bid_a, ask_a, bid_b, ask_b) = (f("bid_a"), f("ask_a"), f("bid_b"), f("ask_b"));
                let (ab, ba, bb, stale, up, low) = (
                    f("a_to_b_pct"),
                    f("b_to_a_pct"),
                    f("bid_bid_pct"),
                    f("staleness_ms"),
                    f("upper_band"),
                    f("lower_band"),
                );
                let (ts_a, ts_b, ts) = (t("ts_a_ns"), t("ts_b_ns"), t("ts_ns"));
                let stream_seq = u64s(b, "stream_seq");
                for i in 0..b.num_rows() {
                    rows.push((
                        stream_seq[i],
                        Spread {
                            symbol: string(symbol[i].clone()),
                            exchange_a: string(ea[i].clone()),
                            exchange_b: string(eb[i].clone()),
                            bid_a: bid_a[i],
                            ask_a: ask_a[i],
                            bid_b: bid_b[i],
                            ask_b: ask_b[i],
                            ts_a_ns: ts_a[i],
                            ts_b_ns: ts_b[i],
                            a_to_b_pct: ab[i],
                            b_to_a_pct: ba[i],
                            bid_bid_pct: bb[i],
                            staleness_ms: stale[i],
                            triggered_by: string(trig[i].clone()),
                            upper_band: up[i],
                            lower_band: low[i],
                            ts_ns: ts[i],
                        },
                    ));
                }
            }
            FileRows {
                rel,
                partition,
                rows,
            }
        })
        .collect()
}

/// Every file: named after its sequences, rows sorted by symbol then time, each row in the
/// partition its time and exchange say. Returns all rows by stream sequence, asserting that
/// none appears twice.
fn collect<T: Clone>(
    stream: &str,
    files: Vec<FileRows<T>>,
    key: impl Fn(&T) -> (String, i64, Option<String>),
) -> BTreeMap<u64, T> {
    let mut all = BTreeMap::new();
    for file in files {
        let seqs: Vec<u64> = file.rows.iter().map(|(s, _)| *s).collect();
        check_file_name(&file.rel, stream, &seqs);
        let keys: Vec<(String, i64, u64)> = file
            .rows
            .iter()
            .map(|(seq, r)| {
                let (symbol, ts, _) = key(r);
                (symbol, ts, *seq)
            })
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "{} is sorted by symbol then time",
            file.rel.display()
        );
        for (seq, row) in file.rows {
            let (_, ts, exchange) = key(&row);
            let (date, hour) = date_hour(ts);
            assert_eq!(file.partition.get("date"), Some(&date));
            assert_eq!(file.partition.get("hour"), Some(&hour));
            assert_eq!(file.partition.get("exchange"), exchange.as_ref());
            assert!(
                all.insert(seq, row).is_none(),
                "stream_seq {seq} archived twice"
            );
        }
    }
    all
}

fn archived_ticks(root: &Path) -> BTreeMap<u64, Tick> {
    collect("ticks", tick_files(root), |t: &Tick| {
        (t.symbol.clone(), t.recv_ts_ns, Some(t.exchange.clone()))
    })
}

fn archived_trades(root: &Path) -> BTreeMap<u64, Trade> {
    collect("trades", trade_files(root), |t: &Trade| {
        (t.symbol.clone(), t.recv_ts_ns, Some(t.exchange.clone()))
    })
}

fn archived_spreads(root: &Path) -> BTreeMap<u64, Spread> {
    collect("spreads", spread_files(root), |s: &Spread| {
        (s.symbol.clone(), s.ts_ns, None)
    })
}

fn last(map: &BTreeMap<u64, impl Sized>) -> u64 {
    map.keys().next_back().copied().unwrap_or(0)
}

async fn every_message_is_archived_exactly_once(f: Fixture) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut published = Published::default();
    // Half before the archiver starts (a backlog), half while it runs.
    published.ticks(&f.bus, 0..250).await;
    published.trades(&f.bus, 0..150).await;
    published.spreads(&f.bus, 0..100).await;
    let archiver = start(config(tmp.path(), 64, 200), &f.bus);
    published.ticks(&f.bus, 250..500).await;
    published.trades(&f.bus, 150..300).await;
    published.spreads(&f.bus, 100..200).await;

    wait_ack_floor(&f.bus, "MD_TICKS", "archiver-ticks", last(&published.ticks)).await;
    wait_ack_floor(
        &f.bus,
        "MD_TRADES",
        "archiver-trades",
        last(&published.trades),
    )
    .await;
    wait_ack_floor(
        &f.bus,
        "MD_SPREADS",
        "archiver-spreads",
        last(&published.spreads),
    )
    .await;

    assert!(archiver.health.is_ready(), "{}", archiver.health.report());
    let report = archiver.health.report();
    for stream in ["ticks", "trades", "spreads"] {
        let c = &report["components"][format!("archive.{stream}")];
        assert_eq!(c["ready"], true, "{report}");
        assert!(c["detail"]["files_written"].as_u64() > Some(0), "{report}");
        assert!(c["detail"]["buffered"].is_u64(), "{report}");
        assert!(c["detail"].get("lag").is_some(), "{report}");
    }
    archiver.stop().await.expect("clean stop");

    assert_eq!(archived_ticks(tmp.path()), published.ticks);
    assert_eq!(archived_trades(tmp.path()), published.trades);
    assert_eq!(archived_spreads(tmp.path()), published.spreads);
    let floors = [
        ("MD_TICKS", "archiver-ticks", last(&published.ticks)),
        ("MD_TRADES", "archiver-trades", last(&published.trades)),
        ("MD_SPREADS", "archiver-spreads", last(&published.spreads)),
    ];
    for (stream, durable, last_seq) in floors {
        let state = consumer_state(&f.bus, stream, durable)
            .await
            .expect("consumer exists");
        assert_eq!(state.ack_floor, last_seq, "{durable}");
        assert_eq!((state.ack_pending, state.pending), (0, 0), "{durable}");
    }
    // Both hours of the ticks, and every exchange, have their partitions.
    let dirs: BTreeSet<String> = tick_files(tmp.path())
        .iter()
        .map(|f| {
            f.rel
                .parent()
                .expect("dir")
                .to_str()
                .expect("utf8")
                .to_owned()
        })
        .collect();
    for exchange in EXCHANGES {
        for hour in ["06", "07"] {
            let dir = format!("exchange={exchange}/date=2025-01-02/hour={hour}");
            assert!(dirs.contains(&dir), "{dir} missing from {dirs:?}");
        }
    }
}

async fn nothing_is_acked_before_its_file_exists(f: Fixture) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut published = Published::default();
    published.ticks(&f.bus, 0..50).await;
    let huge = ArchiveConfig {
        max_ack_pending: 1_000_000,
        ack_wait_s: 7_200,
        ..config(tmp.path(), 1_000_000, 3_600_000)
    };
    let archiver = start(huge, &f.bus);
    // Every message delivered and held by the archiver...
    wait_until("all 50 ticks are delivered", || async {
        consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
            .await
            .is_some_and(|s| s.ack_pending == 50)
    })
    .await;
    // ...and, while no file exists, none acknowledged.
    for _ in 0..5 {
        let state = consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
            .await
            .expect("consumer");
        assert_eq!(state.ack_floor, 0);
        assert!(parquet_files(&tmp.path().join("arch")).is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    archiver.stop().await.expect("clean stop");
    assert_eq!(archived_ticks(tmp.path()), published.ticks);
    wait_ack_floor(&f.bus, "MD_TICKS", "archiver-ticks", 50).await;
    let state = consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
        .await
        .expect("consumer");
    assert_eq!((state.ack_floor, state.ack_pending), (50, 0));
}

async fn garbage_is_counted_and_archiving_goes_on(f: Fixture) {
    let metrics = spreadagg_runtime::telemetry::metrics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut published = Published::default();
    published.ticks(&f.bus, 0..10).await;
    let garbage_seq = publish(
        &f.bus,
        "md.tick.x.y".into(),
        "garbage-1".into(),
        b"not a protobuf".to_vec(),
    )
    .await;
    published.ticks(&f.bus, 10..20).await;
    let archiver = start(config(tmp.path(), 5, 100), &f.bus);
    wait_ack_floor(&f.bus, "MD_TICKS", "archiver-ticks", 21).await;
    archiver.stop().await.expect("clean stop");

    let archived = archived_ticks(tmp.path());
    assert!(!archived.contains_key(&garbage_seq));
    assert_eq!(archived, published.ticks);
    let text = metrics.render();
    let rejected: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("spreadagg_archive_rejected_total{")
                && l.contains("stream=\"ticks\"")
                && l.contains("reason=\"decode\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(rejected >= 1.0, "rejection counted:\n{text}");

    // Kept aside whole, with its subject and the reason, outside the dataset's directories.
    let aside = tmp
        .path()
        .join(format!("arch/_rejected/ticks/{garbage_seq}.json"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&aside).expect("kept aside")).expect("json");
    assert_eq!(record["subject"], "md.tick.x.y");
    assert_eq!(record["stream"], "MD_TICKS");
    assert_eq!(record["stream_seq"], garbage_seq);
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("protobuf")),
        "{record}"
    );
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        record["payload_base64"].as_str().expect("payload"),
    )
    .expect("base64");
    assert_eq!(payload, b"not a protobuf");
}

/// A write slower than `ack_wait` keeps its messages: each held message gets in-progress
/// acknowledgements, so a second archiver on the same durable is handed none of them (without
/// those it would get all 20 after a second), and once the store recovers they are archived
/// once.
async fn a_slow_write_keeps_its_messages_from_other_archivers(f: Fixture) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("arch")).expect("dir");
    let blocker = tmp.path().join("arch/ticks");
    std::fs::write(&blocker, b"in the way").expect("blocker");
    let mut published = Published::default();
    published.ticks(&f.bus, 0..20).await;
    let short = ArchiveConfig {
        ack_wait_s: 1,
        max_ack_pending: 100,
        ..config(tmp.path(), 50, 100)
    };
    let archiver = start(short, &f.bus);
    wait_until("all 20 ticks are held", || async {
        consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
            .await
            .is_some_and(|s| s.ack_pending == 20)
    })
    .await;
    // Another archiver on the same durable, with the same definition.
    let mut rival = f
        .bus
        .durable(&spreadagg_bus::ConsumerSpec {
            stream: "MD_TICKS".into(),
            durable: "archiver-ticks".into(),
            filter: "md.tick.>".into(),
            ack_wait: Duration::from_secs(1),
            max_ack_pending: 100,
            batch: 50,
            start_seq: None,
        })
        .await
        .expect("second consumer");
    let stolen = tokio::time::timeout(Duration::from_secs(4), rival.next()).await;
    assert!(
        stolen.is_err(),
        "a held message was redelivered elsewhere: {:?}",
        stolen.map(|d| d.map(|d| d.stream_seq))
    );
    drop(rival);
    std::fs::remove_file(&blocker).expect("unblock");
    wait_ack_floor(&f.bus, "MD_TICKS", "archiver-ticks", 20).await;
    archiver.stop().await.expect("clean stop");
    assert_eq!(archived_ticks(tmp.path()), published.ticks);
}

macro_rules! both_buses {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::inproc()).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::jetstream().await).await;
                }
            )*
        }
    };
}

both_buses! {
    every_message_is_archived_exactly_once,
    nothing_is_acked_before_its_file_exists,
    garbage_is_counted_and_archiving_goes_on,
    a_slow_write_keeps_its_messages_from_other_archivers,
}

/// A store that refuses writes holds every ack back; once it recovers the same rows are
/// written once and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_holds_acks_until_it_recovers() {
    let f = inproc();
    let tmp = tempfile::tempdir().expect("tempdir");
    // A plain file where the `ticks` directory must go: every tick write fails.
    std::fs::create_dir_all(tmp.path().join("arch")).expect("dir");
    let blocker = tmp.path().join("arch/ticks");
    std::fs::write(&blocker, b"in the way").expect("blocker");
    let mut published = Published::default();
    published.ticks(&f.bus, 0..20).await;
    let archiver = start(config(tmp.path(), 10, 100), &f.bus);
    wait_until("the first flush is being retried", || async {
        consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
            .await
            .is_some_and(|s| s.ack_pending >= 10)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let state = consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
        .await
        .expect("consumer");
    assert_eq!(state.ack_floor, 0, "nothing acked while writes fail");
    let report = archiver.health.report();
    assert_eq!(
        report["components"]["archive.ticks"]["detail"]["state"], "store_failing",
        "{report}"
    );
    assert!(!archiver.health.is_ready());

    std::fs::remove_file(&blocker).expect("unblock");
    wait_ack_floor(&f.bus, "MD_TICKS", "archiver-ticks", 20).await;
    archiver.stop().await.expect("clean stop");
    assert_eq!(archived_ticks(tmp.path()), published.ticks);
}

/// Stopping while the store fails returns within the shutdown budget, acknowledges nothing,
/// and says how many rows were left for redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_a_failing_store_leaves_rows_unacknowledged() {
    let f = inproc();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("arch")).expect("dir");
    std::fs::write(tmp.path().join("arch/ticks"), b"in the way").expect("blocker");
    let mut published = Published::default();
    published.ticks(&f.bus, 0..7).await;
    let slow = ArchiveConfig {
        ack_wait_s: 120,
        ..config(tmp.path(), 100, 60_000)
    };
    let archiver = start(slow, &f.bus);
    wait_until("all 7 ticks are delivered", || async {
        consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
            .await
            .is_some_and(|s| s.ack_pending == 7)
    })
    .await;
    let started = std::time::Instant::now();
    let err = archiver.stop().await.expect_err("rows were left");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, ArchiveError::Unflushed { rows: 7, .. }),
        "{err}"
    );
    let state = consumer_state(&f.bus, "MD_TICKS", "archiver-ticks")
        .await
        .expect("consumer");
    assert_eq!(state.ack_floor, 0);
}

/// A second archiver on the same durable consumers carries on where the first stopped:
/// nothing archived twice, nothing missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_archiver_resumes_after_its_ack_floor() {
    let f = inproc();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut published = Published::default();
    published.trades(&f.bus, 0..30).await;
    let first = start(config(tmp.path(), 8, 100), &f.bus);
    wait_ack_floor(&f.bus, "MD_TRADES", "archiver-trades", 30).await;
    first.stop().await.expect("clean stop");
    published.trades(&f.bus, 30..60).await;
    let second = start(config(tmp.path(), 8, 100), &f.bus);
    wait_ack_floor(&f.bus, "MD_TRADES", "archiver-trades", 60).await;
    second.stop().await.expect("clean stop");
    assert_eq!(archived_trades(tmp.path()), published.trades);
}

/// The lag (stream last sequence minus ack floor) shows messages held but not yet archived,
/// in `/health` and therefore in `spreadagg_archive_lag_messages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_what_is_not_yet_archived() {
    let f = inproc();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut published = Published::default();
    published.spreads(&f.bus, 0..12).await;
    let held = ArchiveConfig {
        max_ack_pending: 1_000,
        ack_wait_s: 7_200,
        ..config(tmp.path(), 1_000, 3_600_000)
    };
    let archiver = start(held, &f.bus);
    let health = archiver.health.clone();
    wait_until("the spreads' lag is measured", || {
        let report = health.report();
        async move { report["components"]["archive.spreads"]["detail"]["lag"] == 12 }
    })
    .await;
    archiver.stop().await.expect("clean stop");
    assert_eq!(archived_spreads(tmp.path()), published.spreads);
}
