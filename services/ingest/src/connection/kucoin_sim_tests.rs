//! The real KuCoin adapter through the connection layer against the simulated KuCoin
//! (`spreadagg-simulate`, in process): bullet-public before every connect, the welcome before
//! subscribing, acks by id, ticker and match pushes parsed into events, and recovery from a
//! refused token by fetching a fresh one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use spreadagg_model::ExchangeId;
use spreadagg_runtime::Health;
use spreadagg_simulate::{SimConfig, Simulator};

use super::*;
use crate::event::Event;
use crate::exchange::kucoin::Kucoin;

const NATIVES: [&str; 2] = ["BTC-USDT", "ETH-USDT"];

fn settings() -> ConnectionSettings {
    ConnectionSettings {
        connect_timeout: Duration::from_secs(2),
        stale_after: Duration::from_secs(5),
        data_stale_after: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        rotate_after: None,
        rotate_margin: Duration::ZERO,
        handover_timeout: Duration::from_secs(5),
    }
}

async fn simulator(stop: &CancellationToken) -> Simulator {
    let config = SimConfig {
        exchanges: vec![ExchangeId::Kucoin],
        symbols: NATIVES.iter().map(|s| (*s).to_owned()).collect(),
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(7),
        ..SimConfig::default()
    };
    Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts")
}

#[tokio::test]
async fn the_kucoin_adapter_streams_from_the_simulator_after_a_refused_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = CancellationToken::new();
    let sim = simulator(&stop).await;
    let rest_url = sim
        .endpoint(ExchangeId::Kucoin)
        .expect("kucoin simulated")
        .rest_url
        .clone();
    // The first connection is refused as if its token had expired.
    sim.kucoin_reject_next_tokens(1);

    let table = SymbolTable::from_pairs(ExchangeId::Kucoin, NATIVES.map(|n| (n, n)));
    let shared = Arc::new(Shared {
        adapter: Arc::new(Kucoin),
        settings: settings(),
        http: reqwest::Client::new(),
        rest_url,
        // No --ws-url: the endpoint comes from bullet-public, as in production.
        ws_url: None,
        symbols: Arc::new(RwLock::new(Arc::new(table))),
        sink: Arc::new(Conflator::new(ExchangeId::Kucoin, 100)),
        breaker: Breaker::new(
            ExchangeId::Kucoin,
            3,
            Duration::from_millis(300),
            Duration::from_secs(1),
        ),
        attempts: AttemptLimiter::new(Duration::from_millis(10)),
    });
    let health = Health::new();
    let (_natives_tx, natives) = watch::channel(NATIVES.map(str::to_owned).to_vec());
    let task = tokio::spawn(
        Connection {
            shared: shared.clone(),
            index: 0,
            natives,
            component: health.register("test.kucoin"),
            stop: stop.clone(),
        }
        .run(),
    );

    let mut quoted = HashSet::new();
    let mut printed = 0usize;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while quoted.len() < NATIVES.len() || printed == 0 {
        out.clear();
        match tokio::time::timeout_at(deadline, shared.sink.take(64, &mut out)).await {
            Ok(_) => {
                for e in &out {
                    match e {
                        Event::Quote(q) => {
                            assert!(q.bid_px < q.ask_px, "{q:?}");
                            assert!(q.exchange_ts_ns > 1_600_000_000_000_000_000, "{q:?}");
                            quoted.insert(q.symbol);
                        }
                        Event::Print(_) => printed += 1,
                    }
                }
            }
            Err(_) => panic!(
                "quotes for {quoted:?}, {printed} prints within 20 s; {}",
                health.report()
            ),
        }
    }
    assert_eq!(
        sim.kucoin_pending_token_rejections(),
        0,
        "the first connection was refused, and the adapter recovered with a fresh token"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection stops")
        .expect("no panic");
    tokio::time::timeout(Duration::from_secs(5), sim.join())
        .await
        .expect("the simulator stops");
}
