//! Black-box tests: start the simulator on free ports and talk to it the way any exchange
//! client would, over real sockets (tokio-tungstenite for WebSocket, reqwest for REST).
//!
//! `binance.rs` and `okx.rs` hold each exchange's tests, `shared.rs` those across exchanges;
//! the helpers are here.

mod binance;
mod okx;
mod shared;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{SimConfig, Simulator};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);

/// A running simulator that stops when dropped.
pub struct Sim {
    sim: Option<Simulator>,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    fn ws(&self, exchange: ExchangeId) -> String {
        self.endpoint(exchange).ws_url.clone()
    }

    fn rest(&self, exchange: ExchangeId) -> String {
        self.endpoint(exchange).rest_url.clone()
    }

    fn endpoint(&self, exchange: ExchangeId) -> &spreadagg_simulate::Endpoint {
        self.sim
            .as_ref()
            .and_then(|s| s.endpoint(exchange))
            .expect("exchange is simulated")
    }
}

pub fn config() -> SimConfig {
    SimConfig {
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(2026),
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> Sim {
    let stop = CancellationToken::new();
    let sim = Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    Sim {
        sim: Some(sim),
        stop,
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

/// The next text frame as JSON (control frames are answered by tungstenite and skipped).
pub async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame");
        match frame {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Runs `reading` (a loop over frames) under one overall deadline of [`WAIT`]: when what it
/// waits for never comes while other frames keep flowing, the test fails with a clear message
/// instead of hanging (the per-frame timeout never fires then).
async fn within<T>(what: &str, reading: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, reading)
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: nothing matching within {WAIT:?} (other frames may have kept coming)")
        })
}

/// Reads frames until one satisfies `pick`, skipping the rest; fails after [`WAIT`] in all.
pub async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    within("wait_for", async {
        loop {
            let v = next_json(ws).await;
            if pick(&v) {
                return v;
            }
        }
    })
    .await
}

pub fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a decimal string, got {v}"))
}

pub fn has_eight_decimals(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.split_once('.'))
        .is_some_and(|(_, frac)| frac.len() == 8)
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

pub async fn wait_for_text(ws: &mut Ws, want: &str) {
    within("wait_for_text", async {
        while next_text(ws).await != want {}
    })
    .await;
}
