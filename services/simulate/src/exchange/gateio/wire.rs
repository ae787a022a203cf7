//! Gate.io's push, answer and REST shapes.

use serde::Serialize;

use crate::format::trimmed;
use crate::market::{Instrument, Quote, Trade};

/// Gate's pair spelling: `BTC_USDT`.
pub(crate) fn pair(inst: &Instrument) -> String {
    format!("{}_{}", inst.symbol.base(), inst.symbol.quote())
}

/// `{"code":2,"message":"unknown currency pair GIBBERISH_USD"}`
#[derive(Serialize)]
pub(super) struct WsError<'a> {
    pub(super) code: u8,
    pub(super) message: &'a str,
}

/// `{"status":"success"}`
#[derive(Serialize)]
pub(super) struct Status {
    pub(super) status: &'static str,
}

/// An answer to a client request: `{"time":..,"time_ms":..,"id":7,"conn_id":"..",
/// "channel":"spot.trades","event":"subscribe","result":{"status":"success"}}`, with an
/// `error` object (and a `null` result) when it failed, or the `spot.pong` to a `spot.ping`.
#[derive(Serialize)]
pub(super) struct Answer<'a> {
    pub(super) time: i64,
    pub(super) time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<u64>,
    pub(super) conn_id: &'a str,
    pub(super) channel: &'a str,
    pub(super) event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<WsError<'a>>,
    pub(super) result: Option<Status>,
}

/// A channel update: `{"time":..,"time_ms":..,"channel":"spot.book_ticker","event":"update","result":{..}}`.
#[derive(Serialize)]
pub(super) struct Update<T: Serialize> {
    pub(super) time: i64,
    pub(super) time_ms: i64,
    pub(super) channel: &'static str,
    pub(super) event: &'static str,
    pub(super) result: T,
}

/// `{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504","a":"19179.38","A":"0.09"}`
#[derive(Serialize)]
pub(super) struct BookTicker {
    pub(super) t: i64,
    pub(super) u: u64,
    pub(super) s: String,
    pub(super) b: String,
    #[serde(rename = "B")]
    pub(super) bid_qty: String,
    pub(super) a: String,
    #[serde(rename = "A")]
    pub(super) ask_qty: String,
}

/// `{"id":309143071,"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell",
/// "currency_pair":"GT_USDT","amount":"16.47","price":"0.4705","range":"..","sequence_id":".."}`
#[derive(Serialize)]
pub(super) struct GateTrade {
    pub(super) id: u64,
    pub(super) create_time: i64,
    /// Milliseconds with a fractional part, as a string.
    pub(super) create_time_ms: String,
    /// The taker's side.
    pub(super) side: &'static str,
    pub(super) currency_pair: String,
    pub(super) amount: String,
    pub(super) price: String,
    pub(super) range: String,
    pub(super) sequence_id: String,
}

pub(super) fn book_ticker(inst: &Instrument, q: &Quote) -> BookTicker {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    BookTicker {
        t: q.ts_us / 1_000,
        u: q.seq,
        s: pair(inst),
        b: trimmed(b.bid, pd),
        bid_qty: trimmed(b.bid_qty, qd),
        a: trimmed(b.ask, pd),
        ask_qty: trimmed(b.ask_qty, qd),
    }
}

/// Microseconds as Gate's fractional-millisecond string, four places: `"1606292218213.4570"`.
pub(crate) fn ms_text(ts_us: i64) -> String {
    let us = ts_us.max(0);
    format!("{}.{:03}0", us / 1_000, us % 1_000)
}

pub(super) fn trade(inst: &Instrument, t: &Trade) -> GateTrade {
    GateTrade {
        id: t.trade_id,
        create_time: t.ts_us / 1_000_000,
        create_time_ms: ms_text(t.ts_us),
        side: if t.taker_buy { "buy" } else { "sell" },
        currency_pair: pair(inst),
        amount: trimmed(t.qty, inst.qty_decimals),
        price: trimmed(t.price, inst.price_decimals),
        range: format!("{}-{}", t.trade_id, t.trade_id),
        sequence_id: t.seq.to_string(),
    }
}
