//! Coinbase Advanced Trade frame encoding: JSON laid out as Coinbase documents it (field order
//! included, which the ingestor's fast path reads), numbers as decimal strings, times as
//! RFC 3339 with nanoseconds and trailing zeros trimmed (Go's `RFC3339Nano`, as Coinbase
//! writes them: `2023-02-09T20:19:35.39625135Z`).

use serde_json::{Value, json};

/// Unix microseconds as RFC 3339 UTC with trimmed nanoseconds.
pub(crate) fn rfc3339(ts_us: i64) -> String {
    let secs = ts_us.div_euclid(1_000_000);
    let nanos = ts_us.rem_euclid(1_000_000) * 1_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let mut frac = format!(".{nanos:09}");
        while frac.ends_with('0') {
            frac.pop();
        }
        s.push_str(&frac);
    }
    s.push('Z');
    s
}

/// The envelope every push shares, around `events` (already JSON).
fn push(channel: &str, ts_us: i64, seq: u64, events: &str) -> String {
    format!(
        r#"{{"channel":"{channel}","client_id":"","timestamp":"{}","sequence_num":{seq},"events":[{events}]}}"#,
        rfc3339(ts_us)
    )
}

/// `{"type":"error","message":".."}`: Coinbase's errors carry no sequence number.
pub(crate) fn error(message: &str) -> String {
    json!({"type": "error", "message": message}).to_string()
}

/// `subscriptions`: everything the connection holds, by channel.
pub(crate) fn subscriptions(ts_us: i64, seq: u64, held: &[(&str, Vec<&str>)]) -> String {
    let map: serde_json::Map<String, Value> = held
        .iter()
        .map(|(channel, products)| ((*channel).to_owned(), json!(products)))
        .collect();
    let events = json!({"subscriptions": map}).to_string();
    push("subscriptions", ts_us, seq, &events)
}

/// `heartbeats`: `current_time` as Coinbase writes it (Go's default time format).
pub(crate) fn heartbeat(ts_us: i64, seq: u64, counter: u64) -> String {
    let t = rfc3339(ts_us);
    let current = format!("{} {} +0000 UTC", &t[..10], t[11..].trim_end_matches('Z'));
    let events = format!(r#"{{"current_time":"{current}","heartbeat_counter":{counter}}}"#);
    push("heartbeats", ts_us, seq, &events)
}

/// One level2 change: side (`bid`/`offer`), price, new quantity ("0" deletes), its time.
pub(crate) struct Level<'a> {
    pub side: &'static str,
    pub price: &'a str,
    pub qty: &'a str,
    pub event_time_us: i64,
}

/// `l2_data` with one event (`snapshot` or `update`) for one product.
pub(crate) fn l2_data(
    ts_us: i64,
    seq: u64,
    kind: &str,
    product: &str,
    levels: &[Level<'_>],
) -> String {
    let updates: Vec<String> = levels
        .iter()
        .map(|l| {
            format!(
                r#"{{"side":"{}","event_time":"{}","price_level":"{}","new_quantity":"{}"}}"#,
                l.side,
                rfc3339(l.event_time_us),
                l.price,
                l.qty
            )
        })
        .collect();
    let events = format!(
        r#"{{"type":"{kind}","product_id":"{product}","updates":[{}]}}"#,
        updates.join(",")
    );
    push("l2_data", ts_us, seq, &events)
}

/// One public trade as `market_trades` carries it; `side` is the taker's.
pub(crate) struct TradeFields<'a> {
    pub trade_id: u64,
    pub product: &'a str,
    pub price: &'a str,
    pub size: &'a str,
    pub taker_buy: bool,
    pub ts_us: i64,
}

/// `market_trades` with one event (`snapshot` or `update`).
pub(crate) fn market_trades(
    ts_us: i64,
    seq: u64,
    kind: &str,
    trades: &[TradeFields<'_>],
) -> String {
    let trades: Vec<String> = trades
        .iter()
        .map(|t| {
            format!(
                r#"{{"trade_id":"{}","product_id":"{}","price":"{}","size":"{}","side":"{}","time":"{}"}}"#,
                t.trade_id,
                t.product,
                t.price,
                t.size,
                if t.taker_buy { "BUY" } else { "SELL" },
                rfc3339(t.ts_us)
            )
        })
        .collect();
    let events = format!(r#"{{"type":"{kind}","trades":[{}]}}"#, trades.join(","));
    push("market_trades", ts_us, seq, &events)
}

/// The fields of one `ticker` entry.
pub(crate) struct TickerFields<'a> {
    pub product: &'a str,
    pub price: &'a str,
    pub volume_24h: &'a str,
    pub low_24h: &'a str,
    pub high_24h: &'a str,
    pub best_bid: &'a str,
    pub best_bid_qty: &'a str,
    pub best_ask: &'a str,
    pub best_ask_qty: &'a str,
}

/// `ticker` with one event (`snapshot` or `update`): pushed when a trade happens.
pub(crate) fn ticker(ts_us: i64, seq: u64, kind: &str, t: &TickerFields<'_>) -> String {
    let events = format!(
        r#"{{"type":"{kind}","tickers":[{{"type":"ticker","product_id":"{}","price":"{}","volume_24_h":"{}","low_24_h":"{}","high_24_h":"{}","low_52_w":"{}","high_52_w":"{}","price_percent_chg_24_h":"0","best_bid":"{}","best_bid_quantity":"{}","best_ask":"{}","best_ask_quantity":"{}"}}]}}"#,
        t.product,
        t.price,
        t.volume_24h,
        t.low_24h,
        t.high_24h,
        t.low_24h,
        t.high_24h,
        t.best_bid,
        t.best_bid_qty,
        t.best_ask,
        t.best_ask_qty
    );
    push("ticker", ts_us, seq, &events)
}
