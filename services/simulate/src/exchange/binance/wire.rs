//! Binance's payload and reply shapes, in Binance's field order.

use serde::Serialize;
use serde_json::Value;

use super::DECIMALS;
use crate::format::padded;
use crate::market::{Instrument, Quote};

/// `{"result":..,"id":..}`, in Binance's field order.
#[derive(Serialize)]
pub(super) struct Reply<'a, T: Serialize> {
    pub(super) result: T,
    pub(super) id: &'a Value,
}

/// `{"error":{"code":..,"msg":..},"id":..}`.
#[derive(Serialize)]
pub(super) struct ErrorReply<'a> {
    pub(super) error: ErrorBody<'a>,
    pub(super) id: &'a Value,
}

#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    pub(super) code: i64,
    pub(super) msg: &'a str,
}

/// `{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}`
#[derive(Serialize)]
pub(super) struct BookTicker<'a> {
    pub(super) u: u64,
    pub(super) s: &'a str,
    pub(super) b: String,
    #[serde(rename = "B")]
    pub(super) bid_qty: String,
    pub(super) a: String,
    #[serde(rename = "A")]
    pub(super) ask_qty: String,
}

/// `{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}`
#[derive(Serialize)]
pub(super) struct TradeEvent<'a> {
    pub(super) e: &'static str,
    #[serde(rename = "E")]
    pub(super) event_time: i64,
    pub(super) s: &'a str,
    pub(super) t: u64,
    pub(super) p: String,
    pub(super) q: String,
    #[serde(rename = "T")]
    pub(super) trade_time: i64,
    /// Is the buyer the maker, i.e. did the taker sell?
    pub(super) m: bool,
    #[serde(rename = "M")]
    pub(super) ignore: bool,
}

/// `{"e":"serverShutdown","E":1770123456789}`
#[derive(Serialize)]
pub(super) struct ServerShutdown {
    pub(super) e: &'static str,
    #[serde(rename = "E")]
    pub(super) event_time: i64,
}

/// `{"stream":"btcusdt@bookTicker","data":{..}}` on combined connections.
#[derive(Serialize)]
pub(super) struct Combined<'a, T: Serialize> {
    pub(super) stream: &'a str,
    pub(super) data: T,
}

pub(super) fn book_ticker_payload<'a>(inst: &'a Instrument, q: &Quote) -> BookTicker<'a> {
    BookTicker {
        u: q.seq,
        s: &inst.concat,
        b: padded(q.book.bid, inst.price_decimals, DECIMALS),
        bid_qty: padded(q.book.bid_qty, inst.qty_decimals, DECIMALS),
        a: padded(q.book.ask, inst.price_decimals, DECIMALS),
        ask_qty: padded(q.book.ask_qty, inst.qty_decimals, DECIMALS),
    }
}
