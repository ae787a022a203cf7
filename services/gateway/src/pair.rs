//! An exchange pair in the contract's canonical order.

use spreadagg_model::ExchangeId;

/// An exchange pair in canonical order: `a < b` comparing the lowercase ids, as in the
/// subjects `md.spread.<symbol>.<a>.<b>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    a: ExchangeId,
    b: ExchangeId,
}

impl Pair {
    /// Orders two different exchanges canonically; `None` when they are the same.
    pub fn new(x: ExchangeId, y: ExchangeId) -> Option<Pair> {
        match x.as_str().cmp(y.as_str()) {
            std::cmp::Ordering::Less => Some(Pair { a: x, b: y }),
            std::cmp::Ordering::Greater => Some(Pair { a: y, b: x }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// Parses two lowercase ids (in either order); `None` unless both are known and differ.
    pub fn parse(x: &str, y: &str) -> Option<Pair> {
        Pair::new(x.parse().ok()?, y.parse().ok()?)
    }

    /// The lexicographically smaller exchange.
    pub fn a(self) -> ExchangeId {
        self.a
    }

    /// The lexicographically larger exchange.
    pub fn b(self) -> ExchangeId {
        self.b
    }

    /// Whether `x` is one of the two.
    pub fn has(self, x: ExchangeId) -> bool {
        self.a == x || self.b == x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_canonical_by_lowercase_id() {
        use ExchangeId::{Binance, Bybit, Gateio, Okx};
        // Enum order is not lexicographic (okx before gateio), the pair order must be.
        let p = Pair::new(Okx, Gateio).expect("distinct");
        assert_eq!((p.a(), p.b()), (Gateio, Okx));
        assert!(p.has(Okx) && p.has(Gateio) && !p.has(Binance));
        assert_eq!(Pair::new(Binance, Bybit), Pair::new(Bybit, Binance));
        assert_eq!(Pair::new(Okx, Okx), None);
        assert_eq!(Pair::parse("okx", "binance"), Pair::new(Binance, Okx));
        assert_eq!(Pair::parse("okx", "ftx"), None);
    }
}
