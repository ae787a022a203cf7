//! One MEXC WebSocket connection: a pure state machine ([`Session`]: client text in, frames
//! out, deadlines), served by the shared driver (`ws/driver.rs`).
//!
//! Rules, as MEXC documents them (spot v3, "Websocket Market Streams" and "Websocket Limits"):
//! at most 30 subscriptions per connection, 100 client messages per second (beyond: the
//! connection is dropped), no valid subscription for 30 s closes the connection, and every
//! connection ends at 24 h. The docs say a subscribed connection "without data flow" is
//! closed after a minute and that a PING keeps it alive; the simulator is stricter and closes
//! any connection whose client has not sent `{"method":"PING"}` for 60 s, data or not, so a
//! client that forgets its keep-alive fails here rather than in production.

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

/// Subscriptions one connection may hold.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 30;
/// Client messages per second; one more drops the connection.
pub(crate) const MAX_MESSAGES_PER_SECOND: usize = 100;
/// A client silent (no PING) this long is dropped.
pub(crate) const PING_DEADLINE: Duration = Duration::from_secs(60);
/// A connection without a valid subscription this long is dropped.
pub(crate) const NO_SUBSCRIPTION_DEADLINE: Duration = Duration::from_secs(30);
/// Every connection ends at this age.
pub(crate) const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Topics read from one request, at most (more is refused whole).
const MAX_PARAMS: usize = 64;
/// Longest text echoed back in an answer.
const MAX_ECHO: usize = 2_048;

/// The two push kinds the simulator serves, each at MEXC's two intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BookTicker,
    Deals,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Kind::BookTicker => "bookTicker",
            Kind::Deals => "deals",
        }
    }
}

/// One subscribable topic: `spot@public.aggre.<kind>.v3.api.pb@<10ms|100ms>@<SYMBOL>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Topic {
    symbol: usize,
    kind: Kind,
    fast: bool,
}

impl Topic {
    const fn flag(self) -> u8 {
        let k = match self.kind {
            Kind::BookTicker => 0,
            Kind::Deals => 2,
        };
        1 << (k + self.fast as u8)
    }
}

const INTERVALS: [(bool, &str); 2] = [(false, "100ms"), (true, "10ms")];

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

/// What one client message did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Handled {
    /// Text frames to send, in order.
    pub frames: Vec<String>,
    /// The label of a refusal, for the metrics.
    pub rejected: Option<&'static str>,
    /// The connection must end (after the frames are sent).
    pub end: Option<End>,
}

/// One connection's protocol state; the driver does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    /// Per symbol: subscribed topics (`Topic::flag` bits).
    subs: Vec<u8>,
    count: usize,
    opened: Instant,
    last_ping: Instant,
    /// Since when nothing is subscribed (`None` while something is).
    unsubscribed_since: Option<Instant>,
    inbound: RateWindow,
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, now: Instant) -> Self {
        let subs = vec![0; universe.instruments.len()];
        Self {
            universe,
            subs,
            count: 0,
            opened: now,
            last_ping: now,
            unsubscribed_since: Some(now),
            inbound: RateWindow::new(MAX_MESSAGES_PER_SECOND, Duration::from_secs(1)),
        }
    }

    /// The next deadline and why the connection ends there.
    pub(crate) fn deadline(&self) -> (Instant, End) {
        let mut due = (self.opened + MAX_CONNECTION_AGE, End::MaxLifetime);
        let idle = self.last_ping + PING_DEADLINE;
        if idle < due.0 {
            due = (idle, End::Idle);
        }
        if let Some(since) = self.unsubscribed_since {
            let at = since + NO_SUBSCRIPTION_DEADLINE;
            if at < due.0 {
                due = (at, End::NoSubscription);
            }
        }
        due
    }

    /// Subscriptions held.
    #[cfg(test)]
    pub(crate) fn subscriptions(&self) -> usize {
        self.count
    }

    fn parse_topic(&self, topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix("spot@public.aggre.")?;
        let (kind, rest) = if let Some(r) = rest.strip_prefix("bookTicker.v3.api.pb@") {
            (Kind::BookTicker, r)
        } else {
            (Kind::Deals, rest.strip_prefix("deals.v3.api.pb@")?)
        };
        let (interval, symbol) = rest.split_once('@')?;
        let fast = INTERVALS.iter().find(|(_, name)| *name == interval)?.0;
        // Symbols are upper case, exactly as REST lists them.
        let symbol = self.universe.by_concat(symbol)?;
        Some(Topic { symbol, kind, fast })
    }

    fn channel(&self, topic: Topic) -> Option<String> {
        let inst = self.universe.instruments.get(topic.symbol)?;
        let interval = if topic.fast { "10ms" } else { "100ms" };
        Some(format!(
            "spot@public.aggre.{}.v3.api.pb@{interval}@{}",
            topic.kind.name(),
            inst.concat
        ))
    }

    fn has(&self, t: Topic) -> bool {
        self.subs.get(t.symbol).is_some_and(|s| s & t.flag() != 0)
    }

    fn set(&mut self, t: Topic, on: bool, now: Instant) {
        let Some(s) = self.subs.get_mut(t.symbol) else {
            return;
        };
        let had = *s & t.flag() != 0;
        if on && !had {
            *s |= t.flag();
            self.count += 1;
        } else if !on && had {
            *s &= !t.flag();
            self.count -= 1;
        }
        self.unsubscribed_since = match (self.count, self.unsubscribed_since) {
            (0, None) => Some(now),
            (0, since) => since,
            _ => None,
        };
    }

    /// Answers one client message.
    pub(crate) fn handle(&mut self, text: &str, now: Instant) -> Handled {
        let mut h = Handled::default();
        if !self.inbound.allow(now) {
            h.rejected = Some("rate_limited");
            h.end = Some(End::RateLimited);
            return h;
        }
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            // MEXC does not answer what it cannot read.
            h.rejected = Some("invalid_json");
            return h;
        };
        let id = msg.get("id").and_then(Value::as_u64).unwrap_or(0);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params: Option<Vec<&str>> = match msg.get("params") {
            Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_PARAMS => {
                list.iter().map(Value::as_str).collect()
            }
            _ => None,
        };
        match (method, params) {
            ("PING", _) => {
                self.last_ping = now;
                h.frames.push(wire::pong());
            }
            ("SUBSCRIPTION", Some(params)) => self.subscribe(id, &params, now, &mut h),
            ("UNSUBSCRIPTION", Some(params)) => {
                for p in &params {
                    if let Some(t) = self.parse_topic(p) {
                        self.set(t, false, now);
                    }
                }
                h.frames
                    .push(wire::answer(id, cut(&params.join(","), MAX_ECHO)));
            }
            ("SUBSCRIPTION" | "UNSUBSCRIPTION", None) => {
                h.frames.push(wire::refused(id, "", "Blocked!"));
                h.rejected = Some("invalid_request");
            }
            _ => h.rejected = Some("invalid_request"),
        }
        h
    }

    fn subscribe(&mut self, id: u64, params: &[&str], now: Instant, h: &mut Handled) {
        let listed = params.join(",");
        let listed = cut(&listed, MAX_ECHO);
        let topics: Option<Vec<Topic>> = params.iter().map(|p| self.parse_topic(p)).collect();
        let Some(topics) = topics else {
            // One bad topic refuses the request, every topic of it listed.
            h.frames.push(wire::refused(id, listed, "Blocked!"));
            h.rejected = Some("invalid_topic");
            return;
        };
        // Topics not held yet, each once (a request may repeat one).
        let mut new: Vec<Topic> = Vec::with_capacity(topics.len());
        for t in topics {
            if !self.has(t) && !new.contains(&t) {
                new.push(t);
            }
        }
        if self.count + new.len() > MAX_SUBSCRIPTIONS {
            h.frames.push(wire::refused(
                id,
                listed,
                "Exceeded the limit of 30 subscriptions!",
            ));
            h.rejected = Some("too_many_subscriptions");
            return;
        }
        for t in new {
            self.set(t, true, now);
        }
        h.frames.push(wire::answer(id, listed));
    }

    /// The binary frames for a market event, one per subscribed topic it concerns.
    pub(crate) fn encode(&self, event: &MarketEvent, now_ms: i64) -> Vec<Vec<u8>> {
        let (symbol, kind) = match event {
            MarketEvent::Quote(q) => (q.symbol, Kind::BookTicker),
            MarketEvent::Trade(t) => (t.symbol, Kind::Deals),
        };
        let Some(inst) = self.universe.instruments.get(symbol) else {
            return Vec::new();
        };
        INTERVALS
            .iter()
            .map(|&(fast, _)| Topic { symbol, kind, fast })
            .filter(|t| self.has(*t))
            .filter_map(|t| self.channel(t))
            .map(|channel| match event {
                MarketEvent::Quote(q) => wire::book_ticker(&channel, inst, q, now_ms),
                MarketEvent::Trade(t) => wire::deals(&channel, inst, t, now_ms),
            })
            .collect()
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        // The state was made at the upgrade; the clocks start with the session.
        self.opened = now;
        self.last_ping = now;
        if self.count == 0 {
            self.unsubscribed_since = Some(now);
        }
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let handled = self.handle(&text, now);
        Reply {
            frames: handled.frames.into_iter().map(Frame::Text).collect(),
            rejected: handled.rejected.into_iter().collect(),
            end: handled.end,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(
            self.encode(event, now_us() / 1_000)
                .into_iter()
                .map(|b| Frame::Binary(b.into())),
        );
    }

    fn deadline(&self) -> Option<Instant> {
        Some(Session::deadline(self).0)
    }

    fn on_timer(&mut self, now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        let (due, why) = Session::deadline(self);
        if due <= now { Err(why) } else { Ok(()) }
    }

    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::MaxLifetime => (1000, "connection lifetime exceeded"),
            End::Idle => (1000, "no ping for 60 s"),
            End::NoSubscription => (1000, "no subscription"),
            End::RateLimited => (1008, "too many messages"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// MEXC's refusal of a subscription: `code` 0 and "Not Subscribed successfully!", the
    /// same answer as for a topic it does not serve.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if msg.get("method").and_then(Value::as_str) != Some("SUBSCRIPTION") {
            return None;
        }
        let id = msg.get("id").and_then(Value::as_u64).unwrap_or(0);
        let params: Vec<&str> = match msg.get("params") {
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let listed = params.join(",");
        Some(vec![Frame::Text(wire::refused(
            id,
            cut(&listed, MAX_ECHO),
            "Blocked!",
        ))])
    }

    fn garbage(&self, n: u32) -> Frame {
        binary_garbage(n)
    }

    fn oversized(&self, bytes: usize) -> Frame {
        binary_oversized(bytes)
    }
}

#[cfg(test)]
mod tests;
