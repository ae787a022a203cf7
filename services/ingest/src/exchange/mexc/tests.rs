//! MEXC session tests: pushes encoded with the prost types, and pushes written byte by byte
//! from the protobuf wire format (so the tests do not only round-trip our own schema), plus
//! the JSON answers as MEXC documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

const BBO_CHANNEL: &str = "spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT";
const DEALS_CHANNEL: &str = "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT";

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Mexc, [("BTCUSDT", "BTC-USDT")])
}

fn run(s: &mut MexcSession, frame: Frame<'_>) -> (Result<Control, ParseError>, Output) {
    let mut out = Output::default();
    let r = s.on_frame(frame, &symbols(), 7, &mut out);
    (r, out)
}

fn push(bytes: &[u8]) -> (Result<Control, ParseError>, Vec<Event>) {
    let (r, out) = run(&mut MexcSession::default(), Frame::Binary(bytes));
    (r, out.events)
}

fn text(s: &mut MexcSession, t: &str) -> Result<Control, ParseError> {
    run(s, Frame::Text(t)).0
}

fn bbo(bid: &str, ask: &str, version: &str) -> Vec<u8> {
    pb::Envelope {
        channel: BBO_CHANNEL.into(),
        symbol: Some("BTCUSDT".into()),
        symbol_id: Some("2fb942154ef44a4ab2ef98c8afb6a4a7".into()),
        create_time: Some(1_736_412_092_430),
        send_time: Some(1_736_412_092_433),
        body: Some(pb::envelope::Body::AggreBookTicker(pb::AggreBookTicker {
            bid_price: bid.into(),
            bid_quantity: "3.73485".into(),
            ask_price: ask.into(),
            ask_quantity: "7.669875".into(),
            version: version.into(),
        })),
    }
    .encode_to_vec()
}

fn deal(price: &str, qty: &str, trade_type: i32, time: i64, id: &str) -> pb::AggreDeal {
    pb::AggreDeal {
        price: price.into(),
        quantity: qty.into(),
        trade_type,
        time,
        trade_id: id.into(),
    }
}

fn deals(list: Vec<pb::AggreDeal>) -> Vec<u8> {
    pb::Envelope {
        channel: DEALS_CHANNEL.into(),
        symbol: Some("BTCUSDT".into()),
        send_time: Some(1_736_409_765_052),
        body: Some(pb::envelope::Body::AggreDeals(pb::AggreDeals {
            deals: list,
            event_type: "spot@public.aggre.deals.v3.api.pb@100ms".into(),
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The protobuf wire format by hand: a varint, and tagged fields.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field_len(n: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(n << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_varint(n: u64, v: u64, out: &mut Vec<u8>) {
    varint(n << 3, out);
    varint(v, out);
}

#[test]
fn book_ticker_encoded_with_the_schema() {
    let (r, events) = push(&bbo("93387.28", "93387.29", "10589632359"));
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = events.as_slice() else {
        panic!("one quote expected: {events:?}")
    };
    assert_eq!(q.symbol, SymbolId(0));
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (93387.28, 3.73485, 93387.29, 7.669875)
    );
    assert_eq!(
        (q.exchange_ts_ns, q.recv_ts_ns, q.seq),
        (1_736_412_092_430_000_000, 7, 10_589_632_359),
        "create_time wins over send_time; the version is the seq"
    );
}

#[test]
fn book_ticker_from_hand_written_bytes() {
    // symbol = 3 "BTCUSDT"; body 315 {1:"1", 2:"2", 3:"3", 4:"4"}; send_time = 6.
    let bytes: &[u8] = &[
        0x1a, 0x07, b'B', b'T', b'C', b'U', b'S', b'D', b'T', // symbol
        0xda, 0x13, 0x0c, // field 315, 12 bytes
        0x0a, 0x01, b'1', 0x12, 0x01, b'2', 0x1a, 0x01, b'3', 0x22, 0x01, b'4', //
        0x30, 0x91, 0xb0, 0xe7, 0xd1, 0xc4, 0x32, // send_time 1736412092433
    ];
    let (r, events) = push(bytes);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = events.as_slice() else {
        panic!("one quote expected: {events:?}")
    };
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (1.0, 2.0, 3.0, 4.0)
    );
    assert_eq!(
        (q.exchange_ts_ns, q.seq),
        (1_736_412_092_433_000_000, 0),
        "no create_time: send_time; no version: no seq"
    );
}

#[test]
fn several_deals_in_one_push() {
    let bytes = deals(vec![
        deal("93220.00", "0.04438243", 2, 1_736_409_765_051, "T1"),
        deal("93221.5", "1", 1, 1_736_409_765_052, "T2"),
        // Older pushes have no trade id: one is made, repeats in a push kept apart.
        deal("93222", "0.5", 1, 1_736_409_765_053, ""),
        deal("93222", "0.5", 1, 1_736_409_765_053, ""),
        deal("93222", "0.5", 2, 0, ""),
    ]);
    let (r, events) = push(&bytes);
    assert_eq!(r, Ok(Control::Data));
    let prints: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Print(p) => (p.price, p.qty, p.side, p.trade_id.clone(), p.exchange_ts_ns),
            Event::Quote(q) => panic!("not a trade: {q:?}"),
        })
        .collect();
    assert_eq!(
        prints,
        vec![
            (
                93220.0,
                0.04438243,
                Side::Sell,
                "T1".into(),
                1_736_409_765_051_000_000
            ),
            (
                93221.5,
                1.0,
                Side::Buy,
                "T2".into(),
                1_736_409_765_052_000_000
            ),
            (
                93222.0,
                0.5,
                Side::Buy,
                "1736409765053-93222-0.5-b".into(),
                1_736_409_765_053_000_000
            ),
            (
                93222.0,
                0.5,
                Side::Buy,
                "1736409765053-93222-0.5-b-1".into(),
                1_736_409_765_053_000_000
            ),
            // No deal time: the envelope's send_time.
            (
                93222.0,
                0.5,
                Side::Sell,
                "1736409765052-93222-0.5-s".into(),
                1_736_409_765_052_000_000
            ),
        ]
    );
}

#[test]
fn unknown_fields_are_skipped_at_every_level() {
    // A deals push as MEXC might extend it: the deal carries fields 6 (varint) and 9
    // (string), the body a field 7, the envelope fields 7 and 400 (a future body).
    let mut d = Vec::new();
    field_len(1, b"93220.00", &mut d);
    field_len(2, b"0.25", &mut d);
    field_varint(3, 1, &mut d);
    field_varint(4, 1_736_409_765_051, &mut d);
    field_len(5, b"556677", &mut d);
    field_varint(6, 1_736_409_765_000, &mut d);
    field_len(9, b"future", &mut d);
    let mut body = Vec::new();
    field_len(1, &d, &mut body);
    field_len(2, b"spot@public.aggre.deals.v3.api.pb@100ms", &mut body);
    field_varint(7, 42, &mut body);
    let mut env = Vec::new();
    field_len(1, DEALS_CHANNEL.as_bytes(), &mut env);
    field_varint(7, 1, &mut env);
    field_len(400, b"\x0a\x01x", &mut env);
    field_len(314, &body, &mut env);
    field_len(3, b"BTCUSDT", &mut env);
    let (r, events) = push(&env);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(p)] = events.as_slice() else {
        panic!("one trade expected: {events:?}")
    };
    assert_eq!(
        (
            p.price,
            p.qty,
            p.side,
            p.trade_id.as_str(),
            p.exchange_ts_ns
        ),
        (
            93220.0,
            0.25,
            Side::Buy,
            "556677",
            1_736_409_765_051_000_000
        )
    );
}

#[test]
fn subscribe_one_request_per_symbol_acked_by_id_or_by_topics() {
    let mut s = MexcSession::default();
    let mut next_id = 4;
    let natives = [
        "BTCUSDT".to_owned(),
        "ETHUSDT".to_owned(),
        "MXUSDT".to_owned(),
    ];
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!((requests.len(), next_id), (3, 7));
    let Outgoing::Text(first) = &requests[0].frame else {
        panic!("text expected")
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(first).expect("json"),
        serde_json::json!({"method":"SUBSCRIPTION","params":[BBO_CHANNEL, DEALS_CHANNEL],"id":4})
    );
    assert_eq!(requests[1].natives, vec!["ETHUSDT".to_owned()]);
    // Our id echoed back.
    let ack = format!(r#"{{"id":4,"code":0,"msg":"{BBO_CHANNEL},{DEALS_CHANNEL}"}}"#);
    assert_eq!(text(&mut s, &ack), Ok(Control::Subscribed(4)));
    assert_eq!(text(&mut s, &ack), Ok(Control::Ignored), "acked once");
    // id 0, as the docs show: matched by the topics in msg.
    let eth = |kind: &str| format!("spot@public.aggre.{kind}.v3.api.pb@100ms@ETHUSDT");
    assert_eq!(
        text(
            &mut s,
            &format!(
                r#"{{"id":0,"code":0,"msg":"{},{}"}}"#,
                eth("bookTicker"),
                eth("deals")
            )
        ),
        Ok(Control::Subscribed(5))
    );
    // One answer per topic: confirmed when both have come.
    let mx = |kind: &str| format!("spot@public.aggre.{kind}.v3.api.pb@100ms@MXUSDT");
    let one = |t: String| format!(r#"{{"id":0,"code":0,"msg":"{t}"}}"#);
    assert_eq!(text(&mut s, &one(mx("deals"))), Ok(Control::Ignored));
    assert_eq!(
        text(&mut s, &one(mx("bookTicker"))),
        Ok(Control::Subscribed(6))
    );
    assert_eq!(
        text(&mut s, &one(mx("bookTicker"))),
        Ok(Control::Ignored),
        "an unsubscribe answer or a late repeat"
    );
}

#[test]
fn refusals_name_their_request() {
    let mut s = MexcSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTCUSDT".to_owned(), "OLDUSDT".to_owned()], &mut next_id);
    let blocked = r#"{"id":0,"code":0,"msg":"Not Subscribed successfully! [spot@public.aggre.bookTicker.v3.api.pb@100ms@OLDUSDT,spot@public.aggre.deals.v3.api.pb@100ms@OLDUSDT].  Reason： Blocked! "}"#;
    let Ok(Control::Refused { request, reason }) = text(&mut s, blocked) else {
        panic!("refusal expected")
    };
    assert_eq!(request, Some(2));
    assert!(reason.contains("Blocked"), "{reason}");
    // The same answer again concerns no pending request.
    assert!(matches!(
        text(&mut s, blocked),
        Ok(Control::ExchangeError(_))
    ));
    // A non-zero code with our id.
    assert!(matches!(
        text(
            &mut s,
            r#"{"id":1,"code":30001,"msg":"too many subscriptions"}"#
        ),
        Ok(Control::Refused {
            request: Some(1),
            ..
        })
    ));
    // Given up on: an ack for it is ignored.
    let mut next_id = 9;
    s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    s.forget(9);
    assert_eq!(
        text(
            &mut s,
            &format!(r#"{{"id":9,"code":0,"msg":"{BBO_CHANNEL},{DEALS_CHANNEL}"}}"#)
        ),
        Ok(Control::Ignored)
    );
}

#[test]
fn pong_is_a_keepalive_and_the_client_pings() {
    let mut s = MexcSession::default();
    assert_eq!(
        text(&mut s, r#"{"id":0,"code":0,"msg":"PONG"}"#),
        Ok(Control::KeepAlive)
    );
    assert_eq!(
        s.keepalive(),
        Some(Outgoing::Text(r#"{"method":"PING"}"#.into()))
    );
    assert_eq!(Mexc.keepalive_every(), Some(Duration::from_secs(20)));
    let limits = Mexc.limits();
    assert!(limits.symbols_per_connection * 2 <= MAX_SUBSCRIPTIONS);
    assert_eq!(limits.max_connection_age, Some(MAX_CONNECTION_AGE));
}

#[test]
fn an_older_book_version_is_dropped() {
    let mut s = MexcSession::default();
    let b = |v: &str| bbo("1", "2", v);
    assert_eq!(run(&mut s, Frame::Binary(&b("5"))).0, Ok(Control::Data));
    assert_eq!(
        run(&mut s, Frame::Binary(&b("5"))).0.map_err(|e| e.label()),
        Err("out_of_order")
    );
    assert_eq!(run(&mut s, Frame::Binary(&b("6"))).0, Ok(Control::Data));
}

#[test]
fn bad_and_unused_frames_are_named() {
    let good = bbo("1", "2", "1");
    let depth = {
        // Body 313 (aggregated depth) is not read.
        let mut env = Vec::new();
        field_len(
            1,
            b"spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT",
            &mut env,
        );
        field_len(313, b"\x0a\x00", &mut env);
        env
    };
    let other_symbol = pb::Envelope {
        channel: "spot@public.aggre.bookTicker.v3.api.pb@100ms@ETHUSDT".into(),
        ..pb::Envelope::decode(good.as_slice()).expect("decode")
    };
    let mut other_symbol = other_symbol;
    other_symbol.symbol = None;
    let cases: Vec<(&str, Vec<u8>, Result<Control, &str>)> = vec![
        ("garbage", vec![0xff; 16], Err("malformed")),
        (
            "truncated",
            good[..good.len() - 3].to_vec(),
            Err("malformed"),
        ),
        ("truncated varint", vec![0x30, 0x91, 0xb0], Err("malformed")),
        ("wrong wire type", vec![0x0d, 0, 0, 0, 0], Err("malformed")),
        (
            "invalid utf-8",
            vec![0x0a, 0x02, 0xc3, 0x28],
            Err("malformed"),
        ),
        ("empty frame", Vec::new(), Ok(Control::Ignored)),
        ("unknown body", depth, Ok(Control::Ignored)),
        ("empty deals", deals(Vec::new()), Ok(Control::Ignored)),
        (
            "symbol from the channel, not listed",
            other_symbol.encode_to_vec(),
            Err("unknown_symbol"),
        ),
        ("crossed", bbo("3", "2", "1"), Err("crossed")),
        ("bad price", bbo("abc", "2", "1"), Err("bad_number")),
        (
            "bad trade type",
            deals(vec![deal("1", "1", 1, 1, "a"), deal("1", "1", 3, 1, "b")]),
            Err("malformed"),
        ),
        (
            "zero quantity",
            deals(vec![deal("1", "0", 1, 1, "a")]),
            Err("bad_number"),
        ),
    ];
    for (name, bytes, want) in cases {
        let (r, events) = push(&bytes);
        assert_eq!(r.map_err(|e| e.label()), want, "{name}");
        assert!(events.is_empty(), "{name}: a rejected push yields nothing");
    }
    let mut s = MexcSession::default();
    for (t, label) in [
        ("PONG", "malformed"),
        ("{}", "malformed"),
        (r#"{"id":0,"code":0}"#, "malformed"),
        (r#"{"msg":5}"#, "malformed"),
    ] {
        assert_eq!(text(&mut s, t).map_err(|e| e.label()), Err(label), "{t}");
    }
}

#[test]
fn no_input_panics() {
    let mut samples = vec![
        bbo("1", "2", "99999999999999999999999"),
        deals(vec![deal("1", "1", 1, i64::MAX, "")]),
        deals(vec![deal("1", "1", 1, -5, "")]),
    ];
    // Every prefix of a valid push, and every single-byte corruption of one.
    let good = deals(vec![deal("93220.00", "0.5", 2, 1, "x")]);
    for n in 0..good.len() {
        samples.push(good[..n].to_vec());
        let mut bad = good.clone();
        bad[n] ^= 0xa5;
        samples.push(bad);
    }
    let mut s = MexcSession::default();
    for b in &samples {
        let _ = run(&mut s, Frame::Binary(b));
        let _ = run(&mut s, Frame::Text(&String::from_utf8_lossy(b)));
    }
    for t in [
        "",
        "{",
        "[]",
        "null",
        r#"{"id":-1,"code":0,"msg":"x"}"#,
        r#"{"id":1.5,"code":99999999999999999999,"msg":"x"}"#,
        r#"{"id":0,"code":1,"msg":"Not Subscribed successfully! ["}"#,
        r#"{"id":0,"code":0,"msg":"Not Subscribed successfully! ]["}"#,
    ] {
        let _ = text(&mut s, t);
    }
}
