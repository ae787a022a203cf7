//! Black-box tests of the simulated Bybit v5 spot: a raw client (tokio-tungstenite, reqwest)
//! checks the documented shapes: REST envelopes and the required `category`, one ack per
//! subscribe request, the 10-arg cap, `orderbook.1` snapshots and `publicTrade` pushes, the
//! JSON ping and its pong, the drop of a client that stops pinging, and a forced close without
//! a notice.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{Fault, SimConfig};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use common::{Sim, Ws, close_code, http, next_frame, send, wait_for};

/// A simulator of Bybit alone, dropping clients after `idle_s` without a ping.
async fn start(idle_s: u64) -> Sim {
    common::start_with(SimConfig {
        exchanges: vec![ExchangeId::Bybit],
        bybit_idle_timeout_s: idle_s,
        ..SimConfig::default()
    })
    .await
}

async fn connect(sim: &Sim) -> Ws {
    let url = sim.ws(ExchangeId::Bybit);
    assert!(url.ends_with("/v5/public/spot"), "{url}");
    common::connect(&url).await
}

async fn get(url: &str) -> Value {
    let response = http().get(url).send().await.expect("HTTP request");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn rest_discovery_shapes_and_the_required_category() {
    let sim = start(600).await;
    let rest = sim.rest(ExchangeId::Bybit);
    let inst = get(&format!("{rest}/v5/market/instruments-info?category=spot")).await;
    assert_eq!(
        (inst["retCode"].as_i64(), inst["retMsg"].as_str()),
        (Some(0), Some("OK"))
    );
    assert_eq!(inst["result"]["category"], "spot");
    let btc = inst["result"]["list"]
        .as_array()
        .expect("list")
        .iter()
        .find(|i| i["symbol"] == "BTCUSDT")
        .expect("BTCUSDT listed");
    assert_eq!(
        (
            btc["baseCoin"].as_str(),
            btc["quoteCoin"].as_str(),
            btc["status"].as_str()
        ),
        (Some("BTC"), Some("USDT"), Some("Trading"))
    );
    let tickers = get(&format!("{rest}/v5/market/tickers?category=spot")).await;
    assert_eq!(tickers["retCode"], 0);
    let t = tickers["result"]["list"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["symbol"] == "BTCUSDT")
        .expect("BTCUSDT ticker");
    let num = |k: &str| -> f64 {
        t[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} is a decimal string: {t}"))
    };
    assert!(
        num("turnover24h") > num("volume24h"),
        "turnover is in the quote coin"
    );
    assert!(0.0 < num("bid1Price") && num("bid1Price") < num("ask1Price"));
    // Without category, or with a wrong one: retCode 10001 (HTTP 200).
    for path in [
        "/v5/market/instruments-info",
        "/v5/market/tickers",
        "/v5/market/tickers?category=futures",
    ] {
        let body = get(&format!("{rest}{path}")).await;
        assert_eq!(body["retCode"], 10_001, "{path}: {body}");
        assert!(body["retMsg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let linear = get(&format!("{rest}/v5/market/tickers?category=linear")).await;
    assert_eq!(linear["result"]["list"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn subscribe_acks_refusals_and_pushes() {
    let sim = start(600).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"req_id":"1","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v.get("op").is_some()).await;
    assert_eq!(
        (
            ack["success"].as_bool(),
            ack["ret_msg"].as_str(),
            ack["req_id"].as_str(),
            ack["op"].as_str()
        ),
        (Some(true), Some("subscribe"), Some("1"), Some("subscribe"))
    );
    assert!(ack["conn_id"].as_str().is_some_and(|c| !c.is_empty()));

    // Eleven args: refused whole.
    let eleven: Vec<String> = (0..11)
        .map(|_| "\"publicTrade.ETHUSDT\"".to_owned())
        .collect();
    send(
        &mut ws,
        &format!(
            r#"{{"req_id":"2","op":"subscribe","args":[{}]}}"#,
            eleven.join(",")
        ),
    )
    .await;
    let err = wait_for(&mut ws, |v| v.get("op").is_some()).await;
    assert_eq!(
        (
            err["success"].as_bool(),
            err["ret_msg"].as_str(),
            err["req_id"].as_str()
        ),
        (Some(false), Some("args size >10"), Some("2"))
    );
    send(
        &mut ws,
        r#"{"req_id":"3","op":"subscribe","args":["orderbook.1.NOPEUSDT"]}"#,
    )
    .await;
    let err = wait_for(&mut ws, |v| v.get("op").is_some()).await;
    assert_eq!(err["success"], false);
    assert_eq!(err["ret_msg"], "Invalid symbol :[orderbook.1.NOPEUSDT]");

    let book = wait_for(&mut ws, |v| v["topic"] == "orderbook.1.BTCUSDT").await;
    assert_eq!(book["type"], "snapshot");
    assert!(book["ts"].is_i64() && book["cts"].is_i64());
    let d = &book["data"];
    assert_eq!(d["s"], "BTCUSDT");
    assert!(d["u"].is_u64() && d["seq"].is_u64());
    let px = |side: &str| -> f64 {
        d[side][0][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a price string")
    };
    assert!(0.0 < px("b") && px("b") < px("a"));

    let trade = wait_for(&mut ws, |v| v["topic"] == "publicTrade.BTCUSDT").await;
    let t = &trade["data"][0];
    assert!(matches!(t["S"].as_str(), Some("Buy" | "Sell")));
    assert!(t["T"].is_i64());
    assert!(t["i"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(t["BT"], false);
}

#[tokio::test]
async fn pings_keep_a_client_and_silence_drops_it() {
    let sim = start(2).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#,
    )
    .await;
    let began = Instant::now();
    // Pinging every second keeps it past the 2 s deadline.
    while began.elapsed() < Duration::from_secs(4) {
        send(&mut ws, r#"{"req_id":"hb","op":"ping"}"#).await;
        let pong = wait_for(&mut ws, |v| v["op"] == "ping").await;
        assert_eq!(
            (
                pong["success"].as_bool(),
                pong["ret_msg"].as_str(),
                pong["req_id"].as_str()
            ),
            (Some(true), Some("pong"), Some("hb"))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Then silence: dropped (no Close frame), 2 s after the last ping.
    let silent = Instant::now();
    loop {
        match next_frame(&mut ws).await {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(c))) => panic!("Bybit drops silently, got a Close {c:?}"),
            Some(Ok(_)) => {}
        }
    }
    let after = silent.elapsed();
    assert!(after < Duration::from_secs(4), "dropped after {after:?}");
}

#[tokio::test]
async fn a_forced_close_has_no_notice() {
    let sim = start(600).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"op":"subscribe","args":["orderbook.1.BTCUSDT"]}"#,
    )
    .await;
    wait_for(&mut ws, |v| v["topic"] == "orderbook.1.BTCUSDT").await;
    sim.sim
        .inject(ExchangeId::Bybit, Fault::CloseWithNotice)
        .expect("inject");
    // Market data may still arrive first; nothing that is not a push.
    let code = close_code(&mut ws, |v| v.get("topic").is_none()).await;
    assert_eq!(code, 1001);
    assert!(
        ws.next()
            .await
            .is_none_or(|m| m.is_err() || matches!(m, Ok(Message::Close(_))))
    );
}

#[tokio::test]
async fn a_service_restart_pushes_every_book_with_u_1() {
    let sim = start(600).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"op":"subscribe","args":["orderbook.1.BTCUSDT","orderbook.1.ETHUSDT"]}"#,
    )
    .await;
    let first = wait_for(&mut ws, |v| v["topic"] == "orderbook.1.BTCUSDT").await;
    assert!(
        first["data"]["u"].as_u64().is_some_and(|u| u > 1_000),
        "{first}"
    );
    sim.sim.bybit_restart();
    let restarted = wait_for(&mut ws, |v| v["data"]["u"] == 1).await;
    assert_eq!(restarted["type"], "snapshot");
    // Both books start again; what follows counts up from 1.
    let other = if restarted["topic"] == "orderbook.1.BTCUSDT" {
        "orderbook.1.ETHUSDT"
    } else {
        "orderbook.1.BTCUSDT"
    };
    wait_for(&mut ws, |v| v["topic"] == other && v["data"]["u"] == 1).await;
    let next = wait_for(&mut ws, |v| v["topic"] == other && v["data"]["u"] != 1).await;
    let u = next["data"]["u"].as_u64().expect("u");
    assert!((2..1_000).contains(&u), "{next}");
}

#[tokio::test]
async fn a_wait_for_a_frame_that_never_comes_fails_by_its_deadline_while_frames_flow() {
    let sim = start(600).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"req_id":"1","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]}"#,
    )
    .await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = seen.clone();
    let limit = Duration::from_secs(1);
    let waiting = tokio::spawn(async move {
        common::wait_for_within(&mut ws, limit, move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        })
        .await
    });
    common::expect_deadline(waiting, &seen, limit).await;
}
