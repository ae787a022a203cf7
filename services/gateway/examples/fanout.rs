//! Fan-out load harness (docs/BENCHMARKS.md, "Gateway fan-out"): a gateway on the in-process
//! bus, `CLIENTS` WebSocket clients on loopback each subscribed to `SUBS` of `SYMBOLS` symbols,
//! spread points published at `RATE` a second for `DURATION_S` seconds (after one second of warm-up).
//! Each point carries its publish time (`ts_ns`); a client's delivery latency is its receipt
//! time minus that. Prints one JSON line: delivered messages a second, latency p50/p99/p999/max,
//! and what the gateway dropped. Run by `scripts/bench-gateway`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_gateway::{Gateway, GatewayConfig};
use spreadagg_model::wire::Spread;
use spreadagg_runtime::Health;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latency histogram: 10 µs buckets up to 2 s, the rest in the last.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const BUCKET_US: u64 = 10;
const BUCKETS: usize = 200_000;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, micros: u64) {
        let i = usize::try_from(micros / BUCKET_US)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn quantiles(&self, qs: &[f64]) -> (u64, Vec<f64>, f64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut out = Vec::new();
        for &q in qs {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            let mut value = 0.0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    value = ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
                    break;
                }
            }
            out.push(value);
        }
        let max = counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0.0, |i| ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0);
        (total, out, max)
    }
}

#[derive(serde::Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ts_ns: i64,
}

#[tokio::main]
async fn main() {
    let clients = env("CLIENTS", 1000) as usize;
    let symbols = env("SYMBOLS", 50) as usize;
    let subs = env("SUBS", 5) as usize;
    let rate = env("RATE", 200);
    let seconds = env("DURATION_S", 10);

    let bus = Bus::in_process(&StreamSettings::default());
    let gateway = Gateway::bind(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_clients: clients + 10,
        max_connections_per_ip: 0,
        max_symbols: symbols.max(10),
        ..GatewayConfig::default()
    })
    .await
    .expect("binds");
    let addr = gateway.local_addr();
    let health = Health::new();
    let stop = CancellationToken::new();
    let running = tokio::spawn(gateway.run(bus.clone(), health.clone(), stop.clone()));
    while !health.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let names: Vec<String> = (0..symbols).map(|i| format!("S{i}-USDT")).collect();
    let histogram = Arc::new(Histogram::new());
    let measuring = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mine: Vec<String> = (0..subs)
            .map(|k| names[(c * 7 + k * 13) % symbols].clone())
            .collect();
        let histogram = Arc::clone(&histogram);
        let measuring = Arc::clone(&measuring);
        let connected = Arc::clone(&connected);
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = loop {
                match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
                    Ok(ok) => break ok,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            for s in &mine {
                let req = format!(r#"{{"op":"subscribe","symbol":"{s}","snapshot":false}}"#);
                ws.send(Message::text(req)).await.expect("subscribe");
            }
            connected.fetch_add(1, Ordering::Relaxed);
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg
                    && let Ok(f) = serde_json::from_str::<Frame>(&t)
                    && f.kind == "spread"
                    && measuring.load(Ordering::Relaxed)
                {
                    let now = spreadagg_model::time::now_ns();
                    histogram.record(u64::try_from((now - f.ts_ns) / 1000).unwrap_or(0));
                }
            }
        }));
    }
    while connected.load(Ordering::Relaxed) < clients as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // subscriptions in place

    // Publish at RATE points a second, round-robin over the symbols and two pairs each.
    let mut publisher = bus.publisher(1024);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let warmup = Duration::from_secs(1);
    let mut next = tokio::time::Instant::now();
    let mut n: u64 = 0;
    let mut published_measured: u64 = 0;
    while started.elapsed() < warmup + Duration::from_secs(seconds) {
        if !measuring.load(Ordering::Relaxed) && started.elapsed() >= warmup {
            measuring.store(true, Ordering::Relaxed);
        }
        let symbol = &names[(n as usize) % symbols];
        let (a, b) = if n.is_multiple_of(2) {
            ("binance", "okx")
        } else {
            ("bybit", "okx")
        };
        let point = Spread {
            symbol: symbol.clone(),
            exchange_a: a.into(),
            exchange_b: b.into(),
            bid_a: 100.0,
            ask_a: 100.1,
            bid_b: 100.2,
            ask_b: 100.3,
            ts_ns: spreadagg_model::time::now_ns(),
            ..Spread::default()
        };
        let subject = format!("md.spread.{symbol}.{a}.{b}");
        publisher
            .publish(OutMessage {
                msg_id: format!("{subject}-{n}"),
                subject,
                payload: Bytes::from(point.encode_to_vec()),
            })
            .await
            .expect("published");
        if measuring.load(Ordering::Relaxed) {
            published_measured += 1;
        }
        n += 1;
        next += period;
        tokio::time::sleep_until(next).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the last deliveries land
    measuring.store(false, Ordering::Relaxed);
    let (delivered, q, max) = histogram.quantiles(&[0.5, 0.99, 0.999]);
    let report = health.report();
    let clients_detail = &report["components"]["gateway.clients"]["detail"];
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "symbols": symbols,
            "subscriptions_per_client": subs,
            "points_per_s": rate,
            "seconds": seconds,
            "published": published_measured,
            "delivered": delivered,
            "delivered_per_s": delivered as f64 / seconds as f64,
            "latency_ms": {"p50": q[0], "p99": q[1], "p999": q[2], "max": max},
            "dropped": clients_detail["dropped"],
            "slow_disconnects": clients_detail["slow_disconnects"],
        })
    );
    stop.cancel();
    let _ = running.await;
    for t in tasks {
        t.abort();
    }
}
