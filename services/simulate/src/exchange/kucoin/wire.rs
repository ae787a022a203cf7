//! KuCoin frame encoding: JSON text frames shaped as KuCoin documents them, every price and
//! size a decimal string.

use serde_json::json;

use crate::format::trimmed;
use crate::market::{Instrument, Quote, Trade};

/// `{"id":"<connectId>","type":"welcome"}`
pub(super) fn welcome(connect_id: &str) -> String {
    json!({"id": connect_id, "type": "welcome"}).to_string()
}

/// `{"id":"1545910660739","type":"ack"}`: the request id echoed as a string.
pub(super) fn ack(id: Option<&str>) -> String {
    json!({"id": id, "type": "ack"}).to_string()
}

/// `{"id":"1545910590801","type":"pong"}`
pub(super) fn pong(id: Option<&str>) -> String {
    json!({"id": id, "type": "pong"}).to_string()
}

/// `{"id":"1","type":"error","code":404,"data":"topic /market/ticker:FOO-USDT is not found"}`.
/// Before the welcome (a refused token) the id is the connect id, as KuCoin documents.
pub(super) fn error(id: Option<&str>, code: u16, data: &str) -> String {
    json!({"id": id, "type": "error", "code": code, "data": data}).to_string()
}

/// `trade.ticker` on `/market/ticker:BTC-USDT`:
/// `{"sequence":"..","price":"..","size":"..","bestAsk":"..","bestAskSize":"..","bestBid":"..",
/// "bestBidSize":"..","time":<ms>}`. `price`/`size` are the last trade's.
pub(super) fn ticker(inst: &Instrument, q: &Quote) -> String {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let (b, s) = (q.book, q.stats);
    format!(
        r#"{{"type":"message","topic":"/market/ticker:{sym}","subject":"trade.ticker","data":{{"sequence":"{seq}","price":"{price}","size":"{size}","bestAsk":"{ask}","bestAskSize":"{ask_sz}","bestBid":"{bid}","bestBidSize":"{bid_sz}","time":{time}}}}}"#,
        sym = inst.symbol.as_str(),
        seq = q.seq,
        price = trimmed(s.last, pd),
        size = trimmed(s.last_qty, qd),
        ask = trimmed(b.ask, pd),
        ask_sz = trimmed(b.ask_qty, qd),
        bid = trimmed(b.bid, pd),
        bid_sz = trimmed(b.bid_qty, qd),
        time = q.ts_us / 1_000,
    )
}

/// A 24-hex-digit order id, like KuCoin's, stable for one (symbol, trade, side of the book).
fn order_id(symbol: usize, trade_id: u64, maker: bool) -> String {
    let tag = u64::from(maker);
    format!("{:08x}{:016x}", symbol & 0xffff_ffff, (trade_id << 1) | tag)
}

/// `trade.l3match` on `/market/match:BTC-USDT`: `{"makerOrderId":..,"price":"..",
/// "sequence":"..","side":"buy","size":"..","symbol":"BTC-USDT","takerOrderId":..,
/// "time":"<ns>","tradeId":"..","type":"match"}`; `side` is the taker's.
pub(super) fn matched(inst: &Instrument, t: &Trade) -> String {
    format!(
        r#"{{"type":"message","topic":"/market/match:{sym}","subject":"trade.l3match","data":{{"makerOrderId":"{maker}","price":"{price}","sequence":"{seq}","side":"{side}","size":"{size}","symbol":"{sym}","takerOrderId":"{taker}","time":"{ns}","tradeId":"{trade_id}","type":"match"}}}}"#,
        sym = inst.symbol.as_str(),
        maker = order_id(t.symbol, t.trade_id, true),
        taker = order_id(t.symbol, t.trade_id, false),
        price = trimmed(t.price, inst.price_decimals),
        seq = t.seq,
        side = if t.taker_buy { "buy" } else { "sell" },
        size = trimmed(t.qty, inst.qty_decimals),
        ns = t.ts_us.saturating_mul(1_000),
        trade_id = t.trade_id,
    )
}
