//! One BingX spot WebSocket connection: server pings answered by pongs that echo the ping's
//! id, one `dataType` per subscribe request, and gzip-compressed pushes.
//!
//! BingX pings every 5 s with `{"ping":"<id>","time":"<time>"}` and expects
//! `{"pong":"<id>","time":"<time>"}`. How long it waits is not documented; this server closes
//! the connection when a ping has gone unanswered for 10 s (two pings), and only a pong
//! echoing an outstanding ping's id counts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::wire;
use crate::market::{MarketEvent, Universe, now_us};
use crate::ws::End;
use crate::ws::driver::{
    Frame, Goodbye, Inbound, Protocol, Reply, binary_garbage, binary_oversized,
};

/// How often the server pings.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);
/// A ping unanswered this long (two ping periods) ends the connection.
pub(crate) const PONG_DEADLINE: Duration = Duration::from_secs(10);
/// BingX's "illegal argument" code, its answer to a request it cannot serve.
pub(crate) const ILLEGAL_ARGUMENT: u32 = 100_400;
/// Pings remembered while unanswered (more than the deadline allows).
const MAX_OUTSTANDING: usize = 4;
/// Longest request id echoed back.
const MAX_ID_LEN: usize = 64;
/// Longest `dataType` echoed in an error.
const MAX_ECHO: usize = 128;

/// A stream we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BookTicker,
    Trade,
}

impl Kind {
    const fn flag(self) -> u8 {
        match self {
            Kind::BookTicker => 1,
            Kind::Trade => 2,
        }
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One connection's protocol state; [`crate::ws::driver::run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    /// Per symbol: subscribed kinds (`Kind::flag` bits).
    wants: Vec<u8>,
    /// Pings sent and not yet answered: (id, sent at), oldest first.
    outstanding: VecDeque<(String, Instant)>,
    /// Pings sent on this connection (part of each ping's id).
    pings: u64,
    /// When the next ping is due (set when the session starts).
    next_ping: Instant,
}

/// What one client request asks for.
enum Ask<'a> {
    Sub(&'a str),
    Unsub(&'a str),
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            wants,
            outstanding: VecDeque::new(),
            pings: 0,
            next_ping: Instant::now() + PING_EVERY,
        }
    }

    /// Records a ping about to be sent and returns its frame.
    fn ping(&mut self, now: Instant) -> String {
        let now_ms = now_us() / 1_000;
        self.pings += 1;
        // 32 hex digits, unique per connection and time, as BingX's look.
        let id = format!("{:016x}{:016x}", now_ms, self.pings);
        if self.outstanding.len() >= MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        let frame = wire::ping(&id, &wire::ping_time(now_ms));
        self.outstanding.push_back((id, now));
        frame
    }

    /// When the oldest unanswered ping expires.
    fn pong_due(&self) -> Option<Instant> {
        self.outstanding.front().map(|&(_, at)| at + PONG_DEADLINE)
    }

    /// A pong for an outstanding ping clears it and every older one.
    fn pong(&mut self, id: &str) -> bool {
        match self.outstanding.iter().position(|(p, _)| p == id) {
            Some(i) => {
                self.outstanding.drain(..=i);
                true
            }
            None => false,
        }
    }

    /// Reads a request: `{"id":"..","reqType":"sub"|"unsub","dataType":".."}` (`reqType`
    /// absent means sub, as in the docs' per-stream examples). `Err` is the refusal's text.
    fn request<'a>(msg: &'a serde_json::Map<String, Value>) -> Result<Ask<'a>, &'static str> {
        let data_type = match msg.get("dataType") {
            Some(Value::String(d)) => d.as_str(),
            Some(Value::Array(_)) => return Err("one dataType per request"),
            _ => return Err("dataType is required"),
        };
        match msg.get("reqType") {
            None => Ok(Ask::Sub(data_type)),
            Some(Value::String(r)) if r == "sub" => Ok(Ask::Sub(data_type)),
            Some(Value::String(r)) if r == "unsub" => Ok(Ask::Unsub(data_type)),
            _ => Err("invalid reqType"),
        }
    }

    /// Answers one client message. Returns the frames to send and the label of a refusal.
    pub(crate) fn handle(&mut self, text: &str) -> (Vec<String>, Option<&'static str>) {
        let ts = now_us() / 1_000;
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return (
                vec![wire::error(None, ILLEGAL_ARGUMENT, "invalid json", ts)],
                Some("invalid_json"),
            );
        };
        if let Some(p) = msg.get("pong") {
            // Only the id of an outstanding ping counts; anything else is ignored.
            return match p.as_str() {
                Some(id) if self.pong(id) => (Vec::new(), None),
                _ => (Vec::new(), Some("stray_pong")),
            };
        }
        let id = match msg.get("id") {
            Some(Value::String(s)) => cut(s, MAX_ID_LEN),
            _ => {
                return (
                    vec![wire::error(None, ILLEGAL_ARGUMENT, "id is required", ts)],
                    Some("bad_id"),
                );
            }
        };
        let ask = match Self::request(&msg) {
            Ok(ask) => ask,
            Err(why) => {
                return (
                    vec![wire::error(Some(id), ILLEGAL_ARGUMENT, why, ts)],
                    Some("invalid_request"),
                );
            }
        };
        let (data_type, subscribe) = match ask {
            Ask::Sub(d) => (d, true),
            Ask::Unsub(d) => (d, false),
        };
        if data_type.contains(',') {
            return (
                vec![wire::error(
                    Some(id),
                    ILLEGAL_ARGUMENT,
                    "one dataType per request",
                    ts,
                )],
                Some("several_data_types"),
            );
        }
        let Some((symbol, kind)) = self.parse_data_type(data_type) else {
            let msg = format!("dataType not supported: {}", cut(data_type, MAX_ECHO));
            return (
                vec![wire::error(Some(id), ILLEGAL_ARGUMENT, &msg, ts)],
                Some("invalid_data_type"),
            );
        };
        let Some(wants) = self.wants.get_mut(symbol) else {
            return (Vec::new(), Some("invalid_data_type"));
        };
        if subscribe {
            *wants |= kind.flag();
        } else {
            *wants &= !kind.flag();
        }
        (vec![wire::ack(id, ts)], None)
    }

    fn parse_data_type(&self, data_type: &str) -> Option<(usize, Kind)> {
        let (sym, stream) = data_type.split_once('@')?;
        let kind = match stream {
            "bookTicker" => Kind::BookTicker,
            "trade" => Kind::Trade,
            _ => return None,
        };
        Some((self.universe.by_canonical(sym)?, kind))
    }

    /// The frame for a market event this connection listens to.
    pub(crate) fn encode(&self, event: &MarketEvent) -> Option<String> {
        let now_ms = now_us() / 1_000;
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(q.symbol)?;
                (wants & Kind::BookTicker.flag() != 0).then(|| wire::book_ticker(inst, q, now_ms))
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(t.symbol)?;
                (wants & Kind::Trade.flag() != 0).then(|| wire::trade(inst, t, now_ms))
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.next_ping = now + PING_EVERY;
    }

    fn on_client(&mut self, frame: Inbound<'_>, _now: Instant) -> Reply {
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text);
        Reply {
            frames: frames.into_iter().map(Frame::Gzip).collect(),
            rejected: rejected.into_iter().collect(),
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(self.encode(event).map(Frame::Gzip));
    }

    fn deadline(&self) -> Option<Instant> {
        Some(match self.pong_due() {
            Some(due) => due.min(self.next_ping),
            None => self.next_ping,
        })
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Frame>) -> Result<(), End> {
        // The deadline comes first: a ping due at the same instant does not save the session.
        if self.pong_due().is_some_and(|due| due <= now) {
            return Err(End::PongTimeout);
        }
        if self.next_ping <= now {
            out.push(Frame::Gzip(self.ping(now)));
            self.next_ping = now + PING_EVERY;
        }
        Ok(())
    }

    fn goodbye(&self, end: End) -> Option<Goodbye> {
        // BingX documents no notice before a close.
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::PongTimeout => (1000, "pong timeout"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// BingX's reply to a stream it will not serve: code 100400 with the request's id.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if msg.contains_key("pong") {
            return None;
        }
        let Ok(Ask::Sub(data_type)) = Self::request(&msg) else {
            return None;
        };
        let id = msg
            .get("id")
            .and_then(Value::as_str)
            .map(|s| cut(s, MAX_ID_LEN));
        let text = format!("dataType not supported: {}", cut(data_type, MAX_ECHO));
        Some(vec![Frame::Gzip(wire::error(
            id,
            ILLEGAL_ARGUMENT,
            &text,
            now_us() / 1_000,
        ))])
    }

    fn is_pong(&self, frame: Inbound<'_>) -> bool {
        frame.text().is_some_and(|t| {
            t.contains("pong")
                && matches!(serde_json::from_str::<Value>(t), Ok(Value::Object(m)) if m.contains_key("pong"))
        })
    }

    fn garbage(&self, n: u32) -> Frame {
        binary_garbage(n)
    }

    fn oversized(&self, bytes: usize) -> Frame {
        binary_oversized(bytes)
    }
}
