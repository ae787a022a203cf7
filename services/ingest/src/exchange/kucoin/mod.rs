//! KuCoin spot public market data.
//!
//! Docs: <https://www.kucoin.com/docs-new/websocket-api/base-info/introduction>,
//! <https://www.kucoin.com/docs-new/websocket-api/base-info/get-public-token-spot-margin>,
//! <https://www.kucoin.com/docs-new/3470063w0> (ticker) and
//! <https://www.kucoin.com/docs-new/3470072w0> (match).
//!
//! KuCoin has no fixed WebSocket URL: before every connection the client asks
//! `POST /api/v1/bullet-public` for a token and a server (`instanceServers[0]`: `endpoint`,
//! `pingInterval`, `pingTimeout`), then dials `{endpoint}?token=..&connectId=..`. The token
//! expires, so it is fetched again for each connection (a client that keeps the first one
//! loops on 401 after a day: cryptofeed #1023). The server greets with
//! `{"id":"<connectId>","type":"welcome"}`; only then may the client subscribe. The client
//! sends `{"id":"<n>","type":"ping"}` every `pingInterval` (answer `pong`); a client silent
//! past `pingTimeout` is dropped.
//!
//! Subscribe `{"id":1,"type":"subscribe","topic":"/market/ticker:BTC-USDT,ETH-USDT",
//! "privateChannel":false,"response":true}` is answered `{"id":"1","type":"ack"}` or
//! `{"id":"1","type":"error","code":404,"data":".."}`. At most 100 topics per message and 400
//! per connection: one ticker and one match request per 100 symbols, 200 symbols per
//! connection. Native symbols are spelled `BTC-USDT` in REST and WebSocket alike.

mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError, Plan,
    PlanContext, PlanError, Request, SeqGate, Session, SymbolTable, malformed, num, print, quote,
};

/// Topics per subscribe message.
const TOPICS_PER_REQUEST: usize = 100;
/// 400 topics per connection, two topics (ticker, match) per symbol.
const SYMBOLS_PER_CONNECTION: usize = 200;
/// Largest bullet-public body read; the real one is a few hundred bytes.
const MAX_BULLET_BYTES: usize = 64 << 10;
/// Sane bounds on the server's `pingInterval`; anything else is refused.
const PING_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));
/// Ping interval used when none is known (the documented default is 18 s).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(18);
/// Requests awaiting an ack, at most (bounded by the per-connection caps, with retries).
const MAX_UNACKED: usize = 1_024;
const TICKER_PREFIX: &str = "/market/ticker:";
const MATCH_PREFIX: &str = "/market/match:";

/// The KuCoin adapter.
#[derive(Debug, Clone, Copy)]
pub struct Kucoin;

/// Distinguishes connect ids within one process.
static CONNECT_COUNTER: AtomicU64 = AtomicU64::new(0);

fn connect_id() -> String {
    let n = CONNECT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("sa{salt:08x}{n}")
}

fn check_code<T>(r: wire::Response<T>) -> Result<T, ParseError> {
    if r.code != "200000" {
        return Err(ParseError::Exchange(format!(
            "code {}: {}",
            r.code,
            r.msg.as_deref().unwrap_or("")
        )));
    }
    r.data.ok_or_else(|| malformed("no data"))
}

/// The WebSocket URL for one connection: the endpoint (or `--ws-url`) with the token and
/// connect id appended to any query it already has.
pub(crate) fn connect_url(endpoint: &str, token: &str, connect_id: &str) -> String {
    let sep = if endpoint.contains('?') {
        if endpoint.ends_with('?') || endpoint.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    format!("{endpoint}{sep}token={token}&connectId={connect_id}")
}

/// Parses the bullet-public body into (endpoint, token, ping interval).
///
/// # Errors
/// When the body is not the documented shape, the code is not `200000`, no server is listed,
/// or its `pingInterval` is outside 1 s..60 s.
pub(crate) fn parse_bullet(body: &str) -> Result<(String, String, Duration), ParseError> {
    let r: wire::Response<wire::Bullet> = serde_json::from_str(body).map_err(malformed)?;
    let bullet = check_code(r)?;
    if bullet.token.is_empty() {
        return Err(malformed("empty token"));
    }
    let server = bullet
        .instance_servers
        .into_iter()
        .find(|s| s.protocol.as_deref().is_none_or(|p| p == "websocket"))
        .ok_or_else(|| malformed("no websocket instance server"))?;
    let every = Duration::from_millis(server.ping_interval);
    if every < PING_INTERVAL_BOUNDS.0 || every > PING_INTERVAL_BOUNDS.1 {
        return Err(malformed(format!(
            "pingInterval {} ms out of bounds",
            server.ping_interval
        )));
    }
    if let Some(timeout) = server.ping_timeout
        && timeout == 0
    {
        return Err(malformed("pingTimeout 0"));
    }
    Ok((server.endpoint, bullet.token, every))
}

async fn bullet(ctx: &PlanContext<'_>) -> Result<String, PlanError> {
    let url = format!(
        "{}/api/v1/bullet-public",
        ctx.rest_url.trim_end_matches('/')
    );
    let fail = |why: String| PlanError(format!("POST {url}: {why}"));
    let mut response = ctx
        .http
        .post(&url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
        if bytes.len() + chunk.len() > MAX_BULLET_BYTES {
            return Err(fail(format!("body larger than {MAX_BULLET_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        return Err(fail(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    Ok(body)
}

impl Adapter for Kucoin {
    fn id(&self) -> ExchangeId {
        ExchangeId::Kucoin
    }

    /// Only a fallback name: the real endpoint comes from bullet-public for each connection.
    fn default_ws_url(&self) -> &'static str {
        "wss://ws-api-spot.kucoin.com/"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.kucoin.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            // 100 client messages per 10 s per connection.
            subscribe_pacing: Duration::from_millis(150),
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v2/symbols"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v1/market/allTickers"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<Vec<wire::Symbol<'_>>> =
            serde_json::from_str(body).map_err(malformed)?;
        Ok(check_code(r)?
            .into_iter()
            .filter_map(|s| {
                let symbol = Symbol::from_parts(&s.base_currency, &s.quote_currency).ok()?;
                Some(Instrument {
                    native: s.symbol.into_owned(),
                    symbol,
                    trading: s.enable_trading,
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<wire::AllTickers<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        Ok(check_code(r)?
            .ticker
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), num(t.vol_value.as_deref()?).ok()?)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(KucoinSession::new(String::new()))
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(DEFAULT_PING_INTERVAL)
    }

    fn plan<'a>(&'a self, ctx: PlanContext<'a>) -> BoxFuture<'a, Result<Plan, PlanError>> {
        Box::pin(async move {
            let body = bullet(&ctx).await?;
            let (endpoint, token, every) =
                parse_bullet(&body).map_err(|e| PlanError(format!("bullet-public: {e}")))?;
            let id = connect_id();
            let endpoint = ctx.ws_url.unwrap_or(&endpoint);
            Ok(Plan {
                url: connect_url(endpoint, &token, &id),
                session: Box::new(KucoinSession::new(id)),
                keepalive_every: Some(every),
            })
        })
    }
}

/// One KuCoin connection: waits for the welcome, then subscribes; each request is acked (or
/// refused) once, by its id.
#[derive(Debug)]
pub struct KucoinSession {
    /// The connect id this connection was dialled with; empty accepts any welcome.
    connect_id: String,
    welcomed: bool,
    unacked: HashSet<u64>,
    next_ping: u64,
    seq: SeqGate,
}

impl KucoinSession {
    /// A session for a connection dialled with `connect_id`.
    pub fn new(connect_id: String) -> Self {
        Self {
            connect_id,
            welcomed: false,
            unacked: HashSet::new(),
            next_ping: 1,
            seq: SeqGate::default(),
        }
    }

    fn request(&mut self, prefix: &str, chunk: &[String], next_id: &mut u64) -> Request {
        let id = *next_id;
        *next_id += 1;
        if self.unacked.len() < MAX_UNACKED {
            self.unacked.insert(id);
        }
        let topic = format!("{prefix}{}", chunk.join(","));
        Request {
            id,
            natives: chunk.to_vec(),
            frame: Outgoing::Text(
                serde_json::json!({
                    "id": id,
                    "type": "subscribe",
                    "topic": topic,
                    "privateChannel": false,
                    "response": true,
                })
                .to_string(),
            ),
        }
    }
}

fn error_detail(text: &str) -> String {
    match serde_json::from_str::<wire::ErrorFrame>(text) {
        Ok(e) => {
            let show = |v: Option<serde_json::Value>| match v {
                Some(serde_json::Value::String(s)) => s,
                Some(v) => v.to_string(),
                None => "?".to_owned(),
            };
            let mut data = show(e.data);
            data.truncate(200);
            format!("code {}: {data}", show(e.code))
        }
        Err(_) => "error frame".to_owned(),
    }
}

fn side(s: &str) -> Result<Side, ParseError> {
    match s {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(malformed(format!("trade side {other:?}"))),
    }
}

impl Session for KucoinSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        let mut requests = Vec::new();
        for chunk in natives.chunks(TOPICS_PER_REQUEST) {
            requests.push(self.request(TICKER_PREFIX, chunk, next_id));
            requests.push(self.request(MATCH_PREFIX, chunk, next_id));
        }
        requests
    }

    fn ready_to_subscribe(&self) -> bool {
        self.welcomed
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        let id = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(1);
        Some(Outgoing::Text(format!(
            r#"{{"id":"ping{id}","type":"ping"}}"#
        )))
    }

    fn forget(&mut self, request: u64) {
        self.unacked.remove(&request);
    }

    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let Frame::Text(text) = frame else {
            return Err(malformed("binary frame"));
        };
        // The hot frame in KuCoin's documented layout, read without a JSON parser; any
        // other layout goes through serde below (the two agree: tests and property tests).
        if let Some(t) = ticker_layout(text) {
            let symbol = symbols
                .lookup(t.native)
                .ok_or_else(|| ParseError::UnknownSymbol(t.native.chars().take(40).collect()))?;
            let seq = t
                .sequence
                .parse::<u64>()
                .map_err(|_| ParseError::BadNumber(t.sequence.chars().take(40).collect()))?;
            let q = quote(
                symbol,
                (num(t.best_bid)?, num(t.best_bid_size)?),
                (num(t.best_ask)?, num(t.best_ask_size)?),
                // serde (`time: i64`) refuses such a time too.
                ms_to_ns(i64::try_from(t.time).map_err(|_| malformed("time out of range"))?),
                recv_ts_ns,
                seq,
            )?;
            self.seq.admit(&q)?;
            out.events.push(Event::Quote(q));
            return Ok(Control::Data);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        let request = env.id.as_deref().and_then(|i| i.parse::<u64>().ok());
        match env.kind.as_ref() {
            "message" => {}
            "welcome" => {
                let id = env.id.as_deref().unwrap_or("");
                if !self.connect_id.is_empty() && id != self.connect_id {
                    return Err(malformed(format!("welcome for connectId {id:?}")));
                }
                self.welcomed = true;
                return Ok(Control::Ignored);
            }
            "pong" => return Ok(Control::KeepAlive),
            "ping" => {
                let id = env.id.as_deref().unwrap_or("");
                out.replies.push(Outgoing::Text(
                    serde_json::json!({"id": id, "type": "pong"}).to_string(),
                ));
                return Ok(Control::KeepAlive);
            }
            "ack" => {
                return Ok(match request {
                    Some(id) if self.unacked.remove(&id) => Control::Subscribed(id),
                    _ => Control::Ignored,
                });
            }
            "error" => {
                let reason = error_detail(text);
                return Ok(match request {
                    Some(id) if self.unacked.remove(&id) => Control::Refused {
                        request: Some(id),
                        reason,
                    },
                    _ => Control::ExchangeError(reason),
                });
            }
            _ => return Ok(Control::Ignored),
        }
        let topic = env
            .topic
            .as_deref()
            .ok_or_else(|| malformed("message without topic"))?;
        let (prefix, native) = match topic.split_once(':') {
            Some((p, n)) => (p, n),
            None => return Err(malformed(format!("topic {topic:?}"))),
        };
        let lookup = |native: &str| {
            symbols
                .lookup(native)
                .ok_or_else(|| ParseError::UnknownSymbol(native.chars().take(40).collect()))
        };
        match (prefix, env.subject.as_deref()) {
            ("/market/ticker", Some("trade.ticker")) => {
                let symbol = lookup(native)?;
                let push: wire::Push<wire::TickerData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                let d = push.data;
                let seq = match d.sequence.as_deref() {
                    Some(s) => s
                        .parse::<u64>()
                        .map_err(|_| ParseError::BadNumber(s.chars().take(40).collect()))?,
                    None => 0,
                };
                let q = quote(
                    symbol,
                    (num(&d.best_bid)?, num(&d.best_bid_size)?),
                    (num(&d.best_ask)?, num(&d.best_ask_size)?),
                    ms_to_ns(d.time),
                    recv_ts_ns,
                    seq,
                )?;
                self.seq.admit(&q)?;
                out.events.push(Event::Quote(q));
                Ok(Control::Data)
            }
            ("/market/match", Some("trade.l3match")) => {
                let symbol = lookup(native)?;
                let push: wire::Push<wire::MatchData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                let d = push.data;
                let ts = d
                    .time
                    .parse::<i64>()
                    .map_err(|_| ParseError::BadNumber(d.time.chars().take(40).collect()))?;
                out.events.push(Event::Print(print(
                    symbol,
                    (num(&d.price)?, num(&d.size)?),
                    side(&d.side)?,
                    d.trade_id.into_owned(),
                    ts,
                    recv_ts_ns,
                )?));
                Ok(Control::Data)
            }
            _ => Ok(Control::Ignored),
        }
    }
}

/// The fields of a `trade.ticker` push in KuCoin's documented layout.
struct TickerFields<'a> {
    native: &'a str,
    sequence: &'a str,
    best_ask: &'a str,
    best_ask_size: &'a str,
    best_bid: &'a str,
    best_bid_size: &'a str,
    time: u64,
}

/// `{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":
/// {"sequence":"..","price":"..","size":"..","bestAsk":"..","bestAskSize":"..","bestBid":"..",
/// "bestBidSize":"..","time":N}}` exactly (`time` or `Time`), or `None`.
fn ticker_layout(text: &str) -> Option<TickerFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"type":"message","topic":"/market/ticker:"#)?;
    let native = l.until_quote()?;
    l.lit(r#","subject":"trade.ticker","data":{"sequence":""#)?;
    let sequence = l.until_quote()?;
    l.lit(r#","price":""#)?;
    l.until_quote()?;
    l.lit(r#","size":""#)?;
    l.until_quote()?;
    l.lit(r#","bestAsk":""#)?;
    let best_ask = l.until_quote()?;
    l.lit(r#","bestAskSize":""#)?;
    let best_ask_size = l.until_quote()?;
    l.lit(r#","bestBid":""#)?;
    let best_bid = l.until_quote()?;
    l.lit(r#","bestBidSize":""#)?;
    let best_bid_size = l.until_quote()?;
    l.lit(r#","time":"#).or_else(|| l.lit(r#","Time":"#))?;
    let time = l.uint()?;
    l.lit("}}")?;
    l.done().then_some(TickerFields {
        native,
        sequence,
        best_ask,
        best_ask_size,
        best_bid,
        best_bid_size,
        time,
    })
}

#[cfg(test)]
mod tests;
