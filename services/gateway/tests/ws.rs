//! Black-box tests of the gateway: a real `Gateway` bound to 127.0.0.1:0 on the in-process bus
//! (and once on a real `nats-server`), real WebSocket clients (tokio-tungstenite), spread
//! points published to the bus as protobufs, JSON frames checked field by field.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_gateway::{Gateway, GatewayConfig, GatewayError};
use spreadagg_model::wire::Spread;
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway under test with the bus it reads.
struct Running {
    addr: SocketAddr,
    bus: Bus,
    health: Health,
    stop: CancellationToken,
    task: JoinHandle<Result<(), GatewayError>>,
}

fn config() -> GatewayConfig {
    GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..GatewayConfig::default()
    }
}

async fn start_on(bus: Bus, config: GatewayConfig) -> Running {
    let gateway = Gateway::bind(config).await.expect("binds");
    let addr = gateway.local_addr();
    let health = Health::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gateway.run(bus.clone(), health.clone(), stop.clone()));
    // Points published before the feed subscribed would never reach it (live = new only).
    tokio::time::timeout(WAIT, async {
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("gateway.feed ready");
    Running {
        addr,
        bus,
        health,
        stop,
        task,
    }
}

async fn start(config: GatewayConfig) -> Running {
    start_on(Bus::in_process(&StreamSettings::default()), config).await
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns within 5 s")
            .expect("run task joined");
        result.expect("run ends cleanly");
    }

    fn feed_detail(&self, field: &str) -> u64 {
        self.health.report()["components"]["gateway.feed"]["detail"][field]
            .as_u64()
            .unwrap_or(0)
    }
}

async fn connect(addr: SocketAddr) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket connects");
    ws
}

async fn send(ws: &mut Client, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("sent");
}

/// The next text frame as JSON, skipping control frames.
async fn recv(ws: &mut Client) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame within 10 s")
}

/// Reads until the server's Close frame; returns it and how many spread frames came first.
async fn recv_close(ws: &mut Client) -> (Option<(u16, String)>, usize) {
    tokio::time::timeout(WAIT, async {
        let mut spreads = 0;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => spreads += 1,
                Some(Ok(Message::Close(frame))) => {
                    return (
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                        spreads,
                    );
                }
                Some(Ok(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("Close within 10 s")
}

async fn subscribe(ws: &mut Client, symbol: &str, exchanges: Option<[&str; 2]>) -> Value {
    let mut req = json!({"op": "subscribe", "symbol": symbol});
    if let Some(ex) = exchanges {
        req["exchanges"] = json!(ex);
    }
    send(ws, req).await;
    let reply = recv(ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

fn point(symbol: &str, a: &str, b: &str, n: i64) -> Spread {
    let x = n as f64;
    Spread {
        symbol: symbol.into(),
        exchange_a: a.into(),
        exchange_b: b.into(),
        bid_a: 100.0 + x,
        ask_a: 100.5 + x,
        bid_b: 101.0 + x,
        ask_b: 101.25 + x,
        ts_a_ns: 1_700_000_000_000_000_000 + n,
        ts_b_ns: 1_700_000_000_000_500_000 + n,
        a_to_b_pct: 0.5,
        b_to_a_pct: -1.25,
        bid_bid_pct: -0.75,
        staleness_ms: 0.5,
        triggered_by: b.into(),
        upper_band: 0.25,
        lower_band: -1.5,
        ts_ns: 1_700_000_000_001_000_000 + n,
    }
}

async fn publish(bus: &Bus, p: &Spread) {
    let subject = format!("md.spread.{}.{}.{}", p.symbol, p.exchange_a, p.exchange_b);
    bus.publish(&OutMessage {
        msg_id: format!("{subject}-{}", p.ts_ns),
        subject,
        payload: Bytes::from(p.encode_to_vec()),
    })
    .await
    .expect("published");
}

fn ts(frame: &Value) -> i64 {
    frame["ts_ns"].as_i64().expect("ts_ns") - 1_700_000_000_001_000_000
}

#[tokio::test]
async fn a_subscriber_receives_spreads_with_exact_values() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "symbol": "BTC-USDT", "id": "s1"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "subscribed", "symbol": "BTC-USDT", "exchanges": null, "id": "s1"})
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 7)).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({
            "type": "spread", "symbol": "BTC-USDT", "exchange_a": "binance", "exchange_b": "okx",
            "bid_a": 107.0, "ask_a": 107.5, "bid_b": 108.0, "ask_b": 108.25,
            "ts_a_ns": 1_700_000_000_000_000_007_i64, "ts_b_ns": 1_700_000_000_000_500_007_i64,
            "a_to_b_pct": 0.5, "b_to_a_pct": -1.25, "bid_bid_pct": -0.75, "staleness_ms": 0.5,
            "triggered_by": "okx", "upper_band": 0.25, "lower_band": -1.5,
            "ts_ns": 1_700_000_000_001_000_007_i64
        })
    );
    send(&mut ws, json!({"op": "ping", "id": 9})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong", "id": 9}));
    gw.stop().await;
}

#[tokio::test]
async fn a_pair_subscription_excludes_other_pairs() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    let reply = subscribe(&mut ws, "BTC-USDT", Some(["okx", "binance"])).await;
    assert_eq!(
        reply["exchanges"],
        json!(["binance", "okx"]),
        "canonical order"
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "bybit", 1)).await;
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 2)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 3)).await;
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 4)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 5)).await;
    let first = recv(&mut ws).await;
    let second = recv(&mut ws).await;
    assert_eq!((ts(&first), ts(&second)), (3, 5));
    assert_eq!(
        (&first["exchange_a"], &first["exchange_b"]),
        (&json!("binance"), &json!("okx"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_the_flow() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    send(
        &mut ws,
        json!({"op": "unsubscribe", "symbol": "BTC-USDT", "id": 2}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "unsubscribed", "symbol": "BTC-USDT", "exchanges": null, "id": 2})
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    subscribe(&mut ws, "ETH-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 3)).await;
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 4)).await;
    let next = recv(&mut ws).await;
    assert_eq!(
        (next["symbol"].as_str(), ts(&next)),
        (Some("ETH-USDT"), 4),
        "no BTC-USDT after unsubscribe"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_the_session_continues() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    let cases = [
        (Message::text("not json"), "bad_request", None),
        (
            Message::text(r#"{"op":"dance","id":"d"}"#),
            "unknown_op",
            Some(json!("d")),
        ),
        (
            Message::text(r#"{"op":"subscribe","symbol":"btcusdt","id":1}"#),
            "invalid_symbol",
            Some(json!(1)),
        ),
        (
            Message::text(r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","ftx"]}"#),
            "bad_request",
            None,
        ),
        (
            Message::Binary(Bytes::from_static(b"\x01\x02")),
            "bad_request",
            None,
        ),
    ];
    for (frame, code, id) in cases {
        ws.send(frame).await.expect("sent");
        let reply = recv(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(reply.get("id").cloned(), id, "{reply}");
    }
    // Still serving this client.
    subscribe(&mut ws, "BTC-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    gw.stop().await;
}

#[tokio::test]
async fn subscriptions_per_client_are_capped() {
    let gw = start(GatewayConfig {
        max_subscriptions_per_client: 2,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    subscribe(&mut ws, "BTC-USDT", Some(["binance", "okx"])).await;
    subscribe(&mut ws, "BTC-USDT", None).await; // a repeat costs nothing
    send(
        &mut ws,
        json!({"op": "subscribe", "symbol": "ETH-USDT", "id": 3}),
    )
    .await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("too_many_subscriptions"), &json!(3))
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    let big = format!(
        r#"{{"op":"subscribe","symbol":"BTC-USDT","id":"{}"}}"#,
        "x".repeat(10_000)
    );
    ws.send(Message::text(big)).await.expect("sent");
    let (close, _) = recv_close(&mut ws).await;
    assert_eq!(close.map(|c| c.0), Some(1009));
    gw.stop().await;
}

#[tokio::test]
async fn clients_beyond_max_clients_get_503() {
    let gw = start(GatewayConfig {
        max_clients: 1,
        ..config()
    })
    .await;
    let mut first = connect(gw.addr).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    // The first client is unaffected, and its slot frees when it leaves.
    send(&mut first, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut first).await, json!({"type": "pong"}));
    first.close(None).await.expect("closed");
    drop(first);
    let mut again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok((ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await
            {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot frees up");
    send(&mut again, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut again).await, json!({"type": "pong"}));
    gw.stop().await;
}

/// A client with a tiny TCP receive buffer, so that not reading fills the path quickly.
async fn connect_small_buffer(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(addr).await.expect("tcp connects");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("websocket handshake");
    ws
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_while_a_fast_one_gets_everything() {
    const BATCH: i64 = 50;
    let gw = start(GatewayConfig {
        client_queue: 64,
        slow_client_drop_limit: 200,
        ..config()
    })
    .await;
    let mut slow = connect_small_buffer(gw.addr).await;
    slow.send(Message::text(
        json!({"op": "subscribe", "symbol": "BTC-USDT"}).to_string(),
    ))
    .await
    .expect("sent");
    let mut fast = connect(gw.addr).await;
    subscribe(&mut fast, "BTC-USDT", None).await;
    // The slow client's confirmation is surely queued by now; from here on it never reads.

    let mut published = 0i64;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while gw.feed_detail("slow_disconnects") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never disconnected ({published} points published)"
        );
        for _ in 0..BATCH {
            publish(&gw.bus, &point("BTC-USDT", "binance", "okx", published)).await;
            published += 1;
        }
        for _ in 0..BATCH {
            received.push(ts(&recv(&mut fast).await));
        }
    }
    assert_eq!(
        received,
        (0..published).collect::<Vec<_>>(),
        "the fast client got every point, in order"
    );
    eprintln!("slow client disconnected after {published} points");
    assert_eq!(gw.feed_detail("slow_disconnects"), 1);
    assert!(gw.feed_detail("dropped") >= 200);

    // The slow client finds what fitted in its buffers, then Close 1008 "too slow".
    let (close, spreads) = tokio::time::timeout(WAIT, async {
        let mut spreads = 0usize;
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(t))) => {
                    if t.contains("\"spread\"") {
                        spreads += 1;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return (
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                        spreads,
                    );
                }
                Some(Ok(_)) => {}
                other => panic!("expected Close, got {other:?}"),
            }
        }
    })
    .await
    .expect("Close within 10 s");
    assert_eq!(close, Some((1008, "too slow".to_owned())));
    assert!(
        (spreads as i64) < published,
        "the slow client lost points ({spreads} of {published})"
    );

    // The fast client keeps going.
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", published)).await;
    assert_eq!(ts(&recv(&mut fast).await), published);
    gw.stop().await;
}

#[tokio::test]
async fn cancel_closes_every_client_with_1001_and_run_returns() {
    let gw = start(config()).await;
    let mut a = connect(gw.addr).await;
    let mut b = connect(gw.addr).await;
    subscribe(&mut a, "BTC-USDT", None).await;
    send(&mut b, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "pong"}));
    let addr = gw.addr;
    let started = tokio::time::Instant::now();
    gw.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for ws in [&mut a, &mut b] {
        let (close, _) = recv_close(ws).await;
        let (code, _) = close.expect("a close frame");
        assert_eq!(code, u16::from(CloseCode::Away));
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request sent");
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_dashboard_and_the_symbol_list_are_served() {
    let gw = start(config()).await;
    let (head, body) = http_get(gw.addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html")
    );
    assert!(body.contains("/ws") && body.contains("/api/symbols"));

    // Symbols appear once points for them have passed, whether anyone subscribed or not.
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    let symbols = tokio::time::timeout(WAIT, async {
        loop {
            let (_, body) = http_get(gw.addr, "/api/symbols").await;
            let v: Value = serde_json::from_str(body.trim()).expect("json");
            if v["symbols"].as_array().is_some_and(|s| s.len() == 2) {
                return v["symbols"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("symbols listed");
    assert_eq!(symbols, json!(["BTC-USDT", "ETH-USDT"]));
    gw.stop().await;
}

#[tokio::test]
async fn undecodable_points_are_counted_and_the_feed_goes_on() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    gw.bus
        .publish(&OutMessage {
            subject: "md.spread.BTC-USDT.binance.okx".into(),
            msg_id: "garbage".into(),
            payload: Bytes::from_static(b"\xff\xff\xff\xff not protobuf"),
        })
        .await
        .expect("published");
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    gw.stop().await;
}

#[tokio::test]
async fn spreads_flow_from_a_real_nats_server() {
    let server = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&server.url(), &StreamSettings::default())
        .await
        .expect("connects to NATS");
    let gw = start_on(bus, config()).await;
    assert_eq!(
        gw.health.report()["components"]["gateway.feed"]["detail"]["bus"],
        "jetstream"
    );
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", Some(["binance", "okx"])).await;
    for n in 0..5 {
        publish(&gw.bus, &point("BTC-USDT", "binance", "okx", n)).await;
        publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 100 + n)).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let frame = recv(&mut ws).await;
        assert_eq!(frame["exchange_a"], "binance");
        assert_eq!(frame["bid_a"], json!(100.0 + ts(&frame) as f64));
        got.push(ts(&frame));
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    gw.stop().await;
    drop(server);
}
