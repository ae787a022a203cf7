//! MEXC spot public market data (the protobuf WebSocket API).
//!
//! Docs: <https://mexcdevelop.github.io/apidocs/spot_v3_en/#websocket-market-streams>
//! (endpoint, limits, subscribe, PING), `#trade-streams`, `#individual-symbol-book-ticker-streams`,
//! `#exchange-information`, `#24hr-ticker-price-change-statistics` and `#websocket-limits` on the
//! same page, and the field numbers in the public repository `mexcdevelop/websocket-proto`
//! (2026-06 revision), from which `proto/mexc/push.proto` is written.
//!
//! Endpoint `wss://wbs-api.mexc.com/ws` (the JSON API at `wss://wbs.mexc.com/ws` was shut
//! down on 2025-08-04). Subscribe
//! `{"method":"SUBSCRIPTION","params":["spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT",
//! "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT"],"id":7}`; the answer is JSON text,
//! `{"id":7,"code":0,"msg":"<the params, comma-separated>"}` when it holds ("if the msg matches
//! the request's params, the request succeeded"), or
//! `{"id":0,"code":0,"msg":"Not Subscribed successfully! [<topics>].  Reason： Blocked! "}` when
//! refused (an unknown or retired topic, a blocked client). Keep-alive: the client sends
//! `{"method":"PING"}`, answered `{"id":0,"code":0,"msg":"PONG"}`. The server closes a
//! connection 30 s after opening when nothing valid is subscribed, a subscribed one that has
//! had no traffic for a minute, and any connection at 24 h. At most 30 subscriptions per
//! connection and 100 client messages per second.
//!
//! Market data arrives in binary frames, each one protobuf `Envelope` (MEXC's
//! `PushDataV3ApiWrapper`). Decoded, a book ticker push reads
//! `{channel: "spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT", symbol: "BTCUSDT",
//! send_time: 1736412092433, aggre_book_ticker: {bid_price: "93387.28", bid_quantity: "3.73485",
//! ask_price: "93387.29", ask_quantity: "7.669875", version: "10589632359"}}`, and a deals push
//! `{channel: "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT", symbol: "BTCUSDT",
//! send_time: 1736409765052, aggre_deals: {deals: [{price: "93220.00", quantity: "0.04438243",
//! trade_type: 2, time: 1736409765051, trade_id: "..."}], event_type:
//! "spot@public.aggre.deals.v3.api.pb@100ms"}}`. The docs render these as lower-cased JSON
//! (`publicdeals.dealsList`, `sendtime`); that rendering is not what is on the wire.
//!
//! What this adapter decides:
//! - One request per symbol (its book ticker and deals topics), so a refusal costs one symbol;
//!   12 symbols (24 topics) per connection leave room under the cap of 30 for a retried
//!   request the server may still count (skip-mev/connect PR #216 saw errors at 25 and kept
//!   20). Requests go out 100 ms apart, far under 100 messages per second.
//! - PING every 20 s: a third of the one-minute idle limit, so one lost ping is harmless.
//! - Connections rotate before 24 h (`Limits::max_connection_age`).
//! - Acks are matched by the echoed `id` when it is one of ours, otherwise by the topics in
//!   `msg` (the docs' examples echo `id: 0`).
//! - Quote time: the envelope's `create_time` (when MEXC generated the message), else its
//!   `send_time`; `seq` is the book `version` when it is a decimal number, else 0 (no gate).
//! - Trade time: the deal's own `time`, else the envelope's. Trade id: the deal's `trade_id`
//!   (pushed since 2026-06). Older pushes carry none; the id is then made from what every
//!   replica sees identically, `<time>-<price>-<quantity>-<b|s>`, with `-<n>` appended to the
//!   n-th repeat of the same key in one push, so active-active replicas agree on it.
//! - Discovery: `status` `"1"` (the field table) or `"ENABLED"` (the docs' sample) is trading;
//!   `quoteVolume` may be `null` (no volume: the symbol fails a volume filter).
//!
//! Uncertain (the docs are silent or contradict themselves):
//! - Whether the server echoes a non-zero request `id` in its answers (all examples show 0):
//!   both are handled. Whether a two-topic request is answered once or per topic: an answer
//!   confirms the topics it names, and the request is confirmed when all of its are.
//! - How the 31st subscription is refused: assumed to be a `Not Subscribed successfully!`
//!   answer like any refusal; any text starting so, or a non-zero `code`, is a refusal.
//! - `trade_type` 1/2 is read as the taker's side (the docs say only "1: Buy, 2: Sell").
//! - The book `version` is assumed to rise per symbol like depth versions do; a repeat or an
//!   older one is dropped as out of order.
//! - `status` values: both documented spellings are accepted; anything else is not trading.

pub(crate) mod wire;

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Limits, Outgoing, Output, ParseError, Request,
    SeqGate, Session, SymbolTable, malformed, num, print, quote,
};
pub use wire::pb;

/// Symbols per connection: two topics each, 24 of the 30 subscriptions MEXC allows.
pub const SYMBOLS_PER_CONNECTION: usize = 12;
/// MEXC's cap on subscriptions per connection.
pub const MAX_SUBSCRIPTIONS: usize = 30;
/// Client PING period: a third of the server's one-minute idle limit.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// MEXC closes every connection at 24 h.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Pause between two subscribe requests (the cap is 100 client messages per second).
const SUBSCRIBE_PACING: Duration = Duration::from_millis(100);
/// Requests awaiting an answer, at most (bounded by the per-connection cap, with retries).
const MAX_UNACKED: usize = 256;
/// Longest reason kept from a refusal.
const MAX_REASON: usize = 200;
/// The refusal's fixed opening.
const REFUSED: &str = "Not Subscribed successfully";

/// Topic prefixes (the symbol follows the last `@`).
pub const BOOK_TICKER_TOPIC: &str = "spot@public.aggre.bookTicker.v3.api.pb@100ms@";
pub const DEALS_TOPIC: &str = "spot@public.aggre.deals.v3.api.pb@100ms@";

/// The MEXC spot adapter.
#[derive(Debug, Clone, Copy)]
pub struct Mexc;

fn trading(status: Option<&serde_json::Value>) -> bool {
    match status {
        Some(serde_json::Value::String(s)) => s == "1" || s == "ENABLED",
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

fn volume(v: Option<&serde_json::Value>) -> Option<f64> {
    match v? {
        serde_json::Value::String(s) => num(s).ok(),
        serde_json::Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
        _ => None,
    }
}

impl Adapter for Mexc {
    fn id(&self) -> ExchangeId {
        ExchangeId::Mexc
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://wbs-api.mexc.com/ws"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.mexc.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: SUBSCRIBE_PACING,
            max_connection_age: Some(MAX_CONNECTION_AGE),
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
                    trading: trading(s.status.as_ref()),
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let tickers: Vec<wire::Ticker24h<'_>> = serde_json::from_str(body).map_err(malformed)?;
        Ok(tickers
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), volume(t.quote_volume.as_ref())?)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(MexcSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }
}

/// One MEXC connection: one request per symbol, confirmed when every topic it named has been
/// echoed back; pushes decoded from protobuf.
#[derive(Debug, Default)]
pub struct MexcSession {
    /// Request id -> its topics not yet confirmed.
    unacked: HashMap<u64, Vec<String>>,
    seq: SeqGate,
}

/// The symbol part of a topic (after the last `@`).
fn topic_symbol(channel: &str) -> Option<&str> {
    channel
        .rsplit_once('@')
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl MexcSession {
    /// The pending request an answer belongs to: ours by id, else the one holding a topic
    /// the answer names.
    fn find(&self, id: Option<u64>, topics: &[&str]) -> Option<u64> {
        if let Some(id) = id.filter(|id| self.unacked.contains_key(id)) {
            return Some(id);
        }
        self.unacked
            .iter()
            .find(|(_, pending)| pending.iter().any(|t| topics.contains(&t.as_str())))
            .map(|(&id, _)| id)
    }

    fn on_text(&mut self, text: &str) -> Result<Control, ParseError> {
        let answer: wire::Answer<'_> = serde_json::from_str(text).map_err(malformed)?;
        let msg = answer.msg.trim();
        let id = answer
            .id
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .filter(|&id| id != 0);
        let code = answer.code.unwrap_or(0);
        if msg == "PONG" && code == 0 {
            return Ok(Control::KeepAlive);
        }
        if code != 0 || msg.starts_with(REFUSED) {
            // The refused topics are listed between brackets.
            let listed = msg
                .split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map_or("", |(inside, _)| inside);
            let topics: Vec<&str> = listed.split(',').map(str::trim).collect();
            let reason = cut(&format!("code {code}: {msg}"), MAX_REASON);
            return Ok(match self.find(id, &topics) {
                Some(request) => {
                    self.unacked.remove(&request);
                    Control::Refused {
                        request: Some(request),
                        reason,
                    }
                }
                None => Control::ExchangeError(reason),
            });
        }
        let topics: Vec<&str> = msg.split(',').map(str::trim).collect();
        let Some(request) = self.find(id, &topics) else {
            // An unsubscribe answer, or one for a request given up on.
            return Ok(Control::Ignored);
        };
        let done = match self.unacked.get_mut(&request) {
            Some(pending) if id == Some(request) => {
                pending.clear();
                true
            }
            Some(pending) => {
                pending.retain(|t| !topics.contains(&t.as_str()));
                pending.is_empty()
            }
            None => false,
        };
        if done {
            self.unacked.remove(&request);
            Ok(Control::Subscribed(request))
        } else {
            Ok(Control::Ignored)
        }
    }

    fn on_push(
        &mut self,
        bytes: &[u8],
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let push = pb::Envelope::decode(bytes).map_err(|e| malformed(format!("protobuf: {e}")))?;
        let Some(body) = push.body else {
            // A body this adapter does not read (depth, kline, ..) or none at all.
            return Ok(Control::Ignored);
        };
        let native = push
            .symbol
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| topic_symbol(&push.channel))
            .ok_or_else(|| malformed("push without a symbol"))?;
        let symbol = symbols
            .lookup(native)
            .ok_or_else(|| ParseError::UnknownSymbol(cut(native, 40)))?;
        let envelope_ms = push
            .create_time
            .filter(|&t| t > 0)
            .or(push.send_time.filter(|&t| t > 0))
            .unwrap_or(0);
        match body {
            pb::envelope::Body::AggreBookTicker(b) => {
                // Older pushes carry no version (empty: no id, the gate passes it); one that is
                // there must be a number.
                let seq = if b.version.is_empty() {
                    0
                } else {
                    b.version
                        .parse::<u64>()
                        .map_err(|_| ParseError::BadNumber(b.version.chars().take(40).collect()))?
                };
                let q = quote(
                    symbol,
                    (num(&b.bid_price)?, num(&b.bid_quantity)?),
                    (num(&b.ask_price)?, num(&b.ask_quantity)?),
                    ms_to_ns(envelope_ms),
                    recv_ts_ns,
                    seq,
                )?;
                self.seq.admit(&q)?;
                out.events.push(Event::Quote(q));
                Ok(Control::Data)
            }
            pb::envelope::Body::AggreDeals(d) => {
                if d.deals.is_empty() {
                    return Ok(Control::Ignored);
                }
                let mut previous: Option<(String, u32)> = None;
                for deal in &d.deals {
                    let side = match deal.trade_type {
                        1 => Side::Buy,
                        2 => Side::Sell,
                        other => return Err(malformed(format!("trade type {other}"))),
                    };
                    let time_ms = if deal.time > 0 {
                        deal.time
                    } else {
                        envelope_ms
                    };
                    let trade_id = if deal.trade_id.is_empty() {
                        synthetic_id(deal, side, time_ms, &mut previous)
                    } else {
                        deal.trade_id.clone()
                    };
                    out.events.push(Event::Print(print(
                        symbol,
                        (num(&deal.price)?, num(&deal.quantity)?),
                        side,
                        trade_id,
                        ms_to_ns(time_ms),
                        recv_ts_ns,
                    )?));
                }
                Ok(Control::Data)
            }
        }
    }
}

/// The id of a deal pushed without one: its time, price, quantity and side as MEXC wrote
/// them, with `-<n>` for the n-th consecutive repeat of the same key in one push.
fn synthetic_id(
    deal: &pb::AggreDeal,
    side: Side,
    time_ms: i64,
    previous: &mut Option<(String, u32)>,
) -> String {
    let side = if side == Side::Buy { 'b' } else { 's' };
    let key = format!("{time_ms}-{}-{}-{side}", deal.price, deal.quantity);
    let repeat = match previous {
        Some((last, n)) if *last == key => *n + 1,
        _ => 0,
    };
    let id = if repeat == 0 {
        key.clone()
    } else {
        format!("{key}-{repeat}")
    };
    *previous = Some((key, repeat));
    id
}

impl Session for MexcSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        natives
            .iter()
            .map(|native| {
                let id = *next_id;
                *next_id += 1;
                let params = vec![
                    format!("{BOOK_TICKER_TOPIC}{native}"),
                    format!("{DEALS_TOPIC}{native}"),
                ];
                let frame =
                    serde_json::json!({"method": "SUBSCRIPTION", "params": params, "id": id})
                        .to_string();
                if self.unacked.len() < MAX_UNACKED {
                    self.unacked.insert(id, params);
                }
                Request {
                    id,
                    natives: vec![native.clone()],
                    frame: Outgoing::Text(frame),
                }
            })
            .collect()
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        Some(Outgoing::Text(r#"{"method":"PING"}"#.to_owned()))
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
        match frame {
            Frame::Text(text) => self.on_text(text),
            Frame::Binary(bytes) => {
                // A push is taken whole or not at all: a bad deal drops the ones before it.
                let start = out.events.len();
                let result = self.on_push(bytes, symbols, recv_ts_ns, out);
                if result.is_err() {
                    out.events.truncate(start);
                }
                result
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rest;
