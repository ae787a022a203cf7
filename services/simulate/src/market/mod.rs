//! The one market every simulated exchange quotes from.
//!
//! Prices live in USD per asset, so every pair is consistent with every other (`ETH-BTC` is
//! `ETH / BTC`, `BTC-USDC` tracks `BTC-USDT`): a common market factor plus an idiosyncratic
//! random walk per crypto asset, and a tight mean-reverting peg per stablecoin. Each exchange
//! quotes each symbol around that shared mid with its own basis, an Ornstein-Uhlenbeck process
//! of a few basis points (so cross-exchange spreads are small and mean-reverting), plus rare
//! jumps of 20-60 bps that decay over seconds (so spread signals fire now and then), and with
//! its own half-spread. Books are integer ticks and lots, so bid < ask and both are positive by
//! construction.
//!
//! [`Model`] is pure and deterministic for a seed: each (exchange, symbol) slot is due at its
//! own jittered time on a simulated clock, and all randomness comes from one seeded generator
//! in that order. [`run`] paces the model against the wall clock and broadcasts each step on
//! the exchange's channel; a slow session lags and skips (counted), the market never waits.
//!
//! Layout: [`universe`] (assets, listings, instruments and name lookups), [`model`] (the
//! random walk and books), [`board`] (the latest quote per slot, for REST and first pushes),
//! and here the event types and the pacing task.

mod board;
mod model;
#[cfg(test)]
mod tests;
mod universe;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub(crate) use board::{Board, SlotView};
pub(crate) use model::Model;
pub(crate) use universe::{DEFAULT_SYMBOLS, Instrument, Universe};

/// If the pacing task falls further behind than this (a suspended process, a starved
/// runtime), it skips ahead instead of bursting the backlog at clients.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// Best bid and ask in integer ticks and lots, with order counts (OKX publishes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Book {
    pub bid: i64,
    pub bid_qty: i64,
    pub ask: i64,
    pub ask_qty: i64,
    pub bid_orders: u32,
    pub ask_orders: u32,
}

/// Rolling 24 h statistics of one exchange's symbol, in ticks and quote/base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub last: i64,
    pub last_qty: i64,
    /// In the quote currency.
    pub quote_volume: f64,
    /// In the base currency.
    pub base_volume: f64,
    pub trade_count: u64,
    pub last_trade_id: u64,
}

/// A new best bid/ask on one exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quote {
    pub symbol: usize,
    /// Increases with every book change of this (exchange, symbol): Binance `u`, OKX `seqId`.
    pub seq: u64,
    pub book: Book,
    pub stats: Stats,
    /// Wall-clock time of the event, Unix microseconds.
    pub ts_us: i64,
}

/// A trade on one exchange, at its current best bid (taker sold) or ask (taker bought).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trade {
    pub symbol: usize,
    pub seq: u64,
    pub trade_id: u64,
    pub price: i64,
    pub qty: i64,
    pub taker_buy: bool,
    pub ts_us: i64,
}

/// What the market broadcasts to one exchange's sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MarketEvent {
    Quote(Quote),
    Trade(Trade),
}

/// One step of the model: a slot came due and quoted, and maybe traded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub exchange: usize,
    pub quote: Quote,
    pub trade: Option<Trade>,
}

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> i64 {
    spreadagg_model::time::now_ns() / 1_000
}

/// Paces the model against the wall clock until `stop`, publishing each step to the board and
/// to its exchange's channel. Sending never blocks: a receiver that falls behind by more than
/// the channel's capacity loses the oldest events and is told how many (it counts them).
pub(crate) async fn run(
    mut model: Model,
    board: Arc<Board>,
    channels: Vec<broadcast::Sender<MarketEvent>>,
    stop: CancellationToken,
) {
    let labels: Vec<&'static str> = model
        .universe
        .exchanges
        .iter()
        .map(|e| e.as_str())
        .collect();
    let mut start = tokio::time::Instant::now();
    loop {
        let due_us = model.peek_due();
        if due_us == u64::MAX {
            break;
        }
        let due = start + Duration::from_micros(due_us);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let now = tokio::time::Instant::now();
        if now > due + MAX_CATCH_UP {
            start += now - due;
            tracing::warn!(
                behind_ms = (now - due).as_millis() as u64,
                "simulated market fell behind the wall clock; skipping ahead"
            );
        }
        // Everything due by now goes out in this wake-up.
        let horizon = now.saturating_duration_since(start).as_micros() as u64;
        while model.peek_due() <= horizon {
            let Some(step) = model.step(now_us()) else {
                break;
            };
            board.apply(&step);
            let label = labels.get(step.exchange).copied().unwrap_or("unknown");
            if let Some(tx) = channels.get(step.exchange) {
                // An error only means nobody is subscribed right now.
                let _ = tx.send(MarketEvent::Quote(step.quote));
                metrics::counter!("spreadagg_sim_events_total", "exchange" => label, "kind" => "quote")
                    .increment(1);
                if let Some(trade) = step.trade {
                    let _ = tx.send(MarketEvent::Trade(trade));
                    metrics::counter!("spreadagg_sim_events_total", "exchange" => label, "kind" => "trade")
                        .increment(1);
                }
            }
        }
    }
    tracing::debug!("simulated market stopped");
}
