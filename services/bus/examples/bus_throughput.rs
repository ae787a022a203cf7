//! Publish and consume rates of both buses in the same run: the in-process bus behind
//! `spreadagg all` and JetStream on a real `nats-server` (started here, its own store).
//!
//! For each bus: `MSGS` ticks-sized messages (120 bytes) published through the pipelining
//! publisher (1,024 in flight) with message ids, then read back by a durable pull consumer
//! that acknowledges each, while `IDLE` live subscribers on a subject nobody publishes to
//! wait on the same stream (what a gateway's unrelated subscriptions cost a publish). Then a
//! mixed run: publishing and consuming at once. Prints one line per phase and bus.
//!
//! `cargo run --release -p spreadagg-bus --example bus_throughput`
//! Environment: `MSGS` (default 200000), `IDLE` (default 50), `NATS_SERVER_BIN`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use spreadagg_bus::{Bus, ConsumerSpec, OutMessage, StreamSettings};
use spreadagg_testkit::NatsServer;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(i: usize) -> OutMessage {
    OutMessage {
        subject: format!("md.tick.ex{}.SYM{}-USDT", i % 8, i % 50),
        msg_id: format!("bench-{i}"),
        payload: Bytes::from(vec![7u8; 120]),
    }
}

fn spec(durable: &str) -> ConsumerSpec {
    ConsumerSpec {
        stream: "MD_TICKS".into(),
        durable: durable.into(),
        filter: "md.tick.>".into(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 50_000,
        batch: 1000,
        start_seq: None,
    }
}

async fn publish(bus: &Bus, range: std::ops::Range<usize>) -> Duration {
    let started = Instant::now();
    let mut publisher = bus.publisher(1024);
    for i in range {
        publisher.publish(message(i)).await.expect("published");
    }
    publisher.flush().await.expect("flushed");
    started.elapsed()
}

async fn consume(bus: &Bus, durable: &str, n: usize) -> Duration {
    let mut consumer = bus.durable(&spec(durable)).await.expect("consumer");
    let started = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery");
        d.ack().await.expect("ack");
    }
    bus.flush().await.expect("flush");
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>9.0} msg/s", n as f64 / d.as_secs_f64())
}

async fn run(name: &str, bus: Bus, n: usize, idle: usize) {
    // Unrelated live subscriptions on the same stream, each waiting in its own task.
    let mut waiters = Vec::new();
    for i in 0..idle {
        let mut sub = bus
            .live("MD_TICKS", &format!("md.tick.nobody{i}.>"))
            .await
            .expect("live");
        waiters.push(tokio::spawn(async move {
            let _ = sub.next().await;
        }));
    }
    let published = publish(&bus, 0..n).await;
    println!(
        "{name:<10} publish          {} ({n} in {published:.2?})",
        rate(n, published)
    );
    let consumed = consume(&bus, "bench-a", n).await;
    println!(
        "{name:<10} consume+ack      {} ({n} in {consumed:.2?})",
        rate(n, consumed)
    );
    // Both at once: a consumer keeps up with a publisher.
    let started = Instant::now();
    let (p, c) = tokio::join!(publish(&bus, n..2 * n), consume(&bus, "bench-b", 2 * n));
    let both = started.elapsed();
    println!(
        "{name:<10} mixed            {} published while one consumer read {} ({:.2?}, {:.2?})",
        rate(n, both),
        2 * n,
        p,
        c
    );
    for w in waiters {
        w.abort();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("MSGS", 200_000);
    let idle = env("IDLE", 50);
    let settings = StreamSettings {
        max_bytes: 0,
        max_messages: 0,
        ..StreamSettings::default()
    };
    println!("{n} messages of 120 bytes, {idle} idle live subscribers on the stream");
    run(
        "in-process",
        Bus::in_process(&settings.for_in_process()),
        n,
        idle,
    )
    .await;
    let server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&server.url(), &settings)
        .await
        .expect("connects");
    run("jetstream", bus, n, idle).await;
}
