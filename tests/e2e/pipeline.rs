//! simulator -> one ingestor per exchange (all eleven, each in its own process) -> NATS
//! JetStream -> engine -> gateway -> a WebSocket client, plus the archiver; then SIGTERM to
//! every role.
//!
//! Checks: every spread point the client receives is in `MD_SPREADS`; every point's numbers
//! follow the formulas from the latest tick of each exchange as it stands in `MD_TICKS` when
//! the triggering tick arrived; bands are the nearest-rank quantiles of the pair's last 200
//! points; every role exits within 5 s of SIGTERM with success; every tick the engine
//! acknowledged has its spreads in `MD_SPREADS`; every tick the archiver acknowledged is in
//! the Parquet files exactly once.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use arrow_array::{Array, Float64Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use spreadagg_bus::{Bus, StreamSettings};
use spreadagg_model::wire::{Spread, Tick};
use spreadagg_testkit::NatsServer;

use crate::support::{self, Proc, eventually, http_get};

/// Discovery filters: USDT/USDC quotes (the default) and at least 1M of 24 h quote volume,
/// which the simulator's low-volume pair (NULS-USDT) fails and ETH-BTC fails by its quote.
const MIN_VOLUME: &str = "1000000";

/// Every exchange the simulator speaks, each through its own ingestor.
const EXCHANGES: [&str; 11] = [
    "binance", "bybit", "okx", "gateio", "bitget", "kucoin", "mexc", "htx", "bingx", "coinbase",
    "kraken",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreads_flow_end_to_end_and_every_role_drains_on_sigterm() {
    let nats = NatsServer::start().expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("archive");

    // A market quick enough to see plenty of points soon, slow enough for eleven ingestors,
    // the engine (ten points per tick) and the archiver on two cores.
    let config = dir.path().join("spreadagg.toml");
    std::fs::write(&config, "[simulate]\nupdate_interval_ms = 60\n").expect("config");
    let config = config.to_str().expect("utf-8 path");

    let mut sim = Proc::spawn("simulate", dir.path(), &["simulate", "--config", config]);
    let endpoints = sim.simulator_endpoints(&EXCHANGES).await;

    let engine = Proc::spawn("engine", dir.path(), &["engine", "--nats-url", &url]);
    let mut gateway = Proc::spawn(
        "gateway",
        dir.path(),
        &["gateway", "--nats-url", &url, "--listen", "127.0.0.1:0"],
    );
    let archive = Proc::spawn(
        "archive",
        dir.path(),
        &[
            "archive",
            "--nats-url",
            &url,
            "--store",
            store.to_str().expect("utf-8"),
        ],
    );
    let gateway_addr = gateway.announced("listening gateway ").await;
    let gateway_admin = gateway.admin().await;
    eventually("gateway ready", Duration::from_secs(30), || async {
        http_get(&gateway_admin, "/readyz").await.0 == 200
    })
    .await;

    let mut ws = support::subscribe(
        &gateway_addr,
        r#"{"op":"subscribe","symbol":"BTC-USDT","id":1}"#,
    )
    .await;

    let mut ingestors: Vec<Proc> = EXCHANGES
        .into_iter()
        .map(|ex| {
            let (ws, rest) = &endpoints[ex];
            support::ingest(
                dir.path(),
                ex,
                (ws, rest),
                &url,
                &["--min-volume", MIN_VOLUME],
            )
        })
        .collect();
    for p in &mut ingestors {
        let admin = p.admin().await;
        eventually(
            &format!("{} ready", p.name),
            Duration::from_secs(30),
            || async { http_get(&admin, "/readyz").await.0 == 200 },
        )
        .await;
    }

    // The client receives spread points as JSON.
    let mut received: Vec<serde_json::Value> = Vec::new();
    for _ in 0..40 {
        received.push(support::next_spread(&mut ws, Duration::from_secs(60)).await);
    }

    // Let load build up, then SIGTERM the consumers while the ingestors still publish, then
    // the ingestors and the simulator.
    let bus = Bus::connect(&url, &StreamSettings::default())
        .await
        .expect("bus");
    eventually(
        "2000 ticks in MD_TICKS",
        Duration::from_secs(60),
        || async {
            bus.stream_state("MD_TICKS")
                .await
                .is_ok_and(|s| s.messages >= 2000)
        },
    )
    .await;
    let mut all = vec![engine, archive, gateway];
    all.extend(ingestors);
    all.push(sim);
    for p in &mut all {
        let (status, took) = p.terminate(Duration::from_secs(5)).await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; log:\n{}",
            p.name,
            p.log_text()
        );
        eprintln!("{} drained in {took:?}", p.name);
    }

    // Read back what the broker holds.
    let bus = Bus::connect(&url, &StreamSettings::default())
        .await
        .expect("bus");
    let ticks = read_stream::<Tick>(&bus, "MD_TICKS").await;
    let spreads = read_stream::<Spread>(&bus, "MD_SPREADS").await;
    assert!(ticks.len() >= 2000, "only {} ticks", ticks.len());
    let symbols: std::collections::BTreeSet<&str> =
        ticks.iter().map(|(_, _, t)| t.symbol.as_str()).collect();
    assert!(
        symbols.contains("BTC-USDT") && symbols.contains("BTC-USDC"),
        "{symbols:?}"
    );
    assert!(
        !symbols.contains("NULS-USDT"),
        "the volume filter let the low-volume pair through"
    );
    assert!(
        !symbols.contains("ETH-BTC"),
        "the quote filter let a BTC-quoted pair through"
    );

    // Every exchange reached the stream, and BTC-USDT has a spread series for every pair.
    for ex in EXCHANGES {
        let n = ticks.iter().filter(|(_, _, t)| t.exchange == ex).count();
        assert!(n > 0, "no ticks from {ex}");
    }
    let pairs: std::collections::BTreeSet<(&str, &str)> = spreads
        .iter()
        .filter(|(_, _, s)| s.symbol == "BTC-USDT")
        .map(|(_, _, s)| (s.exchange_a.as_str(), s.exchange_b.as_str()))
        .collect();
    assert_eq!(
        pairs.len(),
        EXCHANGES.len() * (EXCHANGES.len() - 1) / 2,
        "BTC-USDT pairs: {pairs:?}"
    );

    check_received_points_are_stored(&received, &spreads);
    check_points_follow_latest_ticks(&ticks, &spreads);
    check_bands(&spreads);

    let engine_floor = bus
        .consumer_state("MD_TICKS", "engine")
        .await
        .expect("engine consumer")
        .ack_floor;
    check_engine_lost_nothing(&ticks, &spreads, engine_floor);

    let archive_floor = bus
        .consumer_state("MD_TICKS", "archiver-ticks")
        .await
        .expect("archiver consumer")
        .ack_floor;
    assert!(archive_floor > 0, "the archiver acknowledged nothing");
    eprintln!(
        "{} ticks, {} spreads stored, {} received over WebSocket; engine ack floor {engine_floor}, archiver ack floor {archive_floor}",
        ticks.len(),
        spreads.len(),
        received.len()
    );
    check_archive_has_exactly(&store, &ticks, archive_floor);
}

async fn read_stream<M: prost::Message + Default>(
    bus: &Bus,
    stream: &str,
) -> Vec<(u64, String, M)> {
    let state = bus.stream_state(stream).await.expect("stream state");
    let mut out = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        if let Some(m) = bus.get(stream, seq).await.expect("get") {
            out.push((seq, m.subject, M::decode(m.payload).expect("protobuf")));
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check_received_points_are_stored(
    received: &[serde_json::Value],
    spreads: &[(u64, String, Spread)],
) {
    for v in received {
        assert_eq!(v["symbol"], "BTC-USDT", "subscribed to BTC-USDT only: {v}");
        let found = spreads.iter().any(|(_, _, s)| {
            v["exchange_a"] == s.exchange_a.as_str()
                && v["exchange_b"] == s.exchange_b.as_str()
                && v["ts_ns"].as_i64() == Some(s.ts_ns)
                && v["bid_bid_pct"]
                    .as_f64()
                    .is_some_and(|x| close(x, s.bid_bid_pct))
                && v["upper_band"]
                    .as_f64()
                    .is_some_and(|x| close(x, s.upper_band))
        });
        assert!(
            found,
            "point received over WebSocket is not in MD_SPREADS: {v}"
        );
    }
}

/// Replays MD_TICKS in stream order: when a tick of exchange E arrives, the point it triggers
/// must pair it with the latest tick of the other exchange seen so far.
fn check_points_follow_latest_ticks(
    ticks: &[(u64, String, Tick)],
    spreads: &[(u64, String, Spread)],
) {
    let mut checked = 0;
    for (_, subject, s) in spreads {
        assert_eq!(
            subject,
            &format!("md.spread.{}.{}.{}", s.symbol, s.exchange_a, s.exchange_b)
        );
        assert!(s.exchange_a < s.exchange_b);
        // The triggering tick: its exchange, symbol and receive time.
        let Some(pos) = ticks.iter().position(|(_, _, t)| {
            t.exchange == s.triggered_by && t.symbol == s.symbol && t.recv_ts_ns == s.ts_ns
        }) else {
            panic!("no tick triggered {s:?}");
        };
        let other = if s.triggered_by == s.exchange_a {
            &s.exchange_b
        } else {
            &s.exchange_a
        };
        let latest_other = ticks[..pos]
            .iter()
            .rev()
            .find(|(_, _, t)| &t.exchange == other && t.symbol == s.symbol)
            .map(|(_, _, t)| t)
            .expect("the other side has a tick");
        let trigger = &ticks[pos].2;
        let (a, b) = if trigger.exchange == s.exchange_a {
            (trigger, latest_other)
        } else {
            (latest_other, trigger)
        };
        assert_eq!(
            (s.bid_a, s.ask_a, s.ts_a_ns),
            (a.bid_px, a.ask_px, a.recv_ts_ns),
            "side A of {s:?}"
        );
        assert_eq!(
            (s.bid_b, s.ask_b, s.ts_b_ns),
            (b.bid_px, b.ask_px, b.recv_ts_ns),
            "side B of {s:?}"
        );
        assert!(close(s.a_to_b_pct, (b.bid_px / a.ask_px - 1.0) * 100.0));
        assert!(close(s.b_to_a_pct, (a.bid_px / b.ask_px - 1.0) * 100.0));
        assert!(close(s.bid_bid_pct, (a.bid_px / b.bid_px - 1.0) * 100.0));
        #[allow(clippy::cast_precision_loss)]
        let staleness = (a.recv_ts_ns - b.recv_ts_ns).unsigned_abs() as f64 / 1e6;
        assert!(close(s.staleness_ms, staleness));
        assert!(staleness <= 5000.0);
        checked += 1;
    }
    assert!(checked > 20, "only {checked} points checked");
}

fn check_bands(spreads: &[(u64, String, Spread)]) {
    let mut windows: HashMap<(String, String, String), Vec<f64>> = HashMap::new();
    for (_, _, s) in spreads {
        let w = windows
            .entry((s.symbol.clone(), s.exchange_a.clone(), s.exchange_b.clone()))
            .or_default();
        w.push(s.bid_bid_pct);
        let tail = &w[w.len().saturating_sub(200)..];
        let mut sorted = tail.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let r = (sorted.len() as f64 * q).ceil() as usize;
            sorted[r.max(1) - 1]
        };
        assert_eq!(
            (s.upper_band, s.lower_band),
            (rank(0.97), rank(0.03)),
            "bands of {s:?}"
        );
    }
}

/// Every tick at or below the engine's ack floor was processed and its spreads published: a
/// fresh engine state replaying those ticks makes exactly the first points of MD_SPREADS.
fn check_engine_lost_nothing(
    ticks: &[(u64, String, Tick)],
    spreads: &[(u64, String, Spread)],
    floor: u64,
) {
    let config = spreadagg_engine::EngineConfig::default();
    let mut state = spreadagg_engine::SpreadState::new(config.limits().expect("limits"));
    let expected: Vec<Spread> = ticks
        .iter()
        .filter(|(seq, _, _)| *seq <= floor)
        .flat_map(|(_, _, t)| state.on_tick(t).unwrap_or_default())
        .collect();
    assert!(
        spreads.len() >= expected.len(),
        "{} spreads stored, {} expected from acknowledged ticks",
        spreads.len(),
        expected.len()
    );
    for (want, (_, _, got)) in expected.iter().zip(spreads) {
        assert_eq!(want, got);
    }
}

/// The Parquet files hold every tick at or below the archiver's ack floor exactly once, with
/// the values the stream holds.
fn check_archive_has_exactly(store: &Path, ticks: &[(u64, String, Tick)], floor: u64) {
    let mut rows: BTreeMap<u64, (String, String, f64, f64)> = BTreeMap::new();
    let mut files = Vec::new();
    collect_parquet(&store.join("ticks"), &mut files);
    assert!(
        !files.is_empty(),
        "no Parquet files under {}",
        store.display()
    );
    for file in files {
        let exchange = file
            .iter()
            .filter_map(|c| c.to_str()?.strip_prefix("exchange="))
            .next()
            .expect("exchange partition")
            .to_owned();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("column {name}"))
                    .clone()
            };
            let seq = col("stream_seq");
            let seq = seq.as_any().downcast_ref::<UInt64Array>().expect("u64");
            let symbol = col("symbol");
            let symbol = symbol.as_any().downcast_ref::<StringArray>().expect("utf8");
            let bid = col("bid_px");
            let bid = bid.as_any().downcast_ref::<Float64Array>().expect("f64");
            let ask = col("ask_px");
            let ask = ask.as_any().downcast_ref::<Float64Array>().expect("f64");
            for i in 0..batch.num_rows() {
                let prev = rows.insert(
                    seq.value(i),
                    (
                        exchange.clone(),
                        symbol.value(i).to_owned(),
                        bid.value(i),
                        ask.value(i),
                    ),
                );
                assert!(prev.is_none(), "stream_seq {} archived twice", seq.value(i));
            }
            assert!(!seq.is_nullable() || seq.null_count() == 0);
        }
    }
    let acked: BTreeMap<u64, (String, String, f64, f64)> = ticks
        .iter()
        .filter(|(seq, _, _)| *seq <= floor)
        .map(|(seq, _, t)| {
            (
                *seq,
                (t.exchange.clone(), t.symbol.clone(), t.bid_px, t.ask_px),
            )
        })
        .collect();
    assert_eq!(
        rows, acked,
        "archived rows differ from the acknowledged ticks"
    );
}

fn collect_parquet(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_parquet(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}
