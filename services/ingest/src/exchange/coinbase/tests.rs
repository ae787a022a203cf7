//! Coinbase session tests on frames shaped exactly as Coinbase documents them.

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(
        ExchangeId::Coinbase,
        [("BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD")],
    )
}

/// A session that asked for both test products, as a connection's does before data comes.
fn subscribed() -> CoinbaseSession {
    let mut s = CoinbaseSession::default();
    s.subscribe(&["BTC-USD".to_owned(), "ETH-USD".to_owned()], &mut 1);
    s
}

fn parse_with(
    session: &mut CoinbaseSession,
    text: &str,
) -> (Result<Control, ParseError>, Vec<Event>) {
    let mut out = Output::default();
    let r = session.on_frame(Frame::Text(text), &symbols(), 7, &mut out);
    (r, out.events)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    parse_with(&mut subscribed(), text)
}

/// The docs' level2 snapshot (with an offer added, as a real one has).
const SNAPSHOT: &str = r#"{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.73","new_quantity":"0.06317902"},{"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.3","new_quantity":"0.02"},{"side":"offer","event_time":"1970-01-01T00:00:00Z","price_level":"21921.74","new_quantity":"0.5"},{"side":"offer","event_time":"1970-01-01T00:00:00Z","price_level":"21922.5","new_quantity":"1.2"}]}]}"#;

fn update(seq: u64, updates: &[(&str, &str, &str)]) -> String {
    let levels: Vec<String> = updates
        .iter()
        .map(|(side, px, qty)| {
            format!(
                r#"{{"side":"{side}","event_time":"2023-02-09T20:32:50.7Z","price_level":"{px}","new_quantity":"{qty}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:51.000000001Z","sequence_num":{seq},"events":[{{"type":"update","product_id":"BTC-USD","updates":[{}]}}]}}"#,
        levels.join(",")
    )
}

fn top(events: &[Event]) -> (f64, f64, f64, f64) {
    let [Event::Quote(q)] = events else {
        panic!("one quote expected: {events:?}")
    };
    (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty)
}

#[test]
fn level2_snapshot_as_documented() {
    assert!(
        l2_layout(SNAPSHOT, &mut Vec::new()).is_some(),
        "the documented layout is the fast one"
    );
    let (r, out) = parse(SNAPSHOT);
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(q) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(q.symbol, SymbolId(0));
    assert_eq!(
        (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty),
        (21921.73, 0.063_179_02, 21921.74, 0.5)
    );
    assert_eq!(
        (q.exchange_ts_ns, q.recv_ts_ns, q.seq),
        (1_675_974_770_714_964_855, 7, 0),
        "the push's time to the nanosecond; no per-product id"
    );
}

#[test]
fn level2_updates_move_the_top_and_zero_deletes_a_level() {
    let mut s = subscribed();
    assert_eq!(parse_with(&mut s, SNAPSHOT).0, Ok(Control::Data));
    // The best bid's size changes.
    let (r, out) = parse_with(&mut s, &update(1, &[("bid", "21921.73", "0.1")]));
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(top(&out), (21921.73, 0.1, 21921.74, 0.5));
    assert_eq!(
        out.first().map(|e| match e {
            Event::Quote(q) => q.exchange_ts_ns,
            Event::Print(_) => 0,
        }),
        Some(1_675_974_770_700_000_000),
        "the level's event_time, not the push's timestamp"
    );
    // A level below the top changes: no quote.
    let (r, out) = parse_with(&mut s, &update(2, &[("bid", "21921.3", "5")]));
    assert_eq!((r, out.len()), (Ok(Control::Data), 0));
    // "0" deletes the best offer: the next one is the top.
    let (_, out) = parse_with(&mut s, &update(3, &[("offer", "21921.74", "0")]));
    assert_eq!(top(&out), (21921.73, 0.1, 21922.5, 1.2));
    // A new best bid and a deleted old one in one update.
    let (_, out) = parse_with(
        &mut s,
        &update(
            4,
            &[("bid", "21921.73", "0.00000000"), ("bid", "21922", "2")],
        ),
    );
    assert_eq!(top(&out), (21922.0, 2.0, 21922.5, 1.2));
    // An update that crosses the book is counted, not published.
    let (r, out) = parse_with(&mut s, &update(5, &[("bid", "21923", "1")]));
    assert_eq!(r.map_err(|e| e.label()), Err("crossed"));
    assert!(out.is_empty());
}

#[test]
fn a_sequence_gap_drops_the_books_and_asks_for_a_new_connection() {
    let mut s = subscribed();
    assert_eq!(parse_with(&mut s, SNAPSHOT).0, Ok(Control::Data));
    assert_eq!(
        parse_with(&mut s, &update(1, &[("bid", "21921.73", "0.1")])).0,
        Ok(Control::Data)
    );
    let (r, out) = parse_with(&mut s, &update(3, &[("bid", "21921.73", "0.2")]));
    assert!(
        matches!(r, Ok(Control::Rotate(ref why)) if why.contains("sequence_num 3 after 1")),
        "{r:?}"
    );
    assert!(out.is_empty());
    // Level2 is ignored from then on (once asked, the rotation is not asked again) ...
    assert_eq!(
        parse_with(&mut s, &update(4, &[("bid", "21921.73", "0.3")])).0,
        Ok(Control::Ignored)
    );
    let (r, _) = parse_with(&mut s, &update(9, &[("bid", "21921.73", "0.3")]));
    assert_eq!(r, Ok(Control::Ignored));
    // Every heartbeat repeats the request, in case a rotation was abandoned.
    let hb = r#"{"channel":"heartbeats","client_id":"","timestamp":"2023-06-23T20:31:26.122969572Z","sequence_num":10,"events":[{"current_time":"2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105","heartbeat_counter":3049}]}"#;
    assert!(matches!(parse_with(&mut s, hb).0, Ok(Control::Rotate(_))));
    // ... while trades go on.
    let trade = r#"{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z","sequence_num":11,"events":[{"type":"update","trades":[{"trade_id":"000000000","product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY","time":"2019-08-14T20:42:27.265Z"}]}]}"#;
    assert_eq!(parse_with(&mut s, trade).0, Ok(Control::Data));
    // The same through the general parser (a reordered frame), and a repeat is a gap too.
    let mut s = subscribed();
    let reordered = SNAPSHOT.replace(r#""client_id":"","#, "").replace(
        r#""channel":"l2_data","#,
        r#""channel":"l2_data","client_id":"","#,
    );
    assert_eq!(parse_with(&mut s, &reordered).0, Ok(Control::Data));
    let (r, _) = parse_with(&mut s, &reordered.replace(" ", ""));
    assert!(
        matches!(r, Ok(Control::Rotate(_))),
        "a repeated sequence_num: {r:?}"
    );
}

#[test]
fn an_update_before_its_snapshot_or_for_an_unknown_product_is_rejected() {
    let (r, _) = parse(&update(0, &[("bid", "1", "1")]));
    assert_eq!(r.map_err(|e| e.label()), Err("malformed"));
    let (r, _) = parse(&SNAPSHOT.replace("BTC-USD", "DOGE-USD"));
    assert_eq!(r.map_err(|e| e.label()), Err("unknown_symbol"));
}

#[test]
fn market_trades_as_documented_and_the_snapshot_is_not_republished() {
    let snapshot = r#"{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z","sequence_num":0,"events":[{"type":"snapshot","trades":[{"trade_id":"000000000","product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY","time":"2019-08-14T20:42:27.265Z"}]}]}"#;
    assert_eq!(parse(snapshot), (Ok(Control::Ignored), vec![]));
    let upd = snapshot
        .replace("snapshot", "update")
        .replace("BUY", "SELL");
    let (r, out) = parse(&upd);
    assert_eq!(r, Ok(Control::Data));
    let [Event::Print(t)] = out.as_slice() else {
        panic!("one trade expected: {out:?}")
    };
    assert_eq!(
        (
            t.symbol,
            t.price,
            t.qty,
            t.trade_id.as_str(),
            t.side,
            t.exchange_ts_ns
        ),
        (
            SymbolId(1),
            1260.01,
            0.3,
            "000000000",
            Side::Sell,
            1_565_815_347_265_000_000
        )
    );
    let bad_side = upd.replace("SELL", "sell");
    assert_eq!(parse(&bad_side).0.map_err(|e| e.label()), Err("malformed"));
}

#[test]
fn subscribe_one_channel_per_message_and_heartbeats_once() {
    let mut s = CoinbaseSession::default();
    let natives: Vec<String> = (0..PRODUCTS_PER_REQUEST + 1)
        .map(|i| format!("C{i}-USD"))
        .collect();
    let mut next_id = 1;
    let requests = s.subscribe(&natives, &mut next_id);
    let frames: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| match &r.frame {
            Outgoing::Text(t) => serde_json::from_str(t).expect("json"),
            Outgoing::Binary(_) => panic!("binary"),
        })
        .collect();
    assert_eq!(
        requests.len(),
        5,
        "heartbeats, then two channels per batch of products"
    );
    assert_eq!(
        frames[0],
        serde_json::json!({"type": "subscribe", "channel": "heartbeats"})
    );
    assert_eq!(frames[1]["channel"], "level2");
    assert_eq!(frames[2]["channel"], "market_trades");
    assert_eq!(
        frames[1]["product_ids"].as_array().map(Vec::len),
        Some(PRODUCTS_PER_REQUEST),
        "batches at the cap"
    );
    assert_eq!(
        frames[3]["product_ids"],
        serde_json::json!([format!("C{PRODUCTS_PER_REQUEST}-USD")])
    );
    assert_eq!(
        requests.iter().map(|r| r.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // A retry of some products does not ask for heartbeats again; a retry of heartbeats
    // (no products) does.
    let again = s.subscribe(&natives[..1], &mut next_id);
    assert_eq!(again.len(), 2);
    let hb = s.subscribe(&[], &mut next_id);
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0].natives, Vec::<String>::new());
}

#[test]
fn acks_are_matched_against_the_subscriptions_listing() {
    let mut s = CoinbaseSession::default();
    let mut next_id = 1;
    let natives = ["BTC-USD".to_owned(), "ETH-USD".to_owned()];
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 3);
    let subs = |seq: u64, held: &str| {
        format!(
            r#"{{"channel":"subscriptions","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":{seq},"events":[{{"subscriptions":{held}}}]}}"#
        )
    };
    // Heartbeats only.
    assert_eq!(
        parse_with(&mut s, &subs(0, r#"{"heartbeats":["heartbeats"]}"#)).0,
        Ok(Control::Subscribed(1))
    );
    // Level2 for one of the two products: not yet.
    assert_eq!(
        parse_with(
            &mut s,
            &subs(1, r#"{"heartbeats":["heartbeats"],"level2":["BTC-USD"]}"#)
        )
        .0,
        Ok(Control::Ignored)
    );
    // Everything at once: two requests confirmed, one now, one on the next frame.
    let all = r#"{"heartbeats":["heartbeats"],"level2":["BTC-USD","ETH-USD"],"market_trades":["ETH-USD","BTC-USD"]}"#;
    assert_eq!(
        parse_with(&mut s, &subs(2, all)).0,
        Ok(Control::Subscribed(2))
    );
    let hb = r#"{"channel":"heartbeats","client_id":"","timestamp":"2023-06-23T20:31:26.122969572Z","sequence_num":3,"events":[{"current_time":"2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105","heartbeat_counter":"3049"}]}"#;
    assert_eq!(parse_with(&mut s, hb).0, Ok(Control::Subscribed(3)));
    assert_eq!(
        parse_with(
            &mut s,
            &hb.replace(r#""sequence_num":3"#, r#""sequence_num":4"#)
        )
        .0,
        Ok(Control::KeepAlive)
    );
    assert_eq!(
        parse_with(&mut s, &subs(5, all)).0,
        Ok(Control::Ignored),
        "nothing left to confirm"
    );
    // `l2_data` as the listing's key is taken for level2 too; a forgotten request is not
    // confirmed.
    let mut s = CoinbaseSession::default();
    let requests = s.subscribe(&natives[..1], &mut next_id);
    s.forget(requests[0].id);
    let (r, _) = parse_with(
        &mut s,
        &subs(0, r#"{"l2_data":["BTC-USD"],"heartbeats":["heartbeats"]}"#),
    );
    assert_eq!(r, Ok(Control::Subscribed(requests[1].id)));
}

#[test]
fn errors_and_other_channels() {
    assert_eq!(
        parse(r#"{"type":"error","message":"failure to subscribe"}"#).0,
        Ok(Control::Refused {
            request: None,
            reason: "failure to subscribe".into()
        })
    );
    assert_eq!(
        parse(r#"{"type":"error","message":"Failed to subscribe","reason":"channel not found"}"#).0,
        Ok(Control::Refused {
            request: None,
            reason: "Failed to subscribe: channel not found".into()
        })
    );
    let ticker = r#"{"channel":"ticker","client_id":"","timestamp":"2023-02-09T20:30:37.167359596Z","sequence_num":0,"events":[{"type":"snapshot","tickers":[{"type":"ticker","product_id":"BTC-USD","price":"21932.98","volume_24_h":"16038.28770938","low_24_h":"21835.29","high_24_h":"23011.18","low_52_w":"15460","high_52_w":"48240","price_percent_chg_24_h":"-4.15775596190603","best_bid":"21931.98","best_bid_quantity":"0.1","best_ask":"21932.98","best_ask_quantity":"0.2"}]}]}"#;
    assert_eq!(parse(ticker), (Ok(Control::Ignored), vec![]));
}

#[test]
fn malformed_and_unusable_frames_are_named() {
    let cases: &[(&str, &str)] = &[
        ("pong", "malformed"),
        ("{}", "malformed"),
        (
            r#"{"channel":"market_trades","sequence_num":0,"events":[{"type":"update","trades":[{"trade_id":"1","product_id":"BTC-USD","price":"x","size":"1","side":"BUY","time":"2019-08-14T20:42:27.265Z"}]}]}"#,
            "bad_number",
        ),
        (
            r#"{"channel":"market_trades","sequence_num":0,"events":[{"type":"update","trades":[{"trade_id":"1","product_id":"BTC-USD","price":"1","size":"1","side":"BUY","time":"2019-08-14 20:42:27"}]}]}"#,
            "bad_number",
        ),
    ];
    for (text, label) in cases {
        assert_eq!(parse(text).0.map_err(|e| e.label()), Err(*label), "{text}");
    }
    // A level2 push that cannot be applied loses an update: the books go.
    let (r, _) = parse(&SNAPSHOT.replace(r#""21921.3""#, r#""-1""#));
    assert!(matches!(r, Ok(Control::Rotate(_))), "{r:?}");
    let (r, _) = parse(&SNAPSHOT.replace(r#""side":"bid""#, r#""side":"buy""#));
    assert!(matches!(r, Ok(Control::Rotate(_))), "{r:?}");
    for bad in [
        r#"{"channel":"l2_data","sequence_num":0,"events":[]}"#.to_owned(),
        SNAPSHOT.replace("2023-02-09T20:32:50.714964855Z", "yesterday"),
        SNAPSHOT.replace(r#""type":"snapshot""#, r#""type":"delta""#),
        SNAPSHOT.replace(r#""updates":[{"#, r#""updates":[7,{"#),
    ] {
        let (r, _) = parse(&bad);
        assert!(matches!(r, Ok(Control::Rotate(_))), "{bad}: {r:?}");
    }
    let mut out = Output::default();
    assert!(
        CoinbaseSession::default()
            .on_frame(Frame::Binary(b"\x00"), &symbols(), 1, &mut out)
            .is_err()
    );
}

#[test]
fn the_fast_layout_and_the_general_parser_agree() {
    let frames = [
        SNAPSHOT.to_owned(),
        update(1, &[("bid", "21921.73", "0.1"), ("offer", "21921.74", "0")]),
        update(2, &[]),
    ];
    let mut fast = subscribed();
    let mut slow = subscribed();
    for f in &frames {
        assert!(l2_layout(f, &mut Vec::new()).is_some(), "{f}");
        // Spaces after the separators: the same frame for serde, not for the layout.
        let spaced = f.replace(r#"",""#, r#"", ""#);
        assert!(l2_layout(&spaced, &mut Vec::new()).is_none(), "{spaced}");
        assert_eq!(
            parse_with(&mut fast, f),
            parse_with(&mut slow, &spaced),
            "{f}"
        );
    }
}

#[test]
fn a_book_is_bounded_and_asks_for_a_new_connection_when_a_cut_side_runs_out() {
    let mut s = subscribed();
    let n = MAX_LEVELS_PER_SIDE + 10;
    let bids: Vec<(String, String)> = (1..=n).map(|i| (i.to_string(), "1".to_owned())).collect();
    let mut levels: Vec<(&str, &str, &str)> = bids
        .iter()
        .map(|(p, q)| ("bid", p.as_str(), q.as_str()))
        .collect();
    levels.push(("offer", "100000", "1"));
    let snap = update(0, &levels).replace(r#""type":"update""#, r#""type":"snapshot""#);
    let (r, out) = parse_with(&mut s, &snap);
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(top(&out).0, n as f64);
    let book = s.books.get(&SymbolId(0)).expect("a book");
    assert_eq!(
        book.bids.len(),
        MAX_LEVELS_PER_SIDE,
        "the farthest bids dropped"
    );
    assert_eq!(
        book.bids.first_key_value().map(|(k, _)| f64::from_bits(*k)),
        Some(11.0)
    );
    // Every kept bid deleted: the true best bid may be one we dropped.
    let deletes: Vec<(String, String)> =
        (11..=n).map(|i| (i.to_string(), "0".to_owned())).collect();
    let levels: Vec<(&str, &str, &str)> = deletes
        .iter()
        .map(|(p, q)| ("bid", p.as_str(), q.as_str()))
        .collect();
    let (r, _) = parse_with(&mut s, &update(1, &levels));
    assert!(matches!(r, Ok(Control::Rotate(_))), "{r:?}");
}

#[test]
fn rfc3339_times_to_the_nanosecond() {
    for (text, ns) in [
        ("1970-01-01T00:00:00Z", 0),
        ("2023-02-09T20:32:50.714964855Z", 1_675_974_770_714_964_855),
        ("2019-08-14T20:42:27.265Z", 1_565_815_347_265_000_000),
        ("2019-08-14T22:42:27.265+02:00", 1_565_815_347_265_000_000),
        ("2000-02-29T00:00:00.1234567891Z", 951_782_400_123_456_789),
        ("1969-12-31T23:59:59.5Z", -500_000_000),
    ] {
        assert_eq!(rfc3339_ns(text), Ok(ns), "{text}");
    }
    for bad in [
        "",
        "2023-02-09",
        "2023-02-30T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-02-09T24:00:00Z",
        "2023-02-09T20:32:50.Z",
        "2023-02-09T20:32:50",
        "2023-02-09T20:32:50Zx",
        "2023-02-09 20:32:50Z",
        "9999-12-31T23:59:59Z",
        "2023-02-09T20:32:50+0200",
    ] {
        assert!(rfc3339_ns(bad).is_err(), "{bad}");
    }
}

const PRODUCTS: &str = r#"{"products":[
{"product_id":"BTC-USD","price":"68900.5","price_percentage_change_24h":"1.2","volume_24h":"10","volume_percentage_change_24h":"3","base_increment":"0.00000001","quote_increment":"0.01","quote_min_size":"1","quote_max_size":"150000000","base_min_size":"0.00000001","base_max_size":"3400","base_name":"Bitcoin","quote_name":"US Dollar","watched":false,"is_disabled":false,"new":false,"status":"online","cancel_only":false,"limit_only":false,"post_only":false,"trading_disabled":false,"auction_mode":false,"product_type":"SPOT","quote_currency_id":"USD","base_currency_id":"BTC","fcm_trading_session_details":null,"mid_market_price":"","alias":"","alias_to":["BTC-USDC"],"base_display_symbol":"BTC","quote_display_symbol":"USD","view_only":false,"price_increment":"0.01","display_name":"BTC-USD","product_venue":"CBE","approximate_quote_24h_volume":"689005"},
{"product_id":"BTC-USDC","price":"68900.5","volume_24h":"10","status":"online","trading_disabled":false,"is_disabled":false,"cancel_only":false,"product_type":"SPOT","quote_currency_id":"USDC","base_currency_id":"BTC","alias":"BTC-USD","alias_to":[],"product_venue":"CBE","approximate_quote_24h_volume":"689005"},
{"product_id":"BTC-USD-OLD","status":"delisted","trading_disabled":true,"is_disabled":true,"product_type":"SPOT","quote_currency_id":"USD","base_currency_id":"BTC","alias":"","product_venue":"CBE","approximate_quote_24h_volume":"0"},
{"product_id":"ETH-BTC","price":"0.05","volume_24h":"100","status":"offline","trading_disabled":false,"is_disabled":false,"product_type":"SPOT","quote_currency_id":"BTC","base_currency_id":"ETH","alias":"","product_venue":"CBE","approximate_quote_24h_volume":""},
{"product_id":"SOL-USD","status":"online","trading_disabled":false,"is_disabled":false,"product_type":"SPOT","quote_currency_id":"USD","base_currency_id":"SOL","alias":"","product_venue":"CBE","approximate_quote_24h_volume":"5"},
{"product_id":"SOL-USD-AUCTION","status":"online","trading_disabled":false,"is_disabled":false,"auction_mode":true,"product_type":"SPOT","quote_currency_id":"USD","base_currency_id":"SOL","alias":"","product_venue":"CBE","approximate_quote_24h_volume":"1"},
{"product_id":"BIT-28JUN24-CDE","status":"online","trading_disabled":false,"is_disabled":false,"product_type":"FUTURE","quote_currency_id":"USD","base_currency_id":"BIT","alias":"","product_venue":"FCM","approximate_quote_24h_volume":"9"}
],"num_products":7}"#;

#[test]
fn discovery_maps_from_the_product_list() {
    let list = Coinbase.parse_instruments(PRODUCTS).expect("parses");
    let got: Vec<(&str, &str, bool)> = list
        .iter()
        .map(|i| (i.native.as_str(), i.symbol.as_str(), i.trading))
        .collect();
    // BTC-USDC is an alias of BTC-USD; SOL-USD collides with an auction product (both
    // refused); the future is not spot; ETH-BTC is listed but offline; BTC-USD-OLD maps to
    // BTC-USD too but is delisted, so it does not collide with the live BTC-USD.
    assert_eq!(
        got,
        vec![
            ("BTC-USD", "BTC-USD", true),
            ("BTC-USD-OLD", "BTC-USD", false),
            ("ETH-BTC", "ETH-BTC", false)
        ]
    );
    let volumes = Coinbase.parse_volumes(PRODUCTS).expect("parses");
    assert_eq!(volumes.get("BTC-USD"), Some(&689_005.0));
    assert_eq!(
        volumes.get("ETH-BTC"),
        Some(&5.0),
        "volume_24h x price without the quote volume"
    );
    assert_eq!(volumes.get("SOL-USD"), Some(&5.0));
    // Error bodies are refused clearly.
    for body in [
        r#"{"error":"NOT_FOUND","code":5,"message":"product not found","details":[]}"#,
        r#"{"error":"unknown","error_details":"internal","message":"internal"}"#,
    ] {
        assert_eq!(
            Coinbase.parse_instruments(body).map_err(|e| e.label()),
            Err("exchange_error"),
            "{body}"
        );
        assert_eq!(
            Coinbase.parse_volumes(body).map_err(|e| e.label()),
            Err("exchange_error")
        );
    }
    assert_eq!(
        Coinbase.parse_instruments("{}").map_err(|e| e.label()),
        Err("malformed")
    );
    assert_eq!(
        Coinbase.parse_instruments("[").map_err(|e| e.label()),
        Err("malformed")
    );
}

#[test]
fn the_adapter_describes_coinbase() {
    assert_eq!(Coinbase.id(), ExchangeId::Coinbase);
    assert_eq!(
        Coinbase.default_ws_url(),
        "wss://advanced-trade-ws.coinbase.com"
    );
    assert_eq!(Coinbase.keepalive_every(), None);
    assert!(
        Coinbase
            .instruments_path()
            .starts_with("/api/v3/brokerage/market/products")
    );
}

/// A level2 snapshot of `product` with these bids and asks (price, size), best first as
/// Coinbase sends them.
fn snapshot_of(product: &str, bids: &[(String, &str)], asks: &[(String, &str)]) -> String {
    let levels: Vec<String> = bids
        .iter()
        .map(|(p, q)| ("bid", p, q))
        .chain(asks.iter().map(|(p, q)| ("offer", p, q)))
        .map(|(side, px, qty)| {
            format!(
                r#"{{"side":"{side}","event_time":"1970-01-01T00:00:00Z","price_level":"{px}","new_quantity":"{qty}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,"events":[{{"type":"snapshot","product_id":"{product}","updates":[{}]}}]}}"#,
        levels.join(",")
    )
}

#[test]
fn levels_beyond_a_cut_are_ignored_and_a_cut_side_that_runs_out_resyncs() {
    let mut s = subscribed();
    // Bids 0.1 .. 100.5: the five worst (0.1 .. 0.5) are dropped, 0.5 is the boundary.
    let bids: Vec<(String, &str)> = (1..=MAX_LEVELS_PER_SIDE + 5)
        .rev()
        .map(|k| (format!("{}.{}", k / 10, k % 10), "1"))
        .collect();
    let (r, out) = parse_with(
        &mut s,
        &snapshot_of("BTC-USD", &bids, &[("1000".into(), "1")]),
    );
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(top(&out), (100.5, 1.0, 1000.0, 1.0));
    // The best bid goes: the side has fewer levels than the bound now.
    let (_, out) = parse_with(&mut s, &update(1, &[("bid", "100.5", "0")]));
    assert_eq!(top(&out).0, 100.4);
    // An update beyond the boundary (0.4 was dropped) is not taken: the levels between it
    // and the boundary are unknown.
    let (r, out) = parse_with(&mut s, &update(2, &[("bid", "0.4", "3")]));
    assert_eq!((r, out.len()), (Ok(Control::Data), 0));
    let book = s.books.get(&SymbolId(0)).expect("a book");
    assert!(!book.bids.contains_key(&0.4f64.to_bits()), "0.4 was taken");
    // Every kept bid goes: the true best is 0.5 (dropped), not 0.4. Resync.
    let deletes: Vec<String> = (6..MAX_LEVELS_PER_SIDE + 5)
        .map(|k| format!("{}.{}", k / 10, k % 10))
        .collect();
    let levels: Vec<(&str, &str, &str)> =
        deletes.iter().map(|p| ("bid", p.as_str(), "0")).collect();
    let (r, out) = parse_with(&mut s, &update(3, &levels));
    assert!(matches!(r, Ok(Control::Rotate(_))), "{r:?} {out:?}");
    assert!(
        out.is_empty(),
        "no quote of a best bid below the boundary: {out:?}"
    );
}

#[test]
fn a_multi_megabyte_snapshot_is_read_bounded_with_the_right_top() {
    let mut s = subscribed();
    // 20 000 levels a side, as deep as Coinbase's BTC-USD book: well over 1 MiB.
    let n = 20_000;
    let bids: Vec<(String, &str)> = (0..n)
        .map(|k| {
            (
                format!("{}.{:02}", 50_000 - k / 100 - 1, 99 - k % 100),
                "0.5",
            )
        })
        .collect();
    let asks: Vec<(String, &str)> = (0..n)
        .map(|k| (format!("{}.{:02}", 50_000 + k / 100, k % 100 + 1), "0.25"))
        .collect();
    let snap = snapshot_of("BTC-USD", &bids, &asks);
    assert!(snap.len() > 2 << 20, "{} bytes", snap.len());
    assert!(
        l2_layout(&snap, &mut Vec::new()).is_some(),
        "the fast layout"
    );
    let (r, out) = parse_with(&mut s, &snap);
    assert_eq!(r, Ok(Control::Data));
    assert_eq!(top(&out), (49_999.99, 0.5, 50_000.01, 0.25));
    let book = s.books.get(&SymbolId(0)).expect("a book");
    assert_eq!(
        (book.bids.len(), book.asks.len()),
        (MAX_LEVELS_PER_SIDE, MAX_LEVELS_PER_SIDE)
    );
    assert!(Coinbase.limits().max_message_bytes > snap.len());
    // The buffer the snapshot grew is given back at the next frame, not held for good.
    assert!(s.scratch.capacity() > SCRATCH_KEPT_LEVELS);
    let (r, _) = parse_with(&mut s, &update(1, &[("bid", "49999.99", "0.7")]));
    assert_eq!(r, Ok(Control::Data));
    assert!(s.scratch.capacity() <= SCRATCH_KEPT_LEVELS);
}

#[test]
fn books_exist_only_for_products_this_connection_subscribed() {
    let mut s = CoinbaseSession::default();
    s.subscribe(&["BTC-USD".to_owned()], &mut 1);
    let (r, out) = parse_with(&mut s, &SNAPSHOT.replace("BTC-USD", "ETH-USD"));
    assert_eq!(r.map_err(|e| e.label()), Err("malformed"));
    assert!(out.is_empty());
    assert!(s.books.is_empty(), "no book for ETH-USD");
    assert_eq!(
        parse_with(
            &mut s,
            &update(1, &[("bid", "1", "1")]).replace("BTC-USD", "ETH-USD")
        )
        .0
        .map_err(|e| e.label()),
        Err("malformed")
    );
    assert!(s.books.is_empty());
}

#[test]
fn at_most_fifteen_products_a_connection_and_a_request() {
    let limits = Coinbase.limits();
    assert!(limits.symbols_per_connection <= 15, "{limits:?}");
    const { assert!(PRODUCTS_PER_REQUEST <= 15) };
    assert_eq!(limits.max_message_bytes, 64 << 20);
    let natives: Vec<String> = (0..limits.symbols_per_connection)
        .map(|i| format!("C{i}-USD"))
        .collect();
    let requests = CoinbaseSession::default().subscribe(&natives, &mut 1);
    assert!(requests.iter().all(|r| r.natives.len() <= 15));
}

#[test]
fn too_many_l2_streams_refuses_the_outstanding_level2_request_and_only_it_is_retried() {
    let mut s = CoinbaseSession::default();
    let natives = ["BTC-USD".to_owned(), "ETH-USD".to_owned()];
    let mut next_id = 1;
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), 3);
    let (hb, l2, trades) = (requests[0].id, requests[1].id, requests[2].id);
    let (r, _) = parse_with(
        &mut s,
        r#"{"type":"error","message":"too many L2 streams requested in a single session"}"#,
    );
    assert_eq!(
        r,
        Ok(Control::Refused {
            request: Some(l2),
            reason: TOO_MANY_L2_STREAMS.into()
        })
    );
    // The retry (the same products) asks for level2 again, not market_trades.
    let again = s.subscribe(&natives, &mut next_id);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].natives, natives);
    let Outgoing::Text(t) = &again[0].frame else {
        panic!("text")
    };
    assert!(t.contains(r#""channel":"level2""#), "{t}");
    // The other requests are still matched; the refused one is not confirmed.
    let all = r#"{"channel":"subscriptions","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,"events":[{"subscriptions":{"heartbeats":["heartbeats"],"level2":["BTC-USD","ETH-USD"],"market_trades":["BTC-USD","ETH-USD"]}}]}"#;
    assert_eq!(parse_with(&mut s, all).0, Ok(Control::Subscribed(hb)));
    let hb_frame = r#"{"channel":"heartbeats","client_id":"","timestamp":"2023-06-23T20:31:26.122969572Z","sequence_num":1,"events":[{"current_time":"x","heartbeat_counter":1}]}"#;
    assert_eq!(
        parse_with(&mut s, hb_frame).0,
        Ok(Control::Subscribed(trades))
    );
    assert_eq!(
        parse_with(
            &mut s,
            &hb_frame.replace(r#""sequence_num":1"#, r#""sequence_num":2"#)
        )
        .0,
        Ok(Control::Subscribed(again[0].id))
    );
    // An unanswered market_trades request, forgotten: its retry is market_trades only.
    let mut s = CoinbaseSession::default();
    let requests = s.subscribe(&natives, &mut next_id);
    s.forget(requests[2].id);
    let again = s.subscribe(&natives, &mut next_id);
    assert_eq!(again.len(), 1, "{again:?}");
    let Outgoing::Text(t) = &again[0].frame else {
        panic!("text")
    };
    assert!(t.contains(r#""channel":"market_trades""#), "{t}");
    // Other errors still name no request.
    assert!(matches!(
        parse_with(
            &mut s,
            r#"{"type":"error","message":"failure to subscribe"}"#
        )
        .0,
        Ok(Control::Refused { request: None, .. })
    ));
}
