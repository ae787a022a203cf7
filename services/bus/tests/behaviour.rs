//! One behavioural suite, run against both bus implementations: the in-process bus and a real
//! `nats-server` with JetStream started for each test. Whatever a role relies on is asserted
//! here for both, so `spreadagg all` without NATS behaves as a cluster does.

use std::time::Duration;

use bytes::Bytes;
use spreadagg_bus::{
    Bus, BusError, ConsumerSpec, Delivery, OutMessage, StorageKind, StreamSettings,
};
use spreadagg_testkit::NatsServer;

/// A bus under test; keeps its server (if any) alive.
struct Fixture {
    bus: Bus,
    server: Option<NatsServer>,
}

fn settings() -> StreamSettings {
    StreamSettings {
        storage: StorageKind::File,
        ..StreamSettings::default()
    }
}

async fn inproc(settings: StreamSettings) -> Fixture {
    Fixture {
        bus: Bus::in_process(&settings),
        server: None,
    }
}

async fn jetstream(settings: StreamSettings) -> Fixture {
    let server = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&server.url(), &settings)
        .await
        .expect("connects");
    Fixture {
        bus,
        server: Some(server),
    }
}

fn msg(subject: &str, id: &str, body: &str) -> OutMessage {
    OutMessage {
        subject: subject.to_owned(),
        msg_id: id.to_owned(),
        payload: Bytes::from(body.to_owned()),
    }
}

fn spec(durable: &str, filter: &str) -> ConsumerSpec {
    ConsumerSpec {
        stream: "MD_TICKS".into(),
        durable: durable.into(),
        filter: filter.into(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        batch: 100,
        start_seq: None,
    }
}

async fn next(c: &mut spreadagg_bus::Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery within 10 s")
        .expect("no bus error")
}

async fn nothing_within(c: &mut spreadagg_bus::Consumer, wait: Duration) -> bool {
    tokio::time::timeout(wait, c.next()).await.is_err()
}

async fn publish_n(bus: &Bus, subject: &str, range: std::ops::Range<u32>) {
    for i in range {
        let ack = bus
            .publish(&msg(subject, &format!("{subject}-{i}"), &i.to_string()))
            .await
            .expect("publish acked");
        assert!(!ack.duplicate);
    }
}

async fn delivers_in_order_with_stream_sequences(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..10).await;
    publish_n(&f.bus, "md.tick.okx.BTC-USDT", 10..15).await;
    let mut c = f
        .bus
        .durable(&spec("order", "md.tick.>"))
        .await
        .expect("consumer");
    for seq in 1..=15u64 {
        let d = next(&mut c).await;
        assert_eq!(d.stream_seq, seq);
        assert_eq!(d.payload, Bytes::from((seq - 1).to_string()));
        assert!(!d.redelivered);
        d.ack().await.expect("ack");
    }
    f.bus.flush().await.expect("flush");
    let state = wait_for_ack_floor(&f.bus, "order", 15).await;
    assert_eq!((state.ack_pending, state.pending), (0, 0));
}

async fn wait_for_ack_floor(bus: &Bus, durable: &str, floor: u64) -> spreadagg_bus::ConsumerState {
    for _ in 0..100 {
        let s = bus
            .consumer_state("MD_TICKS", durable)
            .await
            .expect("state");
        if s.ack_floor >= floor {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ack floor never reached {floor}");
}

async fn repeated_message_ids_are_stored_once(f: Fixture) {
    let m = msg("md.tick.binance.ETH-USDT", "same-id", "x");
    let first = f.bus.publish(&m).await.expect("first");
    let second = f.bus.publish(&m).await.expect("second");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.stream_seq, first.stream_seq);
    assert_eq!(
        f.bus
            .stream_state("MD_TICKS")
            .await
            .expect("state")
            .messages,
        1
    );
}

async fn unacknowledged_deliveries_come_back(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..2).await;
    let mut s = spec("redeliver", "md.tick.>");
    s.ack_wait = Duration::from_secs(1);
    let mut c = f.bus.durable(&s).await.expect("consumer");
    let first = next(&mut c).await;
    assert_eq!(first.stream_seq, 1);
    drop(first); // never acknowledged
    let second = next(&mut c).await;
    assert_eq!(second.stream_seq, 2);
    second.ack().await.expect("ack");
    let again = next(&mut c).await;
    assert_eq!(again.stream_seq, 1);
    assert!(again.redelivered);
    again.ack().await.expect("ack");
    f.bus.flush().await.expect("flush");
    assert!(
        nothing_within(&mut c, Duration::from_millis(1500)).await,
        "acked messages must not return"
    );
}

async fn durable_progress_survives_reopening(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..10).await;
    let mut s = spec("resume", "md.tick.>");
    s.ack_wait = Duration::from_secs(2);
    {
        let mut c = f.bus.durable(&s).await.expect("consumer");
        for _ in 0..5 {
            next(&mut c).await.ack().await.expect("ack");
        }
        f.bus.flush().await.expect("flush");
        wait_for_ack_floor(&f.bus, "resume", 5).await;
    }
    let mut c = f.bus.durable(&s).await.expect("reopened");
    // On JetStream the first consumer's last pull may still hold deliveries until its ack
    // wait; nothing acknowledged may come back, and the next new sequence is 6.
    let d = next(&mut c).await;
    assert!(
        d.stream_seq > 5,
        "acknowledged message {} delivered again",
        d.stream_seq
    );
}

async fn filters_select_subjects(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..3).await;
    publish_n(&f.bus, "md.tick.okx.BTC-USDT", 3..6).await;
    let mut c = f
        .bus
        .durable(&spec("okx-only", "md.tick.okx.>"))
        .await
        .expect("consumer");
    for seq in 4..=6 {
        let d = next(&mut c).await;
        assert_eq!(d.stream_seq, seq);
        assert_eq!(d.subject, "md.tick.okx.BTC-USDT");
        d.ack().await.expect("ack");
    }
    assert!(nothing_within(&mut c, Duration::from_millis(300)).await);
}

async fn live_subscriptions_see_only_new_messages(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..3).await;
    let mut live = f.bus.live("MD_TICKS", "md.tick.>").await.expect("live");
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 3..5).await;
    assert_eq!(next(&mut live).await.stream_seq, 4);
    assert_eq!(next(&mut live).await.stream_seq, 5);
}

async fn max_ack_pending_pauses_delivery(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..10).await;
    let mut s = spec("slow", "md.tick.>");
    s.max_ack_pending = 3;
    s.batch = 3;
    let mut c = f.bus.durable(&s).await.expect("consumer");
    let held: Vec<Delivery> = vec![next(&mut c).await, next(&mut c).await, next(&mut c).await];
    assert!(
        nothing_within(&mut c, Duration::from_millis(700)).await,
        "a fourth delivery while three are unacknowledged"
    );
    for d in held {
        d.ack().await.expect("ack");
    }
    assert_eq!(next(&mut c).await.stream_seq, 4);
}

async fn publisher_pipelines_and_flushes(f: Fixture) {
    let mut p = f.bus.publisher(16);
    for i in 0..200 {
        p.publish(msg("md.tick.okx.SOL-USDT", &format!("p-{i}"), "x"))
            .await
            .expect("publish");
        assert!(p.in_flight() <= 16);
    }
    p.flush().await.expect("flush");
    assert_eq!(p.in_flight(), 0);
    let state = f.bus.stream_state("MD_TICKS").await.expect("state");
    assert_eq!((state.messages, state.last_seq), (200, 200));
}

/// A caller that keeps abandoning its wait for acknowledgements (an idle loop selecting on
/// `settle` against new work) loses nothing and stores nothing twice.
async fn settling_is_cancellation_safe(f: Fixture) {
    let mut p = f.bus.publisher(8);
    let mut settled = 0;
    for i in 0..300 {
        p.publish(msg("md.tick.okx.XRP-USDT", &format!("c-{i}"), "x"))
            .await
            .expect("publish");
        // Give up on the wait at once, or after a moment, alternately.
        let wait = if i % 2 == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(200)
        };
        if let Ok(r) = tokio::time::timeout(wait, p.settle()).await {
            r.expect("settled");
            settled += 1;
        }
    }
    p.flush().await.expect("flush");
    assert_eq!(p.in_flight(), 0);
    let state = f.bus.stream_state("MD_TICKS").await.expect("state");
    assert_eq!(
        (state.messages, state.last_seq),
        (300, 300),
        "every message stored once ({settled} settled early)"
    );
}

async fn subjects_without_a_stream_are_refused(f: Fixture) {
    let err = f.bus.publish(&msg("elsewhere.x", "e", "x")).await;
    assert!(err.is_err(), "publish to an uncaptured subject must fail");
    if let Err(e) = err {
        assert!(
            matches!(e, BusError::NoStream(_) | BusError::Publish { .. }),
            "{e}"
        );
    }
}

async fn oversized_payloads_are_refused(f: Fixture) {
    let big = OutMessage {
        subject: "md.tick.binance.BTC-USDT".into(),
        msg_id: "big".into(),
        payload: Bytes::from(vec![0u8; 2 << 20]),
    };
    assert!(
        f.bus.publish(&big).await.is_err(),
        "a 2 MiB payload was accepted"
    );
    assert_eq!(
        f.bus
            .stream_state("MD_TICKS")
            .await
            .expect("state")
            .messages,
        0
    );
}

async fn messages_read_back_by_sequence(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..3).await;
    let m = f
        .bus
        .get("MD_TICKS", 2)
        .await
        .expect("get")
        .expect("present");
    assert_eq!((m.stream_seq, m.payload), (2, Bytes::from("1")));
    assert_eq!(f.bus.get("MD_TICKS", 99).await.expect("get"), None);
}

async fn count_limit_discards_the_oldest(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..8).await;
    let state = f.bus.stream_state("MD_TICKS").await.expect("state");
    assert_eq!((state.messages, state.first_seq, state.last_seq), (5, 4, 8));
}

fn limited() -> StreamSettings {
    StreamSettings {
        max_messages: 5,
        ..settings()
    }
}

async fn history_reads_back_by_age_then_follows(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..3).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    publish_n(&f.bus, "md.tick.okx.BTC-USDT", 3..5).await;
    publish_n(&f.bus, "md.tick.binance.ETH-USDT", 5..6).await;
    // Only what was stored in the last second, filtered, in stream order; then new messages.
    let mut h = f
        .bus
        .history("MD_TICKS", "md.tick.*.BTC-USDT", Duration::from_secs(1))
        .await
        .expect("history");
    assert_eq!(next(&mut h).await.stream_seq, 4);
    assert_eq!(next(&mut h).await.stream_seq, 5);
    assert!(nothing_within(&mut h, Duration::from_millis(300)).await);
    publish_n(&f.bus, "md.tick.okx.BTC-USDT", 6..7).await;
    assert_eq!(next(&mut h).await.stream_seq, 7);
    let mut all = f
        .bus
        .history("MD_TICKS", "md.tick.>", Duration::from_secs(3600))
        .await
        .expect("history");
    assert_eq!(next(&mut all).await.stream_seq, 1, "from the first stored");
    // A durable's highest delivered sequence is reported.
    let mut c = f
        .bus
        .durable(&spec("delivered", "md.tick.>"))
        .await
        .expect("consumer");
    for _ in 0..3 {
        next(&mut c).await;
    }
    let state = f
        .bus
        .consumer_state("MD_TICKS", "delivered")
        .await
        .expect("state");
    // JetStream counts what a pull fetched into the client's buffer, not yet handed over.
    assert!(
        (3..=7).contains(&state.delivered_seq) && state.ack_floor == 0,
        "{state:?}"
    );
}

async fn a_new_durable_begins_at_its_start_sequence_and_keeps_its_progress(f: Fixture) {
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..5).await;
    assert!(matches!(
        f.bus.consumer_state("MD_TICKS", "late").await,
        Err(BusError::NoConsumer { .. })
    ));
    let mut s = spec("late", "md.tick.>");
    s.start_seq = Some(4);
    // JetStream's pull may have fetched 5 already: it comes back after the ack wait.
    s.ack_wait = Duration::from_secs(1);
    let mut c = f.bus.durable(&s).await.expect("consumer");
    let d = next(&mut c).await;
    assert_eq!(d.stream_seq, 4);
    d.ack().await.expect("ack");
    f.bus.flush().await.expect("flush");
    wait_for_ack_floor(&f.bus, "late", 4).await;
    drop(c);
    // Reopened without a start: the durable's own progress holds.
    s.start_seq = None;
    let mut c = f.bus.durable(&s).await.expect("reopened");
    assert_eq!(next(&mut c).await.stream_seq, 5);
}

async fn requests_reach_a_matching_service_and_its_answer_comes_back(f: Fixture) {
    let mut service = f.bus.serve("md.chart.>").await.expect("serve");
    let answering = tokio::spawn(async move {
        let req = service.next().await.expect("a request");
        let answer = format!("{}|{}", req.subject, String::from_utf8_lossy(&req.payload));
        req.respond(Bytes::from(answer)).await.expect("respond");
        service
    });
    // The NATS subscription may take a moment to reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = f
        .bus
        .request(
            "md.chart.BTC-USDT.binance.okx",
            Bytes::from("q"),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    assert_eq!(answer, Bytes::from("md.chart.BTC-USDT.binance.okx|q"));
    let _service = answering.await.expect("service task");
    let unserved = f
        .bus
        .request("md.other.x", Bytes::new(), Duration::from_millis(500))
        .await;
    assert!(
        matches!(unserved, Err(BusError::Request { .. })),
        "{unserved:?}"
    );
}

macro_rules! suite {
    ($($case:ident $(with $settings:ident)?),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut s = super::settings();
                    $( s = super::$settings(); )?
                    super::$case(super::inproc(s).await).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut s = super::settings();
                    $( s = super::$settings(); )?
                    super::$case(super::jetstream(s).await).await;
                }
            )*
        }
    };
}

suite! {
    delivers_in_order_with_stream_sequences,
    repeated_message_ids_are_stored_once,
    unacknowledged_deliveries_come_back,
    durable_progress_survives_reopening,
    filters_select_subjects,
    live_subscriptions_see_only_new_messages,
    max_ack_pending_pauses_delivery,
    publisher_pipelines_and_flushes,
    settling_is_cancellation_safe,
    subjects_without_a_stream_are_refused,
    oversized_payloads_are_refused,
    messages_read_back_by_sequence,
    count_limit_discards_the_oldest with limited,
    history_reads_back_by_age_then_follows,
    a_new_durable_begins_at_its_start_sequence_and_keeps_its_progress,
    requests_reach_a_matching_service_and_its_answer_comes_back,
}

/// JetStream only: the in-process bus has no server to lose. A durable consumer and a
/// publisher carry on across a server restart without any manual step.
#[tokio::test]
async fn jetstream_recovers_from_a_server_restart() {
    let mut f = jetstream(settings()).await;
    publish_n(&f.bus, "md.tick.binance.BTC-USDT", 0..5).await;
    let mut c = f
        .bus
        .durable(&spec("restart", "md.tick.>"))
        .await
        .expect("consumer");
    for seq in 1..=2 {
        let d = next(&mut c).await;
        assert_eq!(d.stream_seq, seq);
        d.ack().await.expect("ack");
    }
    f.bus.flush().await.expect("flush");
    wait_for_ack_floor(&f.bus, "restart", 2).await;

    let server = f.server.as_mut().expect("server");
    server.restart().expect("server comes back");

    // The publisher retries through the reconnect; the consumer resumes after the ack floor.
    let mut p = f.bus.publisher(8);
    for i in 5..10 {
        p.publish(msg(
            "md.tick.binance.BTC-USDT",
            &format!("md.tick.binance.BTC-USDT-{i}"),
            &i.to_string(),
        ))
        .await
        .expect("publish after restart");
    }
    p.flush().await.expect("acks after restart");
    // Everything after the ack floor comes. An acknowledged message may come again: the
    // server writes a consumer's ack state asynchronously, so a restart can lose the last
    // acks (at least once, as JetStream documents).
    let mut seen = Vec::new();
    while !(3..=10).all(|s| seen.contains(&s)) {
        let d = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("deliveries resume after restart");
        match d {
            Ok(d) => {
                if !seen.contains(&d.stream_seq) {
                    seen.push(d.stream_seq);
                }
                d.ack().await.ok();
            }
            // Missed heartbeats while the server was away are reported, then the pull resumes.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    seen.sort_unstable();
    let after_floor: Vec<u64> = seen.iter().copied().filter(|&s| s > 2).collect();
    assert_eq!(after_floor, (3..=10).collect::<Vec<u64>>(), "{seen:?}");
}
