//! Kraken session tests on frames shaped exactly as Kraken documents them (WebSocket v2 JSON
//! text, REST `/0/public/..` bodies with legacy asset codes).

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(
        ExchangeId::Kraken,
        [("BTC/USD", "BTC-USD"), ("MATIC/USD", "MATIC-USD")],
    )
}

fn parse_with(session: &mut KrakenSession, text: &str) -> (Result<Control, ParseError>, Output) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let (r, out) = parse_with(&mut KrakenSession::default(), text);
    (r, out.events)
}

fn frames_of(requests: &[Request]) -> Vec<serde_json::Value> {
    requests
        .iter()
        .map(|r| match &r.frame {
            Outgoing::Text(t) => serde_json::from_str(t).expect("json"),
            Outgoing::Binary(_) => panic!("text expected"),
        })
        .collect()
}

const TICKER: &str = r#"{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":105944.2,"bid_qty":2.5,"ask":105944.3,"ask_qty":3.2,"last":105899.4,"volume":163.28908096,"vwap":105904.39279,"low":104711.0,"high":106613.1,"change":250.0,"change_pct":0.24,"timestamp":"2022-12-25T09:30:59.123456Z"}]}"#;

#[test]
fn ticker_as_documented() {
    assert!(
        super::ticker_layout(TICKER).is_some(),
        "the documented layout"
    );
    let (r, out) = parse(TICKER);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Quote(q)] = out.as_slice() else {
        panic!("one quote: {out:?}")
    };
    assert_eq!(q.symbol, SymbolId(0));
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (105_944.2, 2.5, 105_944.3, 3.2)
    );
    assert_eq!(q.exchange_ts_ns, 1_671_960_659_123_456_000);
    assert_eq!(
        (q.recv_ts_ns, q.seq),
        (7, 0),
        "Kraken's ticker has no update id"
    );
}

#[test]
fn a_ticker_without_a_timestamp_has_no_exchange_time() {
    // The docs' field list has no `timestamp`: both paths take its absence.
    let fast = r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":0.10025,"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,"vwap":0.10148,"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17}]}"#;
    let slow = r#"{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD", "bid": 0.10025, "bid_qty": 740.0, "ask": 0.10036, "ask_qty": 1361.44813783}]}"#;
    assert!(super::ticker_layout(fast).is_some());
    assert!(super::ticker_layout(slow).is_none());
    for frame in [fast, slow] {
        let (r, out) = parse(frame);
        assert_eq!(r, Ok(Control::Data), "{frame}");
        let [Event::Quote(q)] = out.as_slice() else {
            panic!("one quote: {out:?}")
        };
        assert_eq!(
            (q.bid_px, q.ask_px, q.exchange_ts_ns),
            (0.10025, 0.10036, 0)
        );
    }
}

#[test]
fn the_exact_layout_and_the_general_parser_agree() {
    let reordered = r#"{"data": [{"timestamp": "2022-12-25T09:30:59.123456Z", "ask": 105944.3, "ask_qty": 3.2, "bid": 105944.2, "bid_qty": 2.5, "symbol": "BTC/USD", "last": 1}], "type": "snapshot", "channel": "ticker"}"#;
    assert!(super::ticker_layout(reordered).is_none());
    let a = parse(TICKER);
    let b = parse(reordered);
    assert_eq!(a, b);
}

#[test]
fn a_bad_trade_is_skipped_and_the_ones_after_it_are_kept() {
    let (r, out) = parse(
        r#"{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":1.0,"ord_type":"limit","trade_id":1,"timestamp":"2023-09-25T07:48:36.925533Z"},{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":1.0,"ord_type":"limit","trade_id":2,"timestamp":"yesterday"},{"symbol":"MATIC/USD","side":"sell","price":0.5146,"qty":1.5,"ord_type":"market","trade_id":3,"timestamp":"2023-09-25T07:48:37Z"}]}"#,
    );
    // The frame is rejected for its bad trade; the good ones around it all go out.
    assert_eq!(r.map_err(|e| e.label()), Err("bad_number"));
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
fn trades_as_documented_and_their_snapshot_is_not_re_emitted() {
    let (r, out) = parse(
        r#"{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":6423.46326,"ord_type":"limit","trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"},{"symbol":"MATIC/USD","side":"sell","price":0.5146,"qty":1.5,"ord_type":"market","trade_id":4665847,"timestamp":"2023-09-25T07:48:37Z"}]}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(out.len(), 2);
    let Event::Print(t) = &out[0] else {
        panic!("a trade: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(1));
    assert_eq!(
        (t.price, t.qty, t.side, t.trade_id.as_str()),
        (0.5147, 6423.46326, Side::Buy, "4665846")
    );
    assert_eq!(t.exchange_ts_ns, 1_695_628_116_925_533_000);
    let Event::Print(t) = &out[1] else {
        panic!("a trade: {out:?}")
    };
    assert_eq!(
        (t.side, t.exchange_ts_ns),
        (Side::Sell, 1_695_628_117_000_000_000)
    );
    let (r, out) = parse(
        r#"{"channel":"trade","type":"snapshot","data":[{"symbol":"MATIC/USD","side":"buy","price":0.5147,"qty":6423.46326,"ord_type":"limit","trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"}]}"#,
    );
    assert_eq!(r, Ok(Control::Ignored), "the last 50 trades are old news");
    assert!(out.is_empty());
}

#[test]
fn status_heartbeat_and_pong_are_not_data_nor_errors() {
    let online = r#"{"channel":"status","data":[{"api_version":"v2","connection_id":13834774380200032777,"system":"online","version":"2.0.0"}],"type":"update"}"#;
    assert_eq!(parse(online).0, Ok(Control::Ignored));
    for system in ["maintenance", "cancel_only", "post_only"] {
        let frame = online.replace("online", system);
        assert_eq!(
            parse(&frame).0,
            Ok(Control::ExchangeError(format!(
                "trading engine status {system}"
            ))),
            "{system}"
        );
    }
    assert_eq!(
        parse(r#"{"channel":"heartbeat"}"#).0,
        Ok(Control::KeepAlive)
    );
    assert_eq!(
        parse(r#"{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z","time_out":"2023-09-24T14:10:23.799703Z"}"#).0,
        Ok(Control::KeepAlive)
    );
    // The client's ping, as documented, with fresh ids.
    let mut s = KrakenSession::default();
    assert_eq!(
        s.keepalive(),
        Some(Outgoing::Text(r#"{"method":"ping","req_id":1}"#.into()))
    );
    assert_eq!(
        s.keepalive(),
        Some(Outgoing::Text(r#"{"method":"ping","req_id":2}"#.into()))
    );
    assert_eq!(Kraken.keepalive_every(), Some(PING_EVERY));
}

#[test]
fn one_ack_per_symbol_confirms_a_request() {
    let mut s = KrakenSession::default();
    let mut next_id = 4;
    let natives = vec!["BTC/USD".to_owned(), "MATIC/USD".to_owned()];
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 2, "ticker and trade");
    assert_eq!(next_id, 6);
    let frames = frames_of(&requests);
    assert_eq!(
        frames[0],
        serde_json::json!({"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "MATIC/USD"], "event_trigger": "bbo", "snapshot": true}, "req_id": 4})
    );
    assert_eq!(
        frames[1],
        serde_json::json!({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "MATIC/USD"], "snapshot": false}, "req_id": 5})
    );
    assert_eq!(requests[0].natives, natives);
    let ack = |req: u64, channel: &str, symbol: &str| {
        format!(
            r#"{{"method":"subscribe","req_id":{req},"result":{{"channel":"{channel}","event_trigger":"bbo","snapshot":true,"symbol":"{symbol}"}},"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}}"#
        )
    };
    assert_eq!(
        parse_with(&mut s, &ack(4, "ticker", "BTC/USD")).0,
        Ok(Control::Ignored),
        "one of two symbols"
    );
    assert_eq!(
        parse_with(&mut s, &ack(4, "ticker", "BTC/USD")).0,
        Ok(Control::Ignored),
        "a repeated ack confirms nothing more"
    );
    assert_eq!(
        parse_with(&mut s, &ack(4, "trade", "MATIC/USD")).0,
        Ok(Control::Ignored),
        "an ack for another channel is not this request's"
    );
    assert_eq!(
        parse_with(&mut s, &ack(4, "ticker", "MATIC/USD")).0,
        Ok(Control::Subscribed(4))
    );
    assert_eq!(
        parse_with(&mut s, &ack(4, "ticker", "MATIC/USD")).0,
        Ok(Control::Ignored),
        "after the request is confirmed"
    );
    assert_eq!(
        parse_with(&mut s, &ack(99, "ticker", "MATIC/USD")).0,
        Ok(Control::Ignored),
        "an ack for no request of ours"
    );
    // Acks without req_id (a request sent without one) confirm nothing.
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"method":"subscribe","result":{"channel":"ticker","symbol":"BTC/USD"},"success":true}"#
        )
        .0,
        Ok(Control::Ignored)
    );
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"method":"unsubscribe","req_id":4,"result":{"channel":"ticker","symbol":"BTC/USD"},"success":true}"#
        )
        .0,
        Ok(Control::Ignored)
    );
}

#[test]
fn a_refused_symbol_refuses_its_request_and_a_retry_sends_only_the_rest() {
    let mut s = KrakenSession::default();
    let mut next_id = 1;
    let natives = vec!["BTC/USD".to_owned(), "XYZ/USD".to_owned()];
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 2);
    // Ticker: BTC/USD acked, XYZ/USD refused.
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"method":"subscribe","req_id":1,"result":{"channel":"ticker","symbol":"BTC/USD"},"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}"#
        )
        .0,
        Ok(Control::Ignored)
    );
    let refused = r#"{"error":"Currency pair not supported XYZ/USD","method":"subscribe","req_id":1,"success":false,"symbol":"XYZ/USD","time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}"#;
    assert_eq!(
        parse_with(&mut s, refused).0,
        Ok(Control::Refused {
            request: Some(1),
            reason: "Currency pair not supported XYZ/USD".into()
        })
    );
    assert_eq!(
        parse_with(&mut s, refused).0,
        Ok(Control::Ignored),
        "a request is refused once"
    );
    // The connection retries the request's symbols: only what is not confirmed goes out
    // (the trade request 2 is still awaiting its acks, so both its symbols are asked again).
    let again = s.subscribe(&natives, &mut next_id);
    let frames = frames_of(&again);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["params"]["channel"], "ticker");
    assert_eq!(
        frames[0]["params"]["symbol"],
        serde_json::json!(["XYZ/USD"])
    );
    assert_eq!(frames[1]["params"]["channel"], "trade");
    assert_eq!(again[0].natives, vec!["XYZ/USD".to_owned()]);
    // A refusal without a request id names no request.
    assert_eq!(
        parse(r#"{"error":"Subscription depth not supported","method":"subscribe","success":false,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}"#).0,
        Ok(Control::Refused {
            request: None,
            reason: "Subscription depth not supported".into()
        })
    );
    // Other failures are reported as exchange errors.
    assert_eq!(
        parse(r#"{"error":"EGeneral:Invalid arguments","method":"unsubscribe","req_id":3,"success":false,"symbol":"BTC/USD"}"#).0,
        Ok(Control::ExchangeError(
            "EGeneral:Invalid arguments (BTC/USD)".into()
        ))
    );
    // "Already subscribed" answers a retry: the symbol is subscribed.
    let mut s = KrakenSession::default();
    let mut next_id = 1;
    let _ = s.subscribe(
        &["BTC/USD".to_owned(), "MATIC/USD".to_owned()],
        &mut next_id,
    );
    assert_eq!(
        parse_with(&mut s, r#"{"error":"Already subscribed","method":"subscribe","req_id":1,"success":false,"symbol":"BTC/USD"}"#).0,
        Ok(Control::Ignored)
    );
    assert_eq!(
        parse_with(&mut s, r#"{"method":"subscribe","req_id":1,"result":{"channel":"ticker","symbol":"MATIC/USD"},"success":true}"#).0,
        Ok(Control::Subscribed(1))
    );
    // An error about no request (the message-rate limit, as third-party clients report it).
    assert_eq!(
        parse(r#"{"Error":"Exceeded msg rate"}"#).0,
        Ok(Control::ExchangeError("Exceeded msg rate".into()))
    );
    // A request given up on (ack timeout) is forgotten: a late ack confirms nothing.
    let mut s = KrakenSession::default();
    let mut next_id = 1;
    let _ = s.subscribe(&["BTC/USD".to_owned()], &mut next_id);
    s.forget(1);
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"method":"subscribe","req_id":1,"result":{"channel":"ticker","symbol":"BTC/USD"},"success":true}"#
        )
        .0,
        Ok(Control::Ignored)
    );
}

#[test]
fn subscriptions_are_batched_within_the_caps() {
    let natives: Vec<String> = (0..SYMBOLS_PER_CONNECTION)
        .map(|i| format!("S{i}/USD"))
        .collect();
    let mut next_id = 1;
    let requests = KrakenSession::default().subscribe(&natives, &mut next_id);
    let per_channel = SYMBOLS_PER_CONNECTION.div_ceil(SYMBOLS_PER_REQUEST);
    assert_eq!(requests.len(), 2 * per_channel);
    let ids: HashSet<u64> = requests.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), requests.len(), "unique ids");
    for (r, f) in requests.iter().zip(frames_of(&requests)) {
        let n = f["params"]["symbol"].as_array().map_or(0, Vec::len);
        assert!(n <= SYMBOLS_PER_REQUEST && n == r.natives.len());
        assert_eq!(f["req_id"], r.id);
    }
    assert_eq!(
        Kraken.limits().symbols_per_connection,
        SYMBOLS_PER_CONNECTION
    );
}

#[test]
fn rfc3339_times_to_nanoseconds() {
    for (text, ns) in [
        ("1970-01-01T00:00:00Z", 0),
        ("2022-12-25T09:30:59.123456Z", 1_671_960_659_123_456_000),
        ("2023-09-25T07:48:36.925533Z", 1_695_628_116_925_533_000),
        ("2024-02-29T23:59:59.999999999Z", 1_709_251_199_999_999_999),
        ("2024-02-29T23:59:59.9999999999Z", 1_709_251_199_999_999_999),
        ("2000-03-01T00:00:00.5Z", 951_868_800_500_000_000),
        (
            "2022-12-25T10:30:59.123456+01:00",
            1_671_960_659_123_456_000,
        ),
        (
            "2022-12-25T08:00:59.123456-01:30",
            1_671_960_659_123_456_000,
        ),
        ("1969-12-31T23:59:59Z", -1_000_000_000),
    ] {
        assert_eq!(rfc3339_ns(text), Ok(ns), "{text}");
    }
    for bad in [
        "",
        "2022-12-25",
        "2022-12-25T09:30:59",
        "2022-12-25T09:30:59.Z",
        "2022-13-25T09:30:59Z",
        "2023-02-29T09:30:59Z",
        "2022-12-32T09:30:59Z",
        "2022-12-25T24:00:00Z",
        "2022-12-25T09:60:00Z",
        "2022-12-25T09:30:59ZZ",
        "2022-12-25T09:30:59+0100",
        "2022-12-25T09:30:59+25:00",
        "9999-12-31T23:59:59Z",
        "2022-12-25T09:30:5x.1Z",
        "２022-12-25T09:30:59Z",
    ] {
        assert_eq!(
            rfc3339_ns(bad).map_err(|e| e.label()),
            Err("bad_number"),
            "{bad}"
        );
    }
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let ticker = |symbol: &str, bid: &str, ask: &str, ts: &str| {
        format!(
            r#"{{"channel":"ticker","type":"update","data":[{{"symbol":"{symbol}","bid":{bid},"bid_qty":1,"ask":{ask},"ask_qty":1,"last":1,"volume":1,"vwap":1,"low":1,"high":1,"change":0,"change_pct":0,"timestamp":"{ts}"}}]}}"#
        )
    };
    const TS: &str = "2022-12-25T09:30:59.123456Z";
    let fast = [
        (ticker("ETH/USD", "1", "2", TS), "unknown_symbol"),
        (ticker("BTC/USD", "2", "1", TS), "crossed"),
        (ticker("BTC/USD", "0", "1", TS), "non_positive_price"),
        (ticker("BTC/USD", "1", "2", "yesterday"), "bad_number"),
    ];
    for (frame, _) in &fast {
        assert!(super::ticker_layout(frame).is_some(), "{frame}");
    }
    let cases: Vec<(String, &str)> = [
        ("ping", "malformed"),
        ("{}", "malformed"),
        (r#"{"channel":5}"#, "malformed"),
        (r#"{"channel":"status","type":"update","data":[]}"#, "malformed"),
        (
            r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":"1","bid_qty":1,"ask":2,"ask_qty":1}]}"#,
            "malformed",
        ),
        (
            r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1e999,"bid_qty":1,"ask":2,"ask_qty":1}]}"#,
            "malformed",
        ),
        (
            r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"hold","price":1,"qty":1,"trade_id":1,"timestamp":"2022-12-25T09:30:59Z"}]}"#,
            "malformed",
        ),
        (
            r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":0,"trade_id":1,"timestamp":"2022-12-25T09:30:59Z"}]}"#,
            "bad_number",
        ),
        (
            r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"trade_id":1}]}"#,
            "malformed",
        ),
        (
            r#"{"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","side":"buy","price":1,"qty":1,"trade_id":1,"timestamp":"2022-12-25T09:30:59Z"}]}"#,
            "unknown_symbol",
        ),
    ]
    .iter()
    .map(|(f, l)| ((*f).to_owned(), *l))
    .chain(fast)
    .collect();
    for (frame, label) in &cases {
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
        KrakenSession::default()
            .on_frame(Frame::Binary(b"{}"), &symbols(), 1, &mut out)
            .map_err(|e| e.label()),
        Err("malformed")
    );
    // Channels we never asked for are ignored, not errors.
    assert_eq!(
        parse(r#"{"channel":"book","type":"update","data":[]}"#).0,
        Ok(Control::Ignored)
    );
}

#[test]
fn no_input_panics() {
    let mut s = KrakenSession::default();
    for text in [
        "",
        "{",
        "[]",
        "null",
        r#"{"channel":"ticker","type":"update","data":[{}]}"#,
        r#"{"channel":"ticker","type":"update","data":{}}"#,
        r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1,"bid_qty":1,"ask":2,"ask_qty":1,"last":1,"volume":1,"vwap":1,"low":1,"high":1,"change":1,"change_pct":1,"timestamp":"2022-12-25T09:30:59.1234567890123456789012Z"}]}"#,
        r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"trade_id":-1,"timestamp":"x"}]}"#,
        r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"trade_id":99999999999999999999999,"timestamp":"x"}]}"#,
        r#"{"method":"subscribe","req_id":-1,"success":true}"#,
        r#"{"method":"subscribe","req_id":1,"success":"yes"}"#,
        r#"{"method":"subscribe","req_id":1,"success":true,"result":5}"#,
        r#"{"method":5}"#,
        r#"{"channel":"status","data":[{"system":5}]}"#,
        "\u{0}\u{1}",
        "9999-99-99T99:99:99Z",
    ] {
        let mut out = Output::default();
        let _ = s.on_frame(Frame::Text(text), &symbols(), 1, &mut out);
        let _ = rfc3339_ns(text);
        let _ = Kraken.parse_instruments(text);
        let _ = Kraken.parse_volumes(text);
    }
}

const ASSET_PAIRS: &str = r#"{"error":[],"result":{
    "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","aclass_base":"currency","base":"XXBT","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":1,"lot_decimals":8,"lot_multiplier":1,"leverage_buy":[2,3],"leverage_sell":[2,3],"fees":[[0,0.4]],"fees_maker":[[0,0.25]],"fee_volume_currency":"ZUSD","margin_call":80,"margin_stop":40,"ordermin":"0.00005","costmin":"0.5","tick_size":"0.1","status":"online","long_position_limit":250,"short_position_limit":200},
    "XBTUSDT":{"altname":"XBTUSDT","wsname":"XBT/USDT","base":"XXBT","quote":"USDT","status":"online"},
    "XETHXXBT":{"altname":"ETHXBT","wsname":"ETH/XBT","base":"XETH","quote":"XXBT","status":"online"},
    "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","base":"XETH","quote":"ZUSD","status":"online"},
    "XDGUSD":{"altname":"XDGUSD","wsname":"XDG/USD","base":"XXDG","quote":"ZUSD","status":"online"},
    "SOLUSD":{"altname":"SOLUSD","wsname":"SOL/USD","base":"SOL","quote":"ZUSD","status":"online"},
    "XTZUSD":{"altname":"XTZUSD","wsname":"XTZ/USD","base":"XTZ","quote":"ZUSD","status":"online"},
    "ADAEUR":{"altname":"ADAEUR","wsname":"ADA/EUR","base":"ADA","quote":"ZEUR","status":"cancel_only"},
    "XXBTZUSD.d":{"altname":"XBTUSD.d","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online"},
    "NOWS":{"altname":"NOWS","base":"NOW","quote":"ZUSD","status":"online"},
    "ODDUSD":{"altname":"ODDUSD","wsname":"EVEN/USD","base":"ODD","quote":"ZUSD","status":"online"}
}}"#;

#[test]
fn asset_pairs_map_legacy_codes_both_ways() {
    let list = Kraken.parse_instruments(ASSET_PAIRS).expect("asset pairs");
    let by_symbol: HashMap<&str, &Instrument> =
        list.iter().map(|i| (i.symbol.as_str(), i)).collect();
    let expect = [
        ("BTC-USD", "BTC/USD", "XXBTZUSD", true),
        ("BTC-USDT", "BTC/USDT", "XBTUSDT", true),
        ("ETH-BTC", "ETH/BTC", "XETHXXBT", true),
        ("ETH-USD", "ETH/USD", "XETHZUSD", true),
        ("DOGE-USD", "DOGE/USD", "XDGUSD", true),
        ("SOL-USD", "SOL/USD", "SOLUSD", true),
        ("XTZ-USD", "XTZ/USD", "XTZUSD", true),
        ("ADA-EUR", "ADA/EUR", "ADAEUR", false),
    ];
    for (canonical, native, key, trading) in expect {
        let i = by_symbol
            .get(canonical)
            .unwrap_or_else(|| panic!("{canonical} in {list:?}"));
        assert_eq!(i.native, native, "{canonical}: the WebSocket v2 spelling");
        assert_eq!(i.volume_key(), key, "{canonical}: the REST pair key");
        assert_eq!(i.trading, trading, "{canonical}");
    }
    assert_eq!(
        list.len(),
        expect.len(),
        "darkpool, no-wsname and disagreeing pairs are skipped"
    );
    // Both ways: the WebSocket symbol resolves back to the canonical symbol through the
    // table built from these instruments, and the REST key finds its volume.
    let mut table = SymbolTable::new(ExchangeId::Kraken);
    for i in &list {
        table.intern(&i.native, &i.symbol).expect("room");
    }
    let id = table.lookup("BTC/USD").expect("BTC/USD");
    assert_eq!(table.get(id).map(|e| e.symbol.as_str()), Some("BTC-USD"));
    assert!(table.lookup("XBT/USD").is_none(), "v1 spelling is not v2's");
    assert_eq!(rest_asset("XXBT"), "BTC");
    assert_eq!(rest_asset("XBT"), "BTC");
    assert_eq!(rest_asset("ZUSD"), "USD");
    assert_eq!(rest_asset("XXDG"), "DOGE");
    assert_eq!(rest_asset("XTZ"), "XTZ", "Tezos, not a legacy prefix");
}

#[test]
fn two_pairs_onto_one_symbol_are_both_refused() {
    let body = r#"{"error":[],"result":{
        "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online"},
        "XBTUSD2":{"altname":"XBTUSD2","wsname":"BTC/USD","base":"XBT","quote":"USD","status":"online"},
        "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","base":"XETH","quote":"ZUSD","status":"online"}
    }}"#;
    let list = Kraken.parse_instruments(body).expect("asset pairs");
    let names: Vec<&str> = list.iter().map(|i| i.symbol.as_str()).collect();
    assert_eq!(names, vec!["ETH-USD"]);
}

#[test]
fn a_pair_not_online_does_not_knock_out_the_online_one() {
    // A pair not trading for the same assets, its key sorting before and after the online
    // one's (the result is read in key order).
    for body in [
        r#"{"error":[],"result":{
            "XBTUSDOLD":{"altname":"XBTUSDOLD","wsname":"BTC/USD","base":"XBT","quote":"USD","status":"delisted"},
            "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online"},
            "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","base":"XETH","quote":"ZUSD","status":"online"}
        }}"#,
        r#"{"error":[],"result":{
            "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","status":"online"},
            "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","base":"XETH","quote":"ZUSD","status":"online"},
            "YBTCUSD":{"altname":"YBTCUSD","wsname":"BTC/USD","base":"XBT","quote":"USD","status":"cancel_only"}
        }}"#,
    ] {
        let list = Kraken.parse_instruments(body).expect("asset pairs");
        let mut trading: Vec<(&str, &str)> = list
            .iter()
            .filter(|i| i.trading)
            .map(|i| (i.symbol.as_str(), i.volume_key()))
            .collect();
        trading.sort_unstable();
        assert_eq!(
            trading,
            [("BTC-USD", "XXBTZUSD"), ("ETH-USD", "XETHZUSD")],
            "{body}"
        );
    }
}

#[test]
fn ticker_volumes_are_quote_volumes_by_pair_key() {
    let body = r#"{"error":[],"result":{
        "XXBTZUSD":{"a":["30300.10000","1","1.000"],"b":["30300.00000","1","1.000"],"c":["30303.20000","0.00067643"],"v":["4083.67001100","4412.73601799"],"p":["30706.77771","30689.13205"],"t":[34619,38907],"l":["29868.30000","29868.30000"],"h":["31631.00000","31631.00000"],"o":"30502.80000"},
        "SOLUSD":{"a":["150.1","1","1.000"],"v":["10","20"],"p":["150","151.5"]},
        "BROKEN":{"v":["1"],"p":["2"]},
        "NOTNUM":{"v":["x","y"],"p":["1","2"]}
    }}"#;
    let vols = Kraken.parse_volumes(body).expect("volumes");
    let btc = vols.get("XXBTZUSD").copied().expect("XXBTZUSD");
    assert!((btc - 4412.73601799 * 30689.13205).abs() < 1e-6);
    assert_eq!(vols.get("SOLUSD"), Some(&(20.0 * 151.5)));
    assert_eq!(vols.len(), 2);
}

#[test]
fn rest_error_bodies_are_rejected_clearly() {
    for body in [
        r#"{"error":["EQuery:Unknown asset pair"]}"#,
        r#"{"error":["EGeneral:Too many requests"],"result":{}}"#,
    ] {
        let e = Kraken.parse_instruments(body).expect_err("an error body");
        assert_eq!(e.label(), "exchange_error", "{body}");
        assert!(e.to_string().contains("EQuery") || e.to_string().contains("EGeneral"));
        assert_eq!(
            Kraken.parse_volumes(body).map_err(|e| e.label()),
            Err("exchange_error")
        );
    }
    assert_eq!(
        Kraken
            .parse_instruments(r#"{"error":[]}"#)
            .map_err(|e| e.label()),
        Err("malformed")
    );
    assert_eq!(
        Kraken.parse_instruments("<html>").map_err(|e| e.label()),
        Err("malformed")
    );
}
