//! Gate.io (Gate) spot WebSocket v4 public market data.
//!
//! Docs followed: <https://www.gate.io/docs/developers/apiv4/ws/en/> (API overview: request
//! and response envelopes, error object and codes, `spot.ping`; channels `spot.book_ticker`
//! and `spot.trades`) and <https://www.gate.io/docs/developers/apiv4/en/#list-all-currency-pairs-supported>,
//! <https://www.gate.io/docs/developers/apiv4/en/#retrieve-ticker-information> (REST discovery).
//!
//! Endpoint `wss://api.gateio.ws/ws/v4/`. A request is
//! `{"time":1606293275,"id":7,"channel":"spot.book_ticker","event":"subscribe","payload":["BTC_USDT","ETH_USDT"]}`
//! (`time` in seconds, within 60 s of the server's clock; `id` optional and echoed back). The
//! answer echoes the id: `{"time":..,"time_ms":..,"id":7,"conn_id":"..","channel":"spot.book_ticker",
//! "event":"subscribe","result":{"status":"success"}}`, or carries
//! `"error":{"code":2,"message":"unknown currency pair GIBBERISH_USD"}` (codes: 1 invalid request
//! body, 2 invalid argument, 3 server error, 4 authentication failure). One request covers one
//! channel and any number of pairs; it is acked once. Keep-alive: the client sends
//! `{"time":..,"channel":"spot.ping"}` and gets `{"time":..,"time_ms":..,"channel":"spot.pong",
//! "event":"","result":null}`; the docs' demo pings every 10 s, and so do we.
//!
//! `spot.book_ticker` updates carry `result.{t (ms), u (order book update id, our seq), s, b, B,
//! a, A}`; `spot.trades` carry `result.{id, create_time (s), create_time_ms, side, currency_pair,
//! amount, price}` where `create_time_ms` is a decimal string with fractional milliseconds
//! (`"1606292218213.4578"`), converted to nanoseconds exactly from its digits (no float).
//!
//! What the docs leave open, and what we rely on:
//! - No per-request payload cap and no per-connection subscription cap is documented: we send
//!   at most [`PAIRS_PER_REQUEST`] pairs per request and carry [`SYMBOLS_PER_CONNECTION`]
//!   symbols (two channels each) per connection: modest numbers of our choosing.
//! - No server idle timeout is documented: we ping every 10 s as the docs' demo does.
//! - `side` is documented only as "buy or sell side"; like other clients (ccxt, cryptofeed)
//!   we read it as the taker's side.
//! - An answer without `id` (a request we did not send one with) is not matched to anything;
//!   every request we send carries an id.
//! - Newer pushes add fields (`range`, `sequence_id`, `text`, `id_market` since 2025-01,
//!   `conn_id`, `trace_id` on answers); unknown fields are ignored. `create_time_ms` is read
//!   as documented (a string) and also as a JSON number, should Gate ever send one.
//! - The request `time` must be within 60 s of Gate's clock (documented): it is stamped when
//!   the request is built, just before it is sent.

mod wire;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolTable, malformed, num, print, quote,
};

/// Pairs per subscribe request (no cap is documented; see the module docs).
pub const PAIRS_PER_REQUEST: usize = 50;
/// Symbols per connection: two channels each.
pub const SYMBOLS_PER_CONNECTION: usize = 100;
/// How often the client sends `spot.ping` (the docs' demo: every 10 s).
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Requests awaiting an answer, at most (bounded by the per-connection cap, with retries).
const MAX_UNACKED: usize = 1_024;
const BOOK_TICKER: &str = "spot.book_ticker";
const TRADES: &str = "spot.trades";

/// The Gate.io adapter.
#[derive(Debug, Clone, Copy)]
pub struct Gateio;

/// Gate's REST error object, or the documented array.
fn rest_list<'a, T: serde::Deserialize<'a>>(body: &'a str) -> Result<Vec<T>, ParseError> {
    match serde_json::from_str::<wire::RestBody<'a, T>>(body).map_err(malformed)? {
        wire::RestBody::List(list) => Ok(list),
        wire::RestBody::Error(e) => Err(ParseError::Exchange(format!(
            "{}: {}",
            e.label,
            e.message.as_deref().unwrap_or("")
        ))),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds written as a decimal string (`"1606292218213.4578"`) to nanoseconds, exactly:
/// the integer part times 10^6 plus the first six fraction digits (later digits are below a
/// nanosecond and dropped).
pub(crate) fn ms_text_to_ns(text: &str) -> Result<i64, ParseError> {
    let bad = || ParseError::BadNumber(text.chars().take(40).collect());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int.is_empty() || int.len() > 15 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut ns = int
        .parse::<i64>()
        .map_err(|_| bad())?
        .checked_mul(1_000_000)
        .ok_or_else(bad)?;
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut scale = 100_000;
        for b in frac.bytes().take(6) {
            ns = ns
                .checked_add(i64::from(b - b'0') * scale)
                .ok_or_else(bad)?;
            scale /= 10;
        }
    }
    Ok(ns)
}

fn side(s: &str) -> Result<Side, ParseError> {
    match s {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(malformed(format!(
            "trade side {:?}",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

impl Adapter for Gateio {
    fn id(&self) -> ExchangeId {
        ExchangeId::Gateio
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://api.gateio.ws/ws/v4/"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.gateio.ws"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: Duration::from_millis(100),
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v4/spot/currency_pairs"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v4/spot/tickers"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let pairs: Vec<wire::CurrencyPair<'_>> = rest_list(body)?;
        Ok(pairs
            .into_iter()
            .filter_map(|p| {
                let symbol = Symbol::from_parts(&p.base, &p.quote).ok()?;
                Some(Instrument {
                    native: p.id.into_owned(),
                    symbol,
                    trading: p.trade_status.as_deref() == Some("tradable"),
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let tickers: Vec<wire::Ticker<'_>> = rest_list(body)?;
        Ok(tickers
            .into_iter()
            .filter_map(|t| {
                let v = num(t.quote_volume.as_deref()?).ok()?;
                Some((t.currency_pair.into_owned(), v))
            })
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(GateioSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }
}

/// One Gate.io connection: one request per channel and batch of pairs, each answered once
/// with its id.
#[derive(Debug, Default)]
pub struct GateioSession {
    unacked: HashSet<u64>,
    seq: SeqGate,
}

impl GateioSession {
    fn request(&mut self, channel: &str, chunk: &[String], next_id: &mut u64) -> Request {
        let id = *next_id;
        *next_id += 1;
        if self.unacked.len() < MAX_UNACKED {
            self.unacked.insert(id);
        }
        Request {
            id,
            natives: chunk.to_vec(),
            frame: Outgoing::Text(
                serde_json::json!({
                    "time": now_secs(),
                    "id": id,
                    "channel": channel,
                    "event": "subscribe",
                    "payload": chunk,
                })
                .to_string(),
            ),
        }
    }

    fn book_ticker(
        &mut self,
        f: &BookFields<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let symbol = symbols
            .lookup(f.s)
            .ok_or_else(|| ParseError::UnknownSymbol(f.s.chars().take(40).collect()))?;
        let q = quote(
            symbol,
            (num(f.b)?, num(f.bid_qty)?),
            (num(f.a)?, num(f.ask_qty)?),
            ms_to_ns(f.t),
            recv_ts_ns,
            f.u,
        )?;
        self.seq.admit(&q)?;
        out.events.push(Event::Quote(q));
        Ok(Control::Data)
    }
}

impl Session for GateioSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        let mut requests = Vec::new();
        for chunk in natives.chunks(PAIRS_PER_REQUEST) {
            requests.push(self.request(BOOK_TICKER, chunk, next_id));
            requests.push(self.request(TRADES, chunk, next_id));
        }
        requests
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        Some(Outgoing::Text(format!(
            r#"{{"time":{},"channel":"spot.ping"}}"#,
            now_secs()
        )))
    }

    fn forget(&mut self, request: u64) {
        self.unacked.remove(&request);
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
        if let Some(f) = book_ticker_layout(text) {
            return self.book_ticker(&f, symbols, recv_ts_ns, out);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        let channel = env.channel.as_deref().unwrap_or("");
        if channel == "spot.pong" {
            return Ok(Control::KeepAlive);
        }
        if let Some(e) = env.error {
            let mut message: String = e
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            if message.is_empty() {
                message.push('?');
            }
            let reason = match e.code {
                Some(code) => format!("code {code}: {message}"),
                None => message,
            };
            return Ok(match env.id {
                Some(id) if self.unacked.remove(&id) => Control::Refused {
                    request: Some(id),
                    reason,
                },
                _ => Control::ExchangeError(reason),
            });
        }
        match env.event.as_deref().unwrap_or("") {
            "subscribe" => {
                let status = serde_json::from_str::<wire::Answer<'_>>(text)
                    .ok()
                    .and_then(|a| a.result)
                    .and_then(|r| r.status.map(std::borrow::Cow::into_owned));
                Ok(match env.id {
                    Some(id) if self.unacked.remove(&id) => {
                        if status.as_deref() == Some("success") {
                            Control::Subscribed(id)
                        } else {
                            Control::Refused {
                                request: Some(id),
                                reason: format!(
                                    "status {:?}",
                                    status
                                        .unwrap_or_default()
                                        .chars()
                                        .take(40)
                                        .collect::<String>()
                                ),
                            }
                        }
                    }
                    _ => Control::Ignored,
                })
            }
            "update" | "all" => match channel {
                BOOK_TICKER => {
                    let push: wire::Push<wire::BookTicker<'_>> =
                        serde_json::from_str(text).map_err(malformed)?;
                    let r = push.result;
                    let f = BookFields {
                        t: r.t,
                        u: r.u,
                        s: &r.s,
                        b: &r.b,
                        bid_qty: &r.bid_qty,
                        a: &r.a,
                        ask_qty: &r.ask_qty,
                    };
                    self.book_ticker(&f, symbols, recv_ts_ns, out)
                }
                TRADES => {
                    let push: wire::Push<wire::Trade<'_>> =
                        serde_json::from_str(text).map_err(malformed)?;
                    let t = push.result;
                    let symbol = symbols.lookup(&t.currency_pair).ok_or_else(|| {
                        ParseError::UnknownSymbol(t.currency_pair.chars().take(40).collect())
                    })?;
                    let ts = match (&t.create_time_ms, t.create_time) {
                        (Some(wire::Millis::Text(s)), _) => ms_text_to_ns(s)?,
                        (Some(wire::Millis::Int(ms)), _) => ms_to_ns(
                            i64::try_from(*ms)
                                .map_err(|_| ParseError::BadNumber(ms.to_string()))?,
                        ),
                        (Some(wire::Millis::Float(ms)), _) => ms_text_to_ns(&ms.to_string())?,
                        (None, Some(s)) => s.saturating_mul(1_000_000_000),
                        (None, None) => return Err(malformed("trade without a time")),
                    };
                    out.events.push(Event::Print(print(
                        symbol,
                        (num(&t.price)?, num(&t.amount)?),
                        side(&t.side)?,
                        t.id.to_string(),
                        ts,
                        recv_ts_ns,
                    )?));
                    Ok(Control::Data)
                }
                _ => Ok(Control::Ignored),
            },
            _ => Ok(Control::Ignored),
        }
    }
}

/// The fields of a `spot.book_ticker` update.
struct BookFields<'a> {
    t: i64,
    u: u64,
    s: &'a str,
    b: &'a str,
    bid_qty: &'a str,
    a: &'a str,
    ask_qty: &'a str,
}

/// A `spot.book_ticker` update exactly as Gate lays it out
/// (`{"time":1606293275,"time_ms":1606293275723,"channel":"spot.book_ticker","event":"update",
/// "result":{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504",
/// "a":"19179.38","A":"0.09"}}`), read without a JSON parser; `None` for any other layout,
/// which then goes through serde.
fn book_ticker_layout(text: &str) -> Option<BookFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"time":"#)?;
    l.uint()?;
    l.lit(r#","time_ms":"#)?;
    l.uint()?;
    l.lit(r#","channel":"spot.book_ticker","event":"update","result":{"t":"#)?;
    let t = i64::try_from(l.uint()?).ok()?;
    l.lit(r#","u":"#)?;
    let u = l.uint()?;
    l.lit(r#","s":""#)?;
    let s = l.until_quote()?;
    l.lit(r#","b":""#)?;
    let b = l.until_quote()?;
    l.lit(r#","B":""#)?;
    let bid_qty = l.until_quote()?;
    l.lit(r#","a":""#)?;
    let a = l.until_quote()?;
    l.lit(r#","A":""#)?;
    let ask_qty = l.until_quote()?;
    l.lit("}}")?;
    l.done().then_some(BookFields {
        t,
        u,
        s,
        b,
        bid_qty,
        a,
        ask_qty,
    })
}

#[cfg(test)]
mod tests;
