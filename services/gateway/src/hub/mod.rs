//! The hub: everything between the bus and the clients that knows nothing of how clients are
//! connected. The feed tasks ([`feed`]) decode each bus message into an [`event::Event`],
//! keep it as the latest value of its key ([`latest`]) and offer it to every client whose
//! subscriptions ([`filter`]) select it ([`registry`]), each through its own bounded
//! drop-oldest queue ([`queue`]). WebSocket sessions, the prototype's endpoints and gRPC
//! streams are all clients of the hub; REST reads its latest values.

pub(crate) mod client;
pub(crate) mod event;
pub(crate) mod feed;
pub(crate) mod filter;
pub(crate) mod latest;
pub(crate) mod queue;
pub(crate) mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use event::{Channel, Event, Payload, Unroutable};
use feed::FeedStats;
use latest::Latest;
use registry::Registry;

/// The hub's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubLimits {
    /// Distinct subscriptions per client.
    pub(crate) max_subscriptions: usize,
    /// Symbols whose latest values are kept.
    pub(crate) max_symbols: usize,
}

impl HubLimits {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            max_subscriptions: 16,
            max_symbols: 100,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) registry: Registry,
    pub(crate) latest: Latest,
    feeds: [FeedStats; 4],
    next_seq: AtomicU64,
}

impl Hub {
    pub(crate) fn new(limits: &HubLimits) -> Self {
        Self {
            registry: Registry::new(limits.max_subscriptions),
            latest: Latest::new(limits.max_symbols),
            feeds: Default::default(),
            next_seq: AtomicU64::new(1),
        }
    }

    pub(crate) fn feed_stats(&self, channel: Channel) -> &FeedStats {
        &self.feeds[channel as usize]
    }

    /// Routes one decoded message: keeps it as the latest value of its key, then offers it to
    /// the clients that selected it. Returns how many clients it was queued for.
    ///
    /// # Errors
    /// When the message cannot be routed (bad symbol, unknown exchange).
    pub(crate) fn publish(&self, payload: Payload) -> Result<usize, Unroutable> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let event = Arc::new(Event::new(seq, payload)?);
        let now = Instant::now();
        self.latest.record(&event, now);
        Ok(self.registry.deliver(&event, now))
    }
}
