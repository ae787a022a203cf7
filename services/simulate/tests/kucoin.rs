//! Black-box tests of the simulated KuCoin, played the way KuCoin clients (ours included) do
//! it: `POST /api/v1/bullet-public` for a token and a server, dial `{endpoint}?token=..&
//! connectId=..`, wait for the welcome, subscribe, ping every `pingInterval`. Plain clients
//! (reqwest, tokio-tungstenite) check the documented shapes and the token-refusal recovery.

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

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A running simulator that stops when dropped.
struct Sim {
    sim: Simulator,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sim {
    fn rest(&self) -> String {
        self.sim
            .endpoint(ExchangeId::Kucoin)
            .expect("kucoin is simulated")
            .rest_url
            .clone()
    }
}

async fn start(config: SimConfig) -> Sim {
    let stop = CancellationToken::new();
    let config = SimConfig {
        exchanges: vec![ExchangeId::Kucoin],
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(2026),
        ..config
    };
    let sim = Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    Sim { sim, stop }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn body(response: reqwest::Response) -> Value {
    assert_eq!(response.status().as_u16(), 200, "{}", response.url());
    let v: Value = response.json().await.expect("JSON body");
    assert_eq!(v["code"], "200000", "{v}");
    v["data"].clone()
}

async fn get(url: &str) -> Value {
    body(client().get(url).send().await.expect("GET")).await
}

/// `POST /api/v1/bullet-public`: (token, endpoint, pingInterval ms, pingTimeout ms).
async fn bullet(sim: &Sim) -> (String, String, u64, u64) {
    let url = format!("{}/api/v1/bullet-public", sim.rest());
    let data = body(client().post(&url).send().await.expect("POST")).await;
    let server = &data["instanceServers"][0];
    assert_eq!(server["protocol"], "websocket");
    assert_eq!(server["encrypt"], false, "plain ws://");
    (
        data["token"].as_str().expect("token").to_owned(),
        server["endpoint"].as_str().expect("endpoint").to_owned(),
        server["pingInterval"].as_u64().expect("pingInterval"),
        server["pingTimeout"].as_u64().expect("pingTimeout"),
    )
}

async fn dial(endpoint: &str, token: &str, connect_id: &str) -> Ws {
    let url = format!("{endpoint}?token={token}&connectId={connect_id}");
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url.as_str()))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

/// The next text frame as JSON; `None` once the server has closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON frame"));
            }
            Some(Ok(Message::Binary(_))) => panic!("KuCoin sends text frames"),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Fetches a token and dials as a KuCoin client does; returns the socket and its first frame.
async fn connect(sim: &Sim, connect_id: &str) -> (Ws, Value) {
    let (token, endpoint, _, _) = bullet(sim).await;
    let mut ws = dial(&endpoint, &token, connect_id).await;
    let first = next(&mut ws).await.expect("a first frame");
    (ws, first)
}

#[tokio::test]
async fn rest_shapes_as_documented() {
    let sim = start(SimConfig::default()).await;
    let (a, endpoint, interval, timeout) = bullet(&sim).await;
    let (b, _, _, _) = bullet(&sim).await;
    assert_ne!(a, b, "a fresh token per call");
    assert_eq!((interval, timeout), (18_000, 10_000));
    let ws_url = &sim.sim.endpoint(ExchangeId::Kucoin).expect("kucoin").ws_url;
    assert_eq!(&endpoint, ws_url, "the endpoint is the simulator's own");
    assert!(endpoint.starts_with("ws://127.0.0.1:"), "{endpoint}");

    let symbols = get(&format!("{}/api/v2/symbols", sim.rest())).await;
    let btc = symbols
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["symbol"] == "BTC-USDT")
        .expect("BTC-USDT listed");
    assert_eq!(
        (
            &btc["baseCurrency"],
            &btc["quoteCurrency"],
            &btc["enableTrading"]
        ),
        (
            &Value::from("BTC"),
            &Value::from("USDT"),
            &Value::from(true)
        )
    );
    assert_eq!(btc["priceIncrement"], "0.01");

    let tickers = get(&format!("{}/api/v1/market/allTickers", sim.rest())).await;
    assert!(
        tickers["time"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    let t = tickers["ticker"]
        .as_array()
        .expect("ticker array")
        .iter()
        .find(|t| t["symbol"] == "BTC-USDT")
        .expect("BTC-USDT ticker")
        .clone();
    let num = |k: &str| -> f64 {
        t[k].as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {t}"))
            .parse()
            .unwrap_or_else(|_| panic!("{k} is a number: {t}"))
    };
    assert!(num("buy") < num("sell"), "buy is the bid: {t}");
    assert!(num("volValue") > num("vol"), "volValue is in USDT: {t}");

    let ts = get(&format!("{}/api/v1/timestamp", sim.rest())).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let ts = u128::from(ts.as_u64().expect("ms"));
    assert!(ts.abs_diff(now) < 60_000, "{ts} vs {now}");

    let get_bullet = client()
        .get(format!("{}/api/v1/bullet-public", sim.rest()))
        .send()
        .await
        .expect("GET");
    assert_eq!(get_bullet.status().as_u16(), 405, "bullet-public is a POST");
}

#[tokio::test]
async fn welcome_subscribe_push_ping() {
    let sim = start(SimConfig::default()).await;
    let (mut ws, welcome) = connect(&sim, "sa-test-1").await;
    assert_eq!(
        welcome,
        serde_json::json!({"id": "sa-test-1", "type": "welcome"})
    );
    send(
        &mut ws,
        serde_json::json!({"id": 1, "type": "subscribe", "topic": "/market/ticker:BTC-USDT,ETH-USDT",
            "privateChannel": false, "response": true}),
    )
    .await;
    send(
        &mut ws,
        serde_json::json!({"id": 2, "type": "subscribe", "topic": "/market/match:BTC-USDT,ETH-USDT",
            "privateChannel": false, "response": true}),
    )
    .await;
    send(&mut ws, serde_json::json!({"id": "ping1", "type": "ping"})).await;
    let (mut acks, mut pong, mut tickers, mut matched) = (Vec::new(), false, Vec::new(), false);
    let deadline = Instant::now() + WAIT;
    while !(acks.len() == 2 && pong && tickers.len() >= 2 && matched) {
        assert!(
            Instant::now() < deadline,
            "acks {acks:?} pong {pong} tickers {tickers:?}"
        );
        let v = next(&mut ws).await.expect("open");
        match v["type"].as_str() {
            Some("ack") => acks.push(v["id"].as_str().expect("string id").to_owned()),
            Some("pong") => {
                assert_eq!(v["id"], "ping1");
                pong = true;
            }
            Some("message") if v["subject"] == "trade.ticker" => {
                let d = &v["data"];
                let bid: f64 = d["bestBid"]
                    .as_str()
                    .expect("bestBid")
                    .parse()
                    .expect("num");
                let ask: f64 = d["bestAsk"]
                    .as_str()
                    .expect("bestAsk")
                    .parse()
                    .expect("num");
                assert!(bid < ask, "{v}");
                assert!(
                    d["sequence"]
                        .as_str()
                        .is_some_and(|s| s.parse::<u64>().is_ok())
                );
                assert!(
                    d["time"].as_i64().is_some_and(|t| t > 1_600_000_000_000),
                    "{v}"
                );
                let topic = v["topic"].as_str().expect("topic").to_owned();
                if !tickers.contains(&topic) {
                    tickers.push(topic);
                }
            }
            Some("message") if v["subject"] == "trade.l3match" => {
                let d = &v["data"];
                let ns: i64 = d["time"].as_str().expect("ns string").parse().expect("ns");
                assert!(ns > 1_600_000_000_000_000_000, "{v}");
                assert!(matches!(d["side"].as_str(), Some("buy" | "sell")));
                assert_eq!(
                    v["topic"]
                        .as_str()
                        .map(|t| t.trim_start_matches("/market/match:")),
                    d["symbol"].as_str()
                );
                matched = true;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    acks.sort();
    assert_eq!(acks, ["1", "2"]);
    tickers.sort();
    assert_eq!(
        tickers,
        ["/market/ticker:BTC-USDT", "/market/ticker:ETH-USDT"]
    );
}

#[tokio::test]
async fn dialling_without_a_valid_token_gets_a_401_error_frame() {
    let sim = start(SimConfig::default()).await;
    let (_, endpoint, _, _) = bullet(&sim).await;
    let mut ws = dial(&endpoint, "made-up-token", "c-bad").await;
    assert_eq!(
        next(&mut ws).await.expect("error frame"),
        serde_json::json!({"id": "c-bad", "type": "error", "code": 401, "data": "token is expired"})
    );
    assert_eq!(next(&mut ws).await, None, "then closed");
}

#[tokio::test]
async fn a_refused_token_is_recovered_by_fetching_a_new_one() {
    let sim = start(SimConfig::default()).await;
    let (token, endpoint, _, _) = bullet(&sim).await;
    sim.sim.kucoin_reject_next_tokens(1);
    assert_eq!(sim.sim.kucoin_pending_token_rejections(), 1);
    let mut ws = dial(&endpoint, &token, "c1").await;
    let first = next(&mut ws).await.expect("error frame");
    assert_eq!(sim.sim.kucoin_pending_token_rejections(), 0, "used up");
    assert_eq!(
        (first["type"].as_str(), first["code"].as_u64()),
        (Some("error"), Some(401))
    );
    assert_eq!(next(&mut ws).await, None);
    // The refused token stays refused, as an expired one would.
    let mut again = dial(&endpoint, &token, "c2").await;
    assert_eq!(next(&mut again).await.expect("error")["code"], 401);
    // A fresh token from bullet-public is welcomed.
    let (_, welcome) = connect(&sim, "c3").await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["id"], "c3");
}

#[tokio::test]
async fn a_client_that_stops_pinging_is_dropped() {
    let sim = start(SimConfig {
        kucoin_ping_interval_ms: 1_000,
        kucoin_ping_timeout_ms: 1_000,
        ..SimConfig::default()
    })
    .await;
    let (token, endpoint, interval, timeout) = bullet(&sim).await;
    assert_eq!((interval, timeout), (1_000, 1_000));
    let mut ws = dial(&endpoint, &token, "quiet").await;
    assert_eq!(next(&mut ws).await.expect("welcome")["type"], "welcome");
    // Pinging on time keeps the connection past the limit ...
    let start = Instant::now();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        send(
            &mut ws,
            serde_json::json!({"id": format!("p{i}"), "type": "ping"}),
        )
        .await;
        assert_eq!(next(&mut ws).await.expect("pong")["type"], "pong");
    }
    assert!(start.elapsed() > Duration::from_secs(2));
    // ... and silence ends it within pingInterval + pingTimeout.
    let quiet = Instant::now();
    assert_eq!(next(&mut ws).await, None, "closed");
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}
