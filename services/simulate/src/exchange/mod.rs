//! Simulated exchanges, one folder each.

pub(crate) mod binance;
pub(crate) mod htx;
pub(crate) mod kraken;
pub(crate) mod kucoin;
pub(crate) mod mexc;
pub(crate) mod okx;
