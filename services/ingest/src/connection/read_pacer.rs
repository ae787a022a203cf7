//! What a socket reader does while the publisher is behind.
//!
//! A quote that replaces an unpublished quote of its symbol is work no one downstream ever
//! sees. Once a reader has pushed [`RUN`] quotes in a row that were all conflated, every symbol
//! it carries is already waiting for the publisher, and reading on only takes the CPU the
//! publisher and the broker need (profiled under a feed as fast as it is read: 43% of the
//! ingestor's CPU went to reading quotes replaced before they were published). So the reader
//! waits for the publisher's next batch, at most [`WAIT`], then reads on. The frames wait in
//! the socket's buffer meanwhile: nothing is lost, the order is kept, and the quote published
//! next is at most one batch older than it would have been.
//!
//! A publisher that takes nothing within [`WAIT`] is stuck (the broker is away and its window
//! is full): the reader then stops waiting until the publisher takes again, so during an outage
//! the socket is read at full speed, as an exchange requires, and the latest quote of every
//! symbol is kept. Trades never make a reader wait: a trade ends the run.

use std::time::Duration;

use metrics::Counter;

use crate::conflate::{Conflator, Pushed};

/// Conflated quotes in a row after which the reader waits for the publisher.
pub(crate) const RUN: u32 = 64;
/// Longest wait for the publisher's next batch.
pub(crate) const WAIT: Duration = Duration::from_millis(50);

/// One per session. See the module documentation.
#[derive(Debug)]
pub(crate) struct ReadPacer {
    run: u32,
    /// The publisher's batch count when it last failed to take within `WAIT`.
    stuck_at: Option<u64>,
    waits: Counter,
}

impl ReadPacer {
    pub(crate) fn new(exchange: &'static str) -> Self {
        Self {
            run: 0,
            stuck_at: None,
            waits: metrics::counter!("spreadagg_ingest_read_waits_total", "exchange" => exchange),
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

    /// Waits for the publisher's next batch when the run is long enough and the publisher is
    /// not stuck. Returns whether it waited.
    pub(crate) async fn pace(&mut self, sink: &Conflator) -> bool {
        if self.run < RUN {
            return false;
        }
        self.run = 0;
        let seen = sink.takes();
        if self.stuck_at == Some(seen) {
            return false;
        }
        self.waits.increment(1);
        if sink.next_take(seen, WAIT).await {
            self.stuck_at = None;
        } else {
            self.stuck_at = Some(seen);
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
        // The publisher takes again: the next full run waits again.
        let mut out = Vec::new();
        assert!(c.take(16, &mut out).await);
        fill_run(&c, &mut pacer, &mut seq);
        assert!(pacer.pace(&c).await);
    }
}
