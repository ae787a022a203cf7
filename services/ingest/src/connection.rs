//! One WebSocket connection to an exchange, kept alive for as long as the role runs.
//!
//! Each connection is its own task with its own backoff, watchdog and state, so one failing
//! connection (or exchange) changes nothing for the others. A session connects, subscribes
//! within the exchange's pacing, then reads; it ends on a server close, an error, a
//! `Reconnect` from the adapter, or the staleness watchdog (open but silent: no frame at all, not even a keep-alive, for
//! `stale_after`). Between sessions
//! the task waits an exponential backoff with jitter (reset after a session that delivered
//! data), and after `breaker_threshold` failures in a row reports its circuit open in
//! `/health` while it keeps retrying at the maximum delay.
//!
//! Parsed events go to the publisher through a bounded channel with `try_send`: the socket is
//! never stalled by the bus (the exchange would drop us), so when the channel is full the
//! event is dropped and counted. Ticks are superseded by the next tick within milliseconds,
//! so losing one under overload is the cheap failure; blocking the socket is not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use spreadagg_model::time::now_ns;
use spreadagg_runtime::Component;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::exchange::{Adapter, Control, Event, SymbolMap};

/// Largest WebSocket message and frame accepted from an exchange. Market-data frames are a
/// few hundred bytes; anything near these is hostile or broken and ends the session.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
const MAX_FRAME_BYTES: usize = 1 << 20;
/// A send (subscribe, keep-alive, close) that takes longer than this ends the session: the
/// peer is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings shared by every connection of one ingestor.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub ws_url: String,
    pub connect_timeout: Duration,
    pub stale_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub breaker_threshold: u32,
}

/// Everything one connection task needs.
pub(crate) struct Connection {
    pub adapter: Arc<dyn Adapter>,
    pub settings: ConnectionSettings,
    pub natives: Vec<String>,
    pub symbols: Arc<SymbolMap>,
    pub events: mpsc::Sender<Event>,
    pub component: Component,
    pub stop: CancellationToken,
    /// Wait before the first connect, so an exchange's connections are staggered within its
    /// connection-rate limits.
    pub start_delay: Duration,
}

enum SessionEnd {
    Stopped,
    /// The session ended; `delivered` says whether it carried data (resets the backoff).
    Retry {
        reason: String,
        delivered: bool,
    },
}

impl Connection {
    /// Runs sessions until `stop` is cancelled.
    pub(crate) async fn run(self) {
        let exchange = self.adapter.id().as_str();
        let new_backoff = || {
            backon::ExponentialBuilder::new()
                .with_min_delay(self.settings.backoff_min)
                .with_max_delay(self.settings.backoff_max)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = new_backoff();
        let mut failures: u32 = 0;
        tokio::select! {
            () = self.stop.cancelled() => return,
            () = tokio::time::sleep(self.start_delay) => {}
        }
        loop {
            let end = self.session().await;
            let (reason, delivered) = match end {
                SessionEnd::Stopped => break,
                SessionEnd::Retry { reason, delivered } => (reason, delivered),
            };
            metrics::counter!("spreadagg_ingest_reconnects_total", "exchange" => exchange)
                .increment(1);
            if delivered {
                failures = 0;
                backoff = new_backoff();
            } else {
                failures = failures.saturating_add(1);
            }
            let delay = backoff.next().unwrap_or(self.settings.backoff_max);
            let breaker = if failures >= self.settings.breaker_threshold {
                "open"
            } else {
                "closed"
            };
            tracing::warn!(exchange, %reason, failures, delay_ms = delay.as_millis() as u64, breaker, "connection ended; reconnecting");
            self.component.set(
                false,
                json!({"state": "backoff", "reason": reason, "failures": failures, "breaker": breaker, "retry_in_ms": delay.as_millis() as u64}),
            );
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.component.set(false, json!({"state": "stopped"}));
    }

    async fn session(&self) -> SessionEnd {
        let exchange = self.adapter.id().as_str();
        let retry = |reason: String, delivered: bool| SessionEnd::Retry { reason, delivered };
        self.component.set(false, json!({"state": "connecting"}));
        let limits = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(
            self.settings.ws_url.as_str(),
            Some(limits),
            true,
        );
        let ws = tokio::select! {
            () = self.stop.cancelled() => return SessionEnd::Stopped,
            r = tokio::time::timeout(self.settings.connect_timeout, connect) => match r {
                Err(_) => return retry("connect timed out".into(), false),
                Ok(Err(e)) => return retry(format!("connect: {e}"), false),
                Ok(Ok((ws, _response))) => ws,
            },
        };
        let (mut sink, mut stream) = ws.split();
        for frame in self.adapter.subscribe_frames(&self.natives) {
            match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return retry(format!("subscribe: {e}"), false),
                Err(_) => return retry("subscribe: send timed out".into(), false),
            }
            tokio::select! {
                () = self.stop.cancelled() => return SessionEnd::Stopped,
                () = tokio::time::sleep(self.adapter.subscribe_pacing()) => {}
            }
        }
        self.component.set(
            true,
            json!({"state": "connected", "symbols": self.natives.len()}),
        );
        tracing::info!(exchange, symbols = self.natives.len(), "subscribed");

        let ping = self.adapter.client_ping();
        let mut ping_timer =
            tokio::time::interval(ping.as_ref().map_or(Duration::from_secs(3600), |p| p.every));
        ping_timer.reset();
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        // Link liveness: any frame (data, ack, pong, a server ping) proves the link is alive.
        let mut last_frame = Instant::now();
        let mut delivered = false;
        let mut events = Vec::new();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(None))).await;
                    return SessionEnd::Stopped;
                }
                _ = ping_timer.tick(), if ping.is_some() => {
                    if let Some(p) = &ping {
                        match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(p.text.clone()))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return retry(format!("keep-alive: {e}"), delivered),
                            Err(_) => return retry("keep-alive: send timed out".into(), delivered),
                        }
                    }
                }
                _ = watchdog.tick() => {
                    if last_frame.elapsed() > self.settings.stale_after {
                        metrics::counter!("spreadagg_ingest_stale_total", "exchange" => exchange).increment(1);
                        return retry(format!("nothing received for {:?}", self.settings.stale_after), delivered);
                    }
                }
                frame = stream.next() => {
                    if matches!(frame, Some(Ok(_))) {
                        last_frame = Instant::now();
                    }
                    let text = match frame {
                        None => return retry("connection closed".into(), delivered),
                        Some(Err(e)) => return retry(format!("read: {e}"), delivered),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(close))) => {
                            return retry(format!("server closed: {close:?}"), delivered);
                        }
                        Some(Ok(Message::Binary(_))) => {
                            reject(exchange, "binary_frame");
                            continue;
                        }
                        // Pings are answered by the WebSocket layer on the next read.
                        Some(Ok(_)) => continue,
                    };
                    events.clear();
                    match self.adapter.parse(text.as_str(), &self.symbols, now_ns(), &mut events) {
                        Ok(Control::Data) => {
                            delivered = true;
                            for event in events.drain(..) {
                                if !self.forward(exchange, event) {
                                    return SessionEnd::Stopped;
                                }
                            }
                        }
                        Ok(Control::Ack | Control::Pong | Control::Ignored) => {}
                        Ok(Control::ExchangeError(e)) => {
                            metrics::counter!("spreadagg_ingest_exchange_errors_total", "exchange" => exchange).increment(1);
                            tracing::warn!(exchange, error = %e, "exchange reported an error");
                        }
                        Ok(Control::Reconnect(reason)) => return retry(format!("exchange asked: {reason}"), delivered),
                        Err(e) => {
                            reject(exchange, e.label());
                            tracing::debug!(exchange, error = %e, frame = %text.as_str().chars().take(200).collect::<String>(), "frame rejected");
                        }
                    }
                }
            }
        }
    }

    /// Hands an event to the publisher without waiting. False when the publisher is gone.
    fn forward(&self, exchange: &'static str, event: Event) -> bool {
        let kind = match &event {
            Event::Tick(_) => "tick",
            Event::Trade(_) => "trade",
        };
        match self.events.try_send(event) {
            Ok(()) => {
                metrics::counter!("spreadagg_ingest_events_total", "exchange" => exchange, "kind" => kind).increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => exchange, "kind" => kind, "reason" => "queue_full").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn reject(exchange: &'static str, reason: &'static str) {
    metrics::counter!("spreadagg_ingest_rejected_total", "exchange" => exchange, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    //! The connection loop against a local WebSocket server that misbehaves on purpose.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use spreadagg_runtime::Health;
    use tokio::net::TcpListener;

    use super::*;
    use crate::exchange::okx::Okx;

    const BBO: &str = r#"{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["101.5","1","0","1"]],"bids":[["101.0","2","0","1"]],"ts":"1597026383085","seqId":7}]}"#;

    /// A server that accepts WebSocket connections, reads the subscribe frame, sends `frames`,
    /// then stays open and silent. Counts connections.
    async fn server(frames: Vec<Message>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/ws/v5/public", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let frames = frames.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let _subscribe = ws.next().await;
                    for f in frames {
                        if ws.send(f).await.is_err() {
                            return;
                        }
                    }
                    // Silent from here on, but keep reading so the socket stays open.
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        (url, accepted)
    }

    fn connection(
        url: String,
        events: mpsc::Sender<Event>,
        stop: &CancellationToken,
        health: &Health,
    ) -> Connection {
        let mut symbols = SymbolMap::new();
        symbols.insert("BTC-USDT".into(), "BTC-USDT".parse().expect("symbol"));
        Connection {
            adapter: Arc::new(Okx),
            settings: ConnectionSettings {
                ws_url: url,
                connect_timeout: Duration::from_secs(2),
                stale_after: Duration::from_secs(1),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(50),
                breaker_threshold: 3,
            },
            natives: vec!["BTC-USDT".into()],
            symbols: Arc::new(symbols),
            events,
            component: health.register("test.conn"),
            stop: stop.clone(),
            start_delay: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_silent_link_is_recycled_by_the_watchdog() {
        let (url, accepted) = server(vec![]).await;
        let (tx, _rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let health = Health::new();
        let task = tokio::spawn(connection(url, tx, &stop, &health).run());
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            accepted.load(Ordering::SeqCst) >= 3,
            "silent link not recycled: {} connections",
            accepted.load(Ordering::SeqCst)
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
    }

    #[tokio::test]
    async fn garbage_is_counted_and_the_session_goes_on() {
        let frames = vec![
            Message::text(BBO),
            Message::text("{not json"),
            Message::binary(vec![0u8, 1, 2]),
            Message::text(
                r#"{"event":"error","code":"60012","msg":"Invalid request","connId":"x"}"#,
            ),
            Message::text("pong"),
            Message::text(BBO.replace("\"seqId\":7", "\"seqId\":8")),
        ];
        let (url, accepted) = server(frames).await;
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let health = Health::new();
        let task = tokio::spawn(connection(url, tx, &stop, &health).run());
        let mut seqs = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Event::Tick(t))) => seqs.push(t.seq),
                other => panic!("expected a tick, got {other:?}"),
            }
        }
        assert_eq!(
            seqs,
            [7, 8],
            "both good frames arrive in order around the bad ones"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "bad frames must not end the session"
        );
        assert!(health.is_ready(), "{}", health.report());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
        assert!(!health.is_ready());
    }

    #[tokio::test]
    async fn an_unreachable_exchange_backs_off_and_opens_the_breaker() {
        // A port with nothing listening: bind, learn the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let (tx, _rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let health = Health::new();
        let task =
            tokio::spawn(connection(format!("ws://127.0.0.1:{port}/ws"), tx, &stop, &health).run());
        let report = async {
            loop {
                let r = health.report();
                if r["components"]["test.conn"]["detail"]["breaker"] == "open" {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let r = tokio::time::timeout(Duration::from_secs(10), report)
            .await
            .expect("breaker opens after 3 failures");
        assert_eq!(r["components"]["test.conn"]["ready"], false);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops during backoff")
            .expect("no panic");
    }
}
