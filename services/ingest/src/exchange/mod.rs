//! The exchange contract: what differs between exchanges, and nothing else.
//!
//! An [`Adapter`] is the exchange's static side: endpoints, limits, the REST shapes discovery
//! reads, and [`Adapter::plan`], the async step that prepares one connection (most exchanges
//! just name their URL; KuCoin first asks REST for a token and a server). The plan carries a
//! [`Session`]: per-connection, mutable protocol state that sees every frame (text or binary),
//! may answer with frames of its own (HTX pongs), builds the subscribe requests and matches
//! their acks, and turns market data into [`Event`]s.
//!
//! Connection handling (backoff, breaker, watchdogs, ack timeouts, rotation) and publishing
//! are shared (`crate::connection`, `crate::publish`); decompression is in `crate::codec`.
//! Adapters are registered in one place: [`adapter`].

pub mod binance;
pub mod bingx;
pub mod bitget;
pub mod bybit;
pub mod coinbase;
pub mod gateio;
pub mod htx;
pub mod kraken;
pub mod kucoin;
pub mod mexc;
pub mod okx;
mod parse;
#[cfg(test)]
mod proptests;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use spreadagg_model::{ExchangeId, Symbol};

pub use crate::event::{Event, Print, Quote};
pub use crate::symbols::{SymbolId, SymbolTable};
pub(crate) use parse::{Layout, SeqGate, malformed, num, print, quote, rfc3339_ns};

/// One tradable instrument as the exchange lists it, mapped to the canonical symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Instrument {
    /// The exchange's own spelling, exactly as its WebSocket frames carry it (`BTCUSDT`,
    /// `BTC-USDT`, `btcusdt`).
    pub native: String,
    pub symbol: Symbol,
    /// Listed and trading now.
    pub trading: bool,
    /// The name the exchange's 24 h ticker list gives this instrument, when it is not
    /// `native` (Kraken's REST says `XXBTZUSD` where its WebSocket says `BTC/USD`).
    pub volume_key: Option<String>,
}

impl Instrument {
    /// The key of this instrument in [`Adapter::parse_volumes`]'s map.
    pub fn volume_key(&self) -> &str {
        self.volume_key.as_deref().unwrap_or(&self.native)
    }
}

/// A frame from the exchange, as the WebSocket delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A frame for the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

/// One subscribe request: its id (which the session matches acks against), the native
/// symbols it covers, and the frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub natives: Vec<String>,
    pub frame: Outgoing,
}

/// What a frame was, besides any events and replies it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Market data (events were appended).
    Data,
    /// Every topic of this request is confirmed.
    Subscribed(u64),
    /// The exchange refused a request (the request is `None` when the refusal names none; it
    /// then times out like an unanswered one).
    Refused {
        request: Option<u64>,
        reason: String,
    },
    /// The answer to our keep-alive, or a server ping we answered.
    KeepAlive,
    /// The exchange reported an error unrelated to a request; the session goes on.
    ExchangeError(String),
    /// The exchange announced that it will close this connection soon (maintenance, maximum
    /// age): open a successor now, then close this one.
    Rotate(String),
    /// The exchange is closing this connection now.
    Closing(String),
    /// A frame we understand and do not need.
    Ignored,
}

/// Why a frame or REST body was rejected. Counted under its label, never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not of the expected shape: {0}")]
    Malformed(String),
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("bad number {0:?}")]
    BadNumber(String),
    #[error("bad quote: {0}")]
    BadQuote(#[from] spreadagg_model::formulas::QuoteError),
    #[error("exchange answered with an error: {0}")]
    Exchange(String),
    #[error("decompression: {0}")]
    Decompress(#[from] crate::codec::CodecError),
    #[error("update {seq} is not newer than {last}")]
    OutOfOrder { seq: u64, last: u64 },
}

impl ParseError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::Malformed(_) => "malformed",
            ParseError::UnknownSymbol(_) => "unknown_symbol",
            ParseError::BadNumber(_) => "bad_number",
            ParseError::BadQuote(q) => q.label(),
            ParseError::Exchange(_) => "exchange_error",
            ParseError::Decompress(c) => c.label(),
            ParseError::OutOfOrder { .. } => "out_of_order",
        }
    }
}

/// The largest WebSocket message most exchanges need: market-data frames are a few hundred
/// bytes, so anything near this is hostile or broken and ends the session.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The exchange's connection and subscription caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Symbols one connection carries (within its per-connection topic cap).
    pub symbols_per_connection: usize,
    /// Pause between two subscribe requests (inbound message-rate limits).
    pub subscribe_pacing: Duration,
    /// The exchange closes a connection at this age; we rotate before it.
    pub max_connection_age: Option<Duration>,
    /// Largest WebSocket message (and frame) accepted; a larger one ends the session.
    /// [`DEFAULT_MAX_MESSAGE_BYTES`] unless the exchange sends larger messages (Coinbase's
    /// level2 snapshots are several MB). Compressed exchanges inflate under
    /// `crate::codec::MAX_INFLATED_BYTES` whatever this is.
    pub max_message_bytes: usize,
}

/// Everything one connection needs from the exchange, prepared by [`Adapter::plan`].
pub struct Plan {
    /// The WebSocket URL to dial, query included.
    pub url: String,
    pub session: Box<dyn Session>,
    /// How often [`Session::keepalive`] is asked for a frame.
    pub keepalive_every: Option<Duration>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("url", &self.url)
            .field("keepalive_every", &self.keepalive_every)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be planned (a REST bootstrap failed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// What [`Adapter::plan`] may use.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    pub http: &'a reqwest::Client,
    /// REST scheme and host (`--rest-url` or the exchange's).
    pub rest_url: &'a str,
    /// `--ws-url`, when given: it replaces the exchange's (or the bootstrap's) endpoint.
    pub ws_url: Option<&'a str>,
}

/// The per-connection protocol state machine. One per WebSocket connection; never shared.
pub trait Session: Send {
    /// The subscribe requests for these native symbols, batched within the exchange's
    /// per-request caps; request ids come from `next_id`, which the caller keeps unique per
    /// connection.
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request>;

    /// One frame: events go to `out.events`, frames to send back to `out.replies`.
    ///
    /// # Errors
    /// When the frame is malformed or carries unusable data; the caller counts and drops it,
    /// and the session goes on.
    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError>;

    /// Whether subscribe requests may go out yet (KuCoin: only after its `welcome`). Asked
    /// again after every frame.
    fn ready_to_subscribe(&self) -> bool {
        true
    }

    /// The client keep-alive frame, asked for every [`Plan::keepalive_every`].
    fn keepalive(&mut self) -> Option<Outgoing> {
        None
    }

    /// The connection gave up waiting for this request's ack: drop what is kept for it.
    fn forget(&mut self, _request: u64) {}
}

/// What one frame produced. Reused across frames, so the hot path allocates nothing.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Event>,
    pub replies: Vec<Outgoing>,
}

impl Output {
    pub fn clear(&mut self) {
        self.events.clear();
        self.replies.clear();
    }
}

/// The exchange's static side.
pub trait Adapter: Send + Sync + 'static {
    fn id(&self) -> ExchangeId;
    /// The public WebSocket endpoint, as the exchange documents it.
    fn default_ws_url(&self) -> &'static str;
    /// REST scheme and host.
    fn default_rest_url(&self) -> &'static str;
    fn limits(&self) -> Limits;
    /// Path (and query) of the instrument list.
    fn instruments_path(&self) -> &'static str;
    /// Path (and query) of the 24 h tickers with quote volume.
    fn volumes_path(&self) -> &'static str;
    /// Query parameters made at request time and appended to both discovery paths (BingX
    /// refuses its public 24 h tickers without a `timestamp`); `now_ms` is the wall clock in
    /// Unix milliseconds. Default: none.
    fn discovery_query(&self, _now_ms: i64) -> Option<String> {
        None
    }
    /// Parses the instrument list.
    ///
    /// # Errors
    /// When the body is not the documented shape.
    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError>;
    /// Parses 24 h quote volumes by [`Instrument::volume_key`] (the native symbol, for most).
    ///
    /// # Errors
    /// When the body is not the documented shape.
    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError>;
    /// A fresh session for one connection.
    fn session(&self) -> Box<dyn Session>;
    /// How often the client sends a keep-alive, when the exchange wants one.
    fn keepalive_every(&self) -> Option<Duration>;

    /// Prepares one connection. The default dials `--ws-url` or the documented endpoint;
    /// exchanges with a REST bootstrap override it (it runs again before every connect).
    fn plan<'a>(&'a self, ctx: PlanContext<'a>) -> BoxFuture<'a, Result<Plan, PlanError>> {
        Box::pin(async move {
            Ok(Plan {
                url: ctx.ws_url.unwrap_or(self.default_ws_url()).to_owned(),
                session: self.session(),
                keepalive_every: self.keepalive_every(),
            })
        })
    }
}

/// The registry: every exchange id has its adapter (the match is exhaustive, so a new id
/// cannot be added without one).
pub fn adapter(id: ExchangeId) -> Box<dyn Adapter> {
    match id {
        ExchangeId::Binance => Box::new(binance::Binance),
        ExchangeId::Bybit => Box::new(bybit::Bybit),
        ExchangeId::Okx => Box::new(okx::Okx),
        ExchangeId::Gateio => Box::new(gateio::Gateio),
        ExchangeId::Bitget => Box::new(bitget::Bitget),
        ExchangeId::Kucoin => Box::new(kucoin::Kucoin),
        ExchangeId::Mexc => Box::new(mexc::Mexc),
        ExchangeId::Htx => Box::new(htx::Htx),
        ExchangeId::Bingx => Box::new(bingx::Bingx),
        ExchangeId::Coinbase => Box::new(coinbase::Coinbase),
        ExchangeId::Kraken => Box::new(kraken::Kraken),
    }
}
