//! The parts every WebSocket session shares: admission at upgrade, the writer that drains a
//! client's queue onto the socket (with heartbeats and pings), reading with an idle timeout,
//! and sending the Close frame that matches the session's end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::hub::Hub;
use crate::hub::event::Event;
use crate::hub::queue::{ClientQueue, CloseCause, Outgoing};
use crate::json::encode;
use crate::limits::{Permit, Refused};
use crate::ws::reply::ServerMessage;

/// The writer pings an otherwise quiet client this often, so dead peers are noticed.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// The longest a Close frame may take to leave while the gateway keeps running (a stalled
/// client's TCP buffer may be full).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once the gateway is stopping, pending closes get at most this much longer.
pub(crate) const SHUTDOWN_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After sending Close, how long the reader waits for the client's Close in reply before the
/// connection is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Tungstenite reads a whole frame up to this size before checking the message limit, so
/// a moderately oversized request is consumed and answered with a clean Close 1009 instead of
/// a reset connection.
const MIN_FRAME_READ: usize = 64 * 1024;

/// A client refused at the door: the HTTP status and text to answer the upgrade with.
#[derive(Debug)]
pub(crate) struct AtTheDoor(StatusCode, &'static str);

impl IntoResponse for AtTheDoor {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// Admits a client at upgrade: HTTP 503 while stopping or full, 429 over the per-address cap.
///
/// # Errors
/// The refusal, to answer with.
pub(crate) fn admit(app: &AppState, peer: SocketAddr) -> Result<Permit, AtTheDoor> {
    if app.stop.is_cancelled() {
        return Err(AtTheDoor(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n",
        ));
    }
    app.admission.admit(peer.ip()).map_err(|refused| {
        metrics::counter!("spreadagg_gateway_rejected_total", "reason" => refused.reason())
            .increment(1);
        tracing::debug!(%peer, reason = refused.reason(), "refusing a client");
        match refused {
            Refused::Full => AtTheDoor(StatusCode::SERVICE_UNAVAILABLE, "too many clients\n"),
            Refused::PerIp => AtTheDoor(
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address\n",
            ),
            Refused::Penalized => AtTheDoor(
                StatusCode::TOO_MANY_REQUESTS,
                "closed for abuse a moment ago; retry later\n",
            ),
        }
    })
}

/// Admits the client (see [`admit`]) and upgrades with the frame limits; `session` then runs
/// in a task the gateway's tracker waits for.
pub(crate) fn upgrade<F, Fut>(
    app: AppState,
    peer: SocketAddr,
    ws: WebSocketUpgrade,
    session: F,
) -> Response
where
    F: FnOnce(WebSocket, AppState, Permit) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permit = match admit(&app, peer) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    // Held by the session, so `Gateway::run` waits for it (axum spawns the upgrade task).
    let task = app.tracker.token();
    let max = app.config.max_frame_bytes;
    limit(ws, max, peer).on_upgrade(move |socket| async move {
        let _task = task;
        session(socket, app, permit).await;
    })
}

/// Applies the frame limits to an upgrade.
fn limit(
    ws: WebSocketUpgrade,
    max_frame_bytes: usize,
    peer: SocketAddr,
) -> WebSocketUpgrade<impl axum::extract::ws::OnFailedUpgrade> {
    ws.max_message_size(max_frame_bytes)
        .max_frame_size(max_frame_bytes.max(MIN_FRAME_READ))
        .on_failed_upgrade(move |e| tracing::debug!(%peer, error = %e, "websocket upgrade failed"))
}

/// Refuses a session that arrived while the gateway was closing.
pub(crate) async fn refuse(mut socket: WebSocket, cause: CloseCause) {
    let close = socket.send(close_message(cause));
    let _ = tokio::time::timeout(SHUTDOWN_CLOSE_GRACE, close).await;
}

/// The next frame from the client, or why there is none: closes the queue with the cause
/// (idle, gone, protocol errors, oversized) and returns `None`.
pub(crate) async fn next_message(
    stream: &mut SplitStream<WebSocket>,
    queue: &ClientQueue,
    idle_timeout: Duration,
    on_too_big: impl FnOnce(),
) -> Option<Message> {
    let next = tokio::select! {
        biased;
        () = queue.closed() => return None,
        next = tokio::time::timeout(idle_timeout, stream.next()) => next,
    };
    match next {
        Err(_idle) => {
            queue.close(CloseCause::Idle);
            None
        }
        Ok(None) => {
            queue.close(CloseCause::Gone);
            None
        }
        Ok(Some(Err(e))) => {
            let cause = classify(&e);
            if cause == CloseCause::TooBig {
                on_too_big();
            }
            queue.close(cause);
            None
        }
        Ok(Some(Ok(Message::Close(_)))) => {
            queue.close(CloseCause::ClientClosed);
            None
        }
        Ok(Some(Ok(msg))) => Some(msg),
    }
}

/// After the session decided to close: gives the client a moment to answer our Close, so the
/// TCP connection ends cleanly rather than with a reset.
pub(crate) async fn linger(stream: &mut SplitStream<WebSocket>, queue: &ClientQueue) {
    if queue
        .close_cause()
        .is_some_and(|c| c.close_frame().is_some())
    {
        let drain = async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }
}

/// Maps a read error to how the session ends.
pub(crate) fn classify(e: &axum::Error) -> CloseCause {
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(_)) => CloseCause::TooBig,
        Some(tungstenite::Error::Protocol(_)) => CloseCause::Protocol,
        Some(tungstenite::Error::Utf8(_)) => CloseCause::InvalidUtf8,
        _ => CloseCause::Gone,
    }
}

/// How a session's writer paces itself.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    /// Where a close for slowness is counted.
    pub(crate) hub: Arc<Hub>,
    /// `heartbeat` frames this often (`None`: none, as on the prototype's endpoints).
    pub(crate) heartbeat: Option<Duration>,
    /// WebSocket pings this often, so that passive clients answer within the idle timeout.
    pub(crate) ping: Duration,
    /// A frame that cannot be written within this long (the client is not reading) closes
    /// the session as too slow.
    pub(crate) send_deadline: Duration,
}

impl Pacing {
    /// From the configuration: pings at a third of the idle timeout (at most every 30 s), the
    /// send deadline at the client lag limit.
    pub(crate) fn of(app: &AppState, heartbeat: bool) -> Pacing {
        Pacing {
            hub: Arc::clone(&app.hub),
            heartbeat: heartbeat.then(|| app.config.heartbeat()),
            ping: (app.config.idle_timeout() / 3).min(PING_INTERVAL),
            send_deadline: Duration::from_millis(app.config.max_client_lag_ms),
        }
    }
}

/// Drains the queue onto the socket until it closes: replies as they are, events through
/// `encode` (an event it gives `None` for is skipped), heartbeats and pings on time however
/// busy the queue is; then the matching Close frame (bounded in time).
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    queue: &ClientQueue,
    stop: &CancellationToken,
    pacing: Pacing,
    encode_event: impl Fn(&Event) -> Option<Utf8Bytes>,
) {
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + pacing.ping, pacing.ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beat_every = pacing.heartbeat.unwrap_or(Duration::from_secs(3600));
    let mut beat = tokio::time::interval_at(start + beat_every, beat_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Timers first: a queue that never runs empty must not starve pings and heartbeats.
        let msg = tokio::select! {
            biased;
            () = queue.closed() => break,
            _ = ping.tick() => Message::Ping(Bytes::new()),
            _ = beat.tick(), if pacing.heartbeat.is_some() => Message::Text(encode(&ServerMessage::Heartbeat {
                ts_ns: spreadagg_model::time::now_ns(),
            })),
            next = queue.pop() => match next {
                Some(Outgoing::Reply(text)) => Message::Text(text),
                Some(Outgoing::Event(event)) => match encode_event(&event) {
                    Some(text) => Message::Text(text),
                    None => continue,
                },
                None => break,
            },
        };
        // A send stuck on a client that does not read is abandoned when the queue closes
        // (too slow, stop) or at the send deadline (which closes it as too slow); the frame
        // stays whole in tungstenite's buffer, ahead of the Close.
        tokio::select! {
            biased;
            () = queue.closed() => break,
            sent = tokio::time::timeout(pacing.send_deadline, sink.send(msg)) => match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    queue.close(CloseCause::Gone);
                    return;
                }
                Err(_stuck) => {
                    if queue.close(CloseCause::TooSlow) {
                        pacing.hub.registry.stats.too_slow();
                    }
                    break;
                }
            },
        }
    }
    match queue.close_cause() {
        Some(CloseCause::Gone) | None => {}
        // Flushes tungstenite's automatic answer to the client's Close.
        Some(CloseCause::ClientClosed) => bounded(sink.close(), stop).await,
        Some(cause) => bounded(sink.send(close_message(cause)), stop).await,
    }
}

pub(crate) fn close_message(cause: CloseCause) -> Message {
    Message::Close(cause.close_frame().map(|(code, reason)| CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Runs `fut` for at most [`CLOSE_TIMEOUT`], cut to [`SHUTDOWN_CLOSE_GRACE`] after `stop`.
async fn bounded<F: Future>(fut: F, stop: &CancellationToken) {
    let limit = async {
        tokio::select! {
            () = tokio::time::sleep(CLOSE_TIMEOUT) => {}
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(SHUTDOWN_CLOSE_GRACE).await;
            } => {}
        }
    };
    tokio::select! {
        _ = fut => {}
        () = limit => {}
    }
}

/// A new client queue with the configured bounds.
pub(crate) fn new_queue(app: &AppState) -> Arc<ClientQueue> {
    Arc::new(ClientQueue::new(app.queue_limits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::{CapacityError, ProtocolError};

    #[test]
    fn read_errors_map_to_close_causes() {
        let cases = [
            (
                tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                    size: 10_000,
                    max_size: 4096,
                }),
                CloseCause::TooBig,
            ),
            (
                tungstenite::Error::Protocol(ProtocolError::NonZeroReservedBits),
                CloseCause::Protocol,
            ),
            (tungstenite::Error::ConnectionClosed, CloseCause::Gone),
        ];
        for (inner, cause) in cases {
            let shown = inner.to_string();
            assert_eq!(classify(&axum::Error::new(inner)), cause, "{shown}");
        }
        assert_eq!(
            classify(&axum::Error::new(std::io::Error::other("reset"))),
            CloseCause::Gone
        );
    }

    #[test]
    fn every_closing_cause_has_a_valid_code_and_short_reason() {
        for cause in [
            CloseCause::Drain,
            CloseCause::TooSlow,
            CloseCause::Flooding,
            CloseCause::TooBig,
            CloseCause::Protocol,
            CloseCause::InvalidUtf8,
            CloseCause::Idle,
        ] {
            let (code, reason) = cause.close_frame().expect("sends a Close");
            assert!((1000..=1014).contains(&code) && code != 1005 && code != 1006);
            assert!(reason.len() <= 123, "close reasons fit a control frame");
        }
        assert_eq!(CloseCause::TooSlow.close_frame(), Some((1008, "too slow")));
        assert_eq!(CloseCause::Drain.close_frame().map(|c| c.0), Some(1012));
    }
}
