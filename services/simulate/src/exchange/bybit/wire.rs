//! Bybit's push and operation-reply shapes, fields in the documented order.

use serde::Serialize;

use crate::format::fixed;
use crate::market::{Instrument, Quote, Trade};

/// `{"success":true,"ret_msg":"subscribe","conn_id":"..","req_id":"1","op":"subscribe"}`; a
/// refusal has `success` false and the reason in `ret_msg`.
#[derive(Serialize)]
pub(super) struct OpReply<'a> {
    pub(super) success: bool,
    pub(super) ret_msg: &'a str,
    pub(super) conn_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) req_id: Option<&'a str>,
    pub(super) op: &'a str,
}

/// `{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":..,"data":{..},"cts":..}`
#[derive(Serialize)]
pub(super) struct BookPush<'a> {
    pub(super) topic: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) ts: i64,
    pub(super) data: BookData<'a>,
    pub(super) cts: i64,
}

/// `{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":..,"seq":..}`
#[derive(Serialize)]
pub(super) struct BookData<'a> {
    pub(super) s: &'a str,
    pub(super) b: [[String; 2]; 1],
    pub(super) a: [[String; 2]; 1],
    pub(super) u: u64,
    pub(super) seq: u64,
}

/// `{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":..,"data":[..]}`
#[derive(Serialize)]
pub(super) struct TradePush<'a> {
    pub(super) topic: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) ts: i64,
    pub(super) data: [TradeData<'a>; 1],
}

/// `{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","i":"..","BT":false}`
#[derive(Serialize)]
pub(super) struct TradeData<'a> {
    #[serde(rename = "T")]
    pub(super) time: i64,
    pub(super) s: &'a str,
    /// The taker's side.
    #[serde(rename = "S")]
    pub(super) side: &'static str,
    pub(super) v: String,
    pub(super) p: String,
    pub(super) i: String,
    #[serde(rename = "BT")]
    pub(super) block_trade: bool,
}

/// The level-1 snapshot of `q`, pushed at `ts_ms` (a re-push keeps the book's `u` and `cts`).
pub(super) fn book<'a>(inst: &'a Instrument, q: &Quote, ts_ms: i64) -> BookPush<'a> {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    BookPush {
        topic: format!("orderbook.1.{}", inst.concat),
        kind: "snapshot",
        ts: ts_ms,
        data: BookData {
            s: &inst.concat,
            b: [[fixed(b.bid, pd), fixed(b.bid_qty, qd)]],
            a: [[fixed(b.ask, pd), fixed(b.ask_qty, qd)]],
            u: q.seq,
            seq: q.seq,
        },
        cts: q.ts_us / 1_000,
    }
}

pub(super) fn trade<'a>(inst: &'a Instrument, t: &Trade) -> TradePush<'a> {
    let ts = t.ts_us / 1_000;
    TradePush {
        topic: format!("publicTrade.{}", inst.concat),
        kind: "snapshot",
        ts,
        data: [TradeData {
            time: ts,
            s: &inst.concat,
            side: if t.taker_buy { "Buy" } else { "Sell" },
            v: fixed(t.qty, inst.qty_decimals),
            p: fixed(t.price, inst.price_decimals),
            i: t.trade_id.to_string(),
            block_trade: false,
        }],
    }
}
