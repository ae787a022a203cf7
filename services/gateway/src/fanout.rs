//! Fan-out: the subscription registry, each client's drop-oldest queue, and the feed task that
//! reads `MD_SPREADS` and offers every point to the clients that asked for it.
//!
//! The feed never waits for a client. Offering a point is a short, synchronous push under the
//! client's own lock; when that client's queue is full its *oldest* message is dropped and
//! counted, and once it has lost `slow_client_drop_limit` messages since its queue was last
//! empty, it is disconnected. A slow client therefore costs only itself.
//! The queues themselves are in [`crate::queue`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use prost::Message as _;
use serde_json::json;
use spreadagg_bus::{Bus, BusError, Consumer};
use spreadagg_model::Symbol;
use spreadagg_model::subjects::STREAM_SPREADS;
use spreadagg_model::wire::Spread;
use spreadagg_runtime::Component;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Pair, Subscription, encode_spread};
pub(crate) use crate::queue::{
    ClientId, ClientQueue, CloseCause, Offered, PointKey, QueueItem, lock,
};

/// Subject filter of the feed: every spread point.
pub(crate) const SPREAD_FILTER: &str = spreadagg_model::subjects::ALL_SPREADS;
/// At most this many distinct symbols are remembered for `/api/symbols`; later ones are still
/// delivered to subscribers, only not listed.
pub(crate) const MAX_SEEN_SYMBOLS: usize = 10_000;
/// First and largest wait before re-opening the feed after a bus error.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// After this many consecutive errors on one subscription, it is re-opened.
const REOPEN_AFTER_ERRORS: u32 = 3;
/// How often gauges and the `gateway.feed` health detail are refreshed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One client's interest in one symbol.
#[derive(Debug)]
struct Interest {
    all_pairs: bool,
    pairs: HashSet<Pair>,
    queue: Arc<ClientQueue>,
}

impl Interest {
    fn matches(&self, pair: Option<Pair>) -> bool {
        self.all_pairs || pair.is_some_and(|p| self.pairs.contains(&p))
    }

    fn is_empty(&self) -> bool {
        !self.all_pairs && self.pairs.is_empty()
    }
}

#[derive(Debug)]
struct ClientEntry {
    queue: Arc<ClientQueue>,
    subs: HashSet<Subscription>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set by [`Registry::close_all`]; later sessions are refused.
    closing: bool,
    clients: HashMap<ClientId, ClientEntry>,
    /// symbol -> client -> interest: the fan-out's index, so a point costs a lookup plus one
    /// check per interested client, not a scan of every client.
    by_symbol: HashMap<String, HashMap<ClientId, Interest>>,
}

/// Counters shown in the `gateway.feed` health detail (the metrics carry the same).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) points: AtomicU64,
    pub(crate) rejected_points: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
    pub(crate) bus_errors: AtomicU64,
}

/// The registry refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error("at most {0} subscriptions per client")]
    TooMany(usize),
    #[error("client is not registered")]
    UnknownClient,
}

/// The gateway is shutting down and takes no new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway is shutting down")]
pub(crate) struct Closing;

/// Why a point from the bus was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PointRejected {
    #[error("undecodable Spread protobuf: {0}")]
    Undecodable(String),
    #[error("spread point with invalid symbol {0:?}")]
    InvalidSymbol(String),
}

impl PointRejected {
    fn reason(&self) -> &'static str {
        match self {
            PointRejected::Undecodable(_) => "undecodable",
            PointRejected::InvalidSymbol(_) => "invalid_symbol",
        }
    }
}

/// Who wants what, and every client's queue.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: RwLock<Inner>,
    seen: Mutex<BTreeSet<String>>,
    pub(crate) stats: Stats,
    max_subscriptions: usize,
}

impl Registry {
    pub(crate) fn new(max_subscriptions: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            seen: Mutex::new(BTreeSet::new()),
            stats: Stats::default(),
            max_subscriptions,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a client with no subscriptions.
    ///
    /// # Errors
    /// [`Closing`] once [`Self::close_all`] has run.
    pub(crate) fn register(&self, id: ClientId, queue: Arc<ClientQueue>) -> Result<(), Closing> {
        let mut inner = self.write();
        if inner.closing {
            return Err(Closing);
        }
        inner.clients.insert(
            id,
            ClientEntry {
                queue,
                subs: HashSet::new(),
            },
        );
        metrics::gauge!("spreadagg_gateway_clients").set(inner.clients.len() as f64);
        Ok(())
    }

    /// Removes a client and every subscription it held.
    pub(crate) fn remove(&self, id: ClientId) {
        let mut inner = self.write();
        let Inner {
            clients, by_symbol, ..
        } = &mut *inner;
        if let Some(entry) = clients.remove(&id) {
            for sub in &entry.subs {
                if let Some(per_client) = by_symbol.get_mut(sub.symbol.as_str()) {
                    per_client.remove(&id);
                    if per_client.is_empty() {
                        by_symbol.remove(sub.symbol.as_str());
                    }
                }
            }
        }
        metrics::gauge!("spreadagg_gateway_clients").set(clients.len() as f64);
    }

    /// Adds a subscription (idempotent) and queues `reply` while still holding the registry
    /// lock, so the confirmation reaches the client before any point it selects.
    ///
    /// # Errors
    /// When the client holds the maximum number of subscriptions already.
    pub(crate) fn subscribe(
        &self,
        id: ClientId,
        sub: &Subscription,
        reply: Utf8Bytes,
    ) -> Result<(), SubscribeError> {
        let mut inner = self.write();
        let Inner {
            clients, by_symbol, ..
        } = &mut *inner;
        let entry = clients.get_mut(&id).ok_or(SubscribeError::UnknownClient)?;
        if !entry.subs.contains(sub) {
            if entry.subs.len() >= self.max_subscriptions {
                return Err(SubscribeError::TooMany(self.max_subscriptions));
            }
            entry.subs.insert(sub.clone());
            let interest = by_symbol
                .entry(sub.symbol.as_str().to_owned())
                .or_default()
                .entry(id)
                .or_insert_with(|| Interest {
                    all_pairs: false,
                    pairs: HashSet::new(),
                    queue: Arc::clone(&entry.queue),
                });
            match sub.pair {
                None => interest.all_pairs = true,
                Some(p) => {
                    interest.pairs.insert(p);
                }
            }
        }
        entry.queue.push_control(reply);
        Ok(())
    }

    /// Removes a subscription (idempotent: removing one not held is fine), purges queued
    /// points no remaining subscription selects, and queues `reply`, all under the lock: no
    /// point of the removed subscription follows the confirmation.
    ///
    /// # Errors
    /// When the client is not registered.
    pub(crate) fn unsubscribe(
        &self,
        id: ClientId,
        sub: &Subscription,
        reply: Utf8Bytes,
    ) -> Result<(), SubscribeError> {
        let mut inner = self.write();
        let Inner {
            clients, by_symbol, ..
        } = &mut *inner;
        let entry = clients.get_mut(&id).ok_or(SubscribeError::UnknownClient)?;
        if entry.subs.remove(sub) {
            let symbol = sub.symbol.as_str();
            let mut remaining: Option<&Interest> = None;
            if let Some(per_client) = by_symbol.get_mut(symbol) {
                if let Some(interest) = per_client.get_mut(&id) {
                    match sub.pair {
                        None => interest.all_pairs = false,
                        Some(p) => {
                            interest.pairs.remove(&p);
                        }
                    }
                    if interest.is_empty() {
                        per_client.remove(&id);
                    }
                }
                if per_client.is_empty() {
                    by_symbol.remove(symbol);
                } else {
                    remaining = by_symbol.get(symbol).and_then(|m| m.get(&id));
                }
            }
            entry.queue.retain(|key| {
                key.symbol != symbol || remaining.is_some_and(|i| i.matches(key.pair))
            });
        }
        entry.queue.push_control(reply);
        Ok(())
    }

    /// Offers one point to every client whose subscriptions select it. Serialises the point
    /// at most once. Returns how many clients it was offered to.
    ///
    /// # Errors
    /// When the point's symbol is not canonical.
    pub(crate) fn deliver(&self, point: &Spread) -> Result<usize, PointRejected> {
        let symbol: Symbol = point
            .symbol
            .parse()
            .map_err(|_| PointRejected::InvalidSymbol(point.symbol.chars().take(64).collect()))?;
        self.note_symbol(&symbol);
        let pair = Pair::parse(&point.exchange_a, &point.exchange_b);
        let inner = self.read();
        let Some(per_client) = inner.by_symbol.get(symbol.as_str()) else {
            return Ok(0);
        };
        let key = Arc::new(PointKey {
            symbol: point.symbol.clone(),
            pair,
        });
        let mut text: Option<Utf8Bytes> = None;
        let mut offered = 0;
        for (id, interest) in per_client {
            if !interest.matches(pair) {
                continue;
            }
            let text = text.get_or_insert_with(|| encode_spread(point)).clone();
            offered += 1;
            match interest.queue.offer(QueueItem {
                key: Arc::clone(&key),
                text,
            }) {
                Offered::Queued | Offered::Closed => {}
                Offered::DroppedOldest => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Offered::Disconnected => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("spreadagg_gateway_slow_disconnects_total").increment(1);
                    tracing::warn!(
                        client = %id,
                        dropped = interest.queue.dropped_total(),
                        "disconnecting a client that does not keep up (too slow)"
                    );
                }
            }
        }
        Ok(offered)
    }

    fn note_symbol(&self, symbol: &Symbol) {
        let mut seen = lock(&self.seen);
        if seen.len() < MAX_SEEN_SYMBOLS && !seen.contains(symbol.as_str()) {
            seen.insert(symbol.as_str().to_owned());
        }
    }

    /// Symbols seen on the feed so far (at most [`MAX_SEEN_SYMBOLS`]), sorted.
    pub(crate) fn symbols(&self) -> Vec<String> {
        lock(&self.seen).iter().cloned().collect()
    }

    /// Closes every client with `cause` and refuses new ones.
    pub(crate) fn close_all(&self, cause: CloseCause) {
        let mut inner = self.write();
        inner.closing = true;
        for entry in inner.clients.values() {
            entry.queue.close(cause);
        }
    }

    /// Connected clients.
    pub(crate) fn client_count(&self) -> usize {
        self.read().clients.len()
    }

    /// The deepest client queue (spread points).
    pub(crate) fn max_queue_depth(&self) -> usize {
        self.read()
            .clients
            .values()
            .map(|c| c.queue.depth())
            .max()
            .unwrap_or(0)
    }
}

/// Decodes one bus payload and delivers it; a bad payload is counted and logged, never fatal.
pub(crate) fn handle_payload(registry: &Registry, payload: &[u8]) {
    registry.stats.points.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("spreadagg_gateway_points_total").increment(1);
    let result = Spread::decode(payload)
        .map_err(|e| PointRejected::Undecodable(e.to_string()))
        .and_then(|point| registry.deliver(&point));
    if let Err(rejected) = result {
        registry
            .stats
            .rejected_points
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("spreadagg_gateway_feed_rejected_total", "reason" => rejected.reason())
            .increment(1);
        tracing::debug!(error = %rejected, "spread point rejected");
    }
}

/// The feed task: one live subscription to `MD_SPREADS`, re-opened with exponential backoff
/// and jitter after bus errors, until `stop` is cancelled. Reports into `component`
/// (`gateway.feed`): ready while subscribed.
pub(crate) async fn run_feed(
    bus: Bus,
    registry: Arc<Registry>,
    component: Component,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'open: loop {
        component.set(false, detail(&registry, "connecting", &bus));
        let opened = tokio::select! {
            biased;
            () = stop.cancelled() => break 'open,
            opened = bus.live(STREAM_SPREADS, SPREAD_FILTER) => opened,
        };
        let mut consumer: Consumer = match opened {
            Ok(c) => c,
            Err(e) => {
                bus_error(&registry, &e, "cannot subscribe to spreads");
                component.set(false, detail(&registry, "retrying", &bus));
                if !sleep_or_stop(jittered(backoff), &stop).await {
                    break 'open;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue 'open;
            }
        };
        tracing::info!(
            stream = STREAM_SPREADS,
            bus = bus.kind(),
            "gateway feed subscribed"
        );
        component.set(true, detail(&registry, "live", &bus));
        let mut errors = 0u32;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break 'open,
                _ = report.tick() => {
                    metrics::gauge!("spreadagg_gateway_client_queue_depth_max")
                        .set(registry.max_queue_depth() as f64);
                    component.set(true, detail(&registry, "live", &bus));
                }
                next = consumer.next() => match next {
                    Ok(delivery) => {
                        errors = 0;
                        backoff = BACKOFF_MIN;
                        handle_payload(&registry, &delivery.payload);
                    }
                    Err(BusError::Closed) => {
                        bus_error(&registry, &BusError::Closed, "spread subscription closed");
                        break;
                    }
                    Err(e) => {
                        errors += 1;
                        bus_error(&registry, &e, "spread subscription error");
                        if errors >= REOPEN_AFTER_ERRORS {
                            break;
                        }
                        if !sleep_or_stop(jittered(backoff), &stop).await {
                            break 'open;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
            }
        }
        drop(consumer);
        component.set(false, detail(&registry, "retrying", &bus));
        if !sleep_or_stop(jittered(backoff), &stop).await {
            break 'open;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    component.set(false, detail(&registry, "stopped", &bus));
}

fn bus_error(registry: &Registry, e: &BusError, what: &str) {
    registry.stats.bus_errors.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("spreadagg_gateway_feed_errors_total").increment(1);
    tracing::warn!(error = %e, "{what}");
}

fn detail(registry: &Registry, state: &str, bus: &Bus) -> serde_json::Value {
    let s = &registry.stats;
    json!({
        "state": state,
        "bus": bus.kind(),
        "clients": registry.client_count(),
        "queue_depth_max": registry.max_queue_depth(),
        "points": s.points.load(Ordering::Relaxed),
        "rejected_points": s.rejected_points.load(Ordering::Relaxed),
        "dropped": s.dropped.load(Ordering::Relaxed),
        "slow_disconnects": s.slow_disconnects.load(Ordering::Relaxed),
        "bus_errors": s.bus_errors.load(Ordering::Relaxed),
    })
}

/// Between half and all of `d`, so that many gateways do not retry in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// Sleeps unless stopped first; `false` when stopped.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spreadagg_model::ExchangeId;

    fn point(symbol: &str, a: &str, b: &str, ts: i64) -> Spread {
        Spread {
            symbol: symbol.into(),
            exchange_a: a.into(),
            exchange_b: b.into(),
            ts_ns: ts,
            ..Spread::default()
        }
    }

    fn sub(symbol: &str, pair: Option<(ExchangeId, ExchangeId)>) -> Subscription {
        Subscription {
            symbol: symbol.parse().expect("valid"),
            pair: pair.and_then(|(x, y)| Pair::new(x, y)),
        }
    }

    fn ts_of(frames: &[String]) -> Vec<i64> {
        frames
            .iter()
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
            .filter(|v| v["type"] == "spread")
            .filter_map(|v| v["ts_ns"].as_i64())
            .collect()
    }

    #[test]
    fn points_reach_only_matching_subscriptions() {
        let r = Registry::new(8);
        let wide = Arc::new(ClientQueue::new(16, 16));
        let pair = Arc::new(ClientQueue::new(16, 16));
        r.register(ClientId(1), Arc::clone(&wide)).expect("open");
        r.register(ClientId(2), Arc::clone(&pair)).expect("open");
        r.subscribe(ClientId(1), &sub("BTC-USDT", None), Utf8Bytes::from("ok"))
            .expect("subscribed");
        r.subscribe(
            ClientId(2),
            &sub("BTC-USDT", Some((ExchangeId::Okx, ExchangeId::Binance))),
            Utf8Bytes::from("ok"),
        )
        .expect("subscribed");
        assert_eq!(r.deliver(&point("BTC-USDT", "binance", "okx", 1)), Ok(2));
        assert_eq!(r.deliver(&point("BTC-USDT", "bybit", "okx", 2)), Ok(1));
        assert_eq!(r.deliver(&point("ETH-USDT", "binance", "okx", 3)), Ok(0));
        assert_eq!(r.deliver(&point("BTC-USDT", "binance", "newex", 4)), Ok(1));
        assert!(r.deliver(&point("btc", "binance", "okx", 5)).is_err());
        assert_eq!(ts_of(&wide.drain_text()), [1, 2, 4]);
        assert_eq!(ts_of(&pair.drain_text()), [1]);
        assert_eq!(r.symbols(), ["BTC-USDT", "ETH-USDT"]);
    }

    #[test]
    fn subscription_limit_counts_distinct_subscriptions() {
        let r = Registry::new(2);
        r.register(ClientId(1), Arc::new(ClientQueue::new(4, 4)))
            .expect("open");
        let ok = || Utf8Bytes::from("ok");
        r.subscribe(ClientId(1), &sub("BTC-USDT", None), ok())
            .expect("first");
        r.subscribe(ClientId(1), &sub("BTC-USDT", None), ok())
            .expect("a repeat is not a new subscription");
        r.subscribe(ClientId(1), &sub("ETH-USDT", None), ok())
            .expect("second");
        assert_eq!(
            r.subscribe(ClientId(1), &sub("SOL-USDT", None), ok()),
            Err(SubscribeError::TooMany(2))
        );
        r.unsubscribe(ClientId(1), &sub("ETH-USDT", None), ok())
            .expect("removed");
        r.subscribe(ClientId(1), &sub("SOL-USDT", None), ok())
            .expect("room again");
    }

    #[test]
    fn unsubscribe_purges_queued_points_it_no_longer_selects() {
        let r = Registry::new(8);
        let q = Arc::new(ClientQueue::new(16, 16));
        r.register(ClientId(1), Arc::clone(&q)).expect("open");
        let ok = || Utf8Bytes::from("ok");
        let wide = sub("BTC-USDT", None);
        let one = sub("BTC-USDT", Some((ExchangeId::Binance, ExchangeId::Okx)));
        r.subscribe(ClientId(1), &wide, ok()).expect("wide");
        r.subscribe(ClientId(1), &one, ok()).expect("pair");
        q.drain_text();
        r.deliver(&point("BTC-USDT", "binance", "okx", 1))
            .expect("delivered");
        r.deliver(&point("BTC-USDT", "bybit", "okx", 2))
            .expect("delivered");
        r.unsubscribe(ClientId(1), &wide, Utf8Bytes::from("bye"))
            .expect("removed");
        let frames = q.drain_text();
        assert_eq!(ts_of(&frames), [1], "the pair subscription still selects 1");
        assert_eq!(
            frames.first().map(String::as_str),
            Some("bye"),
            "replies go first"
        );
        r.unsubscribe(ClientId(1), &one, ok()).expect("removed");
        assert_eq!(r.deliver(&point("BTC-USDT", "binance", "okx", 3)), Ok(0));
        r.remove(ClientId(1));
        assert_eq!(r.client_count(), 0);
    }

    #[test]
    fn a_slow_client_is_disconnected_while_others_get_everything() {
        let r = Registry::new(8);
        let slow = Arc::new(ClientQueue::new(2, 5));
        let fast = Arc::new(ClientQueue::new(2, 5));
        r.register(ClientId(1), Arc::clone(&slow)).expect("open");
        r.register(ClientId(2), Arc::clone(&fast)).expect("open");
        for id in [1, 2] {
            r.subscribe(ClientId(id), &sub("BTC-USDT", None), Utf8Bytes::from("ok"))
                .expect("subscribed");
        }
        fast.drain_text();
        let mut got = Vec::new();
        for ts in 0..20 {
            r.deliver(&point("BTC-USDT", "binance", "okx", ts))
                .expect("delivered");
            got.extend(fast.drain_text());
        }
        assert_eq!(ts_of(&got), (0..20).collect::<Vec<_>>());
        assert_eq!(slow.close_cause(), Some(CloseCause::TooSlow));
        assert_eq!(r.stats.slow_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(r.stats.dropped.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn undecodable_payloads_are_counted_not_fatal() {
        let r = Registry::new(8);
        handle_payload(&r, b"\xff\xff\xff garbage");
        handle_payload(&r, &point("BTC-USDT", "binance", "okx", 1).encode_to_vec());
        assert_eq!(r.stats.points.load(Ordering::Relaxed), 2);
        assert_eq!(r.stats.rejected_points.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn closing_refuses_new_clients_and_closes_existing_ones() {
        let r = Registry::new(8);
        let q = Arc::new(ClientQueue::new(2, 2));
        r.register(ClientId(1), Arc::clone(&q)).expect("open");
        r.close_all(CloseCause::Shutdown);
        assert_eq!(q.close_cause(), Some(CloseCause::Shutdown));
        assert_eq!(
            r.register(ClientId(2), Arc::new(ClientQueue::new(2, 2))),
            Err(Closing)
        );
    }
}
