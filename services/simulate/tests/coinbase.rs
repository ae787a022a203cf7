//! Black-box tests of the simulated Coinbase Advanced Trade: a raw client (tokio-tungstenite,
//! reqwest) checks the documented shapes: the public product list, 5 s to subscribe, one
//! channel per subscribe message, `subscriptions` listing everything held, heartbeats once a
//! second, `l2_data` snapshot then updates, `market_trades`, and a per-connection
//! `sequence_num` without gaps.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use tokio::time::Instant;

use common::{Sim, Ws, close_code, http, json_of, next_frame, send, start};

async fn connect(sim: &Sim) -> Ws {
    common::connect(&sim.ws(ExchangeId::Coinbase)).await
}

/// The next JSON text frame.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = next_frame(ws)
            .await
            .expect("connection open")
            .expect("frame");
        if let Some(v) = json_of(&msg) {
            return v;
        }
    }
}

/// One side of a client book: price text -> size text.
type Side = BTreeMap<String, String>;

fn sub(channel: &str, products: &[&str]) -> String {
    json!({"type": "subscribe", "product_ids": products, "channel": channel}).to_string()
}

#[tokio::test]
async fn rest_product_list() {
    let sim = start(&[ExchangeId::Coinbase]).await;
    let rest = sim.rest(ExchangeId::Coinbase);
    let url = format!("{rest}/api/v3/brokerage/market/products");
    let body: Value = http()
        .get(format!("{url}?product_type=SPOT"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let products = body["products"].as_array().expect("products");
    assert_eq!(body["num_products"].as_u64(), Some(products.len() as u64));
    let btc = products
        .iter()
        .find(|p| p["product_id"] == "BTC-USDT")
        .expect("BTC-USDT listed");
    assert_eq!(btc["base_currency_id"], "BTC");
    assert_eq!(btc["quote_currency_id"], "USDT");
    assert_eq!(btc["product_type"], "SPOT");
    assert_eq!(btc["status"], "online");
    assert_eq!(btc["alias"], "");
    assert!(
        btc["approximate_quote_24h_volume"]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    );
    let futures: Value = http()
        .get(format!("{url}?product_type=FUTURE"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(futures["products"], json!([]));
    let bad = http()
        .get(format!("{url}?product_type=NOPE"))
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status().as_u16(), 400);
    let err: Value = bad.json().await.expect("JSON error body");
    assert_eq!(err["error"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn a_client_that_does_not_subscribe_within_five_seconds_is_closed() {
    let sim = start(&[ExchangeId::Coinbase]).await;
    let mut ws = connect(&sim).await;
    let t0 = Instant::now();
    assert_eq!(close_code(&mut ws, |_| true).await, 1000);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(4_500) && took < Duration::from_secs(7),
        "{took:?}"
    );
}

#[tokio::test]
async fn one_channel_per_message_and_the_listing_of_everything_held() {
    let sim = start(&[ExchangeId::Coinbase]).await;
    let mut ws = connect(&sim).await;
    send(
        &mut ws,
        r#"{"type":"subscribe","product_ids":["BTC-USDT"],"channels":["level2","market_trades"]}"#,
    )
    .await;
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(e.get("sequence_num").is_none());
    send(&mut ws, &sub("level2", &["BTC-USDT", "NOPE-USD"])).await;
    assert_eq!(next(&mut ws).await["type"], "error");

    send(&mut ws, &sub("level2", &["BTC-USDT"])).await;
    let s = next(&mut ws).await;
    assert_eq!(s["channel"], "subscriptions", "{s}");
    assert_eq!(s["sequence_num"], 0);
    assert_eq!(
        s["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"]})
    );
    let snap = next(&mut ws).await;
    assert_eq!(snap["channel"], "l2_data");
    assert_eq!(snap["events"][0]["type"], "snapshot");

    send(&mut ws, &sub("market_trades", &["BTC-USDT", "ETH-USDT"])).await;
    send(&mut ws, r#"{"type":"subscribe","channel":"heartbeats"}"#).await;
    let mut listings = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while listings.len() < 2 && Instant::now() < until {
        let v = next(&mut ws).await;
        if v["channel"] == "subscriptions" {
            listings.push(v["events"][0]["subscriptions"].clone());
        }
    }
    assert_eq!(
        listings.last(),
        Some(
            &json!({"level2": ["BTC-USDT"], "market_trades": ["BTC-USDT", "ETH-USDT"], "heartbeats": ["heartbeats"]})
        )
    );
}

#[tokio::test]
async fn heartbeats_every_second_and_a_sequence_without_gaps() {
    let sim = start(&[ExchangeId::Coinbase]).await;
    let mut ws = connect(&sim).await;
    send(&mut ws, r#"{"type":"subscribe","channel":"heartbeats"}"#).await;
    send(&mut ws, &sub("level2", &["BTC-USDT", "ETH-USDT"])).await;
    send(&mut ws, &sub("market_trades", &["BTC-USDT"])).await;
    let mut last_seq: Option<u64> = None;
    let mut beats: Vec<(Instant, u64)> = Vec::new();
    let mut books: BTreeMap<String, (Side, Side)> = BTreeMap::new();
    let (mut updates, mut trades) = (0, 0);
    let until = Instant::now() + Duration::from_millis(3_500);
    while Instant::now() < until {
        let v = next(&mut ws).await;
        let seq = v["sequence_num"].as_u64().expect("every push is numbered");
        if let Some(last) = last_seq {
            assert_eq!(seq, last + 1, "no gap: {v}");
        }
        last_seq = Some(seq);
        match v["channel"].as_str() {
            Some("heartbeats") => {
                let n = v["events"][0]["heartbeat_counter"]
                    .as_u64()
                    .expect("counter");
                beats.push((Instant::now(), n));
            }
            Some("l2_data") => {
                let e = &v["events"][0];
                let product = e["product_id"].as_str().expect("product").to_owned();
                let book = books.entry(product).or_default();
                if e["type"] == "snapshot" {
                    *book = Default::default();
                } else {
                    updates += 1;
                }
                for u in e["updates"].as_array().expect("updates") {
                    let side = if u["side"] == "bid" {
                        &mut book.0
                    } else {
                        &mut book.1
                    };
                    let px = u["price_level"].as_str().expect("price").to_owned();
                    let qty = u["new_quantity"].as_str().expect("qty").to_owned();
                    if qty == "0" {
                        side.remove(&px);
                    } else {
                        side.insert(px, qty);
                    }
                }
                let best = |m: &BTreeMap<String, String>, max: bool| {
                    let it = m.keys().map(|p| p.parse::<f64>().expect("decimal"));
                    if max {
                        it.fold(f64::MIN, f64::max)
                    } else {
                        it.fold(f64::MAX, f64::min)
                    }
                };
                assert!(
                    best(&book.0, true) < best(&book.1, false),
                    "a crossed book: {v}"
                );
            }
            Some("market_trades") => {
                if v["events"][0]["type"] == "update" {
                    trades += 1;
                    let t = &v["events"][0]["trades"][0];
                    assert!(t["side"] == "BUY" || t["side"] == "SELL");
                }
            }
            Some("subscriptions") => {}
            other => panic!("unexpected channel {other:?}: {v}"),
        }
    }
    assert!(beats.len() >= 2, "{beats:?}");
    for w in beats.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "counters");
        let gap = w[1].0 - w[0].0;
        assert!(
            gap > Duration::from_millis(700) && gap < Duration::from_millis(1_500),
            "{gap:?}"
        );
    }
    assert_eq!(books.len(), 2, "both books");
    assert!(updates > 20, "{updates} level2 updates");
    assert!(trades > 5, "{trades} trades");
}
