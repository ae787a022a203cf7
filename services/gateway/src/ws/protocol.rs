//! The protocol of `GET /ws`: the JSON text frames a client sends and the frames the gateway
//! answers with (docs/gateway-websocket.md is the user-facing description).
//!
//! Parsing is two steps, as in mini-redis: serde reads a frame into a loose shape
//! ([`RawRequest`]), then validation builds a typed [`Request`] or a [`Rejection`] that carries
//! the error code the client sees. Nothing here panics on input; every failure is a value.
//!
//! Example frames:
//! ```text
//! -> {"op":"subscribe","channel":"spreads","symbol":"BTC-USDT","id":1}
//! <- {"type":"subscribed","channel":"spreads","symbol":"BTC-USDT","exchanges":null,"id":1}
//! <- {"type":"snapshot","channel":"spreads","symbol":"BTC-USDT","exchanges":null,"truncated":false,"id":1,"items":[...]}
//! -> {"op":"subscribe","channel":"ticks","symbol":"*-USDT","exchange":"okx"}
//! -> {"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["okx","binance"]}
//! -> {"op":"ping"}
//! <- {"type":"pong"}
//! -> {"op":"dance"}
//! <- {"type":"error","code":"unknown_op","message":"unknown op \"dance\" (subscribe, unsubscribe, ping)"}
//! ```

use serde::{Deserialize, Serialize};
use spreadagg_model::ExchangeId;

use crate::hub::event::Channel;
use crate::hub::filter::{Filter, SymbolPattern, VenuePattern};
use crate::pair::Pair;

/// Longest request id string echoed back; longer ones are refused rather than stored.
pub const MAX_ID_LEN: usize = 64;

/// The client's optional `"id"`, echoed back verbatim on the answer: a string of at most
/// [`MAX_ID_LEN`] bytes or an integer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RequestId(serde_json::Value);

/// A subscription as the client asked for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscription {
    pub(crate) filter: Filter,
    /// Send a snapshot first (latest values, or the chart window).
    pub(crate) snapshot: bool,
}

/// A validated client request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Subscribe(Subscription),
    Unsubscribe(Filter),
    Ping,
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) id: Option<RequestId>,
    pub(crate) request: Request,
}

/// The `code` of an error frame. The set is part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a missing, unknown or malformed field, an unknown exchange, a binary frame.
    BadRequest,
    /// `op` is none of `subscribe`, `unsubscribe`, `ping`.
    UnknownOp,
    /// The symbol is not canonical `BASE-QUOTE` upper case, nor `BASE-*`, `*-QUOTE`, `*`.
    InvalidSymbol,
    /// The symbol has not been seen on the feed (once the gateway has been up a while).
    UnknownSymbol,
    /// The client already holds `max_subscriptions_per_client` subscriptions.
    TooManySubscriptions,
    /// More requests than `requests_per_s` allows (after a burst of `request_burst`).
    RateLimited,
    /// The engine did not answer for the chart window; the live subscription stands.
    ChartUnavailable,
}

impl ErrorCode {
    /// The wire spelling, also the `reason` label of `spreadagg_gateway_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ChartUnavailable => "chart_unavailable",
        }
    }
}

/// A refused request: what the client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// The request's id when the frame was readable enough to have one.
    pub id: Option<RequestId>,
}

impl Rejection {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>, id: Option<RequestId>) -> Self {
        Self {
            code,
            message: message.into(),
            id,
        }
    }
}

/// The loose shape of a client frame, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    op: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    exchanges: Option<Vec<String>>,
    #[serde(default)]
    exchange: Option<String>,
    #[serde(default)]
    snapshot: Option<bool>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// The channels a client may name.
const CHANNELS: &str = "spreads, ticks, trades, signals, charts";

/// Parses and validates one client text frame.
///
/// # Errors
/// A [`Rejection`] with the code and message to send back.
pub(crate) fn parse_request(text: &str) -> Result<Envelope, Rejection> {
    let mut raw: RawRequest = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            ErrorCode::BadRequest,
            format!(
                "expected a JSON object like {{\"op\":\"subscribe\",\"channel\":\"spreads\",\"symbol\":\"BTC-USDT\"}}: {e}"
            ),
            None,
        )
    })?;
    let id = match raw.id.take() {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::String(_))
            if v.as_str().is_some_and(|s| s.len() <= MAX_ID_LEN) =>
        {
            Some(RequestId(v))
        }
        Some(v @ serde_json::Value::Number(_)) if v.is_i64() || v.is_u64() => Some(RequestId(v)),
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::BadRequest,
                format!("id must be an integer or a string of at most {MAX_ID_LEN} bytes"),
                None,
            ));
        }
    };
    let bad = |message: String| Rejection::new(ErrorCode::BadRequest, message, id.clone());
    let request = match raw.op.as_str() {
        "subscribe" | "unsubscribe" => {
            let filter = filter(&raw, &id)?;
            if raw.op == "subscribe" {
                Request::Subscribe(Subscription {
                    filter,
                    snapshot: raw.snapshot.unwrap_or(true),
                })
            } else {
                if raw.snapshot.is_some() {
                    return Err(bad("unsubscribe takes no snapshot".into()));
                }
                Request::Unsubscribe(filter)
            }
        }
        "ping" => {
            if raw.channel.is_some()
                || raw.symbol.is_some()
                || raw.exchanges.is_some()
                || raw.exchange.is_some()
                || raw.snapshot.is_some()
            {
                return Err(bad("ping takes no other fields than id".into()));
            }
            Request::Ping
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(Rejection::new(
                ErrorCode::UnknownOp,
                format!("unknown op {shown:?} (subscribe, unsubscribe, ping)"),
                id,
            ));
        }
    };
    Ok(Envelope { id, request })
}

fn filter(raw: &RawRequest, id: &Option<RequestId>) -> Result<Filter, Rejection> {
    let bad = |message: &str| Rejection::new(ErrorCode::BadRequest, message, id.clone());
    let (channel, chart) = match raw.channel.as_deref() {
        None | Some("spreads") => (Channel::Spreads, false),
        Some("charts") => (Channel::Spreads, true),
        Some("ticks") => (Channel::Ticks, false),
        Some("trades") => (Channel::Trades, false),
        Some("signals") => (Channel::Signals, false),
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(&format!("unknown channel {shown:?} ({CHANNELS})")));
        }
    };
    let Some(symbol) = raw.symbol.as_deref() else {
        return Err(bad("symbol is required (BTC-USDT, BTC-*, *-USDT or *)"));
    };
    let symbol = SymbolPattern::parse(symbol)
        .map_err(|e| Rejection::new(ErrorCode::InvalidSymbol, e.to_string(), id.clone()))?;
    let exchange = |s: &str| -> Result<Option<ExchangeId>, Rejection> {
        if s == "*" {
            return Ok(None);
        }
        s.parse::<ExchangeId>().map(Some).map_err(|_| {
            let shown: String = s.chars().take(32).collect();
            Rejection::new(
                ErrorCode::BadRequest,
                format!("unknown exchange {shown:?}"),
                id.clone(),
            )
        })
    };
    let venue = match channel {
        Channel::Spreads => {
            if raw.exchange.is_some() {
                return Err(bad(
                    "spreads and charts take \"exchanges\" (a pair), not \"exchange\"",
                ));
            }
            match raw.exchanges.as_deref() {
                None => VenuePattern::Any,
                Some([x, y]) => match (exchange(x)?, exchange(y)?) {
                    (None, None) => VenuePattern::Any,
                    (Some(x), None) | (None, Some(x)) => VenuePattern::Exchange(x),
                    (Some(x), Some(y)) => VenuePattern::Pair(
                        Pair::new(x, y)
                            .ok_or_else(|| bad("exchanges must name two different exchanges"))?,
                    ),
                },
                Some(_) => {
                    return Err(bad(
                        "exchanges must list exactly two exchange ids or \"*\", or be left out",
                    ));
                }
            }
        }
        Channel::Ticks | Channel::Trades => {
            if raw.exchanges.is_some() {
                return Err(bad(
                    "ticks and trades take \"exchange\" (one id or \"*\"), not \"exchanges\"",
                ));
            }
            match raw.exchange.as_deref().map(exchange).transpose()?.flatten() {
                None => VenuePattern::Any,
                Some(x) => VenuePattern::Exchange(x),
            }
        }
        Channel::Signals => {
            if raw.exchange.is_some() || raw.exchanges.is_some() {
                return Err(bad("signals are per symbol and take no exchanges"));
            }
            VenuePattern::Any
        }
    };
    if chart && (symbol.exact().is_none() || !matches!(venue, VenuePattern::Pair(_))) {
        return Err(bad(
            "charts need one symbol and one pair: {\"channel\":\"charts\",\"symbol\":\"BTC-USDT\",\"exchanges\":[\"binance\",\"okx\"]}",
        ));
    }
    Ok(Filter {
        channel,
        symbol,
        venue,
        chart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(text: &str) -> Envelope {
        parse_request(text).unwrap_or_else(|e| panic!("{text}: rejected: {e}"))
    }

    fn sub_filter(text: &str) -> Filter {
        match parse(text).request {
            Request::Subscribe(s) => s.filter,
            other => panic!("{text}: not a subscribe: {other:?}"),
        }
    }

    use crate::ws::reply::Echo;

    fn echo(f: &Filter) -> Value {
        serde_json::to_value(Echo::of(f)).expect("json")
    }

    #[test]
    fn valid_requests_parse_and_echo_canonically() {
        let cases = [
            (
                r#"{"op":"subscribe","symbol":"BTC-USDT"}"#,
                json!({"channel":"spreads","symbol":"BTC-USDT","exchanges":null}),
            ),
            (
                r#"{"op":"subscribe","channel":"spreads","symbol":"BTC-USDT","exchanges":["okx","binance"]}"#,
                json!({"channel":"spreads","symbol":"BTC-USDT","exchanges":["binance","okx"]}),
            ),
            (
                r#"{"op":"subscribe","symbol":"*-USDT","exchanges":["*","okx"]}"#,
                json!({"channel":"spreads","symbol":"*-USDT","exchanges":["okx","*"]}),
            ),
            (
                r#"{"op":"subscribe","symbol":"BTC-*","exchanges":["*","*"]}"#,
                json!({"channel":"spreads","symbol":"BTC-*","exchanges":null}),
            ),
            (
                r#"{"op":"subscribe","channel":"ticks","symbol":"*","exchange":"kraken"}"#,
                json!({"channel":"ticks","symbol":"*","exchange":"kraken"}),
            ),
            (
                r#"{"op":"subscribe","channel":"trades","symbol":"ETH-USDC","exchange":"*"}"#,
                json!({"channel":"trades","symbol":"ETH-USDC","exchange":null}),
            ),
            (
                r#"{"op":"subscribe","channel":"signals","symbol":"*","snapshot":false}"#,
                json!({"channel":"signals","symbol":"*"}),
            ),
            (
                r#"{"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["okx","bybit"]}"#,
                json!({"channel":"charts","symbol":"BTC-USDT","exchanges":["bybit","okx"]}),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(echo(&sub_filter(text)), expected, "{text}");
        }
        assert!(matches!(
            parse(r#"{"op":"subscribe","channel":"signals","symbol":"*","snapshot":false}"#)
                .request,
            Request::Subscribe(Subscription {
                snapshot: false,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"op":"subscribe","symbol":"*"}"#).request,
            Request::Subscribe(Subscription { snapshot: true, .. })
        ));
        let env = parse(r#"{"op":"unsubscribe","symbol":"ETH-USDC","id":7}"#);
        assert!(matches!(env.request, Request::Unsubscribe(_)));
        assert_eq!(env.id.map(|i| i.0), Some(json!(7)));
        let env = parse(r#"{"op":"ping","id":"abc"}"#);
        assert_eq!(env.request, Request::Ping);
        assert_eq!(env.id.map(|i| i.0), Some(json!("abc")));
        assert_eq!(parse(r#"{"op":"ping","id":null}"#).id, None);
        assert_ne!(
            sub_filter(
                r#"{"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["okx","bybit"]}"#
            ),
            sub_filter(
                r#"{"op":"subscribe","channel":"spreads","symbol":"BTC-USDT","exchanges":["okx","bybit"]}"#
            ),
            "a chart and a spreads subscription of one pair are separate"
        );
    }

    #[test]
    fn invalid_requests_are_rejected_with_their_code() {
        use ErrorCode::{BadRequest, InvalidSymbol, UnknownOp};
        let long_id = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1));
        let cases: Vec<(&str, &str, ErrorCode)> = vec![
            ("not json", "hello", BadRequest),
            ("empty", "", BadRequest),
            ("json array", "[1,2]", BadRequest),
            ("missing op", r#"{"symbol":"BTC-USDT"}"#, BadRequest),
            ("op not a string", r#"{"op":1}"#, BadRequest),
            ("unknown field", r#"{"op":"ping","extra":1}"#, BadRequest),
            ("unknown op", r#"{"op":"dance"}"#, UnknownOp),
            (
                "op is case-sensitive",
                r#"{"op":"SUBSCRIBE","symbol":"BTC-USDT"}"#,
                UnknownOp,
            ),
            ("missing symbol", r#"{"op":"subscribe"}"#, BadRequest),
            (
                "unknown channel",
                r#"{"op":"subscribe","channel":"news","symbol":"*"}"#,
                BadRequest,
            ),
            (
                "lower-case symbol",
                r#"{"op":"subscribe","symbol":"btc-usdt"}"#,
                InvalidSymbol,
            ),
            (
                "exchange spelling",
                r#"{"op":"subscribe","symbol":"BTCUSDT"}"#,
                InvalidSymbol,
            ),
            (
                "nats wildcard",
                r#"{"op":"subscribe","symbol":"BTC-USDT>"}"#,
                InvalidSymbol,
            ),
            (
                "partial wildcard",
                r#"{"op":"subscribe","symbol":"BT*-USDT"}"#,
                InvalidSymbol,
            ),
            (
                "one exchange",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx"]}"#,
                BadRequest,
            ),
            (
                "three exchanges",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","binance","bybit"]}"#,
                BadRequest,
            ),
            (
                "empty exchanges",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":[]}"#,
                BadRequest,
            ),
            (
                "same exchange twice",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","okx"]}"#,
                BadRequest,
            ),
            (
                "unknown exchange",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","ftx"]}"#,
                BadRequest,
            ),
            (
                "exchange ids are lower case",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["OKX","binance"]}"#,
                BadRequest,
            ),
            (
                "spreads with exchange",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchange":"okx"}"#,
                BadRequest,
            ),
            (
                "ticks with exchanges",
                r#"{"op":"subscribe","channel":"ticks","symbol":"BTC-USDT","exchanges":["okx","binance"]}"#,
                BadRequest,
            ),
            (
                "ticks unknown exchange",
                r#"{"op":"subscribe","channel":"ticks","symbol":"BTC-USDT","exchange":"ftx"}"#,
                BadRequest,
            ),
            (
                "signals with exchange",
                r#"{"op":"subscribe","channel":"signals","symbol":"*","exchange":"okx"}"#,
                BadRequest,
            ),
            (
                "chart of a wildcard",
                r#"{"op":"subscribe","channel":"charts","symbol":"*","exchanges":["okx","binance"]}"#,
                BadRequest,
            ),
            (
                "chart without a pair",
                r#"{"op":"subscribe","channel":"charts","symbol":"BTC-USDT","exchanges":["okx","*"]}"#,
                BadRequest,
            ),
            (
                "snapshot on unsubscribe",
                r#"{"op":"unsubscribe","symbol":"BTC-USDT","snapshot":true}"#,
                BadRequest,
            ),
            (
                "snapshot not a bool",
                r#"{"op":"subscribe","symbol":"BTC-USDT","snapshot":1}"#,
                BadRequest,
            ),
            (
                "ping with a symbol",
                r#"{"op":"ping","symbol":"BTC-USDT"}"#,
                BadRequest,
            ),
            ("fractional id", r#"{"op":"ping","id":1.5}"#, BadRequest),
            ("object id", r#"{"op":"ping","id":{}}"#, BadRequest),
            ("long id", &long_id, BadRequest),
        ];
        for (name, text, code) in cases {
            match parse_request(text) {
                Ok(env) => panic!("{name}: accepted as {env:?}"),
                Err(r) => {
                    assert_eq!(r.code, code, "{name}: {r}");
                    assert!(!r.message.is_empty(), "{name}");
                }
            }
        }
    }

    #[test]
    fn rejections_echo_the_id_when_there_is_one() {
        let r = parse_request(r#"{"op":"subscribe","symbol":"nope","id":"q1"}"#)
            .expect_err("invalid symbol");
        let frame: Value = serde_json::from_str(&r.to_frame()).expect("json");
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["code"], "invalid_symbol");
        assert_eq!(frame["id"], "q1");
        let r = parse_request("{").expect_err("bad json");
        let frame: Value = serde_json::from_str(&r.to_frame()).expect("json");
        assert_eq!(frame["code"], "bad_request");
        assert!(frame.get("id").is_none());
    }
}
