//! Load harness: the engine role against a real nats-server (started here, file storage),
//! fed `RATE` ticks/s for `SECONDS` over `SYMBOLS` symbols on `EXCHANGES` exchanges each.
//! Prints, per second, the engine's tick-to-acknowledged latency (from a tick's arrival at the
//! engine to its points acknowledged by JetStream, p50 and p99, from its `/health`) and, as the
//! baseline measured in the same run, the round trip of one plain JetStream publish.
//!
//! `PUBLISH_MIN_INTERVAL_MS=N` turns output conflation on.
//!
//! `RATE=20000 EXCHANGES=2 cargo run --release -p spreadagg-engine --example engine_latency`
//! (or `scripts/bench-engine`).

use std::time::{Duration, Instant};

use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StorageKind, StreamSettings};
use spreadagg_engine::{EngineConfig, LatencyHistogram};
use spreadagg_model::ExchangeId;
use spreadagg_model::wire::Tick;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate = env("RATE", 20_000);
    let seconds = env("SECONDS", 20);
    let exchanges = usize::try_from(env("EXCHANGES", 2))
        .unwrap_or(2)
        .clamp(2, 11);
    let symbols = env("SYMBOLS", 1_000);
    let nats = NatsServer::start().expect("nats-server starts");
    let settings = StreamSettings {
        storage: StorageKind::File,
        ..StreamSettings::default()
    };
    let bus = Bus::connect(&nats.url(), &settings)
        .await
        .expect("connects");
    let health = Health::new();
    let stop = CancellationToken::new();
    let config = EngineConfig {
        publish_min_interval_ms: env("PUBLISH_MIN_INTERVAL_MS", 0),
        ..EngineConfig::default()
    };
    let engine = tokio::spawn(spreadagg_engine::run(
        config,
        bus.clone(),
        health.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Baseline: one plain publish's round trip, every 10 ms, on the same server.
    let probe_bus = bus.clone();
    let probe_stop = stop.clone();
    let probe = tokio::spawn(async move {
        let mut h = LatencyHistogram::default();
        let mut i = 0_u64;
        while !probe_stop.is_cancelled() {
            let msg = OutMessage {
                subject: "md.trade.okx.PROBE-USDT".into(),
                msg_id: format!("probe-{i}"),
                payload: vec![0_u8; 80].into(),
            };
            let t = Instant::now();
            if probe_bus.publish(&msg).await.is_ok() {
                h.record(t.elapsed());
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h
    });

    let feed_bus = bus.clone();
    let feed = tokio::spawn(async move {
        let mut publisher = feed_bus.publisher(1_024).retry_forever();
        let mut every = tokio::time::interval(Duration::from_millis(10));
        let per_tick = rate / 100;
        let total = rate * seconds;
        let mut i = 0_u64;
        while i < total {
            every.tick().await;
            for _ in 0..per_tick {
                let ex = ExchangeId::ALL[usize::try_from(i).unwrap_or(0) % exchanges];
                let symbol = format!("S{}-USDT", (i / exchanges as u64) % symbols);
                #[allow(clippy::cast_precision_loss)]
                let bid = 100.0 + (i % 97) as f64 * 0.01;
                let t = Tick {
                    exchange: ex.as_str().into(),
                    symbol: symbol.clone(),
                    bid_px: bid,
                    bid_qty: 1.0,
                    ask_px: bid + 0.01,
                    ask_qty: 1.0,
                    recv_ts_ns: spreadagg_model::time::now_ns(),
                    ..Tick::default()
                };
                let msg = OutMessage {
                    subject: format!("md.tick.{ex}.{symbol}"),
                    msg_id: format!("t{i}"),
                    payload: t.encode_to_vec().into(),
                };
                let _ = publisher.publish(msg).await;
                i += 1;
            }
        }
        let _ = publisher.flush().await;
    });

    println!("second\tticks\tp50_ms\tp99_ms");
    let mut p99s = Vec::new();
    let mut p50s = Vec::new();
    for second in 1..=seconds + 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = health.report();
        let l = &r["components"]["engine.ticks"]["detail"]["tick_to_ack_ms"];
        let (p50, p99, n) = (l["p50"].as_f64(), l["p99"].as_f64(), l["ticks"].as_u64());
        println!(
            "{second}\t{}\t{}\t{}",
            n.unwrap_or(0),
            p50.map_or("-".into(), |v| format!("{v:.3}")),
            p99.map_or("-".into(), |v| format!("{v:.3}"))
        );
        // The first two seconds warm up (durable creation, first windows).
        if second > 2 && second <= seconds {
            p50s.extend(p50);
            p99s.extend(p99);
        }
    }
    feed.await.expect("feed");
    let whole =
        health.report()["components"]["engine.ticks"]["detail"]["tick_to_ack_ms"]["since_start"]
            .clone();
    stop.cancel();
    let baseline = probe.await.expect("probe");
    let _ = engine.await;
    let ticks = bus.stream_state("MD_TICKS").await.map_or(0, |s| s.messages);
    let spreads = bus
        .stream_state("MD_SPREADS")
        .await
        .map_or(0, |s| s.messages);
    #[allow(clippy::cast_precision_loss)]
    let per_tick = spreads as f64 / ticks.max(1) as f64;
    println!(
        "broker messages: {ticks} ticks in, {spreads} spread points out = {per_tick:.2} per tick"
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "rate {rate}/s, {exchanges} exchanges x {symbols} symbols: engine tick->acked p50 {:.3} ms, p99 {:.3} ms (medians over seconds), whole run p50 {} ms, p99 {} ms; baseline publish round trip p50 {:.3} ms, p99 {:.3} ms",
        median(&mut p50s),
        median(&mut p99s),
        whole["p50"],
        whole["p99"],
        baseline.quantile_ms(0.5).unwrap_or(f64::NAN),
        baseline.quantile_ms(0.99).unwrap_or(f64::NAN),
    );
    drop(nats);
}
