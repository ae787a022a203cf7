//! BingX public market data, spot.
//!
//! Docs followed:
//! - WebSocket introduction (endpoint, gzip, heartbeat, subscribe, error codes):
//!   <https://bingx-api.github.io/docs/#/en-us/spot/socket/> (the same text as the older
//!   <https://bingx-api.github.io/docs/spot/socket.html> and `WebSocket API.md` in
//!   <https://github.com/BingX-API/BingX-spot-api-doc>);
//! - market streams (`<SYMBOL>@trade`, `<SYMBOL>@bookTicker`):
//!   <https://bingx-api.github.io/docs/#/en-us/spot/socket/market.html>;
//! - REST market data (`/openApi/spot/v1/common/symbols`, `/openApi/spot/v1/ticker/24hr`):
//!   <https://bingx-api.github.io/docs/#/en-us/spot/market-api.html>;
//! - second source, for what the docs leave out: ccxt's `ts/src/pro/bingx.ts` (frames it
//!   captured from the live service) and JKorf's BingX.Net models.
//!
//! Endpoint `wss://open-api-ws.bingx.com/market`. Every server frame is gzip-compressed binary
//! (inflated here under [`MAX_INFLATED_BYTES`], 1 MiB). The server pings every 5 s with
//! `{"ping":"<id>","time":"<time>"}` and expects `{"pong":"<id>","time":"<the same time>"}`
//! (`time` is a string in the docs; any JSON value is taken and echoed verbatim, so a numeric
//! one is answered too); the session answers every ping itself through [`Output::replies`]
//! and sends no keep-alive of its own. The swap service's plain `Ping` (answered `Pong`) is
//! not documented for spot, but ccxt answers it on every BingX socket, so it is answered here
//! too.
//!
//! One `dataType` per request: `{"id":"7","reqType":"sub","dataType":"BTC-USDT@bookTicker"}`,
//! acked `{"id":"7","code":0,"msg":""}` (ccxt's live captures show `"msg":"SUCCESS",
//! "timestamp":..` on spot and `"dataType":"","data":null` on swap: acks are matched by `id`
//! whatever else they carry); a nonzero `code` is a refusal (100400 illegal argument, 100410
//! frequency limit, ...), also when it carries the request's `dataType` (a frame with a
//! nonzero `code`, a `dataType` and no `id` is an error on that stream). Each symbol
//! therefore takes two requests (`@bookTicker` and `@trade`). Native symbols are the
//! list's `BTC-USDT`, which must be upper case with a dash and is then also the canonical
//! symbol, so two natives cannot map to one canonical symbol.
//!
//! What the docs leave uncertain, and what this adapter relies on:
//! - `reqType`: the docs' introduction sends `"reqType":"sub"`, their per-stream examples and
//!   ccxt's spot requests omit it. We send it (the introduction's form); acks are matched by
//!   `id` alone, whatever else they carry.
//! - The bookTicker payload is not documented field by field. We rely on `b`/`B`/`a`/`A`
//!   (best bid/ask price and size, strings or numbers) under `data`, the symbol from
//!   `dataType`, and read `u` (update id, sequence-gated) and `E`/`T` (ms) when present, else
//!   the envelope's `timestamp`. The exact-layout fast path takes the keys in alphabetical
//!   order, as BingX writes them in its documented trade example and in ccxt's captures:
//!   `{"code":0,"data":{"A":..,"B":..,"E":..,["T":..,]"a":..,"b":..,"e":"bookTicker","s":..
//!   [,"u":..]},"dataType":"<SYM>@bookTicker"[,"success":true][,"timestamp":..]}`; any other
//!   layout goes through serde.
//! - Trades: `m` (buyer is maker, so the taker sold) is in ccxt's captures but not in the
//!   docs' example; without it the side is unspecified. `t` is a string id.
//! - Caps: BingX documents no per-connection topic cap and no inbound request rate; we keep
//!   connections small ([`SYMBOLS_PER_CONNECTION`]) and pace requests.
//! - REST: `GET /openApi/spot/v1/ticker/24hr` is refused (100400) without a `timestamp`
//!   query parameter although it is public; both discovery requests carry one
//!   ([`Adapter::discovery_query`]). Symbol `status` 1 is online.

mod wire;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolTable, malformed, num, print, quote,
};
use crate::codec::{Compression, Inflater, MAX_INFLATED_BYTES};

/// Symbols per connection (two `dataType`s each). BingX documents no cap; kept small.
const SYMBOLS_PER_CONNECTION: usize = 50;
/// Pause between two subscribe requests (BingX answers 100410 FREQUENCY_LIMIT to bursts).
const SUBSCRIBE_PACING: Duration = Duration::from_millis(50);
/// The two streams of one symbol.
const TOPICS: [Topic; 2] = [Topic::BookTicker, Topic::Trade];

/// The BingX adapter.
#[derive(Debug, Clone, Copy)]
pub struct Bingx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Topic {
    BookTicker,
    Trade,
}

impl Topic {
    fn suffix(self) -> &'static str {
        match self {
            Topic::BookTicker => "bookTicker",
            Topic::Trade => "trade",
        }
    }
}

/// Splits `BTC-USDT@bookTicker` / `BTC-USDT@trade` into symbol and topic.
fn split_data_type(data_type: &str) -> Option<(&str, Topic)> {
    let (sym, stream) = data_type.split_once('@')?;
    match stream {
        "bookTicker" => Some((sym, Topic::BookTicker)),
        "trade" => Some((sym, Topic::Trade)),
        _ => None,
    }
}

fn check_code(code: i64, msg: Option<&str>) -> Result<(), ParseError> {
    if code == 0 {
        Ok(())
    } else {
        Err(ParseError::Exchange(format!(
            "{code}: {}",
            msg.unwrap_or("")
        )))
    }
}

/// Status 1 is online (a number in BingX's bodies; a string is accepted).
fn online(status: Option<&serde_json::Value>) -> bool {
    match status {
        Some(serde_json::Value::Number(n)) => n.as_i64() == Some(1),
        Some(serde_json::Value::String(s)) => s == "1",
        _ => false,
    }
}

impl Adapter for Bingx {
    fn id(&self) -> ExchangeId {
        ExchangeId::Bingx
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://open-api-ws.bingx.com/market"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://open-api.bingx.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: SUBSCRIBE_PACING,
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/openApi/spot/v1/common/symbols"
    }

    fn volumes_path(&self) -> &'static str {
        "/openApi/spot/v1/ticker/24hr"
    }

    fn discovery_query(&self, now_ms: i64) -> Option<String> {
        Some(format!("timestamp={now_ms}"))
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<wire::Symbols<'_>> = serde_json::from_str(body).map_err(malformed)?;
        check_code(r.code, r.msg.as_deref())?;
        let list = r.data.ok_or_else(|| malformed("symbols without data"))?;
        let mut seen = HashSet::new();
        Ok(list
            .symbols
            .into_iter()
            .filter_map(|i| {
                // The list's own spelling must be the canonical one (upper case, one dash);
                // anything else is not subscribable as BingX documents symbols.
                let symbol: Symbol = i.symbol.parse().ok()?;
                if symbol.as_str() != i.symbol || !seen.insert(symbol.clone()) {
                    return None;
                }
                Some(Instrument {
                    native: i.symbol.into_owned(),
                    symbol,
                    trading: online(i.status.as_ref()),
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<Vec<wire::Ticker<'_>>> =
            serde_json::from_str(body).map_err(malformed)?;
        check_code(r.code, r.msg.as_deref())?;
        Ok(r.data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), t.quote_volume?.0)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(BingxSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        // The server pings; the session answers.
        None
    }
}

/// One BingX connection: one request per `dataType`, acked on its own; the session answers
/// server pings and remembers which streams are confirmed so that a retry re-sends only the
/// rest.
#[derive(Debug, Default)]
pub struct BingxSession {
    /// Request id -> the stream it asked for (native symbol, topic).
    unacked: HashMap<u64, (String, Topic)>,
    /// Streams confirmed on this connection (bounded by its symbols, times two).
    subbed: HashSet<(String, Topic)>,
    seq: SeqGate,
    /// Decompression buffer and state, reused across frames.
    scratch: Vec<u8>,
    inflater: Inflater,
}

impl Session for BingxSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        let mut requests = Vec::with_capacity(natives.len() * TOPICS.len());
        for native in natives {
            for topic in TOPICS {
                let key = (native.clone(), topic);
                if self.subbed.contains(&key) {
                    continue;
                }
                let id = *next_id;
                *next_id += 1;
                let data_type =
                    serde_json::Value::String(format!("{native}@{}", topic.suffix())).to_string();
                let frame = format!(r#"{{"id":"{id}","reqType":"sub","dataType":{data_type}}}"#);
                self.unacked.insert(id, key);
                requests.push(Request {
                    id,
                    natives: vec![native.clone()],
                    frame: Outgoing::Text(frame),
                });
            }
        }
        requests
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
        let bytes = match frame {
            Frame::Binary(b) => b,
            // A plain-text heartbeat is answered even uncompressed, so that it can never
            // cost the connection; any other text frame is not of BingX's protocol.
            Frame::Text("Ping") => {
                out.replies.push(Outgoing::Text("Pong".to_owned()));
                return Ok(Control::KeepAlive);
            }
            // BingX sends only gzip binary.
            Frame::Text(_) => return Err(malformed("text frame (BingX frames are gzip binary)")),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self
            .inflater
            .inflate(Compression::Gzip, bytes, MAX_INFLATED_BYTES, &mut scratch)
            .map_err(ParseError::from)
            .and_then(|()| self.on_json(&scratch, symbols, recv_ts_ns, out));
        self.scratch = scratch;
        result
    }
}

impl BingxSession {
    fn on_json(
        &mut self,
        json: &[u8],
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        // The hot frame in its exact layout, read without a JSON parser; any other layout goes
        // through serde below (the two agree: tests and property tests).
        if let Some(b) = std::str::from_utf8(json).ok().and_then(book_ticker_layout) {
            let symbol = symbols
                .lookup(b.native)
                .ok_or_else(|| ParseError::UnknownSymbol(b.native.chars().take(40).collect()))?;
            let q = quote(
                symbol,
                (num(b.bid)?, num(b.bid_qty)?),
                (num(b.ask)?, num(b.ask_qty)?),
                ms_to_ns(b.event_time),
                recv_ts_ns,
                b.update_id,
            )?;
            self.seq.admit(&q)?;
            out.events.push(Event::Quote(q));
            return Ok(Control::Data);
        }
        // The swap service's plain-text heartbeat, answered in kind.
        if json == b"Ping" {
            out.replies.push(Outgoing::Text("Pong".to_owned()));
            return Ok(Control::KeepAlive);
        }
        let env: wire::Envelope<'_> = serde_json::from_slice(json).map_err(malformed)?;
        if let Some(ping) = env.ping.as_deref() {
            // `time` goes back exactly as it came: a string stays a string, a number the
            // same number, digit for digit.
            let ping = serde_json::Value::from(ping).to_string();
            let pong = match env.time {
                Some(time) => format!(r#"{{"pong":{ping},"time":{}}}"#, time.get()),
                None => format!(r#"{{"pong":{ping}}}"#),
            };
            out.replies.push(Outgoing::Text(pong));
            return Ok(Control::KeepAlive);
        }
        let data_type = env.data_type.as_deref().unwrap_or("");
        if data_type.is_empty() {
            return Ok(self.answer(&env));
        }
        if let Some(code) = env.code.filter(|&c| c != 0) {
            let reason = format!(
                "{code} on {}: {}",
                data_type.chars().take(60).collect::<String>(),
                env.msg.as_deref().unwrap_or("")
            );
            // A refusal that also names its stream: it refuses the request of its `id`, so
            // that the request is retried at once rather than after its ack timeout. Without
            // an `id` it is an error on the stream.
            let request = env.id.as_deref().and_then(|i| i.parse::<u64>().ok());
            return match request {
                Some(id) => {
                    self.unacked.remove(&id);
                    Ok(Control::Refused {
                        request: Some(id),
                        reason,
                    })
                }
                None => Err(ParseError::Exchange(reason)),
            };
        }
        let Some((native, topic)) = split_data_type(data_type) else {
            return Ok(Control::Ignored);
        };
        let symbol = symbols
            .lookup(native)
            .ok_or_else(|| ParseError::UnknownSymbol(native.chars().take(40).collect()))?;
        match topic {
            Topic::BookTicker => {
                let push: wire::Push<wire::BookTicker> =
                    serde_json::from_slice(json).map_err(malformed)?;
                let t = push.data;
                let ts_ms = t
                    .event_time
                    .or(t.time)
                    .or(env.timestamp)
                    .ok_or_else(|| malformed("bookTicker without a time"))?;
                let q = quote(
                    symbol,
                    (t.bid.0, t.bid_qty.0),
                    (t.ask.0, t.ask_qty.0),
                    ms_to_ns(ts_ms),
                    recv_ts_ns,
                    t.update_id,
                )?;
                self.seq.admit(&q)?;
                out.events.push(Event::Quote(q));
            }
            Topic::Trade => {
                let push: wire::Push<wire::Trade> =
                    serde_json::from_slice(json).map_err(malformed)?;
                let t = push.data;
                let ts_ms = t
                    .time
                    .or(t.event_time)
                    .or(env.timestamp)
                    .ok_or_else(|| malformed("trade without a time"))?;
                let side = match t.buyer_is_maker {
                    Some(true) => Side::Sell,
                    Some(false) => Side::Buy,
                    None => Side::Unspecified,
                };
                out.events.push(Event::Print(print(
                    symbol,
                    (t.price.0, t.qty.0),
                    side,
                    t.trade_id.0,
                    ms_to_ns(ts_ms),
                    recv_ts_ns,
                )?));
            }
        }
        Ok(Control::Data)
    }

    /// A frame without a `dataType`: a subscribe answer (by `id`), an error, or nothing we use.
    fn answer(&mut self, env: &wire::Envelope<'_>) -> Control {
        let request = env.id.as_deref().and_then(|i| i.parse::<u64>().ok());
        match env.code {
            Some(0) => match request.and_then(|id| self.unacked.remove(&id).map(|k| (id, k))) {
                Some((id, key)) => {
                    self.subbed.insert(key);
                    Control::Subscribed(id)
                }
                // An unsubscribe answer, or an ack for a request given up on.
                None => Control::Ignored,
            },
            Some(code) => {
                let reason = format!("{code}: {}", env.msg.as_deref().unwrap_or(""));
                if let Some(id) = request {
                    self.unacked.remove(&id);
                }
                // Without an id the refusal names no request: it then times out.
                Control::Refused { request, reason }
            }
            None => Control::Ignored,
        }
    }
}

/// The fields of a bookTicker push in its exact layout (numbers still text).
struct BookFields<'a> {
    native: &'a str,
    bid: &'a str,
    bid_qty: &'a str,
    ask: &'a str,
    ask_qty: &'a str,
    event_time: i64,
    update_id: u64,
}

/// `{"code":0,"data":{"A":"<s>","B":"<s>","E":<ms>,["T":<ms>,]"a":"<s>","b":"<s>",
/// "e":"bookTicker","s":"<sym>"[,"u":<n>]},"dataType":"<sym>@bookTicker"[,"success":true]
/// [,"timestamp":<ms>]}` exactly, or `None`. As in the general path, the symbol is the
/// `dataType`'s and the time is `E`.
fn book_ticker_layout(text: &str) -> Option<BookFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"code":0,"data":{"A":""#)?;
    let ask_qty = l.until_quote()?;
    l.lit(r#","B":""#)?;
    let bid_qty = l.until_quote()?;
    l.lit(r#","E":"#)?;
    let event_time = i64::try_from(l.uint()?).ok()?;
    if l.lit(r#","T":"#).is_some() {
        i64::try_from(l.uint()?).ok()?;
    }
    l.lit(r#","a":""#)?;
    let ask = l.until_quote()?;
    l.lit(r#","b":""#)?;
    let bid = l.until_quote()?;
    l.lit(r#","e":"bookTicker","s":""#)?;
    l.until_quote()?;
    let update_id = if l.lit(r#","u":"#).is_some() {
        l.uint()?
    } else {
        0
    };
    l.lit(r#"},"dataType":""#)?;
    let native = l.until_quote()?.strip_suffix("@bookTicker")?;
    if native.contains('@') {
        return None;
    }
    let _ = l.lit(r#","success":true"#);
    if l.lit(r#","timestamp":"#).is_some() {
        i64::try_from(l.uint()?).ok()?;
    }
    l.lit("}")?;
    l.done().then_some(BookFields {
        native,
        bid,
        bid_qty,
        ask,
        ask_qty,
        event_time,
        update_id,
    })
}

#[cfg(test)]
mod tests;
