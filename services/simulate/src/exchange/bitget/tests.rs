//! Unit tests of the Bitget session: acks, error events, the rate limit, the deadlines and
//! the fault refusal, on the pure state machine with time passed in.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::session::Session;
use super::*;
use crate::market::{Board, Model, Universe, now_us};
use crate::ws::End;
use crate::ws::driver::{Frame, Inbound, Protocol, Reply};
use spreadagg_model::ExchangeId;

fn session() -> Session {
    let symbols = vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()];
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Bitget]).expect("universe"));
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(now_us())));
    let mut s = Session::new(u, board, 0);
    s.start(Instant::now());
    s
}

fn frames(r: &Reply) -> Vec<Value> {
    r.frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) if t == "pong" => Value::String("pong".into()),
            Frame::Text(t) => serde_json::from_str(t).expect("json"),
            other => panic!("text frames only: {other:?}"),
        })
        .collect()
}

const SUBSCRIBE: &str = r#"{"op":"subscribe","args":[{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"}]}"#;

#[tokio::test(start_paused = true)]
async fn subscribe_acks_each_argument_with_a_snapshot() {
    let mut s = session();
    let r = s.on_client(Inbound::Text(SUBSCRIBE), Instant::now());
    let f = frames(&r);
    assert_eq!(f.len(), 4, "{f:?}");
    assert_eq!(
        f[0],
        json!({"event": "subscribe", "arg": {"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"}})
    );
    assert_eq!(f[1]["action"], "snapshot");
    let keys: Vec<&str> = f[1]["data"][0]
        .as_object()
        .expect("ticker")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(keys.contains(&"bidPr") && keys.contains(&"askSz") && keys.contains(&"ts"));
    assert_eq!(f[2]["event"], "subscribe");
    assert_eq!(f[2]["arg"]["channel"], "trade");
    assert_eq!(f[3]["action"], "snapshot");
    assert_eq!(f[3]["arg"]["channel"], "trade");
    assert!(r.rejected.is_empty());
    assert!(r.end.is_none());
}

#[tokio::test(start_paused = true)]
async fn unknown_arguments_get_error_events_with_bitget_codes() {
    let mut s = session();
    let r = s.on_client(
        Inbound::Text(
            r#"{"op":"subscribe","args":[{"instType":"SPOT","channel":"ticker","instId":"FOOUSDT"},{"instType":"SPOT","channel":"books9","instId":"BTCUSDT"},{"instType":"USDT-FUTURES","channel":"ticker","instId":"BTCUSDT"}]}"#,
        ),
        Instant::now(),
    );
    let f = frames(&r);
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(
        f[0],
        json!({"event": "error", "arg": {"instType": "SPOT", "channel": "ticker", "instId": "FOOUSDT"}, "code": 30001, "msg": "instType:SPOT,channel:ticker,instId:FOOUSDT doesn't exist", "op": "subscribe"})
    );
    assert!(f.iter().all(|e| e["code"] == 30001));
    assert_eq!(r.rejected.len(), 3);
    for (bad, code) in [
        ("not json", 30016),
        (r#"{"args":[]}"#, 30016),
        (r#"{"op":"login","args":[{}]}"#, 30003),
        (r#"{"op":"subscribe","args":[]}"#, 30016),
    ] {
        let r = s.on_client(Inbound::Text(bad), Instant::now() + Duration::from_secs(2));
        assert_eq!(frames(&r)[0]["code"], code, "{bad}");
        assert!(frames(&r)[0].get("arg").is_none(), "{bad}");
    }
}

#[tokio::test(start_paused = true)]
async fn ping_is_answered_with_pong_and_keeps_the_connection() {
    let mut s = session();
    let t0 = Instant::now();
    let _ = s.on_client(Inbound::Text(SUBSCRIBE), t0);
    let r = s.on_client(Inbound::Text("ping"), t0 + Duration::from_secs(25));
    assert_eq!(frames(&r), [Value::String("pong".into())]);
    let mut out = Vec::new();
    assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(55)));
    assert!(s.on_timer(t0 + Duration::from_secs(54), &mut out).is_ok());
    assert_eq!(
        s.on_timer(t0 + Duration::from_secs(55), &mut out),
        Err(End::Idle),
        "30 s without a ping"
    );
    let g = s.goodbye(End::Idle).expect("a close frame");
    assert_eq!((g.code, g.notice), (1000, None));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_subscribes_is_closed() {
    let mut s = session();
    let t0 = Instant::now();
    let _ = s.on_client(Inbound::Text("ping"), t0 + Duration::from_secs(20));
    let mut out = Vec::new();
    assert_eq!(
        s.on_timer(t0 + PING_TIMEOUT, &mut out),
        Err(End::NoSubscription)
    );
}

#[tokio::test(start_paused = true)]
async fn more_than_ten_messages_a_second_close_the_connection() {
    let mut s = session();
    let t0 = Instant::now();
    for i in 0..10 {
        let r = s.on_client(Inbound::Text("ping"), t0 + Duration::from_millis(i * 50));
        assert!(r.end.is_none(), "message {i}");
    }
    let r = s.on_client(Inbound::Text(SUBSCRIBE), t0 + Duration::from_millis(600));
    assert_eq!(r.end, Some(End::RateLimited), "the eleventh, pings counted");
    assert!(r.frames.is_empty());
    assert_eq!(s.goodbye(End::RateLimited).map(|g| g.code), Some(1008));
    // WebSocket control frames are not messages.
    let mut s = session();
    for _ in 0..20 {
        assert!(s.on_client(Inbound::Ping, t0).end.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn the_hourly_request_limit_refuses_with_30006() {
    let mut s = session();
    let t0 = Instant::now();
    for i in 0..MAX_OPS_PER_HOUR {
        // Spaced so the per-second limit is not what trips.
        let r = s.on_client(
            Inbound::Text(SUBSCRIBE),
            t0 + Duration::from_millis(200 * i as u64),
        );
        assert!(r.rejected.is_empty(), "request {i}");
    }
    let r = s.on_client(Inbound::Text(SUBSCRIBE), t0 + Duration::from_secs(3_000));
    assert_eq!(frames(&r)[0]["code"], 30006);
    assert_eq!(r.rejected, ["too_many_requests"]);
}

#[tokio::test(start_paused = true)]
async fn the_fault_refusal_names_the_first_argument_and_changes_nothing() {
    let s = session();
    let frames = s.refusal(Inbound::Text(SUBSCRIBE)).expect("a refusal");
    let [Frame::Text(t)] = frames.as_slice() else {
        panic!("one frame")
    };
    let v: Value = serde_json::from_str(t).expect("json");
    assert_eq!(v["event"], "error");
    assert_eq!(v["code"], 30006);
    assert_eq!(v["arg"]["channel"], "ticker");
    assert_eq!(v["op"], "subscribe");
    assert!(s.refusal(Inbound::Text("ping")).is_none());
    assert!(
        s.refusal(Inbound::Text(r#"{"op":"unsubscribe","args":[]}"#))
            .is_none()
    );
}
