//! Warm restart and symbol shards against a real nats-server, each checked against one engine
//! that never stopped (a fresh state replaying MD_TICKS).

mod common;

use std::time::Duration;

use spreadagg_bus::Bus;
use spreadagg_engine::EngineConfig;
use spreadagg_model::Shard;
use spreadagg_model::subjects::STREAM_SIGNALS;
use spreadagg_model::wire::Signal;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

fn config() -> EngineConfig {
    EngineConfig {
        max_ack_pending: 256,
        ack_batch: 64,
        max_in_flight: 64,
        ..EngineConfig::default()
    }
}

/// The engine is killed mid-stream (its task dropped: nothing drains, publishes in flight are
/// lost), ticks go on arriving, and a new engine starts: it rebuilds its state from MD_TICKS,
/// so the bands of its next points equal those of an engine that never stopped, and nothing
/// is lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_continues_as_if_it_never_stopped() {
    let nats = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&nats.url(), &common::settings())
        .await
        .expect("connects");
    let health = Health::new();
    let first = tokio::spawn(spreadagg_engine::run(
        config(),
        bus.clone(),
        health.clone(),
        CancellationToken::new(),
    ));
    let feed = tokio::spawn(common::feed(bus.clone(), 0..3_000, 600));
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.abort();
    let _ = first.await;
    // Down for a while: ticks pile up unprocessed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = Health::new();
    let stop = CancellationToken::new();
    let second = tokio::spawn(spreadagg_engine::run(
        config(),
        bus.clone(),
        health.clone(),
        stop.clone(),
    ));
    feed.await.expect("feed done");
    common::wait_caught_up(&bus, "engine", Duration::from_secs(60)).await;
    // The charts were rebuilt too: each holds every point of its pair.
    common::assert_charts_match(&bus).await;
    let report = health.report();
    stop.cancel();
    second.await.expect("engine task").expect("engine ran");

    let (expected, signals) = common::reference(&bus, &config()).await;
    common::assert_spreads_equal(&bus, &expected).await;
    let stored: Vec<Signal> = common::read_all(&bus, STREAM_SIGNALS).await;
    assert_eq!(stored.len(), signals, "signals stored once each");
    let text = report.to_string();
    assert!(text.contains("\"running\""), "ready after warming: {text}");
    drop(nats);
}

/// Three shards, each with its own durable consumer, over one tick stream: together they
/// store exactly the points and signals one engine makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_together_make_what_one_engine_makes() {
    let nats = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&nats.url(), &common::settings())
        .await
        .expect("connects");
    let stop = CancellationToken::new();
    let mut shards = Vec::new();
    for index in 0..3 {
        let config = EngineConfig {
            shard: Shard { index, count: 3 },
            ..config()
        };
        shards.push(tokio::spawn(spreadagg_engine::run(
            config,
            bus.clone(),
            Health::new(),
            stop.clone(),
        )));
    }
    // New durables begin after the last tick stored when they are made: wait for all three.
    for index in 0..3 {
        let durable = format!("engine-{index}-of-3");
        while bus
            .consumer_state(spreadagg_model::subjects::STREAM_TICKS, &durable)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    common::feed(bus.clone(), 0..3_000, 5_000).await;
    for index in 0..3 {
        common::wait_caught_up(
            &bus,
            &format!("engine-{index}-of-3"),
            Duration::from_secs(60),
        )
        .await;
    }
    // Each chart is answered by the shard that owns its symbol.
    common::assert_charts_match(&bus).await;
    stop.cancel();
    for s in shards {
        s.await.expect("shard task").expect("shard ran");
    }
    let owners: Vec<usize> = common::SYMBOLS
        .iter()
        .map(|s| {
            (0..3)
                .filter(|&i| Shard { index: i, count: 3 }.owns(s))
                .count()
        })
        .collect();
    assert_eq!(owners, [1, 1, 1, 1], "each symbol has one shard");
    let used: std::collections::BTreeSet<u32> = common::SYMBOLS
        .iter()
        .filter_map(|s| (0..3).find(|&i| Shard { index: i, count: 3 }.owns(s)))
        .collect();
    assert!(used.len() >= 2, "the symbols are split: {used:?}");
    let (expected, signals) = common::reference(&bus, &config()).await;
    common::assert_spreads_equal(&bus, &expected).await;
    let stored: Vec<Signal> = common::read_all(&bus, STREAM_SIGNALS).await;
    assert_eq!(stored.len(), signals);
    common::assert_signals_match_definition(&bus).await;
    drop(nats);
}
