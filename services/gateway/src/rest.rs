//! The REST API under `/api`, with its OpenAPI 3 document generated from these handlers and
//! their types by utoipa (`GET /openapi.json`; browsable at `GET /docs`).
//!
//! Every answer is read from the hub's latest values (bounded, sharded; see
//! `hub::latest`) except charts, which the engine owns and answers over the bus.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spreadagg_model::Symbol;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::hub::event::{Channel, Payload};
use crate::hub::filter::{Filter, SymbolPattern, VenuePattern};
use crate::hub::latest::{ExchangeHealth, WIDEST_MAX};
use crate::json::{ChartJson, SignalJson, SpreadJson, TickJson};
use crate::pair::Pair;

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiError {
    /// `bad_request`, `unknown_symbol` or `chart_unavailable`.
    code: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            code,
            message: message.into(),
        }),
    )
        .into_response()
}

/// A query string, or why it does not parse (answered as an [`ApiError`], not axum's text).
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn bad_query(e: &axum::extract::rejection::QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

/// Serialises an answer that borrows from the hub's events (axum's `Json` needs owned data).
fn json_body<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Symbols seen on the feed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SymbolList {
    /// Sorted.
    symbols: Vec<String>,
    /// At most this many are kept (`max_symbols`).
    limit: usize,
}

/// `GET /api/symbols`.
#[utoipa::path(get, path = "/api/symbols", tag = "market",
    responses((status = 200, description = "Every symbol seen on the feed since the gateway started", body = SymbolList)))]
pub(crate) async fn symbols(State(app): State<AppState>) -> Json<SymbolList> {
    Json(SymbolList {
        symbols: app
            .hub
            .latest
            .symbols()
            .iter()
            .map(ToString::to_string)
            .collect(),
        limit: app.config.max_symbols,
    })
}

/// Which latest values: a symbol pattern and an exchange.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestQuery {
    /// `BTC-USDT`, `BTC-*`, `*-USDT` or `*` (the default).
    symbol: Option<String>,
    /// Only values involving this exchange (a spread pair containing it, its ticks).
    exchange: Option<String>,
}

impl LatestQuery {
    /// The filter, or why the query is bad.
    fn filter(&self, channel: Channel) -> Result<Filter, String> {
        let symbol = SymbolPattern::parse(self.symbol.as_deref().unwrap_or("*"))
            .map_err(|e| e.to_string())?;
        let venue = match self.exchange.as_deref() {
            None | Some("*") => VenuePattern::Any,
            Some(x) => VenuePattern::Exchange(x.parse().map_err(|_| {
                let shown: String = x.chars().take(32).collect();
                format!("unknown exchange {shown:?}")
            })?),
        };
        Ok(Filter {
            channel,
            symbol,
            venue,
            chart: false,
        })
    }
}

/// Latest spread points.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SpreadList<'a> {
    /// Sorted by symbol, then pair.
    items: Vec<SpreadJson<'a>>,
    /// More matched than `max_snapshot_items`; narrow the query.
    truncated: bool,
}

/// `GET /api/spreads`.
#[utoipa::path(get, path = "/api/spreads", tag = "market", params(LatestQuery),
    responses(
        (status = 200, description = "The latest point of every pair the query selects", body = SpreadList),
        (status = 400, description = "Bad symbol pattern or exchange", body = ApiError)))]
pub(crate) async fn spreads(State(app): State<AppState>, q: QueryOf<LatestQuery>) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    match q.filter(Channel::Spreads) {
        Ok(f) => spread_list(&app, &f),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", e),
    }
}

/// `GET /api/spreads/{symbol}`.
#[utoipa::path(get, path = "/api/spreads/{symbol}", tag = "market",
    params(("symbol" = String, Path, description = "Canonical symbol, e.g. BTC-USDT")),
    responses(
        (status = 200, description = "The latest point of every pair of the symbol", body = SpreadList),
        (status = 400, description = "Not a canonical symbol", body = ApiError),
        (status = 404, description = "Not seen on the feed", body = ApiError)))]
pub(crate) async fn symbol_spreads(
    State(app): State<AppState>,
    Path(symbol): Path<String>,
) -> Response {
    let symbol = match symbol.parse::<Symbol>() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if !app.hub.latest.knows(&symbol) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_symbol",
            format!("{symbol} has not been seen on the feed"),
        );
    }
    let f = Filter {
        channel: Channel::Spreads,
        symbol: SymbolPattern::Exact(symbol),
        venue: VenuePattern::Any,
        chart: false,
    };
    spread_list(&app, &f)
}

fn spread_list(app: &AppState, f: &Filter) -> Response {
    let snap = app.hub.latest.snapshot(f, app.config.max_snapshot_items, 0);
    let items = snap
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Spread(s) => Some(SpreadJson::from(s)),
            _ => None,
        })
        .collect();
    json_body(&SpreadList {
        items,
        truncated: snap.truncated,
    })
}

/// How many of the widest spreads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WidestQuery {
    /// 1 to 500; 25 when left out.
    limit: Option<usize>,
}

/// `GET /api/spreads/widest`.
#[utoipa::path(get, path = "/api/spreads/widest", tag = "market", params(WidestQuery),
    responses(
        (status = 200, description = "The latest points with the widest tradeable spread (the larger of a_to_b_pct and b_to_a_pct), widest first; refreshed at most twice a second", body = SpreadList),
        (status = 400, description = "limit out of range", body = ApiError)))]
pub(crate) async fn widest(State(app): State<AppState>, q: QueryOf<WidestQuery>) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    let limit = q.limit.unwrap_or(25);
    if !(1..=WIDEST_MAX).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be 1 to {WIDEST_MAX}"),
        );
    }
    let list = app.hub.latest.widest(std::time::Instant::now());
    let items = list
        .iter()
        .take(limit)
        .filter_map(|e| match &e.payload {
            Payload::Spread(s) => Some(SpreadJson::from(s)),
            _ => None,
        })
        .collect();
    json_body(&SpreadList {
        items,
        truncated: false,
    })
}

/// Latest best bid and ask per exchange.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TickList<'a> {
    /// Sorted by symbol, then exchange.
    items: Vec<TickJson<'a>>,
    truncated: bool,
}

/// `GET /api/ticks`.
#[utoipa::path(get, path = "/api/ticks", tag = "market", params(LatestQuery),
    responses(
        (status = 200, description = "The latest tick of every exchange and symbol the query selects", body = TickList),
        (status = 400, description = "Bad symbol pattern or exchange", body = ApiError)))]
pub(crate) async fn ticks(State(app): State<AppState>, q: QueryOf<LatestQuery>) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    let f = match q.filter(Channel::Ticks) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let snap = app
        .hub
        .latest
        .snapshot(&f, app.config.max_snapshot_items, 0);
    let items = snap
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Tick(t) => Some(TickJson::from(t)),
            _ => None,
        })
        .collect();
    json_body(&TickList {
        items,
        truncated: snap.truncated,
    })
}

/// Active signals.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SignalList<'a> {
    /// Entries not yet exited nor expired, by symbol.
    items: Vec<SignalJson<'a>>,
    truncated: bool,
}

/// `GET /api/signals`.
#[utoipa::path(get, path = "/api/signals", tag = "market",
    responses((status = 200, description = "Every active signal (one per symbol at most)", body = SignalList)))]
pub(crate) async fn signals(State(app): State<AppState>) -> Response {
    let f = Filter {
        channel: Channel::Signals,
        symbol: SymbolPattern::Any,
        venue: VenuePattern::Any,
        chart: false,
    };
    let now_ns = spreadagg_model::time::now_ns();
    let snap = app
        .hub
        .latest
        .snapshot(&f, app.config.max_snapshot_items, now_ns);
    let items = snap
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Signal(s) => Some(SignalJson::from(s)),
            _ => None,
        })
        .collect();
    json_body(&SignalList {
        items,
        truncated: snap.truncated,
    })
}

/// Each exchange as the gateway sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExchangeList {
    /// In the contract's order, every supported exchange.
    exchanges: Vec<ExchangeHealth>,
}

/// `GET /api/exchanges`.
#[utoipa::path(get, path = "/api/exchanges", tag = "market",
    responses((status = 200, description = "Every exchange's state, from the arrival of its ticks", body = ExchangeList)))]
pub(crate) async fn exchanges(State(app): State<AppState>) -> Json<ExchangeList> {
    Json(ExchangeList {
        exchanges: app.hub.latest.exchanges(std::time::Instant::now()),
    })
}

/// `GET /api/charts/{symbol}/{exchange_a}/{exchange_b}`.
#[utoipa::path(get, path = "/api/charts/{symbol}/{exchange_a}/{exchange_b}", tag = "market",
    params(
        ("symbol" = String, Path, description = "Canonical symbol, e.g. BTC-USDT"),
        ("exchange_a" = String, Path, description = "One exchange of the pair (either order)"),
        ("exchange_b" = String, Path, description = "The other exchange")),
    responses(
        (status = 200, description = "The pair's chart window from the engine, oldest first (empty when it has none)", body = ChartJson),
        (status = 400, description = "Bad symbol or pair", body = ApiError),
        (status = 503, description = "No engine answered in time", body = ApiError)))]
pub(crate) async fn chart(
    State(app): State<AppState>,
    Path((symbol, x, y)): Path<(String, String, String)>,
) -> Response {
    let Ok(symbol) = symbol.parse::<Symbol>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "symbol must be canonical BASE-QUOTE",
        );
    };
    let Some(pair) = Pair::parse(&x, &y) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "exchange_a and exchange_b must be two different exchange ids",
        );
    };
    match app.charts.fetch(&symbol, pair).await {
        Ok(c) => json_body(&ChartJson::from(&*c)),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "chart_unavailable",
            e.to_string(),
        ),
    }
}

/// The REST routes with their OpenAPI description.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(symbols))
        .routes(routes!(spreads))
        .routes(routes!(widest))
        .routes(routes!(symbol_spreads))
        .routes(routes!(ticks))
        .routes(routes!(signals))
        .routes(routes!(exchanges))
        .routes(routes!(chart))
}

/// The OpenAPI document's header: what this API is.
pub(crate) fn describe(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    api.info.title = "spread-aggregator gateway".into();
    api.info.description = Some(
        "Latest cross-exchange spreads, ticks, active signals, exchange health and chart windows. \
         Live streams are on the WebSocket at /ws (docs/gateway-websocket.md) and over gRPC."
            .into(),
    );
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api
}
