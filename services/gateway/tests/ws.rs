//! Black-box tests of `GET /ws`: every message and error case of the protocol, channels,
//! wildcards, snapshots, limits, slow clients and stopping, against a real `Gateway` on the
//! in-process bus (and once on a real `nats-server`) with real WebSocket clients.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use spreadagg_bus::{Bus, OutMessage, StreamSettings};
use spreadagg_gateway::GatewayConfig;
use spreadagg_model::wire::{ChartSnapshot, SignalKind};
use spreadagg_testkit::NatsServer;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_subscriber_receives_spreads_with_exact_values() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "symbol": "BTC-USDT", "id": "s1", "snapshot": false}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "subscribed", "channel": "spreads", "symbol": "BTC-USDT", "exchanges": null, "id": "s1"})
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 7)).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({
            "type": "spread", "symbol": "BTC-USDT", "exchange_a": "binance", "exchange_b": "okx",
            "bid_a": 107.0, "ask_a": 107.5, "bid_b": 108.0, "ask_b": 108.25,
            "ts_a_ns": 1_700_000_000_000_000_007_i64, "ts_b_ns": 1_700_000_000_000_500_007_i64,
            "a_to_b_pct": 0.5, "b_to_a_pct": -1.25, "bid_bid_pct": -0.75, "staleness_ms": 0.5,
            "triggered_by": "okx", "upper_band": 0.25, "lower_band": -1.5,
            "ts_ns": 1_700_000_000_001_000_007_i64
        })
    );
    send(&mut ws, json!({"op": "ping", "id": 9})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong", "id": 9}));
    gw.stop().await;
}

#[tokio::test]
async fn a_pair_subscription_excludes_other_pairs() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    let reply = subscribe(&mut ws, "BTC-USDT", Some(["okx", "binance"])).await;
    assert_eq!(
        reply["exchanges"],
        json!(["binance", "okx"]),
        "canonical order"
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "bybit", 1)).await;
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 2)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 3)).await;
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 4)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 5)).await;
    let first = recv(&mut ws).await;
    let second = recv(&mut ws).await;
    assert_eq!((ts(&first), ts(&second)), (3, 5));
    assert_eq!(
        (&first["exchange_a"], &first["exchange_b"]),
        (&json!("binance"), &json!("okx"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn wildcards_select_by_base_quote_and_exchange() {
    let gw = start(config()).await;
    let mut usdt_okx = connect(gw.addr).await;
    subscribe(&mut usdt_okx, "*-USDT", Some(["*", "okx"])).await;
    let mut btc = connect(gw.addr).await;
    subscribe(&mut btc, "BTC-*", None).await;
    let mut all = connect(gw.addr).await;
    subscribe(&mut all, "*", Some(["*", "*"])).await;
    for (n, (symbol, a, b)) in [
        ("BTC-USDT", "binance", "okx"),
        ("BTC-USDC", "binance", "okx"),
        ("ETH-USDT", "bybit", "okx"),
        ("ETH-USDT", "binance", "bybit"),
        ("SOL-EUR", "kraken", "coinbase"),
    ]
    .into_iter()
    .enumerate()
    {
        publish(&gw.bus, &point(symbol, a, b, n as i64)).await;
    }
    let take = async |ws: &mut Client, n: usize| {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(ts(&recv(ws).await));
        }
        got
    };
    assert_eq!(take(&mut usdt_okx, 2).await, [0, 2]);
    assert_eq!(take(&mut btc, 2).await, [0, 1]);
    assert_eq!(take(&mut all, 5).await, [0, 1, 2, 3, 4]);
    // Nothing more for the narrower ones: a marker point they both select comes next.
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 9)).await;
    assert_eq!(take(&mut usdt_okx, 1).await, [9]);
    assert_eq!(take(&mut btc, 1).await, [9]);
    gw.stop().await;
}

#[tokio::test]
async fn ticks_trades_and_signals_have_their_channels() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    for req in [
        json!({"op":"subscribe","channel":"ticks","symbol":"BTC-USDT","exchange":"okx","snapshot":false}),
        json!({"op":"subscribe","channel":"trades","symbol":"*","snapshot":false}),
        json!({"op":"subscribe","channel":"signals","symbol":"BTC-USDT","snapshot":false}),
    ] {
        send(&mut ws, req).await;
        assert_eq!(recv(&mut ws).await["type"], "subscribed");
    }
    publish_tick(&gw.bus, &tick("binance", "BTC-USDT", 1)).await; // other exchange
    publish_tick(&gw.bus, &tick("okx", "BTC-USDT", 2)).await;
    let t = recv(&mut ws).await;
    assert_eq!(
        t,
        json!({"type":"tick","exchange":"okx","symbol":"BTC-USDT","bid_px":102.0,"bid_qty":1.0,
               "ask_px":102.5,"ask_qty":2.0,"book_spread_pct":0.5,
               "exchange_ts_ns":1_700_000_000_000_000_002_i64,
               "recv_ts_ns":1_700_000_000_001_000_002_i64,"seq":2})
    );
    publish_trade(&gw.bus, &trade("kraken", "ETH-USD", 3)).await;
    let t = recv(&mut ws).await;
    assert_eq!(
        t,
        json!({"type":"trade","exchange":"kraken","symbol":"ETH-USD","price":103.0,"qty":0.5,
               "side":"buy","trade_id":"t3","exchange_ts_ns":1_700_000_000_000_000_003_i64,
               "recv_ts_ns":1_700_000_000_001_000_003_i64})
    );
    let s = signal("BTC-USDT", SignalKind::Entry, 4);
    publish_signal(&gw.bus, &s).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (&v["type"], &v["signal"]),
        (&json!("signal"), &json!("entry"))
    );
    assert_eq!(v["expires_ts_ns"], json!(s.expires_ts_ns));
    assert_eq!(v["cheap_exchange"], "okx");
    gw.stop().await;
}

#[tokio::test]
async fn a_snapshot_of_the_latest_values_comes_first() {
    let gw = start(GatewayConfig {
        max_snapshot_items: 2,
        ..config()
    })
    .await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 3)).await;
    publish(&gw.bus, &point("ETH-USDT", "bybit", "okx", 4)).await;
    wait_latest(gw.addr, "spreads", "*", 2).await;
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op":"subscribe","symbol":"BTC-USDT","id":1}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let snap = recv(&mut ws).await;
    assert_eq!(
        (
            &snap["type"],
            &snap["channel"],
            &snap["symbol"],
            &snap["truncated"],
            &snap["id"]
        ),
        (
            &json!("snapshot"),
            &json!("spreads"),
            &json!("BTC-USDT"),
            &json!(false),
            &json!(1)
        )
    );
    let items = snap["items"].as_array().expect("items");
    assert_eq!(
        items.iter().map(ts).collect::<Vec<_>>(),
        [2, 3],
        "the latest point per pair, sorted by pair"
    );
    assert_eq!(items[0]["type"], "spread");
    // Live points follow the snapshot.
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 5)).await;
    assert_eq!(ts(&recv(&mut ws).await), 5);
    // A wider snapshot is cut at max_snapshot_items and says so.
    send(&mut ws, json!({"op":"subscribe","symbol":"*"})).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let snap = recv(&mut ws).await;
    assert_eq!(snap["truncated"], true);
    assert_eq!(snap["items"].as_array().map(Vec::len), Some(2));
    gw.stop().await;
}

#[tokio::test]
async fn a_signal_snapshot_holds_only_active_signals() {
    let gw = start(config()).await;
    publish_signal(&gw.bus, &signal("BTC-USDT", SignalKind::Entry, 1)).await;
    publish_signal(&gw.bus, &signal("ETH-USDT", SignalKind::Entry, 2)).await;
    publish_signal(&gw.bus, &signal("ETH-USDT", SignalKind::Exit, 3)).await;
    let mut expired = signal("SOL-USDT", SignalKind::Entry, 4);
    expired.expires_ts_ns = 1;
    publish_signal(&gw.bus, &expired).await;
    // One feed task takes signals in stream order: once this last one is in, all are.
    publish_signal(&gw.bus, &signal("ZEC-USDT", SignalKind::Entry, 5)).await;
    wait_latest(gw.addr, "signals", "ZEC-USDT", 1).await;
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"signals","symbol":"*"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let snap = recv(&mut ws).await;
    let symbols: Vec<&str> = snap["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["symbol"].as_str())
        .collect();
    assert_eq!(
        symbols,
        ["BTC-USDT", "ZEC-USDT"],
        "ETH exited, SOL expired: {snap}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_chart_subscription_gets_the_engines_window_then_live_points() {
    let gw = start(config()).await;
    // The engine's side of the request/reply contract (md.chart.<symbol>.<A>.<B>).
    let mut engine = gw.bus.serve("md.chart.>").await.expect("serves");
    let answering = tokio::spawn(async move {
        while let Some(req) = engine.next().await {
            let chart = ChartSnapshot {
                symbol: "BTC-USDT".into(),
                exchange_a: "binance".into(),
                exchange_b: "okx".into(),
                ts_ns: vec![10, 20],
                spread_pct: vec![0.5, -0.25],
                upper_band: vec![0.75, 0.75],
                lower_band: vec![-0.5, -0.5],
            };
            assert_eq!(req.subject, "md.chart.BTC-USDT.binance.okx");
            req.respond(Bytes::from(chart.encode_to_vec()))
                .await
                .expect("answered");
        }
    });
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["okx","binance"],"id":"c"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type":"subscribed","channel":"charts","symbol":"BTC-USDT","exchanges":["binance","okx"],"id":"c"})
    );
    let snap = recv(&mut ws).await;
    assert_eq!(
        snap["items"],
        json!([{"type":"chart","symbol":"BTC-USDT","exchange_a":"binance","exchange_b":"okx",
                "ts_ns":[10,20],"spread_pct":[0.5,-0.25],"upper_band":[0.75,0.75],
                "lower_band":[-0.5,-0.5]}])
    );
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    assert_eq!(ts(&recv(&mut ws).await), 2, "live points of the pair only");
    answering.abort();
    gw.stop().await;
}

#[tokio::test]
async fn a_chart_without_an_engine_is_an_error_and_the_subscription_stands() {
    let gw = start(GatewayConfig {
        chart_timeout_ms: 200,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    send(
        &mut ws,
        json!({"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["binance","okx"],"id":5}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let err = recv(&mut ws).await;
    assert_eq!(
        (&err["code"], &err["id"]),
        (&json!("chart_unavailable"), &json!(5))
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 3)).await;
    assert_eq!(ts(&recv(&mut ws).await), 3);
    gw.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_the_flow() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    send(
        &mut ws,
        json!({"op": "unsubscribe", "symbol": "BTC-USDT", "id": 2}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "unsubscribed", "channel": "spreads", "symbol": "BTC-USDT", "exchanges": null, "id": 2})
    );
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    subscribe(&mut ws, "ETH-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 3)).await;
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 4)).await;
    let next = recv(&mut ws).await;
    assert_eq!(
        (next["symbol"].as_str(), ts(&next)),
        (Some("ETH-USDT"), 4),
        "no BTC-USDT after unsubscribe"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_the_session_continues() {
    let gw = start(GatewayConfig {
        symbol_warmup_s: 0,
        ..config()
    })
    .await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 0)).await;
    wait_latest(gw.addr, "spreads", "*", 1).await;
    let mut ws = connect(gw.addr).await;
    let cases = [
        (Message::text("not json"), "bad_request", None),
        (
            Message::text(r#"{"op":"dance","id":"d"}"#),
            "unknown_op",
            Some(json!("d")),
        ),
        (
            Message::text(r#"{"op":"subscribe","symbol":"btcusdt","id":1}"#),
            "invalid_symbol",
            Some(json!(1)),
        ),
        (
            Message::text(r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","ftx"]}"#),
            "bad_request",
            None,
        ),
        (
            Message::text(r#"{"op":"subscribe","channel":"news","symbol":"*","id":2}"#),
            "bad_request",
            Some(json!(2)),
        ),
        (
            Message::text(r#"{"op":"subscribe","symbol":"NOPE-USDT","id":3}"#),
            "unknown_symbol",
            Some(json!(3)),
        ),
        (
            Message::Binary(Bytes::from_static(b"\x01\x02")),
            "bad_request",
            None,
        ),
    ];
    for (frame, code, id) in cases {
        ws.send(frame).await.expect("sent");
        let reply = recv(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(reply.get("id").cloned(), id, "{reply}");
    }
    // Still serving this client; wildcards are never "unknown".
    subscribe(&mut ws, "NOPE-*", None).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    gw.stop().await;
}

#[tokio::test]
async fn subscriptions_per_client_are_capped() {
    let gw = start(GatewayConfig {
        max_subscriptions_per_client: 2,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    subscribe(&mut ws, "BTC-USDT", Some(["binance", "okx"])).await;
    subscribe(&mut ws, "BTC-USDT", None).await; // a repeat costs nothing
    send(
        &mut ws,
        json!({"op": "subscribe", "symbol": "ETH-USDT", "id": 3}),
    )
    .await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("too_many_subscriptions"), &json!(3))
    );
    gw.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_rate_are_refused_and_the_session_continues() {
    let gw = start(GatewayConfig {
        requests_per_s: 2.0,
        request_burst: 3,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    for n in 0..5 {
        send(&mut ws, json!({"op": "ping", "id": n})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..5 {
        let v = recv(&mut ws).await;
        codes.push(v.get("code").cloned().unwrap_or_else(|| v["type"].clone()));
    }
    assert_eq!(
        codes,
        [
            json!("pong"),
            json!("pong"),
            json!("pong"),
            json!("rate_limited"),
            json!("rate_limited")
        ]
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "pong"}),
        "tokens come back"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_keeps_sending_past_its_refusals_is_closed() {
    let gw = start(GatewayConfig {
        requests_per_s: 0.2,
        request_burst: 5,
        max_subscriptions_per_client: 10,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    // A few refused are not a flood: a client may pipeline up to its subscriptions and twice
    // its burst (here 20) before it reads a refusal.
    for n in 0..10 {
        send(&mut ws, json!({"op": "ping", "id": n})).await;
    }
    let mut limited = 0;
    for _ in 0..10 {
        if recv(&mut ws).await["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert_eq!(limited, 5);
    // Going on past that is a flood: Close 1008.
    let closed = tokio::time::timeout(WAIT, async {
        let mut n = 10;
        loop {
            if ws
                .send(Message::text(json!({"op": "ping", "id": n}).to_string()))
                .await
                .is_err()
            {
                break None;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_millis(1), ws.next()).await
            {
                if let Message::Close(frame) = msg {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
            }
        }
    })
    .await
    .expect("closed within 10 s");
    assert_eq!(closed, Some((1008, "rate limit exceeded".to_owned())));
    gw.stop().await;
}

#[tokio::test]
async fn heartbeats_arrive_on_a_quiet_connection() {
    let gw = start(GatewayConfig {
        heartbeat_s: 1,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    let beat = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                return serde_json::from_str::<Value>(&t).expect("json");
            }
        }
    })
    .await
    .expect("a heartbeat within 5 s");
    assert_eq!(beat["type"], "heartbeat");
    let ts = beat["ts_ns"].as_i64().expect("ts_ns");
    assert!((ts - spreadagg_model::time::now_ns()).abs() < 10_000_000_000);
    gw.stop().await;
}

#[tokio::test]
async fn heartbeats_and_pings_keep_their_pace_while_frames_flow() {
    let gw = start(GatewayConfig {
        heartbeat_s: 1,
        idle_timeout_s: 3,
        ..config()
    })
    .await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    let publisher = {
        let bus = gw.bus.clone();
        tokio::spawn(async move {
            for n in 0.. {
                publish(&bus, &point("BTC-USDT", "binance", "okx", n)).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // A passive client (it only answers pings, as tungstenite does while reading) outlives
    // the 3 s idle timeout, and heartbeats arrive amid the points.
    let (mut beats, mut points) = (0, 0);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "heartbeat" {
                    beats += 1;
                } else {
                    points += 1;
                }
            }
            Some(Ok(Message::Close(c))) => panic!("closed while passive: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    publisher.abort();
    assert!(points > 100, "points flowed: {points}");
    assert!(
        beats >= 3,
        "heartbeats every second amid {points} points: {beats}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    let big = format!(
        r#"{{"op":"subscribe","symbol":"BTC-USDT","id":"{}"}}"#,
        "x".repeat(10_000)
    );
    ws.send(Message::text(big)).await.expect("sent");
    let (close, _) = recv_close(&mut ws).await;
    assert_eq!(close.map(|c| c.0), Some(1009));
    gw.stop().await;
}

async fn refused_status(addr: std::net::SocketAddr) -> u16 {
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_beyond_max_clients_get_503() {
    let gw = start(GatewayConfig {
        max_clients: 1,
        ..config()
    })
    .await;
    let mut first = connect(gw.addr).await;
    assert_eq!(refused_status(gw.addr).await, 503);
    // The first client is unaffected, and its slot frees when it leaves.
    send(&mut first, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut first).await, json!({"type": "pong"}));
    first.close(None).await.expect("closed");
    drop(first);
    let mut again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok((ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await
            {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot frees up");
    send(&mut again, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut again).await, json!({"type": "pong"}));
    gw.stop().await;
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_of_connections() {
    let gw = start(GatewayConfig {
        max_connections_per_ip: 2,
        ..config()
    })
    .await;
    let _a = connect(gw.addr).await;
    let mut b = connect(gw.addr).await;
    assert_eq!(refused_status(gw.addr).await, 429);
    send(&mut b, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "pong"}));
    gw.stop().await;
}

/// A client with a tiny TCP receive buffer, so that not reading fills the path quickly.
async fn connect_small_buffer_to(
    addr: std::net::SocketAddr,
    path: &str,
) -> WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(addr).await.expect("tcp connects");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("websocket handshake");
    ws
}

async fn connect_small_buffer(addr: std::net::SocketAddr) -> WebSocketStream<TcpStream> {
    connect_small_buffer_to(addr, "/ws").await
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_while_a_fast_one_gets_everything() {
    const BATCH: i64 = 50;
    let gw = start(GatewayConfig {
        client_queue: 64,
        slow_client_drop_limit: 200,
        ..config()
    })
    .await;
    let mut slow = connect_small_buffer(gw.addr).await;
    slow.send(Message::text(
        json!({"op": "subscribe", "symbol": "BTC-USDT"}).to_string(),
    ))
    .await
    .expect("sent");
    let mut fast = connect(gw.addr).await;
    subscribe(&mut fast, "BTC-USDT", None).await;
    // The slow client's confirmation is surely queued by now; from here on it never reads.

    let mut published = 0i64;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while gw.detail("gateway.clients", "slow_disconnects") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never disconnected ({published} points published)"
        );
        for _ in 0..BATCH {
            publish(&gw.bus, &point("BTC-USDT", "binance", "okx", published)).await;
            published += 1;
        }
        for _ in 0..BATCH {
            received.push(ts(&recv(&mut fast).await));
        }
    }
    assert_eq!(
        received,
        (0..published).collect::<Vec<_>>(),
        "the fast client got every point, in order"
    );
    eprintln!("slow client disconnected after {published} points");
    assert_eq!(gw.detail("gateway.clients", "slow_disconnects"), 1);
    assert!(gw.detail("gateway.clients", "dropped") >= 200);

    // The slow client finds what fitted in its buffers, then Close 1008 "too slow".
    let (close, texts) = recv_close(&mut slow).await;
    assert_eq!(close, Some((1008, "too slow".to_owned())));
    assert!(
        (texts as i64) < published,
        "the slow client lost points ({texts} of {published})"
    );

    // The fast client keeps going.
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", published)).await;
    assert_eq!(ts(&recv(&mut fast).await), published);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_whose_oldest_event_waits_past_the_lag_limit_is_dropped() {
    let gw = start(GatewayConfig {
        max_client_lag_ms: 300,
        ..config()
    })
    .await;
    let mut slow = connect_small_buffer(gw.addr).await;
    slow.send(Message::text(
        json!({"op": "subscribe", "symbol": "BTC-USDT", "snapshot": false}).to_string(),
    ))
    .await
    .expect("sent");
    let mut fast = connect(gw.addr).await;
    subscribe(&mut fast, "BTC-USDT", None).await;
    // Enough to fill the slow client's socket buffers, then a trickle that finds its oldest
    // queued point older than 300 ms.
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gw.detail("gateway.clients", "slow_disconnects") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never dropped");
        for _ in 0..100 {
            publish(&gw.bus, &point("BTC-USDT", "binance", "okx", n)).await;
            assert_eq!(ts(&recv(&mut fast).await), n);
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.detail("gateway.clients", "dropped"),
        0,
        "dropped for lag, not by count"
    );
    let (close, _) = recv_close(&mut slow).await;
    assert_eq!(close.map(|c| c.0), Some(1008));
    gw.stop().await;
}

#[tokio::test]
async fn stopping_closes_every_client_with_1012_and_run_returns() {
    let gw = start(GatewayConfig {
        chart_timeout_ms: 10_000,
        ..config()
    })
    .await;
    let mut a = connect(gw.addr).await;
    let mut b = connect_to(gw.addr, "/ws/realtime").await;
    subscribe(&mut a, "BTC-USDT", None).await;
    assert_eq!(recv(&mut b).await["MessageType"], "AllSymbolInfo");
    // Beside them: a /ws/realtime client that never reads while points flood it, and a chart
    // request no engine will answer (10 s timeout): neither may hold the stop back.
    let stuck = connect_small_buffer_to(gw.addr, "/ws/realtime").await;
    let mut waiting = connect(gw.addr).await;
    send(
        &mut waiting,
        json!({"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["binance","okx"]}),
    )
    .await;
    assert_eq!(recv(&mut waiting).await["type"], "subscribed");
    for n in 0..3000 {
        publish(&gw.bus, &point("BTC-USDT", "binance", "okx", n)).await;
    }
    let addr = gw.addr;
    let started = tokio::time::Instant::now();
    gw.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
    drop(stuck);
    for ws in [&mut a, &mut b] {
        let (close, _) = recv_close(ws).await;
        assert_eq!(close, Some((1012, "draining; reconnect".to_owned())));
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_dashboard_and_the_symbol_list_are_served() {
    let gw = start(config()).await;
    let (head, body) = http_get(gw.addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html")
    );
    assert!(body.contains("/assets/dashboard.js") && body.contains("/assets/uPlot.iife.min.js"));
    for asset in [
        "/assets/dashboard.js",
        "/assets/uPlot.iife.min.js",
        "/assets/uPlot.min.css",
    ] {
        let (head, body) = http_get(gw.addr, asset).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{asset}: {head}");
        assert!(body.len() > 1000, "{asset}");
    }
    let (head, _) = http_get(gw.addr, "/assets/nothing.js").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Symbols appear once points for them have passed, whether anyone subscribed or not.
    publish(&gw.bus, &point("ETH-USDT", "binance", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    let symbols = tokio::time::timeout(WAIT, async {
        loop {
            let (_, body) = http_get(gw.addr, "/api/symbols").await;
            let v: Value = serde_json::from_str(body.trim()).expect("json");
            if v["symbols"].as_array().is_some_and(|s| s.len() == 2) {
                return v["symbols"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("symbols listed");
    assert_eq!(symbols, json!(["BTC-USDT", "ETH-USDT"]));
    gw.stop().await;
}

#[tokio::test]
async fn undecodable_messages_are_counted_and_the_feed_goes_on() {
    let gw = start(config()).await;
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", None).await;
    for subject in ["md.spread.BTC-USDT.binance.okx", "md.tick.okx.BTC-USDT"] {
        gw.bus
            .publish(&OutMessage {
                subject: subject.into(),
                msg_id: format!("garbage-{subject}"),
                payload: Bytes::from_static(b"\xff\xff\xff\xff not protobuf"),
            })
            .await
            .expect("published");
    }
    publish(&gw.bus, &point("BTC-USDT", "binance", "ftx", 0)).await; // unknown exchange
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    assert_eq!(ts(&recv(&mut ws).await), 1);
    gw.wait_detail("gateway.feed.spreads", "rejected", |n| n == 2)
        .await;
    gw.wait_detail("gateway.feed.ticks", "rejected", |n| n == 1)
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn spreads_flow_from_a_real_nats_server() {
    let server = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&server.url(), &StreamSettings::default())
        .await
        .expect("connects to NATS");
    let gw = start_on(bus, config()).await;
    assert_eq!(
        gw.health.report()["components"]["gateway.feed.spreads"]["detail"]["bus"],
        "jetstream"
    );
    let mut ws = connect(gw.addr).await;
    subscribe(&mut ws, "BTC-USDT", Some(["binance", "okx"])).await;
    for n in 0..5 {
        publish(&gw.bus, &point("BTC-USDT", "binance", "okx", n)).await;
        publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 100 + n)).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let frame = recv(&mut ws).await;
        assert_eq!(frame["exchange_a"], "binance");
        assert_eq!(frame["bid_a"], json!(100.0 + ts(&frame) as f64));
        got.push(ts(&frame));
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    gw.stop().await;
    drop(server);
}
