//! Shared by the engine's tests against a real nats-server: a deterministic tick feed, reading
//! a stream back, and the reference (a fresh state replaying MD_TICKS).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use prost::Message as _;
use spreadagg_bus::{Bus, OutMessage, StorageKind, StreamSettings};
use spreadagg_engine::{EngineConfig, SpreadState, TickIn};
use spreadagg_model::subjects::{STREAM_SPREADS, STREAM_TICKS};
use spreadagg_model::wire::{Spread, Tick};

pub const EXCHANGES: [&str; 3] = ["binance", "bybit", "okx"];
pub const SYMBOLS: [&str; 4] = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];

pub fn settings() -> StreamSettings {
    StreamSettings {
        storage: StorageKind::File,
        ..StreamSettings::default()
    }
}

/// Tick `i` of a deterministic stream: prices wander enough to raise signals now and then.
pub fn tick(i: u64) -> Tick {
    let exchange = EXCHANGES[usize::try_from(i % 3).unwrap_or(0)];
    let symbol = SYMBOLS[usize::try_from((i / 3) % 4).unwrap_or(0)];
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

/// Publishes ticks `range`, about `per_second` of them a second, with ids so the feed's own
/// retries store each once.
pub async fn feed(bus: Bus, range: std::ops::Range<u64>, per_second: u64) {
    let mut publisher = bus.publisher(64).retry_forever();
    let pause = Duration::from_millis(1000 * 10 / per_second.max(1));
    for i in range {
        let t = tick(i);
        let msg = OutMessage {
            subject: format!("md.tick.{}.{}", t.exchange, t.symbol),
            msg_id: format!("test-tick-{i}"),
            payload: t.encode_to_vec().into(),
        };
        publisher.publish(msg).await.expect("retried for ever");
        if i % 10 == 0 {
            tokio::time::sleep(pause).await;
        }
    }
    publisher.flush().await.expect("flushed");
}

pub async fn read_all<M: prost::Message + Default>(bus: &Bus, stream: &str) -> Vec<M> {
    let state = bus.stream_state(stream).await.expect("stream state");
    let mut out = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        if let Some(m) = bus.get(stream, seq).await.expect("get") {
            out.push(M::decode(m.payload).expect("decodes"));
        }
    }
    out
}

/// Waits until `durable` has acknowledged every tick stored.
pub async fn wait_caught_up(bus: &Bus, durable: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let last = bus
        .stream_state(STREAM_TICKS)
        .await
        .expect("ticks")
        .last_seq;
    loop {
        let c = bus.consumer_state(STREAM_TICKS, durable).await;
        if c.as_ref()
            .is_ok_and(|c| c.ack_floor >= last && c.ack_pending == 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{durable} did not catch up: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One point per (pair, tick time): the key stored points are compared by (stored order may
/// differ where a retry after an outage stored an earlier point after a later one).
pub fn key(s: &Spread) -> (String, String, String, i64) {
    (
        s.symbol.clone(),
        s.exchange_a.clone(),
        s.exchange_b.clone(),
        s.ts_ns,
    )
}

/// What one engine that never stopped makes from MD_TICKS: its points (sorted by [`key`])
/// and the number of signals.
pub async fn reference(bus: &Bus, config: &EngineConfig) -> (Vec<Spread>, usize) {
    let ticks: Vec<Tick> = read_all(bus, STREAM_TICKS).await;
    let mut state = SpreadState::new(config.limits().expect("limits"));
    let mut points = Vec::new();
    let mut signals = 0;
    for t in &ticks {
        let input = TickIn::from_wire(t).expect("known exchange");
        let mut made = Vec::new();
        // A feed retry after an outage may store a tick after a later one: the engine skips
        // it as superseded, and so does the reference.
        let Ok(signal) = state.apply(&input, &mut made) else {
            continue;
        };
        points.extend(made.iter().map(|p| p.to_wire(&t.symbol, input.exchange)));
        signals += usize::from(signal.is_some());
    }
    points.sort_by_key(key);
    (points, signals)
}

/// MD_SPREADS equals `expected` point for point.
pub async fn assert_spreads_equal(bus: &Bus, expected: &[Spread]) {
    let mut stored: Vec<Spread> = read_all(bus, STREAM_SPREADS).await;
    stored.sort_by_key(key);
    assert_eq!(
        stored.len(),
        expected.len(),
        "points stored vs made by one engine that never stopped"
    );
    for (got, want) in stored.iter().zip(expected) {
        assert_eq!(got, want, "a lost or doubled value changes the bands");
    }
}

/// Every pair's chart, asked over request/reply, holds exactly the stored points of the pair
/// (time order, spreads and bands as f32).
pub async fn assert_charts_match(bus: &Bus) {
    use spreadagg_model::wire::ChartSnapshot;
    let mut stored: Vec<Spread> = read_all(bus, STREAM_SPREADS).await;
    stored.sort_by_key(|s| s.ts_ns);
    let mut checked = 0;
    for symbol in SYMBOLS {
        for (a, b) in [("binance", "bybit"), ("binance", "okx"), ("bybit", "okx")] {
            let subject = spreadagg_model::subjects::chart(symbol, a, b);
            let body = bus
                .request(&subject, bytes::Bytes::new(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{subject}: {e}"));
            let chart = ChartSnapshot::decode(body).expect("a snapshot");
            let points: Vec<&Spread> = stored
                .iter()
                .filter(|s| s.symbol == symbol && s.exchange_a == a && s.exchange_b == b)
                .collect();
            assert_eq!(chart.ts_ns.len(), points.len(), "{subject}");
            for (i, p) in points.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)]
                let want = (
                    p.ts_ns,
                    p.bid_bid_pct as f32,
                    p.upper_band as f32,
                    p.lower_band as f32,
                );
                assert_eq!(
                    (
                        chart.ts_ns[i],
                        chart.spread_pct[i],
                        chart.upper_band[i],
                        chart.lower_band[i]
                    ),
                    want,
                    "{subject} point {i}"
                );
            }
            checked += points.len();
        }
    }
    assert!(checked > 1_000, "{checked} chart points checked");
}

/// A signal as DESIGN.md defines it, replayed here independently of the engine's code:
/// (symbol, kind 1 = ENTRY / 2 = EXIT, ts_ns, cheap, expensive, deviation).
pub type SignalRow = (String, i32, i64, String, String, f64);

/// Replays MD_TICKS through the definition: deviation = (max_bid - min_bid) / min_bid * 100
/// over exchanges with a tick within 5 s; ENTRY at >= 0.35 when none is active and 10 s have
/// passed since the last one ended; EXIT at <= 0.05 while active; expiry 300 s after ENTRY.
pub async fn signals_by_definition(bus: &Bus) -> Vec<SignalRow> {
    use std::collections::BTreeMap;
    const S: i64 = 1_000_000_000;
    let ticks: Vec<Tick> = read_all(bus, STREAM_TICKS).await;
    // symbol -> exchange -> (bid, ts); symbol -> (active until, quiet until)
    let mut latest: BTreeMap<String, BTreeMap<String, (f64, i64)>> = BTreeMap::new();
    let mut state: BTreeMap<String, (Option<i64>, i64)> = BTreeMap::new();
    let mut out = Vec::new();
    for t in ticks {
        let book = latest.entry(t.symbol.clone()).or_default();
        if book
            .get(&t.exchange)
            .is_some_and(|&(_, ts)| ts > t.recv_ts_ns)
        {
            continue; // older than that exchange's latest: ignored
        }
        book.insert(t.exchange.clone(), (t.bid_px, t.recv_ts_ns));
        let now = t.recv_ts_ns;
        let fresh: Vec<(&String, f64)> = book
            .iter()
            .filter(|(_, (_, ts))| (now - ts).abs() <= 5 * S)
            .map(|(ex, (bid, _))| (ex, *bid))
            .collect();
        let (active, quiet) = state.entry(t.symbol.clone()).or_insert((None, i64::MIN));
        if let Some(until) = *active
            && now >= until
        {
            *active = None;
            *quiet = until + 10 * S;
        }
        if fresh.len() < 2 {
            continue;
        }
        // BTreeMap order is by name: the first of equal bids wins both ways.
        let mut cheap = fresh[0];
        let mut dear = fresh[0];
        for &(ex, bid) in &fresh[1..] {
            if bid < cheap.1 {
                cheap = (ex, bid);
            }
            if bid > dear.1 {
                dear = (ex, bid);
            }
        }
        let dev = (dear.1 - cheap.1) / cheap.1 * 100.0;
        let row = |kind| {
            (
                t.symbol.clone(),
                kind,
                now,
                cheap.0.clone(),
                dear.0.clone(),
                dev,
            )
        };
        if active.is_none() && dev >= 0.35 && now >= *quiet {
            *active = Some(now + 300 * S);
            out.push(row(1));
        } else if active.is_some() && dev <= 0.05 {
            *active = None;
            *quiet = now + 10 * S;
            out.push(row(2));
        }
    }
    out
}

/// MD_SIGNALS equals the definition replayed from MD_TICKS.
pub async fn assert_signals_match_definition(bus: &Bus) {
    use spreadagg_model::wire::Signal;
    let mut want = signals_by_definition(bus).await;
    let mut got: Vec<SignalRow> =
        read_all::<Signal>(bus, spreadagg_model::subjects::STREAM_SIGNALS)
            .await
            .into_iter()
            .map(|s| {
                (
                    s.symbol,
                    s.kind,
                    s.ts_ns,
                    s.cheap_exchange,
                    s.expensive_exchange,
                    s.deviation_pct,
                )
            })
            .collect();
    let key = |r: &SignalRow| (r.0.clone(), r.2);
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert!(want.len() >= 4, "the feed raises signals: {}", want.len());
    assert_eq!(got.len(), want.len(), "signals stored vs the definition");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.0, g.1, g.2, &g.3, &g.4), (&w.0, w.1, w.2, &w.3, &w.4));
        assert!((g.5 - w.5).abs() < 1e-9, "{g:?} vs {w:?}");
    }
}
