//! What every simulated exchange's WebSocket sessions share: the per-exchange context, the
//! upgrade that admits a session (bounded, owned by the simulator's task tracker), bounded
//! writes, a clean close, an inbound rate window, and the session metrics.
//!
//! Every session is served by [`driver::run`], generic over [`Socket`] so unit tests can
//! drive it through channels with paused time; production passes axum's `WebSocket`.

pub(crate) mod driver;
#[cfg(test)]
mod driver_tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use spreadagg_model::ExchangeId;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fault::Faults;
use crate::market::{Board, MarketEvent, Universe};
use driver::Protocol;

/// Largest client message accepted (OKX documents 64 KB for a subscribe request; Binance's
/// 1024 stream names fit easily). A larger one ends the session.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Cap on a session's unsent outbound bytes; past it a write fails and the session ends.
/// Room for one `oversized` fault frame (2 MiB and a bit) on top of normal traffic; a
/// protocol whose `oversized` frame is larger gets that frame's size and 2 MiB.
const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// A client that cannot take one frame within this long is too slow and is dropped; its
/// socket buffers are full and it would otherwise hold a session forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing handshake (notice, Close frame, the client's Close) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// WebSocket sessions per exchange listener; past it upgrades get HTTP 429.
pub(crate) const MAX_SESSIONS: usize = 4096;

/// A WebSocket as sessions see it.
pub(crate) trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// Everything one exchange's handlers and sessions need.
#[derive(Debug)]
pub(crate) struct ExchangeCtx {
    pub exchange: ExchangeId,
    /// Position in [`Universe::exchanges`] and on the [`Board`].
    pub index: usize,
    pub universe: Arc<Universe>,
    pub board: Arc<Board>,
    /// The market's channel for this exchange; each session subscribes its own receiver.
    pub events: broadcast::Sender<MarketEvent>,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
    pub sessions: Arc<Semaphore>,
    /// Binance's server ping period.
    pub binance_ping_interval: Duration,
    /// This exchange's injected faults, applied by [`driver::run`].
    pub faults: Arc<Faults>,
}

/// Why a session ended; the label of `spreadagg_sim_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client sent a Close frame or went away.
    ClientClosed,
    /// The simulator is stopping.
    Shutdown,
    /// More inbound messages than the exchange allows (Binance: 5 per second).
    RateLimited,
    /// No Pong to the server's Ping in time (Binance: a minute).
    PongTimeout,
    /// No traffic either way for too long (OKX: 30 s).
    Idle,
    /// No subscription in time after connecting (OKX: 30 s).
    NoSubscription,
    /// The connection reached its maximum age (Binance: 24 h).
    MaxLifetime,
    /// The client did not read; a write timed out.
    SlowClient,
    /// The socket failed (including an oversized message).
    SocketError,
    /// The market stopped.
    MarketClosed,
    /// Fault `disconnect`: dropped without a Close frame.
    FaultDisconnect,
    /// Fault `close_with_notice` / `close_without_notice`.
    FaultClose { notice: bool },
    /// The connection was refused at its start (KuCoin: an unknown or expired token).
    Unauthorized,
}

impl End {
    pub(crate) const fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Shutdown => "shutdown",
            End::RateLimited => "rate_limited",
            End::PongTimeout => "pong_timeout",
            End::Idle => "idle",
            End::NoSubscription => "no_subscription",
            End::MaxLifetime => "max_lifetime",
            End::SlowClient => "slow_client",
            End::SocketError => "socket_error",
            End::MarketClosed => "market_closed",
            End::FaultDisconnect => "fault_disconnect",
            End::Unauthorized => "unauthorized",
            End::FaultClose { notice: true } => "fault_close_with_notice",
            End::FaultClose { notice: false } => "fault_close_without_notice",
        }
    }
}

/// Admits a WebSocket session: bounded by the exchange's session semaphore, and tracked by
/// the simulator's task tracker from the upgrade until the session returns (axum spawns the
/// upgraded connection itself; the tracker token we hold keeps `Simulator::join` waiting for
/// it). The market and fault receivers are taken now, so nothing is missed during the
/// handshake. The session is served by [`driver::run`] with `proto`.
pub(crate) fn accept<P: Protocol>(
    ctx: &Arc<ExchangeCtx>,
    ws: WebSocketUpgrade,
    proto: P,
) -> Response {
    let exchange = ctx.exchange.as_str();
    if ctx.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n").into_response();
    }
    let Ok(permit) = ctx.sessions.clone().try_acquire_owned() else {
        metrics::counter!("spreadagg_sim_sessions_refused_total", "exchange" => exchange)
            .increment(1);
        tracing::warn!(
            exchange,
            limit = MAX_SESSIONS,
            "WebSocket session refused: at the limit"
        );
        return (StatusCode::TOO_MANY_REQUESTS, "too many connections\n").into_response();
    };
    let token = ctx.tracker.token();
    let events = ctx.events.subscribe();
    let shots = ctx.faults.subscribe();
    let context = ctx.clone();
    let write_buffer = MAX_WRITE_BUFFER_BYTES.max(proto.oversized_bytes() + 2 * 1024 * 1024);
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .max_write_buffer_size(write_buffer)
        .on_failed_upgrade(move |e| {
            tracing::debug!(exchange, error = %e, "WebSocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            let _tracked = token;
            let _permit = permit;
            driver::run(socket, context, proto, events, shots).await;
        })
}

/// Sends one frame, bounded: fails with [`End::SlowClient`] when the client does not take it
/// within [`WRITE_TIMEOUT`], and gives up at once when the simulator stops.
pub(crate) async fn send<S: Socket>(
    socket: &mut S,
    msg: Message,
    stop: &CancellationToken,
) -> Result<(), End> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(End::Shutdown),
        sent = tokio::time::timeout(WRITE_TIMEOUT, socket.send(msg)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SocketError),
            Err(_) => Err(End::SlowClient),
        },
    }
}

/// Ends a session politely: an optional last notice, a Close frame with `code` and `reason`,
/// then waits for the client's Close so the TCP connection ends cleanly. Bounded by
/// [`CLOSE_TIMEOUT`]; a client that does not cooperate is simply dropped.
pub(crate) async fn close<S: Socket>(
    socket: &mut S,
    notice: Option<Message>,
    code: u16,
    reason: &'static str,
) {
    let goodbye = async {
        if let Some(msg) = notice {
            socket.send(msg).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await?;
        while let Some(Ok(frame)) = socket.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// At most `limit` events in any `window`: a sliding window of the last `limit` times.
#[derive(Debug)]
pub(crate) struct RateWindow {
    limit: usize,
    window: Duration,
    hits: VecDeque<Instant>,
}

impl RateWindow {
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            hits: VecDeque::with_capacity(limit),
        }
    }

    /// Records an event at `now`; false when it is one too many.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self
            .hits
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.hits.pop_front();
        }
        if self.hits.len() >= self.limit {
            return false;
        }
        self.hits.push_back(now);
        true
    }
}

/// Counts a session while it lives (`spreadagg_sim_sessions_active`), and how it ended.
#[derive(Debug)]
pub(crate) struct SessionMetrics {
    exchange: &'static str,
}

impl SessionMetrics {
    pub(crate) fn open(exchange: ExchangeId) -> Self {
        let exchange = exchange.as_str();
        metrics::counter!("spreadagg_sim_sessions_total", "exchange" => exchange).increment(1);
        metrics::gauge!("spreadagg_sim_sessions_active", "exchange" => exchange).increment(1.0);
        Self { exchange }
    }

    /// Market events this session skipped because it fell behind the broadcast buffer.
    pub(crate) fn lagged(&self, skipped: u64) {
        metrics::counter!("spreadagg_sim_lagged_events_total", "exchange" => self.exchange)
            .increment(skipped);
        tracing::debug!(
            exchange = self.exchange,
            skipped,
            "session lagged behind the market"
        );
    }

    /// A client message the exchange would refuse (it gets the exchange's error reply).
    pub(crate) fn rejected(&self, reason: &'static str) {
        metrics::counter!("spreadagg_sim_rejected_requests_total", "exchange" => self.exchange, "reason" => reason)
            .increment(1);
        tracing::debug!(exchange = self.exchange, reason, "client request rejected");
    }

    pub(crate) fn ended(&self, end: End) {
        metrics::counter!("spreadagg_sim_disconnects_total", "exchange" => self.exchange, "reason" => end.label())
            .increment(1);
        match end {
            End::ClientClosed | End::Shutdown => {
                tracing::debug!(
                    exchange = self.exchange,
                    reason = end.label(),
                    "session ended"
                );
            }
            _ => tracing::info!(
                exchange = self.exchange,
                reason = end.label(),
                "session dropped"
            ),
        }
    }
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        metrics::gauge!("spreadagg_sim_sessions_active", "exchange" => self.exchange)
            .decrement(1.0);
    }
}

/// Serialises a reply or payload. Our types always serialise; the fallback is never sent.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// An in-memory socket for session unit tests: the test plays the client through channels.
#[cfg(test)]
pub(crate) mod mock {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use tokio::sync::mpsc;

    pub(crate) struct MockSocket {
        inbound: mpsc::UnboundedReceiver<Message>,
        outbound: mpsc::UnboundedSender<Message>,
    }

    /// The test's side: what it sends to the server and what the server wrote.
    pub(crate) struct Client {
        pub to_server: mpsc::UnboundedSender<Message>,
        pub from_server: mpsc::UnboundedReceiver<Message>,
    }

    impl Client {
        pub(crate) fn send_text(&self, text: &str) {
            let _ = self.to_server.send(Message::Text(text.into()));
        }

        /// The next frame the server wrote, waiting (in paused time) if needed.
        pub(crate) async fn next(&mut self) -> Option<Message> {
            self.from_server.recv().await
        }

        /// The next text frame, skipping pings.
        pub(crate) async fn next_text(&mut self) -> Option<String> {
            loop {
                match self.from_server.recv().await? {
                    Message::Text(t) => return Some(t.as_str().to_owned()),
                    Message::Ping(_) | Message::Pong(_) => {}
                    other => panic!("expected text, got {other:?}"),
                }
            }
        }
    }

    /// Serves `proto` on a mock socket through the real driver, with the context's faults.
    pub(crate) async fn run<P: Protocol>(
        socket: MockSocket,
        ctx: Arc<ExchangeCtx>,
        proto: P,
        events: broadcast::Receiver<MarketEvent>,
    ) {
        let shots = ctx.faults.subscribe();
        driver::run(socket, ctx, proto, events, shots).await;
    }

    pub(crate) fn socket() -> (MockSocket, Client) {
        let (to_server, inbound) = mpsc::unbounded_channel();
        let (outbound, from_server) = mpsc::unbounded_channel();
        (
            MockSocket { inbound, outbound },
            Client {
                to_server,
                from_server,
            },
        )
    }

    impl Stream for MockSocket {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inbound.poll_recv(cx).map(|m| m.map(Ok))
        }
    }

    impl Sink<Message> for MockSocket {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.outbound.send(item).map_err(axum::Error::new)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_window_slides() {
        let mut w = RateWindow::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(w.allow(t0 + Duration::from_millis(i * 100)), "message {i}");
        }
        assert!(
            !w.allow(t0 + Duration::from_millis(900)),
            "sixth within a second"
        );
        assert!(
            w.allow(t0 + Duration::from_millis(1_000)),
            "the first left the window"
        );
        assert!(!w.allow(t0 + Duration::from_millis(1_050)));
    }

    #[test]
    fn end_labels_are_distinct() {
        let all = [
            End::ClientClosed,
            End::Shutdown,
            End::RateLimited,
            End::PongTimeout,
            End::Idle,
            End::NoSubscription,
            End::MaxLifetime,
            End::SlowClient,
            End::SocketError,
            End::MarketClosed,
            End::FaultDisconnect,
            End::FaultClose { notice: true },
            End::FaultClose { notice: false },
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
