//! `verify` and `replay` against a real archive: ticks and trades archived from a real
//! `nats-server`, verified complete against the streams' bounds (a poison message accounted
//! for), a removed file found as exactly its missing sequences, a copied file as duplicates;
//! then replayed into a fresh `nats-server`, where the replayed messages equal the archived
//! ones, in time order, and the original pacing is kept at a given speed.

mod common;

use common::files_under;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use spreadagg_archive::replay::{self, ReplaySpec};
use spreadagg_archive::store::{self, ArchiveStore, StoreOptions};
use spreadagg_archive::verify::{self, StreamBounds, Window};
use spreadagg_archive::{ArchiveConfig, StreamKind, read, run};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_model::wire::{Side, Tick, Trade};
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

/// 2025-01-02T06:59:00Z.
const START_NS: i64 = 1_735_801_140_000_000_000;
const TICKS: usize = 600;
const TRADES: usize = 90;

fn tick(i: usize) -> Tick {
    Tick {
        exchange: ["binance", "okx", "kraken"][i % 3].into(),
        symbol: ["BTC-USDT", "ETH-USDT"][i % 2].into(),
        bid_px: 100.0 + i as f64,
        bid_qty: 1.0,
        ask_px: 100.5 + i as f64,
        ask_qty: 1.0,
        book_spread_pct: 0.5,
        exchange_ts_ns: 0,
        // 5 ms apart, so 600 ticks span 3 s, crossing 07:00 is not needed here.
        recv_ts_ns: START_NS + i64::try_from(i).expect("small") * 5_000_000,
        seq: i as u64,
    }
}

fn trade(i: usize) -> Trade {
    Trade {
        exchange: ["okx", "bybit"][i % 2].into(),
        symbol: "BTC-USDT".into(),
        price: 100.0 + i as f64,
        qty: 0.1,
        side: if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        } as i32,
        trade_id: format!("t{i}"),
        exchange_ts_ns: START_NS,
        recv_ts_ns: START_NS + 2_500_000 + i64::try_from(i).expect("small") * 30_000_000,
    }
}

async fn publish(bus: &Bus, subject: String, id: String, payload: Vec<u8>) -> u64 {
    bus.publish(&OutMessage {
        subject,
        msg_id: id,
        payload: Bytes::from(payload),
    })
    .await
    .expect("published")
    .stream_seq
}

async fn bounds(bus: &Bus) -> BTreeMap<StreamKind, StreamBounds> {
    let mut out = BTreeMap::new();
    for kind in StreamKind::ALL {
        let s = bus.stream_state(kind.stream()).await.expect("state");
        out.insert(
            kind,
            StreamBounds {
                first_seq: s.first_seq,
                last_seq: s.last_seq,
            },
        );
    }
    out
}

/// Archives TICKS ticks (plus one poison message) and TRADES trades into `dir`.
async fn archive(dir: &std::path::Path) -> (NatsServer, Bus) {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .expect("connects");
    for i in 0..TICKS {
        let t = tick(i);
        let subject = format!("md.tick.{}.{}", t.exchange, t.symbol);
        publish(&bus, subject, format!("t{i}"), t.encode_to_vec()).await;
        if i == 100 {
            publish(
                &bus,
                "md.tick.okx.X".into(),
                "poison".into(),
                b"\xff\xff".to_vec(),
            )
            .await;
        }
    }
    for i in 0..TRADES {
        let t = trade(i);
        let subject = format!("md.trade.{}.{}", t.exchange, t.symbol);
        publish(&bus, subject, format!("x{i}"), t.encode_to_vec()).await;
    }
    let config = ArchiveConfig {
        store: dir.to_str().expect("utf8").into(),
        flush_rows: 64,
        flush_interval_ms: 100,
        max_ack_pending: 128,
        // The duplicate and gap cases below move flush files by hand.
        compaction: false,
        ..ArchiveConfig::default()
    };
    let (stop, health) = (CancellationToken::new(), Health::new());
    let task = tokio::spawn(run(config, bus.clone(), health, stop.clone()));
    for _ in 0..300 {
        let ticks = bus.consumer_state("MD_TICKS", "archiver-ticks").await;
        let trades = bus.consumer_state("MD_TRADES", "archiver-trades").await;
        if ticks.is_ok_and(|s| s.ack_floor > TICKS as u64)
            && trades.is_ok_and(|s| s.ack_floor >= TRADES as u64)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("joins").expect("clean stop");
    (nats, bus)
}

fn local(dir: &std::path::Path) -> ArchiveStore {
    store::open(dir.to_str().expect("utf8"), "", StoreOptions::default()).expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_complete_archives_gaps_and_duplicates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_nats, bus) = archive(tmp.path()).await;
    let store = local(tmp.path());
    let b = bounds(&bus).await;

    let report = verify::verify(&store, None, &b).await.expect("verifies");
    let ticks = &report.streams["ticks"];
    assert!(
        report.complete,
        "{}",
        serde_json::to_string_pretty(&report).expect("json")
    );
    assert!(report.checked_against_nats);
    assert_eq!((ticks.distinct, ticks.rejected), (TICKS as u64, 1));
    assert_eq!(ticks.gaps.len(), 0);
    assert_eq!(report.streams["trades"].distinct, TRADES as u64);
    assert_eq!(ticks.rows_by_partition.values().sum::<u64>(), TICKS as u64);

    // A copied file: duplicates, still complete.
    let files = files_under(&tmp.path().join("ticks"));
    let copy_of = files[files.len() / 2].clone();
    let copy = copy_of.with_file_name("ticks-copy.parquet");
    std::fs::copy(&copy_of, &copy).expect("copy");
    let copied_rows = read::ticks(Bytes::from(std::fs::read(&copy).expect("read")), "x")
        .expect("rows")
        .len() as u64;
    let report = verify::verify(&store, None, &b).await.expect("verifies");
    assert!(report.complete);
    assert_eq!(report.streams["ticks"].duplicates, copied_rows);
    std::fs::remove_file(&copy).expect("rm");

    // A removed file: exactly its sequences are missing, and the stream is incomplete.
    let removed = files[files.len() / 2].clone();
    let removed_seqs: Vec<u64> =
        read::ticks(Bytes::from(std::fs::read(&removed).expect("read")), "x")
            .expect("rows")
            .iter()
            .map(|r| r.stream_seq)
            .collect();
    std::fs::remove_file(&removed).expect("rm");
    let report = verify::verify(&store, None, &b).await.expect("verifies");
    let ticks = &report.streams["ticks"];
    assert!(!report.complete && !ticks.complete);
    assert_eq!(
        ticks.missing + ticks.unarchived_head + ticks.unarchived_tail,
        removed_seqs.len() as u64,
        "{}",
        serde_json::to_string_pretty(ticks).expect("json")
    );
    for seq in &removed_seqs {
        let in_gap = ticks.gaps.iter().any(|[a, z]| (a..=z).contains(&seq));
        let at_end = *seq > ticks.last_seq.unwrap_or(0) || *seq < ticks.first_seq.unwrap_or(0);
        assert!(in_gap || at_end, "{seq} reported missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_the_archive_back_in_time_order_and_pace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_nats, _bus) = archive(tmp.path()).await;
    let store = local(tmp.path());

    // What the archive holds, by content, in time order.
    let mut archived: Vec<(i64, Vec<u8>)> = Vec::new();
    for path in files_under(&tmp.path().join("ticks")) {
        let exchange = path
            .to_str()
            .and_then(|p| p.split('/').find_map(|s| s.strip_prefix("exchange=")))
            .expect("exchange")
            .to_owned();
        for r in
            read::ticks(Bytes::from(std::fs::read(&path).expect("read")), &exchange).expect("rows")
        {
            archived.push((r.msg.recv_ts_ns, r.msg.encode_to_vec()));
        }
    }
    archived.sort();
    assert_eq!(archived.len(), TICKS);

    let fresh = NatsServer::start().expect("nats-server");
    let target = Bus::connect(&fresh.url(), &StreamSettings::default())
        .await
        .expect("connects");
    let spec = ReplaySpec {
        window: Window::parse(Some("2025-01-02"), Some("2025-01-02"))
            .expect("parses")
            .expect("some"),
        speed: 2.0,
        subject_prefix: "md".into(),
    };
    let started = std::time::Instant::now();
    let report = replay::replay(&store, &target, &spec, &CancellationToken::new())
        .await
        .expect("replays");
    let elapsed = started.elapsed();
    assert_eq!((report.ticks, report.trades), (TICKS as u64, TRADES as u64));
    // The ticks span 2.995 s of market time; at speed 2 that is at least 1.49 s of replay.
    assert!(
        elapsed >= Duration::from_millis(1_450),
        "paced: {elapsed:?} for {report:?}"
    );

    let state = target.stream_state("MD_TICKS").await.expect("state");
    let mut replayed = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        let m = target
            .get("MD_TICKS", seq)
            .await
            .expect("get")
            .expect("stored");
        let t = Tick::decode(m.payload.clone()).expect("tick");
        assert_eq!(m.subject, format!("md.tick.{}.{}", t.exchange, t.symbol));
        replayed.push((t.recv_ts_ns, m.payload.to_vec()));
    }
    assert!(
        replayed.windows(2).all(|w| w[0].0 <= w[1].0),
        "published in time order"
    );
    replayed.sort();
    assert_eq!(
        replayed, archived,
        "the replayed ticks are the archived ones"
    );
    let trades = target.stream_state("MD_TRADES").await.expect("state");
    assert_eq!(trades.last_seq - trades.first_seq + 1, TRADES as u64);

    // Again, as fast as possible: the duplicate window stores nothing twice.
    let again = ReplaySpec { speed: 0.0, ..spec };
    replay::replay(&store, &target, &again, &CancellationToken::new())
        .await
        .expect("replays");
    let state = target.stream_state("MD_TICKS").await.expect("state");
    assert_eq!(state.last_seq - state.first_seq + 1, TICKS as u64);
}
