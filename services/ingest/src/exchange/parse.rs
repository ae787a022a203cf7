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

/// A cursor over a frame in one exact, documented layout: the hot path's fast parse. It
/// accepts only byte-for-byte literals between values and strings without escapes, so
/// anything else (other field order, whitespace, escapes) makes it return `None` and the
/// caller falls back to the general serde parser. It never accepts what serde would reject
/// with a different meaning: it is an optimisation, not a second grammar.
pub(crate) struct Layout<'a> {
    rest: &'a str,
}

impl<'a> Layout<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    /// Consumes exactly `lit`.
    pub(crate) fn lit(&mut self, lit: &str) -> Option<()> {
        self.rest = self.rest.strip_prefix(lit)?;
        Some(())
    }

    /// The text up to the next `"` (consumed), if it has no escape.
    pub(crate) fn until_quote(&mut self) -> Option<&'a str> {
        let end = self.rest.find('"')?;
        let (value, rest) = self.rest.split_at(end);
        if value.contains('\\') {
            return None;
        }
        self.rest = &rest[1..];
        Some(value)
    }

    /// An unsigned integer (digits only, at most 19 of them).
    pub(crate) fn uint(&mut self) -> Option<u64> {
        let end = self
            .rest
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if end == 0 || end > 19 {
            return None;
        }
        let (digits, rest) = self.rest.split_at(end);
        self.rest = rest;
        digits.parse().ok()
    }

    /// True when nothing is left.
    pub(crate) fn done(&self) -> bool {
        self.rest.is_empty()
    }
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
    fn the_layout_cursor_takes_only_the_exact_shape() {
        let mut l = Layout::new(r#"{"u":42,"s":"BTCUSDT"}"#);
        assert_eq!(l.lit(r#"{"u":"#), Some(()));
        assert_eq!(l.uint(), Some(42));
        assert_eq!(l.lit(r#","s":""#), Some(()));
        assert_eq!(l.until_quote(), Some("BTCUSDT"));
        assert_eq!(l.lit("}"), Some(()));
        assert!(l.done());
        assert_eq!(
            Layout::new(r#"a\"b""#).until_quote(),
            None,
            "escapes fall back"
        );
        assert_eq!(Layout::new("12345678901234567890").uint(), None, "too long");
        assert_eq!(Layout::new("x").uint(), None);
        assert_eq!(Layout::new("abc").until_quote(), None, "unterminated");
        assert_eq!(Layout::new("ab").lit("abc"), None);
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(num("25.3519"), Ok(25.3519));
        for bad in ["", "abc", "NaN", "inf", "1e999"] {
            assert!(num(bad).is_err(), "{bad}");
        }
    }
}
