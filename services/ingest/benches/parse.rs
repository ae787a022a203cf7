//! Frame parsing per exchange: each adapter's session turning a documented frame into a
//! validated event (interned symbol, numbers parsed, quote checked), against the baseline of
//! parsing the same frame into a generic `serde_json::Value` and doing nothing else (for
//! MEXC's binary protobuf frames: decoding them with prost and doing nothing else).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message as _;
use spreadagg_ingest::exchange::mexc::{Mexc, pb};
use spreadagg_ingest::exchange::{
    Adapter, Frame, Output, SymbolTable, binance::Binance, htx::Htx, kraken::Kraken,
    kucoin::Kucoin, okx::Okx,
};
use std::time::{Duration, Instant};

const BINANCE_BOOK_TICKER: &str = r#"{"u":123456,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
const OKX_BBO: &str = r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#;

const KUCOIN_TICKER: &str = r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{"sequence":"123456","price":"0.08","size":"0.011","bestAsk":"0.08","bestAskSize":"0.18","bestBid":"0.049","bestBidSize":"0.036","time":1704873323416}}"#;
const HTX_BBO: &str = r#"{"ch":"market.btcusdt.bbo","ts":1671941599613,"tick":{"seqId":123456,"ask":16829.51,"askSize":0.707776,"bid":16829.5,"bidSize":1.685945,"quoteTime":1671941599612,"symbol":"btcusdt"}}"#;

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
    let cases: [(&str, &dyn Adapter, &str, &str, &str); 3] = [
        (
            "binance_book_ticker",
            &Binance,
            BINANCE_BOOK_TICKER,
            "BNBUSDT",
            "BNB-USDT",
        ),
        ("okx_bbo_tbt", &Okx, OKX_BBO, "BTC-USDT", "BTC-USDT"),
        (
            "kucoin_ticker",
            &Kucoin,
            KUCOIN_TICKER,
            "BTC-USDT",
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

criterion_group!(benches, bench, bench_mexc, bench_htx, bench_kraken);
criterion_main!(benches);
