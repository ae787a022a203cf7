//! One Bitget WebSocket connection: subscribe/unsubscribe acked per argument, error events
//! with Bitget's codes, text ping/pong, the 30 s ping and no-subscription deadlines, the
//! inbound message rate, the hourly request limit and the channel cap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::wire::{self, Ack, Arg, ErrorEvent, Push};
use super::{MAX_CHANNELS, MAX_MESSAGES_PER_SECOND, MAX_OPS_PER_HOUR, PING_TIMEOUT};
use crate::market::{Board, MarketEvent, Quote, Trade};
use crate::market::{Instrument, Universe};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, RateWindow, to_json};

/// How much of a bad request is echoed back.
const MAX_ECHO: usize = 64;

const TICKER: u8 = 1;
const TRADE: u8 = 2;

fn channel_flag(name: &str) -> Option<u8> {
    match name {
        "ticker" => Some(TICKER),
        "trade" => Some(TRADE),
        _ => None,
    }
}

/// The start of `text`, cut at a character boundary.
fn echo(text: &str) -> &str {
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
    board: Arc<Board>,
    exchange: usize,
    /// Per symbol: the channels subscribed (`TICKER`, `TRADE` bits).
    wants: Vec<u8>,
    channels: usize,
    inbound: RateWindow,
    ops: RateWindow,
    subscribed_ever: bool,
    connected: Instant,
    last_ping: Instant,
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, board: Arc<Board>, exchange: usize) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            board,
            exchange,
            wants,
            channels: 0,
            inbound: RateWindow::new(MAX_MESSAGES_PER_SECOND, Duration::from_secs(1)),
            ops: RateWindow::new(MAX_OPS_PER_HOUR, Duration::from_secs(3_600)),
            subscribed_ever: false,
            connected: Instant::now(),
            last_ping: Instant::now(),
        }
    }

    fn error(arg: Option<Arg<'_>>, code: u32, msg: &str, op: Option<&str>) -> String {
        to_json(&ErrorEvent {
            event: "error",
            arg,
            code,
            msg,
            op,
        })
    }

    /// Answers one request (anything but `ping`).
    fn handle(&mut self, text: &str, now: Instant, reply: &mut Reply) {
        let refuse = |reply: &mut Reply, frame: String, why: &'static str| {
            reply.frames.push(Frame::Text(frame));
            reply.rejected.push(why);
        };
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            refuse(
                reply,
                Self::error(None, 30016, "Param error", None),
                "param_error",
            );
            return;
        };
        let Some(op) = request.get("op").and_then(Value::as_str) else {
            refuse(
                reply,
                Self::error(None, 30016, "Param error", None),
                "param_error",
            );
            return;
        };
        let subscribe = match op {
            "subscribe" => true,
            "unsubscribe" => false,
            _ => {
                refuse(
                    reply,
                    Self::error(None, 30003, "Invalid op", None),
                    "invalid_op",
                );
                return;
            }
        };
        let Some(args) = request
            .get("args")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            refuse(
                reply,
                Self::error(None, 30016, "Param error", Some(op)),
                "param_error",
            );
            return;
        };
        if !self.ops.allow(now) {
            refuse(
                reply,
                Self::error(None, 30006, "request too many", Some(op)),
                "too_many_requests",
            );
            return;
        }
        for a in args {
            let field = |name: &str| a.get(name).and_then(Value::as_str).unwrap_or("");
            let (inst_type, channel, inst_id) =
                (field("instType"), field("channel"), field("instId"));
            let arg = Arg {
                inst_type: echo(inst_type),
                channel: echo(channel),
                inst_id: echo(inst_id),
            };
            let symbol = self.universe.by_concat(inst_id);
            let (Some(flag), Some(symbol), "SPOT") = (channel_flag(channel), symbol, inst_type)
            else {
                let msg = format!(
                    "instType:{},channel:{},instId:{} doesn't exist",
                    arg.inst_type, arg.channel, arg.inst_id
                );
                refuse(
                    reply,
                    Self::error(Some(arg), 30001, &msg, Some(op)),
                    "no_such_channel",
                );
                continue;
            };
            let had = self.wants[symbol] & flag != 0;
            if subscribe && !had && self.channels >= MAX_CHANNELS {
                let msg = format!("channels per connection exceed {MAX_CHANNELS}");
                refuse(
                    reply,
                    Self::error(Some(arg), 30006, &msg, Some(op)),
                    "too_many_channels",
                );
                continue;
            }
            reply
                .frames
                .push(Frame::Text(to_json(&Ack { event: op, arg })));
            if !subscribe {
                if had {
                    self.wants[symbol] &= !flag;
                    self.channels -= 1;
                }
                continue;
            }
            if !had {
                self.wants[symbol] |= flag;
                self.channels += 1;
            }
            self.subscribed_ever = true;
            // Each channel starts with a snapshot: the current ticker, the latest trade.
            let inst = &self.universe.instruments[symbol];
            if let Some(view) = self.board.get(self.exchange, symbol) {
                let frame = if flag == TICKER {
                    ticker_push(inst, &view.quote)
                } else {
                    let last = view.last_trade_ts_us.map(|ts_us| Trade {
                        symbol,
                        seq: view.quote.seq,
                        trade_id: view.quote.stats.last_trade_id,
                        price: view.quote.stats.last,
                        qty: view.quote.stats.last_qty,
                        taker_buy: true,
                        ts_us,
                    });
                    trade_push(inst, "snapshot", last.as_ref(), view.quote.ts_us)
                };
                reply.frames.push(Frame::Text(frame));
            }
        }
    }

    fn encode(&self, event: &MarketEvent) -> Option<String> {
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                if wants & TICKER == 0 {
                    return None;
                }
                Some(ticker_push(self.universe.instruments.get(q.symbol)?, q))
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                if wants & TRADE == 0 {
                    return None;
                }
                let inst = self.universe.instruments.get(t.symbol)?;
                Some(trade_push(inst, "update", Some(t), t.ts_us))
            }
        }
    }
}

fn spot_arg<'a>(channel: &'a str, inst: &'a Instrument) -> Arg<'a> {
    Arg {
        inst_type: "SPOT",
        channel,
        inst_id: &inst.concat,
    }
}

/// A `ticker` push; Bitget's page shows every ticker push as a `snapshot`.
fn ticker_push(inst: &Instrument, q: &Quote) -> String {
    to_json(&Push {
        action: "snapshot",
        arg: spot_arg("ticker", inst),
        data: vec![wire::ticker(inst, q)],
        ts: q.ts_us / 1_000,
    })
}

fn trade_push(inst: &Instrument, action: &'static str, t: Option<&Trade>, ts_us: i64) -> String {
    to_json(&Push {
        action,
        arg: spot_arg("trade", inst),
        data: t.map(|t| wire::trade(inst, t)).into_iter().collect(),
        ts: ts_us / 1_000,
    })
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.connected = now;
        self.last_ping = now;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let mut reply = Reply::default();
        let Some(text) = frame.request_text() else {
            // WebSocket control frames: answered by the WebSocket layer.
            return reply;
        };
        if !self.inbound.allow(now) {
            reply.rejected.push("rate_limited");
            reply.end = Some(End::RateLimited);
            return reply;
        }
        if text == "ping" {
            self.last_ping = now;
            reply.frames.push(Frame::Text("pong".to_owned()));
            return reply;
        }
        self.handle(&text, now, &mut reply);
        reply
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(self.encode(event).map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        let ping = self.last_ping + PING_TIMEOUT;
        Some(if self.subscribed_ever {
            ping
        } else {
            ping.min(self.connected + PING_TIMEOUT)
        })
    }

    fn on_timer(&mut self, now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        if !self.subscribed_ever && self.connected + PING_TIMEOUT <= now {
            return Err(End::NoSubscription);
        }
        if self.last_ping + PING_TIMEOUT <= now {
            return Err(End::Idle);
        }
        Ok(())
    }

    /// Bitget documents no notice before a close: a Close frame only.
    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::Idle => (1000, "no ping for 30 s"),
            End::NoSubscription => (1000, "no subscription in 30 s"),
            End::RateLimited => (1008, "too many messages"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// A `subscribe` refused with 30006 "request too many" (what Bitget answers when a
    /// connection asks too often), naming the request's first argument; nothing changes.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if request.get("op")?.as_str()? != "subscribe" {
            return None;
        }
        let first = request.get("args")?.as_array()?.first()?;
        let field = |name: &str| first.get(name).and_then(Value::as_str).unwrap_or("");
        let arg = Arg {
            inst_type: echo(field("instType")),
            channel: echo(field("channel")),
            inst_id: echo(field("instId")),
        };
        Some(vec![Frame::Text(Self::error(
            Some(arg),
            30006,
            "request too many",
            Some("subscribe"),
        ))])
    }
}
