//! Decimal text the way exchanges write numbers. Prices and quantities are kept as integer
//! counts of the instrument's smallest step (ticks, lots), so formatting is exact: no float ever
//! reaches the wire as `0.30000000000000004`.

/// `10^d` for the decimals we use (at most 8, the finest step Binance lists).
pub(crate) const fn pow10(d: u32) -> i64 {
    let mut p = 1_i64;
    let mut i = 0;
    while i < d {
        p *= 10;
        i += 1;
    }
    p
}

/// `units / 10^decimals` with exactly `decimals` places: `fixed(2535190, 5) == "25.35190"`.
pub(crate) fn fixed(units: i64, decimals: u32) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{abs}");
    }
    let scale = pow10(decimals).unsigned_abs();
    let width = decimals as usize;
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
}

/// Binance style: always `pad_to` places (8 on spot), whatever the step: `"25.35190000"`.
pub(crate) fn padded(units: i64, decimals: u32, pad_to: u32) -> String {
    if decimals >= pad_to {
        return fixed(units, decimals);
    }
    fixed(units.saturating_mul(pow10(pad_to - decimals)), pad_to)
}

/// OKX style: no trailing zeros and no bare dot: `"42219.9"`, `"8477"`, `"0.1"`.
pub(crate) fn trimmed(units: i64, decimals: u32) -> String {
    let mut s = fixed(units, decimals);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// A float (volumes, which are statistics rather than book levels) with `decimals` places.
pub(crate) fn float(x: f64, decimals: u32) -> String {
    let x = if x.is_finite() { x } else { 0.0 };
    format!("{x:.*}", decimals as usize)
}

/// A float written OKX style (trailing zeros removed).
pub(crate) fn float_trimmed(x: f64, decimals: u32) -> String {
    let mut s = float(x, decimals);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// The step itself as text: `step(2) == "0.01"`, `step(0) == "1"`.
pub(crate) fn step(decimals: u32) -> String {
    fixed(1, decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_places() {
        for (units, d, want) in [
            (2_535_190, 5, "25.35190"),
            (5, 2, "0.05"),
            (0, 3, "0.000"),
            (-1_234, 2, "-12.34"),
            (42, 0, "42"),
        ] {
            assert_eq!(fixed(units, d), want, "{units} {d}");
        }
    }

    #[test]
    fn binance_pads_to_eight() {
        assert_eq!(padded(2_535_190, 5, 8), "25.35190000");
        assert_eq!(padded(3_121, 2, 8), "31.21000000");
        assert_eq!(padded(7, 0, 8), "7.00000000");
    }

    #[test]
    fn okx_trims() {
        assert_eq!(trimmed(422_199, 1), "42219.9");
        assert_eq!(trimmed(847_700, 2), "8477");
        assert_eq!(trimmed(10, 2), "0.1");
        assert_eq!(trimmed(12_060_306, 8), "0.12060306");
        assert_eq!(trimmed(415, 0), "415");
        assert_eq!(float_trimmed(2222.0, 4), "2222");
        assert_eq!(float_trimmed(f64::NAN, 2), "0");
    }

    #[test]
    fn steps() {
        assert_eq!(step(2), "0.01");
        assert_eq!(step(0), "1");
        assert_eq!(pow10(8), 100_000_000);
    }
}
