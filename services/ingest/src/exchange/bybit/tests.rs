//! Bybit session tests on frames shaped exactly as Bybit's v5 docs show them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

const BOOK: &str = r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":123456789,"seq":987654321},"cts":1709891678998}"#;
const TRADE: &str = r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}"#;

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Bybit, [("BTCUSDT", "BTC-USDT")])
}

fn parse_with(session: &mut BybitSession, text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut BybitSession::default(), text)
}

/// A level-1 snapshot of BTCUSDT with this update id, time and bid.
fn book(u: u64, ts: u64, bid: &str) -> String {
    format!(
        r#"{{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":{ts},"data":{{"s":"BTCUSDT","b":[["{bid}","1"]],"a":[["30000","1"]],"u":{u},"seq":{u}}},"cts":{ts}}}"#
    )
}

#[test]
fn orderbook_1_as_documented() {
    let (r, out) = parse(BOOK);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(t)] = out.as_slice() else {
        panic!("one quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0));
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (27450.0, 0.5, 27451.0, 0.75)
    );
    assert_eq!(
        (t.exchange_ts_ns, t.recv_ts_ns, t.seq),
        (1_709_891_679_000_000_000, 7, 123_456_789)
    );
}

#[test]
fn public_trade_as_documented() {
    let (r, out) = parse(TRADE);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("one trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (
            16578.5,
            0.001,
            "20f43950-d8dd-5b31-9112-a178eb6023af",
            Side::Buy
        )
    );
    assert_eq!(t.exchange_ts_ns, 1_672_304_486_865_000_000);
    // Several trades in one push, a taker sell among them.
    let (r, out) = parse(
        r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","i":"a","BT":false},{"T":1672304486866,"s":"BTCUSDT","S":"Sell","v":"0.002","p":"16578.00","i":"b","BT":false}]}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(out.len(), 2);
    let Event::Print(second) = &out[1] else {
        panic!("a trade")
    };
    assert_eq!((second.side, second.trade_id.as_str()), (Side::Sell, "b"));
}

#[test]
fn a_bad_trade_is_skipped_and_the_ones_after_it_are_kept() {
    let (r, out) = parse(
        r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","i":"a","BT":false},{"T":1672304486866,"s":"BTCUSDT","S":"Hold","v":"0.002","p":"16578.00","i":"b","BT":false},{"T":1672304486867,"s":"BTCUSDT","S":"Sell","v":"0.003","p":"16577.00","i":"c","BT":false},{"T":1672304486868,"s":"BTCUSDT","S":"Sell","v":"0.004","p":"x","i":"d","BT":false}]}"#,
    );
    // The frame is rejected for its first bad trade; the good ones around it all go out.
    assert_eq!(r.map_err(|e| e.label()), Err("malformed"));
    let ids: Vec<&str> = out
        .iter()
        .map(|e| match e {
            Event::Print(t) => t.trade_id.as_str(),
            Event::Quote(q) => panic!("a trade: {q:?}"),
        })
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

#[test]
fn pongs_of_either_shape_are_keepalive_never_errors() {
    let mut s = BybitSession::default();
    assert_eq!(
        s.keepalive(),
        Some(Outgoing::Text(r#"{"op":"ping"}"#.into()))
    );
    for pong in [
        // Public channels (the connect page's example).
        r#"{"success":true,"ret_msg":"pong","conn_id":"465772b1-7630-4fdc-a492-e003e6f0f260","req_id":"","op":"ping"}"#,
        // The private-channel shape, which spot servers have also been seen to send.
        r#"{"req_id":"test","op":"pong","args":["1675418560633"],"conn_id":"cfcb4ocsvfriu23r3er0-1b"}"#,
        r#"{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}"#,
    ] {
        assert_eq!(
            parse_with(&mut s, pong),
            (Ok(Control::KeepAlive), vec![]),
            "{pong}"
        );
    }
}

#[test]
fn acks_and_refusals_are_matched_by_req_id() {
    let mut s = BybitSession::default();
    let mut next_id = 4;
    let requests = s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 1);
    assert_eq!(next_id, 5);
    let Outgoing::Text(text) = &requests[0].frame else {
        panic!("a text frame")
    };
    let sent: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(
        sent,
        serde_json::json!({"req_id":"4","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]})
    );
    let ack = r#"{"success":true,"ret_msg":"subscribe","conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b","req_id":"4","op":"subscribe"}"#;
    assert_eq!(parse_with(&mut s, ack).0, Ok(Control::Subscribed(4)));
    assert_eq!(
        parse_with(&mut s, ack).0,
        Ok(Control::Ignored),
        "a repeated ack confirms nothing more"
    );
    assert_eq!(
        parse(r#"{"success":true,"ret_msg":"subscribe","conn_id":"c","op":"subscribe"}"#).0,
        Ok(Control::Ignored),
        "an ack naming no request"
    );
    // Refused, naming the request.
    let mut next_id = 9;
    let _ = s.subscribe(&["BTCUSDT".to_owned()], &mut next_id);
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"success":false,"ret_msg":"Invalid symbol :[orderbook.1.FOOUSDT]","conn_id":"c","req_id":"9","op":"subscribe"}"#
        )
        .0,
        Ok(Control::Refused {
            request: Some(9),
            reason: "Invalid symbol :[orderbook.1.FOOUSDT]".into()
        })
    );
    // The over-cap refusal, as clients report it (no req_id).
    assert_eq!(
        parse(r#"{"success":false,"ret_msg":"args size >10","conn_id":"0a555e6f-199c-49bb-9bb8-6f8adcd8b057","op":"subscribe"}"#).0,
        Ok(Control::Refused {
            request: None,
            reason: "args size >10".into()
        })
    );
    assert_eq!(
        parse(r#"{"success":true,"ret_msg":"","conn_id":"c","req_id":"3","op":"unsubscribe"}"#).0,
        Ok(Control::Ignored)
    );
    assert_eq!(
        parse(r#"{"success":false,"ret_msg":"error:unknown op","conn_id":"c","op":"what"}"#).0,
        Ok(Control::ExchangeError("op what: error:unknown op".into()))
    );
}

#[test]
fn already_subscribed_is_the_ack_of_a_retry_whose_first_ack_came_late() {
    let mut s = BybitSession::default();
    let natives = ["BTCUSDT".to_owned()];
    let mut next_id = 7;
    let _ = s.subscribe(&natives, &mut next_id);
    // No ack within the timeout: the connection forgets request 7 and sends it again as 8.
    s.forget(7);
    let retry = s.subscribe(&natives, &mut next_id);
    assert_eq!(retry[0].id, 8);
    // Request 7's ack arrives late: it confirms nothing.
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"success":true,"ret_msg":"subscribe","conn_id":"c","req_id":"7","op":"subscribe"}"#
        )
        .0,
        Ok(Control::Ignored)
    );
    // The retry finds its topics held: that is its ack, not a refusal to send again.
    let already = r#"{"success":false,"ret_msg":"error:already subscribed,topic:orderbook.1.BTCUSDT","conn_id":"c","req_id":"8","op":"subscribe"}"#;
    assert_eq!(parse_with(&mut s, already).0, Ok(Control::Subscribed(8)));
    assert_eq!(
        parse_with(&mut s, already).0,
        Ok(Control::Ignored),
        "a repeated answer confirms nothing more"
    );
    // Naming no request of ours, it confirms nothing either.
    assert_eq!(
        parse(r#"{"success":false,"ret_msg":"error:already subscribed,topic:publicTrade.BTCUSDT","conn_id":"c","op":"subscribe"}"#).0,
        Ok(Control::Ignored)
    );
}

#[test]
fn subscriptions_are_batched_ten_args_per_request() {
    let natives: Vec<String> = (0..12).map(|i| format!("S{i}USDT")).collect();
    let mut next_id = 1;
    let requests = BybitSession::default().subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 3, "24 args in requests of at most 10");
    for (i, r) in requests.iter().enumerate() {
        let Outgoing::Text(text) = &r.frame else {
            panic!("a text frame")
        };
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        let args = v["args"].as_array().expect("args");
        assert!(args.len() <= 10, "{text}");
        assert_eq!(args.len(), 2 * r.natives.len());
        assert_eq!(v["req_id"], (i + 1).to_string());
        assert_eq!(r.id, i as u64 + 1);
    }
    assert_eq!(requests[0].natives.len(), 5);
    assert_eq!(requests[2].natives, vec!["S10USDT", "S11USDT"]);
}

#[test]
fn the_3_s_repush_with_the_same_u_is_published_again() {
    let mut s = BybitSession::default();
    assert_eq!(
        parse_with(&mut s, &book(50, 1_000, "29999")).0,
        Ok(Control::Data)
    );
    let (r, out) = parse_with(&mut s, &book(50, 4_000, "29999"));
    assert_eq!(
        r,
        Ok(Control::Data),
        "an unchanged book re-pushed after 3 s"
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        parse_with(&mut s, &book(51, 4_010, "29998")).0,
        Ok(Control::Data)
    );
    assert_eq!(
        parse_with(&mut s, &book(50, 4_005, "29999"))
            .0
            .map_err(|e| e.label()),
        Err("out_of_order"),
        "an older u (at an older time) is stale"
    );
}

#[test]
fn a_u_of_1_resets_the_sequence_at_once() {
    let mut s = BybitSession::default();
    assert_eq!(
        parse_with(&mut s, &book(5_000, 2_000, "29999")).0,
        Ok(Control::Data)
    );
    // The service restarted: u is 1, even with an exchange time no later than the last.
    let (r, out) = parse_with(&mut s, &book(1, 2_000, "29990"));
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = out.as_slice() else {
        panic!("one quote: {out:?}")
    };
    assert_eq!((q.seq, q.bid_px), (1, 29990.0));
    assert_eq!(
        parse_with(&mut s, &book(2, 2_010, "29991")).0,
        Ok(Control::Data)
    );
    assert_eq!(
        parse_with(&mut s, &book(1, 2_000, "29990")).0,
        Ok(Control::Data),
        "a u of 1 again: another restart, taken as one"
    );
    assert_eq!(
        parse_with(&mut s, &book(2, 2_010, "29991")).0,
        Ok(Control::Data)
    );
    assert_eq!(
        parse_with(&mut s, &book(2, 1_990, "29991")).0,
        Ok(Control::Data),
        "the same u again is a re-push"
    );
    assert_eq!(
        parse_with(&mut s, &book(1_000, 2_020, "29992")).0,
        Ok(Control::Data)
    );
    assert_eq!(
        parse_with(&mut s, &book(3, 2_015, "29991"))
            .0
            .map_err(|e| e.label()),
        Err("out_of_order"),
        "an older u of the new sequence is stale"
    );
}

#[test]
fn a_one_sided_book_is_skipped_not_counted() {
    let mut s = BybitSession::default();
    for frame in [
        r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[],"a":[["27451.00","0.750"]],"u":10,"seq":987654321},"cts":1709891678998}"#,
        r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[],"u":11,"seq":987654322},"cts":1709891678998}"#,
        r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[],"a":[],"u":12,"seq":987654323},"cts":1709891678998}"#,
    ] {
        assert_eq!(
            parse_with(&mut s, frame),
            (Ok(Control::Ignored), vec![]),
            "{frame}"
        );
    }
    assert_eq!(parse_with(&mut s, &book(13, 1, "1")).0, Ok(Control::Data));
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    assert!(
        book_layout(BOOK).is_some(),
        "the documented layout is the fast one"
    );
    let fast = parse(BOOK);
    assert_eq!(fast.0, Ok(Control::Data));
    let others = [
        // Whitespace; fields in another order; no cts; an extra field; a second level.
        r#"{"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1709891679000, "data": {"s": "BTCUSDT", "b": [["27450.00", "0.500"]], "a": [["27451.00", "0.750"]], "u": 123456789, "seq": 987654321}, "cts": 1709891678998}"#,
        r#"{"type":"snapshot","topic":"orderbook.1.BTCUSDT","ts":1709891679000,"data":{"s":"BTCUSDT","a":[["27451.00","0.750"]],"b":[["27450.00","0.500"]],"seq":987654321,"u":123456789}}"#,
        r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":123456789,"seq":987654321},"cts":1709891678998,"id":"x"}"#,
        r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"],["27449.00","1"]],"a":[["27451.00","0.750"]],"u":123456789,"seq":987654321},"cts":1709891678998}"#,
    ];
    for other in others {
        assert!(book_layout(other).is_none(), "{other}");
        assert_eq!(parse(other), fast, "{other}");
    }
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("pong", "malformed"),
        ("{}", "malformed"),
        (r#"{"topic":"orderbook.1.BTCUSDT"}"#, "malformed"),
        (
            r#"{"topic":"orderbook.1.ETHUSDT","type":"snapshot","ts":1,"data":{"s":"ETHUSDT","b":[["1","1"]],"a":[["2","1"]],"u":1,"seq":1},"cts":1}"#,
            "unknown_symbol",
        ),
        (
            r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["1"]],"a":[["2","1"]],"u":1,"seq":1},"cts":1}"#,
            "malformed",
        ),
        (
            r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["x","1"]],"a":[["2","1"]],"u":1,"seq":1},"cts":1}"#,
            "bad_number",
        ),
        (
            r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["3","1"]],"a":[["2","1"]],"u":1,"seq":1},"cts":1}"#,
            "crossed",
        ),
        (
            r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[["0","1"]],"a":[["2","1"]],"u":1,"seq":1},"cts":1}"#,
            "non_positive_price",
        ),
        (
            r#"{"topic":"orderbook.1.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[["1","0"]],"a":[],"u":2,"seq":2},"cts":1}"#,
            "malformed",
        ),
        (
            r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Hold","v":"1","p":"1","i":"a","BT":false}]}"#,
            "malformed",
        ),
        (
            r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"1","p":"1","i":"","BT":false}]}"#,
            "malformed",
        ),
        (
            r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"0","p":"1","i":"a","BT":false}]}"#,
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
    assert_eq!(
        BybitSession::default().on_frame(
            Frame::Binary(b"{}"),
            &symbols(),
            1,
            &mut Output::default()
        ),
        Err(malformed("binary frame"))
    );
    assert_eq!(
        parse(r#"{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{}}"#).0,
        Ok(Control::Ignored),
        "a topic we do not read"
    );
}

#[test]
fn discovery_bodies() {
    let inst = r#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[
        {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","innovation":"0","status":"Trading","marginTrading":"both","stTag":"0","lotSizeFilter":{"basePrecision":"0.000001","quotePrecision":"0.00000001","minOrderQty":"0.000048","maxOrderQty":"71.73956243","minOrderAmt":"1","maxOrderAmt":"2000000"},"priceFilter":{"tickSize":"0.01"},"riskParameters":{"priceLimitRatioX":"0.01","priceLimitRatioY":"0.02"}},
        {"symbol":"NEWUSDT","baseCoin":"NEW","quoteCoin":"USDT","status":"PreLaunch"}],"nextPageCursor":""},"retExtInfo":{},"time":1672712468011}"#;
    let list = Bybit.parse_instruments(inst).expect("instruments");
    assert_eq!(
        (
            list[0].native.as_str(),
            list[0].symbol.as_str(),
            list[0].trading
        ),
        ("BTCUSDT", "BTC-USDT", true)
    );
    assert!(!list[1].trading);
    let vols = Bybit
        .parse_volumes(r#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"symbol":"BTCUSDT","bid1Price":"20517.96","bid1Size":"2","ask1Price":"20527.77","ask1Size":"1.862172","lastPrice":"20533.13","prevPrice24h":"20393.48","price24hPcnt":"0.0068","highPrice24h":"21128.12","lowPrice24h":"20318.89","turnover24h":"243765620.65899866","volume24h":"11801.27771","usdIndexPrice":"20784.12009279"}]},"retExtInfo":{},"time":1673859087947}"#)
        .expect("volumes");
    assert_eq!(vols.get("BTCUSDT"), Some(&243_765_620.658_998_66));
    // The documented error for a missing category, and others.
    for body in [
        r#"{"retCode":10001,"retMsg":"params error: Category is invalid","result":{},"retExtInfo":{},"time":1672712468011}"#,
        r#"{"retCode":10001,"retMsg":"Illegal category","result":null,"retExtInfo":{},"time":1}"#,
    ] {
        assert_eq!(
            Bybit.parse_instruments(body).map_err(|e| e.label()),
            Err("exchange_error"),
            "{body}"
        );
        assert_eq!(
            Bybit.parse_volumes(body).map_err(|e| e.label()),
            Err("exchange_error"),
            "{body}"
        );
    }
    assert_eq!(
        Bybit.parse_instruments("[]").map_err(|e| e.label()),
        Err("malformed")
    );
}

#[test]
fn two_natives_for_one_symbol_are_both_refused() {
    let body = r#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[
        {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading"},
        {"symbol":"BTCUSDT2","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading"},
        {"symbol":"BTCUSDTOLD","baseCoin":"BTC","quoteCoin":"USDT","status":"Closed"},
        {"symbol":"ETHUSDT","baseCoin":"ETH","quoteCoin":"USDT","status":"Trading"},
        {"symbol":"ETHUSDTX","baseCoin":"ETH","quoteCoin":"USDT","status":"Closed"}]}}"#;
    let list = Bybit.parse_instruments(body).expect("instruments");
    let trading: Vec<&str> = list
        .iter()
        .filter(|i| i.trading)
        .map(|i| i.native.as_str())
        .collect();
    assert_eq!(
        trading,
        vec!["ETHUSDT"],
        "BTC-USDT is claimed twice; a closed twin does not count"
    );
}

#[test]
fn adapter_statics() {
    assert_eq!(
        Bybit.default_ws_url(),
        "wss://stream.bybit.com/v5/public/spot"
    );
    assert!(Bybit.instruments_path().contains("category=spot"));
    assert!(Bybit.volumes_path().contains("category=spot"));
    assert_eq!(Bybit.keepalive_every(), Some(Duration::from_secs(20)));
}
