//! Every fault, for every exchange added after the first five: one line per exchange below
//! makes a module of tests, each injecting one fault into that exchange's simulator while a
//! steady exchange runs beside it on the same simulator (the steady one keeps its rate and
//! never pauses: `Pair::inject`). The first five exchanges are covered fault by fault in
//! `faults.rs`; faults only some protocols have (a notice before a close, server pings whose
//! pongs the exchange checks) are tested beside the exchange that has them.
//!
//! Like `faults.rs`, these read process-wide counters: run them under `cargo nextest`.

use std::time::Duration;

use spreadagg_model::ExchangeId;
use spreadagg_simulate::Fault;

use super::ConnectionSettings;
use super::conformance::settings;
use super::faults::{counter, pair};

/// Garbage frames are counted as rejections and the session goes on.
async fn garbage(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let (before, rejected) = (p.faulted.generation(), p.rejected());
    p.inject(Fault::Garbage { count: 20 }, Duration::from_secs(2))
        .await;
    assert_eq!(
        p.faulted.generation(),
        before,
        "{faulted}: garbage ended the session: {}",
        p.faulted.health.report()
    );
    assert!(
        p.rejected() >= rejected + 20.0,
        "{faulted}: 20 garbage frames, {} counted",
        p.rejected() - rejected
    );
    p.recovered(Duration::from_secs(5)).await;
    p.stop().await;
}

/// A frame over the exchange's message cap (`Limits::max_message_bytes`) ends the session;
/// a new one takes over.
async fn oversized(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let before = p.faulted.generation();
    p.inject(Fault::Oversized, Duration::from_secs(3)).await;
    assert!(
        p.faulted.generation() > before,
        "{faulted}: a frame over its message cap was accepted: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

/// Refused subscribe requests are counted and retried until they hold.
async fn refused(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let label = [("exchange", faulted.as_str()), ("reason", "refused")];
    let before = counter("spreadagg_ingest_subscribe_failures_total", &label);
    p.sim
        .inject(faulted, Fault::RefuseSubscription { count: 2 })
        .expect("accepted");
    // A disconnect makes the adapter send its requests again; the first two are refused.
    p.inject(Fault::Disconnect, Duration::from_secs(3)).await;
    p.recovered(Duration::from_secs(15)).await;
    let now = counter("spreadagg_ingest_subscribe_failures_total", &label);
    assert!(
        now >= before + 2.0,
        "{faulted}: two refusals, {} counted",
        now - before
    );
    p.stop().await;
}

/// A close frame without warning: reconnected.
async fn close_without_notice(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let before = p.faulted.generation();
    p.inject(Fault::CloseWithoutNotice, Duration::from_secs(3))
        .await;
    assert!(
        p.faulted.generation() > before,
        "{faulted}: not reconnected after a close: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

/// The TCP connection just ends: reconnected.
async fn disconnect(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let before = p.faulted.generation();
    p.inject(Fault::Disconnect, Duration::from_secs(3)).await;
    assert!(
        p.faulted.generation() > before,
        "{faulted}: not reconnected after a disconnect: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

/// Keep-alives answered but no market data: the data watchdog recycles the session.
async fn stall(faulted: ExchangeId, steady: ExchangeId) {
    let settings = ConnectionSettings {
        data_stale_after: Duration::from_secs(2),
        ..settings()
    };
    let p = pair(faulted, steady, settings).await;
    let label = [("exchange", faulted.as_str()), ("watchdog", "data")];
    let (before, stale) = (
        p.faulted.generation(),
        counter("spreadagg_ingest_stale_total", &label),
    );
    p.inject(Fault::Stall { duration_ms: 4_000 }, Duration::from_secs(6))
        .await;
    assert!(
        p.faulted.generation() > before,
        "{faulted}: the stalled session was not replaced: {}",
        p.faulted.health.report()
    );
    assert!(
        counter("spreadagg_ingest_stale_total", &label) > stale,
        "{faulted}: the data watchdog fired"
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

/// Every frame delayed: data trickles through and the live session is not recycled.
async fn slow(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let before = p.faulted.generation();
    let fault = Fault::Slow {
        duration_ms: 3_000,
        delay_ms: 100,
    };
    let seen = p.inject(fault, Duration::from_secs(4)).await;
    assert!(
        !seen.quotes.is_empty(),
        "{faulted}: data trickles through while the sender is slow"
    );
    assert_eq!(
        p.faulted.generation(),
        before,
        "{faulted}: a slow (but live) sender is not recycled: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(5)).await;
    p.stop().await;
}

macro_rules! fault_matrix {
    ($($name:ident => ($faulted:expr, $steady:expr)),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn garbage_is_counted_and_the_session_goes_on() {
                    super::garbage($faulted, $steady).await;
                }

                // Two workers, as the ingest binary has: on one thread, reading Coinbase's
                // 64 MiB frame would stall the steady feed's task in this test process, which
                // says nothing of production (an ingestor process per exchange).
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn an_oversized_frame_ends_the_session_which_reconnects() {
                    super::oversized($faulted, $steady).await;
                }

                #[tokio::test]
                async fn refused_subscriptions_are_counted_and_retried() {
                    super::refused($faulted, $steady).await;
                }

                #[tokio::test]
                async fn a_close_without_notice_reconnects() {
                    super::close_without_notice($faulted, $steady).await;
                }

                #[tokio::test]
                async fn a_disconnect_reconnects() {
                    super::disconnect($faulted, $steady).await;
                }

                #[tokio::test]
                async fn a_silent_stall_is_recycled_by_the_data_watchdog() {
                    super::stall($faulted, $steady).await;
                }

                #[tokio::test]
                async fn a_slow_sender_is_survived() {
                    super::slow($faulted, $steady).await;
                }
            }
        )*

        /// The exchanges this matrix covers, so that a new adapter cannot go untested.
        #[test]
        fn every_adapter_after_the_first_five_has_a_fault_line() {
            let covered: &[ExchangeId] = &[$($faulted),*];
            let first_five = [
                ExchangeId::Binance,
                ExchangeId::Okx,
                ExchangeId::Htx,
                ExchangeId::Kucoin,
                ExchangeId::Mexc,
            ];
            for id in ExchangeId::ALL {
                if !first_five.contains(&id) {
                    assert!(covered.contains(&id), "{id} has an adapter but no fault line");
                }
            }
        }
    };
}

// One line per exchange: (faulted, steady).
fault_matrix! {
    gateio => (ExchangeId::Gateio, ExchangeId::Okx),
    bingx => (ExchangeId::Bingx, ExchangeId::Okx),
    bitget => (ExchangeId::Bitget, ExchangeId::Okx),
    bybit => (ExchangeId::Bybit, ExchangeId::Okx),
    coinbase => (ExchangeId::Coinbase, ExchangeId::Okx),
    kraken => (ExchangeId::Kraken, ExchangeId::Okx),
}

/// BingX pings every 5 s; the simulator closes a connection whose ping went unanswered for
/// 10 s (BingX documents no deadline): the session must end on it and be replaced.
#[tokio::test]
async fn unanswered_bingx_pings_hit_its_deadline_and_the_session_is_replaced() {
    super::faults::unanswered_pings_end_the_session(ExchangeId::Bingx, ExchangeId::Okx).await;
}

/// Bybit documents no notice before a close: `close_with_notice` is a bare Close frame, and
/// the session reconnects as after any close.
#[tokio::test]
async fn bybit_close_with_notice_is_a_bare_close_and_reconnects() {
    let p = pair(ExchangeId::Bybit, ExchangeId::Okx, settings()).await;
    let before = p.faulted.generation();
    p.inject(Fault::CloseWithNotice, Duration::from_secs(3))
        .await;
    assert!(
        p.faulted.generation() > before,
        "bybit: not reconnected after a close: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

/// Bybit's service restart (its documented resync condition): every `orderbook.1` sequence
/// starts again at `u` 1. The session goes on, nothing is dropped as out of order, and the
/// quotes carry the new sequence's small ids at once.
#[tokio::test]
async fn bybit_a_service_restart_is_taken_at_once() {
    let p = pair(ExchangeId::Bybit, ExchangeId::Okx, settings()).await;
    let generation = p.faulted.generation();
    let label = [("exchange", "bybit"), ("reason", "out_of_order")];
    let stale = counter("spreadagg_ingest_rejected_total", &label);
    let before = p.faulted.collect(Duration::from_secs(1)).await;
    p.sim.bybit_restart();
    let after = p.faulted.collect(Duration::from_secs(2)).await;
    assert_eq!(
        p.faulted.generation(),
        generation,
        "bybit: the restart ended the session: {}",
        p.faulted.health.report()
    );
    assert_eq!(
        counter("spreadagg_ingest_rejected_total", &label),
        stale,
        "bybit: quotes of the restarted sequence were dropped as stale"
    );
    for (i, name) in p.faulted.names.iter().enumerate() {
        let ids = |seen: &super::conformance::Seen| -> Vec<u64> {
            seen.updates
                .get(&(i as u32))
                .map(|u| u.iter().map(|(seq, _)| *seq).collect())
                .unwrap_or_default()
        };
        let old_min = ids(&before).into_iter().min().expect("quotes before");
        let new = ids(&after);
        assert!(
            new.iter().filter(|seq| **seq < old_min).count() >= 5,
            "bybit: {name}: too few quotes of the new sequence after the restart: {new:?} (before: from {old_min})"
        );
        assert!(
            new.last().is_some_and(|seq| *seq < old_min),
            "bybit: {name}: the latest quote is not of the new sequence: {new:?}"
        );
    }
    p.stop().await;
}

/// Coinbase's resync condition: `sequence_num` counts every message of a connection, and a gap
/// means a lost message, after which the level2 books cannot be trusted. A link that loses one
/// `l2_data` message on the first connection (the wrapper below drops it before the session
/// sees it, as a lossy network would) makes the session drop its books and ask for a new
/// connection; the successor starts from fresh snapshots and quotes go on without a long gap.
mod coinbase_resync {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::super::conformance::{feed_with, settings, simulator};
    use crate::exchange::coinbase::Coinbase;
    use crate::exchange::{
        Adapter, Control, Frame, Instrument, Limits, Output, ParseError, Request, Session,
        SymbolTable,
    };
    use spreadagg_model::ExchangeId;
    use std::collections::HashMap;
    use std::time::Duration;

    /// Coinbase with a link that loses the 30th `l2_data` message, once per test.
    struct Lossy {
        lost: Arc<AtomicBool>,
    }

    struct LossySession {
        inner: Box<dyn Session>,
        lost: Arc<AtomicBool>,
        l2_seen: AtomicU32,
    }

    impl Session for LossySession {
        fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
            self.inner.subscribe(natives, next_id)
        }

        fn on_frame(
            &mut self,
            frame: Frame<'_>,
            symbols: &SymbolTable,
            recv_ts_ns: i64,
            out: &mut Output,
        ) -> Result<Control, ParseError> {
            if let Frame::Text(t) = frame
                && t.starts_with(r#"{"channel":"l2_data""#)
                && self.l2_seen.fetch_add(1, Ordering::Relaxed) == 30
                && !self.lost.swap(true, Ordering::Relaxed)
            {
                return Ok(Control::Ignored);
            }
            self.inner.on_frame(frame, symbols, recv_ts_ns, out)
        }

        fn forget(&mut self, request: u64) {
            self.inner.forget(request);
        }
    }

    impl Adapter for Lossy {
        fn id(&self) -> ExchangeId {
            Coinbase.id()
        }
        fn default_ws_url(&self) -> &'static str {
            Coinbase.default_ws_url()
        }
        fn default_rest_url(&self) -> &'static str {
            Coinbase.default_rest_url()
        }
        fn limits(&self) -> Limits {
            Coinbase.limits()
        }
        fn instruments_path(&self) -> &'static str {
            Coinbase.instruments_path()
        }
        fn volumes_path(&self) -> &'static str {
            Coinbase.volumes_path()
        }
        fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
            Coinbase.parse_instruments(body)
        }
        fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
            Coinbase.parse_volumes(body)
        }
        fn session(&self) -> Box<dyn Session> {
            Box::new(LossySession {
                inner: Coinbase.session(),
                lost: self.lost.clone(),
                l2_seen: AtomicU32::new(0),
            })
        }
        fn keepalive_every(&self) -> Option<Duration> {
            Coinbase.keepalive_every()
        }
    }

    #[tokio::test]
    async fn a_lost_level2_message_rotates_to_a_fresh_connection() {
        let stop = CancellationToken::new();
        let sim = simulator(&[ExchangeId::Coinbase], &stop).await;
        let lost = Arc::new(AtomicBool::new(false));
        let adapter: Arc<dyn Adapter> = Arc::new(Lossy { lost: lost.clone() });
        let feed = feed_with(&sim, ExchangeId::Coinbase, adapter, settings(), &stop).await;
        feed.wait_connected(Duration::from_secs(15)).await;
        let seen = feed.collect(Duration::from_secs(4)).await;
        assert!(
            lost.load(std::sync::atomic::Ordering::Relaxed),
            "a message was lost"
        );
        let detail = feed.detail();
        assert!(
            detail["handovers"].as_u64().unwrap_or(0) >= 1 && feed.generation() >= 2,
            "the gap made the session hand over to a fresh one: {}",
            feed.health.report()
        );
        // The successor took over from fresh snapshots: every symbol is quoted again, and the
        // pause (the old books dropped, the successor subscribing) stays short.
        assert!(
            seen.worst_gap() < Duration::from_secs(2),
            "a {:?} gap in quotes across the resync",
            seen.worst_gap()
        );
        let after = feed.collect(Duration::from_secs(1)).await;
        assert_eq!(after.quotes.len(), super::super::conformance::SYMBOLS.len());
        stop.cancel();
        feed.join().await;
        tokio::time::timeout(Duration::from_secs(5), sim.join())
            .await
            .expect("the simulator stops within 5 s");
    }
}

/// Kraken: a reconnect brings new trades only. The trade channel's snapshot (the last 50
/// trades) is neither asked for nor, should it come, re-emitted, so no trade delivered before
/// the disconnect is delivered again after it. Trades are collected without a pause across the
/// disconnect, so the snapshot's trades would be among those seen before.
#[tokio::test]
async fn kraken_does_not_re_emit_old_trades_after_a_reconnect() {
    let p = pair(ExchangeId::Kraken, ExchangeId::Okx, settings()).await;
    let generation = p.faulted.generation();
    let (seen, ()) = tokio::join!(p.faulted.collect(Duration::from_secs(6)), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.sim
            .inject(ExchangeId::Kraken, Fault::Disconnect)
            .expect("fault accepted");
    });
    assert!(
        p.faulted.generation() > generation,
        "kraken: not reconnected: {}",
        p.faulted.health.report()
    );
    let mut ids = std::collections::HashSet::new();
    let again: Vec<&str> = seen
        .trades
        .iter()
        .filter(|t| !ids.insert((t.symbol.0, t.trade_id.as_str())))
        .map(|t| t.trade_id.as_str())
        .collect();
    assert!(
        again.is_empty(),
        "kraken: trades delivered again after the reconnect: {again:?}"
    );
    assert!(seen.trades.len() > 50, "kraken: trades before and after");
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}
