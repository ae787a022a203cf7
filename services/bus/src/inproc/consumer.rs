//! Consumers of the in-process bus: durable (acknowledged, redelivered) and live, and the
//! acknowledgement handle of a durable delivery.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::{InProcBus, MemStream, delivery, find};
use crate::{Acker, BusError, Delivery, subject_matches};

#[derive(Debug)]
pub(super) enum Mode {
    /// Shared with every acknowledgement handle (no allocation per delivery).
    Durable(Arc<str>),
    Live {
        filter: String,
        next_seq: u64,
    },
}

/// A consumer on the in-process bus.
#[derive(Debug)]
pub struct InProcConsumer {
    pub(super) bus: InProcBus,
    pub(super) stream: Arc<str>,
    pub(super) mode: Mode,
    /// Woken by its stream when there may be something for it.
    pub(super) notify: Arc<Notify>,
}

/// Acknowledges one in-process delivery.
#[derive(Debug)]
pub struct AckHandle {
    pub(super) bus: InProcBus,
    pub(super) stream: Arc<str>,
    pub(super) durable: Arc<str>,
    pub(super) seq: u64,
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
            match self.poll()? {
                Poll::Ready(d) => return Ok(d),
                Poll::Wait(deadline) => {
                    // A wake-up sent between the look and here left a permit: no loss.
                    let woken = self.notify.notified();
                    match deadline {
                        Some(at) => {
                            let _ = tokio::time::timeout_at(at.into(), woken).await;
                        }
                        None => woken.await,
                    }
                }
            }
        }
    }

    fn poll(&mut self) -> Result<Poll, BusError> {
        let bus = self.bus.clone();
        let mut guard = bus.stream(&self.stream)?;
        let stream = &mut *guard;
        let limits = &bus.shared.limits;
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
                    subjects,
                    ..
                } = stream;
                let (first_seq, last_seq) = (*first_seq, *last_seq);
                let Some(d) = durables.get_mut(&**name) else {
                    return Err(BusError::Consumer {
                        stream: self.stream.to_string(),
                        consumer: name.to_string(),
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
                        stream: Arc::clone(&self.stream),
                        durable: Arc::clone(name),
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
                    // A consumer of the whole stream (every role's) takes every message.
                    let takes_all = d.filter == *subjects;
                    while d.next_seq <= last_seq {
                        let seq = d.next_seq;
                        d.next_seq += 1;
                        if let Some(m) = find(msgs, first_seq, seq)
                            && (takes_all || subject_matches(&d.filter, &m.subject))
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
