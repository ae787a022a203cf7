//! The connection layer against a local WebSocket server that speaks OKX's framing and
//! misbehaves on purpose: silent links, stalls with pings answered, garbage, refused and
//! unanswered subscriptions, unreachable ports, and rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use spreadagg_model::ExchangeId;
use spreadagg_runtime::Health;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::event::Event;
use crate::exchange::okx::Okx;
use crate::exchange::{Control, Frame, Instrument, Limits, Output, ParseError, Request, Session};
use std::collections::HashMap;

/// How the fake server treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Never answers anything, never sends.
    Silent,
    /// Acks subscriptions and answers pings, but sends no market data.
    Stall,
    /// Acks and streams a quote every 50 ms (seq rising across connections).
    Stream,
    /// Refuses the first `n` subscribe requests of the server's life, then acts like Stream.
    RefuseFirst(usize),
    /// Ignores the first `n` subscribe requests, then acts like Stream.
    IgnoreFirst(usize),
    /// Sends garbage between quotes.
    Garbage,
    /// Like Stream, but each subscription is acked 1.3 s after its request (KuCoin's bootstrap
    /// and HTX's per-topic requests make a subscription take that long).
    SlowAck,
    /// Like Stream, and each tick also sends a `trades` frame of two trades whose second is
    /// unusable (a price of "-1").
    HalfBadTrades,
    /// Like Stream, but the first connection, after three quotes, sends OKX's service-upgrade
    /// notice and its Close frame in one write, so the client may see either first.
    AnnounceThenClose,
}

struct Server {
    url: String,
    accepted: Arc<AtomicUsize>,
    /// When each connection was accepted.
    accepted_at: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
    open: Arc<AtomicUsize>,
    subscribes: Arc<AtomicUsize>,
}

fn bbo(seq: usize) -> String {
    format!(
        r#"{{"arg":{{"channel":"bbo-tbt","instId":"BTC-USDT"}},"data":[{{"asks":[["101.5","1","0","1"]],"bids":[["101.0","2","0","1"]],"ts":"{}","seqId":{seq}}}]}}"#,
        1_700_000_000_000u64 + seq as u64
    )
}

async fn server(mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws/v5/public", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepted_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let at = accepted_at.clone();
    let open = Arc::new(AtomicUsize::new(0));
    let subscribes = Arc::new(AtomicUsize::new(0));
    let seq = Arc::new(AtomicUsize::new(1));
    let (a, o, subs) = (accepted.clone(), open.clone(), subscribes.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let nth = a.fetch_add(1, Ordering::SeqCst);
            at.lock().expect("lock").push(tokio::time::Instant::now());
            let (o, subs, seq) = (o.clone(), subs.clone(), seq.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                o.fetch_add(1, Ordering::SeqCst);
                let (mut tx, mut rx) = ws.split();
                let mut streaming = false;
                let mut sent = 0;
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                // SlowAck: acks to send, and when.
                let mut slow_acks: Option<(tokio::time::Instant, Vec<String>)> = None;
                loop {
                    tokio::select! {
                        m = rx.next() => {
                            let Some(Ok(m)) = m else { break };
                            let Message::Text(t) = m else { continue };
                            if mode == Mode::Silent {
                                continue;
                            }
                            if t.as_str() == "ping" {
                                if tx.send(Message::text("pong")).await.is_err() { break }
                                continue;
                            }
                            let Ok(req) = serde_json::from_str::<serde_json::Value>(t.as_str()) else { continue };
                            if req["op"] != "subscribe" { continue }
                            let n = subs.fetch_add(1, Ordering::SeqCst);
                            let id = req["id"].as_str().unwrap_or("").to_owned();
                            match mode {
                                Mode::RefuseFirst(k) if n < k => {
                                    let e = serde_json::json!({"id": id, "event": "error", "code": "60018", "msg": "refused on purpose", "connId": "t"});
                                    if tx.send(Message::text(e.to_string())).await.is_err() { break }
                                    continue;
                                }
                                Mode::IgnoreFirst(k) if n < k => continue,
                                _ => {}
                            }
                            let acks: Vec<String> = req["args"].as_array().into_iter().flatten().map(|arg| serde_json::json!({"id": id, "event": "subscribe", "arg": arg, "connId": "t"}).to_string()).collect();
                            if mode == Mode::SlowAck {
                                slow_acks = Some((tokio::time::Instant::now() + Duration::from_millis(1300), acks));
                                continue;
                            }
                            for ack in acks {
                                if tx.send(Message::text(ack)).await.is_err() { return }
                            }
                            streaming = mode != Mode::Stall;
                        }
                        () = async {
                            match &slow_acks {
                                Some((due, _)) => tokio::time::sleep_until(*due).await,
                                None => std::future::pending().await,
                            }
                        } => {
                            for ack in slow_acks.take().map(|(_, a)| a).unwrap_or_default() {
                                if tx.send(Message::text(ack)).await.is_err() { return }
                            }
                            streaming = true;
                        }
                        _ = tick.tick(), if streaming => {
                            if mode == Mode::Garbage {
                                for g in [Message::text("{not json"), Message::binary(vec![0u8, 1, 2]), Message::text(r#"{"event":"error","code":"60012","msg":"x","connId":"t"}"#)] {
                                    if tx.send(g).await.is_err() { break }
                                }
                            }
                            let s = seq.fetch_add(1, Ordering::SeqCst);
                            if tx.send(Message::text(bbo(s))).await.is_err() { break }
                            if mode == Mode::HalfBadTrades {
                                let trades = format!(r#"{{"arg":{{"channel":"trades","instId":"BTC-USDT"}},"data":[{{"instId":"BTC-USDT","tradeId":"good{s}","px":"101.2","sz":"0.5","side":"buy","ts":"1700000000000"}},{{"instId":"BTC-USDT","tradeId":"bad{s}","px":"-1","sz":"0.5","side":"sell","ts":"1700000000000"}}]}}"#);
                                if tx.send(Message::text(trades)).await.is_err() { break }
                            }
                            sent += 1;
                            if mode == Mode::AnnounceThenClose && nth == 0 && sent == 3 {
                                let notice = r#"{"event":"notice","msg":"The connection will soon be closed for a service upgrade. Please reconnect.","code":"64008","connId":"t"}"#;
                                let close = Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                    code: 1001.into(),
                                    reason: "server shutdown".into(),
                                }));
                                let _ = tx.feed(Message::text(notice)).await;
                                let _ = tx.feed(close).await;
                                let _ = tx.flush().await;
                                break;
                            }
                        }
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        url,
        accepted,
        accepted_at,
        open,
        subscribes,
    }
}

fn settings() -> ConnectionSettings {
    ConnectionSettings {
        connect_timeout: Duration::from_secs(2),
        stale_after: Duration::from_secs(1),
        data_stale_after: Duration::from_millis(1500),
        ack_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        rotate_after: None,
        rotate_margin: Duration::ZERO,
        handover_timeout: Duration::from_secs(5),
    }
}

struct Fixture {
    shared: Arc<Shared>,
    health: Health,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _natives: watch::Sender<Vec<String>>,
}

fn start(url: &str, settings: ConnectionSettings) -> Fixture {
    start_with(Arc::new(Okx), url, settings)
}

fn start_with(adapter: Arc<dyn Adapter>, url: &str, settings: ConnectionSettings) -> Fixture {
    // reqwest is built without a default TLS provider; the binary installs ring, so do tests.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let table = SymbolTable::from_pairs(ExchangeId::Okx, [("BTC-USDT", "BTC-USDT")]);
    let shared = Arc::new(Shared {
        adapter,
        settings,
        http: reqwest::Client::new(),
        rest_url: "http://127.0.0.1:9".into(),
        ws_url: Some(url.to_owned()),
        symbols: Arc::new(RwLock::new(Arc::new(table))),
        sink: Arc::new(Conflator::new(ExchangeId::Okx, 100)),
        breaker: Breaker::new(
            ExchangeId::Okx,
            3,
            Duration::from_millis(300),
            Duration::from_secs(1),
        ),
        attempts: AttemptLimiter::new(Duration::from_millis(10)),
    });
    let health = Health::new();
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(vec!["BTC-USDT".to_owned()]);
    let task = tokio::spawn(
        Connection {
            shared: shared.clone(),
            index: 0,
            natives: rx,
            component: health.register("test.conn"),
            stop: stop.clone(),
        }
        .run(),
    );
    Fixture {
        shared,
        health,
        stop,
        task,
        _natives: tx,
    }
}

impl Fixture {
    /// The next quotes' update ids, within `within`.
    async fn seqs(&self, n: usize, within: Duration) -> Vec<u64> {
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while seqs.len() < n {
            out.clear();
            match tokio::time::timeout_at(deadline, self.shared.sink.take(n, &mut out)).await {
                Ok(_) => seqs.extend(out.iter().filter_map(|e| match e {
                    Event::Quote(q) => Some(q.seq),
                    Event::Print(_) => None,
                })),
                Err(_) => panic!("only {seqs:?} within {within:?}; {}", self.health.report()),
            }
        }
        seqs
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops")
            .expect("no panic");
    }
}

#[tokio::test]
async fn a_silent_link_is_recycled_by_the_link_watchdog() {
    let s = server(Mode::Silent).await;
    let f = start(&s.url, settings());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        s.accepted.load(Ordering::SeqCst) >= 2,
        "silent link not recycled: {} connections",
        s.accepted.load(Ordering::SeqCst)
    );
    f.stop().await;
}

#[tokio::test]
async fn a_stall_with_pings_answered_is_recycled_by_the_data_watchdog() {
    let s = server(Mode::Stall).await;
    let mut settings = settings();
    // The link stays alive: the server answers every ping.
    settings.stale_after = Duration::from_secs(60);
    let f = start(&s.url, settings);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        s.accepted.load(Ordering::SeqCst) >= 2,
        "stalled feed not recycled: {} connections",
        s.accepted.load(Ordering::SeqCst)
    );
    f.stop().await;
}

#[tokio::test]
async fn garbage_is_counted_and_the_session_goes_on() {
    let s = server(Mode::Garbage).await;
    let f = start(&s.url, settings());
    let seqs = f.seqs(5, Duration::from_secs(5)).await;
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "bad frames must not end the session"
    );
    assert!(f.health.is_ready(), "{}", f.health.report());
    f.stop().await;
}

/// A frame rejected midway still delivers what was read and validated before the failure:
/// OKX's adapter pushes the first trade of a `trades` frame, then fails on the second; the
/// first reaches the publisher, the second does not, and the frame counts as rejected.
#[tokio::test]
async fn a_frame_rejected_midway_still_delivers_the_events_before_the_failure() {
    let s = server(Mode::HalfBadTrades).await;
    let f = start(&s.url, settings());
    let mut out = Vec::new();
    let mut trades: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while trades.len() < 3 {
        out.clear();
        match tokio::time::timeout_at(deadline, f.shared.sink.take(16, &mut out)).await {
            Ok(_) => trades.extend(out.iter().filter_map(|e| match e {
                Event::Print(p) => Some(p.trade_id.clone()),
                Event::Quote(_) => None,
            })),
            Err(_) => panic!("trades seen: {trades:?}; {}", f.health.report()),
        }
    }
    assert!(
        trades.iter().all(|t| t.starts_with("good")),
        "only the valid trades: {trades:?}"
    );
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1, "the session goes on");
    f.stop().await;
}

#[tokio::test]
async fn a_refused_subscription_is_retried_until_it_holds() {
    let s = server(Mode::RefuseFirst(2)).await;
    // Quiet while waiting to resubscribe: not the link watchdog's business here.
    let mut settings = settings();
    settings.stale_after = Duration::from_secs(60);
    let f = start(&s.url, settings);
    f.seqs(3, Duration::from_secs(10)).await;
    assert!(
        s.subscribes.load(Ordering::SeqCst) >= 3,
        "refused twice, then accepted"
    );
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "retried on the same connection"
    );
    f.stop().await;
}

#[tokio::test]
async fn an_unanswered_subscription_times_out_and_is_sent_again() {
    let s = server(Mode::IgnoreFirst(1)).await;
    // Quiet while waiting to resubscribe: not the link watchdog's business here.
    let mut settings = settings();
    settings.stale_after = Duration::from_secs(60);
    let f = start(&s.url, settings);
    f.seqs(3, Duration::from_secs(10)).await;
    assert!(s.subscribes.load(Ordering::SeqCst) >= 2);
    f.stop().await;
}

#[tokio::test]
async fn an_unreachable_exchange_opens_the_breaker_which_gates_attempts() {
    // A port with nothing listening: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let f = start(&format!("ws://127.0.0.1:{port}/ws"), settings());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f.shared.breaker.is_open() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!f.health.is_ready());
    assert_eq!(f.health.report()["components"]["test.conn"]["ready"], false);
    f.stop().await;
}

#[tokio::test]
async fn an_announced_close_is_a_rotation_whichever_the_client_sees_first() {
    // The notice and the Close frame arrive together: whether the connection task handles
    // the announcement or the session's end first, the close counts as a rotation and the
    // next session connects (decision 25). Run a few times: each run may take either order.
    for _ in 0..5 {
        let s = server(Mode::AnnounceThenClose).await;
        let f = start(&s.url, settings());
        f.seqs(5, Duration::from_secs(5)).await;
        let detail = &f.health.report()["components"]["test.conn"]["detail"];
        assert!(
            detail["rotations"].as_u64().unwrap_or(0) >= 1,
            "the announced close was not a rotation: {detail}"
        );
        assert!(s.accepted.load(Ordering::SeqCst) >= 2, "reconnected");
        f.stop().await;
    }
}

#[tokio::test]
async fn rotation_opens_the_new_connection_before_closing_the_old() {
    let s = server(Mode::Stream).await;
    let mut settings = settings();
    settings.rotate_after = Some(Duration::from_millis(1500));
    let f = start(&s.url, settings);
    // Across several rotations the quotes keep coming, and at some point two connections
    // are open at once (the overlap).
    let mut max_open = 0;
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        max_open = max_open.max(s.open.load(Ordering::SeqCst));
        seqs.extend(f.seqs(1, Duration::from_secs(2)).await);
    }
    assert!(
        s.accepted.load(Ordering::SeqCst) >= 3,
        "rotated at least twice"
    );
    assert_eq!(max_open, 2, "make before break");
    assert!(s.open.load(Ordering::SeqCst) <= 2);
    let rotations = f.health.report()["components"]["test.conn"]["detail"]["rotations"]
        .as_u64()
        .unwrap_or(0);
    assert!(rotations >= 2, "{}", f.health.report());
    f.stop().await;
}

#[tokio::test]
async fn an_age_rotation_dials_each_successor_at_its_own_age() {
    // The old session stays past its age while the successor subscribes (1.3 s); that age
    // must not start another rotation of the successor the moment it takes over.
    let s = server(Mode::SlowAck).await;
    let mut settings = settings();
    settings.rotate_after = Some(Duration::from_secs(2));
    // Nothing arrives while a subscription waits for its ack: the watchdogs and the ack
    // timeout allow the wait.
    settings.stale_after = Duration::from_secs(5);
    settings.data_stale_after = Duration::from_secs(5);
    settings.ack_timeout = Duration::from_secs(3);
    let f = start(&s.url, settings);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let detail = f.health.report()["components"]["test.conn"]["detail"].clone();
    let rotations = detail["rotations"].as_u64().unwrap_or(0);
    let handovers = detail["handovers"].as_u64().unwrap_or(0);
    // A session lives about 2 s (its age) before its successor starts, so 9 s hold three or
    // four rotations; each started either completed or is the one under way.
    assert!(handovers >= 2, "{detail}");
    assert!(
        rotations <= handovers + 1,
        "{rotations} rotations for {handovers} handovers: {detail}"
    );
    // Each successor is dialled once its predecessor has reached the age (2 s, checked every
    // second), not the moment that predecessor took over (1.3 s after it was dialled).
    let at = s.accepted_at.lock().expect("lock").clone();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(1_800),
            "a connection dialled {:?} after the one before: {detail}",
            w[1] - w[0]
        );
    }
    f.stop().await;
}

/// OKX, except that no session ever becomes ready to subscribe (as a KuCoin session whose
/// welcome never comes, or names another connection).
struct NeverReady;

struct NeverReadySession(Box<dyn Session>);

impl Session for NeverReadySession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        self.0.subscribe(natives, next_id)
    }
    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        self.0.on_frame(frame, symbols, recv_ts_ns, out)
    }
    fn ready_to_subscribe(&self) -> bool {
        false
    }
}

impl Adapter for NeverReady {
    fn id(&self) -> ExchangeId {
        Okx.id()
    }
    fn default_ws_url(&self) -> &'static str {
        Okx.default_ws_url()
    }
    fn default_rest_url(&self) -> &'static str {
        Okx.default_rest_url()
    }
    fn limits(&self) -> Limits {
        Okx.limits()
    }
    fn instruments_path(&self) -> &'static str {
        Okx.instruments_path()
    }
    fn volumes_path(&self) -> &'static str {
        Okx.volumes_path()
    }
    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        Okx.parse_instruments(body)
    }
    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        Okx.parse_volumes(body)
    }
    fn session(&self) -> Box<dyn Session> {
        Box::new(NeverReadySession(Okx.session()))
    }
    fn keepalive_every(&self) -> Option<Duration> {
        Okx.keepalive_every()
    }
}

#[tokio::test]
async fn a_session_never_ready_to_subscribe_is_recycled() {
    let s = server(Mode::Stall).await;
    let mut settings = settings();
    // The link stays alive; only the readiness deadline (3 ack timeouts) can end the session.
    settings.stale_after = Duration::from_secs(60);
    let f = start_with(Arc::new(NeverReady), &s.url, settings);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(
        s.accepted.load(Ordering::SeqCst) >= 2,
        "a session never ready was not recycled: {} connections",
        s.accepted.load(Ordering::SeqCst)
    );
    assert_eq!(
        s.subscribes.load(Ordering::SeqCst),
        0,
        "nothing is sent before the session is ready"
    );
    f.stop().await;
}

/// A Coinbase `level2` snapshot of BTC-USDT, `depth` levels a side, best first: bids from
/// 49999.99 down, asks from 50000.01 up, a cent apart.
fn coinbase_snapshot(seq: u64, depth: usize) -> String {
    let level = |side: &str, px: String, qty: &str| {
        format!(
            r#"{{"side":"{side}","event_time":"2024-01-01T00:00:00.5Z","price_level":"{px}","new_quantity":"{qty}"}}"#
        )
    };
    let levels: Vec<String> = (0..depth)
        .map(|k| {
            level(
                "bid",
                format!("{}.{:02}", 49_999 - k / 100, 99 - k % 100),
                "0.5",
            )
        })
        .chain((0..depth).map(|k| {
            level(
                "offer",
                format!("{}.{:02}", 50_000 + k / 100, k % 100 + 1),
                "0.25",
            )
        }))
        .collect();
    format!(
        r#"{{"channel":"l2_data","client_id":"","timestamp":"2024-01-01T00:00:01Z","sequence_num":{seq},"events":[{{"type":"snapshot","product_id":"BTC-USDT","updates":[{}]}}]}}"#,
        levels.join(",")
    )
}

/// Coinbase's BTC-USD `level2` snapshot is several MB (ccxt #23597): the session reads it
/// whole under Coinbase's `Limits::max_message_bytes` (64 MiB, not the 1 MiB of the others)
/// and quotes its top, on one connection that stays up. A fake Coinbase server: it acks every
/// subscribe with the `subscriptions` listing, answers `level2` with the snapshot, then
/// sends a heartbeat and a (deep, ignored) level2 update every 100 ms.
#[tokio::test]
async fn a_multi_megabyte_coinbase_snapshot_is_read_and_quoted() {
    use crate::exchange::coinbase::Coinbase;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut tx, mut rx) = ws.split();
                let mut seq = 0u64;
                let mut held: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut streaming = false;
                loop {
                    let mut frames = Vec::new();
                    tokio::select! {
                        m = rx.next() => {
                            let Some(Ok(Message::Text(t))) = m else { break };
                            let Ok(req) = serde_json::from_str::<serde_json::Value>(t.as_str()) else { continue };
                            let channel = req["channel"].as_str().unwrap_or("").to_owned();
                            let products: Vec<String> = req["product_ids"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect();
                            let list = held.entry(channel.clone()).or_default();
                            list.extend(if channel == "heartbeats" { vec!["heartbeats".to_owned()] } else { products });
                            frames.push(serde_json::json!({"channel": "subscriptions", "client_id": "", "timestamp": "2024-01-01T00:00:01Z", "sequence_num": seq, "events": [{"subscriptions": held}]}).to_string());
                            seq += 1;
                            if channel == "level2" {
                                frames.push(coinbase_snapshot(seq, 20_000));
                                seq += 1;
                                streaming = true;
                            }
                        }
                        _ = tick.tick() => {
                            frames.push(format!(r#"{{"channel":"heartbeats","client_id":"","timestamp":"2024-01-01T00:00:02Z","sequence_num":{seq},"events":[{{"current_time":"x","heartbeat_counter":{seq}}}]}}"#));
                            seq += 1;
                            if streaming {
                                frames.push(format!(r#"{{"channel":"l2_data","client_id":"","timestamp":"2024-01-01T00:00:02Z","sequence_num":{seq},"events":[{{"type":"update","product_id":"BTC-USDT","updates":[{{"side":"bid","event_time":"2024-01-01T00:00:02Z","price_level":"1.00","new_quantity":"{seq}"}}]}}]}}"#));
                                seq += 1;
                            }
                        }
                    }
                    for f in frames {
                        if tx.send(Message::text(f)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    assert!(coinbase_snapshot(0, 20_000).len() > 2 << 20, "over 2 MiB");
    let f = start_with(Arc::new(Coinbase), &url, settings());
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let quote = loop {
        out.clear();
        match tokio::time::timeout_at(deadline, f.shared.sink.take(16, &mut out)).await {
            Ok(_) => {
                if let Some(q) = out.iter().find_map(|e| match e {
                    Event::Quote(q) => Some(*q),
                    Event::Print(_) => None,
                }) {
                    break q;
                }
            }
            Err(_) => panic!("no quote from the snapshot: {}", f.health.report()),
        }
    };
    assert_eq!(
        (quote.bid_px, quote.bid_qty, quote.ask_px, quote.ask_qty),
        (49_999.99, 0.5, 50_000.01, 0.25)
    );
    // The connection stays up (the deep update is past the cut book's boundary and ignored,
    // but counts as market data).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the session ended: {}",
        f.health.report()
    );
    f.stop().await;
}
