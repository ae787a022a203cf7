//! Memory harness for the engine's state (no bus): resident memory per stored chart point at
//! full bounds, flatness on a rotating symbol set larger than every bound, and (with
//! `SHED=1`, run inside a memory cgroup by `scripts/bench-engine`) shedding under a limit
//! smaller than full bounds need.
//!
//! `cargo run --release -p spreadagg-engine --example engine_memory -- full|rotating`

use std::num::NonZeroUsize;

use spreadagg_engine::{EngineConfig, Governor, SpreadState, TickIn};
use spreadagg_model::ExchangeId;
use spreadagg_runtime::process::CgroupRoot;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[allow(clippy::cast_precision_loss)]
fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

struct Feeder {
    names: Vec<String>,
    points: Vec<spreadagg_engine::Point>,
    ts: i64,
}

impl Feeder {
    fn tick(&mut self, state: &mut SpreadState, symbol: usize, exchange: ExchangeId, bid: f64) {
        self.ts += 1_000;
        let t = TickIn {
            exchange,
            symbol: &self.names[symbol],
            bid,
            ask: bid + 0.01,
            ts_ns: self.ts,
        };
        let _ = state.apply(&t, &mut self.points);
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "full".into());
    let shed = std::env::var("SHED").is_ok_and(|v| v == "1");
    let config = EngineConfig::default();
    let limits = config.limits().expect("limits");
    let symbols = if mode == "rotating" { 200_000 } else { 25_000 };
    let mut f = Feeder {
        names: (0..symbols).map(|i| format!("S{i}-USDT")).collect(),
        points: Vec::with_capacity(16),
        ts: 0,
    };
    let mut state = SpreadState::new(limits);
    let mut governor = Governor::for_config(&config, &limits);
    let cgroup = CgroupRoot::default();
    let base = rss();
    let (a, b) = (ExchangeId::Binance, ExchangeId::Okx);
    let mut n: u64 = 0;
    let mut step = |state: &mut SpreadState, f: &mut Feeder, s: usize, bid: f64| {
        f.tick(state, s, a, bid);
        f.tick(state, s, b, bid * 1.0001);
        n += 2;
        if shed && n.is_multiple_of(200_000) {
            spreadagg_engine::relieve_memory_pressure(&mut governor, &cgroup, state);
        }
    };
    if mode == "rotating" {
        // 10 million ticks cycling over 200,000 symbols: every bound is exceeded all along.
        println!("ticks\trss_mb\twindows\tticks_held\tchart_points");
        let mut samples = Vec::new();
        for i in 0..5_000_000_usize {
            #[allow(clippy::cast_precision_loss)]
            step(
                &mut state,
                &mut f,
                i % symbols,
                100.0 + (i % 89) as f64 * 0.01,
            );
            if (i + 1) % 500_000 == 0 {
                let r = rss();
                println!(
                    "{}\t{:.1}\t{}\t{}\t{}",
                    (i + 1) * 2,
                    mb(r),
                    state.windows(),
                    state.ticks(),
                    state.chart_points()
                );
                samples.push(r);
            }
        }
        let tail = &samples[samples.len() / 2..];
        let (lo, hi) = (
            tail.iter().min().copied().unwrap_or(0),
            tail.iter().max().copied().unwrap_or(0),
        );
        #[allow(clippy::cast_precision_loss)]
        let spread = (hi - lo) as f64 / lo.max(1) as f64 * 100.0;
        println!(
            "second half: rss {:.1} ..= {:.1} MB, {spread:.1} % apart",
            mb(lo),
            mb(hi)
        );
        return;
    }
    // Full bounds: 50,000 latest ticks (25,000 symbols x 2 exchanges), then the last 10,000
    // symbols' windows filled to 5,000 points each (2 points per round).
    for s in 0..symbols {
        step(&mut state, &mut f, s, 100.0);
    }
    let first = symbols - limits.max_windows.get();
    for round in 0..2_500_u32 {
        for s in first..symbols {
            step(&mut state, &mut f, s, 100.0 + f64::from(round % 89) * 0.01);
        }
        if round % 250 == 249 {
            println!(
                "round {}: rss {:.1} MB, chart points {}, windows {}, caps {:?}",
                round + 1,
                mb(rss()),
                state.chart_points(),
                state.windows(),
                state.caps()
            );
        }
    }
    let used = rss().saturating_sub(base);
    let points = state.chart_points() as u64;
    let heap = state.window_heap_bytes() as u64;
    #[allow(clippy::cast_precision_loss)]
    let per_point = |b: u64| b as f64 / points.max(1) as f64;
    println!(
        "full bounds: {} ticks, {} windows, {points} chart points; rss +{:.1} MB = {:.2} B/point (window buffers {:.1} MB = {:.2} B/point)",
        state.ticks(),
        state.windows(),
        mb(used),
        per_point(used),
        mb(heap),
        per_point(heap),
    );
    let _ = NonZeroUsize::MIN;
}
