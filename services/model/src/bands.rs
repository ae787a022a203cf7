//! Rolling nearest-rank quantiles over the last N values, kept incrementally: never a sort
//! per value.
//!
//! Two layouts with one behaviour, chosen by the window's length:
//! - up to [`TREE_ABOVE`] values, a FIFO and a sorted vector: a binary search plus one insert
//!   and one remove (a `memmove` of at most N values, which at these sizes is cheaper than any
//!   tree: 80 ns per value at N = 200, docs/BENCHMARKS.md);
//! - above it, an order-statistic B-tree (`indexset`, a two-level B-tree with a Fenwick index):
//!   insert, remove and select by rank in O(log n).

use std::collections::VecDeque;

/// Windows longer than this use the order-statistic tree.
pub const TREE_ABOVE: usize = 1_024;

/// An f64 as a u64 whose unsigned order is `f64::total_cmp`'s.
fn ordered_bits(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_ordered_bits(b: u64) -> f64 {
    f64::from_bits(if b >> 63 == 1 { b & !(1 << 63) } else { !b })
}

#[derive(Debug, Clone)]
enum Sorted {
    Vec(Vec<f64>),
    /// (ordered value bits, arrival number): equal values stay distinct entries.
    Tree(indexset::BTreeSet<(u64, u64)>),
}

/// The last `capacity` finite values and their sorted order.
#[derive(Debug, Clone)]
pub struct RollingQuantiles {
    capacity: usize,
    /// Values in arrival order; the front's arrival number is `next - len`.
    arrival: VecDeque<f64>,
    sorted: Sorted,
    /// Arrival number of the next value.
    next: u64,
}

impl RollingQuantiles {
    /// An empty window holding at most `capacity` values (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self::with_layout(capacity, capacity > TREE_ABOVE)
    }

    /// As [`RollingQuantiles::new`] with the layout forced (benchmarks and tests).
    pub fn with_layout(capacity: usize, tree: bool) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            arrival: VecDeque::with_capacity(capacity.min(TREE_ABOVE)),
            sorted: if tree {
                Sorted::Tree(indexset::BTreeSet::new())
            } else {
                Sorted::Vec(Vec::with_capacity(capacity))
            },
            next: 0,
        }
    }

    /// Adds a value, evicting the oldest once full. Non-finite values are ignored: they would
    /// poison every quantile after them.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let oldest_n = self.next - self.arrival.len() as u64;
        if self.arrival.len() == self.capacity
            && let Some(oldest) = self.arrival.pop_front()
        {
            match &mut self.sorted {
                Sorted::Vec(v) => {
                    let at = v.partition_point(|x| x.total_cmp(&oldest).is_lt());
                    v.remove(at);
                }
                Sorted::Tree(t) => {
                    t.remove(&(ordered_bits(oldest), oldest_n));
                }
            }
        }
        let n = self.next;
        self.next += 1;
        self.arrival.push_back(value);
        match &mut self.sorted {
            Sorted::Vec(v) => {
                let at = v.partition_point(|x| x.total_cmp(&value).is_lt());
                v.insert(at, value);
            }
            Sorted::Tree(t) => {
                t.insert((ordered_bits(value), n));
            }
        }
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.arrival.len()
    }

    /// Bytes held on the heap (the buffers' capacity; the tree's entries at 16 bytes each).
    pub fn heap_bytes(&self) -> usize {
        let sorted = match &self.sorted {
            Sorted::Vec(v) => v.capacity() * std::mem::size_of::<f64>(),
            Sorted::Tree(t) => t.len() * 16,
        };
        self.arrival.capacity() * std::mem::size_of::<f64>() + sorted
    }

    /// True when nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.arrival.is_empty()
    }

    /// The nearest-rank quantile: the value at index `ceil(n * q) - 1` of the sorted values
    /// (`q` clamped to (0, 1]); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.arrival.len();
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
        let index = rank.clamp(1, n) - 1;
        match &self.sorted {
            Sorted::Vec(v) => v.get(index).copied(),
            Sorted::Tree(t) => t.get_index(index).map(|&(bits, _)| from_ordered_bits(bits)),
        }
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
    fn both_layouts_match_the_definition_with_ties_and_turnover() {
        for tree in [false, true] {
            let mut w = RollingQuantiles::with_layout(37, tree);
            let mut all = Vec::new();
            let mut x: u64 = 99;
            for i in 0..600 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                #[allow(clippy::cast_precision_loss)]
                let v = if i % 7 == 0 {
                    -0.0
                } else {
                    ((x >> 35) % 13) as f64 - 6.0
                };
                w.push(v);
                all.push(v);
                let tail = &all[all.len().saturating_sub(37)..];
                for q in [0.03, 0.5, 0.97, 1.0] {
                    let got = w.quantile(q).expect("non-empty");
                    assert_eq!(
                        got.to_bits(),
                        by_sorting(tail, q).to_bits(),
                        "tree={tree} q={q}"
                    );
                }
            }
        }
    }

    #[test]
    fn ordered_bits_follow_total_order_and_round_trip() {
        let vals = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            f64::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(
                ordered_bits(w[0]) < ordered_bits(w[1]),
                "{} < {}",
                w[0],
                w[1]
            );
        }
        for v in vals {
            assert_eq!(from_ordered_bits(ordered_bits(v)).to_bits(), v.to_bits());
        }
        assert!(RollingQuantiles::new(5_000).quantile(0.5).is_none());
    }

    #[test]
    fn empty_and_non_finite() {
        let mut w = RollingQuantiles::new(3);
        assert_eq!(w.quantile(0.5), None);
        w.push(f64::NAN);
        assert!(w.is_empty());
    }
}
