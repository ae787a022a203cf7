//! Bitget session tests on frames shaped exactly as Bitget documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

/// The Tickers-Channel page's push, field for field (its ETHUSDT example re-spelt BTCUSDT).
const TICKER: &str = r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"instId":"BTCUSDT","lastPr":"27000.5","open24h":"26500.00","high24h":"27500.00","low24h":"26400.00","change24h":"0.0188","bidPr":"27000","askPr":"27000.5","bidSz":"2.71","askSz":"8.76","baseVolume":"368.9000","quoteVolume":"10152429.9610","openUtc":"26600.00","changeUtc24h":"0.0150","ts":"1695715383021"}],"ts":1695715383039}"#;

/// The Trades-Channel page's push, as an `update`.
const TRADE: &str = r#"{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1695709835822","price":"26293.4","size":"0.0013","side":"buy","tradeId":"1000000000"}],"ts":1695709835830}"#;

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Bitget, [("BTCUSDT", "BTC-USDT")])
}

fn parse_with(
    session: &mut BitgetSession,
    text: &str,
) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut BitgetSession::default(), text)
}

#[test]
fn ticker_as_documented() {
    let (r, out) = parse(TICKER);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = out.as_slice() else {
        panic!("one quote: {out:?}")
    };
    assert_eq!(q.symbol, SymbolId(0));
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (27000.0, 2.71, 27000.5, 8.76)
    );
    assert_eq!(
        (q.exchange_ts_ns, q.recv_ts_ns, q.seq),
        (1_695_715_383_021_000_000, 7, 0),
        "no sequence id: not gated"
    );
    // The docs' own ETHUSDT example, with its zero 24 h figures.
    let eth = r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"ETHUSDT"},"data":[{"instId":"ETHUSDT","lastPr":"2200.10","open24h":"0.00","high24h":"0.00","low24h":"0.00","change24h":"0.00","bidPr":"1792","askPr":"2200.1","bidSz":"0.0084","askSz":"19740.8811","baseVolume":"0.0000","quoteVolume":"0.0000","openUtc":"0.00","changeUtc24h":"0","ts":"1695702438018"}],"ts":1695702438029}"#;
    assert!(
        ticker_layout(eth).is_some(),
        "the documented layout is fast"
    );
    let table = SymbolTable::from_pairs(ExchangeId::Bitget, [("ETHUSDT", "ETH-USDT")]);
    let mut out = Output::default();
    assert_eq!(
        BitgetSession::default().on_frame(Frame::Text(eth), &table, 1, &mut out),
        Ok(Control::Data)
    );
    let Event::Quote(q) = &out.events[0] else {
        panic!("a quote")
    };
    assert_eq!((q.bid_px, q.ask_px), (1792.0, 2200.1));
}

#[test]
fn trade_updates_are_published_and_the_snapshot_is_not() {
    let (r, out) = parse(TRADE);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("one trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (26293.4, 0.0013, "1000000000", Side::Buy)
    );
    assert_eq!(t.exchange_ts_ns, 1_695_709_835_822_000_000);
    let sell = TRADE.replace(r#""side":"buy""#, r#""side":"sell""#);
    let (_, out) = parse(&sell);
    assert!(matches!(&out[0], Event::Print(t) if t.side == Side::Sell));
    // The snapshot after subscribing repeats recent trades: not re-emitted.
    let snapshot = r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1695709835822","price":"26293.4","size":"0.0013","side":"buy","tradeId":"1000000000"},{"ts":"1695709835800","price":"26293.3","size":"0.5","side":"sell","tradeId":"999999999"}],"ts":1695711090682}"#;
    assert_eq!(parse(snapshot), (Ok(Control::Ignored), Vec::new()));
    // Several trades in one update, all of them published.
    let two = TRADE.replace(
        r#"[{"ts""#,
        r#"[{"ts":"1695709835821","price":"26293.3","size":"1","side":"sell","tradeId":"999"},{"ts""#,
    );
    assert_eq!(parse(&two).1.len(), 2);
}

#[test]
fn a_bad_trade_is_skipped_and_the_ones_after_it_are_kept() {
    let (r, out) = parse(
        r#"{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1695709835822","price":"26293.4","size":"0.0013","side":"buy","tradeId":"1"},{"ts":"1695709835823","price":"-1","size":"0.5","side":"sell","tradeId":"2"},{"ts":"1695709835824","price":"26293.2","size":"0.2","side":"sell","tradeId":"3"}],"ts":1695709835830}"#,
    );
    // The frame is rejected for its bad trade; the good ones around it all go out.
    assert!(r.is_err(), "{r:?}");
    let ids: Vec<&str> = out
        .iter()
        .map(|e| match e {
            Event::Print(t) => t.trade_id.as_str(),
            Event::Quote(q) => panic!("a trade: {q:?}"),
        })
        .collect();
    assert_eq!(ids, ["1", "3"]);
}

#[test]
fn keepalive_acks_and_errors() {
    let mut s = BitgetSession::default();
    assert_eq!(parse_with(&mut s, "pong").0, Ok(Control::KeepAlive));
    assert_eq!(s.keepalive(), Some(Outgoing::Text("ping".into())));
    let mut next_id = 4;
    let requests = s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 1);
    let ack = |channel: &str| {
        format!(
            r#"{{"event":"subscribe","arg":{{"instType":"SPOT","channel":"{channel}","instId":"BTCUSDT"}}}}"#
        )
    };
    assert_eq!(
        parse_with(&mut s, &ack("ticker")).0,
        Ok(Control::Ignored),
        "half acked"
    );
    assert_eq!(
        parse_with(&mut s, &ack("trade")).0,
        Ok(Control::Subscribed(4))
    );
    assert_eq!(
        parse_with(&mut s, &ack("trade")).0,
        Ok(Control::Ignored),
        "a repeated ack confirms nothing more"
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"event":"unsubscribe","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"}}"#
        )
        .0,
        Ok(Control::Ignored)
    );
}

#[test]
fn an_error_event_refuses_the_request_that_asked_for_its_argument() {
    let mut s = BitgetSession::default();
    let mut next_id = 1;
    let natives = ["BTCUSDT".to_owned(), "FOOUSDT".to_owned()];
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 1);
    // As Bitget's changelog (2023-08-23) shows error events: the argument, a numeric code, op.
    let error = r#"{"event":"error","arg":{"instType":"SPOT","channel":"ticker","instId":"FOOUSDT"},"code":30001,"msg":"instType:SPOT,channel:ticker,instId:FOOUSDT doesn't exist","op":"subscribe"}"#;
    assert_eq!(
        parse_with(&mut s, error).0,
        Ok(Control::Refused {
            request: Some(1),
            reason: "code 30001: instType:SPOT,channel:ticker,instId:FOOUSDT doesn't exist".into()
        })
    );
    // The request is dropped whole: its other acks confirm nothing, and the error for its
    // other argument reports nothing new.
    let ack =
        r#"{"event":"subscribe","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"}}"#;
    assert_eq!(parse_with(&mut s, ack).0, Ok(Control::Ignored));
    let again = error.replace(r#""channel":"ticker""#, r#""channel":"trade""#);
    assert_eq!(parse_with(&mut s, &again).0, Ok(Control::Ignored));
    // Its retry is a new request: refused again, it is reported again.
    s.forget(1);
    s.subscribe(&natives, &mut next_id);
    assert!(matches!(
        parse_with(&mut s, error).0,
        Ok(Control::Refused {
            request: Some(2),
            ..
        })
    ));
    // An error for an argument no request awaits is not attributable.
    let stranger = error.replace("FOOUSDT", "BARUSDT");
    assert!(matches!(
        parse_with(&mut s, &stranger).0,
        Ok(Control::Refused { request: None, .. })
    ));
    // A string code, and an error naming no argument.
    assert!(matches!(
        parse(r#"{"event":"error","arg":{"instType":"SPOT","channel":"ticker","instId":"X"},"code":"30003","msg":"Symbol not exists","op":"subscribe"}"#).0,
        Ok(Control::Refused { request: None, reason }) if reason == "code 30003: Symbol not exists"
    ));
    assert_eq!(
        parse(r#"{"event":"error","code":30016,"msg":"Param error"}"#).0,
        Ok(Control::ExchangeError("code 30016: Param error".into()))
    );
}

#[test]
fn a_forgotten_request_is_not_confirmed_by_late_acks() {
    let mut s = BitgetSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    s.forget(1);
    let ack = |channel: &str| {
        format!(
            r#"{{"event":"subscribe","arg":{{"instType":"SPOT","channel":"{channel}","instId":"BTCUSDT"}}}}"#
        )
    };
    assert_eq!(parse_with(&mut s, &ack("ticker")).0, Ok(Control::Ignored));
    // Its retry is confirmed by its own acks.
    s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    assert_eq!(parse_with(&mut s, &ack("ticker")).0, Ok(Control::Ignored));
    assert_eq!(
        parse_with(&mut s, &ack("trade")).0,
        Ok(Control::Subscribed(2))
    );
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    assert!(ticker_layout(TICKER).is_some());
    let fast = parse(TICKER);
    assert_eq!(fast.0, Ok(Control::Data));
    let others = [
        // Whitespace, another field order, an extra field, fewer fields, `update`.
        TICKER.replace(r#""action":"snapshot","#, r#""action": "snapshot", "#),
        TICKER.replace(
            r#""bidPr":"27000","askPr":"27000.5","#,
            r#""askPr":"27000.5","bidPr":"27000","#,
        ),
        TICKER.replace(
            r#""ts":"1695715383021"}"#,
            r#""ts":"1695715383021","x":"1"}"#,
        ),
        TICKER.replace(r#""openUtc":"26600.00","changeUtc24h":"0.0150","#, ""),
        TICKER.replace(
            r#""arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"}"#,
            r#""arg":{"channel":"ticker","instId":"BTCUSDT","instType":"SPOT"}"#,
        ),
    ];
    for other in &others {
        assert!(ticker_layout(other).is_none(), "{other}");
        assert_eq!(&parse(other), &fast, "{other}");
    }
    let update = TICKER.replace(r#""action":"snapshot""#, r#""action":"update""#);
    assert!(ticker_layout(&update).is_some());
    assert_eq!(parse(&update), fast);
    // A data instId that disagrees with the argument's is not the fast layout.
    let odd = TICKER.replace(
        r#""data":[{"instId":"BTCUSDT""#,
        r#""data":[{"instId":"ETHUSDT""#,
    );
    assert!(ticker_layout(&odd).is_none());
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("ping", "malformed"),
        ("", "malformed"),
        (r#"{"data":[]}"#, "malformed"),
        (
            r#"{"arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[]}"#,
            "malformed",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[]}"#,
            "malformed",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"ETHUSDT"},"data":[]}"#,
            "unknown_symbol",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"bidPr":"","askPr":"2","bidSz":"1","askSz":"1","ts":"1"}]}"#,
            "bad_number",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"bidPr":"2","askPr":"1","bidSz":"1","askSz":"1","ts":"1"}]}"#,
            "crossed",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"bidPr":"1","askPr":"2","bidSz":"1","askSz":"1","ts":"x"}]}"#,
            "bad_number",
        ),
        (
            r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"bidPr":"1","askPr":"2","bidSz":"1"}]}"#,
            "malformed",
        ),
        (
            r#"{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"1","size":"1","side":"hold","tradeId":"1"}]}"#,
            "malformed",
        ),
        (
            r#"{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"0","size":"1","side":"buy","tradeId":"1"}]}"#,
            "bad_number",
        ),
        (
            r#"{"action":"update","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"1","size":"1","side":"buy","tradeId":""}]}"#,
            "malformed",
        ),
        (
            r#"{"action":"replace","arg":{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"},"data":[{"ts":"1","price":"1","size":"1","side":"buy","tradeId":"1"}]}"#,
            "malformed",
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
        BitgetSession::default()
            .on_frame(Frame::Binary(b"pong"), &symbols(), 1, &mut out)
            .map_err(|e| e.label()),
        Err("malformed")
    );
    // Another product line's push is not ours.
    let futures = TRADE.replace(r#""instType":"SPOT""#, r#""instType":"USDT-FUTURES""#);
    assert_eq!(parse(&futures), (Ok(Control::Ignored), Vec::new()));
    // Other channels are understood and not needed.
    assert_eq!(
        parse(r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"books1","instId":"BTCUSDT"},"data":[]}"#).0,
        Ok(Control::Ignored)
    );
}

#[test]
fn discovery_bodies() {
    let symbols = r#"{"code":"00000","msg":"success","requestTime":1695808949356,"data":[
        {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","minTradeAmount":"0.0001","maxTradeAmount":"10000","takerFeeRate":"0.001","makerFeeRate":"0.001","pricePrecision":"4","quantityPrecision":"8","quotePrecision":"4","minTradeUSDT":"5","status":"online","buyLimitPriceRatio":"0.05","sellLimitPriceRatio":"0.05","orderQuantity":"100","areaSymbol":"no"},
        {"symbol":"NEWUSDT","baseCoin":"NEW","quoteCoin":"USDT","status":"gray"},
        {"symbol":"OLDUSDT","baseCoin":"OLD","quoteCoin":"USDT","status":"halt"},
        {"symbol":"ETHBTC","baseCoin":"ETH","quoteCoin":"BTC","status":"online"}]}"#;
    let list = Bitget.parse_instruments(symbols).expect("symbols");
    assert_eq!(list.len(), 4);
    assert_eq!(
        (
            list[0].native.as_str(),
            list[0].symbol.as_str(),
            list[0].trading
        ),
        ("BTCUSDT", "BTC-USDT", true)
    );
    assert!(!list[1].trading, "gray (pre-listing) is not trading");
    assert!(!list[2].trading, "halt is not trading");
    assert_eq!(list[3].symbol.as_str(), "ETH-BTC", "mapped from the coins");
    let vols = Bitget
        .parse_volumes(r#"{"code":"00000","msg":"success","requestTime":1695808949356,"data":[{"symbol":"BTCUSDT","high24h":"37775.65","open":"35134.2","low24h":"34413.1","lastPr":"34413.1","quoteVolume":"420000.5","baseVolume":"12","usdtVolume":"420000.5","bidPr":"34413","askPr":"34413.1","bidSz":"0.0663","askSz":"0.0119","openUtc":"23856.72","ts":"1625125755277","changeUtc24h":"0.00301","change24h":"0.00069"}]}"#)
        .expect("volumes");
    assert_eq!(vols.get("BTCUSDT"), Some(&420_000.5));
    for error in [
        r#"{"code":"40034","msg":"Parameter does not exist","requestTime":1695808949356,"data":null}"#,
        r#"{"code":"429","msg":"Too Many Requests","requestTime":1695808949356}"#,
    ] {
        assert_eq!(
            Bitget.parse_instruments(error).map_err(|e| e.label()),
            Err("exchange_error"),
            "{error}"
        );
        assert_eq!(
            Bitget.parse_volumes(error).map_err(|e| e.label()),
            Err("exchange_error"),
            "{error}"
        );
    }
    assert_eq!(
        Bitget.parse_instruments("<html>").map_err(|e| e.label()),
        Err("malformed")
    );
}

#[test]
fn two_natives_for_one_symbol_are_both_left_out() {
    let body = r#"{"code":"00000","msg":"success","data":[
        {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"online"},
        {"symbol":"BTCUSDT_SPBL","baseCoin":"btc","quoteCoin":"usdt","status":"online"},
        {"symbol":"ETHUSDT","baseCoin":"ETH","quoteCoin":"USDT","status":"online"}]}"#;
    let list = Bitget.parse_instruments(body).expect("symbols");
    let natives: Vec<&str> = list.iter().map(|i| i.native.as_str()).collect();
    assert_eq!(natives, ["ETHUSDT"]);
}

#[test]
fn a_listing_not_online_does_not_knock_out_the_online_one() {
    // A delisted or halted listing of the same coins, before and after the online one.
    for body in [
        r#"{"code":"00000","msg":"success","data":[
            {"symbol":"BTCUSDT_SPBL","baseCoin":"BTC","quoteCoin":"USDT","status":"offline"},
            {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"online"},
            {"symbol":"ETHUSDT","baseCoin":"ETH","quoteCoin":"USDT","status":"online"}]}"#,
        r#"{"code":"00000","msg":"success","data":[
            {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"online"},
            {"symbol":"ETHUSDT","baseCoin":"ETH","quoteCoin":"USDT","status":"online"},
            {"symbol":"BTCUSDT_OLD","baseCoin":"BTC","quoteCoin":"USDT","status":"halt"}]}"#,
    ] {
        let list = Bitget.parse_instruments(body).expect("symbols");
        let trading: Vec<(&str, &str)> = list
            .iter()
            .filter(|i| i.trading)
            .map(|i| (i.native.as_str(), i.symbol.as_str()))
            .collect();
        assert_eq!(
            trading,
            [("BTCUSDT", "BTC-USDT"), ("ETHUSDT", "ETH-USDT")],
            "{body}"
        );
    }
}

#[test]
fn subscriptions_are_batched_within_the_caps() {
    let natives: Vec<String> = (0..SYMBOLS_PER_CONNECTION + 1)
        .map(|i| format!("S{i}USDT"))
        .collect();
    let mut next_id = 1;
    let requests = BitgetSession::default().subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 2, "52 arguments in requests of 50");
    assert_eq!(next_id, 3);
    let Outgoing::Text(text) = &requests[0].frame else {
        panic!("a text frame")
    };
    let first: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(first["op"], "subscribe");
    assert!(first.get("id").is_none(), "Bitget requests carry no id");
    assert_eq!(
        first["args"].as_array().map(Vec::len),
        Some(ARGS_PER_REQUEST)
    );
    assert_eq!(
        first["args"][0],
        serde_json::json!({"instType": "SPOT", "channel": "ticker", "instId": "S0USDT"})
    );
    assert_eq!(
        first["args"][1],
        serde_json::json!({"instType": "SPOT", "channel": "trade", "instId": "S0USDT"})
    );
    assert_eq!(requests[1].natives, ["S25USDT"]);
    // A connection's symbols fit one request, and pings leave room within 10 messages/s.
    assert_eq!(SYMBOLS_PER_CONNECTION * 2, ARGS_PER_REQUEST);
    let limits = Bitget.limits();
    assert_eq!(limits.symbols_per_connection, SYMBOLS_PER_CONNECTION);
    assert!(limits.subscribe_pacing >= Duration::from_millis(150));
    assert!(Bitget.keepalive_every() <= Some(Duration::from_secs(25)));
}
