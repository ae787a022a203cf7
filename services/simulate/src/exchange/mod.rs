//! Simulated exchanges, one folder each.

pub(crate) mod binance;
pub(crate) mod bingx;
pub(crate) mod bitget;
pub(crate) mod bybit;
pub(crate) mod coinbase;
pub(crate) mod gateio;
pub(crate) mod htx;
pub(crate) mod kraken;
pub(crate) mod kucoin;
pub(crate) mod mexc;
pub(crate) mod okx;
