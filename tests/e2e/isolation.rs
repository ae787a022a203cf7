//! Fault isolation and recovery: one exchange going away changes nothing for another, and its
//! ingestor reconnects by itself (backoff with jitter) when the exchange comes back.
//!
//! Each exchange is served by its own simulator process, so one can be killed alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spreadagg_bus::{Bus, StreamSettings};
use spreadagg_testkit::NatsServer;

use crate::support::{self, Proc, eventually, http_get};

/// Counts ticks of one exchange as they are stored, from a live subscription.
struct TickCounter {
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TickCounter {
    async fn start(bus: &Bus, exchange: &str) -> Self {
        let mut live = bus
            .live("MD_TICKS", &format!("md.tick.{exchange}.>"))
            .await
            .expect("live");
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            while live.next().await.is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self { count, task }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for TickCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn simulator(dir: &std::path::Path, exchange: &str, port: Option<u16>) -> Proc {
    let config = dir.join(format!("{exchange}.toml"));
    let ports = port
        .map(|p| format!("ports = {{ {exchange} = {p} }}\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!("[simulate]\nexchanges = [\"{exchange}\"]\nupdate_interval_ms = 50\n{ports}"),
    )
    .expect("config");
    Proc::spawn(
        &format!("simulate-{exchange}"),
        dir,
        &["simulate", "--config", config.to_str().expect("utf-8")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exchange_failing_leaves_the_other_alone_and_recovers() {
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");

    let mut sim_binance = simulator(dir.path(), "binance", None);
    let mut sim_okx = simulator(dir.path(), "okx", None);
    let binance = sim_binance
        .simulator_endpoints(&["binance"])
        .await
        .remove("binance")
        .expect("binance");
    let okx = sim_okx
        .simulator_endpoints(&["okx"])
        .await
        .remove("okx")
        .expect("okx");
    let okx_port: u16 = okx
        .1
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("okx port");

    let mut ingest: Vec<Proc> = [("binance", &binance), ("okx", &okx)]
        .into_iter()
        .map(|(ex, (ws, rest))| {
            support::ingest(dir.path(), ex, (ws, rest), &url, &["--symbols", "BTC-USDT"])
        })
        .collect();
    let okx_admin = ingest[1].admin().await;
    eventually("okx ingestor ready", Duration::from_secs(30), || async {
        http_get(&okx_admin, "/readyz").await.0 == 200
    })
    .await;
    let bus = Bus::connect(&url, &StreamSettings::default())
        .await
        .expect("bus");
    let binance_ticks = TickCounter::start(&bus, "binance").await;
    let okx_ticks = TickCounter::start(&bus, "okx").await;
    eventually("ticks from both", Duration::from_secs(20), || async {
        binance_ticks.get() > 0 && okx_ticks.get() > 0
    })
    .await;

    // The OKX "exchange" dies.
    sim_okx.terminate(Duration::from_secs(5)).await;
    eventually(
        "okx ingestor not ready",
        Duration::from_secs(10),
        || async { http_get(&okx_admin, "/readyz").await.0 == 503 },
    )
    .await;
    let (_, health) = http_get(&okx_admin, "/health").await;
    assert!(
        health.contains("backoff") || health.contains("waiting") || health.contains("subscribing"),
        "{health}"
    );

    // Binance goes on: its tick count keeps growing while OKX is down.
    // Let events already read off the socket reach the stream and the counter.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let okx_before = okx_ticks.get();
    let binance_before = binance_ticks.get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        binance_ticks.get() > binance_before + 10,
        "binance stalled while okx was down"
    );
    assert_eq!(okx_ticks.get(), okx_before, "okx ticks while okx was down");

    // OKX comes back on the same address; its ingestor reconnects without help.
    let _sim_okx = simulator(dir.path(), "okx", Some(okx_port));
    eventually(
        "okx ingestor ready again",
        Duration::from_secs(40),
        || async { http_get(&okx_admin, "/readyz").await.0 == 200 },
    )
    .await;
    eventually("okx ticks again", Duration::from_secs(20), || async {
        okx_ticks.get() > okx_before + 10
    })
    .await;

    for p in &mut ingest {
        let (status, _) = p.terminate(Duration::from_secs(5)).await;
        assert!(status.success(), "{} exit {status}", p.name);
    }
    sim_binance.terminate(Duration::from_secs(5)).await;
}
