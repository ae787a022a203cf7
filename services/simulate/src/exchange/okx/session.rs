//! One OKX WebSocket connection: subscribe/unsubscribe with OKX's acks and error codes,
//! text ping/pong, the 30 s no-subscription and idle deadlines, the hourly request limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::wire::{Ack, Arg, ErrorEvent, Push, bbo, okx_ticker, okx_trade};
use super::{Channel, IDLE_CLOSE, IDLE_TIMEOUT, MAX_ECHO, MAX_ID_LEN, MAX_OPS_PER_HOUR};
use crate::market::{Board, MarketEvent, Quote, Universe};
use crate::ws::{self, End, ExchangeCtx, RateWindow, SessionMetrics, Socket, to_json};

/// The frames answering one client message, and the labels of any refusals among them.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pub(super) frames: Vec<String>,
    pub(super) rejected: Vec<&'static str>,
}

/// One connection's protocol state. Pure apart from reading the board; [`run`] does the I/O.
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

/// Serves one connection until it ends, then records why.
pub(crate) async fn run<S: Socket>(
    mut socket: S,
    ctx: Arc<ExchangeCtx>,
    mut session: Session,
    mut events: broadcast::Receiver<MarketEvent>,
) {
    let metrics = SessionMetrics::open(ctx.exchange);
    let end = serve(&mut socket, &ctx, &mut session, &mut events, &metrics).await;
    // How OKX says goodbye; a client that left or stopped reading gets nothing.
    match end {
        End::Shutdown | End::MarketClosed => {
            ws::close(&mut socket, Some(session.notice()), 1001, "server shutdown").await;
        }
        End::Idle | End::NoSubscription => {
            ws::close(&mut socket, None, IDLE_CLOSE.0, IDLE_CLOSE.1).await;
        }
        End::ClientClosed
        | End::SocketError
        | End::SlowClient
        | End::RateLimited
        | End::PongTimeout
        | End::MaxLifetime => {}
    }
    metrics.ended(end);
}

pub(super) async fn serve<S: Socket>(
    socket: &mut S,
    ctx: &ExchangeCtx,
    session: &mut Session,
    events: &mut broadcast::Receiver<MarketEvent>,
    metrics: &SessionMetrics,
) -> End {
    let connected = Instant::now();
    let mut last_traffic = connected;
    loop {
        let must_subscribe_by = (!session.subscribed_ever).then_some(connected + IDLE_TIMEOUT);
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return End::Shutdown,
            () = ws::sleep_until_opt(must_subscribe_by) => return End::NoSubscription,
            () = tokio::time::sleep_until(last_traffic + IDLE_TIMEOUT) => return End::Idle,
            frame = socket.next() => {
                last_traffic = Instant::now();
                let replies = match frame {
                    None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Err(_)) => return End::SocketError,
                    Some(Ok(Message::Text(text))) if text.as_str() == "ping" => Replies {
                        frames: vec!["pong".to_owned()],
                        rejected: Vec::new(),
                    },
                    Some(Ok(Message::Text(text))) => session.handle(text.as_str(), last_traffic),
                    Some(Ok(Message::Binary(data))) => match std::str::from_utf8(&data) {
                        Ok(text) => session.handle(text, last_traffic),
                        Err(_) => Replies {
                            frames: vec![session.error(None, "60012", "Invalid request: binary frame")],
                            rejected: vec!["invalid_request"],
                        },
                    },
                    // Control frames: answered by the WebSocket layer; they count as traffic.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                for why in replies.rejected {
                    metrics.rejected(why);
                }
                for frame in replies.frames {
                    if let Err(end) = ws::send_text(socket, frame, &ctx.stop).await {
                        return end;
                    }
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    for frame in session.encode(&event) {
                        if let Err(end) = ws::send_text(socket, frame, &ctx.stop).await {
                            return end;
                        }
                        last_traffic = Instant::now();
                    }
                }
                Err(RecvError::Lagged(skipped)) => metrics.lagged(skipped),
                Err(RecvError::Closed) => return End::MarketClosed,
            },
        }
    }
}
