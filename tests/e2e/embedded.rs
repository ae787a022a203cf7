//! `spreadagg all` on the embedded default: in-process bus, local archive under `./data`,
//! built-in simulator. Only the ports are overridden (to free ones) so tests can run side by
//! side; everything else is what a newcomer gets with no flags.

use std::time::Duration;

use crate::support::{self, Proc, eventually, http, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_process_serves_spreads_and_drains_on_post_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all = Proc::spawn("all", dir.path(), &["all", "--listen", "127.0.0.1:0"]);
    let gateway = all.announced("listening gateway ").await;
    let admin = all.admin().await;
    eventually("ready", Duration::from_secs(30), || async {
        http_get(&admin, "/readyz").await.0 == 200
    })
    .await;

    let mut ws = support::subscribe(
        &gateway,
        r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","binance"]}"#,
    )
    .await;
    for _ in 0..5 {
        let v = support::next_spread(&mut ws, Duration::from_secs(60)).await;
        assert_eq!(
            (v["exchange_a"].as_str(), v["exchange_b"].as_str()),
            (Some("binance"), Some("okx"))
        );
    }

    // Readiness may dip for a moment under a loaded machine (a connection recycled after a
    // slow subscribe); what is checked is that the whole system is ready, with this detail.
    let mut health = serde_json::Value::Null;
    for _ in 0..60 {
        let (status, body) = http_get(&admin, "/health").await;
        assert_eq!(status, 200);
        health = serde_json::from_str(&body).expect("health json");
        if health["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(health["status"], "ready", "{health}");
    assert!(
        health["memory"]["rss_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    for component in [
        "ingest.binance.conn0",
        "ingest.okx.conn0",
        "ingest.htx.conn0",
        "ingest.kucoin.conn0",
        "ingest.mexc.conn0",
        "engine.ticks",
    ] {
        assert_eq!(
            health["components"][component]["ready"], true,
            "{component} in {health}"
        );
    }
    let (_, metrics) = http_get(&admin, "/metrics").await;
    assert!(
        metrics.contains("spreadagg_engine_ticks_total"),
        "metrics:\n{metrics}"
    );
    assert!(metrics.contains("spreadagg_ingest_events_total"));

    // The preStop hook: drain, report not ready, exit cleanly.
    let (status, _) = http(&admin, "POST", "/drain").await;
    assert_eq!(status, 202);
    let status = all.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit {status} after /drain; log:\n{}",
        all.log_text()
    );
    let ticks = dir.path().join("data/ticks");
    let files = walk(&ticks);
    for ex in spreadagg_model::ExchangeId::ALL.map(|e| e.as_str()) {
        assert!(
            files
                .iter()
                .any(|p| p.to_string_lossy().contains(&format!("exchange={ex}"))),
            "no {ex} archive under ./data: {files:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
