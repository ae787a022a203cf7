//! Frame parsing per exchange: the adapters' typed, borrowing parsers (validation and tick
//! construction included) against the baseline of parsing the same frame into a generic
//! `serde_json::Value` and doing nothing else.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spreadagg_ingest::exchange::{Adapter, SymbolMap, binance::Binance, okx::Okx};

const BINANCE_BOOK_TICKER: &str = r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
const OKX_BBO: &str = r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}"#;

fn bench(c: &mut Criterion) {
    let mut symbols = SymbolMap::new();
    symbols.insert("BNBUSDT".into(), "BNB-USDT".parse().expect("symbol"));
    symbols.insert("BTC-USDT".into(), "BTC-USDT".parse().expect("symbol"));
    for (name, adapter, frame) in [
        (
            "binance_book_ticker",
            &Binance as &dyn Adapter,
            BINANCE_BOOK_TICKER,
        ),
        ("okx_bbo_tbt", &Okx as &dyn Adapter, OKX_BBO),
    ] {
        let mut group = c.benchmark_group(name);
        group.bench_function("adapter_parse_to_tick", |b| {
            let mut out = Vec::with_capacity(4);
            b.iter(|| {
                out.clear();
                black_box(adapter.parse(black_box(frame), &symbols, 1, &mut out)).ok();
                black_box(out.len())
            });
        });
        group.bench_function("baseline_serde_json_value", |b| {
            b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(frame)).ok()));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
