//! The circuit breaker of one exchange, shared by all its connections.
//!
//! Closed: attempts go ahead; `threshold` failed sessions in a row (ended before any
//! subscription was confirmed or any data arrived) open it. Open: no attempt starts until the
//! cool-down has passed. Half-open: one probe goes ahead, the others wait; its success closes
//! the breaker, its failure opens it again with twice the cool-down (up to a cap). Each probe
//! carries the epoch of the half-open period it was admitted in, so the late outcome of an
//! earlier probe cannot decide a later period. A session that proved itself records its
//! success when it does; when it later ends, only a half-open probe's end does anything (it
//! closes the breaker if its period is still current, in case the supervisor never heard of
//! the success).
//! Its state is a gauge (`spreadagg_ingest_breaker_state`: 0 closed, 1 half-open, 2 open) and
//! part of `/health`.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    HalfOpen {
        probing: bool,
        cooldown: Duration,
        epoch: u64,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    /// Half-open periods so far; the epoch of the current one.
    epochs: std::sync::atomic::AtomicU64,
    changed: Notify,
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    gauge: metrics::Gauge,
    opened: metrics::Counter,
    exchange: &'static str,
}

/// What an admitted attempt is: an ordinary one, or the half-open probe whose outcome decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The probe of the half-open period with this epoch.
    Probe(u64),
}

impl Breaker {
    pub fn new(
        exchange: ExchangeId,
        threshold: u32,
        cooldown: Duration,
        max_cooldown: Duration,
    ) -> Self {
        let ex = exchange.as_str();
        let b = Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            epochs: std::sync::atomic::AtomicU64::new(0),
            changed: Notify::new(),
            threshold: threshold.max(1),
            cooldown,
            max_cooldown: max_cooldown.max(cooldown),
            gauge: metrics::gauge!("spreadagg_ingest_breaker_state", "exchange" => ex),
            opened: metrics::counter!("spreadagg_ingest_breaker_opened_total", "exchange" => ex),
            exchange: ex,
        };
        b.gauge.set(0.0);
        b
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until an attempt may start; `None` when `stop` fires first.
    pub async fn admit(&self, stop: &CancellationToken) -> Option<Admission> {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut s = self.lock();
                match *s {
                    State::Closed { .. } => return Some(Admission::Normal),
                    State::Open { until, cooldown } if Instant::now() >= until => {
                        let epoch = self
                            .epochs
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                            + 1;
                        *s = State::HalfOpen {
                            probing: true,
                            cooldown,
                            epoch,
                        };
                        self.gauge.set(1.0);
                        return Some(Admission::Probe(epoch));
                    }
                    State::HalfOpen {
                        probing: false,
                        cooldown,
                        epoch,
                    } => {
                        *s = State::HalfOpen {
                            probing: true,
                            cooldown,
                            epoch,
                        };
                        return Some(Admission::Probe(epoch));
                    }
                    State::Open { until, .. } => Some(until),
                    State::HalfOpen { probing: true, .. } => None,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return None,
                () = changed => {}
                () = async {
                    match wait_until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    /// A session proved the exchange works (subscribed or delivered data).
    pub fn success(&self) {
        let mut s = self.lock();
        if !matches!(*s, State::Closed { failures: 0 }) {
            *s = State::Closed { failures: 0 };
            self.gauge.set(0.0);
            self.changed.notify_waiters();
        }
    }

    /// A session failed before proving anything.
    pub fn failure(&self, admission: Admission) {
        let mut s = self.lock();
        let open_for = match *s {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    Some(self.cooldown)
                } else {
                    *s = State::Closed { failures };
                    None
                }
            }
            // This period's probe failed: open again, for longer.
            State::HalfOpen {
                cooldown, epoch, ..
            } if admission == Admission::Probe(epoch) => {
                Some((cooldown * 2).min(self.max_cooldown))
            }
            // Failures of attempts admitted before the breaker opened (or of an earlier
            // period's probe) change nothing.
            State::HalfOpen { .. } | State::Open { .. } => None,
        };
        if let Some(cooldown) = open_for {
            *s = State::Open {
                until: Instant::now() + cooldown,
                cooldown,
            };
            self.gauge.set(2.0);
            self.opened.increment(1);
            tracing::warn!(
                exchange = self.exchange,
                cooldown_ms = cooldown.as_millis() as u64,
                "circuit breaker open: connection attempts paused"
            );
            self.changed.notify_waiters();
        }
    }

    /// A probe proved the exchange works, whether or not the supervisor heard of it (its
    /// reports may be lost to a cancellation): closes the breaker if it is still that probe's
    /// half-open period. A normal attempt's late success changes nothing.
    pub fn probe_succeeded(&self, admission: Admission) {
        let mut s = self.lock();
        if let State::HalfOpen { epoch, .. } = *s
            && admission == Admission::Probe(epoch)
        {
            *s = State::Closed { failures: 0 };
            self.gauge.set(0.0);
            self.changed.notify_waiters();
        }
    }

    /// An admitted probe ended without an outcome (the role stopped): let another probe go.
    pub fn release(&self, admission: Admission) {
        let mut s = self.lock();
        if let State::HalfOpen {
            cooldown, epoch, ..
        } = *s
            && admission == Admission::Probe(epoch)
        {
            *s = State::HalfOpen {
                probing: false,
                cooldown,
                epoch,
            };
            self.changed.notify_waiters();
        }
    }

    /// `closed`, `half_open` or `open`, for `/health`.
    pub fn report(&self) -> Value {
        match *self.lock() {
            State::Closed { failures } => json!({"state": "closed", "failures": failures}),
            State::HalfOpen { .. } => json!({"state": "half_open"}),
            State::Open { until, .. } => json!({
                "state": "open",
                "retry_in_ms": until.saturating_duration_since(Instant::now()).as_millis() as u64
            }),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            ExchangeId::Okx,
            3,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_pauses_attempts() {
        let b = breaker();
        let stop = CancellationToken::new();
        for _ in 0..2 {
            assert_eq!(b.admit(&stop).await, Some(Admission::Normal));
            b.failure(Admission::Normal);
        }
        assert!(!b.is_open(), "two failures of three");
        b.failure(Admission::Normal);
        assert!(b.is_open());
        assert_eq!(b.report()["state"], "open");
        let started = Instant::now();
        assert!(matches!(b.admit(&stop).await, Some(Admission::Probe(_))));
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "attempts wait out the cool-down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_and_its_result_decides() {
        let b = breaker();
        let stop = CancellationToken::new();
        for _ in 0..3 {
            b.failure(Admission::Normal);
        }
        let Some(probe) = b.admit(&stop).await else {
            panic!("a probe is admitted after the cool-down");
        };
        // A second attempt waits while the probe is out.
        let second = tokio::time::timeout(Duration::from_secs(30), b.admit(&stop)).await;
        assert!(second.is_err(), "only one probe at a time");
        // The probe fails: open again, for twice as long.
        b.failure(probe);
        assert!(b.is_open());
        let started = Instant::now();
        let Some(second_probe) = b.admit(&stop).await else {
            panic!("a probe is admitted after the longer cool-down");
        };
        assert!(started.elapsed() >= Duration::from_secs(20));
        assert_ne!(
            probe, second_probe,
            "each half-open period has its own epoch"
        );
        // The first probe's late outcome does not decide the second period.
        b.failure(probe);
        b.release(probe);
        b.probe_succeeded(probe);
        assert_eq!(b.report()["state"], "half_open");
        // The current probe's success closes it, even if nobody else reported it.
        b.probe_succeeded(second_probe);
        assert_eq!(b.report()["state"], "closed");
        b.success();
        assert_eq!(b.report()["state"], "closed");
        assert_eq!(b.admit(&stop).await, Some(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_a_wait() {
        let b = breaker();
        for _ in 0..3 {
            b.failure(Admission::Normal);
        }
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(b.admit(&stop).await, None);
    }
}
