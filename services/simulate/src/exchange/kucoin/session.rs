//! One KuCoin WebSocket connection: a welcome first, subscribe/unsubscribe with comma-separated
//! symbols, client pings answered by pongs with the same id, and pushes for the topics held.
//!
//! Limits, as KuCoin documents them: 100 topics per subscribe message and 400 per connection
//! (one topic is one symbol on one channel: `/market/ticker:BTC-USDT,ETH-USDT` is two); 100
//! uplink messages per 10 s; a connection that has sent nothing for `pingInterval +
//! pingTimeout` is closed (KuCoin: "if the server has not received any message from the client
//! for a long time, the connection will be disconnected"; any message counts, not only pings);
//! a connection lives at most 24 h.
//!
//! Refusals use KuCoin's error shape `{"id":..,"type":"error","code":..,"data":".."}`: 400 for
//! a malformed request, 404 for an unknown topic (`topic /market/ticker:FOO-USDT is not
//! found`), 509 for a subscription cap (`exceed max subscription count limitation of 100 per
//! time` / `of 400 per session`, the wording KuCoin's server uses), 429 past the uplink limit.
//! Over-limit requests are refused, not disconnected: KuCoin does not document a disconnect.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::wire;
use crate::market::{MarketEvent, Universe};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, RateWindow};

/// Topics (symbol x channel) one subscribe message may carry.
pub(crate) const TOPICS_PER_MESSAGE: usize = 100;
/// Topics one connection may hold.
pub(crate) const TOPICS_PER_CONNECTION: usize = 400;
/// Uplink messages per window (every client message counts, pings included).
pub(crate) const UPLINK_LIMIT: usize = 100;
/// The uplink window.
pub(crate) const UPLINK_WINDOW: Duration = Duration::from_secs(10);
/// A connection is closed at this age (KuCoin: a connection is expected to drop after 24 h).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3_600);
/// Longest request or connect id echoed back.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest topic text echoed in an error.
const MAX_ECHO: usize = 128;

/// The keep-alive the bullet-public response announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How often the client should ping.
    pub ping_interval: Duration,
    /// How much longer the server waits before dropping a silent client.
    pub ping_timeout: Duration,
}

/// A channel we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ticker,
    Match,
}

impl Kind {
    const fn flag(self) -> u8 {
        match self {
            Kind::Ticker => 1,
            Kind::Match => 2,
        }
    }

    const fn prefix(self) -> &'static str {
        match self {
            Kind::Ticker => "/market/ticker",
            Kind::Match => "/market/match",
        }
    }
}

pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The frame that replaces the welcome when the token is refused.
pub(crate) fn refusal(connect_id: &str, reason: &str) -> String {
    wire::error(Some(connect_id), 401, reason)
}

/// A refusal: the frames to send and the metric label.
type Answer = (Vec<String>, Option<&'static str>);

fn refuse(id: Option<&str>, code: u16, data: &str, why: &'static str) -> Answer {
    (vec![wire::error(id, code, data)], Some(why))
}

/// One connection's protocol state; the shared driver does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    connect_id: String,
    timing: Timing,
    /// Per symbol: subscribed kinds (`Kind::flag` bits).
    wants: Vec<u8>,
    topics: usize,
    uplink: RateWindow,
    /// When the client last sent anything.
    last_heard: Instant,
    /// When the session started (it ends at 24 h).
    opened: Instant,
}

impl Session {
    pub(crate) fn new(
        universe: Arc<Universe>,
        connect_id: &str,
        timing: Timing,
        now: Instant,
    ) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            connect_id: cut(connect_id, MAX_ID_LEN).to_owned(),
            timing,
            wants,
            topics: 0,
            uplink: RateWindow::new(UPLINK_LIMIT, UPLINK_WINDOW),
            last_heard: now,
            opened: now,
        }
    }

    /// The first frame: `{"id":"<connectId>","type":"welcome"}`.
    pub(crate) fn welcome(&self) -> String {
        wire::welcome(&self.connect_id)
    }

    /// When the connection is dropped unless the client sends something first.
    pub(crate) fn silence_deadline(&self) -> Instant {
        self.last_heard + self.timing.ping_interval + self.timing.ping_timeout
    }

    /// Topics held.
    #[cfg(test)]
    pub(crate) fn topics(&self) -> usize {
        self.topics
    }

    /// Answers one client message. Returns the frames to send and the label of a refusal.
    pub(crate) fn handle(&mut self, text: &str, now: Instant) -> Answer {
        self.last_heard = now;
        let allowed = self.uplink.allow(now);
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return refuse(None, 400, "malformed message", "invalid_json");
        };
        // KuCoin's examples send the id as a number or a string; replies carry a string.
        let id = match msg.get("id") {
            Some(Value::String(s)) => Some(cut(s, MAX_ID_LEN).to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = id.as_deref();
        if !allowed {
            return refuse(
                id,
                429,
                "exceed max permits per 10 seconds",
                "too_many_requests",
            );
        }
        let subscribe = match msg.get("type").and_then(Value::as_str) {
            Some("ping") => return (vec![wire::pong(id)], None),
            Some("subscribe") => true,
            Some("unsubscribe") => false,
            Some(_) => return refuse(id, 400, "unsupported type", "unsupported_type"),
            None => return refuse(id, 400, "type is required", "invalid_request"),
        };
        let Some(topic) = msg.get("topic").and_then(Value::as_str) else {
            return refuse(id, 400, "topic is required", "invalid_request");
        };
        if msg.get("privateChannel").and_then(Value::as_bool) == Some(true) {
            return refuse(
                id,
                401,
                "private channel needs a private token",
                "private_channel",
            );
        }
        let response = msg.get("response").and_then(Value::as_bool) == Some(true);
        let symbols = match self.parse_topic(topic) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                let (code, data, why) = refusal;
                return refuse(id, code, &data, why);
            }
        };
        let (kind, indices) = symbols;
        let flag = kind.flag();
        if subscribe {
            let new = indices
                .iter()
                .filter(|&&i| self.wants.get(i).is_some_and(|w| w & flag == 0))
                .count();
            if self.topics + new > TOPICS_PER_CONNECTION {
                let data = format!(
                    "exceed max subscription count limitation of {TOPICS_PER_CONNECTION} per session"
                );
                return refuse(id, 509, &data, "too_many_topics");
            }
            for &i in &indices {
                if let Some(w) = self.wants.get_mut(i) {
                    *w |= flag;
                }
            }
            self.topics += new;
        } else {
            for &i in &indices {
                if let Some(w) = self.wants.get_mut(i)
                    && *w & flag != 0
                {
                    *w &= !flag;
                    self.topics = self.topics.saturating_sub(1);
                }
            }
        }
        if response {
            (vec![wire::ack(id)], None)
        } else {
            (Vec::new(), None)
        }
    }

    /// `/market/ticker:BTC-USDT,ETH-USDT` into its channel and distinct symbol indices.
    fn parse_topic(&self, topic: &str) -> Result<(Kind, Vec<usize>), (u16, String, &'static str)> {
        let not_found = |t: &str| {
            (
                404,
                format!("topic {} is not found", cut(t, MAX_ECHO)),
                "invalid_topic",
            )
        };
        let (prefix, list) = topic.split_once(':').ok_or_else(|| not_found(topic))?;
        let kind = match prefix {
            "/market/ticker" => Kind::Ticker,
            "/market/match" => Kind::Match,
            _ => return Err(not_found(topic)),
        };
        if list.split(',').count() > TOPICS_PER_MESSAGE {
            return Err((
                509,
                format!(
                    "exceed max subscription count limitation of {TOPICS_PER_MESSAGE} per time"
                ),
                "too_many_topics_per_message",
            ));
        }
        let mut indices = Vec::new();
        for name in list.split(',') {
            match self.universe.by_canonical(name) {
                Some(i) => indices.push(i),
                None => return Err(not_found(&format!("{}:{name}", kind.prefix()))),
            }
        }
        indices.sort_unstable();
        indices.dedup();
        Ok((kind, indices))
    }

    /// The frame for a market event this connection listens to.
    pub(crate) fn encode(&self, event: &MarketEvent) -> Option<String> {
        let (symbol, kind) = match event {
            MarketEvent::Quote(q) => (q.symbol, Kind::Ticker),
            MarketEvent::Trade(t) => (t.symbol, Kind::Match),
        };
        if self.wants.get(symbol).copied().unwrap_or(0) & kind.flag() == 0 {
            return None;
        }
        let inst = self.universe.instruments.get(symbol)?;
        Some(match event {
            MarketEvent::Quote(q) => wire::ticker(inst, q),
            MarketEvent::Trade(t) => wire::matched(inst, t),
        })
    }
}

/// How a connection opens: with a session, or refused with KuCoin's error frame.
#[derive(Debug)]
pub(crate) enum Opening {
    Welcome(Box<Session>),
    Refused { frame: String, reason: &'static str },
}

impl Opening {
    fn session(&mut self) -> Option<&mut Session> {
        match self {
            Opening::Welcome(s) => Some(s),
            Opening::Refused { .. } => None,
        }
    }
}

impl Protocol for Opening {
    fn start(&mut self, now: Instant) {
        // The state was made at the upgrade; silence counts from the session's start.
        if let Some(s) = self.session() {
            s.last_heard = now;
            s.opened = now;
        }
    }

    /// The welcome, or the token's refusal in its place followed by a close.
    fn hello(&mut self, _now: Instant) -> Reply {
        match self {
            Opening::Welcome(s) => Reply::frames(vec![Frame::Text(s.welcome())]),
            Opening::Refused { frame, reason } => Reply {
                frames: vec![Frame::Text(std::mem::take(frame))],
                rejected: vec![*reason],
                end: Some(End::Unauthorized),
            },
        }
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let Some(s) = self.session() else {
            return Reply::default();
        };
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = s.handle(&text, now);
        Reply {
            frames: frames.into_iter().map(Frame::Text).collect(),
            rejected: rejected.into_iter().collect(),
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        if let Some(s) = self.session() {
            out.extend(s.encode(event).map(Frame::Text));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Opening::Welcome(s) => Some(s.silence_deadline().min(s.opened + MAX_LIFETIME)),
            Opening::Refused { .. } => None,
        }
    }

    fn on_timer(&mut self, now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        let Some(s) = self.session() else {
            return Ok(());
        };
        if s.opened + MAX_LIFETIME <= now {
            return Err(End::MaxLifetime);
        }
        if s.silence_deadline() <= now {
            return Err(End::Idle);
        }
        Ok(())
    }

    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::Idle => (1000, "ping timeout"),
            End::MaxLifetime => (1000, "connection lifetime"),
            End::Unauthorized => (1008, "token refused"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// KuCoin's error reply to a subscribe it will not serve, with the request's id: 509, the
    /// code its server uses for subscriptions it cannot take.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if msg.get("type").and_then(Value::as_str) != Some("subscribe") {
            return None;
        }
        // As for any request: the id as a number or a string, replied as a string.
        let id = match msg.get("id") {
            Some(Value::String(s)) => Some(cut(s, MAX_ID_LEN).to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Some(vec![Frame::Text(wire::error(
            id.as_deref(),
            509,
            "subscription refused, please retry later",
        ))])
    }
}
