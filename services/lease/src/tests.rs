//! The election against `spreadagg_testkit::kube_api::KubeApiMock`, a mocked Kubernetes API
//! server (no API server can run here) that keeps Leases as the real one does for these
//! calls, with optimistic concurrency on `resourceVersion`.

use spreadagg_testkit::kube_api::KubeApiMock;

use super::*;

struct Mock(KubeApiMock);

impl std::ops::Deref for Mock {
    type Target = KubeApiMock;
    fn deref(&self) -> &KubeApiMock {
        &self.0
    }
}

impl Mock {
    async fn start() -> Self {
        Self(KubeApiMock::start().await)
    }

    fn elector(&self, identity: &str, duration_ms: u64) -> Elector {
        let config = kube::Config::new(self.url.parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        Elector::new(
            client,
            LeaseConfig {
                namespace: "markets".into(),
                name: "spreadagg-archive".into(),
                identity: identity.into(),
                duration: Duration::from_millis(duration_ms),
                renew_every: Duration::from_millis(duration_ms / 5),
            },
        )
    }

    fn holder(&self) -> Option<String> {
        self.0.holder("spreadagg-archive")
    }
}

/// Holds `elector`'s lease on a task until it is lost; returns how it ended and when.
fn hold_in_background(mut elector: Elector) -> tokio::task::JoinHandle<(Held, std::time::Instant)> {
    tokio::spawn(async move {
        let held = elector.hold(&CancellationToken::new()).await;
        (held, std::time::Instant::now())
    })
}

#[tokio::test]
async fn one_candidate_holds_the_lease_and_the_other_waits() {
    let mock = Mock::start().await;
    let mut a = mock.elector("archive-a", 1500);
    let mut b = mock.elector("archive-b", 1500);
    assert!(a.try_acquire_or_renew().await.expect("api"), "a creates it");
    assert!(
        !b.try_acquire_or_renew().await.expect("api"),
        "b sees a fresh holder"
    );
    assert!(a.try_acquire_or_renew().await.expect("api"), "a renews");
    assert!(!b.try_acquire_or_renew().await.expect("api"));
    assert_eq!(mock.holder().as_deref(), Some("archive-a"));
    let lease = mock.lease("spreadagg-archive").expect("stored");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    assert!(lease["spec"]["renewTime"].is_string() && lease["spec"]["acquireTime"].is_string());
}

#[tokio::test]
async fn a_holder_that_stops_renewing_is_replaced_after_the_duration_not_before() {
    let mock = Mock::start().await;
    let mut a = mock.elector("archive-a", 1000);
    let mut b = mock.elector("archive-b", 1000);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    drop(a); // a stops renewing (its pod is gone)
    let started = Instant::now();
    let stop = CancellationToken::new();
    assert!(b.acquire(&stop).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "b took over after {took:?}, before a's lease expired"
    );
    assert!(took < Duration::from_millis(2500), "b took {took:?}");
    assert_eq!(mock.holder().as_deref(), Some("archive-b"));
    let transitions =
        mock.lease("spreadagg-archive").expect("stored")["spec"]["leaseTransitions"].clone();
    assert_eq!(transitions, 1);
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let mock = Mock::start().await;
    let mut a = mock.elector("archive-a", 10_000);
    let mut b = mock.elector("archive-b", 10_000);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    assert!(!b.try_acquire_or_renew().await.expect("api"));
    a.release().await;
    assert_eq!(mock.holder(), None);
    assert!(
        b.try_acquire_or_renew().await.expect("api"),
        "no holder: no need to wait the 10 s duration"
    );
    // A release by a candidate that no longer holds it changes nothing.
    a.release().await;
    assert_eq!(mock.holder().as_deref(), Some("archive-b"));
}

#[tokio::test]
async fn of_two_simultaneous_writers_exactly_one_wins() {
    let mock = Mock::start().await;
    for round in 0..20 {
        let name = format!("r{round}");
        let mut a = mock.elector(&format!("{name}-a"), 5000);
        let mut b = mock.elector(&format!("{name}-b"), 5000);
        a.config.name = name.clone();
        b.config.name = name.clone();
        let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let (ra, rb) = (ra.expect("api"), rb.expect("api"));
        assert!(ra ^ rb, "round {round}: a {ra}, b {rb}");
    }
}

#[tokio::test]
async fn a_holder_cut_off_from_the_api_loses_the_lease_before_anyone_may_take_it() {
    let mock = Mock::start().await;
    let duration = Duration::from_millis(1500);
    let mut a = mock.elector("archive-a", 1500);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    let holding = hold_in_background(a);
    tokio::time::sleep(Duration::from_millis(700)).await;
    mock.set_down(true);
    let cut = std::time::Instant::now();
    let (held, lost_at) = holding.await.expect("hold");
    assert_eq!(held, Held::Lost);
    // The last successful renewal was at most one renew period before the cut; from it, the
    // holder gives up within the renew deadline, before the lease duration another candidate
    // must wait.
    let since_cut = lost_at.duration_since(cut);
    assert!(
        since_cut < duration - Duration::from_millis(300),
        "lost {since_cut:?} after the cut"
    );
}

#[tokio::test]
async fn a_holder_renewing_keeps_the_lease_and_stops_when_asked() {
    let mock = Mock::start().await;
    let mut a = mock.elector("archive-a", 1000);
    let mut b = mock.elector("archive-b", 1000);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    let stop = CancellationToken::new();
    let holding = {
        let stop = stop.clone();
        tokio::spawn(async move { a.hold(&stop).await })
    };
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        assert!(
            !b.try_acquire_or_renew().await.expect("api"),
            "a renews in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    assert_eq!(holding.await.expect("hold"), Held::Stopped);
    let writes = mock.writes();
    assert!(writes >= 10, "a renewed every 200 ms ({writes} writes)");
}

#[test]
fn timings_are_validated() {
    let ok = LeaseConfig {
        namespace: "n".into(),
        name: "l".into(),
        identity: "i".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    assert!(ok.validate().is_ok());
    assert_eq!(ok.renew_deadline(), Duration::from_secs(10));
    let slow = LeaseConfig {
        renew_every: Duration::from_secs(6),
        ..ok.clone()
    };
    assert!(
        slow.validate()
            .expect_err("too slow")
            .contains("renew_every_s")
    );
    let short = LeaseConfig {
        duration: Duration::from_secs(2),
        ..ok.clone()
    };
    assert!(short.validate().expect_err("short").contains("duration_s"));
    let nameless = LeaseConfig {
        identity: String::new(),
        ..ok
    };
    assert!(nameless.validate().is_err());
}

/// The API server takes renewals but stops answering: the holder's last write took effect at
/// some moment C it may never learn of. A standby can take over no earlier than a whole duration
/// after C (it must see the record unchanged that long, and can only see it after C); the holder
/// must have given up before then, with a third of the duration to spare for its drain.
#[tokio::test]
async fn a_holder_whose_renewals_are_never_answered_gives_up_a_third_of_a_duration_early() {
    let mock = Mock::start().await;
    let duration = Duration::from_millis(1500);
    let mut a = mock.elector("archive-a", 1500);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    let holding = hold_in_background(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    mock.set_answer_delay(Duration::from_secs(30));
    let (held, lost_at) = tokio::time::timeout(Duration::from_secs(10), holding)
        .await
        .expect("hold returns though the API hangs")
        .expect("hold");
    assert_eq!(held, Held::Lost);
    let committed = mock.last_write().expect("a wrote");
    assert!(
        lost_at < committed + duration - duration / 3 + Duration::from_millis(100),
        "lost {:?} after the last write took effect",
        lost_at.duration_since(committed)
    );
}

/// Slow answers (each well inside a renewal period) are not a loss.
#[tokio::test]
async fn slow_answers_within_the_period_keep_the_lease() {
    let mock = Mock::start().await;
    let mut a = mock.elector("archive-a", 1500);
    assert!(a.try_acquire_or_renew().await.expect("api"));
    mock.set_answer_delay(Duration::from_millis(100));
    let stop = CancellationToken::new();
    let holding = {
        let stop = stop.clone();
        tokio::spawn(async move { a.hold(&stop).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    assert_eq!(holding.await.expect("hold"), Held::Stopped);
    assert_eq!(mock.holder().as_deref(), Some("archive-a"));
}

/// A standby whose API calls hang does not hang with them: each attempt is bounded.
#[tokio::test]
async fn an_attempt_against_a_hung_api_server_times_out() {
    let mock = Mock::start().await;
    let mut b = mock.elector("archive-b", 1500);
    mock.set_answer_delay(Duration::from_secs(30));
    let started = Instant::now();
    let r = b.attempt().await;
    assert!(matches!(r, Err(LeaseError::Timeout { .. })), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    b.release().await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "release is bounded"
    );
}
