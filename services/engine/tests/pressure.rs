//! Memory pressure end to end on the in-process bus, with a fake cgroup directory: the engine
//! runs, the container's working set is made to cross the high-water mark, and the engine
//! lowers its caps at once, says so in `/health`, and raises them back only when calm.

use std::time::{Duration, Instant};

use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_engine::EngineConfig;
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use tokio_util::sync::CancellationToken;

fn write(dir: &std::path::Path, current: u64) {
    std::fs::write(dir.join("memory.max"), "1000000000\n").expect("write");
    // Written whole and renamed, so the engine never reads half a file.
    let tmp = dir.join("memory.current.tmp");
    std::fs::write(&tmp, format!("{current}\n")).expect("write");
    std::fs::rename(&tmp, dir.join("memory.current")).expect("rename");
}

async fn caps(health: &Health) -> (u64, u64, bool) {
    let r = health.report();
    let l = &r["components"]["engine.ticks"]["detail"]["limits"];
    (
        l["points_per_window"].as_u64().unwrap_or(0),
        l["windows"].as_u64().unwrap_or(0),
        l["shedding"].as_bool().unwrap_or(false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_high_water_mark_the_engine_sheds_and_reports_it() {
    let cgroup = tempfile::tempdir().expect("temp dir");
    write(cgroup.path(), 100_000_000);
    let bus = Bus::in_process(&StreamSettings::default());
    let health = Health::new();
    let stop = CancellationToken::new();
    let config = EngineConfig {
        cgroup_root: cgroup.path().to_owned(),
        ..EngineConfig::default()
    };
    let engine = tokio::spawn(spreadagg_engine::run(
        config,
        bus.clone(),
        health.clone(),
        stop.clone(),
    ));
    // Some windows to shed.
    for i in 0..200_u32 {
        for ex in ["okx", "binance"] {
            let t = Tick {
                exchange: ex.into(),
                symbol: format!("S{i}-USDT"),
                bid_px: 1.0,
                ask_px: 1.1,
                recv_ts_ns: i64::from(i) * 1_000,
                ..Tick::default()
            };
            bus.publish(&OutMessage {
                subject: format!("md.tick.{ex}.S{i}-USDT"),
                msg_id: format!("{ex}-{i}"),
                payload: t.encode_to_vec().into(),
            })
            .await
            .expect("published");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while caps(&health).await.1 == 0 {
        assert!(Instant::now() < deadline, "no report: {}", health.report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        caps(&health).await,
        (5_000, 10_000, false),
        "10 % used: full bounds"
    );

    write(cgroup.path(), 900_000_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !caps(&health).await.2 {
        assert!(Instant::now() < deadline, "never shed: {}", health.report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(caps(&health).await, (2_500, 7_500, true), "90 %: one shed");
    // Still at 90 % for longer than the spacing: the lowered caps hold (no second shed).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(caps(&health).await, (2_500, 7_500, true));
    write(cgroup.path(), 960_000_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while caps(&health).await.0 != 1_250 {
        assert!(
            Instant::now() < deadline,
            "no second shed: {}",
            health.report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    engine.await.expect("engine task").expect("engine ran");
}
