//! Kraken's spellings and frames: REST with legacy asset codes (`XXBT`, `ZUSD`, pair keys like
//! `XXBTZUSD`, wsname `XBT/USD`), WebSocket v2 with `BTC/USD`, JSON-number prices and
//! RFC 3339 times.

use serde_json::{Value, json};

use crate::format::{float, trimmed};
use crate::market::{Instrument, Quote, Trade};

/// Kraken's REST asset code and alternative name for a canonical asset: the legacy
/// four-letter codes for the assets that have one, the asset itself otherwise.
pub(super) fn asset_codes(asset: &str) -> (String, String) {
    let (rest, alt) = match asset {
        "BTC" => ("XXBT", "XBT"),
        "DOGE" => ("XXDG", "XDG"),
        "ETH" => ("XETH", "ETH"),
        "ETC" => ("XETC", "ETC"),
        "LTC" => ("XLTC", "LTC"),
        "XRP" => ("XXRP", "XRP"),
        "XLM" => ("XXLM", "XLM"),
        "XMR" => ("XXMR", "XMR"),
        "ZEC" => ("XZEC", "ZEC"),
        "USD" => ("ZUSD", "USD"),
        "EUR" => ("ZEUR", "EUR"),
        "GBP" => ("ZGBP", "GBP"),
        "JPY" => ("ZJPY", "JPY"),
        "CAD" => ("ZCAD", "CAD"),
        "AUD" => ("ZAUD", "AUD"),
        other => (other, other),
    };
    (rest.to_owned(), alt.to_owned())
}

/// How Kraken's REST names one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PairNames {
    /// The result key of AssetPairs and Ticker: `XXBTZUSD` where both assets have legacy
    /// codes (Dogecoin excepted), the altname (`XBTUSDT`, `SOLUSD`, `XDGUSD`) otherwise.
    pub key: String,
    pub altname: String,
    /// `XBT/USD`: the v1 WebSocket name.
    pub wsname: String,
    pub base: String,
    pub quote: String,
}

pub(super) fn pair_names(inst: &Instrument) -> PairNames {
    let (base, alt_base) = asset_codes(inst.symbol.base());
    let (quote, alt_quote) = asset_codes(inst.symbol.quote());
    let altname = format!("{alt_base}{alt_quote}");
    // Dogecoin's pairs are keyed by altname (`XDGUSD`) although its code is `XXDG`.
    let legacy = |code: &str, alt: &str| code.len() == 4 && code != alt && code != "XXDG";
    let key = if legacy(&base, &alt_base) && legacy(&quote, &alt_quote) {
        format!("{base}{quote}")
    } else {
        altname.clone()
    };
    PairNames {
        key,
        altname,
        wsname: format!("{alt_base}/{alt_quote}"),
        base,
        quote,
    }
}

/// The WebSocket v2 symbol: `BTC/USD`.
pub(super) fn v2_symbol(inst: &Instrument) -> String {
    format!("{}/{}", inst.symbol.base(), inst.symbol.quote())
}

/// Unix microseconds as RFC 3339 with microseconds: `2022-12-25T09:30:59.123456Z`.
pub(super) fn rfc3339(ts_us: i64) -> String {
    let secs = ts_us.div_euclid(1_000_000);
    let micros = ts_us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // H. Hinnant's civil_from_days.
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

/// A JSON number with exactly the instrument's decimals (no trailing zeros).
fn number(units: i64, decimals: u32) -> String {
    trimmed(units, decimals)
}

/// `{"channel":"status","type":"update","data":[{"version":"2.0.0","system":"online",
/// "api_version":"v2","connection_id":..}]}`
pub(super) fn status(connection_id: u64, system: &str) -> String {
    json!({
        "channel": "status",
        "type": "update",
        "data": [{
            "version": "2.0.0",
            "system": system,
            "api_version": "v2",
            "connection_id": connection_id,
        }],
    })
    .to_string()
}

pub(super) const HEARTBEAT: &str = r#"{"channel":"heartbeat"}"#;

/// `{"method":"pong","req_id":N,"time_in":..,"time_out":..}`
pub(super) fn pong(req_id: Option<&Value>, time_in: &str, time_out: &str) -> String {
    let mut v = json!({"method": "pong", "time_in": time_in, "time_out": time_out});
    if let Some(id) = req_id {
        v["req_id"] = id.clone();
    }
    v.to_string()
}

/// A successful (un)subscribe answer for one symbol.
pub(super) fn ack(
    method: &str,
    req_id: Option<&Value>,
    result: Value,
    time_in: &str,
    time_out: &str,
) -> String {
    let mut v = json!({
        "method": method,
        "result": result,
        "success": true,
        "time_in": time_in,
        "time_out": time_out,
    });
    if let Some(id) = req_id {
        v["req_id"] = id.clone();
    }
    v.to_string()
}

/// A refusal: `{"error":"..","method":"subscribe","req_id":N,"success":false,
/// "symbol":"XYZ/USD","time_in":..,"time_out":..}` (`symbol` when the error is about one).
pub(super) fn error(
    method: Option<&str>,
    req_id: Option<&Value>,
    symbol: Option<&str>,
    message: &str,
    time_in: &str,
    time_out: &str,
) -> String {
    let mut v = json!({
        "error": message,
        "success": false,
        "time_in": time_in,
        "time_out": time_out,
    });
    if let Some(m) = method {
        v["method"] = json!(m);
    }
    if let Some(id) = req_id {
        v["req_id"] = id.clone();
    }
    if let Some(s) = symbol {
        v["symbol"] = json!(s);
    }
    v.to_string()
}

/// `{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":..,"bid_qty":..,
/// "ask":..,"ask_qty":..,"last":..,"volume":..,"vwap":..,"low":..,"high":..,"change":..,
/// "change_pct":..,"timestamp":".."}]}`, in the field order of Kraken's examples.
pub(super) fn ticker(inst: &Instrument, q: &Quote, kind: &str) -> String {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let (b, s) = (q.book, q.stats);
    let vwap = if s.base_volume > 0.0 {
        s.quote_volume / s.base_volume
    } else {
        0.0
    };
    let change = s.last - s.open;
    let change_pct = if s.open > 0 {
        change as f64 / s.open as f64 * 100.0
    } else {
        0.0
    };
    format!(
        r#"{{"channel":"ticker","type":"{kind}","data":[{{"symbol":"{sym}","bid":{bid},"bid_qty":{bid_qty},"ask":{ask},"ask_qty":{ask_qty},"last":{last},"volume":{volume},"vwap":{vwap},"low":{low},"high":{high},"change":{change},"change_pct":{change_pct},"timestamp":"{ts}"}}]}}"#,
        sym = v2_symbol(inst),
        bid = number(b.bid, pd),
        bid_qty = number(b.bid_qty, qd),
        ask = number(b.ask, pd),
        ask_qty = number(b.ask_qty, qd),
        last = number(s.last, pd),
        volume = float(s.base_volume, 8),
        vwap = float(vwap, pd + 1),
        low = number(s.low, pd),
        high = number(s.high, pd),
        change = number(change, pd),
        change_pct = float(change_pct, 2),
        ts = rfc3339(q.ts_us),
    )
}

/// One trade object of a `trade` push.
pub(super) fn trade_object(inst: &Instrument, t: &Trade) -> String {
    format!(
        r#"{{"symbol":"{sym}","side":"{side}","price":{price},"qty":{qty},"ord_type":"{ord}","trade_id":{id},"timestamp":"{ts}"}}"#,
        sym = v2_symbol(inst),
        side = if t.taker_buy { "buy" } else { "sell" },
        price = number(t.price, inst.price_decimals),
        qty = number(t.qty, inst.qty_decimals),
        ord = if t.trade_id.is_multiple_of(3) {
            "limit"
        } else {
            "market"
        },
        id = t.trade_id,
        ts = rfc3339(t.ts_us),
    )
}

/// `{"channel":"trade","type":"update"|"snapshot","data":[..]}`
pub(super) fn trades(objects: &[String], kind: &str) -> String {
    format!(
        r#"{{"channel":"trade","type":"{kind}","data":[{}]}}"#,
        objects.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_671_960_659_123_456),
            "2022-12-25T09:30:59.123456Z"
        );
        assert_eq!(
            rfc3339(1_709_251_199_999_999),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(rfc3339(951_868_800_500_000), "2000-03-01T00:00:00.500000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn legacy_codes() {
        assert_eq!(asset_codes("BTC"), ("XXBT".into(), "XBT".into()));
        assert_eq!(asset_codes("USDT"), ("USDT".into(), "USDT".into()));
        assert_eq!(asset_codes("SOL"), ("SOL".into(), "SOL".into()));
    }
}
