//! Normalised market-data events as they travel inside an ingestor: numbers and an interned
//! [`SymbolId`], no strings (the exchange and symbol names are filled in once, when the
//! publisher encodes the message).

use spreadagg_model::wire::Side;

use crate::symbols::SymbolId;

/// Best bid and ask of one symbol, validated (positive, not crossed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub symbol: SymbolId,
    pub bid_px: f64,
    pub bid_qty: f64,
    pub ask_px: f64,
    pub ask_qty: f64,
    /// The exchange's time; 0 where it sends none (Binance bookTicker).
    pub exchange_ts_ns: i64,
    pub recv_ts_ns: i64,
    /// The exchange's update id, 0 where it sends none.
    pub seq: u64,
}

/// One public trade.
#[derive(Debug, Clone, PartialEq)]
pub struct Print {
    pub symbol: SymbolId,
    pub price: f64,
    pub qty: f64,
    /// The taker's side.
    pub side: Side,
    pub trade_id: String,
    pub exchange_ts_ns: i64,
    pub recv_ts_ns: i64,
}

/// A normalised market-data event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Quote(Quote),
    Print(Print),
}

impl Event {
    pub fn symbol(&self) -> SymbolId {
        match self {
            Event::Quote(q) => q.symbol,
            Event::Print(p) => p.symbol,
        }
    }
}
