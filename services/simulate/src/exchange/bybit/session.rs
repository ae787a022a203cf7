//! One Bybit spot WebSocket connection: a pure state machine served by the shared driver.
//!
//! Rules, as Bybit documents them: at most 10 args per subscribe request on spot (`"args size
//! >10"` otherwise); one answer per request; `orderbook.1` starts with a snapshot, is pushed
//! when the top of book changes and pushed again, unchanged and with the same `u`, after 3 s
//! without a change; the client pings with `{"op":"ping"}` (every 20 s recommended).
//!
//! Choices where the docs are silent (each visible in the replies):
//! - A request is all or nothing: one bad arg (an unknown topic, an unlisted symbol, a topic
//!   already held) refuses the whole request, with the messages Bybit is reported to use:
//!   `error:handler not found,topic:<t>`, `Invalid symbol :[<t>]`,
//!   `error:already subscribed,topic:<t>`. A message that is not a JSON object gets
//!   `{"success":false,"ret_msg":"error:invalid request","op":""}`.
//! - Bybit cuts a connection after 10 minutes with neither ping-pong nor stream data (the
//!   connect page). The simulator is stricter: only `{"op":"ping"}` counts (data, WebSocket
//!   pings and other requests do not), so a client that forgets its heartbeat fails here
//!   rather than on a quiet market; one silent for the idle timeout is dropped without a
//!   Close frame.
//! - The `refuse_subscription` fault answers a subscribe with the documented failure shape
//!   and `ret_msg` `error:too many requests` (Bybit documents no message for it).
//! - Bybit documents no notice before it closes a connection: a forced close (fault or
//!   shutdown) is a bare Close frame, 1001.
//! - The 21,000-character per-connection args cap and the connection-rate limits are not
//!   enforced.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Sequences;
use super::wire::{self, OpReply};
use crate::market::{Board, MarketEvent, Quote, Universe, now_us};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, to_json};

/// Args per subscribe request on spot.
pub(crate) const MAX_ARGS: usize = 10;
/// An unchanged level-1 book is pushed again after this long.
pub(crate) const REPUSH_AFTER: Duration = Duration::from_secs(3);
/// How often the re-push is checked for.
const REPUSH_CHECK: Duration = Duration::from_millis(250);
/// Longest text of a client's own echoed back.
const MAX_ECHO: usize = 256;

const BOOK: u8 = 1;
const TRADE: u8 = 2;

fn cut(text: &str) -> &str {
    if text.len() <= MAX_ECHO {
        return text;
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A parsed topic: which symbol, which channel.
fn parse_topic(universe: &Universe, topic: &str) -> Result<(usize, u8), String> {
    let (channel, native) = if let Some(sym) = topic.strip_prefix("orderbook.1.") {
        (BOOK, sym)
    } else if let Some(sym) = topic.strip_prefix("publicTrade.") {
        (TRADE, sym)
    } else {
        return Err(format!("error:handler not found,topic:{}", cut(topic)));
    };
    match universe.by_concat(native) {
        Some(i) => Ok((i, channel)),
        None => Err(format!("Invalid symbol :[{}]", cut(topic))),
    }
}

/// One connection's protocol state. Pure apart from reading the board and the clock in
/// `on_event`; [`crate::ws::driver::run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    board: Arc<Board>,
    exchange: usize,
    pub(super) conn_id: String,
    idle_timeout: Duration,
    sequences: Arc<Sequences>,
    /// Service restarts this session has announced.
    restarts_seen: u64,
    /// Per symbol: subscribed channels (`BOOK`, `TRADE` bits).
    wants: Vec<u8>,
    /// Per symbol: the book last pushed (its `seq` is the `u` it was pushed with), and when.
    pushed: Vec<Option<(Quote, Instant)>>,
    books: usize,
    last_ping: Instant,
    next_check: Instant,
}

impl Session {
    pub(crate) fn new(
        universe: Arc<Universe>,
        board: Arc<Board>,
        exchange: usize,
        idle_timeout: Duration,
        sequences: Arc<Sequences>,
    ) -> Self {
        let n = universe.instruments.len();
        let now = Instant::now();
        let r: u128 = rand::random();
        // Bybit's conn_id reads like a UUID.
        let conn_id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (r >> 96) as u32,
            (r >> 80) as u16,
            (r >> 68) as u16 & 0xfff,
            (r >> 56) as u16 & 0xfff,
            r as u64 & 0xffff_ffff_ffff
        );
        Self {
            universe,
            board,
            exchange,
            conn_id,
            idle_timeout,
            restarts_seen: sequences.restarts(),
            sequences,
            wants: vec![0; n],
            pushed: vec![None; n],
            books: 0,
            last_ping: now,
            next_check: now + REPUSH_CHECK,
        }
    }

    fn reply(&self, success: bool, ret_msg: &str, req_id: Option<&str>, op: &str) -> String {
        to_json(&OpReply {
            success,
            ret_msg,
            conn_id: &self.conn_id,
            req_id,
            op,
        })
    }

    /// The snapshot of `symbol` from the board, if it has one; remembered as pushed at `now`.
    /// `restart`: the first after a service restart, whose `u` is 1.
    fn snapshot(&mut self, symbol: usize, now: Instant, restart: bool) -> Option<String> {
        let mut q = self.board.get(self.exchange, symbol)?.quote;
        q.seq = if restart {
            1
        } else {
            self.sequences.u(symbol, q.seq).unwrap_or(1)
        };
        self.push_book(&q, now, q.ts_us / 1_000)
    }

    /// Pushes `q` (its `seq` already the `u` to send).
    fn push_book(&mut self, q: &Quote, now: Instant, ts_ms: i64) -> Option<String> {
        let inst = self.universe.instruments.get(q.symbol)?;
        let text = to_json(&wire::book(inst, q, ts_ms));
        self.pushed[q.symbol] = Some((*q, now));
        Some(text)
    }

    /// Answers one text message.
    pub(crate) fn handle(
        &mut self,
        text: &str,
        now: Instant,
    ) -> (Vec<String>, Option<&'static str>) {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            return (
                vec![self.reply(false, "error:invalid request", None, "")],
                Some("invalid_request"),
            );
        };
        let req_id = request.get("req_id").and_then(Value::as_str).map(cut);
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        match op {
            "ping" => {
                self.last_ping = now;
                (
                    vec![self.reply(true, "pong", Some(req_id.unwrap_or("")), "ping")],
                    None,
                )
            }
            "subscribe" | "unsubscribe" => self.subscription(op, &request, req_id, now),
            other => (
                vec![self.reply(
                    false,
                    &format!("error:unsupported op:{}", cut(other)),
                    req_id,
                    cut(other),
                )],
                Some("invalid_op"),
            ),
        }
    }

    fn subscription(
        &mut self,
        op: &str,
        request: &serde_json::Map<String, Value>,
        req_id: Option<&str>,
        now: Instant,
    ) -> (Vec<String>, Option<&'static str>) {
        let refuse = |s: &Self, msg: &str, why| (vec![s.reply(false, msg, req_id, op)], Some(why));
        let Some(args) = request
            .get("args")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            return refuse(self, "error:args is empty", "invalid_request");
        };
        if args.len() > MAX_ARGS {
            return refuse(self, "args size >10", "too_many_args");
        }
        let subscribe = op == "subscribe";
        let mut topics = Vec::with_capacity(args.len());
        for arg in args {
            let Some(topic) = arg.as_str() else {
                return refuse(self, "error:args must be strings", "invalid_request");
            };
            let (symbol, channel) = match parse_topic(&self.universe, topic) {
                Ok(t) => t,
                Err(msg) => return refuse(self, &msg, "no_such_topic"),
            };
            let held = self.wants[symbol] & channel != 0;
            if subscribe && held {
                return refuse(
                    self,
                    &format!("error:already subscribed,topic:{}", cut(topic)),
                    "already_subscribed",
                );
            }
            if !subscribe && !held {
                return refuse(
                    self,
                    &format!("error:not subscribed,topic:{}", cut(topic)),
                    "not_subscribed",
                );
            }
            topics.push((symbol, channel));
        }
        let mut frames =
            vec![self.reply(true, if subscribe { "subscribe" } else { "" }, req_id, op)];
        for (symbol, channel) in topics {
            if subscribe {
                self.wants[symbol] |= channel;
                if channel == BOOK {
                    self.books += 1;
                    frames.extend(self.snapshot(symbol, now, false));
                }
            } else {
                self.wants[symbol] &= !channel;
                if channel == BOOK {
                    self.books -= 1;
                    self.pushed[symbol] = None;
                }
            }
        }
        (frames, None)
    }

    /// The frames for one market event this connection listens to, at `now`.
    pub(crate) fn encode(&mut self, event: &MarketEvent, now: Instant, out: &mut Vec<Frame>) {
        self.announce_restart(now, out);
        match event {
            MarketEvent::Quote(q) => {
                if self.wants.get(q.symbol).is_some_and(|w| w & BOOK != 0) {
                    // An update from before a restart is not pushed after it.
                    let Some(u) = self.sequences.u(q.symbol, q.seq) else {
                        return;
                    };
                    // Level 1 is pushed when the top of book changed.
                    let changed = self.pushed[q.symbol].is_none_or(|(last, _)| last.book != q.book);
                    let q = Quote { seq: u, ..*q };
                    if changed && let Some(text) = self.push_book(&q, now, q.ts_us / 1_000) {
                        out.push(Frame::Text(text));
                    }
                }
            }
            MarketEvent::Trade(t) => {
                if self.wants.get(t.symbol).is_some_and(|w| w & TRADE != 0)
                    && let Some(inst) = self.universe.instruments.get(t.symbol)
                {
                    out.push(Frame::Text(to_json(&wire::trade(inst, t))));
                }
            }
        }
    }

    /// After a service restart: every book this session carries again, with `u` 1.
    fn announce_restart(&mut self, now: Instant, out: &mut Vec<Frame>) {
        let restarts = self.sequences.restarts();
        if restarts == self.restarts_seen {
            return;
        }
        self.restarts_seen = restarts;
        for symbol in 0..self.wants.len() {
            if self.wants[symbol] & BOOK != 0
                && let Some(text) = self.snapshot(symbol, now, true)
            {
                out.push(Frame::Text(text));
            }
        }
    }

    /// Books unchanged for [`REPUSH_AFTER`] pushed again, same `u`, at `now`.
    pub(crate) fn repush(&mut self, now: Instant, out: &mut Vec<Frame>) {
        let ts_ms = now_us() / 1_000;
        for symbol in 0..self.pushed.len() {
            if let Some((q, at)) = self.pushed[symbol]
                && at + REPUSH_AFTER <= now
                && let Some(text) = self.push_book(&q, now, ts_ms)
            {
                out.push(Frame::Text(text));
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.last_ping = now;
        self.next_check = now + REPUSH_CHECK;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let Some(text) = frame.request_text() else {
            // WebSocket pings are answered by the WebSocket layer; they are no heartbeat.
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text, now);
        Reply {
            frames: frames.into_iter().map(Frame::Text).collect(),
            rejected: rejected.into_iter().collect(),
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        self.encode(event, Instant::now(), out);
    }

    fn deadline(&self) -> Option<Instant> {
        let idle = self.last_ping + self.idle_timeout;
        Some(if self.books > 0 {
            idle.min(self.next_check)
        } else {
            idle
        })
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Frame>) -> Result<(), End> {
        if self.last_ping + self.idle_timeout <= now {
            return Err(End::Idle);
        }
        if self.next_check <= now {
            self.next_check = now + REPUSH_CHECK;
            self.announce_restart(now, out);
            self.repush(now, out);
        }
        Ok(())
    }

    /// Bybit documents no goodbye: a shutdown is a bare Close frame; an idle client is
    /// dropped without one.
    fn goodbye(&self, end: End) -> Option<Goodbye> {
        match end {
            End::Shutdown | End::MarketClosed => Some(Goodbye {
                notice: None,
                code: 1001,
                reason: "going away",
            }),
            _ => None,
        }
    }

    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let text = frame.text()?;
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        if request.get("op")?.as_str()? != "subscribe" {
            return None;
        }
        let req_id = request.get("req_id").and_then(Value::as_str).map(cut);
        Some(vec![Frame::Text(self.reply(
            false,
            "error:too many requests",
            req_id,
            "subscribe",
        ))])
    }
}
