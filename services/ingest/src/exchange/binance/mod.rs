//! Binance spot public market data.
//!
//! Docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams> and
//! <https://developers.binance.com/docs/binance-spot-api-docs/rest-api>.
//! Raw streams at `wss://stream.binance.com:9443/ws`; `<sym>@bookTicker` for best bid/ask (no
//! event time on spot; `u` is the book update id) and `<sym>@trade`. The server pings every
//! 20 s and expects a pong within 60 s (answered by the WebSocket layer). At most 1024 streams
//! per connection and 5 incoming messages per second; a `serverShutdown` event announces
//! maintenance.

mod wire;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::{Side, Trade};
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, ClientPing, Control, Event, Instrument, ParseError, SymbolMap, malformed, num, tick,
};

/// Streams per SUBSCRIBE request; small enough for any frame-size limit.
const STREAMS_PER_REQUEST: usize = 100;
/// Two streams per symbol; Binance allows 1024 streams per connection. Leave headroom.
const SYMBOLS_PER_CONNECTION: usize = 400;

/// The Binance spot adapter.
#[derive(Debug, Clone, Copy)]
pub struct Binance;

impl Adapter for Binance {
    fn id(&self) -> ExchangeId {
        ExchangeId::Binance
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://stream.binance.com:9443/ws"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.binance.com"
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v3/exchangeInfo"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v3/ticker/24hr"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let info: wire::ExchangeInfo<'_> = serde_json::from_str(body).map_err(malformed)?;
        Ok(info
            .symbols
            .into_iter()
            .filter_map(|s| {
                let symbol = Symbol::from_parts(&s.base_asset, &s.quote_asset).ok()?;
                Some(Instrument {
                    native: s.symbol.into_owned(),
                    symbol,
                    trading: s.status == "TRADING",
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let tickers: Vec<wire::Ticker24h<'_>> = serde_json::from_str(body).map_err(malformed)?;
        Ok(tickers
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), num(&t.quote_volume).ok()?)))
            .collect())
    }

    fn symbols_per_connection(&self) -> usize {
        SYMBOLS_PER_CONNECTION
    }

    fn subscribe_frames(&self, natives: &[String]) -> Vec<String> {
        let streams: Vec<String> = natives
            .iter()
            .flat_map(|n| {
                let lower = n.to_ascii_lowercase();
                [format!("{lower}@bookTicker"), format!("{lower}@trade")]
            })
            .collect();
        streams
            .chunks(STREAMS_PER_REQUEST)
            .enumerate()
            .map(|(i, chunk)| {
                serde_json::json!({"method": "SUBSCRIBE", "params": chunk, "id": i + 1}).to_string()
            })
            .collect()
    }

    fn subscribe_pacing(&self) -> Duration {
        // 5 incoming messages per second is the limit; stay under it.
        Duration::from_millis(250)
    }

    fn client_ping(&self) -> Option<ClientPing> {
        None
    }

    fn parse(
        &self,
        text: &str,
        symbols: &SymbolMap,
        recv_ts_ns: i64,
        out: &mut Vec<Event>,
    ) -> Result<Control, ParseError> {
        let f: wire::Frame<'_> = serde_json::from_str(text).map_err(malformed)?;
        if let Some(err) = f.error {
            return Ok(Control::ExchangeError(format!(
                "code {}: {}",
                err.code, err.msg
            )));
        }
        if f.id.is_some() {
            return Ok(Control::Ack);
        }
        match f.e.as_deref() {
            Some("trade") => {
                let native = f.s.as_deref().ok_or_else(|| malformed("trade without s"))?;
                let symbol = symbols
                    .get(native)
                    .ok_or_else(|| ParseError::UnknownSymbol(native.to_owned()))?;
                let (Some(t), Some(p), Some(q), Some(ts), Some(m)) =
                    (f.t, f.p, f.q, f.trade_time, f.m)
                else {
                    return Err(malformed("trade without t, p, q, T or m"));
                };
                let (price, qty) = (num(&p)?, num(&q)?);
                if price <= 0.0 || qty <= 0.0 {
                    return Err(ParseError::BadNumber(format!("{p} x {q}")));
                }
                out.push(Event::Trade(Trade {
                    exchange: ExchangeId::Binance.as_str().to_owned(),
                    symbol: symbol.as_str().to_owned(),
                    price,
                    qty,
                    // `m`: the buyer is the maker, so the taker sold.
                    side: if m { Side::Sell } else { Side::Buy }.into(),
                    trade_id: t.to_string(),
                    exchange_ts_ns: ms_to_ns(ts),
                    recv_ts_ns,
                }));
                Ok(Control::Data)
            }
            Some("serverShutdown") => Ok(Control::Reconnect("serverShutdown event".into())),
            Some(_) => Ok(Control::Ignored),
            None => {
                // bookTicker carries no event type: u, s, b, B, a, A.
                let (Some(u), Some(native), Some(b), Some(bq), Some(a), Some(aq)) =
                    (f.u, f.s, f.b, f.bid_qty, f.a, f.ask_qty)
                else {
                    return Err(malformed("neither a bookTicker, a trade nor a response"));
                };
                let symbol = symbols
                    .get(native.as_ref())
                    .ok_or_else(|| ParseError::UnknownSymbol(native.into_owned()))?;
                out.push(Event::Tick(tick(
                    ExchangeId::Binance,
                    symbol,
                    (num(&b)?, num(&bq)?),
                    (num(&a)?, num(&aq)?),
                    0,
                    recv_ts_ns,
                    u,
                )?));
                Ok(Control::Data)
            }
        }
    }
}

#[cfg(test)]
mod tests;
