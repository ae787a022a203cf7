//! Binance session tests on frames shaped exactly as Binance documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(
        ExchangeId::Binance,
        [("BNBUSDT", "BNB-USDT"), ("BNBBTC", "BNB-BTC")],
    )
}

fn parse_with(
    session: &mut BinanceSession,
    text: &str,
) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 42, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut BinanceSession::default(), text)
}

#[test]
fn book_ticker_as_documented() {
    let (r, out) = parse(
        r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0), "BNB-USDT");
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (25.3519, 31.21, 25.3652, 40.66)
    );
    assert_eq!(
        (t.seq, t.exchange_ts_ns, t.recv_ts_ns),
        (400_900_217, 0, 42)
    );
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    let documented = r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    assert!(
        book_ticker_layout(documented).is_some(),
        "the documented layout is the fast one"
    );
    // The same fields in another order, or with whitespace, take the serde path.
    let reordered = r#"{"s":"BNBUSDT","u":400900217,"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    let spaced = r#"{"u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000", "A": "40.66000000"}"#;
    let escaped = r#"{"u":400900217,"s":"BNB\u0055SDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    let fast = parse(documented);
    for other in [reordered, spaced, escaped] {
        assert!(book_ticker_layout(other).is_none(), "{other}");
        assert_eq!(parse(other), fast, "{other}");
    }
    // A trailing field, or a truncated frame, is not the fast layout either.
    assert!(book_ticker_layout(&documented.replace('}', r#","x":1}"#)).is_none());
    assert!(book_ticker_layout(&documented[..documented.len() - 1]).is_none());
}

#[test]
fn an_older_update_id_is_dropped() {
    let mut s = BinanceSession::default();
    let frame =
        |u: u64| format!(r#"{{"u":{u},"s":"BNBUSDT","b":"25.3","B":"1","a":"25.4","A":"1"}}"#);
    assert_eq!(parse_with(&mut s, &frame(10)).0, Ok(Control::Data));
    let (r, out) = parse_with(&mut s, &frame(9));
    assert_eq!(r.map_err(|e| e.label()), Err("out_of_order"));
    assert!(out.is_empty());
    assert_eq!(parse_with(&mut s, &frame(11)).0, Ok(Control::Data));
}

#[test]
fn trade_as_documented_maps_m_to_the_taker_side() {
    let (r, out) = parse(
        r#"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.symbol, t.price, t.qty, t.trade_id.as_str()),
        (SymbolId(1), 0.001, 100.0, "12345")
    );
    assert_eq!(t.side, Side::Sell, "m=true: buyer is maker, taker sold");
    assert_eq!(t.exchange_ts_ns, 1_672_515_782_136_000_000);
    let (_, out) =
        parse(r#"{"e":"trade","E":1,"s":"BNBBTC","t":1,"p":"1","q":"1","T":1,"m":false,"M":true}"#);
    let Event::Print(t) = &out[0] else {
        panic!("not a trade")
    };
    assert_eq!(t.side, Side::Buy);
}

#[test]
fn responses_and_events() {
    assert_eq!(
        parse(r#"{"result":null,"id":1}"#).0,
        Ok(Control::Subscribed(1))
    );
    assert_eq!(
        parse(r#"{"error":{"code":2,"msg":"Invalid request: unknown variant"},"id":3}"#).0,
        Ok(Control::Refused {
            request: Some(3),
            reason: "code 2: Invalid request: unknown variant".into()
        })
    );
    assert!(matches!(
        parse(r#"{"e":"serverShutdown","E":1}"#).0,
        Ok(Control::Rotate(_))
    ));
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("not json", "malformed"),
        ("{}", "malformed"),
        (r#"{"u":1,"s":"BNBUSDT","b":"25.3"}"#, "malformed"),
        (
            r#"{"u":1,"s":"XYZUSDT","b":"1","B":"1","a":"2","A":"1"}"#,
            "unknown_symbol",
        ),
        (
            r#"{"u":1,"s":"BNBUSDT","b":"abc","B":"1","a":"2","A":"1"}"#,
            "bad_number",
        ),
        (
            r#"{"u":1,"s":"BNBUSDT","b":"3","B":"1","a":"2","A":"1"}"#,
            "crossed",
        ),
        (
            r#"{"u":1,"s":"BNBUSDT","b":"0","B":"1","a":"2","A":"1"}"#,
            "non_positive_price",
        ),
        (
            r#"{"e":"trade","s":"BNBBTC","t":1,"p":"1","q":"1","T":1}"#,
            "malformed",
        ),
        (
            r#"{"e":"trade","E":1,"s":"BNBBTC","t":1,"p":"-1","q":"1","T":1,"m":true}"#,
            "bad_number",
        ),
    ];
    for (frame, label) in cases {
        let (r, out) = parse(frame);
        assert_eq!(
            r.as_ref().map_err(ParseError::label).err(),
            Some(*label),
            "{frame}"
        );
        assert!(out.is_empty(), "{frame}");
    }
    let mut out = Output::default();
    assert_eq!(
        BinanceSession::default()
            .on_frame(Frame::Binary(b"\x00\x01"), &symbols(), 1, &mut out)
            .map_err(|e| e.label()),
        Err("malformed"),
        "Binance sends no binary data frames"
    );
}

#[test]
fn discovery_bodies() {
    let info = r#"{"timezone":"UTC","serverTime":1,"symbols":[
        {"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT"},
        {"symbol":"OLDUSDT","status":"BREAK","baseAsset":"OLD","quoteAsset":"USDT"}]}"#;
    let list = Binance.parse_instruments(info).expect("instruments");
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            list[0].native.as_str(),
            list[0].symbol.as_str(),
            list[0].trading
        ),
        ("BTCUSDT", "BTC-USDT", true)
    );
    assert!(!list[1].trading);
    let vols = Binance
        .parse_volumes(r#"[{"symbol":"BTCUSDT","quoteVolume":"1234.5","volume":"1"}]"#)
        .expect("volumes");
    assert_eq!(vols.get("BTCUSDT"), Some(&1234.5));
    assert!(Binance.parse_instruments("[]").is_err());
}

#[test]
fn subscriptions_are_batched_lowercase_and_numbered() {
    let natives: Vec<String> = (0..120).map(|i| format!("S{i}USDT")).collect();
    let mut next_id = 7;
    let requests = BinanceSession::default().subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 3, "240 streams in requests of 100");
    assert_eq!(next_id, 10);
    assert_eq!(requests.iter().map(|r| r.id).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(requests[0].natives.len(), 50);
    let Outgoing::Text(text) = &requests[0].frame else {
        panic!("a text frame")
    };
    let first: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(first["method"], "SUBSCRIBE");
    assert_eq!(first["id"], 7);
    assert_eq!(first["params"][0], "s0usdt@bookTicker");
    assert_eq!(first["params"][1], "s0usdt@trade");
    assert_eq!(first["params"].as_array().map(Vec::len), Some(100));
}
