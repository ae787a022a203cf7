//! A small log-linear histogram of durations (8 sub-buckets per power of two of microseconds,
//! so about 9 % resolution) for the engine's tick-to-acknowledged latency, readable in
//! `/health` and by load harnesses without a metrics backend. Fixed size: 4 KiB.

use std::time::Duration;

const SUB: usize = 8;
const BUCKETS: usize = 64 * SUB;

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return usize::try_from(us).unwrap_or(0);
    }
    let power = 63 - us.leading_zeros() as usize; // >= 3
    let shift = power - 3;
    let sub = usize::try_from((us >> shift) & (SUB as u64 - 1)).unwrap_or(0);
    ((power - 2) * SUB + sub).min(BUCKETS - 1)
}

/// The largest duration (in µs) a bucket holds.
fn upper_us(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let power = b / SUB + 2;
    let sub = (b % SUB) as u128;
    let shift = power - 3;
    let bound = ((SUB as u128 + sub + 1) << shift) - 1;
    u64::try_from(bound).unwrap_or(u64::MAX)
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The nearest-rank quantile, as its bucket's upper bound in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                #[allow(clippy::cast_precision_loss)]
                return Some(upper_us(b) as f64 / 1_000.0);
            }
        }
        None
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounds_hold_their_values() {
        let mut last = 0;
        for us in [
            0_u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            999,
            1_000,
            2_047,
            2_048,
            1_000_000,
            u64::MAX / 2,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            assert!(
                upper_us(b) >= us.min(upper_us(BUCKETS - 1)),
                "{us} in bucket {b} up to {}",
                upper_us(b)
            );
            if b > 0 && b < BUCKETS - 1 {
                assert!(upper_us(b - 1) < us, "{us} belongs to an earlier bucket");
            }
        }
    }

    #[test]
    fn quantiles_within_the_resolution() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000_u64 {
            h.record(Duration::from_micros(i * 10)); // 10 µs ..= 10 ms
        }
        let p50 = h.quantile_ms(0.5).expect("some");
        let p99 = h.quantile_ms(0.99).expect("some");
        assert!((5.0..=5.5).contains(&p50), "{p50}");
        assert!((9.9..=10.9).contains(&p99), "{p99}");
        h.clear();
        assert_eq!(h.quantile_ms(0.5), None);
    }
}
