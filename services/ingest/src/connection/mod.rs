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
pub(crate) mod read_pacer;
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

/// A session proven this long before it ends resets the connection's backoff; one that keeps
/// dying sooner (a subscription that holds for seconds, then a drop) keeps backing off.
const STABLE_UPTIME: Duration = Duration::from_secs(30);
/// How long a stopped session may take to close before its task is aborted; shutdown and
/// rotation never wait on a peer that does not read.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A running attempt, owned by its connection: waiting for the breaker and the attempt
/// limiter, then a session. The supervisor never waits for admission itself, so a serving
/// session's reports are handled while its successor queues.
struct Running {
    generation: u64,
    cancel: CancellationToken,
    handle: JoinHandle<Ended>,
    reports: mpsc::Receiver<Report>,
    started: Instant,
    /// Admitted by the breaker and connecting.
    admitted: bool,
    /// Every subscribe request confirmed.
    subscribed: bool,
    /// When it first subscribed or delivered data.
    proven_at: Option<Instant>,
}

impl Running {
    fn subscribed_or_delivered(&self) -> bool {
        self.proven_at.is_some()
    }

    /// Cancels the session and waits (at most [`STOP_GRACE`]) for it to close.
    async fn stop(self) {
        self.stop_unless(std::future::pending()).await;
    }

    /// As [`Running::stop`], but aborts the session at once if `cut_short` completes first:
    /// a session replaced while the role starts shutting down does not hold up the
    /// shutdown, whose own close of the remaining sessions then has its whole grace.
    async fn stop_unless(self, cut_short: impl std::future::Future<Output = ()>) {
        self.cancel.cancel();
        drop(self.reports);
        let mut handle = self.handle;
        let aborted = tokio::select! {
            r = tokio::time::timeout(STOP_GRACE, &mut handle) => r.is_err(),
            () = cut_short => true,
        };
        if aborted {
            handle.abort();
            // Joined all the same: an aborted task ends at its next await, and its socket and
            // reports are released by then.
            let _ = tokio::time::timeout(Duration::from_millis(100), handle).await;
        }
    }
}

/// Settles the breaker for one attempt however its task ends (returns, is aborted, panics):
/// a proven session closes the breaker only if it was the current half-open probe (a normal
/// attempt's success was recorded when it proved itself; recording it again at its end would
/// hide other connections' failures), one cancelled before an outcome releases its probe,
/// any other counts as a failure.
struct Settle {
    shared: Arc<Shared>,
    admission: Admission,
    outcome: Option<bool>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        match self.outcome {
            Some(true) => self.shared.breaker.probe_succeeded(self.admission),
            Some(false) => self.shared.breaker.failure(self.admission),
            None => self.shared.breaker.release(self.admission),
        }
    }
}

/// One attempt: admission, then a session, then the breaker's verdict.
async fn attempt(
    shared: Arc<Shared>,
    natives: Vec<String>,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) -> Ended {
    let cancelled = || Ended {
        reason: "cancelled".into(),
        proven: false,
        cancelled: true,
    };
    let Some(admission) = shared.breaker.admit(&cancel).await else {
        return cancelled();
    };
    let mut settle = Settle {
        shared: shared.clone(),
        admission,
        outcome: None,
    };
    if !shared.attempts.acquire(&cancel).await {
        return cancelled();
    }
    if reports.send(Report::Admitted).await.is_err() {
        return cancelled();
    }
    let ended = session::run(shared.clone(), natives, reports, cancel).await;
    settle.outcome = if ended.proven {
        Some(true)
    } else if ended.cancelled {
        None
    } else {
        Some(false)
    };
    ended
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
        let settings = self.shared.settings.clone();
        let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
        // Failed rotations back off too, so a successor that cannot subscribe is not
        // retried in a tight loop while the old session serves.
        let mut rotation_backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
        let mut rotate_not_before: Option<Instant> = None;
        let mut generation = 0u64;
        let mut current: Option<Running> = None;
        let mut successor: Option<Running> = None;
        // When the next session may start (after a backoff); now at first.
        let mut start_at: Option<Instant> = Some(Instant::now());
        let mut natives = self.natives.borrow_and_update().clone();
        let mut rotate_reason: Option<String> = None;
        // A rotation the successor asked for (an announced close) before it took over.
        let mut successor_reason: Option<String> = None;
        let mut rotations: u64 = 0;
        // Rotations whose successor took over (make-before-break completed).
        let mut handovers: u64 = 0;
        let mut last_end = String::new();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.report_health(
                &current,
                &successor,
                natives.len(),
                (rotations, handovers),
                &last_end,
            );
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
                    current = Some(self.start(&natives, &mut generation));
                }
                Step::Report(Some(report)) => {
                    if let Some(cur) = current.as_mut()
                        && let Some(reason) = self.on_report(cur, report)
                    {
                        rotate_reason.get_or_insert(reason);
                    }
                }
                Step::SuccessorReport(Some(report)) => {
                    if let Some(next) = successor.as_mut()
                        && let Some(reason) = self.on_report(next, report)
                    {
                        successor_reason.get_or_insert(reason);
                    }
                    if successor_subscribed(&successor) {
                        // Make before break: the successor is subscribed, close the old one.
                        if let Some(old) = current.take() {
                            old.stop_unless(self.stop.cancelled()).await;
                        }
                        current = successor.take();
                        // What was due concerned the old session; what the new one announced
                        // while subscribing concerns it.
                        rotate_reason = successor_reason.take();
                        handovers += 1;
                        rotation_backoff.reset();
                        rotate_not_before = None;
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
                    let mut cur = current.take();
                    // Reports sent before the session returned (an announced close just
                    // before the server closed) still count.
                    if let Some(c) = cur.as_mut() {
                        while let Ok(report) = c.reports.try_recv() {
                            if let Some(reason) = self.on_report(c, report) {
                                rotate_reason.get_or_insert(reason);
                            }
                        }
                    }
                    last_end.clone_from(&ended.reason);
                    tracing::warn!(exchange = ex, connection = self.index, reason = %ended.reason, "session ended");
                    metrics::counter!("spreadagg_ingest_reconnects_total", "exchange" => ex)
                        .increment(1);
                    let stable = cur
                        .as_ref()
                        .and_then(|c| c.proven_at)
                        .is_some_and(|at| at.elapsed() >= STABLE_UPTIME);
                    if stable {
                        backoff.reset();
                    }
                    if let Some(next) = successor.take() {
                        // Mid-rotation: the successor takes over at once.
                        current = Some(next);
                        rotate_reason = successor_reason.take();
                    } else if let Some(reason) = rotate_reason.take_if(|r| {
                        r.starts_with("announced")
                            && (stable || rotate_not_before.is_none_or(|t| Instant::now() >= t))
                    }) {
                        // The exchange announced this close: the successor starts now, with no
                        // backoff (the exchange is healthy; it is moving us). This is the same
                        // rule as when the announcement is handled before the close: a young
                        // session's announced close spends the rotation backoff, so an
                        // exchange announcing closes of every fresh session is not redialled
                        // in a tight loop; past it, the ordinary backoff applies.
                        if stable {
                            rotation_backoff.reset();
                        } else {
                            rotate_not_before =
                                Some(Instant::now() + rotation_backoff.next_delay());
                        }
                        rotations += 1;
                        metrics::counter!("spreadagg_ingest_rotations_total", "exchange" => ex, "reason" => rotation_label(&reason)).increment(1);
                        tracing::info!(exchange = ex, connection = self.index, reason = %reason, "the exchange closed after announcing it; connecting again at once");
                        current = Some(self.start(&natives, &mut generation));
                    } else {
                        // Whatever the ended session announced ends with it.
                        rotate_reason = None;
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
                    successor = None;
                    successor_reason = None;
                    let delay = rotation_backoff.next_delay();
                    rotate_not_before = Some(Instant::now() + delay);
                    tracing::warn!(exchange = ex, connection = self.index, reason = %ended.reason, retry_ms = delay.as_millis() as u64, "rotation failed: the new connection ended; the old one stays");
                    rotate_reason.get_or_insert("retrying rotation".into());
                }
                Step::NativesChanged => {
                    natives = self.natives.borrow_and_update().clone();
                    if natives.is_empty() {
                        break;
                    }
                    rotate_reason = Some("symbols changed".into());
                    rotate_not_before = None;
                    if let Some(next) = successor.take() {
                        successor_reason = None;
                        next.stop_unless(self.stop.cancelled()).await;
                    }
                }
                Step::Tick => {
                    // Only while no successor runs: a rotation under way is this one.
                    if let (Some(cur), Some(at), None) =
                        (&current, self.shared.rotate_at(), &successor)
                        && cur.started.elapsed() >= at
                    {
                        rotate_reason.get_or_insert("maximum connection age".into());
                    }
                    // A successor that did not subscribe in time is abandoned; try again later.
                    if successor
                        .as_ref()
                        .is_some_and(|s| s.started.elapsed() > settings.handover_timeout)
                        && let Some(next) = successor.take()
                    {
                        successor_reason = None;
                        let delay = rotation_backoff.next_delay();
                        rotate_not_before = Some(Instant::now() + delay);
                        tracing::warn!(
                            exchange = ex,
                            connection = self.index,
                            retry_ms = delay.as_millis() as u64,
                            "rotation abandoned: the new connection did not subscribe in time"
                        );
                        next.stop_unless(self.stop.cancelled()).await;
                    }
                }
            }
            // Start a successor when a rotation is due, none is running and its backoff allows.
            let rotation_allowed = rotate_not_before.is_none_or(|t| Instant::now() >= t);
            if successor.is_none()
                && current.is_some()
                && rotation_allowed
                && let Some(reason) = rotate_reason.take()
            {
                rotations += 1;
                metrics::counter!("spreadagg_ingest_rotations_total", "exchange" => ex, "reason" => rotation_label(&reason)).increment(1);
                tracing::info!(exchange = ex, connection = self.index, reason = %reason, "rotating: opening a new connection before closing the old one");
                successor = Some(self.start(&natives, &mut generation));
            } else if current.is_none() && successor.is_none() {
                // Nothing running: a pending rotation is moot, the next start takes the list.
                rotate_reason = None;
                rotate_not_before = None;
            }
        }
        // Both sessions close at once, each within its grace.
        let (a, b) = (current.take(), successor.take());
        tokio::join!(
            async {
                if let Some(r) = a {
                    r.stop().await;
                }
            },
            async {
                if let Some(r) = b {
                    r.stop().await;
                }
            }
        );
        self.component.set(false, json!({"state": "stopped"}));
    }

    /// Spawns an attempt (it waits for the breaker and the attempt limiter on its own task).
    fn start(&self, natives: &[String], generation: &mut u64) -> Running {
        *generation += 1;
        let cancel = self.stop.child_token();
        let (tx, rx) = mpsc::channel(8);
        let handle = tokio::spawn(attempt(
            self.shared.clone(),
            natives.to_vec(),
            tx,
            cancel.clone(),
        ));
        Running {
            generation: *generation,
            cancel,
            handle,
            reports: rx,
            started: Instant::now(),
            admitted: false,
            subscribed: false,
            proven_at: None,
        }
    }

    /// Applies a session's report; returns a rotation reason when it announces a close.
    fn on_report(&self, r: &mut Running, report: Report) -> Option<String> {
        match report {
            Report::Admitted => {
                r.admitted = true;
                r.started = Instant::now();
            }
            Report::Subscribed { .. } => {
                r.subscribed = true;
                r.proven_at.get_or_insert_with(Instant::now);
                self.shared.breaker.success();
            }
            Report::Delivered => {
                r.proven_at.get_or_insert_with(Instant::now);
                self.shared.breaker.success();
            }
            Report::Rotate(reason) => return Some(format!("announced: {reason}")),
        }
        None
    }

    fn report_health(
        &self,
        current: &Option<Running>,
        successor: &Option<Running>,
        symbols: usize,
        (rotations, handovers): (u64, u64),
        last_end: &str,
    ) {
        let breaker = self.shared.breaker.report();
        let (ready, state) = match current {
            Some(c) if c.subscribed_or_delivered() => (true, "connected"),
            Some(c) if c.admitted => (false, "subscribing"),
            Some(_) => (false, "waiting"),
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
                "handovers": handovers,
                "last_end": last_end,
                "breaker": breaker,
            }),
        );
    }
}

/// A successor takes over once every request of it is confirmed.
fn successor_subscribed(successor: &Option<Running>) -> bool {
    successor.as_ref().is_some_and(|s| s.subscribed)
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
mod conformance;
#[cfg(test)]
mod fault_matrix;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod kucoin_sim_tests;
#[cfg(test)]
mod tests;
