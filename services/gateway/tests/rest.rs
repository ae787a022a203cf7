//! The REST API and its generated OpenAPI document, against a real gateway on the in-process
//! bus: every documented GET answered with the documented shape.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message as _;
use serde_json::{Value, json};
use spreadagg_gateway::GatewayConfig;
use spreadagg_model::wire::{ChartSnapshot, SignalKind};

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let (head, body) = http_get(addr, path).await;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{path}: {head}"
    );
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

#[tokio::test]
async fn every_get_answers_with_the_latest_values() {
    let gw = start(GatewayConfig {
        chart_timeout_ms: 300,
        ..config()
    })
    .await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 2)).await;
    publish(&gw.bus, &point("ETH-USDC", "binance", "okx", 3)).await;
    publish_tick(&gw.bus, &tick("okx", "BTC-USDT", 4)).await;
    publish_signal(&gw.bus, &signal("BTC-USDT", SignalKind::Entry, 5)).await;
    wait_latest(gw.addr, "spreads", "*", 3).await;
    wait_latest(gw.addr, "ticks", "*", 1).await;
    wait_latest(gw.addr, "signals", "*", 1).await;

    let (status, v) = get_json(gw.addr, "/api/symbols").await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"symbols": ["BTC-USDT", "ETH-USDC"], "limit": 10000})
    );

    let (status, v) = get_json(gw.addr, "/api/spreads").await;
    assert_eq!(status, 200);
    assert_eq!(v["truncated"], false);
    assert_eq!(
        v["items"]
            .as_array()
            .map(|i| i.iter().map(ts).collect::<Vec<_>>()),
        Some(vec![1, 2, 3])
    );
    assert_eq!(v["items"][0]["type"], "spread");

    let (_, v) = get_json(gw.addr, "/api/spreads?symbol=*-USDT&exchange=bybit").await;
    assert_eq!(
        v["items"]
            .as_array()
            .map(|i| i.iter().map(ts).collect::<Vec<_>>()),
        Some(vec![2])
    );
    let (_, v) = get_json(gw.addr, "/api/spreads/BTC-USDT").await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
    let (status, v) = get_json(gw.addr, "/api/spreads/SOL-USDT").await;
    assert_eq!((status, &v["code"]), (404, &json!("unknown_symbol")));
    let (status, v) = get_json(gw.addr, "/api/spreads/btc").await;
    assert_eq!((status, &v["code"]), (400, &json!("bad_request")));
    let (status, _) = get_json(gw.addr, "/api/spreads?symbol=b*").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(gw.addr, "/api/spreads?exchange=ftx").await;
    assert_eq!(status, 400);

    let (status, v) = get_json(gw.addr, "/api/spreads/widest?limit=2").await;
    assert_eq!(status, 200);
    // Every point here has a_to_b 0.5 > b_to_a -1.25: ties, so only the count is checked.
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
    let (status, v) = get_json(gw.addr, "/api/spreads/widest?limit=0").await;
    assert_eq!((status, &v["code"]), (400, &json!("bad_request")));
    let (status, v) = get_json(gw.addr, "/api/spreads/widest?limit=abc").await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!("bad_request")),
        "a JSON error, not text"
    );

    let (_, v) = get_json(gw.addr, "/api/ticks?exchange=okx").await;
    assert_eq!(v["items"][0]["seq"], 4);

    let (_, v) = get_json(gw.addr, "/api/signals").await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["items"][0]["signal"], "entry");

    let (_, v) = get_json(gw.addr, "/api/exchanges").await;
    let exchanges = v["exchanges"].as_array().expect("exchanges");
    assert_eq!(exchanges.len(), 11, "every supported exchange");
    let okx = exchanges
        .iter()
        .find(|e| e["exchange"] == "okx")
        .expect("okx");
    assert_eq!(
        (&okx["state"], &okx["symbols"], &okx["ticks_total"]),
        (&json!("live"), &json!(1), &json!(1))
    );
    let kraken = exchanges
        .iter()
        .find(|e| e["exchange"] == "kraken")
        .expect("kraken");
    assert_eq!(
        (&kraken["state"], &kraken["last_tick_age_ms"]),
        (&json!("unseen"), &Value::Null)
    );

    // Charts come from the engine: none here yet, then one.
    let (status, v) = get_json(gw.addr, "/api/charts/BTC-USDT/okx/binance").await;
    assert_eq!((status, &v["code"]), (503, &json!("chart_unavailable")));
    let mut engine = gw.bus.serve("md.chart.>").await.expect("serves");
    let answering = tokio::spawn(async move {
        while let Some(req) = engine.next().await {
            let chart = ChartSnapshot {
                symbol: "BTC-USDT".into(),
                exchange_a: "binance".into(),
                exchange_b: "okx".into(),
                ts_ns: vec![1],
                spread_pct: vec![0.5],
                upper_band: vec![0.75],
                lower_band: vec![-0.5],
            };
            req.respond(Bytes::from(chart.encode_to_vec()))
                .await
                .expect("answered");
        }
    });
    let (status, v) = get_json(gw.addr, "/api/charts/BTC-USDT/okx/binance").await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"type":"chart","symbol":"BTC-USDT","exchange_a":"binance","exchange_b":"okx",
               "ts_ns":[1],"spread_pct":[0.5],"upper_band":[0.75],"lower_band":[-0.5]})
    );
    let (status, _) = get_json(gw.addr, "/api/charts/BTC-USDT/okx/okx").await;
    assert_eq!(status, 400);
    answering.abort();
    gw.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_docs_page_reads_it() {
    let gw = start(config()).await;
    let (status, doc) = get_json(gw.addr, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/api/symbols",
        "/api/spreads",
        "/api/spreads/{symbol}",
        "/api/spreads/widest",
        "/api/ticks",
        "/api/signals",
        "/api/exchanges",
        "/api/charts/{symbol}/{exchange_a}/{exchange_b}",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in [
        "SpreadPoint",
        "TickPoint",
        "SignalPoint",
        "Chart",
        "ExchangeHealth",
        "ApiError",
    ] {
        assert!(
            schemas.contains_key(s),
            "schema {s} missing: {:?}",
            schemas.keys()
        );
    }
    let (head, body) = http_get(gw.addr, "/docs").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/openapi.json"));
    gw.stop().await;
}
