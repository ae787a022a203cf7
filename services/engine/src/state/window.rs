//! One exchange pair's window for a symbol: the band buffer (the last `band_points` `bid_bid`
//! values, exact f64, for the bands) and the chart window (every point of the last
//! `window` of point time, at most `window_points`), plus a staleness histogram.
//!
//! A chart point is 20 bytes: its time (i64 ns) and spread, upper and lower band as f32. f32
//! keeps 7 significant digits, far below what a chart can show; the bands published on each
//! point are computed from the exact f64 band buffer, not from these.

use std::collections::VecDeque;

use spreadagg_model::bands::RollingQuantiles;

/// A point of the chart window: time, spread and both bands.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, packed(4))]
pub struct ChartPoint {
    ts_ns: i64,
    spread: f32,
    upper: f32,
    lower: f32,
}

impl ChartPoint {
    pub fn ts_ns(self) -> i64 {
        self.ts_ns
    }
    pub fn spread(self) -> f32 {
        self.spread
    }
    pub fn upper(self) -> f32 {
        self.upper
    }
    pub fn lower(self) -> f32 {
        self.lower
    }
}

/// The window bounds (configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLimits {
    pub band_points: usize,
    pub upper_quantile: f64,
    pub lower_quantile: f64,
    pub max_points: usize,
    pub length_ns: i64,
}

/// Points a push removed from the chart window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub by_count: u64,
    pub by_age: u64,
}

/// Staleness in power-of-two millisecond buckets: bucket 0 is below 1 ms, bucket `i` is
/// `[2^(i-1), 2^i)` ms, the last is everything above. Halved when it holds `DECAY_AT`
/// points, so it follows the recent few thousand points rather than all time.
#[derive(Debug, Clone, Default)]
pub struct StalenessHistogram {
    buckets: [u32; STALENESS_BUCKETS],
    total: u32,
}

const STALENESS_BUCKETS: usize = 16;
const DECAY_AT: u32 = 4096;

impl StalenessHistogram {
    pub fn record(&mut self, staleness_ns: u64) {
        let ms = staleness_ns / 1_000_000;
        let bucket = if ms == 0 {
            0
        } else {
            (64 - ms.leading_zeros() as usize).min(STALENESS_BUCKETS - 1)
        };
        self.buckets[bucket] += 1;
        self.total += 1;
        if self.total >= DECAY_AT {
            self.total = 0;
            for b in &mut self.buckets {
                *b /= 2;
                self.total += *b;
            }
        }
    }

    /// The upper bound in milliseconds of the bucket holding quantile `q` (nearest rank);
    /// `None` when empty; the last bucket reads as infinite.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((f64::from(self.total) * q).ceil() as u32).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(if i + 1 == STALENESS_BUCKETS {
                    f64::INFINITY
                } else {
                    f64::from(1_u32 << i)
                });
            }
        }
        None
    }

    pub fn count(&self) -> u32 {
        self.total
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct PairWindow {
    bands: RollingQuantiles,
    chart: VecDeque<ChartPoint>,
    /// The latest point time seen: the window ends here.
    newest_ns: i64,
    staleness: StalenessHistogram,
}

impl PairWindow {
    pub fn new(limits: &WindowLimits) -> Self {
        Self {
            bands: RollingQuantiles::new(limits.band_points),
            chart: VecDeque::new(),
            newest_ns: i64::MIN,
            staleness: StalenessHistogram::default(),
        }
    }

    /// Adds a point: its `bid_bid` value to the bands, the point to the chart window (trimmed
    /// to its bounds), its staleness to the histogram. Returns the bands after it and what the
    /// trim removed.
    #[allow(clippy::cast_possible_truncation)]
    pub fn push(
        &mut self,
        ts_ns: i64,
        bid_bid: f64,
        staleness_ns: u64,
        limits: &WindowLimits,
    ) -> (f64, f64, Trimmed) {
        self.bands.push(bid_bid);
        let upper = self
            .bands
            .quantile(limits.upper_quantile)
            .unwrap_or(bid_bid);
        let lower = self
            .bands
            .quantile(limits.lower_quantile)
            .unwrap_or(bid_bid);
        self.staleness.record(staleness_ns);
        self.newest_ns = self.newest_ns.max(ts_ns);
        let mut trimmed = Trimmed::default();
        if limits.max_points > 0 {
            while self.chart.len() >= limits.max_points {
                self.chart.pop_front();
                trimmed.by_count += 1;
            }
            self.grow_for_one(limits.max_points);
            self.chart.push_back(ChartPoint {
                ts_ns,
                spread: bid_bid as f32,
                upper: upper as f32,
                lower: lower as f32,
            });
        }
        trimmed.by_age = self.trim_older_than(limits.length_ns);
        (upper, lower, trimmed)
    }

    /// Grows the chart buffer by half (not double) when full, never past `max_points`: at
    /// full bounds the buffer's slack is what decides memory.
    fn grow_for_one(&mut self, max_points: usize) {
        let (len, cap) = (self.chart.len(), self.chart.capacity());
        if len == cap {
            let step = (cap / 2).max(8).min(max_points.saturating_sub(len).max(1));
            self.chart.reserve_exact(step);
        }
    }

    /// Drops points older than `length_ns` before the newest; returns how many.
    fn trim_older_than(&mut self, length_ns: i64) -> u64 {
        let horizon = self.newest_ns.saturating_sub(length_ns);
        let mut n = 0;
        while self.chart.front().is_some_and(|p| p.ts_ns() < horizon) {
            self.chart.pop_front();
            n += 1;
        }
        n
    }

    /// Keeps at most the newest `keep` chart points and gives the rest of the buffer back;
    /// returns how many were dropped (memory-pressure shedding).
    pub fn shrink_to(&mut self, keep: usize) -> u64 {
        let drop = self.chart.len().saturating_sub(keep);
        self.chart.drain(..drop);
        self.chart.shrink_to_fit();
        drop as u64
    }

    pub fn chart(&self) -> impl ExactSizeIterator<Item = ChartPoint> + '_ {
        self.chart.iter().copied()
    }

    pub fn points(&self) -> usize {
        self.chart.len()
    }

    /// Bytes held on the heap by this window (chart buffer and band buffer).
    pub fn heap_bytes(&self) -> usize {
        self.chart.capacity() * std::mem::size_of::<ChartPoint>() + self.bands.heap_bytes()
    }

    pub fn staleness(&self) -> &StalenessHistogram {
        &self.staleness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_points: usize, length_s: i64) -> WindowLimits {
        WindowLimits {
            band_points: 200,
            upper_quantile: 0.97,
            lower_quantile: 0.03,
            max_points,
            length_ns: length_s * 1_000_000_000,
        }
    }

    #[test]
    fn a_chart_point_is_twenty_bytes() {
        assert_eq!(std::mem::size_of::<ChartPoint>(), 20);
    }

    #[test]
    fn the_chart_keeps_at_most_max_points_and_counts_the_rest() {
        let l = limits(5, 900);
        let mut w = PairWindow::new(&l);
        let mut trimmed = 0;
        for i in 0..12 {
            trimmed += w
                .push(i, f64::from(i32::try_from(i).unwrap_or(0)), 0, &l)
                .2
                .by_count;
        }
        assert_eq!(w.points(), 5);
        assert_eq!(trimmed, 7);
        let times: Vec<i64> = w.chart().map(ChartPoint::ts_ns).collect();
        assert_eq!(times, [7, 8, 9, 10, 11]);
        assert!(w.chart.capacity() <= 8, "capacity {}", w.chart.capacity());
    }

    #[test]
    fn the_chart_keeps_only_the_window_length_by_point_time() {
        let l = limits(5_000, 10);
        let mut w = PairWindow::new(&l);
        let s = 1_000_000_000;
        for t in [0, 5, 9, 10] {
            w.push(t * s, 0.1, 0, &l);
        }
        assert_eq!(w.points(), 4, "10 s before 10 s is 0 s: kept");
        let (_, _, trimmed) = w.push(15 * s, 0.1, 0, &l);
        assert_eq!(
            trimmed.by_age, 1,
            "0 s is older than 15 s - 10 s; 5 s is not"
        );
        // A late point (an older tick of another exchange) does not move the window back.
        w.push(12 * s, 0.1, 0, &l);
        assert_eq!(w.chart().map(ChartPoint::ts_ns).min(), Some(5 * s));
        assert_eq!(w.points(), 5);
    }

    #[test]
    fn bands_are_the_exact_values_and_the_chart_keeps_them_as_f32() {
        let l = limits(100, 900);
        let mut w = PairWindow::new(&l);
        let mut last = (0.0, 0.0);
        for i in 1..=100 {
            let (u, lo, _) = w.push(i, f64::from(i32::try_from(i).unwrap_or(0)) / 100.0, 0, &l);
            last = (u, lo);
        }
        assert_eq!(last, (0.97, 0.03));
        let p = w.chart().last().expect("a point");
        assert_eq!(
            (p.upper(), p.lower(), p.spread()),
            (0.97_f32, 0.03_f32, 1.0_f32)
        );
    }

    #[test]
    fn staleness_quantiles_by_bucket() {
        let mut h = StalenessHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..90 {
            h.record(300_000); // 0.3 ms
        }
        for _ in 0..10 {
            h.record(3_000_000_000); // 3 s: bucket [2048, 4096) ms
        }
        assert_eq!(h.quantile_ms(0.5), Some(1.0));
        assert_eq!(h.quantile_ms(0.95), Some(4096.0));
        for _ in 0..10_000 {
            h.record(0);
        }
        assert!(h.count() < DECAY_AT, "decays");
        assert_eq!(h.quantile_ms(0.99), Some(1.0), "old staleness decayed away");
    }

    #[test]
    fn shrinking_drops_the_oldest() {
        let l = limits(100, 900);
        let mut w = PairWindow::new(&l);
        for i in 0..50 {
            w.push(i, 0.0, 0, &l);
        }
        assert_eq!(w.shrink_to(10), 40);
        assert_eq!(w.chart().next().map(ChartPoint::ts_ns), Some(40));
        assert!(w.heap_bytes() < 50 * 20 + 200 * 16 + 64);
    }
}
