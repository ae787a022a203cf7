//! Binance parser tests on frames shaped exactly as Binance documents them.

use super::*;
use crate::exchange::{Adapter, Control, Event, ParseError, SymbolMap};

fn symbols() -> SymbolMap {
    let mut m = SymbolMap::new();
    m.insert("BNBUSDT".into(), "BNB-USDT".parse().expect("symbol"));
    m.insert("BNBBTC".into(), "BNB-BTC".parse().expect("symbol"));
    m
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Vec::new();
    let r = Binance.parse(text, &symbols(), 42, &mut out);
    (r, out)
}

#[test]
fn book_ticker_as_documented() {
    let (r, out) = parse(
        r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Tick(t) = &out[0] else {
        panic!("not a tick: {out:?}")
    };
    assert_eq!(
        (t.exchange.as_str(), t.symbol.as_str()),
        ("binance", "BNB-USDT")
    );
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (25.3519, 31.21, 25.3652, 40.66)
    );
    assert_eq!(
        (t.seq, t.exchange_ts_ns, t.recv_ts_ns),
        (400_900_217, 0, 42)
    );
    assert!((t.book_spread_pct - (25.3652 - 25.3519) / 25.3652 * 100.0).abs() < 1e-12);
}

#[test]
fn trade_as_documented_maps_m_to_the_taker_side() {
    let (r, out) = parse(
        r#"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Trade(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.symbol.as_str(), t.price, t.qty, t.trade_id.as_str()),
        ("BNB-BTC", 0.001, 100.0, "12345")
    );
    assert_eq!(t.side(), Side::Sell, "m=true: buyer is maker, taker sold");
    assert_eq!(t.exchange_ts_ns, 1_672_515_782_136_000_000);
    let (_, out) =
        parse(r#"{"e":"trade","E":1,"s":"BNBBTC","t":1,"p":"1","q":"1","T":1,"m":false,"M":true}"#);
    let Event::Trade(t) = &out[0] else {
        panic!("not a trade")
    };
    assert_eq!(t.side(), Side::Buy);
}

#[test]
fn responses_and_events() {
    assert_eq!(parse(r#"{"result":null,"id":1}"#).0, Ok(Control::Ack));
    assert_eq!(
        parse(r#"{"error":{"code":2,"msg":"Invalid request: unknown variant"},"id":3}"#).0,
        Ok(Control::ExchangeError(
            "code 2: Invalid request: unknown variant".into()
        ))
    );
    assert!(matches!(
        parse(r#"{"e":"serverShutdown","E":1}"#).0,
        Ok(Control::Reconnect(_))
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
fn subscriptions_are_batched_and_lowercase() {
    let natives: Vec<String> = (0..120).map(|i| format!("S{i}USDT")).collect();
    let frames = Binance.subscribe_frames(&natives);
    assert_eq!(frames.len(), 3, "240 streams in requests of 100");
    let first: serde_json::Value = serde_json::from_str(&frames[0]).expect("json");
    assert_eq!(first["method"], "SUBSCRIBE");
    assert_eq!(first["params"][0], "s0usdt@bookTicker");
    assert_eq!(first["params"][1], "s0usdt@trade");
    assert_eq!(first["params"].as_array().map(Vec::len), Some(100));
}
