//! The prototype's WebSocket endpoints, for clients written against it:
//!
//! - `GET /ws/realtime`: on connect an `AllSymbolInfo` envelope (every symbol and the
//!   exchanges quoting it), then every spread point and trade as `Spread` and `Trade`
//!   envelopes, as the prototype broadcast them; but through a bounded drop-oldest queue per
//!   client like every other client here.
//! - `GET /ws/realtime_charts?symbol=BTC-USDT&exchange1=binance&exchange2=okx`: the pair's
//!   chart snapshot on connect and then once a second while it changes.
//!
//! Frames from the client are not part of these protocols: they are counted and ignored.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;

use crate::AppState;
use crate::hub::event::{Channel, Event};
use crate::hub::filter::{Filter, SymbolPattern, VenuePattern};
use crate::hub::queue::{ClientQueue, lock};
use crate::legacy;
use crate::limits::Permit;
use crate::pair::Pair;
use crate::ws::socket;

/// How often `/ws/realtime_charts` looks for a newer chart.
const CHART_EVERY: Duration = Duration::from_secs(1);
/// How long an `AllSymbolInfo` envelope is reused.
const HELLO_TTL: Duration = Duration::from_secs(1);

/// `GET /ws/realtime`.
pub(crate) async fn realtime(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    socket::upgrade(app, peer, ws, realtime_session)
}

async fn realtime_session(socket: WebSocket, app: AppState, _permit: Permit) {
    let queue = socket::new_queue(&app);
    let mut sub = match app.hub.registry.register(queue.clone()) {
        Ok(sub) => sub,
        Err(cause) => return socket::refuse(socket, cause).await,
    };
    // First in the queue, so that it goes out before any event and under the writer's send
    // deadline like everything else.
    queue.push_control(hello(&app));
    for channel in [Channel::Spreads, Channel::Trades] {
        let all = Filter {
            channel,
            symbol: SymbolPattern::Any,
            venue: VenuePattern::Any,
            chart: false,
        };
        // Two subscriptions: with max_subscriptions_per_client at 1, only spreads flow.
        let _ = app.hub.registry.subscribe(&mut sub, &all);
    }
    let (sink, stream) = socket.split();
    tokio::join!(
        ignore_input(stream, &queue, &app),
        socket::write_loop(
            sink,
            &queue,
            &app.stop,
            socket::Pacing::of(&app, false),
            Event::legacy
        ),
    );
    app.hub.registry.remove(sub);
}

/// The `AllSymbolInfo` envelope, made at most once a second and shared by every connection
/// (it walks every symbol kept).
fn hello(app: &AppState) -> Utf8Bytes {
    if let Some((at, frame)) = lock(&app.legacy_hello).as_ref()
        && at.elapsed() < HELLO_TTL
    {
        return frame.clone();
    }
    // Made without holding the cache's lock, so no runtime thread parks on it meanwhile.
    let symbols = app.hub.latest.symbol_exchanges();
    let infos: Vec<_> = symbols
        .iter()
        .map(|(s, xs)| legacy::info(s, xs.iter().map(|x| x.as_str()).collect()))
        .collect();
    let frame = legacy::all_symbol_info(&infos);
    *lock(&app.legacy_hello) = Some((Instant::now(), frame.clone()));
    frame
}

/// Reads (and ignores) what the client sends, so pings are answered, Close is seen and idle
/// clients are noticed.
async fn ignore_input(mut stream: SplitStream<WebSocket>, queue: &ClientQueue, app: &AppState) {
    let too_big = || {
        metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "oversized_frame")
            .increment(1);
    };
    while let Some(msg) =
        socket::next_message(&mut stream, queue, app.config.idle_timeout(), too_big).await
    {
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "legacy_input")
                .increment(1);
        }
    }
    socket::linger(&mut stream, queue).await;
}

/// The query of `/ws/realtime_charts` (other parameters, `access_token` among them, are not
/// this handler's business).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ChartQuery {
    symbol: String,
    exchange1: String,
    exchange2: String,
}

/// `GET /ws/realtime_charts?symbol=&exchange1=&exchange2=`.
pub(crate) async fn realtime_charts(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<ChartQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response();
    let Ok(Query(q)) = query else {
        return bad("expected ?symbol=BTC-USDT&exchange1=binance&exchange2=okx");
    };
    let Ok(symbol) = q.symbol.parse::<spreadagg_model::Symbol>() else {
        return bad("symbol must be canonical BASE-QUOTE (BTC-USDT)");
    };
    let Some(pair) = Pair::parse(&q.exchange1, &q.exchange2) else {
        return bad("exchange1 and exchange2 must be two different exchange ids");
    };
    socket::upgrade(app, peer, ws, move |socket, app, permit| {
        charts_session(socket, app, permit, symbol, pair)
    })
}

async fn charts_session(
    socket: WebSocket,
    app: AppState,
    _permit: Permit,
    symbol: spreadagg_model::Symbol,
    pair: Pair,
) {
    // The queue carries only replies here (the charts), so a client that does not read
    // stalls only its own writer; it is closed like any other (idle, stop).
    let queue = socket::new_queue(&app);
    let sub = match app.hub.registry.register(queue.clone()) {
        Ok(sub) => sub,
        Err(cause) => return socket::refuse(socket, cause).await,
    };
    let (sink, stream) = socket.split();
    let feed = async {
        let mut sent: Option<Option<i64>> = None;
        let mut every = tokio::time::interval(CHART_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = queue.closed() => break,
                _ = every.tick() => {}
            }
            let fetched = tokio::select! {
                fetched = app.charts.fetch(&symbol, pair) => fetched,
                () = queue.closed() => break,
            };
            match fetched {
                Ok(chart) => {
                    // Sent on connect, then whenever the window's newest point changed.
                    let newest = chart.ts_ns.last().copied();
                    if sent != Some(newest) {
                        sent = Some(newest);
                        // A client that does not read holds at most the reply bound (1 MiB)
                        // of charts; this task then waits, sending it nothing more.
                        if queue.wait_control_space().await {
                            queue.push_control(legacy::chart(&chart));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(symbol = %symbol, error = %e, "no chart for a legacy client")
                }
            }
        }
    };
    tokio::join!(
        ignore_input(stream, &queue, &app),
        socket::write_loop(
            sink,
            &queue,
            &app.stop,
            socket::Pacing::of(&app, false),
            |_: &Event| None
        ),
        feed,
    );
    app.hub.registry.remove(sub);
}
