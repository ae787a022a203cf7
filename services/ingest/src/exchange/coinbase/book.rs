//! One product's level2 book as a Coinbase session keeps it: validated level updates applied
//! in order, each side bounded, and the top read off.

use std::collections::BTreeMap;

use super::MAX_LEVELS_PER_SIDE;
use crate::exchange::{ParseError, malformed, num, rfc3339_ns};

/// One side's levels, keyed by the price's bits (positive finite doubles order as their bits).
pub(super) type Levels = BTreeMap<u64, f64>;

/// One product's book on this connection.
///
/// A side holds at most [`MAX_LEVELS_PER_SIDE`] levels: past it the level farthest from the
/// top is dropped, and the side remembers the best price it dropped (its boundary, as price
/// bits). The kept levels are then exactly the exchange's levels better than the boundary:
/// updates at or beyond the boundary are ignored (the levels there are unknown anyway), and
/// when the kept side runs out, its best level is unknown and the book must be resynced.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) bids: Levels,
    pub(super) asks: Levels,
    /// The highest bid dropped to keep the side within bounds.
    pub(super) bids_cut: Option<u64>,
    /// The lowest ask dropped to keep the side within bounds.
    pub(super) asks_cut: Option<u64>,
    /// The top last emitted.
    pub(super) top: Option<[f64; 4]>,
}

impl Book {
    /// Applies level updates in order, cutting as it goes, so a side never holds more than
    /// [`MAX_LEVELS_PER_SIDE`] + 1 levels, even while a multi-MB snapshot is applied.
    pub(super) fn apply(&mut self, levels: &[Level]) {
        for l in levels {
            let px = l.px.to_bits();
            // Positive finite doubles order as their bits.
            let (side, cut, beyond) = if l.bid {
                let beyond = self.bids_cut.is_some_and(|b| px <= b);
                (&mut self.bids, &mut self.bids_cut, beyond)
            } else {
                let beyond = self.asks_cut.is_some_and(|b| px >= b);
                (&mut self.asks, &mut self.asks_cut, beyond)
            };
            if beyond {
                continue;
            }
            if l.qty == 0.0 {
                side.remove(&px);
                continue;
            }
            side.insert(px, l.qty);
            if side.len() > MAX_LEVELS_PER_SIDE {
                // The farthest from the top goes; it is better than any dropped before.
                let dropped = if l.bid {
                    side.pop_first()
                } else {
                    side.pop_last()
                };
                if let Some((p, _)) = dropped {
                    *cut = Some(p);
                }
            }
        }
    }

    /// A side that was cut ran out: its best level is at or beyond the boundary, unknown.
    pub(super) fn exhausted(&self) -> bool {
        (self.bids_cut.is_some() && self.bids.is_empty())
            || (self.asks_cut.is_some() && self.asks.is_empty())
    }

    pub(super) fn best(&self) -> Option<[f64; 4]> {
        let (b, bq) = self.bids.last_key_value()?;
        let (a, aq) = self.asks.first_key_value()?;
        Some([f64::from_bits(*b), *bq, f64::from_bits(*a), *aq])
    }
}

/// One validated level update.
#[derive(Debug, Clone, Copy)]
pub(super) struct Level {
    pub(super) bid: bool,
    pub(super) px: f64,
    pub(super) qty: f64,
    /// The level's `event_time`; 0 when absent or the epoch (as in snapshots).
    pub(super) ts_ns: i64,
}

pub(super) fn level(
    side: &str,
    px: &str,
    qty: &str,
    event_time: Option<&str>,
) -> Result<Level, ParseError> {
    let bid = match side {
        "bid" => true,
        "offer" => false,
        other => return Err(malformed(format!("level2 side {other:?}"))),
    };
    let (px, qty) = (num(px)?, num(qty)?);
    if !(px > 0.0 && qty >= 0.0) {
        return Err(ParseError::BadNumber(format!("{px} x {qty}")));
    }
    let ts_ns = match event_time {
        Some(t) => rfc3339_ns(t)?.max(0),
        None => 0,
    };
    Ok(Level {
        bid,
        px,
        qty,
        ts_ns,
    })
}
