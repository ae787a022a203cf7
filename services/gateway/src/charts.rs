//! Chart windows from the engine: a core NATS request on `md.chart.<symbol>.<A>.<B>`, answered
//! with a `ChartSnapshot` by the engine shard that owns the symbol.
//!
//! Bounded and shared: one request at a time per pair, its answer reused for a second by
//! every session and request that wants the same pair (a thousand clients of one chart make
//! one request a second); at most `MAX_IN_FLIGHT` requests at once from this gateway; each
//! fetch, waiting included, within the configured timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use spreadagg_bus::Bus;
use spreadagg_model::Symbol;
use spreadagg_model::subjects;
use spreadagg_model::wire::ChartSnapshot;
use tokio::sync::Semaphore;

use crate::hub::queue::lock;
use crate::pair::Pair;

/// Chart requests in flight from one gateway.
const MAX_IN_FLIGHT: usize = 32;
/// An answer is reused this long.
const FRESH: Duration = Duration::from_secs(1);
/// Past this many remembered pairs, stale answers are dropped at the next new pair ...
const KEEP_PAIRS: usize = 64;
/// ... and past this many fresh or in use, a fetch goes uncached.
const MAX_PAIRS: usize = 1024;

/// Why no chart came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChartError {
    #[error("no engine answered for the chart within {0:?}")]
    NoAnswer(Duration),
    #[error("the engine's chart answer does not decode: {0}")]
    Undecodable(String),
}

/// One pair's last answer, behind an async lock that makes concurrent fetches of the pair
/// wait for one request.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<ChartSnapshot>)>>>;

/// Asks the engine for chart windows.
#[derive(Debug, Clone)]
pub(crate) struct Charts {
    bus: Bus,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    recent: Arc<Mutex<HashMap<(Symbol, Pair), Slot>>>,
}

impl Charts {
    pub(crate) fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            bus,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            timeout,
            recent: Arc::default(),
        }
    }

    /// The pair's chart window (no points when the engine has no such window), at most a
    /// second old.
    ///
    /// # Errors
    /// When no engine answers within the timeout (waiting for a turn included), or the answer
    /// does not decode.
    pub(crate) async fn fetch(
        &self,
        symbol: &Symbol,
        pair: Pair,
    ) -> Result<Arc<ChartSnapshot>, ChartError> {
        let fetched = tokio::time::timeout(self.timeout, self.fetch_shared(symbol, pair)).await;
        let result = fetched.unwrap_or(Err(ChartError::NoAnswer(self.timeout)));
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("spreadagg_gateway_chart_requests_total", "outcome" => outcome)
            .increment(1);
        result
    }

    async fn fetch_shared(
        &self,
        symbol: &Symbol,
        pair: Pair,
    ) -> Result<Arc<ChartSnapshot>, ChartError> {
        let Some(slot) = self.slot(symbol, pair) else {
            return self.ask(symbol, pair).await.map(Arc::new);
        };
        let mut last = slot.lock().await;
        if let Some((at, chart)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(Arc::clone(chart));
        }
        let chart = Arc::new(self.ask(symbol, pair).await?);
        *last = Some((Instant::now(), Arc::clone(&chart)));
        Ok(chart)
    }

    fn slot(&self, symbol: &Symbol, pair: Pair) -> Option<Slot> {
        let mut recent = lock(&self.recent);
        let key = (symbol.clone(), pair);
        if !recent.contains_key(&key) && recent.len() >= KEEP_PAIRS {
            // Keep the slots in use and the fresh ones; stale answers (up to a few hundred KB
            // each) make room, so what is held is about what the last second asked for.
            recent.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .map(|last| last.as_ref().is_some_and(|(at, _)| at.elapsed() < FRESH))
                        .unwrap_or(true)
            });
            if recent.len() >= MAX_PAIRS {
                return None;
            }
        }
        Some(Arc::clone(recent.entry(key).or_default()))
    }

    async fn ask(&self, symbol: &Symbol, pair: Pair) -> Result<ChartSnapshot, ChartError> {
        let subject = subjects::chart(symbol.as_str(), pair.a().as_str(), pair.b().as_str());
        let _turn = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ChartError::NoAnswer(self.timeout))?;
        let answer = self
            .bus
            .request(&subject, Bytes::new(), self.timeout)
            .await
            .map_err(|_| ChartError::NoAnswer(self.timeout))?;
        ChartSnapshot::decode(answer).map_err(|e| ChartError::Undecodable(e.to_string()))
    }
}
