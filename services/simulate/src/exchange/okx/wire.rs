//! OKX's push, ack and error shapes.

use serde::Serialize;

use crate::format::{float_trimmed, trimmed};
use crate::market::{Instrument, Quote, Trade};

/// `{"channel":"bbo-tbt","instId":"BTC-USDT"}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg<'a> {
    pub(super) channel: &'a str,
    pub(super) inst_id: &'a str,
}

/// `{"id":"1512","event":"subscribe","arg":{..},"connId":"a4d3ae55"}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ack<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) event: &'a str,
    pub(super) arg: Arg<'a>,
    pub(super) conn_id: &'a str,
}

/// `{"id":"1512","event":"error","code":"60012","msg":"Invalid request: ..","connId":".."}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) event: &'static str,
    pub(super) code: &'a str,
    pub(super) msg: &'a str,
    pub(super) conn_id: &'a str,
}

/// `{"arg":{..},"data":[..]}`
#[derive(Serialize)]
pub(super) struct Push<'a, T: Serialize> {
    pub(super) arg: Arg<'a>,
    pub(super) data: [T; 1],
}

/// `{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bbo {
    pub(super) asks: [[String; 4]; 1],
    pub(super) bids: [[String; 4]; 1],
    pub(super) ts: String,
    pub(super) seq_id: u64,
}

/// `{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"1","source":"0","seqId":1234}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OkxTrade<'a> {
    pub(super) inst_id: &'a str,
    pub(super) trade_id: String,
    pub(super) px: String,
    pub(super) sz: String,
    /// The taker's side.
    pub(super) side: &'static str,
    pub(super) ts: String,
    pub(super) count: &'static str,
    pub(super) source: &'static str,
    pub(super) seq_id: u64,
}

/// A `tickers` push and a REST ticker: last, best bid/ask and 24 h statistics. For SPOT,
/// `vol24h` is in the base currency and `volCcy24h` in the quote currency.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OkxTicker<'a> {
    pub(super) inst_type: &'static str,
    pub(super) inst_id: &'a str,
    pub(super) last: String,
    pub(super) last_sz: String,
    pub(super) ask_px: String,
    pub(super) ask_sz: String,
    pub(super) bid_px: String,
    pub(super) bid_sz: String,
    pub(super) open24h: String,
    pub(super) high24h: String,
    pub(super) low24h: String,
    pub(super) vol_ccy24h: String,
    pub(super) vol24h: String,
    pub(super) sod_utc0: String,
    pub(super) sod_utc8: String,
    pub(super) ts: String,
}

pub(super) fn okx_ticker<'a>(inst: &'a Instrument, q: &Quote) -> OkxTicker<'a> {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let s = q.stats;
    OkxTicker {
        inst_type: "SPOT",
        inst_id: inst.symbol.as_str(),
        last: trimmed(s.last, pd),
        last_sz: trimmed(s.last_qty, qd),
        ask_px: trimmed(q.book.ask, pd),
        ask_sz: trimmed(q.book.ask_qty, qd),
        bid_px: trimmed(q.book.bid, pd),
        bid_sz: trimmed(q.book.bid_qty, qd),
        open24h: trimmed(s.open, pd),
        high24h: trimmed(s.high, pd),
        low24h: trimmed(s.low, pd),
        vol_ccy24h: float_trimmed(s.quote_volume, pd),
        vol24h: float_trimmed(s.base_volume, qd),
        sod_utc0: trimmed(s.open, pd),
        sod_utc8: trimmed(s.open, pd),
        ts: (q.ts_us / 1_000).to_string(),
    }
}

pub(super) fn bbo(inst: &Instrument, q: &Quote) -> Bbo {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    Bbo {
        asks: [[
            trimmed(b.ask, pd),
            trimmed(b.ask_qty, qd),
            "0".to_owned(),
            b.ask_orders.to_string(),
        ]],
        bids: [[
            trimmed(b.bid, pd),
            trimmed(b.bid_qty, qd),
            "0".to_owned(),
            b.bid_orders.to_string(),
        ]],
        ts: (q.ts_us / 1_000).to_string(),
        seq_id: q.seq,
    }
}

pub(super) fn okx_trade<'a>(inst: &'a Instrument, t: &Trade) -> OkxTrade<'a> {
    OkxTrade {
        inst_id: inst.symbol.as_str(),
        trade_id: t.trade_id.to_string(),
        px: trimmed(t.price, inst.price_decimals),
        sz: trimmed(t.qty, inst.qty_decimals),
        side: if t.taker_buy { "buy" } else { "sell" },
        ts: (t.ts_us / 1_000).to_string(),
        count: "1",
        source: "0",
        seq_id: t.seq,
    }
}
