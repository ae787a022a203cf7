//! Bitget's push, ack and error shapes (v2 public, spot).

use serde::Serialize;

use crate::format::{float_trimmed, trimmed};
use crate::market::{Instrument, Quote, Trade};

/// `{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"}`
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg<'a> {
    pub(super) inst_type: &'a str,
    pub(super) channel: &'a str,
    pub(super) inst_id: &'a str,
}

/// `{"event":"subscribe","arg":{..}}`
#[derive(Serialize)]
pub(super) struct Ack<'a> {
    pub(super) event: &'a str,
    pub(super) arg: Arg<'a>,
}

/// `{"event":"error","arg":{..},"code":30001,"msg":"..","op":"subscribe"}` (the layout of
/// Bitget's changelog of 2023-08-23); `arg` and `op` only when the error concerns one.
#[derive(Serialize)]
pub(super) struct ErrorEvent<'a> {
    pub(super) event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) arg: Option<Arg<'a>>,
    pub(super) code: u32,
    pub(super) msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) op: Option<&'a str>,
}

/// `{"action":"snapshot","arg":{..},"data":[..],"ts":1695715383039}`
#[derive(Serialize)]
pub(super) struct Push<'a, T: Serialize> {
    pub(super) action: &'static str,
    pub(super) arg: Arg<'a>,
    pub(super) data: Vec<T>,
    pub(super) ts: i64,
}

/// A spot `ticker` element, fields in the order of Bitget's Tickers-Channel page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ticker<'a> {
    pub(super) inst_id: &'a str,
    pub(super) last_pr: String,
    pub(super) open24h: String,
    pub(super) high24h: String,
    pub(super) low24h: String,
    pub(super) change24h: String,
    pub(super) bid_pr: String,
    pub(super) ask_pr: String,
    pub(super) bid_sz: String,
    pub(super) ask_sz: String,
    pub(super) base_volume: String,
    pub(super) quote_volume: String,
    pub(super) open_utc: String,
    pub(super) change_utc24h: String,
    pub(super) ts: String,
}

/// A `trade` element: `{"ts":"..","price":"..","size":"..","side":"buy","tradeId":".."}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TradeData {
    pub(super) ts: String,
    pub(super) price: String,
    pub(super) size: String,
    /// The taker's side.
    pub(super) side: &'static str,
    pub(super) trade_id: String,
}

/// The 24 h change as a fraction (`0.01` is 1 %), as Bitget writes it.
fn change(last: i64, open: i64) -> String {
    if open == 0 {
        return "0".to_owned();
    }
    #[allow(clippy::cast_precision_loss)]
    let c = (last - open) as f64 / open as f64;
    float_trimmed(c, 4)
}

pub(super) fn ticker<'a>(inst: &'a Instrument, q: &Quote) -> Ticker<'a> {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let s = q.stats;
    Ticker {
        inst_id: &inst.concat,
        last_pr: trimmed(s.last, pd),
        open24h: trimmed(s.open, pd),
        high24h: trimmed(s.high, pd),
        low24h: trimmed(s.low, pd),
        change24h: change(s.last, s.open),
        bid_pr: trimmed(q.book.bid, pd),
        ask_pr: trimmed(q.book.ask, pd),
        bid_sz: trimmed(q.book.bid_qty, qd),
        ask_sz: trimmed(q.book.ask_qty, qd),
        base_volume: float_trimmed(s.base_volume, qd),
        quote_volume: float_trimmed(s.quote_volume, pd),
        open_utc: trimmed(s.open, pd),
        change_utc24h: change(s.last, s.open),
        ts: (q.ts_us / 1_000).to_string(),
    }
}

pub(super) fn trade(inst: &Instrument, t: &Trade) -> TradeData {
    TradeData {
        ts: (t.ts_us / 1_000).to_string(),
        price: trimmed(t.price, inst.price_decimals),
        size: trimmed(t.qty, inst.qty_decimals),
        side: if t.taker_buy { "buy" } else { "sell" },
        trade_id: t.trade_id.to_string(),
    }
}
