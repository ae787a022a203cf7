//! The prototype's message shapes, for its existing clients: envelopes
//! `{"MessageType": "Spread" | "Trade" | "AllSymbolInfo", "Payload": {...}}` with PascalCase
//! fields (our field names turned to PascalCase: `bid_a` -> `BidA`, `ts_a_ns` -> `TsANs`),
//! and chart snapshots `{symbol, exchange1, exchange2, timestamps[], spreads[], upperBand[],
//! lowerBand[]}` (timestamps in Unix milliseconds, as JavaScript charts take them).

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use spreadagg_model::Symbol;
use spreadagg_model::wire::{ChartSnapshot, Spread, Trade};

use crate::hub::event::Payload;
use crate::json::encode;

#[derive(Debug, Serialize)]
struct Envelope<P> {
    #[serde(rename = "MessageType")]
    message_type: &'static str,
    #[serde(rename = "Payload")]
    payload: P,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SpreadPayload<'a> {
    symbol: &'a str,
    exchange_a: &'a str,
    exchange_b: &'a str,
    bid_a: f64,
    ask_a: f64,
    bid_b: f64,
    ask_b: f64,
    ts_a_ns: i64,
    ts_b_ns: i64,
    a_to_b_pct: f64,
    b_to_a_pct: f64,
    bid_bid_pct: f64,
    staleness_ms: f64,
    triggered_by: &'a str,
    upper_band: f64,
    lower_band: f64,
    ts_ns: i64,
}

impl<'a> From<&'a Spread> for SpreadPayload<'a> {
    fn from(s: &'a Spread) -> Self {
        SpreadPayload {
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TradePayload<'a> {
    exchange: &'a str,
    symbol: &'a str,
    price: f64,
    qty: f64,
    /// `Buy`, `Sell` or `Unspecified`.
    side: &'static str,
    trade_id: &'a str,
    exchange_ts_ns: i64,
    recv_ts_ns: i64,
}

impl<'a> From<&'a Trade> for TradePayload<'a> {
    fn from(t: &'a Trade) -> Self {
        TradePayload {
            exchange: &t.exchange,
            symbol: &t.symbol,
            price: t.price,
            qty: t.qty,
            side: match crate::json::side(t) {
                "buy" => "Buy",
                "sell" => "Sell",
                _ => "Unspecified",
            },
            trade_id: &t.trade_id,
            exchange_ts_ns: t.exchange_ts_ns,
            recv_ts_ns: t.recv_ts_ns,
        }
    }
}

/// One symbol of the `AllSymbolInfo` payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SymbolInfo<'a> {
    pub(crate) symbol: &'a str,
    /// The exchanges the gateway has seen ticks of it from.
    pub(crate) exchanges: Vec<&'static str>,
}

/// The envelope of an event, for spreads and trades (the prototype sent nothing else live).
pub(crate) fn envelope(payload: &Payload) -> Option<Utf8Bytes> {
    match payload {
        Payload::Spread(s) => Some(encode(&Envelope {
            message_type: "Spread",
            payload: SpreadPayload::from(s),
        })),
        Payload::Trade(t) => Some(encode(&Envelope {
            message_type: "Trade",
            payload: TradePayload::from(t),
        })),
        Payload::Tick(_) | Payload::Signal(_) => None,
    }
}

/// The `AllSymbolInfo` envelope.
pub(crate) fn all_symbol_info(symbols: &[SymbolInfo<'_>]) -> Utf8Bytes {
    encode(&Envelope {
        message_type: "AllSymbolInfo",
        payload: symbols,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LegacyChart<'a> {
    symbol: &'a str,
    exchange1: &'a str,
    exchange2: &'a str,
    timestamps: Vec<i64>,
    spreads: &'a [f32],
    upper_band: &'a [f32],
    lower_band: &'a [f32],
}

/// The prototype's chart snapshot of one pair.
pub(crate) fn chart(c: &ChartSnapshot) -> Utf8Bytes {
    encode(&LegacyChart {
        symbol: &c.symbol,
        exchange1: &c.exchange_a,
        exchange2: &c.exchange_b,
        timestamps: c.ts_ns.iter().map(|t| t.div_euclid(1_000_000)).collect(),
        spreads: &c.spread_pct,
        upper_band: &c.upper_band,
        lower_band: &c.lower_band,
    })
}

/// One symbol's `AllSymbolInfo` entry.
pub(crate) fn info<'a>(symbol: &'a Symbol, exchanges: Vec<&'static str>) -> SymbolInfo<'a> {
    SymbolInfo {
        symbol: symbol.as_str(),
        exchanges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use spreadagg_model::wire::Side;

    #[test]
    fn spreads_and_trades_go_out_in_the_prototype_envelope() {
        let s = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            bid_a: 1.0,
            ask_a: 2.0,
            bid_b: 3.0,
            ask_b: 4.0,
            ts_a_ns: 5,
            ts_b_ns: 6,
            a_to_b_pct: 7.0,
            b_to_a_pct: 8.0,
            bid_bid_pct: 9.0,
            staleness_ms: 10.0,
            triggered_by: "okx".into(),
            upper_band: 11.0,
            lower_band: 12.0,
            ts_ns: 13,
        };
        let v: Value =
            serde_json::from_str(&envelope(&Payload::Spread(s)).expect("spread")).expect("json");
        assert_eq!(
            v,
            json!({"MessageType":"Spread","Payload":{"Symbol":"BTC-USDT","ExchangeA":"binance",
                "ExchangeB":"okx","BidA":1.0,"AskA":2.0,"BidB":3.0,"AskB":4.0,"TsANs":5,"TsBNs":6,
                "AToBPct":7.0,"BToAPct":8.0,"BidBidPct":9.0,"StalenessMs":10.0,
                "TriggeredBy":"okx","UpperBand":11.0,"LowerBand":12.0,"TsNs":13}})
        );
        let mut t = Trade {
            exchange: "okx".into(),
            symbol: "ETH-USDT".into(),
            price: 1.5,
            qty: 2.5,
            trade_id: "9".into(),
            exchange_ts_ns: 3,
            recv_ts_ns: 4,
            ..Trade::default()
        };
        t.set_side(Side::Buy);
        let v: Value =
            serde_json::from_str(&envelope(&Payload::Trade(t)).expect("trade")).expect("json");
        assert_eq!(
            v,
            json!({"MessageType":"Trade","Payload":{"Exchange":"okx","Symbol":"ETH-USDT",
                "Price":1.5,"Qty":2.5,"Side":"Buy","TradeId":"9","ExchangeTsNs":3,"RecvTsNs":4}})
        );
        assert!(envelope(&Payload::Tick(Default::default())).is_none());
        let btc: Symbol = "BTC-USDT".parse().expect("valid");
        let v: Value =
            serde_json::from_str(&all_symbol_info(&[info(&btc, vec!["binance", "okx"])]))
                .expect("json");
        assert_eq!(
            v,
            json!({"MessageType":"AllSymbolInfo","Payload":[{"Symbol":"BTC-USDT","Exchanges":["binance","okx"]}]})
        );
    }

    #[test]
    fn chart_snapshots_have_the_prototype_shape() {
        let c = ChartSnapshot {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            ts_ns: vec![1_700_000_000_123_456_789, 1_700_000_001_000_000_000],
            spread_pct: vec![0.5, -0.25],
            upper_band: vec![0.75, 0.75],
            lower_band: vec![-0.5, -0.5],
        };
        let v: Value = serde_json::from_str(&chart(&c)).expect("json");
        assert_eq!(
            v,
            json!({"symbol":"BTC-USDT","exchange1":"binance","exchange2":"okx",
                   "timestamps":[1_700_000_000_123_i64,1_700_000_001_000_i64],
                   "spreads":[0.5,-0.25],"upperBand":[0.75,0.75],"lowerBand":[-0.5,-0.5]})
        );
    }
}
