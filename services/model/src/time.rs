//! Wall-clock time as Unix nanoseconds, the unit of every timestamp on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds (0 if the clock is before 1970, which no real host is).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds to nanoseconds, saturating.
pub const fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}
