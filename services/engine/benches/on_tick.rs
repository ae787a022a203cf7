//! The engine's work per tick: latest-tick update, one spread point per fresh other exchange,
//! bands. Measured for 2 and 8 exchanges per symbol over 100 symbols; the baseline is the
//! formulas alone for the same pairs (no state, no bands), to show what the state costs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spreadagg_engine::{EngineConfig, SpreadState};
use spreadagg_model::formulas::cross_spread;
use spreadagg_model::wire::Tick;

const EXCHANGES: [&str; 8] = [
    "binance", "bitget", "bybit", "gateio", "htx", "kucoin", "mexc", "okx",
];

fn ticks(exchanges: usize) -> Vec<Tick> {
    let mut out = Vec::new();
    for i in 0..10_000_i64 {
        let symbol = format!("S{}-USDT", i % 100);
        let exchange = EXCHANGES[usize::try_from(i).unwrap_or(0) % exchanges];
        #[allow(clippy::cast_precision_loss)]
        let bid = 100.0 + (i % 17) as f64 * 0.01;
        out.push(Tick {
            exchange: exchange.into(),
            symbol,
            bid_px: bid,
            ask_px: bid + 0.02,
            recv_ts_ns: i * 1_000_000,
            ..Tick::default()
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let limits = EngineConfig::default().limits().expect("limits");
    for exchanges in [2, 8] {
        let mut input = ticks(exchanges);
        let mut group = c.benchmark_group(format!("engine_per_tick_{exchanges}_exchanges"));
        group.bench_function("on_tick", |b| {
            let mut state = SpreadState::new(limits);
            let mut i: usize = 0;
            b.iter(|| {
                // Time moves forward on every tick, as it does live (an older tick is ignored).
                let n = input.len();
                let tick = &mut input[i % n];
                tick.recv_ts_ns = i64::try_from(i).unwrap_or(i64::MAX) * 1_000_000;
                let points = state.on_tick(tick).unwrap_or_default();
                i += 1;
                black_box(points.len())
            });
        });
        group.bench_function("baseline_formulas_only", |b| {
            let mut i = 0;
            b.iter(|| {
                let t = &input[i % input.len()];
                i += 1;
                let mut acc = 0.0;
                for _ in 1..exchanges {
                    acc += cross_spread(t.bid_px, t.ask_px, t.bid_px * 1.0001, t.ask_px * 1.0001)
                        .bid_bid_pct;
                }
                black_box(acc)
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
