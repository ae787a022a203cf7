//! Chart snapshots over request/reply: a request on `md.chart.<symbol>.<A>.<B>` is answered
//! by the engine (shard) that owns the symbol with the pair's chart window
//! (`ChartSnapshot`: times, spreads and both bands, oldest first). Other shards stay silent;
//! a malformed request is answered by shard 0 with an empty snapshot, so the asker hears at
//! once instead of timing out.

use std::time::Instant;

use spreadagg_model::wire::ChartSnapshot;
use spreadagg_model::{ExchangeId, Shard, Symbol};

use crate::state::{ChartPoint, SpreadState};

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// Not this shard's symbol: another engine answers.
    NotOurs,
    Snapshot(ChartSnapshot, &'static str),
}

/// Whether this shard answers requests on `subject` (cheap: no state read).
pub(crate) fn is_ours(shard: Shard, subject: &str) -> bool {
    match parse(subject) {
        Some((symbol, _, _)) => shard.owns(symbol.as_str()),
        None => shard.index == 0,
    }
}

/// The answer to a request on `subject`.
pub(crate) fn answer(state: &SpreadState, shard: Shard, subject: &str) -> Answer {
    let Some((symbol, a, b)) = parse(subject) else {
        return if shard.index == 0 {
            Answer::Snapshot(ChartSnapshot::default(), "malformed")
        } else {
            Answer::NotOurs
        };
    };
    if !shard.owns(symbol.as_str()) {
        return Answer::NotOurs;
    }
    // Pairs are A < B by name; either order is accepted.
    let (a, b) = if a.as_str() <= b.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    let mut snapshot = ChartSnapshot {
        symbol: symbol.as_str().to_owned(),
        exchange_a: a.as_str().to_owned(),
        exchange_b: b.as_str().to_owned(),
        ..ChartSnapshot::default()
    };
    let Some(window) = state.chart(symbol.as_str(), a, b) else {
        return Answer::Snapshot(snapshot, "no_window");
    };
    let n = window.points();
    snapshot.ts_ns.reserve_exact(n);
    snapshot.spread_pct.reserve_exact(n);
    snapshot.upper_band.reserve_exact(n);
    snapshot.lower_band.reserve_exact(n);
    for p in window.chart() {
        snapshot.ts_ns.push(ChartPoint::ts_ns(p));
        snapshot.spread_pct.push(p.spread());
        snapshot.upper_band.push(p.upper());
        snapshot.lower_band.push(p.lower());
    }
    Answer::Snapshot(snapshot, "ok")
}

fn parse(subject: &str) -> Option<(Symbol, ExchangeId, ExchangeId)> {
    let rest = subject.strip_prefix("md.chart.")?;
    let mut parts = rest.split('.');
    let (symbol, a, b) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((symbol.parse().ok()?, a.parse().ok()?, b.parse().ok()?))
}

/// A token bucket for chart requests: answering one takes the tick loop's time, so a flood
/// of them is refused (counted) rather than allowed to starve the ticks.
pub(crate) struct Limiter {
    per_s: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Limiter {
    pub(crate) fn new(per_s: u32) -> Self {
        let per_s = f64::from(per_s);
        Self {
            per_s,
            tokens: per_s,
            at: None,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            self.tokens = (self.tokens + now.duration_since(at).as_secs_f64() * self.per_s)
                .min(self.per_s.max(1.0));
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use spreadagg_model::wire::Tick;

    fn state_with_points() -> SpreadState {
        let mut s = SpreadState::new(EngineConfig::default().limits().expect("limits"));
        for i in 0..3_i64 {
            for (ex, bid) in [("okx", 100.0), ("binance", 100.5)] {
                s.on_tick(&Tick {
                    exchange: ex.into(),
                    symbol: "BTC-USDT".into(),
                    bid_px: bid,
                    ask_px: bid + 0.1,
                    recv_ts_ns: i * 1_000_000 + i64::from(ex == "binance"),
                    ..Tick::default()
                })
                .expect("in order");
            }
        }
        s
    }

    #[test]
    fn the_owner_answers_with_the_window_in_either_pair_order() {
        let s = state_with_points();
        let one = Shard::default();
        let Answer::Snapshot(snap, "ok") = answer(&s, one, "md.chart.BTC-USDT.okx.binance") else {
            panic!("an answer");
        };
        assert_eq!(
            (snap.exchange_a.as_str(), snap.exchange_b.as_str()),
            ("binance", "okx")
        );
        assert_eq!(snap.ts_ns.len(), 5, "the first tick made no point");
        assert_eq!(snap.spread_pct.len(), 5);
        assert!((f64::from(snap.spread_pct[4]) - 0.5).abs() < 1e-4);
        assert!(snap.ts_ns.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn unknown_windows_get_an_empty_answer_other_shards_stay_silent() {
        let s = state_with_points();
        assert!(matches!(
            answer(&s, Shard::default(), "md.chart.ETH-USDT.binance.okx"),
            Answer::Snapshot(ref snap, "no_window") if snap.ts_ns.is_empty() && snap.symbol == "ETH-USDT"
        ));
        let owner = (0..2)
            .find(|&i| Shard { index: i, count: 2 }.owns("BTC-USDT"))
            .expect("an owner");
        let other = Shard {
            index: 1 - owner,
            count: 2,
        };
        assert_eq!(
            answer(&s, other, "md.chart.BTC-USDT.binance.okx"),
            Answer::NotOurs
        );
        for bad in [
            "md.chart.btc.binance.okx",
            "md.chart.BTC-USDT.ftx.okx",
            "md.chart.BTC-USDT.binance",
            "md.chart.BTC-USDT.binance.okx.x",
        ] {
            assert!(
                matches!(
                    answer(&s, Shard::default(), bad),
                    Answer::Snapshot(_, "malformed")
                ),
                "{bad}"
            );
            assert_eq!(
                answer(&s, Shard { index: 1, count: 2 }, bad),
                Answer::NotOurs,
                "{bad}"
            );
        }
    }
}
