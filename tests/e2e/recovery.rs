//! Recovery from a NATS restart with no manual step: the broker is killed (SIGKILL) under load
//! and comes back on the same address with the same store; every role reconnects, spreads
//! reach the WebSocket client again, and every role reports ready again.

use std::time::{Duration, Instant};

use spreadagg_testkit::NatsServer;

use crate::support::{self, Proc, eventually, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_recovers_from_a_nats_restart() {
    let mut nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");

    let mut sim = Proc::spawn("simulate", dir.path(), &["simulate"]);
    let endpoints = sim.simulator_endpoints(&["binance", "okx"]).await;
    let mut roles = vec![
        Proc::spawn("engine", dir.path(), &["engine", "--nats-url", &url]),
        Proc::spawn(
            "gateway",
            dir.path(),
            &["gateway", "--nats-url", &url, "--listen", "127.0.0.1:0"],
        ),
    ];
    for ex in ["binance", "okx"] {
        let (ws, rest) = &endpoints[ex];
        roles.push(support::ingest(
            dir.path(),
            ex,
            (ws, rest),
            &url,
            &["--symbols", "BTC-USDT"],
        ));
    }
    let gateway = roles[1].announced("listening gateway ").await;
    let mut admins = Vec::new();
    for r in &mut roles {
        admins.push((r.name.clone(), r.admin().await));
    }
    for (name, admin) in &admins {
        eventually(
            &format!("{name} ready"),
            Duration::from_secs(30),
            || async { http_get(admin, "/readyz").await.0 == 200 },
        )
        .await;
    }

    let mut ws = support::subscribe(&gateway, r#"{"op":"subscribe","symbol":"BTC-USDT"}"#).await;
    support::next_spread(&mut ws, Duration::from_secs(30)).await;

    tokio::task::block_in_place(|| nats.restart()).expect("nats-server restarts");
    let restarted_at = Instant::now();
    let restarted_ns = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    )
    .expect("i64");

    // Points made after the restart reach the client: ingest -> engine -> gateway all resumed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no spread made after the NATS restart reached the client"
        );
        let point = support::next_spread(&mut ws, left).await;
        if point["ts_ns"].as_i64().is_some_and(|ts| ts > restarted_ns) {
            eprintln!(
                "first spread made after the restart reached the client {:?} after it",
                Instant::now() - restarted_at
            );
            break;
        }
    }
    for (name, admin) in &admins {
        eventually(
            &format!("{name} ready after the restart"),
            Duration::from_secs(30),
            || async { http_get(admin, "/readyz").await.0 == 200 },
        )
        .await;
    }
    for r in &mut roles {
        let (status, _) = r.terminate(Duration::from_secs(5)).await;
        assert!(
            status.success(),
            "{} exit {status}; log:\n{}",
            r.name,
            r.log_text()
        );
    }
    sim.terminate(Duration::from_secs(5)).await;
}
