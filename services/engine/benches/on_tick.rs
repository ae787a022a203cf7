//! The engine's work per tick: latest-tick update, one spread point per other fresh exchange
//! with bands, the chart window and the signal state. No messages are built (that is the
//! role's, per publish).
//!
//! - `100_symbols`: ticks in a pseudo-random order over 2 or 8 exchanges of 100 symbols (the
//!   state fits in the CPU's caches), against a baseline
//!   computing only the cross-spread formulas for the same pairs (no state): the floor.
//! - `8x2000`: the load, 8 exchanges x 2,000 symbols in a pseudo-random order, with
//!   bounds that hold all 56,000 windows, and with the default bounds (10,000 windows: every
//!   tick's windows churn through the LRU).

use std::hint::black_box;
use std::num::NonZeroUsize;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spreadagg_engine::{EngineConfig, SpreadState, TickIn};
use spreadagg_model::ExchangeId;
use spreadagg_model::formulas::cross_spread;

const EXCHANGES: [ExchangeId; 8] = [
    ExchangeId::Binance,
    ExchangeId::Bitget,
    ExchangeId::Bybit,
    ExchangeId::Gateio,
    ExchangeId::Htx,
    ExchangeId::Kucoin,
    ExchangeId::Mexc,
    ExchangeId::Okx,
];

struct Input {
    exchange: ExchangeId,
    symbol: usize,
    bid: f64,
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i}-USDT")).collect()
}

/// `n` ticks over `symbols` symbols and `exchanges` exchanges; `shuffled` draws both from an
/// LCG instead of rotating (rotating both pairs each symbol with few exchanges).
fn ticks(n: usize, symbols: usize, exchanges: usize, shuffled: bool) -> Vec<Input> {
    let mut x: u64 = 7;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (s, e) = if shuffled {
                (
                    usize::try_from((x >> 33) % symbols as u64).unwrap_or(0),
                    usize::try_from((x >> 20) % exchanges as u64).unwrap_or(0),
                )
            } else {
                (i % symbols, i % exchanges)
            };
            #[allow(clippy::cast_precision_loss)]
            let bid = 100.0 + ((x >> 40) % 1000) as f64 * 0.001;
            Input {
                exchange: EXCHANGES[e],
                symbol: s,
                bid,
            }
        })
        .collect()
}

fn run(
    c: &mut Criterion,
    group: &str,
    state: &mut SpreadState,
    input: &[Input],
    symbols: &[String],
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut points = Vec::with_capacity(16);
    let mut i: usize = 0;
    // Warm: every window exists (up to the bounds) before timing.
    for t in input {
        let tick = TickIn {
            exchange: t.exchange,
            symbol: &symbols[t.symbol],
            bid: t.bid,
            ask: t.bid + 0.01,
            ts_ns: i64::try_from(i).unwrap_or(i64::MAX) * 1_000,
        };
        let _ = state.apply(&tick, &mut points);
        i += 1;
    }
    g.bench_function("apply", |b| {
        b.iter(|| {
            let t = &input[i % input.len()];
            // Time moves forward on every tick, as it does live (an older tick is ignored).
            let tick = TickIn {
                exchange: t.exchange,
                symbol: &symbols[t.symbol],
                bid: t.bid,
                ask: t.bid + 0.01,
                ts_ns: i64::try_from(i).unwrap_or(i64::MAX) * 1_000,
            };
            i += 1;
            let signal = state.apply(&tick, &mut points);
            black_box((points.len(), signal.is_ok()))
        });
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let limits = EngineConfig::default().limits().expect("limits");
    for exchanges in [2, 8] {
        let symbols = names(100);
        let input = ticks(10_000, 100, exchanges, true);
        let mut state = SpreadState::new(limits);
        run(
            c,
            &format!("engine_100_symbols_{exchanges}_exchanges"),
            &mut state,
            &input,
            &symbols,
        );
        let mut g = c.benchmark_group(format!("engine_100_symbols_{exchanges}_exchanges"));
        g.bench_function("baseline_formulas_only", |b| {
            let mut i = 0;
            b.iter(|| {
                let t = &input[i % input.len()];
                i += 1;
                let mut acc = 0.0;
                for _ in 1..exchanges {
                    acc += cross_spread(t.bid, t.bid + 0.01, t.bid * 1.0001, t.bid * 1.0101)
                        .bid_bid_pct;
                }
                black_box(acc)
            });
        });
        g.finish();
    }
    let symbols = names(2_000);
    let input = ticks(200_000, 2_000, 8, true);
    let mut roomy = limits;
    roomy.max_windows = NonZeroUsize::new(56_000).expect("nonzero");
    let mut state = SpreadState::new(roomy);
    run(
        c,
        "engine_8x2000_all_windows_held",
        &mut state,
        &input,
        &symbols,
    );
    let mut state = SpreadState::new(limits);
    run(
        c,
        "engine_8x2000_default_bounds",
        &mut state,
        &input,
        &symbols,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
