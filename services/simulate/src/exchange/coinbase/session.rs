//! One Coinbase Advanced Trade WebSocket connection.
//!
//! - A client that has not subscribed within 5 s of connecting is disconnected.
//! - `{"type":"subscribe","product_ids":[..],"channel":".."}`: one channel per message (a
//!   `channels` list, or none, is refused); `heartbeats` takes no products; `level2`,
//!   `market_trades` and `ticker` need them. A request naming an unknown product or channel
//!   changes nothing and is answered `{"type":"error","message":".."}`.
//! - Every accepted subscribe or unsubscribe is answered by a `subscriptions` push listing
//!   everything the connection holds.
//! - Unauthenticated clients may send 8 messages per second (Coinbase counts per IP; the
//!   simulator per connection); more are answered with an error and dropped.
//! - Every push carries `sequence_num`, counting this connection's pushes from 0; errors
//!   carry none.
//! - `heartbeats`: one push a second once subscribed. Without them, a connection that has had
//!   no push for [`IDLE_CLOSE`] is closed, as Coinbase warns.
//! - `level2` pushes on channel `l2_data`: a `snapshot` on subscribing, then `update` events.
//!   The market model has a top of book only, so the book is synthesized: [`DEPTH`] levels a
//!   side, one tick apart from the model's best bid/ask, the top with the model's size and
//!   the levels below with a size fixed by their price; each model quote becomes one update
//!   with the levels that changed ("0" for those that went).
//! - At most [`MAX_LEVEL2_PRODUCTS`] `level2` products per connection: a subscribe past it
//!   changes nothing and is answered `{"type":"error","message":"too many L2 streams requested
//!   in a single session"}` ([`TOO_MANY_L2_STREAMS`]). Coinbase documents no limit; a user
//!   reported this refusal past about 16 products (JKorf/Coinbase.Net issue #19, Jan 2026).
//! - The `oversized` fault's frame is over 64 MiB ([`crate::COINBASE_OVERSIZED_BYTES`]):
//!   Coinbase's level2 snapshots are several MB, so its clients accept large messages.
//! - `market_trades`: a `snapshot` of the last trade on subscribing, then one `update` per
//!   trade (`side` the taker's).
//! - `ticker`: pushed only when a trade happens, with the best bid/ask at that moment, as
//!   Coinbase does: stale between trades.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::wire::{self, Level, TickerFields, TradeFields};
use crate::format::{float, trimmed};
use crate::market::{Board, Book, Instrument, MarketEvent, Universe, now_us};
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};
use crate::ws::{End, RateWindow};

/// A client must subscribe this soon after connecting.
pub(crate) const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(5);
/// Heartbeats period.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Without heartbeats, a connection on which nothing was pushed this long is closed ("most
/// channels close within 60-90 seconds if no updates are sent").
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Client messages per second.
pub(crate) const MAX_MESSAGES_PER_SECOND: usize = 8;
/// Synthesized levels per side.
pub(crate) const DEPTH: i64 = 5;
/// `level2` products one connection may hold.
pub(crate) const MAX_LEVEL2_PRODUCTS: usize = 16;
/// The refusal of a `level2` subscribe past [`MAX_LEVEL2_PRODUCTS`], as reported of Coinbase.
pub(crate) const TOO_MANY_L2_STREAMS: &str = "too many L2 streams requested in a single session";
/// Longest client text echoed in an error.
const MAX_ECHO: usize = 64;

/// The channels the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Level2,
    MarketTrades,
    Ticker,
    Heartbeats,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "level2" => Channel::Level2,
            "market_trades" => Channel::MarketTrades,
            "ticker" => Channel::Ticker,
            "heartbeats" => Channel::Heartbeats,
            _ => return None,
        })
    }

    const fn flag(self) -> u8 {
        match self {
            Channel::Level2 => 1,
            Channel::MarketTrades => 2,
            Channel::Ticker => 4,
            Channel::Heartbeats => 0,
        }
    }
}

fn echo(text: &str) -> &str {
    if text.len() <= MAX_ECHO {
        return text;
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The synthesized book of one product as last sent: (price, size) in ticks and lots, best
/// first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Levels {
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

/// A size for a level below the top, fixed by its price so that it does not churn: 1 to 8
/// whole units.
fn depth_qty(price: i64, inst: &Instrument) -> i64 {
    let h = (price as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61;
    (h as i64 + 1) * crate::format::pow10(inst.qty_decimals)
}

/// The synthesized book around a model top of book.
pub(crate) fn synthesize(book: &Book, inst: &Instrument) -> Levels {
    synthesize_depth(book, inst, DEPTH)
}

/// The synthesized book around a model top of book, `depth` levels a side.
pub(crate) fn synthesize_depth(book: &Book, inst: &Instrument, depth: i64) -> Levels {
    let bids = (0..depth)
        .map(|k| book.bid - k)
        .filter(|&p| p > 0)
        .enumerate()
        .map(|(k, p)| {
            (
                p,
                if k == 0 {
                    book.bid_qty
                } else {
                    depth_qty(p, inst)
                },
            )
        })
        .collect();
    let asks = (0..depth)
        .map(|k| book.ask + k)
        .enumerate()
        .map(|(k, p)| {
            (
                p,
                if k == 0 {
                    book.ask_qty
                } else {
                    depth_qty(p, inst)
                },
            )
        })
        .collect();
    Levels { bids, asks }
}

/// The changes from `old` to `new` on one side: removed levels at size 0, new or resized
/// levels at their size.
fn diff(old: &[(i64, i64)], new: &[(i64, i64)], out: &mut Vec<(i64, i64)>) {
    for &(p, _) in old {
        if !new.iter().any(|&(np, _)| np == p) {
            out.push((p, 0));
        }
    }
    for &(p, q) in new {
        if !old.contains(&(p, q)) {
            out.push((p, q));
        }
    }
}

/// One connection's protocol state. Pure apart from reading the board.
#[derive(Debug)]
pub(crate) struct Session {
    universe: Arc<Universe>,
    board: Arc<Board>,
    exchange: usize,
    /// Per symbol: subscribed channels (`Channel::flag` bits).
    wants: Vec<u8>,
    heartbeats: bool,
    subscribed_ever: bool,
    connected: Instant,
    next_heartbeat: Instant,
    heartbeat_counter: u64,
    /// When a frame last went out.
    last_push: Instant,
    /// The next push's `sequence_num`.
    seq: u64,
    messages: RateWindow,
    /// Per symbol: the level2 book last sent.
    books: Vec<Option<Levels>>,
    /// Per symbol: the latest model book seen (the ticker's best bid/ask).
    tops: Vec<Option<Book>>,
    /// Levels a side in a `level2` snapshot ([`DEPTH`]; deeper in tests of large snapshots:
    /// the levels past [`DEPTH`] are deleted by the first update).
    snapshot_depth: i64,
}

impl Session {
    pub(crate) fn new(universe: Arc<Universe>, board: Arc<Board>, exchange: usize) -> Self {
        let n = universe.instruments.len();
        let now = Instant::now();
        Self {
            universe,
            board,
            exchange,
            wants: vec![0; n],
            heartbeats: false,
            subscribed_ever: false,
            connected: now,
            next_heartbeat: now + HEARTBEAT_EVERY,
            heartbeat_counter: 0,
            last_push: now,
            seq: 0,
            messages: RateWindow::new(MAX_MESSAGES_PER_SECOND, Duration::from_secs(1)),
            books: vec![None; n],
            tops: vec![None; n],
            snapshot_depth: DEPTH,
        }
    }

    /// Snapshots of `depth` levels a side (a Coinbase BTC-USD snapshot is several MB).
    #[cfg(test)]
    pub(crate) fn with_snapshot_depth(mut self, depth: i64) -> Self {
        self.snapshot_depth = depth;
        self
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn held(&self) -> Vec<(&'static str, Vec<&str>)> {
        let mut held = Vec::new();
        for (name, ch) in [
            ("level2", Channel::Level2),
            ("market_trades", Channel::MarketTrades),
            ("ticker", Channel::Ticker),
        ] {
            let products: Vec<&str> = self
                .universe
                .instruments
                .iter()
                .zip(&self.wants)
                .filter(|(_, w)| **w & ch.flag() != 0)
                .map(|(i, _)| i.symbol.as_str())
                .collect();
            if !products.is_empty() {
                held.push((name, products));
            }
        }
        if self.heartbeats {
            held.push(("heartbeats", vec!["heartbeats"]));
        }
        held
    }

    /// Answers one client message: the frames, and the label of a refusal.
    pub(crate) fn handle(
        &mut self,
        text: &str,
        now: Instant,
    ) -> (Vec<String>, Option<&'static str>) {
        let refuse = |msg: String, why| (vec![wire::error(&msg)], Some(why));
        if !self.messages.allow(now) {
            return refuse("rate limit exceeded".into(), "rate_limited");
        }
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return refuse(format!("malformed request: {}", echo(text)), "invalid_json");
        };
        let subscribe = match msg.get("type").and_then(Value::as_str) {
            Some("subscribe") => true,
            Some("unsubscribe") => false,
            _ => {
                return refuse(
                    "type must be subscribe or unsubscribe".into(),
                    "invalid_type",
                );
            }
        };
        if msg.contains_key("channels") {
            return refuse(
                "only one channel per subscribe message: use \"channel\"".into(),
                "many_channels",
            );
        }
        let Some(name) = msg.get("channel").and_then(Value::as_str) else {
            return refuse("channel is required".into(), "no_channel");
        };
        let Some(channel) = Channel::parse(name) else {
            return refuse(
                format!("channel {} is not supported", echo(name)),
                "unknown_channel",
            );
        };
        let mut symbols = Vec::new();
        match msg.get("product_ids") {
            None => {}
            Some(Value::Array(ids)) => {
                for id in ids {
                    let Some(id) = id.as_str() else {
                        return refuse("product_ids must be strings".into(), "bad_product");
                    };
                    let Some(symbol) = self.universe.by_canonical(id) else {
                        return refuse(
                            format!("Failed to subscribe: product {} not found", echo(id)),
                            "unknown_product",
                        );
                    };
                    symbols.push(symbol);
                }
            }
            Some(_) => return refuse("product_ids must be a list".into(), "bad_product"),
        }
        let ts = now_us();
        let mut frames = Vec::new();
        if channel == Channel::Heartbeats {
            self.heartbeats = subscribe;
            if subscribe {
                self.next_heartbeat = now + HEARTBEAT_EVERY;
            }
        } else if subscribe {
            if symbols.is_empty() {
                return refuse(format!("{name} requires product_ids"), "no_products");
            }
            if channel == Channel::Level2 {
                let flag = Channel::Level2.flag();
                let held = self.wants.iter().filter(|w| **w & flag != 0).count();
                let mut new: Vec<usize> = symbols
                    .iter()
                    .copied()
                    .filter(|&s| self.wants.get(s).is_some_and(|w| w & flag == 0))
                    .collect();
                new.sort_unstable();
                new.dedup();
                if held + new.len() > MAX_LEVEL2_PRODUCTS {
                    return refuse(TOO_MANY_L2_STREAMS.into(), "too_many_l2_streams");
                }
            }
            for &s in &symbols {
                if let Some(w) = self.wants.get_mut(s) {
                    *w |= channel.flag();
                }
            }
        } else {
            // No products: the whole channel.
            let all: Vec<usize> = (0..self.wants.len()).collect();
            let which = if symbols.is_empty() { &all } else { &symbols };
            for &s in which {
                if let Some(w) = self.wants.get_mut(s) {
                    *w &= !channel.flag();
                }
                if channel == Channel::Level2
                    && let Some(b) = self.books.get_mut(s)
                {
                    *b = None;
                }
            }
        }
        self.subscribed_ever |= subscribe;
        let seq = self.next_seq();
        frames.push(wire::subscriptions(ts, seq, &self.held()));
        if subscribe {
            for &s in &symbols {
                if let Some(frame) = self.snapshot(channel, s, ts) {
                    frames.push(frame);
                }
            }
        }
        (frames, None)
    }

    /// The first push of a channel for a product, from the board.
    fn snapshot(&mut self, channel: Channel, symbol: usize, ts: i64) -> Option<String> {
        let view = self.board.get(self.exchange, symbol)?;
        let inst = self.universe.instruments.get(symbol)?.clone();
        let product = inst.symbol.as_str();
        let pd = inst.price_decimals;
        let qd = inst.qty_decimals;
        match channel {
            Channel::Level2 => {
                let levels = synthesize_depth(&view.quote.book, &inst, self.snapshot_depth);
                let text: Vec<(&'static str, String, String)> = levels
                    .bids
                    .iter()
                    .map(|&(p, q)| ("bid", trimmed(p, pd), trimmed(q, qd)))
                    .chain(
                        levels
                            .asks
                            .iter()
                            .map(|&(p, q)| ("offer", trimmed(p, pd), trimmed(q, qd))),
                    )
                    .collect();
                let at = view.quote.ts_us;
                let wire_levels: Vec<Level<'_>> = text
                    .iter()
                    .map(|(side, p, q)| Level {
                        side,
                        price: p,
                        qty: q,
                        event_time_us: at,
                    })
                    .collect();
                let seq = self.next_seq();
                let frame = wire::l2_data(ts, seq, "snapshot", product, &wire_levels);
                if let Some(b) = self.books.get_mut(symbol) {
                    *b = Some(levels);
                }
                Some(frame)
            }
            Channel::MarketTrades => {
                let s = view.quote.stats;
                let (price, size) = (trimmed(s.last, pd), trimmed(s.last_qty.max(1), qd));
                let last = (s.last_trade_id > 0).then(|| TradeFields {
                    trade_id: s.last_trade_id,
                    product,
                    price: &price,
                    size: &size,
                    taker_buy: true,
                    ts_us: view.last_trade_ts_us.unwrap_or(ts),
                });
                let fields: Vec<TradeFields<'_>> = last.into_iter().collect();
                let seq = self.next_seq();
                Some(wire::market_trades(ts, seq, "snapshot", &fields))
            }
            Channel::Ticker => {
                if let Some(t) = self.tops.get_mut(symbol) {
                    *t = Some(view.quote.book);
                }
                let seq = self.next_seq();
                Some(self.ticker_frame(
                    &inst,
                    &view.quote.book,
                    &view.quote.stats,
                    "snapshot",
                    ts,
                    seq,
                ))
            }
            Channel::Heartbeats => None,
        }
    }

    fn ticker_frame(
        &self,
        inst: &Instrument,
        book: &Book,
        stats: &crate::market::Stats,
        kind: &str,
        ts: i64,
        seq: u64,
    ) -> String {
        let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
        wire::ticker(
            ts,
            seq,
            kind,
            &TickerFields {
                product: inst.symbol.as_str(),
                price: &trimmed(stats.last, pd),
                volume_24h: &float(stats.base_volume, qd),
                low_24h: &trimmed(stats.low, pd),
                high_24h: &trimmed(stats.high, pd),
                best_bid: &trimmed(book.bid, pd),
                best_bid_qty: &trimmed(book.bid_qty, qd),
                best_ask: &trimmed(book.ask, pd),
                best_ask_qty: &trimmed(book.ask_qty, qd),
            },
        )
    }

    /// The pushes for one market event.
    pub(crate) fn encode(&mut self, event: &MarketEvent, out: &mut Vec<String>) {
        let ts = now_us();
        match event {
            MarketEvent::Quote(q) => {
                let wants = self.wants.get(q.symbol).copied().unwrap_or(0);
                if wants & Channel::Ticker.flag() != 0
                    && let Some(t) = self.tops.get_mut(q.symbol)
                {
                    *t = Some(q.book);
                }
                if wants & Channel::Level2.flag() == 0 {
                    return;
                }
                let Some(inst) = self.universe.instruments.get(q.symbol) else {
                    return;
                };
                let new = synthesize(&q.book, inst);
                let Some(slot) = self.books.get_mut(q.symbol) else {
                    return;
                };
                let old = slot.take().unwrap_or_default();
                let (mut bids, mut asks) = (Vec::new(), Vec::new());
                diff(&old.bids, &new.bids, &mut bids);
                diff(&old.asks, &new.asks, &mut asks);
                if !(bids.is_empty() && asks.is_empty()) {
                    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
                    let text: Vec<(&'static str, String, String)> = bids
                        .iter()
                        .map(|&(p, q)| ("bid", trimmed(p, pd), trimmed(q, qd)))
                        .chain(
                            asks.iter()
                                .map(|&(p, q)| ("offer", trimmed(p, pd), trimmed(q, qd))),
                        )
                        .collect();
                    let levels: Vec<Level<'_>> = text
                        .iter()
                        .map(|(side, p, qty)| Level {
                            side,
                            price: p,
                            qty,
                            event_time_us: q.ts_us,
                        })
                        .collect();
                    let seq = self.seq;
                    self.seq += 1;
                    out.push(wire::l2_data(
                        ts,
                        seq,
                        "update",
                        inst.symbol.as_str(),
                        &levels,
                    ));
                }
                if let Some(b) = self.books.get_mut(q.symbol) {
                    *b = Some(new);
                }
            }
            MarketEvent::Trade(t) => {
                let wants = self.wants.get(t.symbol).copied().unwrap_or(0);
                let universe = self.universe.clone();
                let Some(inst) = universe.instruments.get(t.symbol) else {
                    return;
                };
                let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
                if wants & Channel::MarketTrades.flag() != 0 {
                    let (price, size) = (trimmed(t.price, pd), trimmed(t.qty, qd));
                    let seq = self.next_seq();
                    out.push(wire::market_trades(
                        ts,
                        seq,
                        "update",
                        &[TradeFields {
                            trade_id: t.trade_id,
                            product: inst.symbol.as_str(),
                            price: &price,
                            size: &size,
                            taker_buy: t.taker_buy,
                            ts_us: t.ts_us,
                        }],
                    ));
                }
                if wants & Channel::Ticker.flag() != 0
                    && let Some(book) = self.tops.get(t.symbol).copied().flatten()
                    && let Some(view) = self.board.get(self.exchange, t.symbol)
                {
                    let seq = self.next_seq();
                    let frame =
                        self.ticker_frame(inst, &book, &view.quote.stats, "update", ts, seq);
                    out.push(frame);
                }
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.connected = now;
        self.last_push = now;
        self.next_heartbeat = now + HEARTBEAT_EVERY;
    }

    fn on_sent(&mut self, now: Instant) {
        self.last_push = now;
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text, now);
        Reply {
            frames: frames.into_iter().map(Frame::Text).collect(),
            rejected: rejected.into_iter().collect(),
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        let mut texts = Vec::new();
        self.encode(event, &mut texts);
        out.extend(texts.into_iter().map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.subscribed_ever {
            Some(self.connected + SUBSCRIBE_WITHIN)
        } else if self.heartbeats {
            Some(self.next_heartbeat)
        } else {
            Some(self.last_push + IDLE_CLOSE)
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Frame>) -> Result<(), End> {
        if !self.subscribed_ever {
            if now >= self.connected + SUBSCRIBE_WITHIN {
                return Err(End::NoSubscription);
            }
            return Ok(());
        }
        if !self.heartbeats && now >= self.last_push + IDLE_CLOSE {
            return Err(End::Idle);
        }
        if self.heartbeats && now >= self.next_heartbeat {
            self.heartbeat_counter += 1;
            let seq = self.next_seq();
            out.push(Frame::Text(wire::heartbeat(
                now_us(),
                seq,
                self.heartbeat_counter,
            )));
            self.next_heartbeat = now + HEARTBEAT_EVERY;
        }
        Ok(())
    }

    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "going away"),
            End::NoSubscription => (1000, "no subscribe message within 5 s"),
            End::Idle => (1000, "no updates"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    fn oversized_bytes(&self) -> usize {
        crate::fault::COINBASE_OVERSIZED_BYTES
    }

    /// Coinbase's answer to a subscription it will not serve: an error, no sequence number.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        (msg.get("type").and_then(Value::as_str) == Some("subscribe"))
            .then(|| vec![Frame::Text(wire::error("Failed to subscribe"))])
    }
}
