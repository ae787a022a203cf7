//! One Gate.io WebSocket connection: `subscribe`/`unsubscribe` requests answered with the
//! request's id (or Gate's error object), `spot.ping` answered with `spot.pong`, updates on
//! `spot.book_ticker` and `spot.trades`, and the idle deadline.

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::wire::{self, Answer, Status, Update, WsError};
use super::{IDLE_CLOSE, IDLE_TIMEOUT, MAX_ECHO, MAX_TIME_SKEW_S};
use crate::market::{MarketEvent, Universe, now_us};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, to_json};

/// Gate's error codes (API overview, "Error").
pub(super) const INVALID_BODY: u8 = 1;
pub(super) const INVALID_ARGUMENT: u8 = 2;
pub(super) const SERVER_ERROR: u8 = 3;

/// A channel we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel {
    BookTicker,
    Trades,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "spot.book_ticker" => Some(Channel::BookTicker),
            "spot.trades" => Some(Channel::Trades),
            _ => None,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Channel::BookTicker => "spot.book_ticker",
            Channel::Trades => "spot.trades",
        }
    }

    const fn flag(self) -> u8 {
        match self {
            Channel::BookTicker => 1,
            Channel::Trades => 2,
        }
    }
}

/// The start of `text`, cut at a character boundary.
pub(super) fn echo(text: &str) -> &str {
    if text.len() <= MAX_ECHO {
        return text;
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One connection's protocol state; [`crate::ws::driver::run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    pub(super) conn_id: String,
    /// Per symbol: subscribed channels (`Channel::flag` bits).
    wants: Vec<u8>,
    /// When the client last sent anything.
    last_client: Instant,
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            conn_id: format!("{:016x}", rand::random::<u64>()),
            wants,
            last_client: Instant::now(),
        }
    }

    fn answer(
        &self,
        id: Option<u64>,
        channel: &str,
        event: &str,
        error: Option<(u8, &str)>,
    ) -> String {
        let now = now_us();
        to_json(&Answer {
            time: now / 1_000_000,
            time_ms: now / 1_000,
            id,
            conn_id: &self.conn_id,
            channel,
            event,
            error: error.map(|(code, message)| WsError { code, message }),
            result: error.is_none().then_some(Status { status: "success" }),
        })
    }

    /// The index of a Gate pair (`BTC_USDT`).
    fn pair(&self, name: &str) -> Option<usize> {
        if name.contains('-') {
            return None;
        }
        self.universe.by_canonical(&name.replacen('_', "-", 1))
    }

    /// Answers one client message: the frames to send and the label of a refusal.
    pub(super) fn handle(&mut self, text: &str) -> (Vec<String>, Option<&'static str>) {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            return (
                vec![self.answer(
                    None,
                    "",
                    "",
                    Some((INVALID_BODY, "invalid request body format")),
                )],
                Some("invalid_request"),
            );
        };
        let id = match request.get("id") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(id) => Some(id),
                None => {
                    return (
                        vec![self.answer(
                            None,
                            "",
                            "",
                            Some((
                                INVALID_BODY,
                                "invalid request body format: id must be an integer",
                            )),
                        )],
                        Some("bad_id"),
                    );
                }
            },
        };
        let channel = request.get("channel").and_then(Value::as_str).unwrap_or("");
        let event = request.get("event").and_then(Value::as_str).unwrap_or("");
        let fail = |s: &Self, code: u8, message: &str, label: &'static str| {
            (
                vec![s.answer(id, echo(channel), echo(event), Some((code, message)))],
                Some(label),
            )
        };
        let Some(time) = request.get("time").and_then(Value::as_i64) else {
            return fail(
                self,
                INVALID_BODY,
                "invalid request body format: time is required",
                "invalid_request",
            );
        };
        if (time - now_us() / 1_000_000).abs() > MAX_TIME_SKEW_S {
            return fail(
                self,
                INVALID_ARGUMENT,
                "invalid argument provided: request time differs from server time by more than 60s",
                "time_skew",
            );
        }
        if channel == "spot.ping" {
            let now = now_us();
            return (
                vec![to_json(&Answer {
                    time: now / 1_000_000,
                    time_ms: now / 1_000,
                    id,
                    conn_id: &self.conn_id,
                    channel: "spot.pong",
                    event: "",
                    error: None,
                    result: None,
                })],
                None,
            );
        }
        if channel.is_empty() {
            return fail(
                self,
                INVALID_BODY,
                "invalid request body format: channel is required",
                "invalid_request",
            );
        }
        let subscribe = match event {
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                let message = format!("invalid argument provided: unknown event {:?}", echo(other));
                return fail(self, INVALID_ARGUMENT, &message, "invalid_event");
            }
        };
        let Some(ch) = Channel::parse(channel) else {
            let message = format!("unknown channel {}", echo(channel));
            return fail(self, INVALID_ARGUMENT, &message, "no_such_channel");
        };
        let Some(payload) = request
            .get("payload")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
        else {
            return fail(
                self,
                INVALID_ARGUMENT,
                "invalid argument provided: payload must be a list of currency pairs",
                "invalid_payload",
            );
        };
        // The whole request is refused when any pair is unknown.
        let mut symbols = Vec::with_capacity(payload.len());
        for p in payload {
            let name = p.as_str().unwrap_or("");
            match self.pair(name) {
                Some(i) => symbols.push(i),
                None => {
                    let message = format!("unknown currency pair {}", echo(name));
                    return fail(self, INVALID_ARGUMENT, &message, "unknown_pair");
                }
            }
        }
        for i in symbols {
            if let Some(w) = self.wants.get_mut(i) {
                if subscribe {
                    *w |= ch.flag();
                } else {
                    *w &= !ch.flag();
                }
            }
        }
        (vec![self.answer(id, ch.name(), event, None)], None)
    }

    /// The frame for a market event this connection listens to.
    pub(super) fn encode(&self, event: &MarketEvent) -> Option<String> {
        let now = now_us();
        let (time, time_ms) = (now / 1_000_000, now / 1_000);
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(q.symbol)?;
                (wants & Channel::BookTicker.flag() != 0).then(|| {
                    to_json(&Update {
                        time,
                        time_ms,
                        channel: Channel::BookTicker.name(),
                        event: "update",
                        result: wire::book_ticker(inst, q),
                    })
                })
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(t.symbol)?;
                (wants & Channel::Trades.flag() != 0).then(|| {
                    to_json(&Update {
                        time,
                        time_ms,
                        channel: Channel::Trades.name(),
                        event: "update",
                        result: wire::trade(inst, t),
                    })
                })
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.last_client = now;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        // Anything from the client, WebSocket pings included, keeps the connection alive.
        self.last_client = now;
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text);
        Reply {
            frames: frames.into_iter().map(Frame::Text).collect(),
            rejected: rejected.into_iter().collect(),
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(self.encode(event).map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.last_client + IDLE_TIMEOUT)
    }

    fn on_timer(&mut self, now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        if self.last_client + IDLE_TIMEOUT <= now {
            return Err(End::Idle);
        }
        Ok(())
    }

    /// Gate documents no notice before a close: a Close frame only.
    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::Idle => IDLE_CLOSE,
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// A `subscribe` refused with Gate's error object, code 3 (server side error), echoing
    /// the request's id; nothing changes.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if request.get("event")?.as_str()? != "subscribe" {
            return None;
        }
        let channel = request.get("channel").and_then(Value::as_str).unwrap_or("");
        let id = request.get("id").and_then(Value::as_u64);
        Some(vec![Frame::Text(self.answer(
            id,
            echo(channel),
            "subscribe",
            Some((
                SERVER_ERROR,
                "server side error happened, please retry later",
            )),
        ))])
    }
}
