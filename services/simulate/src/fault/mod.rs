//! Fault injection: what can go wrong on a simulated exchange, and the per-exchange state the
//! session driver ([`crate::ws::driver`]) reads to apply it, uniformly on every exchange.
//!
//! Two kinds of fault:
//! * **one-shot** (`disconnect`, `garbage`, `oversized`, `close_with_notice`,
//!   `close_without_notice`): delivered once to every session open at the time, over a small
//!   bounded broadcast channel;
//! * **windowed** (`stall`, `slow`, `ignore_pongs`) and **counted** (`refuse_subscription`):
//!   one slot per kind, read by every session on every frame, so they also reach sessions
//!   opened while they last. Injecting a kind again replaces its slot, so at most
//!   [`MAX_ACTIVE`] faults are ever active.
//!
//! Every accepted injection counts in `spreadagg_sim_faults_total{exchange,fault}`.

pub(crate) mod admin;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spreadagg_model::ExchangeId;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Longest window a fault may last (one hour).
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// Largest frame count for `garbage`.
pub const MAX_GARBAGE_FRAMES: u32 = 100;
/// Largest count for `refuse_subscription`.
pub const MAX_REFUSALS: u32 = 10_000;
/// Longest per-frame delay for `slow` (ten seconds).
pub const MAX_DELAY_MS: u64 = 10_000;
/// Size of the `oversized` frame: over a 2 MiB client cap, with room to spare.
pub const OVERSIZED_BYTES: usize = 2 * 1024 * 1024 + 64 * 1024;
/// Size of Coinbase's `oversized` frame: over its clients' 64 MiB cap (Coinbase's level2
/// snapshots are several MB, so its clients accept far larger messages than others).
pub const COINBASE_OVERSIZED_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;
/// Windowed and counted faults active at once: one slot per kind.
pub const MAX_ACTIVE: usize = 4;
/// One-shot faults queued per session before the oldest is skipped.
const SHOT_QUEUE: usize = 16;

/// One fault to inject; the JSON body of `POST /sim/faults` is the same shape, tagged by
/// `fault`: `{"fault":"stall","duration_ms":5000}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Drop every current session abruptly: no Close frame, the TCP connection just ends.
    Disconnect,
    /// For `duration_ms`, send no market data on any session (pings, pongs and replies to
    /// requests still flow): the silent stall a data watchdog must catch.
    Stall { duration_ms: u64 },
    /// Send `count` undecodable frames on every current session, between data frames.
    Garbage { count: u32 },
    /// Send one frame of [`OVERSIZED_BYTES`] on every current session.
    Oversized,
    /// Refuse the next `count` subscribe requests (across sessions) with the exchange's
    /// documented error reply.
    RefuseSubscription { count: u32 },
    /// The exchange's documented notice before a forced close, then a Close frame.
    CloseWithNotice,
    /// A Close frame without warning.
    CloseWithoutNotice,
    /// For `duration_ms`, delay every outbound frame by `delay_ms`.
    Slow { duration_ms: u64, delay_ms: u64 },
    /// For `duration_ms`, ignore the client's answers to server pings, so the exchange's own
    /// pong deadline closes the connection (exchanges with server pings: Binance, HTX, BingX).
    IgnorePongs { duration_ms: u64 },
}

impl Fault {
    /// The `fault` label (metrics, JSON).
    pub const fn label(&self) -> &'static str {
        match self {
            Fault::Disconnect => "disconnect",
            Fault::Stall { .. } => "stall",
            Fault::Garbage { .. } => "garbage",
            Fault::Oversized => "oversized",
            Fault::RefuseSubscription { .. } => "refuse_subscription",
            Fault::CloseWithNotice => "close_with_notice",
            Fault::CloseWithoutNotice => "close_without_notice",
            Fault::Slow { .. } => "slow",
            Fault::IgnorePongs { .. } => "ignore_pongs",
        }
    }

    /// Checks the parameters' bounds.
    ///
    /// # Errors
    /// [`FaultError::OutOfRange`] naming the parameter.
    pub fn validate(&self) -> Result<(), FaultError> {
        let window = |ms: u64| {
            if (1..=MAX_DURATION_MS).contains(&ms) {
                Ok(())
            } else {
                Err(FaultError::OutOfRange(format!(
                    "duration_ms: between 1 and {MAX_DURATION_MS}, got {ms}"
                )))
            }
        };
        match *self {
            Fault::Stall { duration_ms } | Fault::IgnorePongs { duration_ms } => {
                window(duration_ms)
            }
            Fault::Slow {
                duration_ms,
                delay_ms,
            } => {
                window(duration_ms)?;
                if (1..=MAX_DELAY_MS).contains(&delay_ms) {
                    Ok(())
                } else {
                    Err(FaultError::OutOfRange(format!(
                        "delay_ms: between 1 and {MAX_DELAY_MS}, got {delay_ms}"
                    )))
                }
            }
            Fault::Garbage { count } if !(1..=MAX_GARBAGE_FRAMES).contains(&count) => {
                Err(FaultError::OutOfRange(format!(
                    "count: between 1 and {MAX_GARBAGE_FRAMES}, got {count}"
                )))
            }
            Fault::RefuseSubscription { count } if !(1..=MAX_REFUSALS).contains(&count) => Err(
                FaultError::OutOfRange(format!("count: between 1 and {MAX_REFUSALS}, got {count}")),
            ),
            _ => Ok(()),
        }
    }
}

/// Why a fault was not injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("exchange {0} is not simulated here")]
    NotSimulated(ExchangeId),
    #[error("fault parameter out of range: {0}")]
    OutOfRange(String),
}

/// A windowed or counted fault in force, as `GET /sim/faults` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveFault {
    /// The fault's label (`stall`, `slow`, `ignore_pongs`, `refuse_subscription`).
    pub fault: &'static str,
    /// Milliseconds left in its window (windowed faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// Refusals left (`refuse_subscription`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// The per-frame delay (`slow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// What a one-shot fault asks of each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shot {
    Disconnect,
    Garbage(u32),
    Oversized,
    Close { notice: bool },
}

#[derive(Debug, Default)]
struct Windows {
    stall_until: Option<Instant>,
    slow: Option<(Instant, Duration)>,
    ignore_pongs_until: Option<Instant>,
    refusals: u32,
}

impl Windows {
    /// Is anything still in force at `now`?
    fn any(&self, now: Instant) -> bool {
        self.stall_until.is_some_and(|u| now < u)
            || self.slow.is_some_and(|(u, _)| now < u)
            || self.ignore_pongs_until.is_some_and(|u| now < u)
            || self.refusals > 0
    }
}

/// One exchange's faults. Sessions read it per frame; the admin API and
/// [`crate::Simulator::inject`] write it.
#[derive(Debug)]
pub(crate) struct Faults {
    exchange: ExchangeId,
    /// False while no windowed or counted fault is in force: sessions then skip the lock,
    /// so an idle fault layer costs one relaxed load per frame.
    armed: AtomicBool,
    windows: Mutex<Windows>,
    shots: broadcast::Sender<Shot>,
}

impl Faults {
    pub(crate) fn new(exchange: ExchangeId) -> Self {
        Self {
            exchange,
            armed: AtomicBool::new(false),
            windows: Mutex::new(Windows::default()),
            shots: broadcast::channel(SHOT_QUEUE).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Every write is a whole-field assignment, so a poisoned lock still holds valid data.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session's feed of one-shot faults (those injected from now on).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Shot> {
        self.shots.subscribe()
    }

    /// Sets a window and arms, under the lock, so that a concurrent `clear` or disarm
    /// cannot leave a set window unarmed.
    fn arm(&self, set: impl FnOnce(&mut Windows)) {
        let mut w = self.lock();
        set(&mut w);
        self.armed.store(true, Ordering::Release);
    }

    /// Applies a fault now.
    ///
    /// # Errors
    /// Parameters out of range.
    pub(crate) fn inject(&self, fault: Fault) -> Result<(), FaultError> {
        fault.validate()?;
        let now = Instant::now();
        let until = |ms: u64| now + Duration::from_millis(ms);
        let shot = match fault {
            Fault::Disconnect => Some(Shot::Disconnect),
            Fault::Garbage { count } => Some(Shot::Garbage(count)),
            Fault::Oversized => Some(Shot::Oversized),
            Fault::CloseWithNotice => Some(Shot::Close { notice: true }),
            Fault::CloseWithoutNotice => Some(Shot::Close { notice: false }),
            Fault::Stall { duration_ms } => {
                self.arm(|w| w.stall_until = Some(until(duration_ms)));
                None
            }
            Fault::Slow {
                duration_ms,
                delay_ms,
            } => {
                self.arm(|w| w.slow = Some((until(duration_ms), Duration::from_millis(delay_ms))));
                None
            }
            Fault::IgnorePongs { duration_ms } => {
                self.arm(|w| w.ignore_pongs_until = Some(until(duration_ms)));
                None
            }
            Fault::RefuseSubscription { count } => {
                self.arm(|w| w.refusals = count);
                None
            }
        };
        if let Some(shot) = shot {
            // An error only means no session is open; the fault then has nothing to hit.
            let _ = self.shots.send(shot);
        }
        metrics::counter!("spreadagg_sim_faults_total", "exchange" => self.exchange.as_str(), "fault" => fault.label())
            .increment(1);
        tracing::info!(
            exchange = self.exchange.as_str(),
            fault = fault.label(),
            "fault injected"
        );
        Ok(())
    }

    /// Ends every windowed and counted fault (one-shots already delivered stay delivered).
    pub(crate) fn clear(&self) {
        let mut w = self.lock();
        *w = Windows::default();
        self.armed.store(false, Ordering::Release);
        drop(w);
        tracing::info!(exchange = self.exchange.as_str(), "faults cleared");
    }

    /// The windowed and counted faults in force at `now`.
    pub(crate) fn active(&self, now: Instant) -> Vec<ActiveFault> {
        let w = self.lock();
        let left = |until: Instant| {
            let ms = until.saturating_duration_since(now).as_millis();
            u64::try_from(ms).unwrap_or(u64::MAX)
        };
        let mut out = Vec::with_capacity(MAX_ACTIVE);
        let window = |fault, until: Option<Instant>, delay_ms| {
            until.filter(|u| *u > now).map(|u| ActiveFault {
                fault,
                remaining_ms: Some(left(u)),
                remaining: None,
                delay_ms,
            })
        };
        out.extend(window("stall", w.stall_until, None));
        if let Some((until, delay)) = w.slow {
            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            out.extend(window("slow", Some(until), Some(ms)));
        }
        out.extend(window("ignore_pongs", w.ignore_pongs_until, None));
        if w.refusals > 0 {
            out.push(ActiveFault {
                fault: "refuse_subscription",
                remaining_ms: None,
                remaining: Some(w.refusals),
                delay_ms: None,
            });
        }
        out
    }

    /// Reads the windows at `now` when armed; disarms once nothing is left in force.
    fn read<T: Default>(&self, now: Instant, f: impl FnOnce(&Windows) -> T) -> T {
        if !self.armed.load(Ordering::Acquire) {
            return T::default();
        }
        let w = self.lock();
        if !w.any(now) {
            // Disarmed under the lock: an injection (which arms under the same lock) cannot
            // be lost between this check and the store.
            self.armed.store(false, Ordering::Release);
            return T::default();
        }
        f(&w)
    }

    /// Is market data withheld at `now`?
    pub(crate) fn stalled(&self, now: Instant) -> bool {
        self.read(now, |w| w.stall_until.is_some_and(|u| now < u))
    }

    /// The delay before each outbound frame at `now`, if `slow` is in force.
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        self.read(now, |w| {
            w.slow.and_then(|(until, d)| (now < until).then_some(d))
        })
    }

    /// Are the client's pongs ignored at `now`?
    pub(crate) fn ignoring_pongs(&self, now: Instant) -> bool {
        self.read(now, |w| w.ignore_pongs_until.is_some_and(|u| now < u))
    }

    /// Takes one refusal, if any are left.
    pub(crate) fn take_refusal(&self) -> bool {
        let mut w = self.lock();
        if w.refusals == 0 {
            return false;
        }
        w.refusals -= 1;
        true
    }

    /// Whether any refusals are pending (cheap pre-check before asking the protocol).
    pub(crate) fn refusing(&self) -> bool {
        self.read(Instant::now(), |w| w.refusals > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_round_trip_and_unknowns_are_refused() {
        let cases = [
            (r#"{"fault":"disconnect"}"#, Fault::Disconnect),
            (
                r#"{"fault":"stall","duration_ms":5000}"#,
                Fault::Stall { duration_ms: 5000 },
            ),
            (
                r#"{"fault":"garbage","count":3}"#,
                Fault::Garbage { count: 3 },
            ),
            (
                r#"{"fault":"slow","duration_ms":10,"delay_ms":2}"#,
                Fault::Slow {
                    duration_ms: 10,
                    delay_ms: 2,
                },
            ),
            (
                r#"{"fault":"refuse_subscription","count":1}"#,
                Fault::RefuseSubscription { count: 1 },
            ),
            (
                r#"{"fault":"ignore_pongs","duration_ms":1}"#,
                Fault::IgnorePongs { duration_ms: 1 },
            ),
        ];
        for (text, want) in cases {
            let got: Fault = serde_json::from_str(text).expect(text);
            assert_eq!(got, want, "{text}");
            let back: Fault =
                serde_json::from_str(&serde_json::to_string(&got).expect("ser")).expect("de");
            assert_eq!(back, want);
        }
        for bad in [
            r#"{"fault":"explode"}"#,
            r#"{"fault":"stall"}"#,
            r#"{"fault":"stall","duration_ms":1,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Fault>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds_are_checked() {
        assert!(Fault::Stall { duration_ms: 0 }.validate().is_err());
        assert!(
            Fault::Stall {
                duration_ms: MAX_DURATION_MS + 1
            }
            .validate()
            .is_err()
        );
        assert!(Fault::Garbage { count: 0 }.validate().is_err());
        assert!(
            Fault::Slow {
                duration_ms: 1,
                delay_ms: MAX_DELAY_MS + 1
            }
            .validate()
            .is_err()
        );
        assert!(Fault::RefuseSubscription { count: 5 }.validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn windows_expire_refusals_count_down_and_clear_ends_all() {
        let f = Faults::new(ExchangeId::Okx);
        f.inject(Fault::Stall { duration_ms: 1_000 }).expect("ok");
        f.inject(Fault::RefuseSubscription { count: 2 })
            .expect("ok");
        let t0 = Instant::now();
        assert!(f.stalled(t0));
        assert!(!f.stalled(t0 + Duration::from_millis(1_000)));
        assert_eq!(f.active(t0).len(), 2);
        assert!(f.take_refusal() && f.take_refusal() && !f.take_refusal());
        f.inject(Fault::Slow {
            duration_ms: 500,
            delay_ms: 7,
        })
        .expect("ok");
        assert_eq!(f.delay(t0), Some(Duration::from_millis(7)));
        f.clear();
        assert!(f.active(t0).is_empty());
        assert!(!f.stalled(t0));
        assert!(
            !f.armed.load(Ordering::Acquire),
            "nothing in force: the lock is skipped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_window_disarms_and_a_new_injection_rearms() {
        let f = Faults::new(ExchangeId::Htx);
        assert!(!f.stalled(Instant::now()));
        f.inject(Fault::IgnorePongs { duration_ms: 10 })
            .expect("ok");
        assert!(f.ignoring_pongs(Instant::now()));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!f.ignoring_pongs(Instant::now()));
        assert!(!f.armed.load(Ordering::Acquire));
        f.inject(Fault::Stall { duration_ms: 10 }).expect("ok");
        assert!(f.stalled(Instant::now()));
    }
}
