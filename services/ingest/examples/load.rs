//! Load harness: the ingestor's acknowledged tick rate into a real nats-server against a bare
//! async-nats publisher on the same server, in the same run.
//!
//! `scripts/bench-ingest` runs it (release build). A feed process (this binary with `--feed`)
//! serves the exchange's REST discovery and best bid/ask frames for `SYMBOLS` symbols as fast
//! as the socket is read: Binance `bookTicker` (about 100 bytes, the default) or, with
//! `LOAD_EXCHANGE=bitget`, Bitget's v2 spot `ticker` (about 400 bytes: the most verbose best
//! bid/ask frame of the exchanges we speak). Rounds alternate: the bare publisher publishes
//! `Tick`-sized payloads on the same subjects with a unique `Nats-Msg-Id` and the same in-flight
//! window; then the ingest role (that exchange's adapter, JetStream bus) runs against the feed. Each
//! round reports acknowledged messages per second (the stream's last sequence over the round)
//! and this process's CPU time per acknowledged message (the feed runs in its own process,
//! nats-server in its own).

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use spreadagg_bus::{Bus, StreamSettings};
use spreadagg_ingest::IngestConfig;
use spreadagg_model::ExchangeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SYMBOLS: usize = 100;
const ROUND: Duration = Duration::from_secs(8);
const ROUNDS: usize = 3;
const IN_FLIGHT: usize = 1024;
/// The feed's next connection starts its update ids here.
static NEXT_UPDATE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn native(i: usize) -> String {
    format!("S{i}USDT")
}

/// The exchange whose protocol the feed speaks: `LOAD_EXCHANGE` (binance, the default, or
/// bitget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Binance,
    Bitget,
}

impl Load {
    fn from_env() -> Result<Self, String> {
        match std::env::var("LOAD_EXCHANGE").as_deref() {
            Err(_) | Ok("" | "binance") => Ok(Load::Binance),
            Ok("bitget") => Ok(Load::Bitget),
            Ok(other) => Err(format!("LOAD_EXCHANGE: binance or bitget, not {other:?}")),
        }
    }

    fn id(self) -> ExchangeId {
        match self {
            Load::Binance => ExchangeId::Binance,
            Load::Bitget => ExchangeId::Bitget,
        }
    }

    fn ws_path(self) -> &'static str {
        match self {
            Load::Binance => "/ws",
            Load::Bitget => "/v2/ws/public",
        }
    }

    /// The instrument list (the only REST call with explicit symbols).
    fn instruments(self) -> String {
        let list: Vec<serde_json::Value> = (0..SYMBOLS)
            .map(|i| match self {
                Load::Binance => serde_json::json!({"symbol": native(i), "status": "TRADING",
                    "baseAsset": format!("S{i}"), "quoteAsset": "USDT"}),
                Load::Bitget => {
                    serde_json::json!({"symbol": native(i), "baseCoin": format!("S{i}"),
                    "quoteCoin": "USDT", "status": "online", "minTradeAmount": "0",
                    "maxTradeAmount": "900000000000000000000", "takerFeeRate": "0.002",
                    "makerFeeRate": "0.002", "pricePrecision": "4", "quantityPrecision": "8",
                    "quotePrecision": "4", "minTradeUSDT": "1", "buyLimitPriceRatio": "0.05",
                    "sellLimitPriceRatio": "0.05", "areaSymbol": "no", "orderQuantity": "200",
                    "openTime": "1532454360000", "offTime": ""})
                }
            })
            .collect();
        match self {
            Load::Binance => serde_json::json!({"symbols": list}),
            Load::Bitget => serde_json::json!({"code": "00000", "msg": "success",
                "requestTime": 1_695_808_949_356_u64, "data": list}),
        }
        .to_string()
    }

    /// The answers to one client request: subscribe acks, and Bitget's `pong`.
    fn answers(self, request: &str) -> Vec<String> {
        match self {
            Load::Binance => {
                let v: serde_json::Value = serde_json::from_str(request).unwrap_or_default();
                vec![serde_json::json!({"result": null, "id": v["id"]}).to_string()]
            }
            Load::Bitget if request == "ping" => vec!["pong".to_owned()],
            Load::Bitget => {
                let v: serde_json::Value = serde_json::from_str(request).unwrap_or_default();
                v["args"]
                    .as_array()
                    .map(|args| {
                        args.iter()
                            .map(|arg| {
                                serde_json::json!({"event": "subscribe", "arg": arg}).to_string()
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }
    }

    /// The symbols (by index) a client request subscribes: `s7usdt@bookTicker` (Binance),
    /// `{"instId":"S7USDT",..}` (Bitget).
    fn subscribed(self, request: &str) -> Vec<usize> {
        let v: serde_json::Value = serde_json::from_str(request).unwrap_or_default();
        let names: Vec<String> = match self {
            Load::Binance => v["params"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Load::Bitget => v["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["instId"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        names
            .iter()
            .filter_map(|n| {
                let digits: String = n
                    .get(1..)?
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse::<usize>().ok().filter(|i| *i < SYMBOLS)
            })
            .collect()
    }

    /// One best bid/ask frame for symbol `i`, update `u`, as the exchange documents it.
    fn frame(self, out: &mut String, u: u64, i: usize, now_ms: u64) {
        let sym = native(i);
        let _ = match self {
            Load::Binance => std::fmt::Write::write_fmt(
                out,
                format_args!(
                    r#"{{"u":{u},"s":"{sym}","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#
                ),
            ),
            // Bitget's ticker carries no update id: a quote is identified by its time and
            // values (`publish.rs`), so each frame's bid size differs, as a real book's does
            // (identical ones would be stored once, as duplicates).
            Load::Bitget => std::fmt::Write::write_fmt(
                out,
                format_args!(
                    r#"{{"action":"snapshot","arg":{{"instType":"SPOT","channel":"ticker","instId":"{sym}"}},"data":[{{"instId":"{sym}","lastPr":"25.3601","open24h":"25.0112","high24h":"25.9811","low24h":"24.8870","change24h":"0.01394","bidPr":"25.3519","askPr":"25.3652","bidSz":"31.{:06}","askSz":"40.66","baseVolume":"1290514.1022","quoteVolume":"32711041.5201","openUtc":"25.1044","changeUtc24h":"0.01016","ts":"{now_ms}"}}],"ts":{now_ms}}}"#,
                    u % 1_000_000
                ),
            ),
        };
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--feed") {
        return rt.block_on(feed());
    }
    // With OTEL_EXPORTER_OTLP_ENDPOINT set the harness exports the ingest role's stage spans as
    // `spreadagg` does, to measure what tracing costs (docs/BENCHMARKS.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let traces = spreadagg_runtime::telemetry::init(
        spreadagg_runtime::telemetry::LogFormat::Text,
        "ingest",
    )?;
    if traces.enabled() {
        println!("traces exported with OTLP");
    }
    let result = rt.block_on(harness(&args[0]));
    drop(rt);
    traces.shutdown();
    result
}

/// Serves discovery on one port and the WebSocket feed on another; prints both.
async fn feed() -> Result<(), Box<dyn std::error::Error>> {
    let load = Load::from_env()?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let ws = TcpListener::bind("127.0.0.1:0").await?;
    println!("{} {}", http.local_addr()?, ws.local_addr()?);
    std::io::stdout().flush()?;
    let body = load.instruments();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = http.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(body.as_bytes()).await;
            });
        }
    });
    while let Ok((tcp, _)) = ws.accept().await {
        tokio::spawn(async move {
            // A small read buffer: tungstenite zero-fills it before every read, and the writer
            // below never polls the socket for reading (a reader task forwards the requests),
            // so the feed spends its CPU on frames, not on clearing buffers.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(4096);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let (acks_tx, mut acks) = tokio::sync::mpsc::channel::<(String, Vec<usize>)>(64);
            tokio::spawn(async move {
                while let Some(Ok(m)) = rx.next().await {
                    if let Message::Text(t) = m {
                        let mut subscribed = load.subscribed(t.as_str());
                        for answer in load.answers(t.as_str()) {
                            let subscribed = std::mem::take(&mut subscribed);
                            if acks_tx.send((answer, subscribed)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            // Ack the subscribe requests as they come, then stream the symbols subscribed on
            // this connection (as an exchange does: a connection carries only its own). Update
            // ids continue across connections, so no round repeats a message id.
            let mut u: u64 =
                NEXT_UPDATE_ID.fetch_add(1 << 40, std::sync::atomic::Ordering::Relaxed);
            let mut subs: Vec<usize> = Vec::new();
            let mut next = 0usize;
            let mut frame = String::with_capacity(512);
            let mut ms = now_ms();
            let pace = feed_rate();
            let started = Instant::now();
            let mut sent: u64 = 0;
            loop {
                let answer = if subs.is_empty() {
                    // Nothing to stream yet: wait for a request.
                    match acks.recv().await {
                        Some(a) => Some(a),
                        None => return,
                    }
                } else {
                    acks.try_recv().ok()
                };
                if let Some((ack, subscribed)) = answer {
                    subs.extend(subscribed);
                    if tx.send(Message::text(ack)).await.is_err() {
                        return;
                    }
                    continue;
                }
                frame.clear();
                load.frame(&mut frame, u, subs[next % subs.len()], ms);
                if tx.feed(Message::text(frame.as_str())).await.is_err() {
                    return;
                }
                u += 1;
                next = next.wrapping_add(1);
                sent += 1;
                if u.is_multiple_of(64) {
                    ms = now_ms();
                    if tx.flush().await.is_err() {
                        return;
                    }
                    // Paced: hold the rate to `FEED_RATE` frames per second.
                    if let Some(rate) = pace {
                        let due = started + Duration::from_secs_f64(sent as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
            }
        });
    }
    Ok(())
}

/// `FEED_RATE` (frames per second) paces the feed; unset or 0: as fast as it is read.
fn feed_rate() -> Option<f64> {
    std::env::var("FEED_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

async fn last_seq(bus: &Bus) -> u64 {
    bus.stream_state("MD_TICKS").await.map_or(0, |s| s.last_seq)
}

struct Round {
    rate: f64,
    cpu_us: f64,
}

async fn measure<F: std::future::Future<Output = ()>>(bus: &Bus, run: F) -> Round {
    tokio::pin!(run);
    // Warm up a second, then measure.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut run).await;
    let (seq0, cpu0, t0) = (last_seq(bus).await, cpu_seconds(), Instant::now());
    let _ = tokio::time::timeout(ROUND, &mut run).await;
    let (seq1, cpu1, dt) = (last_seq(bus).await, cpu_seconds(), t0.elapsed());
    let n = seq1.saturating_sub(seq0).max(1) as f64;
    Round {
        rate: n / dt.as_secs_f64(),
        cpu_us: (cpu1 - cpu0) * 1e6 / n,
    }
}

async fn bare(url: &str, exchange: ExchangeId, round: usize, stop: CancellationToken) {
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let payload = bytes::Bytes::from(vec![0x0au8; 90]);
    let mut pending = VecDeque::new();
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        if pending.len() >= IN_FLIGHT
            && let Some(f) = pending.pop_front()
        {
            let _ = f.await;
        }
        let mut headers = async_nats::HeaderMap::new();
        // Unique across rounds: the duplicate window (2 min) spans them.
        headers.insert("Nats-Msg-Id", format!("bare:{round}:{n}").as_str());
        let subject = format!("md.tick.{exchange}.S{}-USDT", n % SYMBOLS as u64);
        match js
            .publish_with_headers(subject, headers, payload.clone())
            .await
        {
            Ok(f) => pending.push_back(f),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        n += 1;
    }
}

/// Our bus's pipelining publisher alone, with pre-encoded payloads: separates the bus layer
/// from the ingest pipeline when the two rates differ.
async fn via_bus(url: &str, round: usize) {
    let Ok(bus) = Bus::connect(url, &StreamSettings::default()).await else {
        return;
    };
    let mut publisher = bus.publisher(IN_FLIGHT);
    let payload = bytes::Bytes::from(vec![0x0au8; 90]);
    let mut n: u64 = 0;
    loop {
        let msg = spreadagg_bus::OutMessage {
            subject: format!("md.tick.binance.S{}-USDT", n % SYMBOLS as u64),
            msg_id: format!("bus:{round}:{n}"),
            payload: payload.clone(),
        };
        if publisher.publish(msg).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n += 1;
    }
}

async fn harness(me: &str) -> Result<(), Box<dyn std::error::Error>> {
    let load = Load::from_env()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The ingestor's own counters: how many quotes it read, and how many it conflated away.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let counter = |name: &str| -> f64 {
        recorder
            .render()
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let server = spreadagg_testkit::NatsServer::start()?;
    let url = server.url();
    let mut feed = tokio::process::Command::new(me)
        .arg("--feed")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt;
        let out = feed.stdout.take().ok_or("feed stdout")?;
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
    }
    let mut parts = line.split_whitespace();
    let (rest, ws) = (
        parts.next().ok_or("feed address")?.to_owned(),
        parts.next().ok_or("feed address")?.to_owned(),
    );
    let settings = StreamSettings::default();
    let bus = Bus::connect(&url, &settings).await?;
    println!(
        "exchange {}, symbols {SYMBOLS}, in-flight {IN_FLIGHT}, rounds of {} s, feed {}",
        load.id(),
        ROUND.as_secs(),
        feed_rate().map_or("as fast as it is read".to_owned(), |r| format!(
            "paced at {r:.0} frames/s"
        ))
    );
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let stop = CancellationToken::new();
        let b = measure(&bus, bare(&url, load.id(), round, stop.clone())).await;
        stop.cancel();
        if std::env::var_os("VIA_BUS").is_some() {
            let v = measure(&bus, via_bus(&url, round)).await;
            println!(
                "round {round}: our bus publisher alone {:.0} acked/s ({:.2} µs CPU each)",
                v.rate, v.cpu_us
            );
        }
        let stop = CancellationToken::new();
        let config = IngestConfig {
            exchange: Some(load.id()),
            symbols: (0..SYMBOLS)
                .map(|i| format!("S{i}-USDT").parse().expect("symbol"))
                .collect(),
            ws_url: Some(format!("ws://{ws}{}", load.ws_path())),
            rest_url: Some(format!("http://{rest}")),
            max_in_flight: IN_FLIGHT,
            rediscover_every_s: 0,
            ..IngestConfig::default()
        };
        let ingest_bus = Bus::connect(&url, &settings).await?;
        let health = spreadagg_runtime::Health::new();
        let task = tokio::spawn(spreadagg_ingest::run(
            config,
            ingest_bus,
            health,
            stop.clone(),
        ));
        let read0 =
            counter("spreadagg_ingest_conflated_total") + counter("spreadagg_ingest_events_total");
        let t0 = Instant::now();
        let i = measure(&bus, async {
            std::future::pending::<()>().await;
        })
        .await;
        let read = (counter("spreadagg_ingest_conflated_total")
            + counter("spreadagg_ingest_events_total")
            - read0)
            / t0.elapsed().as_secs_f64();
        eprintln!(
            "  totals so far: published {} (duplicates {}), events {} ticks",
            counter("spreadagg_bus_published_total"),
            counter("spreadagg_bus_publish_duplicates_total"),
            counter("spreadagg_ingest_events_total")
        );
        stop.cancel();
        let _ = task.await;
        let ratio = i.rate / b.rate;
        ratios.push(ratio);
        println!(
            "round {round}: bare {:.0} acked/s ({:.2} µs CPU each), ingest {:.0} acked ticks/s ({:.2} µs CPU each; {read:.0} quotes/s read from the feed), ratio {ratio:.2}",
            b.rate, b.cpu_us, i.rate, i.cpu_us
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio {:.2}", ratios[ratios.len() / 2]);
    let _ = feed.kill().await;
    Ok(())
}
