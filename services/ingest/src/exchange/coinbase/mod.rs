//! Coinbase Advanced Trade public market data, spot.
//!
//! Docs followed:
//! - <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-overview> (endpoint
//!   `wss://advanced-trade-ws.coinbase.com`; a `subscribe` must arrive within 5 s of connecting
//!   or the server disconnects; one channel per subscribe message),
//! - <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels> (`heartbeats`, `level2`
//!   whose pushes arrive on channel `l2_data`, `market_trades`, `ticker`, the `subscriptions`
//!   reply; "most channels close within 60-90 seconds if no updates are sent": subscribe to
//!   `heartbeats`; "-USDC" products return the same data as the "-USD" ones on market-data
//!   channels),
//! - <https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-rate-limits>
//!   (unauthenticated clients: 8 messages per second per IP),
//! - <https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/list-public-products>
//!   (`GET /api/v3/brokerage/market/products`: instruments and 24 h quote volume in one list).
//!
//! Subscribing: `{"type":"subscribe","product_ids":[..],"channel":"level2"}`, one message per
//! channel (`level2`, `market_trades`, and once per connection `heartbeats` without products).
//! There are no request ids: the server answers with a `subscriptions` push listing *everything*
//! the connection now holds, so a request is confirmed when every product it asked for is
//! listed under its channel. One such push may confirm several requests; the contract reports
//! one per frame, so the rest are reported on the next `subscriptions` or `heartbeats` frame
//! (Coinbase answers every subscribe with a `subscriptions` push, and heartbeats come every
//! second). Errors are `{"type":"error","message":".."}` and name no request: they are
//! reported as [`Control::Refused`] without one, so the request times out and is sent again;
//! except [`TOO_MANY_L2_STREAMS`] (below), which can only concern a `level2` request and is
//! reported against the oldest one awaiting confirmation. A retry (the same products) asks
//! again for the channel that failed only, not for both.
//!
//! Products per connection: at most [`SYMBOLS_PER_CONNECTION`] (15), all in one request per
//! channel. Coinbase documents no limit, but a user reported in January 2026 that more than
//! about 16 `level2` products on one connection are refused with `{"type":"error","message":
//! "too many L2 streams requested in a single session"}` (JKorf/Coinbase.Net issue #19). The
//! exact number and whether it ever changes are unknown to us; 15 stays under the reported
//! cap. Were it lower, the refusal is matched to its request (above), counted and retried,
//! so it shows in the subscribe-failure metrics instead of as a connection that quotes
//! nothing while `market_trades` keeps its data watchdog content.
//!
//! Message size: the BTC-USD `level2` snapshot is several MB (ccxt #23597), and Coinbase's
//! WebSocket best practices advise the largest receive buffer possible, so this exchange's
//! connections accept messages up to [`MAX_MESSAGE_BYTES`] (64 MiB; 1 MiB elsewhere).
//!
//! Best bid/ask: from `level2`, not `ticker`. The `ticker` channel is pushed only when a trade
//! happens, so its `best_bid`/`best_ask` are stale between trades. Measured in the simulator
//! (`spreadagg-simulate`'s `ticker_is_stale_between_trades_and_level2_is_not`: one market, 3
//! symbols quoted every 100 ms, a trade with probability 0.3 per quote, 30 000 events): the
//! ticker never showed 67 % of the top-of-book states, was wrong in 66 % of samples, and when
//! wrong its best bid/ask was a median 128 ms old (p90 561 ms, max 2.4 s); the book rebuilt
//! from level2 had the model's top after every event. The session keeps one
//! book per product (price -> size per side, `new_quantity` is the level's new size, "0" deletes
//! it), built from the `snapshot` event and the `update` events after it, and emits a quote
//! whenever the top of book (price or size) changes. Books exist only for the products this
//! connection asked `level2` for (a snapshot of any other product is rejected and creates
//! none), and a side keeps at most [`MAX_LEVELS_PER_SIDE`] levels: the farthest from the top
//! are dropped as levels are applied, the snapshot's too. So the books' memory per connection
//! is bounded by [`SYMBOLS_PER_CONNECTION`] x 2 sides x [`MAX_LEVELS_PER_SIDE`] levels (the
//! frame being read is bounded by [`MAX_MESSAGE_BYTES`] on top). A cut side remembers the best
//! price it dropped (its boundary) and ignores updates at or beyond it, so its kept levels are
//! exactly the exchange's levels better than the boundary; should the kept side run out, the
//! true best level is at or beyond the boundary, unknown, so the session asks to be replaced
//! (below).
//!
//! `sequence_num` counts every message of the connection. A gap (or a repeat) means a message
//! was lost, so the books can no longer be trusted: the session drops its books, ignores
//! further `l2_data` and returns [`Control::Rotate`] (again on every heartbeat, in case the
//! rotation was abandoned); a fresh connection starts from fresh
//! snapshots while this one keeps serving trades until it is closed (make before break). We
//! chose rotation over resubscribing on the same connection: an unsubscribe/subscribe pair for
//! every product would need ack matching against a list that changes under us, and a lost
//! message on one connection says little good about its near future.
//!
//! Trades: `market_trades`. The first event after subscribing is a `snapshot` of recent trades;
//! it is not re-emitted (a reconnect would publish old trades again), only `update` events are.
//! `side` is taken as the taker's side, as nautilus_trader and cryptofeed read it; Coinbase's
//! pages do not say.
//!
//! Times are RFC 3339 with up to nine fractional digits and are read exactly to the
//! nanosecond. A quote's exchange time is the latest `event_time` among the levels of its
//! event (the matching engine's time of the change, the same on every connection), or the
//! push's `timestamp` where every `event_time` is the epoch (the docs' snapshot example). Its
//! `seq` is 0: `sequence_num` is per connection, not per product, and cannot order updates
//! across connections (the conflator orders by exchange time then).
//!
//! Discovery: one list for both instruments and volumes. Products are mapped from
//! `base_currency_id`/`quote_currency_id`, never from the product id's text. Skipped: non-SPOT
//! products; products whose `alias` names another product (`BTC-USDC` -> `BTC-USD`: their
//! market data is the aliased product's, so publishing it would duplicate that book under
//! another name); and both products of any pair mapping to one canonical symbol (cryptofeed
//! #928: an auction product collided with BTC-USD), with a warning. A product that is not
//! `online`, is disabled or is cancel-only is listed as not trading.
//!
//! Uncertain in the docs and how it was resolved: the key under which `subscriptions` lists
//! `level2` (examples show `level2`; `l2_data` is accepted as well); a per-message product cap
//! (none documented; we send at most [`PRODUCTS_PER_REQUEST`]); the per-connection `level2`
//! cap (above); whether a `snapshot`'s
//! `event_time` is meaningful (the docs' example has the epoch, so the push's `timestamp` is
//! used then); the trade side (above); what an error reply looks like in detail (`message`, maybe
//! `reason`).

mod book;
mod wire;

use book::{Book, Level, level};

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, Session, SymbolId, SymbolTable, malformed, num, print, quote, rfc3339_ns,
};

/// Products per connection. Coinbase documents no limit, but reportedly refuses more than
/// about 16 `level2` products in one session ([`TOO_MANY_L2_STREAMS`]; see the module docs),
/// so we stay under it. Each product holds a book of up to 2 x [`MAX_LEVELS_PER_SIDE`] levels.
pub const SYMBOLS_PER_CONNECTION: usize = 15;
/// Products per subscribe message: all of a connection's at once (no cap is documented).
pub const PRODUCTS_PER_REQUEST: usize = SYMBOLS_PER_CONNECTION;
/// Levels kept per side of one product's book.
pub const MAX_LEVELS_PER_SIDE: usize = 1_000;
/// Largest message accepted: the BTC-USD level2 snapshot is several MB (ccxt #23597), and
/// Coinbase's WebSocket best practices advise the largest receive buffer possible.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The error Coinbase reportedly answers a `level2` subscribe with past its per-session cap
/// (JKorf/Coinbase.Net #19); it names no request, so it is matched to the outstanding
/// `level2` request.
pub const TOO_MANY_L2_STREAMS: &str = "too many L2 streams requested in a single session";

const LEVEL2: &str = "level2";
const MARKET_TRADES: &str = "market_trades";
const HEARTBEATS: &str = "heartbeats";

/// The Coinbase adapter.
#[derive(Debug, Clone, Copy)]
pub struct Coinbase;

/// A REST error body (`{"error":"..","message":".."}`) as a [`ParseError::Exchange`].
fn rest_error(r: &wire::Products<'_>) -> Option<ParseError> {
    let error = r.error.as_deref()?;
    let detail = r
        .message
        .as_deref()
        .or(r.error_details.as_deref())
        .unwrap_or("");
    Some(ParseError::Exchange(format!("{error}: {detail}")))
}

impl Adapter for Coinbase {
    fn id(&self) -> ExchangeId {
        ExchangeId::Coinbase
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://advanced-trade-ws.coinbase.com"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.coinbase.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            // Unauthenticated clients may send a few messages per second; three requests per
            // connection (two channels and heartbeats) go out well within the 5 s deadline.
            subscribe_pacing: Duration::from_millis(250),
            max_connection_age: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v3/brokerage/market/products?product_type=SPOT"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v3/brokerage/market/products?product_type=SPOT"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Products<'_> = serde_json::from_str(body).map_err(malformed)?;
        if let Some(e) = rest_error(&r) {
            return Err(e);
        }
        let products = r.products.ok_or_else(|| malformed("no products"))?;
        let mut by_symbol: HashMap<Symbol, Vec<Instrument>> = HashMap::new();
        let mut aliases = 0usize;
        for p in &products {
            if p.product_type != "SPOT" {
                continue;
            }
            if !p.alias.is_empty() && p.alias != p.product_id {
                aliases += 1;
                continue;
            }
            let Ok(symbol) = Symbol::from_parts(&p.base_currency_id, &p.quote_currency_id) else {
                continue;
            };
            let trading =
                p.status == "online" && !p.trading_disabled && !p.is_disabled && !p.cancel_only;
            by_symbol
                .entry(symbol.clone())
                .or_default()
                .push(Instrument {
                    native: p.product_id.clone().into_owned(),
                    symbol,
                    trading,
                    volume_key: None,
                });
        }
        if aliases > 0 {
            tracing::info!(
                exchange = "coinbase",
                products = aliases,
                "aliased products skipped (their market data is the aliased product's)"
            );
        }
        // Only trading products collide: an offline or delisted product must not knock out
        // the live one of the same pair (as Bybit's adapter does).
        let mut out = Vec::with_capacity(by_symbol.len());
        for (symbol, insts) in by_symbol {
            let trading = insts.iter().filter(|i| i.trading).count();
            if trading > 1 {
                let natives: Vec<&str> = insts
                    .iter()
                    .filter(|i| i.trading)
                    .map(|i| i.native.as_str())
                    .collect();
                tracing::warn!(exchange = "coinbase", symbol = %symbol, products = ?natives, "trading products mapping to one symbol; all skipped");
                out.extend(insts.into_iter().filter(|i| !i.trading));
            } else {
                out.extend(insts);
            }
        }
        out.sort_by(|a, b| a.native.cmp(&b.native));
        Ok(out)
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Products<'_> = serde_json::from_str(body).map_err(malformed)?;
        if let Some(e) = rest_error(&r) {
            return Err(e);
        }
        let products = r.products.ok_or_else(|| malformed("no products"))?;
        Ok(products
            .into_iter()
            .filter_map(|p| {
                // The approximate quote volume, else base volume times the last price.
                let v = num(&p.approximate_quote_24h_volume)
                    .or_else(|_| Ok::<_, ParseError>(num(&p.volume_24h)? * num(&p.price)?))
                    .ok()?;
                Some((p.product_id.into_owned(), v))
            })
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(CoinbaseSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        // The server's heartbeats keep the connection alive; the client sends nothing.
        None
    }
}

/// A subscribe request awaiting its confirmation.
#[derive(Debug)]
struct Pending {
    id: u64,
    channel: &'static str,
    products: Vec<String>,
}

/// One Coinbase connection: subscription bookkeeping, the sequence check and the books.
#[derive(Debug, Default)]
pub struct CoinbaseSession {
    pending: Vec<Pending>,
    /// Confirmed requests not yet reported (one is reported per frame).
    confirmed: VecDeque<u64>,
    heartbeats_requested: bool,
    /// Requests refused or unanswered (channel and products), so that their retry (the same
    /// products) asks for that channel only.
    failed: Vec<(&'static str, Vec<String>)>,
    /// The products this connection asked `level2` for: only these get a book.
    level2_products: HashSet<String>,
    last_seq: Option<u64>,
    /// One per `level2` product of this connection that sent its snapshot.
    books: HashMap<SymbolId, Book>,
    /// A message was lost (why): the books are gone and `l2_data` is ignored until replaced.
    desynced: Option<String>,
    /// Level updates of the frame being read, reused (up to [`SCRATCH_KEPT_LEVELS`]).
    scratch: Vec<Level>,
}

/// Levels the reused update buffer keeps between frames; a larger one (a deep snapshot) is
/// released at the next frame.
const SCRATCH_KEPT_LEVELS: usize = 4_096;

impl CoinbaseSession {
    fn request(
        &mut self,
        channel: &'static str,
        products: &[String],
        next_id: &mut u64,
    ) -> Request {
        let id = *next_id;
        *next_id += 1;
        let frame = if products.is_empty() {
            serde_json::json!({"type": "subscribe", "channel": channel})
        } else {
            serde_json::json!({"type": "subscribe", "product_ids": products, "channel": channel})
        };
        if channel == LEVEL2 {
            self.level2_products.extend(products.iter().cloned());
        }
        self.pending.push(Pending {
            id,
            channel,
            products: products.to_vec(),
        });
        Request {
            id,
            natives: products.to_vec(),
            frame: Outgoing::Text(frame.to_string()),
        }
    }

    /// Checks the connection's message counter; `Some(reason)` when a message was lost.
    fn sequence(&mut self, seq: Option<u64>) -> Option<String> {
        let seq = seq?;
        let gap = match self.last_seq {
            Some(last) if seq != last.wrapping_add(1) => Some(format!(
                "sequence_num {seq} after {last}: a message was lost"
            )),
            _ => None,
        };
        self.last_seq = Some(seq);
        gap
    }

    /// The books can no longer be trusted: drop them; the first time, ask to be replaced.
    fn desync(&mut self, reason: String) -> Control {
        self.books.clear();
        if self.desynced.is_some() {
            Control::Ignored
        } else {
            self.desynced = Some(reason.clone());
            Control::Rotate(reason)
        }
    }

    /// A request that failed (refused, or forgotten after its ack timed out): its retry asks
    /// for its channel only.
    fn failed(&mut self, request: u64) {
        if let Some(i) = self.pending.iter().position(|p| p.id == request) {
            let p = self.pending.remove(i);
            if p.channel != HEARTBEATS {
                self.failed.push((p.channel, p.products));
            }
        }
    }

    /// Coinbase refused a `level2` request past its per-session cap: the error names no
    /// request, so it is the oldest `level2` request still awaiting confirmation.
    fn refuse_level2(&mut self) -> Option<u64> {
        let id = self.pending.iter().find(|p| p.channel == LEVEL2)?.id;
        self.failed(id);
        Some(id)
    }

    /// The next confirmation to report, else `otherwise`.
    fn report(&mut self, otherwise: Control) -> Control {
        self.confirmed
            .pop_front()
            .map_or(otherwise, Control::Subscribed)
    }

    fn on_subscriptions(
        &mut self,
        held: &HashMap<std::borrow::Cow<'_, str>, Vec<std::borrow::Cow<'_, str>>>,
    ) {
        let listed = |channel: &str| -> Option<&Vec<std::borrow::Cow<'_, str>>> {
            held.get(channel)
                .or_else(|| (channel == LEVEL2).then(|| held.get("l2_data")).flatten())
        };
        let confirmed = &mut self.confirmed;
        self.pending.retain(|p| {
            let done = listed(p.channel).is_some_and(|list| {
                p.channel == HEARTBEATS || p.products.iter().all(|n| list.iter().any(|h| h == n))
            });
            if done {
                confirmed.push_back(p.id);
            }
            !done
        });
    }

    /// Applies one product's level2 event (its levels are in `self.scratch[range]`) and emits a
    /// quote when its top changed.
    #[allow(clippy::too_many_arguments)]
    fn on_l2_event(
        &mut self,
        product: &str,
        symbol: SymbolId,
        snapshot: bool,
        range: std::ops::Range<usize>,
        ts_ns: i64,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Option<Control>, ParseError> {
        if snapshot {
            // Books only for this connection's products: memory is bounded by what it asked.
            if !self.level2_products.contains(product) {
                return Err(malformed(format!(
                    "level2 snapshot of {product}, not subscribed on this connection"
                )));
            }
            self.books.insert(symbol, Book::default());
        }
        let Some(book) = self.books.get_mut(&symbol) else {
            return Err(malformed("level2 update before its snapshot"));
        };
        let levels = self.scratch.get(range).unwrap_or_default();
        book.apply(levels);
        // The time of the latest change the event carries (the same on every connection),
        // else the push's.
        let ts_ns = match levels.iter().map(|l| l.ts_ns).max() {
            Some(t) if t > 0 => t,
            _ => ts_ns,
        };
        if book.exhausted() {
            return Ok(Some(self.desync(
                "a book side ran empty after levels were cut; its best level is unknown".into(),
            )));
        }
        let best = book.best();
        if best == book.top {
            return Ok(None);
        }
        book.top = best;
        let Some([b, bq, a, aq]) = best else {
            return Ok(None);
        };
        out.events.push(Event::Quote(quote(
            symbol,
            (b, bq),
            (a, aq),
            ts_ns,
            recv_ts_ns,
            0,
        )?));
        Ok(None)
    }

    fn on_l2(
        &mut self,
        text: &str,
        ts_ns: i64,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let push: wire::Push<wire::L2Event<'_>> = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => return Ok(self.desync(format!("unreadable level2 push: {e}"))),
        };
        // Read everything before applying anything: a frame is applied whole or not at all.
        self.scratch.clear();
        let mut events = Vec::with_capacity(push.events.len());
        for e in &push.events {
            let snapshot = match e.kind.as_ref() {
                "snapshot" => true,
                "update" => false,
                other => return Ok(self.desync(format!("level2 event type {other:?}"))),
            };
            let start = self.scratch.len();
            for u in &e.updates {
                match level(
                    &u.side,
                    &u.price_level,
                    &u.new_quantity,
                    u.event_time.as_deref(),
                ) {
                    Ok(l) => self.scratch.push(l),
                    Err(err) => return Ok(self.desync(format!("unusable level2 update: {err}"))),
                }
            }
            events.push((e.product_id.as_ref(), snapshot, start..self.scratch.len()));
        }
        let mut first_err = None;
        for (product, snapshot, range) in events {
            let Some(symbol) = symbols.lookup(product) else {
                first_err.get_or_insert(ParseError::UnknownSymbol(product.to_owned()));
                continue;
            };
            match self.on_l2_event(product, symbol, snapshot, range, ts_ns, recv_ts_ns, out) {
                Ok(Some(control)) => return Ok(control),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if out.events.is_empty() => Err(e),
            _ => Ok(Control::Data),
        }
    }

    fn on_trades(
        text: &str,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        let push: wire::Push<wire::TradesEvent<'_>> =
            serde_json::from_str(text).map_err(malformed)?;
        let mut updates = false;
        for e in push.events {
            match e.kind.as_ref() {
                // Recent trades sent on subscribing: published before, not again.
                "snapshot" => continue,
                "update" => updates = true,
                other => return Err(malformed(format!("market_trades event type {other:?}"))),
            }
            for t in e.trades {
                let symbol = symbols
                    .lookup(&t.product_id)
                    .ok_or_else(|| ParseError::UnknownSymbol(t.product_id.to_string()))?;
                let side = match t.side.as_ref() {
                    "BUY" => Side::Buy,
                    "SELL" => Side::Sell,
                    other => return Err(malformed(format!("trade side {other:?}"))),
                };
                out.events.push(Event::Print(print(
                    symbol,
                    (num(&t.price)?, num(&t.size)?),
                    side,
                    t.trade_id.into_owned(),
                    rfc3339_ns(&t.time)?,
                    recv_ts_ns,
                )?));
            }
        }
        Ok(if updates {
            Control::Data
        } else {
            Control::Ignored
        })
    }

    /// The hot frame, an `l2_data` push of one event, read without a JSON parser.
    fn on_l2_fast(
        &mut self,
        f: &L2Fast<'_>,
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        if let Some(reason) = self.sequence(Some(f.seq)) {
            return Ok(self.desync(reason));
        }
        if self.desynced.is_some() {
            return Ok(Control::Ignored);
        }
        let ts_ns = match rfc3339_ns(f.timestamp) {
            Ok(t) => t,
            Err(e) => return Ok(self.desync(format!("unusable level2 push: {e}"))),
        };
        let symbol = symbols
            .lookup(f.product_id)
            .ok_or_else(|| ParseError::UnknownSymbol(f.product_id.to_owned()))?;
        let range = 0..self.scratch.len();
        match self.on_l2_event(
            f.product_id,
            symbol,
            f.snapshot,
            range,
            ts_ns,
            recv_ts_ns,
            out,
        )? {
            Some(control) => Ok(control),
            None => Ok(Control::Data),
        }
    }
}

impl Session for CoinbaseSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        let mut requests = Vec::new();
        // Heartbeats once per connection (and again when that request is retried: the retry
        // asks for no products).
        if natives.is_empty() || !self.heartbeats_requested {
            self.heartbeats_requested = true;
            requests.push(self.request(HEARTBEATS, &[], next_id));
        }
        // The retry of a failed request (the same products): its channel only, not both.
        if let Some(i) = self.failed.iter().position(|(_, p)| p == natives) {
            let (channel, _) = self.failed.swap_remove(i);
            requests.push(self.request(channel, natives, next_id));
            return requests;
        }
        for chunk in natives.chunks(PRODUCTS_PER_REQUEST) {
            requests.push(self.request(LEVEL2, chunk, next_id));
            requests.push(self.request(MARKET_TRADES, chunk, next_id));
        }
        requests
    }

    fn forget(&mut self, request: u64) {
        self.failed(request);
        self.confirmed.retain(|id| *id != request);
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
        // A deep snapshot grows the reused buffer to its size: give that memory back rather
        // than hold it for the connection's life.
        if self.scratch.capacity() > SCRATCH_KEPT_LEVELS {
            self.scratch = Vec::new();
        }
        if let Some(f) = l2_layout(text, &mut self.scratch) {
            return self.on_l2_fast(&f, symbols, recv_ts_ns, out);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        // Every message counts, whatever it carries.
        let gap = self.sequence(env.sequence_num);
        let lost = gap.map(|reason| self.desync(reason));
        if env.kind.as_deref() == Some("error") {
            if let Some(lost) = lost {
                return Ok(lost);
            }
            let mut reason = env.message.as_deref().unwrap_or("error").to_owned();
            if let Some(r) = env.reason.as_deref() {
                reason = format!("{reason}: {r}");
            }
            let request = if reason
                .to_ascii_lowercase()
                .contains(&TOO_MANY_L2_STREAMS.to_ascii_lowercase())
            {
                self.refuse_level2()
            } else {
                None
            };
            return Ok(Control::Refused { request, reason });
        }
        let channel = env
            .channel
            .as_deref()
            .ok_or_else(|| malformed("neither an error nor a channel push"))?;
        match channel {
            "subscriptions" => {
                let push: wire::Push<wire::SubscriptionsEvent<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                for e in &push.events {
                    self.on_subscriptions(&e.subscriptions);
                }
                Ok(lost.unwrap_or_else(|| self.report(Control::Ignored)))
            }
            // The frame after a gap is not used: the books are gone, and the successor
            // connection takes over.
            _ if lost.is_some() => Ok(lost.unwrap_or(Control::Ignored)),
            "l2_data" => {
                if self.desynced.is_some() {
                    return Ok(Control::Ignored);
                }
                // A level2 push that cannot be applied whole loses an update: the books go.
                let ts_ns = match env.timestamp.as_deref().map(rfc3339_ns) {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => return Ok(self.desync(format!("unusable level2 push: {e}"))),
                    None => return Ok(self.desync("level2 push without a timestamp".into())),
                };
                self.on_l2(text, ts_ns, symbols, recv_ts_ns, out)
            }
            "market_trades" => Self::on_trades(text, symbols, recv_ts_ns, out),
            // A desynced session repeats its request to be replaced every heartbeat, in case a
            // rotation was abandoned: its trades alone would keep the data watchdog content.
            "heartbeats" => Ok(match &self.desynced {
                Some(reason) => Control::Rotate(reason.clone()),
                None => self.report(Control::KeepAlive),
            }),
            _ => Ok(self.report(Control::Ignored)),
        }
    }
}

/// The fields of a one-event `l2_data` push; its levels are in the session's scratch.
struct L2Fast<'a> {
    timestamp: &'a str,
    seq: u64,
    snapshot: bool,
    product_id: &'a str,
}

/// An `l2_data` push of one event exactly as Coinbase lays it out
/// (`{"channel":"l2_data","client_id":"","timestamp":"..","sequence_num":0,"events":[{"type":
/// "update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"..","price_level":
/// "21921.73","new_quantity":"0.06317902"},..]}]}`), read without a JSON parser into
/// `levels`; `None` for any other layout or an unusable level, which then go through serde.
fn l2_layout<'a>(text: &'a str, levels: &mut Vec<Level>) -> Option<L2Fast<'a>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"channel":"l2_data","client_id":"","timestamp":""#)?;
    let timestamp = l.until_quote()?;
    l.lit(r#","sequence_num":"#)?;
    let seq = l.uint()?;
    l.lit(r#","events":[{"type":""#)?;
    let snapshot = match l.until_quote()? {
        "update" => false,
        "snapshot" => true,
        _ => return None,
    };
    l.lit(r#","product_id":""#)?;
    let product_id = l.until_quote()?;
    l.lit(r#","updates":["#)?;
    levels.clear();
    if l.lit("]").is_none() {
        loop {
            l.lit(r#"{"side":""#)?;
            let side = l.until_quote()?;
            l.lit(r#","event_time":""#)?;
            let event_time = l.until_quote()?;
            l.lit(r#","price_level":""#)?;
            let px = l.until_quote()?;
            l.lit(r#","new_quantity":""#)?;
            let qty = l.until_quote()?;
            l.lit("}")?;
            levels.push(level(side, px, qty, Some(event_time)).ok()?);
            if l.lit(",").is_none() {
                break;
            }
        }
        l.lit("]")?;
    }
    l.lit("}]}")?;
    l.done().then_some(L2Fast {
        timestamp,
        seq,
        snapshot,
        product_id,
    })
}

#[cfg(test)]
mod tests;
