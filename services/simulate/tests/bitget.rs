//! Black-box tests of the simulated Bitget (v2 public, spot): a raw client
//! (tokio-tungstenite, reqwest) checks the documented shapes: REST discovery bodies, per
//! argument acks, error events naming their argument, the text `ping`/`pong`, the close of a
//! client that stops pinging, and of one that sends more than 10 messages a second.

mod common;

use std::time::Duration;

use serde_json::Value;
use spreadagg_model::ExchangeId;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use common::{Sim, Ws, close_code, http, next_frame, send, start, wait_for};

async fn connect(sim: &Sim) -> Ws {
    let url = sim.ws(ExchangeId::Bitget);
    assert!(url.ends_with("/v2/ws/public"), "{url}");
    common::connect(&url).await
}

async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

const SUBSCRIBE: &str = r#"{"op":"subscribe","args":[{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},{"instType":"SPOT","channel":"ticker","instId":"FOOUSDT"}]}"#;

/// The spot ticker's fields, in the order of Bitget's Tickers-Channel page.
const TICKER_FIELDS: [&str; 15] = [
    "instId",
    "lastPr",
    "open24h",
    "high24h",
    "low24h",
    "change24h",
    "bidPr",
    "askPr",
    "bidSz",
    "askSz",
    "baseVolume",
    "quoteVolume",
    "openUtc",
    "changeUtc24h",
    "ts",
];

#[tokio::test]
async fn rest_discovery_shapes() {
    let sim = start(&[ExchangeId::Bitget]).await;
    let rest = sim.rest(ExchangeId::Bitget);
    let (status, symbols) = get(&format!("{rest}/api/v2/spot/public/symbols")).await;
    assert_eq!(status, 200);
    assert_eq!(symbols["code"], "00000");
    assert_eq!(symbols["msg"], "success");
    assert!(symbols["requestTime"].is_i64());
    let btc = symbols["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .expect("BTCUSDT listed");
    assert_eq!(
        (&btc["baseCoin"], &btc["quoteCoin"], &btc["status"]),
        (
            &Value::from("BTC"),
            &Value::from("USDT"),
            &Value::from("online")
        )
    );
    assert!(btc["pricePrecision"].is_string());

    let (status, tickers) = get(&format!("{rest}/api/v2/spot/market/tickers")).await;
    assert_eq!(status, 200);
    assert_eq!(tickers["code"], "00000");
    let t = tickers["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["symbol"] == "BTCUSDT")
        .expect("BTCUSDT ticker");
    let number = |k: &str| -> f64 {
        t[k].as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {t}"))
            .parse()
            .unwrap_or_else(|_| panic!("{k} is a decimal: {t}"))
    };
    assert!(number("quoteVolume") > number("baseVolume"), "{t}");
    assert!(0.0 < number("bidPr") && number("bidPr") < number("askPr"));

    let (status, one) = get(&format!("{rest}/api/v2/spot/market/tickers?symbol=ETHUSDT")).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["data"][0]["symbol"], "ETHUSDT");
    for path in [
        "/api/v2/spot/market/tickers?symbol=FOOUSDT",
        "/api/v2/spot/public/symbols?symbol=FOOUSDT",
    ] {
        let (status, err) = get(&format!("{rest}{path}")).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(err["code"], "40034", "{path}");
        assert!(err["data"].is_null(), "{path}");
    }
}

#[tokio::test]
async fn subscribe_acks_errors_and_pushes() {
    let sim = start(&[ExchangeId::Bitget]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, SUBSCRIBE).await;
    let ack = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(
        ack,
        serde_json::json!({"event": "subscribe", "arg": {"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"}})
    );
    let ack = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(
        (ack["event"].as_str(), ack["arg"]["channel"].as_str()),
        (Some("subscribe"), Some("trade"))
    );
    let err = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(
        err,
        serde_json::json!({"event": "error", "arg": {"instType": "SPOT", "channel": "ticker", "instId": "FOOUSDT"}, "code": 30001, "msg": "instType:SPOT,channel:ticker,instId:FOOUSDT doesn't exist", "op": "subscribe"})
    );

    // Tickers, read as raw text to check the documented field order.
    let ticker = loop {
        let Some(Ok(Message::Text(t))) = next_frame(&mut ws).await else {
            panic!("a text frame")
        };
        if t.contains(r#""channel":"ticker""#) {
            break t.to_string();
        }
    };
    let v: Value = serde_json::from_str(&ticker).expect("json");
    assert!(matches!(v["action"].as_str(), Some("snapshot" | "update")));
    assert!(v["ts"].is_i64());
    let data = v["data"][0].as_object().expect("a ticker");
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut sorted_doc = TICKER_FIELDS.to_vec();
    sorted_doc.sort_unstable();
    assert_eq!(keys, sorted_doc, "the documented fields");
    let positions: Vec<usize> = TICKER_FIELDS
        .iter()
        .map(|f| ticker.find(&format!(r#""{f}":"#)).expect("field"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{ticker}");
    let px = |k: &str| -> f64 { data[k].as_str().expect("string").parse().expect("decimal") };
    assert!(0.0 < px("bidPr") && px("bidPr") < px("askPr"));

    let trade = wait_for(&mut ws, |v| {
        v["arg"]["channel"] == "trade" && v["action"] == "update"
    })
    .await;
    let d = &trade["data"][0];
    for k in ["ts", "price", "size", "tradeId"] {
        assert!(d[k].is_string(), "{k}: {trade}");
    }
    assert!(matches!(d["side"].as_str(), Some("buy" | "sell")));
}

#[tokio::test]
async fn text_ping_gets_text_pong_and_bad_requests_get_error_events() {
    let sim = start(&[ExchangeId::Bitget]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, "ping").await;
    match next_frame(&mut ws).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "pong"),
        other => panic!("a text pong, got {other:?}"),
    }
    send(&mut ws, "{not json").await;
    let err = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(
        (err["event"].as_str(), err["code"].as_u64()),
        (Some("error"), Some(30016))
    );
    send(&mut ws, r#"{"op":"login","args":[{}]}"#).await;
    let err = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(err["code"], 30003);
}

#[tokio::test]
async fn more_than_ten_messages_a_second_close_the_connection() {
    let sim = start(&[ExchangeId::Bitget]).await;
    let mut ws = connect(&sim).await;
    for _ in 0..11 {
        send(&mut ws, "ping").await;
    }
    assert_eq!(close_code(&mut ws, |_| false).await, 1008);
}

#[tokio::test]
async fn a_client_that_stops_pinging_is_closed_after_30_s() {
    let sim = start(&[ExchangeId::Bitget]).await;
    let mut ws = connect(&sim).await;
    let began = Instant::now();
    send(&mut ws, SUBSCRIBE).await;
    let code = close_code(&mut ws, |_| false).await;
    let after = began.elapsed();
    assert_eq!(code, 1000);
    assert!(
        after >= Duration::from_secs(29) && after < Duration::from_secs(35),
        "closed after {after:?}"
    );
}
