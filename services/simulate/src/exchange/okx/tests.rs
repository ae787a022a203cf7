//! Unit tests of the OKX session: acks, error codes, limits, deadlines and the notice.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::session::*;
use super::*;
use crate::market::Model;
use crate::market::{Board, MarketEvent, Trade, Universe, now_us};
use crate::ws::ExchangeCtx;
use crate::ws::mock;
use spreadagg_model::ExchangeId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn setup() -> (Arc<Universe>, Arc<Board>) {
    let symbols = vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()];
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Okx]).expect("universe"));
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(now_us())));
    (u, board)
}

fn session() -> Session {
    let (u, board) = setup();
    Session::new(u, board, 0)
}

fn json_frames(r: &Replies) -> Vec<Value> {
    r.frames
        .iter()
        .map(|f| serde_json::from_str(f).expect("json"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn subscribe_acks_each_arg_and_pushes_a_snapshot() {
    let mut s = session();
    let r = s.handle(
        r#"{"id":"1512","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},{"channel":"trades","instId":"BTC-USDT"}]}"#,
        Instant::now(),
    );
    let f = json_frames(&r);
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(
        f[0],
        json!({"id": "1512", "event": "subscribe", "arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "connId": s.conn_id})
    );
    assert_eq!(
        f[1]["arg"],
        json!({"channel": "bbo-tbt", "instId": "BTC-USDT"})
    );
    let level = &f[1]["data"][0]["asks"][0];
    assert_eq!(level.as_array().map(Vec::len), Some(4));
    assert_eq!(level[2], "0");
    assert_eq!(f[2]["event"], "subscribe");
    assert_eq!(f[2]["arg"]["channel"], "trades");
    assert_eq!(s.conn_id.len(), 8);
    assert!(s.conn_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(r.rejected.is_empty());
}

#[tokio::test(start_paused = true)]
async fn errors_use_okx_codes() {
    let mut s = session();
    let now = Instant::now();
    let cases: &[(&str, &str, &str)] = &[
        ("{oops", "60012", "Invalid request: {oops"),
        (
            r#"{"op":"subscribe"}"#,
            "60012",
            r#"Invalid request: {"op":"subscribe"}"#,
        ),
        (r#"{"op":"login","args":[]}"#, "60019", "Invalid op: login"),
        (
            r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"FOO-USDT"}]}"#,
            "60018",
            "Wrong URL or channel:bbo-tbt,instId:FOO-USDT doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
        ),
        (
            r#"{"op":"subscribe","args":[{"channel":"books42","instId":"BTC-USDT"}]}"#,
            "60018",
            "Wrong URL or channel:books42,instId:BTC-USDT doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
        ),
        (
            r#"{"op":"subscribe","args":[{"channel":"trades"}]}"#,
            "60027",
            "Parameter instId can not be empty.",
        ),
    ];
    for (request, code, msg) in cases {
        let f = json_frames(&s.handle(request, now));
        assert_eq!(f.len(), 1, "{request}");
        assert_eq!(f[0]["event"], "error", "{request}");
        assert_eq!(f[0]["code"], *code, "{request}");
        assert_eq!(f[0]["msg"], *msg, "{request}");
        assert_eq!(f[0]["connId"], s.conn_id.as_str());
    }
    assert!(!s.subscribed_ever);
}

#[tokio::test(start_paused = true)]
async fn mixed_args_get_one_answer_each_and_unsubscribe_stops_data() {
    let mut s = session();
    let now = Instant::now();
    let r = s.handle(
        r#"{"op":"subscribe","args":[{"channel":"trades","instId":"ETH-USDT"},{"channel":"trades","instId":"NOPE-USDT"}]}"#,
        now,
    );
    let f = json_frames(&r);
    assert_eq!(
        (f[0]["event"].as_str(), f[1]["event"].as_str()),
        (Some("subscribe"), Some("error"))
    );
    let trade = MarketEvent::Trade(Trade {
        symbol: 1,
        seq: 9,
        trade_id: 130_639_474,
        price: 4_221_990,
        qty: 12_060,
        taker_buy: true,
        ts_us: 1_630_048_897_897_000,
    });
    let pushed: Value = serde_json::from_str(&s.encode(&trade)[0]).expect("json");
    assert_eq!(
        pushed,
        json!({"arg": {"channel": "trades", "instId": "ETH-USDT"}, "data": [{"instId": "ETH-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "1.206", "side": "buy", "ts": "1630048897897", "count": "1", "source": "0", "seqId": 9}]})
    );
    let r = s.handle(
        r#"{"op":"unsubscribe","args":[{"channel":"trades","instId":"ETH-USDT"}]}"#,
        now,
    );
    assert_eq!(json_frames(&r)[0]["event"], "unsubscribe");
    assert!(s.encode(&trade).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_481st_request_in_an_hour_is_refused() {
    let mut s = session();
    let now = Instant::now();
    let req = r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#;
    for _ in 0..MAX_OPS_PER_HOUR {
        assert!(s.handle(req, now).rejected.is_empty());
    }
    let f = json_frames(&s.handle(req, now));
    assert_eq!(f[0]["code"], "60014");
    assert!(
        s.handle(req, now + Duration::from_secs(3_600))
            .rejected
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn tickers_carry_24h_statistics() {
    let mut s = session();
    let f = json_frames(&s.handle(
        r#"{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}"#,
        Instant::now(),
    ));
    let t = &f[1]["data"][0];
    for key in [
        "instType",
        "instId",
        "last",
        "lastSz",
        "askPx",
        "askSz",
        "bidPx",
        "bidSz",
        "open24h",
        "high24h",
        "low24h",
        "volCcy24h",
        "vol24h",
        "sodUtc0",
        "sodUtc8",
        "ts",
    ] {
        assert!(t[key].is_string(), "{key} in {t}");
    }
    let bid: f64 = t["bidPx"]
        .as_str()
        .and_then(|x| x.parse().ok())
        .expect("bid");
    let ask: f64 = t["askPx"]
        .as_str()
        .and_then(|x| x.parse().ok())
        .expect("ask");
    assert!(0.0 < bid && bid < ask);
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
        exchange: ExchangeId::Okx,
        index: 0,
        universe: u,
        board,
        events: market.clone(),
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(1)),
        faults: Arc::new(crate::fault::Faults::new(ExchangeId::Okx)),
        binance_ping_interval: Duration::from_secs(20),
    });
    (ctx, market, stop)
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_subscribes_is_closed_after_30s_even_if_it_pings() {
    let (ctx, market, _stop) = harness();
    let (socket, mut client) = mock::socket();
    let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
    let task = tokio::spawn(mock::run(socket, ctx.clone(), session, market.subscribe()));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.send_text("ping");
    assert_eq!(client.next_text().await.as_deref(), Some("pong"));
    assert!(
        matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 4004 && c.reason.as_str() == "No data received in 30s")
    );
    assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_and_pings_keep_it_open() {
    let (ctx, market, stop) = harness();
    let (socket, mut client) = mock::socket();
    let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
    let task = tokio::spawn(mock::run(socket, ctx.clone(), session, market.subscribe()));
    client.send_text(r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#);
    assert!(
        client
            .next_text()
            .await
            .is_some_and(|t| t.contains("\"subscribe\""))
    );
    // No trades arrive; pings every 25 s keep the connection for two minutes.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(25)).await;
        client.send_text("ping");
        assert_eq!(client.next_text().await.as_deref(), Some("pong"));
    }
    let t0 = Instant::now();
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 4004));
    assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
    task.await.expect("session");
    drop(stop);
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_the_upgrade_notice_then_closes() {
    let (ctx, market, stop) = harness();
    let (socket, mut client) = mock::socket();
    let session = Session::new(ctx.universe.clone(), ctx.board.clone(), 0);
    let task = tokio::spawn(mock::run(socket, ctx.clone(), session, market.subscribe()));
    stop.cancel();
    let notice: Value =
        serde_json::from_str(&client.next_text().await.expect("notice")).expect("json");
    assert_eq!(
        (notice["event"].as_str(), notice["code"].as_str()),
        (Some("notice"), Some("64008"))
    );
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
    task.await.expect("session");
}
