//! Helpers shared by the black-box tests: a simulator that stops when dropped, a raw WebSocket
//! client (tokio-tungstenite) and an HTTP client.

#![allow(dead_code)]

use std::io::Read;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{SimConfig, Simulator};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);

/// A running simulator that stops when dropped.
pub struct Sim {
    pub sim: Simulator,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    pub fn ws(&self, exchange: ExchangeId) -> String {
        self.sim
            .endpoint(exchange)
            .expect("simulated")
            .ws_url
            .clone()
    }

    pub fn rest(&self, exchange: ExchangeId) -> String {
        self.sim
            .endpoint(exchange)
            .expect("simulated")
            .rest_url
            .clone()
    }
}

pub async fn start(exchanges: &[ExchangeId]) -> Sim {
    start_with(SimConfig {
        exchanges: exchanges.to_vec(),
        ..SimConfig::default()
    })
    .await
}

/// Starts `config` with the tests' quick market (20 ms updates, many trades, a fixed seed).
pub async fn start_with(config: SimConfig) -> Sim {
    let stop = CancellationToken::new();
    let config = SimConfig {
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(7),
        ..config
    };
    let sim = Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    Sim { sim, stop }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next frame, control frames included; `None` when nothing came by `until`.
pub async fn next_until(
    ws: &mut Ws,
    until: Instant,
) -> Option<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>> {
    tokio::time::timeout_at(until, ws.next()).await.ok()
}

/// The next frame within [`WAIT`]; panics on a timeout.
pub async fn next_frame(
    ws: &mut Ws,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    next_until(ws, Instant::now() + WAIT)
        .await
        .expect("a frame in time")
}

/// JSON of a text frame, or of a gzip binary frame (HTX); `None` for anything else.
pub fn json_of(msg: &Message) -> Option<Value> {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
        Message::Binary(b) => {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&b[..])
                .read_to_string(&mut text)
                .ok()?;
            serde_json::from_str(&text).ok()
        }
        _ => None,
    }
}

/// Runs `reading` (a loop over frames) under one overall deadline: when what it waits for
/// never comes while other frames keep flowing (data, heartbeats, pings), the test fails here
/// with a clear message instead of hanging, which a per-frame timeout alone cannot catch.
pub async fn within<T>(limit: Duration, reading: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "wait_for: no frame matching within {limit:?} (other frames may have kept coming)"
            )
        })
}

/// Reads until a JSON frame satisfies `pick`, answering HTX pings on the way; fails the test
/// after [`WAIT`] in all.
pub async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(ws, WAIT, pick).await
}

/// [`wait_for`] with its overall deadline.
pub async fn wait_for_within(ws: &mut Ws, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + limit;
    loop {
        let msg = next_until(ws, until)
            .await
            .unwrap_or_else(|| {
                panic!("wait_for: no frame matching within {limit:?} (other frames may have kept coming)")
            })
            .expect("connection open")
            .expect("frame");
        let Some(v) = json_of(&msg) else { continue };
        if pick(&v) {
            return v;
        }
        if let Some(n) = v.get("ping") {
            ws.send(Message::text(format!(r#"{{"pong":{n}}}"#)))
                .await
                .expect("pong");
        }
    }
}

/// Checks a wait that nothing satisfies (`waiting`, a task running one of the `wait_for`
/// helpers with a deadline of `limit`): it failed with the deadline's message, in about that
/// time, while frames kept coming (`seen` counts them).
pub async fn expect_deadline(
    waiting: tokio::task::JoinHandle<Value>,
    seen: &std::sync::atomic::AtomicUsize,
    limit: Duration,
) {
    let started = Instant::now();
    let failed = tokio::time::timeout(limit * 5, waiting)
        .await
        .expect("the wait ends by its deadline")
        .expect_err("nothing matches, so the wait fails");
    assert!(started.elapsed() < limit * 2, "{:?}", started.elapsed());
    let message = failed
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("no frame matching within"),
        "the deadline's message: {message:?}"
    );
    let seen = seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(seen >= 5, "frames kept coming meanwhile: {seen}");
}

/// The Close frame the server sends next, skipping data; panics if a frame matching
/// `forbidden` comes first.
pub async fn close_code(ws: &mut Ws, forbidden: impl Fn(&Value) -> bool) -> u16 {
    loop {
        match next_frame(ws).await {
            Some(Ok(Message::Close(Some(c)))) => return u16::from(c.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(msg)) => {
                if let Some(v) = json_of(&msg) {
                    assert!(!forbidden(&v), "unexpected before the Close frame: {v}");
                }
            }
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
