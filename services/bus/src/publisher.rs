//! The pipelining publisher: up to `max_in_flight` publishes await their acknowledgement at
//! once. Every acknowledgement is awaited in publish order; a failed one is republished with
//! the same message id (the duplicate window makes that safe) until a deadline (or for ever,
//! with [`Publisher::retry_forever`]), and only then handed back to the caller as
//! [`PublishFailed`], message included. The message given to a `publish` that reports an
//! earlier failure is still sent. Nothing is dropped silently.
//!
//! Every method is cancellation-safe: an acknowledgement being awaited is kept (the future is
//! stored, not consumed), and a message stays queued until its acknowledgement arrives, so a
//! caller may stop waiting at any point (an idle select, a shutdown deadline) and lose nothing;
//! what is left can be counted with [`Publisher::abandon`]. A caller with nothing to send
//! should wait on [`Publisher::settle`] meanwhile, so failures are retried without waiting
//! for the window to fill.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use metrics::Counter;

use crate::jetstream::PendingAck;
use crate::{Bus, BusError, OutMessage, PubAck};

/// How long a failed publish is retried before the caller hears of it. Long enough to ride out
/// a NATS restart or leader election.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// A publish that failed after retries; the message comes back to the caller.
#[derive(Debug, thiserror::Error)]
#[error("publish of {} failed after retries: {error}", message.subject)]
pub struct PublishFailed {
    pub message: OutMessage,
    pub error: BusError,
}

enum Pending {
    Done(Option<Result<PubAck, BusError>>),
    JetStream(PendingAck),
}

impl Pending {
    /// Resumable: dropping this future mid-wait keeps the acknowledgement being awaited.
    /// Once it has answered, the slot reads as "send again" (`Done(None)`), so a caller that
    /// stops waiting between a failure and its retry gets the message republished, and a
    /// finished future is never polled again.
    async fn wait(&mut self, subject: &str) -> Result<PubAck, BusError> {
        match self {
            Pending::Done(r) => r.take().unwrap_or(Err(BusError::Closed)),
            Pending::JetStream(ack) => {
                let result = ack.wait(subject).await;
                *self = Pending::Done(None);
                result
            }
        }
    }
}

struct Meters {
    published: Counter,
    duplicates: Counter,
    failed: Counter,
    retries: Counter,
}

/// See the module documentation.
pub struct Publisher {
    bus: Bus,
    max_in_flight: usize,
    /// Oldest first, each with its acknowledgement being awaited.
    /// Each message with its pending acknowledgement and the caller's counter of
    /// acknowledged messages of its kind, if any.
    in_flight: VecDeque<(OutMessage, Pending, Option<Counter>)>,
    retry_for: Option<Duration>,
    meters: Meters,
    /// Messages handed to `publish` since creation.
    sent: u64,
    /// After an [`Publisher::abandon`]: the count settled before the first abandoned
    /// message; nothing past it is settled any more.
    settled_ceiling: Option<u64>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(bus: Bus, max_in_flight: usize) -> Self {
        Self {
            bus,
            max_in_flight: max_in_flight.max(1),
            in_flight: VecDeque::new(),
            retry_for: Some(RETRY_FOR),
            sent: 0,
            settled_ceiling: None,
            meters: Meters {
                published: metrics::counter!("spreadagg_bus_published_total"),
                duplicates: metrics::counter!("spreadagg_bus_publish_duplicates_total"),
                failed: metrics::counter!("spreadagg_bus_publish_failed_total"),
                retries: metrics::counter!("spreadagg_bus_publish_retries_total"),
            },
        }
    }

    /// Never give up on a message: retry until it is acknowledged, however long the broker is
    /// away. For callers that bound their own intake meanwhile (the ingestor conflates).
    #[must_use]
    pub fn retry_forever(mut self) -> Self {
        self.retry_for = None;
        self
    }

    /// Forgets every message still awaiting acknowledgement and returns how many there were
    /// (the caller counts them as lost); for a shutdown deadline.
    pub fn abandon(&mut self) -> usize {
        let n = self.in_flight.len();
        self.in_flight.clear();
        // Abandoned is not settled: a caller waiting for them, or for anything after them,
        // keeps waiting (and so never acknowledges the input that made them).
        let before = self.sent - n as u64;
        self.settled_ceiling = Some(self.settled_ceiling.map_or(before, |c| c.min(before)));
        n
    }

    /// Sends a message; waits first for the oldest acknowledgement when `max_in_flight` are
    /// outstanding.
    ///
    /// # Errors
    /// When an earlier publish failed for good: that message is returned. `msg` itself is
    /// sent either way.
    pub async fn publish(&mut self, msg: OutMessage) -> Result<(), PublishFailed> {
        self.publish_counted(msg, None).await
    }

    /// As [`Publisher::publish`], and `on_ack` is incremented when the stream acknowledges
    /// `msg` (a count of what is stored, not of what was sent).
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub async fn publish_counted(
        &mut self,
        msg: OutMessage,
        on_ack: Option<Counter>,
    ) -> Result<(), PublishFailed> {
        let mut failed = None;
        while self.in_flight.len() >= self.max_in_flight {
            if let Err(f) = self.settle_oldest().await {
                // Its place is free now; report it once `msg` is on its way.
                failed = Some(f);
                break;
            }
        }
        // Only the bus is borrowed across the await (the publisher itself is not `Sync`).
        let pending = Self::start_on(&self.bus, &msg).await;
        self.in_flight.push_back((msg, pending, on_ack));
        self.sent += 1;
        failed.map_or(Ok(()), Err)
    }

    /// Waits for the oldest outstanding acknowledgement (retrying it as `publish` would);
    /// pending for ever when nothing is in flight. For a caller with nothing to send.
    ///
    /// # Errors
    /// That publish failed for good; the message is returned.
    pub async fn settle(&mut self) -> Result<(), PublishFailed> {
        if self.in_flight.is_empty() {
            return std::future::pending().await;
        }
        self.settle_oldest().await
    }

    /// Waits for every outstanding acknowledgement.
    ///
    /// # Errors
    /// The first publish that failed for good; later ones stay queued for the next flush.
    pub async fn flush(&mut self) -> Result<(), PublishFailed> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// How many messages were handed to `publish` since this publisher was made.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// How many of the first [`Publisher::sent`] messages are settled: acknowledged, or given
    /// back as failed (never, with [`Publisher::retry_forever`]). Settling is in publish
    /// order, so message number `n` (counting from 1) is settled once this is at least `n`: a
    /// caller can acknowledge its own input as soon as the outputs it made are settled.
    pub fn settled(&self) -> u64 {
        let settled = self.sent - self.in_flight.len() as u64;
        self.settled_ceiling.map_or(settled, |c| settled.min(c))
    }

    /// Publishes awaiting acknowledgement (callers report it in their `/health` detail).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    async fn start_on(bus: &Bus, msg: &OutMessage) -> Pending {
        match bus {
            Bus::InProc(b) => Pending::Done(Some(b.publish(msg))),
            Bus::JetStream(b) => match b.publish(msg).await {
                Ok(p) => Pending::JetStream(p),
                Err(e) => Pending::Done(Some(Err(e))),
            },
        }
    }

    async fn settle_oldest(&mut self) -> Result<(), PublishFailed> {
        let Self {
            bus,
            in_flight,
            retry_for,
            meters,
            ..
        } = self;
        let Some((msg, pending, on_ack)) = in_flight.front_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut retried = false;
        loop {
            // Cancelled here, the pending acknowledgement (or the retry just started) stays.
            let result = pending.wait(&msg.subject).await;
            match result {
                Ok(ack) => {
                    if ack.duplicate {
                        meters.duplicates.increment(1);
                    }
                    meters.published.increment(1);
                    if let Some(counter) = on_ack {
                        counter.increment(1);
                    }
                    in_flight.pop_front();
                    return Ok(());
                }
                Err(error) if retry_for.is_some_and(|d| started.elapsed() >= d) => {
                    meters.failed.increment(1);
                    let message = msg.clone();
                    in_flight.pop_front();
                    return Err(PublishFailed { message, error });
                }
                Err(error) => {
                    meters.retries.increment(1);
                    tracing::debug!(%error, subject = %msg.subject, "publish failed; retrying");
                    // The first retry goes at once: after an outage, the messages queued behind
                    // this one failed together, and the connection is usually back by now.
                    // Only a retry that fails again waits, with a growing delay.
                    if retried {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    retried = true;
                    *pending = Self::start_on(bus, msg).await;
                }
            }
        }
    }
}
