//! Gate.io session tests on frames shaped exactly as Gate documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

const BOOK_TICKER_DOC: &str = r#"{"time":1606293275,"time_ms":1606293275723,"channel":"spot.book_ticker","event":"update","result":{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504","a":"19179.38","A":"0.09"}}"#;
const TRADE_DOC: &str = r#"{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"update","result":{"id":309143071,"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell","currency_pair":"BTC_USDT","amount":"16.47","price":"0.4705"}}"#;

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Gateio, [("BTC_USDT", "BTC-USDT")])
}

fn parse_with(s: &mut GateioSession, text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = s.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut GateioSession::default(), text)
}

#[test]
fn book_ticker_as_documented() {
    let (r, out) = parse(BOOK_TICKER_DOC);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = out.as_slice() else {
        panic!("one quote expected: {out:?}")
    };
    assert_eq!(q.symbol, SymbolId(0));
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (19177.79, 0.000_334_150_4, 19179.38, 0.09)
    );
    assert_eq!(
        (q.exchange_ts_ns, q.recv_ts_ns, q.seq),
        (1_606_293_275_123_000_000, 7, 48_733_182)
    );
}

#[test]
fn trades_as_documented_with_fractional_milliseconds() {
    let (r, out) = parse(TRADE_DOC);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("one trade expected: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.side, t.trade_id.as_str()),
        (0.4705, 16.47, Side::Sell, "309143071")
    );
    assert_eq!(
        t.exchange_ts_ns, 1_606_292_218_213_457_800,
        "exact, no float rounding"
    );
    // Newer pushes carry more fields, and the trailing zeros of Gate's precision.
    let (r, out) = parse(
        r#"{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"update","result":{"id":309143072,"create_time":1606292218,"create_time_ms":"1606292218213","side":"buy","currency_pair":"BTC_USDT","amount":"16.4700000000","price":"0.4705000000","range":"1-1","sequence_id":"1","text":"x"}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("one trade expected: {out:?}")
    };
    assert_eq!(
        (t.side, t.exchange_ts_ns),
        (Side::Buy, 1_606_292_218_213_000_000)
    );
    // Without create_time_ms, the seconds.
    let (r, out) = parse(
        r#"{"time":1,"channel":"spot.trades","event":"update","result":{"id":1,"create_time":1606292218,"side":"buy","currency_pair":"BTC_USDT","amount":"1","price":"2"}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(t.exchange_ts_ns, 1_606_292_218_000_000_000);
}

#[test]
fn fractional_milliseconds_convert_exactly() {
    for (text, ns) in [
        ("1606292218213.4578", 1_606_292_218_213_457_800),
        ("1606292218213.4", 1_606_292_218_213_400_000),
        ("1606292218213.123456789", 1_606_292_218_213_123_456),
        ("1606292218213", 1_606_292_218_213_000_000),
        ("0.000001", 1),
        ("1734567890123.999999", 1_734_567_890_123_999_999),
    ] {
        assert_eq!(ms_text_to_ns(text), Ok(ns), "{text}");
    }
    for bad in [
        // The integer part fits, the fraction carries it past i64::MAX (was an overflow).
        "9223372036854.999999",
        "",
        ".5",
        "1.",
        "-1",
        "+1",
        "1e3",
        "1.2.3",
        "12a",
        " 1",
        "9999999999999999",
        "1.-2",
    ] {
        assert!(ms_text_to_ns(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn pings_pongs_acks_and_errors() {
    let mut s = GateioSession::default();
    let Some(Outgoing::Text(ping)) = s.keepalive() else {
        panic!("Gate wants a client ping")
    };
    let v: serde_json::Value = serde_json::from_str(&ping).expect("JSON");
    assert_eq!(v["channel"], "spot.ping");
    assert!(v["time"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"time":1545404023,"time_ms":1545404023123,"conn_id":"0ab1c2","channel":"spot.pong","event":"","result":null}"#
        )
        .0,
        Ok(Control::KeepAlive),
        "a pong is never an error"
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"time":1545404023,"channel":"spot.pong","event":"","error":null,"result":null}"#
        )
        .0,
        Ok(Control::KeepAlive)
    );

    let mut next_id = 5;
    let requests = s.subscribe(&["BTC_USDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 2);
    assert_eq!(next_id, 7);
    let ack = |id: u64, channel: &str| {
        format!(
            r#"{{"time":1606293275,"time_ms":1606293275723,"id":{id},"conn_id":"a4d3ae55","channel":"{channel}","event":"subscribe","payload":["BTC_USDT"],"result":{{"status":"success"}}}}"#
        )
    };
    assert_eq!(
        parse_with(&mut s, &ack(5, "spot.book_ticker")).0,
        Ok(Control::Subscribed(5))
    );
    assert_eq!(
        parse_with(&mut s, &ack(5, "spot.book_ticker")).0,
        Ok(Control::Ignored),
        "repeat"
    );
    assert_eq!(
        parse_with(&mut s, &ack(99, "spot.trades")).0,
        Ok(Control::Ignored),
        "not ours"
    );
    // The documented failure shape, echoing our id.
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"time":1606292218,"time_ms":1606292218231,"id":6,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency pair GIBBERISH_USD"},"result":null}"#
        )
        .0,
        Ok(Control::Refused {
            request: Some(6),
            reason: "code 2: unknown currency pair GIBBERISH_USD".into()
        })
    );
    // An error for no request of ours.
    assert_eq!(
        parse(r#"{"time":1606292218,"channel":"","event":"","error":{"code":1,"message":"invalid request body format"},"result":null}"#).0,
        Ok(Control::ExchangeError("code 1: invalid request body format".into()))
    );
    // A failed status without an error object is a refusal too.
    let mut s = GateioSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTC_USDT".to_owned()], &mut next_id);
    assert!(matches!(
        parse_with(&mut s, r#"{"time":1,"id":1,"channel":"spot.book_ticker","event":"subscribe","result":{"status":"fail"}}"#).0,
        Ok(Control::Refused { request: Some(1), .. })
    ));
    // A forgotten request is not confirmed later.
    s.forget(2);
    assert_eq!(
        parse_with(&mut s, &ack(2, "spot.trades")).0,
        Ok(Control::Ignored)
    );
    // Unsubscribe answers and other channels are understood and ignored.
    assert_eq!(
        parse(r#"{"time":1,"id":3,"channel":"spot.trades","event":"unsubscribe","result":{"status":"success"}}"#).0,
        Ok(Control::Ignored)
    );
    assert_eq!(
        parse(r#"{"time":1,"channel":"spot.tickers","event":"update","result":{"currency_pair":"BTC_USDT","last":"1"}}"#).0,
        Ok(Control::Ignored)
    );
}

#[test]
fn subscribe_requests_are_batched_per_channel_within_the_cap() {
    let mut s = GateioSession::default();
    let natives: Vec<String> = (0..SYMBOLS_PER_CONNECTION)
        .map(|i| format!("C{i}_USDT"))
        .collect();
    let mut next_id = 1;
    let requests = s.subscribe(&natives, &mut next_id);
    let batches = SYMBOLS_PER_CONNECTION.div_ceil(PAIRS_PER_REQUEST);
    assert_eq!(requests.len(), 2 * batches);
    let mut covered = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.id, i as u64 + 1);
        assert!(r.natives.len() <= PAIRS_PER_REQUEST);
        let Outgoing::Text(text) = &r.frame else {
            panic!("text frames")
        };
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(v["id"], r.id);
        assert_eq!(v["event"], "subscribe");
        assert!(v["time"].as_u64().is_some());
        let channel = if i % 2 == 0 {
            "spot.book_ticker"
        } else {
            "spot.trades"
        };
        assert_eq!(v["channel"], channel);
        let payload: Vec<String> = serde_json::from_value(v["payload"].clone()).expect("pairs");
        assert_eq!(payload, r.natives);
        if i % 2 == 0 {
            covered.extend(payload);
        }
    }
    assert_eq!(covered, natives, "every symbol once per channel");
    // One more than a batch: two batches.
    let mut next_id = 1;
    assert_eq!(
        s.subscribe(
            &natives[..PAIRS_PER_REQUEST.min(natives.len())],
            &mut next_id
        )
        .len(),
        2
    );
    let natives: Vec<String> = (0..=PAIRS_PER_REQUEST)
        .map(|i| format!("C{i}_USDT"))
        .collect();
    assert_eq!(s.subscribe(&natives, &mut next_id).len(), 4);
}

#[test]
fn bad_data_is_an_error_not_a_panic() {
    for (text, label) in [
        (
            BOOK_TICKER_DOC.replace("BTC_USDT", "ETH_USDT"),
            "unknown_symbol",
        ),
        (
            BOOK_TICKER_DOC.replace("\"19177.79\"", "\"19180\""),
            "crossed",
        ),
        (
            BOOK_TICKER_DOC.replace("\"19177.79\"", "\"x\""),
            "bad_number",
        ),
        (TRADE_DOC.replace("\"sell\"", "\"both\""), "malformed"),
        (
            TRADE_DOC.replace("1606292218213.4578", "soon"),
            "bad_number",
        ),
        (TRADE_DOC.replace("\"16.47\"", "\"0\""), "bad_number"),
        ("not json".to_owned(), "malformed"),
    ] {
        let (r, out) = parse(&text);
        let e = r.expect_err(&text);
        assert!(
            e.label() == label || (label == "crossed" && matches!(e, ParseError::BadQuote(_))),
            "{text}: {e:?}"
        );
        assert!(out.is_empty());
    }
    let mut out = Output::default();
    assert!(
        GateioSession::default()
            .on_frame(Frame::Binary(b"\x00"), &symbols(), 1, &mut out)
            .is_err()
    );
}

#[test]
fn stale_book_tickers_are_dropped() {
    let mut s = GateioSession::default();
    assert_eq!(parse_with(&mut s, BOOK_TICKER_DOC).0, Ok(Control::Data));
    let (r, out) = parse_with(&mut s, BOOK_TICKER_DOC);
    assert_eq!(r.map_err(|e| e.label()), Err("out_of_order"));
    assert!(out.is_empty());
    let newer = BOOK_TICKER_DOC.replace("48733182", "48733183");
    assert_eq!(parse_with(&mut s, &newer).0, Ok(Control::Data));
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    assert!(
        book_ticker_layout(BOOK_TICKER_DOC).is_some(),
        "the documented layout is fast"
    );
    let (fast, fast_out) = parse(BOOK_TICKER_DOC);
    assert_eq!(fast, Ok(Control::Data));
    for other in [
        // Spaces, reordered fields, extra fields (conn_id), another envelope order.
        r#"{"time": 1606293275, "time_ms": 1606293275723, "channel": "spot.book_ticker", "event": "update", "result": {"t": 1606293275123, "u": 48733182, "s": "BTC_USDT", "b": "19177.79", "B": "0.0003341504", "a": "19179.38", "A": "0.09"}}"#,
        r#"{"channel":"spot.book_ticker","event":"update","time":1606293275,"time_ms":1606293275723,"result":{"A":"0.09","a":"19179.38","B":"0.0003341504","b":"19177.79","s":"BTC_USDT","u":48733182,"t":1606293275123}}"#,
        r#"{"time":1606293275,"time_ms":1606293275723,"conn_id":"x","channel":"spot.book_ticker","event":"update","result":{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504","a":"19179.38","A":"0.09"}}"#,
    ] {
        assert!(book_ticker_layout(other).is_none(), "{other}");
        let (r, out) = parse(other);
        assert_eq!(r, fast, "{other}");
        assert_eq!(out, fast_out, "{other}");
    }
    // Shapes the fast path must not accept differently from serde.
    for odd in [
        BOOK_TICKER_DOC.replace("BTC_USDT", "BTC\\u005fUSDT"),
        format!("{BOOK_TICKER_DOC} x"),
        BOOK_TICKER_DOC.replace("\"u\":48733182", "\"u\":-1"),
    ] {
        let fast = book_ticker_layout(&odd).is_some();
        assert!(!fast, "{odd}");
    }
}

#[test]
fn discovery_reads_pairs_and_quote_volumes() {
    let pairs = r#"[{"id":"BTC_USDT","base":"BTC","base_name":"Bitcoin","quote":"USDT","quote_name":"Tether","fee":"0.2","min_base_amount":"0.0001","min_quote_amount":"1","amount_precision":4,"precision":2,"trade_status":"tradable","sell_start":0,"buy_start":0,"type":"normal"},{"id":"ETH_BTC","base":"ETH","quote":"BTC","trade_status":"untradable"},{"id":"BAD","base":"","quote":"USDT","trade_status":"tradable"}]"#;
    let got = Gateio.parse_instruments(pairs).expect("documented body");
    assert_eq!(got.len(), 2, "a pair without a base is skipped");
    assert_eq!(got[0].native, "BTC_USDT");
    assert_eq!(got[0].symbol.as_str(), "BTC-USDT");
    assert!(got[0].trading);
    assert_eq!((got[1].symbol.as_str(), got[1].trading), ("ETH-BTC", false));
    assert_eq!(got[0].volume_key(), "BTC_USDT");

    let tickers = r#"[{"currency_pair":"BTC_USDT","last":"0.2","lowest_ask":"0.21","highest_bid":"0.19","change_percentage":"-9.9","base_volume":"7500","quote_volume":"1500.5","high_24h":"0.4","low_24h":"0.1"},{"currency_pair":"ETH_BTC","quote_volume":"x"}]"#;
    let v = Gateio.parse_volumes(tickers).expect("documented body");
    assert_eq!(v.get("BTC_USDT"), Some(&1500.5));
    assert_eq!(v.len(), 1);

    let error = r#"{"label":"INVALID_PARAM_VALUE","message":"Invalid currency_pair"}"#;
    for r in [
        Gateio.parse_instruments(error).map(|_| ()),
        Gateio.parse_volumes(error).map(|_| ()),
    ] {
        assert_eq!(
            r,
            Err(ParseError::Exchange(
                "INVALID_PARAM_VALUE: Invalid currency_pair".into()
            ))
        );
    }
    assert!(Gateio.parse_instruments(r#"{"data":[]}"#).is_err());
    assert!(Gateio.parse_volumes("<html>").is_err());
}

#[test]
fn endpoints_are_the_documented_ones() {
    assert_eq!(Gateio.default_ws_url(), "wss://api.gateio.ws/ws/v4/");
    assert_eq!(Gateio.default_rest_url(), "https://api.gateio.ws");
    assert_eq!(Gateio.instruments_path(), "/api/v4/spot/currency_pairs");
    assert_eq!(Gateio.volumes_path(), "/api/v4/spot/tickers");
    assert_eq!(Gateio.keepalive_every(), Some(PING_EVERY));
}
