//! The spread formulas of DESIGN.md, as pure functions. Every percentage is an f64.

/// Why a quote was rejected before use. Crossed or zero books happen on real feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("price is not a finite positive number")]
    NonPositive,
    #[error("quantity is negative or not finite")]
    BadQuantity,
    #[error("book is crossed (bid above ask)")]
    Crossed,
}

impl QuoteError {
    /// A short label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            QuoteError::NonPositive => "non_positive_price",
            QuoteError::BadQuantity => "bad_quantity",
            QuoteError::Crossed => "crossed",
        }
    }
}

/// Checks a best bid/ask before it is published.
///
/// # Errors
/// When a price is zero, negative or not finite, a quantity is negative or not finite, or the
/// bid is above the ask.
pub fn validate_quote(
    bid_px: f64,
    bid_qty: f64,
    ask_px: f64,
    ask_qty: f64,
) -> Result<(), QuoteError> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(bid_px) || !positive(ask_px) {
        return Err(QuoteError::NonPositive);
    }
    if !(bid_qty.is_finite() && bid_qty >= 0.0 && ask_qty.is_finite() && ask_qty >= 0.0) {
        return Err(QuoteError::BadQuantity);
    }
    if bid_px > ask_px {
        return Err(QuoteError::Crossed);
    }
    Ok(())
}

/// Book spread on one exchange: `(ask - bid) / ask * 100`.
pub fn book_spread_pct(bid: f64, ask: f64) -> f64 {
    (ask - bid) / ask * 100.0
}

/// The three cross-exchange percentages for exchanges A < B.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossSpread {
    /// Buy on A at its ask, sell on B at its bid: `(bid_B / ask_A - 1) * 100`.
    pub a_to_b_pct: f64,
    /// Buy on B at its ask, sell on A at its bid: `(bid_A / ask_B - 1) * 100`.
    pub b_to_a_pct: f64,
    /// `(bid_A / bid_B - 1) * 100`.
    pub bid_bid_pct: f64,
}

/// Computes the cross-exchange spread of A against B.
pub fn cross_spread(bid_a: f64, ask_a: f64, bid_b: f64, ask_b: f64) -> CrossSpread {
    CrossSpread {
        a_to_b_pct: (bid_b / ask_a - 1.0) * 100.0,
        b_to_a_pct: (bid_a / ask_b - 1.0) * 100.0,
        bid_bid_pct: (bid_a / bid_b - 1.0) * 100.0,
    }
}

/// Cross-symbol deviation: `(max_bid - min_bid) / min_bid * 100`.
pub fn deviation_pct(min_bid: f64, max_bid: f64) -> f64 {
    (max_bid - min_bid) / min_bid * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn book_spread_is_relative_to_the_ask() {
        assert!(close(book_spread_pct(99.0, 100.0), 1.0));
    }

    #[test]
    fn cross_spread_matches_the_design_card() {
        let s = cross_spread(100.0, 100.5, 101.0, 101.2);
        assert!(close(s.a_to_b_pct, (101.0 / 100.5 - 1.0) * 100.0));
        assert!(close(s.b_to_a_pct, (100.0 / 101.2 - 1.0) * 100.0));
        assert!(close(s.bid_bid_pct, (100.0 / 101.0 - 1.0) * 100.0));
    }

    #[test]
    fn deviation_is_relative_to_the_lowest_bid() {
        assert!(close(deviation_pct(100.0, 100.35), 0.35));
    }

    #[test]
    fn bad_quotes_are_named() {
        assert_eq!(
            validate_quote(0.0, 1.0, 1.0, 1.0),
            Err(QuoteError::NonPositive)
        );
        assert_eq!(
            validate_quote(f64::NAN, 1.0, 1.0, 1.0),
            Err(QuoteError::NonPositive)
        );
        assert_eq!(
            validate_quote(1.0, -1.0, 1.0, 1.0),
            Err(QuoteError::BadQuantity)
        );
        assert_eq!(validate_quote(2.0, 1.0, 1.0, 1.0), Err(QuoteError::Crossed));
        assert_eq!(
            validate_quote(1.0, 1.0, 1.0, 1.0),
            Ok(()),
            "a locked book is legal"
        );
    }
}
