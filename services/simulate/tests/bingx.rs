//! Black-box tests of the simulated BingX spot service: a raw client (tokio-tungstenite,
//! reqwest) checks the documented shapes: gzip binary frames, one `dataType` per subscribe,
//! `{"ping":"<id>","time":".."}` answered by `{"pong":"<id>","time":".."}`, disconnection of a
//! client that does not answer, and REST discovery that wants a `timestamp`.

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
    let url = sim.ws(ExchangeId::Bingx);
    assert!(url.ends_with("/market"), "{url}");
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
            Some(Ok(Message::Text(t))) => panic!("BingX sends no text frames: {t}"),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

fn pong(ping: &Value) -> String {
    serde_json::json!({"pong": ping["ping"], "time": ping["time"]}).to_string()
}

/// Reads frames until one satisfies `pick`, answering pings on the way; fails the test after
/// [`WAIT`] in all (data and pings keep coming, so a per-frame timeout would never fire).
async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(ws, WAIT, pick).await
}

async fn wait_for_within(ws: &mut Ws, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
    common::within(limit, async {
        loop {
            let v = next(ws).await.expect("connection open");
            if pick(&v) {
                return v;
            }
            if v.get("ping").is_some() {
                send(ws, &pong(&v)).await;
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
    let sim = start(&[ExchangeId::Bingx]).await;
    let rest = &sim.rest(ExchangeId::Bingx);
    let symbols = get(&format!(
        "{rest}/openApi/spot/v1/common/symbols?timestamp=1"
    ))
    .await;
    assert_eq!(symbols["code"], 0);
    let btc = symbols["data"]["symbols"]
        .as_array()
        .expect("data.symbols")
        .iter()
        .find(|s| s["symbol"] == "BTC-USDT")
        .expect("BTC-USDT listed with a dash")
        .clone();
    assert_eq!(btc["status"], 1, "1 is online");
    assert!(btc["tickSize"].as_f64().is_some_and(|t| t > 0.0));

    let refused = get(&format!("{rest}/openApi/spot/v1/ticker/24hr")).await;
    assert_eq!(refused["code"], 100_400, "no timestamp: {refused}");
    assert!(refused.get("data").is_none());

    let tickers = get(&format!(
        "{rest}/openApi/spot/v1/ticker/24hr?timestamp=1706506795473"
    ))
    .await;
    assert_eq!(tickers["code"], 0);
    let t = tickers["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["symbol"] == "BTC-USDT")
        .expect("BTC-USDT ticker")
        .clone();
    let (quote, base) = (
        t["quoteVolume"].as_f64().expect("quoteVolume"),
        t["volume"].as_f64().expect("volume"),
    );
    assert!(quote > base && base > 0.0, "quoteVolume is quote: {t}");
    let (bid, ask) = (
        t["bidPrice"].as_f64().expect("bidPrice"),
        t["askPrice"].as_f64().expect("askPrice"),
    );
    assert!(0.0 < bid && bid < ask);
}

#[tokio::test]
async fn subscribe_acks_errors_and_pushes() {
    let sim = start(&[ExchangeId::Bingx]).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"id":"id1","reqType":"sub","dataType":"BTC-USDT@bookTicker"}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(
        (ack["id"].as_str(), ack["code"].as_i64()),
        (Some("id1"), Some(0))
    );
    assert!(ack["timestamp"].is_i64());
    // The docs' per-stream examples leave `reqType` out: a subscription all the same.
    send(&mut ws, r#"{"id":"id2","dataType":"BTC-USDT@trade"}"#).await;
    let ack = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(
        (ack["id"].as_str(), ack["code"].as_i64()),
        (Some("id2"), Some(0))
    );

    for (id, request) in [
        (
            "id3",
            r#"{"id":"id3","reqType":"sub","dataType":"NOSUCH-USDT@bookTicker"}"#,
        ),
        (
            "id4",
            r#"{"id":"id4","reqType":"sub","dataType":"btc-usdt@trade"}"#,
        ),
        (
            "id5",
            r#"{"id":"id5","reqType":"sub","dataType":["BTC-USDT@trade","ETH-USDT@trade"]}"#,
        ),
        (
            "id6",
            r#"{"id":"id6","reqType":"sub","dataType":"BTC-USDT@trade,ETH-USDT@trade"}"#,
        ),
    ] {
        send(&mut ws, request).await;
        let err = wait_for(&mut ws, |v| v.get("id").is_some()).await;
        assert_eq!(err["id"], id, "{err}");
        assert_eq!(err["code"], 100_400, "{err}");
        assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
    }

    let bbo = wait_for(&mut ws, |v| v["dataType"] == "BTC-USDT@bookTicker").await;
    assert_eq!(bbo["code"], 0);
    let d = &bbo["data"];
    assert_eq!(
        (d["e"].as_str(), d["s"].as_str()),
        (Some("bookTicker"), Some("BTC-USDT"))
    );
    assert!(d["u"].is_u64() && d["E"].is_i64());
    let price = |k: &str| -> f64 {
        d[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} is a decimal string: {d}"))
    };
    assert!(0.0 < price("b") && price("b") < price("a"));
    assert!(price("B") > 0.0 && price("A") > 0.0);

    let trade = wait_for(&mut ws, |v| v["dataType"] == "BTC-USDT@trade").await;
    let d = &trade["data"];
    assert_eq!(d["e"], "trade");
    assert!(
        d["t"].is_string() && d["T"].is_i64() && d["m"].is_boolean(),
        "{d}"
    );
    assert!(
        d["p"]
            .as_str()
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| p > 0.0)
    );

    // Unsubscribing stops the stream's pushes.
    send(
        &mut ws,
        r#"{"id":"id7","reqType":"unsub","dataType":"BTC-USDT@trade"}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["id"] == "id7").await;
    assert_eq!(ack["code"], 0);
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(2) {
        let v = next(&mut ws).await.expect("open");
        assert_ne!(v["dataType"], "BTC-USDT@trade", "after unsub: {v}");
        if v.get("ping").is_some() {
            send(&mut ws, &pong(&v)).await;
        }
    }
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let sim = start(&[ExchangeId::Bingx]).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"id":"1","reqType":"sub","dataType":"BTC-USDT@bookTicker"}"#,
    )
    .await;
    let began = Instant::now();
    let mut pings = 0;
    // Past the 10 s pong deadline, answering every ping with its own id and time.
    while began.elapsed() < Duration::from_secs(13) {
        let v = next(&mut ws).await.expect("still connected");
        if let Some(id) = v.get("ping") {
            assert!(id.as_str().is_some_and(|s| s.len() == 32), "{v}");
            assert!(
                v["time"].as_str().is_some_and(|t| t.ends_with("+0800")),
                "{v}"
            );
            pings += 1;
            send(&mut ws, &pong(&v)).await;
        }
    }
    assert!(pings >= 2, "a ping every 5 s, got {pings}");
    wait_for(&mut ws, |v| v["dataType"] == "BTC-USDT@bookTicker").await;
}

#[tokio::test]
async fn a_client_that_never_pongs_or_pongs_wrong_is_disconnected() {
    let sim = start(&[ExchangeId::Bingx]).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"id":"1","reqType":"sub","dataType":"BTC-USDT@bookTicker"}"#,
    )
    .await;
    let began = Instant::now();
    loop {
        match next(&mut ws).await {
            None => break,
            Some(v) => {
                if v.get("ping").is_some() {
                    // A pong echoing another id does not count.
                    send(&mut ws, r#"{"pong":"not-the-id","time":"x"}"#).await;
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

#[tokio::test]
async fn a_wait_for_a_frame_that_never_comes_fails_by_its_deadline_while_frames_flow() {
    let sim = start(&[ExchangeId::Bingx]).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"id":"id1","reqType":"sub","dataType":"BTC-USDT@bookTicker"}"#,
    )
    .await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = seen.clone();
    let limit = Duration::from_secs(1);
    let waiting = tokio::spawn(async move {
        wait_for_within(&mut ws, limit, move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        })
        .await
    });
    common::expect_deadline(waiting, &seen, limit).await;
}
