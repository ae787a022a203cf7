//! Black-box tests of the simulated MEXC over real sockets: the REST shapes discovery reads,
//! and a WebSocket client that subscribes, pings, and gets binary protobuf pushes (read with a
//! minimal schema-less walker: field 1 of the envelope is the channel).

mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use spreadagg_model::ExchangeId;

use common::{WAIT, Ws, start};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

async fn get(url: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(url).await.expect("HTTP request");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.json().await.expect("JSON body")
}

/// The envelope's channel (field 1, length-delimited, first in the frame as MEXC writes it).
fn channel(frame: &[u8]) -> String {
    assert_eq!(frame.first(), Some(&0x0a), "field 1, wire type 2 first");
    let len = usize::from(*frame.get(1).expect("length"));
    assert!(len < 128, "a one-byte length");
    String::from_utf8(frame[2..2 + len].to_vec()).expect("utf-8 channel")
}

#[tokio::test]
async fn rest_discovery_shapes() {
    let sim = start(&[ExchangeId::Mexc]).await;
    let rest = &sim.rest(ExchangeId::Mexc);
    let info = get(&format!("{rest}/api/v3/exchangeInfo")).await;
    assert!(info["serverTime"].is_i64());
    let btc = info["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .expect("BTCUSDT listed");
    assert_eq!(
        (&btc["baseAsset"], &btc["quoteAsset"], &btc["status"]),
        (&Value::from("BTC"), &Value::from("USDT"), &Value::from("1"))
    );
    let tickers = get(&format!("{rest}/api/v3/ticker/24hr")).await;
    let t = tickers
        .as_array()
        .expect("an array")
        .iter()
        .find(|t| t["symbol"] == "BTCUSDT")
        .expect("BTCUSDT ticker");
    let num = |k: &str| {
        t[k].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{k} is a decimal string: {t}"))
    };
    assert!(num("quoteVolume") > num("volume"), "quote volume, in USDT");
    assert!(0.0 < num("bidPrice") && num("bidPrice") < num("askPrice"));
    assert_eq!(
        get(&format!("{rest}/api/v3/ping")).await,
        serde_json::json!({})
    );
    assert!(get(&format!("{rest}/api/v3/time")).await["serverTime"].is_i64());
}

#[tokio::test]
async fn subscribe_ping_and_binary_pushes() {
    let sim = start(&[ExchangeId::Mexc]).await;
    let url = &sim.ws(ExchangeId::Mexc);
    assert!(url.ends_with("/ws"), "{url}");
    let (mut ws, _): (Ws, _) = tokio::time::timeout(WAIT, connect_async(url.as_str()))
        .await
        .expect("connect in time")
        .expect("handshake");
    let bbo = "spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT";
    let deals = "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT";
    ws.send(Message::text(
        serde_json::json!({"method":"SUBSCRIPTION","params":[bbo, deals],"id":3}).to_string(),
    ))
    .await
    .expect("send");
    ws.send(Message::text(r#"{"method":"PING"}"#))
        .await
        .expect("send");
    let (mut answers, mut channels) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    while answers.len() < 2
        || !channels.iter().any(|c| c == bbo)
        || !channels.iter().any(|c| c == deals)
    {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("frames in time")
            .expect("open")
            .expect("frame");
        match frame {
            Message::Text(t) => answers.push(serde_json::from_str::<Value>(&t).expect("JSON")),
            Message::Binary(b) => channels.push(channel(&b)),
            _ => {}
        }
    }
    assert_eq!(
        answers[0],
        serde_json::json!({"id":3,"code":0,"msg":format!("{bbo},{deals}")})
    );
    assert_eq!(
        answers[1],
        serde_json::json!({"id":0,"code":0,"msg":"PONG"})
    );
}
