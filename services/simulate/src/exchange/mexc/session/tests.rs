//! MEXC session tests: the pure state machine, and the serve loop through a mock socket in
//! paused time. Pushes are read back with a schema-less protobuf walker, so the tests check
//! the wire format itself.

use std::collections::HashMap;

use axum::extract::ws::Message;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::market::{Board, Model, Quote, Trade};
use crate::ws::{ExchangeCtx, mock};
use spreadagg_model::ExchangeId;

fn universe() -> Arc<Universe> {
    let symbols: Vec<String> = [
        "BTC-USDT",
        "ETH-USDT",
        "SOL-USDT",
        "XRP-USDT",
        "DOGE-USDT",
        "BNB-USDT",
        "BTC-USDC",
        "ETH-BTC",
        "NULS-USDT",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    Arc::new(Universe::new(&symbols, &[ExchangeId::Mexc]).expect("universe"))
}

fn topic(kind: &str, sym: &str) -> String {
    format!("spot@public.aggre.{kind}.v3.api.pb@100ms@{sym}")
}

fn sub(id: u64, params: &[String]) -> String {
    serde_json::json!({"method": "SUBSCRIPTION", "params": params, "id": id}).to_string()
}

fn answer(h: &Handled) -> Value {
    assert_eq!(h.frames.len(), 1, "one answer: {h:?}");
    serde_json::from_str(&h.frames[0]).expect("JSON answer")
}

/// One protobuf field as the wire has it.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn read_varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long")
}

/// Every field of a message by number (a repeated field keeps its last value and a count).
fn walk(b: &[u8]) -> HashMap<u64, (Field, usize)> {
    let mut fields: HashMap<u64, (Field, usize)> = HashMap::new();
    let mut i = 0;
    while i < b.len() {
        let key = read_varint(b, &mut i);
        let field = match key & 7 {
            0 => Field::Varint(read_varint(b, &mut i)),
            2 => {
                let len = read_varint(b, &mut i) as usize;
                let v = b[i..i + len].to_vec();
                i += len;
                Field::Bytes(v)
            }
            other => panic!("unexpected wire type {other}"),
        };
        let n = fields.get(&(key >> 3)).map_or(0, |(_, n)| *n);
        fields.insert(key >> 3, (field, n + 1));
    }
    fields
}

fn text_of(f: &HashMap<u64, (Field, usize)>, n: u64) -> String {
    match f.get(&n) {
        Some((Field::Bytes(b), _)) => String::from_utf8(b.clone()).expect("utf-8"),
        other => panic!("field {n} is not a string: {other:?}"),
    }
}

fn varint_of(f: &HashMap<u64, (Field, usize)>, n: u64) -> u64 {
    match f.get(&n) {
        Some((Field::Varint(v), _)) => *v,
        other => panic!("field {n} is not a varint: {other:?}"),
    }
}

fn quote(symbol: usize) -> Quote {
    let u = universe();
    let model = Model::new(u, Duration::from_millis(100), 0.0, 1);
    let mut q = model.snapshot(1_736_412_092_433_000)[symbol].quote;
    q.seq = 77;
    q.ts_us = 1_736_412_092_433_000;
    q
}

#[test]
fn subscribe_answers_echo_the_params_and_the_id() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    let params = [topic("bookTicker", "BTCUSDT"), topic("deals", "BTCUSDT")];
    let a = answer(&s.handle(&sub(7, &params), t0));
    assert_eq!(
        a,
        serde_json::json!({"id": 7, "code": 0, "msg": params.join(",")})
    );
    assert_eq!(s.subscriptions(), 2);
    // Without an id, the answer says 0, as the docs show.
    let fast = "spot@public.aggre.deals.v3.api.pb@10ms@ETHUSDT";
    let a = answer(&s.handle(
        &format!(r#"{{"method":"SUBSCRIPTION","params":["{fast}"]}}"#),
        t0,
    ));
    assert_eq!((a["id"].as_u64(), a["msg"].as_str()), (Some(0), Some(fast)));
    assert_eq!(s.subscriptions(), 3);
    // Subscribing again holds nothing more.
    s.handle(&sub(8, &params), t0);
    assert_eq!(s.subscriptions(), 3);
}

#[test]
fn unknown_topics_and_lower_case_symbols_are_refused_whole() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    for bad in [
        topic("bookTicker", "btcusdt"),
        topic("bookTicker", "NOSUCHUSDT"),
        "spot@public.aggre.bookTicker.v3.api.pb@5ms@BTCUSDT".to_owned(),
        "spot@public.deals.v3.api@BTCUSDT".to_owned(),
    ] {
        let params = [topic("deals", "BTCUSDT"), bad.clone()];
        let h = s.handle(&sub(3, &params), t0);
        let a = answer(&h);
        assert_eq!(
            a["msg"].as_str(),
            Some(
                format!(
                    "Not Subscribed successfully! [{}].  Reason： Blocked! ",
                    params.join(",")
                )
                .as_str()
            ),
            "{bad}"
        );
        assert_eq!((a["id"].as_u64(), a["code"].as_i64()), (Some(3), Some(0)));
        assert_eq!(h.rejected, Some("invalid_topic"));
        assert_eq!(s.subscriptions(), 0, "nothing of a refused request holds");
    }
    let h = s.handle(r#"{"method":"SUBSCRIPTION","params":[]}"#, t0);
    assert_eq!(h.rejected, Some("invalid_request"));
    let h = s.handle("not json", t0);
    assert_eq!((h.frames.len(), h.rejected), (0, Some("invalid_json")));
}

#[test]
fn the_thirty_first_subscription_is_refused() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    let u = universe();
    let names: Vec<String> = u.instruments.iter().map(|i| i.concat.clone()).collect();
    // Two topics per symbol at each of two intervals: 4 per symbol, 7 symbols = 28.
    let mut params = Vec::new();
    for name in names.iter().take(7) {
        for kind in ["bookTicker", "deals"] {
            for interval in ["100ms", "10ms"] {
                params.push(format!(
                    "spot@public.aggre.{kind}.v3.api.pb@{interval}@{name}"
                ));
            }
        }
    }
    assert_eq!(
        answer(&s.handle(&sub(1, &params), t0))["msg"],
        params.join(",")
    );
    assert_eq!(s.subscriptions(), 28);
    let two = [topic("bookTicker", &names[7]), topic("deals", &names[7])];
    assert_eq!(answer(&s.handle(&sub(2, &two), t0))["id"], 2);
    assert_eq!(s.subscriptions(), MAX_SUBSCRIPTIONS);
    let one_more = [topic("bookTicker", &names[8])];
    let h = s.handle(&sub(3, &one_more), t0);
    assert_eq!(h.rejected, Some("too_many_subscriptions"));
    let msg = answer(&h)["msg"].as_str().expect("msg").to_owned();
    assert!(
        msg.starts_with("Not Subscribed successfully! [spot@public.aggre.bookTicker"),
        "{msg}"
    );
    assert_eq!(s.subscriptions(), MAX_SUBSCRIPTIONS);
    // A topic already held is no new subscription.
    assert_eq!(answer(&s.handle(&sub(4, &two), t0))["id"], 4);
    // Unsubscribing frees room.
    let unsub = serde_json::json!({"method":"UNSUBSCRIPTION","params":[two[0].clone()],"id":5});
    assert_eq!(
        answer(&s.handle(&unsub.to_string(), t0))["msg"],
        two[0].as_str()
    );
    assert_eq!(answer(&s.handle(&sub(6, &one_more), t0))["id"], 6);
    assert_eq!(s.subscriptions(), MAX_SUBSCRIPTIONS);
}

#[test]
fn deadlines_ping_subscription_and_age() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    assert_eq!(
        s.deadline(),
        (t0 + NO_SUBSCRIPTION_DEADLINE, End::NoSubscription)
    );
    s.handle(&sub(1, &[topic("deals", "BTCUSDT")]), t0);
    assert_eq!(s.deadline(), (t0 + PING_DEADLINE, End::Idle));
    let t1 = t0 + Duration::from_secs(50);
    let h = s.handle(r#"{"method":"PING"}"#, t1);
    assert_eq!(
        h.frames,
        vec![r#"{"id":0,"code":0,"msg":"PONG"}"#.to_owned()]
    );
    assert_eq!(s.deadline(), (t1 + PING_DEADLINE, End::Idle));
    // Everything unsubscribed: the 30 s clock starts again.
    let t2 = t1 + Duration::from_secs(5);
    s.handle(
        &serde_json::json!({"method":"UNSUBSCRIPTION","params":[topic("deals", "BTCUSDT")]})
            .to_string(),
        t2,
    );
    assert_eq!(
        s.deadline(),
        (t2 + NO_SUBSCRIPTION_DEADLINE, End::NoSubscription)
    );
    // Near the 24 h mark the age is what ends it.
    let late = t0 + MAX_CONNECTION_AGE - Duration::from_secs(10);
    s.handle(&sub(2, &[topic("deals", "BTCUSDT")]), late);
    s.handle(r#"{"method":"PING"}"#, late);
    assert_eq!(s.deadline(), (t0 + MAX_CONNECTION_AGE, End::MaxLifetime));
}

#[test]
fn more_than_a_hundred_messages_a_second_end_the_connection() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    for i in 0..MAX_MESSAGES_PER_SECOND {
        let h = s.handle(r#"{"method":"PING"}"#, t0 + Duration::from_millis(i as u64));
        assert_eq!(h.end, None, "message {i}");
    }
    let h = s.handle(r#"{"method":"PING"}"#, t0 + Duration::from_millis(500));
    assert_eq!(
        (h.end, h.rejected),
        (Some(End::RateLimited), Some("rate_limited"))
    );
}

#[test]
fn pushes_are_protobuf_envelopes_with_extra_fields() {
    let t0 = Instant::now();
    let mut s = Session::new(universe(), t0);
    let q = quote(0);
    assert!(
        s.encode(&MarketEvent::Quote(q), 0).is_empty(),
        "not subscribed"
    );
    s.handle(
        &sub(
            1,
            &[topic("bookTicker", "BTCUSDT"), topic("deals", "BTCUSDT")],
        ),
        t0,
    );
    let frames = s.encode(&MarketEvent::Quote(q), 1_736_412_092_440);
    assert_eq!(frames.len(), 1);
    let env = walk(&frames[0]);
    assert_eq!(text_of(&env, 1), topic("bookTicker", "BTCUSDT"));
    assert_eq!(text_of(&env, 3), "BTCUSDT");
    assert_eq!(text_of(&env, 4).len(), 32, "a 32-hex-digit symbol id");
    assert_eq!(
        (varint_of(&env, 5), varint_of(&env, 6)),
        (1_736_412_092_433, 1_736_412_092_440)
    );
    let Some((Field::Bytes(body), _)) = env.get(&315) else {
        panic!("book ticker body 315: {env:?}")
    };
    let body = walk(body);
    let inst = &universe().instruments[0];
    let px = |units| crate::format::fixed(units, inst.price_decimals);
    assert_eq!(text_of(&body, 1), px(q.book.bid));
    assert_eq!(text_of(&body, 3), px(q.book.ask));
    assert!(text_of(&body, 2).parse::<f64>().is_ok_and(|v| v > 0.0));
    assert_eq!(text_of(&body, 5), "77", "the version");
    assert!(varint_of(&body, 6) > 0, "lastOrderCreateTime");

    let trade = Trade {
        symbol: 0,
        seq: 9,
        trade_id: 4242,
        price: q.book.ask,
        qty: 5,
        taker_buy: false,
        ts_us: 1_736_409_765_051_000,
    };
    let frames = s.encode(&MarketEvent::Trade(trade), 1_736_409_765_052);
    let env = walk(&frames[0]);
    assert_eq!(text_of(&env, 1), topic("deals", "BTCUSDT"));
    let Some((Field::Bytes(body), _)) = env.get(&314) else {
        panic!("deals body 314: {env:?}")
    };
    let body = walk(body);
    assert_eq!(text_of(&body, 2), "spot@public.aggre.deals.v3.api.pb@100ms");
    let Some((Field::Bytes(deal), 1)) = body.get(&1) else {
        panic!("one deal: {body:?}")
    };
    let deal = walk(deal);
    assert_eq!(text_of(&deal, 1), px(q.book.ask));
    assert_eq!(varint_of(&deal, 3), 2, "taker sold");
    assert_eq!(varint_of(&deal, 4), 1_736_409_765_051);
    assert_eq!(text_of(&deal, 5), "4242");
    assert!(
        deal.contains_key(&6) && deal.contains_key(&7),
        "fields no schema declares"
    );
}

struct Harness {
    ctx: Arc<ExchangeCtx>,
    market: broadcast::Sender<MarketEvent>,
    stop: CancellationToken,
}

fn harness() -> Harness {
    let u = universe();
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(0)));
    let (market, _) = broadcast::channel(16);
    let stop = CancellationToken::new();
    let ctx = Arc::new(ExchangeCtx {
        exchange: ExchangeId::Mexc,
        index: 0,
        universe: u,
        board,
        events: market.clone(),
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(1)),
        binance_ping_interval: Duration::from_secs(20),
        faults: Arc::new(crate::fault::Faults::new(ExchangeId::Mexc)),
    });
    Harness { ctx, market, stop }
}

fn start(h: &Harness) -> (tokio::task::JoinHandle<()>, mock::Client) {
    let (socket, client) = mock::socket();
    let session = Session::new(h.ctx.universe.clone(), Instant::now());
    let task = tokio::spawn(mock::run(
        socket,
        h.ctx.clone(),
        session,
        h.market.subscribe(),
    ));
    (task, client)
}

async fn closed_with(client: &mut mock::Client) -> Option<u16> {
    while let Some(frame) = client.next().await {
        if let Message::Close(c) = frame {
            return c.map(|c| c.code);
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_client_that_pings_stays_and_one_that_stops_is_dropped() {
    let h = harness();
    let (task, mut client) = start(&h);
    let t0 = Instant::now();
    client.send_text(&sub(1, &[topic("bookTicker", "BTCUSDT")]));
    let ack = client.next_text().await.expect("ack");
    assert!(ack.contains(r#""id":1"#), "{ack}");
    // Five minutes of pings every 20 s, with a push in between.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.send_text(r#"{"method":"PING"}"#);
        assert_eq!(
            client.next_text().await.as_deref(),
            Some(r#"{"id":0,"code":0,"msg":"PONG"}"#)
        );
    }
    let _ = h.market.send(MarketEvent::Quote(quote(0)));
    assert!(matches!(client.next().await, Some(Message::Binary(_))));
    let last_ping = Instant::now();
    assert_eq!(last_ping - t0, Duration::from_secs(300));
    // Then silence: dropped a minute after the last ping.
    assert_eq!(closed_with(&mut client).await, Some(1000));
    assert_eq!(Instant::now() - last_ping, PING_DEADLINE);
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_subscription_is_dropped_after_30_s() {
    let h = harness();
    let (task, mut client) = start(&h);
    let t0 = Instant::now();
    client.send_text(r#"{"method":"PING"}"#);
    assert!(client.next_text().await.is_some_and(|t| t.contains("PONG")));
    assert_eq!(closed_with(&mut client).await, Some(1000));
    assert_eq!(Instant::now() - t0, NO_SUBSCRIPTION_DEADLINE);
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_1001() {
    let h = harness();
    let (task, mut client) = start(&h);
    h.stop.cancel();
    assert_eq!(closed_with(&mut client).await, Some(1001));
    task.await.expect("session");
}
