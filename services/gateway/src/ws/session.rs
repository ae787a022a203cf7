//! One session per client on `GET /ws`.
//!
//! The socket is split into a reader and a writer that run together in the session's task:
//! the reader parses requests, updates the client's subscriptions and queues replies and
//! snapshots; the writer drains the client's queue (replies first, then events) onto the
//! socket. Neither ever blocks the feed: a writer stuck on a full TCP buffer only lets its own
//! queue fill and drop its own oldest events; a reader waiting for the engine's chart delays
//! only its own next request. Either side ends the session by closing the queue with a
//! cause; the writer then sends the matching Close frame (bounded in time).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;

use crate::AppState;
use crate::hub::event::Event;
use crate::hub::filter::VenuePattern;
use crate::hub::queue::{ClientId, ClientQueue, CloseCause};
use crate::hub::registry::{SubscribeError, Subscriber};
use crate::json::{ChartJson, encode};
use crate::limits::{Permit, RateLimit};
use crate::ws::protocol::{self, ErrorCode, Rejection, Request, RequestId, Subscription};
use crate::ws::reply::{Echo, ServerMessage, snapshot_frame};
use crate::ws::socket;

/// Rate tokens a subscribe to a wildcard with a snapshot costs (a plain request costs one).
const WILDCARD_SNAPSHOT_COST: u32 = 10;

/// `GET /ws`: upgrades unless the gateway is stopping or full (HTTP 503), or the client's
/// address holds its share already (HTTP 429).
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    socket::upgrade(app, peer, ws, move |socket, app, permit| {
        session(socket, peer, app, permit)
    })
}

async fn session(socket: WebSocket, peer: SocketAddr, app: AppState, _permit: Permit) {
    let queue = socket::new_queue(&app);
    let mut sub = match app.hub.registry.register(queue.clone()) {
        Ok(sub) => sub,
        Err(cause) => return socket::refuse(socket, cause).await,
    };
    let id = sub.id;
    tracing::debug!(client = %id, %peer, "client connected");
    let (sink, stream) = socket.split();
    tokio::join!(
        read_loop(stream, &mut sub, &app),
        socket::write_loop(
            sink,
            &queue,
            &app.stop,
            socket::Pacing::of(&app, true),
            |e: &Event| Some(e.json())
        ),
    );
    app.hub.registry.remove(sub);
    if matches!(
        queue.close_cause(),
        Some(CloseCause::Flooding | CloseCause::TooBig)
    ) {
        app.admission.penalize(peer.ip());
    }
    tracing::debug!(
        client = %id,
        %peer,
        cause = queue.close_cause().map_or("gone", |c| c.as_str()),
        dropped = queue.dropped_total(),
        "client disconnected"
    );
}

async fn read_loop(mut stream: SplitStream<WebSocket>, sub: &mut Subscriber, app: &AppState) {
    let queue = std::sync::Arc::clone(&sub.queue);
    // A client may pipeline all its subscriptions and some pings before it reads a refusal;
    // refusals beyond that, in a row, are a flood.
    let flood_after = u32::try_from(app.config.max_subscriptions_per_client)
        .unwrap_or(u32::MAX)
        .saturating_add(app.config.request_burst.saturating_mul(2));
    let mut rate = RateLimit::new(
        app.config.requests_per_s,
        app.config.request_burst,
        flood_after,
        Instant::now(),
    );
    loop {
        let id = sub.id;
        let too_big = || reject("oversized_frame", id, "frame over max_frame_bytes");
        let Some(msg) =
            socket::next_message(&mut stream, &queue, app.config.idle_timeout(), too_big).await
        else {
            break;
        };
        match msg {
            Message::Text(text) => {
                if !queue.wait_control_space().await {
                    break;
                }
                handle_text(&text, sub, app, &mut rate).await;
            }
            Message::Binary(_) => {
                if !queue.wait_control_space().await {
                    break;
                }
                if !rate.allow_n(1, Instant::now()) {
                    if rate.flooding() {
                        reject("flooding", id, "closed after its burst of refused requests");
                        queue.close(CloseCause::Flooding);
                    }
                    continue;
                }
                let r = Rejection::new(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                    None,
                );
                reject("binary_frame", id, &r.message);
                queue.push_control(r.to_frame());
            }
            // Tungstenite answers pings itself; any frame proves the client alive.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }
    socket::linger(&mut stream, &queue).await;
}

/// What a request costs of the client's rate: a snapshot of a wildcard walks many symbols.
fn cost(request: &Request) -> u32 {
    match request {
        Request::Subscribe(s) if s.snapshot && s.filter.symbol.exact().is_none() => {
            WILDCARD_SNAPSHOT_COST
        }
        _ => 1,
    }
}

async fn handle_text(text: &Utf8Bytes, sub: &mut Subscriber, app: &AppState, rate: &mut RateLimit) {
    let queue = std::sync::Arc::clone(&sub.queue);
    // Parsed first (bounded by max_frame_bytes) so that a refusal can echo the id; every
    // frame, well-formed or not, is charged to the rate.
    let parsed = protocol::parse_request(text);
    let (id, n) = match &parsed {
        Ok(env) => (env.id.clone(), cost(&env.request)),
        Err(r) => (r.id.clone(), 1),
    };
    if !rate.allow_n(n, Instant::now()) {
        let r = Rejection::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} requests a second (a wildcard snapshot counts {WILDCARD_SNAPSHOT_COST}); retry in {} ms",
                app.config.requests_per_s,
                rate.wait(n).as_millis().max(1)
            ),
            id,
        );
        refuse(&queue, sub.id, &r);
        if rate.flooding() {
            reject(
                "flooding",
                sub.id,
                "closed after its burst of refused requests",
            );
            queue.close(CloseCause::Flooding);
        }
        return;
    }
    let env = match parsed {
        Ok(env) => env,
        Err(rejection) => return refuse(&queue, sub.id, &rejection),
    };
    let rid = env.id.as_ref();
    match env.request {
        Request::Ping => {
            queue.push_control(encode(&ServerMessage::Pong { id: rid }));
        }
        Request::Subscribe(s) => subscribe(s, rid, sub, app).await,
        Request::Unsubscribe(filter) => {
            app.hub.registry.unsubscribe(sub, &filter);
            queue.push_control(encode(&ServerMessage::Unsubscribed {
                echo: Echo::of(&filter),
                id: rid,
            }));
        }
    }
}

async fn subscribe(s: Subscription, rid: Option<&RequestId>, sub: &mut Subscriber, app: &AppState) {
    let queue = std::sync::Arc::clone(&sub.queue);
    let filter = s.filter;
    if let Some(symbol) = filter.symbol.exact()
        && app.started.elapsed() > app.symbol_warmup
        && !app.hub.latest.knows(symbol)
    {
        let r = Rejection::new(
            ErrorCode::UnknownSymbol,
            format!(
                "{symbol} has not been seen on the feed (GET /api/symbols lists those that have)"
            ),
            rid.cloned(),
        );
        return refuse(&queue, sub.id, &r);
    }
    match app.hub.registry.subscribe(sub, &filter) {
        Ok(_) => {}
        Err(e @ SubscribeError::TooMany(_)) => {
            let r = Rejection::new(ErrorCode::TooManySubscriptions, e.to_string(), rid.cloned());
            return refuse(&queue, sub.id, &r);
        }
    }
    let subscribed = encode(&ServerMessage::Subscribed {
        echo: Echo::of(&filter),
        id: rid,
    });
    if !s.snapshot {
        queue.push_control(subscribed);
        return;
    }
    if !filter.chart {
        // The confirmation and the latest values go out together, ahead of any event the new
        // subscription selects (which may repeat a value of the snapshot, never precede it).
        let now_ns = spreadagg_model::time::now_ns();
        let snap = app
            .hub
            .latest
            .snapshot(&filter, app.config.max_snapshot_items, now_ns);
        let items: Vec<Utf8Bytes> = snap.events.iter().map(|e| e.json()).collect();
        queue.push_controls([
            subscribed,
            snapshot_frame(&filter, rid, snap.truncated, &items),
        ]);
        return;
    }
    // A chart: confirmed at once, the window follows when the engine answers; points of the
    // pair published meanwhile may arrive before it (merge by ts_ns).
    queue.push_control(subscribed);
    let (Some(symbol), VenuePattern::Pair(pair)) = (filter.symbol.exact(), filter.venue) else {
        return; // the protocol accepts charts only of one symbol and pair
    };
    let fetched = tokio::select! {
        fetched = app.charts.fetch(symbol, pair) => fetched,
        () = queue.closed() => return,
    };
    let frame = match fetched {
        Ok(chart) => {
            let item = encode(&ChartJson::from(&*chart));
            snapshot_frame(&filter, rid, false, &[item])
        }
        Err(e) => {
            let r = Rejection::new(ErrorCode::ChartUnavailable, e.to_string(), rid.cloned());
            reject(r.code.as_str(), sub.id, &r.message);
            r.to_frame()
        }
    };
    if queue.wait_control_space().await {
        queue.push_control(frame);
    }
}

/// Sends a rejection and counts it.
fn refuse(queue: &ClientQueue, id: ClientId, r: &Rejection) {
    reject(r.code.as_str(), id, &r.message);
    queue.push_control(r.to_frame());
}

/// Counts a refused client frame; logged at debug only, as a hostile client could otherwise
/// flood the logs.
fn reject(reason: &'static str, id: ClientId, detail: &str) {
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => reason).increment(1);
    tracing::debug!(client = %id, reason, detail, "client frame rejected");
}
