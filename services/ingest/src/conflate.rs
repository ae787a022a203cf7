//! The buffer between an exchange's sockets and its publisher, with the policy the design asks
//! for when the bus is slower than the feed, or gone: quotes conflate per symbol (the latest
//! wins, each replaced one is counted) and trades queue in a bounded FIFO (when it is full the
//! new trade is dropped and counted). Memory is bounded either way: one slot per interned
//! symbol plus `trade_capacity` trades.
//!
//! Sockets never wait here (an exchange drops a client that does not read); the publisher
//! takes batches and waits when there is nothing. A quote keeps its exchange ids, so when the
//! bus returns the latest quote of every symbol goes out with its original message id.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Gauge};
use spreadagg_model::ExchangeId;
use tokio::sync::Notify;

use crate::event::{Event, Print, Quote};
use crate::symbols::MAX_SYMBOLS;

#[derive(Debug, Default)]
struct State {
    /// The latest unpublished quote per symbol id.
    slots: Vec<Option<Quote>>,
    /// Symbols with a quote in their slot, in the order they first became pending; each at
    /// most once, so it is bounded by the slot count.
    pending: VecDeque<u32>,
    trades: VecDeque<Print>,
    closed: bool,
    /// Receive time of the latest quote per symbol id (0: none yet), for staleness.
    last_quote_ns: Vec<i64>,
    /// The latest update accepted per symbol id, so that an earlier one arriving later (two
    /// connections overlapping while rotating) is never published after it.
    latest: Vec<Latest>,
}

#[derive(Debug)]
struct Meters {
    conflated: Counter,
    superseded: Counter,
    trades_dropped: Counter,
    quotes_dropped: Counter,
    trades_closed: Counter,
    unknown_symbol: Counter,
    pending_quotes: Gauge,
    pending_trades: Gauge,
}

/// See the module documentation. Shared by every connection of one ingestor.
#[derive(Debug)]
pub struct Conflator {
    state: Mutex<State>,
    wake: Notify,
    /// Batches taken so far, and a wake-up for readers waiting on the next one
    /// ([`Conflator::next_take`]).
    takes: AtomicU64,
    taken: Notify,
    trade_capacity: usize,
    meters: Meters,
}

/// What [`Conflator::push`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// A quote replaced an unpublished quote of the same symbol.
    Conflated,
    /// A quote was older than one already accepted for its symbol, and was dropped.
    Superseded,
    /// Dropped: the trade buffer is full, the symbol id is out of range, or intake closed.
    Dropped,
}

/// The latest update accepted for one symbol (pending or already published).
#[derive(Debug, Default, Clone, Copy)]
struct Latest {
    seq: u64,
    ts_ns: i64,
    /// Earlier updates refused in a row since.
    refused: u8,
    /// Receive time of the first of them.
    first_refused_ns: i64,
}

/// An earlier update is taken anyway (the exchange reset its sequence, or the accepted one
/// carried a bogus future time) once at least this many were refused in a row, with no update
/// accepted in between, over at least the span below. While a rotation's two connections
/// overlap, the one ahead keeps being accepted and interrupts every run, so a lagging
/// connection's updates are never taken for a reset.
const RESET_AFTER_REFUSALS: u8 = 3;
/// The span without ids and times to compare: a reset can only be told by its persistence.
const RESET_SPAN_UNTIMED_NS: i64 = 2_000_000_000;
/// The span where exchange times say the update is earlier: only a clock that went back, or an
/// accepted update timed in the future, keeps them earlier that long.
const RESET_SPAN_TIMED_NS: i64 = 10_000_000_000;

/// `new` is an earlier update of the exchange than `latest`: a lower update id (unless its
/// exchange time is later: a sequence reset), or with no ids, an earlier exchange time. Where
/// neither tells, the later arrival wins.
fn older(new: &Quote, latest: &Latest) -> bool {
    if new.seq != 0 && latest.seq != 0 {
        new.seq < latest.seq && new.exchange_ts_ns <= latest.ts_ns
    } else if new.exchange_ts_ns != 0 && latest.ts_ns != 0 {
        new.exchange_ts_ns < latest.ts_ns
    } else {
        false
    }
}

impl Latest {
    /// Whether an earlier update `q` ends a run of refusals long enough to be a reset.
    fn reset_by(&self, q: &Quote) -> bool {
        let untimed = q.exchange_ts_ns == 0 || self.ts_ns == 0;
        let span = if untimed {
            RESET_SPAN_UNTIMED_NS
        } else {
            RESET_SPAN_TIMED_NS
        };
        self.refused.saturating_add(1) >= RESET_AFTER_REFUSALS
            && q.recv_ts_ns.saturating_sub(self.first_refused_ns) >= span
    }
}

impl Conflator {
    pub fn new(exchange: ExchangeId, trade_capacity: usize) -> Self {
        let ex = exchange.as_str();
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            takes: AtomicU64::new(0),
            taken: Notify::new(),
            trade_capacity: trade_capacity.max(1),
            meters: Meters {
                conflated: metrics::counter!("spreadagg_ingest_conflated_total", "exchange" => ex),
                superseded: metrics::counter!("spreadagg_ingest_superseded_total", "exchange" => ex),
                trades_dropped: metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "trade", "reason" => "buffer_full"),
                quotes_dropped: metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "tick", "reason" => "closed"),
                trades_closed: metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "trade", "reason" => "closed"),
                unknown_symbol: metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "tick", "reason" => "symbol_out_of_range"),
                pending_quotes: metrics::gauge!("spreadagg_ingest_pending", "exchange" => ex, "kind" => "tick"),
                pending_trades: metrics::gauge!("spreadagg_ingest_pending", "exchange" => ex, "kind" => "trade"),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes an event from a socket; never waits.
    pub fn push(&self, event: Event) -> Pushed {
        let m = &self.meters;
        let (pushed, dropped_as) = {
            let mut s = self.lock();
            let is_quote = matches!(event, Event::Quote(_));
            if s.closed {
                let counter = if is_quote {
                    &m.quotes_dropped
                } else {
                    &m.trades_closed
                };
                (Pushed::Dropped, Some(counter))
            } else {
                match event {
                    Event::Quote(q) => {
                        let i = q.symbol.index();
                        if i >= MAX_SYMBOLS {
                            (Pushed::Dropped, Some(&m.unknown_symbol))
                        } else {
                            if i >= s.slots.len() {
                                s.slots.resize(i + 1, None);
                                s.last_quote_ns.resize(i + 1, 0);
                                s.latest.resize(i + 1, Latest::default());
                            }
                            s.last_quote_ns[i] = s.last_quote_ns[i].max(q.recv_ts_ns);
                            let latest = &mut s.latest[i];
                            if older(&q, latest) && !latest.reset_by(&q) {
                                // Two connections overlap while rotating: an earlier update
                                // arriving after a later one is never published after it.
                                if latest.refused == 0 {
                                    latest.first_refused_ns = q.recv_ts_ns;
                                }
                                latest.refused = latest.refused.saturating_add(1);
                                (Pushed::Superseded, Some(&m.superseded))
                            } else {
                                *latest = Latest {
                                    seq: q.seq,
                                    ts_ns: q.exchange_ts_ns,
                                    refused: 0,
                                    first_refused_ns: 0,
                                };
                                match &mut s.slots[i] {
                                    Some(pending) => {
                                        *pending = q;
                                        (Pushed::Conflated, None)
                                    }
                                    slot @ None => {
                                        *slot = Some(q);
                                        s.pending.push_back(q.symbol.0);
                                        (Pushed::Queued, None)
                                    }
                                }
                            }
                        }
                    }
                    Event::Print(p) if s.trades.len() >= self.trade_capacity => {
                        drop(p);
                        (Pushed::Dropped, Some(&m.trades_dropped))
                    }
                    Event::Print(p) => {
                        s.trades.push_back(p);
                        (Pushed::Queued, None)
                    }
                }
            }
        };
        match (pushed, dropped_as) {
            (Pushed::Queued, _) => self.wake.notify_one(),
            (Pushed::Conflated, _) => m.conflated.increment(1),
            (Pushed::Dropped | Pushed::Superseded, Some(counter)) => counter.increment(1),
            (Pushed::Dropped | Pushed::Superseded, None) => {}
        }
        pushed
    }

    /// Waits for events and moves up to `max` of them into `out` (trades first, in order, then
    /// the pending quotes oldest first). Returns false once intake is closed and everything
    /// has been taken.
    pub async fn take(&self, max: usize, out: &mut Vec<Event>) -> bool {
        loop {
            {
                let mut s = self.lock();
                let State {
                    slots,
                    pending,
                    trades,
                    closed,
                    ..
                } = &mut *s;
                let max = max.max(1);
                while out.len() < max {
                    let Some(p) = trades.pop_front() else { break };
                    out.push(Event::Print(p));
                }
                while out.len() < max {
                    let Some(i) = pending.pop_front() else { break };
                    if let Some(q) = slots.get_mut(i as usize).and_then(Option::take) {
                        out.push(Event::Quote(q));
                    }
                }
                self.meters.pending_quotes.set(pending.len() as f64);
                self.meters.pending_trades.set(trades.len() as f64);
                if !out.is_empty() {
                    drop(s);
                    self.takes.fetch_add(1, Ordering::Release);
                    self.taken.notify_waiters();
                    return true;
                }
                if *closed {
                    return false;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Batches taken so far.
    pub fn takes(&self) -> u64 {
        self.takes.load(Ordering::Acquire)
    }

    /// Waits until the publisher takes a batch after `seen` takes, at most `within`. Returns
    /// whether it did.
    pub async fn next_take(&self, seen: u64, within: Duration) -> bool {
        let notified = self.taken.notified();
        tokio::pin!(notified);
        // Registered before the check, so a take in between is not missed.
        notified.as_mut().enable();
        if self.takes() != seen {
            return true;
        }
        tokio::time::timeout(within, notified).await.is_ok()
    }

    /// Copies the receive time of each symbol's latest quote (by symbol id; 0: none yet).
    pub fn last_quotes(&self, out: &mut Vec<i64>) {
        let s = self.lock();
        out.clear();
        out.extend_from_slice(&s.last_quote_ns);
    }

    /// Stops intake: later pushes are dropped (counted); `take` returns what is left, then false.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Quotes and trades waiting, for `/health`.
    pub fn depth(&self) -> (usize, usize) {
        let s = self.lock();
        (s.pending.len(), s.trades.len())
    }
}

#[cfg(test)]
mod tests {
    use spreadagg_model::wire::Side;

    use super::*;
    use crate::symbols::SymbolId;

    fn quote(symbol: u32, seq: u64) -> Event {
        Event::Quote(Quote {
            symbol: SymbolId(symbol),
            bid_px: 1.0,
            bid_qty: 1.0,
            ask_px: 2.0,
            ask_qty: 1.0,
            exchange_ts_ns: 0,
            recv_ts_ns: 0,
            seq,
        })
    }

    fn trade(id: u32) -> Event {
        Event::Print(Print {
            symbol: SymbolId(0),
            price: 1.0,
            qty: 1.0,
            side: Side::Buy,
            trade_id: id.to_string(),
            exchange_ts_ns: 0,
            recv_ts_ns: 0,
        })
    }

    fn seqs(events: &[Event]) -> Vec<(u32, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Quote(q) => Some((q.symbol.0, q.seq)),
                Event::Print(_) => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_earlier_update_arriving_late_does_not_replace_a_later_one() {
        // Rotation overlap: the new connection is ahead of the old one.
        let c = Conflator::new(ExchangeId::Okx, 3);
        assert_eq!(c.push(quote(0, 7)), Pushed::Queued);
        assert_eq!(c.push(quote(0, 5)), Pushed::Superseded, "counted, dropped");
        let mut out = Vec::new();
        assert!(c.take(10, &mut out).await);
        assert_eq!(seqs(&out), vec![(0, 7)], "the later update stays");
        // Also once the later one is published: the earlier one never follows it.
        assert_eq!(c.push(quote(0, 6)), Pushed::Superseded);
        assert_eq!(c.depth().0, 0, "nothing pending");
        // A sequence restarted (no time to tell): earlier updates go on being refused until
        // they have persisted for the untimed span, then the next is taken.
        let received = |seq: u64, recv_ts_ns: i64| match quote(0, seq) {
            Event::Quote(q) => Event::Quote(Quote { recv_ts_ns, ..q }),
            Event::Print(_) => unreachable!(),
        };
        // (The refusals of 5 and 6 above, received at 0, started the run.)
        assert_eq!(c.push(received(1, 1_000)), Pushed::Superseded);
        assert_eq!(
            c.push(received(2, RESET_SPAN_UNTIMED_NS - 1)),
            Pushed::Superseded,
            "four refusals, but not for long enough"
        );
        assert_eq!(c.push(received(3, RESET_SPAN_UNTIMED_NS)), Pushed::Queued);
        assert_eq!(
            c.push(received(4, RESET_SPAN_UNTIMED_NS)),
            Pushed::Conflated
        );
        out.clear();
        assert!(c.take(10, &mut out).await);
        assert_eq!(seqs(&out), vec![(0, 4)]);
        // A lagging connection interleaved with the one ahead is never a reset, however long.
        let mut t = 10 * RESET_SPAN_UNTIMED_NS;
        for step in 0..100_u64 {
            t += RESET_SPAN_UNTIMED_NS / 10;
            assert_eq!(
                c.push(received(100 + step, t)),
                if step == 0 {
                    Pushed::Queued
                } else {
                    Pushed::Conflated
                }
            );
            assert_eq!(
                c.push(received(90 + step, t)),
                Pushed::Superseded,
                "step {step}"
            );
            assert_eq!(
                c.push(received(91 + step, t)),
                Pushed::Superseded,
                "step {step}"
            );
        }
        out.clear();
        assert!(c.take(10, &mut out).await);
        assert_eq!(seqs(&out), vec![(0, 199)], "the connection ahead");
        // Without ids, exchange times decide.
        let at = |ts: i64| {
            Event::Quote(Quote {
                exchange_ts_ns: ts,
                ..match quote(1, 0) {
                    Event::Quote(q) => q,
                    Event::Print(_) => unreachable!(),
                }
            })
        };
        c.push(at(200));
        c.push(at(100));
        let mut out = Vec::new();
        assert!(c.take(10, &mut out).await);
        assert!(matches!(out.as_slice(), [Event::Quote(q)] if q.exchange_ts_ns == 200));
    }

    #[tokio::test]
    async fn an_update_timed_earlier_is_refused_until_it_has_persisted_for_the_timed_span() {
        // A rotation's old connection several updates behind the new one: its ids are lower
        // and its exchange times earlier, so no short run of them is a reset.
        let timed = |seq: u64, ts: i64, recv_ts_ns: i64| {
            Event::Quote(Quote {
                exchange_ts_ns: ts,
                recv_ts_ns,
                ..match quote(0, seq) {
                    Event::Quote(q) => q,
                    Event::Print(_) => unreachable!(),
                }
            })
        };
        let c = Conflator::new(ExchangeId::Binance, 3);
        assert_eq!(c.push(timed(105, 1_050, 1)), Pushed::Queued);
        for seq in 101..105 {
            assert_eq!(
                c.push(timed(seq, seq as i64 * 10, RESET_SPAN_UNTIMED_NS * 2)),
                Pushed::Superseded,
                "update {seq}"
            );
        }
        // Without ids, an earlier time is refused however often within the timed span.
        let c = Conflator::new(ExchangeId::Mexc, 3);
        assert_eq!(c.push(timed(0, 500, 0)), Pushed::Queued);
        for ts in 1..400 {
            assert_eq!(c.push(timed(0, ts, ts * 1_000_000)), Pushed::Superseded);
        }
        // A later time is taken.
        assert_eq!(c.push(timed(0, 600, 400_000_000)), Pushed::Conflated);
        let mut out = Vec::new();
        assert!(c.take(10, &mut out).await);
        assert!(matches!(out.as_slice(), [Event::Quote(q)] if q.exchange_ts_ns == 600));

        // One update timed far in the future does not freeze the symbol for ever: once earlier
        // updates have been refused for the timed span, the next is taken.
        let c = Conflator::new(ExchangeId::Mexc, 3);
        let future = i64::MAX / 2;
        assert_eq!(c.push(timed(0, future, 0)), Pushed::Queued);
        let mut recv = 0;
        while recv < RESET_SPAN_TIMED_NS {
            assert_eq!(c.push(timed(0, 1_000 + recv, recv)), Pushed::Superseded);
            recv += RESET_SPAN_TIMED_NS / 20;
        }
        assert_eq!(c.push(timed(0, 1_000 + recv, recv)), Pushed::Conflated);
        assert_eq!(
            c.push(timed(0, 2_000 + recv, recv)),
            Pushed::Conflated,
            "and after it"
        );
        out.clear();
        assert!(c.take(10, &mut out).await);
        assert!(matches!(out.as_slice(), [Event::Quote(q)] if q.exchange_ts_ns == 2_000 + recv));
    }

    #[tokio::test]
    async fn the_latest_quote_wins_and_trades_keep_their_order() {
        let c = Conflator::new(ExchangeId::Okx, 3);
        assert_eq!(c.push(quote(1, 1)), Pushed::Queued);
        assert_eq!(c.push(quote(0, 1)), Pushed::Queued);
        assert_eq!(c.push(quote(1, 2)), Pushed::Conflated);
        assert_eq!(c.push(quote(1, 3)), Pushed::Conflated);
        for id in 0..4 {
            let expected = if id < 3 {
                Pushed::Queued
            } else {
                Pushed::Dropped
            };
            assert_eq!(c.push(trade(id)), expected, "trade {id}");
        }
        assert_eq!(c.depth(), (2, 3));
        let mut out = Vec::new();
        assert!(c.take(100, &mut out).await);
        let trades: Vec<&str> = out
            .iter()
            .filter_map(|e| match e {
                Event::Print(p) => Some(p.trade_id.as_str()),
                Event::Quote(_) => None,
            })
            .collect();
        assert_eq!(trades, ["0", "1", "2"], "trades in order, none conflated");
        assert_eq!(
            seqs(&out),
            [(1, 3), (0, 1)],
            "one quote per symbol, the latest, in first-pending order"
        );
        assert_eq!(c.depth(), (0, 0));
    }

    #[tokio::test]
    async fn take_respects_its_batch_and_drains_after_close() {
        let c = Conflator::new(ExchangeId::Okx, 10);
        for s in 0..5 {
            c.push(quote(s, 1));
        }
        let mut out = Vec::new();
        assert!(c.take(2, &mut out).await);
        assert_eq!(out.len(), 2);
        c.close();
        assert_eq!(c.push(quote(9, 1)), Pushed::Dropped, "closed to intake");
        out.clear();
        assert!(c.take(10, &mut out).await);
        assert_eq!(seqs(&out), [(2, 1), (3, 1), (4, 1)]);
        out.clear();
        assert!(!c.take(10, &mut out).await, "closed and empty");
    }

    #[tokio::test]
    async fn a_waiting_publisher_is_woken() {
        let c = std::sync::Arc::new(Conflator::new(ExchangeId::Okx, 10));
        let taker = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                c.take(10, &mut out).await;
                out.len()
            })
        };
        tokio::task::yield_now().await;
        c.push(quote(0, 1));
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), taker)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(n, 1);
    }

    #[test]
    fn an_out_of_range_symbol_is_dropped_not_grown() {
        let c = Conflator::new(ExchangeId::Okx, 10);
        let mut q = quote(0, 1);
        if let Event::Quote(q) = &mut q {
            q.symbol = SymbolId(u32::MAX);
        }
        assert_eq!(c.push(q), Pushed::Dropped);
        assert_eq!(c.depth(), (0, 0));
    }
}
