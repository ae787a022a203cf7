//! Connection management shared by every exchange: one supervisor task per group of symbols
//! (a "connection"), each running WebSocket sessions (`session`) one after another, or two at
//! once while rotating.
//!
//! - A session that ends is replaced after a full-jitter backoff (reset once a session has
//!   proved itself); attempts of every connection of the exchange pass the exchange's circuit
//!   breaker (`breaker`) and its attempt limiter (`pacing`), so a mass reconnect is staggered.
//! - Rotation, make-before-break: at the exchange's maximum connection age (minus a margin),
//!   on an announced close (`serverShutdown`, OKX 64008), or when re-discovery changes the
//!   connection's symbols, a successor session is started; once it is subscribed the old one
//!   is closed. Both feed the same conflator meanwhile, and the overlap is deduplicated by
//!   message id downstream, so no gap opens and nothing is stored twice.
//!
//! Rotations are counted (`spreadagg_ingest_rotations_total{reason}`) and logged.

pub(crate) mod breaker;
pub(crate) mod pacing;
pub(crate) mod session;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use spreadagg_runtime::Component;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conflate::Conflator;
use crate::exchange::Adapter;
use crate::symbols::SymbolTable;
use breaker::{Admission, Breaker};
use pacing::{AttemptLimiter, Backoff};
use session::{Ended, Report};

/// Connection settings shared by every connection of one ingestor.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub connect_timeout: Duration,
    /// Link watchdog: no frame at all for this long ends a session.
    pub stale_after: Duration,
    /// Data watchdog: no market data for this long, once subscribed, ends a session.
    pub data_stale_after: Duration,
    pub ack_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Rotate at this age; `None`: at the exchange's maximum age less `rotate_margin`.
    pub rotate_after: Option<Duration>,
    pub rotate_margin: Duration,
    /// How long a successor may take to subscribe before the rotation is abandoned (and tried
    /// again later); the old session keeps running meanwhile.
    pub handover_timeout: Duration,
}

/// What every connection of one exchange shares.
pub(crate) struct Shared {
    pub adapter: Arc<dyn Adapter>,
    pub settings: ConnectionSettings,
    pub http: reqwest::Client,
    pub rest_url: String,
    pub ws_url: Option<String>,
    pub symbols: Arc<RwLock<Arc<SymbolTable>>>,
    pub sink: Arc<Conflator>,
    pub breaker: Breaker,
    pub attempts: AttemptLimiter,
}

impl Shared {
    /// The current symbol table (ids stay valid: it only grows).
    pub fn symbols(&self) -> Arc<SymbolTable> {
        self.symbols
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn rotate_at(&self) -> Option<Duration> {
        self.settings.rotate_after.or_else(|| {
            self.adapter
                .limits()
                .max_connection_age
                .map(|age| age.saturating_sub(self.settings.rotate_margin))
        })
    }
}

/// A running session, owned by its connection.
struct Running {
    generation: u64,
    cancel: CancellationToken,
    handle: JoinHandle<Ended>,
    reports: mpsc::Receiver<Report>,
    started: Instant,
    admission: Admission,
    subscribed: bool,
    delivered: bool,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        drop(self.reports);
        let _ = self.handle.await;
    }
}

/// One connection: a group of symbols kept subscribed for as long as the role runs.
pub(crate) struct Connection {
    pub shared: Arc<Shared>,
    pub index: usize,
    /// The symbols to carry; re-discovery changes them, an empty list ends the connection.
    pub natives: watch::Receiver<Vec<String>>,
    pub component: Component,
    pub stop: CancellationToken,
}

enum Step {
    Report(Option<Report>),
    SuccessorReport(Option<Report>),
    Ended(Ended),
    SuccessorEnded(Ended),
    Start,
    Tick,
    NativesChanged,
    Stop,
}

impl Connection {
    pub(crate) async fn run(mut self) {
        let ex = self.shared.adapter.id().as_str();
        let mut backoff = Backoff::new(
            self.shared.settings.backoff_min,
            self.shared.settings.backoff_max,
        );
        let mut generation = 0u64;
        let mut current: Option<Running> = None;
        let mut successor: Option<Running> = None;
        // When the next session may start (after a backoff); now at first.
        let mut start_at: Option<Instant> = Some(Instant::now());
        let mut natives = self.natives.borrow_and_update().clone();
        let mut rotate_reason: Option<String> = None;
        let mut rotations: u64 = 0;
        let mut last_end = String::new();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.report_health(&current, &successor, natives.len(), rotations, &last_end);
            let step = tokio::select! {
                () = self.stop.cancelled() => Step::Stop,
                e = next_event(&mut current) => match e {
                    SessionEvent::Report(r) => Step::Report(r),
                    SessionEvent::Ended(e) => Step::Ended(e),
                },
                e = next_event(&mut successor) => match e {
                    SessionEvent::Report(r) => Step::SuccessorReport(r),
                    SessionEvent::Ended(e) => Step::SuccessorEnded(e),
                },
                () = sleep_until(start_at), if current.is_none() && successor.is_none() => Step::Start,
                _ = housekeeping.tick() => Step::Tick,
                r = self.natives.changed() => match r {
                    Ok(()) => Step::NativesChanged,
                    // The role dropped the list: it is stopping.
                    Err(_) => Step::Stop,
                },
            };
            match step {
                Step::Stop => break,
                Step::Start => {
                    start_at = None;
                    match self.start(&natives, &mut generation).await {
                        Some(r) => current = Some(r),
                        None => break,
                    }
                }
                Step::Report(Some(report)) => {
                    if let Some(cur) = current.as_mut() {
                        match report {
                            Report::Subscribed { .. } => {
                                cur.subscribed = true;
                                self.shared.breaker.success();
                                backoff.reset();
                            }
                            Report::Delivered => {
                                cur.delivered = true;
                                self.shared.breaker.success();
                                backoff.reset();
                            }
                            Report::Rotate(reason) => {
                                rotate_reason.get_or_insert(format!("announced: {reason}"));
                            }
                        }
                    }
                }
                Step::SuccessorReport(Some(report)) => {
                    if let Some(next) = successor.as_mut() {
                        match report {
                            Report::Subscribed { .. } => {
                                next.subscribed = true;
                                self.shared.breaker.success();
                            }
                            Report::Delivered => {
                                next.delivered = true;
                                self.shared.breaker.success();
                            }
                            Report::Rotate(reason) => {
                                rotate_reason.get_or_insert(format!("announced: {reason}"));
                            }
                        }
                    }
                    if successor.as_ref().is_some_and(|s| s.subscribed) {
                        // Make before break: the successor is subscribed, close the old one.
                        if let Some(old) = current.take() {
                            old.stop().await;
                        }
                        current = successor.take();
                        tracing::info!(
                            exchange = ex,
                            connection = self.index,
                            "rotation complete: the new connection is subscribed, the old one closed"
                        );
                    }
                }
                // A closed report channel: the session is ending; its join comes next.
                Step::Report(None) | Step::SuccessorReport(None) => {}
                Step::Ended(ended) => {
                    let cur = current.take();
                    last_end.clone_from(&ended.reason);
                    if let Some(cur) = &cur {
                        self.settle(cur, &ended);
                    }
                    tracing::warn!(exchange = ex, connection = self.index, reason = %ended.reason, "session ended");
                    metrics::counter!("spreadagg_ingest_reconnects_total", "exchange" => ex)
                        .increment(1);
                    if let Some(next) = successor.take() {
                        // Mid-rotation: the successor takes over at once.
                        current = Some(next);
                    } else {
                        let delay = backoff.next_delay();
                        tracing::info!(
                            exchange = ex,
                            connection = self.index,
                            retry_ms = delay.as_millis() as u64,
                            "reconnecting after backoff"
                        );
                        start_at = Some(Instant::now() + delay);
                    }
                }
                Step::SuccessorEnded(ended) => {
                    if let Some(next) = successor.take() {
                        self.settle(&next, &ended);
                    }
                    tracing::warn!(exchange = ex, connection = self.index, reason = %ended.reason, "rotation failed: the new connection ended; the old one stays");
                    rotate_reason.get_or_insert("retrying rotation".into());
                }
                Step::NativesChanged => {
                    natives = self.natives.borrow_and_update().clone();
                    if natives.is_empty() {
                        break;
                    }
                    rotate_reason = Some("symbols changed".into());
                    if let Some(next) = successor.take() {
                        self.shared.breaker.release(next.admission);
                        next.stop().await;
                    }
                }
                Step::Tick => {
                    if let (Some(cur), Some(at)) = (&current, self.shared.rotate_at())
                        && cur.started.elapsed() >= at
                    {
                        rotate_reason.get_or_insert("maximum connection age".into());
                    }
                    // A successor that did not subscribe in time is abandoned; try again later.
                    if successor.as_ref().is_some_and(|s| {
                        s.started.elapsed() > self.shared.settings.handover_timeout
                    }) && let Some(next) = successor.take()
                    {
                        tracing::warn!(
                            exchange = ex,
                            connection = self.index,
                            "rotation abandoned: the new connection did not subscribe in time"
                        );
                        self.shared.breaker.release(next.admission);
                        next.stop().await;
                    }
                }
            }
            // Start a successor when a rotation is due and none is running.
            if successor.is_none()
                && current.is_some()
                && let Some(reason) = rotate_reason.take()
            {
                rotations += 1;
                metrics::counter!("spreadagg_ingest_rotations_total", "exchange" => ex, "reason" => rotation_label(&reason)).increment(1);
                tracing::info!(exchange = ex, connection = self.index, reason = %reason, "rotating: opening a new connection before closing the old one");
                match self.start(&natives, &mut generation).await {
                    Some(r) => successor = Some(r),
                    None => break,
                }
            } else if current.is_none() && successor.is_none() {
                // Nothing running: a pending rotation is moot, the next start takes the list.
                rotate_reason = None;
            }
        }
        for r in [current.take(), successor.take()].into_iter().flatten() {
            self.shared.breaker.release(r.admission);
            r.stop().await;
        }
        self.component.set(false, json!({"state": "stopped"}));
    }

    /// Waits for the breaker and the attempt limiter, then spawns a session; `None` on stop.
    async fn start(&self, natives: &[String], generation: &mut u64) -> Option<Running> {
        self.component.set(
            false,
            json!({"state": "waiting", "breaker": self.shared.breaker.report()}),
        );
        let admission = self.shared.breaker.admit(&self.stop).await?;
        if !self.shared.attempts.acquire(&self.stop).await {
            self.shared.breaker.release(admission);
            return None;
        }
        *generation += 1;
        let cancel = self.stop.child_token();
        let (tx, rx) = mpsc::channel(8);
        let handle = tokio::spawn(session::run(
            self.shared.clone(),
            natives.to_vec(),
            tx,
            cancel.clone(),
        ));
        Some(Running {
            generation: *generation,
            cancel,
            handle,
            reports: rx,
            started: Instant::now(),
            admission,
            subscribed: false,
            delivered: false,
        })
    }

    /// Tells the breaker how a session went.
    fn settle(&self, r: &Running, ended: &Ended) {
        if ended.cancelled {
            self.shared.breaker.release(r.admission);
        } else if ended.proven || r.subscribed || r.delivered {
            self.shared.breaker.success();
        } else {
            self.shared.breaker.failure(r.admission);
        }
    }

    fn report_health(
        &self,
        current: &Option<Running>,
        successor: &Option<Running>,
        symbols: usize,
        rotations: u64,
        last_end: &str,
    ) {
        let breaker = self.shared.breaker.report();
        let (ready, state) = match current {
            Some(c) if c.subscribed || c.delivered => (true, "connected"),
            Some(_) => (false, "subscribing"),
            None => (false, "backoff"),
        };
        self.component.set(
            ready,
            json!({
                "state": state,
                "symbols": symbols,
                "generation": current.as_ref().map(|c| c.generation),
                "age_s": current.as_ref().map(|c| c.started.elapsed().as_secs()),
                "rotating": successor.is_some(),
                "rotations": rotations,
                "last_end": last_end,
                "breaker": breaker,
            }),
        );
    }
}

fn rotation_label(reason: &str) -> &'static str {
    if reason.starts_with("announced") {
        "announced"
    } else if reason.starts_with("symbols") {
        "resubscribe"
    } else if reason.starts_with("maximum") {
        "max_age"
    } else {
        "retry"
    }
}

enum SessionEvent {
    Report(Option<Report>),
    Ended(Ended),
}

/// The next thing a running session has to say: a report, or its end.
async fn next_event(r: &mut Option<Running>) -> SessionEvent {
    let Some(r) = r else {
        return std::future::pending().await;
    };
    let reports_open = !r.reports.is_closed() || !r.reports.is_empty();
    tokio::select! {
        report = r.reports.recv(), if reports_open => SessionEvent::Report(report),
        joined = &mut r.handle => SessionEvent::Ended(match joined {
            Ok(ended) => ended,
            Err(e) => Ended {
                reason: format!("session task failed: {e}"),
                proven: false,
                cancelled: false,
            },
        }),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod kucoin_sim_tests;
#[cfg(test)]
mod tests;
