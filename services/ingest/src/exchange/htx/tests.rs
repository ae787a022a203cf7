//! HTX session tests on frames shaped exactly as HTX documents them (gzip binary).

use std::io::Write;

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Htx, [("btcusdt", "BTC-USDT")])
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).expect("gzip");
    e.finish().expect("gzip")
}

fn parse_with(session: &mut HtxSession, text: &str) -> (Result<Control, ParseError>, Output) {
    let mut out = Output::default();
    let bytes = gzip(text);
    let r = session.on_frame(Frame::Binary(&bytes), &symbols(), 7, &mut out);
    (r, out)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let (r, out) = parse_with(&mut HtxSession::default(), text);
    (r, out.events)
}

#[test]
fn bbo_as_documented() {
    let (r, out) = parse(
        r#"{"ch":"market.btcusdt.bbo","ts":1671941599613,"tick":{"seqId":161499562790,"ask":16829.51,"askSize":0.707776,"bid":16829.5,"bidSize":1.685945,"quoteTime":1671941599612,"symbol":"btcusdt"}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0));
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (16829.5, 1.685945, 16829.51, 0.707776)
    );
    assert_eq!(
        (t.exchange_ts_ns, t.recv_ts_ns, t.seq),
        (1_671_941_599_612_000_000, 7, 161_499_562_790)
    );
}

#[test]
fn the_exact_layout_and_the_general_parser_agree() {
    // The documented layout (read by the fast path) and the same push reordered and spaced
    // (read by serde) give the same quote.
    let quotes: Vec<Event> = [
        r#"{"ch":"market.btcusdt.bbo","ts":1671941599613,"tick":{"seqId":161499562790,"ask":16829.51,"askSize":0.707776,"bid":16829.5,"bidSize":1.685945,"quoteTime":1671941599612,"symbol":"btcusdt"}}"#,
        r#"{"ts": 1671941599613, "ch": "market.btcusdt.bbo", "tick": {"symbol": "btcusdt", "bid": 16829.5, "bidSize": 1.685945, "ask": 16829.51, "askSize": 0.707776, "quoteTime": 1671941599612, "seqId": 161499562790}}"#,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, frame)| {
        // The first goes through the exact-layout path, the second does not.
        assert_eq!(super::bbo_layout(frame).is_some(), i == 0, "{frame}");
        let (r, mut out) = parse(frame);
        assert_eq!(r, Ok(Control::Data), "{frame}");
        assert_eq!(out.len(), 1, "{frame}");
        out.remove(0)
    })
    .collect();
    assert_eq!(quotes[0], quotes[1]);
}

#[test]
fn trade_detail_as_documented_with_an_overflowing_id() {
    let (r, out) = parse(
        r#"{"ch":"market.btcusdt.trade.detail","ts":1630994963175,"tick":{"id":137005445109,"ts":1630994963173,"data":[{"id":1370054451090000000000000000000000000001,"ts":1630994963173,"tradeId":102523573486,"amount":0.006754,"price":52648.62,"direction":"buy"},{"id":13700544510900000000000000000002,"ts":1630994963174,"tradeId":102523573487,"amount":1.5,"price":52648.6,"direction":"sell"}]}}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(out.len(), 2);
    let Event::Print(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (52648.62, 0.006754, "102523573486", Side::Buy)
    );
    assert_eq!(t.exchange_ts_ns, 1_630_994_963_173_000_000);
    let Event::Print(t) = &out[1] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!((t.side, t.trade_id.as_str()), (Side::Sell, "102523573487"));
}

#[test]
fn pings_are_answered_with_the_same_number() {
    let mut s = HtxSession::default();
    let (r, out) = parse_with(&mut s, r#"{"ping":1492420473027}"#);
    assert_eq!(r, Ok(Control::KeepAlive));
    assert_eq!(
        out.replies,
        vec![Outgoing::Text(r#"{"pong":1492420473027}"#.into())]
    );
    assert!(out.events.is_empty());
    assert_eq!(
        s.keepalive(),
        None,
        "the client sends no keep-alive of its own"
    );
    assert_eq!(Htx.keepalive_every(), None);
}

#[test]
fn one_request_per_topic_acked_and_refused() {
    let mut s = HtxSession::default();
    let mut next_id = 4;
    let requests = s.subscribe(&["btcusdt".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 2);
    assert_eq!(next_id, 6);
    let frames: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| match &r.frame {
            Outgoing::Text(t) => serde_json::from_str(t).expect("json"),
            Outgoing::Binary(_) => panic!("text expected"),
        })
        .collect();
    assert_eq!(
        frames[0],
        serde_json::json!({"sub": "market.btcusdt.bbo", "id": "4"})
    );
    assert_eq!(
        frames[1],
        serde_json::json!({"sub": "market.btcusdt.trade.detail", "id": "5"})
    );
    assert_eq!(requests[1].natives, vec!["btcusdt".to_owned()]);
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"id":"4","status":"ok","subbed":"market.btcusdt.bbo","ts":1489474081631}"#
        )
        .0,
        Ok(Control::Subscribed(4))
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"id":"4","status":"ok","subbed":"market.btcusdt.bbo","ts":1489474081631}"#
        )
        .0,
        Ok(Control::Ignored),
        "a repeated ack confirms nothing more"
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"id":"5","status":"error","err-code":"bad-request","err-msg":"invalid topic market.btcusdt.trade.detail","ts":1494301904959}"#
        )
        .0,
        Ok(Control::Refused {
            request: Some(5),
            reason: "bad-request: invalid topic market.btcusdt.trade.detail".into()
        })
    );
    // A retry sends only the topic not yet confirmed.
    let again = s.subscribe(&["btcusdt".to_owned()], &mut next_id);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, 6);
    assert!(matches!(&again[0].frame, Outgoing::Text(t) if t.contains("trade.detail")));
    assert_eq!(
        parse(r#"{"status":"error","err-code":"bad-request","err-msg":"bad","ts":1}"#).0,
        Ok(Control::ExchangeError("bad-request: bad".into()))
    );
}

#[test]
fn an_older_seq_id_is_dropped() {
    let mut s = HtxSession::default();
    let frame = |seq: u64| {
        format!(
            r#"{{"ch":"market.btcusdt.bbo","ts":1,"tick":{{"seqId":{seq},"ask":2,"askSize":1,"bid":1,"bidSize":1,"quoteTime":1,"symbol":"btcusdt"}}}}"#
        )
    };
    assert_eq!(parse_with(&mut s, &frame(5)).0, Ok(Control::Data));
    assert_eq!(
        parse_with(&mut s, &frame(5)).0.map_err(|e| e.label()),
        Err("out_of_order")
    );
    assert_eq!(parse_with(&mut s, &frame(6)).0, Ok(Control::Data));
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("ping", "malformed"),
        (r#"{"ch":"market.btcusdt.bbo"}"#, "malformed"),
        (r#"{"tick":{}}"#, "malformed"),
        (r#"{"ping":"abc"}"#, "malformed"),
        (r#"{"ping":-1}"#, "malformed"),
        (
            r#"{"ch":"market.ethusdt.bbo","ts":1,"tick":{"seqId":1,"ask":2,"askSize":1,"bid":1,"bidSize":1,"quoteTime":1}}"#,
            "unknown_symbol",
        ),
        (
            r#"{"ch":"market.btcusdt.bbo","ts":1,"tick":{"seqId":1,"ask":"2","askSize":1,"bid":1,"bidSize":1,"quoteTime":1}}"#,
            "malformed",
        ),
        (
            r#"{"ch":"market.btcusdt.bbo","ts":1,"tick":{"seqId":1,"ask":1,"askSize":1,"bid":2,"bidSize":1,"quoteTime":1}}"#,
            "crossed",
        ),
        (
            r#"{"ch":"market.btcusdt.bbo","ts":1,"tick":{"seqId":1,"ask":1e999,"askSize":1,"bid":2,"bidSize":1,"quoteTime":1}}"#,
            "malformed",
        ),
        (
            r#"{"ch":"market.btcusdt.trade.detail","ts":1,"tick":{"data":[{"ts":1,"tradeId":1,"amount":1,"price":1,"direction":"hold"}]}}"#,
            "malformed",
        ),
        (
            r#"{"ch":"market.btcusdt.trade.detail","ts":1,"tick":{"data":[{"ts":1,"tradeId":1,"amount":0,"price":1,"direction":"buy"}]}}"#,
            "bad_number",
        ),
    ];
    // The same faults in the exact layout the fast path reads (a `symbol` in the tick).
    let layout = |sym: &str, ask: &str, bid: &str, quote_time: &str| {
        format!(
            r#"{{"ch":"market.{sym}.bbo","ts":1,"tick":{{"seqId":1,"ask":{ask},"askSize":1,"bid":{bid},"bidSize":1,"quoteTime":{quote_time},"symbol":"{sym}"}}}}"#
        )
    };
    let fast = [
        (layout("ethusdt", "2", "1", "1"), "unknown_symbol"),
        (layout("btcusdt", "1", "2", "1"), "crossed"),
        (layout("btcusdt", "1e999", "1", "1"), "malformed"),
        (layout("btcusdt", "2", "0", "1"), "non_positive_price"),
        (
            layout("btcusdt", "2", "1", "9223372036854775808"),
            "malformed",
        ),
    ];
    for (frame, _) in &fast {
        // Sent the exact-layout way (apart from the number that overflows its grammar).
        if !frame.contains("9223372036854775808") && !frame.contains("1e999") {
            assert!(super::bbo_layout(frame).is_some(), "{frame}");
        }
    }
    let cases = cases.iter().map(|(f, l)| ((*f).to_owned(), *l)).chain(fast);
    for (frame, label) in cases {
        let frame = frame.as_str();
        let (r, out) = parse(frame);
        assert_eq!(
            r.as_ref().map_err(ParseError::label).err(),
            Some(label),
            "{frame}"
        );
        assert!(out.is_empty(), "{frame}");
    }
}

#[test]
fn no_input_panics() {
    let good = gzip(
        r#"{"ch":"market.btcusdt.bbo","ts":1,"tick":{"seqId":1,"ask":2,"askSize":1,"bid":1,"bidSize":1,"quoteTime":1}}"#,
    );
    let mut bombs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x1f],
        vec![0x1f, 0x8b],
        good[..good.len() / 2].to_vec(),
        vec![0xff; 64],
        b"{\"ping\":1}".to_vec(),
    ];
    // An inflation bomb: far more than the cap of zeros.
    {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b' '; MAX_INFLATED_BYTES + 10])
            .expect("gzip");
        bombs.push(e.finish().expect("gzip"));
    }
    for text in [
        "",
        "{",
        "[]",
        "null",
        r#"{"ping":99999999999999999999999999}"#,
        r#"{"ping":1.5}"#,
        r#"{"status":5}"#,
        r#"{"status":"ok"}"#,
        r#"{"status":"ok","id":"99999999999999999999999"}"#,
        r#"{"ch":5}"#,
        r#"{"ch":"market.","tick":{}}"#,
        r#"{"ch":"market.btcusdt.bbo","tick":[]}"#,
        r#"{"ch":"market.btcusdt.bbo","tick":{"seqId":-1,"ask":1,"askSize":1,"bid":1,"bidSize":1}}"#,
        r#"{"ch":"market.btcusdt.trade.detail","tick":{"data":[]}}"#,
        r#"{"ch":"market.btcusdt.trade.detail","tick":{"data":[{}]}}"#,
        r#"{"ch":"market.btcusdt.trade.detail","tick":{"data":[{"ts":1,"tradeId":99999999999999999999999,"amount":1,"price":1,"direction":"buy"}]}}"#,
        r#"{"ch":"market.btcusdt.trade.detail","tick":{"data":[{"ts":99999999999999999,"tradeId":1,"amount":1,"price":1,"direction":"buy"}]}}"#,
        "\u{0}\u{1}",
    ] {
        bombs.push(gzip(text));
    }
    let mut s = HtxSession::default();
    for b in &bombs {
        let mut out = Output::default();
        let _ = s.on_frame(Frame::Binary(b), &symbols(), 1, &mut out);
        let _ = s.on_frame(
            Frame::Text(&String::from_utf8_lossy(b)),
            &symbols(),
            1,
            &mut out,
        );
    }
    let mut out = Output::default();
    assert_eq!(
        s.on_frame(Frame::Binary(&bombs[6]), &symbols(), 1, &mut out)
            .map_err(|e| e.label()),
        Err("inflated_too_large")
    );
}

#[test]
fn discovery_bodies() {
    let inst = r#"{"status":"ok","data":[
        {"base-currency":"btc","quote-currency":"usdt","price-precision":2,"amount-precision":6,"symbol-partition":"main","symbol":"btcusdt","state":"online","value-precision":8},
        {"base-currency":"old","quote-currency":"usdt","symbol":"oldusdt","state":"offline"},
        {"base-currency":"","quote-currency":"usdt","symbol":"usdt","state":"online"}]}"#;
    let list = Htx.parse_instruments(inst).expect("instruments");
    assert_eq!(list.len(), 2, "an invalid base is skipped");
    assert_eq!(
        (
            list[0].native.as_str(),
            list[0].symbol.as_str(),
            list[0].trading
        ),
        ("btcusdt", "BTC-USDT", true)
    );
    assert!(!list[1].trading);
    let vols = Htx
        .parse_volumes(r#"{"status":"ok","ts":1629789355531,"data":[{"symbol":"btcusdt","open":49000,"high":50000,"low":48000,"close":49500,"amount":10.5,"vol":519750.25,"count":100,"bid":49499,"bidSize":1,"ask":49500,"askSize":1},{"symbol":"nothing","amount":0}]}"#)
        .expect("volumes");
    assert_eq!(vols.get("btcusdt"), Some(&519_750.25));
    assert_eq!(vols.len(), 1);
    assert_eq!(
        Htx.parse_instruments(r#"{"status":"error","err-code":"invalid-parameter","err-msg":"invalid symbol","data":null}"#)
            .map_err(|e| e.label()),
        Err("exchange_error")
    );
}

#[test]
fn subscriptions_are_one_topic_per_request() {
    let natives: Vec<String> = (0..30).map(|i| format!("s{i}usdt")).collect();
    let mut next_id = 1;
    let requests = HtxSession::default().subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 60);
    let ids: HashSet<u64> = requests.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 60, "unique ids");
    assert!(Htx.limits().symbols_per_connection * 2 <= 200);
}
