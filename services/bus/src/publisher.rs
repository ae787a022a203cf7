//! The pipelining publisher: up to `max_in_flight` publishes await their acknowledgement at
//! once. Every acknowledgement is awaited in publish order; a failed one is republished with
//! the same message id (the duplicate window makes that safe) until a deadline, and only then
//! handed back to the caller as [`PublishFailed`], message included. Nothing is dropped
//! silently.

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
    in_flight: VecDeque<(OutMessage, Pending)>,
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
        }
    }

    /// Sends a message; waits first for the oldest acknowledgement when `max_in_flight` are
    /// outstanding.
    ///
    /// # Errors
    /// When an earlier publish failed for good: that message is returned.
    pub async fn publish(&mut self, msg: OutMessage) -> Result<(), PublishFailed> {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_oldest().await?;
        }
        let pending = self.start(&msg).await;
        self.in_flight.push_back((msg, pending));
        Ok(())
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
        match &self.bus {
            Bus::InProc(b) => Pending::Done(b.publish(msg)),
            Bus::JetStream(b) => match b.publish(msg).await {
                Ok(p) => Pending::JetStream(p),
                Err(e) => Pending::Done(Err(e)),
            },
        }
    }

    async fn settle_oldest(&mut self) -> Result<(), PublishFailed> {
        let Some((msg, pending)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut retried = false;
        let mut result = pending.wait().await;
        loop {
            match result {
                Ok(ack) => {
                    if ack.duplicate {
                        metrics::counter!("spreadagg_bus_publish_duplicates_total").increment(1);
                    }
                    metrics::counter!("spreadagg_bus_published_total").increment(1);
                    return Ok(());
                }
                Err(error) if started.elapsed() >= RETRY_FOR => {
                    metrics::counter!("spreadagg_bus_publish_failed_total").increment(1);
                    return Err(PublishFailed {
                        message: msg,
                        error,
                    });
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
                    result = self.start(&msg).await.wait().await;
                }
            }
        }
    }
}
