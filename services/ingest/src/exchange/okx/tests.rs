//! OKX session tests on frames shaped exactly as OKX documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Okx, [("BTC-USDT", "BTC-USDT")])
}

fn parse_with(session: &mut OkxSession, text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut OkxSession::default(), text)
}

#[test]
fn bbo_tbt_as_documented() {
    let (r, out) = parse(
        r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0));
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (8476.97, 256.0, 8476.98, 415.0)
    );
    assert_eq!(
        (t.exchange_ts_ns, t.recv_ts_ns, t.seq),
        (1_597_026_383_085_000_000, 7, 123_456)
    );
}

#[test]
fn trades_as_documented() {
    let (r, out) = parse(
        r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3"}]}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (42219.9, 0.120_603_06, "130639474", Side::Buy)
    );
    assert_eq!(t.exchange_ts_ns, 1_630_048_897_897_000_000);
}

#[test]
fn keepalive_acks_errors_and_notices() {
    let mut s = OkxSession::default();
    assert_eq!(parse_with(&mut s, "pong").0, Ok(Control::KeepAlive));
    assert_eq!(s.keepalive(), Some(Outgoing::Text("ping".into())));
    // One request of one symbol: two arguments, each acked on its own with the request's id.
    let mut next_id = 4;
    let requests = s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 1);
    let ack = |channel: &str| {
        format!(
            r#"{{"id":"4","event":"subscribe","arg":{{"channel":"{channel}","instId":"BTC-USDT"}},"connId":"a4d3ae55"}}"#
        )
    };
    assert_eq!(
        parse_with(&mut s, &ack("bbo-tbt")).0,
        Ok(Control::Ignored),
        "half acked"
    );
    assert_eq!(
        parse_with(&mut s, &ack("trades")).0,
        Ok(Control::Subscribed(4))
    );
    assert_eq!(
        parse_with(&mut s, &ack("trades")).0,
        Ok(Control::Ignored),
        "a repeated ack confirms nothing more"
    );
    assert_eq!(
        parse(r#"{"id":"9","event":"error","code":"60018","msg":"Wrong URL or channel:bbo-tbt,instId:FOO-USDT doesn't exist.","connId":"a4d3ae55"}"#).0,
        Ok(Control::Refused {
            request: Some(9),
            reason: "code 60018: Wrong URL or channel:bbo-tbt,instId:FOO-USDT doesn't exist.".into()
        })
    );
    assert_eq!(
        parse(r#"{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}"#).0,
        Ok(Control::ExchangeError("code 60012: Invalid request".into()))
    );
    assert!(matches!(
        parse(r#"{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade.","connId":"a4d3ae55"}"#).0,
        Ok(Control::Rotate(_))
    ));
    assert_eq!(
        parse(r#"{"event":"channel-conn-count","channel":"bbo-tbt","connCount":"2","connId":"a"}"#)
            .0,
        Ok(Control::Ignored)
    );
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    let documented = r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#;
    assert!(
        bbo_layout(documented).is_some(),
        "the documented layout is the fast one"
    );
    let fast = parse(documented);
    assert_eq!(fast.0, Ok(Control::Data));
    let others = [
        // Fields in another order, whitespace, two levels, an unknown extra field.
        r#"{"arg":{"instId":"BTC-USDT","channel":"bbo-tbt"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#,
        r#"{"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "data": [{"asks": [["8476.98", "415", "0", "13"]], "bids": [["8476.97", "256", "0", "12"]], "ts": "1597026383085", "seqId": 123456}]}"#,
        r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"bids":[["8476.97","256","0","12"]],"asks":[["8476.98","415","0","13"]],"ts":"1597026383085","seqId":123456}]}"#,
        r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456,"x":1}]}"#,
    ];
    for other in others {
        assert!(bbo_layout(other).is_none(), "{other}");
        assert_eq!(parse(other), fast, "{other}");
    }
}

#[test]
fn an_older_seq_id_is_dropped() {
    let mut s = OkxSession::default();
    let frame = |seq: u64| {
        format!(
            r#"{{"arg":{{"channel":"bbo-tbt","instId":"BTC-USDT"}},"data":[{{"asks":[["2","1","0","1"]],"bids":[["1","1","0","1"]],"ts":"1","seqId":{seq}}}]}}"#
        )
    };
    assert_eq!(parse_with(&mut s, &frame(5)).0, Ok(Control::Data));
    assert_eq!(
        parse_with(&mut s, &frame(5)).0.map_err(|e| e.label()),
        Err("out_of_order")
    );
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("ping", "malformed"),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"}}"#,
            "malformed",
        ),
        (r#"{"data":[]}"#, "malformed"),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"ETH-USDT"},"data":[]}"#,
            "unknown_symbol",
        ),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[],"bids":[["1","1","0","1"]],"ts":"1","seqId":1}]}"#,
            "malformed",
        ),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["","1","0","1"]],"bids":[["1","1","0","1"]],"ts":"1","seqId":1}]}"#,
            "bad_number",
        ),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["1","1","0","1"]],"bids":[["2","1","0","1"]],"ts":"1","seqId":1}]}"#,
            "crossed",
        ),
        (
            r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["2","1","0","1"]],"bids":[["1","1","0","1"]],"ts":"x","seqId":1}]}"#,
            "bad_number",
        ),
        (
            r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"1","px":"1","sz":"1","side":"hold","ts":"1"}]}"#,
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
}

#[test]
fn discovery_bodies() {
    let inst = r#"{"code":"0","msg":"","data":[
        {"instType":"SPOT","instId":"BTC-USDT","baseCcy":"BTC","quoteCcy":"USDT","state":"live"},
        {"instType":"SPOT","instId":"NEW-USDT","baseCcy":"NEW","quoteCcy":"USDT","state":"preopen"}]}"#;
    let list = Okx.parse_instruments(inst).expect("instruments");
    assert_eq!(
        (
            list[0].native.as_str(),
            list[0].symbol.as_str(),
            list[0].trading
        ),
        ("BTC-USDT", "BTC-USDT", true)
    );
    assert!(!list[1].trading);
    let vols = Okx
        .parse_volumes(r#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","vol24h":"10","volCcy24h":"420000.5"}]}"#)
        .expect("volumes");
    assert_eq!(vols.get("BTC-USDT"), Some(&420_000.5));
    assert_eq!(
        Okx.parse_instruments(r#"{"code":"51000","msg":"Parameter instType error","data":[]}"#)
            .map_err(|e| e.label()),
        Err("exchange_error")
    );
}

#[test]
fn subscriptions_are_batched_with_ids() {
    let natives: Vec<String> = (0..60).map(|i| format!("S{i}-USDT")).collect();
    let mut next_id = 1;
    let requests = OkxSession::default().subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 2, "120 args in requests of 100");
    let Outgoing::Text(text) = &requests[0].frame else {
        panic!("a text frame")
    };
    let first: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(first["op"], "subscribe");
    assert_eq!(first["id"], "1");
    assert_eq!(
        first["args"][0],
        serde_json::json!({"channel": "bbo-tbt", "instId": "S0-USDT"})
    );
    assert_eq!(
        first["args"][1],
        serde_json::json!({"channel": "trades", "instId": "S0-USDT"})
    );
}
