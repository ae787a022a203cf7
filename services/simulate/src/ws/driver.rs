//! The one WebSocket session driver every simulated exchange uses: a [`Protocol`] is a pure
//! per-connection state machine (client frame in, frames out; market event in, frames out;
//! timers; goodbye), and [`run`] is the only serve loop. The driver also applies the
//! exchange's faults ([`crate::fault`]) the same way for every protocol.
//!
//! To add an exchange: implement [`Protocol`] for its session and call [`super::accept`]
//! with it from the WebSocket route. A HTX-like session needs `on_client` (its `handle`),
//! `on_event` (its `encode`), `deadline`/`on_timer` (its server pings and pong deadline),
//! `goodbye`, `refusal` and, when it pings, `is_pong`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::Message;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{End, ExchangeCtx, SessionMetrics, Socket};
use crate::fault::{OVERSIZED_BYTES, Shot};
use crate::market::MarketEvent;

/// One outbound frame, before it is put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A text frame (Binance, OKX, KuCoin JSON).
    Text(String),
    /// A binary frame as is (MEXC protobuf).
    Binary(Bytes),
    /// JSON text gzip-compressed into a binary frame (HTX).
    Gzip(String),
    /// A WebSocket Ping control frame with this payload (Binance's server pings).
    Ping(Bytes),
}

impl Frame {
    fn into_message(self) -> Message {
        match self {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b),
            Frame::Gzip(t) => Message::Binary(gzip(t.as_bytes()).into()),
            Frame::Ping(p) => Message::Ping(p),
        }
    }
}

/// Gzips bytes (into a Vec, which cannot fail).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 32),
        flate2::Compression::fast(),
    );
    match e.write_all(data) {
        Ok(()) => e.finish().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// One client frame as a protocol sees it (Close is handled by the driver).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Inbound<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping,
    Pong(&'a [u8]),
}

impl<'a> Inbound<'a> {
    /// A data frame as the JSON protocols read their requests: text as is, binary decoded
    /// lossily (an exchange answers what it can read); `None` for WebSocket pings and pongs,
    /// which the WebSocket layer answers.
    pub(crate) fn request_text(&self) -> Option<std::borrow::Cow<'a, str>> {
        match *self {
            Inbound::Text(t) => Some(std::borrow::Cow::Borrowed(t)),
            Inbound::Binary(b) => Some(String::from_utf8_lossy(b)),
            Inbound::Ping | Inbound::Pong(_) => None,
        }
    }

    /// The frame as text: a text frame, or a binary frame that is UTF-8.
    pub(crate) fn text(&self) -> Option<&str> {
        match *self {
            Inbound::Text(t) => Some(t),
            Inbound::Binary(b) => std::str::from_utf8(b).ok(),
            Inbound::Ping | Inbound::Pong(_) => None,
        }
    }
}

/// What a protocol answers to one client frame.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// Frames to send, in order.
    pub frames: Vec<Frame>,
    /// Labels of refusals among them (`spreadagg_sim_rejected_requests_total{reason}`).
    pub rejected: Vec<&'static str>,
    /// End the session after sending `frames`.
    pub end: Option<End>,
}

impl Reply {
    pub(crate) fn frames(frames: Vec<Frame>) -> Self {
        Self {
            frames,
            ..Self::default()
        }
    }
}

/// How a session says goodbye: an optional last notice, then a Close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Goodbye {
    pub notice: Option<Frame>,
    pub code: u16,
    pub reason: &'static str,
}

/// One connection's protocol state machine. Pure: no I/O, time passed in.
pub(crate) trait Protocol: Send + 'static {
    /// The session starts at `now` (after the upgrade): start timers here.
    fn start(&mut self, _now: Instant) {}

    /// What the server says first, unasked (KuCoin's welcome, or its refusal of a token);
    /// sent right after [`Protocol::start`]. Default: nothing.
    fn hello(&mut self, _now: Instant) -> Reply {
        Reply::default()
    }

    /// Answers one client frame.
    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply;

    /// Appends the frames for one market event (none when not subscribed).
    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>);

    /// When [`Protocol::on_timer`] must next run; `None`: no timer.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Timer work at `now`: appends frames (server pings), or ends the session (a pong
    /// deadline, a lifetime, an idle or no-subscription deadline).
    fn on_timer(&mut self, _now: Instant, _out: &mut Vec<Frame>) -> Result<(), End> {
        Ok(())
    }

    /// A frame went out at `now` (OKX's idle deadline counts traffic both ways).
    fn on_sent(&mut self, _now: Instant) {}

    /// How the session ends for `end`; `None`: the socket is just dropped. The driver asks
    /// for `End::Shutdown` on a forced close (faults `close_with_notice` /
    /// `close_without_notice`, the latter without the notice).
    fn goodbye(&self, end: End) -> Option<Goodbye>;

    /// Fault `refuse_subscription`: when `frame` is a subscribe request, the exchange's
    /// documented error reply to it; the session's state must not change. `None` otherwise.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>>;

    /// Fault `ignore_pongs`: is `frame` the client's answer to a server ping?
    fn is_pong(&self, _frame: Inbound<'_>) -> bool {
        false
    }

    /// Fault `garbage`: the `n`th frame the exchange's clients cannot decode. Default: text
    /// that is not JSON.
    fn garbage(&self, n: u32) -> Frame {
        Frame::Text(format!("{{\"sim_garbage\":{n},[not json"))
    }

    /// Fault `oversized`: the frame's size, over the exchange's clients' message cap.
    /// Default: [`OVERSIZED_BYTES`].
    fn oversized_bytes(&self) -> usize {
        OVERSIZED_BYTES
    }

    /// Fault `oversized`: one frame of at least `bytes` bytes. Default: a valid JSON text
    /// frame padded to size.
    fn oversized(&self, bytes: usize) -> Frame {
        let mut text = String::with_capacity(bytes + 16);
        text.push_str("{\"sim_padding\":\"");
        text.extend(std::iter::repeat_n('x', bytes));
        text.push_str("\"}");
        Frame::Text(text)
    }
}

/// Non-text garbage for binary exchanges: bytes that are neither gzip nor UTF-8.
pub(crate) fn binary_garbage(n: u32) -> Frame {
    let mut b = vec![0xff_u8, 0xfe, 0x00, 0x13, 0x37];
    b.extend_from_slice(&n.to_be_bytes());
    Frame::Binary(b.into())
}

/// Incompressible bytes of a given size for binary exchanges' `oversized`.
pub(crate) fn binary_oversized(bytes: usize) -> Frame {
    // An xorshift stream: cheap, and it does not compress, so it is as large on the wire.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    Frame::Binary(out.into())
}

/// Serves one connection with `proto` until it ends, then says goodbye and records why.
pub(crate) async fn run<P: Protocol, S: Socket>(
    mut socket: S,
    ctx: Arc<ExchangeCtx>,
    mut proto: P,
    mut events: broadcast::Receiver<MarketEvent>,
    mut shots: broadcast::Receiver<Shot>,
) {
    let metrics = SessionMetrics::open(ctx.exchange);
    let end = {
        let mut session = Driver {
            socket: &mut socket,
            ctx: &ctx,
            metrics: &metrics,
        };
        session.serve(&mut proto, &mut events, &mut shots).await
    };
    let goodbye = match end {
        End::FaultDisconnect => None,
        // A forced close always sends a Close frame, even for a protocol that has no
        // goodbye for a shutdown: 1001 "going away" is the WebSocket code for it (RFC 6455).
        End::FaultClose { notice } => Some(match proto.goodbye(End::Shutdown) {
            Some(g) => Goodbye {
                notice: if notice { g.notice } else { None },
                ..g
            },
            None => Goodbye {
                notice: None,
                code: 1001,
                reason: "going away",
            },
        }),
        other => proto.goodbye(other),
    };
    if let Some(g) = goodbye {
        super::close(
            &mut socket,
            g.notice.map(Frame::into_message),
            g.code,
            g.reason,
        )
        .await;
    }
    // On a disconnect fault the socket is dropped here: no Close frame, the TCP stream ends.
    drop(socket);
    metrics.ended(end);
}

struct Driver<'a, S> {
    socket: &'a mut S,
    ctx: &'a ExchangeCtx,
    metrics: &'a SessionMetrics,
}

impl<S: Socket> Driver<'_, S> {
    /// Sends frames in order, each delayed while the `slow` fault is in force.
    async fn send_all<P: Protocol>(
        &mut self,
        proto: &mut P,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Result<(), End> {
        for frame in frames {
            if let Some(delay) = self.ctx.faults.delay(Instant::now()) {
                tokio::select! {
                    biased;
                    () = self.ctx.stop.cancelled() => return Err(End::Shutdown),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            super::send(self.socket, frame.into_message(), &self.ctx.stop).await?;
            proto.on_sent(Instant::now());
        }
        Ok(())
    }

    async fn serve<P: Protocol>(
        &mut self,
        proto: &mut P,
        events: &mut broadcast::Receiver<MarketEvent>,
        shots: &mut broadcast::Receiver<Shot>,
    ) -> End {
        let faults = self.ctx.faults.clone();
        proto.start(Instant::now());
        let hello = proto.hello(Instant::now());
        for why in hello.rejected {
            self.metrics.rejected(why);
        }
        if let Err(end) = self.send_all(proto, hello.frames).await {
            return end;
        }
        if let Some(end) = hello.end {
            return end;
        }
        let mut out = Vec::new();
        loop {
            let deadline = proto.deadline();
            tokio::select! {
                biased;
                () = self.ctx.stop.cancelled() => return End::Shutdown,
                () = super::sleep_until_opt(deadline) => {
                    out.clear();
                    if let Err(end) = proto.on_timer(Instant::now(), &mut out) {
                        return end;
                    }
                    if let Err(end) = self.send_all(proto, out.drain(..)).await {
                        return end;
                    }
                }
                shot = shots.recv() => {
                    let frames: Vec<Frame> = match shot {
                        Ok(Shot::Disconnect) => return End::FaultDisconnect,
                        Ok(Shot::Close { notice }) => return End::FaultClose { notice },
                        Ok(Shot::Garbage(count)) => (0..count).map(|n| proto.garbage(n)).collect(),
                        Ok(Shot::Oversized) => vec![proto.oversized(proto.oversized_bytes())],
                        // Faults skipped by a session that fell behind, or none left to come.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => {
                            *shots = faults.subscribe();
                            continue;
                        }
                    };
                    if let Err(end) = self.send_all(proto, frames).await {
                        return end;
                    }
                }
                frame = self.socket.next() => {
                    let msg = match frame {
                        None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                        Some(Err(_)) => return End::SocketError,
                        Some(Ok(msg)) => msg,
                    };
                    let inbound = match &msg {
                        Message::Text(t) => Inbound::Text(t.as_str()),
                        Message::Binary(b) => Inbound::Binary(b),
                        Message::Ping(_) => Inbound::Ping,
                        Message::Pong(p) => Inbound::Pong(p),
                        Message::Close(_) => return End::ClientClosed,
                    };
                    let now = Instant::now();
                    if faults.ignoring_pongs(now) && proto.is_pong(inbound) {
                        continue;
                    }
                    if faults.refusing()
                        && let Some(frames) = proto.refusal(inbound)
                        && faults.take_refusal()
                    {
                        self.metrics.rejected("fault_refused");
                        if let Err(end) = self.send_all(proto, frames).await {
                            return end;
                        }
                        continue;
                    }
                    let reply = proto.on_client(inbound, now);
                    for why in reply.rejected {
                        self.metrics.rejected(why);
                    }
                    if let Err(end) = self.send_all(proto, reply.frames).await {
                        return end;
                    }
                    if let Some(end) = reply.end {
                        return end;
                    }
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        if faults.stalled(Instant::now()) {
                            continue;
                        }
                        out.clear();
                        proto.on_event(&event, &mut out);
                        if let Err(end) = self.send_all(proto, out.drain(..)).await {
                            return end;
                        }
                    }
                    Err(RecvError::Lagged(skipped)) => self.metrics.lagged(skipped),
                    Err(RecvError::Closed) => return End::MarketClosed,
                },
            }
        }
    }
}
