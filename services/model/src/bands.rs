//! Rolling nearest-rank quantiles over the last N values, kept incrementally.
//!
//! A FIFO remembers arrival order and a sorted vector answers quantiles; each push is a binary
//! search plus one insert and at most one remove, never a sort. With N = 200 the memmove of the
//! insert is cheaper than any tree; the O(log n) structure for larger windows is the engine
//! issue's to choose and measure.

use std::collections::VecDeque;

/// The last `capacity` finite values and their sorted order.
#[derive(Debug, Clone)]
pub struct RollingQuantiles {
    capacity: usize,
    arrival: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl RollingQuantiles {
    /// An empty window holding at most `capacity` values (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            arrival: VecDeque::with_capacity(capacity),
            sorted: Vec::with_capacity(capacity),
        }
    }

    /// Adds a value, evicting the oldest once full. Non-finite values are ignored: they would
    /// poison every quantile after them.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.arrival.len() == self.capacity
            && let Some(oldest) = self.arrival.pop_front()
        {
            let at = self
                .sorted
                .partition_point(|v| v.total_cmp(&oldest).is_lt());
            self.sorted.remove(at);
        }
        self.arrival.push_back(value);
        let at = self.sorted.partition_point(|v| v.total_cmp(&value).is_lt());
        self.sorted.insert(at, value);
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Bytes held on the heap (both buffers' capacity).
    pub fn heap_bytes(&self) -> usize {
        (self.arrival.capacity() + self.sorted.capacity()) * std::mem::size_of::<f64>()
    }

    /// True when nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The nearest-rank quantile: the value at index `ceil(n * q) - 1` of the sorted values
    /// (`q` clamped to (0, 1]); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let q = q.clamp(f64::MIN_POSITIVE, 1.0);
        // n <= capacity, far below 2^52, so the float round trip is exact.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = (n as f64 * q).ceil() as usize;
        self.sorted.get(rank.clamp(1, n) - 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by sorting: what the incremental structure must equal.
    fn by_sorting(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = (v.len() as f64 * q).ceil() as usize;
        v[rank.max(1) - 1]
    }

    #[test]
    fn nearest_rank_on_a_small_set() {
        let mut w = RollingQuantiles::new(200);
        for v in 1..=100 {
            w.push(f64::from(v));
        }
        assert_eq!(w.quantile(0.97), Some(97.0));
        assert_eq!(w.quantile(0.03), Some(3.0));
        assert_eq!(w.quantile(1.0), Some(100.0));
    }

    #[test]
    fn matches_the_definition_while_rolling() {
        let mut w = RollingQuantiles::new(50);
        let mut all = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..1000 {
            // A small LCG: deterministic, with repeats, so ties are exercised too.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            #[allow(clippy::cast_precision_loss)]
            let v = ((x >> 33) % 97) as f64 - 48.0;
            w.push(v);
            all.push(v);
            let tail = &all[all.len().saturating_sub(50)..];
            for q in [0.03, 0.5, 0.97] {
                assert_eq!(w.quantile(q), Some(by_sorting(tail, q)));
            }
        }
        assert_eq!(w.len(), 50);
    }

    #[test]
    fn empty_and_non_finite() {
        let mut w = RollingQuantiles::new(3);
        assert_eq!(w.quantile(0.5), None);
        w.push(f64::NAN);
        assert!(w.is_empty());
    }
}
