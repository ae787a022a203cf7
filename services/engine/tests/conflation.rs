//! Output conflation on the in-process bus: a burst of points on one pair is published as its
//! first point and then, an interval later, its latest; every point is still in the chart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_engine::EngineConfig;
use spreadagg_model::subjects::STREAM_SPREADS;
use spreadagg_model::wire::{ChartSnapshot, Spread, Tick};
use spreadagg_runtime::Health;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_pair_publishes_its_first_and_its_latest_point() {
    let bus = Bus::in_process(&StreamSettings::default());
    let stop = CancellationToken::new();
    let config = EngineConfig {
        publish_min_interval_ms: 500,
        ..EngineConfig::default()
    };
    let engine = tokio::spawn(spreadagg_engine::run(
        config,
        bus.clone(),
        Health::new(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = spreadagg_model::time::now_ns();
    for i in 0..100_i64 {
        let (ex, bid) = if i % 2 == 0 {
            ("okx", 100.0)
        } else {
            (
                "binance",
                100.0 + 0.01 * f64::from(i32::try_from(i).unwrap_or(0)),
            )
        };
        let t = Tick {
            exchange: ex.into(),
            symbol: "BTC-USDT".into(),
            bid_px: bid,
            bid_qty: 1.0,
            ask_px: bid + 0.5,
            ask_qty: 1.0,
            recv_ts_ns: now + i,
            ..Tick::default()
        };
        bus.publish(&OutMessage {
            subject: format!("md.tick.{ex}.BTC-USDT"),
            msg_id: format!("t{i}"),
            payload: t.encode_to_vec().into(),
        })
        .await
        .expect("stored");
    }
    // Within the interval only the leading point is out; after it, the latest follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stored = loop {
        let s = bus.stream_state(STREAM_SPREADS).await.expect("spreads");
        if s.messages >= 2 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = bus.stream_state(STREAM_SPREADS).await.expect("spreads");
    assert_eq!(
        (stored.messages, after.messages),
        (2, 2),
        "99 points, two published"
    );
    let last = bus
        .get(STREAM_SPREADS, after.last_seq)
        .await
        .expect("get")
        .expect("stored");
    let last = Spread::decode(last.payload).expect("spread");
    assert_eq!(last.ts_ns, now + 99, "the latest point went out");
    let chart = bus
        .request(
            "md.chart.BTC-USDT.binance.okx",
            Bytes::new(),
            Duration::from_secs(2),
        )
        .await
        .expect("answered");
    let chart = ChartSnapshot::decode(chart).expect("snapshot");
    assert_eq!(chart.ts_ns.len(), 99, "every point is in the window");
    stop.cancel();
    engine.await.expect("engine task").expect("engine ran");
}
