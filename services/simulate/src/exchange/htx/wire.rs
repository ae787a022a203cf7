//! HTX frame encoding: JSON shaped as HTX documents it, prices and sizes as JSON numbers (the
//! driver gzips every server frame, as HTX does: [`crate::ws::driver::Frame::Gzip`]).

use crate::format::trimmed;
use crate::market::{Instrument, Quote, Trade};

/// `{"ping":1492420473027}`
pub(super) fn ping(n: u64) -> String {
    format!(r#"{{"ping":{n}}}"#)
}

/// `{"id":"id1","status":"ok","subbed":"market.btcusdt.bbo","ts":1489474081631}`
pub(super) fn subbed(id: Option<&str>, topic: &str, ts_ms: i64) -> String {
    serde_json::json!({"id": id, "status": "ok", "subbed": topic, "ts": ts_ms}).to_string()
}

/// `{"id":"id2","status":"ok","unsubbed":"market.btcusdt.bbo","ts":..}`
pub(super) fn unsubbed(id: Option<&str>, topic: &str, ts_ms: i64) -> String {
    serde_json::json!({"id": id, "status": "ok", "unsubbed": topic, "ts": ts_ms}).to_string()
}

/// `{"id":"id1","status":"error","err-code":"bad-request","err-msg":"invalid topic ..","ts":..}`
pub(super) fn error(id: Option<&str>, code: &str, msg: &str, ts_ms: i64) -> String {
    serde_json::json!({"id": id, "status": "error", "err-code": code, "err-msg": msg, "ts": ts_ms})
        .to_string()
}

/// `{"ch":"market.btcusdt.bbo","ts":..,"tick":{"seqId":..,"ask":..,"askSize":..,"bid":..,
/// "bidSize":..,"quoteTime":..,"symbol":"btcusdt"}}`
pub(super) fn bbo(inst: &Instrument, q: &Quote, now_ms: i64) -> String {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    format!(
        r#"{{"ch":"market.{s}.bbo","ts":{now_ms},"tick":{{"seqId":{seq},"ask":{ask},"askSize":{ask_sz},"bid":{bid},"bidSize":{bid_sz},"quoteTime":{qt},"symbol":"{s}"}}}}"#,
        s = inst.stream,
        seq = q.seq,
        ask = trimmed(b.ask, pd),
        ask_sz = trimmed(b.ask_qty, qd),
        bid = trimmed(b.bid, pd),
        bid_sz = trimmed(b.bid_qty, qd),
        qt = q.ts_us / 1_000,
    )
}

/// `{"ch":"market.btcusdt.trade.detail","ts":..,"tick":{"id":..,"ts":..,"data":[{"id":..,
/// "ts":..,"tradeId":..,"amount":..,"price":..,"direction":"buy"}]}}`. HTX's per-trade `id` is
/// wider than 64 bits; the simulator writes one too, so that clients must not read it as `u64`.
pub(super) fn trade(inst: &Instrument, t: &Trade, now_ms: i64) -> String {
    let ts = t.ts_us / 1_000;
    format!(
        r#"{{"ch":"market.{s}.trade.detail","ts":{now_ms},"tick":{{"id":{seq},"ts":{ts},"data":[{{"id":1{trade_id:020}{seq:020},"ts":{ts},"tradeId":{trade_id},"amount":{amount},"price":{price},"direction":"{dir}"}}]}}}}"#,
        s = inst.stream,
        seq = t.seq,
        trade_id = t.trade_id,
        amount = trimmed(t.qty, inst.qty_decimals),
        price = trimmed(t.price, inst.price_decimals),
        dir = if t.taker_buy { "buy" } else { "sell" },
    )
}
