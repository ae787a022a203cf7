//! What the gateway sends on `/ws` besides events (whose JSON is [`crate::json`]): the answers
//! to requests, heartbeats, error frames and snapshot frames (docs/gateway-websocket.md).

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use crate::hub::event::Channel;
use crate::hub::filter::{Filter, VenuePattern};
use crate::json::encode;
use crate::ws::protocol::{ErrorCode, Rejection, RequestId};

/// How a filter is echoed back: its channel, symbol pattern and exchanges.
#[derive(Debug, Serialize)]
pub(crate) struct Echo {
    channel: &'static str,
    symbol: String,
    /// Spreads and charts: the pair, `"*"` for any; `null` for every pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    exchanges: Option<Option<[&'static str; 2]>>,
    /// Ticks and trades: the exchange; `null` for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<Option<&'static str>>,
}

impl Echo {
    pub(crate) fn of(f: &Filter) -> Echo {
        let channel = if f.chart {
            "charts"
        } else {
            f.channel.as_str()
        };
        let (exchanges, exchange) = match (f.channel, f.venue) {
            (Channel::Spreads, VenuePattern::Any) => (Some(None), None),
            (Channel::Spreads, VenuePattern::Exchange(x)) => (Some(Some([x.as_str(), "*"])), None),
            (Channel::Spreads, VenuePattern::Pair(p)) => {
                (Some(Some([p.a().as_str(), p.b().as_str()])), None)
            }
            (Channel::Ticks | Channel::Trades, VenuePattern::Exchange(x)) => {
                (None, Some(Some(x.as_str())))
            }
            (Channel::Ticks | Channel::Trades, _) => (None, Some(None)),
            (Channel::Signals, _) => (None, None),
        };
        Echo {
            channel,
            symbol: f.symbol.text(),
            exchanges,
            exchange,
        }
    }
}

/// Every frame the gateway sends except events (see [`crate::json`]) and snapshots (see
/// [`snapshot_frame`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    Subscribed {
        #[serde(flatten)]
        echo: Echo,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Unsubscribed {
        #[serde(flatten)]
        echo: Echo,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Heartbeat {
        ts_ns: i64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
}

#[derive(Debug, Serialize)]
struct SnapshotHead<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    echo: Echo,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
}

/// The `snapshot` frame: the subscription echoed, whether the item limit cut it short, and the
/// items, each exactly as it would arrive live (already encoded, spliced in unchanged).
pub(crate) fn snapshot_frame(
    filter: &Filter,
    id: Option<&RequestId>,
    truncated: bool,
    items: &[Utf8Bytes],
) -> Utf8Bytes {
    let head = encode(&SnapshotHead {
        kind: "snapshot",
        echo: Echo::of(filter),
        truncated,
        id,
    });
    // `head` is a JSON object: drop its closing brace and append the items array.
    let head = head.as_str();
    let mut out =
        String::with_capacity(head.len() + 12 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    out.push_str(&head[..head.len().saturating_sub(1)]);
    out.push_str(",\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(item.as_str());
    }
    out.push_str("]}");
    Utf8Bytes::from(out)
}

impl Rejection {
    /// The error frame for this rejection.
    pub fn to_frame(&self) -> Utf8Bytes {
        encode(&ServerMessage::Error {
            code: self.code,
            message: &self.message,
            id: self.id.as_ref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::protocol::{Request, parse_request};
    use serde_json::{Value, json};

    #[test]
    fn replies_and_snapshots_are_well_formed() {
        let env = parse_request(
            r#"{"op":"subscribe","symbol":"BTC-USDT","exchanges":["okx","binance"],"id":3}"#,
        )
        .expect("valid");
        let Request::Subscribe(s) = env.request else {
            panic!("a subscribe");
        };
        let (f, id) = (s.filter, env.id.expect("an id"));
        let v: Value = serde_json::from_str(&encode(&ServerMessage::Subscribed {
            echo: Echo::of(&f),
            id: Some(&id),
        }))
        .expect("json");
        assert_eq!(
            v,
            json!({"type":"subscribed","channel":"spreads","symbol":"BTC-USDT","exchanges":["binance","okx"],"id":3})
        );
        let v: Value =
            serde_json::from_str(&encode(&ServerMessage::Pong { id: None })).expect("json");
        assert_eq!(v, json!({"type":"pong"}));
        let items = [
            Utf8Bytes::from(r#"{"a":1}"#),
            Utf8Bytes::from(r#"{"b":[2]}"#),
        ];
        let v: Value =
            serde_json::from_str(&snapshot_frame(&f, Some(&id), true, &items)).expect("json");
        assert_eq!(
            v,
            json!({"type":"snapshot","channel":"spreads","symbol":"BTC-USDT",
                   "exchanges":["binance","okx"],"truncated":true,"id":3,
                   "items":[{"a":1},{"b":[2]}]})
        );
        let v: Value = serde_json::from_str(&snapshot_frame(&f, None, false, &[])).expect("json");
        assert_eq!(v["items"], json!([]));
    }
}
