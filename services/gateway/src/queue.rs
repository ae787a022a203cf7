//! Each client's outgoing queue: replies first (never dropped, bounded), then spread points,
//! bounded, the *oldest* dropped when full and the client closed past a drop limit.
//!
//! Why not a `tokio::sync::mpsc` per client: a bounded mpsc can only refuse the *newest*
//! message when full (or make the sender wait, which would let one client stall everyone).
//! For market data the newest point is the valuable one, so the queue must drop its oldest;
//! a `Mutex<VecDeque>` with a `Notify` does that in O(1).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::Pair;

/// Replies (`subscribed`, `pong`, `error`) waiting to be written, per client. They are never
/// dropped: when full, the session stops reading that client's requests until there is room,
/// which slows only that client.
pub(crate) const CONTROL_CAPACITY: usize = 64;
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below is a few field updates that leave the state consistent,
    // so a lock poisoned by a panic elsewhere is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connected client's id, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ClientId(pub(crate) u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a client's session ends; the first cause recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The gateway is stopping: Close 1001.
    Shutdown,
    /// The client lost too many messages: Close 1008 "too slow".
    TooSlow,
    /// A client frame exceeded `max_frame_bytes`: Close 1009.
    TooBig,
    /// The client broke the WebSocket protocol: Close 1002.
    Protocol,
    /// The client sent text that is not UTF-8: Close 1007.
    InvalidUtf8,
    /// Nothing heard from the client (not even a pong) for the idle timeout: Close 1001.
    Idle,
    /// The client sent Close; it is answered, nothing more.
    ClientClosed,
    /// The connection is gone (reset, EOF, write error): nothing can be sent.
    Gone,
}

impl CloseCause {
    /// The Close frame to send, if any.
    pub(crate) fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseCause::Shutdown => Some((1001, "server shutting down")),
            CloseCause::TooSlow => Some((1008, "too slow")),
            CloseCause::TooBig => Some((1009, "frame too large")),
            CloseCause::Protocol => Some((1002, "protocol error")),
            CloseCause::InvalidUtf8 => Some((1007, "invalid utf-8")),
            CloseCause::Idle => Some((1001, "idle timeout")),
            CloseCause::ClientClosed | CloseCause::Gone => None,
        }
    }

    /// For logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseCause::Shutdown => "shutdown",
            CloseCause::TooSlow => "too_slow",
            CloseCause::TooBig => "frame_too_large",
            CloseCause::Protocol => "protocol_error",
            CloseCause::InvalidUtf8 => "invalid_utf8",
            CloseCause::Idle => "idle",
            CloseCause::ClientClosed => "client_closed",
            CloseCause::Gone => "gone",
        }
    }
}

/// Which symbol and pair a queued point belongs to, shared by every client it goes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PointKey {
    pub(crate) symbol: String,
    /// `None` when the point names an exchange this build does not know; such points reach
    /// only symbol-wide subscribers.
    pub(crate) pair: Option<Pair>,
}

/// One queued spread frame.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    pub(crate) key: Arc<PointKey>,
    pub(crate) text: Utf8Bytes,
}

/// What happened to an offered point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Queued,
    /// Queued, after dropping the oldest queued point.
    DroppedOldest,
    /// This drop reached the limit: the client is now closed as too slow.
    Disconnected,
    /// The client is already closing; nothing was queued.
    Closed,
}

#[derive(Debug, Default)]
struct QueueState {
    control: VecDeque<Utf8Bytes>,
    data: VecDeque<QueueItem>,
    dropped_total: u64,
    dropped_since_empty: u64,
    close: Option<CloseCause>,
}

/// One client's outgoing queue: replies first (never dropped, bounded by
/// [`CONTROL_CAPACITY`]), then spread points (bounded by `capacity`, oldest dropped when full).
#[derive(Debug)]
pub(crate) struct ClientQueue {
    state: Mutex<QueueState>,
    /// Wakes the writer: something to send, or closed.
    ready: Notify,
    /// Wakes the reader: room for a reply again.
    control_space: Notify,
    /// Cancelled once the queue is closed.
    closed: CancellationToken,
    capacity: usize,
    drop_limit: u64,
}

impl ClientQueue {
    /// `capacity` and `drop_limit` are at least 1 (the configuration is validated).
    pub(crate) fn new(capacity: usize, drop_limit: u64) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            control_space: Notify::new(),
            closed: CancellationToken::new(),
            capacity: capacity.max(1),
            drop_limit: drop_limit.max(1),
        }
    }

    /// Offers a point; never waits. When full, drops the oldest point; when the drops since
    /// the queue was last empty reach the limit, closes the queue as [`CloseCause::TooSlow`].
    pub(crate) fn offer(&self, item: QueueItem) -> Offered {
        let mut s = lock(&self.state);
        if s.close.is_some() {
            return Offered::Closed;
        }
        let mut outcome = Offered::Queued;
        if s.data.len() >= self.capacity {
            s.data.pop_front();
            s.dropped_total += 1;
            s.dropped_since_empty += 1;
            metrics::counter!("spreadagg_gateway_dropped_total").increment(1);
            if s.dropped_since_empty >= self.drop_limit {
                s.close = Some(CloseCause::TooSlow);
                drop(s);
                self.closed.cancel();
                self.ready.notify_one();
                return Offered::Disconnected;
            }
            outcome = Offered::DroppedOldest;
        }
        s.data.push_back(item);
        drop(s);
        self.ready.notify_one();
        outcome
    }

    /// Queues a reply unless the queue is closed or the reply space is full (the caller
    /// waits for [`Self::wait_control_space`] first, so full does not happen in practice).
    pub(crate) fn push_control(&self, text: Utf8Bytes) -> bool {
        let mut s = lock(&self.state);
        if s.close.is_some() || s.control.len() >= CONTROL_CAPACITY {
            return false;
        }
        s.control.push_back(text);
        drop(s);
        self.ready.notify_one();
        true
    }

    /// Waits until a reply fits; `false` once the queue is closed.
    pub(crate) async fn wait_control_space(&self) -> bool {
        loop {
            {
                let s = lock(&self.state);
                if s.close.is_some() {
                    return false;
                }
                if s.control.len() < CONTROL_CAPACITY {
                    return true;
                }
            }
            tokio::select! {
                () = self.control_space.notified() => {}
                () = self.closed.cancelled() => return false,
            }
        }
    }

    /// The next frame to write, replies first; `None` when empty or closed.
    pub(crate) fn try_pop(&self) -> Option<Utf8Bytes> {
        let mut s = lock(&self.state);
        if s.close.is_some() {
            return None;
        }
        if let Some(reply) = s.control.pop_front() {
            drop(s);
            self.control_space.notify_one();
            return Some(reply);
        }
        let item = s.data.pop_front()?;
        if s.data.is_empty() {
            // Fully drained: the client has caught up, so its slow-drop count starts over.
            s.dropped_since_empty = 0;
        }
        Some(item.text)
    }

    /// Waits for the next frame to write; `None` once the queue is closed.
    /// Single consumer (the session's writer).
    pub(crate) async fn pop(&self) -> Option<Utf8Bytes> {
        loop {
            if let Some(text) = self.try_pop() {
                return Some(text);
            }
            if self.closed.is_cancelled() {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the look above
            // and this await is not missed.
            self.ready.notified().await;
        }
    }

    /// Keeps only the queued points `keep` accepts (after an unsubscribe).
    pub(crate) fn retain(&self, mut keep: impl FnMut(&PointKey) -> bool) {
        lock(&self.state).data.retain(|item| keep(&item.key));
    }

    /// Closes the queue; the first cause wins. Returns whether this call closed it.
    pub(crate) fn close(&self, cause: CloseCause) -> bool {
        let mut s = lock(&self.state);
        if s.close.is_some() {
            return false;
        }
        s.close = Some(cause);
        drop(s);
        self.closed.cancel();
        self.ready.notify_one();
        self.control_space.notify_one();
        true
    }

    pub(crate) fn close_cause(&self) -> Option<CloseCause> {
        lock(&self.state).close
    }

    /// Resolves once the queue is closed.
    pub(crate) fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// Queued spread points.
    pub(crate) fn depth(&self) -> usize {
        lock(&self.state).data.len()
    }

    /// Points this client has lost since it connected.
    pub(crate) fn dropped_total(&self) -> u64 {
        lock(&self.state).dropped_total
    }

    /// Everything queued now, as text (tests).
    #[cfg(test)]
    pub(crate) fn drain_text(&self) -> Vec<String> {
        std::iter::from_fn(|| self.try_pop())
            .map(|t| t.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u32) -> QueueItem {
        QueueItem {
            key: Arc::new(PointKey {
                symbol: "BTC-USDT".into(),
                pair: None,
            }),
            text: Utf8Bytes::from(n.to_string()),
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts() {
        let q = ClientQueue::new(3, 100);
        let outcomes: Vec<Offered> = (0..5).map(|n| q.offer(item(n))).collect();
        assert_eq!(
            outcomes,
            [
                Offered::Queued,
                Offered::Queued,
                Offered::Queued,
                Offered::DroppedOldest,
                Offered::DroppedOldest
            ]
        );
        assert_eq!(q.depth(), 3);
        assert_eq!(q.dropped_total(), 2);
        assert_eq!(
            q.drain_text(),
            ["2", "3", "4"],
            "the newest survive, in order"
        );
    }

    #[test]
    fn replies_go_first_and_are_never_dropped() {
        let q = ClientQueue::new(1, 100);
        q.offer(item(1));
        assert!(q.push_control(Utf8Bytes::from("reply")));
        q.offer(item(2));
        assert_eq!(q.drain_text(), ["reply", "2"]);
        for _ in 0..CONTROL_CAPACITY {
            assert!(q.push_control(Utf8Bytes::from("r")));
        }
        assert!(
            !q.push_control(Utf8Bytes::from("r")),
            "reply space is bounded"
        );
    }

    #[test]
    fn the_client_is_disconnected_at_the_drop_limit() {
        let q = ClientQueue::new(2, 3);
        q.offer(item(0));
        q.offer(item(1));
        assert_eq!(q.offer(item(2)), Offered::DroppedOldest);
        assert_eq!(q.offer(item(3)), Offered::DroppedOldest);
        assert_eq!(q.offer(item(4)), Offered::Disconnected);
        assert_eq!(q.close_cause(), Some(CloseCause::TooSlow));
        assert_eq!(q.offer(item(5)), Offered::Closed);
        assert_eq!(q.try_pop(), None, "a closed queue yields nothing");
        assert_eq!(q.dropped_total(), 3);
    }

    #[test]
    fn catching_up_resets_the_slow_count() {
        let q = ClientQueue::new(1, 3);
        for round in 0..10 {
            q.offer(item(round));
            assert_eq!(q.offer(item(round)), Offered::DroppedOldest);
            assert_eq!(q.offer(item(round)), Offered::DroppedOldest);
            assert!(q.try_pop().is_some(), "drained to empty");
        }
        assert_eq!(q.close_cause(), None, "never 3 losses without catching up");
        assert_eq!(q.dropped_total(), 20);
    }

    #[test]
    fn the_first_close_cause_wins() {
        let q = ClientQueue::new(1, 1);
        assert!(q.close(CloseCause::Shutdown));
        assert!(!q.close(CloseCause::TooSlow));
        assert_eq!(q.close_cause(), Some(CloseCause::Shutdown));
    }

    #[tokio::test]
    async fn pop_waits_for_an_item_or_the_close() {
        let q = Arc::new(ClientQueue::new(4, 4));
        let waiter = tokio::spawn({
            let q = Arc::clone(&q);
            async move { (q.pop().await, q.pop().await) }
        });
        tokio::task::yield_now().await;
        q.offer(item(9));
        q.close(CloseCause::Shutdown);
        let (first, second) = waiter.await.expect("joined");
        // Either the item was taken before the close, or the close came first; never a hang.
        assert!(matches!(first.as_deref(), Some("9") | None));
        assert_eq!(second, None);
    }
}
