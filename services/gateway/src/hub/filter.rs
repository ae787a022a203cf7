//! What a subscription selects: a channel, a symbol pattern and an exchange pattern. Shared by
//! every surface (WebSocket, gRPC); each parses its own request format into a [`Filter`].

use spreadagg_model::symbol::valid_part;
use spreadagg_model::{ExchangeId, Symbol};

use super::event::{Channel, Event, Venue};
use crate::pair::Pair;

/// Which symbols: one, every symbol of a base asset (`BTC-*`), of a quote asset (`*-USDT`),
/// or all (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SymbolPattern {
    Exact(Symbol),
    Base(Box<str>),
    Quote(Box<str>),
    Any,
}

/// The pattern is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid symbol {0:?}: expected BASE-QUOTE in upper case (BTC-USDT), BASE-*, *-QUOTE or *")]
pub(crate) struct InvalidPattern(pub(crate) String);

impl SymbolPattern {
    /// Parses `BTC-USDT`, `BTC-*`, `*-USDT`, `*` (and `*-*`, the same as `*`).
    ///
    /// # Errors
    /// Anything else, lower case included.
    pub(crate) fn parse(text: &str) -> Result<SymbolPattern, InvalidPattern> {
        let bad = || InvalidPattern(text.chars().take(48).collect());
        if text == "*" {
            return Ok(SymbolPattern::Any);
        }
        let (base, quote) = text.split_once('-').ok_or_else(bad)?;
        match (base, quote) {
            ("*", "*") => Ok(SymbolPattern::Any),
            ("*", q) if valid_part(q) => Ok(SymbolPattern::Quote(q.into())),
            (b, "*") if valid_part(b) => Ok(SymbolPattern::Base(b.into())),
            _ => text.parse().map(SymbolPattern::Exact).map_err(|_| bad()),
        }
    }

    pub(crate) fn matches(&self, symbol: &Symbol) -> bool {
        match self {
            SymbolPattern::Exact(s) => s == symbol,
            SymbolPattern::Base(b) => symbol.base() == &**b,
            SymbolPattern::Quote(q) => symbol.quote() == &**q,
            SymbolPattern::Any => true,
        }
    }

    /// The canonical text (`BTC-USDT`, `BTC-*`, `*-USDT`, `*`).
    pub(crate) fn text(&self) -> String {
        match self {
            SymbolPattern::Exact(s) => s.to_string(),
            SymbolPattern::Base(b) => format!("{b}-*"),
            SymbolPattern::Quote(q) => format!("*-{q}"),
            SymbolPattern::Any => "*".to_owned(),
        }
    }

    pub(crate) fn exact(&self) -> Option<&Symbol> {
        match self {
            SymbolPattern::Exact(s) => Some(s),
            _ => None,
        }
    }
}

/// Which exchanges: any; one exchange (a tick or trade from it, a spread of a pair with it);
/// one pair (spreads only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum VenuePattern {
    Any,
    Exchange(ExchangeId),
    Pair(Pair),
}

impl VenuePattern {
    pub(crate) fn matches(self, venue: Venue) -> bool {
        match (self, venue) {
            (VenuePattern::Any, _) => true,
            (VenuePattern::Exchange(x), Venue::Pair(p)) => p.has(x),
            (VenuePattern::Exchange(x), Venue::One(y)) => x == y,
            (VenuePattern::Pair(p), Venue::Pair(q)) => p == q,
            _ => false,
        }
    }
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Filter {
    pub(crate) channel: Channel,
    pub(crate) symbol: SymbolPattern,
    pub(crate) venue: VenuePattern,
    /// A `charts` subscription: the spreads of one pair, with the pair's chart window as its
    /// snapshot. Routed like any spreads subscription; kept apart so that it and a `spreads`
    /// subscription of the same pair are held and removed separately.
    pub(crate) chart: bool,
}

impl Filter {
    pub(crate) fn matches(&self, event: &Event) -> bool {
        self.channel == event.channel
            && self.symbol.matches(&event.symbol)
            && self.venue.matches(event.venue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_patterns_parse_and_match() {
        let btc: Symbol = "BTC-USDT".parse().expect("valid");
        let eth: Symbol = "ETH-USDC".parse().expect("valid");
        let cases = [
            ("BTC-USDT", true, false),
            ("BTC-*", true, false),
            ("*-USDT", true, false),
            ("*-USDC", false, true),
            ("*", true, true),
            ("*-*", true, true),
            ("ETH-*", false, true),
        ];
        for (text, on_btc, on_eth) in cases {
            let p = SymbolPattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.matches(&btc), on_btc, "{text} on BTC-USDT");
            assert_eq!(p.matches(&eth), on_eth, "{text} on ETH-USDC");
            if text != "*-*" {
                assert_eq!(p.text(), text);
            }
        }
        for bad in [
            "",
            "btc-usdt",
            "BTC",
            "BTC-",
            "-USDT",
            "**",
            "BTC*",
            "B*-USDT",
            "*-usdt",
            "BTC-USDT>",
            "BTC-USDT-X",
            ">",
        ] {
            assert!(SymbolPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SymbolPattern::parse(&format!("{}-*", "A".repeat(21))).is_err());
    }

    #[test]
    fn venue_patterns_match_pairs_and_single_exchanges() {
        use ExchangeId::{Binance, Bybit, Okx};
        let p = Pair::new(Okx, Binance).expect("distinct");
        assert!(VenuePattern::Any.matches(Venue::None));
        assert!(VenuePattern::Exchange(Okx).matches(Venue::Pair(p)));
        assert!(!VenuePattern::Exchange(Bybit).matches(Venue::Pair(p)));
        assert!(VenuePattern::Exchange(Okx).matches(Venue::One(Okx)));
        assert!(!VenuePattern::Exchange(Okx).matches(Venue::One(Binance)));
        assert!(!VenuePattern::Exchange(Okx).matches(Venue::None));
        assert!(VenuePattern::Pair(p).matches(Venue::Pair(p)));
        assert!(!VenuePattern::Pair(p).matches(Venue::One(Okx)));
    }
}
