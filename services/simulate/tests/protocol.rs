//! Black-box tests: start the simulator on free ports and talk to it the way any exchange
//! client would, over real sockets (tokio-tungstenite for WebSocket, reqwest for REST).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{SimConfig, SimError, Simulator};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A running simulator that stops when dropped.
struct Sim {
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

fn config() -> SimConfig {
    SimConfig {
        update_interval_ms: 20,
        trade_probability: 0.5,
        seed: Some(2026),
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> Sim {
    let stop = CancellationToken::new();
    let sim = Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    Sim {
        sim: Some(sim),
        stop,
    }
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

/// The next text frame as JSON (control frames are answered by tungstenite and skipped).
async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn next_text(ws: &mut Ws) -> String {
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

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Reads frames until one satisfies `pick`, skipping the rest.
async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next_json(ws).await;
        if pick(&v) {
            return v;
        }
    }
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a decimal string, got {v}"))
}

fn has_eight_decimals(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.split_once('.'))
        .is_some_and(|(_, frac)| frac.len() == 8)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn binance_subscribe_ack_and_data_shapes() {
    let sim = start(config()).await;
    let url = sim.ws(ExchangeId::Binance);
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws"),
        "{url}"
    );
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 1}));

    let book = wait_for(&mut ws, |v| v.get("u").is_some()).await;
    let keys: Vec<&str> = book
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 6, "{book}");
    assert!(book["u"].is_u64());
    assert_eq!(book["s"], "BTCUSDT");
    for k in ["b", "B", "a", "A"] {
        assert!(has_eight_decimals(&book[k]), "{k} in {book}");
    }
    assert!(
        0.0 < num(&book["b"]) && num(&book["b"]) < num(&book["a"]),
        "{book}"
    );

    let trade = wait_for(&mut ws, |v| v["e"] == "trade").await;
    assert_eq!(trade["s"], "BTCUSDT");
    for k in ["E", "t", "T"] {
        assert!(trade[k].is_u64(), "{k} in {trade}");
    }
    assert!(num(&trade["p"]) > 0.0 && num(&trade["q"]) > 0.0, "{trade}");
    assert!(trade["m"].is_boolean() && trade["M"] == true, "{trade}");

    // Update ids increase.
    let mut last = book["u"].as_u64().unwrap_or(0);
    for _ in 0..5 {
        let next = wait_for(&mut ws, |v| v.get("u").is_some()).await;
        let u = next["u"].as_u64().unwrap_or(0);
        assert!(u > last, "{u} after {last}");
        assert!(num(&next["b"]) < num(&next["a"]));
        last = u;
    }
}

#[tokio::test]
async fn binance_list_unsubscribe_and_bad_json_keep_the_connection() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    let pause = || tokio::time::sleep(Duration::from_millis(250)); // stay under 5 messages/s
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["ethbtc@trade","foousdt@bookTicker"],"id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 1}));
    pause().await;
    send(&mut ws, "this is not json").await;
    let err = wait_for(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(err["error"]["code"], 3, "{err}");
    assert!(
        err["error"]["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid JSON")),
        "{err}"
    );
    pause().await;
    send(&mut ws, r#"{"method":"FROB","id":2}"#).await;
    let err = wait_for(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(
        (err["error"]["code"].as_i64(), err["id"].as_i64()),
        (Some(2), Some(2)),
        "{err}"
    );
    pause().await;
    send(
        &mut ws,
        r#"{"method":"UNSUBSCRIBE","params":["foousdt@bookTicker"],"id":3}"#,
    )
    .await;
    wait_for(&mut ws, |v| v.get("result").is_some() && v["id"] == 3).await;
    pause().await;
    send(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#).await;
    let list = wait_for(&mut ws, |v| v["id"] == 4).await;
    assert_eq!(list["result"], json!(["ethbtc@trade"]));
    // Still streaming.
    let trade = wait_for(&mut ws, |v| v["e"] == "trade").await;
    assert_eq!(trade["s"], "ETHBTC");
}

#[tokio::test]
async fn binance_combined_streams_are_wrapped() {
    let sim = start(config()).await;
    let base = sim.ws(ExchangeId::Binance);
    let url = base.replace("/ws", "/stream?streams=solusdt@bookTicker/btcusdc@trade");
    let mut ws = connect(&url).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let v = next_json(&mut ws).await;
        let stream = v["stream"].as_str().expect("combined payload").to_owned();
        assert!(v["data"].is_object(), "{v}");
        seen.insert(stream);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["btcusdc@trade".to_owned(), "solusdt@bookTicker".to_owned()]
    );
}

#[tokio::test]
async fn binance_sends_ping_frames_and_keeps_clients_that_pong() {
    let sim = start(SimConfig {
        binance_ping_interval_s: 1,
        ..config()
    })
    .await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while pings < 3 {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("pings within 4 s")
            .expect("open")
            .expect("frame");
        if let Message::Ping(payload) = frame {
            assert!(!payload.is_empty(), "Binance pings carry a payload to echo");
            pings += 1; // tungstenite answers with the same payload
        }
    }
    send(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"result": [], "id": 1}));
}

#[tokio::test]
async fn binance_disconnects_a_client_sending_more_than_five_messages_a_second() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    for id in 0..6 {
        send(
            &mut ws,
            &format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#),
        )
        .await;
    }
    let mut replies = 0;
    let mut closed = None;
    while let Ok(Some(frame)) = tokio::time::timeout(WAIT, ws.next()).await {
        match frame {
            Ok(Message::Text(_)) => replies += 1,
            Ok(Message::Close(c)) => {
                closed = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(replies, 5);
    assert_eq!(closed, Some(1008));
    // The server is fine: a new connection works.
    let mut again = connect(&sim.ws(ExchangeId::Binance)).await;
    send(&mut again, r#"{"method":"LIST_SUBSCRIPTIONS","id":9}"#).await;
    assert_eq!(next_json(&mut again).await, json!({"result": [], "id": 9}));
}

#[tokio::test]
async fn okx_subscribe_ack_and_data_shapes() {
    let sim = start(config()).await;
    let url = sim.ws(ExchangeId::Okx);
    assert!(url.ends_with("/ws/v5/public"), "{url}");
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},{"channel":"trades","instId":"BTC-USDT"}]}"#,
    )
    .await;
    let mut acks = Vec::new();
    let mut bbo = None;
    let mut trade = None;
    while acks.len() < 2 || bbo.is_none() || trade.is_none() {
        let v = next_json(&mut ws).await;
        if v["event"] == "subscribe" {
            let conn = v["connId"].as_str().expect("connId");
            assert!(
                conn.len() == 8 && conn.bytes().all(|b| b.is_ascii_hexdigit()),
                "{v}"
            );
            acks.push(v["arg"].clone());
        } else if v["arg"]["channel"] == "bbo-tbt" {
            bbo.get_or_insert(v);
        } else if v["arg"]["channel"] == "trades" {
            trade.get_or_insert(v);
        } else {
            panic!("unexpected {v}");
        }
    }
    assert_eq!(
        acks,
        vec![
            json!({"channel": "bbo-tbt", "instId": "BTC-USDT"}),
            json!({"channel": "trades", "instId": "BTC-USDT"})
        ]
    );
    let bbo = bbo.unwrap_or_default();
    assert_eq!(
        bbo["arg"],
        json!({"channel": "bbo-tbt", "instId": "BTC-USDT"})
    );
    let d = &bbo["data"][0];
    for side in ["asks", "bids"] {
        let level = d[side][0].as_array().expect("level");
        assert_eq!(level.len(), 4, "{bbo}");
        assert!(level.iter().all(Value::is_string), "{bbo}");
        assert_eq!(level[2], "0");
    }
    assert!(
        d["ts"].as_str().is_some_and(|t| t.parse::<u64>().is_ok()),
        "{bbo}"
    );
    assert!(d["seqId"].is_u64(), "{bbo}");
    assert!(0.0 < num(&d["bids"][0][0]) && num(&d["bids"][0][0]) < num(&d["asks"][0][0]));

    let trade = trade.unwrap_or_default();
    let t = &trade["data"][0];
    assert_eq!(t["instId"], "BTC-USDT");
    for k in ["tradeId", "px", "sz", "side", "ts", "count"] {
        assert!(t[k].is_string(), "{k} in {trade}");
    }
    assert!(t["side"] == "buy" || t["side"] == "sell");
    assert!(num(&t["px"]) > 0.0 && num(&t["sz"]) > 0.0);
}

#[tokio::test]
async fn okx_ping_pong_and_errors_keep_the_connection() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut ws, "ping").await;
    assert_eq!(next_text(&mut ws).await, "pong");
    send(&mut ws, "{definitely not json").await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["event"].as_str(), e["code"].as_str()),
        (Some("error"), Some("60012")),
        "{e}"
    );
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid request")),
        "{e}"
    );
    send(
        &mut ws,
        r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"NOPE-USDT"}]}"#,
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "60018", "{e}");
    assert!(e["connId"].is_string());
    send(
        &mut ws,
        r#"{"id":"7","op":"subscribe","args":[{"channel":"tickers","instId":"ETH-BTC"}]}"#,
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (ack["id"].as_str(), ack["event"].as_str()),
        (Some("7"), Some("subscribe")),
        "{ack}"
    );
    let ticker = wait_for(&mut ws, |v| v["arg"]["channel"] == "tickers").await;
    assert!(num(&ticker["data"][0]["volCcy24h"]) > 0.0, "{ticker}");
    send(&mut ws, "ping").await;
    wait_for_text(&mut ws, "pong").await;
}

async fn wait_for_text(ws: &mut Ws, want: &str) {
    while next_text(ws).await != want {}
}

#[tokio::test]
async fn binance_rest_lists_the_configured_symbols_with_quote_volumes() {
    let sim = start(config()).await;
    let rest = sim.rest(ExchangeId::Binance);
    assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
    let (status, info) = get(&format!("{rest}/api/v3/exchangeInfo")).await;
    assert_eq!(status, 200);
    assert_eq!(info["timezone"], "UTC");
    let listed: Vec<(String, String, String)> = info["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "TRADING");
            (
                s["symbol"].as_str().unwrap_or_default().to_owned(),
                s["baseAsset"].as_str().unwrap_or_default().to_owned(),
                s["quoteAsset"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = config()
        .symbols
        .iter()
        .map(|s| {
            let (b, q) = s.split_once('-').unwrap_or_default();
            (format!("{b}{q}"), b.to_owned(), q.to_owned())
        })
        .collect();
    assert_eq!(listed, expected);

    let (status, tickers) = get(&format!("{rest}/api/v3/ticker/24hr")).await;
    assert_eq!(status, 200);
    let volume = |sym: &str| {
        tickers
            .as_array()
            .and_then(|a| a.iter().find(|t| t["symbol"] == sym))
            .map(|t| {
                for k in ["lastPrice", "bidPrice", "askPrice", "volume", "quoteVolume"] {
                    assert!(t[k].is_string(), "{k} in {t}");
                }
                assert!(num(&t["bidPrice"]) < num(&t["askPrice"]), "{t}");
                num(&t["quoteVolume"])
            })
            .unwrap_or_else(|| panic!("{sym} listed"))
    };
    assert!(volume("BTCUSDT") > 100_000_000.0);
    assert!(
        volume("NULSUSDT") < 1_000_000.0,
        "the low-volume pair is tiny"
    );
    assert!(volume("ETHUSDT") < volume("BTCUSDT"));

    let (status, one) = get(&format!("{rest}/api/v3/ticker/24hr?symbol=ETHBTC")).await;
    assert_eq!(
        (status, one["symbol"].as_str()),
        (200, Some("ETHBTC")),
        "{one}"
    );
    let (status, bad) = get(&format!("{rest}/api/v3/ticker/24hr?symbol=NOPE")).await;
    assert_eq!(status, 400);
    assert_eq!(bad, json!({"code": -1121, "msg": "Invalid symbol."}));
}

#[tokio::test]
async fn okx_rest_lists_the_configured_symbols_with_quote_volumes() {
    let sim = start(config()).await;
    let rest = sim.rest(ExchangeId::Okx);
    let (status, inst) = get(&format!("{rest}/api/v5/public/instruments?instType=SPOT")).await;
    assert_eq!((status, inst["code"].as_str()), (200, Some("0")));
    let ids: Vec<&str> = inst["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| {
            assert_eq!(
                (i["instType"].as_str(), i["state"].as_str()),
                (Some("SPOT"), Some("live"))
            );
            let id = i["instId"].as_str().unwrap_or_default();
            assert_eq!(
                format!(
                    "{}-{}",
                    i["baseCcy"].as_str().unwrap_or_default(),
                    i["quoteCcy"].as_str().unwrap_or_default()
                ),
                id
            );
            id
        })
        .collect();
    assert_eq!(
        ids,
        config()
            .symbols
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    let (status, tickers) = get(&format!("{rest}/api/v5/market/tickers?instType=SPOT")).await;
    assert_eq!((status, tickers["code"].as_str()), (200, Some("0")));
    let quote_volume = |id: &str| {
        tickers["data"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["instId"] == id))
            .map(|t| {
                for k in ["last", "bidPx", "askPx", "vol24h", "volCcy24h", "ts"] {
                    assert!(t[k].is_string(), "{k} in {t}");
                }
                assert!(num(&t["bidPx"]) < num(&t["askPx"]));
                num(&t["volCcy24h"])
            })
            .unwrap_or_else(|| panic!("{id} listed"))
    };
    assert!(quote_volume("BTC-USDT") > 50_000_000.0);
    assert!(quote_volume("NULS-USDT") < 1_000_000.0);

    for (query, status_want, code) in [("", 400, "50014"), ("?instType=PERP", 400, "51000")] {
        let (status, body) = get(&format!("{rest}/api/v5/market/tickers{query}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (status_want, Some(code)),
            "{body}"
        );
        assert_eq!(body["data"], json!([]));
    }
}

/// Binance and OKX quote the same market: each symbol's mid agrees within 1 %.
#[tokio::test]
async fn the_same_symbol_has_the_same_mid_on_both_exchanges() {
    let sim = start(config()).await;
    let binance = sim.rest(ExchangeId::Binance);
    let okx = sim.rest(ExchangeId::Okx);
    for _ in 0..5 {
        let (_, b) = get(&format!("{binance}/api/v3/ticker/bookTicker")).await;
        let (_, o) = get(&format!("{okx}/api/v5/market/tickers?instType=SPOT")).await;
        for symbol in config().symbols {
            let concat = symbol.replace('-', "");
            let bt = b
                .as_array()
                .and_then(|a| a.iter().find(|t| t["symbol"] == concat.as_str()))
                .expect("binance");
            let ot = o["data"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["instId"] == symbol.as_str()))
                .expect("okx");
            let mid_b = (num(&bt["bidPrice"]) + num(&bt["askPrice"])) / 2.0;
            let mid_o = (num(&ot["bidPx"]) + num(&ot["askPx"])) / 2.0;
            let diff = (mid_b / mid_o - 1.0).abs();
            assert!(diff < 0.01, "{symbol}: binance {mid_b} okx {mid_o}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn stop_closes_every_session_with_a_close_frame_and_join_returns() {
    let mut sim = start(config()).await;
    let binance_url = sim.ws(ExchangeId::Binance);
    let binance = connect(&binance_url).await;
    let mut okx = connect(&sim.ws(ExchangeId::Okx)).await;
    send(
        &mut okx,
        r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#,
    )
    .await;
    wait_for(&mut okx, |v| v["event"] == "subscribe").await;
    let simulator = sim.sim.take().expect("running");
    sim.stop.cancel();
    // Keep reading so both sides finish the closing handshake.
    let read_to_close = |mut ws: Ws| async move {
        let mut texts = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("closes in time")
            {
                Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
                Some(Ok(Message::Close(c))) => return (texts, c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("no Close frame: {e}"),
                None => panic!("no Close frame"),
            }
        }
    };
    let ((b_texts, b_code), (o_texts, o_code)) =
        tokio::join!(read_to_close(binance), read_to_close(okx));
    assert_eq!((b_code, o_code), (Some(1001), Some(1001)));
    assert!(
        b_texts.last().is_some_and(|t| t.contains("serverShutdown")),
        "{b_texts:?}"
    );
    assert!(
        o_texts.last().is_some_and(|t| t.contains("64008")),
        "{o_texts:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), simulator.join())
        .await
        .expect("every task finishes promptly");
    assert!(
        connect_async(binance_url.as_str()).await.is_err(),
        "listeners are closed"
    );
}

#[tokio::test]
async fn exchanges_not_simulated_yet_are_refused_clearly() {
    let err = Simulator::start(
        SimConfig {
            exchanges: vec![ExchangeId::Kraken],
            ..SimConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("kraken is not simulated");
    assert!(matches!(err, SimError::NotSimulated(ExchangeId::Kraken)));
    assert!(err.to_string().contains("not simulated yet"), "{err}");
}

#[tokio::test]
async fn one_exchange_alone() {
    let sim = start(SimConfig {
        exchanges: vec![ExchangeId::Okx],
        ..config()
    })
    .await;
    let endpoints = sim
        .sim
        .as_ref()
        .map(Simulator::endpoints)
        .unwrap_or_default();
    assert_eq!(endpoints.len(), 1);
    let (status, time) = get(&format!("{}/api/v5/public/time", sim.rest(ExchangeId::Okx))).await;
    assert_eq!((status, time["code"].as_str()), (200, Some("0")));
    assert!(
        time["data"][0]["ts"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().is_ok())
    );
}
