//! NATS subjects and stream names of the contract (DESIGN.md).
//!
//! `md.tick.<exchange>.<symbol>`, `md.trade.<exchange>.<symbol>`,
//! `md.spread.<symbol>.<exA>.<exB>`, `md.signal.<symbol>`.

use crate::{ExchangeId, Symbol};

/// Stream of ticks.
pub const STREAM_TICKS: &str = "MD_TICKS";
/// Stream of trades.
pub const STREAM_TRADES: &str = "MD_TRADES";
/// Stream of cross-exchange spread points.
pub const STREAM_SPREADS: &str = "MD_SPREADS";
/// Stream of deviation signals.
pub const STREAM_SIGNALS: &str = "MD_SIGNALS";

/// Every tick, trade, spread and signal subject.
pub const ALL_TICKS: &str = "md.tick.>";
pub const ALL_TRADES: &str = "md.trade.>";
pub const ALL_SPREADS: &str = "md.spread.>";
pub const ALL_SIGNALS: &str = "md.signal.>";

/// Every stream with the subject filter it captures.
pub const STREAMS: [(&str, &str); 4] = [
    (STREAM_TICKS, ALL_TICKS),
    (STREAM_TRADES, ALL_TRADES),
    (STREAM_SPREADS, ALL_SPREADS),
    (STREAM_SIGNALS, ALL_SIGNALS),
];

/// `md.tick.<exchange>.<symbol>`; `symbol` is canonical text.
pub fn tick(exchange: ExchangeId, symbol: &str) -> String {
    format!("md.tick.{exchange}.{symbol}")
}

/// `md.tick.<exchange>.<symbol>` from the text of both (as a tick message carries them).
pub fn tick_of(exchange: &str, symbol: &str) -> String {
    format!("md.tick.{exchange}.{symbol}")
}

/// `md.trade.<exchange>.<symbol>`; `symbol` is canonical text.
pub fn trade(exchange: ExchangeId, symbol: &str) -> String {
    format!("md.trade.{exchange}.{symbol}")
}

pub fn spread(symbol: &str, exchange_a: &str, exchange_b: &str) -> String {
    format!("md.spread.{symbol}.{exchange_a}.{exchange_b}")
}

/// Chart snapshot requests (core NATS request/reply, not a stream):
/// `md.chart.<symbol>.<exA>.<exB>`.
pub const ALL_CHARTS: &str = "md.chart.>";

pub fn chart(symbol: &str, exchange_a: &str, exchange_b: &str) -> String {
    format!("md.chart.{symbol}.{exchange_a}.{exchange_b}")
}

pub fn signal(symbol: &Symbol) -> String {
    format!("md.signal.{symbol}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_contract() {
        let s: Symbol = "BTC-USDT".parse().expect("valid");
        assert_eq!(
            tick(ExchangeId::Binance, s.as_str()),
            "md.tick.binance.BTC-USDT"
        );
        assert_eq!(trade(ExchangeId::Okx, s.as_str()), "md.trade.okx.BTC-USDT");
        assert_eq!(
            spread("BTC-USDT", "binance", "okx"),
            "md.spread.BTC-USDT.binance.okx"
        );
        assert_eq!(signal(&s), "md.signal.BTC-USDT");
    }
}
