//! Exchange ids: the lowercase names used in subjects, Parquet partitions, APIs and flags.

use std::fmt;
use std::str::FromStr;

/// One supported exchange. The string form is part of the contract (DESIGN.md), and is also
/// its serde form.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum ExchangeId {
    Binance,
    Bybit,
    Okx,
    Gateio,
    Bitget,
    Kucoin,
    Mexc,
    Htx,
    Bingx,
    Coinbase,
    Kraken,
}

impl ExchangeId {
    /// Every exchange id, in the order of the contract.
    pub const ALL: [ExchangeId; 11] = [
        ExchangeId::Binance,
        ExchangeId::Bybit,
        ExchangeId::Okx,
        ExchangeId::Gateio,
        ExchangeId::Bitget,
        ExchangeId::Kucoin,
        ExchangeId::Mexc,
        ExchangeId::Htx,
        ExchangeId::Bingx,
        ExchangeId::Coinbase,
        ExchangeId::Kraken,
    ];

    /// The lowercase id.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExchangeId::Binance => "binance",
            ExchangeId::Bybit => "bybit",
            ExchangeId::Okx => "okx",
            ExchangeId::Gateio => "gateio",
            ExchangeId::Bitget => "bitget",
            ExchangeId::Kucoin => "kucoin",
            ExchangeId::Mexc => "mexc",
            ExchangeId::Htx => "htx",
            ExchangeId::Bingx => "bingx",
            ExchangeId::Coinbase => "coinbase",
            ExchangeId::Kraken => "kraken",
        }
    }
}

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id named no known exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown exchange id {0:?} (known: binance, bybit, okx, gateio, bitget, kucoin, mexc, htx, bingx, coinbase, kraken)"
)]
pub struct UnknownExchange(pub String);

impl TryFrom<String> for ExchangeId {
    type Error = UnknownExchange;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ExchangeId> for &'static str {
    fn from(id: ExchangeId) -> Self {
        id.as_str()
    }
}

impl FromStr for ExchangeId {
    type Err = UnknownExchange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExchangeId::ALL
            .into_iter()
            .find(|id| id.as_str() == s)
            .ok_or_else(|| UnknownExchange(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_round_trips() {
        for id in ExchangeId::ALL {
            assert_eq!(id.as_str().parse::<ExchangeId>(), Ok(id));
        }
    }

    #[test]
    fn ids_are_case_sensitive_and_unknowns_rejected() {
        assert!("Binance".parse::<ExchangeId>().is_err());
        assert!("ftx".parse::<ExchangeId>().is_err());
    }
}
