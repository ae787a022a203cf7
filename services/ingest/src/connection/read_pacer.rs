//! What a socket reader does while the publisher is behind.
//!
//! A quote that replaces an unpublished quote of its symbol is work no one downstream ever
//! sees. Once a reader has pushed [`RUN`] quotes in a row that were all conflated, every symbol
//! it carries is already waiting for the publisher, and reading on only takes the CPU the
//! publisher and the broker need (profiled under a feed as fast as it is read: 43% of the
//! ingestor's CPU went to reading quotes replaced before they were published). So the reader
//! waits for the publisher's next batch, at most [`WAIT`], then reads on. The frames wait in
//! the socket's buffer meanwhile: nothing is lost and the order is kept.
//!
//! A real exchange does not send more when it is read faster: whatever the reader does not read
//! now it must read later, and a reader that waited too long falls behind its feed for good
//! (quotes published late, in-band pings answered late, the exchange closing a slow client).
//! So waiting has a budget: it earns [`BUDGET_SHARE`] of the time spent reading, as a token
//! bucket of at most [`WAIT`], so a reader waits at most half of wall time. A reader that can
//! read R frames a second therefore still reads at least R/2 while it waits, and keeps up with
//! any feed below that (measured on the 2-core benchmark machine: under a flood, a reader that
//! waited up to half the time still read 320-425k Binance quotes a second, far above any one
//! connection's feed, and a feed paced at 200,000 frames a second, above what the broker
//! acknowledged, was read in full); the time spent waiting is a counter (`spreadagg_ingest_read_wait_microseconds_total`).
//!
//! A publisher that takes nothing within [`WAIT`] is stuck (the broker is away and its window
//! is full): the reader then stops waiting until the publisher takes again, so during an outage
//! the socket is read at full speed and the latest quote of every symbol is kept. Trades never
//! make a reader wait: a trade ends the run.

use std::time::Duration;

use metrics::Counter;
use tokio::time::Instant;

use crate::conflate::{Conflator, Pushed};

/// Conflated quotes in a row after which the reader waits for the publisher.
pub(crate) const RUN: u32 = 64;
/// Longest wait for the publisher's next batch.
pub(crate) const WAIT: Duration = Duration::from_millis(50);
/// Shortest wait worth a timer (tokio's timers tick in milliseconds).
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Wait time earned per unit of time spent reading (see the module documentation).
pub(crate) const BUDGET_SHARE: f64 = 1.0;

/// One per session. See the module documentation.
#[derive(Debug)]
pub(crate) struct ReadPacer {
    run: u32,
    /// The publisher's batch count when it last failed to take within `WAIT`.
    stuck_at: Option<u64>,
    /// Wait time still allowed in nanoseconds, earned at `BUDGET_SHARE` of the time spent
    /// reading, up to `WAIT`; negative while a wait's overrun is being paid back.
    credit_ns: i64,
    refilled_at: Instant,
    /// Time waited in a row without the publisher taking anything.
    unanswered: Duration,
    waits: Counter,
    waited: Counter,
}

impl ReadPacer {
    pub(crate) fn new(exchange: &'static str) -> Self {
        Self {
            run: 0,
            stuck_at: None,
            credit_ns: i64::try_from(WAIT.as_nanos()).unwrap_or(i64::MAX),
            refilled_at: Instant::now(),
            unanswered: Duration::ZERO,
            waits: metrics::counter!("spreadagg_ingest_read_waits_total", "exchange" => exchange),
            waited: metrics::counter!("spreadagg_ingest_read_wait_microseconds_total", "exchange" => exchange),
        }
    }

    /// Records what a push did.
    pub(crate) fn note(&mut self, pushed: Pushed) {
        if pushed == Pushed::Conflated {
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
        }
    }

    /// Waits for the publisher's next batch when the run is long enough, the publisher is not
    /// stuck and the budget allows. Returns whether it waited.
    pub(crate) async fn pace(&mut self, sink: &Conflator) -> bool {
        if self.run < RUN {
            return false;
        }
        self.run = 0;
        let seen = sink.takes();
        if self.stuck_at == Some(seen) {
            return false;
        }
        let now = Instant::now();
        let earned = now
            .saturating_duration_since(self.refilled_at)
            .mul_f64(BUDGET_SHARE);
        self.refilled_at = now;
        // Nanoseconds; negative after a wait overran its allowance (timers fire on millisecond
        // ticks): the overrun is paid from later earnings.
        let wait_ns = i64::try_from(WAIT.as_nanos()).unwrap_or(i64::MAX);
        self.credit_ns = self
            .credit_ns
            .saturating_add(i64::try_from(earned.as_nanos()).unwrap_or(i64::MAX))
            .min(wait_ns);
        if self.credit_ns < i64::try_from(MIN_WAIT.as_nanos()).unwrap_or(i64::MAX) {
            return false;
        }
        let allowed = Duration::from_nanos(self.credit_ns.unsigned_abs());
        self.waits.increment(1);
        let took = sink.next_take(seen, allowed).await;
        let waited = now.elapsed();
        self.credit_ns = self
            .credit_ns
            .saturating_sub(i64::try_from(waited.as_nanos()).unwrap_or(i64::MAX));
        // Time spent waiting earns nothing: the budget is a share of the time spent reading.
        self.refilled_at = Instant::now();
        self.waited
            .increment(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
        if took {
            self.stuck_at = None;
            self.unanswered = Duration::ZERO;
        } else {
            self.unanswered += waited;
            if self.unanswered >= WAIT {
                // A whole WAIT without a take: the publisher is stuck, not just busy.
                self.stuck_at = Some(seen);
                self.unanswered = Duration::ZERO;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use spreadagg_model::ExchangeId;

    use super::*;
    use crate::event::{Event, Quote};
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

    /// Pushes quotes of symbol 0 until the pacer's run is complete.
    fn fill_run(c: &Conflator, pacer: &mut ReadPacer, seq: &mut u64) {
        for _ in 0..=RUN {
            *seq += 1;
            pacer.note(c.push(quote(0, *seq)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_for_the_next_batch_only_while_quotes_conflate() {
        let c = std::sync::Arc::new(Conflator::new(ExchangeId::Binance, 8));
        let mut pacer = ReadPacer::new("binance");
        let mut seq = 0;
        // Fewer than RUN conflations in a row: no wait.
        for _ in 0..RUN {
            seq += 1;
            pacer.note(c.push(quote(0, seq)));
        }
        assert!(!pacer.pace(&c).await, "a short run reads on");

        // A full run waits, and the publisher's take ends the wait before WAIT.
        fill_run(&c, &mut pacer, &mut seq);
        let publisher = {
            let c = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut out = Vec::new();
                assert!(c.take(16, &mut out).await);
                out.len()
            })
        };
        let started = tokio::time::Instant::now();
        assert!(pacer.pace(&c).await, "a full run waits");
        assert!(started.elapsed() < WAIT, "the take ended the wait");
        assert_eq!(
            publisher.await.expect("publisher"),
            1,
            "one conflated quote"
        );

        // A run broken by anything but a conflation (a trade, a first quote) does not wait.
        for _ in 0..RUN * 2 {
            seq += 1;
            pacer.note(c.push(quote(0, seq)));
            pacer.note(Pushed::Queued);
        }
        assert!(!pacer.pace(&c).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_publisher_is_waited_for_once_then_the_socket_is_read_at_full_speed() {
        let c = Conflator::new(ExchangeId::Binance, 8);
        let mut pacer = ReadPacer::new("binance");
        let mut seq = 0;
        fill_run(&c, &mut pacer, &mut seq);
        let started = tokio::time::Instant::now();
        assert!(pacer.pace(&c).await, "waits once");
        assert_eq!(started.elapsed(), WAIT, "no take: the whole WAIT");
        for _ in 0..3 {
            fill_run(&c, &mut pacer, &mut seq);
            assert!(!pacer.pace(&c).await, "stuck: no more waits");
        }
        // The publisher takes again: once reading has earned budget back, a full run waits
        // again.
        let mut out = Vec::new();
        assert!(c.take(16, &mut out).await);
        fill_run(&c, &mut pacer, &mut seq);
        assert!(!pacer.pace(&c).await, "no budget left after a whole WAIT");
        tokio::time::advance(WAIT * 2).await;
        fill_run(&c, &mut pacer, &mut seq);
        assert!(pacer.pace(&c).await);
    }

    /// A publisher that keeps taking, but slowly, never holds a reader more than its budget:
    /// it waits at most `BUDGET_SHARE` of the time it spent reading (plus one initial `WAIT`).
    #[tokio::test(start_paused = true)]
    async fn waiting_never_takes_more_than_its_share_of_the_time() {
        let c = std::sync::Arc::new(Conflator::new(ExchangeId::Binance, 8));
        let stop = tokio_util::sync::CancellationToken::new();
        let publisher = {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.is_cancelled() {
                    // A slow broker: one batch every 20 ms.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    out.clear();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(1), c.take(16, &mut out)).await;
                }
            })
        };
        let mut pacer = ReadPacer::new("binance");
        let mut seq = 0;
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut waits = 0;
        for _ in 0..2_000 {
            // Reading a run of frames costs the reader 1 ms.
            tokio::time::advance(Duration::from_millis(1)).await;
            fill_run(&c, &mut pacer, &mut seq);
            let before = Instant::now();
            if pacer.pace(&c).await {
                waits += 1;
                waited += before.elapsed();
            }
        }
        stop.cancel();
        publisher.await.expect("publisher");
        let elapsed = started.elapsed();
        assert!(waits > 100, "the pacer waited ({waits} times)");
        assert!(
            waited.as_secs_f64()
                <= BUDGET_SHARE * (elapsed - waited).as_secs_f64() + WAIT.as_secs_f64(),
            "waited {waited:?} of {elapsed:?}"
        );
    }
}
