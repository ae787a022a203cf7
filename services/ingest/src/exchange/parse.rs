//! Parse helpers every adapter shares: numbers as exchanges write them, validated quotes and
//! trades, and the per-symbol sequence gate that drops out-of-order updates.

use std::collections::{HashMap, HashSet};

use spreadagg_model::Symbol;
use spreadagg_model::wire::Side;

use super::{Instrument, ParseError};
use crate::event::{Print, Quote};
use crate::symbols::SymbolId;

/// Leaves out every trading instrument whose canonical symbol another trading instrument (a
/// different native, or a different [`Instrument::volume_key`]: Kraken's pair key) also
/// claims: which of them a frame, or a volume, would mean cannot be told. Instruments that
/// are not trading (offline, halted, delisted listings) neither collide nor are removed:
/// discovery skips them anyway, and a dead listing must not knock out the live one of the
/// same base and quote.
pub(crate) fn refuse_collisions(exchange: &str, list: Vec<Instrument>) -> Vec<Instrument> {
    let mut claims: HashMap<&Symbol, HashSet<(&str, &str)>> = HashMap::new();
    for i in list.iter().filter(|i| i.trading) {
        claims
            .entry(&i.symbol)
            .or_default()
            .insert((&i.native, i.volume_key()));
    }
    let clashing: HashSet<Symbol> = claims
        .into_iter()
        .filter(|(_, n)| n.len() > 1)
        .map(|(symbol, n)| {
            let mut n: Vec<(&str, &str)> = n.into_iter().collect();
            n.sort_unstable();
            tracing::warn!(exchange, %symbol, instruments = ?n, "trading instruments naming one symbol; all of them left out");
            symbol.clone()
        })
        .collect();
    if clashing.is_empty() {
        return list;
    }
    list.into_iter()
        .filter(|i| !(i.trading && clashing.contains(&i.symbol)))
        .collect()
}

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

    /// The text up to the next `"` (consumed), if it has no escape and no control character
    /// (JSON forbids those raw in a string; the general parser then rejects the frame).
    pub(crate) fn until_quote(&mut self) -> Option<&'a str> {
        let end = self.rest.find('"')?;
        let (value, rest) = self.rest.split_at(end);
        if value.bytes().any(|b| b == b'\\' || b < 0x20) {
            return None;
        }
        self.rest = &rest[1..];
        Some(value)
    }

    /// An unsigned integer as JSON writes one (digits only, at most 19, no leading zero).
    pub(crate) fn uint(&mut self) -> Option<u64> {
        let end = self
            .rest
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if end == 0 || end > 19 || (end > 1 && self.rest.starts_with('0')) {
            return None;
        }
        let (digits, rest) = self.rest.split_at(end);
        self.rest = rest;
        digits.parse().ok()
    }

    /// A number as JSON writes one (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`), finite.
    /// Correctly rounded (the standard library's parse); serde_json's default float parse,
    /// which the general path uses, may differ from it in the last bit.
    pub(crate) fn number(&mut self) -> Option<f64> {
        let b = self.rest.as_bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let int_start = usize::from(b.first() == Some(&b'-'));
        let mut end = digits(int_start);
        let int_len = end - int_start;
        if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
            return None;
        }
        if b.get(end) == Some(&b'.') {
            let frac_end = digits(end + 1);
            if frac_end == end + 1 {
                return None;
            }
            end = frac_end;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
            let exp_end = digits(end + 1 + sign);
            if exp_end == end + 1 + sign {
                return None;
            }
            end = exp_end;
        }
        let (text, rest) = self.rest.split_at(end);
        let value = text.parse::<f64>().ok().filter(|v| v.is_finite())?;
        self.rest = rest;
        Some(value)
    }

    /// True when nothing is left.
    pub(crate) fn done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Unix nanoseconds of an RFC 3339 time as Coinbase and Kraken write them
/// (`2022-12-25T09:30:59.123456Z`; any fraction, digits past the ninth dropped; `Z` or a
/// `+hh:mm` offset).
///
/// # Errors
/// When the text is not such a time, or is out of the nanosecond range of `i64`.
pub(crate) fn rfc3339_ns(text: &str) -> Result<i64, ParseError> {
    let bad = || ParseError::BadNumber(text.chars().take(40).collect());
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Result<i64, ParseError> {
        let s = b.get(from..from + n).ok_or_else(bad)?;
        s.iter().try_fold(0i64, |acc, &c| {
            if c.is_ascii_digit() {
                Ok(acc * 10 + i64::from(c - b'0'))
            } else {
                Err(bad())
            }
        })
    };
    let sep = |at: usize, chars: &[u8]| -> Result<(), ParseError> {
        match b.get(at) {
            Some(c) if chars.contains(c) => Ok(()),
            _ => Err(bad()),
        }
    };
    let year = digits(0, 4)?;
    sep(4, b"-")?;
    let month = digits(5, 2)?;
    sep(7, b"-")?;
    let day = digits(8, 2)?;
    sep(10, b"Tt")?;
    let hour = digits(11, 2)?;
    sep(13, b":")?;
    let minute = digits(14, 2)?;
    sep(16, b":")?;
    let second = digits(17, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = usize::try_from(month - 1)
        .ok()
        .and_then(|m| month_days.get(m))
        .copied()
        .ok_or_else(bad)?;
    if day < 1 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            sep(i + 3, b":")?;
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let s = h * 3_600 + m * 60;
            if sign == b'+' { s } else { -s }
        }
        _ => return Err(bad()),
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .ok_or_else(bad)
}

/// The last update id seen per symbol on one connection: an update not newer than the last
/// one is stale (a replay, or out of order) and is dropped. Ids of 0 (none sent) pass.
///
/// An exchange may restart its sequence (OKX after maintenance, Bybit's `u` of 1): a lower id
/// whose exchange time is later than the last accepted one's is a reset and is accepted, and
/// so is the third lower id in a row where the exchange sends no time; without that, every
/// quote after a reset would be dropped until the new ids caught up. An adapter told of a
/// restart (Bybit's `u` of 1) calls [`SeqGate::reset`], so the new sequence is taken at once.
#[derive(Debug, Default)]
pub(crate) struct SeqGate {
    last: Vec<Last>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Last {
    seq: u64,
    ts_ns: i64,
    /// Lower ids seen in a row since the last accepted one.
    regressions: u8,
}

/// Lower ids in a row (with no exchange time to tell) taken as a sequence reset.
const RESET_AFTER_REGRESSIONS: u8 = 3;

impl SeqGate {
    /// # Errors
    /// [`ParseError::OutOfOrder`] when the quote's id is not newer than the last one for its
    /// symbol (and is not a reset).
    pub(crate) fn admit(&mut self, q: &Quote) -> Result<(), ParseError> {
        let (seq, ts_ns) = (q.seq, q.exchange_ts_ns);
        if seq == 0 {
            return Ok(());
        }
        let i = q.symbol.index();
        if i >= self.last.len() {
            // Bounded by the symbol table's size.
            self.last.resize(i + 1, Last::default());
        }
        let last = &mut self.last[i];
        let newer = seq > last.seq;
        let reset = seq < last.seq
            && if ts_ns > 0 && last.ts_ns > 0 {
                ts_ns > last.ts_ns
            } else {
                last.regressions.saturating_add(1) >= RESET_AFTER_REGRESSIONS
            };
        if newer || reset {
            *last = Last {
                seq,
                ts_ns,
                regressions: 0,
            };
            return Ok(());
        }
        // Only lower ids in a row count towards a reset; a repeat breaks the run.
        if seq < last.seq {
            last.regressions = last.regressions.saturating_add(1);
        } else {
            last.regressions = 0;
        }
        Err(ParseError::OutOfOrder {
            seq,
            last: last.seq,
        })
    }

    /// The last id admitted for `symbol` (0: none yet).
    pub(crate) fn last(&self, symbol: SymbolId) -> u64 {
        self.last.get(symbol.index()).map_or(0, |l| l.seq)
    }

    /// Forgets `symbol`'s sequence, so that its next id is admitted whatever it is: for an
    /// exchange that says its sequence restarted (Bybit's `u` of 1).
    pub(crate) fn reset(&mut self, symbol: SymbolId) {
        if let Some(last) = self.last.get_mut(symbol.index()) {
            *last = Last::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_drops_stale_updates_per_symbol() {
        let mut g = SeqGate::default();
        let (a, b) = (SymbolId(0), SymbolId(3));
        let q = |symbol, seq, ts_ns| {
            quote(symbol, (1.0, 1.0), (2.0, 1.0), ts_ns, 1, seq).expect("a valid quote")
        };
        assert!(g.admit(&q(a, 5, 0)).is_ok());
        assert!(g.admit(&q(b, 1, 0)).is_ok(), "symbols are independent");
        assert_eq!(
            g.admit(&q(a, 5, 0)).map_err(|e| e.label()),
            Err("out_of_order"),
            "a repeat"
        );
        assert!(g.admit(&q(a, 4, 0)).is_err(), "older");
        assert!(g.admit(&q(a, 6, 0)).is_ok());
        assert!(g.admit(&q(a, 0, 0)).is_ok(), "no id: nothing to compare");
    }

    #[test]
    fn the_gate_takes_a_sequence_reset() {
        let mut g = SeqGate::default();
        let s = SymbolId(1);
        let q = |seq, ts_ns| quote(s, (1.0, 1.0), (2.0, 1.0), ts_ns, 1, seq).expect("valid");
        // With exchange times: a lower id at a later time is a reset.
        assert!(g.admit(&q(1_000, 50)).is_ok());
        assert!(g.admit(&q(999, 40)).is_err(), "older id, older time: stale");
        assert!(g.admit(&q(999, 50)).is_err(), "older id, same time: stale");
        assert!(g.admit(&q(3, 60)).is_ok(), "older id, later time: a reset");
        assert!(g.admit(&q(4, 61)).is_ok(), "the new sequence goes on");
        // Without times: the third lower id in a row is taken as a reset.
        let mut g = SeqGate::default();
        assert!(g.admit(&q(1_000, 0)).is_ok());
        assert!(g.admit(&q(1, 0)).is_err());
        assert!(g.admit(&q(2, 0)).is_err());
        assert!(
            g.admit(&q(3, 0)).is_ok(),
            "third regression in a row: reset"
        );
        assert!(g.admit(&q(4, 0)).is_ok());
        assert!(g.admit(&q(4, 0)).is_err(), "a repeat is still stale");
    }

    #[test]
    fn a_reset_admits_the_restarted_sequence_at_once() {
        let mut g = SeqGate::default();
        let (s, other) = (SymbolId(2), SymbolId(0));
        let q = |symbol, seq| quote(symbol, (1.0, 1.0), (2.0, 1.0), 0, 1, seq).expect("valid");
        assert!(g.admit(&q(s, 500)).is_ok());
        assert!(g.admit(&q(other, 700)).is_ok());
        assert_eq!(g.last(s), 500);
        assert!(
            g.admit(&q(s, 1)).is_err(),
            "a lower id without a reset is stale"
        );
        g.reset(s);
        assert_eq!(g.last(s), 0);
        assert!(g.admit(&q(s, 1)).is_ok(), "after a reset: admitted at once");
        assert!(g.admit(&q(s, 2)).is_ok());
        assert!(
            g.admit(&q(s, 2)).is_err(),
            "the restarted sequence is gated as usual"
        );
        assert!(
            g.admit(&q(other, 700)).is_err(),
            "other symbols keep their state"
        );
        g.reset(SymbolId(40));
        assert_eq!(
            g.last(SymbolId(40)),
            0,
            "resetting an unseen symbol is a no-op"
        );
    }

    #[test]
    fn many_stale_updates_never_overflow_the_regression_count() {
        let mut g = SeqGate::default();
        let s = SymbolId(0);
        let q = |seq, ts_ns| quote(s, (1.0, 1.0), (2.0, 1.0), ts_ns, 1, seq).expect("valid");
        assert!(g.admit(&q(1_000, 50)).is_ok());
        // 300 stale updates with times (each a lower id at an earlier time) ...
        for _ in 0..300 {
            assert!(g.admit(&q(999, 40)).is_err());
        }
        // ... then one without a time: counted as a reset, never a `u8` overflow.
        assert!(g.admit(&q(998, 0)).is_ok());
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
            Layout::new("007,").uint(),
            None,
            "JSON has no leading zeros"
        );
        assert_eq!(Layout::new("0,").uint(), Some(0));
        assert_eq!(
            Layout::new("a\u{1}b\"").until_quote(),
            None,
            "raw control character"
        );
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
    fn the_layout_cursor_reads_json_numbers_only() {
        for (text, value, rest) in [
            ("16829.51,", 16829.51, ","),
            ("0.707776}", 0.707776, "}"),
            ("0,", 0.0, ","),
            ("-1.5e3,", -1500.0, ","),
            ("2E-2}", 0.02, "}"),
            ("1e+2", 100.0, ""),
        ] {
            let mut l = Layout::new(text);
            assert_eq!(l.number(), Some(value), "{text}");
            assert_eq!(l.rest, rest, "{text}");
        }
        for bad in [
            "", "-", "01", ".5", "1.", "1.e2", "1e", "1e+", "+1", "NaN", "1e999", "x",
        ] {
            let mut l = Layout::new(bad);
            assert_eq!(l.number(), None, "{bad:?}");
            assert_eq!(l.rest, bad, "nothing consumed on {bad:?}");
        }
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(num("25.3519"), Ok(25.3519));
        for bad in ["", "abc", "NaN", "inf", "1e999"] {
            assert!(num(bad).is_err(), "{bad}");
        }
    }
}
