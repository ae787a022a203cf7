//! Memory pressure: the engine reads its container's memory (cgroup v2, v1 fallback) and,
//! past a high-water mark, lowers its own caps (chart points per window, windows) before the
//! kernel kills the pod; it raises them back slowly once memory has been low for a while.
//!
//! Freed memory is not always returned to the operating system (the allocator keeps it for
//! reuse), so the working set may stay high after a shed. The governor therefore sheds once
//! at the high-water mark and then holds the lowered caps, so the state cannot grow into
//! memory it gave back; it sheds again only at the critical mark, and no more often than
//! `SHED_SPACING`.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use spreadagg_runtime::process::{CgroupMemory, CgroupRoot};

use crate::state::SpreadState;

/// Reads the container's memory and applies the governor's decision to the state; logged
/// and counted.
pub fn relieve(governor: &mut Governor, cgroup: &CgroupRoot, state: &mut SpreadState) {
    let memory = cgroup.memory();
    let decision = governor.decide(memory, Instant::now());
    let (caps, verb) = match decision {
        Decision::Hold => return,
        Decision::Shed(caps) => (caps, "shed"),
        Decision::Recover(caps) => (caps, "recovered"),
    };
    let (points, windows) = state.set_caps(caps.points, caps.windows);
    metrics::counter!("spreadagg_engine_shed_total", "what" => "points").increment(points);
    metrics::counter!("spreadagg_engine_shed_total", "what" => "windows").increment(windows);
    metrics::counter!("spreadagg_engine_memory_pressure_total", "decision" => verb).increment(1);
    let (used, limit) = memory.map_or((0, 0), |m| (m.working_set, m.limit.unwrap_or(0)));
    tracing::warn!(
        decision = verb,
        working_set_bytes = used,
        limit_bytes = limit,
        points_per_window = caps.points,
        windows = caps.windows.get(),
        points_dropped = points,
        windows_dropped = windows,
        "engine memory pressure"
    );
}

/// Least time between two sheds.
const SHED_SPACING: Duration = Duration::from_secs(5);
/// How long memory must stay under the low-water mark before caps are raised one step.
const CALM_FOR: Duration = Duration::from_secs(60);
/// Caps never go below these: a chart needs some points, the engine some windows.
const MIN_POINTS: usize = 64;
const MIN_WINDOWS: usize = 100;

/// The marks, as fractions of the container's limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marks {
    pub low: f64,
    pub high: f64,
    pub critical: f64,
}

/// The caps the state runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub points: usize,
    pub windows: NonZeroUsize,
}

/// What the governor decided for one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hold,
    Shed(Caps),
    Recover(Caps),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Governor {
    marks: Marks,
    full: Caps,
    now: Caps,
    last_shed: Option<Instant>,
    calm_since: Option<Instant>,
}

impl Governor {
    /// The governor for a configuration: its marks, and its bounds as the full caps.
    pub fn for_config(config: &crate::EngineConfig, limits: &crate::Limits) -> Self {
        Self::new(
            Marks {
                low: config.memory_low_water,
                high: config.memory_high_water,
                critical: config.memory_critical,
            },
            Caps {
                points: limits.window.max_points,
                windows: limits.max_windows,
            },
        )
    }

    pub fn new(marks: Marks, full: Caps) -> Self {
        Self {
            marks,
            full,
            now: full,
            last_shed: None,
            calm_since: None,
        }
    }

    pub fn caps(&self) -> Caps {
        self.now
    }

    /// Whether the caps are below the configured bounds.
    pub fn shedding(&self) -> bool {
        self.now != self.full
    }

    pub fn decide(&mut self, memory: Option<CgroupMemory>, at: Instant) -> Decision {
        let Some(ratio) = memory.and_then(|m| {
            #[allow(clippy::cast_precision_loss)]
            m.limit
                .filter(|&l| l > 0)
                .map(|l| m.working_set as f64 / l as f64)
        }) else {
            return Decision::Hold;
        };
        if ratio < self.marks.low {
            let calm_since = *self.calm_since.get_or_insert(at);
            if self.shedding() && at.duration_since(calm_since) >= CALM_FOR {
                self.calm_since = Some(at);
                self.now = Caps {
                    points: (self.now.points * 2).min(self.full.points),
                    windows: self
                        .now
                        .windows
                        .saturating_mul(NonZeroUsize::MIN.saturating_add(1))
                        .min(self.full.windows),
                };
                return Decision::Recover(self.now);
            }
            return Decision::Hold;
        }
        self.calm_since = None;
        let mark = if self.shedding() {
            self.marks.critical
        } else {
            self.marks.high
        };
        let spaced = self
            .last_shed
            .is_none_or(|t| at.duration_since(t) >= SHED_SPACING);
        if ratio >= mark && spaced {
            let points = (self.now.points / 2).max(MIN_POINTS.min(self.full.points));
            let windows =
                (self.now.windows.get() * 3 / 4).max(MIN_WINDOWS.min(self.full.windows.get()));
            let next = Caps {
                points,
                windows: NonZeroUsize::new(windows).unwrap_or(NonZeroUsize::MIN),
            };
            self.last_shed = Some(at);
            if next != self.now {
                self.now = next;
                return Decision::Shed(next);
            }
        }
        Decision::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(points: usize, windows: usize) -> Caps {
        Caps {
            points,
            windows: NonZeroUsize::new(windows).expect("nonzero"),
        }
    }

    fn reading(used: u64, limit: Option<u64>) -> Option<CgroupMemory> {
        Some(CgroupMemory {
            limit,
            working_set: used,
        })
    }

    fn governor() -> Governor {
        Governor::new(
            Marks {
                low: 0.7,
                high: 0.85,
                critical: 0.95,
            },
            caps(5_000, 10_000),
        )
    }

    #[test]
    fn no_limit_or_no_cgroup_never_sheds() {
        let mut g = governor();
        let t = Instant::now();
        assert_eq!(g.decide(None, t), Decision::Hold);
        assert_eq!(g.decide(reading(u64::MAX, None), t), Decision::Hold);
    }

    #[test]
    fn sheds_at_the_high_mark_then_holds_until_critical() {
        let mut g = governor();
        let t = Instant::now();
        assert_eq!(g.decide(reading(84, Some(100)), t), Decision::Hold);
        assert_eq!(
            g.decide(reading(85, Some(100)), t),
            Decision::Shed(caps(2_500, 7_500))
        );
        // Still high (the allocator kept the memory): the lowered caps hold.
        let later = t + Duration::from_secs(30);
        assert_eq!(g.decide(reading(90, Some(100)), later), Decision::Hold);
        // Critical, but too soon after the last shed.
        assert_eq!(
            g.decide(reading(96, Some(100)), t + Duration::from_secs(1)),
            Decision::Hold
        );
        assert_eq!(
            g.decide(reading(96, Some(100)), later),
            Decision::Shed(caps(1_250, 5_625))
        );
        assert!(g.shedding());
    }

    #[test]
    fn caps_never_go_below_the_minimum() {
        let mut g = governor();
        let mut t = Instant::now();
        for _ in 0..50 {
            t += SHED_SPACING;
            g.decide(reading(99, Some(100)), t);
        }
        assert_eq!(g.caps(), caps(MIN_POINTS, MIN_WINDOWS));
    }

    #[test]
    fn recovers_one_step_per_calm_period() {
        let mut g = governor();
        let t = Instant::now();
        g.decide(reading(90, Some(100)), t);
        let t = t + SHED_SPACING;
        g.decide(reading(99, Some(100)), t);
        assert_eq!(g.caps(), caps(1_250, 5_625));
        assert_eq!(
            g.decide(reading(50, Some(100)), t),
            Decision::Hold,
            "calm starts"
        );
        assert_eq!(
            g.decide(
                reading(50, Some(100)),
                t + CALM_FOR - Duration::from_secs(1)
            ),
            Decision::Hold
        );
        assert_eq!(
            g.decide(reading(50, Some(100)), t + CALM_FOR),
            Decision::Recover(caps(2_500, 10_000))
        );
        // A reading between the marks resets the calm period.
        g.decide(
            reading(75, Some(100)),
            t + CALM_FOR + Duration::from_secs(1),
        );
        assert_eq!(
            g.decide(reading(50, Some(100)), t + CALM_FOR * 2),
            Decision::Hold
        );
        assert_eq!(
            g.decide(reading(50, Some(100)), t + CALM_FOR * 3),
            Decision::Recover(caps(5_000, 10_000))
        );
        assert!(!g.shedding());
    }
}
