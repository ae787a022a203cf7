//! Each client's outgoing queue: replies first (never dropped, bounded), then events, bounded,
//! the *oldest* dropped when full, and the client closed when it stays behind.
//!
//! Why not a `tokio::sync::mpsc` per client: a bounded mpsc can only refuse the *newest*
//! message when full (or make the sender wait, which would let one client stall everyone).
//! For market data the newest point is the valuable one, so the queue must drop its oldest;
//! a `Mutex<VecDeque>` with a `Notify` does that in O(1).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) use super::client::{ClientId, CloseCause};
use super::event::Event;
use super::filter::Filter;

/// Replies (`subscribed`, `snapshot`, `pong`, `error`) waiting to be written, per client, at
/// most this many...
pub(crate) const CONTROL_CAPACITY: usize = 64;
/// ... and at most this many bytes (one larger reply is let through when none is waiting).
/// They are never dropped: when full, the session stops reading that client's requests until
/// there is room, which slows only that client.
pub(crate) const CONTROL_BYTES: usize = 1 << 20;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below is a few field updates that leave the state consistent,
    // so a lock poisoned by a panic elsewhere is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What happened to an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Queued,
    /// Queued, after dropping the oldest queued event.
    DroppedOldest,
    /// The client is now closed as too slow (this drop reached the limit, or the oldest
    /// queued event waited past the lag limit); `dropped` when an event was dropped too.
    Disconnected {
        dropped: bool,
    },
    /// Already offered (the client has several subscriptions that select it).
    Repeat,
    /// The client is already closing; nothing was queued.
    Closed,
}

/// The next thing to write.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A reply, already encoded by the surface that made it.
    Reply(Utf8Bytes),
    Event(Arc<Event>),
}

#[derive(Debug)]
struct Queued {
    event: Arc<Event>,
    /// The queue's offer count when it was queued (see `recheck_below`).
    n: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct QueueState {
    control: VecDeque<Utf8Bytes>,
    control_bytes: usize,
    data: VecDeque<Queued>,
    offered: u64,
    /// Per channel, the last event seq offered, so an event matched by several of the
    /// client's subscriptions is queued once. Per channel because each channel is fed by one
    /// task, in order, while the four feeds interleave.
    last_seq: [Option<u64>; 4],
    /// Events queued before the last unsubscribe (`n` below this) are checked against
    /// `filters` before they are written: an unsubscribe costs the client's own queue nothing
    /// up front, and the feed never waits for a purge.
    recheck_below: u64,
    filters: Arc<[Filter]>,
    dropped_total: u64,
    dropped_since_empty: u64,
    close: Option<CloseCause>,
}

/// Bounds of one client's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Events queued before the oldest are dropped.
    pub(crate) capacity: usize,
    /// Drops since the queue was last empty that disconnect the client.
    pub(crate) drop_limit: u64,
    /// The oldest queued event may wait at most this long; past it the client is
    /// disconnected.
    pub(crate) max_lag: Duration,
}

/// One client's outgoing queue.
#[derive(Debug)]
pub(crate) struct ClientQueue {
    state: Mutex<QueueState>,
    /// Wakes the writer: something to send, or closed.
    ready: Notify,
    /// Wakes the reader: room for a reply again.
    control_space: Notify,
    /// Cancelled once the queue is closed.
    closed: CancellationToken,
    limits: QueueLimits,
}

impl ClientQueue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            control_space: Notify::new(),
            closed: CancellationToken::new(),
            limits: QueueLimits {
                capacity: limits.capacity.max(1),
                drop_limit: limits.drop_limit.max(1),
                max_lag: limits.max_lag,
            },
        }
    }

    /// Offers an event; never waits. When full, drops the oldest event; closes the queue as
    /// [`CloseCause::TooSlow`] when the drops since it was last empty reach the limit, or its
    /// oldest event has waited longer than the lag limit.
    pub(crate) fn offer(&self, event: &Arc<Event>, now: Instant) -> Offered {
        let mut s = lock(&self.state);
        if s.close.is_some() {
            return Offered::Closed;
        }
        let last = &mut s.last_seq[event.channel as usize];
        if *last == Some(event.seq) {
            return Offered::Repeat;
        }
        *last = Some(event.seq);
        let lagging = s
            .data
            .front()
            .is_some_and(|q| now.saturating_duration_since(q.at) > self.limits.max_lag);
        let mut outcome = Offered::Queued;
        if s.data.len() >= self.limits.capacity {
            s.data.pop_front();
            s.dropped_total += 1;
            s.dropped_since_empty += 1;
            metrics::counter!("spreadagg_gateway_dropped_total").increment(1);
            outcome = Offered::DroppedOldest;
        }
        if lagging || s.dropped_since_empty >= self.limits.drop_limit {
            s.close = Some(CloseCause::TooSlow);
            drop(s);
            self.closed.cancel();
            self.ready.notify_one();
            return Offered::Disconnected {
                dropped: outcome == Offered::DroppedOldest,
            };
        }
        let n = s.offered;
        s.offered += 1;
        s.data.push_back(Queued {
            event: Arc::clone(event),
            n,
            at: now,
        });
        drop(s);
        self.ready.notify_one();
        outcome
    }

    /// Queues a reply unless the queue is closed or the reply space is full (the caller
    /// waits for [`Self::wait_control_space`] first, so full does not happen in practice).
    pub(crate) fn push_control(&self, text: Utf8Bytes) -> bool {
        let mut s = lock(&self.state);
        if s.close.is_some() || !control_fits(&s, 1) {
            return false;
        }
        s.control_bytes += text.len();
        s.control.push_back(text);
        drop(s);
        self.ready.notify_one();
        true
    }

    /// Queues two replies at once, so that no event is written between them (a confirmation
    /// and its snapshot). Same bounds as [`Self::push_control`], for both.
    pub(crate) fn push_controls(&self, texts: [Utf8Bytes; 2]) -> bool {
        let mut s = lock(&self.state);
        if s.close.is_some() || !control_fits(&s, 2) {
            return false;
        }
        for text in texts {
            s.control_bytes += text.len();
            s.control.push_back(text);
        }
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
                if control_fits(&s, 2) {
                    return true;
                }
            }
            tokio::select! {
                () = self.control_space.notified() => {}
                () = self.closed.cancelled() => return false,
            }
        }
    }

    /// Events queued from now on are not checked against `filters`; those queued before are,
    /// when they come to be written (call after the index no longer selects the removed
    /// subscription for this client).
    pub(crate) fn unsubscribed(&self, filters: Arc<[Filter]>) {
        let mut s = lock(&self.state);
        s.recheck_below = s.offered;
        s.filters = filters;
    }

    /// The next thing to write, replies first; `None` when empty or closed.
    pub(crate) fn try_pop(&self) -> Option<Outgoing> {
        loop {
            let mut s = lock(&self.state);
            if s.close.is_some() {
                return None;
            }
            if let Some(reply) = s.control.pop_front() {
                s.control_bytes -= reply.len();
                drop(s);
                self.control_space.notify_one();
                return Some(Outgoing::Reply(reply));
            }
            let q = s.data.pop_front()?;
            if s.data.is_empty() {
                // Fully drained: the client has caught up, so its slow-drop count starts over.
                s.dropped_since_empty = 0;
            }
            // Events queued before an unsubscribe are matched against what remains, one per
            // lock hold and outside it, so the feed's offers never wait for the check.
            let recheck = (q.n < s.recheck_below).then(|| Arc::clone(&s.filters));
            drop(s);
            match recheck {
                Some(filters) if !filters.iter().any(|f| f.matches(&q.event)) => {}
                _ => return Some(Outgoing::Event(q.event)),
            }
        }
    }

    /// Waits for the next thing to write; `None` once the queue is closed.
    /// Single consumer (the session's writer).
    pub(crate) async fn pop(&self) -> Option<Outgoing> {
        loop {
            if let Some(next) = self.try_pop() {
                return Some(next);
            }
            if self.closed.is_cancelled() {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the look above
            // and this await is not missed.
            self.ready.notified().await;
        }
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

    /// Queued events.
    pub(crate) fn depth(&self) -> usize {
        lock(&self.state).data.len()
    }

    /// Events this client has lost since it connected.
    pub(crate) fn dropped_total(&self) -> u64 {
        lock(&self.state).dropped_total
    }

    /// Everything queued now, replies as text and events as their JSON (tests).
    #[cfg(test)]
    pub(crate) fn drain_text(&self) -> Vec<String> {
        std::iter::from_fn(|| self.try_pop())
            .map(|o| match o {
                Outgoing::Reply(t) => t.to_string(),
                Outgoing::Event(e) => e.json().to_string(),
            })
            .collect()
    }
}

/// Room for `n` more replies: the queue is empty (one large snapshot may go through), or
/// they fit under both bounds (a reply's bytes are counted once queued).
fn control_fits(s: &QueueState, n: usize) -> bool {
    s.control.is_empty()
        || (s.control.len() + n <= CONTROL_CAPACITY && s.control_bytes < CONTROL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event::{Channel, Payload};
    use crate::hub::filter::{SymbolPattern, VenuePattern};
    use spreadagg_model::wire::Tick;

    fn limits(capacity: usize, drop_limit: u64) -> QueueLimits {
        QueueLimits {
            capacity,
            drop_limit,
            max_lag: Duration::from_secs(3600),
        }
    }

    fn event(seq: u64, symbol: &str) -> Arc<Event> {
        let tick = Tick {
            exchange: "okx".into(),
            symbol: symbol.into(),
            seq,
            ..Tick::default()
        };
        Arc::new(Event::new(seq, Payload::Tick(tick)).expect("routable"))
    }

    fn seqs(q: &ClientQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.try_pop())
            .filter_map(|o| match o {
                Outgoing::Event(e) => Some(e.seq),
                Outgoing::Reply(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts() {
        let q = ClientQueue::new(limits(3, 100));
        let now = Instant::now();
        let outcomes: Vec<Offered> = (0..5).map(|n| q.offer(&event(n, "A-B"), now)).collect();
        use Offered::{DroppedOldest, Queued};
        assert_eq!(
            outcomes,
            [Queued, Queued, Queued, DroppedOldest, DroppedOldest]
        );
        assert_eq!(q.depth(), 3);
        assert_eq!(q.dropped_total(), 2);
        assert_eq!(seqs(&q), [2, 3, 4], "the newest survive, in order");
    }

    #[test]
    fn an_event_offered_twice_is_queued_once() {
        let q = ClientQueue::new(limits(3, 100));
        let e = event(7, "A-B");
        assert_eq!(q.offer(&e, Instant::now()), Offered::Queued);
        assert_eq!(q.offer(&e, Instant::now()), Offered::Repeat);
        assert_eq!(seqs(&q), [7]);
    }

    #[test]
    fn an_event_offered_twice_is_queued_once_while_another_channel_interleaves() {
        let q = ClientQueue::new(limits(8, 100));
        let now = Instant::now();
        let spread = Arc::new(
            Event::new(
                10,
                Payload::Spread(spreadagg_model::wire::Spread {
                    symbol: "A-B".into(),
                    exchange_a: "binance".into(),
                    exchange_b: "okx".into(),
                    ..Default::default()
                }),
            )
            .expect("routable"),
        );
        let tick = event(11, "A-B");
        assert_eq!(
            q.offer(&spread, now),
            Offered::Queued,
            "through the exact bucket"
        );
        assert_eq!(
            q.offer(&tick, now),
            Offered::Queued,
            "the ticks feed, meanwhile"
        );
        assert_eq!(
            q.offer(&spread, now),
            Offered::Repeat,
            "through the `*` bucket"
        );
        assert_eq!(seqs(&q), [10, 11]);
    }

    #[test]
    fn replies_go_first_and_are_bounded_in_count_and_bytes() {
        let q = ClientQueue::new(limits(1, 100));
        q.offer(&event(1, "A-B"), Instant::now());
        assert!(q.push_control(Utf8Bytes::from("reply")));
        let texts = q.drain_text();
        assert_eq!(texts.first().map(String::as_str), Some("reply"));
        assert_eq!(texts.len(), 2);
        for _ in 0..CONTROL_CAPACITY {
            assert!(q.push_control(Utf8Bytes::from("r")));
        }
        assert!(!q.push_control(Utf8Bytes::from("r")), "count bound");
        q.drain_text();
        let big = Utf8Bytes::from("x".repeat(CONTROL_BYTES + 10));
        assert!(
            q.push_control(big.clone()),
            "one large reply fits an empty queue"
        );
        assert!(!q.push_control(Utf8Bytes::from("r")), "byte bound");
    }

    #[test]
    fn the_client_is_disconnected_at_the_drop_limit() {
        let q = ClientQueue::new(limits(2, 3));
        let now = Instant::now();
        q.offer(&event(0, "A-B"), now);
        q.offer(&event(1, "A-B"), now);
        assert_eq!(q.offer(&event(2, "A-B"), now), Offered::DroppedOldest);
        assert_eq!(q.offer(&event(3, "A-B"), now), Offered::DroppedOldest);
        assert_eq!(
            q.offer(&event(4, "A-B"), now),
            Offered::Disconnected { dropped: true }
        );
        assert_eq!(q.close_cause(), Some(CloseCause::TooSlow));
        assert_eq!(q.offer(&event(5, "A-B"), now), Offered::Closed);
        assert!(q.try_pop().is_none(), "a closed queue yields nothing");
        assert_eq!(q.dropped_total(), 3);
    }

    #[test]
    fn the_client_is_disconnected_when_its_oldest_event_is_too_old() {
        let q = ClientQueue::new(QueueLimits {
            capacity: 100,
            drop_limit: 100,
            max_lag: Duration::from_millis(500),
        });
        let t0 = Instant::now();
        assert_eq!(q.offer(&event(0, "A-B"), t0), Offered::Queued);
        let later = t0 + Duration::from_millis(400);
        assert_eq!(q.offer(&event(1, "A-B"), later), Offered::Queued);
        let too_late = t0 + Duration::from_millis(600);
        assert_eq!(
            q.offer(&event(2, "A-B"), too_late),
            Offered::Disconnected { dropped: false }
        );
        assert_eq!(q.close_cause(), Some(CloseCause::TooSlow));
    }

    #[test]
    fn catching_up_resets_the_slow_count() {
        let q = ClientQueue::new(limits(1, 3));
        let now = Instant::now();
        let mut seq = 0;
        for _ in 0..10 {
            for expect in [
                Offered::Queued,
                Offered::DroppedOldest,
                Offered::DroppedOldest,
            ] {
                assert_eq!(q.offer(&event(seq, "A-B"), now), expect);
                seq += 1;
            }
            assert!(q.try_pop().is_some(), "drained to empty");
        }
        assert_eq!(q.close_cause(), None, "never 3 losses without catching up");
        assert_eq!(q.dropped_total(), 20);
    }

    #[test]
    fn events_queued_before_an_unsubscribe_are_checked_against_what_remains() {
        let q = ClientQueue::new(limits(10, 10));
        let now = Instant::now();
        q.offer(&event(1, "BTC-USDT"), now);
        q.offer(&event(2, "ETH-USDT"), now);
        let keep = Filter {
            channel: Channel::Ticks,
            symbol: SymbolPattern::parse("ETH-USDT").expect("valid"),
            venue: VenuePattern::Any,
            chart: false,
        };
        q.unsubscribed(vec![keep].into());
        q.offer(&event(3, "BTC-USDT"), now);
        assert_eq!(
            seqs(&q),
            [2, 3],
            "1 was selected only by the removed filter"
        );
    }

    #[test]
    fn the_first_close_cause_wins() {
        let q = ClientQueue::new(limits(1, 1));
        assert!(q.close(CloseCause::Drain));
        assert!(!q.close(CloseCause::TooSlow));
        assert_eq!(q.close_cause(), Some(CloseCause::Drain));
    }

    #[tokio::test]
    async fn pop_waits_for_an_item_or_the_close() {
        let q = Arc::new(ClientQueue::new(limits(4, 4)));
        let waiter = tokio::spawn({
            let q = Arc::clone(&q);
            async move { (q.pop().await.is_some(), q.pop().await.is_none()) }
        });
        tokio::task::yield_now().await;
        q.offer(&event(9, "A-B"), Instant::now());
        q.close(CloseCause::Drain);
        let (_first, second_is_none) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("pop returns once closed, never hangs")
            .expect("joined");
        // The item may or may not be taken before the close; after it, pop yields nothing.
        assert!(second_is_none);
    }
}
