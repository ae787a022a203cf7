//! Unit tests of the Gate.io session: answers by id, error objects, ping/pong, the idle
//! deadline, pushes in the documented layout, and the refusal fault.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::session::*;
use super::*;
use crate::market::{Book, MarketEvent, Quote, Stats, Trade, Universe, now_us};
use crate::ws::End;
use crate::ws::driver::{Frame, Inbound, Protocol};
use spreadagg_model::ExchangeId;

fn session() -> Session {
    let symbols = vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()];
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Gateio]).expect("universe"));
    Session::new(u)
}

fn request(id: u64, channel: &str, event: &str, payload: &[&str]) -> String {
    json!({"time": now_us() / 1_000_000, "id": id, "channel": channel, "event": event, "payload": payload})
        .to_string()
}

fn one(s: &mut Session, text: &str) -> (Value, Option<&'static str>) {
    let (frames, rejected) = s.handle(text);
    assert_eq!(frames.len(), 1, "{frames:?}");
    (serde_json::from_str(&frames[0]).expect("json"), rejected)
}

fn quote(symbol: usize, seq: u64) -> MarketEvent {
    MarketEvent::Quote(Quote {
        symbol,
        seq,
        book: Book {
            bid: 1_917_779,
            bid_qty: 3_341,
            ask: 1_917_938,
            ask_qty: 90_000,
            bid_orders: 1,
            ask_orders: 1,
        },
        stats: Stats {
            open: 1,
            high: 1,
            low: 1,
            last: 1,
            last_qty: 1,
            quote_volume: 1.0,
            base_volume: 1.0,
            trade_count: 1,
            last_trade_id: 1,
        },
        ts_us: 1_606_293_275_123_456,
    })
}

#[test]
fn subscribe_is_answered_with_the_id_and_updates_follow() {
    let mut s = session();
    assert_eq!(s.encode(&quote(0, 1)), None, "nothing before subscribing");
    let (ack, rejected) = one(
        &mut s,
        &request(
            7,
            "spot.book_ticker",
            "subscribe",
            &["BTC_USDT", "ETH_USDT"],
        ),
    );
    assert_eq!(rejected, None);
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["channel"], "spot.book_ticker");
    assert_eq!(ack["event"], "subscribe");
    assert_eq!(ack["result"], json!({"status": "success"}));
    assert_eq!(ack["conn_id"], s.conn_id.as_str());
    assert!(ack["time"].is_i64() && ack["time_ms"].is_i64());
    assert!(ack.get("error").is_none());

    let push = s.encode(&quote(0, 48_733_182)).expect("subscribed");
    let inst = &Universe::new(&["BTC-USDT".to_owned()], &[ExchangeId::Gateio])
        .expect("u")
        .instruments[0];
    let v: Value = serde_json::from_str(&push).expect("json");
    assert_eq!(v["channel"], "spot.book_ticker");
    assert_eq!(v["event"], "update");
    assert_eq!(v["result"]["s"], "BTC_USDT");
    assert_eq!(v["result"]["u"], 48_733_182);
    assert_eq!(v["result"]["t"], 1_606_293_275_123_i64);
    assert_eq!(
        v["result"]["b"],
        crate::format::trimmed(1_917_779, inst.price_decimals)
    );
    // The documented field order (the ingest adapter's fast path reads exactly this).
    let order = [
        "\"time\":",
        "\"time_ms\":",
        "\"channel\":",
        "\"event\":",
        "\"result\":{\"t\":",
        "\"u\":",
        "\"s\":",
        "\"b\":",
        "\"B\":",
        "\"a\":",
        "\"A\":",
    ];
    let mut at = 0;
    for key in order {
        let i = push[at..]
            .find(key)
            .unwrap_or_else(|| panic!("{key} in order in {push}"));
        at += i + key.len();
    }
    // Trades were not asked for.
    let trade = MarketEvent::Trade(Trade {
        symbol: 0,
        seq: 9,
        trade_id: 309_143_071,
        price: 4705,
        qty: 1647,
        taker_buy: false,
        ts_us: 1_606_292_218_213_457,
    });
    assert_eq!(s.encode(&trade), None);
    let (_, rejected) = one(
        &mut s,
        &request(8, "spot.trades", "subscribe", &["BTC_USDT"]),
    );
    assert_eq!(rejected, None);
    let v: Value = serde_json::from_str(&s.encode(&trade).expect("subscribed")).expect("json");
    assert_eq!(v["channel"], "spot.trades");
    assert_eq!(v["result"]["id"], 309_143_071);
    assert_eq!(v["result"]["create_time"], 1_606_292_218);
    assert_eq!(v["result"]["create_time_ms"], "1606292218213.4570");
    assert_eq!(v["result"]["side"], "sell");
    assert_eq!(v["result"]["currency_pair"], "BTC_USDT");
    // Unsubscribe stops the pushes.
    let (ack, _) = one(
        &mut s,
        &request(9, "spot.book_ticker", "unsubscribe", &["BTC_USDT"]),
    );
    assert_eq!(
        (ack["event"].clone(), ack["id"].clone()),
        (json!("unsubscribe"), json!(9))
    );
    assert_eq!(s.encode(&quote(0, 48_733_183)), None);
    assert!(
        s.encode(&quote(1, 1)).is_some(),
        "ETH_USDT is still subscribed"
    );
}

#[test]
fn refusals_carry_gates_error_object_and_the_id() {
    let mut s = session();
    let cases = [
        (request(1, "spot.book_ticker", "subscribe", &["FOO_USDT"]), 2, "unknown currency pair FOO_USDT", "unknown_pair"),
        (request(2, "spot.book_ticker", "subscribe", &["BTC-USDT"]), 2, "unknown currency pair BTC-USDT", "unknown_pair"),
        (request(3, "spot.nothing", "subscribe", &["BTC_USDT"]), 2, "unknown channel spot.nothing", "no_such_channel"),
        (request(4, "spot.trades", "subscribe", &[]), 2, "invalid argument provided: payload must be a list of currency pairs", "invalid_payload"),
        (request(5, "spot.trades", "resubscribe", &["BTC_USDT"]), 2, "invalid argument provided: unknown event \"resubscribe\"", "invalid_event"),
        (json!({"id": 6, "channel": "spot.trades", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string(), 1, "invalid request body format: time is required", "invalid_request"),
        (json!({"time": 1, "id": 7, "channel": "spot.trades", "event": "subscribe", "payload": ["BTC_USDT"]}).to_string(), 2, "invalid argument provided: request time differs from server time by more than 60s", "time_skew"),
    ];
    for (text, code, message, label) in cases {
        let (v, rejected) = one(&mut s, &text);
        assert_eq!(rejected, Some(label), "{text}");
        assert_eq!(
            v["error"],
            json!({"code": code, "message": message}),
            "{text}"
        );
        assert_eq!(v["result"], Value::Null, "{text}");
        let sent: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["id"], sent["id"], "{text}");
    }
    // A request with one unknown pair changes nothing.
    let (_, rejected) = one(
        &mut s,
        &request(
            8,
            "spot.book_ticker",
            "subscribe",
            &["BTC_USDT", "FOO_USDT"],
        ),
    );
    assert_eq!(rejected, Some("unknown_pair"));
    assert_eq!(s.encode(&quote(0, 1)), None);
    for bad in [
        "not json",
        "[1]",
        r#"{"time":1,"id":"x","channel":"spot.ping"}"#,
    ] {
        let (v, rejected) = one(&mut s, bad);
        assert_eq!(v["error"]["code"], 1, "{bad}");
        assert!(rejected.is_some());
        assert!(v.get("id").is_none());
    }
}

#[test]
fn ping_gets_pong() {
    let mut s = session();
    let (v, rejected) = one(
        &mut s,
        &json!({"time": now_us() / 1_000_000, "channel": "spot.ping"}).to_string(),
    );
    assert_eq!(rejected, None);
    assert_eq!(v["channel"], "spot.pong");
    assert_eq!(v["event"], "");
    assert_eq!(v["result"], Value::Null);
    assert!(v["time_ms"].is_i64());
    let (v, _) = one(
        &mut s,
        &json!({"time": now_us() / 1_000_000, "id": 5, "channel": "spot.ping"}).to_string(),
    );
    assert_eq!(v["id"], 5);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_and_any_frame_keeps_it_open() {
    let mut s = session();
    let t0 = Instant::now();
    s.start(t0);
    assert_eq!(s.deadline(), Some(t0 + IDLE_TIMEOUT));
    let mut out = Vec::new();
    let later = t0 + IDLE_TIMEOUT - std::time::Duration::from_secs(1);
    assert!(s.on_timer(later, &mut out).is_ok());
    // A WebSocket ping counts as much as a spot.ping.
    let _ = s.on_client(Inbound::Ping, later);
    assert_eq!(s.deadline(), Some(later + IDLE_TIMEOUT));
    assert_eq!(s.on_timer(later + IDLE_TIMEOUT, &mut out), Err(End::Idle));
    assert!(out.is_empty());
    let g = s.goodbye(End::Idle).expect("a close frame");
    assert_eq!((g.code, g.reason, g.notice), (1000, "idle timeout", None));
    let g = s.goodbye(End::Shutdown).expect("a close frame");
    assert_eq!((g.code, g.notice), (1001, None), "Gate documents no notice");
    assert!(s.goodbye(End::ClientClosed).is_none());
}

#[test]
fn the_refusal_fault_answers_a_subscribe_with_code_3() {
    let s = session();
    let text = request(42, "spot.trades", "subscribe", &["BTC_USDT"]);
    let Some(frames) = s.refusal(Inbound::Text(&text)) else {
        panic!("a subscribe is refused")
    };
    let [Frame::Text(t)] = frames.as_slice() else {
        panic!("{frames:?}")
    };
    let v: Value = serde_json::from_str(t).expect("json");
    assert_eq!(v["id"], 42);
    assert_eq!(v["error"]["code"], 3);
    assert_eq!(v["result"], Value::Null);
    assert!(
        s.refusal(Inbound::Text(r#"{"time":1,"channel":"spot.ping"}"#))
            .is_none()
    );
    assert!(
        s.encode(&quote(0, 1)).is_none(),
        "the refused request subscribed nothing"
    );
}

#[test]
fn fractional_millisecond_text() {
    assert_eq!(wire::ms_text(1_606_292_218_213_457), "1606292218213.4570");
    assert_eq!(wire::ms_text(1_606_292_218_213_007), "1606292218213.0070");
}
