//! The latest values per symbol: snapshots on subscribe, the REST answers, and each
//! exchange's health as the gateway sees it (when its last tick arrived).
//!
//! Bounded: at most `max_symbols` symbols (later ones are still delivered live, only not
//! kept; counted), and per symbol one entry per exchange or pair.
//!
//! The feed updates one entry per message under one shard's lock. Readers (snapshots, REST)
//! never walk entries under that lock: each symbol's values are an `Arc<PerSymbol>`, copied on
//! write; a reader takes only the `Arc`s of the symbols it wants (a pointer copy each) and
//! walks them after letting go. Should the feed then update a symbol a reader still holds,
//! it copies that symbol's few dozen entries first (`Arc::make_mut`) rather than wait.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spreadagg_model::{ExchangeId, Symbol};

use super::event::{Channel, Event, Venue};
use super::filter::{Filter, SymbolPattern};
use super::queue::lock;
use crate::pair::Pair;

const SHARDS: usize = 64;

/// The widest spreads are worked out at most this often and shared by every caller.
const WIDEST_TTL: Duration = Duration::from_millis(500);
/// ... and this many of them are kept.
pub(crate) const WIDEST_MAX: usize = 500;

/// An exchange whose last tick arrived longer ago than this is `stale`.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone)]
struct PerSymbol {
    symbol: Option<Symbol>,
    spreads: BTreeMap<Pair, Arc<Event>>,
    ticks: BTreeMap<ExchangeId, Arc<Event>>,
    trades: BTreeMap<ExchangeId, Arc<Event>>,
    signal: Option<Arc<Event>>,
}

impl PerSymbol {
    /// Calls `f` on every entry of `filter`'s channel its venue pattern selects, until `f`
    /// says stop; whether it never did.
    fn each(&self, filter: &Filter, now_ns: i64, f: &mut impl FnMut(&Arc<Event>) -> bool) -> bool {
        let selected = |e: &&Arc<Event>| filter.venue.matches(e.venue);
        match filter.channel {
            Channel::Spreads => self.spreads.values().filter(selected).all(&mut *f),
            Channel::Ticks => self.ticks.values().filter(selected).all(&mut *f),
            Channel::Trades => self.trades.values().filter(selected).all(&mut *f),
            Channel::Signals => self
                .signal
                .iter()
                .filter(|e| e.is_active_signal(now_ns))
                .all(f),
        }
    }
}

/// Symbols and their values, one lock per shard.
type Shard = Mutex<HashMap<Symbol, Arc<PerSymbol>>>;
/// The widest spreads, widest first.
type Widest = Arc<[Arc<Event>]>;

#[derive(Debug, Default)]
struct ExchangeSeen {
    /// Nanoseconds since the hub started when its last tick arrived; -1 never.
    last_tick_at: AtomicI64,
    ticks: AtomicU64,
    trades: AtomicU64,
    symbols: AtomicUsize,
}

/// One exchange as the gateway sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ExchangeHealth {
    /// The lowercase exchange id.
    #[schema(value_type = String)]
    pub(crate) exchange: ExchangeId,
    /// `live` (a tick within the last 10 s), `stale`, or `unseen` (no tick since start).
    pub(crate) state: &'static str,
    /// Milliseconds since its last tick arrived; `null` when unseen.
    pub(crate) last_tick_age_ms: Option<u64>,
    /// Ticks per second over the last report interval (about a second).
    pub(crate) ticks_per_s: f64,
    pub(crate) ticks_total: u64,
    pub(crate) trades_total: u64,
    /// Symbols it has sent ticks for.
    pub(crate) symbols: usize,
}

/// A snapshot's events, sorted by symbol and venue, and whether the limit cut it short.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) events: Vec<Arc<Event>>,
    pub(crate) truncated: bool,
}

impl Snapshot {
    /// Takes one more event unless `max` are taken; `false` (and truncated) then.
    fn take(&mut self, e: &Arc<Event>, max: usize) -> bool {
        if self.events.len() >= max {
            self.truncated = true;
            return false;
        }
        self.events.push(Arc::clone(e));
        true
    }
}

#[derive(Debug)]
struct Rates {
    at: Instant,
    ticks: [u64; ExchangeId::ALL.len()],
    per_s: [f64; ExchangeId::ALL.len()],
}

/// The latest values.
#[derive(Debug)]
pub(crate) struct Latest {
    shards: Box<[Shard]>,
    symbols: AtomicUsize,
    max_symbols: usize,
    /// The sorted symbol list, rebuilt by the next reader after a new symbol arrives.
    list: Mutex<Option<Arc<[Symbol]>>>,
    exchanges: [ExchangeSeen; ExchangeId::ALL.len()],
    rates: Mutex<Rates>,
    started: Instant,
    /// The last widest-spreads list and when it was made.
    widest: Mutex<Option<(Instant, Widest)>>,
    /// Events of symbols not kept because `max_symbols` was reached.
    pub(crate) not_kept: AtomicU64,
}

impl Latest {
    pub(crate) fn new(max_symbols: usize) -> Self {
        let exchanges = [(); ExchangeId::ALL.len()].map(|()| ExchangeSeen {
            last_tick_at: AtomicI64::new(-1),
            ..ExchangeSeen::default()
        });
        let now = Instant::now();
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            symbols: AtomicUsize::new(0),
            max_symbols,
            list: Mutex::new(None),
            exchanges,
            rates: Mutex::new(Rates {
                at: now,
                ticks: [0; ExchangeId::ALL.len()],
                per_s: [0.0; ExchangeId::ALL.len()],
            }),
            started: now,
            widest: Mutex::new(None),
            not_kept: AtomicU64::new(0),
        }
    }

    fn shard(&self, symbol: &str) -> &Shard {
        let h = foldhash::fast::FixedState::with_seed(0x1a7e).hash_one(symbol);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Keeps `event` as its key's latest value; `false` when its symbol is new and the
    /// symbol limit is reached.
    pub(crate) fn record(&self, event: &Arc<Event>, now: Instant) -> bool {
        if let Venue::One(x) = event.venue {
            let seen = &self.exchanges[x as usize];
            match event.channel {
                Channel::Ticks => {
                    let at = now.saturating_duration_since(self.started).as_nanos();
                    seen.last_tick_at
                        .store(i64::try_from(at).unwrap_or(i64::MAX), Ordering::Relaxed);
                    seen.ticks.fetch_add(1, Ordering::Relaxed);
                }
                Channel::Trades => {
                    seen.trades.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let mut shard = lock(self.shard(event.symbol.as_str()));
        let per = match shard.get_mut(&event.symbol) {
            Some(per) => Arc::make_mut(per),
            None => {
                // Reserve a place first: four feeds may meet a new symbol at once.
                let reserved =
                    self.symbols
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (n < self.max_symbols).then_some(n + 1)
                        });
                if reserved.is_err() {
                    self.not_kept.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                *lock(&self.list) = None;
                let per = Arc::make_mut(shard.entry(event.symbol.clone()).or_default());
                per.symbol = Some(event.symbol.clone());
                per
            }
        };
        let e = Arc::clone(event);
        match (event.channel, event.venue) {
            (Channel::Spreads, Venue::Pair(p)) => {
                per.spreads.insert(p, e);
            }
            (Channel::Ticks, Venue::One(x)) => {
                let first_of_exchange = per.ticks.insert(x, e).is_none();
                if first_of_exchange {
                    self.exchanges[x as usize]
                        .symbols
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            (Channel::Trades, Venue::One(x)) => {
                per.trades.insert(x, e);
            }
            (Channel::Signals, _) => per.signal = Some(e),
            _ => {}
        }
        true
    }

    /// Whether the symbol has been seen (and kept).
    pub(crate) fn knows(&self, symbol: &Symbol) -> bool {
        lock(self.shard(symbol.as_str())).contains_key(symbol)
    }

    /// The values of the symbols `pattern` selects: under each shard's lock only the `Arc`s
    /// are taken.
    fn select(&self, pattern: &SymbolPattern) -> Vec<Arc<PerSymbol>> {
        if let SymbolPattern::Exact(s) = pattern {
            return lock(self.shard(s.as_str()))
                .get(s)
                .cloned()
                .into_iter()
                .collect();
        }
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            out.extend(
                shard
                    .iter()
                    .filter(|(symbol, _)| pattern.matches(symbol))
                    .map(|(_, per)| Arc::clone(per)),
            );
        }
        out
    }

    /// The latest values `filter` selects, at most `max`, sorted by symbol then venue.
    /// Signals: the active ones (entries not yet expired nor followed by an exit).
    pub(crate) fn snapshot(&self, filter: &Filter, max: usize, now_ns: i64) -> Snapshot {
        let mut out = Snapshot::default();
        for per in &self.select(&filter.symbol) {
            if !per.each(filter, now_ns, &mut |e| out.take(e, max)) {
                break;
            }
        }
        out.events.sort_by(|x, y| {
            (x.symbol.as_str(), venue_key(x.venue)).cmp(&(y.symbol.as_str(), venue_key(y.venue)))
        });
        out
    }

    /// Every symbol seen (at most `max_symbols`), sorted. Cheap after the first call following
    /// a new symbol.
    pub(crate) fn symbols(&self) -> Arc<[Symbol]> {
        if let Some(list) = lock(&self.list).as_ref() {
            return Arc::clone(list);
        }
        let mut all: Vec<Symbol> = Vec::with_capacity(self.symbols.load(Ordering::Relaxed));
        for shard in &self.shards {
            all.extend(lock(shard).keys().cloned());
        }
        all.sort();
        let list: Arc<[Symbol]> = all.into();
        // A symbol that arrived meanwhile cleared the cache; storing this list anyway would
        // hide it until the next new symbol, so store only a list of the current size.
        let mut cache = lock(&self.list);
        if list.len() == self.symbols.load(Ordering::Relaxed) {
            *cache = Some(Arc::clone(&list));
        }
        list
    }

    /// The spread points with the widest tradeable spread (the larger of `a_to_b_pct` and
    /// `b_to_a_pct`), widest first, at most [`WIDEST_MAX`]. Worked out at most every
    /// [`WIDEST_TTL`] under a lock of its own (callers wait for one walk; the feed never
    /// does, see the module documentation).
    pub(crate) fn widest(&self, now: Instant) -> Widest {
        if let Some((at, list)) = lock(&self.widest).as_ref()
            && now.saturating_duration_since(*at) < WIDEST_TTL
        {
            return Arc::clone(list);
        }
        // Worked out without holding the cache's lock (callers may overlap, bounded by the
        // REST concurrency limit; none parks a runtime thread on a lock meanwhile).
        let mut top: Vec<(f64, Arc<Event>)> = Vec::with_capacity(WIDEST_MAX + 1);
        for per in self.select(&SymbolPattern::Any) {
            for e in per.spreads.values() {
                let Some(width) = tradeable_width(e) else {
                    continue;
                };
                if top.len() == WIDEST_MAX && top.last().is_some_and(|(w, _)| *w >= width) {
                    continue;
                }
                let at = top.partition_point(|(w, _)| *w >= width);
                top.insert(at, (width, Arc::clone(e)));
                top.truncate(WIDEST_MAX);
            }
        }
        let list: Widest = top.into_iter().map(|(_, e)| e).collect();
        *lock(&self.widest) = Some((now, Arc::clone(&list)));
        list
    }

    /// Every symbol kept, sorted, with the exchanges that sent ticks of it.
    pub(crate) fn symbol_exchanges(&self) -> Vec<(Symbol, Vec<ExchangeId>)> {
        let mut all: Vec<(Symbol, Vec<ExchangeId>)> = self
            .select(&SymbolPattern::Any)
            .into_iter()
            .filter_map(|per| Some((per.symbol.clone()?, per.ticks.keys().copied().collect())))
            .collect();
        all.sort();
        all
    }

    /// Each exchange's health now, in the contract's order.
    pub(crate) fn exchanges(&self, now: Instant) -> Vec<ExchangeHealth> {
        let since_start = now.saturating_duration_since(self.started);
        let rates = lock(&self.rates).per_s;
        ExchangeId::ALL
            .iter()
            .map(|&x| {
                let seen = &self.exchanges[x as usize];
                let at = seen.last_tick_at.load(Ordering::Relaxed);
                let age = u64::try_from(at)
                    .ok()
                    .map(|at| since_start.saturating_sub(Duration::from_nanos(at)));
                ExchangeHealth {
                    exchange: x,
                    state: match age {
                        None => "unseen",
                        Some(a) if a <= STALE_AFTER => "live",
                        Some(_) => "stale",
                    },
                    last_tick_age_ms: age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    ticks_per_s: rates[x as usize],
                    ticks_total: seen.ticks.load(Ordering::Relaxed),
                    trades_total: seen.trades.load(Ordering::Relaxed),
                    symbols: seen.symbols.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Recomputes the tick rates (the feed calls this about once a second).
    pub(crate) fn refresh_rates(&self, now: Instant) {
        let mut r = lock(&self.rates);
        let secs = now.saturating_duration_since(r.at).as_secs_f64();
        if secs < 0.1 {
            return;
        }
        for x in ExchangeId::ALL {
            let i = x as usize;
            let total = self.exchanges[i].ticks.load(Ordering::Relaxed);
            r.per_s[i] = total.saturating_sub(r.ticks[i]) as f64 / secs;
            r.ticks[i] = total;
        }
        r.at = now;
    }

    /// Symbols kept.
    pub(crate) fn symbol_count(&self) -> usize {
        self.symbols.load(Ordering::Relaxed)
    }
}

/// The larger of a point's two directions; `None` unless it is a spread with finite values.
fn tradeable_width(e: &Event) -> Option<f64> {
    match &e.payload {
        super::event::Payload::Spread(s) => {
            let w = s.a_to_b_pct.max(s.b_to_a_pct);
            w.is_finite().then_some(w)
        }
        _ => None,
    }
}

fn venue_key(v: Venue) -> (&'static str, &'static str) {
    match v {
        Venue::Pair(p) => (p.a().as_str(), p.b().as_str()),
        Venue::One(x) => (x.as_str(), ""),
        Venue::None => ("", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event::Payload;
    use crate::hub::filter::VenuePattern;
    use spreadagg_model::wire::{Signal, SignalKind, Spread, Tick};

    fn spread(seq: u64, symbol: &str, a: &str, b: &str) -> Arc<Event> {
        let s = Spread {
            symbol: symbol.into(),
            exchange_a: a.into(),
            exchange_b: b.into(),
            ..Spread::default()
        };
        Arc::new(Event::new(seq, Payload::Spread(s)).expect("routable"))
    }

    fn filter(channel: Channel, symbol: &str, venue: VenuePattern) -> Filter {
        Filter {
            channel,
            symbol: SymbolPattern::parse(symbol).expect("valid"),
            venue,
            chart: false,
        }
    }

    #[test]
    fn snapshots_hold_the_latest_value_per_key() {
        let l = Latest::new(100);
        let now = Instant::now();
        for (seq, sym, a, b) in [
            (1, "BTC-USDT", "binance", "okx"),
            (2, "BTC-USDT", "binance", "okx"),
            (3, "BTC-USDT", "bybit", "okx"),
            (4, "ETH-USDT", "binance", "okx"),
            (5, "ETH-USDC", "binance", "okx"),
        ] {
            assert!(l.record(&spread(seq, sym, a, b), now));
        }
        let seqs = |f: &Filter, max: usize| {
            let s = l.snapshot(f, max, 0);
            (
                s.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                s.truncated,
            )
        };
        let any = VenuePattern::Any;
        assert_eq!(
            seqs(&filter(Channel::Spreads, "BTC-USDT", any), 10),
            (vec![2, 3], false)
        );
        assert_eq!(
            seqs(&filter(Channel::Spreads, "*-USDT", any), 10),
            (vec![2, 3, 4], false)
        );
        assert_eq!(seqs(&filter(Channel::Spreads, "*", any), 10).0.len(), 4);
        assert!(
            seqs(&filter(Channel::Spreads, "*", any), 2).1,
            "truncated at the limit"
        );
        let bybit = VenuePattern::Exchange(ExchangeId::Bybit);
        assert_eq!(
            seqs(&filter(Channel::Spreads, "*", bybit), 10),
            (vec![3], false)
        );
        assert_eq!(seqs(&filter(Channel::Ticks, "*", any), 10), (vec![], false));
        assert_eq!(
            l.symbols().iter().map(Symbol::as_str).collect::<Vec<_>>(),
            ["BTC-USDT", "ETH-USDC", "ETH-USDT"]
        );
    }

    #[test]
    fn the_widest_spreads_come_first_and_are_cached_briefly() {
        let l = Latest::new(100);
        let now = Instant::now();
        let wide = |seq: u64, symbol: &str, a: &str, b: &str, ab: f64, ba: f64| {
            let s = Spread {
                symbol: symbol.into(),
                exchange_a: a.into(),
                exchange_b: b.into(),
                a_to_b_pct: ab,
                b_to_a_pct: ba,
                ..Spread::default()
            };
            Arc::new(Event::new(seq, Payload::Spread(s)).expect("routable"))
        };
        l.record(&wide(1, "BTC-USDT", "binance", "okx", 0.1, -0.2), now);
        l.record(&wide(2, "ETH-USDT", "binance", "okx", -0.5, 0.4), now);
        l.record(
            &wide(3, "SOL-USDT", "bybit", "okx", f64::NAN, f64::NAN),
            now,
        );
        l.record(&wide(4, "XRP-USDT", "bybit", "okx", -0.3, -0.05), now);
        let seqs = |list: &[Arc<Event>]| list.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(&l.widest(now)),
            [2, 1, 4],
            "by the better direction; NaN left out"
        );
        l.record(&wide(5, "BTC-USDT", "binance", "okx", 0.9, 0.0), now);
        assert_eq!(seqs(&l.widest(now)), [2, 1, 4], "cached for a moment");
        assert_eq!(seqs(&l.widest(now + WIDEST_TTL)), [5, 2, 4]);
    }

    #[test]
    fn symbols_beyond_the_limit_are_not_kept() {
        let l = Latest::new(1);
        let now = Instant::now();
        assert!(l.record(&spread(1, "BTC-USDT", "binance", "okx"), now));
        assert!(!l.record(&spread(2, "ETH-USDT", "binance", "okx"), now));
        assert!(
            l.record(&spread(3, "BTC-USDT", "bybit", "okx"), now),
            "known symbols still"
        );
        assert_eq!(l.not_kept.load(Ordering::Relaxed), 1);
        assert_eq!(l.symbols().len(), 1);
        assert!(!l.knows(&"ETH-USDT".parse().expect("valid")));
    }

    #[test]
    fn only_active_signals_are_in_a_snapshot() {
        let l = Latest::new(10);
        let now = Instant::now();
        let signal = |seq: u64, symbol: &str, kind: SignalKind, expires: i64| {
            let mut s = Signal {
                symbol: symbol.into(),
                expires_ts_ns: expires,
                ..Signal::default()
            };
            s.set_kind(kind);
            Arc::new(Event::new(seq, Payload::Signal(s)).expect("routable"))
        };
        l.record(&signal(1, "BTC-USDT", SignalKind::Entry, 1_000), now);
        l.record(&signal(2, "ETH-USDT", SignalKind::Entry, 1_000), now);
        l.record(&signal(3, "ETH-USDT", SignalKind::Exit, 0), now);
        l.record(&signal(4, "SOL-USDT", SignalKind::Entry, 10), now);
        let f = filter(Channel::Signals, "*", VenuePattern::Any);
        let seqs: Vec<u64> = l
            .snapshot(&f, 10, 500)
            .events
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1], "ETH exited, SOL expired");
    }

    #[test]
    fn exchange_health_follows_tick_arrivals() {
        let l = Latest::new(10);
        let t0 = Instant::now();
        let tick = Tick {
            exchange: "okx".into(),
            symbol: "BTC-USDT".into(),
            ..Tick::default()
        };
        l.record(
            &Arc::new(Event::new(1, Payload::Tick(tick)).expect("routable")),
            t0,
        );
        let by_id = |at: Instant| {
            l.exchanges(at)
                .into_iter()
                .map(|h| (h.exchange, h))
                .collect::<HashMap<_, _>>()
        };
        let h = by_id(t0 + Duration::from_secs(1));
        assert_eq!(h[&ExchangeId::Okx].state, "live");
        assert_eq!(h[&ExchangeId::Okx].symbols, 1);
        assert_eq!(h[&ExchangeId::Binance].state, "unseen");
        assert_eq!(h[&ExchangeId::Binance].last_tick_age_ms, None);
        let later = by_id(t0 + STALE_AFTER + Duration::from_secs(1));
        assert_eq!(later[&ExchangeId::Okx].state, "stale");
    }
}
