//! Unit tests of the Bybit session: acks, the 10-arg cap, refusals, the level-1 re-push, the
//! ping deadline and the goodbye.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::*;
use crate::market::{Board, MarketEvent, Model, Trade, Universe, now_us};
use crate::ws::driver::{Frame, Protocol};
use crate::ws::{ExchangeCtx, mock};

fn setup() -> (Arc<Universe>, Arc<Board>) {
    let symbols = vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()];
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Bybit]).expect("universe"));
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(now_us())));
    (u, board)
}

fn sequences() -> Arc<super::Sequences> {
    Arc::new(super::Sequences::new(2))
}

fn session(idle: Duration) -> Session {
    let (u, board) = setup();
    Session::new(u, board, 0, idle, sequences())
}

fn json_of(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| serde_json::from_str(f).expect("json"))
        .collect()
}

fn texts(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) => serde_json::from_str(t).expect("json"),
            other => panic!("a text frame: {other:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn subscribe_is_acked_once_and_the_book_starts_with_a_snapshot() {
    let mut s = session(Duration::from_secs(600));
    let (frames, rejected) = s.handle(
        r#"{"req_id":"1","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]}"#,
        Instant::now(),
    );
    assert_eq!(rejected, None);
    let f = json_of(&frames);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(
        f[0],
        json!({"success": true, "ret_msg": "subscribe", "conn_id": s.conn_id, "req_id": "1", "op": "subscribe"})
    );
    assert_eq!(f[1]["topic"], "orderbook.1.BTCUSDT");
    assert_eq!(f[1]["type"], "snapshot");
    assert_eq!(f[1]["data"]["s"], "BTCUSDT");
    assert!(f[1]["data"]["u"].is_u64() && f[1]["cts"].is_i64());
    let level = f[1]["data"]["b"][0].as_array().expect("a level");
    assert_eq!(level.len(), 2);
    // The documented field order, which the adapter's fast path reads.
    assert!(frames[1].starts_with(r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":"#));
    let trade = MarketEvent::Trade(Trade {
        symbol: 0,
        seq: 9,
        trade_id: 2_290_000_001,
        price: 1_657_850,
        qty: 100,
        taker_buy: false,
        ts_us: 1_672_304_486_865_000,
    });
    let mut out = Vec::new();
    s.encode(&trade, Instant::now(), &mut out);
    assert_eq!(
        texts(&out)[0],
        json!({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1_672_304_486_865_i64, "data": [{"T": 1_672_304_486_865_i64, "s": "BTCUSDT", "S": "Sell", "v": "0.00100", "p": "16578.50", "i": "2290000001", "BT": false}]})
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_name_the_reason_and_change_nothing() {
    let mut s = session(Duration::from_secs(600));
    let now = Instant::now();
    let eleven: Vec<String> = (0..11)
        .map(|i| format!("\"publicTrade.S{i}USDT\""))
        .collect();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(r#"{{"req_id":"7","op":"subscribe","args":[{}]}}"#, eleven.join(",")),
            "args size >10",
            "too_many_args",
        ),
        (
            r#"{"req_id":"7","op":"subscribe","args":["publicTrade.BTCUSDT","orderbook.1.FOOUSDT"]}"#.into(),
            "Invalid symbol :[orderbook.1.FOOUSDT]",
            "no_such_topic",
        ),
        (
            r#"{"req_id":"7","op":"subscribe","args":["tickers.BTCUSDT"]}"#.into(),
            "error:handler not found,topic:tickers.BTCUSDT",
            "no_such_topic",
        ),
        (
            r#"{"req_id":"7","op":"subscribe","args":[]}"#.into(),
            "error:args is empty",
            "invalid_request",
        ),
    ];
    for (request, msg, label) in cases {
        let (frames, rejected) = s.handle(&request, now);
        let f = json_of(&frames);
        assert_eq!(f.len(), 1, "{request}");
        assert_eq!(
            f[0],
            json!({"success": false, "ret_msg": msg, "conn_id": s.conn_id, "req_id": "7", "op": "subscribe"}),
            "{request}"
        );
        assert_eq!(rejected, Some(label));
    }
    // All or nothing: the valid trade topic of the refused request was not taken.
    let (frames, rejected) = s.handle(r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#, now);
    assert_eq!(rejected, None, "{frames:?}");
    let (frames, _) = s.handle(r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#, now);
    assert_eq!(
        json_of(&frames)[0]["ret_msg"],
        "error:already subscribed,topic:publicTrade.BTCUSDT"
    );
    let (frames, rejected) = s.handle("{oops", now);
    assert_eq!(json_of(&frames)[0]["success"], false);
    assert_eq!(rejected, Some("invalid_request"));
    // Ten args are fine.
    let ten: Vec<String> = ["BTCUSDT", "ETHUSDT"]
        .iter()
        .flat_map(|s| [format!("\"orderbook.1.{s}\"")])
        .collect();
    let (_, rejected) = s.handle(
        &format!(r#"{{"op":"subscribe","args":[{}]}}"#, ten.join(",")),
        now,
    );
    assert_eq!(rejected, None);
}

#[tokio::test(start_paused = true)]
async fn ping_is_answered_with_the_public_pong() {
    let mut s = session(Duration::from_secs(600));
    let (frames, _) = s.handle(r#"{"req_id":"100001","op":"ping"}"#, Instant::now());
    assert_eq!(
        json_of(&frames)[0],
        json!({"success": true, "ret_msg": "pong", "conn_id": s.conn_id, "req_id": "100001", "op": "ping"})
    );
    let (frames, _) = s.handle(r#"{"op":"ping"}"#, Instant::now());
    assert_eq!(json_of(&frames)[0]["req_id"], "");
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_book_is_pushed_again_after_3_s_with_the_same_u() {
    let (u, board) = setup();
    let mut s = Session::new(u, board.clone(), 0, Duration::from_secs(600), sequences());
    let t0 = Instant::now();
    let (frames, _) = s.handle(r#"{"op":"subscribe","args":["orderbook.1.ETHUSDT"]}"#, t0);
    let first = json_of(&frames)[1].clone();
    let mut out = Vec::new();
    s.repush(t0 + Duration::from_millis(2_900), &mut out);
    assert!(out.is_empty(), "not yet");
    s.repush(t0 + REPUSH_AFTER, &mut out);
    let again = texts(&out);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["data"], first["data"], "same book, same u");
    assert_eq!(again[0]["cts"], first["cts"]);
    // A market update that leaves the top of book as it was pushes nothing.
    let mut q = board.get(0, 1).expect("a quote").quote;
    q.seq += 1;
    out.clear();
    s.encode(&MarketEvent::Quote(q), t0, &mut out);
    assert!(out.is_empty());
    // A changed one is pushed at once, with its own u.
    q.book.bid_qty += 1;
    s.encode(&MarketEvent::Quote(q), t0, &mut out);
    let pushed = texts(&out);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0]["data"]["u"], q.seq);
}

fn harness() -> (
    Arc<ExchangeCtx>,
    broadcast::Sender<MarketEvent>,
    CancellationToken,
) {
    let (u, board) = setup();
    let (market, _) = broadcast::channel(16);
    let stop = CancellationToken::new();
    let ctx = Arc::new(ExchangeCtx {
        exchange: ExchangeId::Bybit,
        index: 0,
        universe: u,
        board,
        events: market.clone(),
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(1)),
        faults: Arc::new(crate::fault::Faults::new(ExchangeId::Bybit)),
        binance_ping_interval: Duration::from_secs(20),
    });
    (ctx, market, stop)
}

#[tokio::test(start_paused = true)]
async fn a_client_without_pings_is_dropped_and_pings_keep_it() {
    let idle = Duration::from_secs(30);
    let (ctx, market, _stop) = harness();
    let (socket, mut client) = mock::socket();
    let session = Session::new(
        ctx.universe.clone(),
        ctx.board.clone(),
        0,
        idle,
        sequences(),
    );
    let task = tokio::spawn(mock::run(socket, ctx.clone(), session, market.subscribe()));
    client.send_text(r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#);
    assert!(
        client
            .next_text()
            .await
            .is_some_and(|t| t.contains("subscribe"))
    );
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.send_text(r#"{"op":"ping"}"#);
        assert!(client.next_text().await.is_some_and(|t| t.contains("pong")));
    }
    let t0 = Instant::now();
    // Dropped without a Close frame.
    assert_eq!(client.next().await, None);
    assert_eq!(t0.elapsed(), idle);
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_a_bare_close() {
    let (ctx, market, stop) = harness();
    let (socket, mut client) = mock::socket();
    let session = Session::new(
        ctx.universe.clone(),
        ctx.board.clone(),
        0,
        Duration::from_secs(600),
        sequences(),
    );
    let task = tokio::spawn(mock::run(socket, ctx.clone(), session, market.subscribe()));
    stop.cancel();
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
    task.await.expect("session");
}

#[test]
fn the_refusal_fault_uses_the_documented_failure_shape() {
    let s = session(Duration::from_secs(600));
    let frames = s
        .refusal(crate::ws::driver::Inbound::Text(
            r#"{"req_id":"3","op":"subscribe","args":["publicTrade.BTCUSDT"]}"#,
        ))
        .expect("a subscribe is refused");
    assert_eq!(
        texts(&frames)[0],
        json!({"success": false, "ret_msg": "error:too many requests", "conn_id": s.conn_id, "req_id": "3", "op": "subscribe"})
    );
    assert!(
        s.refusal(crate::ws::driver::Inbound::Text(r#"{"op":"ping"}"#))
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_restart_starts_every_book_again_from_u_1() {
    let (u, board) = setup();
    let seqs = sequences();
    let mut s = Session::new(u, board.clone(), 0, Duration::from_secs(600), seqs.clone());
    let t0 = Instant::now();
    let (frames, _) = s.handle(
        r#"{"op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.ETHUSDT"]}"#,
        t0,
    );
    let before = json_of(&frames)[1]["data"]["u"].as_u64().expect("u");
    assert!(before > 1_000);
    let at_restart = board
        .exchange(0)
        .iter()
        .map(|v| v.quote.seq)
        .collect::<Vec<_>>();
    seqs.restart(at_restart.clone());
    // The next event announces it: the book again, u 1, whatever the event is.
    let mut old = board.get(0, 0).expect("quote").quote;
    old.seq -= 5;
    let mut out = Vec::new();
    s.encode(&MarketEvent::Quote(old), t0, &mut out);
    let f = texts(&out);
    assert_eq!(
        f.len(),
        1,
        "the restart snapshot, and not the update from before it"
    );
    assert_eq!(
        (f[0]["topic"].as_str(), f[0]["data"]["u"].as_u64()),
        (Some("orderbook.1.BTCUSDT"), Some(1))
    );
    // Updates after it count up from there.
    let mut q = board.get(0, 0).expect("quote").quote;
    q.seq = at_restart[0] + 4;
    q.book.ask_qty += 1;
    out.clear();
    s.encode(&MarketEvent::Quote(q), t0, &mut out);
    assert_eq!(texts(&out)[0]["data"]["u"], 5);
    // The re-push after 3 s keeps that u.
    out.clear();
    s.repush(t0 + REPUSH_AFTER, &mut out);
    assert_eq!(texts(&out)[0]["data"]["u"], 5);
}
