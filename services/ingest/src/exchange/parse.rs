//! Parse helpers every adapter shares: numbers as exchanges write them, validated quotes and
//! trades, and the per-symbol sequence gate that drops out-of-order updates.

use spreadagg_model::wire::Side;

use super::ParseError;
use crate::event::{Print, Quote};
use crate::symbols::SymbolId;

/// Parses a decimal string as the exchanges send prices and sizes.
pub(crate) fn num(s: &str) -> Result<f64, ParseError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParseError::BadNumber(s.to_owned())),
    }
}

/// A validated quote: both sides positive, bid below ask.
pub(crate) fn quote(
    symbol: SymbolId,
    (bid_px, bid_qty): (f64, f64),
    (ask_px, ask_qty): (f64, f64),
    exchange_ts_ns: i64,
    recv_ts_ns: i64,
    seq: u64,
) -> Result<Quote, ParseError> {
    spreadagg_model::formulas::validate_quote(bid_px, bid_qty, ask_px, ask_qty)?;
    Ok(Quote {
        symbol,
        bid_px,
        bid_qty,
        ask_px,
        ask_qty,
        exchange_ts_ns,
        recv_ts_ns,
        seq,
    })
}

/// A validated trade: positive price and size, a trade id.
pub(crate) fn print(
    symbol: SymbolId,
    (price, qty): (f64, f64),
    side: Side,
    trade_id: String,
    exchange_ts_ns: i64,
    recv_ts_ns: i64,
) -> Result<Print, ParseError> {
    if !(price > 0.0 && qty > 0.0) {
        return Err(ParseError::BadNumber(format!("{price} x {qty}")));
    }
    if trade_id.is_empty() {
        return Err(malformed("trade without an id"));
    }
    Ok(Print {
        symbol,
        price,
        qty,
        side,
        trade_id,
        exchange_ts_ns,
        recv_ts_ns,
    })
}

pub(crate) fn malformed(e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}

/// The last update id seen per symbol on one connection: an update not newer than the last
/// one is stale (a replay, or out of order) and is dropped. Ids of 0 (none sent) pass.
#[derive(Debug, Default)]
pub(crate) struct SeqGate {
    last: Vec<u64>,
}

impl SeqGate {
    /// # Errors
    /// [`ParseError::OutOfOrder`] when `seq` is not newer than the last one for `symbol`.
    pub(crate) fn admit(&mut self, symbol: SymbolId, seq: u64) -> Result<(), ParseError> {
        if seq == 0 {
            return Ok(());
        }
        let i = symbol.index();
        if i >= self.last.len() {
            // Bounded by the symbol table's size.
            self.last.resize(i + 1, 0);
        }
        let last = self.last[i];
        if seq <= last {
            return Err(ParseError::OutOfOrder { seq, last });
        }
        self.last[i] = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_drops_stale_updates_per_symbol() {
        let mut g = SeqGate::default();
        let (a, b) = (SymbolId(0), SymbolId(3));
        assert!(g.admit(a, 5).is_ok());
        assert!(g.admit(b, 1).is_ok(), "symbols are independent");
        assert_eq!(
            g.admit(a, 5).map_err(|e| e.label()),
            Err("out_of_order"),
            "a repeat"
        );
        assert!(g.admit(a, 4).is_err(), "older");
        assert!(g.admit(a, 6).is_ok());
        assert!(g.admit(a, 0).is_ok(), "no id: nothing to compare");
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(num("25.3519"), Ok(25.3519));
        for bad in ["", "abc", "NaN", "inf", "1e999"] {
            assert!(num(bad).is_err(), "{bad}");
        }
    }
}
