use super::*;
use proptest::prelude::*;

const S: i64 = 1_000_000_000;

fn limits() -> Limits {
    Limits {
        max_staleness_ns: 5 * S,
        max_ticks: NonZeroUsize::new(1_000).expect("nonzero"),
        max_windows: NonZeroUsize::new(100).expect("nonzero"),
        window: WindowLimits {
            band_points: 200,
            upper_quantile: 0.97,
            lower_quantile: 0.03,
            max_points: 5_000,
            length_ns: 900 * S,
        },
        signal: SignalLimits {
            entry_pct: 0.35,
            exit_pct: 0.05,
            cooldown_ns: 10 * S,
            expiry_ns: 300 * S,
        },
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
fn bands_are_nearest_rank_over_the_band_buffer() {
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
    let chart = s
        .chart("BTC-USDT", ExchangeId::Binance, ExchangeId::Okx)
        .expect("window");
    assert_eq!(chart.points(), 100);
}

/// 20,000 windows through a bound of 10,000: the 10,000 most recently used remain, the
/// others are gone and counted.
#[test]
fn windows_are_bounded_least_recently_used_first() {
    let mut l = limits();
    l.max_windows = NonZeroUsize::new(10_000).expect("nonzero");
    l.max_ticks = NonZeroUsize::new(50_000).expect("nonzero");
    let mut s = SpreadState::new(l);
    for i in 0..20_000 {
        let sym = format!("S{i}-USDT");
        points(&mut s, &tick("okx", &sym, 1.0, 1.1, 0.0));
        points(&mut s, &tick("binance", &sym, 1.0, 1.1, 0.0));
        if i == 15_000 {
            // S5's window (evicted long ago) is made again: then more recent than 10_001..=15_000.
            points(&mut s, &tick("okx", "S5-USDT", 1.0, 1.1, 0.0));
        }
    }
    assert_eq!(s.windows(), 10_000);
    assert_eq!(s.evictions().windows, 10_001);
    let has = |i: usize| {
        s.chart(&format!("S{i}-USDT"), ExchangeId::Binance, ExchangeId::Okx)
            .is_some()
    };
    assert!(
        has(19_999) && has(10_001) && has(5),
        "recent and re-used windows kept"
    );
    assert!(
        !has(0) && !has(9_999) && !has(10_000),
        "the least recently used are gone"
    );
    assert_eq!(s.chart_points(), 10_000);
}

/// Ticks are bounded by (symbol, exchange) entries; symbols with neither a tick nor a window
/// are forgotten, so a rotating symbol set does not grow the state.
#[test]
fn latest_ticks_are_bounded_by_entries_and_symbols_freed() {
    let mut l = limits();
    l.max_ticks = NonZeroUsize::new(4).expect("nonzero");
    l.max_windows = NonZeroUsize::new(1).expect("nonzero");
    let mut s = SpreadState::new(l);
    for i in 0..10 {
        let sym = format!("S{i}-USDT");
        points(&mut s, &tick("okx", &sym, 1.0, 1.1, 0.0));
        points(&mut s, &tick("binance", &sym, 1.0, 1.1, 0.0));
    }
    assert_eq!((s.ticks(), s.windows()), (4, 1));
    assert_eq!(s.evictions().ticks, 16);
    assert_eq!(s.evictions().windows, 9);
    assert_eq!(
        s.symbols(),
        2,
        "S8 (two ticks) and S9 (two ticks, one window)"
    );
    // One symbol's three exchanges: the least recently updated of its ticks goes first.
    for (i, ex) in ["okx", "binance", "bybit", "kraken", "gateio"]
        .iter()
        .enumerate()
    {
        #[allow(clippy::cast_precision_loss)]
        points(&mut s, &tick(ex, "X-USDT", 1.0, 1.1, i as f64 * 0.1));
    }
    let p = points(&mut s, &tick("okx", "X-USDT", 1.0, 1.1, 1.0));
    let others: Vec<&str> = p
        .iter()
        .map(|p| {
            if p.exchange_a == "okx" {
                p.exchange_b.as_str()
            } else {
                p.exchange_a.as_str()
            }
        })
        .collect();
    assert_eq!(
        others,
        ["bybit", "gateio", "kraken"],
        "okx was evicted by gateio's tick, binance by okx's new one"
    );
}

#[test]
fn chart_points_are_bounded_by_count_and_age_and_counted() {
    let mut l = limits();
    l.window.max_points = 50;
    l.window.length_ns = 10 * S;
    l.max_staleness_ns = 60 * S;
    let mut s = SpreadState::new(l);
    let ms = 1_000_000;
    let at = |ex: &str, ts_ns: i64| Tick {
        exchange: ex.into(),
        symbol: "BTC-USDT".into(),
        bid_px: 1.0,
        ask_px: 1.1,
        recv_ts_ns: ts_ns,
        ..Tick::default()
    };
    points(&mut s, &at("okx", 0));
    for i in 0..100 {
        points(&mut s, &at("binance", i * 10 * ms));
    }
    assert_eq!(s.chart_points(), 50, "500 ms ..= 990 ms");
    assert_eq!(s.evictions().points_by_count, 50);
    points(&mut s, &at("okx", 10_500 * ms));
    assert_eq!(
        (s.evictions().points_by_count, s.evictions().points_by_age),
        (51, 0),
        "500 ms went for room; nothing is older than 10.5 s - 10 s"
    );
    points(&mut s, &at("binance", 10_600 * ms));
    let e = s.evictions();
    assert_eq!(
        (e.points_by_count, e.points_by_age),
        (52, 8),
        "510 ms for room, 520 ..= 590 ms by age"
    );
    assert_eq!(s.chart_points(), 42);
}

#[test]
fn lowering_the_caps_sheds_points_and_windows_at_once_and_raising_them_lets_them_grow() {
    let mut s = SpreadState::new(limits());
    for i in 0..50 {
        let sym = format!("S{i}-USDT");
        for k in 0..40 {
            points(&mut s, &tick("okx", &sym, 1.0, 1.1, f64::from(k) * 0.01));
            points(
                &mut s,
                &tick("binance", &sym, 1.0, 1.1, f64::from(k) * 0.01 + 0.005),
            );
        }
    }
    assert_eq!((s.windows(), s.chart_points()), (50, 50 * 79));
    let before = s.window_heap_bytes();
    let (dropped_points, dropped_windows) = s.set_caps(10, NonZeroUsize::new(20).expect("nonzero"));
    assert_eq!(dropped_windows, 30);
    assert_eq!(dropped_points, 20 * 69);
    assert_eq!(
        (s.windows(), s.chart_points(), s.caps()),
        (20, 200, (10, 20))
    );
    assert!(s.window_heap_bytes() < before / 2, "buffers given back");
    assert!(
        s.chart("S0-USDT", ExchangeId::Binance, ExchangeId::Okx)
            .is_none(),
        "least recently used went"
    );
    // New points respect the lowered cap; raised caps let windows grow again.
    points(&mut s, &tick("okx", "S49-USDT", 1.0, 1.1, 1.0));
    assert_eq!(
        s.chart("S49-USDT", ExchangeId::Binance, ExchangeId::Okx)
            .map(PairWindow::points),
        Some(10)
    );
    s.set_caps(5_000, NonZeroUsize::new(100).expect("nonzero"));
    points(&mut s, &tick("binance", "S49-USDT", 1.0, 1.1, 1.001));
    assert_eq!(
        s.chart("S49-USDT", ExchangeId::Binance, ExchangeId::Okx)
            .map(PairWindow::points),
        Some(11)
    );
    assert_eq!(
        s.evictions().windows,
        0,
        "shedding is not counted as eviction"
    );
}

#[test]
fn signals_follow_the_fresh_bids_of_a_symbol() {
    let mut s = SpreadState::new(limits());
    let mut out = Vec::new();
    let mut apply = |s: &mut SpreadState, ex: ExchangeId, bid: f64, t: f64| {
        #[allow(clippy::cast_possible_truncation)]
        let ts_ns = (t * 1e9) as i64;
        let input = TickIn {
            exchange: ex,
            symbol: "BTC-USDT",
            bid,
            ask: bid * 1.001,
            ts_ns,
        };
        s.apply(&input, &mut out).expect("in order")
    };
    assert_eq!(apply(&mut s, ExchangeId::Okx, 100.0, 0.0), None);
    let entry = apply(&mut s, ExchangeId::Binance, 100.4, 1.0).expect("0.4 % enters");
    assert_eq!(entry.kind, SignalKind::Entry);
    assert_eq!(
        (entry.deviation.cheap, entry.deviation.expensive),
        (ExchangeId::Okx, ExchangeId::Binance)
    );
    assert_eq!(s.active_signals(S), 1);
    // okx's tick goes stale (more than 5 s old): only binance is fresh, no deviation.
    assert_eq!(apply(&mut s, ExchangeId::Binance, 100.0, 7.0), None);
    let exit = apply(&mut s, ExchangeId::Okx, 100.01, 8.0).expect("0.01 % exits");
    assert_eq!(exit.kind, SignalKind::Exit);
    let wire = signal_to_wire("BTC-USDT", &exit);
    assert_eq!(
        (
            wire.cheap_exchange.as_str(),
            wire.expensive_exchange.as_str()
        ),
        ("binance", "okx")
    );
    assert_eq!(s.active_signals(8 * S), 0);
}

/// The sort-based definition of a band.
fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (v.len() as f64 * q).ceil() as usize;
    v[rank.max(1) - 1]
}

const NAMES: [&str; 4] = ["binance", "bybit", "okx", "kraken"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every point equals the formulas on the latest ticks of its two exchanges, and its bands
    /// equal the sort-based definition over the pair's last band_points values.
    #[test]
    fn points_equal_the_formulas_and_a_naive_replay(
        ticks in proptest::collection::vec(
            (0..4_usize, 0..3_usize, 1..2_000_u32, 1..50_u32, 0..3_000_i64), 1..400)
    ) {
        let mut l = limits();
        l.window.band_points = 20;
        let mut s = SpreadState::new(l);
        let mut latest: std::collections::HashMap<(usize, usize), (f64, f64, i64)> =
            std::collections::HashMap::new();
        let mut series: std::collections::HashMap<(usize, String, String), Vec<f64>> =
            std::collections::HashMap::new();
        let mut now = 0;
        for (ex, sym, bid, width, dt) in ticks {
            now += dt * 1_000_000;
            let bid = f64::from(bid) / 10.0;
            let ask = bid + f64::from(width) / 100.0;
            let symbol = format!("S{sym}-USDT");
            let t = Tick { exchange: NAMES[ex].into(), symbol: symbol.clone(), bid_px: bid,
                ask_px: ask, recv_ts_ns: now, ..Tick::default() };
            let made = s.on_tick(&t).expect("time only moves forward");
            let mut want = Vec::new();
            for (other, &(obid, oask, ots)) in latest.iter().filter(|((e, y), _)| *y == sym && *e != ex).map(|((e, _), v)| (*e, v)) {
                if now - ots <= 5 * S {
                    want.push((other, obid, oask, ots));
                }
            }
            latest.insert((ex, sym), (bid, ask, now));
            prop_assert_eq!(made.len(), want.len());
            for p in &made {
                let other = if p.exchange_a == NAMES[ex] { &p.exchange_b } else { &p.exchange_a };
                let (_, obid, oask, ots) = *want.iter().find(|w| NAMES[w.0] == other.as_str()).expect("pair");
                let (ba, aa, bb, ab, ta, tb) = if NAMES[ex] < other.as_str() {
                    (bid, ask, obid, oask, now, ots)
                } else {
                    (obid, oask, bid, ask, ots, now)
                };
                prop_assert_eq!((p.bid_a, p.ask_a, p.bid_b, p.ask_b, p.ts_a_ns, p.ts_b_ns), (ba, aa, bb, ab, ta, tb));
                prop_assert_eq!(p.a_to_b_pct, (bb / aa - 1.0) * 100.0);
                prop_assert_eq!(p.b_to_a_pct, (ba / ab - 1.0) * 100.0);
                prop_assert_eq!(p.bid_bid_pct, (ba / bb - 1.0) * 100.0);
                let w = series.entry((sym, p.exchange_a.clone(), p.exchange_b.clone())).or_default();
                w.push(p.bid_bid_pct);
                let tail = &w[w.len().saturating_sub(20)..];
                prop_assert_eq!(p.upper_band, nearest_rank(tail, 0.97));
                prop_assert_eq!(p.lower_band, nearest_rank(tail, 0.03));
            }
        }
    }
}
