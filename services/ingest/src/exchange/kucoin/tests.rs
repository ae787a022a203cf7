//! KuCoin session tests on frames shaped exactly as KuCoin documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Kucoin, [("BTC-USDT", "BTC-USDT")])
}

fn parse_with(
    session: &mut KucoinSession,
    text: &str,
) -> (Result<Control, ParseError>, Vec<Event>, Vec<Outgoing>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events, out.replies)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let (r, e, _) = parse_with(&mut KucoinSession::new("c1".into()), text);
    (r, e)
}

#[test]
fn ticker_as_documented() {
    let (r, out) = parse(
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"1545896668986","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","Time":1704873323416}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0));
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (0.049, 0.036, 0.08, 0.18)
    );
    assert_eq!(
        (t.exchange_ts_ns, t.recv_ts_ns, t.seq),
        (1_704_873_323_416_000_000, 7, 1_545_896_668_986)
    );
}

#[test]
fn ticker_time_as_the_schema_spells_it() {
    // The schema and real frames say `time`; the docs' example says `Time`. Both parse.
    let (r, out) = parse(
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"1621383371852","price":"62162.9","size":"0.00832274","bestAsk":"62163","bestAskSize":"0.99011388","bestBid":"62162.9","bestBidSize":"0.04794181","time":1634641987564}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.exchange_ts_ns, 1_634_641_987_564_000_000);
}

#[test]
fn stale_ticker_sequences_are_dropped() {
    let mut s = KucoinSession::new("c1".into());
    let frame = |seq: u64| {
        format!(
            r#"{{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{{"sequence":"{seq}","bestAsk":"2","bestAskSize":"1","bestBid":"1","bestBidSize":"1","Time":1}}}}"#
        )
    };
    assert_eq!(parse_with(&mut s, &frame(5)).0, Ok(Control::Data));
    assert!(matches!(
        parse_with(&mut s, &frame(5)).0,
        Err(ParseError::OutOfOrder { .. })
    ));
    assert_eq!(parse_with(&mut s, &frame(6)).0, Ok(Control::Data));
}

#[test]
fn match_as_documented() {
    let (r, out) = parse(
        r#"{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"sequence":"1545896669145","type":"match","symbol":"BTC-USDT","side":"buy","price":"0.08200000000000000000","size":"0.01022222000000000000","tradeId":"5c24c5da03aa673885cd67aa","takerOrderId":"5c24c5d903aa6772d55b371e","makerOrderId":"5c2187d003aa677bd09d5c93","time":"1545913818099033203"}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (0.082, 0.010_222_22, "5c24c5da03aa673885cd67aa", Side::Buy)
    );
    assert_eq!(t.exchange_ts_ns, 1_545_913_818_099_033_203);
}

#[test]
fn welcome_gates_subscribing_then_acks_errors_and_pongs() {
    let mut s = KucoinSession::new("c1".into());
    assert!(!s.ready_to_subscribe());
    assert!(
        parse_with(&mut s, r#"{"id":"other","type":"welcome"}"#)
            .0
            .is_err(),
        "a welcome for another connection"
    );
    assert!(!s.ready_to_subscribe());
    assert_eq!(
        parse_with(&mut s, r#"{"id":"c1","type":"welcome"}"#).0,
        Ok(Control::Ignored)
    );
    assert!(s.ready_to_subscribe());

    let mut next_id = 4;
    let requests = s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 2, "ticker and match");
    assert_eq!(next_id, 6);
    let Outgoing::Text(first) = &requests[0].frame else {
        panic!("binary")
    };
    let v: serde_json::Value = serde_json::from_str(first).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"id":4,"type":"subscribe","topic":"/market/ticker:BTC-USDT","privateChannel":false,"response":true})
    );
    assert_eq!(
        parse_with(&mut s, r#"{"id":"4","type":"ack"}"#).0,
        Ok(Control::Subscribed(4))
    );
    assert_eq!(
        parse_with(&mut s, r#"{"id":"4","type":"ack"}"#).0,
        Ok(Control::Ignored),
        "acked once"
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"id":"5","type":"error","code":404,"data":"topic /market/match:FOO-USDT is not found"}"#
        )
        .0,
        Ok(Control::Refused {
            request: Some(5),
            reason: "code 404: topic /market/match:FOO-USDT is not found".into()
        })
    );
    assert!(matches!(
        parse_with(
            &mut s,
            r#"{"id":"c1","type":"error","code":401,"data":"token is expired"}"#
        )
        .0,
        Ok(Control::ExchangeError(_))
    ));
    assert_eq!(
        s.keepalive(),
        Some(Outgoing::Text(r#"{"id":"ping1","type":"ping"}"#.into()))
    );
    assert_eq!(
        parse_with(&mut s, r#"{"id":"ping1","type":"pong"}"#).0,
        Ok(Control::KeepAlive)
    );
    let (r, _, replies) = parse_with(&mut s, r#"{"id":"9","type":"ping"}"#);
    assert_eq!(r, Ok(Control::KeepAlive));
    assert_eq!(replies.len(), 1, "a server ping is answered");
}

#[test]
fn batches_stay_within_topic_caps() {
    let natives: Vec<String> = (0..250).map(|i| format!("S{i}-USDT")).collect();
    let mut s = KucoinSession::new(String::new());
    let mut next_id = 1;
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 6, "three chunks, two channels each");
    for r in &requests {
        assert!(r.natives.len() <= TOPICS_PER_REQUEST);
        let Outgoing::Text(t) = &r.frame else {
            panic!("binary")
        };
        let v: serde_json::Value = serde_json::from_str(t).expect("json");
        let topic = v["topic"].as_str().expect("topic");
        assert_eq!(topic.matches(',').count() + 1, r.natives.len());
    }
    let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    assert!(Kucoin.limits().symbols_per_connection * 2 <= 400);
}

#[test]
fn bullet_public_is_parsed_and_bounded() {
    let body = r#"{"code":"200000","data":{"token":"2neAiuYvAU61","instanceServers":[{"endpoint":"wss://ws-api-spot.kucoin.com/","encrypt":true,"protocol":"websocket","pingInterval":18000,"pingTimeout":10000}]}}"#;
    assert_eq!(
        parse_bullet(body),
        Ok((
            "wss://ws-api-spot.kucoin.com/".to_owned(),
            "2neAiuYvAU61".to_owned(),
            Duration::from_secs(18)
        ))
    );
    for bad in [
        r#"{"code":"400100","msg":"bad"}"#,
        r#"{"code":"200000","data":{"token":"t","instanceServers":[]}}"#,
        r#"{"code":"200000","data":{"token":"","instanceServers":[{"endpoint":"wss://x/","pingInterval":18000}]}}"#,
        r#"{"code":"200000","data":{"token":"t","instanceServers":[{"endpoint":"wss://x/","pingInterval":5}]}}"#,
        r#"{"code":"200000","data":{"token":"t","instanceServers":[{"endpoint":"wss://x/","pingInterval":99999999999}]}}"#,
        "not json",
    ] {
        assert!(parse_bullet(bad).is_err(), "{bad}");
    }
}

#[test]
fn connect_urls_append_to_any_query() {
    assert_eq!(
        connect_url("wss://ws-api-spot.kucoin.com/", "t", "c"),
        "wss://ws-api-spot.kucoin.com/?token=t&connectId=c"
    );
    assert_eq!(
        connect_url("ws://127.0.0.1:9/endpoint?x=1", "t", "c"),
        "ws://127.0.0.1:9/endpoint?x=1&token=t&connectId=c"
    );
    assert_eq!(
        connect_url("ws://h/e?", "t", "c"),
        "ws://h/e?token=t&connectId=c"
    );
}

#[test]
fn discovery_bodies_as_documented() {
    let symbols = Kucoin
        .parse_instruments(
            r#"{"code":"200000","data":[{"symbol":"BTC-USDT","name":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT","feeCurrency":"USDT","market":"USDS","enableTrading":true},{"symbol":"OLD-BTC","baseCurrency":"OLD","quoteCurrency":"BTC","enableTrading":false}]}"#,
        )
        .expect("symbols");
    assert_eq!(symbols.len(), 2);
    assert_eq!(symbols[0].native, "BTC-USDT");
    assert_eq!(symbols[0].symbol.as_str(), "BTC-USDT");
    assert!(symbols[0].trading);
    assert!(!symbols[1].trading);

    let volumes = Kucoin
        .parse_volumes(
            r#"{"code":"200000","data":{"time":1602832092060,"ticker":[{"symbol":"BTC-USDT","symbolName":"BTC-USDT","buy":"11328.9","sell":"11329","vol":"2127.28","volValue":"24158313.56","last":"11328.9"},{"symbol":"IDLE-USDT","vol":"0","volValue":null}]}}"#,
        )
        .expect("volumes");
    assert_eq!(volumes.get("BTC-USDT"), Some(&24_158_313.56));
    assert!(!volumes.contains_key("IDLE-USDT"));
    assert!(
        Kucoin
            .parse_volumes(r#"{"code":"500000","msg":"x"}"#)
            .is_err()
    );
}

#[test]
fn no_input_panics() {
    let hostile: &[&str] = &[
        "",
        "{",
        "[]",
        "null",
        "42",
        r#"{"type":1}"#,
        r#"{"type":"message"}"#,
        r#"{"type":"message","topic":"nocolon","subject":"trade.ticker"}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker"}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":[]}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"99999999999999999999999","bestAsk":"2","bestAskSize":"1","bestBid":"1","bestBidSize":"1","Time":1}}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"bestAsk":"1e999","bestAskSize":"1","bestBid":"1","bestBidSize":"1","Time":99999999999999999}}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"bestAsk":1,"bestAskSize":"1","bestBid":"1","bestBidSize":"1","Time":"x"}}"#,
        r#"{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"side":"up","price":"1","size":"1","tradeId":"1","time":"1"}}"#,
        r#"{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"side":"buy","price":"-1","size":"1","tradeId":"","time":"99999999999999999999999"}}"#,
        r#"{"type":"message","topic":"/market/match:NOPE-USDT","subject":"trade.l3match","data":{}}"#,
        r#"{"id":"x","type":"ack"}"#,
        r#"{"id":"18446744073709551616","type":"error","code":{"a":[]},"data":null}"#,
        r#"{"type":"error"}"#,
        r#"{"type":"welcome"}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"bestAsk":"1","bestAskSize":"1","bestBid":"2","bestBidSize":"1","Time":1}}"#,
    ];
    let mut s = KucoinSession::new("c1".into());
    for text in hostile {
        let _ = parse_with(&mut s, text);
        let _ = parse_bullet(text);
        let _ = Kucoin.parse_instruments(text);
        let _ = Kucoin.parse_volumes(text);
    }
    let mut out = Output::default();
    for bytes in [&b""[..], &[0x1f, 0x8b, 0x08][..], &[0xff; 64][..]] {
        assert!(
            s.on_frame(Frame::Binary(bytes), &symbols(), 0, &mut out)
                .is_err()
        );
    }
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    let documented = r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"1545896668986","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416}}"#;
    assert!(
        ticker_layout(documented).is_some(),
        "the documented layout is the fast one"
    );
    assert!(
        ticker_layout(&documented.replace("\"time\"", "\"Time\"")).is_some(),
        "with either spelling of the time"
    );
    let fast = parse(documented);
    assert_eq!(fast.0, Ok(Control::Data));
    let others = [
        // Fields in another order, whitespace, an unknown extra field, a leading-zero time.
        r#"{"topic":"/market/ticker:BTC-USDT","type":"message","subject":"trade.ticker","data":{"sequence":"1545896668986","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416}}"#,
        r#"{"type": "message", "topic": "/market/ticker:BTC-USDT", "subject": "trade.ticker", "data": {"sequence": "1545896668986", "price": "0.08", "size": "0.011", "bestAsk": "0.08", "bestAskSize": "0.18", "bestBid": "0.049", "bestBidSize": "0.036", "time": 1704873323416}}"#,
        r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"1545896668986","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416,"x":1}}"#,
    ];
    for other in others {
        assert!(ticker_layout(other).is_none(), "{other}");
        assert_eq!(parse(other), fast, "{other}");
    }
    // What the general parser refuses, the fast one does not take either.
    let leading_zero = documented.replace(":1704873323416", ":01704873323416");
    assert!(ticker_layout(&leading_zero).is_none());
    assert!(parse(&leading_zero).0.is_err());
}
