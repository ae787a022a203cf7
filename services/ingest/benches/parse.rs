//! Frame parsing per exchange: each adapter's session turning a documented frame into a
//! validated event (interned symbol, numbers parsed, quote checked), against the baseline of
//! parsing the same frame into a generic `serde_json::Value` and doing nothing else (for
//! MEXC's binary protobuf frames: decoding them with prost and doing nothing else).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message as _;
use spreadagg_ingest::exchange::binance::Binance;
use spreadagg_ingest::exchange::bingx::Bingx;
use spreadagg_ingest::exchange::bitget::Bitget;
use spreadagg_ingest::exchange::bybit::Bybit;
use spreadagg_ingest::exchange::coinbase::Coinbase;
use spreadagg_ingest::exchange::gateio::Gateio;
use spreadagg_ingest::exchange::htx::Htx;
use spreadagg_ingest::exchange::kraken::Kraken;
use spreadagg_ingest::exchange::kucoin::Kucoin;
use spreadagg_ingest::exchange::mexc::{Mexc, pb};
use spreadagg_ingest::exchange::okx::Okx;
use spreadagg_ingest::exchange::{Adapter, Frame, Output, SymbolTable};
use std::time::{Duration, Instant};

const BINANCE_BOOK_TICKER: &str = r#"{"u":123456,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
const OKX_BBO: &str = r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#;

const BYBIT_ORDERBOOK_1: &str = r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":123456,"seq":987654321},"cts":1709891678998}"#;
const KUCOIN_TICKER: &str = r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"123456","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416}}"#;
const GATEIO_BOOK_TICKER: &str = r#"{"time":1606293275,"time_ms":1606293275723,"channel":"spot.book_ticker","event":"update","result":{"t":1606293275123,"u":123456,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504","a":"19179.38","A":"0.09"}}"#;
const HTX_BBO: &str = r#"{"ch":"market.btcusdt.bbo","ts":1671941599613,"tick":{"seqId":123456,"ask":16829.51,"askSize":0.707776,"bid":16829.5,"bidSize":1.685945,"quoteTime":1671941599612,"symbol":"btcusdt"}}"#;

const BINGX_BOOK_TICKER: &str = r#"{"code":0,"data":{"A":"0.23","B":"1.5","E":1706498923556,"T":1706498923550,"a":"42437.8","b":"42437.1","e":"bookTicker","s":"BTC-USDT","u":123456},"dataType":"BTC-USDT@bookTicker","success":true,"timestamp":1706498923560}"#;

const KRAKEN_TICKER: &str = r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":105944.2,"bid_qty":2.5,"ask":105944.3,"ask_qty":3.2,"last":105899.4,"volume":163.28908096,"vwap":105904.39279,"low":104711.0,"high":106613.1,"change":250.0,"change_pct":0.24,"timestamp":"2022-12-25T09:30:59.123456Z"}]}"#;

/// The update id in the sample frames above, replaced per frame.
const SEQ: &str = "123456";
const SEQ_BASE: u64 = 1_000_000;
const FRAMES: u64 = 10_000;

/// Times `iters` frames through fresh sessions of `adapter`: blocks of rising update ids, each
/// block parsed by a new session (made untimed), so the sequence gate admits every frame.
fn time_sessions<F: AsRef<[u8]>>(
    adapter: &dyn Adapter,
    symbols: &SymbolTable,
    frames: &[F],
    frame: fn(&[u8]) -> Frame<'_>,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut out = Output::default();
    while left > 0 {
        let n = left.min(frames.len() as u64);
        let mut session = adapter.session();
        let started = Instant::now();
        for f in &frames[..n as usize] {
            out.clear();
            let r = session.on_frame(frame(black_box(f.as_ref())), symbols, 1, &mut out);
            assert!(r.is_ok(), "{r:?}");
            black_box(out.events.len());
        }
        total += started.elapsed();
        left -= n;
    }
    total
}

/// A binary frame.
fn binary(b: &[u8]) -> Frame<'_> {
    Frame::Binary(b)
}

/// A text frame (the bytes are a `String`'s).
fn text(b: &[u8]) -> Frame<'_> {
    Frame::Text(std::str::from_utf8(b).unwrap_or_default())
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, &dyn Adapter, &str, &str, &str); 5] = [
        (
            "binance_book_ticker",
            &Binance,
            BINANCE_BOOK_TICKER,
            "BNBUSDT",
            "BNB-USDT",
        ),
        ("okx_bbo_tbt", &Okx, OKX_BBO, "BTC-USDT", "BTC-USDT"),
        (
            "bybit_orderbook_1",
            &Bybit,
            BYBIT_ORDERBOOK_1,
            "BTCUSDT",
            "BTC-USDT",
        ),
        (
            "kucoin_ticker",
            &Kucoin,
            KUCOIN_TICKER,
            "BTC-USDT",
            "BTC-USDT",
        ),
        (
            "gateio_book_ticker",
            &Gateio,
            GATEIO_BOOK_TICKER,
            "BTC_USDT",
            "BTC-USDT",
        ),
    ];
    for (name, adapter, frame, native, canonical) in cases {
        let symbols = SymbolTable::from_pairs(adapter.id(), [(native, canonical)]);
        // Update ids must grow, or the session's sequence gate drops the repeats: a block of
        // frames with rising ids, each block parsed by a fresh session (set up untimed).
        let frames: Vec<String> = (0..FRAMES)
            .map(|i| frame.replace(SEQ, &(SEQ_BASE + i).to_string()))
            .collect();
        let mut group = c.benchmark_group(name);
        group.bench_function("adapter_parse_to_tick", |b| {
            b.iter_custom(|iters| time_sessions(adapter, &symbols, &frames, text, iters));
        });
        group.bench_function("baseline_serde_json_value", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(serde_json::from_str::<serde_json::Value>(black_box(&frames[i])).ok())
            });
        });
        group.finish();
    }
}

/// MEXC's binary protobuf book ticker, against the baseline of decoding the same bytes with
/// prost and doing nothing else.
fn bench_mexc(c: &mut Criterion) {
    let symbols = SymbolTable::from_pairs(Mexc.id(), [("BTCUSDT", "BTC-USDT")]);
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| {
            pb::Envelope {
                channel: "spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT".into(),
                symbol: Some("BTCUSDT".into()),
                symbol_id: Some("2fb942154ef44a4ab2ef98c8afb6a4a7".into()),
                create_time: Some(1_736_412_092_430),
                send_time: Some(1_736_412_092_433),
                body: Some(pb::envelope::Body::AggreBookTicker(pb::AggreBookTicker {
                    bid_price: "93387.28".into(),
                    bid_quantity: "3.73485".into(),
                    ask_price: "93387.29".into(),
                    ask_quantity: "7.669875".into(),
                    version: (SEQ_BASE + i).to_string(),
                })),
            }
            .encode_to_vec()
        })
        .collect();
    let mut group = c.benchmark_group("mexc_aggre_book_ticker");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| time_sessions(&Mexc, &symbols, &frames, binary, iters));
    });
    group.bench_function("baseline_prost_decode", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(pb::Envelope::decode(black_box(frames[i].as_slice())).ok())
        });
    });
    group.finish();
}

/// HTX's gzip-compressed bbo, against the baseline of decompressing the same bytes and
/// parsing them into a `serde_json::Value`.
fn bench_htx(c: &mut Criterion) {
    use std::io::{Read as _, Write as _};
    let symbols = SymbolTable::from_pairs(Htx.id(), [("btcusdt", "BTC-USDT")]);
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| {
            let text = HTX_BBO.replace(SEQ, &(SEQ_BASE + i).to_string());
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).expect("gzip");
            e.finish().expect("gzip")
        })
        .collect();
    let mut group = c.benchmark_group("htx_bbo_gzip");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| time_sessions(&Htx, &symbols, &frames, binary, iters));
    });
    group.bench_function("baseline_gunzip_serde_json_value", |b| {
        let mut i = 0;
        let mut text = Vec::with_capacity(512);
        b.iter(|| {
            i = (i + 1) % frames.len();
            text.clear();
            let _ = flate2::read::GzDecoder::new(black_box(frames[i].as_slice()))
                .read_to_end(&mut text);
            black_box(serde_json::from_slice::<serde_json::Value>(&text).ok())
        });
    });
    // The strictest baseline: the same reused inflate state and checksum the adapter uses,
    // then a `Value` parse; the ratio to it is the parse alone.
    group.bench_function("baseline_same_inflater_serde_json_value", |b| {
        let mut i = 0;
        let mut text = Vec::with_capacity(512);
        let mut inflater = spreadagg_ingest::codec::Inflater::default();
        b.iter(|| {
            i = (i + 1) % frames.len();
            let _ = inflater.inflate(
                spreadagg_ingest::codec::Compression::Gzip,
                black_box(frames[i].as_slice()),
                spreadagg_ingest::codec::MAX_INFLATED_BYTES,
                &mut text,
            );
            black_box(serde_json::from_slice::<serde_json::Value>(&text).ok())
        });
    });
    group.finish();
}

/// BingX's gzip-compressed bookTicker, against the baselines of decompressing the same bytes
/// and parsing them into a `serde_json::Value` (a fresh decoder, and the adapter's own reused
/// inflate state).
fn bench_bingx(c: &mut Criterion) {
    use std::io::{Read as _, Write as _};
    let symbols = SymbolTable::from_pairs(Bingx.id(), [("BTC-USDT", "BTC-USDT")]);
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| {
            let text = BINGX_BOOK_TICKER.replace(SEQ, &(SEQ_BASE + i).to_string());
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).expect("gzip");
            e.finish().expect("gzip")
        })
        .collect();
    let mut group = c.benchmark_group("bingx_book_ticker_gzip");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| time_sessions(&Bingx, &symbols, &frames, binary, iters));
    });
    group.bench_function("baseline_gunzip_serde_json_value", |b| {
        let mut i = 0;
        let mut text = Vec::with_capacity(512);
        b.iter(|| {
            i = (i + 1) % frames.len();
            text.clear();
            let _ = flate2::read::GzDecoder::new(black_box(frames[i].as_slice()))
                .read_to_end(&mut text);
            black_box(serde_json::from_slice::<serde_json::Value>(&text).ok())
        });
    });
    group.bench_function("baseline_same_inflater_serde_json_value", |b| {
        let mut i = 0;
        let mut text = Vec::with_capacity(512);
        let mut inflater = spreadagg_ingest::codec::Inflater::default();
        b.iter(|| {
            i = (i + 1) % frames.len();
            let _ = inflater.inflate(
                spreadagg_ingest::codec::Compression::Gzip,
                black_box(frames[i].as_slice()),
                spreadagg_ingest::codec::MAX_INFLATED_BYTES,
                &mut text,
            );
            black_box(serde_json::from_slice::<serde_json::Value>(&text).ok())
        });
    });
    group.finish();
}

/// Bitget's spot `ticker` push as its Tickers-Channel page lays it out (the best bid/ask
/// frame; Bitget has no sequence id, so the frames differ only in their times).
const BITGET_TICKER: &str = r#"{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},"data":[{"instId":"BTCUSDT","lastPr":"27000.5","open24h":"26500.00","high24h":"27500.00","low24h":"26400.00","change24h":"0.0188","bidPr":"27000","askPr":"27000.5","bidSz":"2.71","askSz":"8.76","baseVolume":"368.9000","quoteVolume":"10152429.9610","openUtc":"26600.00","changeUtc24h":"0.0150","ts":"1695715383021"}],"ts":1695715383039}"#;

fn bench_bitget(c: &mut Criterion) {
    let symbols = SymbolTable::from_pairs(Bitget.id(), [("BTCUSDT", "BTC-USDT")]);
    let frames: Vec<String> = (0..FRAMES)
        .map(|i| BITGET_TICKER.replace("1695715383021", &(1_695_715_383_021 + i).to_string()))
        .collect();
    let mut group = c.benchmark_group("bitget_ticker");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| time_sessions(&Bitget, &symbols, &frames, text, iters));
    });
    group.bench_function("baseline_serde_json_value", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(serde_json::from_str::<serde_json::Value>(black_box(&frames[i])).ok())
        });
    });
    group.finish();
}

/// Coinbase's level2 update (the hot frame: the session applies it to its book and emits the
/// new top), against the baseline of parsing the same frame into a `serde_json::Value`. Each
/// block of frames runs on a fresh session that first takes a snapshot (untimed); the updates
/// carry consecutive `sequence_num`s and each changes the best bid's size, so each emits a
/// quote.
fn bench_coinbase(c: &mut Criterion) {
    let symbols = SymbolTable::from_pairs(Coinbase.id(), [("BTC-USD", "BTC-USD")]);
    let snapshot = r#"{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"2023-02-09T20:32:50.01Z","price_level":"21921.73","new_quantity":"0.06317902"},{"side":"bid","event_time":"2023-02-09T20:32:50.01Z","price_level":"21921.3","new_quantity":"1.2"},{"side":"offer","event_time":"2023-02-09T20:32:50.01Z","price_level":"21921.74","new_quantity":"0.5"},{"side":"offer","event_time":"2023-02-09T20:32:50.01Z","price_level":"21922.5","new_quantity":"2"}]}]}"#;
    let frames: Vec<String> = (1..=FRAMES)
        .map(|i| {
            format!(
                r#"{{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:51.714964855Z","sequence_num":{i},"events":[{{"type":"update","product_id":"BTC-USD","updates":[{{"side":"bid","event_time":"2023-02-09T20:32:51.714901Z","price_level":"21921.73","new_quantity":"0.{:08}"}},{{"side":"offer","event_time":"2023-02-09T20:32:51.714901Z","price_level":"21923.1","new_quantity":"0.25"}}]}}]}}"#,
                1_000 + i
            )
        })
        .collect();
    let mut group = c.benchmark_group("coinbase_level2_update");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut out = Output::default();
            while left > 0 {
                let n = left.min(frames.len() as u64);
                let mut session = Coinbase.session();
                session.subscribe(&["BTC-USD".to_owned()], &mut 1);
                let r = session.on_frame(Frame::Text(snapshot), &symbols, 1, &mut out);
                assert!(r.is_ok(), "{r:?}");
                let started = Instant::now();
                for f in &frames[..n as usize] {
                    out.clear();
                    let r = session.on_frame(Frame::Text(black_box(f)), &symbols, 1, &mut out);
                    assert!(r.is_ok(), "{r:?}");
                    black_box(out.events.len());
                }
                total += started.elapsed();
                left -= n;
            }
            total
        });
    });
    group.bench_function("baseline_serde_json_value", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(serde_json::from_str::<serde_json::Value>(black_box(&frames[i])).ok())
        });
    });
    group.finish();
}

/// Kraken's v2 ticker (`event_trigger` `bbo`: JSON-number prices, an RFC 3339 time, no update
/// id), against the baseline of parsing the same frame into a `serde_json::Value`.
fn bench_kraken(c: &mut Criterion) {
    let symbols = SymbolTable::from_pairs(Kraken.id(), [("BTC/USD", "BTC-USD")]);
    // No update id to make rise: the sizes vary instead, so no two frames are the same.
    let frames: Vec<String> = (0..FRAMES)
        .map(|i| KRAKEN_TICKER.replace(r#""bid_qty":2.5"#, &format!(r#""bid_qty":{}.5"#, i + 1)))
        .collect();
    let mut group = c.benchmark_group("kraken_ticker_bbo");
    group.bench_function("adapter_parse_to_tick", |b| {
        b.iter_custom(|iters| time_sessions(&Kraken, &symbols, &frames, text, iters));
    });
    group.bench_function("baseline_serde_json_value", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(serde_json::from_str::<serde_json::Value>(black_box(&frames[i])).ok())
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench,
    bench_mexc,
    bench_htx,
    bench_bingx,
    bench_bitget,
    bench_coinbase,
    bench_kraken
);
criterion_main!(benches);
