//! MEXC frame encoding: JSON text for answers and pongs, and binary protobuf for pushes.
//!
//! The protobuf is written by hand from the field numbers MEXC publishes (the repository
//! `mexcdevelop/websocket-proto`), not generated from the ingestor's schema, so a client
//! tested against the simulator is tested against the wire format rather than against a
//! shared understanding of it. Pushes also carry fields no published schema declares (see
//! [`deal`]), because MEXC keeps adding fields and clients must skip what they do not know.

use crate::format::fixed;
use crate::market::{Instrument, Quote, Trade};

/// The envelope's field numbers (`PushDataV3ApiWrapper`).
mod envelope {
    pub const CHANNEL: u64 = 1;
    pub const SYMBOL: u64 = 3;
    pub const SYMBOL_ID: u64 = 4;
    pub const CREATE_TIME: u64 = 5;
    pub const SEND_TIME: u64 = 6;
    pub const AGGRE_DEALS: u64 = 314;
    pub const AGGRE_BOOK_TICKER: u64 = 315;
}

/// Appends a base-128 varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// A length-delimited field (wire type 2): strings and nested messages.
fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A varint field (wire type 0); proto3 leaves zero values out.
fn varint_field(number: u64, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        varint(number << 3, out);
        varint(v, out);
    }
}

fn millis(ts_us: i64) -> u64 {
    u64::try_from(ts_us / 1_000).unwrap_or(0)
}

/// MEXC's symbol id is an opaque 32-hex-digit string; the simulator derives one per symbol.
fn symbol_id(inst: &Instrument) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in inst.concat.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{:016x}", h.rotate_left(29))
}

fn envelope(
    channel: &str,
    inst: &Instrument,
    create_ms: u64,
    send_ms: u64,
    body: (u64, &[u8]),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.1.len() + channel.len() + 80);
    bytes_field(envelope::CHANNEL, channel.as_bytes(), &mut out);
    bytes_field(envelope::SYMBOL, inst.concat.as_bytes(), &mut out);
    bytes_field(envelope::SYMBOL_ID, symbol_id(inst).as_bytes(), &mut out);
    varint_field(envelope::CREATE_TIME, create_ms, &mut out);
    varint_field(envelope::SEND_TIME, send_ms, &mut out);
    bytes_field(body.0, body.1, &mut out);
    out
}

/// A book ticker push on `channel`: `{bidPrice=1, bidQuantity=2, askPrice=3, askQuantity=4,
/// version=5, lastOrderCreateTime=6}` (5 and 6 since 2026-06).
pub(super) fn book_ticker(channel: &str, inst: &Instrument, q: &Quote, now_ms: i64) -> Vec<u8> {
    let (pd, qd) = (inst.price_decimals, inst.qty_decimals);
    let b = q.book;
    let mut body = Vec::with_capacity(64);
    bytes_field(1, fixed(b.bid, pd).as_bytes(), &mut body);
    bytes_field(2, fixed(b.bid_qty, qd).as_bytes(), &mut body);
    bytes_field(3, fixed(b.ask, pd).as_bytes(), &mut body);
    bytes_field(4, fixed(b.ask_qty, qd).as_bytes(), &mut body);
    bytes_field(5, q.seq.to_string().as_bytes(), &mut body);
    varint_field(6, millis(q.ts_us).saturating_sub(3), &mut body);
    let created = millis(q.ts_us);
    let sent = u64::try_from(now_ms).unwrap_or(created).max(created);
    envelope(
        channel,
        inst,
        created,
        sent,
        (envelope::AGGRE_BOOK_TICKER, &body),
    )
}

/// One deal: `{price=1, quantity=2, tradeType=3 (1 buy, 2 sell), time=4, tradeId=5}`, and two
/// fields that no published schema has (6, a version string, and 7, a varint), standing in
/// for whatever MEXC adds next.
fn deal(inst: &Instrument, t: &Trade, out: &mut Vec<u8>) {
    let mut d = Vec::with_capacity(64);
    bytes_field(1, fixed(t.price, inst.price_decimals).as_bytes(), &mut d);
    bytes_field(2, fixed(t.qty, inst.qty_decimals).as_bytes(), &mut d);
    varint_field(3, if t.taker_buy { 1 } else { 2 }, &mut d);
    varint_field(4, millis(t.ts_us), &mut d);
    bytes_field(5, t.trade_id.to_string().as_bytes(), &mut d);
    bytes_field(6, t.seq.to_string().as_bytes(), &mut d);
    varint_field(7, millis(t.ts_us).saturating_sub(1), &mut d);
    bytes_field(1, &d, out);
}

/// A deals push on `channel` (one deal per market trade): `{deals=1 repeated, eventType=2}`.
pub(super) fn deals(channel: &str, inst: &Instrument, t: &Trade, now_ms: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    deal(inst, t, &mut body);
    // The channel without its `@<symbol>`.
    let event_type = channel.rsplit_once('@').map_or(channel, |(head, _)| head);
    bytes_field(2, event_type.as_bytes(), &mut body);
    let created = millis(t.ts_us);
    let sent = u64::try_from(now_ms).unwrap_or(created).max(created);
    envelope(channel, inst, created, sent, (envelope::AGGRE_DEALS, &body))
}

/// `{"id":7,"code":0,"msg":"<topics, comma-separated>"}`: a subscription (or unsubscription)
/// that held.
pub(super) fn answer(id: u64, msg: &str) -> String {
    // In MEXC's key order; the message is escaped as a JSON string.
    format!(
        r#"{{"id":{id},"code":0,"msg":{}}}"#,
        serde_json::Value::from(msg)
    )
}

/// `{"id":0,"code":0,"msg":"Not Subscribed successfully! [<topics>].  Reason： Blocked! "}`,
/// as MEXC refuses a topic (spelling, spacing and full-width colon as the server writes it).
pub(super) fn refused(id: u64, topics: &str, reason: &str) -> String {
    answer(
        id,
        &format!("Not Subscribed successfully! [{topics}].  Reason： {reason} "),
    )
}

/// `{"id":0,"code":0,"msg":"PONG"}`
pub(super) fn pong() -> String {
    answer(0, "PONG")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_the_protobuf_wire_format() {
        let mut out = Vec::new();
        varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        bytes_field(315, b"ab", &mut out);
        assert_eq!(
            out,
            [0xda, 0x13, 0x02, b'a', b'b'],
            "field 315, wire type 2"
        );
        out.clear();
        varint_field(6, 1_736_412_092_433, &mut out);
        assert_eq!(out, [0x30, 0x91, 0xb0, 0xe7, 0xd1, 0xc4, 0x32]);
        out.clear();
        varint_field(3, 0, &mut out);
        assert!(out.is_empty(), "proto3 omits zero");
        assert_eq!(
            refused(0, "a,b", "Blocked!"),
            r#"{"id":0,"code":0,"msg":"Not Subscribed successfully! [a,b].  Reason： Blocked! "}"#
        );
    }
}
