//! OKX's REST API: instruments, tickers, one ticker and server time.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::wire::okx_ticker;
use crate::format::step;
use crate::market::{Instrument, Quote, now_us};
use crate::ws::ExchangeCtx;

pub(super) type Params = Query<HashMap<String, String>>;

/// OKX's REST error: `{"code":"51000","msg":"Parameter instType error","data":[]}` with the
/// HTTP status OKX documents for the code.
#[derive(Debug, Clone, Copy)]
pub(super) struct RestError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) msg: &'static str,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "msg": self.msg, "data": []})),
        )
            .into_response()
    }
}

pub(super) fn rest_error(status: StatusCode, code: &'static str, msg: &'static str) -> Response {
    RestError { status, code, msg }.into_response()
}

pub(super) fn rest_ok(data: Vec<Value>) -> Response {
    Json(json!({"code": "0", "msg": "", "data": data})).into_response()
}

/// `instType`: required; `SPOT` is what we simulate, the other real types list nothing.
pub(super) fn spot_requested(q: &HashMap<String, String>) -> Result<bool, RestError> {
    match q.get("instType").map(String::as_str) {
        None | Some("") => Err(RestError {
            status: StatusCode::BAD_REQUEST,
            code: "50014",
            msg: "Parameter instType can not be empty.",
        }),
        Some("SPOT") => Ok(true),
        Some("MARGIN" | "SWAP" | "FUTURES" | "OPTION" | "EVENTS") => Ok(false),
        Some(_) => Err(RestError {
            status: StatusCode::BAD_REQUEST,
            code: "51000",
            msg: "Parameter instType error",
        }),
    }
}

pub(super) fn no_such_instrument() -> Response {
    rest_error(
        StatusCode::OK,
        "51001",
        "Instrument ID, Instrument ID code or Spread ID doesn't exist.",
    )
}

pub(super) fn instrument_json(i: usize, inst: &Instrument) -> Value {
    let lot = step(inst.qty_decimals);
    json!({
        "instType": "SPOT",
        "instId": inst.symbol.as_str(),
        "uly": "",
        "instFamily": "",
        "baseCcy": inst.symbol.base(),
        "quoteCcy": inst.symbol.quote(),
        "settleCcy": "",
        "ctVal": "",
        "ctMult": "",
        "ctValCcy": "",
        "ctType": "",
        "optType": "",
        "stk": "",
        "alias": "",
        "category": "1",
        "groupId": "1",
        "listTime": "1606468572000",
        "auctionEndTime": "",
        "contTdSwTime": "",
        "preMktSwTime": "",
        "openType": "",
        "expTime": "",
        "lever": "",
        "tickSz": step(inst.price_decimals),
        "lotSz": lot,
        "minSz": lot,
        "state": "live",
        "ruleType": "normal",
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "maxLmtAmt": "20000000",
        "maxMktAmt": "1000000",
        "maxTwapSz": "9999999999",
        "maxIcebergSz": "9999999999",
        "maxTriggerSz": "9999999999",
        "maxStopSz": "1000000",
        "futureSettlement": false,
        "tradeQuoteCcyList": [inst.symbol.quote()],
        "instIdCode": 1_000_000_000_u64 + i as u64,
        "instCategory": "1",
        "upcChg": [],
    })
}

pub(super) async fn instruments(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(e) => return e.into_response(),
    };
    if !spot {
        return rest_ok(Vec::new());
    }
    let u = &ctx.universe;
    match q.get("instId") {
        Some(id) => match u.by_canonical(id) {
            Some(i) => rest_ok(vec![instrument_json(i, &u.instruments[i])]),
            None => no_such_instrument(),
        },
        None => rest_ok(
            u.instruments
                .iter()
                .enumerate()
                .map(|(i, inst)| instrument_json(i, inst))
                .collect(),
        ),
    }
}

pub(super) fn ticker_json(inst: &Instrument, q: &Quote) -> Value {
    serde_json::to_value(okx_ticker(inst, q)).unwrap_or(Value::Null)
}

pub(super) async fn tickers(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let spot = match spot_requested(&q) {
        Ok(spot) => spot,
        Err(e) => return e.into_response(),
    };
    if !spot {
        return rest_ok(Vec::new());
    }
    let views = ctx.board.exchange(ctx.index);
    let data = ctx
        .universe
        .instruments
        .iter()
        .zip(&views)
        .map(|(inst, view)| ticker_json(inst, &view.quote))
        .collect();
    rest_ok(data)
}

pub(super) async fn ticker_one(State(ctx): State<Arc<ExchangeCtx>>, Query(q): Params) -> Response {
    let Some(id) = q.get("instId").filter(|s| !s.is_empty()) else {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "50014",
            "Parameter instId can not be empty.",
        );
    };
    let Some(i) = ctx.universe.by_canonical(id) else {
        return no_such_instrument();
    };
    match ctx.board.get(ctx.index, i) {
        Some(view) => rest_ok(vec![ticker_json(&ctx.universe.instruments[i], &view.quote)]),
        None => no_such_instrument(),
    }
}

pub(super) async fn rest_time() -> Response {
    rest_ok(vec![json!({"ts": (now_us() / 1_000).to_string()})])
}
