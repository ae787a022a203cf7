//! What splitting the ticks between N engine shards costs, two ways, on one real nats-server
//! (file storage), same run:
//! - client-side (what the engine does): each shard's durable reads every tick and skips the
//!   others' symbols by the subject's last token (the skipped ones acknowledged too);
//! - server-side: a second stream sources MD_TICKS through a `{{partition(N,2)}}` subject
//!   transform, and each shard's durable reads only its partition.
//!
//! Measured: wall time until every shard has acknowledged everything, CPU seconds of the
//! nats-server and of this process (the shards), and the bytes stored.
//!
//! `TICKS=300000 SHARDS=3 cargo run --release -p spreadagg-engine --example shard_cost`

use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use prost::Message as _;
use spreadagg_bus::{Bus, ConsumerSpec, OutMessage, StorageKind, StreamSettings};
use spreadagg_model::Shard;
use spreadagg_model::wire::Tick;
use spreadagg_testkit::NatsServer;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    // Fields 14 and 15 of stat (utime, stime); after the ')' the fields start at 3.
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let ticks = (field(11) + field(12)) as f64;
    ticks / 100.0
}

/// Runs `shards` durables on `stream` (filter per shard) until each has acknowledged
/// `expect(i)` messages; `own(i, subject)` says which ones the shard keeps.
async fn consume(
    bus: &Bus,
    stream: &str,
    filters: Vec<String>,
    own: fn(u32, u32, &str) -> bool,
) -> u64 {
    let n = u32::try_from(filters.len()).unwrap_or(1);
    let mut tasks = Vec::new();
    for (i, filter) in filters.into_iter().enumerate() {
        let bus = bus.clone();
        let stream = stream.to_owned();
        tasks.push(tokio::spawn(async move {
            let index = u32::try_from(i).unwrap_or(0);
            let spec = ConsumerSpec {
                stream,
                durable: format!("cost-{i}"),
                filter,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 4_096,
                batch: 256,
                start_seq: None,
            };
            let mut c = bus.durable(&spec).await.expect("consumer");
            let expect = bus
                .consumer_state(&spec.stream, &spec.durable)
                .await
                .expect("state");
            let expect = expect.pending + expect.ack_pending;
            let (mut seen, mut kept) = (0, 0_u64);
            while seen < expect {
                let d = c.next().await.expect("delivery");
                if own(index, n, &d.subject) {
                    // What the engine does with its own: decode.
                    kept += u64::from(Tick::decode(d.payload.clone()).is_ok());
                }
                d.ack().await.expect("ack");
                seen += 1;
            }
            bus.flush().await.expect("flush");
            kept
        }));
    }
    let mut kept = 0;
    for t in tasks {
        kept += t.await.expect("shard");
    }
    kept
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env("TICKS", 300_000);
    let shards = u32::try_from(env("SHARDS", 3)).unwrap_or(3).max(2);
    let nats = NatsServer::start().expect("nats-server starts");
    let server = nats.pid().expect("running").to_string();
    let me = std::process::id().to_string();
    let settings = StreamSettings {
        storage: StorageKind::File,
        ..StreamSettings::default()
    };
    let bus = Bus::connect(&nats.url(), &settings)
        .await
        .expect("connects");
    let mut publisher = bus.publisher(1_024);
    for i in 0..total {
        let symbol = format!("S{}-USDT", i % 2_000);
        let t = Tick {
            exchange: "binance".into(),
            symbol: symbol.clone(),
            bid_px: 100.0,
            bid_qty: 1.0,
            ask_px: 100.1,
            ask_qty: 1.0,
            recv_ts_ns: i64::try_from(i).unwrap_or(0),
            ..Tick::default()
        };
        publisher
            .publish(OutMessage {
                subject: format!("md.tick.binance.{symbol}"),
                msg_id: format!("c{i}"),
                payload: t.encode_to_vec().into(),
            })
            .await
            .expect("published");
    }
    publisher.flush().await.expect("flushed");
    let ticks_bytes = bus.stream_state("MD_TICKS").await.expect("state").bytes;
    let owners: Vec<u64> = (0..shards)
        .map(|i| {
            (0..2_000)
                .filter(|s| {
                    Shard {
                        index: i,
                        count: shards,
                    }
                    .owns(&format!("S{s}-USDT"))
                })
                .count() as u64
                * (total / 2_000)
        })
        .collect();

    // Client-side filtering.
    let (t0, s0, c0) = (Instant::now(), cpu_s(&server), cpu_s(&me));
    let kept = consume(
        &bus,
        "MD_TICKS",
        (0..shards).map(|_| "md.tick.>".to_owned()).collect(),
        |i, n, subject| Shard { index: i, count: n }.owns(subject.rsplit('.').next().unwrap_or("")),
    )
    .await;
    let client = (
        t0.elapsed().as_secs_f64(),
        cpu_s(&server) - s0,
        cpu_s(&me) - c0,
    );
    assert_eq!(kept, total, "every tick kept by exactly one shard");

    // Server-side partitioning: a sourced stream with a partition transform.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    let (t0, s0, c0) = (Instant::now(), cpu_s(&server), cpu_s(&me));
    js.create_stream(stream::Config {
        name: "MD_TICKS_P".into(),
        storage: stream::StorageType::File,
        sources: Some(vec![stream::Source {
            name: "MD_TICKS".into(),
            subject_transforms: vec![stream::SubjectTransform {
                source: "md.tick.*.*".into(),
                destination: format!(
                    "p.{{{{partition({shards},2)}}}}.md.tick.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
                ),
            }],
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .expect("sourced stream");
    while bus
        .stream_state("MD_TICKS_P")
        .await
        .map_or(0, |s| s.messages)
        < total
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sourced = (t0.elapsed().as_secs_f64(), cpu_s(&server) - s0);
    let (t1, s1, c1) = (Instant::now(), cpu_s(&server), cpu_s(&me));
    let kept = consume(
        &bus,
        "MD_TICKS_P",
        (0..shards).map(|i| format!("p.{i}.>")).collect(),
        |_, _, _| true,
    )
    .await;
    let server_side = (
        sourced.0 + t1.elapsed().as_secs_f64(),
        sourced.1 + cpu_s(&server) - s1,
        cpu_s(&me) - c1 + (c1 - c0),
    );
    assert_eq!(kept, total);
    let p_bytes = bus.stream_state("MD_TICKS_P").await.expect("state").bytes;
    println!("{total} ticks, {shards} shards (ticks per shard by our hash: {owners:?})");
    println!("way\twall_s\tnats_cpu_s\tshards_cpu_s\textra_stored_MB");
    println!(
        "client-side filter\t{:.2}\t{:.2}\t{:.2}\t0",
        client.0, client.1, client.2
    );
    println!(
        "server-side partition\t{:.2}\t{:.2}\t{:.2}\t{:.1}\t(of which sourcing: {:.2} s wall, {:.2} s nats cpu)",
        server_side.0,
        server_side.1,
        server_side.2,
        p_bytes as f64 / 1e6,
        sourced.0,
        sourced.1
    );
    println!("MD_TICKS itself: {:.1} MB", ticks_bytes as f64 / 1e6);
}
