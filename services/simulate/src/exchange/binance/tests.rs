//! Unit tests of the Binance session: replies, payload shapes, pings, limits, lifetime.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::session::*;
use super::*;
use crate::market::{Board, Model};
use crate::market::{MarketEvent, Quote, Trade, Universe};
use crate::ws::ExchangeCtx;
use crate::ws::mock;
use spreadagg_model::ExchangeId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn universe() -> Arc<Universe> {
    let symbols = vec!["BTC-USDT".to_owned(), "ETH-BTC".to_owned()];
    Arc::new(Universe::new(&symbols, &[ExchangeId::Binance]).expect("universe"))
}

fn session() -> Session {
    Session::new(universe(), false, false)
}

fn reply(s: &mut Session, text: &str) -> Value {
    let frame = match s.handle(text) {
        Ok(t) | Err((t, _)) => t,
    };
    serde_json::from_str(&frame).expect("replies are JSON")
}

#[test]
fn requests_get_binance_replies() {
    let mut s = session();
    let cases: &[(&str, &str, Value)] = &[
        (
            "subscribe",
            r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}"#,
            json!({"result": null, "id": 1}),
        ),
        (
            "list",
            r#"{"method":"LIST_SUBSCRIPTIONS","id":"abc"}"#,
            json!({"result": ["btcusdt@bookTicker", "btcusdt@trade"], "id": "abc"}),
        ),
        (
            "unsubscribe",
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":2}"#,
            json!({"result": null, "id": 2}),
        ),
        (
            "unknown symbol accepted",
            r#"{"method":"SUBSCRIBE","params":["foousdt@bookTicker"],"id":3}"#,
            json!({"result": null, "id": 3}),
        ),
        (
            "get combined",
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":4}"#,
            json!({"result": false, "id": 4}),
        ),
        (
            "set combined",
            r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#,
            json!({"result": null, "id": 5}),
        ),
        (
            "null id",
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":null}"#,
            json!({"result": true, "id": null}),
        ),
        (
            "bad json",
            "{not json",
            json!({"error": {"code": 3, "msg": "Invalid JSON: key must be a string at line 1 column 2"}, "id": null}),
        ),
        (
            "unknown method",
            r#"{"method":"SUBSCRIB","id":7}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 20"}, "id": 7}),
        ),
        (
            "missing method",
            r#"{"params":[],"id":8}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 20"}, "id": 8}),
        ),
        (
            "bad id",
            r#"{"method":"LIST_SUBSCRIPTIONS","id":[1]}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": null}),
        ),
        (
            "unknown property",
            r#"{"method":"GET_PROPERTY","params":["colour"],"id":9}"#,
            json!({"error": {"code": 0, "msg": "Unknown property"}, "id": 9}),
        ),
        (
            "bad property value",
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":10}"#,
            json!({"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 10}),
        ),
        (
            "non-string stream",
            r#"{"method":"SUBSCRIBE","params":[42],"id":11}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: stream names must be strings"}, "id": 11}),
        ),
    ];
    for (name, request, want) in cases {
        assert_eq!(&reply(&mut s, request), want, "{name}");
    }
}

#[test]
fn stream_cap_is_all_or_nothing() {
    let mut s = session();
    let many: Vec<String> = (0..MAX_STREAMS).map(|i| format!("sym{i}@trade")).collect();
    let request = json!({"method": "SUBSCRIBE", "params": many, "id": 1}).to_string();
    assert_eq!(reply(&mut s, &request), json!({"result": null, "id": 1}));
    let over = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":2}"#;
    let r = reply(&mut s, over);
    assert_eq!(r["error"]["code"], 2, "{r}");
    assert_eq!(s.streams.len(), MAX_STREAMS);
    assert_eq!(s.wants[0], 0, "the refused stream was not added");
}

#[test]
fn payloads_have_binance_shapes() {
    let mut s = session();
    reply(
        &mut s,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","ethbtc@trade"],"id":1}"#,
    );
    let inst = &s.universe.instruments[0];
    let q = Quote {
        symbol: 0,
        seq: 400_900_217,
        book: crate::market::Book {
            bid: 2_535_190,
            bid_qty: 3_121_000,
            ask: 2_536_520,
            ask_qty: 4_066_000,
            bid_orders: 1,
            ask_orders: 1,
        },
        stats: Model::new(s.universe.clone(), Duration::from_millis(100), 0.0, 1).snapshot(0)[0]
            .quote
            .stats,
        ts_us: 1_672_515_782_136_000,
    };
    let text = s.encode(&MarketEvent::Quote(q)).expect("subscribed");
    assert_eq!(inst.price_decimals, 2);
    assert_eq!(
        text,
        r#"{"u":400900217,"s":"BTCUSDT","b":"25351.90000000","B":"31.21000000","a":"25365.20000000","A":"40.66000000"}"#
    );
    let trade = Trade {
        symbol: 1,
        seq: 1,
        trade_id: 12_345,
        price: 4_684,
        qty: 1_000_000,
        taker_buy: false,
        ts_us: 1_672_515_782_136_000,
    };
    assert_eq!(
        s.encode(&MarketEvent::Trade(trade)).expect("subscribed"),
        r#"{"e":"trade","E":1672515782136,"s":"ETHBTC","t":12345,"p":"0.04684000","q":"100.00000000","T":1672515782136,"m":true,"M":true}"#
    );
    assert!(
        s.encode(&MarketEvent::Trade(Trade { symbol: 0, ..trade }))
            .is_none(),
        "not subscribed"
    );
    s.combined = true;
    s.micros = true;
    let wrapped: Value =
        serde_json::from_str(&s.encode(&MarketEvent::Trade(trade)).expect("subscribed"))
            .expect("json");
    assert_eq!(wrapped["stream"], "ethbtc@trade");
    assert_eq!(wrapped["data"]["T"], 1_672_515_782_136_000_i64);
    let shutdown: Value = serde_json::from_str(&s.server_shutdown()).expect("json");
    assert_eq!(shutdown["stream"], "!serverShutdown");
    assert_eq!(shutdown["data"]["e"], "serverShutdown");
}

struct Harness {
    ctx: Arc<ExchangeCtx>,
    market: broadcast::Sender<MarketEvent>,
    stop: CancellationToken,
}

fn harness(ping: Duration) -> Harness {
    let u = universe();
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(0)));
    let (market, _) = broadcast::channel(16);
    let stop = CancellationToken::new();
    let ctx = Arc::new(ExchangeCtx {
        exchange: ExchangeId::Binance,
        index: 0,
        universe: u,
        board,
        events: market.clone(),
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(1)),
        faults: Arc::new(crate::fault::Faults::new(ExchangeId::Binance)),
        binance_ping_interval: ping,
    });
    Harness { ctx, market, stop }
}

fn start(h: &Harness) -> (tokio::task::JoinHandle<()>, mock::Client) {
    let (socket, client) = mock::socket();
    let session = Session::new(h.ctx.universe.clone(), false, false)
        .with_ping_interval(h.ctx.binance_ping_interval);
    let task = tokio::spawn(mock::run(
        socket,
        h.ctx.clone(),
        session,
        h.market.subscribe(),
    ));
    (task, client)
}

#[tokio::test(start_paused = true)]
async fn pings_and_drops_a_client_that_never_pongs() {
    let h = harness(Duration::from_secs(20));
    let (task, mut client) = start(&h);
    let t0 = Instant::now();
    let Some(Message::Ping(first)) = client.next().await else {
        panic!("a ping first")
    };
    assert_eq!(t0.elapsed(), Duration::from_secs(20));
    assert!(!first.is_empty());
    let mut closed = None;
    while let Some(frame) = client.next().await {
        if let Message::Close(Some(c)) = frame {
            closed = Some(c.code);
            break;
        }
    }
    assert_eq!(closed, Some(1008));
    // The first ping went out at 20 s; a minute later the connection is gone.
    assert_eq!(t0.elapsed(), Duration::from_secs(80));
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn pongs_echoing_the_payload_keep_the_connection() {
    let h = harness(Duration::from_secs(20));
    let (task, mut client) = start(&h);
    for _ in 0..10 {
        match client.next().await {
            Some(Message::Ping(p)) => {
                let _ = client.to_server.send(Message::Pong(p));
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    // 200 s in, well past one pong timeout: still open. An unsolicited pong does not help.
    let _ = client
        .to_server
        .send(Message::Pong(Bytes::from_static(b"x")));
    h.stop.cancel();
    let shutdown = client.next_text().await.expect("serverShutdown");
    assert!(shutdown.contains("serverShutdown"), "{shutdown}");
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn a_sixth_message_within_a_second_disconnects() {
    let h = harness(Duration::from_secs(20));
    let (task, mut client) = start(&h);
    for i in 0..5 {
        client.send_text(&format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}"#));
        let r = client.next_text().await.expect("reply");
        assert!(r.contains("result"), "{r}");
    }
    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":5}"#);
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1008));
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn closes_at_the_24_hour_mark() {
    let h = harness(Duration::from_secs(3_600 * 25));
    let (task, mut client) = start(&h);
    let t0 = Instant::now();
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1000));
    assert_eq!(t0.elapsed(), MAX_CONNECTION_AGE);
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn lagging_sessions_skip_and_carry_on() {
    let h = harness(Duration::from_secs(20));
    let (socket, mut client) = mock::socket();
    let mut session = Session::new(h.ctx.universe.clone(), false, false);
    session.subscribe(["btcusdt@trade"]).expect("subscribe");
    let events = h.market.subscribe();
    let trade = |id| {
        MarketEvent::Trade(Trade {
            symbol: 0,
            seq: id,
            trade_id: id,
            price: 1,
            qty: 1,
            taker_buy: true,
            ts_us: 0,
        })
    };
    // Overflow the 16-slot channel before the session reads anything.
    for id in 0..40 {
        let _ = h.market.send(trade(id));
    }
    let task = tokio::spawn(mock::run(socket, h.ctx.clone(), session, events));
    let first: Value =
        serde_json::from_str(&client.next_text().await.expect("trade")).expect("json");
    assert_eq!(first["t"], 24, "the oldest 24 were skipped");
    h.stop.cancel();
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn ignore_pongs_lets_the_pong_deadline_close_a_client_that_answers() {
    let h = harness(Duration::from_secs(20));
    let (task, mut client) = start(&h);
    h.ctx
        .faults
        .inject(crate::fault::Fault::IgnorePongs {
            duration_ms: 3_600_000,
        })
        .expect("inject");
    let t0 = Instant::now();
    let code = loop {
        match client.next().await {
            Some(Message::Ping(p)) => {
                let _ = client.to_server.send(Message::Pong(p));
            }
            Some(Message::Close(Some(c))) => break c.code,
            other => panic!("expected pings then a Close, got {other:?}"),
        }
    };
    assert_eq!(code, 1008, "Binance's pong-timeout close");
    // First ping at 20 s, answered but ignored; its minute runs out at 80 s.
    assert_eq!(t0.elapsed(), Duration::from_secs(80));
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn a_stall_keeps_server_pings_and_replies_but_withholds_data() {
    let h = harness(Duration::from_secs(1));
    let (task, mut client) = start(&h);
    client.send_text(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#);
    assert!(
        client
            .next_text()
            .await
            .is_some_and(|r| r.contains("result"))
    );
    h.ctx
        .faults
        .inject(crate::fault::Fault::Stall {
            duration_ms: 10_000,
        })
        .expect("inject");
    let trade = MarketEvent::Trade(Trade {
        symbol: 0,
        seq: 1,
        trade_id: 1,
        price: 1,
        qty: 1,
        taker_buy: true,
        ts_us: 0,
    });
    let _ = h.market.send(trade);
    // Within the stall: a ping (answered), a reply, and no trade.
    let Some(Message::Ping(p)) = client.next().await else {
        panic!("server pings go on during a stall")
    };
    let _ = client.to_server.send(Message::Pong(p));
    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#);
    loop {
        match client.next().await {
            Some(Message::Text(t)) => {
                assert!(t.as_str().contains(r#""id":2"#), "only the reply: {t}");
                break;
            }
            Some(Message::Ping(p)) => {
                let _ = client.to_server.send(Message::Pong(p));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = h.market.send(trade);
    loop {
        match client.next().await {
            Some(Message::Text(t)) => {
                assert!(t.as_str().contains(r#""e":"trade""#), "data resumes: {t}");
                break;
            }
            // Pings queued while the test slept; answering them all at once would trip the
            // five-per-second limit, and the pong deadline is a minute away.
            Some(Message::Ping(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    h.stop.cancel();
    task.await.expect("session");
}
