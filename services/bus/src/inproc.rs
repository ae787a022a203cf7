//! The in-process bus: the JetStream semantics this system relies on, in memory, for a single
//! process (`spreadagg all` without NATS). Nothing survives the process; that is the one
//! documented difference.
//!
//! One mutex guards all streams; a `watch` channel per stream wakes waiting consumers without
//! lost wake-ups. Sequences are contiguous, so a message is found by index.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    Acker, BusError, ConsumerSpec, ConsumerState, Delivery, OutMessage, PubAck, StoredMessage,
    StreamSettings, StreamState, subject_matches,
};

/// Largest payload accepted, as a NATS server's default `max_payload` (1 MiB).
const MAX_PAYLOAD: usize = 1 << 20;

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

/// A durable consumer's outstanding deliveries, indexed both ways so that every operation a
/// poll or an acknowledgement makes is O(log n) in the number outstanding (up to
/// `max_ack_pending`, 50,000 for the archiver): by stream sequence (acknowledgements, the ack
/// floor, messages the limits removed) and by redelivery deadline (the next one due).
#[derive(Debug, Default)]
struct Pending {
    by_seq: BTreeMap<u64, Instant>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Pending {
    fn len(&self) -> usize {
        self.by_seq.len()
    }

    fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    /// Delivers (or redelivers) `seq`, due again at `deadline`.
    fn insert(&mut self, seq: u64, deadline: Instant) {
        if let Some(old) = self.by_seq.insert(seq, deadline) {
            self.by_deadline.remove(&(old, seq));
        }
        self.by_deadline.insert((deadline, seq));
    }

    fn remove(&mut self, seq: u64) {
        if let Some(deadline) = self.by_seq.remove(&seq) {
            self.by_deadline.remove(&(deadline, seq));
        }
    }

    /// Forgets every sequence below `first` (removed from the stream by its limits).
    fn drop_below(&mut self, first: u64) {
        while let Some((&seq, _)) = self.by_seq.first_key_value() {
            if seq >= first {
                break;
            }
            self.remove(seq);
        }
    }

    /// The outstanding delivery whose deadline passed first, if any.
    fn due(&self, now: Instant) -> Option<u64> {
        self.by_deadline
            .first()
            .filter(|(deadline, _)| *deadline <= now)
            .map(|(_, seq)| *seq)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    fn lowest(&self) -> Option<u64> {
        self.by_seq.first_key_value().map(|(seq, _)| *seq)
    }
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
    changed: watch::Sender<u64>,
}

impl MemStream {
    fn new(subjects: &str) -> Self {
        Self {
            subjects: subjects.to_owned(),
            msgs: VecDeque::new(),
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
            durables: HashMap::new(),
            changed: watch::channel(0).0,
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

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

#[derive(Debug)]
struct State {
    streams: HashMap<String, MemStream>,
}

#[derive(Debug)]
struct Shared {
    limits: StreamSettings,
    state: Mutex<State>,
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
            .map(|(name, subjects)| (name.to_owned(), MemStream::new(subjects)))
            .collect();
        Self {
            shared: Arc::new(Shared {
                limits: limits.clone(),
                state: Mutex::new(State { streams }),
                services: crate::service::Registry::default(),
            }),
        }
    }

    pub(crate) fn services(&self) -> &crate::service::Registry {
        &self.shared.services
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut state = self.lock();
        let stream = state
            .streams
            .values_mut()
            .find(|s| subject_matches(&s.subjects, &msg.subject))
            .ok_or_else(|| BusError::NoStream(msg.subject.clone()))?;
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
        }
        stream.enforce_limits(&self.shared.limits, now);
        stream.notify();
        Ok(PubAck {
            stream_seq: seq,
            duplicate: false,
        })
    }

    pub(crate) fn durable(&self, spec: &ConsumerSpec) -> Result<InProcConsumer, BusError> {
        let mut state = self.lock();
        let stream = state
            .streams
            .get_mut(&spec.stream)
            .ok_or_else(|| stream_missing(&spec.stream))?;
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
        Ok(InProcConsumer {
            bus: self.clone(),
            stream: spec.stream.clone(),
            mode: Mode::Durable(spec.durable.clone()),
            changed: stream.changed.subscribe(),
        })
    }

    pub(crate) fn live(&self, stream_name: &str, filter: &str) -> Result<InProcConsumer, BusError> {
        let state = self.lock();
        let stream = state
            .streams
            .get(stream_name)
            .ok_or_else(|| stream_missing(stream_name))?;
        Ok(InProcConsumer {
            bus: self.clone(),
            stream: stream_name.to_owned(),
            mode: Mode::Live {
                filter: filter.to_owned(),
                next_seq: stream.last_seq + 1,
            },
            changed: stream.changed.subscribe(),
        })
    }

    pub(crate) fn history(
        &self,
        stream_name: &str,
        filter: &str,
        since: Duration,
    ) -> Result<InProcConsumer, BusError> {
        let state = self.lock();
        let stream = state
            .streams
            .get(stream_name)
            .ok_or_else(|| stream_missing(stream_name))?;
        let horizon = Instant::now().checked_sub(since);
        let start = stream
            .msgs
            .iter()
            .find(|m| horizon.is_none_or(|h| m.at >= h))
            .map_or(stream.last_seq + 1, |m| m.seq);
        Ok(InProcConsumer {
            bus: self.clone(),
            stream: stream_name.to_owned(),
            mode: Mode::Live {
                filter: filter.to_owned(),
                next_seq: start,
            },
            changed: stream.changed.subscribe(),
        })
    }

    pub(crate) fn stream_state(&self, name: &str) -> Result<StreamState, BusError> {
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(name)
            .ok_or_else(|| stream_missing(name))?;
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
        let state = self.lock();
        let s = state
            .streams
            .get(name)
            .ok_or_else(|| stream_missing(name))?;
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
        let state = self.lock();
        let s = state
            .streams
            .get(name)
            .ok_or_else(|| stream_missing(name))?;
        Ok(s.get(seq).map(|m| StoredMessage {
            subject: m.subject.clone(),
            payload: m.payload.clone(),
            stream_seq: m.seq,
        }))
    }

    fn ack(&self, stream: &str, durable: &str, seq: u64) {
        let mut state = self.lock();
        if let Some(s) = state.streams.get_mut(stream) {
            if let Some(d) = s.durables.get_mut(durable) {
                d.pending.remove(seq);
            }
            s.notify();
        }
    }

    /// Restarts the redelivery timer of an outstanding delivery (no-op once acknowledged).
    fn in_progress(&self, stream: &str, durable: &str, seq: u64) {
        let mut state = self.lock();
        if let Some(d) = state
            .streams
            .get_mut(stream)
            .and_then(|s| s.durables.get_mut(durable))
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

#[derive(Debug)]
enum Mode {
    Durable(String),
    Live { filter: String, next_seq: u64 },
}

/// A consumer on the in-process bus.
#[derive(Debug)]
pub struct InProcConsumer {
    bus: InProcBus,
    stream: String,
    mode: Mode,
    changed: watch::Receiver<u64>,
}

/// Acknowledges one in-process delivery.
#[derive(Debug)]
pub struct AckHandle {
    bus: InProcBus,
    stream: String,
    durable: String,
    seq: u64,
}

impl AckHandle {
    pub(crate) fn ack(self) {
        self.bus.ack(&self.stream, &self.durable, self.seq);
    }

    pub(crate) fn in_progress(&self) {
        self.bus.in_progress(&self.stream, &self.durable, self.seq);
    }
}

/// What one look at the store found. Short-lived (one per poll), so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Poll {
    Ready(Delivery),
    /// Nothing now; wake at the deadline if nothing changes first.
    Wait(Option<Instant>),
}

impl InProcConsumer {
    pub(crate) async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            // Mark the current version seen before looking, so a change after the look wakes us.
            self.changed.borrow_and_update();
            match self.poll()? {
                Poll::Ready(d) => return Ok(d),
                Poll::Wait(deadline) => {
                    let changed = self.changed.changed();
                    match deadline {
                        Some(at) => {
                            let _ = tokio::time::timeout_at(at.into(), changed).await;
                        }
                        None => changed.await.map_err(|_| BusError::Closed)?,
                    }
                }
            }
        }
    }

    fn poll(&mut self) -> Result<Poll, BusError> {
        let bus = self.bus.clone();
        let mut state = bus.lock();
        let limits = &bus.shared.limits;
        let stream = state
            .streams
            .get_mut(&self.stream)
            .ok_or_else(|| stream_missing(&self.stream))?;
        let now = Instant::now();
        stream.enforce_limits(limits, now);
        match &mut self.mode {
            Mode::Live { filter, next_seq } => {
                *next_seq = (*next_seq).max(stream.first_seq);
                while *next_seq <= stream.last_seq {
                    let seq = *next_seq;
                    *next_seq += 1;
                    if let Some(m) = stream.get(seq)
                        && subject_matches(filter, &m.subject)
                    {
                        return Ok(Poll::Ready(delivery(m, false, Acker::None)));
                    }
                }
                Ok(Poll::Wait(None))
            }
            Mode::Durable(name) => {
                let MemStream {
                    msgs,
                    durables,
                    first_seq,
                    last_seq,
                    ..
                } = stream;
                let (first_seq, last_seq) = (*first_seq, *last_seq);
                let Some(d) = durables.get_mut(name.as_str()) else {
                    return Err(BusError::Consumer {
                        stream: self.stream.clone(),
                        consumer: name.clone(),
                        reason: "consumer deleted".into(),
                    });
                };
                // Messages removed by the limits cannot be delivered again.
                d.pending.drop_below(first_seq);
                let due = d.pending.due(now);
                let ack_wait = d.ack_wait;
                let handle = |seq| {
                    Acker::InProc(AckHandle {
                        bus: bus.clone(),
                        stream: self.stream.clone(),
                        durable: name.clone(),
                        seq,
                    })
                };
                if let Some(seq) = due {
                    d.pending.insert(seq, now + ack_wait);
                    if let Some(m) = find(msgs, first_seq, seq) {
                        return Ok(Poll::Ready(delivery(m, true, handle(seq))));
                    }
                }
                if d.pending.len() < d.max_ack_pending {
                    d.next_seq = d.next_seq.max(first_seq);
                    while d.next_seq <= last_seq {
                        let seq = d.next_seq;
                        d.next_seq += 1;
                        if let Some(m) = find(msgs, first_seq, seq)
                            && subject_matches(&d.filter, &m.subject)
                        {
                            d.pending.insert(seq, now + ack_wait);
                            return Ok(Poll::Ready(delivery(m, false, handle(seq))));
                        }
                    }
                }
                Ok(Poll::Wait(d.pending.next_deadline()))
            }
        }
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

    #[test]
    fn pending_deliveries_come_due_by_deadline_and_are_indexed_both_ways() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Pending::default();
        p.insert(5, at(30));
        p.insert(3, at(20));
        p.insert(9, at(10));
        assert_eq!((p.len(), p.lowest()), (3, Some(3)));
        assert_eq!(p.next_deadline(), Some(at(10)));
        assert_eq!(p.due(at(9)), None, "nothing is due before its deadline");
        assert_eq!(
            p.due(at(25)),
            Some(9),
            "the earliest deadline first, not the lowest seq"
        );
        // A redelivery moves the deadline; the old one is forgotten.
        p.insert(9, at(40));
        assert_eq!(p.len(), 3);
        assert_eq!(p.due(at(25)), Some(3));
        p.remove(3);
        assert_eq!(p.due(at(35)), Some(5));
        p.remove(42);
        assert_eq!(p.len(), 2, "removing an unknown sequence changes nothing");
        p.drop_below(9);
        assert_eq!(
            (p.len(), p.lowest(), p.next_deadline()),
            (1, Some(9), Some(at(40)))
        );
        p.drop_below(100);
        assert_eq!(
            (p.len(), p.lowest(), p.next_deadline(), p.due(at(99))),
            (0, None, None, None)
        );
    }
}
