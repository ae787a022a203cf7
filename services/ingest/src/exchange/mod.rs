//! Exchange adapters: what differs between exchanges, and nothing else. Each adapter knows its
//! endpoints, its instrument and volume REST shapes, how to subscribe within its limits, its
//! keep-alive, and how to turn its frames into [`Event`]s. Connection handling, backoff,
//! watchdogs and publishing are shared (`crate::connection`, `crate::publish`).
//!
//! Adapters are registered in one place: [`adapter`].

pub mod binance;
pub mod okx;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::{Tick, Trade};
use spreadagg_model::{ExchangeId, Symbol};

/// One tradable instrument as the exchange lists it, mapped to the canonical symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Instrument {
    /// The exchange's own spelling (`BTCUSDT`, `BTC-USDT`).
    pub native: String,
    pub symbol: Symbol,
    /// Listed and trading now.
    pub trading: bool,
}

/// Native spelling -> canonical symbol, built from the exchange's own instrument list.
pub type SymbolMap = HashMap<String, Symbol>;

/// A normalised market-data event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Tick(Tick),
    Trade(Trade),
}

/// What a frame was, besides any events it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Market data (events were appended).
    Data,
    /// A subscription was acknowledged.
    Ack,
    /// The answer to our keep-alive.
    Pong,
    /// The exchange reported an error (bad subscription, rate limit); the session goes on.
    ExchangeError(String),
    /// The exchange asked us to reconnect (maintenance, forced rotation).
    Reconnect(String),
    /// A frame we understand and do not need.
    Ignored,
}

/// Why a frame or REST body was rejected. Counted under its label, never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("bad number {0:?}")]
    BadNumber(String),
    #[error("bad quote: {0}")]
    BadQuote(#[from] spreadagg_model::formulas::QuoteError),
    #[error("exchange answered with an error: {0}")]
    Exchange(String),
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
        }
    }
}

/// A keep-alive the client must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPing {
    pub text: String,
    pub every: Duration,
}

/// The per-exchange part of ingestion.
pub trait Adapter: Send + Sync + 'static {
    fn id(&self) -> ExchangeId;
    /// The public WebSocket endpoint, as the exchange documents it.
    fn default_ws_url(&self) -> &'static str;
    /// REST scheme and host.
    fn default_rest_url(&self) -> &'static str;
    /// Path (and query) of the instrument list.
    fn instruments_path(&self) -> &'static str;
    /// Path (and query) of the 24 h tickers with quote volume.
    fn volumes_path(&self) -> &'static str;
    /// Parses the instrument list.
    ///
    /// # Errors
    /// When the body is not the documented shape.
    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError>;
    /// Parses 24 h quote volumes by native symbol.
    ///
    /// # Errors
    /// When the body is not the documented shape.
    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError>;
    /// How many symbols one connection carries (within the exchange's stream caps).
    fn symbols_per_connection(&self) -> usize;
    /// The subscribe frames for these native symbols, batched within the exchange's
    /// per-request limits.
    fn subscribe_frames(&self, natives: &[String]) -> Vec<String>;
    /// Pause between subscribe frames (inbound message-rate limits).
    fn subscribe_pacing(&self) -> Duration;
    /// The keep-alive the client sends, if the exchange wants one (server pings are
    /// answered by the WebSocket layer).
    fn client_ping(&self) -> Option<ClientPing>;
    /// Parses one text frame, appending any events to `out`.
    ///
    /// # Errors
    /// When the frame is malformed or carries unusable data; the caller counts and drops it.
    fn parse(
        &self,
        text: &str,
        symbols: &SymbolMap,
        recv_ts_ns: i64,
        out: &mut Vec<Event>,
    ) -> Result<Control, ParseError>;
}

/// The registry: the adapter for an exchange, if one is built.
pub fn adapter(id: ExchangeId) -> Option<Box<dyn Adapter>> {
    match id {
        ExchangeId::Binance => Some(Box::new(binance::Binance)),
        ExchangeId::Okx => Some(Box::new(okx::Okx)),
        _ => None,
    }
}

/// Parses a decimal string as the exchanges send prices and sizes.
pub(crate) fn num(s: &str) -> Result<f64, ParseError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParseError::BadNumber(s.to_owned())),
    }
}

/// Builds a validated tick.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tick(
    exchange: ExchangeId,
    symbol: &Symbol,
    (bid_px, bid_qty): (f64, f64),
    (ask_px, ask_qty): (f64, f64),
    exchange_ts_ns: i64,
    recv_ts_ns: i64,
    seq: u64,
) -> Result<Tick, ParseError> {
    spreadagg_model::formulas::validate_quote(bid_px, bid_qty, ask_px, ask_qty)?;
    Ok(Tick {
        exchange: exchange.as_str().to_owned(),
        symbol: symbol.as_str().to_owned(),
        bid_px,
        bid_qty,
        ask_px,
        ask_qty,
        book_spread_pct: spreadagg_model::formulas::book_spread_pct(bid_px, ask_px),
        exchange_ts_ns,
        recv_ts_ns,
        seq,
    })
}

pub(crate) fn malformed(e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}
