//! BingX session tests on frames shaped as BingX documents them (gzip binary), and as ccxt
//! captured them where the docs are silent.

use std::io::Write;

use super::*;
use crate::exchange::{Control, Event, ParseError, SymbolId};

fn symbols() -> SymbolTable {
    SymbolTable::from_pairs(ExchangeId::Bingx, [("BTC-USDT", "BTC-USDT")])
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).expect("gzip");
    e.finish().expect("gzip")
}

fn parse_with(session: &mut BingxSession, text: &str) -> (Result<Control, ParseError>, Output) {
    let mut out = Output::default();
    let bytes = gzip(text);
    let r = session.on_frame(Frame::Binary(&bytes), &symbols(), 7, &mut out);
    (r, out)
}

fn parse(text: &str) -> (Result<Control, ParseError>, Vec<Event>) {
    let (r, out) = parse_with(&mut BingxSession::default(), text);
    (r, out.events)
}

/// The bookTicker push in the layout we rely on (keys in BingX's alphabetical order).
const BOOK_TICKER: &str = r#"{"code":0,"data":{"A":"0.23","B":"1.5","E":1706498923556,"T":1706498923550,"a":"42437.8","b":"42437.1","e":"bookTicker","s":"BTC-USDT","u":13565694850},"dataType":"BTC-USDT@bookTicker","success":true,"timestamp":1706498923560}"#;

#[test]
fn book_ticker_in_the_layout_relied_on() {
    assert!(super::book_ticker_layout(BOOK_TICKER).is_some());
    let (r, out) = parse(BOOK_TICKER);
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote: {out:?}")
    };
    assert_eq!(t.symbol, SymbolId(0));
    assert_eq!(
        (t.bid_px, t.bid_qty, t.ask_px, t.ask_qty),
        (42437.1, 1.5, 42437.8, 0.23)
    );
    assert_eq!(
        (t.exchange_ts_ns, t.recv_ts_ns, t.seq),
        (1_706_498_923_556_000_000, 7, 13_565_694_850)
    );
}

#[test]
fn the_exact_layout_and_the_general_parser_agree() {
    let frames = [
        BOOK_TICKER,
        // Reordered and spaced, as the brief's plausible shape: serde reads it.
        r#"{"code": 0, "dataType": "BTC-USDT@bookTicker", "data": {"e": "bookTicker", "u": 13565694850, "E": 1706498923556, "T": 1706498923550, "s": "BTC-USDT", "b": "42437.1", "B": "1.5", "a": "42437.8", "A": "0.23"}, "timestamp": 1706498923560}"#,
    ];
    let quotes: Vec<Event> = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            assert_eq!(
                super::book_ticker_layout(frame).is_some(),
                i == 0,
                "{frame}"
            );
            let (r, mut out) = parse(frame);
            assert_eq!(r, Ok(Control::Data), "{frame}");
            assert_eq!(out.len(), 1, "{frame}");
            out.remove(0)
        })
        .collect();
    assert_eq!(quotes[0], quotes[1]);
    // The optional pieces of the fast path: no `T`, no `u`, no `success`, no `timestamp`.
    let lean = r#"{"code":0,"data":{"A":"0.23","B":"1.5","E":1706498923556,"a":"42437.8","b":"42437.1","e":"bookTicker","s":"BTC-USDT"},"dataType":"BTC-USDT@bookTicker"}"#;
    assert!(super::book_ticker_layout(lean).is_some());
    let (r, out) = parse(lean);
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote")
    };
    assert_eq!((t.seq, t.bid_px), (0, 42437.1), "no update id: not gated");
}

#[test]
fn a_minimal_book_ticker_with_numbers_takes_the_envelope_time() {
    // Only what BingX.Net reads (e, E, s, b, B, a, A), here without E, prices as numbers.
    let (r, out) = parse(
        r#"{"code":0,"dataType":"BTC-USDT@bookTicker","data":{"e":"bookTicker","s":"BTC-USDT","b":42437.1,"B":1.5,"a":42437.8,"A":0.23},"timestamp":1706498923560}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Quote(t) = &out[0] else {
        panic!("not a quote")
    };
    assert_eq!(
        (t.bid_px, t.ask_px, t.exchange_ts_ns),
        (42437.1, 42437.8, 1_706_498_923_560_000_000)
    );
    let (r, _) = parse(
        r#"{"code":0,"dataType":"BTC-USDT@bookTicker","data":{"b":"1","B":"1","a":"2","A":"1"}}"#,
    );
    assert!(matches!(r, Err(ParseError::Malformed(_))), "{r:?}");
}

#[test]
fn book_tickers_are_validated_and_sequence_gated() {
    let (r, _) = parse(&BOOK_TICKER.replace(r#""b":"42437.1""#, r#""b":"42438.1""#));
    assert_eq!(r.map_err(|e| e.label()), Err("crossed"));
    let (r, _) = parse(&BOOK_TICKER.replace(r#""a":"42437.8""#, r#""a":"abc""#));
    assert!(matches!(r, Err(ParseError::BadNumber(_))), "{r:?}");
    let (r, _) = parse(&BOOK_TICKER.replace("BTC-USDT", "ETH-USDT"));
    assert!(matches!(r, Err(ParseError::UnknownSymbol(_))), "{r:?}");
    let mut s = BingxSession::default();
    assert_eq!(parse_with(&mut s, BOOK_TICKER).0, Ok(Control::Data));
    let (r, out) = parse_with(&mut s, BOOK_TICKER);
    assert!(matches!(r, Err(ParseError::OutOfOrder { .. })), "{r:?}");
    assert!(out.events.is_empty());
}

#[test]
fn trade_as_documented_without_a_side() {
    // The docs' own example: no `code`, no `m`.
    let (r, out) = parse(
        r#"{"data":{"E":1649832413551,"T":1649832413512,"e":"trade","p":"40125.48","q":"0.007146","s":"BTC-USDT","t":"33685717"},"dataType":"BTC-USDT@trade"}"#,
    );
    assert_eq!(r, Ok(Control::Data));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade: {out:?}")
    };
    assert_eq!(
        (t.price, t.qty, t.trade_id.as_str(), t.side),
        (40125.48, 0.007146, "33685717", Side::Unspecified)
    );
    assert_eq!(
        t.exchange_ts_ns, 1_649_832_413_512_000_000,
        "T, the trade time"
    );
}

#[test]
fn trade_as_captured_with_the_maker_flag() {
    // ccxt's capture: `m` true = the buyer is the maker = the taker sold.
    let frame = r#"{"code":0,"data":{"E":1690214529432,"T":1690214529386,"e":"trade","m":true,"p":"29110.19","q":"0.1868","s":"BTC-USDT","t":"57903921"},"dataType":"BTC-USDT@trade","success":true}"#;
    let (r, out) = parse(frame);
    assert_eq!(r, Ok(Control::Data));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade")
    };
    assert_eq!((t.side, t.trade_id.as_str()), (Side::Sell, "57903921"));
    let (_, out) = parse(&frame.replace(r#""m":true"#, r#""m":false"#));
    let Event::Print(t) = &out[0] else {
        panic!("not a trade")
    };
    assert_eq!(t.side, Side::Buy);
    // A numeric trade id is taken too; a trade without an id or a price is not.
    let (r, out) = parse(&frame.replace(r#""t":"57903921""#, r#""t":57903921"#));
    assert_eq!(r, Ok(Control::Data));
    assert!(matches!(&out[0], Event::Print(t) if t.trade_id == "57903921"));
    assert!(parse(&frame.replace(r#","t":"57903921""#, "")).0.is_err());
    assert!(
        parse(&frame.replace(r#""p":"29110.19""#, r#""p":"0""#))
            .0
            .is_err()
    );
}

#[test]
fn pings_are_answered_with_the_same_id_and_time() {
    let mut s = BingxSession::default();
    let (r, out) = parse_with(
        &mut s,
        r#"{"ping":"2177c68e4d0e45679965f482929b59c2","time":"2022-06-07T16:27:36.323+0800"}"#,
    );
    assert_eq!(r, Ok(Control::KeepAlive));
    assert_eq!(
        out.replies,
        vec![Outgoing::Text(
            r#"{"pong":"2177c68e4d0e45679965f482929b59c2","time":"2022-06-07T16:27:36.323+0800"}"#
                .into()
        )]
    );
    assert!(out.events.is_empty());
    // The plain-text heartbeat of BingX's other sockets.
    let (r, out) = parse_with(&mut s, "Ping");
    assert_eq!(r, Ok(Control::KeepAlive));
    assert_eq!(out.replies, vec![Outgoing::Text("Pong".into())]);
    let mut out = Output::default();
    let r = s.on_frame(Frame::Text("Ping"), &symbols(), 1, &mut out);
    assert_eq!(r, Ok(Control::KeepAlive), "even uncompressed");
    assert_eq!(out.replies, vec![Outgoing::Text("Pong".into())]);
    assert_eq!(
        s.keepalive(),
        None,
        "the client sends no keep-alive of its own"
    );
    assert_eq!(Bingx.keepalive_every(), None);
}

fn frame_json(r: &Request) -> serde_json::Value {
    match &r.frame {
        Outgoing::Text(t) => serde_json::from_str(t).expect("JSON"),
        Outgoing::Binary(_) => panic!("text expected"),
    }
}

#[test]
fn one_request_per_data_type_acked_in_every_documented_form() {
    let mut s = BingxSession::default();
    let mut next_id = 4;
    let requests = s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(requests.len(), 2);
    assert_eq!(next_id, 6);
    assert_eq!(
        frame_json(&requests[0]),
        serde_json::json!({"id":"4","reqType":"sub","dataType":"BTC-USDT@bookTicker"})
    );
    assert_eq!(
        frame_json(&requests[1]),
        serde_json::json!({"id":"5","reqType":"sub","dataType":"BTC-USDT@trade"})
    );
    assert!(requests.iter().all(|r| r.natives == ["BTC-USDT"]));
    // The docs' ack, and the live one with `dataType`/`data`.
    let (r, out) = parse_with(&mut s, r#"{"id":"4","code":0,"msg":""}"#);
    assert_eq!(r, Ok(Control::Subscribed(4)));
    assert!(out.replies.is_empty());
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"id":"5","code":0,"msg":"","dataType":"","data":null}"#
        )
        .0,
        Ok(Control::Subscribed(5))
    );
    // Confirmed streams are not asked for again.
    assert!(
        s.subscribe(&["BTC-USDT".to_owned()], &mut next_id)
            .is_empty()
    );
    // The other live form, and an ack nobody waits for.
    let mut s = BingxSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(
        parse_with(
            &mut s,
            r#"{"code":0,"id":"1","msg":"SUCCESS","timestamp":1759225965363}"#
        )
        .0,
        Ok(Control::Subscribed(1))
    );
    assert_eq!(
        parse_with(&mut s, r#"{"id":"1","code":0,"msg":""}"#).0,
        Ok(Control::Ignored),
        "a repeat"
    );
    assert_eq!(
        parse_with(&mut s, r#"{"id":"d83b78ce-98be-4dc2","code":0,"msg":""}"#).0,
        Ok(Control::Ignored),
        "not one of ours"
    );
}

#[test]
fn refusals_are_reported_with_or_without_an_id() {
    let mut s = BingxSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    let (r, _) = parse_with(
        &mut s,
        r#"{"code":100400,"id":"2","msg":"dataType not supported","timestamp":1696245842307}"#,
    );
    assert_eq!(
        r,
        Ok(Control::Refused {
            request: Some(2),
            reason: "100400: dataType not supported".into()
        })
    );
    let (r, _) = parse_with(
        &mut s,
        r#"{"code":100410,"msg":"FREQUENCY_LIMIT","timestamp":1696245808833}"#,
    );
    assert_eq!(
        r,
        Ok(Control::Refused {
            request: None,
            reason: "100410: FREQUENCY_LIMIT".into()
        })
    );
    // The refused stream is asked for again, the other one still waits for its ack.
    let again = s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(again.len(), 2);
    assert_eq!(
        parse_with(&mut s, r#"{"id":"1","code":0,"msg":""}"#).0,
        Ok(Control::Subscribed(1))
    );
    // Forgotten requests are no longer matched.
    s.forget(3);
    assert_eq!(
        parse_with(&mut s, r#"{"id":"3","code":0,"msg":""}"#).0,
        Ok(Control::Ignored)
    );
    // A push carrying an error code is an error, not data.
    let (r, out) = parse_with(
        &mut s,
        r#"{"code":100500,"dataType":"BTC-USDT@trade","msg":"INTERNAL_SERVER_ERROR"}"#,
    );
    assert!(matches!(r, Err(ParseError::Exchange(_))), "{r:?}");
    assert!(out.events.is_empty());
}

#[test]
fn a_refusal_naming_its_data_type_refuses_the_request_of_its_id() {
    let mut s = BingxSession::default();
    let mut next_id = 1;
    s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    let (r, out) = parse_with(
        &mut s,
        r#"{"id":"2","code":100400,"msg":"dataType not supported","dataType":"BTC-USDT@trade","timestamp":1696245842307}"#,
    );
    assert_eq!(
        r,
        Ok(Control::Refused {
            request: Some(2),
            reason: "100400 on BTC-USDT@trade: dataType not supported".into()
        })
    );
    assert!(out.events.is_empty());
    // The refused request no longer waits: a late ack for it confirms nothing, and a retry
    // asks for its stream again.
    assert_eq!(
        parse_with(&mut s, r#"{"id":"2","code":0,"msg":""}"#).0,
        Ok(Control::Ignored)
    );
    let again = s.subscribe(&["BTC-USDT".to_owned()], &mut next_id);
    assert_eq!(again.len(), 2, "request 1 has no ack yet either");
}

#[test]
fn a_ping_with_a_numeric_time_is_answered_with_the_same_number() {
    let mut s = BingxSession::default();
    for (ping, pong) in [
        (
            r#"{"ping":"2177c68e4d0e45679965f482929b59c2","time":1654590456323}"#,
            r#"{"pong":"2177c68e4d0e45679965f482929b59c2","time":1654590456323}"#,
        ),
        // Digit for digit, not re-formatted.
        (
            r#"{"ping":"a","time":1654590456.3230}"#,
            r#"{"pong":"a","time":1654590456.3230}"#,
        ),
        (
            r#"{"ping":"b","time":"1654590456323"}"#,
            r#"{"pong":"b","time":"1654590456323"}"#,
        ),
        (r#"{"ping":"c"}"#, r#"{"pong":"c"}"#),
    ] {
        let (r, out) = parse_with(&mut s, ping);
        assert_eq!(r, Ok(Control::KeepAlive), "{ping}");
        assert_eq!(out.replies, vec![Outgoing::Text(pong.into())], "{ping}");
    }
}

#[test]
fn subscribe_batches_one_data_type_per_request_at_the_connection_cap() {
    let natives: Vec<String> = (0..Bingx.limits().symbols_per_connection)
        .map(|i| format!("C{i}-USDT"))
        .collect();
    let mut s = BingxSession::default();
    let mut next_id = 0;
    let requests = s.subscribe(&natives, &mut next_id);
    assert_eq!(requests.len(), natives.len() * 2);
    let ids: HashSet<u64> = requests.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), requests.len(), "ids are unique");
    for r in &requests {
        assert_eq!(r.natives.len(), 1);
        let v = frame_json(r);
        assert!(v["dataType"].is_string(), "one dataType per request: {v}");
    }
    assert!(Bingx.limits().subscribe_pacing > Duration::ZERO);
}

#[test]
fn frames_that_are_not_gzip_json_are_rejected() {
    let mut out = Output::default();
    let mut s = BingxSession::default();
    let r = s.on_frame(Frame::Text(BOOK_TICKER), &symbols(), 1, &mut out);
    assert!(matches!(r, Err(ParseError::Malformed(_))), "{r:?}");
    let r = s.on_frame(Frame::Binary(b"\x1f\x8b not gzip"), &symbols(), 1, &mut out);
    assert!(matches!(r, Err(ParseError::Decompress(_))), "{r:?}");
    let (r, _) = parse("not json");
    assert!(matches!(r, Err(ParseError::Malformed(_))), "{r:?}");
    // A stream we did not ask for is understood and ignored.
    let (r, _) = parse(r#"{"code":0,"dataType":"BTC-USDT@kline_1min","data":{}}"#);
    assert_eq!(r, Ok(Control::Ignored));
    // Pings and pongs never surface as errors; a frame with no code at all is ignored.
    assert_eq!(parse(r#"{"msg":""}"#).0, Ok(Control::Ignored));
}

#[test]
fn instruments_from_the_symbol_list() {
    let body = r#"{"code":0,"msg":"","debugMsg":"","data":{"symbols":[
        {"symbol":"BTC-USDT","minQty":0.0001,"maxQty":100,"minNotional":5,"maxNotional":20000,"status":1,"tickSize":0.01,"stepSize":0.000001,"apiStateSell":true,"apiStateBuy":true,"timeOnline":1680000000000},
        {"symbol":"ETH-USDT","status":"1"},
        {"symbol":"OLD-USDT","status":25},
        {"symbol":"NEW-USDT","status":5},
        {"symbol":"btc-usdc","status":1},
        {"symbol":"NODASH","status":1},
        {"symbol":"BTC-USDT","status":0}
    ]}}"#;
    let list = Bingx.parse_instruments(body).expect("parses");
    let got: Vec<(&str, &str, bool)> = list
        .iter()
        .map(|i| (i.native.as_str(), i.symbol.as_str(), i.trading))
        .collect();
    assert_eq!(
        got,
        vec![
            ("BTC-USDT", "BTC-USDT", true),
            ("ETH-USDT", "ETH-USDT", true),
            ("OLD-USDT", "OLD-USDT", false),
            ("NEW-USDT", "NEW-USDT", false),
        ],
        "lower case and dashless names are not BingX symbols; a repeat is dropped"
    );
    assert!(list.iter().all(|i| i.volume_key.is_none()));
}

#[test]
fn volumes_from_the_24h_tickers() {
    let body = r#"{"code":0,"msg":"","data":[
        {"symbol":"BTC-USDT","openPrice":42548.95,"highPrice":42696.1,"lowPrice":41621.29,"lastPrice":42176.83,"priceChange":-372.12,"priceChangePercent":"-0.87%","volume":4943.33,"quoteVolume":208842236.5,"openTime":1706420395472,"closeTime":1706506795472,"askPrice":42177.23,"askQty":5.14484,"bidPrice":42176.38,"bidQty":5.36117},
        {"symbol":"ETH-USDT","quoteVolume":"1234.5"},
        {"symbol":"NEW-USDT"}
    ],"timestamp":1706506795473}"#;
    let v = Bingx.parse_volumes(body).expect("parses");
    assert_eq!(v.get("BTC-USDT"), Some(&208_842_236.5));
    assert_eq!(v.get("ETH-USDT"), Some(&1234.5));
    assert_eq!(v.len(), 2);
}

#[test]
fn rest_error_bodies_are_rejected_clearly() {
    let missing_timestamp =
        r#"{"code":100400,"msg":"timestamp is required","timestamp":1706506795473}"#;
    for r in [
        Bingx.parse_volumes(missing_timestamp).map(|_| ()),
        Bingx.parse_instruments(missing_timestamp).map(|_| ()),
        Bingx
            .parse_instruments(r#"{"code":100410,"msg":"FREQUENCY_LIMIT","data":{}}"#)
            .map(|_| ()),
    ] {
        let Err(ParseError::Exchange(e)) = r else {
            panic!("an exchange error: {r:?}")
        };
        assert!(e.starts_with("1004"), "{e}");
    }
    assert!(Bingx.parse_instruments("{}").is_err());
    assert!(Bingx.parse_instruments(r#"{"code":0,"msg":""}"#).is_err());
    assert!(Bingx.parse_volumes("[]").is_err());
}

#[test]
fn discovery_carries_a_timestamp() {
    assert_eq!(
        Bingx.discovery_query(1_706_506_795_473).as_deref(),
        Some("timestamp=1706506795473")
    );
    assert_eq!(Bingx.instruments_path(), "/openApi/spot/v1/common/symbols");
    assert_eq!(Bingx.volumes_path(), "/openApi/spot/v1/ticker/24hr");
    assert_eq!(Bingx.default_ws_url(), "wss://open-api-ws.bingx.com/market");
    assert_eq!(Bingx.default_rest_url(), "https://open-api.bingx.com");
}

/// Discovery with volume bounds against the simulated BingX: both REST calls carry the
/// `timestamp` the 24 h tickers require (the simulator refuses them without one, as BingX
/// does), and the volumes join the symbol list.
#[tokio::test]
async fn discovery_with_volume_bounds_against_the_simulator() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = tokio_util::sync::CancellationToken::new();
    let config = spreadagg_simulate::SimConfig {
        exchanges: vec![ExchangeId::Bingx],
        ..spreadagg_simulate::SimConfig::default()
    };
    let sim = spreadagg_simulate::Simulator::start(config, stop.clone())
        .await
        .expect("simulator starts");
    let endpoint = sim.endpoint(ExchangeId::Bingx).expect("simulated").clone();
    let wanted = crate::IngestConfig {
        exchange: Some(ExchangeId::Bingx),
        min_volume: Some(1.0),
        ..crate::IngestConfig::default()
    };
    let selection =
        crate::discovery::discover(&Bingx, &reqwest::Client::new(), &endpoint.rest_url, &wanted)
            .await
            .expect("discovery against the simulated BingX");
    let btc: Symbol = "BTC-USDT".parse().expect("symbol");
    assert_eq!(
        selection.get(&btc).map(|i| i.native.as_str()),
        Some("BTC-USDT"),
        "{selection:?}"
    );
    stop.cancel();
}
