//! The gRPC API (`proto/spreadagg/gateway/v1/gateway.proto`) on `--grpc-listen`, beside
//! server reflection and the standard health service (`grpc.health.v1`).
//!
//! A `Subscribe` stream is a client of the hub like a WebSocket session: admitted against the
//! same caps (clients, per address), registered with its filter, fed through its own bounded
//! drop-oldest queue; a stream that falls behind ends with `RESOURCE_EXHAUSTED`, and every
//! stream ends with `UNAVAILABLE` "draining; reconnect" when the gateway stops.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use spreadagg_model::ExchangeId;
use tonic::{Request, Response, Status};

use crate::AppState;
use crate::auth::Tokens;
use crate::hub::Hub;
use crate::hub::event::{Channel, Event, Payload};
use crate::hub::filter::{Filter, SymbolPattern, VenuePattern};
use crate::hub::queue::{ClientQueue, CloseCause, Outgoing};
use crate::hub::registry::{SubscribeError, Subscriber};
use crate::limits::{Permit, Refused};
use crate::pair::Pair;

/// The generated code (messages, server and client) and the descriptor set reflection serves.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("spreadagg.gateway.v1");

    /// Every file of the API, encoded, for server reflection.
    pub const DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/gateway_descriptor.bin"));
}

use pb::gateway_server::{Gateway, GatewayServer};

/// The service.
#[derive(Clone)]
pub(crate) struct Service {
    app: AppState,
}

impl Service {
    pub(crate) fn server(app: AppState) -> GatewayServer<Service> {
        GatewayServer::new(Service { app }).max_decoding_message_size(64 * 1024)
    }
}

fn invalid(message: impl Into<String>) -> Status {
    let message = message.into();
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "grpc_invalid_argument")
        .increment(1);
    Status::invalid_argument(message)
}

/// Builds the hub filter of a request; the same rules as `/ws` (docs/gateway-grpc.md).
fn filter(req: &pb::SubscribeRequest) -> Result<Filter, Status> {
    let (channel, chart) = match pb::Channel::try_from(req.channel) {
        Ok(pb::Channel::Spreads) => (Channel::Spreads, false),
        Ok(pb::Channel::Charts) => (Channel::Spreads, true),
        Ok(pb::Channel::Ticks) => (Channel::Ticks, false),
        Ok(pb::Channel::Trades) => (Channel::Trades, false),
        Ok(pb::Channel::Signals) => (Channel::Signals, false),
        Ok(pb::Channel::Unspecified) | Err(_) => {
            return Err(invalid(
                "channel must be SPREADS, TICKS, TRADES, SIGNALS or CHARTS",
            ));
        }
    };
    let symbol = SymbolPattern::parse(&req.symbol).map_err(|e| invalid(e.to_string()))?;
    let exchange = |s: &str| -> Result<Option<ExchangeId>, Status> {
        if s == "*" {
            return Ok(None);
        }
        s.parse::<ExchangeId>().map(Some).map_err(|_| {
            let shown: String = s.chars().take(32).collect();
            invalid(format!("unknown exchange {shown:?}"))
        })
    };
    let venue = match (channel, req.exchanges.as_slice()) {
        (_, []) => VenuePattern::Any,
        (Channel::Spreads, [x, y]) => match (exchange(x)?, exchange(y)?) {
            (None, None) => VenuePattern::Any,
            (Some(x), None) | (None, Some(x)) => VenuePattern::Exchange(x),
            (Some(x), Some(y)) => VenuePattern::Pair(
                Pair::new(x, y)
                    .ok_or_else(|| invalid("exchanges must name two different exchanges"))?,
            ),
        },
        (Channel::Ticks | Channel::Trades, [x]) => match exchange(x)? {
            None => VenuePattern::Any,
            Some(x) => VenuePattern::Exchange(x),
        },
        (Channel::Spreads, _) => {
            return Err(invalid(
                "spreads and charts take two exchanges (a pair, \"*\" for any) or none",
            ));
        }
        (Channel::Ticks | Channel::Trades, _) => {
            return Err(invalid("ticks and trades take at most one exchange"));
        }
        (Channel::Signals, _) => return Err(invalid("signals take no exchanges")),
    };
    if chart && (symbol.exact().is_none() || !matches!(venue, VenuePattern::Pair(_))) {
        return Err(invalid("charts need one symbol and one exchange pair"));
    }
    Ok(Filter {
        channel,
        symbol,
        venue,
        chart,
    })
}

/// The protobuf event of a hub event.
fn event(e: &Event) -> pb::Event {
    use pb::event::Kind;
    let kind = match &e.payload {
        Payload::Spread(s) => Kind::Spread(s.clone()),
        Payload::Tick(t) => Kind::Tick(t.clone()),
        Payload::Trade(t) => Kind::Trade(t.clone()),
        Payload::Signal(s) => Kind::Signal(s.clone()),
    };
    pb::Event { kind: Some(kind) }
}

fn refused(r: Refused) -> Status {
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => r.reason()).increment(1);
    Status::resource_exhausted(r.to_string())
}

/// What a subscription stream holds; gives its place and subscriptions back when dropped.
struct Held {
    hub: Arc<Hub>,
    sub: Option<Subscriber>,
    _permit: Permit,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.take() {
            self.hub.registry.remove(sub);
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

fn end_status(cause: Option<CloseCause>) -> Option<Status> {
    match cause {
        Some(CloseCause::Drain) | None => Some(Status::unavailable("draining; reconnect")),
        Some(CloseCause::TooSlow) => Some(Status::resource_exhausted("too slow")),
        Some(CloseCause::ClientClosed | CloseCause::Gone) => None,
        Some(other) => Some(Status::aborted(other.as_str())),
    }
}

/// Moves one stream's events from its queue to tonic, in a task the gateway tracks. tonic
/// polls a response stream only while the client takes data (HTTP/2 flow control), so the
/// pump, not tonic, owns the client's place: a message that cannot be handed over within the
/// send deadline closes the stream as too slow, and its place and subscriptions go back at
/// once, however long the connection itself lingers.
async fn pump(
    held: Held,
    queue: Arc<ClientQueue>,
    first: Vec<pb::Event>,
    out: tokio::sync::mpsc::Sender<Result<pb::Event, Status>>,
    deadline: std::time::Duration,
) {
    let hand_over = |item| out.send_timeout(item, deadline);
    for e in first {
        if hand_over(Ok(e)).await.is_err() {
            queue.close(CloseCause::TooSlow);
            held.hub.registry.stats.too_slow();
            return;
        }
    }
    loop {
        let item = match queue.pop().await {
            Some(Outgoing::Event(e)) => Ok(event(&e)),
            Some(Outgoing::Reply(_)) => continue,
            None => match end_status(queue.close_cause()) {
                Some(status) => {
                    // Best effort: a client that does not read will not see it.
                    let _ = hand_over(Err(status)).await;
                    return;
                }
                None => return,
            },
        };
        match hand_over(item).await {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                if queue.close(CloseCause::TooSlow) {
                    held.hub.registry.stats.too_slow();
                }
                let _ = out.try_send(Err(Status::resource_exhausted("too slow")));
                return;
            }
            // The client went away (tonic dropped the stream).
            Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => {
                queue.close(CloseCause::Gone);
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Gateway for Service {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let app = &self.app;
        if app.stop.is_cancelled() {
            return Err(Status::unavailable("draining; reconnect"));
        }
        let peer = request
            .remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let req = request.into_inner();
        let filter = filter(&req)?;
        if let Some(symbol) = filter.symbol.exact()
            && app.started.elapsed() > app.symbol_warmup
            && !app.hub.latest.knows(symbol)
        {
            return Err(Status::not_found(format!(
                "{symbol} has not been seen on the feed"
            )));
        }
        let permit = app.admission.admit(peer.ip()).map_err(refused)?;
        let queue = Arc::new(ClientQueue::new(app.queue_limits));
        let mut sub = app
            .hub
            .registry
            .register(Arc::clone(&queue))
            .map_err(|_| Status::unavailable("draining; reconnect"))?;
        match app.hub.registry.subscribe(&mut sub, &filter) {
            Ok(_) => {}
            Err(e @ SubscribeError::TooMany(_)) => {
                return Err(Status::resource_exhausted(e.to_string()));
            }
        }
        let held = Held {
            hub: Arc::clone(&app.hub),
            sub: Some(sub),
            _permit: permit,
        };
        let mut first = Vec::new();
        if req.snapshot {
            let truncated = if filter.chart {
                if let (Some(symbol), VenuePattern::Pair(pair)) =
                    (filter.symbol.exact(), filter.venue)
                {
                    let fetched = tokio::select! {
                        fetched = app.charts.fetch(symbol, pair) => fetched,
                        () = app.stop.cancelled() => {
                            return Err(Status::unavailable("draining; reconnect"));
                        }
                    };
                    match fetched {
                        Ok(chart) => first.push(pb::Event {
                            kind: Some(pb::event::Kind::Chart((*chart).clone())),
                        }),
                        Err(e) => return Err(Status::unavailable(e.to_string())),
                    }
                }
                false
            } else {
                let snap = app.hub.latest.snapshot(
                    &filter,
                    app.config.max_snapshot_items,
                    spreadagg_model::time::now_ns(),
                );
                first.extend(snap.events.iter().map(|e| event(e)));
                snap.truncated
            };
            first.push(pb::Event {
                kind: Some(pb::event::Kind::SnapshotEnd(pb::SnapshotEnd { truncated })),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let deadline = std::time::Duration::from_millis(app.config.max_client_lag_ms);
        app.tracker.spawn(pump(held, queue, first, tx, deadline));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let filter = filter(request.get_ref())?;
        if filter.chart {
            return Err(invalid("use GetChart for a chart window"));
        }
        let snap = self.app.hub.latest.snapshot(
            &filter,
            self.app.config.max_snapshot_items,
            spreadagg_model::time::now_ns(),
        );
        Ok(Response::new(pb::SnapshotReply {
            items: snap.events.iter().map(|e| event(e)).collect(),
            truncated: snap.truncated,
        }))
    }

    async fn get_chart(
        &self,
        request: Request<pb::ChartRequest>,
    ) -> Result<Response<spreadagg_model::wire::ChartSnapshot>, Status> {
        let req = request.into_inner();
        let symbol: spreadagg_model::Symbol = req
            .symbol
            .parse()
            .map_err(|e: spreadagg_model::symbol::InvalidSymbol| invalid(e.to_string()))?;
        let pair = Pair::parse(&req.exchange_a, &req.exchange_b).ok_or_else(|| {
            invalid("exchange_a and exchange_b must be two different exchange ids")
        })?;
        match self.app.charts.fetch(&symbol, pair).await {
            Ok(chart) => Ok(Response::new((*chart).clone())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn get_exchanges(
        &self,
        _request: Request<pb::ExchangesRequest>,
    ) -> Result<Response<pb::ExchangesReply>, Status> {
        let exchanges = self
            .app
            .hub
            .latest
            .exchanges(std::time::Instant::now())
            .into_iter()
            .map(|h| pb::ExchangeState {
                exchange: h.exchange.as_str().to_owned(),
                state: h.state.to_owned(),
                last_tick_age_ms: h.last_tick_age_ms,
                ticks_per_s: h.ticks_per_s,
                ticks_total: h.ticks_total,
                trades_total: h.trades_total,
                symbols: h.symbols as u64,
            })
            .collect();
        Ok(Response::new(pb::ExchangesReply { exchanges }))
    }
}

/// Serves the API, reflection and health on `listener` until `stop`; health turns
/// `NOT_SERVING` at once on stop, streams end as their queues close, and the server is given
/// up to two seconds to finish.
///
/// # Errors
/// When the server fails.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    tokens: Tokens,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), crate::GatewayError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GatewayServer<Service>>().await;
    // Both reflection versions: v1, and v1alpha, which many clients (older grpcurl, Python's
    // grpcio-reflection) still ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| {
        crate::GatewayError::Config(format!("gRPC reflection: {e}"))
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(reflection_error)?
        .max_decoding_message_size(GRPC_MAX_REQUEST);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(reflection_error)?
        .max_decoding_message_size(GRPC_MAX_REQUEST);
    let guard = move |request: Request<()>| check_token(&tokens, request);
    use tonic::service::interceptor::InterceptedService;
    let api = InterceptedService::new(Service::server(app), guard.clone());
    let reflection_v1 = InterceptedService::new(reflection_v1, guard.clone());
    let reflection_v1alpha = InterceptedService::new(reflection_v1alpha, guard);
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway gRPC listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let shutdown = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            reporter.set_not_serving::<GatewayServer<Service>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    let health = health.max_decoding_message_size(GRPC_MAX_REQUEST);
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .concurrency_limit_per_connection(GRPC_CALLS_PER_CONNECTION)
        .max_concurrent_streams(Some(GRPC_STREAMS_PER_CONNECTION))
        .timeout(GRPC_UNARY_TIMEOUT)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::select! {
        served = server => served.map_err(|e| crate::GatewayError::Serve(std::io::Error::other(e))),
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(GRPC_DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("gRPC calls still open after the drain timeout; not waiting");
            Ok(())
        }
    }
}

const GRPC_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Unary calls in progress per connection (a stream counts until its first answer) ...
const GRPC_CALLS_PER_CONNECTION: usize = 32;
/// ... and HTTP/2 streams open per connection, subscriptions included.
const GRPC_STREAMS_PER_CONNECTION: u32 = 32;
/// A call's answer (a unary reply, a stream's first message) within this long.
const GRPC_UNARY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest request of any service.
const GRPC_MAX_REQUEST: usize = 64 * 1024;
const GRPC_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The interceptor: with tokens configured, `authorization: Bearer <token>` is required.
fn check_token(tokens: &Tokens, request: Request<()>) -> Result<Request<()>, Status> {
    if !tokens.enabled() {
        return Ok(request);
    }
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|t| tokens.allows(t)) {
        Ok(request)
    } else {
        metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "unauthenticated")
            .increment(1);
        Err(Status::unauthenticated("a valid bearer token is required"))
    }
}
