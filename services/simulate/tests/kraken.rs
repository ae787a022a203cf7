//! Black-box tests of the simulated Kraken: a raw client (tokio-tungstenite, reqwest) checks
//! the documented shapes: REST with legacy asset codes (`XXBTZUSD`, `XBT/USD`), WebSocket v2
//! with `BTC/USD`, a status on connect, one ack or refusal per symbol, ticker with
//! `event_trigger` `bbo` (and trade-triggered without it), trade snapshots and updates,
//! heartbeats once subscribed, ping/pong.

mod common;

use std::time::Duration;

use serde_json::Value;
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{SimConfig, Simulator};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use common::{Ws, http, json_of, next_until, send};

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
    fn ws(&self, exchange: ExchangeId) -> String {
        self.sim
            .endpoint(exchange)
            .expect("simulated")
            .ws_url
            .clone()
    }

    fn rest(&self, exchange: ExchangeId) -> String {
        self.sim
            .endpoint(exchange)
            .expect("simulated")
            .rest_url
            .clone()
    }
}

/// A simulator listing pairs with legacy codes on both sides (`BTC-USD`, `ETH-BTC`), one
/// side (`BTC-USDT`, `DOGE-USD`) and none (`SOL-USDT`).
async fn start() -> Sim {
    start_with(0.5).await
}

async fn start_with(trade_probability: f64) -> Sim {
    let stop = CancellationToken::new();
    let config = SimConfig {
        exchanges: vec![ExchangeId::Kraken],
        symbols: ["BTC-USD", "ETH-BTC", "BTC-USDT", "DOGE-USD", "SOL-USDT"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        update_interval_ms: 20,
        trade_probability,
        seed: Some(7),
        ..SimConfig::default()
    };
    let sim = Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    Sim { sim, stop }
}

async fn connect(sim: &Sim) -> Ws {
    let url = sim.ws(ExchangeId::Kraken);
    assert!(url.ends_with("/v2"), "{url}");
    common::connect(&url).await
}

/// The next JSON text frame; `None` once the server has closed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match next_until(ws, Instant::now() + common::WAIT)
            .await
            .expect("a frame in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => {
                return Some(
                    serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("{e}: {t}")),
                );
            }
            Some(Ok(Message::Binary(b))) => panic!("Kraken sends JSON text, got {b:?}"),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads frames until one satisfies `pick`; fails the test after [`common::WAIT`] in all
/// (heartbeats and data keep coming, so a per-frame timeout would never fire).
async fn wait_for(ws: &mut Ws, pick: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(ws, common::WAIT, pick).await
}

async fn wait_for_within(ws: &mut Ws, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
    common::within(limit, async {
        loop {
            let v = next(ws).await.expect("connection open");
            if pick(&v) {
                return v;
            }
        }
    })
    .await
}

async fn get(url: &str) -> Value {
    let response = http().get(url).send().await.expect("HTTP request");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.json().await.expect("JSON body")
}

fn rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
    })
}

#[tokio::test]
async fn rest_names_pairs_with_legacy_codes() {
    let sim = start().await;
    let rest = sim.rest(ExchangeId::Kraken);
    let pairs = get(&format!("{rest}/0/public/AssetPairs")).await;
    assert_eq!(pairs["error"], serde_json::json!([]));
    let result = &pairs["result"];
    for (key, altname, wsname, base, quote) in [
        ("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD"),
        ("XETHXXBT", "ETHXBT", "ETH/XBT", "XETH", "XXBT"),
        ("XBTUSDT", "XBTUSDT", "XBT/USDT", "XXBT", "USDT"),
        ("XDGUSD", "XDGUSD", "XDG/USD", "XXDG", "ZUSD"),
        ("SOLUSDT", "SOLUSDT", "SOL/USDT", "SOL", "USDT"),
    ] {
        let p = &result[key];
        assert_eq!(p["altname"], altname, "{key}: {p}");
        assert_eq!(p["wsname"], wsname, "{key}");
        assert_eq!(
            (p["base"].as_str(), p["quote"].as_str()),
            (Some(base), Some(quote))
        );
        assert_eq!(p["status"], "online");
    }
    assert_eq!(result.as_object().map(serde_json::Map::len), Some(5));

    let one = get(&format!("{rest}/0/public/AssetPairs?pair=XBTUSD")).await;
    assert_eq!(
        one["result"]
            .as_object()
            .map(|r| r.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["XXBTZUSD".to_owned()]),
        "by altname"
    );
    let unknown = get(&format!("{rest}/0/public/AssetPairs?pair=NOPE")).await;
    assert_eq!(
        unknown["error"],
        serde_json::json!(["EQuery:Unknown asset pair"])
    );
    assert!(unknown.get("result").is_none());

    let tickers = get(&format!("{rest}/0/public/Ticker")).await;
    assert_eq!(tickers["error"], serde_json::json!([]));
    let t = &tickers["result"]["XXBTZUSD"];
    let n = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .expect("a decimal string")
    };
    let (bid, ask) = (n(&t["b"][0]), n(&t["a"][0]));
    assert!(0.0 < bid && bid < ask, "{t}");
    let (volume, vwap) = (n(&t["v"][1]), n(&t["p"][1]));
    assert!(volume > 0.0 && vwap > 0.0, "{t}");
    assert!(
        (vwap / bid - 1.0).abs() < 0.2,
        "the VWAP is a price near the book: {t}"
    );
    assert!(t["c"].as_array().is_some_and(|c| c.len() == 2));
}

#[tokio::test]
async fn status_then_per_symbol_acks_refusals_snapshot_and_updates() {
    let sim = start().await;
    let mut ws = connect(&sim).await;
    let status = next(&mut ws).await.expect("status on connect");
    assert_eq!(status["channel"], "status");
    assert_eq!(status["type"], "update");
    assert_eq!(status["data"][0]["system"], "online");
    assert_eq!(status["data"][0]["api_version"], "v2");
    assert!(status["data"][0]["connection_id"].is_u64());

    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD","XYZ/USD","DOGE/USD"],"event_trigger":"bbo"},"req_id":1}"#,
    )
    .await;
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut snapshots = Vec::new();
    while acked.len() + refused.len() < 3 || snapshots.len() < 2 {
        let v = next(&mut ws).await.expect("open");
        if v["method"] == "subscribe" {
            assert_eq!(v["req_id"], 1, "{v}");
            assert!(rfc3339(&v["time_in"]) && rfc3339(&v["time_out"]), "{v}");
            if v["success"] == true {
                assert_eq!(v["result"]["channel"], "ticker");
                assert_eq!(v["result"]["event_trigger"], "bbo");
                acked.push(v["result"]["symbol"].as_str().unwrap_or("").to_owned());
            } else {
                assert_eq!(v["success"], false);
                assert_eq!(v["symbol"], "XYZ/USD");
                assert_eq!(v["error"], "Currency pair not supported XYZ/USD");
                refused.push(v);
            }
        } else if v["channel"] == "ticker" && v["type"] == "snapshot" {
            snapshots.push(v["data"][0]["symbol"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(
        acked,
        vec!["BTC/USD", "DOGE/USD"],
        "one ack per symbol, v2 names"
    );
    assert_eq!(refused.len(), 1);
    snapshots.sort();
    assert_eq!(snapshots, vec!["BTC/USD", "DOGE/USD"]);

    let t = wait_for(&mut ws, |v| {
        v["channel"] == "ticker" && v["type"] == "update"
    })
    .await;
    let d = &t["data"][0];
    let (bid, ask) = (
        d["bid"].as_f64().expect("bid is a JSON number"),
        d["ask"].as_f64().expect("ask is a JSON number"),
    );
    assert!(0.0 < bid && bid < ask, "{t}");
    for f in [
        "bid_qty",
        "ask_qty",
        "last",
        "volume",
        "vwap",
        "low",
        "high",
        "change",
        "change_pct",
    ] {
        assert!(d[f].is_number(), "{f}: {t}");
    }
    assert!(rfc3339(&d["timestamp"]), "{t}");

    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":2}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["method"] == "subscribe").await;
    assert_eq!(
        (ack["req_id"].as_u64(), ack["success"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(ack["result"]["snapshot"], false);
    let trade = wait_for(&mut ws, |v| v["channel"] == "trade").await;
    assert_eq!(trade["type"], "update", "no snapshot when asked for none");
    let d = &trade["data"][0];
    assert_eq!(d["symbol"], "BTC/USD");
    assert!(matches!(d["side"].as_str(), Some("buy" | "sell")));
    assert!(matches!(d["ord_type"].as_str(), Some("limit" | "market")));
    assert!(d["trade_id"].is_u64() && d["price"].is_f64() && d["qty"].is_number());
    assert!(rfc3339(&d["timestamp"]));

    send(
        &mut ws,
        r#"{"method":"unsubscribe","params":{"channel":"ticker","symbol":["BTC/USD"]},"req_id":3}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["method"] == "unsubscribe").await;
    assert_eq!(
        (ack["req_id"].as_u64(), ack["success"].as_bool()),
        (Some(3), Some(true))
    );
}

#[tokio::test]
async fn a_trade_snapshot_carries_recent_trades_when_asked() {
    let sim = start().await;
    // A first client sees trades go by, so the exchange has recent ones to show.
    let mut first = connect(&sim).await;
    send(
        &mut first,
        r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":1}"#,
    )
    .await;
    for _ in 0..3 {
        wait_for(&mut first, |v| v["channel"] == "trade").await;
    }
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"]},"req_id":9}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["method"] == "subscribe").await;
    assert_eq!(
        ack["result"]["snapshot"], true,
        "snapshots are on by default"
    );
    let snap = wait_for(&mut ws, |v| v["channel"] == "trade").await;
    assert_eq!(snap["type"], "snapshot");
    let data = snap["data"].as_array().expect("data");
    assert!(!data.is_empty() && data.len() <= 50, "{snap}");
    let ids: Vec<u64> = data.iter().filter_map(|d| d["trade_id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
}

#[tokio::test]
async fn without_bbo_the_ticker_follows_trades_only() {
    let sim = start().await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD"],"snapshot":false},"req_id":1}"#,
    )
    .await;
    let ack = wait_for(&mut ws, |v| v["method"] == "subscribe").await;
    assert_eq!(ack["result"]["event_trigger"], "trades");
    // At 20 ms updates and a 50 % trade chance, a bbo ticker sends ~50 frames a second; a
    // trade-triggered one about half of that, each after a trade.
    let until = Instant::now() + Duration::from_secs(2);
    let mut tickers = 0;
    while let Some(Some(Ok(msg))) = next_until(&mut ws, until).await {
        if json_of(&msg).is_some_and(|v| v["channel"] == "ticker") {
            tickers += 1;
        }
    }
    assert!(tickers > 0, "trade-triggered tickers arrive");
    assert!(
        tickers < 75,
        "{tickers} tickers in 2 s: not on every book change"
    );
}

#[tokio::test]
async fn heartbeats_once_subscribed_and_pings_answered() {
    // No trades at all: a trade subscription is silent but for heartbeats.
    let sim = start_with(0.0).await;
    let mut ws = connect(&sim).await;
    assert_eq!(next(&mut ws).await.expect("status")["channel"], "status");
    // Not subscribed: no heartbeat.
    let until = Instant::now() + Duration::from_millis(1_500);
    while let Some(Some(Ok(msg))) = next_until(&mut ws, until).await {
        let v = json_of(&msg);
        assert!(
            v.as_ref().is_none_or(|v| v["channel"] != "heartbeat"),
            "a heartbeat before any subscription: {v:?}"
        );
    }
    send(&mut ws, r#"{"method":"ping","req_id":101}"#).await;
    let pong = wait_for(&mut ws, |v| v["method"] == "pong").await;
    assert_eq!(pong["req_id"], 101);
    assert!(rfc3339(&pong["time_in"]) && rfc3339(&pong["time_out"]));
    // Subscribed to trades only, and none print: heartbeats fill the silence.
    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"trade","symbol":["ETH/BTC"],"snapshot":false},"req_id":2}"#,
    )
    .await;
    let began = Instant::now();
    wait_for(&mut ws, |v| v["channel"] == "heartbeat").await;
    assert!(began.elapsed() < Duration::from_secs(3));
    // Requests Kraken cannot read are answered with an error, not a disconnect.
    send(&mut ws, "not json").await;
    let err = wait_for(&mut ws, |v| v["success"] == false).await;
    assert!(err["error"].is_string(), "{err}");
    send(
        &mut ws,
        r#"{"method":"subscribe","params":{"channel":"nope","symbol":["BTC/USD"]},"req_id":4}"#,
    )
    .await;
    let err = wait_for(&mut ws, |v| v["success"] == false).await;
    assert_eq!(err["req_id"], 4);
    assert_eq!(err["method"], "subscribe");
}

#[tokio::test]
async fn a_wait_for_a_frame_that_never_comes_fails_by_its_deadline_while_frames_flow() {
    let sim = start().await;
    let mut ws = connect(&sim).await;
    send(&mut ws, r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD"],"event_trigger":"bbo"},"req_id":1}"#).await;
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
