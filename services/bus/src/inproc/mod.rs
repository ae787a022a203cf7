//! The in-process bus: the JetStream semantics this system relies on, in memory, for a single
//! process (`spreadagg all` without NATS). Nothing survives the process; that is the one
//! documented difference.
//!
//! Each stream has its own mutex (a publish to one never waits on another's consumers). A
//! consumer waits on its own `Notify`, registered with its stream under its subject filter: a
//! publish wakes only the consumers whose filter takes the subject (and, for a durable, only
//! while it may take more), an acknowledgement only the durable it frees a slot in. `Notify`
//! keeps a permit when nobody waits yet, so no wake-up is lost between a look and the wait.
//! Sequences are contiguous, so a message is found by index; outstanding deliveries are
//! indexed by deadline (O(log n)); message ids are remembered for the duplicate window and at
//! most [`MAX_DEDUPE_IDS`] per stream (the oldest forgotten first, counted).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

mod consumer;
mod pending;

use consumer::Mode;
pub use consumer::{AckHandle, InProcConsumer};
use pending::Pending;

use crate::{
    Acker, BusError, ConsumerSpec, ConsumerState, Delivery, OutMessage, PubAck, StoredMessage,
    StreamSettings, StreamState, subject_matches,
};

/// Largest payload accepted, as a NATS server's default `max_payload` (1 MiB).
const MAX_PAYLOAD: usize = 1 << 20;
/// Message ids remembered per stream for the duplicate window; past this the oldest are
/// forgotten early (`spreadagg_bus_dedupe_evicted_total{stream}`): 2 minutes at 4,000
/// messages a second, about 50 MB of ids at most.
pub const MAX_DEDUPE_IDS: usize = 500_000;

#[derive(Debug)]
struct Stored {
    seq: u64,
    subject: String,
    payload: Bytes,
    at: Instant,
}

#[derive(Debug)]
struct DurableState {
    filter: String,
    next_seq: u64,
    /// Outstanding deliveries and their redelivery deadlines.
    pending: Pending,
    ack_wait: Duration,
    max_ack_pending: usize,
}

#[derive(Debug)]
struct MemStream {
    subjects: String,
    msgs: VecDeque<Stored>,
    /// Sequence of `msgs.front()`, or `last_seq + 1` when empty.
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    /// Message id -> stored sequence, with insertion times in order for expiry.
    dedupe: HashMap<String, u64>,
    dedupe_order: VecDeque<(Instant, String)>,
    durables: HashMap<String, DurableState>,
    /// Every consumer's wake-up, with what it waits for.
    waiters: Vec<Waiter>,
    /// Subject -> the waiters whose filter takes it, so a publish matches each filter once
    /// per distinct subject rather than once per message. Cleared when the waiters change,
    /// and when it reaches [`MATCH_CACHE_SUBJECTS`] (then rebuilt as subjects recur).
    match_cache: HashMap<String, Vec<usize>>,
    /// At most this many message ids are remembered ([`MAX_DEDUPE_IDS`]).
    max_ids: usize,
    name: &'static str,
}

/// Distinct subjects whose matching waiters are remembered per stream.
const MATCH_CACHE_SUBJECTS: usize = 65_536;

/// A consumer's registration: woken for subjects its filter takes.
#[derive(Debug)]
struct Waiter {
    filter: String,
    durable: Option<String>,
    notify: Weak<Notify>,
}

impl MemStream {
    fn new(name: &'static str, subjects: &str) -> Self {
        Self {
            name,
            subjects: subjects.to_owned(),
            msgs: VecDeque::new(),
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
            durables: HashMap::new(),
            waiters: Vec::new(),
            match_cache: HashMap::new(),
            max_ids: MAX_DEDUPE_IDS,
        }
    }

    /// Registers a consumer's wake-up; forgets those of dropped consumers.
    fn register(&mut self, filter: &str, durable: Option<&str>) -> Arc<Notify> {
        self.waiters.retain(|w| w.notify.strong_count() > 0);
        self.match_cache.clear();
        let notify = Arc::new(Notify::new());
        self.waiters.push(Waiter {
            filter: filter.to_owned(),
            durable: durable.map(str::to_owned),
            notify: Arc::downgrade(&notify),
        });
        notify
    }

    /// Wakes the consumers a new message on `subject` is for: live ones whose filter takes
    /// it, durable ones whose filter takes it and that may take more.
    fn wake_for(&mut self, subject: &str) {
        if !self.match_cache.contains_key(subject) {
            if self.match_cache.len() >= MATCH_CACHE_SUBJECTS {
                self.match_cache.clear();
            }
            let matching = (0..self.waiters.len())
                .filter(|&i| subject_matches(&self.waiters[i].filter, subject))
                .collect();
            self.match_cache.insert(subject.to_owned(), matching);
        }
        let Some(matching) = self.match_cache.get(subject) else {
            return;
        };
        for w in matching.iter().filter_map(|&i| self.waiters.get(i)) {
            let has_room = w.durable.as_ref().is_none_or(|name| {
                self.durables
                    .get(name)
                    .is_some_and(|d| d.pending.len() < d.max_ack_pending)
            });
            if has_room && let Some(n) = w.notify.upgrade() {
                n.notify_one();
            }
        }
    }

    /// Wakes the consumers of one durable (a slot freed, the consumer deleted, ...).
    fn wake_durable(&self, durable: &str) {
        for w in &self.waiters {
            if w.durable.as_deref() == Some(durable)
                && let Some(n) = w.notify.upgrade()
            {
                n.notify_one();
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(m) = self.msgs.pop_front() {
            self.bytes -= m.payload.len() as u64 + m.subject.len() as u64;
            self.first_seq = m.seq + 1;
        }
    }

    fn enforce_limits(&mut self, limits: &StreamSettings, now: Instant) {
        while self
            .msgs
            .front()
            .is_some_and(|m| now.duration_since(m.at) > limits.max_age)
        {
            self.pop_oldest();
        }
        let max_msgs = u64::try_from(limits.max_messages).unwrap_or(0);
        let max_bytes = u64::try_from(limits.max_bytes).unwrap_or(0);
        while (max_msgs > 0 && self.msgs.len() as u64 > max_msgs)
            || (max_bytes > 0 && self.bytes > max_bytes)
        {
            self.pop_oldest();
        }
        while self
            .dedupe_order
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > limits.duplicate_window)
        {
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
    }

    fn get(&self, seq: u64) -> Option<&Stored> {
        find(&self.msgs, self.first_seq, seq)
    }
}

/// A stream and, outside its lock, the subjects it takes (to route a publish).
#[derive(Debug)]
struct StreamCell {
    subjects: &'static str,
    state: Mutex<MemStream>,
}

impl StreamCell {
    fn lock(&self) -> MutexGuard<'_, MemStream> {
        // Every critical section leaves the stream consistent before anything can panic, so a
        // poisoned lock is taken as it is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Shared {
    limits: StreamSettings,
    /// Fixed at construction (the contract's four streams), so finding one takes no lock.
    streams: HashMap<&'static str, StreamCell>,
    services: crate::service::Registry,
}

/// The in-process bus; clones share one store.
#[derive(Debug, Clone)]
pub struct InProcBus {
    shared: Arc<Shared>,
}

impl InProcBus {
    /// A bus holding the four streams of the contract.
    pub fn new(limits: &StreamSettings) -> Self {
        let streams = spreadagg_model::subjects::STREAMS
            .into_iter()
            .map(|(name, subjects)| {
                let state = Mutex::new(MemStream::new(name, subjects));
                (name, StreamCell { subjects, state })
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                limits: limits.clone(),
                streams,
                services: crate::service::Registry::default(),
            }),
        }
    }

    pub(crate) fn services(&self) -> &crate::service::Registry {
        &self.shared.services
    }

    /// Locks one stream (and no other).
    fn stream(&self, name: &str) -> Result<MutexGuard<'_, MemStream>, BusError> {
        self.shared
            .streams
            .get(name)
            .map(StreamCell::lock)
            .ok_or_else(|| stream_missing(name))
    }

    pub(crate) fn publish(&self, msg: &OutMessage) -> Result<PubAck, BusError> {
        if msg.payload.len() > MAX_PAYLOAD {
            return Err(BusError::Publish {
                subject: msg.subject.clone(),
                reason: format!(
                    "payload of {} bytes exceeds the maximum of {MAX_PAYLOAD}",
                    msg.payload.len()
                ),
            });
        }
        let now = Instant::now();
        let mut stream = self
            .shared
            .streams
            .values()
            .find(|cell| subject_matches(cell.subjects, &msg.subject))
            .ok_or_else(|| BusError::NoStream(msg.subject.clone()))?
            .lock();
        stream.enforce_limits(&self.shared.limits, now);
        if !msg.msg_id.is_empty()
            && let Some(&seq) = stream.dedupe.get(&msg.msg_id)
        {
            return Ok(PubAck {
                stream_seq: seq,
                duplicate: true,
            });
        }
        stream.last_seq += 1;
        let seq = stream.last_seq;
        if stream.msgs.is_empty() {
            stream.first_seq = seq;
        }
        stream.bytes += msg.payload.len() as u64 + msg.subject.len() as u64;
        stream.msgs.push_back(Stored {
            seq,
            subject: msg.subject.clone(),
            payload: msg.payload.clone(),
            at: now,
        });
        if !msg.msg_id.is_empty() {
            stream.dedupe.insert(msg.msg_id.clone(), seq);
            stream.dedupe_order.push_back((now, msg.msg_id.clone()));
            let mut evicted = 0u64;
            while stream.dedupe_order.len() > stream.max_ids {
                if let Some((_, id)) = stream.dedupe_order.pop_front() {
                    stream.dedupe.remove(&id);
                    evicted += 1;
                }
            }
            if evicted > 0 {
                metrics::counter!("spreadagg_bus_dedupe_evicted_total", "stream" => stream.name)
                    .increment(evicted);
            }
        }
        stream.enforce_limits(&self.shared.limits, now);
        stream.wake_for(&msg.subject);
        Ok(PubAck {
            stream_seq: seq,
            duplicate: false,
        })
    }

    pub(crate) fn durable(&self, spec: &ConsumerSpec) -> Result<InProcConsumer, BusError> {
        let mut stream = self.stream(&spec.stream)?;
        let first = stream.first_seq;
        let durable = stream
            .durables
            .entry(spec.durable.clone())
            .or_insert_with(|| DurableState {
                filter: spec.filter.clone(),
                next_seq: spec.start_seq.unwrap_or(first).max(first),
                pending: Pending::default(),
                ack_wait: spec.ack_wait,
                max_ack_pending: spec.max_ack_pending,
            });
        // Create-or-update, as on JetStream: limits follow the latest definition.
        durable.filter.clone_from(&spec.filter);
        durable.ack_wait = spec.ack_wait;
        durable.max_ack_pending = spec.max_ack_pending.max(1);
        let notify = stream.register(&spec.filter, Some(&spec.durable));
        Ok(InProcConsumer {
            bus: self.clone(),
            stream: spec.stream.as_str().into(),
            mode: Mode::Durable(spec.durable.as_str().into()),
            notify,
        })
    }

    pub(crate) fn live(&self, stream_name: &str, filter: &str) -> Result<InProcConsumer, BusError> {
        self.follow(stream_name, filter, |s| s.last_seq + 1)
    }

    pub(crate) fn history(
        &self,
        stream_name: &str,
        filter: &str,
        since: Duration,
    ) -> Result<InProcConsumer, BusError> {
        let horizon = Instant::now().checked_sub(since);
        self.follow(stream_name, filter, |s| {
            s.msgs
                .iter()
                .find(|m| horizon.is_none_or(|h| m.at >= h))
                .map_or(s.last_seq + 1, |m| m.seq)
        })
    }

    /// An unacknowledged consumer of `filter` from the sequence `start` picks.
    fn follow(
        &self,
        stream_name: &str,
        filter: &str,
        start: impl FnOnce(&MemStream) -> u64,
    ) -> Result<InProcConsumer, BusError> {
        let mut stream = self.stream(stream_name)?;
        let next_seq = start(&stream);
        let notify = stream.register(filter, None);
        Ok(InProcConsumer {
            bus: self.clone(),
            stream: stream_name.into(),
            mode: Mode::Live {
                filter: filter.to_owned(),
                next_seq,
            },
            notify,
        })
    }

    pub(crate) fn stream_state(&self, name: &str) -> Result<StreamState, BusError> {
        let mut s = self.stream(name)?;
        s.enforce_limits(&self.shared.limits, Instant::now());
        Ok(StreamState {
            messages: s.msgs.len() as u64,
            bytes: s.bytes,
            first_seq: s.first_seq,
            last_seq: s.last_seq,
        })
    }

    pub(crate) fn consumer_state(
        &self,
        name: &str,
        durable: &str,
    ) -> Result<ConsumerState, BusError> {
        let s = self.stream(name)?;
        let d = s
            .durables
            .get(durable)
            .ok_or_else(|| BusError::NoConsumer {
                stream: name.to_owned(),
                consumer: durable.to_owned(),
            })?;
        let ack_floor = d
            .pending
            .lowest()
            .map_or(d.next_seq.saturating_sub(1), |first| first - 1);
        let start = d.next_seq.max(s.first_seq);
        // A consumer of the whole stream (every role's) is counted by arithmetic; only a
        // narrower filter needs a scan, which holds the lock in proportion to the stream.
        let pending = if d.filter == s.subjects {
            (s.last_seq + 1).saturating_sub(start)
        } else {
            s.msgs
                .iter()
                .filter(|m| m.seq >= start && subject_matches(&d.filter, &m.subject))
                .count() as u64
        };
        Ok(ConsumerState {
            ack_floor,
            ack_pending: d.pending.len() as u64,
            pending,
            delivered_seq: d.next_seq.saturating_sub(1).min(s.last_seq),
        })
    }

    pub(crate) fn get(&self, name: &str, seq: u64) -> Result<Option<StoredMessage>, BusError> {
        let s = self.stream(name)?;
        Ok(s.get(seq).map(|m| StoredMessage {
            subject: m.subject.clone(),
            payload: m.payload.clone(),
            stream_seq: m.seq,
        }))
    }

    fn ack(&self, stream: &str, durable: &str, seq: u64) {
        let Ok(mut s) = self.stream(stream) else {
            return;
        };
        let freed = s.durables.get_mut(durable).is_some_and(|d| {
            let was_full = d.pending.len() >= d.max_ack_pending;
            d.pending.remove(seq) && was_full
        });
        if freed {
            s.wake_durable(durable);
        }
    }

    /// Restarts the redelivery timer of an outstanding delivery (no-op once acknowledged).
    fn in_progress(&self, stream: &str, durable: &str, seq: u64) {
        let Ok(mut s) = self.stream(stream) else {
            return;
        };
        if let Some(d) = s.durables.get_mut(durable)
            && d.pending.contains(seq)
        {
            d.pending.insert(seq, Instant::now() + d.ack_wait);
        }
    }
}

fn stream_missing(name: &str) -> BusError {
    BusError::Stream {
        stream: name.to_owned(),
        reason: "no such stream".into(),
    }
}

/// The message with sequence `seq` in a contiguous run starting at `first_seq`.
fn find(msgs: &VecDeque<Stored>, first_seq: u64, seq: u64) -> Option<&Stored> {
    let idx = usize::try_from(seq.checked_sub(first_seq)?).ok()?;
    msgs.get(idx)
}

fn delivery(m: &Stored, redelivered: bool, acker: Acker) -> Delivery {
    Delivery {
        subject: m.subject.clone(),
        payload: m.payload.clone(),
        stream_seq: m.seq,
        redelivered,
        acker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> OutMessage {
        OutMessage {
            subject: format!("md.trade.okx.S{i}"),
            msg_id: format!("id-{i}"),
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn message_ids_are_bounded_by_count_and_the_oldest_forgotten_first() {
        let bus = InProcBus::new(&StreamSettings::default());
        bus.stream("MD_TRADES").expect("stream").max_ids = 3;
        for i in 0..5 {
            assert!(!bus.publish(&msg(i)).expect("stored").duplicate);
        }
        // Ids 2, 3, 4 are remembered; 0 and 1 were forgotten early.
        assert!(bus.publish(&msg(4)).expect("answered").duplicate);
        assert!(bus.publish(&msg(2)).expect("answered").duplicate);
        assert!(!bus.publish(&msg(0)).expect("stored again").duplicate);
        let s = bus.stream("MD_TRADES").expect("stream");
        assert_eq!((s.dedupe.len(), s.dedupe_order.len()), (3, 3));
    }

    #[tokio::test]
    async fn a_publish_wakes_only_consumers_whose_filter_takes_it() {
        let bus = InProcBus::new(&StreamSettings::default());
        let mut okx = bus.live("MD_TRADES", "md.trade.okx.>").expect("live");
        let other = bus.live("MD_TRADES", "md.trade.binance.>").expect("live");
        bus.publish(&msg(1)).expect("stored");
        let got = tokio::time::timeout(Duration::from_secs(1), okx.next())
            .await
            .expect("woken")
            .expect("delivery");
        assert_eq!(got.subject, "md.trade.okx.S1");
        // The other consumer holds no wake-up permit: nothing was sent its way.
        let woken = tokio::time::timeout(Duration::from_millis(50), other.notify.notified()).await;
        assert!(woken.is_err(), "a consumer of other subjects was woken");
        let s = bus.stream("MD_TRADES").expect("stream");
        assert_eq!(s.match_cache.get("md.trade.okx.S1").map(Vec::len), Some(1));
    }
}
