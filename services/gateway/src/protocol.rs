//! The WebSocket protocol of `GET /ws`: the JSON text frames a client sends and the frames the
//! gateway answers with (docs/gateway-websocket.md is the user-facing description).
//!
//! Parsing is two steps, as in mini-redis: serde reads a frame into a loose shape
//! ([`RawRequest`]), then validation builds a typed [`Request`] or a [`Rejection`] that carries
//! the error code the client sees. Nothing here panics on input; every failure is a value.
//!
//! Example frames:
//! ```text
//! -> {"op":"subscribe","symbol":"BTC-USDT","id":1}
//! <- {"type":"subscribed","symbol":"BTC-USDT","exchanges":null,"id":1}
//! -> {"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","binance"]}
//! <- {"type":"subscribed","symbol":"BTC-USDT","exchanges":["binance","okx"]}
//! -> {"op":"ping"}
//! <- {"type":"pong"}
//! -> {"op":"dance"}
//! <- {"type":"error","code":"unknown_op","message":"unknown op \"dance\" (subscribe, unsubscribe, ping)"}
//! ```

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use spreadagg_model::wire::Spread;
use spreadagg_model::{ExchangeId, Symbol};

/// Longest request id string echoed back; longer ones are refused rather than stored.
pub const MAX_ID_LEN: usize = 64;

/// An exchange pair in canonical order: `a < b` comparing the lowercase ids, as in the
/// subjects `md.spread.<symbol>.<a>.<b>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    a: ExchangeId,
    b: ExchangeId,
}

impl Pair {
    /// Orders two different exchanges canonically; `None` when they are the same.
    pub fn new(x: ExchangeId, y: ExchangeId) -> Option<Pair> {
        match x.as_str().cmp(y.as_str()) {
            std::cmp::Ordering::Less => Some(Pair { a: x, b: y }),
            std::cmp::Ordering::Greater => Some(Pair { a: y, b: x }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// Parses two lowercase ids (in either order); `None` unless both are known and differ.
    pub fn parse(x: &str, y: &str) -> Option<Pair> {
        Pair::new(x.parse().ok()?, y.parse().ok()?)
    }

    /// The lexicographically smaller exchange.
    pub fn a(self) -> ExchangeId {
        self.a
    }

    /// The lexicographically larger exchange.
    pub fn b(self) -> ExchangeId {
        self.b
    }
}

/// What one subscription selects: every pair of a symbol, or one pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    pub symbol: Symbol,
    /// `None`: all pairs of the symbol.
    pub pair: Option<Pair>,
}

/// The client's optional `"id"`, echoed back verbatim on the answer: a string of at most
/// [`MAX_ID_LEN`] bytes or an integer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RequestId(serde_json::Value);

/// A validated client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Subscribe(Subscription),
    Unsubscribe(Subscription),
    Ping,
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: Option<RequestId>,
    pub request: Request,
}

/// The `code` of an error frame. The set is part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a missing or malformed field, an unknown exchange, a binary frame.
    BadRequest,
    /// `op` is none of `subscribe`, `unsubscribe`, `ping`.
    UnknownOp,
    /// The client already holds `max_subscriptions_per_client` subscriptions.
    TooManySubscriptions,
    /// The symbol is not canonical `BASE-QUOTE` upper case.
    InvalidSymbol,
}

impl ErrorCode {
    /// The wire spelling, also the `reason` label of `spreadagg_gateway_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::InvalidSymbol => "invalid_symbol",
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
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<RequestId>) -> Self {
        Self {
            code,
            message: message.into(),
            id,
        }
    }

    /// The error frame for this rejection.
    pub fn to_frame(&self) -> Utf8Bytes {
        encode(&ServerMessage::Error {
            code: self.code,
            message: &self.message,
            id: self.id.as_ref(),
        })
    }
}

/// The loose shape of a client frame, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    op: String,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    exchanges: Option<Vec<String>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// Parses and validates one client text frame.
///
/// # Errors
/// A [`Rejection`] with the code and message to send back.
pub fn parse_request(text: &str) -> Result<Envelope, Rejection> {
    let raw: RawRequest = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            ErrorCode::BadRequest,
            format!(
                "expected a JSON object like {{\"op\":\"subscribe\",\"symbol\":\"BTC-USDT\"}}: {e}"
            ),
            None,
        )
    })?;
    let id = match raw.id {
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
    let request = match raw.op.as_str() {
        "subscribe" => Request::Subscribe(subscription(raw.symbol, raw.exchanges, &id)?),
        "unsubscribe" => Request::Unsubscribe(subscription(raw.symbol, raw.exchanges, &id)?),
        "ping" => {
            if raw.symbol.is_some() || raw.exchanges.is_some() {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "ping takes no symbol or exchanges",
                    id,
                ));
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

fn subscription(
    symbol: Option<String>,
    exchanges: Option<Vec<String>>,
    id: &Option<RequestId>,
) -> Result<Subscription, Rejection> {
    let Some(symbol) = symbol else {
        return Err(Rejection::new(
            ErrorCode::BadRequest,
            "symbol is required",
            id.clone(),
        ));
    };
    let symbol: Symbol = symbol
        .parse()
        .map_err(|e: spreadagg_model::symbol::InvalidSymbol| {
            Rejection::new(ErrorCode::InvalidSymbol, e.to_string(), id.clone())
        })?;
    let pair = match exchanges.as_deref() {
        None => None,
        Some([x, y]) => {
            let parse = |s: &str| {
                s.parse::<ExchangeId>()
                    .map_err(|e| Rejection::new(ErrorCode::BadRequest, e.to_string(), id.clone()))
            };
            let pair = Pair::new(parse(x)?, parse(y)?).ok_or_else(|| {
                Rejection::new(
                    ErrorCode::BadRequest,
                    "exchanges must name two different exchanges",
                    id.clone(),
                )
            })?;
            Some(pair)
        }
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::BadRequest,
                "exchanges must list exactly two exchange ids, or be left out for every pair",
                id.clone(),
            ));
        }
    };
    Ok(Subscription { symbol, pair })
}

/// Every frame the gateway sends except spread points (see [`encode_spread`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Subscribed {
        symbol: &'a str,
        /// `null` for a symbol-wide subscription.
        exchanges: Option<[&'static str; 2]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Unsubscribed {
        symbol: &'a str,
        exchanges: Option<[&'static str; 2]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
}

impl<'a> ServerMessage<'a> {
    /// The confirmation of a subscribe.
    pub fn subscribed(sub: &'a Subscription, id: Option<&'a RequestId>) -> Self {
        ServerMessage::Subscribed {
            symbol: sub.symbol.as_str(),
            exchanges: sub.pair.map(|p| [p.a().as_str(), p.b().as_str()]),
            id,
        }
    }

    /// The confirmation of an unsubscribe.
    pub fn unsubscribed(sub: &'a Subscription, id: Option<&'a RequestId>) -> Self {
        ServerMessage::Unsubscribed {
            symbol: sub.symbol.as_str(),
            exchanges: sub.pair.map(|p| [p.a().as_str(), p.b().as_str()]),
            id,
        }
    }
}

/// Serialises a frame. The types above hold only strings and numbers, so serde_json cannot
/// fail on them; should it ever, the client gets a fixed error frame rather than nothing.
pub fn encode<T: Serialize>(msg: &T) -> Utf8Bytes {
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a gateway frame");
            Utf8Bytes::from_static(
                r#"{"type":"error","code":"bad_request","message":"internal encoding failure"}"#,
            )
        }
    }
}

/// The `spread` frame: exactly the fields of the `Spread` proto, plus `"type"`.
#[derive(Debug, Serialize)]
struct SpreadFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    symbol: &'a str,
    exchange_a: &'a str,
    exchange_b: &'a str,
    bid_a: f64,
    ask_a: f64,
    bid_b: f64,
    ask_b: f64,
    ts_a_ns: i64,
    ts_b_ns: i64,
    a_to_b_pct: f64,
    b_to_a_pct: f64,
    bid_bid_pct: f64,
    staleness_ms: f64,
    triggered_by: &'a str,
    upper_band: f64,
    lower_band: f64,
    ts_ns: i64,
}

/// Serialises one spread point (once per point; every matching client shares the bytes).
/// Non-finite numbers become `null`, as JSON has no NaN.
pub fn encode_spread(s: &Spread) -> Utf8Bytes {
    encode(&SpreadFrame {
        kind: "spread",
        symbol: &s.symbol,
        exchange_a: &s.exchange_a,
        exchange_b: &s.exchange_b,
        bid_a: s.bid_a,
        ask_a: s.ask_a,
        bid_b: s.bid_b,
        ask_b: s.ask_b,
        ts_a_ns: s.ts_a_ns,
        ts_b_ns: s.ts_b_ns,
        a_to_b_pct: s.a_to_b_pct,
        b_to_a_pct: s.b_to_a_pct,
        bid_bid_pct: s.bid_bid_pct,
        staleness_ms: s.staleness_ms,
        triggered_by: &s.triggered_by,
        upper_band: s.upper_band,
        lower_band: s.lower_band,
        ts_ns: s.ts_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sub(symbol: &str, pair: Option<(ExchangeId, ExchangeId)>) -> Subscription {
        Subscription {
            symbol: symbol.parse().expect("valid symbol"),
            pair: pair.map(|(x, y)| Pair::new(x, y).expect("distinct")),
        }
    }

    #[test]
    fn valid_requests_parse() {
        use ExchangeId::{Binance, Okx};
        let cases: Vec<(&str, &str, Request, Option<Value>)> = vec![
            (
                "symbol-wide",
                r#"{"op":"subscribe","symbol":"BTC-USDT"}"#,
                Request::Subscribe(sub("BTC-USDT", None)),
                None,
            ),
            (
                "one pair",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["binance","okx"]}"#,
                Request::Subscribe(sub("BTC-USDT", Some((Binance, Okx)))),
                None,
            ),
            (
                "pair in reverse order is canonicalised",
                r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","binance"]}"#,
                Request::Subscribe(sub("BTC-USDT", Some((Binance, Okx)))),
                None,
            ),
            (
                "unsubscribe with a numeric id",
                r#"{"op":"unsubscribe","symbol":"ETH-USDC","id":7}"#,
                Request::Unsubscribe(sub("ETH-USDC", None)),
                Some(json!(7)),
            ),
            (
                "null exchanges means symbol-wide",
                r#"{"op":"unsubscribe","symbol":"ETH-USDC","exchanges":null}"#,
                Request::Unsubscribe(sub("ETH-USDC", None)),
                None,
            ),
            (
                "ping with a string id",
                r#"{"op":"ping","id":"abc"}"#,
                Request::Ping,
                Some(json!("abc")),
            ),
            ("bare ping", r#"{"op":"ping"}"#, Request::Ping, None),
            ("null id", r#"{"op":"ping","id":null}"#, Request::Ping, None),
        ];
        for (name, text, request, id) in cases {
            let env = parse_request(text).unwrap_or_else(|e| panic!("{name}: rejected: {e}"));
            assert_eq!(env.request, request, "{name}");
            assert_eq!(env.id.map(|i| i.0), id, "{name}");
        }
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
                "symbol wildcard",
                r#"{"op":"subscribe","symbol":"BTC-USDT>"}"#,
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

    #[test]
    fn pairs_are_canonical_by_lowercase_id() {
        use ExchangeId::{Binance, Bybit, Gateio, Okx};
        // Enum order is not lexicographic (okx before gateio), the pair order must be.
        let p = Pair::new(Okx, Gateio).expect("distinct");
        assert_eq!((p.a(), p.b()), (Gateio, Okx));
        assert_eq!(Pair::new(Binance, Bybit), Pair::new(Bybit, Binance));
        assert_eq!(Pair::new(Okx, Okx), None);
        assert_eq!(Pair::parse("okx", "binance"), Pair::new(Binance, Okx));
        assert_eq!(Pair::parse("okx", "ftx"), None);
    }

    #[test]
    fn confirmations_carry_the_canonical_pair() {
        let s = sub("BTC-USDT", Some((ExchangeId::Okx, ExchangeId::Binance)));
        let id = RequestId(json!(3));
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::subscribed(&s, Some(&id)))).expect("json");
        assert_eq!(
            v,
            json!({"type":"subscribed","symbol":"BTC-USDT","exchanges":["binance","okx"],"id":3})
        );
        let wide = sub("BTC-USDT", None);
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::unsubscribed(&wide, None))).expect("json");
        assert_eq!(
            v,
            json!({"type":"unsubscribed","symbol":"BTC-USDT","exchanges":null})
        );
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::Pong { id: None })).expect("json");
        assert_eq!(v, json!({"type":"pong"}));
    }

    #[test]
    fn spread_frames_carry_every_proto_field() {
        let s = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            bid_a: 100.5,
            ask_a: 100.75,
            bid_b: 101.0,
            ask_b: 101.25,
            ts_a_ns: 1_700_000_000_000_000_001,
            ts_b_ns: 1_700_000_000_000_000_002,
            a_to_b_pct: 0.25,
            b_to_a_pct: -0.75,
            bid_bid_pct: -0.5,
            staleness_ms: 1.5,
            triggered_by: "okx".into(),
            upper_band: 0.125,
            lower_band: f64::NAN,
            ts_ns: 1_700_000_000_000_000_003,
        };
        let v: Value = serde_json::from_str(&encode_spread(&s)).expect("json");
        assert_eq!(
            v,
            json!({
                "type": "spread", "symbol": "BTC-USDT", "exchange_a": "binance",
                "exchange_b": "okx", "bid_a": 100.5, "ask_a": 100.75, "bid_b": 101.0,
                "ask_b": 101.25, "ts_a_ns": 1_700_000_000_000_000_001_i64,
                "ts_b_ns": 1_700_000_000_000_000_002_i64, "a_to_b_pct": 0.25,
                "b_to_a_pct": -0.75, "bid_bid_pct": -0.5, "staleness_ms": 1.5,
                "triggered_by": "okx", "upper_band": 0.125, "lower_band": null,
                "ts_ns": 1_700_000_000_000_000_003_i64
            })
        );
    }
}
