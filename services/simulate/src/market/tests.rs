//! Unit tests of the market: universe lookups, the model's statistics, and the pacing task.

use std::collections::HashMap;

use spreadagg_model::ExchangeId;

use super::*;
use crate::format::pow10;

fn universe(symbols: &[&str]) -> Arc<Universe> {
    let symbols: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
    Arc::new(Universe::new(&symbols, &[ExchangeId::Binance, ExchangeId::Okx]).expect("universe"))
}

fn model(seed: u64) -> Model {
    let symbols: Vec<&str> = DEFAULT_SYMBOLS.to_vec();
    Model::new(universe(&symbols), Duration::from_millis(100), 0.3, seed)
}

fn step(m: &mut Model) -> Step {
    m.step(0).expect("a model with slots always steps")
}

fn price(inst: &Instrument, ticks: i64) -> f64 {
    ticks as f64 / pow10(inst.price_decimals) as f64
}

#[test]
fn universe_refuses_bad_symbol_lists() {
    let ex = [ExchangeId::Binance];
    for (bad, why) in [
        (vec!["btc-usdt"], "not canonical"),
        (vec!["BTC-USDT", "BTC-USDT"], "twice"),
        (vec!["AB-CUSDT", "ABC-USDT"], "same Binance spelling"),
    ] {
        let bad: Vec<String> = bad.into_iter().map(str::to_owned).collect();
        assert!(Universe::new(&bad, &ex).is_err(), "{why}");
    }
}

#[test]
fn lookups_use_each_exchange_spelling() {
    let u = universe(&["BTC-USDT", "ETH-BTC"]);
    assert_eq!(u.by_canonical("ETH-BTC"), Some(1));
    assert_eq!(u.by_concat("BTCUSDT"), Some(0));
    assert_eq!(u.by_stream("ethbtc"), Some(1));
    assert_eq!(u.by_stream("BTCUSDT"), None, "stream names are lower case");
    assert_eq!(u.exchanges, vec![ExchangeId::Binance, ExchangeId::Okx]);
}

#[test]
fn cross_pairs_are_consistent_with_their_legs() {
    let u = universe(&["ETH-BTC", "BTC-USDT", "ETH-USDT"]);
    let mut m = Model::new(u.clone(), Duration::from_millis(100), 0.0, 7);
    let t = 3_600_000_000; // an hour in
    let eth_btc = m.common_mid(0, t);
    let btc = m.common_mid(1, t);
    let eth = m.common_mid(2, t);
    assert!(
        (eth_btc - eth / btc).abs() / eth_btc < 1e-3,
        "{eth_btc} vs {}",
        eth / btc
    );
}

#[test]
fn unknown_symbols_get_a_stable_plausible_listing() {
    let a = universe(&["FOO-USDT", "FOO-BTC"]);
    let b = universe(&["FOO-USDT"]);
    assert_eq!(
        a.instruments[0].price_decimals,
        b.instruments[0].price_decimals
    );
    let foo_btc = &a.instruments[1];
    assert!(
        foo_btc.price_decimals >= 5,
        "a BTC-quoted price needs fine ticks"
    );
    assert!(a.instruments[0].quote_volume > 1e4);
}

#[test]
fn same_seed_same_market() {
    let mut a = model(42);
    let mut b = model(42);
    let mut c = model(43);
    let mut differs = false;
    for _ in 0..2_000 {
        let (x, y, z) = (step(&mut a), step(&mut b), step(&mut c));
        assert_eq!(x.quote, y.quote);
        assert_eq!(x.trade, y.trade);
        differs |= x.quote != z.quote;
    }
    assert!(differs, "another seed gives another market");
}

#[test]
fn books_are_positive_uncrossed_and_sized() {
    let mut m = model(1);
    for _ in 0..50_000 {
        let step = step(&mut m);
        let b = step.quote.book;
        assert!(b.bid > 0 && b.bid < b.ask, "{b:?}");
        assert!(b.bid_qty > 0 && b.ask_qty > 0, "{b:?}");
        if let Some(t) = step.trade {
            assert!(t.price == b.bid || t.price == b.ask);
            assert!(t.qty > 0);
            assert_eq!(t.taker_buy, t.price == b.ask);
        }
    }
}

#[test]
fn sequences_and_trade_ids_increase_per_slot() {
    let mut m = model(2);
    let mut last_seq: HashMap<(usize, usize), u64> = HashMap::new();
    let mut last_trade: HashMap<(usize, usize), u64> = HashMap::new();
    for _ in 0..20_000 {
        let step = step(&mut m);
        let key = (step.exchange, step.quote.symbol);
        let prev = last_seq.insert(key, step.quote.seq);
        assert!(prev.is_none_or(|p| step.quote.seq > p));
        if let Some(t) = step.trade {
            assert!(t.seq > step.quote.seq);
            last_seq.insert(key, t.seq);
            let prev = last_trade.insert(key, t.trade_id);
            assert!(prev.is_none_or(|p| t.trade_id == p + 1));
        }
    }
}

#[test]
fn trades_follow_the_probability() {
    let mut m = model(3);
    let n = 20_000;
    let trades = (0..n).filter(|_| step(&mut m).trade.is_some()).count();
    let share = trades as f64 / f64::from(n);
    assert!((0.27..0.33).contains(&share), "{share}");
}

#[test]
fn slots_come_due_about_once_per_interval() {
    let mut m = model(4);
    let slots = m.slots.len() as u64;
    let mut t = 0;
    for _ in 0..(slots * 100) {
        t = m.peek_due();
        step(&mut m);
    }
    // 100 updates per slot at 100 ms (jittered ±50 %) take about 10 s of simulated time.
    let secs = t as f64 / 1e6;
    assert!((8.5..11.5).contains(&secs), "{secs}");
}

/// Cross-exchange spreads: a few bps typically, mean-reverting, occasionally wide.
#[test]
fn cross_exchange_spreads_look_real() {
    let mut m = Model::new(universe(&["BTC-USDT"]), Duration::from_millis(100), 0.3, 5);
    let n_symbols = m.universe.instruments.len();
    let mut mids = vec![[0.0f64; 2]; n_symbols];
    let mut diffs_bps: Vec<f64> = Vec::new();
    // About 3 simulated hours.
    while m.peek_due() < 3 * 3_600_000_000 {
        let step = step(&mut m);
        let inst = &m.universe.instruments[step.quote.symbol];
        let b = step.quote.book;
        let mid = (price(inst, b.bid) + price(inst, b.ask)) / 2.0;
        mids[step.quote.symbol][step.exchange] = mid;
        let [x, y] = mids[step.quote.symbol];
        if x > 0.0 && y > 0.0 {
            diffs_bps.push((x / y - 1.0) * 1e4);
        }
    }
    let n = diffs_bps.len() as f64;
    let mean_abs = diffs_bps.iter().map(|d| d.abs()).sum::<f64>() / n;
    let wide = diffs_bps.iter().filter(|d| d.abs() > 15.0).count() as f64 / n;
    let max = diffs_bps.iter().fold(0.0f64, |a, d| a.max(d.abs()));
    assert!(
        mean_abs > 0.3 && mean_abs < 8.0,
        "typical |spread| {mean_abs} bps"
    );
    assert!(wide < 0.1, "wide most of the time: {wide}");
    assert!(max > 15.0 && max < 150.0, "widest {max} bps");
}

#[test]
fn volumes_differ_by_symbol_and_exchange() {
    let m = model(6);
    let views = m.snapshot(0);
    let n = m.universe.instruments.len();
    let idx = |s: &str| m.universe.by_canonical(s).expect("listed");
    let btc = views[idx("BTC-USDT")].quote.stats.quote_volume;
    let nuls = views[idx("NULS-USDT")].quote.stats.quote_volume;
    let okx_btc = views[n + idx("BTC-USDT")].quote.stats.quote_volume;
    assert!(btc > 1e9 && nuls < 1e5, "{btc} {nuls}");
    assert!(okx_btc < btc, "OKX trades less than Binance");
    for v in &views {
        let s = v.quote.stats;
        assert!(
            s.low <= s.high && s.open > 0 && s.base_volume > 0.0,
            "{s:?}"
        );
    }
}

#[test]
fn rolling_volumes_hold_steady_over_hours() {
    let mut m = Model::new(
        universe(&["BTC-USDT", "NULS-USDT"]),
        Duration::from_millis(100),
        0.3,
        10,
    );
    let before: Vec<f64> = m
        .snapshot(0)
        .iter()
        .map(|v| v.quote.stats.quote_volume)
        .collect();
    while m.peek_due() < 2 * 3_600_000_000 {
        step(&mut m);
    }
    for (b, v) in before.iter().zip(m.snapshot(0)) {
        let ratio = v.quote.stats.quote_volume / b;
        assert!(
            (0.8..1.25).contains(&ratio),
            "{b} became {}",
            v.quote.stats.quote_volume
        );
    }
}

#[test]
fn slots_are_exchange_major() {
    let m = model(8);
    let n = m.universe.instruments.len();
    assert_eq!((m.slots[n + 2].exchange, m.slots[n + 2].symbol), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn run_broadcasts_until_stopped() {
    let u = universe(&["BTC-USDT"]);
    let m = Model::new(u, Duration::from_millis(100), 1.0, 9);
    let board = Arc::new(Board::new(1, m.snapshot(0)));
    let (tx_a, mut rx_a) = broadcast::channel(64);
    let (tx_b, mut rx_b) = broadcast::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(m, board.clone(), vec![tx_a, tx_b], stop.clone()));
    let mut quotes = 0;
    let mut trades = 0;
    while quotes < 10 {
        match rx_a.recv().await.expect("event") {
            MarketEvent::Quote(_) => quotes += 1,
            MarketEvent::Trade(_) => trades += 1,
        }
    }
    assert!(trades >= 9, "probability 1 trades on every update");
    assert!(matches!(rx_b.recv().await, Ok(MarketEvent::Quote(_))));
    assert!(
        board
            .get(0, 0)
            .is_some_and(|v| v.last_trade_ts_us.is_some())
    );
    stop.cancel();
    task.await.expect("market task");
}
