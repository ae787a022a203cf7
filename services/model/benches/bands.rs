//! Bands per spread point: the incremental nearest-rank window against the baseline of
//! copying the last n values and sorting them for every point (the prototype's way), at the
//! default band length (200) and at a chart window's (5,000).

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spreadagg_model::bands::RollingQuantiles;

fn values(n: usize) -> Vec<f64> {
    let mut x: u64 = 42;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)]
            let v = ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2;
            v
        })
        .collect()
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.max(1) - 1]
}

fn bench(c: &mut Criterion) {
    for n in [200, 5_000] {
        window(c, n);
    }
}

fn window(c: &mut Criterion, n: usize) {
    let input = values(20_000);
    let mut group = c.benchmark_group(format!("bands_per_point_window_{n}"));
    group.bench_function("incremental_sorted_vec", |b| {
        let mut w = RollingQuantiles::with_layout(n, false);
        let mut i = 0;
        b.iter(|| {
            w.push(input[i % input.len()]);
            i += 1;
            black_box((w.quantile(0.97), w.quantile(0.03)))
        });
    });
    group.bench_function("incremental_order_statistic_tree", |b| {
        let mut w = RollingQuantiles::with_layout(n, true);
        let mut i = 0;
        b.iter(|| {
            w.push(input[i % input.len()]);
            i += 1;
            black_box((w.quantile(0.97), w.quantile(0.03)))
        });
    });
    group.bench_function("baseline_copy_and_sort", |b| {
        let mut window: VecDeque<f64> = VecDeque::with_capacity(n);
        let mut scratch = Vec::with_capacity(n);
        let mut i = 0;
        b.iter(|| {
            if window.len() == n {
                window.pop_front();
            }
            window.push_back(input[i % input.len()]);
            i += 1;
            scratch.clear();
            scratch.extend(window.iter().copied());
            scratch.sort_by(f64::total_cmp);
            black_box((nearest_rank(&scratch, 0.97), nearest_rank(&scratch, 0.03)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
