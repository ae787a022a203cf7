//! The publishing side of an ingestor: events from the [`Conflator`], encoded as
//! `spreadagg.v1` protobufs and published with a `Nats-Msg-Id` derived from the exchange's own
//! ids, so a repeat (a rotation's overlap, a reconnect replaying the last book, or an
//! active-active replica) is stored once.
//!
//! The publisher never gives up on a message while the role runs: during a broker outage its
//! in-flight window waits and retries, and the conflator upstream keeps memory bounded. On
//! shutdown it flushes until `abandon` fires (the drain deadline); whatever is still
//! unacknowledged then is counted as dropped and logged.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::json;
use spreadagg_bus::{Bus, OutMessage};
use spreadagg_model::ExchangeId;
use spreadagg_model::formulas::book_spread_pct;
use spreadagg_runtime::Component;
use spreadagg_runtime::traces::HOT;
use tokio_util::sync::CancellationToken;

use crate::conflate::Conflator;
use crate::event::{Event, Print, Quote};
use crate::symbols::{SymbolEntry, SymbolTable};

/// Events taken from the conflator per round.
const BATCH: usize = 256;
/// Payload arena: messages are encoded into one buffer and split off it, so a message costs
/// no allocation of its own.
const ARENA_BYTES: usize = 64 * 1024;

/// Publishes until the conflator is closed and empty, then flushes (or gives up at
/// `abandon`, counting what is lost).
pub(crate) async fn run(
    exchange: ExchangeId,
    bus: Bus,
    max_in_flight: usize,
    source: Arc<Conflator>,
    symbols: Arc<RwLock<Arc<SymbolTable>>>,
    component: Component,
    abandon: CancellationToken,
) {
    let ex = exchange.as_str();
    let mut publisher = bus.publisher(max_in_flight).retry_forever();
    let mut encoder = Encoder::new(exchange);
    // Counted when the stream acknowledges them: stored, not merely sent.
    let stored_ticks =
        metrics::counter!("spreadagg_ingest_events_total", "exchange" => ex, "kind" => "tick");
    let stored_trades =
        metrics::counter!("spreadagg_ingest_events_total", "exchange" => ex, "kind" => "trade");
    let unknown = metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "any", "reason" => "unknown_symbol_id");
    let lost = metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "any", "reason" => "shutdown_unacknowledged");
    component.set(true, json!({"state": "publishing", "bus": bus.kind()}));
    let mut sent: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut abandoned = 0usize;
    'outer: loop {
        // While nothing new comes, the acknowledgements in flight are settled (and failed ones
        // republished) instead of waiting for the window to fill.
        let more = loop {
            tokio::select! {
                more = source.take(BATCH, &mut batch) => break more,
                r = publisher.settle() => if let Err(failed) = r {
                    lost.increment(1);
                    tracing::warn!(exchange = ex, error = %failed, "publish failed; message dropped");
                },
                () = abandon.cancelled() => break false,
            }
        };
        if !more && batch.is_empty() {
            break;
        }
        // The stage span: encoding and sending one batch (closed when the batch is done).
        let _stage = tracing::debug_span!(target: HOT, "ingest.publish_batch", exchange = ex, events = i64::try_from(batch.len()).unwrap_or(i64::MAX));
        let table = symbols
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut events = batch.drain(..);
        while let Some(event) = events.next() {
            let Some(msg) = encoder.encode(&table, &event) else {
                unknown.increment(1);
                continue;
            };
            let on_ack = if matches!(event, Event::Quote(_)) {
                stored_ticks.clone()
            } else {
                stored_trades.clone()
            };
            tokio::select! {
                r = publisher.publish_counted(msg, Some(on_ack)) => {
                    if let Err(failed) = r {
                        // Not with retry_forever; kept so a change of policy cannot go silent.
                        lost.increment(1);
                        tracing::warn!(exchange = ex, error = %failed, "publish failed; message dropped");
                    }
                }
                () = abandon.cancelled() => {
                    // This one and the rest of the batch never went out.
                    abandoned += 1 + events.len();
                    break 'outer;
                }
            }
            sent += 1;
            if sent.is_multiple_of(4096) {
                let (quotes, trades) = source.depth();
                component.set(true, json!({"state": "publishing", "bus": bus.kind(), "sent": sent, "pending_ticks": quotes, "pending_trades": trades, "in_flight": publisher.in_flight()}));
            }
        }
        if !more {
            break;
        }
    }
    if abandoned == 0 {
        tokio::select! {
            r = publisher.flush() => if let Err(failed) = r {
                lost.increment(1);
                tracing::warn!(exchange = ex, error = %failed, "final flush failed; message dropped");
            },
            () = abandon.cancelled() => {}
        }
    }
    // What the deadline cut off: unacknowledged publishes, the unsent rest of the batch, and
    // whatever the conflator still holds.
    abandoned += publisher.abandon();
    source.close();
    let mut rest = Vec::new();
    while !rest.is_empty() || source.take(usize::MAX, &mut rest).await {
        abandoned += rest.len();
        rest.clear();
    }
    if abandoned > 0 {
        lost.increment(abandoned as u64);
        tracing::warn!(
            exchange = ex,
            lost = abandoned,
            "drain deadline reached with messages unacknowledged; they are lost"
        );
    }
    component.set(
        false,
        json!({"state": "stopped", "sent": sent, "lost_at_shutdown": abandoned}),
    );
}

/// Encodes events into bus messages. Payloads are written field by field (the protobuf wire
/// format of `spreadagg.v1.Tick` / `Trade`, zero values omitted as proto3 does) straight from
/// the interned names, into a shared arena.
#[derive(Debug)]
pub struct Encoder {
    exchange: ExchangeId,
    arena: BytesMut,
    id: String,
}

impl Encoder {
    pub fn new(exchange: ExchangeId) -> Self {
        Self {
            exchange,
            arena: BytesMut::with_capacity(ARENA_BYTES),
            id: String::with_capacity(96),
        }
    }

    /// The bus message for an event; `None` when its symbol id is not in `table`.
    pub fn encode(&mut self, table: &SymbolTable, event: &Event) -> Option<OutMessage> {
        let entry = table.get(event.symbol())?;
        Some(match event {
            Event::Quote(q) => OutMessage {
                subject: entry.tick_subject.clone(),
                msg_id: self.tick_id(entry, q),
                payload: self.tick_payload(entry, q),
            },
            Event::Print(p) => OutMessage {
                subject: entry.trade_subject.clone(),
                msg_id: self.trade_id(entry, p),
                payload: self.trade_payload(entry, p),
            },
        })
    }

    /// `tick:<exchange>:<symbol>:<seq>:<exchange_ts>`: the exchange's update id identifies a
    /// book state, with the exchange's time so an update id that restarts after maintenance
    /// cannot make a new tick look like an old one. Without an update id (seq 0) the
    /// exchange's time and the quote itself identify it (`t<ts>:<bid>/<qty>/<ask>/<qty>`: the
    /// same update read by two connections is stored once, two updates of one millisecond
    /// both are); with neither, only the receive time can tell ticks apart.
    fn tick_id(&mut self, entry: &SymbolEntry, q: &Quote) -> String {
        self.id.clear();
        let ex = self.exchange.as_str();
        let sym = entry.symbol.as_str();
        if q.seq == 0 && q.exchange_ts_ns != 0 {
            let _ = write!(
                self.id,
                "tick:{ex}:{sym}:t{}:{}/{}/{}/{}",
                q.exchange_ts_ns, q.bid_px, q.bid_qty, q.ask_px, q.ask_qty
            );
        } else if q.seq == 0 {
            let _ = write!(self.id, "tick:{ex}:{sym}:r{}", q.recv_ts_ns);
        } else {
            let _ = write!(self.id, "tick:{ex}:{sym}:{}:{}", q.seq, q.exchange_ts_ns);
        }
        self.id.clone()
    }

    fn trade_id(&mut self, entry: &SymbolEntry, p: &Print) -> String {
        self.id.clear();
        let _ = write!(
            self.id,
            "trade:{}:{}:{}",
            self.exchange.as_str(),
            entry.symbol.as_str(),
            p.trade_id
        );
        self.id.clone()
    }

    fn reserve(&mut self, n: usize) {
        if self.arena.capacity() - self.arena.len() < n {
            self.arena = BytesMut::with_capacity(ARENA_BYTES.max(n));
        }
    }

    fn tick_payload(&mut self, entry: &SymbolEntry, q: &Quote) -> Bytes {
        let ex = self.exchange.as_str();
        let sym = entry.symbol.as_str();
        self.reserve(ex.len() + sym.len() + 96);
        let b = &mut self.arena;
        put_str(1, ex, b);
        put_str(2, sym, b);
        put_f64(3, q.bid_px, b);
        put_f64(4, q.bid_qty, b);
        put_f64(5, q.ask_px, b);
        put_f64(6, q.ask_qty, b);
        put_f64(7, book_spread_pct(q.bid_px, q.ask_px), b);
        put_i64(8, q.exchange_ts_ns, b);
        put_i64(9, q.recv_ts_ns, b);
        put_u64(10, q.seq, b);
        self.arena.split().freeze()
    }

    fn trade_payload(&mut self, entry: &SymbolEntry, p: &Print) -> Bytes {
        let ex = self.exchange.as_str();
        let sym = entry.symbol.as_str();
        self.reserve(ex.len() + sym.len() + p.trade_id.len() + 96);
        let b = &mut self.arena;
        put_str(1, ex, b);
        put_str(2, sym, b);
        put_f64(3, p.price, b);
        put_f64(4, p.qty, b);
        put_u64(5, u64::from(p.side as i32 as u32), b);
        put_str(6, &p.trade_id, b);
        put_i64(7, p.exchange_ts_ns, b);
        put_i64(8, p.recv_ts_ns, b);
        self.arena.split().freeze()
    }
}

fn put_str(tag: u32, s: &str, b: &mut BytesMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, b);
        encode_varint(s.len() as u64, b);
        b.put_slice(s.as_bytes());
    }
}

fn put_f64(tag: u32, v: f64, b: &mut BytesMut) {
    if v.to_bits() != 0 {
        encode_key(tag, WireType::SixtyFourBit, b);
        b.put_f64_le(v);
    }
}

fn put_i64(tag: u32, v: i64, b: &mut BytesMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, b);
        // int64 is a plain two's-complement varint on the wire.
        encode_varint(v as u64, b);
    }
}

fn put_u64(tag: u32, v: u64, b: &mut BytesMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, b);
        encode_varint(v, b);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use spreadagg_model::wire::{Side, Tick, Trade};

    use super::*;
    use crate::symbols::SymbolId;

    fn table() -> SymbolTable {
        SymbolTable::from_pairs(ExchangeId::Okx, [("BTC-USDT", "BTC-USDT")])
    }

    fn quote(seq: u64, exchange_ts_ns: i64, recv_ts_ns: i64) -> Event {
        Event::Quote(Quote {
            symbol: SymbolId(0),
            bid_px: 101.0,
            bid_qty: 2.0,
            ask_px: 101.5,
            ask_qty: 0.25,
            exchange_ts_ns,
            recv_ts_ns,
            seq,
        })
    }

    #[test]
    fn payloads_decode_as_the_contract_messages() {
        let mut enc = Encoder::new(ExchangeId::Okx);
        let msg = enc
            .encode(&table(), &quote(7, 1_597_026_383_085_000_000, -5))
            .expect("known symbol");
        let tick = Tick::decode(msg.payload).expect("a Tick");
        assert_eq!(
            tick,
            Tick {
                exchange: "okx".into(),
                symbol: "BTC-USDT".into(),
                bid_px: 101.0,
                bid_qty: 2.0,
                ask_px: 101.5,
                ask_qty: 0.25,
                book_spread_pct: book_spread_pct(101.0, 101.5),
                exchange_ts_ns: 1_597_026_383_085_000_000,
                recv_ts_ns: -5,
                seq: 7,
            }
        );
        assert_eq!(msg.subject, "md.tick.okx.BTC-USDT");
        let print = Event::Print(Print {
            symbol: SymbolId(0),
            price: 42219.9,
            qty: 0.12,
            side: Side::Sell,
            trade_id: "130639474".into(),
            exchange_ts_ns: 1,
            recv_ts_ns: 2,
        });
        let msg = enc.encode(&table(), &print).expect("known symbol");
        assert_eq!(
            (msg.subject.as_str(), msg.msg_id.as_str()),
            ("md.trade.okx.BTC-USDT", "trade:okx:BTC-USDT:130639474")
        );
        let trade = Trade::decode(msg.payload).expect("a Trade");
        assert_eq!(trade.side(), Side::Sell);
        assert_eq!(
            (trade.price, trade.qty, trade.trade_id.as_str()),
            (42219.9, 0.12, "130639474")
        );
        assert_eq!((trade.exchange_ts_ns, trade.recv_ts_ns), (1, 2));
        // Byte for byte what prost writes.
        assert_eq!(
            enc.encode(&table(), &quote(7, 3, 4))
                .expect("known")
                .payload
                .as_ref(),
            Tick::decode(
                enc.encode(&table(), &quote(7, 3, 4))
                    .expect("known")
                    .payload
            )
            .expect("tick")
            .encode_to_vec()
        );
    }

    #[test]
    fn message_ids_identify_exchange_updates() {
        let mut enc = Encoder::new(ExchangeId::Okx);
        let t = table();
        let mut id = |e: &Event| enc.encode(&t, e).expect("known").msg_id;
        // The same update received twice (rotation overlap, or a second replica) is one id.
        assert_eq!(id(&quote(7, 1_000, 1)), id(&quote(7, 1_000, 2)));
        assert_eq!(id(&quote(7, 1_000, 1)), "tick:okx:BTC-USDT:7:1000");
        // An update id reused after an exchange restart, at another time, is another id.
        assert_ne!(id(&quote(7, 1_000, 1)), id(&quote(7, 9_000, 2)));
        // Without an update id, the exchange's time and the quote identify the update: read
        // twice it is one id; another quote in the same millisecond is another.
        assert_eq!(id(&quote(0, 1_000, 1)), id(&quote(0, 1_000, 2)));
        let mut other = quote(0, 1_000, 1);
        if let Event::Quote(q) = &mut other {
            q.bid_qty += 1.0;
        }
        assert_ne!(id(&quote(0, 1_000, 1)), id(&other));
        // With neither, only the receive time tells ticks apart.
        assert_ne!(id(&quote(0, 0, 1)), id(&quote(0, 0, 2)));
    }

    #[test]
    fn an_unknown_symbol_id_is_refused() {
        let mut enc = Encoder::new(ExchangeId::Okx);
        let mut e = quote(1, 1, 1);
        if let Event::Quote(q) = &mut e {
            q.symbol = SymbolId(5);
        }
        assert!(enc.encode(&table(), &e).is_none());
    }
}
