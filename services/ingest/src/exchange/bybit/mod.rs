//! Bybit v5 public market data, spot.
//!
//! Docs followed:
//! - <https://bybit-exchange.github.io/docs/v5/ws/connect>: endpoint
//!   `wss://stream.bybit.com/v5/public/spot`; subscribe
//!   `{"req_id":"7","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]}`,
//!   answered once per request `{"success":true,"ret_msg":"subscribe","conn_id":"..",
//!   "req_id":"7","op":"subscribe"}` or `{"success":false,"ret_msg":"..",..}`; at most 10 args
//!   per request on spot (`"ret_msg":"args size >10"` otherwise) and at most 21,000 characters
//!   of args per connection; the client sends `{"op":"ping"}`, every 20 s as recommended.
//! - <https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook>: `orderbook.1.<SYM>`
//!   is snapshot-only, pushed every 10 ms when the top changes and pushed again, with the
//!   same `u`, after 3 s without a change; a `u` of 1 means the service restarted.
//! - <https://bybit-exchange.github.io/docs/v5/websocket/public/trade>: `publicTrade.<SYM>`,
//!   `S` is the taker's side, `i` the trade id, `T` the fill time in ms.
//! - <https://bybit-exchange.github.io/docs/v5/market/instrument> and
//!   <https://bybit-exchange.github.io/docs/v5/market/tickers>: REST discovery; `category` is
//!   required (retCode 10001 otherwise); `turnover24h` is the quote-coin volume.
//!
//! What the docs left uncertain, and what this adapter relies on:
//! - The pong. The connect page shows the public pong as
//!   `{"success":true,"ret_msg":"pong","conn_id":"..","req_id":"","op":"ping"}` and the private
//!   one as `{"op":"pong","args":["1675418560633"],..}`; open-source clients handle both on
//!   public spot streams, so both are [`Control::KeepAlive`], whatever `success` says, and
//!   neither is ever a parse error (barter-rs #205).
//! - A refusal may come without `req_id` (clients report `args size >10` answers without
//!   one); it is then [`Control::Refused`] with no request, which times out like an unanswered
//!   one. Every request we send carries its id as `req_id`.
//! - A request sent again after its ack timed out (the ack came late, so its topics are held)
//!   is refused `{"success":false,"ret_msg":"error:already subscribed,topic:<t>",..}` (the
//!   message Bybit is reported to use; the docs show none). A retry carries exactly the
//!   topics of the request it repeats, so such a refusal counts as the request's ack (as
//!   Kraken's adapter does): a late ack never turns into a refusal resent forever. (Were a
//!   request refused for one held topic while others in it are not held, those would be
//!   counted as subscribed; a retry repeating an acked request cannot be in that case.)
//! - An `orderbook.1` snapshot with an empty side (`"b":[]` or `"a":[]`) has no best bid/ask:
//!   it is skipped ([`Control::Ignored`], no quote), not counted as bad input. Bybit re-pushes
//!   unchanged books every 3 s, so counting it would count an illiquid market's silence every
//!   3 s as an error. It still moves the sequence (a `u` of 1 still resets it).
//! - Sequence: `u` is the quote's `seq`. A snapshot with the last `u` again is Bybit's 3 s
//!   re-push of an unchanged book and is published again (it refreshes the quote's age); a
//!   `u` of 1 resets the symbol's sequence, so the restarted one is taken at once; any other
//!   `u` not above the last is stale (under the shared gate's rules, which also take a lower
//!   `u` at a later `ts` as a reset).
//! - Exchange time: `ts` (when Bybit generated the push), present in every example; `cts`
//!   (the matching engine's time) is not read.
//! - The idle close: the connect page says a connection with neither ping-pong nor stream
//!   data is cut after 10 minutes, and recommends a ping every 20 s; we ping every 20 s.
//! - Pagination: "Spot does not support pagination, so limit, cursor are invalid" (the
//!   instruments page): one request; a non-empty `nextPageCursor` would be logged, since this
//!   contract reads one page.
//! - Symbols come from `baseCoin`/`quoteCoin` of the instrument list; two trading natives
//!   that name one canonical symbol are both left out (logged), never guessed between.

mod wire;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::parse::refuse_collisions;
use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolId, SymbolTable, malformed, num, print, quote,
};

/// Args per subscribe request on spot (documented).
const ARGS_PER_REQUEST: usize = 10;
/// Two topics per symbol; the documented per-connection cap is 21,000 characters of args,
/// which 200 symbols (400 topics of at most ~40 characters) stay well under.
const SYMBOLS_PER_CONNECTION: usize = 200;
/// The documented heartbeat period.
const PING_EVERY: Duration = Duration::from_secs(20);
/// The level-1 book topic prefix and the trade topic prefix.
const BOOK_TOPIC: &str = "orderbook.1.";
const TRADE_TOPIC: &str = "publicTrade.";

/// The Bybit spot adapter.
#[derive(Debug, Clone, Copy)]
pub struct Bybit;

fn check_code<T>(r: wire::Response<T>) -> Result<T, ParseError> {
    if r.ret_code != 0 {
        return Err(ParseError::Exchange(format!(
            "retCode {}: {}",
            r.ret_code, r.ret_msg
        )));
    }
    r.result
        .ok_or_else(|| malformed("retCode 0 without a result"))
}

impl Adapter for Bybit {
    fn id(&self) -> ExchangeId {
        ExchangeId::Bybit
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://stream.bybit.com/v5/public/spot"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.bybit.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            // No documented inbound rate for public streams; stay modest.
            subscribe_pacing: Duration::from_millis(100),
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        // Spot is one page: "Spot does not support pagination, so limit, cursor are invalid."
        "/v5/market/instruments-info?category=spot"
    }

    fn volumes_path(&self) -> &'static str {
        "/v5/market/tickers?category=spot"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<wire::InstrumentsResult<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        let result = check_code(r)?;
        if let Some(cursor) = result.next_page_cursor.as_deref().filter(|c| !c.is_empty()) {
            tracing::warn!(
                cursor,
                "bybit: instruments-info names a next page; only the first is read"
            );
        }
        let list: Vec<Instrument> = result
            .list
            .into_iter()
            .filter_map(|i| {
                let symbol = Symbol::from_parts(&i.base_coin, &i.quote_coin).ok()?;
                Some(Instrument {
                    native: i.symbol.into_owned(),
                    symbol,
                    trading: i.status == "Trading",
                    volume_key: None,
                })
            })
            .collect();
        Ok(refuse_collisions("bybit", list))
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<wire::TickersResult<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        Ok(check_code(r)?
            .list
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), num(t.turnover_24h.as_deref()?).ok()?)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(BybitSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }
}

/// One Bybit connection: one ack per request, matched by `req_id`.
#[derive(Debug, Default)]
pub struct BybitSession {
    /// Requests sent and not yet answered.
    pending: HashSet<u64>,
    seq: SeqGate,
}

impl Session for BybitSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        natives
            .chunks(ARGS_PER_REQUEST / 2)
            .map(|chunk| {
                let args: Vec<String> = chunk
                    .iter()
                    .flat_map(|n| [format!("{BOOK_TOPIC}{n}"), format!("{TRADE_TOPIC}{n}")])
                    .collect();
                let id = *next_id;
                *next_id += 1;
                self.pending.insert(id);
                Request {
                    id,
                    natives: chunk.to_vec(),
                    frame: Outgoing::Text(
                        serde_json::json!({"req_id": id.to_string(), "op": "subscribe", "args": args})
                            .to_string(),
                    ),
                }
            })
            .collect()
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        Some(Outgoing::Text(r#"{"op":"ping"}"#.into()))
    }

    fn forget(&mut self, request: u64) {
        self.pending.remove(&request);
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
        if let Some(f) = book_layout(text) {
            return self.book(f, symbols, recv_ts_ns, out);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        if let Some(op) = env.op.as_deref() {
            let reason = || env.ret_msg.as_deref().unwrap_or("").to_owned();
            let request = env.req_id.as_deref().and_then(|i| i.parse::<u64>().ok());
            return Ok(match (op, env.success) {
                // Public pongs say op "ping", private-style ones op "pong": both keep-alive.
                ("ping" | "pong", _) => Control::KeepAlive,
                ("subscribe", Some(true)) => match request {
                    Some(id) if self.pending.remove(&id) => Control::Subscribed(id),
                    _ => Control::Ignored,
                },
                // "Already subscribed": a retry of a request whose ack came after its
                // timeout. The topics are held, so it counts as this request's ack.
                ("subscribe", _) if already_subscribed(env.ret_msg.as_deref()) => match request {
                    Some(id) if self.pending.remove(&id) => Control::Subscribed(id),
                    _ => Control::Ignored,
                },
                ("subscribe", _) => {
                    if let Some(id) = request {
                        self.pending.remove(&id);
                    }
                    Control::Refused {
                        request,
                        reason: reason(),
                    }
                }
                (_, Some(false)) => Control::ExchangeError(format!("op {op}: {}", reason())),
                _ => Control::Ignored,
            });
        }
        let topic = env
            .topic
            .as_deref()
            .ok_or_else(|| malformed("neither an op answer nor a push"))?;
        if topic.starts_with(BOOK_TOPIC) {
            let push: wire::BookPush<'_> = serde_json::from_str(text).map_err(malformed)?;
            if push.kind != "snapshot" {
                return Err(malformed(format!(
                    "orderbook.1 {:?}: level 1 is snapshot-only",
                    push.kind
                )));
            }
            let d = push.data;
            let fields = BookFields {
                s: &d.s,
                bid: level(&d.b)?,
                ask: level(&d.a)?,
                ts: push.ts,
                u: d.u,
            };
            return self.book(fields, symbols, recv_ts_ns, out);
        }
        if topic.starts_with(TRADE_TOPIC) {
            let push: wire::TradePush<'_> = serde_json::from_str(text).map_err(malformed)?;
            // A bad trade is skipped, not the ones after it; the frame is still rejected (its
            // first error), and the trades read are published all the same.
            let mut first_error = None;
            for t in push.data {
                match trade(symbols, t, recv_ts_ns) {
                    Ok(p) => out.events.push(Event::Print(p)),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            return first_error.map_or(Ok(Control::Data), Err);
        }
        Ok(Control::Ignored)
    }
}

/// One element of a `publicTrade` push.
fn trade(
    symbols: &SymbolTable,
    t: wire::Trade<'_>,
    recv_ts_ns: i64,
) -> Result<super::Print, ParseError> {
    let symbol = lookup(symbols, &t.s)?;
    let side = match t.side.as_ref() {
        "Buy" => Side::Buy,
        "Sell" => Side::Sell,
        other => return Err(malformed(format!("trade side {other:?}"))),
    };
    print(
        symbol,
        (num(&t.p)?, num(&t.v)?),
        side,
        t.i.into_owned(),
        ms_to_ns(t.time),
        recv_ts_ns,
    )
}

/// Whether a subscribe refusal says its topic is already held
/// (`error:already subscribed,topic:orderbook.1.BTCUSDT`).
fn already_subscribed(ret_msg: Option<&str>) -> bool {
    ret_msg.is_some_and(|m| m.to_ascii_lowercase().contains("already subscribed"))
}

/// The best level of a side, `None` when the side is empty.
fn level<'a>(side: &'a [Vec<Cow<'_, str>>]) -> Result<Option<(&'a str, &'a str)>, ParseError> {
    match side.first() {
        None => Ok(None),
        Some(l) => match (l.first(), l.get(1)) {
            (Some(px), Some(sz)) => Ok(Some((px.as_ref(), sz.as_ref()))),
            _ => Err(malformed("level without price and size")),
        },
    }
}

fn lookup(symbols: &SymbolTable, native: &str) -> Result<SymbolId, ParseError> {
    symbols
        .lookup(native)
        .ok_or_else(|| ParseError::UnknownSymbol(native.to_owned()))
}

/// The fields of one `orderbook.1` snapshot; a side is `None` when Bybit sent it empty.
struct BookFields<'a> {
    s: &'a str,
    bid: Option<(&'a str, &'a str)>,
    ask: Option<(&'a str, &'a str)>,
    ts: i64,
    u: u64,
}

impl BybitSession {
    fn book(
        &mut self,
        f: BookFields<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let symbol = lookup(symbols, f.s)?;
        if f.u == 1 {
            // The service restarted: a new sequence begins here.
            self.seq.reset(symbol);
        }
        let (Some((bid_px, bid_qty)), Some((ask_px, ask_qty))) = (f.bid, f.ask) else {
            return Ok(Control::Ignored);
        };
        let q = quote(
            symbol,
            (num(bid_px)?, num(bid_qty)?),
            (num(ask_px)?, num(ask_qty)?),
            ms_to_ns(f.ts),
            recv_ts_ns,
            f.u,
        )?;
        // The same `u` again is the 3 s re-push of an unchanged book.
        if f.u == 0 || f.u != self.seq.last(symbol) {
            self.seq.admit(&q)?;
        }
        out.events.push(Event::Quote(q));
        Ok(Control::Data)
    }
}

/// An `orderbook.1` snapshot exactly as Bybit lays it out
/// (`{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1709891679000,"data":{"s":"BTCUSDT","b":[["27450.00","0.500"]],"a":[["27451.00","0.750"]],"u":123456789,"seq":987654321},"cts":1709891678998}`),
/// read without a JSON parser; `None` for any other layout (an empty side included), which
/// then goes through serde.
fn book_layout(text: &str) -> Option<BookFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"topic":"orderbook.1."#)?;
    let topic_symbol = l.until_quote()?;
    l.lit(r#","type":"snapshot","ts":"#)?;
    let ts = i64::try_from(l.uint()?).ok()?;
    l.lit(r#","data":{"s":""#)?;
    let s = l.until_quote()?;
    l.lit(r#","b":[[""#)?;
    let bid_px = l.until_quote()?;
    l.lit(r#",""#)?;
    let bid_qty = l.until_quote()?;
    l.lit(r#"]],"a":[[""#)?;
    let ask_px = l.until_quote()?;
    l.lit(r#",""#)?;
    let ask_qty = l.until_quote()?;
    l.lit(r#"]],"u":"#)?;
    let u = l.uint()?;
    l.lit(r#","seq":"#)?;
    l.uint()?;
    l.lit(r#"},"cts":"#)?;
    l.uint()?;
    l.lit("}")?;
    (l.done() && s == topic_symbol).then_some(BookFields {
        s,
        bid: Some((bid_px, bid_qty)),
        ask: Some((ask_px, ask_qty)),
        ts,
        u,
    })
}

#[cfg(test)]
mod tests;
