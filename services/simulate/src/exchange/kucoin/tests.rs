//! The KuCoin session as a state machine, the serve loop over a mock socket in paused time, and
//! the token knob.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use serde_json::Value;
use spreadagg_model::ExchangeId;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{
    Opening, Session, TOPICS_PER_CONNECTION, TOPICS_PER_MESSAGE, UPLINK_LIMIT, UPLINK_WINDOW,
    refusal,
};
use super::{DEFAULT_TIMING, KucoinState, tokens};
use crate::market::{Book, MarketEvent, Quote, Stats, Trade, Universe};
use crate::ws::{ExchangeCtx, mock};

fn universe(symbols: &[&str]) -> Arc<Universe> {
    let symbols: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
    Arc::new(Universe::new(&symbols, &[ExchangeId::Kucoin]).expect("universe"))
}

fn session(symbols: &[&str]) -> Session {
    Session::new(universe(symbols), "cid-1", DEFAULT_TIMING, Instant::now())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends one message; returns the single reply (if any) as JSON and the rejection label.
fn one(s: &mut Session, text: &str) -> (Option<Value>, Option<&'static str>) {
    let (frames, rejected) = s.handle(text, Instant::now());
    assert!(frames.len() <= 1, "{frames:?}");
    (frames.first().map(|f| json(f)), rejected)
}

fn sub(id: u64, topic: &str, response: bool) -> String {
    serde_json::json!({"id": id, "type": "subscribe", "topic": topic,
        "privateChannel": false, "response": response})
    .to_string()
}

fn quote(symbol: usize) -> MarketEvent {
    MarketEvent::Quote(Quote {
        symbol,
        seq: 42,
        book: Book {
            bid: 6_724_990,
            bid_qty: 150_000,
            ask: 6_725_000,
            ask_qty: 20_000,
            bid_orders: 1,
            ask_orders: 1,
        },
        stats: Stats {
            open: 6_700_000,
            high: 6_800_000,
            low: 6_600_000,
            last: 6_725_000,
            last_qty: 1_000,
            quote_volume: 1e6,
            base_volume: 15.0,
            trade_count: 10,
            last_trade_id: 9,
        },
        ts_us: 1_704_873_323_416_123,
    })
}

fn trade(symbol: usize) -> MarketEvent {
    MarketEvent::Trade(Trade {
        symbol,
        seq: 43,
        trade_id: 77,
        price: 6_725_000,
        qty: 300,
        taker_buy: false,
        ts_us: 1_729_843_222_921_123,
    })
}

#[test]
fn welcome_echoes_the_connect_id() {
    let s = session(&["BTC-USDT"]);
    assert_eq!(
        json(&s.welcome()),
        serde_json::json!({"id": "cid-1", "type": "welcome"})
    );
    assert_eq!(
        json(&refusal("cid-2", tokens::EXPIRED)),
        serde_json::json!({"id": "cid-2", "type": "error", "code": 401, "data": "token is expired"})
    );
}

#[test]
fn subscribe_is_acked_by_id_only_when_asked() {
    let mut s = session(&["BTC-USDT", "ETH-USDT"]);
    let (reply, rejected) = one(&mut s, &sub(7, "/market/ticker:BTC-USDT,ETH-USDT", true));
    assert_eq!(reply, Some(serde_json::json!({"id": "7", "type": "ack"})));
    assert_eq!(rejected, None);
    assert_eq!(s.topics(), 2, "one topic per symbol");
    let (reply, rejected) = one(&mut s, &sub(8, "/market/match:BTC-USDT", false));
    assert_eq!(
        (reply, rejected),
        (None, None),
        "no ack without response:true"
    );
    assert_eq!(s.topics(), 3);
    // Subscribing again holds nothing more.
    one(&mut s, &sub(9, "/market/ticker:BTC-USDT", true));
    assert_eq!(s.topics(), 3);
}

#[test]
fn unknown_topics_are_refused_whole() {
    let mut s = session(&["BTC-USDT"]);
    let (reply, rejected) = one(&mut s, &sub(1, "/market/ticker:BTC-USDT,FOO-USDT", true));
    assert_eq!(
        reply,
        Some(serde_json::json!({"id": "1", "type": "error", "code": 404,
            "data": "topic /market/ticker:FOO-USDT is not found"}))
    );
    assert_eq!(rejected, Some("invalid_topic"));
    assert_eq!(s.topics(), 0, "nothing of a refused request is held");
    for topic in [
        "/market/level2:BTC-USDT",
        "/market/ticker",
        "/market/ticker:",
    ] {
        let (reply, rejected) = one(&mut s, &sub(2, topic, true));
        assert_eq!(reply.expect("error")["code"], 404, "{topic}");
        assert_eq!(rejected, Some("invalid_topic"));
    }
}

#[test]
fn more_than_100_topics_in_one_message_are_refused() {
    let mut s = session(&["BTC-USDT"]);
    let names: Vec<String> = (0..=TOPICS_PER_MESSAGE)
        .map(|i| format!("S{i}-USDT"))
        .collect();
    let (reply, rejected) = one(
        &mut s,
        &sub(3, &format!("/market/ticker:{}", names.join(",")), true),
    );
    let reply = reply.expect("error");
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_u64()),
        (Some("error"), Some(509))
    );
    assert!(
        reply["data"].as_str().is_some_and(|d| d.contains("100")),
        "{reply}"
    );
    assert_eq!(rejected, Some("too_many_topics_per_message"));
}

/// `ZAA-USDT`, `ZAB-USDT`, ...: distinct made-up symbols.
fn many(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let a = char::from(b'A' + u8::try_from(i / 26).expect("small"));
            let b = char::from(b'A' + u8::try_from(i % 26).expect("small"));
            format!("Z{a}{b}-USDT")
        })
        .collect()
}

#[test]
fn a_connection_holds_at_most_400_topics() {
    let names = many(TOPICS_PER_CONNECTION / 2 + 1);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut s = session(&refs);
    let mut id = 0;
    for chunk in names[..TOPICS_PER_CONNECTION / 2].chunks(TOPICS_PER_MESSAGE) {
        for prefix in ["/market/ticker:", "/market/match:"] {
            id += 1;
            let (reply, rejected) = one(
                &mut s,
                &sub(id, &format!("{prefix}{}", chunk.join(",")), true),
            );
            assert_eq!(rejected, None, "{reply:?}");
        }
    }
    assert_eq!(s.topics(), TOPICS_PER_CONNECTION);
    let last = &names[TOPICS_PER_CONNECTION / 2];
    let (reply, rejected) = one(&mut s, &sub(99, &format!("/market/ticker:{last}"), true));
    let reply = reply.expect("error");
    assert_eq!(reply["code"], 509);
    assert_eq!(reply["id"], "99");
    assert_eq!(rejected, Some("too_many_topics"));
    assert_eq!(s.topics(), TOPICS_PER_CONNECTION);
    // Unsubscribing frees room.
    let first = &names[0];
    let (reply, _) = one(
        &mut s,
        &serde_json::json!({"id": "u1", "type": "unsubscribe",
            "topic": format!("/market/ticker:{first}"), "response": true})
        .to_string(),
    );
    assert_eq!(reply, Some(serde_json::json!({"id": "u1", "type": "ack"})));
    assert_eq!(s.topics(), TOPICS_PER_CONNECTION - 1);
    let (_, rejected) = one(&mut s, &sub(100, &format!("/market/ticker:{last}"), true));
    assert_eq!(rejected, None);
}

#[test]
fn ping_gets_a_pong_with_the_same_id() {
    let mut s = session(&["BTC-USDT"]);
    let (reply, rejected) = one(&mut s, r#"{"id":"ping1","type":"ping"}"#);
    assert_eq!(
        reply,
        Some(serde_json::json!({"id": "ping1", "type": "pong"}))
    );
    assert_eq!(rejected, None);
    let (reply, _) = one(&mut s, r#"{"id":1545910590801,"type":"ping"}"#);
    assert_eq!(reply.expect("pong")["id"], "1545910590801");
}

#[test]
fn malformed_messages_get_error_frames() {
    let mut s = session(&["BTC-USDT"]);
    for (text, why) in [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        (r#"{"id":"1"}"#, "invalid_request"),
        (r#"{"id":"1","type":"subscribe"}"#, "invalid_request"),
        (
            r#"{"id":"1","type":"openTunnel","newTunnelId":"bt1"}"#,
            "unsupported_type",
        ),
        (
            r#"{"id":"1","type":"subscribe","topic":"/market/ticker:BTC-USDT","privateChannel":true}"#,
            "private_channel",
        ),
    ] {
        let (reply, rejected) = one(&mut s, text);
        assert_eq!(reply.expect("error")["type"], "error", "{text}");
        assert_eq!(rejected, Some(why), "{text}");
    }
    assert_eq!(s.topics(), 0);
}

#[tokio::test(start_paused = true)]
async fn uplink_is_limited_to_100_messages_per_10_seconds() {
    let mut s = session(&["BTC-USDT"]);
    let t0 = Instant::now();
    for i in 0..UPLINK_LIMIT {
        let (frames, rejected) = s.handle(&format!(r#"{{"id":"{i}","type":"ping"}}"#), t0);
        assert_eq!((frames.len(), rejected), (1, None), "message {i}");
    }
    let (frames, rejected) = s.handle(r#"{"id":"x","type":"ping"}"#, t0);
    assert_eq!(rejected, Some("too_many_requests"));
    let reply = json(frames.first().expect("error"));
    assert_eq!(
        (reply["code"].as_u64(), reply["id"].as_str()),
        (Some(429), Some("x"))
    );
    let (_, rejected) = s.handle(r#"{"id":"y","type":"ping"}"#, t0 + UPLINK_WINDOW);
    assert_eq!(rejected, None, "the window slid");
}

#[tokio::test(start_paused = true)]
async fn any_client_message_pushes_the_silence_deadline() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(&["BTC-USDT"]), "c", DEFAULT_TIMING, t0);
    let limit = DEFAULT_TIMING.ping_interval + DEFAULT_TIMING.ping_timeout;
    assert_eq!(s.silence_deadline(), t0 + limit);
    let t1 = t0 + Duration::from_secs(20);
    s.handle("garbage", t1);
    assert_eq!(s.silence_deadline(), t1 + limit);
}

#[test]
fn pushes_only_for_held_topics_in_kucoin_shapes() {
    let mut s = session(&["BTC-USDT", "ETH-USDT"]);
    assert_eq!(s.encode(&quote(0)), None);
    one(&mut s, &sub(1, "/market/ticker:BTC-USDT", false));
    assert_eq!(s.encode(&quote(1)), None, "ETH-USDT not held");
    assert_eq!(s.encode(&trade(0)), None, "match not held");
    let t = json(&s.encode(&quote(0)).expect("ticker push"));
    assert_eq!(
        t,
        serde_json::json!({"type": "message", "topic": "/market/ticker:BTC-USDT",
            "subject": "trade.ticker", "data": {"sequence": "42", "price": "67250",
            "size": "0.01", "bestAsk": "67250", "bestAskSize": "0.2", "bestBid": "67249.9",
            "bestBidSize": "1.5", "time": 1_704_873_323_416_i64}})
    );
    one(&mut s, &sub(2, "/market/match:BTC-USDT", false));
    let m = json(&s.encode(&trade(0)).expect("match push"));
    assert_eq!(m["subject"], "trade.l3match");
    assert_eq!(m["topic"], "/market/match:BTC-USDT");
    let d = &m["data"];
    assert_eq!(
        (
            d["symbol"].as_str(),
            d["side"].as_str(),
            d["price"].as_str(),
            d["size"].as_str()
        ),
        (Some("BTC-USDT"), Some("sell"), Some("67250"), Some("0.003"))
    );
    assert_eq!(d["time"], "1729843222921123000", "nanoseconds as a string");
    assert_eq!(
        (d["tradeId"].as_str(), d["sequence"].as_str()),
        (Some("77"), Some("43"))
    );
    assert_eq!(d["type"], "match");
    for id in ["takerOrderId", "makerOrderId"] {
        assert_eq!(d[id].as_str().map(str::len), Some(24), "{id}");
    }
    assert_ne!(d["takerOrderId"], d["makerOrderId"]);
    one(
        &mut s,
        r#"{"id":"3","type":"unsubscribe","topic":"/market/ticker:BTC-USDT"}"#,
    );
    assert_eq!(s.encode(&quote(0)), None, "unsubscribed");
    assert!(s.encode(&trade(0)).is_some(), "the other channel stays");
}

fn ctx(universe: Arc<Universe>) -> (Arc<ExchangeCtx>, broadcast::Sender<MarketEvent>) {
    let (events, _) = broadcast::channel(16);
    let n = universe.instruments.len();
    let ctx = Arc::new(ExchangeCtx {
        exchange: ExchangeId::Kucoin,
        index: 0,
        universe,
        board: Arc::new(crate::market::Board::new(n, Vec::new())),
        events: events.clone(),
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(4)),
        binance_ping_interval: Duration::from_secs(20),
        faults: Arc::new(crate::fault::Faults::new(ExchangeId::Kucoin)),
    });
    (ctx, events)
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_interval_plus_timeout() {
    let u = universe(&["BTC-USDT"]);
    let (ctx, events) = ctx(u.clone());
    let (socket, mut client) = mock::socket();
    let t0 = Instant::now();
    let session = Session::new(u, "cid", DEFAULT_TIMING, t0);
    let task = tokio::spawn(mock::run(
        socket,
        ctx,
        Opening::Welcome(Box::new(session)),
        events.subscribe(),
    ));
    assert_eq!(
        json(&client.next_text().await.expect("welcome"))["type"],
        "welcome"
    );
    // A ping at 15 s keeps it; silence after that ends it 28 s later.
    tokio::time::sleep(Duration::from_secs(15)).await;
    client.send_text(r#"{"id":"p1","type":"ping"}"#);
    assert_eq!(
        json(&client.next_text().await.expect("pong"))["type"],
        "pong"
    );
    let pinged = Instant::now();
    match client.next().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, 1000),
        other => panic!("expected a Close, got {other:?}"),
    }
    let waited = Instant::now() - pinged;
    let limit = DEFAULT_TIMING.ping_interval + DEFAULT_TIMING.ping_timeout;
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(1),
        "{waited:?}"
    );
    drop(client);
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_gets_the_error_then_a_close() {
    let u = universe(&["BTC-USDT"]);
    let (ctx, events) = ctx(u);
    let (socket, mut client) = mock::socket();
    let task = tokio::spawn(mock::run(
        socket,
        ctx,
        Opening::Refused {
            frame: refusal("cid-9", tokens::EXPIRED),
            reason: "token_refused",
        },
        events.subscribe(),
    ));
    let first = json(&client.next_text().await.expect("error frame"));
    assert_eq!(
        (
            first["id"].as_str(),
            first["type"].as_str(),
            first["code"].as_u64()
        ),
        (Some("cid-9"), Some("error"), Some(401))
    );
    assert!(matches!(client.next().await, Some(Message::Close(_))));
    drop(client);
    task.await.expect("ends");
}

#[tokio::test(start_paused = true)]
async fn rejected_tokens_are_revoked_and_a_fresh_one_recovers() {
    let state = KucoinState::new("ws://127.0.0.1:1/".into(), DEFAULT_TIMING);
    let now = Instant::now();
    let a = state.tokens().issue(now);
    assert_eq!(state.admit(Some(&a), now), Ok(()));
    assert_eq!(
        state.admit(Some(&a), now),
        Ok(()),
        "a token serves many connections"
    );
    assert_eq!(state.admit(None, now), Err(tokens::EXPIRED));
    assert_eq!(state.admit(Some("made-up"), now), Err(tokens::EXPIRED));
    state.reject_next_tokens(1);
    assert_eq!(
        state.admit(Some(&a), now),
        Err(tokens::EXPIRED),
        "forced refusal"
    );
    assert_eq!(
        state.admit(Some(&a), now),
        Err(tokens::EXPIRED),
        "the token stays dead"
    );
    let b = state.tokens().issue(now);
    assert_eq!(state.admit(Some(&b), now), Ok(()), "the knob fired once");
    // An unknown token does not use up a pending refusal.
    state.reject_next_tokens(1);
    assert_eq!(state.admit(Some("made-up"), now), Err(tokens::EXPIRED));
    assert_eq!(state.admit(Some(&b), now), Err(tokens::EXPIRED));
}
