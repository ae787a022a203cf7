//! Canonical symbols: `BASE-QUOTE` in upper case, the same on every exchange.
//!
//! Each exchange adapter maps its own spelling both ways, from the exchange's own instrument
//! list (base and quote as the exchange names them), never by cutting strings at a guess.

use std::fmt;
use std::str::FromStr;

/// A canonical symbol such as `BTC-USDT`; its serde form is the canonical text.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

/// The text is not a canonical symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid symbol {0:?}: expected BASE-QUOTE, upper-case letters and digits (BTC-USDT)")]
pub struct InvalidSymbol(pub String);

/// Longest base or quote we accept; real ones are far shorter, this bounds hostile input.
const MAX_PART_LEN: usize = 20;

/// Whether `part` can be the base or quote of a canonical symbol: 1 to 20 upper-case letters
/// and digits.
pub fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_PART_LEN
        && part
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl Symbol {
    /// Builds the canonical symbol from a base and a quote asset as an exchange names them
    /// (any case).
    ///
    /// # Errors
    /// When either part is empty, too long or not alphanumeric.
    pub fn from_parts(base: &str, quote: &str) -> Result<Self, InvalidSymbol> {
        let base = base.to_ascii_uppercase();
        let quote = quote.to_ascii_uppercase();
        if valid_part(&base) && valid_part(&quote) {
            Ok(Symbol(format!("{base}-{quote}")))
        } else {
            Err(InvalidSymbol(format!("{base}-{quote}")))
        }
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base asset (`BTC` of `BTC-USDT`).
    pub fn base(&self) -> &str {
        self.0.split_once('-').map_or("", |(b, _)| b)
    }

    /// The quote asset (`USDT` of `BTC-USDT`).
    pub fn quote(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, q)| q)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Symbol {
    type Error = InvalidSymbol;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Symbol> for String {
    fn from(s: Symbol) -> Self {
        s.0
    }
}

impl FromStr for Symbol {
    type Err = InvalidSymbol;

    /// Parses canonical text exactly: upper case, one dash.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((base, quote)) if valid_part(base) && valid_part(quote) => {
                Ok(Symbol(s.to_owned()))
            }
            _ => Err(InvalidSymbol(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_text() {
        let s: Symbol = "BTC-USDT".parse().expect("valid");
        assert_eq!((s.base(), s.quote()), ("BTC", "USDT"));
    }

    #[test]
    fn rejects_non_canonical_text() {
        for bad in [
            "btc-usdt",
            "BTCUSDT",
            "BTC-",
            "-USDT",
            "BTC-US-DT",
            "BTC.USDT",
            "BTC-USDT>",
            "",
        ] {
            assert!(bad.parse::<Symbol>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn builds_from_exchange_parts_in_any_case() {
        assert_eq!(
            Symbol::from_parts("eth", "usdc").expect("valid").as_str(),
            "ETH-USDC"
        );
        assert!(Symbol::from_parts("ETH", "").is_err());
    }
}
