//! BingX frame encoding: JSON shaped as BingX writes it, keys in alphabetical order as in its
//! documented trade example and in live captures, prices and sizes as decimal strings (the
//! driver gzips every server frame, as BingX does: [`crate::ws::driver::Frame::Gzip`]).

use crate::format::trimmed;
use crate::market::{Instrument, Quote, Trade};

/// `{"ping":"2177c68e4d0e45679965f482929b59c2","time":"2022-06-07T16:27:36.323+0800"}`
pub(super) fn ping(id: &str, time: &str) -> String {
    serde_json::json!({"ping": id, "time": time}).to_string()
}

/// The subscribe answer as the spot service sends it:
/// `{"code":0,"id":"<id>","msg":"SUCCESS","timestamp":1759225965363}`.
pub(super) fn ack(id: &str, ts_ms: i64) -> String {
    serde_json::json!({"code": 0, "id": id, "msg": "SUCCESS", "timestamp": ts_ms}).to_string()
}

/// A refusal: `{"code":100400,"id":"<id>","msg":"..","timestamp":..}` (no `id` when the
/// request had none).
pub(super) fn error(id: Option<&str>, code: u32, msg: &str, ts_ms: i64) -> String {
    let mut m = serde_json::Map::new();
    m.insert("code".into(), code.into());
    if let Some(id) = id {
        m.insert("id".into(), id.into());
    }
    m.insert("msg".into(), msg.into());
    m.insert("timestamp".into(), ts_ms.into());
    serde_json::Value::Object(m).to_string()
}

/// `{"code":0,"data":{"A":"..","B":"..","E":..,"T":..,"a":"..","b":"..","e":"bookTicker",
/// "s":"BTC-USDT","u":..},"dataType":"BTC-USDT@bookTicker","success":true,"timestamp":..}`
pub(super) fn book_ticker(inst: &Instrument, q: &Quote, now_ms: i64) -> String {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    let ts = q.ts_us / 1_000;
    format!(
        r#"{{"code":0,"data":{{"A":"{ask_qty}","B":"{bid_qty}","E":{ts},"T":{ts},"a":"{ask}","b":"{bid}","e":"bookTicker","s":"{s}","u":{seq}}},"dataType":"{s}@bookTicker","success":true,"timestamp":{now_ms}}}"#,
        s = inst.symbol.as_str(),
        seq = q.seq,
        ask = trimmed(b.ask, pd),
        ask_qty = trimmed(b.ask_qty, qd),
        bid = trimmed(b.bid, pd),
        bid_qty = trimmed(b.bid_qty, qd),
    )
}

/// `{"code":0,"data":{"E":..,"T":..,"e":"trade","m":true,"p":"..","q":"..","s":"BTC-USDT",
/// "t":".."},"dataType":"BTC-USDT@trade","success":true}`; `m` true when the buyer is the
/// maker (the taker sold).
pub(super) fn trade(inst: &Instrument, t: &Trade, now_ms: i64) -> String {
    format!(
        r#"{{"code":0,"data":{{"E":{now_ms},"T":{ts},"e":"trade","m":{m},"p":"{p}","q":"{q}","s":"{s}","t":"{id}"}},"dataType":"{s}@trade","success":true}}"#,
        s = inst.symbol.as_str(),
        ts = t.ts_us / 1_000,
        m = !t.taker_buy,
        p = trimmed(t.price, inst.price_decimals),
        q = trimmed(t.qty, inst.qty_decimals),
        id = t.trade_id,
    )
}

/// A Unix time in ms as BingX writes its ping times: `2022-06-07T16:27:36.323+0800` (UTC+8).
pub(super) fn ping_time(unix_ms: i64) -> String {
    let local = unix_ms + 8 * 3_600_000;
    let (days, ms) = (local.div_euclid(86_400_000), local.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+0800",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ping_times_are_written_as_bingx_does() {
        // 2022-06-07T08:27:36.323Z
        assert_eq!(
            super::ping_time(1_654_590_456_323),
            "2022-06-07T16:27:36.323+0800"
        );
        assert_eq!(super::ping_time(0), "1970-01-01T08:00:00.000+0800");
    }
}
