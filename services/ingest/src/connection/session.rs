//! One WebSocket session: plan, connect, subscribe, read, until something ends it.
//!
//! Subscribe requests go out paced (the exchange's inbound limit) while frames are already
//! being read. Each request waits for its ack at most `ack_timeout`; a refused or unanswered
//! one is counted and sent again after a jittered backoff, so a topic is never silently
//! missing. Two watchdogs: the link watchdog ends a session on which no frame at all arrived
//! for `stale_after` (a dead socket), and the data watchdog ends one on which no market data
//! arrived for `data_stale_after` once a subscription is confirmed; keep-alive answers and
//! acks do not count (the silent stall with pings answered, nautilus_trader #4298).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use metrics::Counter;
use spreadagg_model::time::now_ns;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::pacing::Backoff;
use super::read_pacer::ReadPacer;
use crate::exchange::{Control, Frame, Outgoing, Output, PlanContext, Request};

/// Most bytes one socket read asks for. tungstenite zero-fills this much of its buffer before
/// every read (128 KiB by default: several µs per read, measured as the largest single cost
/// of the load harness's feed); market-data frames are small, so 16 KiB still takes well over
/// a hundred frames per read. A larger frame grows the buffer as it needs.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Market-data frames handled between two yields to the runtime (see the read loop).
const FRAMES_PER_YIELD: usize = 16;
/// A send (subscribe, keep-alive, close) that takes longer than this ends the session: the
/// peer is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait before a refused or unanswered request is sent again.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(60);

/// What a running session tells its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// The breaker and the attempt limiter let it go ahead: it is connecting.
    Admitted,
    /// Every request is confirmed.
    Subscribed { symbols: usize },
    /// The first market data arrived.
    Delivered,
    /// The exchange announced a close: start a successor.
    Rotate(String),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub reason: String,
    /// It was subscribed or delivered data at some point (the exchange works).
    pub proven: bool,
    /// It ended because it was asked to (shutdown, or replaced by a successor).
    pub cancelled: bool,
}

struct PendingRequest {
    request: Request,
    deadline: Instant,
    backoff: Backoff,
}

struct Meters {
    rejected: HashMap<&'static str, Counter>,
    exchange: &'static str,
    subscribe_refused: Counter,
    subscribe_timeout: Counter,
    link_stale: Counter,
    data_stale: Counter,
    never_ready: Counter,
    exchange_errors: Counter,
}

impl Meters {
    fn new(exchange: &'static str) -> Self {
        let sub = |reason: &'static str| metrics::counter!("spreadagg_ingest_subscribe_failures_total", "exchange" => exchange, "reason" => reason);
        Self {
            rejected: HashMap::new(),
            exchange,
            subscribe_refused: sub("refused"),
            subscribe_timeout: sub("timeout"),
            link_stale: metrics::counter!("spreadagg_ingest_stale_total", "exchange" => exchange, "watchdog" => "link"),
            data_stale: metrics::counter!("spreadagg_ingest_stale_total", "exchange" => exchange, "watchdog" => "data"),
            never_ready: metrics::counter!("spreadagg_ingest_stale_total", "exchange" => exchange, "watchdog" => "ready"),
            exchange_errors: metrics::counter!("spreadagg_ingest_exchange_errors_total", "exchange" => exchange),
        }
    }

    fn reject(&mut self, reason: &'static str) {
        let exchange = self.exchange;
        self.rejected
            .entry(reason)
            .or_insert_with(|| metrics::counter!("spreadagg_ingest_rejected_total", "exchange" => exchange, "reason" => reason))
            .increment(1);
    }
}

/// Runs one session for `natives` until it ends or `cancel` fires.
pub(crate) async fn run(
    shared: Arc<Shared>,
    natives: Vec<String>,
    report: mpsc::Sender<Report>,
    cancel: CancellationToken,
) -> Ended {
    let mut proven = false;
    let end = |reason: String, proven: bool| Ended {
        reason,
        proven,
        cancelled: false,
    };
    let cancelled = |proven: bool| Ended {
        reason: "cancelled".into(),
        proven,
        cancelled: true,
    };
    let adapter = shared.adapter.clone();
    let ex = adapter.id().as_str();
    let settings = &shared.settings;
    let mut meters = Meters::new(ex);

    let plan = adapter.plan(PlanContext {
        http: &shared.http,
        rest_url: &shared.rest_url,
        ws_url: shared.ws_url.as_deref(),
    });
    let mut plan = tokio::select! {
        () = cancel.cancelled() => return cancelled(false),
        r = tokio::time::timeout(settings.connect_timeout, plan) => match r {
            Err(_) => return end("planning timed out".into(), false),
            Ok(Err(e)) => return end(format!("planning: {e}"), false),
            Ok(Ok(plan)) => plan,
        },
    };
    // The exchange's message cap (`Limits::max_message_bytes`: 1 MiB for most, more where
    // the exchange sends larger messages); a larger message ends the session.
    let max_message = adapter.limits().max_message_bytes;
    let limits = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(READ_BUFFER_BYTES);
    let connect =
        tokio_tungstenite::connect_async_with_config(plan.url.as_str(), Some(limits), false);
    let ws = tokio::select! {
        () = cancel.cancelled() => return cancelled(false),
        r = tokio::time::timeout(settings.connect_timeout, connect) => match r {
            Err(_) => return end("connect timed out".into(), false),
            Ok(Err(e)) => return end(format!("connect: {e}"), false),
            Ok(Ok((ws, _response))) => ws,
        },
    };
    let (mut sink, mut stream) = ws.split();
    macro_rules! send {
        ($msg:expr, $what:literal) => {
            match tokio::time::timeout(SEND_TIMEOUT, sink.send($msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return end(format!("{}: {e}", $what), proven),
                Err(_) => return end(format!("{}: send timed out", $what), proven),
            }
        };
    }

    let mut next_id: u64 = 1;
    let session = &mut plan.session;
    // Requests not yet sent, and requests sent and awaiting their ack, by id.
    let mut outbox: VecDeque<(Request, Backoff)> = session
        .subscribe(&natives, &mut next_id)
        .into_iter()
        .map(|r| (r, Backoff::new(Duration::from_secs(1), RESUBSCRIBE_MAX)))
        .collect();
    let total_requests = outbox.len();
    let mut awaiting: HashMap<u64, PendingRequest> = HashMap::new();
    // Requests to send again, with when.
    let mut retry: Vec<(Instant, Request, Backoff)> = Vec::new();
    let mut confirmed: usize = 0;
    let mut reported_subscribed = false;

    let mut pacing = tokio::time::interval(
        shared
            .adapter
            .limits()
            .subscribe_pacing
            .max(Duration::from_millis(1)),
    );
    pacing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_every = plan.keepalive_every;
    let mut keepalive = tokio::time::interval(keepalive_every.unwrap_or(Duration::from_secs(3600)));
    keepalive.reset();
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    let mut last_frame = Instant::now();
    // A session the exchange never makes ready (KuCoin's welcome never comes, or names another
    // connection) would otherwise sit forever with pongs keeping the link watchdog happy.
    let ready_by = last_frame + settings.ack_timeout * 3;
    let mut last_data: Option<Instant> = None;
    let mut subscribed_at: Option<Instant> = None;
    let mut out = Output::default();
    let mut since_yield = 0usize;
    let mut read_pacer = ReadPacer::new(ex);

    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(None))).await;
                return cancelled(proven);
            }
            _ = pacing.tick(), if !outbox.is_empty() && session.ready_to_subscribe() => {
                if let Some((request, backoff)) = outbox.pop_front() {
                    send!(to_message(&request.frame), "subscribe");
                    awaiting.insert(request.id, PendingRequest {
                        request,
                        deadline: Instant::now() + settings.ack_timeout,
                        backoff,
                    });
                }
            }
            _ = keepalive.tick(), if keepalive_every.is_some() => {
                if let Some(frame) = session.keepalive() {
                    send!(to_message(&frame), "keep-alive");
                }
            }
            _ = housekeeping.tick() => {
                let now = Instant::now();
                if now.duration_since(last_frame) > settings.stale_after {
                    meters.link_stale.increment(1);
                    return end(format!("link watchdog: no frame for {} s", settings.stale_after.as_secs_f64()), proven);
                }
                if now > ready_by && !outbox.is_empty() && !session.ready_to_subscribe() {
                    meters.never_ready.increment(1);
                    return end(format!("not ready to subscribe {} s after connecting", (settings.ack_timeout * 3).as_secs_f64()), proven);
                }
                // The data watchdog runs once something is subscribed.
                if let Some(since) = last_data.or(subscribed_at)
                    && now.duration_since(since) > settings.data_stale_after
                {
                    meters.data_stale.increment(1);
                    return end(format!("data watchdog: no market data for {} s", settings.data_stale_after.as_secs_f64()), proven);
                }
                // Unanswered requests time out and are scheduled again.
                let expired: Vec<u64> = awaiting.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
                for id in expired {
                    if let Some(mut p) = awaiting.remove(&id) {
                        meters.subscribe_timeout.increment(1);
                        session.forget(id);
                        let delay = p.backoff.next_delay();
                        tracing::warn!(exchange = ex, request = id, symbols = p.request.natives.len(), retry_ms = delay.as_millis() as u64, "subscribe request unanswered; sending again");
                        retry.push((now + delay, p.request, p.backoff));
                    }
                }
                // Due retries go back to the outbox with fresh ids.
                let mut i = 0;
                while i < retry.len() {
                    if retry[i].0 <= now {
                        let (_, old, backoff) = retry.swap_remove(i);
                        for r in session.subscribe(&old.natives, &mut next_id) {
                            outbox.push_back((r, backoff.clone()));
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            frame = stream.next() => {
                let recv_ts_ns = now_ns();
                let message = match frame {
                    None => return end("connection closed".into(), proven),
                    Some(Err(e)) => return end(format!("read: {e}"), proven),
                    Some(Ok(m)) => m,
                };
                last_frame = Instant::now();
                out.clear();
                let symbols = shared.symbols();
                // Frames already buffered are read without touching the socket, so tokio's
                // cooperative budget never makes this loop yield; the publisher it woke sits in
                // this worker's LIFO slot (which no other worker may steal) until it does.
                // Yield every few frames, whatever they are.
                since_yield += 1;
                if since_yield >= FRAMES_PER_YIELD {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
                let result = match &message {
                    Message::Text(t) => session.on_frame(Frame::Text(t.as_str()), &symbols, recv_ts_ns, &mut out),
                    Message::Binary(b) => session.on_frame(Frame::Binary(b), &symbols, recv_ts_ns, &mut out),
                    Message::Close(close) => {
                        let why = close.as_ref().map_or_else(|| "no reason".to_owned(), |c| format!("{} {}", c.code, c.reason));
                        return end(format!("server closed: {why}"), proven);
                    }
                    // Pings are answered by the WebSocket layer.
                    _ => continue,
                };
                for reply in out.replies.drain(..) {
                    send!(to_message(&reply), "reply");
                }
                match result {
                    Ok(Control::Data) => {
                        if last_data.is_none() {
                            send_report(&report, &cancel, Report::Delivered).await;
                        }
                        last_data = Some(last_frame);
                        proven = true;
                        for event in out.events.drain(..) {
                            read_pacer.note(shared.sink.push(event));
                        }
                        // Behind the publisher: let it have the CPU (see read_pacer).
                        if read_pacer.pace(&shared.sink).await {
                            since_yield = 0;
                        }
                    }
                    Ok(Control::Subscribed(id)) => {
                        if awaiting.remove(&id).is_some() {
                            confirmed += 1;
                            subscribed_at.get_or_insert(last_frame);
                            proven = true;
                        }
                        if !reported_subscribed && confirmed >= total_requests && outbox.is_empty() && awaiting.is_empty() && retry.is_empty() {
                            reported_subscribed = true;
                            tracing::info!(exchange = ex, symbols = natives.len(), "subscribed");
                            send_report(&report, &cancel, Report::Subscribed { symbols: natives.len() }).await;
                        }
                    }
                    Ok(Control::Refused { request, reason }) => {
                        meters.subscribe_refused.increment(1);
                        match request.and_then(|id| awaiting.remove(&id)) {
                            Some(mut p) => {
                                let delay = p.backoff.next_delay();
                                tracing::warn!(exchange = ex, request = p.request.id, reason = %reason, retry_ms = delay.as_millis() as u64, "subscribe request refused; sending again later");
                                retry.push((Instant::now() + delay, p.request, p.backoff));
                            }
                            // Not attributable: the request it concerns times out and retries.
                            None => tracing::warn!(exchange = ex, reason = %reason, "exchange refused a request"),
                        }
                    }
                    Ok(Control::KeepAlive | Control::Ignored) => {}
                    Ok(Control::ExchangeError(e)) => {
                        meters.exchange_errors.increment(1);
                        tracing::warn!(exchange = ex, error = %e, "exchange reported an error");
                    }
                    Ok(Control::Rotate(reason)) => {
                        tracing::info!(exchange = ex, reason = %reason, "exchange announced a close; rotating");
                        send_report(&report, &cancel, Report::Rotate(reason)).await;
                    }
                    Ok(Control::Closing(reason)) => return end(format!("exchange closing: {reason}"), proven),
                    Err(e) => {
                        meters.reject(e.label());
                        tracing::debug!(exchange = ex, error = %e, "frame rejected");
                        // A frame of several trades may fail on one of them: the ones read and
                        // validated before it still go out (the rejection is counted above).
                        for event in out.events.drain(..) {
                            read_pacer.note(shared.sink.push(event));
                        }
                    }
                }
            }
        }
    }
}

fn to_message(frame: &Outgoing) -> Message {
    match frame {
        Outgoing::Text(t) => Message::text(t.clone()),
        Outgoing::Binary(b) => Message::binary(b.clone()),
    }
}

/// Reports to the connection, unless the session is being cancelled (the connection then no
/// longer listens).
async fn send_report(tx: &mpsc::Sender<Report>, cancel: &CancellationToken, report: Report) {
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = tx.send(report) => {}
    }
}
