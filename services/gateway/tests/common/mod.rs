//! Helpers shared by the gateway's black-box tests: a real `Gateway` bound to 127.0.0.1:0 on
//! the in-process bus (or a real `nats-server`), real WebSocket clients (tokio-tungstenite),
//! messages published to the bus as protobufs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_gateway::{Gateway, GatewayConfig, GatewayError};
use spreadagg_model::wire::{Signal, SignalKind, Spread, Tick, Trade};
use spreadagg_runtime::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway under test with the bus it reads.
pub struct Running {
    pub addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub bus: Bus,
    pub health: Health,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), GatewayError>>,
}

pub fn config() -> GatewayConfig {
    GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..GatewayConfig::default()
    }
}

pub async fn start_on(bus: Bus, config: GatewayConfig) -> Running {
    let gateway = Gateway::bind(config).await.expect("binds");
    let addr = gateway.local_addr();
    let grpc_addr = gateway.grpc_addr();
    let health = Health::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gateway.run(bus.clone(), health.clone(), stop.clone()));
    // Messages published before the feeds subscribed would never reach them (live = new only).
    tokio::time::timeout(WAIT, async {
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every gateway feed ready");
    Running {
        addr,
        grpc_addr,
        bus,
        health,
        stop,
        task,
    }
}

pub async fn start(config: GatewayConfig) -> Running {
    start_on(Bus::in_process(&StreamSettings::default()), config).await
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns within 5 s")
            .expect("run task joined");
        result.expect("run ends cleanly");
    }

    /// A number from a health component's detail (`gateway.clients`, `gateway.feed.spreads`).
    pub fn detail(&self, component: &str, field: &str) -> u64 {
        self.health.report()["components"][component]["detail"][field]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until the clients' report (refreshed every second) satisfies `ok`.
    pub async fn wait_detail(&self, component: &str, field: &str, ok: impl Fn(u64) -> bool) {
        tokio::time::timeout(WAIT, async {
            while !ok(self.detail(component, field)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{component}.{field} never as expected"));
    }
}

pub async fn connect_to(addr: SocketAddr, path: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("websocket connects");
    ws
}

pub async fn connect(addr: SocketAddr) -> Client {
    connect_to(addr, "/ws").await
}

pub async fn send(ws: &mut Client, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("sent");
}

/// The next text frame as JSON, skipping WebSocket control frames and heartbeats.
pub async fn recv(ws: &mut Client) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("json");
                    if v["type"] != "heartbeat" {
                        return v;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame within 10 s")
}

/// Reads until the server's Close frame; returns it and how many text frames came first.
pub async fn recv_close<S>(ws: &mut WebSocketStream<S>) -> (Option<(u16, String)>, usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, async {
        let mut texts = 0;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => texts += 1,
                Some(Ok(Message::Close(frame))) => {
                    return (
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                        texts,
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

/// Subscribes without a snapshot and returns the confirmation.
pub async fn subscribe(ws: &mut Client, symbol: &str, exchanges: Option<[&str; 2]>) -> Value {
    let mut req = json!({"op": "subscribe", "symbol": symbol, "snapshot": false});
    if let Some(ex) = exchanges {
        req["exchanges"] = json!(ex);
    }
    send(ws, req).await;
    let reply = recv(ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

pub fn point(symbol: &str, a: &str, b: &str, n: i64) -> Spread {
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

pub fn tick(exchange: &str, symbol: &str, n: i64) -> Tick {
    Tick {
        exchange: exchange.into(),
        symbol: symbol.into(),
        bid_px: 100.0 + n as f64,
        bid_qty: 1.0,
        ask_px: 100.5 + n as f64,
        ask_qty: 2.0,
        book_spread_pct: 0.5,
        exchange_ts_ns: 1_700_000_000_000_000_000 + n,
        recv_ts_ns: 1_700_000_000_001_000_000 + n,
        seq: n as u64,
    }
}

pub fn trade(exchange: &str, symbol: &str, n: i64) -> Trade {
    Trade {
        exchange: exchange.into(),
        symbol: symbol.into(),
        price: 100.0 + n as f64,
        qty: 0.5,
        side: 1,
        trade_id: format!("t{n}"),
        exchange_ts_ns: 1_700_000_000_000_000_000 + n,
        recv_ts_ns: 1_700_000_000_001_000_000 + n,
    }
}

pub fn signal(symbol: &str, kind: SignalKind, n: i64) -> Signal {
    let now = spreadagg_model::time::now_ns();
    let mut s = Signal {
        symbol: symbol.into(),
        deviation_pct: 0.4,
        cheap_exchange: "okx".into(),
        expensive_exchange: "binance".into(),
        cheap_bid: 100.0,
        expensive_bid: 100.4,
        ts_ns: now + n,
        expires_ts_ns: now + 300_000_000_000,
        ..Signal::default()
    };
    s.set_kind(kind);
    s
}

async fn put(bus: &Bus, subject: String, id: String, payload: Vec<u8>) {
    bus.publish(&OutMessage {
        msg_id: id,
        subject,
        payload: Bytes::from(payload),
    })
    .await
    .expect("published");
}

pub async fn publish(bus: &Bus, p: &Spread) {
    let subject = format!("md.spread.{}.{}.{}", p.symbol, p.exchange_a, p.exchange_b);
    put(
        bus,
        subject.clone(),
        format!("{subject}-{}", p.ts_ns),
        p.encode_to_vec(),
    )
    .await;
}

pub async fn publish_tick(bus: &Bus, t: &Tick) {
    let subject = format!("md.tick.{}.{}", t.exchange, t.symbol);
    put(
        bus,
        subject.clone(),
        format!("{subject}-{}", t.seq),
        t.encode_to_vec(),
    )
    .await;
}

pub async fn publish_trade(bus: &Bus, t: &Trade) {
    let subject = format!("md.trade.{}.{}", t.exchange, t.symbol);
    put(
        bus,
        subject.clone(),
        format!("{subject}-{}", t.trade_id),
        t.encode_to_vec(),
    )
    .await;
}

pub async fn publish_signal(bus: &Bus, s: &Signal) {
    let subject = format!("md.signal.{}", s.symbol);
    put(
        bus,
        subject.clone(),
        format!("{subject}-{}", s.ts_ns),
        s.encode_to_vec(),
    )
    .await;
}

/// `ts_ns` of a spread frame made by [`point`], back to its `n`.
pub fn ts(frame: &Value) -> i64 {
    frame["ts_ns"].as_i64().expect("ts_ns") - 1_700_000_000_001_000_000
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
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

/// Waits until a latest-value snapshot of `symbol`'s spreads holds `n` items (the feed has
/// caught up with what was published).
pub async fn wait_latest(addr: SocketAddr, channel: &str, symbol: &str, n: usize) {
    let mut ws = connect(addr).await;
    tokio::time::timeout(WAIT, async {
        loop {
            send(
                &mut ws,
                json!({"op":"subscribe","channel":channel,"symbol":symbol}),
            )
            .await;
            assert_eq!(recv(&mut ws).await["type"], "subscribed");
            let snap = recv(&mut ws).await;
            assert_eq!(snap["type"], "snapshot", "{snap}");
            if snap["items"].as_array().is_some_and(|i| i.len() >= n) {
                return;
            }
            send(
                &mut ws,
                json!({"op":"unsubscribe","channel":channel,"symbol":symbol}),
            )
            .await;
            while recv(&mut ws).await["type"] != "unsubscribed" {}
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the feed caught up");
}
