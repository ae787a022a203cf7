//! One OKX WebSocket connection: subscribe/unsubscribe with OKX's acks and error codes,
//! text ping/pong, the 30 s no-subscription and idle deadlines, the hourly request limit.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::wire::{Ack, Arg, ErrorEvent, Push, bbo, okx_ticker, okx_trade};
use super::{Channel, IDLE_CLOSE, IDLE_TIMEOUT, MAX_ECHO, MAX_ID_LEN, MAX_OPS_PER_HOUR};
use crate::market::{Board, MarketEvent, Quote, Universe};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, RateWindow, to_json};

/// The frames answering one client message, and the labels of any refusals among them.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pub(super) frames: Vec<String>,
    pub(super) rejected: Vec<&'static str>,
}

/// One connection's protocol state. Pure apart from reading the board;
/// [`crate::ws::driver::run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) universe: Arc<Universe>,
    pub(super) board: Arc<Board>,
    pub(super) exchange: usize,
    pub(super) conn_id: String,
    /// Per symbol: which channels are subscribed (`Channel::flag` bits).
    pub(super) wants: Vec<u8>,
    pub(super) ops: RateWindow,
    pub(super) subscribed_ever: bool,
    /// When the session started, and when anything last moved either way.
    connected: Instant,
    last_traffic: Instant,
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
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

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, board: Arc<Board>, exchange: usize) -> Self {
        let wants = vec![0; universe.instruments.len()];
        Self {
            universe,
            board,
            exchange,
            conn_id: format!("{:08x}", rand::random::<u32>()),
            wants,
            ops: RateWindow::new(MAX_OPS_PER_HOUR, Duration::from_secs(3_600)),
            subscribed_ever: false,
            connected: Instant::now(),
            last_traffic: Instant::now(),
        }
    }

    pub(super) fn error(&self, id: Option<&str>, code: &str, msg: &str) -> String {
        to_json(&ErrorEvent {
            id,
            event: "error",
            code,
            msg,
            conn_id: &self.conn_id,
        })
    }

    pub(super) fn notice(&self) -> String {
        to_json(&json!({
            "event": "notice",
            "code": "64008",
            "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
            "connId": self.conn_id,
        }))
    }

    /// Answers one text message (other than `ping`).
    pub(super) fn handle(&mut self, text: &str, now: Instant) -> Replies {
        let mut out = Replies::default();
        let invalid = |s: &Self, id: Option<&str>| {
            s.error(id, "60012", &format!("Invalid request: {}", echo(text)))
        };
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            out.frames.push(invalid(self, None));
            out.rejected.push("invalid_request");
            return out;
        };
        let id = match request.get("id") {
            None => None,
            Some(Value::String(id)) if valid_id(id) => Some(id.as_str()),
            Some(_) => {
                out.frames.push(invalid(self, None));
                out.rejected.push("bad_id");
                return out;
            }
        };
        let Some(op) = request.get("op").and_then(Value::as_str) else {
            out.frames.push(invalid(self, id));
            out.rejected.push("invalid_request");
            return out;
        };
        let subscribe = match op {
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                out.frames
                    .push(self.error(id, "60019", &format!("Invalid op: {}", echo(other))));
                out.rejected.push("invalid_op");
                return out;
            }
        };
        let Some(args) = request
            .get("args")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            out.frames.push(invalid(self, id));
            out.rejected.push("invalid_request");
            return out;
        };
        if !self.ops.allow(now) {
            out.frames
                .push(self.error(id, "60014", "Requests too frequent."));
            out.rejected.push("too_frequent");
            return out;
        }
        for arg in args {
            let channel = arg.get("channel").and_then(Value::as_str);
            let inst_id = arg.get("instId").and_then(Value::as_str);
            let Some(channel) = channel else {
                out.frames.push(invalid(self, id));
                out.rejected.push("invalid_request");
                continue;
            };
            let known = Channel::parse(channel);
            let (Some(ch), Some(inst_id)) = (known, inst_id) else {
                if known.is_some() {
                    out.frames
                        .push(self.error(id, "60027", "Parameter instId can not be empty."));
                } else {
                    let what = match inst_id {
                        Some(i) => format!("channel:{},instId:{}", echo(channel), echo(i)),
                        None => format!("channel:{}", echo(channel)),
                    };
                    out.frames.push(self.error(
                        id,
                        "60018",
                        &format!("Wrong URL or {what} doesn't exist. Please use the correct URL, channel and parameters referring to API document."),
                    ));
                }
                out.rejected.push("no_such_channel");
                continue;
            };
            let Some(symbol) = self.universe.by_canonical(inst_id) else {
                out.frames.push(self.error(
                    id,
                    "60018",
                    &format!(
                        "Wrong URL or channel:{},instId:{} doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
                        ch.name(),
                        echo(inst_id)
                    ),
                ));
                out.rejected.push("unknown_instrument");
                continue;
            };
            let inst = &self.universe.instruments[symbol];
            out.frames.push(to_json(&Ack {
                id,
                event: op,
                arg: Arg {
                    channel: ch.name(),
                    inst_id: inst.symbol.as_str(),
                },
                conn_id: &self.conn_id,
            }));
            if subscribe {
                self.wants[symbol] |= ch.flag();
                self.subscribed_ever = true;
                // bbo-tbt (and tickers) start with the current snapshot.
                if ch != Channel::Trades
                    && let Some(view) = self.board.get(self.exchange, symbol)
                    && let Some(frame) = self.encode_quote(ch, &view.quote)
                {
                    out.frames.push(frame);
                }
            } else {
                self.wants[symbol] &= !ch.flag();
            }
        }
        out
    }

    pub(super) fn encode_quote(&self, ch: Channel, q: &Quote) -> Option<String> {
        let inst = self.universe.instruments.get(q.symbol)?;
        let arg = Arg {
            channel: ch.name(),
            inst_id: inst.symbol.as_str(),
        };
        Some(match ch {
            Channel::BboTbt => to_json(&Push {
                arg,
                data: [bbo(inst, q)],
            }),
            Channel::Tickers => to_json(&Push {
                arg,
                data: [okx_ticker(inst, q)],
            }),
            Channel::Trades => return None,
        })
    }

    /// The frames for a market event this connection listens to (bbo-tbt and tickers both
    /// follow quotes).
    pub(super) fn encode(&self, event: &MarketEvent) -> Vec<String> {
        let mut frames = Vec::new();
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                for ch in [Channel::BboTbt, Channel::Tickers] {
                    if wants & ch.flag() != 0 {
                        frames.extend(self.encode_quote(ch, q));
                    }
                }
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                if let (true, Some(inst)) = (
                    wants & Channel::Trades.flag() != 0,
                    self.universe.instruments.get(t.symbol),
                ) {
                    frames.push(to_json(&Push {
                        arg: Arg {
                            channel: Channel::Trades.name(),
                            inst_id: inst.symbol.as_str(),
                        },
                        data: [okx_trade(inst, t)],
                    }));
                }
            }
        }
        frames
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.connected = now;
        self.last_traffic = now;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        // Any frame, control frames included, is traffic.
        self.last_traffic = now;
        let replies = match frame {
            Inbound::Text("ping") => Replies {
                frames: vec!["pong".to_owned()],
                rejected: Vec::new(),
            },
            Inbound::Text(text) => self.handle(text, now),
            Inbound::Binary(data) => match std::str::from_utf8(data) {
                Ok(text) => self.handle(text, now),
                Err(_) => Replies {
                    frames: vec![self.error(None, "60012", "Invalid request: binary frame")],
                    rejected: vec!["invalid_request"],
                },
            },
            // Answered by the WebSocket layer.
            Inbound::Ping | Inbound::Pong(_) => Replies::default(),
        };
        Reply {
            frames: replies.frames.into_iter().map(Frame::Text).collect(),
            rejected: replies.rejected,
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        out.extend(self.encode(event).into_iter().map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        let idle = self.last_traffic + IDLE_TIMEOUT;
        Some(if self.subscribed_ever {
            idle
        } else {
            idle.min(self.connected + IDLE_TIMEOUT)
        })
    }

    fn on_timer(&mut self, now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        if !self.subscribed_ever && self.connected + IDLE_TIMEOUT <= now {
            return Err(End::NoSubscription);
        }
        if self.last_traffic + IDLE_TIMEOUT <= now {
            return Err(End::Idle);
        }
        Ok(())
    }

    fn on_sent(&mut self, now: Instant) {
        self.last_traffic = now;
    }

    /// How OKX says goodbye; a client that left or stopped reading gets nothing.
    fn goodbye(&self, end: End) -> Option<Goodbye> {
        match end {
            End::Shutdown | End::MarketClosed => Some(Goodbye {
                notice: Some(Frame::Text(self.notice())),
                code: 1001,
                reason: "server shutdown",
            }),
            End::Idle | End::NoSubscription => Some(Goodbye {
                notice: None,
                code: IDLE_CLOSE.0,
                reason: IDLE_CLOSE.1,
            }),
            _ => None,
        }
    }

    /// A `subscribe` refused with OKX's 60014 "Requests too frequent." error event (the
    /// documented refusal a client should retry later), echoing the request's id.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let text = frame.text()?;
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            return None;
        };
        if request.get("op")?.as_str()? != "subscribe" {
            return None;
        }
        let id = request
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| valid_id(id));
        Some(vec![Frame::Text(self.error(
            id,
            "60014",
            "Requests too frequent.",
        ))])
    }
}
