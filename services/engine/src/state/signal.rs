//! Deviation signals per symbol (DESIGN.md): the deviation is `(max_bid - min_bid) / min_bid *
//! 100` over the exchanges whose latest ticks are fresh; an ENTRY is raised at or above
//! `entry_pct`, an EXIT at or below `exit_pct` while a signal is active.
//!
//! Time is the ticks' own (`recv_ts_ns`), never the wall clock, so a replay of the same ticks
//! (a warm restart, a shard, a test) raises exactly the same signals. The exact reading of the
//! rules, also in docs/engine.md:
//! - at most one active signal per symbol: while active, a higher deviation raises nothing;
//! - an active signal ends with an EXIT at `exit_pct` or below, or silently when a tick of the
//!   symbol arrives at or after its `expires_ts_ns` (ENTRY time + `expiry`): consumers hold it
//!   until that time at the latest;
//! - cooldown: no ENTRY earlier than `cooldown` after the previous signal ended (its EXIT, or
//!   its expiry time), so a deviation hovering around a threshold raises at most one signal per
//!   cooldown, and a deviation that persists is announced again once per `expiry + cooldown`.

use spreadagg_model::ExchangeId;

/// Signal thresholds (configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalLimits {
    pub entry_pct: f64,
    pub exit_pct: f64,
    pub cooldown_ns: i64,
    pub expiry_ns: i64,
}

/// ENTRY or EXIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Entry,
    Exit,
}

/// The cheapest and dearest fresh bids of a symbol and their deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    pub pct: f64,
    pub cheap: ExchangeId,
    pub cheap_bid: f64,
    pub expensive: ExchangeId,
    pub expensive_bid: f64,
}

impl Deviation {
    /// Over `(exchange, bid)` pairs in a fixed order (ties go to the first); `None` with
    /// fewer than two.
    pub fn of(bids: impl IntoIterator<Item = (ExchangeId, f64)>) -> Option<Deviation> {
        let mut n = 0;
        let mut cheap = None::<(ExchangeId, f64)>;
        let mut dear = None::<(ExchangeId, f64)>;
        for (exchange, bid) in bids {
            n += 1;
            if cheap.is_none_or(|(_, b)| bid < b) {
                cheap = Some((exchange, bid));
            }
            if dear.is_none_or(|(_, b)| bid > b) {
                dear = Some((exchange, bid));
            }
        }
        let ((cheap, cheap_bid), (expensive, expensive_bid)) = (cheap?, dear?);
        (n >= 2).then(|| Deviation {
            pct: (expensive_bid - cheap_bid) / cheap_bid * 100.0,
            cheap,
            cheap_bid,
            expensive,
            expensive_bid,
        })
    }
}

/// A signal to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalEvent {
    pub kind: SignalKind,
    pub deviation: Deviation,
    pub ts_ns: i64,
    /// When the signal stops being active without an EXIT (for an EXIT: when the one it ends
    /// would have expired).
    pub expires_ts_ns: i64,
}

/// One symbol's signal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalState {
    /// No active signal; no ENTRY before `quiet_until`.
    Idle {
        quiet_until: i64,
    },
    Active {
        expires_ts_ns: i64,
    },
}

impl Default for SignalState {
    fn default() -> Self {
        SignalState::Idle {
            quiet_until: i64::MIN,
        }
    }
}

impl SignalState {
    pub fn is_active_at(self, now: i64) -> bool {
        matches!(self, SignalState::Active { expires_ts_ns } if now < expires_ts_ns)
    }

    /// Advances the state to a tick at `now` with the symbol's deviation then, and returns the
    /// signal to publish, if any.
    pub fn on_tick(
        &mut self,
        now: i64,
        deviation: Option<Deviation>,
        limits: &SignalLimits,
    ) -> Option<SignalEvent> {
        if let SignalState::Active { expires_ts_ns } = *self
            && now >= expires_ts_ns
        {
            *self = SignalState::Idle {
                quiet_until: expires_ts_ns.saturating_add(limits.cooldown_ns),
            };
        }
        let deviation = deviation.filter(|d| d.pct.is_finite())?;
        match *self {
            SignalState::Idle { quiet_until } => {
                if deviation.pct >= limits.entry_pct && now >= quiet_until {
                    let expires_ts_ns = now.saturating_add(limits.expiry_ns);
                    *self = SignalState::Active { expires_ts_ns };
                    return Some(SignalEvent {
                        kind: SignalKind::Entry,
                        deviation,
                        ts_ns: now,
                        expires_ts_ns,
                    });
                }
                None
            }
            SignalState::Active { expires_ts_ns } => {
                if deviation.pct <= limits.exit_pct {
                    *self = SignalState::Idle {
                        quiet_until: now.saturating_add(limits.cooldown_ns),
                    };
                    return Some(SignalEvent {
                        kind: SignalKind::Exit,
                        deviation,
                        ts_ns: now,
                        expires_ts_ns,
                    });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn limits() -> SignalLimits {
        SignalLimits {
            entry_pct: 0.35,
            exit_pct: 0.05,
            cooldown_ns: 10 * S,
            expiry_ns: 300 * S,
        }
    }

    fn dev(pct: f64) -> Option<Deviation> {
        Some(Deviation {
            pct,
            cheap: ExchangeId::Okx,
            cheap_bid: 100.0,
            expensive: ExchangeId::Binance,
            expensive_bid: 100.0 * (1.0 + pct / 100.0),
        })
    }

    fn kinds(steps: &[(i64, f64)]) -> Vec<(i64, SignalKind)> {
        let mut state = SignalState::default();
        steps
            .iter()
            .filter_map(|&(t, pct)| {
                state
                    .on_tick(t * S, dev(pct), &limits())
                    .map(|e| (t, e.kind))
            })
            .collect()
    }

    #[test]
    fn deviation_is_max_over_min_bid_with_the_first_on_ties() {
        let d = Deviation::of([
            (ExchangeId::Binance, 100.0),
            (ExchangeId::Okx, 100.5),
            (ExchangeId::Bybit, 100.0),
            (ExchangeId::Kraken, 100.5),
        ])
        .expect("two or more");
        assert_eq!(
            (d.cheap, d.expensive),
            (ExchangeId::Binance, ExchangeId::Okx)
        );
        assert!((d.pct - 0.5).abs() < 1e-12);
        assert_eq!(Deviation::of([(ExchangeId::Okx, 1.0)]), None);
    }

    #[test]
    fn entry_at_the_threshold_and_exit_at_the_threshold() {
        assert_eq!(
            kinds(&[(0, 0.349), (1, 0.35), (2, 0.06), (3, 0.05)]),
            [(1, SignalKind::Entry), (3, SignalKind::Exit)]
        );
    }

    #[test]
    fn one_active_signal_per_symbol() {
        assert_eq!(
            kinds(&[(0, 0.4), (1, 0.9), (2, 2.0), (3, 0.36)]),
            [(0, SignalKind::Entry)]
        );
    }

    #[test]
    fn no_entry_within_the_cooldown_after_an_exit() {
        assert_eq!(
            kinds(&[
                (0, 0.4),
                (5, 0.0),
                (6, 0.5),
                (14, 0.5),
                (15, 0.5),
                (16, 0.5)
            ]),
            [
                (0, SignalKind::Entry),
                (5, SignalKind::Exit),
                (15, SignalKind::Entry)
            ]
        );
    }

    #[test]
    fn expiry_ends_the_signal_silently_and_the_cooldown_runs_from_it() {
        let steps = [(0, 0.4), (299, 0.4), (300, 0.4), (309, 0.4), (310, 0.4)];
        assert_eq!(
            kinds(&steps),
            [(0, SignalKind::Entry), (310, SignalKind::Entry)],
            "expired at 300, quiet until 310"
        );
        let mut state = SignalState::default();
        let entry = state.on_tick(0, dev(0.4), &limits()).expect("entry");
        assert_eq!(entry.expires_ts_ns, 300 * S);
        assert!(state.is_active_at(299 * S) && !state.is_active_at(300 * S));
        // After expiry there is nothing to exit from.
        assert_eq!(state.on_tick(301 * S, dev(0.0), &limits()), None);
    }

    #[test]
    fn exit_carries_the_deviation_then_and_the_expiry_it_cut_short() {
        let mut state = SignalState::default();
        state.on_tick(0, dev(0.5), &limits()).expect("entry");
        let exit = state.on_tick(7 * S, dev(0.01), &limits()).expect("exit");
        assert_eq!(exit.kind, SignalKind::Exit);
        assert!((exit.deviation.pct - 0.01).abs() < 1e-12);
        assert_eq!((exit.ts_ns, exit.expires_ts_ns), (7 * S, 300 * S));
    }

    #[test]
    fn no_deviation_changes_nothing_and_nan_is_ignored() {
        let mut state = SignalState::default();
        state.on_tick(0, dev(0.5), &limits()).expect("entry");
        assert_eq!(state.on_tick(S, None, &limits()), None);
        assert_eq!(state.on_tick(2 * S, dev(f64::NAN), &limits()), None);
        assert!(state.is_active_at(2 * S), "still active");
    }
}
