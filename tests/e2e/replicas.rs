//! Two active-active replicas of one ingestor publish into one stream: each exchange update is
//! stored once, because both derive the same `Nats-Msg-Id` from the exchange's own ids and
//! JetStream's duplicate window drops the second copy.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message as _;
use spreadagg_bus::{Bus, StreamSettings};
use spreadagg_model::wire::{Tick, Trade};
use spreadagg_testkit::NatsServer;

use crate::support::{self, Proc, eventually, http_get};

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_store_each_update_once() {
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        "[simulate]\nexchanges = [\"okx\"]\nupdate_interval_ms = 20\n",
    )
    .expect("config");
    let mut sim = Proc::spawn(
        "simulate",
        dir.path(),
        &["simulate", "--config", config.to_str().expect("utf-8")],
    );
    let endpoints = sim.simulator_endpoints(&["okx"]).await;
    let (ws, rest) = &endpoints["okx"];
    let filters = ["--symbols", "BTC-USDT,ETH-USDT,SOL-USDT"];
    let mut replicas = [
        support::ingest(dir.path(), "okx", (ws, rest), &url, &filters),
        support::ingest(dir.path(), "okx", (ws, rest), &url, &filters),
    ];
    let mut admins = Vec::new();
    for r in &mut replicas {
        admins.push(r.admin().await);
    }
    for admin in &admins {
        eventually("replica ready", Duration::from_secs(30), || async {
            http_get(admin, "/readyz").await.0 == 200
        })
        .await;
    }
    let bus = Bus::connect(&url, &StreamSettings::default())
        .await
        .expect("bus");
    eventually("ticks stored", Duration::from_secs(30), || async {
        bus.stream_state("MD_TICKS")
            .await
            .is_ok_and(|s| s.messages >= 500)
    })
    .await;
    // Ticks handed to the bus by both replicas together, just before they stop.
    let mut published = 0.0;
    for (r, admin) in replicas.iter_mut().zip(&admins) {
        let (_, metrics) = http_get(admin, "/metrics").await;
        published += counter(
            &metrics,
            "spreadagg_ingest_events_total{exchange=\"okx\",kind=\"tick\"}",
        );
        let (status, _) = r.terminate(Duration::from_secs(5)).await;
        assert!(status.success(), "{} exit {status}", r.name);
    }
    sim.terminate(Duration::from_secs(5)).await;

    let mut seen = HashSet::new();
    let ticks = bus.stream_state("MD_TICKS").await.expect("state");
    for seq in ticks.first_seq..=ticks.last_seq {
        let m = bus
            .get("MD_TICKS", seq)
            .await
            .expect("get")
            .expect("stored");
        let t = Tick::decode(m.payload).expect("a Tick");
        assert!(
            seen.insert((t.symbol.clone(), t.seq, t.exchange_ts_ns)),
            "update {} of {} stored twice",
            t.seq,
            t.symbol
        );
    }
    let mut trade_ids = HashSet::new();
    let trades = bus.stream_state("MD_TRADES").await.expect("state");
    for seq in trades.first_seq..=trades.last_seq {
        let m = bus
            .get("MD_TRADES", seq)
            .await
            .expect("get")
            .expect("stored");
        let t = Trade::decode(m.payload).expect("a Trade");
        assert!(
            trade_ids.insert((t.symbol.clone(), t.trade_id.clone())),
            "trade {} of {} stored twice",
            t.trade_id,
            t.symbol
        );
    }
    assert!(seen.len() >= 500 && !trade_ids.is_empty());
    // Both replicas published (about) every update; the stream kept each once.
    let stored = seen.len() as f64;
    assert!(
        stored < published * 0.8,
        "{stored} ticks stored of {published} published by two replicas: the copies were not dropped"
    );
}
