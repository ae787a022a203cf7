//! Black-box tests of the simulated Gate.io: a raw client (tokio-tungstenite, reqwest) checks
//! the documented shapes: REST pairs and tickers (and Gate's error body), subscribe answered
//! with the request's id, the error object for an unknown pair or channel, `spot.ping`
//! answered by `spot.pong`, and `spot.book_ticker` / `spot.trades` updates.

mod common;

use serde_json::{Value, json};
use spreadagg_model::ExchangeId;

use common::{Sim, Ws, send, start, wait_for};

async fn connect(sim: &Sim) -> Ws {
    let url = sim.ws(ExchangeId::Gateio);
    assert!(url.ends_with("/ws/v4/"), "{url}");
    common::connect(&url).await
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn get(url: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(url).await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn rest_discovery_shapes() {
    let sim = start(&[ExchangeId::Gateio]).await;
    let rest = &sim.rest(ExchangeId::Gateio);
    let (status, pairs) = get(&format!("{rest}/api/v4/spot/currency_pairs")).await;
    assert_eq!(status, 200);
    let btc = pairs
        .as_array()
        .expect("an array")
        .iter()
        .find(|p| p["id"] == "BTC_USDT")
        .expect("BTC_USDT listed");
    assert_eq!(
        (&btc["base"], &btc["quote"], &btc["trade_status"]),
        (&json!("BTC"), &json!("USDT"), &json!("tradable"))
    );
    let (status, one) = get(&format!("{rest}/api/v4/spot/currency_pairs/BTC_USDT")).await;
    assert_eq!((status, &one["id"]), (200, &json!("BTC_USDT")));

    let (status, tickers) = get(&format!("{rest}/api/v4/spot/tickers")).await;
    assert_eq!(status, 200);
    let t = tickers
        .as_array()
        .expect("an array")
        .iter()
        .find(|t| t["currency_pair"] == "BTC_USDT")
        .expect("BTC_USDT ticker");
    let num = |k: &str| -> f64 {
        t[k].as_str()
            .unwrap_or_else(|| panic!("{k} is a string"))
            .parse()
            .expect("decimal")
    };
    assert!(
        num("quote_volume") > num("base_volume"),
        "quote volume in USDT"
    );
    assert!(num("highest_bid") < num("lowest_ask"));

    for url in [
        format!("{rest}/api/v4/spot/tickers?currency_pair=FOO_USDT"),
        format!("{rest}/api/v4/spot/currency_pairs/FOO_USDT"),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(body["label"], "INVALID_CURRENCY_PAIR", "{url}");
        assert!(body["message"].is_string());
    }
    let (status, one) = get(&format!(
        "{rest}/api/v4/spot/tickers?currency_pair=BTC_USDT"
    ))
    .await;
    assert_eq!((status, one.as_array().map(Vec::len)), (200, Some(1)));
}

#[tokio::test]
async fn subscribe_answers_errors_pongs_and_updates() {
    let sim = start(&[ExchangeId::Gateio]).await;
    let mut ws = connect(&sim).await;
    let t = now_s();
    send(
        &mut ws,
        &json!({"time": t, "id": 11, "channel": "spot.book_ticker", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string(),
    )
    .await;
    let ack = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(ack["id"], 11);
    assert_eq!(ack["event"], "subscribe");
    assert_eq!(ack["channel"], "spot.book_ticker");
    assert_eq!(ack["result"], json!({"status": "success"}));
    assert!(ack["conn_id"].is_string() && ack["time_ms"].is_i64());

    let bbo = wait_for(&mut ws, |v| {
        v["channel"] == "spot.book_ticker" && v["event"] == "update"
    })
    .await;
    let r = &bbo["result"];
    assert_eq!(r["s"], "BTC_USDT");
    assert!(r["u"].is_u64() && r["t"].is_i64());
    let px = |k: &str| {
        r[k].as_str()
            .expect("string")
            .parse::<f64>()
            .expect("decimal")
    };
    assert!(px("b") < px("a") && px("B") > 0.0 && px("A") > 0.0);

    send(
        &mut ws,
        &json!({"time": t, "id": 12, "channel": "spot.trades", "event": "subscribe", "payload": ["BTC_USDT", "ETH_USDT"]}).to_string(),
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["id"] == 12).await;
    assert_eq!(ack["result"]["status"], "success");
    let trade = wait_for(&mut ws, |v| {
        v["channel"] == "spot.trades" && v["event"] == "update"
    })
    .await;
    let r = &trade["result"];
    assert!(r["id"].is_u64());
    let ms = r["create_time_ms"].as_str().expect("a string");
    let (int, frac) = ms.split_once('.').expect("fractional ms");
    assert_eq!(int.len(), 13, "{ms}");
    assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{ms}");
    assert!(matches!(r["side"].as_str(), Some("buy" | "sell")));

    // The documented error object, echoing the id.
    send(
        &mut ws,
        &json!({"time": t, "id": 13, "channel": "spot.book_ticker", "event": "subscribe", "payload": ["GIBBERISH_USD"]}).to_string(),
    )
    .await;
    let err = wait_for(&mut ws, |v| v["id"] == 13).await;
    assert_eq!(
        err["error"],
        json!({"code": 2, "message": "unknown currency pair GIBBERISH_USD"})
    );
    assert_eq!(err["result"], Value::Null);
    send(
        &mut ws,
        &json!({"time": t, "id": 14, "channel": "spot.nope", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string(),
    )
    .await;
    let err = wait_for(&mut ws, |v| v["id"] == 14).await;
    assert_eq!(err["error"]["code"], 2);

    send(
        &mut ws,
        &json!({"time": t, "channel": "spot.ping"}).to_string(),
    )
    .await;
    let pong = wait_for(&mut ws, |v| v["channel"] == "spot.pong").await;
    assert_eq!(pong["event"], "");
    assert_eq!(pong["result"], Value::Null);
    assert!(pong.get("error").is_none());
}

#[tokio::test]
async fn the_refusal_fault_answers_with_the_error_object_and_the_id() {
    let sim = start(&[ExchangeId::Gateio]).await;
    let mut ws = connect(&sim).await;
    sim.sim
        .inject(
            ExchangeId::Gateio,
            spreadagg_simulate::Fault::RefuseSubscription { count: 1 },
        )
        .expect("inject");
    let subscribe = |id: u64| {
        json!({"time": now_s(), "id": id, "channel": "spot.book_ticker", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string()
    };
    send(&mut ws, &subscribe(21)).await;
    let refused = wait_for(&mut ws, |v| v["id"] == 21).await;
    assert_eq!(refused["error"]["code"], 3);
    assert_eq!(refused["result"], Value::Null);
    send(&mut ws, &subscribe(22)).await;
    let ack = wait_for(&mut ws, |v| v["id"] == 22).await;
    assert_eq!(ack["result"]["status"], "success", "only one refusal");
}

/// A client silent for 30 s is closed; one that sends `spot.ping` every 10 s is not.
#[tokio::test]
async fn a_silent_client_is_closed_and_a_pinging_one_is_not() {
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_tungstenite::tungstenite::Message;

    let sim = start(&[ExchangeId::Gateio]).await;
    let subscribe = json!({"time": now_s(), "id": 1, "channel": "spot.book_ticker", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string();
    let mut silent = connect(&sim).await;
    let mut pinging = connect(&sim).await;
    send(&mut silent, &subscribe).await;
    send(&mut pinging, &subscribe).await;
    let t0 = Instant::now();
    let silent_side = async {
        let code = common::close_code(&mut silent, |_| false).await;
        (code, t0.elapsed())
    };
    let pinging_side = async {
        let mut next_ping = Instant::now() + Duration::from_secs(10);
        while t0.elapsed() < Duration::from_secs(36) {
            if Instant::now() >= next_ping {
                send(
                    &mut pinging,
                    &json!({"time": now_s(), "channel": "spot.ping"}).to_string(),
                )
                .await;
                next_ping += Duration::from_secs(10);
            }
            match common::next_until(&mut pinging, Instant::now() + Duration::from_secs(1)).await {
                Some(Some(Ok(Message::Close(c)))) => panic!("a pinging client was closed: {c:?}"),
                Some(None | Some(Err(_))) => panic!("the pinging client's connection ended"),
                _ => {}
            }
        }
    };
    let ((code, after), ()) = tokio::join!(silent_side, pinging_side);
    assert_eq!(code, 1000);
    assert!(
        after >= Duration::from_secs(29) && after < Duration::from_secs(35),
        "closed after {after:?}"
    );
}
