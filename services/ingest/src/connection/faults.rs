//! Fault injection through the simulator: each fault hits one exchange while another exchange
//! runs in the same process, on the same simulator. The faulted connection must recover on
//! its own (the way the fault calls for: the data watchdog, a reconnect, a retried
//! subscription, a fresh token, a rotation), and the other exchange's quote rate must not
//! notice. Counters are read from a real Prometheus recorder, one per test process: run these
//! under `cargo nextest` (a process per test, as CI does); under `cargo test` the tests of one
//! binary share the counters, so a count could be met by another test's events: there, run
//! them alone and one at a time (`scripts/test` does when nextest is missing:
//! `cargo test -p spreadagg-ingest --lib -- connection::faults:: --test-threads=1`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{Fault, Simulator};
use tokio_util::sync::CancellationToken;

use super::ConnectionSettings;
use super::conformance::{Feed, Seen, feed, settings, simulator};

/// The process's recorder: installed before any feed registers its counters.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test process")
    })
}

/// The sum of a counter over every series carrying all of `labels`.
pub(super) fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    recorder()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A simulator serving two exchanges, a connection to each, both subscribed.
pub(super) struct Pair {
    pub(super) sim: Simulator,
    stop: CancellationToken,
    pub(super) faulted: Feed,
    steady: Feed,
}

pub(super) async fn pair(
    faulted: ExchangeId,
    steady: ExchangeId,
    settings: ConnectionSettings,
) -> Pair {
    recorder();
    let stop = CancellationToken::new();
    let sim = simulator(&[faulted, steady], &stop).await;
    let faulted = feed(&sim, faulted, settings.clone(), &stop).await;
    let steady = feed(&sim, steady, settings, &stop).await;
    faulted.wait_connected(Duration::from_secs(15)).await;
    steady.wait_connected(Duration::from_secs(15)).await;
    Pair {
        sim,
        stop,
        faulted,
        steady,
    }
}

/// Quotes per second over every symbol.
fn rate(seen: &Seen, window: Duration) -> f64 {
    let n: usize = seen.quotes.values().map(Vec::len).sum();
    n as f64 / window.as_secs_f64()
}

impl Pair {
    /// Runs `fault` on the faulted exchange and watches both for `window`: the steady one
    /// keeps its quote rate (against a baseline measured just before) and never pauses.
    /// Returns what the faulted exchange delivered meanwhile.
    pub(super) async fn inject(&self, fault: Fault, window: Duration) -> Seen {
        let baseline_window = Duration::from_secs(2);
        let baseline = self.steady.collect(baseline_window).await;
        self.sim
            .inject(self.faulted.exchange, fault)
            .expect("fault accepted");
        let (faulted, during) =
            tokio::join!(self.faulted.collect(window), self.steady.collect(window));
        let (before, now) = (rate(&baseline, baseline_window), rate(&during, window));
        let (f, s) = (self.faulted.exchange, self.steady.exchange);
        assert!(
            now >= 0.7 * before,
            "{s} slowed while {f} had {}: {now:.0}/s against {before:.0}/s before",
            fault.label()
        );
        assert!(
            during.worst_gap() < Duration::from_millis(1_000),
            "{s} paused {:?} while {f} had {}",
            during.worst_gap(),
            fault.label()
        );
        faulted
    }

    /// The faulted exchange is back: subscribed, and quoting every symbol.
    pub(super) async fn recovered(&self, within: Duration) {
        let f = &self.faulted;
        f.wait_connected(within).await;
        let seen = f.collect(Duration::from_secs(2)).await;
        for (i, name) in f.names.iter().enumerate() {
            let n = seen.quotes.get(&(i as u32)).map_or(0, Vec::len);
            assert!(
                n >= 5,
                "{}: {n} quotes of {name} in 2 s after recovery",
                f.exchange
            );
        }
    }

    pub(super) fn rejected(&self) -> f64 {
        counter(
            "spreadagg_ingest_rejected_total",
            &[("exchange", self.faulted.exchange.as_str())],
        )
    }

    pub(super) async fn stop(self) {
        self.stop.cancel();
        self.faulted.join().await;
        self.steady.join().await;
        tokio::time::timeout(Duration::from_secs(5), self.sim.join())
            .await
            .expect("the simulator stops within 5 s");
    }
}

#[tokio::test]
async fn a_silent_stall_with_pings_answered_is_recycled_by_the_data_watchdog() {
    let p = pair(
        ExchangeId::Okx,
        ExchangeId::Binance,
        ConnectionSettings {
            data_stale_after: Duration::from_secs(2),
            ..settings()
        },
    )
    .await;
    let before = p.faulted.generation();
    let stale = counter(
        "spreadagg_ingest_stale_total",
        &[("exchange", "okx"), ("watchdog", "data")],
    );
    p.inject(Fault::Stall { duration_ms: 4_000 }, Duration::from_secs(6))
        .await;
    assert!(
        p.faulted.generation() > before,
        "the stalled session was not replaced: {}",
        p.faulted.health.report()
    );
    assert!(
        counter(
            "spreadagg_ingest_stale_total",
            &[("exchange", "okx"), ("watchdog", "data")]
        ) > stale,
        "the data watchdog fired"
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

#[tokio::test]
async fn garbage_is_counted_and_the_session_goes_on() {
    for (faulted, steady) in [
        (ExchangeId::Okx, ExchangeId::Htx),
        (ExchangeId::Htx, ExchangeId::Okx),
        (ExchangeId::Mexc, ExchangeId::Kucoin),
    ] {
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
}

#[tokio::test]
async fn an_oversized_frame_ends_the_session_which_reconnects() {
    for (faulted, steady) in [
        (ExchangeId::Binance, ExchangeId::Okx),
        (ExchangeId::Mexc, ExchangeId::Htx),
    ] {
        let p = pair(faulted, steady, settings()).await;
        let before = p.faulted.generation();
        p.inject(Fault::Oversized, Duration::from_secs(3)).await;
        assert!(
            p.faulted.generation() > before,
            "{faulted}: a frame over the 1 MiB cap was accepted: {}",
            p.faulted.health.report()
        );
        p.recovered(Duration::from_secs(10)).await;
        p.stop().await;
    }
}

#[tokio::test]
async fn refused_subscriptions_are_counted_and_retried_until_they_hold() {
    for (faulted, steady) in [
        (ExchangeId::Okx, ExchangeId::Binance),
        (ExchangeId::Kucoin, ExchangeId::Mexc),
        (ExchangeId::Htx, ExchangeId::Okx),
    ] {
        let p = pair(faulted, steady, settings()).await;
        let refused = counter(
            "spreadagg_ingest_subscribe_failures_total",
            &[("exchange", faulted.as_str()), ("reason", "refused")],
        );
        // The next two subscribe requests are refused; a disconnect makes the adapter send
        // its requests again.
        p.sim
            .inject(faulted, Fault::RefuseSubscription { count: 2 })
            .expect("accepted");
        p.inject(Fault::Disconnect, Duration::from_secs(3)).await;
        p.recovered(Duration::from_secs(15)).await;
        let now = counter(
            "spreadagg_ingest_subscribe_failures_total",
            &[("exchange", faulted.as_str()), ("reason", "refused")],
        );
        assert!(
            now >= refused + 2.0,
            "{faulted}: two refusals, {} counted",
            now - refused
        );
        p.stop().await;
    }
}

#[tokio::test]
async fn a_forced_close_with_notice_starts_a_successor() {
    for (faulted, steady) in [
        (ExchangeId::Binance, ExchangeId::Okx),
        (ExchangeId::Okx, ExchangeId::Binance),
    ] {
        let p = pair(faulted, steady, settings()).await;
        let rotations = p.faulted.detail()["rotations"].as_u64().unwrap_or(0);
        p.inject(Fault::CloseWithNotice, Duration::from_secs(3))
            .await;
        assert!(
            p.faulted.detail()["rotations"].as_u64().unwrap_or(0) > rotations,
            "{faulted}: the notice did not start a rotation: {}",
            p.faulted.health.report()
        );
        p.recovered(Duration::from_secs(10)).await;
        p.stop().await;
    }
}

#[tokio::test]
async fn a_forced_close_without_notice_reconnects() {
    for (faulted, steady) in [
        (ExchangeId::Okx, ExchangeId::Kucoin),
        (ExchangeId::Kucoin, ExchangeId::Okx),
        (ExchangeId::Mexc, ExchangeId::Binance),
    ] {
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
}

#[tokio::test]
async fn a_kucoin_token_rejected_once_is_replaced_by_a_fresh_one() {
    let p = pair(ExchangeId::Kucoin, ExchangeId::Htx, settings()).await;
    let before = p.faulted.generation();
    p.sim.kucoin_reject_next_tokens(1);
    p.inject(Fault::Disconnect, Duration::from_secs(4)).await;
    assert_eq!(
        p.sim.kucoin_pending_token_rejections(),
        0,
        "the refusal was used"
    );
    assert!(
        p.faulted.generation() >= before + 2,
        "a refused attempt, then a fresh token: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

#[tokio::test]
async fn unanswered_htx_pings_hit_its_deadline_and_the_session_is_replaced() {
    unanswered_pings_end_the_session(ExchangeId::Htx, ExchangeId::Mexc).await;
}

/// For an exchange that pings every 5 s and closes a connection whose ping went unanswered for
/// 10 s (HTX documents it; the simulator applies it to BingX too, which documents no deadline):
/// for 16 s the exchange ignores our pongs, so the first ping of the window goes unanswered long
/// enough; the session must end on that deadline and be replaced.
pub(super) async fn unanswered_pings_end_the_session(faulted: ExchangeId, steady: ExchangeId) {
    let p = pair(faulted, steady, settings()).await;
    let before = p.faulted.generation();
    p.inject(
        Fault::IgnorePongs {
            duration_ms: 16_000,
        },
        Duration::from_secs(18),
    )
    .await;
    assert!(
        p.faulted.generation() > before,
        "{faulted}'s pong deadline did not end the session: {}",
        p.faulted.health.report()
    );
    let last_end = p.faulted.detail()["last_end"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        last_end.contains("pong timeout"),
        "{faulted}: ended by its pong deadline: {last_end}"
    );
    p.recovered(Duration::from_secs(10)).await;
    p.stop().await;
}

#[tokio::test]
async fn a_slow_sender_is_survived() {
    let p = pair(ExchangeId::Okx, ExchangeId::Htx, settings()).await;
    let before = p.faulted.generation();
    let seen = p
        .inject(
            Fault::Slow {
                duration_ms: 3_000,
                delay_ms: 100,
            },
            Duration::from_secs(4),
        )
        .await;
    assert!(
        !seen.quotes.is_empty(),
        "data trickles through while the sender is slow"
    );
    assert_eq!(
        p.faulted.generation(),
        before,
        "a slow (but live) sender is not recycled: {}",
        p.faulted.health.report()
    );
    p.recovered(Duration::from_secs(5)).await;
    p.stop().await;
}
