//! No client can hurt another: beside a fast client, a client that never reads, a
//! subscription flood, a connection flood from one address, huge frames and malformed frames
//! run against the same gateway. The fast client keeps getting every point with a delivery
//! latency close to its own baseline measured just before in the same run (a ratio with room
//! for a noisy two-core machine, far below what a stall on a shared lock would cost); the
//! others are refused, dropped and counted; queues stay within their bounds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use spreadagg_gateway::GatewayConfig;
use tokio_tungstenite::tungstenite::Message;

/// Points a second published for the fast client.
const RATE: u64 = 400;

/// Publishes BTC-USDT points stamped with their publish time until `stop`.
fn publish_stamped(bus: spreadagg_bus::Bus, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut next = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut p = point("BTC-USDT", "binance", "okx", n as i64);
            p.ts_ns = spreadagg_model::time::now_ns();
            publish(&bus, &p).await;
            n += 1;
            next += Duration::from_micros(1_000_000 / RATE);
            tokio::time::sleep_until(next).await;
        }
        n
    })
}

/// Reads the fast client's points for `window`: their latencies in microseconds, and the
/// gaps in its sequence (points it never got).
async fn measure(ws: &mut Client, window: Duration, last: &mut Option<i64>) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut missed = 0;
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        let frame = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("the fast client is never starved for 2 s")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(&t).expect("json");
        if v["type"] != "spread" {
            continue;
        }
        let now = spreadagg_model::time::now_ns();
        latencies.push(u64::try_from((now - v["ts_ns"].as_i64().expect("ts")) / 1000).unwrap_or(0));
        let n = (v["bid_a"].as_f64().expect("bid") - 100.0).round() as i64;
        if let Some(prev) = *last {
            missed += u64::try_from(n - prev - 1).unwrap_or(0);
        }
        *last = Some(n);
    }
    (latencies, missed)
}

fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_slow_a_fast_one() {
    let gw = start(GatewayConfig {
        client_queue: 256,
        slow_client_drop_limit: 500,
        max_connections_per_ip: 40,
        requests_per_s: 50.0,
        request_burst: 50,
        ..config()
    })
    .await;
    let addr = gw.addr;
    let mut fast = connect(addr).await;
    subscribe(&mut fast, "BTC-USDT", None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_stamped(gw.bus.clone(), Arc::clone(&stop));

    let mut last = None;
    let (_, _) = measure(&mut fast, Duration::from_secs(1), &mut last).await; // warm-up
    let (baseline, missed_before) = measure(&mut fast, Duration::from_secs(3), &mut last).await;

    // The attackers.
    let attacking = Arc::new(AtomicBool::new(true));
    let counts = Arc::new([(); 5].map(|()| AtomicU64::new(0)));
    let (rate_limited, per_ip_refused, too_big_closes, malformed_errors, floods) = (0, 1, 2, 3, 4);
    let mut attackers = Vec::new();
    // 1. Never reads (and has a tiny receive buffer), subscribed to everything.
    let mut slow = {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let stream = socket.connect(addr).await.expect("tcp connects");
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .expect("handshake")
            .0
    };
    slow.send(Message::text(
        json!({"op":"subscribe","symbol":"*","snapshot":false}).to_string(),
    ))
    .await
    .expect("sent");
    // Traffic the fast client does not subscribe to and the slow one does: enough to fill the
    // slow client's socket buffers within seconds.
    {
        let (attacking, bus) = (Arc::clone(&attacking), gw.bus.clone());
        attackers.push(tokio::spawn(async move {
            let mut n = 0i64;
            let mut next = tokio::time::Instant::now();
            while attacking.load(Ordering::Relaxed) {
                publish(&bus, &point("NOISE-USDT", "binance", "okx", n)).await;
                n += 1;
                if n % 10 == 0 {
                    next += Duration::from_millis(4); // 2,500 points a second
                    tokio::time::sleep_until(next).await;
                }
            }
        }));
    }
    // 2. A subscription flood: subscribe/unsubscribe as fast as it can, answers drained.
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let ws = connect(addr).await;
            let (mut tx, mut rx) = ws.split();
            let seen = Arc::clone(&counts);
            let reader = tokio::spawn(async move {
                while let Some(Ok(Message::Text(t))) = rx.next().await {
                    if t.contains("rate_limited") {
                        let counts = &seen;
                        counts[rate_limited].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let mut n = 0u64;
            while attacking.load(Ordering::Relaxed) {
                let op = if n.is_multiple_of(2) {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                let symbol = format!("F{}-*", n % 500);
                let req = json!({"op": op, "symbol": symbol, "snapshot": true}).to_string();
                if tx.send(Message::text(req)).await.is_err() {
                    break;
                }
                counts[floods].fetch_add(1, Ordering::Relaxed);
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            reader.abort();
        }));
    }
    // 3. A connection flood from this one address, held open.
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while attacking.load(Ordering::Relaxed) {
                match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
                    Ok((ws, _)) => held.push(ws),
                    Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                        assert!(r.status().as_u16() == 429 || r.status().as_u16() == 503);
                        counts[per_ip_refused].fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // 4. Huge frames, again and again (each closes its connection with 1009).
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let huge = "x".repeat(60 * 1024);
            while attacking.load(Ordering::Relaxed) {
                let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if ws.send(Message::text(huge.clone())).await.is_ok() {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Close(Some(f)) = msg {
                            if u16::from(f.code) == 1009 {
                                counts[too_big_closes].fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                    }
                }
            }
        }));
    }
    // 5. Malformed frames.
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let ws = connect(addr).await;
            let (mut tx, mut rx) = ws.split();
            let seen = Arc::clone(&counts);
            let reader = tokio::spawn(async move {
                while let Some(Ok(Message::Text(t))) = rx.next().await {
                    if t.contains("\"error\"") {
                        let counts = &seen;
                        counts[malformed_errors].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let garbage = [
                "{",
                "[1,2]",
                "\u{0}\u{1}",
                r#"{"op":"subscribe","symbol":"x"}"#,
                "null",
            ];
            let mut n = 0usize;
            while attacking.load(Ordering::Relaxed) {
                if tx
                    .send(Message::text(garbage[n % garbage.len()]))
                    .await
                    .is_err()
                {
                    break;
                }
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            reader.abort();
        }));
    }

    let (during, missed_during) = measure(&mut fast, Duration::from_secs(4), &mut last).await;
    let (base, attack) = (p99(baseline.clone()), p99(during.clone()));
    eprintln!(
        "fast client p99: {base} us before, {attack} us under attack ({} and {} points); counts {:?}",
        baseline.len(),
        during.len(),
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        missed_before + missed_during,
        0,
        "the fast client lost no point"
    );
    assert!(
        during.len() as u64 >= RATE * 3,
        "it kept receiving: {}",
        during.len()
    );
    // Noise allowance: four times the baseline plus 25 ms. A stall behind a lock a hostile
    // client holds, or behind the slow client's socket, costs hundreds of milliseconds.
    assert!(
        attack <= base * 4 + 25_000,
        "the fast client's p99 went from {base} us to {attack} us under attack"
    );
    // The client that never reads loses its own points and is closed for it (the noise keeps
    // flowing until then).
    gw.wait_detail("gateway.clients", "slow_disconnects", |n| n >= 1)
        .await;
    attacking.store(false, Ordering::Relaxed);
    for a in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    assert!(
        counts[rate_limited].load(Ordering::Relaxed) > 0,
        "the flood was rate limited"
    );
    assert!(
        counts[per_ip_refused].load(Ordering::Relaxed) > 0,
        "the address cap held"
    );
    assert!(
        counts[too_big_closes].load(Ordering::Relaxed) > 0,
        "huge frames were closed"
    );
    assert!(
        counts[malformed_errors].load(Ordering::Relaxed) > 0,
        "malformed frames answered"
    );
    assert!(
        gw.detail("gateway.clients", "dropped") > 0,
        "the slow client's drops are counted"
    );
    assert!(
        gw.detail("gateway.clients", "queue_depth_max") <= 256,
        "queues within bounds"
    );
    drop(slow);
    gw.stop().await;
}
