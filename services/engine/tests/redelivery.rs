//! Exactly-once effect against a real nats-server: NATS is killed mid-stream (longer than the
//! ticks' ack wait, so JetStream redelivers ticks the engine already applied) and started
//! again; afterwards MD_SPREADS must hold exactly the points a fresh engine makes from
//! MD_TICKS: none lost, none twice, and bands that saw every value once.

use std::time::{Duration, Instant};

use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StorageKind, StreamSettings};
use spreadagg_engine::{EngineConfig, SpreadState};
use spreadagg_model::subjects::{STREAM_SIGNALS, STREAM_SPREADS, STREAM_TICKS};
use spreadagg_model::wire::{Signal, Spread, Tick};
use spreadagg_runtime::Health;
use spreadagg_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const EXCHANGES: [&str; 3] = ["binance", "bybit", "okx"];
const SYMBOLS: [&str; 4] = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];

fn settings() -> StreamSettings {
    StreamSettings {
        storage: StorageKind::File,
        ..StreamSettings::default()
    }
}

/// Tick `i` of a deterministic stream: prices wander enough to raise signals now and then.
fn tick(i: u64) -> Tick {
    let exchange = EXCHANGES[(i % 3) as usize];
    let symbol = SYMBOLS[((i / 3) % 4) as usize];
    #[allow(clippy::cast_precision_loss)]
    let wobble = ((i * 7919) % 101) as f64 / 100.0 - 0.5; // -0.5 ..= 0.5
    let bid = 100.0 * (1.0 + wobble / 100.0);
    Tick {
        exchange: exchange.into(),
        symbol: symbol.into(),
        bid_px: bid,
        bid_qty: 1.0,
        ask_px: bid * 1.0002,
        ask_qty: 1.0,
        recv_ts_ns: 1_700_000_000_000_000_000 + i64::try_from(i).unwrap_or(0) * 10_000_000,
        ..Tick::default()
    }
}

async fn read_all<M: prost::Message + Default>(bus: &Bus, stream: &str) -> Vec<M> {
    let state = bus.stream_state(stream).await.expect("stream state");
    let mut out = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        if let Some(m) = bus.get(stream, seq).await.expect("get") {
            out.push(M::decode(m.payload).expect("decodes"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_no_point_and_doubles_none() {
    let mut nats = NatsServer::start().expect("nats-server starts");
    let bus = Bus::connect(&nats.url(), &settings())
        .await
        .expect("connects");
    let config = EngineConfig {
        // Shorter than the outage: ticks the engine holds are redelivered after it.
        ack_wait_s: 2,
        max_ack_pending: 256,
        ack_batch: 64,
        max_in_flight: 64,
        ..EngineConfig::default()
    };
    let stop = CancellationToken::new();
    let engine = tokio::spawn(spreadagg_engine::run(
        config.clone(),
        bus.clone(),
        Health::new(),
        stop.clone(),
    ));

    // The feed: 3,000 ticks at ~500/s, published with ids so its own retries store once.
    let total: u64 = 3_000;
    let feed_bus = bus.clone();
    let feed = tokio::spawn(async move {
        let mut publisher = feed_bus.publisher(64).retry_forever();
        for i in 0..total {
            let t = tick(i);
            let msg = OutMessage {
                subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
                msg_id: format!("test-tick-{i}"),
                payload: t.encode_to_vec().into(),
            };
            publisher.publish(msg).await.expect("retried for ever");
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        publisher.flush().await.expect("flushed");
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.kill();
    // Longer than the ack wait, so the engine's unacknowledged ticks are redelivered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.restart().expect("nats-server restarts");
    feed.await.expect("feed done");

    // Wait until the engine has acknowledged every tick.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = bus
        .stream_state(STREAM_TICKS)
        .await
        .expect("ticks")
        .last_seq;
    assert_eq!(last, total, "every tick stored once");
    loop {
        let c = bus.consumer_state(STREAM_TICKS, "engine").await;
        if c.as_ref()
            .is_ok_and(|c| c.ack_floor >= last && c.ack_pending == 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "engine did not catch up: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    engine.await.expect("engine task").expect("engine ran");

    // The reference: a fresh state replaying MD_TICKS in stream order.
    let ticks: Vec<Tick> = read_all(&bus, STREAM_TICKS).await;
    let mut state = SpreadState::new(config.limits().expect("limits"));
    let mut expected_points = Vec::new();
    let mut expected_signals = 0;
    for t in &ticks {
        let input = spreadagg_engine::TickIn::from_wire(t).expect("known exchange");
        let mut points = Vec::new();
        let signal = state.apply(&input, &mut points).expect("in order");
        expected_points.extend(points.iter().map(|p| p.to_wire(&t.symbol, input.exchange)));
        expected_signals += usize::from(signal.is_some());
    }
    // Stored order may differ from publish order where a retry after the outage stored an
    // earlier point after a later one; each (pair, tick time) is one point.
    let key = |s: &Spread| {
        (
            s.symbol.clone(),
            s.exchange_a.clone(),
            s.exchange_b.clone(),
            s.ts_ns,
        )
    };
    let mut stored: Vec<Spread> = read_all(&bus, STREAM_SPREADS).await;
    stored.sort_by_key(key);
    expected_points.sort_by_key(key);
    assert!(
        expected_points.len() > 5_000,
        "{} points",
        expected_points.len()
    );
    assert_eq!(
        stored.len(),
        expected_points.len(),
        "points stored vs made by a fresh replay"
    );
    for (got, want) in stored.iter().zip(&expected_points) {
        assert_eq!(got, want, "a lost or doubled value changes the bands");
    }
    let signals: Vec<Signal> = read_all(&bus, STREAM_SIGNALS).await;
    assert!(expected_signals > 0, "the stream raises signals");
    assert_eq!(signals.len(), expected_signals, "signals stored once each");
    drop(nats);
}
