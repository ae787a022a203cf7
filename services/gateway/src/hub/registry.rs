//! Who wants what: the subscription index the feed consults for every event, and the set of
//! connected clients.
//!
//! Isolation by construction: the index is split per channel and then into shards by the
//! hash of a key (the symbol, the base asset, the quote asset, or "all"), each behind its own
//! `RwLock`. The feed takes read locks, one shard at a time, for a lookup plus one short push
//! per interested client. A subscription change takes one shard's write lock for an O(1)
//! insert or remove; removing a client costs O(its own subscriptions); nothing a client does
//! scans other clients or its own queue under a lock the feed needs.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use super::event::{Channel, Event};
use super::filter::{Filter, SymbolPattern, VenuePattern};
use super::queue::{ClientId, ClientQueue, CloseCause, Offered, lock};

/// Shards per channel: enough that subscription churn on different symbols rarely meets the
/// feed on the same lock.
const SHARDS: usize = 64;

/// One client's filters under one key, and its queue.
#[derive(Debug)]
struct Interest {
    queue: Arc<ClientQueue>,
    /// With repeats (a `charts` and a `spreads` subscription of the same pair share a key).
    venues: Vec<VenuePattern>,
}

type Bucket = HashMap<ClientId, Interest>;

#[derive(Debug, Default)]
struct Shard {
    exact: HashMap<Box<str>, Bucket>,
    base: HashMap<Box<str>, Bucket>,
    quote: HashMap<Box<str>, Bucket>,
}

#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Exact,
    Base,
    Quote,
}

/// One channel's index.
#[derive(Debug)]
struct ChannelIndex {
    shards: Box<[RwLock<Shard>]>,
    any: RwLock<Bucket>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl ChannelIndex {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            any: RwLock::new(Bucket::new()),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        // A fixed seed: shard choice needs spread, not secrecy (keys are bounded per client).
        let h = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Runs `f` on the bucket a pattern lives in, creating it if `create`; drops the bucket
    /// when `f` leaves it empty.
    fn with_bucket<R>(
        &self,
        symbol: &SymbolPattern,
        create: bool,
        f: impl FnOnce(&mut Bucket) -> R,
    ) -> Option<R> {
        let (kind, key): (KeyKind, &str) = match symbol {
            SymbolPattern::Any => {
                return Some(f(&mut write(&self.any)));
            }
            SymbolPattern::Exact(s) => (KeyKind::Exact, s.as_str()),
            SymbolPattern::Base(b) => (KeyKind::Base, b),
            SymbolPattern::Quote(q) => (KeyKind::Quote, q),
        };
        let mut shard = write(self.shard(key));
        let map = match kind {
            KeyKind::Exact => &mut shard.exact,
            KeyKind::Base => &mut shard.base,
            KeyKind::Quote => &mut shard.quote,
        };
        let bucket = if create {
            map.entry(key.into()).or_default()
        } else {
            map.get_mut(key)?
        };
        let out = f(bucket);
        if bucket.is_empty() {
            map.remove(key);
        }
        Some(out)
    }
}

/// What one offer came to.
enum Delivered {
    Queued,
    No,
    TooSlow,
}

/// Counters shown in the feed's health detail (the metrics carry the same).
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    pub(crate) dropped: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
}

impl DeliveryStats {
    /// Counts a client closed as too slow (by the feed, or by its writer's send deadline).
    pub(crate) fn too_slow(&self) {
        self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("spreadagg_gateway_slow_disconnects_total").increment(1);
    }
}

/// The registry refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error("at most {0} subscriptions per client")]
    TooMany(usize),
}

#[derive(Debug, Default)]
struct Clients {
    /// Set by [`Registry::close_all`]; later clients are refused.
    closing: Option<CloseCause>,
    queues: HashMap<ClientId, Arc<ClientQueue>>,
}

/// A registered client: its queue and its subscriptions. Owned by the client's session (or
/// stream); hand it back to [`Registry::remove`] when the client goes.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: ClientId,
    pub(crate) queue: Arc<ClientQueue>,
    filters: HashSet<Filter>,
}

/// Who wants what, and every client's queue.
#[derive(Debug)]
pub(crate) struct Registry {
    channels: [ChannelIndex; 4],
    clients: Mutex<Clients>,
    next_client: AtomicU64,
    max_subscriptions: usize,
    pub(crate) stats: DeliveryStats,
}

impl Registry {
    pub(crate) fn new(max_subscriptions: usize) -> Self {
        Self {
            channels: [(); 4].map(|()| ChannelIndex::new()),
            clients: Mutex::new(Clients::default()),
            next_client: AtomicU64::new(1),
            max_subscriptions,
            stats: DeliveryStats::default(),
        }
    }

    fn index(&self, channel: Channel) -> &ChannelIndex {
        &self.channels[channel as usize]
    }

    /// Adds a client with no subscriptions.
    ///
    /// # Errors
    /// The cause given to [`Self::close_all`], once it has run.
    pub(crate) fn register(&self, queue: Arc<ClientQueue>) -> Result<Subscriber, CloseCause> {
        let mut clients = lock(&self.clients);
        if let Some(cause) = clients.closing {
            return Err(cause);
        }
        let id = ClientId(self.next_client.fetch_add(1, Ordering::Relaxed));
        clients.queues.insert(id, Arc::clone(&queue));
        metrics::gauge!("spreadagg_gateway_clients").set(clients.queues.len() as f64);
        Ok(Subscriber {
            id,
            queue,
            filters: HashSet::new(),
        })
    }

    /// Adds a subscription; `Ok(false)` when the client already held it.
    ///
    /// # Errors
    /// When the client holds `max_subscriptions` already.
    pub(crate) fn subscribe(
        &self,
        sub: &mut Subscriber,
        filter: &Filter,
    ) -> Result<bool, SubscribeError> {
        if sub.filters.contains(filter) {
            return Ok(false);
        }
        if sub.filters.len() >= self.max_subscriptions {
            return Err(SubscribeError::TooMany(self.max_subscriptions));
        }
        self.index(filter.channel)
            .with_bucket(&filter.symbol, true, |bucket| {
                bucket
                    .entry(sub.id)
                    .or_insert_with(|| Interest {
                        queue: Arc::clone(&sub.queue),
                        venues: Vec::new(),
                    })
                    .venues
                    .push(filter.venue);
            });
        sub.filters.insert(filter.clone());
        Ok(true)
    }

    /// Removes a subscription; `false` when the client did not hold it. Events already queued
    /// that only it selected are not written.
    pub(crate) fn unsubscribe(&self, sub: &mut Subscriber, filter: &Filter) -> bool {
        if !sub.filters.remove(filter) {
            return false;
        }
        self.unindex(sub.id, filter);
        sub.queue
            .unsubscribed(sub.filters.iter().cloned().collect());
        true
    }

    fn unindex(&self, id: ClientId, filter: &Filter) {
        self.index(filter.channel)
            .with_bucket(&filter.symbol, false, |bucket| {
                if let Some(interest) = bucket.get_mut(&id) {
                    if let Some(i) = interest.venues.iter().position(|v| *v == filter.venue) {
                        interest.venues.swap_remove(i);
                    }
                    if interest.venues.is_empty() {
                        bucket.remove(&id);
                    }
                }
            });
    }

    /// Removes a client and every subscription it held: O(its subscriptions).
    pub(crate) fn remove(&self, sub: Subscriber) {
        for filter in &sub.filters {
            self.unindex(sub.id, filter);
        }
        let mut clients = lock(&self.clients);
        clients.queues.remove(&sub.id);
        metrics::gauge!("spreadagg_gateway_clients").set(clients.queues.len() as f64);
    }

    /// Offers one event to every client with a subscription that selects it, once per client.
    /// Returns how many clients it was queued for.
    pub(crate) fn deliver(&self, event: &Arc<Event>, now: Instant) -> usize {
        let index = self.index(event.channel);
        let symbol = event.symbol.as_str();
        let mut queued = 0;
        // Clients this event disconnected, logged once the index locks are released.
        let mut too_slow: Vec<(ClientId, u64)> = Vec::new();
        let mut offer_all = |bucket: &Bucket| {
            for (id, interest) in bucket {
                if interest.venues.iter().any(|v| v.matches(event.venue)) {
                    match self.offer(&interest.queue, event, now) {
                        Delivered::Queued => queued += 1,
                        Delivered::No => {}
                        Delivered::TooSlow => {
                            too_slow.push((*id, interest.queue.dropped_total()));
                        }
                    }
                }
            }
        };
        for (kind, key) in [
            (KeyKind::Exact, symbol),
            (KeyKind::Base, event.symbol.base()),
            (KeyKind::Quote, event.symbol.quote()),
        ] {
            let shard = read(index.shard(key));
            let map = match kind {
                KeyKind::Exact => &shard.exact,
                KeyKind::Base => &shard.base,
                KeyKind::Quote => &shard.quote,
            };
            if let Some(bucket) = map.get(key) {
                offer_all(bucket);
            }
        }
        offer_all(&read(&index.any));
        for (client, dropped) in too_slow {
            tracing::warn!(
                client = %client,
                dropped,
                "disconnecting a client that does not keep up (too slow)"
            );
        }
        queued
    }

    fn offer(&self, queue: &ClientQueue, event: &Arc<Event>, now: Instant) -> Delivered {
        match queue.offer(event, now) {
            Offered::Queued => Delivered::Queued,
            Offered::Repeat | Offered::Closed => Delivered::No,
            Offered::DroppedOldest => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Delivered::Queued
            }
            Offered::Disconnected { dropped } => {
                if dropped {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.too_slow();
                Delivered::TooSlow
            }
        }
    }

    /// Closes every client with `cause` and refuses new ones.
    pub(crate) fn close_all(&self, cause: CloseCause) {
        let mut clients = lock(&self.clients);
        clients.closing.get_or_insert(cause);
        for queue in clients.queues.values() {
            queue.close(cause);
        }
    }

    /// Connected clients.
    pub(crate) fn client_count(&self) -> usize {
        lock(&self.clients).queues.len()
    }

    /// The deepest client queue (events). O(clients): for the once-a-second report only.
    pub(crate) fn max_queue_depth(&self) -> usize {
        let queues: Vec<Arc<ClientQueue>> = lock(&self.clients).queues.values().cloned().collect();
        queues.iter().map(|q| q.depth()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event::Payload;
    use crate::hub::queue::{Outgoing, QueueLimits};
    use crate::pair::Pair;
    use spreadagg_model::ExchangeId;
    use spreadagg_model::wire::{Spread, Tick};
    use std::time::Duration;

    fn queue(capacity: usize, drop_limit: u64) -> Arc<ClientQueue> {
        Arc::new(ClientQueue::new(QueueLimits {
            capacity,
            drop_limit,
            max_lag: Duration::from_secs(3600),
        }))
    }

    fn spread(seq: u64, symbol: &str, a: &str, b: &str) -> Arc<Event> {
        let s = Spread {
            symbol: symbol.into(),
            exchange_a: a.into(),
            exchange_b: b.into(),
            ts_ns: seq as i64,
            ..Spread::default()
        };
        Arc::new(Event::new(seq, Payload::Spread(s)).expect("routable"))
    }

    fn tick(seq: u64, symbol: &str, exchange: &str) -> Arc<Event> {
        let t = Tick {
            symbol: symbol.into(),
            exchange: exchange.into(),
            ..Tick::default()
        };
        Arc::new(Event::new(seq, Payload::Tick(t)).expect("routable"))
    }

    fn filter(channel: Channel, symbol: &str, venue: VenuePattern) -> Filter {
        Filter {
            channel,
            symbol: SymbolPattern::parse(symbol).expect("valid"),
            venue,
            chart: false,
        }
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
    fn events_reach_only_matching_subscriptions_once() {
        use ExchangeId::{Binance, Okx};
        let r = Registry::new(8);
        let now = Instant::now();
        let mut wide = r.register(queue(16, 16)).expect("open");
        let mut pair = r.register(queue(16, 16)).expect("open");
        let mut okx = r.register(queue(16, 16)).expect("open");
        let mut many = r.register(queue(16, 16)).expect("open");
        let p = Pair::new(Okx, Binance).expect("distinct");
        r.subscribe(
            &mut wide,
            &filter(Channel::Spreads, "BTC-USDT", VenuePattern::Any),
        )
        .expect("ok");
        r.subscribe(
            &mut pair,
            &filter(Channel::Spreads, "BTC-USDT", VenuePattern::Pair(p)),
        )
        .expect("ok");
        r.subscribe(
            &mut okx,
            &filter(Channel::Spreads, "*-USDT", VenuePattern::Exchange(Okx)),
        )
        .expect("ok");
        for f in [
            filter(Channel::Spreads, "BTC-USDT", VenuePattern::Any),
            filter(Channel::Spreads, "BTC-*", VenuePattern::Any),
            filter(Channel::Spreads, "*", VenuePattern::Any),
            filter(Channel::Ticks, "*", VenuePattern::Exchange(Okx)),
        ] {
            r.subscribe(&mut many, &f).expect("ok");
        }
        assert_eq!(r.deliver(&spread(1, "BTC-USDT", "binance", "okx"), now), 4);
        assert_eq!(r.deliver(&spread(2, "BTC-USDT", "bybit", "okx"), now), 3);
        assert_eq!(r.deliver(&spread(3, "ETH-USDT", "binance", "okx"), now), 2);
        assert_eq!(
            r.deliver(&spread(4, "ETH-USDC", "binance", "bybit"), now),
            1
        );
        assert_eq!(r.deliver(&tick(5, "ETH-USDC", "okx"), now), 1);
        assert_eq!(r.deliver(&tick(6, "ETH-USDC", "bybit"), now), 0);
        assert_eq!(seqs(&wide.queue), [1, 2]);
        assert_eq!(seqs(&pair.queue), [1]);
        assert_eq!(seqs(&okx.queue), [1, 2, 3]);
        assert_eq!(
            seqs(&many.queue),
            [1, 2, 3, 4, 5],
            "each once, however many filters match"
        );
        for s in [wide, pair, okx, many] {
            r.remove(s);
        }
        assert_eq!(r.client_count(), 0);
        assert_eq!(r.deliver(&spread(7, "BTC-USDT", "binance", "okx"), now), 0);
    }

    #[test]
    fn subscription_limit_counts_distinct_subscriptions() {
        let r = Registry::new(2);
        let mut s = r.register(queue(4, 4)).expect("open");
        let f = |sym: &str| filter(Channel::Spreads, sym, VenuePattern::Any);
        assert_eq!(r.subscribe(&mut s, &f("BTC-USDT")), Ok(true));
        assert_eq!(
            r.subscribe(&mut s, &f("BTC-USDT")),
            Ok(false),
            "a repeat is no new one"
        );
        assert_eq!(r.subscribe(&mut s, &f("ETH-USDT")), Ok(true));
        assert_eq!(
            r.subscribe(&mut s, &f("SOL-USDT")),
            Err(SubscribeError::TooMany(2))
        );
        assert!(r.unsubscribe(&mut s, &f("ETH-USDT")));
        assert!(!r.unsubscribe(&mut s, &f("ETH-USDT")), "not held any more");
        assert_eq!(r.subscribe(&mut s, &f("SOL-USDT")), Ok(true), "room again");
    }

    #[test]
    fn unsubscribe_stops_delivery_and_skips_what_only_it_selected() {
        use ExchangeId::{Binance, Okx};
        let r = Registry::new(8);
        let now = Instant::now();
        let mut s = r.register(queue(16, 16)).expect("open");
        let wide = filter(Channel::Spreads, "BTC-USDT", VenuePattern::Any);
        let one = filter(
            Channel::Spreads,
            "BTC-USDT",
            VenuePattern::Pair(Pair::new(Binance, Okx).expect("distinct")),
        );
        r.subscribe(&mut s, &wide).expect("ok");
        r.subscribe(&mut s, &one).expect("ok");
        r.deliver(&spread(1, "BTC-USDT", "binance", "okx"), now);
        r.deliver(&spread(2, "BTC-USDT", "bybit", "okx"), now);
        r.unsubscribe(&mut s, &wide);
        assert_eq!(r.deliver(&spread(3, "BTC-USDT", "bybit", "okx"), now), 0);
        assert_eq!(r.deliver(&spread(4, "BTC-USDT", "binance", "okx"), now), 1);
        assert_eq!(
            seqs(&s.queue),
            [1, 4],
            "the pair subscription still selects 1 and 4"
        );
        r.unsubscribe(&mut s, &one);
        assert_eq!(r.deliver(&spread(5, "BTC-USDT", "binance", "okx"), now), 0);
    }

    #[test]
    fn a_slow_client_is_disconnected_while_others_get_everything() {
        let r = Registry::new(8);
        let now = Instant::now();
        let mut slow = r.register(queue(2, 5)).expect("open");
        let mut fast = r.register(queue(2, 5)).expect("open");
        let f = filter(Channel::Spreads, "BTC-USDT", VenuePattern::Any);
        r.subscribe(&mut slow, &f).expect("ok");
        r.subscribe(&mut fast, &f).expect("ok");
        let mut got = Vec::new();
        for n in 0..20 {
            r.deliver(&spread(n, "BTC-USDT", "binance", "okx"), now);
            got.extend(seqs(&fast.queue));
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(slow.queue.close_cause(), Some(CloseCause::TooSlow));
        assert_eq!(r.stats.slow_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(r.stats.dropped.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn closing_refuses_new_clients_and_closes_existing_ones() {
        let r = Registry::new(8);
        let s = r.register(queue(2, 2)).expect("open");
        r.close_all(CloseCause::Drain);
        r.close_all(CloseCause::Idle);
        assert_eq!(
            s.queue.close_cause(),
            Some(CloseCause::Drain),
            "the first cause stands"
        );
        assert_eq!(r.register(queue(2, 2)).err(), Some(CloseCause::Drain));
    }
}
