//! Binance spot public market data.
//!
//! Docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams> and
//! <https://developers.binance.com/docs/binance-spot-api-docs/rest-api>.
//! Raw streams at `wss://stream.binance.com:9443/ws`; `<sym>@bookTicker` for best bid/ask (no
//! event time on spot; `u` is the book update id) and `<sym>@trade`. The server pings every
//! 20 s and expects a pong within 60 s (answered by the WebSocket layer). At most 1024 streams
//! per connection and 5 incoming messages per second; connections are closed after 24 h, and a
//! `serverShutdown` event announces maintenance.
//!
//! Subscribe `{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}` is answered
//! `{"result":null,"id":1}`, or `{"error":{"code":2,"msg":".."},"id":1}` when refused.

mod wire;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolTable, malformed, num, print, quote,
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

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            // 5 incoming messages per second is the limit; stay under it.
            subscribe_pacing: Duration::from_millis(250),
            max_connection_age: Some(Duration::from_secs(24 * 60 * 60)),
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
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
                    volume_key: None,
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

    fn session(&self) -> Box<dyn Session> {
        Box::new(BinanceSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        // The server pings; the WebSocket layer answers.
        None
    }
}

/// One Binance connection: acks come back by request id.
#[derive(Debug, Default)]
pub struct BinanceSession {
    seq: SeqGate,
}

impl Session for BinanceSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        natives
            .chunks(STREAMS_PER_REQUEST / 2)
            .map(|chunk| {
                let params: Vec<String> = chunk
                    .iter()
                    .flat_map(|n| {
                        let lower = n.to_ascii_lowercase();
                        [format!("{lower}@bookTicker"), format!("{lower}@trade")]
                    })
                    .collect();
                let id = *next_id;
                *next_id += 1;
                Request {
                    id,
                    natives: chunk.to_vec(),
                    frame: Outgoing::Text(
                        serde_json::json!({"method": "SUBSCRIBE", "params": params, "id": id})
                            .to_string(),
                    ),
                }
            })
            .collect()
    }

    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let Frame::Text(text) = frame else {
            return Err(malformed("binary frame"));
        };
        if let Some(fields) = book_ticker_layout(text) {
            return self.book_ticker(fields, symbols, recv_ts_ns, out);
        }
        let f: wire::Frame<'_> = serde_json::from_str(text).map_err(malformed)?;
        if f.id.is_some() || f.error.is_some() {
            let request = f.id.as_ref().and_then(serde_json::Value::as_u64);
            return Ok(match (f.error, request) {
                (Some(err), request) => Control::Refused {
                    request,
                    reason: format!("code {}: {}", err.code, err.msg),
                },
                (None, Some(id)) => Control::Subscribed(id),
                (None, None) => Control::Ignored,
            });
        }
        match f.e.as_deref() {
            Some("trade") => {
                let native = f.s.as_deref().ok_or_else(|| malformed("trade without s"))?;
                let symbol = symbols
                    .lookup(native)
                    .ok_or_else(|| ParseError::UnknownSymbol(native.to_owned()))?;
                let (Some(t), Some(p), Some(q), Some(ts), Some(m)) =
                    (f.t, f.p, f.q, f.trade_time, f.m)
                else {
                    return Err(malformed("trade without t, p, q, T or m"));
                };
                out.events.push(Event::Print(print(
                    symbol,
                    (num(&p)?, num(&q)?),
                    // `m`: the buyer is the maker, so the taker sold.
                    if m { Side::Sell } else { Side::Buy },
                    t.to_string(),
                    ms_to_ns(ts),
                    recv_ts_ns,
                )?));
                Ok(Control::Data)
            }
            Some("serverShutdown") => Ok(Control::Rotate("serverShutdown event".into())),
            Some(_) => Ok(Control::Ignored),
            None => {
                // bookTicker carries no event type: u, s, b, B, a, A.
                let (Some(u), Some(native), Some(b), Some(bq), Some(a), Some(aq)) =
                    (f.u, f.s, f.b, f.bid_qty, f.a, f.ask_qty)
                else {
                    return Err(malformed("neither a bookTicker, a trade nor a response"));
                };
                self.book_ticker((u, &native, &b, &bq, &a, &aq), symbols, recv_ts_ns, out)
            }
        }
    }
}

/// `u, s, b, B, a, A` of a bookTicker.
type BookTickerFields<'a> = (u64, &'a str, &'a str, &'a str, &'a str, &'a str);

/// The bookTicker exactly as Binance lays it out
/// (`{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}`),
/// read without a JSON parser; `None` for any other layout, which then goes through serde.
fn book_ticker_layout(text: &str) -> Option<BookTickerFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"u":"#)?;
    let u = l.uint()?;
    l.lit(r#","s":""#)?;
    let s = l.until_quote()?;
    l.lit(r#","b":""#)?;
    let b = l.until_quote()?;
    l.lit(r#","B":""#)?;
    let bq = l.until_quote()?;
    l.lit(r#","a":""#)?;
    let a = l.until_quote()?;
    l.lit(r#","A":""#)?;
    let aq = l.until_quote()?;
    l.lit("}")?;
    l.done().then_some((u, s, b, bq, a, aq))
}

impl BinanceSession {
    fn book_ticker(
        &mut self,
        (u, native, b, bq, a, aq): BookTickerFields<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let symbol = symbols
            .lookup(native)
            .ok_or_else(|| ParseError::UnknownSymbol(native.to_owned()))?;
        let q = quote(
            symbol,
            (num(b)?, num(bq)?),
            (num(a)?, num(aq)?),
            0,
            recv_ts_ns,
            u,
        )?;
        self.seq.admit(&q)?;
        out.events.push(Event::Quote(q));
        Ok(Control::Data)
    }
}

#[cfg(test)]
mod tests;
