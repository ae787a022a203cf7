//! Simulated exchanges, one folder each.

pub(crate) mod htx;
pub(crate) mod kucoin;
pub(crate) mod mexc;
