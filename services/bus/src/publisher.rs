//! The pipelining publisher: up to `max_in_flight` publishes await their acknowledgement at
//! once. Every acknowledgement is awaited in publish order; a failed one is republished with
//! the same message id (the duplicate window makes that safe) until a deadline (or for ever,
//! with [`Publisher::retry_forever`]), and only then handed back to the caller as
//! [`PublishFailed`], message included. The message given to a `publish` that reports an
//! earlier failure is still sent. Nothing is dropped silently.
//!
//! Every method is cancellation-safe: a message stays queued until its acknowledgement
//! arrives, so a caller that stops waiting (a shutdown deadline) can count what is left with
//! [`Publisher::abandon`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

#[derive(Debug)]
enum Pending {
    Done(Result<PubAck, BusError>),
    JetStream(PendingAck),
}

impl Pending {
    async fn wait(self) -> Result<PubAck, BusError> {
        match self {
            Pending::Done(r) => r,
            Pending::JetStream(p) => p.await,
        }
    }
}

/// See the module documentation.
pub struct Publisher {
    bus: Bus,
    max_in_flight: usize,
    /// Oldest first. `None`: the acknowledgement was being awaited when a caller gave up
    /// waiting, so the message is sent again (same id) when settled.
    in_flight: VecDeque<(OutMessage, Option<Pending>)>,
    retry_for: Option<Duration>,
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
        n
    }

    /// Sends a message; waits first for the oldest acknowledgement when `max_in_flight` are
    /// outstanding.
    ///
    /// # Errors
    /// When an earlier publish failed for good: that message is returned. `msg` itself is
    /// sent either way.
    pub async fn publish(&mut self, msg: OutMessage) -> Result<(), PublishFailed> {
        let mut failed = None;
        while self.in_flight.len() >= self.max_in_flight {
            if let Err(f) = self.settle_oldest().await {
                // Its place is free now; report it once `msg` is on its way.
                failed = Some(f);
                break;
            }
        }
        let pending = self.start(&msg).await;
        self.in_flight.push_back((msg, Some(pending)));
        failed.map_or(Ok(()), Err)
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

    /// Publishes awaiting acknowledgement (callers report it in their `/health` detail).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    async fn start(&self, msg: &OutMessage) -> Pending {
        Self::start_on(&self.bus, msg).await
    }

    async fn start_on(bus: &Bus, msg: &OutMessage) -> Pending {
        match bus {
            Bus::InProc(b) => Pending::Done(b.publish(msg)),
            Bus::JetStream(b) => match b.publish(msg).await {
                Ok(p) => Pending::JetStream(p),
                Err(e) => Pending::Done(Err(e)),
            },
        }
    }

    async fn settle_oldest(&mut self) -> Result<(), PublishFailed> {
        let Self {
            bus,
            in_flight,
            retry_for,
            ..
        } = self;
        let Some((msg, pending)) = in_flight.front_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut retried = false;
        let mut result = match pending.take() {
            Some(p) => p.wait().await,
            // A caller stopped waiting for this one earlier: ask again.
            None => Err(BusError::Closed),
        };
        loop {
            match result {
                Ok(ack) => {
                    if ack.duplicate {
                        metrics::counter!("spreadagg_bus_publish_duplicates_total").increment(1);
                    }
                    metrics::counter!("spreadagg_bus_published_total").increment(1);
                    in_flight.pop_front();
                    return Ok(());
                }
                Err(error) if retry_for.is_some_and(|d| started.elapsed() >= d) => {
                    metrics::counter!("spreadagg_bus_publish_failed_total").increment(1);
                    let message = msg.clone();
                    in_flight.pop_front();
                    return Err(PublishFailed { message, error });
                }
                Err(error) => {
                    metrics::counter!("spreadagg_bus_publish_retries_total").increment(1);
                    tracing::debug!(%error, subject = %msg.subject, "publish failed; retrying");
                    // The first retry goes at once: after an outage, the messages queued behind
                    // this one failed together, and the connection is usually back by now.
                    // Only a retry that fails again waits, with a growing delay.
                    if retried {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    retried = true;
                    result = Self::start_on(bus, msg).await.wait().await;
                }
            }
        }
    }
}
