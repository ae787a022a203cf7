//! The deterministic market model: a common factor and per-asset walks, each exchange's
//! mean-reverting basis with rare decaying jumps, integer books, trades and 24 h statistics.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::universe::{Motion, PEG_HALF_LIFE_S, PEG_STD, venue};
use super::{Book, Quote, SlotView, Stats, Step, Trade, Universe};
use crate::format::pow10;

/// Seconds in a day, for turning daily volatility into per-second volatility.
pub(super) const DAY_S: f64 = 86_400.0;
/// Daily volatility of the common crypto market factor.
pub(super) const MARKET_DAILY_VOL: f64 = 0.025;
/// Mean time between basis jumps on one (exchange, symbol), in seconds.
const JUMP_MEAN_INTERVAL_S: f64 = 900.0;
/// Size range of a basis jump, in basis points (either sign).
const JUMP_BPS: (f64, f64) = (20.0, 60.0);
/// Half-life range of a jump's decay, in seconds.
const JUMP_HALF_LIFE_S: (f64, f64) = (3.0, 15.0);
/// Half-life of an exchange's basis returning to its mean, in seconds.
const BASIS_HALF_LIFE_S: f64 = 20.0;

/// A value that evolves lazily: advanced to a time only when someone looks.
#[derive(Debug, Clone, Copy)]
struct Lazy {
    value: f64,
    t_us: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) exchange: usize,
    pub(super) symbol: usize,
    basis: Lazy,
    basis_mean: f64,
    basis_std: f64,
    jump: f64,
    jump_theta: f64,
    half_spread: f64,
    /// Mean trade size in the quote currency, so the trade flow sustains the 24 h volume.
    trade_notional: f64,
    seq: u64,
    book: Book,
    stats: Stats,
    last_mid: f64,
}

/// The deterministic market model. Not shared: [`run`] owns it.
#[derive(Debug)]
pub(crate) struct Model {
    rng: StdRng,
    pub(super) universe: Arc<Universe>,
    factor: Lazy,
    idio: Vec<Lazy>,
    pub(super) slots: Vec<Slot>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    interval_us: u64,
    trade_probability: f64,
}

/// A standard normal draw (Box-Muller; one of the pair is enough here).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn seconds(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1e6
}

/// Advances a driftless random walk with `sigma` per sqrt(second).
fn walk(x: &mut Lazy, to_us: u64, sigma: f64, rng: &mut StdRng) {
    let dt = seconds(x.t_us, to_us);
    if dt > 0.0 && sigma > 0.0 {
        x.value += sigma * dt.sqrt() * normal(rng);
    }
    x.t_us = x.t_us.max(to_us);
}

/// Advances an Ornstein-Uhlenbeck process exactly: mean `mean`, rate `theta` per second,
/// stationary standard deviation `std`.
fn revert(x: &mut Lazy, to_us: u64, mean: f64, theta: f64, std: f64, rng: &mut StdRng) {
    let dt = seconds(x.t_us, to_us);
    if dt > 0.0 {
        let decay = (-theta * dt).exp();
        let noise = std * (1.0 - decay * decay).max(0.0).sqrt();
        x.value = mean + (x.value - mean) * decay + noise * normal(rng);
    }
    x.t_us = x.t_us.max(to_us);
}

impl Model {
    /// A market at simulated time zero: every slot quoted once, each first due at a random
    /// point within the first interval.
    pub fn new(
        universe: Arc<Universe>,
        interval: Duration,
        trade_probability: f64,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let idio = universe
            .assets
            .iter()
            .map(|_| Lazy {
                value: 0.0,
                t_us: 0,
            })
            .collect();
        let n_symbols = universe.instruments.len();
        let mut slots = Vec::with_capacity(universe.exchanges.len() * n_symbols);
        let mut open_ratios = Vec::with_capacity(universe.exchanges.len() * n_symbols);
        for (e, exchange) in universe.exchanges.iter().enumerate() {
            let v = venue(*exchange);
            for (s, inst) in universe.instruments.iter().enumerate() {
                let basis_std = v.basis_std_bps * 1e-4;
                let basis_mean = 0.5 * basis_std * normal(&mut rng);
                let basis = basis_mean + basis_std * normal(&mut rng);
                let spread_jitter = 0.8 + 0.45 * rng.random::<f64>();
                let volume_jitter = 0.8 + 0.45 * rng.random::<f64>();
                let quote_volume = inst.quote_volume * v.volume_share * volume_jitter;
                let half_spread = inst.half_spread_bps * v.spread_factor * spread_jitter * 1e-4;
                let trades_per_day = trade_probability * DAY_S * 1e6 / interval_us as f64;
                let trade_notional = quote_volume / trades_per_day.max(1.0);
                // The 24 h window opened somewhere within a day's move of today's price.
                let day_vol = universe.assets[inst.base_asset].daily_vol.max(0.002);
                open_ratios.push((day_vol * normal(&mut rng)).exp());
                slots.push(Slot {
                    exchange: e,
                    symbol: s,
                    basis: Lazy {
                        value: basis,
                        t_us: 0,
                    },
                    basis_mean,
                    basis_std,
                    jump: 0.0,
                    jump_theta: 0.0,
                    half_spread,
                    trade_notional,
                    seq: 1_000_000 + rng.random_range(0..50_000_000),
                    book: Book {
                        bid: 1,
                        bid_qty: 1,
                        ask: 2,
                        ask_qty: 1,
                        bid_orders: 1,
                        ask_orders: 1,
                    },
                    stats: Stats {
                        open: 0,
                        high: 0,
                        low: 0,
                        last: 0,
                        last_qty: 0,
                        quote_volume,
                        base_volume: 0.0,
                        trade_count: 0,
                        last_trade_id: 10_000_000 + rng.random_range(0..400_000_000),
                    },
                    last_mid: 0.0,
                });
            }
        }
        let mut model = Self {
            rng,
            universe,
            factor: Lazy {
                value: 0.0,
                t_us: 0,
            },
            idio,
            slots,
            due: BinaryHeap::new(),
            interval_us,
            trade_probability,
        };
        for (i, open_ratio) in open_ratios.into_iter().enumerate() {
            let mid = model.mid(i, 0);
            let book = model.make_book(i, mid);
            let inst = &model.universe.instruments[model.slots[i].symbol];
            let scale = pow10(inst.price_decimals) as f64;
            let mid_ticks = ((book.bid + book.ask) / 2).max(1);
            let open = ((mid / open_ratio) * scale).round().max(1.0) as i64;
            let stats = &mut model.slots[i].stats;
            stats.open = open;
            stats.last = mid_ticks;
            stats.high = open.max(mid_ticks) + (open.max(mid_ticks) / 200);
            stats.low = (open.min(mid_ticks) - (open.min(mid_ticks) / 200)).max(1);
            stats.base_volume = stats.quote_volume / mid;
            // A day of trades at the configured rate (at least one a minute, as on any listed
            // pair), ending at the current trade id.
            let per_day = model.trade_probability * DAY_S * 1e6 / model.interval_us as f64;
            stats.trade_count = (per_day.max(1_440.0) as u64).clamp(1, stats.last_trade_id);
            stats.last_qty = book.bid_qty.min(book.ask_qty).max(1);
            model.slots[i].book = book;
            model.slots[i].last_mid = mid;
            let first = model.rng.random_range(0..model.interval_us);
            model.due.push(Reverse((first, i)));
        }
        model
    }

    /// The shared mid of a symbol (before any exchange's basis) at simulated time `t_us`.
    pub(super) fn common_mid(&mut self, symbol: usize, t_us: u64) -> f64 {
        let market_sigma = MARKET_DAILY_VOL / DAY_S.sqrt();
        walk(&mut self.factor, t_us, market_sigma, &mut self.rng);
        let inst = &self.universe.instruments[symbol];
        let (b, q) = (inst.base_asset, inst.quote_asset);
        let mut log_price = 0.0;
        for (asset, sign) in [(b, 1.0), (q, -1.0)] {
            let a = &self.universe.assets[asset];
            let idio = &mut self.idio[asset];
            let exposure = match a.motion {
                Motion::Fixed => 0.0,
                Motion::Peg => {
                    let theta = std::f64::consts::LN_2 / PEG_HALF_LIFE_S;
                    revert(idio, t_us, 0.0, theta, PEG_STD, &mut self.rng);
                    0.0
                }
                Motion::Walk { beta, own_sigma } => {
                    walk(idio, t_us, own_sigma, &mut self.rng);
                    beta * self.factor.value
                }
            };
            log_price += sign * (a.log_usd + exposure + idio.value);
        }
        log_price.exp()
    }

    /// One exchange's mid for a slot: the common mid moved by its basis and any jump.
    fn mid(&mut self, slot: usize, t_us: u64) -> f64 {
        let symbol = self.slots[slot].symbol;
        let common = self.common_mid(symbol, t_us);
        let theta = std::f64::consts::LN_2 / BASIS_HALF_LIFE_S;
        let s = &mut self.slots[slot];
        let dt = seconds(s.basis.t_us, t_us);
        // Jumps: decay the current one, then maybe start a new one (Poisson arrivals).
        s.jump *= (-s.jump_theta * dt).exp();
        if dt > 0.0 && self.rng.random::<f64>() < 1.0 - (-dt / JUMP_MEAN_INTERVAL_S).exp() {
            let size = self.rng.random_range(JUMP_BPS.0..JUMP_BPS.1) * 1e-4;
            let sign = if self.rng.random::<bool>() { 1.0 } else { -1.0 };
            let half_life = self
                .rng
                .random_range(JUMP_HALF_LIFE_S.0..JUMP_HALF_LIFE_S.1);
            s.jump += sign * size;
            s.jump_theta = std::f64::consts::LN_2 / half_life;
        }
        revert(
            &mut s.basis,
            t_us,
            s.basis_mean,
            theta,
            s.basis_std,
            &mut self.rng,
        );
        common * (s.basis.value + s.jump).exp()
    }

    /// Quotes around `mid` with the slot's half-spread (jittered), on the tick grid.
    fn make_book(&mut self, slot: usize, mid: f64) -> Book {
        let s = &self.slots[slot];
        let inst = &self.universe.instruments[s.symbol];
        let scale = pow10(inst.price_decimals) as f64;
        let lots = pow10(inst.qty_decimals) as f64;
        let half = s.half_spread * (0.25 * normal(&mut self.rng)).exp();
        let bid = ((mid * (1.0 - half)) * scale).floor().max(1.0) as i64;
        let ask = (((mid * (1.0 + half)) * scale).ceil() as i64).max(bid + 1);
        let top = inst.top_qty;
        let size =
            |rng: &mut StdRng| ((top * (0.6 * normal(rng)).exp()) * lots).round().max(1.0) as i64;
        let bid_qty = size(&mut self.rng);
        let ask_qty = size(&mut self.rng);
        Book {
            bid,
            bid_qty,
            ask,
            ask_qty,
            bid_orders: self.rng.random_range(1..=24),
            ask_orders: self.rng.random_range(1..=24),
        }
    }

    /// Simulated time at which the next slot is due, in microseconds since start.
    pub fn peek_due(&self) -> u64 {
        self.due.peek().map_or(u64::MAX, |Reverse((t, _))| *t)
    }

    /// Every slot's current quote, for the board before the first step.
    pub fn snapshot(&self, ts_us: i64) -> Vec<SlotView> {
        self.slots
            .iter()
            .map(|s| SlotView {
                quote: Quote {
                    symbol: s.symbol,
                    seq: s.seq,
                    book: s.book,
                    stats: s.stats,
                    ts_us,
                },
                last_trade_ts_us: None,
            })
            .collect()
    }

    /// Runs the next due slot: a new quote, maybe a trade against it, and the slot's next due
    /// time (the interval jittered by ±50 %). `ts_us` stamps the events. `None` only for a
    /// model without slots.
    pub fn step(&mut self, ts_us: i64) -> Option<Step> {
        let Reverse((t_us, slot)) = self.due.pop()?;
        // The 24 h volume is a rolling window: what traded a day ago falls out of it.
        let since = seconds(self.slots[slot].basis.t_us, t_us);
        let keep = (-since / DAY_S).exp();
        let mid = self.mid(slot, t_us);
        let book = self.make_book(slot, mid);
        let trade_roll: f64 = self.rng.random();
        let side_roll: f64 = self.rng.random();
        let size_draw = normal(&mut self.rng);
        let seq_step = self.rng.random_range(1..=30);
        let jitter: f64 = self.rng.random_range(0.5..1.5);

        let s = &mut self.slots[slot];
        let inst = &self.universe.instruments[s.symbol];
        s.stats.quote_volume *= keep;
        s.stats.base_volume *= keep;
        s.seq += seq_step;
        s.book = book;
        let mid_ticks = (book.bid + book.ask) / 2;
        s.stats.high = s.stats.high.max(mid_ticks);
        s.stats.low = s.stats.low.min(mid_ticks).max(1);
        let quote = Quote {
            symbol: s.symbol,
            seq: s.seq,
            book,
            stats: s.stats,
            ts_us,
        };
        let mut trade = None;
        if trade_roll < self.trade_probability {
            // Takers lean the way the price just moved.
            let drift = ((mid - s.last_mid) / s.last_mid * 2_000.0).clamp(-0.3, 0.3);
            let taker_buy = side_roll < 0.5 + drift;
            let price = if taker_buy { book.ask } else { book.bid };
            let lots = pow10(inst.qty_decimals) as f64;
            // Log-normal sizes whose mean is the slot's trade notional (e^(1/2) is the mean
            // of e^N).
            let notional = s.trade_notional * (size_draw - 0.5).exp();
            let qty = ((notional / mid) * lots).round().max(1.0) as i64;
            s.seq += 1;
            s.stats.last_trade_id += 1;
            s.stats.trade_count += 1;
            s.stats.last = price;
            s.stats.last_qty = qty;
            s.stats.high = s.stats.high.max(price);
            s.stats.low = s.stats.low.min(price);
            let px = price as f64 / pow10(inst.price_decimals) as f64;
            let q = qty as f64 / lots;
            s.stats.quote_volume += px * q;
            s.stats.base_volume += q;
            trade = Some(Trade {
                symbol: s.symbol,
                seq: s.seq,
                trade_id: s.stats.last_trade_id,
                price,
                qty,
                taker_buy,
                ts_us,
            });
        }
        s.last_mid = mid;
        let exchange = s.exchange;
        let next = t_us.saturating_add(((self.interval_us as f64) * jitter).max(1.0) as u64);
        self.due.push(Reverse((next, slot)));
        // The quote the board shows carries the trade's effect on the statistics.
        let quote = Quote {
            stats: self.slots[slot].stats,
            ..quote
        };
        Some(Step {
            exchange,
            quote,
            trade,
        })
    }
}
