//! What flows through the hub: one decoded message from the bus, with what the registry needs
//! to route it (its channel, symbol and exchanges) and its encodings, each made at most once
//! and shared by every client it goes to.

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use spreadagg_model::wire::{Signal, SignalKind, Spread, Tick, Trade};
use spreadagg_model::{ExchangeId, Symbol};

use crate::pair::Pair;

/// The four live channels the hub carries. (`charts` is a client-facing channel made of the
/// spreads of one pair plus a chart snapshot; the hub routes it as [`Channel::Spreads`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Channel {
    Spreads,
    Ticks,
    Trades,
    Signals,
}

impl Channel {
    pub(crate) const ALL: [Channel; 4] = [
        Channel::Spreads,
        Channel::Ticks,
        Channel::Trades,
        Channel::Signals,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Channel::Spreads => "spreads",
            Channel::Ticks => "ticks",
            Channel::Trades => "trades",
            Channel::Signals => "signals",
        }
    }
}

/// The exchanges an event is about: a pair for a spread, one exchange for a tick or a trade,
/// none for a signal (it spans every exchange of its symbol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Venue {
    Pair(Pair),
    One(ExchangeId),
    None,
}

/// The decoded message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Spread(Spread),
    Tick(Tick),
    Trade(Trade),
    Signal(Signal),
}

/// One message on its way to clients.
#[derive(Debug)]
pub(crate) struct Event {
    /// Unique and increasing within the process: a client matched by several of its
    /// subscriptions is offered the event once.
    pub(crate) seq: u64,
    pub(crate) channel: Channel,
    pub(crate) symbol: Symbol,
    pub(crate) venue: Venue,
    pub(crate) payload: Payload,
    /// The JSON frame (`/ws`, REST), made by the first writer that needs it.
    json: OnceLock<Utf8Bytes>,
    /// The prototype's envelope (`/ws/realtime`), likewise.
    legacy: OnceLock<Option<Utf8Bytes>>,
}

/// Why a bus message is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unroutable {
    #[error("undecodable protobuf: {0}")]
    Undecodable(String),
    #[error("invalid symbol {0:?}")]
    InvalidSymbol(String),
    #[error("unknown exchange {0:?}")]
    UnknownExchange(String),
}

impl Unroutable {
    /// The `reason` label of `spreadagg_gateway_feed_rejected_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Unroutable::Undecodable(_) => "undecodable",
            Unroutable::InvalidSymbol(_) => "invalid_symbol",
            Unroutable::UnknownExchange(_) => "unknown_exchange",
        }
    }
}

fn symbol(s: &str) -> Result<Symbol, Unroutable> {
    s.parse()
        .map_err(|_| Unroutable::InvalidSymbol(s.chars().take(64).collect()))
}

fn exchange(s: &str) -> Result<ExchangeId, Unroutable> {
    s.parse()
        .map_err(|_| Unroutable::UnknownExchange(s.chars().take(32).collect()))
}

impl Event {
    /// Routes a decoded message.
    ///
    /// # Errors
    /// When its symbol is not canonical or it names an exchange this build does not know (it
    /// could not be filtered by exchange).
    pub(crate) fn new(seq: u64, payload: Payload) -> Result<Event, Unroutable> {
        let (channel, symbol, venue) = match &payload {
            Payload::Spread(s) => {
                let a = exchange(&s.exchange_a)?;
                let b = exchange(&s.exchange_b)?;
                let pair = Pair::new(a, b)
                    .ok_or_else(|| Unroutable::UnknownExchange(s.exchange_a.clone()))?;
                (Channel::Spreads, symbol(&s.symbol)?, Venue::Pair(pair))
            }
            Payload::Tick(t) => (
                Channel::Ticks,
                symbol(&t.symbol)?,
                Venue::One(exchange(&t.exchange)?),
            ),
            Payload::Trade(t) => (
                Channel::Trades,
                symbol(&t.symbol)?,
                Venue::One(exchange(&t.exchange)?),
            ),
            Payload::Signal(s) => (Channel::Signals, symbol(&s.symbol)?, Venue::None),
        };
        Ok(Event {
            seq,
            channel,
            symbol,
            venue,
            payload,
            json: OnceLock::new(),
            legacy: OnceLock::new(),
        })
    }

    /// The `/ws` JSON frame of this event.
    pub(crate) fn json(&self) -> Utf8Bytes {
        self.json
            .get_or_init(|| crate::json::event_frame(&self.payload))
            .clone()
    }

    /// The prototype's envelope of this event, if it has one (spreads and trades).
    pub(crate) fn legacy(&self) -> Option<Utf8Bytes> {
        self.legacy
            .get_or_init(|| crate::legacy::envelope(&self.payload))
            .clone()
    }

    /// A signal that is an entry and has not expired at `now_ns`.
    pub(crate) fn is_active_signal(&self, now_ns: i64) -> bool {
        matches!(&self.payload, Payload::Signal(s)
            if s.kind() == SignalKind::Entry && (s.expires_ts_ns == 0 || s.expires_ts_ns > now_ns))
    }
}
