//! Exactly-once effect against a real nats-server: NATS is killed mid-stream (longer than the
//! ticks' ack wait, so JetStream redelivers ticks the engine already applied) and started
//! again; afterwards MD_SPREADS must hold exactly the points a fresh engine makes from
//! MD_TICKS: none lost, none twice, and bands that saw every value once.

mod common;

use std::time::Duration;

use spreadagg_bus::Bus;
use spreadagg_engine::EngineConfig;
use spreadagg_model::subjects::STREAM_SIGNALS;
use spreadagg_model::wire::Signal;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_no_point_and_doubles_none() {
    let mut nats = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&nats.url(), &common::settings())
        .await
        .expect("connects");
    let config = EngineConfig {
        // Shorter than the outage: ticks the engine holds are redelivered after it.
        ack_wait_s: 2,
        max_ack_pending: 256,
        ack_batch: 64,
        max_in_flight: 64,
        ..EngineConfig::default()
    };
    let stop = CancellationToken::new();
    let engine = tokio::spawn(spreadagg_engine::run(
        config.clone(),
        bus.clone(),
        Health::new(),
        stop.clone(),
    ));
    let total: u64 = 3_000;
    let feed = tokio::spawn(common::feed(bus.clone(), 0..total, 500));

    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.kill();
    // Longer than the ack wait, so the engine's unacknowledged ticks are redelivered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.restart().expect("nats-server restarts");
    feed.await.expect("feed done");

    let last = bus
        .stream_state(spreadagg_model::subjects::STREAM_TICKS)
        .await
        .expect("ticks")
        .last_seq;
    assert_eq!(last, total, "every tick stored once");
    common::wait_caught_up(&bus, "engine", Duration::from_secs(60)).await;
    stop.cancel();
    engine.await.expect("engine task").expect("engine ran");

    let (expected, signals) = common::reference(&bus, &config).await;
    assert!(expected.len() > 5_000, "{} points", expected.len());
    common::assert_spreads_equal(&bus, &expected).await;
    let stored: Vec<Signal> = common::read_all(&bus, STREAM_SIGNALS).await;
    assert!(signals > 0, "the stream raises signals");
    assert_eq!(stored.len(), signals, "signals stored once each");
    // And those signals are the definition's, replayed independently from MD_TICKS.
    common::assert_signals_match_definition(&bus).await;
    drop(nats);
}
