//! The engine's configuration (`[engine]`), validated into [`Limits`] before the role starts.

use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};
use spreadagg_model::Shard;

use crate::state::{Limits, SignalLimits, WindowLimits};

/// Configuration of the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// A tick pairs only with another exchange's tick at most this much older; only ticks
    /// this fresh count towards a symbol's deviation.
    pub max_staleness_ms: u64,
    /// Bands are quantiles of this many latest `bid_bid` values per pair.
    pub band_points: usize,
    pub upper_quantile: f64,
    pub lower_quantile: f64,
    /// Latest ticks kept, one per (symbol, exchange); least recently updated evicted.
    pub max_ticks: usize,
    /// Windows kept, one per (symbol, exchange A, exchange B); least recently used evicted.
    pub max_windows: usize,
    /// Chart points kept per window (the oldest go first).
    pub window_points: usize,
    /// Chart window length in seconds of point time.
    pub window_s: u64,
    /// Deviation (percent) at or above which an ENTRY signal is raised.
    pub signal_entry_pct: f64,
    /// Deviation (percent) at or below which an active signal EXITs.
    pub signal_exit_pct: f64,
    /// No ENTRY earlier than this after the symbol's previous signal ended.
    pub signal_cooldown_s: f64,
    /// An active signal with no EXIT ends this long after its ENTRY.
    pub signal_expiry_s: f64,
    /// Spread and signal publishes awaiting acknowledgement.
    pub max_in_flight: usize,
    /// Ticks one pull fetches.
    pub ack_batch: usize,
    /// Unacknowledged ticks the bus will hand over at once (backpressure).
    pub max_ack_pending: usize,
    pub ack_wait_s: u64,
    /// Durable consumer name. One engine per durable: a second replica on the same durable
    /// would split the ticks between them and break last-tick matching. A shard I of N > 1
    /// uses `<durable>-<I>-of-<N>`.
    pub durable: String,
    /// This engine's share of the symbols (`--shard I/N`): the symbols whose stable hash is
    /// I modulo N. Each shard reads every tick with its own durable and skips the others'.
    pub shard: Shard,
    /// Warm restart: on start, the state is rebuilt from the ticks stored in the last this
    /// many seconds (0: start empty).
    pub warm_start_s: u64,
    /// The rebuild stops after this long whatever it has reached (the engine then runs with
    /// what it rebuilt); readiness waits for it.
    pub warm_start_timeout_s: u64,
    /// Memory pressure, as fractions of the container's memory limit (working set): at
    /// `memory_high_water` the chart points per window are halved and a quarter of the
    /// windows evicted; the lowered caps hold, and shed again at `memory_critical`; after a
    /// minute under `memory_low_water` they double back towards the configured bounds.
    pub memory_low_water: f64,
    pub memory_high_water: f64,
    pub memory_critical: f64,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: std::path::PathBuf,
    /// Ticks whose receive time is further ahead of this engine's clock are refused (one tick
    /// from the future would supersede every real one of its exchange and symbol after it).
    pub max_future_ms: u64,
    /// Chart requests answered per second at most (a token bucket; the rest are counted as
    /// `rate_limited` and not answered).
    pub chart_requests_per_s: u32,
    /// Output conflation: at most one spread point per pair is published per this many
    /// milliseconds, always ending on the pair's latest (0: every point is published). Every
    /// point still enters its window.
    pub publish_min_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_staleness_ms: 5_000,
            band_points: 200,
            upper_quantile: 0.97,
            lower_quantile: 0.03,
            max_ticks: 50_000,
            max_windows: 10_000,
            window_points: 5_000,
            window_s: 900,
            signal_entry_pct: 0.35,
            signal_exit_pct: 0.05,
            signal_cooldown_s: 10.0,
            signal_expiry_s: 300.0,
            max_in_flight: 512,
            ack_batch: 256,
            max_ack_pending: 4_096,
            ack_wait_s: 30,
            durable: "engine".into(),
            shard: Shard::default(),
            warm_start_s: 900,
            warm_start_timeout_s: 120,
            memory_low_water: 0.70,
            memory_high_water: 0.85,
            memory_critical: 0.95,
            cgroup_root: "/sys/fs/cgroup".into(),
            max_future_ms: 60_000,
            chart_requests_per_s: 200,
            publish_min_interval_ms: 0,
        }
    }
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// 20,000 chart points make a snapshot of about 400 KB, well under NATS's 1 MiB payload.
const MAX_WINDOW_POINTS: usize = 20_000;

fn secs_to_ns(s: f64) -> i64 {
    // Validated finite and non-negative; saturates far beyond any sensible setting.
    #[allow(clippy::cast_possible_truncation)]
    let ns = (s * 1e9).min(9.0e18) as i64;
    ns
}

impl EngineConfig {
    /// The durable consumer this engine (shard) reads with.
    pub fn durable_name(&self) -> String {
        if self.shard.count > 1 {
            format!(
                "{}-{}-of-{}",
                self.durable, self.shard.index, self.shard.count
            )
        } else {
            self.durable.clone()
        }
    }

    /// # Errors
    /// When a bound is zero, a quantile is outside (0, 1], or the signal thresholds are not
    /// finite, negative, or the exit is not below the entry. The message names the key.
    pub fn limits(&self) -> Result<Limits, EngineError> {
        let bad = |key: &str, why: &str| Err(EngineError::Config(format!("engine.{key} {why}")));
        let nz = |n: usize, key: &str| {
            NonZeroUsize::new(n)
                .ok_or_else(|| EngineError::Config(format!("engine.{key} must be > 0")))
        };
        for (q, key) in [
            (self.upper_quantile, "upper_quantile"),
            (self.lower_quantile, "lower_quantile"),
        ] {
            if !(q > 0.0 && q <= 1.0) {
                return bad(key, "must be in (0, 1]");
            }
        }
        for (n, key) in [
            (self.band_points, "band_points"),
            (self.window_points, "window_points"),
            (self.ack_batch, "ack_batch"),
            (self.max_in_flight, "max_in_flight"),
        ] {
            nz(n, key)?;
        }
        if !self.shard.is_valid() {
            return bad("shard", "must be I/N with 0 <= I < N");
        }
        if self.warm_start_s > 0 && self.warm_start_timeout_s == 0 {
            return bad("warm_start_timeout_s", "must be > 0 when warm_start_s is");
        }
        let (low, high, critical) = (
            self.memory_low_water,
            self.memory_high_water,
            self.memory_critical,
        );
        if !(0.0 < low && low < high && high <= critical && critical <= 1.0) {
            return bad(
                "memory_high_water",
                "and its marks must satisfy 0 < memory_low_water < memory_high_water <= memory_critical <= 1",
            );
        }
        if self.window_points > MAX_WINDOW_POINTS {
            return bad(
                "window_points",
                "must be at most 20000 (a chart snapshot must fit in one NATS message)",
            );
        }
        if self.chart_requests_per_s == 0 {
            return bad("chart_requests_per_s", "must be > 0");
        }
        if self.window_s == 0 {
            return bad("window_s", "must be > 0");
        }
        if self.max_ack_pending < self.ack_batch {
            return bad("max_ack_pending", "must be at least ack_batch");
        }
        for (v, key) in [
            (self.signal_entry_pct, "signal_entry_pct"),
            (self.signal_exit_pct, "signal_exit_pct"),
            (self.signal_cooldown_s, "signal_cooldown_s"),
            (self.signal_expiry_s, "signal_expiry_s"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, "must be a finite number >= 0");
            }
        }
        if self.signal_exit_pct >= self.signal_entry_pct {
            return bad("signal_exit_pct", "must be below signal_entry_pct");
        }
        if self.signal_expiry_s == 0.0 {
            return bad("signal_expiry_s", "must be > 0");
        }
        let ms_to_ns = |ms: u64| {
            i64::try_from(ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000)
        };
        Ok(Limits {
            max_staleness_ns: ms_to_ns(self.max_staleness_ms),
            max_ticks: nz(self.max_ticks, "max_ticks")?,
            max_windows: nz(self.max_windows, "max_windows")?,
            window: WindowLimits {
                band_points: self.band_points,
                upper_quantile: self.upper_quantile,
                lower_quantile: self.lower_quantile,
                max_points: self.window_points,
                length_ns: ms_to_ns(self.window_s.saturating_mul(1_000)),
            },
            signal: SignalLimits {
                entry_pct: self.signal_entry_pct,
                exit_pct: self.signal_exit_pct,
                cooldown_ns: secs_to_ns(self.signal_cooldown_s),
                expiry_ns: secs_to_ns(self.signal_expiry_s),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_design_s() {
        let l = EngineConfig::default().limits().expect("valid");
        assert_eq!(l.max_ticks.get(), 50_000);
        assert_eq!(l.max_windows.get(), 10_000);
        assert_eq!(l.window.max_points, 5_000);
        assert_eq!(l.window.length_ns, 900_000_000_000);
        assert_eq!(l.window.band_points, 200);
        assert_eq!(l.signal.cooldown_ns, 10_000_000_000);
        assert_eq!(l.signal.expiry_ns, 300_000_000_000);
    }

    #[test]
    fn bad_values_name_their_key() {
        let check = |f: fn(&mut EngineConfig), key: &str| {
            let mut c = EngineConfig::default();
            f(&mut c);
            let e = c.limits().expect_err("invalid").to_string();
            assert!(e.contains(key), "{e} should name {key}");
        };
        check(|c| c.max_ticks = 0, "engine.max_ticks");
        check(|c| c.window_points = 0, "engine.window_points");
        check(|c| c.window_s = 0, "engine.window_s");
        check(|c| c.window_points = 20_001, "engine.window_points");
        check(
            |c| c.chart_requests_per_s = 0,
            "engine.chart_requests_per_s",
        );
        check(|c| c.upper_quantile = 1.5, "engine.upper_quantile");
        check(|c| c.signal_exit_pct = 0.5, "engine.signal_exit_pct");
        check(
            |c| c.signal_cooldown_s = f64::NAN,
            "engine.signal_cooldown_s",
        );
        check(|c| c.signal_expiry_s = 0.0, "engine.signal_expiry_s");
        check(|c| c.max_ack_pending = 1, "engine.max_ack_pending");
        check(|c| c.shard = Shard { index: 3, count: 3 }, "engine.shard");
    }
}
