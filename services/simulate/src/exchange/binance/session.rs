//! One Binance WebSocket connection: the live subscription protocol, Binance's error
//! objects, server Ping frames, the inbound message limit and the 24 h lifetime.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::wire::{
    Combined, ErrorBody, ErrorReply, Reply, ServerShutdown, TradeEvent, book_ticker_payload,
};
use super::{
    DECIMALS, DEFAULT_PING_INTERVAL, MAX_CONNECTION_AGE, MAX_ID_LEN, MAX_INBOUND_PER_SECOND,
    MAX_STREAM_NAME, MAX_STREAMS, MAX_UNANSWERED_PINGS, PONG_TIMEOUT, WANT_BOOK, WANT_TRADE,
};
use crate::format::padded;
use crate::market::{Instrument, MarketEvent, Trade, Universe, now_us};
use crate::ws::driver::{self, Frame, Goodbye, Inbound, Protocol};
use crate::ws::{End, RateWindow, to_json};

/// The request body of Binance's live subscription protocol.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Request {
    pub(super) method: Method,
    #[serde(default)]
    pub(super) params: Option<Vec<Value>>,
    /// Validated from the raw value before this parse (errors need it); listed so that
    /// `deny_unknown_fields` accepts it.
    #[serde(default, rename = "id")]
    pub(super) _id: serde::de::IgnoredAny,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    SetProperty,
    GetProperty,
}

/// Why a request got an error reply (metric label).
#[derive(Debug, Clone, Copy)]
pub(super) enum Reject {
    InvalidJson,
    InvalidRequest,
    BadId,
    BadStream,
    TooManyStreams,
    UnknownProperty,
    BadPropertyValue,
}

impl Reject {
    pub(super) const fn label(self) -> &'static str {
        match self {
            Reject::InvalidJson => "invalid_json",
            Reject::InvalidRequest => "invalid_request",
            Reject::BadId => "bad_id",
            Reject::BadStream => "bad_stream",
            Reject::TooManyStreams => "too_many_streams",
            Reject::UnknownProperty => "unknown_property",
            Reject::BadPropertyValue => "bad_property_value",
        }
    }
}

/// One connection's protocol state: its streams and properties. Pure; [`run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) universe: Arc<Universe>,
    pub(super) streams: BTreeSet<String>,
    /// Per symbol: which of its streams are wanted (`WANT_BOOK | WANT_TRADE`).
    pub(super) wants: Vec<u8>,
    pub(super) combined: bool,
    pub(super) micros: bool,
    /// Server ping period, and when the next ping is due.
    ping_every: Duration,
    next_ping: Instant,
    /// The 24 h mark.
    expires: Instant,
    /// Pings sent and not yet answered, oldest first (the oldest times the connection out).
    unanswered: VecDeque<(Bytes, Instant)>,
    inbound: RateWindow,
}

pub(super) fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Binance accepts a 64-bit signed integer, an alphanumeric string of up to 36 characters, or null.
pub(super) fn valid_id(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(n) => n.is_i64(),
        Value::String(s) => s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        _ => false,
    }
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, combined: bool, micros: bool) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            streams: BTreeSet::new(),
            wants,
            combined,
            micros,
            ping_every: DEFAULT_PING_INTERVAL,
            next_ping: Instant::now() + DEFAULT_PING_INTERVAL,
            expires: Instant::now() + MAX_CONNECTION_AGE,
            unanswered: VecDeque::new(),
            inbound: RateWindow::new(MAX_INBOUND_PER_SECOND, Duration::from_secs(1)),
        }
    }

    /// The server ping period (`binance_ping_interval_s`).
    pub(crate) fn with_ping_interval(mut self, every: Duration) -> Self {
        self.ping_every = every;
        self
    }

    fn pong_due(&self) -> Option<Instant> {
        self.unanswered
            .front()
            .map(|(_, sent)| *sent + PONG_TIMEOUT)
    }

    /// The (symbol, flag) a stream name carries data for, if it is one we publish.
    pub(super) fn target(&self, name: &str) -> Option<(usize, u8)> {
        let (symbol, kind) = name.split_once('@')?;
        let flag = match kind {
            "bookTicker" => WANT_BOOK,
            "trade" => WANT_TRADE,
            _ => return None,
        };
        Some((self.universe.by_stream(symbol)?, flag))
    }

    pub(super) fn recompute(&mut self) {
        self.wants.iter_mut().for_each(|w| *w = 0);
        for name in &self.streams {
            if let Some((symbol, flag)) = self.target(name)
                && let Some(w) = self.wants.get_mut(symbol)
            {
                *w |= flag;
            }
        }
    }

    /// Adds streams, all or none.
    pub(super) fn subscribe<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let mut added = Vec::new();
        for name in names {
            if !valid_stream_name(name) {
                return Err(format!("Invalid request: invalid stream name {name:?}"));
            }
            if !self.streams.contains(name) && !added.contains(&name) {
                added.push(name);
            }
        }
        if self.streams.len() + added.len() > MAX_STREAMS {
            return Err(format!(
                "Invalid request: too many streams (at most {MAX_STREAMS} per connection)"
            ));
        }
        self.streams.extend(added.into_iter().map(str::to_owned));
        self.recompute();
        Ok(())
    }

    pub(super) fn error(code: i64, msg: &str, id: &Value) -> String {
        to_json(&ErrorReply {
            error: ErrorBody { code, msg },
            id,
        })
    }

    /// Answers one request frame with exactly one reply frame; `Err` carries the reply when
    /// the request was refused.
    pub(super) fn handle(&mut self, text: &str) -> Result<String, (String, Reject)> {
        let raw: Value = serde_json::from_str(text).map_err(|e| {
            (
                Self::error(3, &format!("Invalid JSON: {e}"), &Value::Null),
                Reject::InvalidJson,
            )
        })?;
        let id = raw.get("id").cloned().unwrap_or(Value::Null);
        if !valid_id(&id) {
            return Err((
                Self::error(
                    2,
                    "Invalid request: request ID must be an unsigned integer",
                    &Value::Null,
                ),
                Reject::BadId,
            ));
        }
        let request: Request = serde_json::from_str(text).map_err(|e| {
            (
                Self::error(2, &format!("Invalid request: {e}"), &id),
                Reject::InvalidRequest,
            )
        })?;
        let params = request.params.unwrap_or_default();
        let invalid = |msg: &str, why: Reject| (Self::error(2, msg, &id), why);
        match request.method {
            Method::Subscribe | Method::Unsubscribe => {
                let mut names = Vec::with_capacity(params.len());
                for p in &params {
                    match p.as_str() {
                        Some(name) => names.push(name),
                        None => {
                            return Err(invalid(
                                "Invalid request: stream names must be strings",
                                Reject::BadStream,
                            ));
                        }
                    }
                }
                if matches!(request.method, Method::Subscribe) {
                    self.subscribe(names).map_err(|msg| {
                        let why = if msg.contains("too many") {
                            Reject::TooManyStreams
                        } else {
                            Reject::BadStream
                        };
                        invalid(&msg, why)
                    })?;
                } else {
                    for name in names {
                        self.streams.remove(name);
                    }
                    self.recompute();
                }
                Ok(to_json(&Reply {
                    result: Value::Null,
                    id: &id,
                }))
            }
            Method::ListSubscriptions => {
                if !params.is_empty() {
                    return Err(invalid(
                        "Invalid request: too many parameters",
                        Reject::InvalidRequest,
                    ));
                }
                let list: Vec<&str> = self.streams.iter().map(String::as_str).collect();
                Ok(to_json(&Reply {
                    result: list,
                    id: &id,
                }))
            }
            Method::SetProperty | Method::GetProperty => {
                let expected = if matches!(request.method, Method::SetProperty) {
                    2
                } else {
                    1
                };
                if params.len() > expected {
                    return Err(invalid(
                        "Invalid request: too many parameters",
                        Reject::InvalidRequest,
                    ));
                }
                let Some(name) = params.first().and_then(Value::as_str) else {
                    return Err(invalid(
                        "Invalid request: property name must be a string",
                        Reject::InvalidRequest,
                    ));
                };
                if name != "combined" {
                    return Err((
                        Self::error(0, "Unknown property", &id),
                        Reject::UnknownProperty,
                    ));
                }
                if matches!(request.method, Method::GetProperty) {
                    return Ok(to_json(&Reply {
                        result: self.combined,
                        id: &id,
                    }));
                }
                match params.get(1).and_then(Value::as_bool) {
                    Some(on) => {
                        self.combined = on;
                        Ok(to_json(&Reply {
                            result: Value::Null,
                            id: &id,
                        }))
                    }
                    None => Err((
                        Self::error(1, "Invalid value type: expected Boolean", &id),
                        Reject::BadPropertyValue,
                    )),
                }
            }
        }
    }

    pub(super) fn time(&self, ts_us: i64) -> i64 {
        if self.micros { ts_us } else { ts_us / 1_000 }
    }

    pub(super) fn wrap<T: Serialize>(&self, stream: &str, data: T) -> String {
        if self.combined {
            to_json(&Combined { stream, data })
        } else {
            to_json(&data)
        }
    }

    /// The frame for a market event, if this connection listens to it.
    pub(super) fn encode(&self, event: &MarketEvent) -> Option<String> {
        match event {
            MarketEvent::Quote(q) => {
                if self.wants.get(q.symbol).copied().unwrap_or(0) & WANT_BOOK == 0 {
                    return None;
                }
                let inst = self.universe.instruments.get(q.symbol)?;
                let stream = format!("{}@bookTicker", inst.stream);
                Some(self.wrap(&stream, book_ticker_payload(inst, q)))
            }
            MarketEvent::Trade(t) => {
                if self.wants.get(t.symbol).copied().unwrap_or(0) & WANT_TRADE == 0 {
                    return None;
                }
                let inst = self.universe.instruments.get(t.symbol)?;
                let stream = format!("{}@trade", inst.stream);
                Some(self.wrap(&stream, self.trade_payload(inst, t)))
            }
        }
    }

    pub(super) fn trade_payload<'a>(&self, inst: &'a Instrument, t: &Trade) -> TradeEvent<'a> {
        TradeEvent {
            e: "trade",
            event_time: self.time(t.ts_us),
            s: &inst.concat,
            t: t.trade_id,
            p: padded(t.price, inst.price_decimals, DECIMALS),
            q: padded(t.qty, inst.qty_decimals, DECIMALS),
            trade_time: self.time(t.ts_us),
            m: !t.taker_buy,
            ignore: true,
        }
    }

    pub(super) fn server_shutdown(&self) -> String {
        self.wrap(
            "!serverShutdown",
            ServerShutdown {
                e: "serverShutdown",
                event_time: self.time(now_us()),
            },
        )
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.next_ping = now + self.ping_every;
        self.expires = now + MAX_CONNECTION_AGE;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> driver::Reply {
        // Every frame counts, pings and pongs included; one too many ends the connection.
        if !self.inbound.allow(now) {
            return driver::Reply {
                rejected: vec!["rate_limited"],
                end: Some(End::RateLimited),
                ..driver::Reply::default()
            };
        }
        let answer = match frame {
            Inbound::Text(text) => self.handle(text),
            Inbound::Binary(data) => match std::str::from_utf8(data) {
                Ok(text) => self.handle(text),
                Err(_) => Err((
                    Session::error(3, "Invalid JSON: invalid UTF-8", &Value::Null),
                    Reject::InvalidJson,
                )),
            },
            Inbound::Pong(payload) => {
                // Only a Pong echoing one of our Pings counts; unsolicited ones do not.
                if let Some(i) = self
                    .unanswered
                    .iter()
                    .position(|(p, _)| p.as_ref() == payload)
                {
                    self.unanswered.drain(..=i);
                }
                return driver::Reply::default();
            }
            // Answered by the WebSocket layer; it still counted against the limit.
            Inbound::Ping => return driver::Reply::default(),
        };
        match answer {
            Ok(text) => driver::Reply::frames(vec![Frame::Text(text)]),
            Err((text, why)) => driver::Reply {
                frames: vec![Frame::Text(text)],
                rejected: vec![why.label()],
                end: None,
            },
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(self.encode(event).map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        let mut at = self.expires.min(self.next_ping);
        if let Some(due) = self.pong_due() {
            at = at.min(due);
        }
        Some(at)
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Frame>) -> Result<(), End> {
        if self.expires <= now {
            return Err(End::MaxLifetime);
        }
        if self.pong_due().is_some_and(|due| due <= now) {
            return Err(End::PongTimeout);
        }
        if self.next_ping <= now {
            let payload = Bytes::from((now_us() / 1_000).to_string());
            if self.unanswered.len() < MAX_UNANSWERED_PINGS {
                self.unanswered.push_back((payload.clone(), now));
            }
            out.push(Frame::Ping(payload));
            self.next_ping = now + self.ping_every;
        }
        Ok(())
    }

    /// How Binance says goodbye; a client that left or stopped reading gets nothing.
    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::MaxLifetime => (1000, "connection lifetime exceeded"),
            End::PongTimeout => (1008, "pong timeout"),
            End::RateLimited => (1008, "too many requests"),
            _ => return None,
        };
        let notice = matches!(end, End::Shutdown | End::MarketClosed)
            .then(|| Frame::Text(self.server_shutdown()));
        Some(Goodbye {
            notice,
            code,
            reason,
        })
    }

    /// A `SUBSCRIBE` refused with Binance's error object, code 2 (invalid request), echoing
    /// the request's id.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let raw: Value = serde_json::from_str(frame.text()?).ok()?;
        if raw.get("method")?.as_str()? != "SUBSCRIBE" {
            return None;
        }
        let id = raw
            .get("id")
            .filter(|id| valid_id(id))
            .unwrap_or(&Value::Null);
        Some(vec![Frame::Text(Session::error(
            2,
            "Invalid request: subscription refused, please retry later",
            id,
        ))])
    }

    fn is_pong(&self, frame: Inbound<'_>) -> bool {
        matches!(frame, Inbound::Pong(_))
    }
}
