//! The engine's pure core: the latest tick per (symbol, exchange), a window per (symbol,
//! exchange A, exchange B), the spread points a tick makes and the signals it raises. No I/O
//! and no clock but the ticks' own, so every formula is tested here directly and a replay of
//! the same ticks makes the same points (shards, warm restart).
//!
//! Every map is bounded and evicts the least recently updated entry first, counting it:
//! latest ticks by (symbol, exchange) entries, windows by (symbol, A, B), chart points per
//! window by count and by point time.

mod signal;
mod symbols;
mod window;

use std::num::NonZeroUsize;

use lru::LruCache;
use spreadagg_model::ExchangeId;
use spreadagg_model::formulas::{CrossSpread, cross_spread};
use spreadagg_model::wire::{Signal, SignalKind as WireKind, Spread, Tick};

pub use signal::{Deviation, SignalKind, SignalLimits, SignalState};
pub use window::{ChartPoint, PairWindow, StalenessHistogram, Trimmed, WindowLimits};

use symbols::{EXCHANGES, Latest, SymbolId, Symbols, slot};

/// The engine's bounds and thresholds (see `EngineConfig` for their documentation).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_staleness_ns: i64,
    pub max_ticks: NonZeroUsize,
    pub max_windows: NonZeroUsize,
    pub window: WindowLimits,
    pub signal: SignalLimits,
}

/// A validated tick, as the state needs it.
#[derive(Debug, Clone, Copy)]
pub struct TickIn<'a> {
    pub exchange: ExchangeId,
    pub symbol: &'a str,
    pub bid: f64,
    pub ask: f64,
    pub ts_ns: i64,
}

impl<'a> TickIn<'a> {
    /// From a decoded wire tick; `None` when its exchange is unknown.
    pub fn from_wire(tick: &'a Tick) -> Option<Self> {
        Some(TickIn {
            exchange: tick.exchange.parse().ok()?,
            symbol: &tick.symbol,
            bid: tick.bid_px,
            ask: tick.ask_px,
            ts_ns: tick.recv_ts_ns,
        })
    }
}

/// One cross-exchange point before its strings are attached (see [`Point::to_wire`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub exchange_a: ExchangeId,
    pub exchange_b: ExchangeId,
    pub bid_a: f64,
    pub ask_a: f64,
    pub bid_b: f64,
    pub ask_b: f64,
    pub ts_a_ns: i64,
    pub ts_b_ns: i64,
    pub cross: CrossSpread,
    pub upper_band: f64,
    pub lower_band: f64,
    /// The triggering tick's time.
    pub ts_ns: i64,
}

impl Point {
    #[allow(clippy::cast_precision_loss)]
    pub fn staleness_ms(&self) -> f64 {
        self.ts_a_ns.abs_diff(self.ts_b_ns) as f64 / 1e6
    }

    /// The contract's message.
    pub fn to_wire(&self, symbol: &str, triggered_by: ExchangeId) -> Spread {
        Spread {
            symbol: symbol.to_owned(),
            exchange_a: self.exchange_a.as_str().to_owned(),
            exchange_b: self.exchange_b.as_str().to_owned(),
            bid_a: self.bid_a,
            ask_a: self.ask_a,
            bid_b: self.bid_b,
            ask_b: self.ask_b,
            ts_a_ns: self.ts_a_ns,
            ts_b_ns: self.ts_b_ns,
            a_to_b_pct: self.cross.a_to_b_pct,
            b_to_a_pct: self.cross.b_to_a_pct,
            bid_bid_pct: self.cross.bid_bid_pct,
            staleness_ms: self.staleness_ms(),
            triggered_by: triggered_by.as_str().to_owned(),
            upper_band: self.upper_band,
            lower_band: self.lower_band,
            ts_ns: self.ts_ns,
        }
    }
}

/// A signal's contract message.
pub fn signal_to_wire(symbol: &str, event: &signal::SignalEvent) -> Signal {
    let d = &event.deviation;
    Signal {
        symbol: symbol.to_owned(),
        kind: match event.kind {
            SignalKind::Entry => WireKind::Entry,
            SignalKind::Exit => WireKind::Exit,
        }
        .into(),
        deviation_pct: d.pct,
        cheap_exchange: d.cheap.as_str().to_owned(),
        expensive_exchange: d.expensive.as_str().to_owned(),
        cheap_bid: d.cheap_bid,
        expensive_bid: d.expensive_bid,
        ts_ns: event.ts_ns,
        expires_ts_ns: event.expires_ts_ns,
    }
}

pub use signal::SignalEvent;

/// The tick is older than the latest one of its exchange and symbol; it was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded;

/// Evictions since start, by bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    pub ticks: u64,
    pub windows: u64,
    pub points_by_count: u64,
    pub points_by_age: u64,
}

/// Integer keys hash with foldhash's fixed state: they are ours, not an attacker's, and this
/// is two hashes per point on the hot path.
type IntHasher = foldhash::fast::FixedState;

/// (symbol, exchange) packed.
fn tick_key(symbol: SymbolId, exchange: ExchangeId) -> u64 {
    (u64::from(symbol) << 8) | slot(exchange) as u64
}

/// (symbol, A, B) packed.
fn window_key(symbol: SymbolId, a: ExchangeId, b: ExchangeId) -> u64 {
    (u64::from(symbol) << 16) | ((slot(a) as u64) << 8) | slot(b) as u64
}

fn unpack_symbol(window_key: u64, shift: u32) -> SymbolId {
    // Keys are built from a SymbolId shifted left, so this is exact.
    SymbolId::try_from(window_key >> shift).unwrap_or(SymbolId::MAX)
}

/// Latest ticks, windows and signal states.
pub struct SpreadState {
    limits: Limits,
    symbols: Symbols,
    /// Recency of each held (symbol, exchange) tick; the ticks themselves live in the
    /// symbol's row.
    tick_lru: LruCache<u64, (), IntHasher>,
    windows: LruCache<u64, PairWindow, IntHasher>,
    /// Exchanges in the lexicographic order of their names (pair order A < B).
    by_name: [ExchangeId; EXCHANGES],
    evictions: Evictions,
    chart_points: usize,
}

impl SpreadState {
    pub fn new(limits: Limits) -> Self {
        let mut by_name = ExchangeId::ALL;
        by_name.sort_by_key(|e| e.as_str());
        Self {
            limits,
            symbols: Symbols::default(),
            tick_lru: LruCache::with_hasher(limits.max_ticks, IntHasher::default()),
            windows: LruCache::with_hasher(limits.max_windows, IntHasher::default()),
            by_name,
            evictions: Evictions::default(),
            chart_points: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Latest ticks held.
    pub fn ticks(&self) -> usize {
        self.tick_lru.len()
    }

    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    pub fn symbols(&self) -> usize {
        self.symbols.len()
    }

    /// Chart points held over all windows.
    pub fn chart_points(&self) -> usize {
        self.chart_points
    }

    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Records a validated tick, writes the spread points it makes into `points` (cleared
    /// first): one per other exchange of the symbol whose latest tick is within
    /// `max_staleness` of this one, in the order of the pairs' names. Returns the signal it
    /// raises, if any. Times are the ingestors' receive times, the one clock every exchange
    /// has.
    ///
    /// # Errors
    /// [`Superseded`] when the tick is older than its exchange's latest (reordering): it would
    /// roll the state back and pair stale prices, so it changes nothing.
    pub fn apply(
        &mut self,
        tick: &TickIn<'_>,
        points: &mut Vec<Point>,
    ) -> Result<Option<SignalEvent>, Superseded> {
        points.clear();
        let id = self.symbols.intern(tick.symbol);
        let this = Latest {
            bid: tick.bid,
            ask: tick.ask,
            ts_ns: tick.ts_ns,
        };
        let entry = self.symbols.get_mut(id);
        if entry.has(tick.exchange) && entry.latest[slot(tick.exchange)].ts_ns > tick.ts_ns {
            return Err(Superseded);
        }
        // Marked present before the LRU is touched, so an eviction it causes cannot free `id`.
        entry.latest[slot(tick.exchange)] = this;
        entry.present |= 1 << slot(tick.exchange);
        self.touch_tick(id, tick.exchange);
        // Read after the touch: it may have evicted another exchange's tick of this symbol.
        let entry = self.symbols.get(id);
        let (latest, present) = (entry.latest, entry.present);

        let staleness = self.limits.max_staleness_ns.unsigned_abs();
        for other_ex in self.by_name {
            if other_ex == tick.exchange || present & (1 << slot(other_ex)) == 0 {
                continue;
            }
            let other = latest[slot(other_ex)];
            if tick.ts_ns.abs_diff(other.ts_ns) > staleness {
                continue;
            }
            let ((ex_a, a), (ex_b, b)) = if tick.exchange.as_str() < other_ex.as_str() {
                ((tick.exchange, this), (other_ex, other))
            } else {
                ((other_ex, other), (tick.exchange, this))
            };
            let cross = cross_spread(a.bid, a.ask, b.bid, b.ask);
            let (upper_band, lower_band) = self.push_to_window(
                window_key(id, ex_a, ex_b),
                tick.ts_ns,
                cross.bid_bid_pct,
                a.ts_ns.abs_diff(b.ts_ns),
            );
            points.push(Point {
                exchange_a: ex_a,
                exchange_b: ex_b,
                bid_a: a.bid,
                ask_a: a.ask,
                bid_b: b.bid,
                ask_b: b.ask,
                ts_a_ns: a.ts_ns,
                ts_b_ns: b.ts_ns,
                cross,
                upper_band,
                lower_band,
                ts_ns: tick.ts_ns,
            });
        }

        let fresh = self.by_name.into_iter().filter_map(|ex| {
            let l = latest[slot(ex)];
            (present & (1 << slot(ex)) != 0 && tick.ts_ns.abs_diff(l.ts_ns) <= staleness)
                .then_some((ex, l.bid))
        });
        let deviation = Deviation::of(fresh);
        let limits = self.limits.signal;
        Ok(self
            .symbols
            .get_mut(id)
            .signal
            .on_tick(tick.ts_ns, deviation, &limits))
    }

    /// As [`SpreadState::apply`] for a wire tick, making the contract's messages (allocates;
    /// for tests and reference replays).
    ///
    /// # Errors
    /// As [`SpreadState::apply`]; an unknown exchange is also `Superseded` (it changes
    /// nothing).
    pub fn on_tick(&mut self, tick: &Tick) -> Result<Vec<Spread>, Superseded> {
        let input = TickIn::from_wire(tick).ok_or(Superseded)?;
        let mut points = Vec::new();
        self.apply(&input, &mut points)?;
        Ok(points
            .iter()
            .map(|p| p.to_wire(&tick.symbol, input.exchange))
            .collect())
    }

    /// Marks (symbol, exchange) most recently updated, evicting the least recently updated
    /// tick when full.
    fn touch_tick(&mut self, id: SymbolId, exchange: ExchangeId) {
        let key = tick_key(id, exchange);
        if self.tick_lru.get(&key).is_some() {
            return;
        }
        if let Some((old, ())) = self.tick_lru.push(key, ()) {
            self.evictions.ticks += 1;
            let old_id = unpack_symbol(old, 8);
            // The slot is the low byte: `old & 0xff` indexes ExchangeId::ALL.
            let old_slot = usize::try_from(old & 0xff).unwrap_or(0);
            let entry = self.symbols.get_mut(old_id);
            entry.present &= !(1 << old_slot);
            self.symbols.release_if_unused(old_id);
        }
    }

    /// Pushes a point into its window (created, evicting the least recently used, when new)
    /// and returns the bands after it.
    fn push_to_window(
        &mut self,
        key: u64,
        ts_ns: i64,
        bid_bid: f64,
        staleness_ns: u64,
    ) -> (f64, f64) {
        let limits = self.limits.window;
        if self.windows.peek(&key).is_none() {
            let id = unpack_symbol(key, 16);
            self.symbols.get_mut(id).windows += 1;
            if let Some((old, evicted)) = self.windows.push(key, PairWindow::new(&limits)) {
                self.evictions.windows += 1;
                self.chart_points -= evicted.points();
                let old_id = unpack_symbol(old, 16);
                self.symbols.get_mut(old_id).windows -= 1;
                self.symbols.release_if_unused(old_id);
            }
        }
        let Some(window) = self.windows.get_mut(&key) else {
            // Just inserted with a capacity of at least one.
            return (bid_bid, bid_bid);
        };
        let before = window.points();
        let (upper, lower, trimmed) = window.push(ts_ns, bid_bid, staleness_ns, &limits);
        self.chart_points = self.chart_points + window.points() - before;
        self.evictions.points_by_count += trimmed.by_count;
        self.evictions.points_by_age += trimmed.by_age;
        (upper, lower)
    }

    /// The chart window of (symbol, A, B), oldest first, without touching its recency.
    pub fn chart(&self, symbol: &str, a: ExchangeId, b: ExchangeId) -> Option<&PairWindow> {
        let id = self.symbols.lookup(symbol)?;
        self.windows.peek(&window_key(id, a, b))
    }

    /// Every window with its symbol and pair, most recently used first.
    pub fn each_window(&self) -> impl Iterator<Item = (&str, ExchangeId, ExchangeId, &PairWindow)> {
        self.windows.iter().map(|(&key, w)| {
            let id = unpack_symbol(key, 16);
            let a = ExchangeId::ALL[usize::try_from((key >> 8) & 0xff).unwrap_or(0)];
            let b = ExchangeId::ALL[usize::try_from(key & 0xff).unwrap_or(0)];
            (&*self.symbols.get(id).name, a, b, w)
        })
    }

    /// Symbols with an active signal at `now`.
    pub fn active_signals(&self, now: i64) -> usize {
        self.symbols.count_where(|e| e.signal.is_active_at(now))
    }

    /// Bytes held on the heap by windows (chart and band buffers); the dominant share of the
    /// engine's memory at full bounds.
    pub fn window_heap_bytes(&self) -> usize {
        self.windows.iter().map(|(_, w)| w.heap_bytes()).sum()
    }

    /// The current caps: chart points per window and windows (lowered under memory pressure,
    /// at most the configured bounds).
    pub fn caps(&self) -> (usize, usize) {
        (self.limits.window.max_points, self.windows.cap().get())
    }

    /// Memory-pressure relief and recovery: sets the chart points kept per window and the
    /// windows kept. Lowering them drops the oldest points of every window and evicts the
    /// least recently used windows at once (not counted as evictions: they are shedding);
    /// returns the points and windows dropped.
    pub fn set_caps(&mut self, points: usize, windows: NonZeroUsize) -> (u64, u64) {
        let mut dropped_windows = 0;
        while self.windows.len() > windows.get() {
            let Some((old, evicted)) = self.windows.pop_lru() else {
                break;
            };
            dropped_windows += 1;
            self.chart_points -= evicted.points();
            let old_id = unpack_symbol(old, 16);
            self.symbols.get_mut(old_id).windows -= 1;
            self.symbols.release_if_unused(old_id);
        }
        self.windows.resize(windows);
        let mut dropped_points = 0;
        if points < self.limits.window.max_points {
            for (_, w) in &mut self.windows {
                dropped_points += w.shrink_to(points);
            }
            self.chart_points -= usize::try_from(dropped_points).unwrap_or(usize::MAX);
        }
        self.limits.window.max_points = points.max(1);
        (dropped_points, dropped_windows)
    }
}

#[cfg(test)]
mod tests;
