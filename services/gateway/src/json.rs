//! The JSON forms of the wire messages, shared by `/ws` frames, snapshots and REST answers:
//! exactly the protobuf fields (`proto/spreadagg/v1/market.proto`) plus `"type"`, enums as
//! lowercase strings. Non-finite numbers become `null`, as JSON has no NaN.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use spreadagg_model::wire::{ChartSnapshot, Side, Signal, SignalKind, Spread, Tick, Trade};

use crate::hub::event::Payload;

/// Serialises a frame. The types here hold only strings and numbers, so serde_json cannot
/// fail on them; should it ever, the client gets a fixed error frame rather than nothing.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Utf8Bytes {
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a gateway frame");
            Utf8Bytes::from_static(
                r#"{"type":"error","code":"internal","message":"internal encoding failure"}"#,
            )
        }
    }
}

/// A spread point.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SpreadPoint)]
pub(crate) struct SpreadJson<'a> {
    /// Always `spread`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) symbol: &'a str,
    pub(crate) exchange_a: &'a str,
    pub(crate) exchange_b: &'a str,
    pub(crate) bid_a: f64,
    pub(crate) ask_a: f64,
    pub(crate) bid_b: f64,
    pub(crate) ask_b: f64,
    pub(crate) ts_a_ns: i64,
    pub(crate) ts_b_ns: i64,
    /// `(bid_B / ask_A - 1) * 100`: buy on A, sell on B.
    pub(crate) a_to_b_pct: f64,
    /// `(bid_A / ask_B - 1) * 100`: buy on B, sell on A.
    pub(crate) b_to_a_pct: f64,
    /// `(bid_A / bid_B - 1) * 100`: the charted series.
    pub(crate) bid_bid_pct: f64,
    pub(crate) staleness_ms: f64,
    pub(crate) triggered_by: &'a str,
    /// The 97th percentile of the last 200 `bid_bid_pct` values.
    pub(crate) upper_band: f64,
    /// The 3rd percentile.
    pub(crate) lower_band: f64,
    pub(crate) ts_ns: i64,
}

impl<'a> From<&'a Spread> for SpreadJson<'a> {
    fn from(s: &'a Spread) -> Self {
        SpreadJson {
            kind: "spread",
            symbol: &s.symbol,
            exchange_a: &s.exchange_a,
            exchange_b: &s.exchange_b,
            bid_a: s.bid_a,
            ask_a: s.ask_a,
            bid_b: s.bid_b,
            ask_b: s.ask_b,
            ts_a_ns: s.ts_a_ns,
            ts_b_ns: s.ts_b_ns,
            a_to_b_pct: s.a_to_b_pct,
            b_to_a_pct: s.b_to_a_pct,
            bid_bid_pct: s.bid_bid_pct,
            staleness_ms: s.staleness_ms,
            triggered_by: &s.triggered_by,
            upper_band: s.upper_band,
            lower_band: s.lower_band,
            ts_ns: s.ts_ns,
        }
    }
}

/// Best bid and ask of one exchange.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TickPoint)]
pub(crate) struct TickJson<'a> {
    /// Always `tick`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) exchange: &'a str,
    pub(crate) symbol: &'a str,
    pub(crate) bid_px: f64,
    pub(crate) bid_qty: f64,
    pub(crate) ask_px: f64,
    pub(crate) ask_qty: f64,
    /// `(ask - bid) / ask * 100`.
    pub(crate) book_spread_pct: f64,
    pub(crate) exchange_ts_ns: i64,
    pub(crate) recv_ts_ns: i64,
    pub(crate) seq: u64,
}

impl<'a> From<&'a Tick> for TickJson<'a> {
    fn from(t: &'a Tick) -> Self {
        TickJson {
            kind: "tick",
            exchange: &t.exchange,
            symbol: &t.symbol,
            bid_px: t.bid_px,
            bid_qty: t.bid_qty,
            ask_px: t.ask_px,
            ask_qty: t.ask_qty,
            book_spread_pct: t.book_spread_pct,
            exchange_ts_ns: t.exchange_ts_ns,
            recv_ts_ns: t.recv_ts_ns,
            seq: t.seq,
        }
    }
}

/// One public trade.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TradePoint)]
pub(crate) struct TradeJson<'a> {
    /// Always `trade`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) exchange: &'a str,
    pub(crate) symbol: &'a str,
    pub(crate) price: f64,
    pub(crate) qty: f64,
    /// The taker's side: `buy`, `sell` or `unspecified`.
    pub(crate) side: &'static str,
    pub(crate) trade_id: &'a str,
    pub(crate) exchange_ts_ns: i64,
    pub(crate) recv_ts_ns: i64,
}

pub(crate) fn side(t: &Trade) -> &'static str {
    match t.side() {
        Side::Buy => "buy",
        Side::Sell => "sell",
        Side::Unspecified => "unspecified",
    }
}

impl<'a> From<&'a Trade> for TradeJson<'a> {
    fn from(t: &'a Trade) -> Self {
        TradeJson {
            kind: "trade",
            exchange: &t.exchange,
            symbol: &t.symbol,
            price: t.price,
            qty: t.qty,
            side: side(t),
            trade_id: &t.trade_id,
            exchange_ts_ns: t.exchange_ts_ns,
            recv_ts_ns: t.recv_ts_ns,
        }
    }
}

/// A deviation signal for one symbol across exchanges.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SignalPoint)]
pub(crate) struct SignalJson<'a> {
    /// Always `signal`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) symbol: &'a str,
    /// `entry` or `exit` (`unspecified` never comes from the engine).
    pub(crate) signal: &'static str,
    /// `(max_bid - min_bid) / min_bid * 100` across exchanges with fresh ticks.
    pub(crate) deviation_pct: f64,
    pub(crate) cheap_exchange: &'a str,
    pub(crate) expensive_exchange: &'a str,
    pub(crate) cheap_bid: f64,
    pub(crate) expensive_bid: f64,
    pub(crate) ts_ns: i64,
    pub(crate) expires_ts_ns: i64,
}

impl<'a> From<&'a Signal> for SignalJson<'a> {
    fn from(s: &'a Signal) -> Self {
        SignalJson {
            kind: "signal",
            symbol: &s.symbol,
            signal: match s.kind() {
                SignalKind::Entry => "entry",
                SignalKind::Exit => "exit",
                SignalKind::Unspecified => "unspecified",
            },
            deviation_pct: s.deviation_pct,
            cheap_exchange: &s.cheap_exchange,
            expensive_exchange: &s.expensive_exchange,
            cheap_bid: s.cheap_bid,
            expensive_bid: s.expensive_bid,
            ts_ns: s.ts_ns,
            expires_ts_ns: s.expires_ts_ns,
        }
    }
}

/// A pair's chart window, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Chart)]
pub(crate) struct ChartJson<'a> {
    /// Always `chart`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) symbol: &'a str,
    pub(crate) exchange_a: &'a str,
    pub(crate) exchange_b: &'a str,
    pub(crate) ts_ns: &'a [i64],
    /// `bid_bid_pct` of each point.
    pub(crate) spread_pct: &'a [f32],
    pub(crate) upper_band: &'a [f32],
    pub(crate) lower_band: &'a [f32],
}

impl<'a> From<&'a ChartSnapshot> for ChartJson<'a> {
    fn from(c: &'a ChartSnapshot) -> Self {
        ChartJson {
            kind: "chart",
            symbol: &c.symbol,
            exchange_a: &c.exchange_a,
            exchange_b: &c.exchange_b,
            ts_ns: &c.ts_ns,
            spread_pct: &c.spread_pct,
            upper_band: &c.upper_band,
            lower_band: &c.lower_band,
        }
    }
}

/// The `/ws` frame of one event.
pub(crate) fn event_frame(payload: &Payload) -> Utf8Bytes {
    match payload {
        Payload::Spread(s) => encode(&SpreadJson::from(s)),
        Payload::Tick(t) => encode(&TickJson::from(t)),
        Payload::Trade(t) => encode(&TradeJson::from(t)),
        Payload::Signal(s) => encode(&SignalJson::from(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn spread_frames_carry_every_proto_field() {
        let s = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            bid_a: 100.5,
            ask_a: 100.75,
            bid_b: 101.0,
            ask_b: 101.25,
            ts_a_ns: 1_700_000_000_000_000_001,
            ts_b_ns: 1_700_000_000_000_000_002,
            a_to_b_pct: 0.25,
            b_to_a_pct: -0.75,
            bid_bid_pct: -0.5,
            staleness_ms: 1.5,
            triggered_by: "okx".into(),
            upper_band: 0.125,
            lower_band: f64::NAN,
            ts_ns: 1_700_000_000_000_000_003,
        };
        let v: Value = serde_json::from_str(&event_frame(&Payload::Spread(s))).expect("json");
        assert_eq!(
            v,
            json!({
                "type": "spread", "symbol": "BTC-USDT", "exchange_a": "binance",
                "exchange_b": "okx", "bid_a": 100.5, "ask_a": 100.75, "bid_b": 101.0,
                "ask_b": 101.25, "ts_a_ns": 1_700_000_000_000_000_001_i64,
                "ts_b_ns": 1_700_000_000_000_000_002_i64, "a_to_b_pct": 0.25,
                "b_to_a_pct": -0.75, "bid_bid_pct": -0.5, "staleness_ms": 1.5,
                "triggered_by": "okx", "upper_band": 0.125, "lower_band": null,
                "ts_ns": 1_700_000_000_000_000_003_i64
            })
        );
    }

    #[test]
    fn ticks_trades_and_signals_carry_their_fields_and_enum_names() {
        let t = Tick {
            exchange: "okx".into(),
            symbol: "BTC-USDT".into(),
            bid_px: 1.5,
            bid_qty: 2.0,
            ask_px: 1.75,
            ask_qty: 3.0,
            book_spread_pct: 0.25,
            exchange_ts_ns: 10,
            recv_ts_ns: 11,
            seq: 12,
        };
        let v: Value = serde_json::from_str(&event_frame(&Payload::Tick(t))).expect("json");
        assert_eq!(
            v,
            json!({"type":"tick","exchange":"okx","symbol":"BTC-USDT","bid_px":1.5,"bid_qty":2.0,
                   "ask_px":1.75,"ask_qty":3.0,"book_spread_pct":0.25,"exchange_ts_ns":10,
                   "recv_ts_ns":11,"seq":12})
        );
        let mut tr = Trade {
            exchange: "kraken".into(),
            symbol: "ETH-USD".into(),
            price: 3000.5,
            qty: 0.25,
            trade_id: "t-1".into(),
            exchange_ts_ns: 5,
            recv_ts_ns: 6,
            ..Trade::default()
        };
        tr.set_side(Side::Sell);
        let v: Value = serde_json::from_str(&event_frame(&Payload::Trade(tr))).expect("json");
        assert_eq!(
            v,
            json!({"type":"trade","exchange":"kraken","symbol":"ETH-USD","price":3000.5,
                   "qty":0.25,"side":"sell","trade_id":"t-1","exchange_ts_ns":5,"recv_ts_ns":6})
        );
        let mut s = Signal {
            symbol: "BTC-USDT".into(),
            deviation_pct: 0.4,
            cheap_exchange: "okx".into(),
            expensive_exchange: "binance".into(),
            cheap_bid: 100.0,
            expensive_bid: 100.4,
            ts_ns: 7,
            expires_ts_ns: 8,
            ..Signal::default()
        };
        s.set_kind(SignalKind::Entry);
        let v: Value = serde_json::from_str(&event_frame(&Payload::Signal(s))).expect("json");
        assert_eq!(
            v,
            json!({"type":"signal","symbol":"BTC-USDT","signal":"entry","deviation_pct":0.4,
                   "cheap_exchange":"okx","expensive_exchange":"binance","cheap_bid":100.0,
                   "expensive_bid":100.4,"ts_ns":7,"expires_ts_ns":8})
        );
    }
}
