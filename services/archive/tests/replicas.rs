//! Two archiver replicas on the same durable consumers and the same store (a real
//! `nats-server`): every message is archived once, by one of them, in a file named for the
//! replica that wrote it; each replica merges only its own files; `verify` finds the stream
//! complete with no duplicates.

mod common;

use common::files_under;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use spreadagg_archive::partition::replica_of;
use spreadagg_archive::store::{self, StoreOptions};
use spreadagg_archive::{ArchiveConfig, read, run, verify};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const TICKS: usize = 3_000;

/// The previous hour (closed, and recent enough to be adopted after a restart).
fn start_ns() -> i64 {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("in range");
    now - now.rem_euclid(HOUR_NS) - HOUR_NS
}

fn name(p: &std::path::Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .expect("utf8")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_consumers_and_never_write_a_message_twice() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .expect("connects");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf8").to_owned();
    let replica = |id: &str| ArchiveConfig {
        store: dir.clone(),
        replica_id: id.into(),
        flush_rows: 100,
        flush_interval_ms: 100,
        max_ack_pending: 200,
        file_age_s: 1,
        hour_grace_s: 0,
        compaction_check_s: 1,
        ..ArchiveConfig::default()
    };
    let stop = CancellationToken::new();
    let a = tokio::spawn(run(replica("a"), bus.clone(), Health::new(), stop.clone()));
    let b = tokio::spawn(run(replica("b"), bus.clone(), Health::new(), stop.clone()));

    let start = start_ns();
    for i in 0..TICKS {
        let t = Tick {
            exchange: ["okx", "binance"][i % 2].into(),
            symbol: "BTC-USDT".into(),
            bid_px: i as f64,
            ask_px: i as f64 + 1.0,
            recv_ts_ns: start + i64::try_from(i).expect("small") * 1_000_000,
            ..Tick::default()
        };
        bus.publish(&OutMessage {
            subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
            msg_id: format!("t{i}"),
            payload: Bytes::from(t.encode_to_vec()),
        })
        .await
        .expect("published");
    }
    let mut merged = false;
    for _ in 0..300 {
        let acked = bus
            .consumer_state("MD_TICKS", "archiver-ticks")
            .await
            .is_ok_and(|s| s.ack_floor >= TICKS as u64);
        let all = files_under(&tmp.path().join("ticks"));
        // Merged as far as it goes: no replica has two flush files left in a partition (a
        // replica's lone file in a partition stays as it is).
        let mut flushes: BTreeMap<(std::path::PathBuf, String), usize> = BTreeMap::new();
        for p in &all {
            let n = name(p);
            if !n.ends_with(".compacted.parquet") {
                let dir = p.parent().expect("dir").to_path_buf();
                *flushes.entry((dir, replica_of(&n).to_owned())).or_default() += 1;
            }
        }
        merged = acked
            && all.iter().any(|p| name(p).ends_with(".compacted.parquet"))
            && flushes.values().all(|n| *n <= 1);
        if merged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    a.await.expect("joins").expect("a stops cleanly");
    b.await.expect("joins").expect("b stops cleanly");
    assert!(
        merged,
        "not merged: {:?}",
        files_under(&tmp.path().join("ticks"))
    );

    // Each replica wrote a share, and merged only its own files.
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    for path in files_under(&tmp.path().join("ticks")) {
        let n = name(&path);
        let owner = replica_of(&n).to_owned();
        assert!(owner == "a" || owner == "b", "{n} names its replica");
        if n.ends_with(".compacted.parquet") {
            let footer =
                read::metadata(Bytes::from(std::fs::read(&path).expect("read"))).expect("footer");
            let sources = footer
                .iter()
                .find(|(k, _)| k == "spreadagg.compacted_from")
                .map(|(_, v)| v.clone())
                .expect("sources listed");
            assert!(
                sources.split(',').all(|s| replica_of(s) == owner),
                "{n} merged another replica's files: {sources}"
            );
        }
        *by_replica.entry(owner).or_default() += 1;
    }
    assert_eq!(
        by_replica.len(),
        2,
        "both replicas archived: {by_replica:?}"
    );

    let store = store::open(&dir, "", StoreOptions::default()).expect("opens");
    let report = verify::verify(&store, None, &BTreeMap::new())
        .await
        .expect("verifies");
    let ticks = &report.streams["ticks"];
    assert!(report.complete);
    assert_eq!((ticks.distinct, ticks.duplicates), (TICKS as u64, 0));
}
