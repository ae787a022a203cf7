//! NATS subject matching: tokens split on `.`, `*` matches one token, `>` the rest (one or
//! more tokens).

/// Whether `subject` falls under `pattern`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(subject_matches("md.tick.>", "md.tick.binance.BTC-USDT"));
        assert!(!subject_matches("md.tick.>", "md.tick"));
        assert!(subject_matches(
            "md.tick.*.BTC-USDT",
            "md.tick.okx.BTC-USDT"
        ));
        assert!(!subject_matches(
            "md.tick.*.BTC-USDT",
            "md.tick.okx.ETH-USDT"
        ));
        assert!(!subject_matches("md.tick.*", "md.tick.okx.BTC-USDT"));
        assert!(subject_matches(
            "md.spread.BTC-USDT.binance.okx",
            "md.spread.BTC-USDT.binance.okx"
        ));
        assert!(!subject_matches(
            "md.spread.BTC-USDT",
            "md.spread.BTC-USDT.binance.okx"
        ));
    }
}
