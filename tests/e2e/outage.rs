//! A NATS outage of a minute under load, against a real nats-server killed and started again
//! on the same store: the ingestor keeps reading its feed, conflates quotes and buffers trades,
//! and once NATS is back every trade it received meanwhile and the latest quote of every
//! symbol reach the stream, nothing dropped uncounted.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use spreadagg_bus::{Bus, StreamSettings};
use spreadagg_model::wire::{Tick, Trade};
use spreadagg_testkit::NatsServer;

use crate::support::{self, Proc, eventually, http_get};

const SYMBOLS: [&str; 2] = ["BTC-USDT", "ETH-USDT"];
const OUTAGE: Duration = Duration::from_secs(60);

fn now_ns() -> i64 {
    spreadagg_model::time::now_ns()
}

async fn all(bus: &Bus, stream: &str) -> Vec<Vec<u8>> {
    let state = bus.stream_state(stream).await.expect("state");
    let mut out = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        if let Some(m) = bus.get(stream, seq).await.expect("get") {
            out.push(m.payload.to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_nats_loses_no_trade_and_keeps_the_latest_quotes() {
    let mut nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, "[simulate]\nexchanges = [\"binance\"]\n").expect("config");
    let mut sim = Proc::spawn(
        "simulate",
        dir.path(),
        &["simulate", "--config", config.to_str().expect("utf-8")],
    );
    let endpoints = sim.simulator_endpoints(&["binance"]).await;
    let (ws, rest) = &endpoints["binance"];
    let mut ingest = support::ingest(
        dir.path(),
        "binance",
        (ws, rest),
        &url,
        &["--symbols", &SYMBOLS.join(",")],
    );
    let admin = ingest.admin().await;
    eventually("ingestor ready", Duration::from_secs(30), || async {
        http_get(&admin, "/readyz").await.0 == 200
    })
    .await;
    {
        let bus = Bus::connect(&url, &StreamSettings::default())
            .await
            .expect("bus");
        eventually("trades flowing", Duration::from_secs(30), || async {
            bus.stream_state("MD_TRADES")
                .await
                .is_ok_and(|s| s.messages >= 10)
        })
        .await;
    }

    let down_ns = now_ns();
    nats.kill();
    tokio::time::sleep(OUTAGE).await;
    let up_ns = now_ns();
    tokio::task::block_in_place(|| nats.restart()).expect("nats-server comes back");

    let bus = Bus::connect(&url, &StreamSettings::default())
        .await
        .expect("bus");
    // Once back, ticks received after the restart appear: the backlog went out before them.
    eventually("publishing again", Duration::from_secs(60), || async {
        let Ok(s) = bus.stream_state("MD_TICKS").await else {
            return false;
        };
        match bus.get("MD_TICKS", s.last_seq).await {
            Ok(Some(m)) => Tick::decode(m.payload).is_ok_and(|t| t.recv_ts_ns > up_ns),
            _ => false,
        }
    })
    .await;
    let (_, metrics) = http_get(&admin, "/metrics").await;
    let (status, _) = ingest.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "ingest exit {status}");
    sim.terminate(Duration::from_secs(5)).await;

    // Every trade: per symbol, the simulator's trade ids are consecutive; the stream must hold
    // an unbroken run of them across the outage.
    let mut trades: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut during_outage = 0;
    for payload in all(&bus, "MD_TRADES").await {
        let t = Trade::decode(payload.as_slice()).expect("a Trade");
        if t.recv_ts_ns > down_ns && t.recv_ts_ns < up_ns {
            during_outage += 1;
        }
        trades
            .entry(t.symbol.clone())
            .or_default()
            .push(t.trade_id.parse().expect("numeric trade id"));
    }
    assert!(
        during_outage > 20,
        "only {during_outage} trades were received during the outage"
    );
    for (symbol, ids) in &mut trades {
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "{symbol}: a trade stored twice");
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        assert_eq!(
            ids.len() as u64,
            last - first + 1,
            "{symbol}: trades missing between {first} and {last}"
        );
    }
    // The latest quote of every symbol reached the stream once NATS was back: the conflator
    // held it (a newer one may have replaced it meanwhile), so every symbol has a stored
    // quote received within seconds of the restart, and quotes from the outage were stored.
    let window = 5_000_000_000;
    let mut near_restart: BTreeMap<String, usize> = BTreeMap::new();
    let mut outage_quotes = 0;
    for payload in all(&bus, "MD_TICKS").await {
        let t = Tick::decode(payload.as_slice()).expect("a Tick");
        if t.recv_ts_ns > down_ns && t.recv_ts_ns < up_ns {
            outage_quotes += 1;
        }
        if (t.recv_ts_ns - up_ns).abs() < window {
            *near_restart.entry(t.symbol.clone()).or_default() += 1;
        }
    }
    assert!(outage_quotes > 0, "no quote from the outage was stored");
    for s in SYMBOLS {
        assert!(
            near_restart.get(s).copied().unwrap_or(0) > 0,
            "{s}: no stored quote was received within 5 s of NATS coming back: {near_restart:?}"
        );
    }
    // Quotes were conflated (counted), and nothing was dropped.
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        counter("spreadagg_ingest_conflated_total") > 0.0,
        "{metrics}"
    );
    assert_eq!(counter("spreadagg_ingest_dropped_total"), 0.0, "{metrics}");
}
