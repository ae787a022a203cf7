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

/// A WebSocket client from `ip` (another loopback address) with a receive buffer of `rcvbuf`;
/// the HTTP status when the gateway refuses it.
async fn connect_from(
    ip: [u8; 4],
    addr: std::net::SocketAddr,
    rcvbuf: u32,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, u16> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("rcvbuf");
    socket
        .bind(std::net::SocketAddr::from((ip, 0)))
        .expect("binds a loopback address");
    let stream = socket.connect(addr).await.map_err(|_| 0u16)?;
    match tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
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
    let counts = Arc::new([(); 8].map(|()| AtomicU64::new(0)));
    let (rate_limited, per_ip_refused, too_big_closes, malformed_errors) = (0, 1, 2, 3);
    let (flood_sessions, floods_refused, huge_refused) = (4, 5, 6);
    let mut attackers = Vec::new();
    // 1. Never reads (and has a tiny receive buffer), subscribed to everything.
    let mut slow = connect_from([127, 0, 0, 2], addr, 4096)
        .await
        .expect("connects");
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
    // 2 and 3. Floods of subscriptions and of malformed frames, each from its own address,
    // sending as fast as they can; when closed for flooding, they come back.
    for (ip, junk) in [([127, 0, 0, 3], false), ([127, 0, 0, 4], true)] {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while attacking.load(Ordering::Relaxed) {
                let ws = match connect_from(ip, addr, 1 << 20).await {
                    Ok(ws) => ws,
                    Err(status) => {
                        if status == 429 {
                            counts[floods_refused].fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                counts[flood_sessions].fetch_add(1, Ordering::Relaxed);
                let (mut tx, mut rx) = ws.split();
                let seen = Arc::clone(&counts);
                let reader = tokio::spawn(async move {
                    while let Some(Ok(Message::Text(t))) = rx.next().await {
                        let counts = &seen;
                        if t.contains("rate_limited") {
                            counts[rate_limited].fetch_add(1, Ordering::Relaxed);
                        } else if t.contains("\"error\"") {
                            counts[malformed_errors].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                while attacking.load(Ordering::Relaxed) {
                    let frame = if junk {
                        [
                            "{",
                            "[1,2]",
                            "\u{0}\u{1}",
                            r#"{"op":"subscribe","symbol":"x"}"#,
                            "null",
                        ][(n % 5) as usize]
                            .to_owned()
                    } else {
                        let op = if n.is_multiple_of(2) {
                            "subscribe"
                        } else {
                            "unsubscribe"
                        };
                        json!({"op": op, "symbol": format!("F{}-*", n % 500), "snapshot": true})
                            .to_string()
                    };
                    if tx.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    n += 1;
                    if n.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                reader.abort();
            }
        }));
    }
    // 4. A connection flood from one address, held open.
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while attacking.load(Ordering::Relaxed) {
                match connect_from([127, 0, 0, 5], addr, 1 << 16).await {
                    Ok(ws) => held.push(ws),
                    Err(0) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(status) => {
                        assert!(status == 429 || status == 503, "{status}");
                        counts[per_ip_refused].fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    // 5. Huge frames from another address, again and again (each closes with 1009).
    {
        let (attacking, counts) = (Arc::clone(&attacking), Arc::clone(&counts));
        attackers.push(tokio::spawn(async move {
            let huge = "x".repeat(60 * 1024);
            while attacking.load(Ordering::Relaxed) {
                let mut ws = match connect_from([127, 0, 0, 6], addr, 1 << 16).await {
                    Ok(ws) => ws,
                    Err(status) => {
                        if status == 429 {
                            counts[huge_refused].fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
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

    // Half a second for the attackers to connect (the connection flood opens its 40 at once),
    // then the measured window, while every attack goes on. The fast client must miss
    // nothing in either.
    let (_, missed_settling) = measure(&mut fast, Duration::from_millis(500), &mut last).await;
    let (during, missed_during) = measure(&mut fast, Duration::from_secs(4), &mut last).await;
    let active: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
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
        missed_before + missed_settling + missed_during,
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
    // Every attack ran and was stopped: floods refused, closed, and their addresses refused a
    // while (the penalty box) when they came back; huge frames likewise.
    assert!(
        active[rate_limited] > 0,
        "the subscription flood was rate limited: {active:?}"
    );
    assert!(
        active[malformed_errors] > 0,
        "malformed frames answered: {active:?}"
    );
    assert!(
        active[flood_sessions] >= 2,
        "both floods connected: {active:?}"
    );
    assert!(
        active[floods_refused] > 0,
        "floods closed and refused on return: {active:?}"
    );
    assert!(
        active[per_ip_refused] > 0,
        "the address cap held: {active:?}"
    );
    assert!(
        active[too_big_closes] >= 1,
        "a huge frame closed with 1009: {active:?}"
    );
    assert!(
        active[huge_refused] > 0,
        "and its address refused on return: {active:?}"
    );
    assert!(
        gw.detail("gateway.clients", "dropped") > 0,
        "the slow client's drops are counted"
    );
    drop(slow);
    gw.stop().await;
}
