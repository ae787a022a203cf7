//! The one market every simulated exchange quotes from.
//!
//! Prices live in USD per asset, so every pair is consistent with every other (`ETH-BTC` is
//! `ETH / BTC`, `BTC-USDC` tracks `BTC-USDT`): a common market factor plus an idiosyncratic
//! random walk per crypto asset, and a tight mean-reverting peg per stablecoin. Each exchange
//! quotes each symbol around that shared mid with its own basis, an Ornstein-Uhlenbeck process
//! of a few basis points (so cross-exchange spreads are small and mean-reverting), plus rare
//! jumps of 20-60 bps that decay over seconds (so spread signals fire now and then), and with
//! its own half-spread. Books are integer ticks and lots, so bid < ask and both are positive by
//! construction.
//!
//! [`Model`] is pure and deterministic for a seed: each (exchange, symbol) slot is due at its
//! own jittered time on a simulated clock, and all randomness comes from one seeded generator
//! in that order. [`run`] paces the model against the wall clock and broadcasts each step on
//! the exchange's channel; a slow session lags and skips (counted), the market never waits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spreadagg_model::{ExchangeId, Symbol};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::format::pow10;

/// Seconds in a day, for turning daily volatility into per-second volatility.
const DAY_S: f64 = 86_400.0;
/// Daily volatility of the common crypto market factor.
const MARKET_DAILY_VOL: f64 = 0.025;
/// Mean time between basis jumps on one (exchange, symbol), in seconds.
const JUMP_MEAN_INTERVAL_S: f64 = 900.0;
/// Size range of a basis jump, in basis points (either sign).
const JUMP_BPS: (f64, f64) = (20.0, 60.0);
/// Half-life range of a jump's decay, in seconds.
const JUMP_HALF_LIFE_S: (f64, f64) = (3.0, 15.0);
/// Half-life of an exchange's basis returning to its mean, in seconds.
const BASIS_HALF_LIFE_S: f64 = 20.0;
/// If the pacing task falls further behind than this (a suspended process, a starved
/// runtime), it skips ahead instead of bursting the backlog at clients.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// A crypto asset or currency with a USD price: `(name, usd price, daily volatility)`.
/// Volatility 0 marks a stablecoin (mean-reverting peg); `USD` itself never moves.
const ASSETS: &[(&str, f64, f64)] = &[
    ("BTC", 67_250.0, 0.025),
    ("ETH", 3_150.0, 0.035),
    ("SOL", 152.0, 0.05),
    ("XRP", 0.523, 0.045),
    ("DOGE", 0.1482, 0.06),
    ("BNB", 585.0, 0.03),
    ("ADA", 0.441, 0.05),
    ("LTC", 82.0, 0.04),
    ("TRX", 0.121, 0.03),
    ("AVAX", 35.0, 0.055),
    ("LINK", 14.5, 0.05),
    ("DOT", 7.1, 0.05),
    ("NULS", 0.312, 0.08),
    ("USDT", 1.0, 0.0),
    ("USDC", 1.0, 0.0),
    ("FDUSD", 1.0, 0.0),
    ("DAI", 1.0, 0.0),
    ("USD", 1.0, 0.0),
    ("EUR", 1.08, 0.004),
    ("TRY", 0.031, 0.006),
];

/// Listings we know: price and quantity decimals, 24 h quote volume on Binance (in the quote
/// currency), typical half-spread in bps, typical top-of-book size in base units.
const LISTINGS: &[(&str, u32, u32, f64, f64, f64)] = &[
    ("BTC-USDT", 2, 5, 1.8e9, 0.01, 2.0),
    ("ETH-USDT", 2, 4, 9.5e8, 0.05, 25.0),
    ("SOL-USDT", 2, 3, 3.8e8, 0.4, 180.0),
    ("XRP-USDT", 4, 0, 1.6e8, 1.0, 25_000.0),
    ("DOGE-USDT", 5, 0, 1.1e8, 1.5, 150_000.0),
    ("BNB-USDT", 2, 3, 1.2e8, 0.8, 40.0),
    ("ADA-USDT", 4, 1, 4.5e7, 1.5, 30_000.0),
    ("BTC-USDC", 2, 5, 2.6e8, 0.05, 0.8),
    ("ETH-BTC", 5, 4, 950.0, 1.2, 35.0),
    ("NULS-USDT", 4, 2, 4.0e4, 12.0, 900.0),
];

/// The default symbol set: the majors, a USDC pair, a non-USD quote and a low-volume pair.
pub(crate) const DEFAULT_SYMBOLS: &[&str] = &[
    "BTC-USDT",
    "ETH-USDT",
    "SOL-USDT",
    "XRP-USDT",
    "DOGE-USDT",
    "BNB-USDT",
    "BTC-USDC",
    "ETH-BTC",
    "NULS-USDT",
];

/// How one exchange differs from the others.
#[derive(Debug, Clone, Copy)]
struct Venue {
    /// Share of the reference (Binance) 24 h volume.
    volume_share: f64,
    /// Multiplier on the symbol's typical half-spread.
    spread_factor: f64,
    /// Stationary standard deviation of the basis, in bps.
    basis_std_bps: f64,
}

fn venue(exchange: ExchangeId) -> Venue {
    match exchange {
        ExchangeId::Binance => Venue {
            volume_share: 1.0,
            spread_factor: 1.0,
            basis_std_bps: 1.5,
        },
        ExchangeId::Okx => Venue {
            volume_share: 0.35,
            spread_factor: 1.4,
            basis_std_bps: 2.0,
        },
        ExchangeId::Htx => Venue {
            volume_share: 0.15,
            spread_factor: 1.6,
            basis_std_bps: 2.5,
        },
        ExchangeId::Kucoin => Venue {
            volume_share: 0.12,
            spread_factor: 1.7,
            basis_std_bps: 2.5,
        },
        ExchangeId::Mexc => Venue {
            volume_share: 0.25,
            spread_factor: 1.5,
            basis_std_bps: 3.0,
        },
        _ => Venue {
            volume_share: 0.2,
            spread_factor: 1.8,
            basis_std_bps: 2.5,
        },
    }
}

/// One simulated instrument, as every exchange lists it.
#[derive(Debug, Clone)]
pub(crate) struct Instrument {
    pub symbol: Symbol,
    /// `BTCUSDT`: Binance's REST and payload spelling.
    pub concat: String,
    /// `btcusdt`: Binance's stream-name spelling.
    pub stream: String,
    /// Price step is `10^-price_decimals`.
    pub price_decimals: u32,
    /// Quantity step is `10^-qty_decimals`.
    pub qty_decimals: u32,
    /// 24 h volume on the reference exchange, in the quote currency.
    pub quote_volume: f64,
    half_spread_bps: f64,
    top_qty: f64,
    base_asset: usize,
    quote_asset: usize,
}

/// How an asset's USD price moves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Motion {
    /// The numeraire (`USD`).
    Fixed,
    /// A stablecoin: a peg of about 2 bps, reverting over ten minutes.
    Peg,
    /// A random walk: `beta` times the common market factor plus an independent part with
    /// `own_sigma` per sqrt(second).
    Walk { beta: f64, own_sigma: f64 },
}

#[derive(Debug, Clone)]
struct Asset {
    log_usd: f64,
    daily_vol: f64,
    motion: Motion,
}

impl Asset {
    fn new(name: &str, usd: f64, daily_vol: f64) -> Self {
        let motion = if name == "USD" {
            Motion::Fixed
        } else if daily_vol == 0.0 {
            Motion::Peg
        } else {
            // Fiat currencies do not follow crypto; everything else mostly does.
            let beta = if matches!(name, "EUR" | "TRY") {
                0.0
            } else {
                1.0
            };
            let own = (daily_vol.powi(2) - (beta * MARKET_DAILY_VOL).powi(2))
                .max((0.3 * daily_vol).powi(2))
                .sqrt();
            Motion::Walk {
                beta,
                own_sigma: own / DAY_S.sqrt(),
            }
        };
        Self {
            log_usd: usd.ln(),
            daily_vol,
            motion,
        }
    }
}

/// Standard deviation of a stablecoin's peg, in log units (about 2 bps).
const PEG_STD: f64 = 2e-4;
/// Half-life of a stablecoin's peg deviation, in seconds.
const PEG_HALF_LIFE_S: f64 = 600.0;

/// The simulated exchanges and instruments, with each exchange's name lookups.
#[derive(Debug)]
pub(crate) struct Universe {
    pub instruments: Vec<Instrument>,
    pub exchanges: Vec<ExchangeId>,
    assets: Vec<Asset>,
    by_canonical: HashMap<String, usize>,
    by_concat: HashMap<String, usize>,
    by_stream: HashMap<String, usize>,
}

/// FNV-1a: a stable hash, so an unknown symbol gets the same made-up listing on every run.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A number in `[0, 1)` from bits `shift..shift+16` of a hash.
fn unit(h: u64, shift: u32) -> f64 {
    f64::from(((h >> shift) & 0xffff) as u16) / 65_536.0
}

fn clamp_decimals(x: f64) -> u32 {
    // Finite by construction (logs of positive prices); the clamp bounds it to 0..=8.
    x.clamp(0.0, 8.0) as u32
}

impl Universe {
    /// Builds the universe from canonical symbol texts.
    ///
    /// # Errors
    /// A symbol is not canonical, is listed twice, or two symbols would be spelled the same
    /// way on an exchange (`AB-CUSDT` and `ABC-USDT` are both `ABCUSDT` on Binance).
    pub fn new(symbols: &[String], exchanges: &[ExchangeId]) -> Result<Self, String> {
        let mut assets: Vec<Asset> = Vec::new();
        let mut asset_index: HashMap<String, usize> = HashMap::new();
        let mut instruments = Vec::with_capacity(symbols.len());
        let mut by_canonical = HashMap::new();
        let mut by_concat = HashMap::new();
        let mut by_stream = HashMap::new();
        for text in symbols {
            let symbol: Symbol = text.parse().map_err(|e| format!("symbols: {e}"))?;
            let concat = format!("{}{}", symbol.base(), symbol.quote());
            if by_canonical.contains_key(symbol.as_str()) {
                return Err(format!("symbols: {symbol} is listed twice"));
            }
            if let Some(&other) = by_concat.get(&concat) {
                let other: &Instrument = &instruments[other];
                return Err(format!(
                    "symbols: {symbol} and {} are both {concat} on Binance; keep one",
                    other.symbol
                ));
            }
            let mut asset_of = |name: &str| -> usize {
                if let Some(&i) = asset_index.get(name) {
                    return i;
                }
                let asset = match ASSETS.iter().find(|(n, _, _)| *n == name) {
                    Some(&(_, usd, vol)) => Asset::new(name, usd, vol),
                    None => {
                        // Unknown asset: a stable made-up price between $0.01 and $300.
                        let h = fnv1a(name);
                        let usd = 10f64.powf(-2.0 + 4.5 * unit(h, 0));
                        Asset::new(name, usd, 0.04 + 0.04 * unit(h, 16))
                    }
                };
                assets.push(asset);
                asset_index.insert(name.to_owned(), assets.len() - 1);
                assets.len() - 1
            };
            let base_asset = asset_of(symbol.base());
            let quote_asset = asset_of(symbol.quote());
            let base_usd = assets[base_asset].log_usd.exp();
            let quote_usd = assets[quote_asset].log_usd.exp();
            let price = base_usd / quote_usd;
            let known = LISTINGS.iter().find(|l| l.0 == symbol.as_str());
            let (price_decimals, qty_decimals, quote_volume, half_spread_bps, top_qty) = match known
            {
                Some(&(_, pd, qd, vol, hs, top)) => (pd, qd, vol, hs, top),
                None => {
                    let h = fnv1a(symbol.as_str());
                    let pd = clamp_decimals((5.0 - price.log10()).ceil());
                    let qd = clamp_decimals(base_usd.log10().ceil());
                    let volume_usd = 10f64.powf(5.0 + 3.0 * unit(h, 0));
                    let hs = 1.0 + 4.0 * unit(h, 16);
                    let top = 20_000.0 * (0.5 + unit(h, 32)) / base_usd;
                    (pd, qd, volume_usd / quote_usd, hs, top)
                }
            };
            let index = instruments.len();
            by_canonical.insert(symbol.as_str().to_owned(), index);
            by_concat.insert(concat.clone(), index);
            let stream = concat.to_ascii_lowercase();
            by_stream.insert(stream.clone(), index);
            instruments.push(Instrument {
                symbol,
                concat,
                stream,
                price_decimals,
                qty_decimals,
                quote_volume,
                half_spread_bps,
                top_qty,
                base_asset,
                quote_asset,
            });
        }
        Ok(Self {
            instruments,
            exchanges: exchanges.to_vec(),
            assets,
            by_canonical,
            by_concat,
            by_stream,
        })
    }

    /// Index of a canonical symbol (`BTC-USDT`, OKX's `instId`).
    pub fn by_canonical(&self, text: &str) -> Option<usize> {
        self.by_canonical.get(text).copied()
    }

    /// Index of an upper-case concatenated symbol (`BTCUSDT`, Binance REST).
    pub fn by_concat(&self, text: &str) -> Option<usize> {
        self.by_concat.get(text).copied()
    }

    /// Index of a lower-case concatenated symbol (`btcusdt`, Binance stream names).
    pub fn by_stream(&self, text: &str) -> Option<usize> {
        self.by_stream.get(text).copied()
    }
}

/// Best bid and ask in integer ticks and lots, with order counts (OKX publishes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Book {
    pub bid: i64,
    pub bid_qty: i64,
    pub ask: i64,
    pub ask_qty: i64,
    pub bid_orders: u32,
    pub ask_orders: u32,
}

/// Rolling 24 h statistics of one exchange's symbol, in ticks and quote/base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub last: i64,
    pub last_qty: i64,
    /// In the quote currency.
    pub quote_volume: f64,
    /// In the base currency.
    pub base_volume: f64,
    pub trade_count: u64,
    pub last_trade_id: u64,
}

/// A new best bid/ask on one exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quote {
    pub symbol: usize,
    /// Increases with every book change of this (exchange, symbol): Binance `u`, OKX `seqId`.
    pub seq: u64,
    pub book: Book,
    pub stats: Stats,
    /// Wall-clock time of the event, Unix microseconds.
    pub ts_us: i64,
}

/// A trade on one exchange, at its current best bid (taker sold) or ask (taker bought).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trade {
    pub symbol: usize,
    pub seq: u64,
    pub trade_id: u64,
    pub price: i64,
    pub qty: i64,
    pub taker_buy: bool,
    pub ts_us: i64,
}

/// What the market broadcasts to one exchange's sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MarketEvent {
    Quote(Quote),
    Trade(Trade),
}

/// One step of the model: a slot came due and quoted, and maybe traded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub exchange: usize,
    pub quote: Quote,
    pub trade: Option<Trade>,
}

/// A value that evolves lazily: advanced to a time only when someone looks.
#[derive(Debug, Clone, Copy)]
struct Lazy {
    value: f64,
    t_us: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    exchange: usize,
    symbol: usize,
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
    universe: Arc<Universe>,
    factor: Lazy,
    idio: Vec<Lazy>,
    slots: Vec<Slot>,
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
    fn common_mid(&mut self, symbol: usize, t_us: u64) -> f64 {
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

/// The latest state of one (exchange, symbol), for REST and for a new subscriber's first push.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SlotView {
    pub quote: Quote,
    pub last_trade_ts_us: Option<i64>,
}

/// The latest quote of every (exchange, symbol), shared with the REST handlers and sessions.
/// One short lock per market step; readers copy out what they need.
#[derive(Debug)]
pub(crate) struct Board {
    n_symbols: usize,
    slots: Mutex<Vec<SlotView>>,
}

impl Board {
    pub fn new(n_symbols: usize, views: Vec<SlotView>) -> Self {
        Self {
            n_symbols,
            slots: Mutex::new(views),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<SlotView>> {
        // Each write replaces one Copy value, so a poisoned lock still holds consistent data.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest view of one (exchange, symbol).
    pub fn get(&self, exchange: usize, symbol: usize) -> Option<SlotView> {
        self.lock().get(exchange * self.n_symbols + symbol).copied()
    }

    /// Every symbol's view on one exchange, in symbol order.
    pub fn exchange(&self, exchange: usize) -> Vec<SlotView> {
        let start = exchange * self.n_symbols;
        self.lock()
            .get(start..start + self.n_symbols)
            .map(<[SlotView]>::to_vec)
            .unwrap_or_default()
    }

    fn apply(&self, step: &Step) {
        let mut slots = self.lock();
        if let Some(view) = slots.get_mut(step.exchange * self.n_symbols + step.quote.symbol) {
            view.quote = step.quote;
            if let Some(t) = step.trade {
                view.last_trade_ts_us = Some(t.ts_us);
            }
        }
    }
}

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> i64 {
    spreadagg_model::time::now_ns() / 1_000
}

/// Paces the model against the wall clock until `stop`, publishing each step to the board and
/// to its exchange's channel. Sending never blocks: a receiver that falls behind by more than
/// the channel's capacity loses the oldest events and is told how many (it counts them).
pub(crate) async fn run(
    mut model: Model,
    board: Arc<Board>,
    channels: Vec<broadcast::Sender<MarketEvent>>,
    stop: CancellationToken,
) {
    let labels: Vec<&'static str> = model
        .universe
        .exchanges
        .iter()
        .map(|e| e.as_str())
        .collect();
    let mut start = tokio::time::Instant::now();
    loop {
        let due_us = model.peek_due();
        if due_us == u64::MAX {
            break;
        }
        let due = start + Duration::from_micros(due_us);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let now = tokio::time::Instant::now();
        if now > due + MAX_CATCH_UP {
            start += now - due;
            tracing::warn!(
                behind_ms = (now - due).as_millis() as u64,
                "simulated market fell behind the wall clock; skipping ahead"
            );
        }
        // Everything due by now goes out in this wake-up.
        let horizon = now.saturating_duration_since(start).as_micros() as u64;
        while model.peek_due() <= horizon {
            let Some(step) = model.step(now_us()) else {
                break;
            };
            board.apply(&step);
            let label = labels.get(step.exchange).copied().unwrap_or("unknown");
            if let Some(tx) = channels.get(step.exchange) {
                // An error only means nobody is subscribed right now.
                let _ = tx.send(MarketEvent::Quote(step.quote));
                metrics::counter!("spreadagg_sim_events_total", "exchange" => label, "kind" => "quote")
                    .increment(1);
                if let Some(trade) = step.trade {
                    let _ = tx.send(MarketEvent::Trade(trade));
                    metrics::counter!("spreadagg_sim_events_total", "exchange" => label, "kind" => "trade")
                        .increment(1);
                }
            }
        }
    }
    tracing::debug!("simulated market stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn universe(symbols: &[&str]) -> Arc<Universe> {
        let symbols: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
        Arc::new(
            Universe::new(&symbols, &[ExchangeId::Binance, ExchangeId::Okx]).expect("universe"),
        )
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
}
