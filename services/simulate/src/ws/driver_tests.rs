//! The driver with a minimal protocol (the least an exchange has to implement), in paused
//! time over the in-memory socket: refusals shared across sessions, the default garbage
//! frames, the fallback Close frame of a forced close, and the slow sender.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use spreadagg_model::ExchangeId;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use super::{End, ExchangeCtx, mock};
use crate::fault::{Fault, Faults};
use crate::market::{Board, MarketEvent, Model, Universe};

/// Answers `sub` with `ok` and anything else with `echo:<text>`; has no goodbye at all.
struct Echo;

impl Protocol for Echo {
    fn on_client(&mut self, frame: Inbound<'_>, _now: Instant) -> Reply {
        match frame.text() {
            Some("sub") => Reply::frames(vec![Frame::Text("ok".into())]),
            Some(t) => Reply::frames(vec![Frame::Text(format!("echo:{t}"))]),
            None => Reply::default(),
        }
    }

    fn on_event(&mut self, _event: &MarketEvent, out: &mut Vec<Frame>) {
        out.push(Frame::Text("data".into()));
    }

    fn goodbye(&self, _end: End) -> Option<Goodbye> {
        None
    }

    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        (frame.text() == Some("sub")).then(|| vec![Frame::Text("refused".into())])
    }
}

fn ctx() -> (Arc<ExchangeCtx>, CancellationToken) {
    let symbols = vec!["BTC-USDT".to_owned()];
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Okx]).expect("universe"));
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.0, 1);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(0)));
    let stop = CancellationToken::new();
    let ctx = Arc::new(ExchangeCtx {
        exchange: ExchangeId::Okx,
        index: 0,
        universe: u,
        board,
        events: broadcast::channel(16).0,
        stop: stop.clone(),
        tracker: TaskTracker::new(),
        sessions: Arc::new(Semaphore::new(4)),
        binance_ping_interval: Duration::from_secs(20),
        faults: Arc::new(Faults::new(ExchangeId::Okx)),
    });
    (ctx, stop)
}

fn open(ctx: &Arc<ExchangeCtx>) -> (tokio::task::JoinHandle<()>, mock::Client) {
    let (socket, client) = mock::socket();
    let task = tokio::spawn(mock::run(socket, ctx.clone(), Echo, ctx.events.subscribe()));
    (task, client)
}

#[tokio::test(start_paused = true)]
async fn refusals_are_shared_by_sessions_and_then_requests_pass() {
    let (ctx, stop) = ctx();
    let (ta, mut a) = open(&ctx);
    let (tb, mut b) = open(&ctx);
    ctx.faults
        .inject(Fault::RefuseSubscription { count: 1 })
        .expect("inject");
    a.send_text("hello");
    assert_eq!(
        a.next_text().await.as_deref(),
        Some("echo:hello"),
        "not a subscribe"
    );
    a.send_text("sub");
    assert_eq!(a.next_text().await.as_deref(), Some("refused"));
    b.send_text("sub");
    assert_eq!(
        b.next_text().await.as_deref(),
        Some("ok"),
        "one refusal in all"
    );
    stop.cancel();
    ta.await.expect("session");
    tb.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn default_garbage_is_text_that_is_not_json_and_data_goes_on() {
    let (ctx, stop) = ctx();
    let (task, mut client) = open(&ctx);
    // The session is up once it answers.
    client.send_text("up");
    assert_eq!(client.next_text().await.as_deref(), Some("echo:up"));
    ctx.faults
        .inject(Fault::Garbage { count: 2 })
        .expect("inject");
    for _ in 0..2 {
        let g = client.next_text().await.expect("garbage");
        assert!(
            serde_json::from_str::<serde_json::Value>(&g).is_err(),
            "{g}"
        );
    }
    client.send_text("after");
    assert_eq!(client.next_text().await.as_deref(), Some("echo:after"));
    stop.cancel();
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn a_forced_close_sends_1001_even_without_a_protocol_goodbye() {
    let (ctx, _stop) = ctx();
    let (task, mut client) = open(&ctx);
    client.send_text("up");
    assert_eq!(client.next_text().await.as_deref(), Some("echo:up"));
    ctx.faults.inject(Fault::CloseWithNotice).expect("inject");
    assert!(matches!(client.next().await, Some(Message::Close(Some(c))) if c.code == 1001));
    task.await.expect("session");
}

#[tokio::test(start_paused = true)]
async fn slow_delays_each_frame_until_the_window_ends() {
    let (ctx, stop) = ctx();
    let (task, mut client) = open(&ctx);
    ctx.faults
        .inject(Fault::Slow {
            duration_ms: 1_000,
            delay_ms: 300,
        })
        .expect("inject");
    let t0 = Instant::now();
    client.send_text("a");
    assert_eq!(client.next_text().await.as_deref(), Some("echo:a"));
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t1 = Instant::now();
    client.send_text("b");
    assert_eq!(client.next_text().await.as_deref(), Some("echo:b"));
    assert_eq!(t1.elapsed(), Duration::ZERO, "the window is over");
    stop.cancel();
    task.await.expect("session");
}
