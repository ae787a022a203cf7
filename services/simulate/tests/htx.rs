//! Black-box tests of the simulated HTX: a raw client (tokio-tungstenite, reqwest) checks the
//! documented shapes: gzip binary frames, one topic per subscribe, `{"ping":n}` answered by
//! `{"pong":n}`, and disconnection of a client that does not answer.

mod common;

use std::io::Read;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use spreadagg_model::ExchangeId;

use common::{Sim, WAIT, Ws, start};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

async fn connect(sim: &Sim) -> Ws {
    let url = sim.ws(ExchangeId::Htx);
    assert!(url.ends_with("/ws"), "{url}");
    common::connect(&url).await
}

fn gunzip(bytes: &[u8]) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("every server frame is gzip");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next server frame, decompressed; `None` once the server has closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Binary(b))) => return Some(gunzip(&b)),
            Some(Ok(Message::Text(t))) => panic!("HTX sends no text frames: {t}"),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Reads frames until one satisfies `pick`, answering pings on the way; fails the test after
/// [`WAIT`] in all (data and pings keep coming, so a per-frame timeout would never fire).
async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    common::within(WAIT, async {
        loop {
            let v = next(ws).await.expect("connection open");
            if pick(&v) {
                return v;
            }
            if let Some(n) = v.get("ping") {
                send(ws, &format!(r#"{{"pong":{n}}}"#)).await;
            }
        }
    })
    .await
}

async fn get(url: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(url).await.expect("HTTP request");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn rest_discovery_shapes() {
    let sim = start(&[ExchangeId::Htx]).await;
    let rest = &sim.rest(ExchangeId::Htx);
    let symbols = get(&format!("{rest}/v1/common/symbols")).await;
    assert_eq!(symbols["status"], "ok");
    let btc = symbols["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|s| s["symbol"] == "btcusdt")
        .expect("btcusdt listed");
    assert_eq!(btc["base-currency"], "btc");
    assert_eq!(btc["quote-currency"], "usdt");
    assert_eq!(btc["state"], "online");

    let tickers = get(&format!("{rest}/market/tickers")).await;
    assert_eq!(tickers["status"], "ok");
    assert!(tickers["ts"].is_i64());
    let t = tickers["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["symbol"] == "btcusdt")
        .expect("btcusdt ticker");
    let vol = t["vol"].as_f64().expect("vol is a number");
    let amount = t["amount"].as_f64().expect("amount is a number");
    let (bid, ask) = (
        t["bid"].as_f64().expect("bid"),
        t["ask"].as_f64().expect("ask"),
    );
    assert!(vol > 0.0 && bid > 0.0 && bid < ask);
    assert!(vol > amount, "vol is quote volume, amount base volume");
}

#[tokio::test]
async fn subscribe_acks_errors_and_pushes() {
    let sim = start(&[ExchangeId::Htx]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, r#"{"sub":"market.btcusdt.bbo","id":"id1"}"#).await;
    let ack = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(ack["id"], "id1");
    assert_eq!(ack["status"], "ok");
    assert_eq!(ack["subbed"], "market.btcusdt.bbo");
    assert!(ack["ts"].is_i64());
    send(
        &mut ws,
        r#"{"sub":"market.btcusdt.trade.detail","id":"id2"}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(
        (ack["id"].as_str(), ack["status"].as_str()),
        (Some("id2"), Some("ok"))
    );

    send(&mut ws, r#"{"sub":"market.nosuchusdt.bbo","id":"id3"}"#).await;
    let err = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(err["id"], "id3");
    assert_eq!(err["status"], "error");
    assert_eq!(err["err-code"], "bad-request");
    assert!(
        err["err-msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid topic")),
        "{err}"
    );

    let bbo = wait_for(&mut ws, |v| v["ch"] == "market.btcusdt.bbo").await;
    assert!(bbo["ts"].is_i64());
    let tick = &bbo["tick"];
    assert!(tick["seqId"].is_u64());
    assert!(tick["quoteTime"].is_i64());
    assert_eq!(tick["symbol"], "btcusdt");
    let (bid, ask) = (
        tick["bid"].as_f64().expect("bid is a number"),
        tick["ask"].as_f64().expect("ask is a number"),
    );
    assert!(0.0 < bid && bid < ask);
    assert!(tick["bidSize"].as_f64().is_some_and(|s| s > 0.0));
    assert!(tick["askSize"].as_f64().is_some_and(|s| s > 0.0));

    let trade = wait_for(&mut ws, |v| v["ch"] == "market.btcusdt.trade.detail").await;
    let d = &trade["tick"]["data"][0];
    assert!(d["tradeId"].is_u64());
    assert!(d["ts"].is_i64());
    assert!(
        d["id"].is_number() && !d["id"].is_u64(),
        "data[].id overflows u64, as HTX's does: {d}"
    );
    assert!(d["price"].as_f64().is_some_and(|p| p > 0.0));
    assert!(d["amount"].as_f64().is_some_and(|a| a > 0.0));
    assert!(matches!(d["direction"].as_str(), Some("buy" | "sell")));
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let sim = start(&[ExchangeId::Htx]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, r#"{"sub":"market.btcusdt.bbo","id":"1"}"#).await;
    let began = Instant::now();
    let mut pings = 0;
    // Past the 10 s pong deadline, answering every ping with its own number.
    while began.elapsed() < Duration::from_secs(13) {
        let v = next(&mut ws).await.expect("still connected");
        if let Some(n) = v.get("ping") {
            assert!(n.is_u64(), "{v}");
            pings += 1;
            send(&mut ws, &format!(r#"{{"pong":{n}}}"#)).await;
        }
    }
    assert!(pings >= 2, "a ping every 5 s, got {pings}");
    wait_for(&mut ws, |v| v["ch"] == "market.btcusdt.bbo").await;
}

#[tokio::test]
async fn a_client_that_never_pongs_or_pongs_wrong_is_disconnected() {
    let sim = start(&[ExchangeId::Htx]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, r#"{"sub":"market.btcusdt.bbo","id":"1"}"#).await;
    let began = Instant::now();
    loop {
        match next(&mut ws).await {
            None => break,
            Some(v) => {
                if let Some(n) = v.get("ping").and_then(Value::as_u64) {
                    // A pong echoing another number does not count.
                    send(&mut ws, &format!(r#"{{"pong":{}}}"#, n + 7)).await;
                }
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "not disconnected in time"
        );
    }
    let after = began.elapsed();
    assert!(
        after >= Duration::from_secs(14),
        "closed after the first ping (5 s) plus the 10 s deadline, not at {after:?}"
    );
}
