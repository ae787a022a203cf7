//! One HTX WebSocket connection: server pings answered by pongs, one topic per subscribe
//! request, and gzip-compressed pushes.
//!
//! HTX pings every 5 s with `{"ping":<ms>}` and disconnects a client that has not answered
//! `{"pong":<the same number>}` for two pings; a pong echoing any other number does not count.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::wire;
use crate::market::{MarketEvent, Universe, now_us};
use crate::ws::driver::{
    Frame, Goodbye, Inbound, Protocol, Reply, binary_garbage, binary_oversized,
};
use crate::ws::{End, RateWindow};

/// How often the server pings.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);
/// A ping unanswered this long (two ping periods) ends the connection.
pub(crate) const PONG_DEADLINE: Duration = Duration::from_secs(10);
/// Topics one connection may hold.
pub(crate) const MAX_TOPICS: usize = 300;
/// Subscribe/unsubscribe requests per connection per second.
pub(crate) const MAX_REQUESTS_PER_SECOND: usize = 50;
/// Pings remembered while unanswered (more than the deadline allows).
const MAX_OUTSTANDING: usize = 4;
/// Longest request id echoed back.
const MAX_ID_LEN: usize = 64;
/// Longest topic echoed in an error.
const MAX_ECHO: usize = 128;

/// A topic we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bbo,
    Trades,
}

impl Kind {
    const fn flag(self) -> u8 {
        match self {
            Kind::Bbo => 1,
            Kind::Trades => 2,
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
    topics: usize,
    requests: RateWindow,
    /// Pings sent and not yet answered: (number, sent at), oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    /// When the next ping is due (set when the session starts).
    next_ping: Instant,
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            wants,
            topics: 0,
            requests: RateWindow::new(MAX_REQUESTS_PER_SECOND, Duration::from_secs(1)),
            outstanding: VecDeque::new(),
            next_ping: Instant::now() + PING_EVERY,
        }
    }

    /// Records a ping about to be sent and returns its frame.
    pub(crate) fn ping(&mut self, now: Instant) -> String {
        let n = u64::try_from(now_us() / 1_000).unwrap_or(0);
        // Two pings within one millisecond would share a number; keep them distinct.
        let n = match self.outstanding.back() {
            Some(&(last, _)) if last >= n => last + 1,
            _ => n,
        };
        if self.outstanding.len() >= MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((n, now));
        wire::ping(n)
    }

    /// When the oldest unanswered ping expires.
    pub(crate) fn pong_due(&self) -> Option<Instant> {
        self.outstanding.front().map(|&(_, at)| at + PONG_DEADLINE)
    }

    /// A pong for an outstanding ping clears it and every older one.
    fn pong(&mut self, n: u64) -> bool {
        match self.outstanding.iter().position(|&(p, _)| p == n) {
            Some(i) => {
                self.outstanding.drain(..=i);
                true
            }
            None => false,
        }
    }

    /// Answers one client message. Returns the frames to send and the label of a refusal.
    pub(crate) fn handle(
        &mut self,
        text: &str,
        now: Instant,
    ) -> (Vec<String>, Option<&'static str>) {
        let ts = now_us() / 1_000;
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return (
                vec![wire::error(None, "bad-request", "invalid json", ts)],
                Some("invalid_json"),
            );
        };
        if let Some(p) = msg.get("pong") {
            // Only the number of an outstanding ping counts; anything else is ignored.
            return match p.as_u64() {
                Some(n) if self.pong(n) => (Vec::new(), None),
                _ => (Vec::new(), Some("stray_pong")),
            };
        }
        let id = match msg.get("id") {
            None => None,
            Some(Value::String(s)) => Some(cut(s, MAX_ID_LEN)),
            Some(_) => {
                return (
                    vec![wire::error(None, "bad-request", "invalid id", ts)],
                    Some("bad_id"),
                );
            }
        };
        let (topic, subscribe) = match (msg.get("sub"), msg.get("unsub")) {
            (Some(Value::String(t)), None) => (t.as_str(), true),
            (None, Some(Value::String(t))) => (t.as_str(), false),
            _ => {
                return (
                    vec![wire::error(id, "bad-request", "invalid request", ts)],
                    Some("invalid_request"),
                );
            }
        };
        if !self.requests.allow(now) {
            return (
                vec![wire::error(
                    id,
                    "too-many-requests",
                    "too many requests",
                    ts,
                )],
                Some("too_many_requests"),
            );
        }
        let Some((symbol, kind)) = self.parse_topic(topic) else {
            let msg = format!("invalid topic {}", cut(topic, MAX_ECHO));
            return (
                vec![wire::error(id, "bad-request", &msg, ts)],
                Some("invalid_topic"),
            );
        };
        let Some(wants) = self.wants.get_mut(symbol) else {
            return (Vec::new(), Some("invalid_topic"));
        };
        let had = *wants & kind.flag() != 0;
        if subscribe {
            if !had {
                if self.topics >= MAX_TOPICS {
                    let msg = format!("subscription limit exceeded: {MAX_TOPICS} topics");
                    return (
                        vec![wire::error(id, "bad-request", &msg, ts)],
                        Some("too_many_topics"),
                    );
                }
                *wants |= kind.flag();
                self.topics += 1;
            }
            (vec![wire::subbed(id, topic, ts)], None)
        } else {
            if had {
                *wants &= !kind.flag();
                self.topics = self.topics.saturating_sub(1);
            }
            (vec![wire::unsubbed(id, topic, ts)], None)
        }
    }

    fn parse_topic(&self, topic: &str) -> Option<(usize, Kind)> {
        let rest = topic.strip_prefix("market.")?;
        let (sym, kind) = if let Some(s) = rest.strip_suffix(".bbo") {
            (s, Kind::Bbo)
        } else {
            (rest.strip_suffix(".trade.detail")?, Kind::Trades)
        };
        Some((self.universe.by_stream(sym)?, kind))
    }

    /// The frame for a market event this connection listens to.
    pub(crate) fn encode(&self, event: &MarketEvent) -> Option<String> {
        let now_ms = now_us() / 1_000;
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(q.symbol)?;
                (wants & Kind::Bbo.flag() != 0).then(|| wire::bbo(inst, q, now_ms))
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                let inst = self.universe.instruments.get(t.symbol)?;
                (wants & Kind::Trades.flag() != 0).then(|| wire::trade(inst, t, now_ms))
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.next_ping = now + PING_EVERY;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text, now);
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

    /// HTX's reply to a topic it will not serve: `status:error`, `bad-request`, "invalid
    /// topic ..", the same as for an unknown topic.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        let topic = msg.get("sub")?.as_str()?;
        let id = msg
            .get("id")
            .and_then(Value::as_str)
            .map(|s| cut(s, MAX_ID_LEN));
        let text = format!("invalid topic {}", cut(topic, MAX_ECHO));
        Some(vec![Frame::Gzip(wire::error(
            id,
            "bad-request",
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
