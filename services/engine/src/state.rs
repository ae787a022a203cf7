//! The engine's pure core: the latest tick per (symbol, exchange) and the band window per
//! (symbol, exchange A, exchange B), and the spread points a new tick makes. No I/O, so every
//! formula is tested here directly.
//!
//! Both maps are LRU-bounded: at most `max_symbols` symbols (each with at most one tick per
//! known exchange) and `max_windows` band windows; the least recently updated is evicted
//! first and counted.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use lru::LruCache;
use spreadagg_model::bands::RollingQuantiles;
use spreadagg_model::formulas::cross_spread;
use spreadagg_model::wire::{Spread, Tick};

/// The engine's tunables (see `EngineConfig` for their documentation).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_staleness_ns: i64,
    pub band_points: usize,
    pub upper_quantile: f64,
    pub lower_quantile: f64,
    pub max_symbols: NonZeroUsize,
    pub max_windows: NonZeroUsize,
}

/// What the engine remembers of a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Latest {
    bid: f64,
    ask: f64,
    ts_ns: i64,
}

/// The tick is older than the latest one of its exchange and symbol; it was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded;

/// Latest ticks and band windows.
pub struct SpreadState {
    limits: Limits,
    /// symbol -> exchange -> latest tick.
    latest: LruCache<String, BTreeMap<String, Latest>>,
    /// (symbol, exchange A, exchange B) -> last `band_points` bid_bid values.
    windows: LruCache<(String, String, String), RollingQuantiles>,
    pub evicted_symbols: u64,
    pub evicted_windows: u64,
}

impl SpreadState {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            latest: LruCache::new(limits.max_symbols),
            windows: LruCache::new(limits.max_windows),
            evicted_symbols: 0,
            evicted_windows: 0,
        }
    }

    pub fn symbols(&self) -> usize {
        self.latest.len()
    }

    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// Records a (validated) tick and returns the spread points it makes: one per other
    /// exchange of the symbol whose latest tick is within `max_staleness` of this one. Times
    /// are the ingestors' receive times, the one clock every exchange has.
    ///
    /// A tick older than the exchange's latest (a redelivery, or reordering) changes nothing
    /// and makes no point: it would roll the state back and pair stale prices.
    pub fn on_tick(&mut self, tick: &Tick) -> Result<Vec<Spread>, Superseded> {
        let now = Latest {
            bid: tick.bid_px,
            ask: tick.ask_px,
            ts_ns: tick.recv_ts_ns,
        };
        if !self.latest.contains(&tick.symbol) && self.latest.len() == self.latest.cap().get() {
            self.evicted_symbols += 1;
        }
        let exchanges = self
            .latest
            .get_or_insert_mut_ref(&tick.symbol, BTreeMap::new);
        if exchanges
            .get(&tick.exchange)
            .is_some_and(|l| l.ts_ns > tick.recv_ts_ns)
        {
            return Err(Superseded);
        }
        let max_staleness = self.limits.max_staleness_ns.unsigned_abs();
        let others: Vec<(String, Latest)> = exchanges
            .iter()
            .filter(|(exchange, other)| {
                *exchange != &tick.exchange
                    && tick.recv_ts_ns.abs_diff(other.ts_ns) <= max_staleness
            })
            .map(|(exchange, other)| (exchange.clone(), *other))
            .collect();
        exchanges.insert(tick.exchange.clone(), now);

        Ok(others
            .into_iter()
            .map(|(other_exchange, other)| self.point(tick, now, &other_exchange, other))
            .collect())
    }

    fn point(&mut self, tick: &Tick, this: Latest, other_exchange: &str, other: Latest) -> Spread {
        let (exchange_a, a, exchange_b, b) = if tick.exchange.as_str() < other_exchange {
            (
                tick.exchange.clone(),
                this,
                other_exchange.to_owned(),
                other,
            )
        } else {
            (
                other_exchange.to_owned(),
                other,
                tick.exchange.clone(),
                this,
            )
        };
        let cross = cross_spread(a.bid, a.ask, b.bid, b.ask);
        let key = (tick.symbol.clone(), exchange_a.clone(), exchange_b.clone());
        if !self.windows.contains(&key) && self.windows.len() == self.windows.cap().get() {
            self.evicted_windows += 1;
        }
        let band_points = self.limits.band_points;
        let window = self
            .windows
            .get_or_insert_mut(key, || RollingQuantiles::new(band_points));
        window.push(cross.bid_bid_pct);
        let upper = window
            .quantile(self.limits.upper_quantile)
            .unwrap_or(cross.bid_bid_pct);
        let lower = window
            .quantile(self.limits.lower_quantile)
            .unwrap_or(cross.bid_bid_pct);
        #[allow(clippy::cast_precision_loss)]
        let staleness_ms = a.ts_ns.abs_diff(b.ts_ns) as f64 / 1e6;
        Spread {
            symbol: tick.symbol.clone(),
            exchange_a,
            exchange_b,
            bid_a: a.bid,
            ask_a: a.ask,
            bid_b: b.bid,
            ask_b: b.ask,
            ts_a_ns: a.ts_ns,
            ts_b_ns: b.ts_ns,
            a_to_b_pct: cross.a_to_b_pct,
            b_to_a_pct: cross.b_to_a_pct,
            bid_bid_pct: cross.bid_bid_pct,
            staleness_ms,
            triggered_by: tick.exchange.clone(),
            upper_band: upper,
            lower_band: lower,
            ts_ns: tick.recv_ts_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_staleness_ns: 5_000_000_000,
            band_points: 200,
            upper_quantile: 0.97,
            lower_quantile: 0.03,
            max_symbols: NonZeroUsize::new(100).expect("nonzero"),
            max_windows: NonZeroUsize::new(100).expect("nonzero"),
        }
    }

    fn tick(exchange: &str, symbol: &str, bid: f64, ask: f64, ts_s: f64) -> Tick {
        #[allow(clippy::cast_possible_truncation)]
        let ts = (ts_s * 1e9) as i64;
        Tick {
            exchange: exchange.into(),
            symbol: symbol.into(),
            bid_px: bid,
            ask_px: ask,
            recv_ts_ns: ts,
            ..Tick::default()
        }
    }

    fn points(s: &mut SpreadState, t: &Tick) -> Vec<Spread> {
        s.on_tick(t).expect("ticks in order")
    }

    #[test]
    fn first_tick_makes_nothing_second_exchange_makes_a_point() {
        let mut s = SpreadState::new(limits());
        assert!(points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 1.0)).is_empty());
        let p = points(&mut s, &tick("binance", "BTC-USDT", 100.1, 100.3, 1.5));
        assert_eq!(p.len(), 1);
        let p = &p[0];
        // A < B lexicographically: binance is A whichever side ticked.
        assert_eq!(
            (
                p.exchange_a.as_str(),
                p.exchange_b.as_str(),
                p.triggered_by.as_str()
            ),
            ("binance", "okx", "binance")
        );
        assert_eq!(
            (p.bid_a, p.ask_a, p.bid_b, p.ask_b),
            (100.1, 100.3, 100.0, 100.2)
        );
        assert!((p.a_to_b_pct - (100.0 / 100.3 - 1.0) * 100.0).abs() < 1e-12);
        assert!((p.b_to_a_pct - (100.1 / 100.2 - 1.0) * 100.0).abs() < 1e-12);
        assert!((p.bid_bid_pct - (100.1 / 100.0 - 1.0) * 100.0).abs() < 1e-12);
        assert!((p.staleness_ms - 500.0).abs() < 1e-9);
        assert_eq!(
            (p.upper_band, p.lower_band),
            (p.bid_bid_pct, p.bid_bid_pct),
            "one value: both bands are it"
        );
        assert_eq!(p.ts_ns, 1_500_000_000);
    }

    #[test]
    fn stale_other_side_makes_no_point() {
        let mut s = SpreadState::new(limits());
        points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 0.0));
        assert!(points(&mut s, &tick("binance", "BTC-USDT", 100.0, 100.2, 5.001)).is_empty());
        assert_eq!(
            points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 6.0)).len(),
            1,
            "binance is fresh again"
        );
    }

    #[test]
    fn staleness_is_symmetric() {
        let mut s = SpreadState::new(limits());
        points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 20.0));
        // binance's first tick is 6 s older than okx's latest: too far apart to pair.
        assert!(points(&mut s, &tick("binance", "BTC-USDT", 100.0, 100.2, 14.0)).is_empty());
    }

    #[test]
    fn an_older_tick_is_ignored_and_does_not_roll_the_state_back() {
        let mut s = SpreadState::new(limits());
        points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 10.0));
        points(&mut s, &tick("binance", "BTC-USDT", 100.0, 100.2, 10.1));
        // A redelivered okx tick from 20 s earlier: ignored, no point, state unchanged.
        assert_eq!(
            s.on_tick(&tick("okx", "BTC-USDT", 90.0, 90.2, -10.0)),
            Err(Superseded)
        );
        let p = points(&mut s, &tick("binance", "BTC-USDT", 100.0, 100.2, 10.2));
        assert_eq!(
            p[0].bid_b, 100.0,
            "okx's latest tick is still the newer one"
        );
    }

    #[test]
    fn symbols_do_not_mix_and_three_exchanges_make_two_points() {
        let mut s = SpreadState::new(limits());
        points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.2, 1.0));
        assert!(points(&mut s, &tick("binance", "ETH-USDT", 10.0, 10.1, 1.0)).is_empty());
        points(&mut s, &tick("bybit", "BTC-USDT", 100.0, 100.2, 1.0));
        let p = points(&mut s, &tick("binance", "BTC-USDT", 100.0, 100.2, 1.1));
        let pairs: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.exchange_a.as_str(), p.exchange_b.as_str()))
            .collect();
        assert_eq!(pairs, [("binance", "bybit"), ("binance", "okx")]);
    }

    #[test]
    fn bands_are_nearest_rank_over_the_window() {
        let mut s = SpreadState::new(limits());
        points(&mut s, &tick("okx", "BTC-USDT", 100.0, 100.5, 0.0));
        let mut last = None;
        for i in 1..=100 {
            // bid_bid = i / 100 %: bid_a = 100 * (1 + i / 10_000).
            let bid = 100.0 * (1.0 + f64::from(i) / 10_000.0);
            last = points(
                &mut s,
                &tick("binance", "BTC-USDT", bid, bid + 0.5, 0.001 * f64::from(i)),
            )
            .pop();
        }
        let p = last.expect("a point");
        assert!((p.upper_band - 0.97).abs() < 1e-9, "{}", p.upper_band);
        assert!((p.lower_band - 0.03).abs() < 1e-9, "{}", p.lower_band);
    }

    #[test]
    fn state_is_bounded_and_evictions_counted() {
        let mut l = limits();
        l.max_symbols = NonZeroUsize::new(3).expect("nonzero");
        l.max_windows = NonZeroUsize::new(2).expect("nonzero");
        let mut s = SpreadState::new(l);
        for i in 0..10 {
            let sym = format!("S{i}-USDT");
            points(&mut s, &tick("okx", &sym, 1.0, 1.1, 0.0));
            points(&mut s, &tick("binance", &sym, 1.0, 1.1, 0.0));
        }
        assert_eq!((s.symbols(), s.windows()), (3, 2));
        assert_eq!((s.evicted_symbols, s.evicted_windows), (7, 8));
    }
}
