//! One WebSocket session per client on `GET /ws`.
//!
//! The socket is split into a reader and a writer that run together in the session's task:
//! the reader parses requests and updates the registry; the writer drains the client's queue
//! (replies first, then spread points) onto the socket. Neither ever blocks the fan-out: a
//! writer stuck on a full TCP buffer only lets its own queue fill and drop its own oldest
//! points. Either side ends the session by closing the queue with a [`CloseCause`]; the
//! writer then sends the matching Close frame (bounded in time) and both sides return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::fanout::{ClientId, ClientQueue, CloseCause, SubscribeError};
use crate::protocol::{self, ErrorCode, Request, ServerMessage, encode};

/// The writer pings an otherwise quiet client this often, so dead peers are noticed.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A client that sends nothing at all (no frame, no pong) for this long is closed (1001).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest a Close frame may take to leave while the gateway keeps running (a stalled
/// client's TCP buffer may be full).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once the gateway is stopping, pending closes get at most this much longer.
const SHUTDOWN_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After sending Close, how long the reader waits for the client's Close in reply before the
/// connection is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Tungstenite reads a whole frame up to this size before checking the message limit, so
/// a moderately oversized request is consumed and answered with a clean Close 1009 instead of
/// a reset connection.
const MIN_FRAME_READ: usize = 64 * 1024;

/// `GET /ws`: upgrades unless the gateway is full (`max_clients`) or stopping, both HTTP 503.
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if app.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Ok(slot) = Arc::clone(&app.slots).try_acquire_owned() else {
        metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "max_clients")
            .increment(1);
        tracing::debug!(%peer, max_clients = app.config.max_clients, "refusing a client: full");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many clients\n").into_response();
    };
    // Held by the session, so `Gateway::run` waits for it (axum spawns the upgrade task).
    let task = app.tracker.token();
    let max = app.config.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max.max(MIN_FRAME_READ))
        .on_failed_upgrade(move |e| tracing::debug!(%peer, error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            let _task = task;
            let _slot = slot;
            session(socket, peer, app).await;
        })
}

async fn session(mut socket: WebSocket, peer: SocketAddr, app: AppState) {
    let id = ClientId(app.next_client.fetch_add(1, Ordering::Relaxed));
    let queue = Arc::new(ClientQueue::new(
        app.config.client_queue,
        app.config.slow_client_drop_limit,
    ));
    if app.registry.register(id, Arc::clone(&queue)).is_err() {
        // Stopping: the registry closed everyone already and takes no one new.
        let close = socket.send(close_message(CloseCause::Shutdown));
        let _ = tokio::time::timeout(SHUTDOWN_CLOSE_GRACE, close).await;
        return;
    }
    tracing::debug!(client = %id, %peer, "client connected");
    let (sink, stream) = socket.split();
    tokio::join!(
        read_loop(stream, id, &queue, &app),
        write_loop(sink, &queue, &app.stop),
    );
    app.registry.remove(id);
    let cause = queue.close_cause().unwrap_or(CloseCause::Gone);
    tracing::debug!(
        client = %id,
        %peer,
        cause = cause.as_str(),
        dropped = queue.dropped_total(),
        "client disconnected"
    );
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    id: ClientId,
    queue: &ClientQueue,
    app: &AppState,
) {
    loop {
        let next = tokio::select! {
            biased;
            () = queue.closed() => break,
            next = tokio::time::timeout(IDLE_TIMEOUT, stream.next()) => next,
        };
        let msg = match next {
            Err(_idle) => {
                queue.close(CloseCause::Idle);
                break;
            }
            Ok(None) => {
                queue.close(CloseCause::Gone);
                return;
            }
            Ok(Some(Err(e))) => {
                let cause = classify(&e);
                if cause == CloseCause::TooBig {
                    reject("oversized_frame", id, "frame over max_frame_bytes");
                }
                queue.close(cause);
                // The stream is finished after an error; there is nothing left to read.
                return;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(text) => {
                if text.len() > app.config.max_frame_bytes {
                    reject("oversized_frame", id, "frame over max_frame_bytes");
                    queue.close(CloseCause::TooBig);
                    break;
                }
                if !queue.wait_control_space().await {
                    break;
                }
                handle_text(&text, id, queue, app);
            }
            Message::Binary(_) => {
                if !queue.wait_control_space().await {
                    break;
                }
                reject("binary_frame", id, "binary frame");
                queue.push_control(encode(&ServerMessage::Error {
                    code: ErrorCode::BadRequest,
                    message: "binary frames are not supported; send JSON text frames",
                    id: None,
                }));
            }
            // Tungstenite answers pings itself; any frame proves the client alive.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => {
                queue.close(CloseCause::ClientClosed);
                return;
            }
        }
    }
    // We are closing: give the client a moment to answer our Close, so the TCP connection
    // ends cleanly rather than with a reset.
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

fn handle_text(text: &Utf8Bytes, id: ClientId, queue: &ClientQueue, app: &AppState) {
    let env = match protocol::parse_request(text) {
        Ok(env) => env,
        Err(rejection) => {
            reject(rejection.code.as_str(), id, &rejection.message);
            queue.push_control(rejection.to_frame());
            return;
        }
    };
    let rid = env.id.as_ref();
    let outcome = match &env.request {
        Request::Ping => {
            queue.push_control(encode(&ServerMessage::Pong { id: rid }));
            Ok(())
        }
        Request::Subscribe(sub) => {
            app.registry
                .subscribe(id, sub, encode(&ServerMessage::subscribed(sub, rid)))
        }
        Request::Unsubscribe(sub) => {
            app.registry
                .unsubscribe(id, sub, encode(&ServerMessage::unsubscribed(sub, rid)))
        }
    };
    match outcome {
        Ok(()) | Err(SubscribeError::UnknownClient) => {}
        Err(e @ SubscribeError::TooMany(_)) => {
            let code = ErrorCode::TooManySubscriptions;
            let message = e.to_string();
            reject(code.as_str(), id, &message);
            queue.push_control(encode(&ServerMessage::Error {
                code,
                message: &message,
                id: rid,
            }));
        }
    }
}

/// Counts a refused client frame; logged at debug only, as a hostile client could otherwise
/// flood the logs.
fn reject(reason: &'static str, id: ClientId, detail: &str) {
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => reason).increment(1);
    tracing::debug!(client = %id, reason, detail, "client frame rejected");
}

/// Maps a read error to how the session ends.
fn classify(e: &axum::Error) -> CloseCause {
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(_)) => CloseCause::TooBig,
        Some(tungstenite::Error::Protocol(_)) => CloseCause::Protocol,
        Some(tungstenite::Error::Utf8(_)) => CloseCause::InvalidUtf8,
        _ => CloseCause::Gone,
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    queue: &ClientQueue,
    stop: &CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            biased;
            () = queue.closed() => break,
            next = queue.pop() => match next {
                Some(text) => Message::Text(text),
                None => break,
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        // A send stuck on a stalled client is abandoned as soon as the queue closes (too
        // slow, shutdown); the frame stays whole in tungstenite's buffer, ahead of the Close.
        tokio::select! {
            biased;
            () = queue.closed() => break,
            sent = sink.send(msg) => if sent.is_err() {
                queue.close(CloseCause::Gone);
                return;
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

fn close_message(cause: CloseCause) -> Message {
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
            CloseCause::Shutdown,
            CloseCause::TooSlow,
            CloseCause::TooBig,
            CloseCause::Protocol,
            CloseCause::InvalidUtf8,
            CloseCause::Idle,
        ] {
            let (code, reason) = cause.close_frame().expect("sends a Close");
            assert!((1000..=1011).contains(&code) && code != 1005 && code != 1006);
            assert!(reason.len() <= 123, "close reasons fit a control frame");
        }
        assert_eq!(CloseCause::TooSlow.close_frame(), Some((1008, "too slow")));
    }
}
