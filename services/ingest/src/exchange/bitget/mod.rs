//! Bitget v2 public market data, spot (v1 is retired: cryptofeed #1102).
//!
//! Docs followed:
//! - <https://www.bitget.com/api-doc/common/websocket-intro>: endpoint
//!   `wss://ws.bitget.com/v2/ws/public`; the client sends the text `ping` and gets the text
//!   `pong`; at most 10 messages per second per connection, the `ping`s included, or the
//!   connection is closed; at most 1000 channels per connection, fewer than 50 advised; 240
//!   subscribe requests per hour per connection.
//! - <https://www.bitget.com/api-doc/spot/websocket/public/Tickers-Channel>: `ticker` pushes
//!   `{"action":"snapshot","arg":{"instType":"SPOT","channel":"ticker","instId":"ETHUSDT"},"data":[{"instId":"ETHUSDT","lastPr":..,"open24h":..,"high24h":..,"low24h":..,"change24h":..,"bidPr":..,"askPr":..,"bidSz":..,"askSz":..,"baseVolume":..,"quoteVolume":..,"openUtc":..,"changeUtc24h":..,"ts":"1695702438018"}],"ts":1695702438029}`
//!   on every change (100 to 300 ms): the best bid/ask comes from `bidPr`/`bidSz`/`askPr`/`askSz`.
//! - <https://www.bitget.com/api-doc/spot/websocket/public/Trades-Channel>: `trade` pushes
//!   `data[]` of `{"ts","price","size","side","tradeId"}`, `action` `snapshot` then `update`.
//! - <https://www.bitget.com/api-doc/spot/market/Get-Symbols> and
//!   <https://www.bitget.com/api-doc/spot/market/Get-Tickers>: discovery, `code` `"00000"`
//!   on success.
//! - Bitget's changelog of 2023-08-23: an error event carries the argument it concerns,
//!   `{"event":"error","arg":{..},"code":30003,"msg":"..","op":"subscribe"}`.
//!
//! Subscribe `{"op":"subscribe","args":[{"instType":"SPOT","channel":"ticker","instId":"BTCUSDT"},..]}`
//! is answered with one `{"event":"subscribe","arg":{..}}` per argument. Bitget's requests
//! carry no id, so acks (and errors) are matched by their argument (channel, instId) back to
//! the request that asked for it; a request is confirmed when every argument is.
//!
//! What the docs leave open, and what this adapter relies on:
//! - The keep-alive deadline: the intro page has said both "no `ping` for 30 s" and "for
//!   2 min" over time; we ping every 25 s, inside either.
//! - The most arguments one request may carry is not documented; a request carries at most
//!   [`ARGS_PER_REQUEST`] (50 channels, what Bitget advises per connection), so a connection
//!   of [`SYMBOLS_PER_CONNECTION`] symbols sends one request, far inside 240 per hour.
//! - `ticker` has no sequence id and the docs do not say whether its `ts` moves with every
//!   change of the book (it may be the time of the last trade). Quotes are therefore not
//!   sequence-gated (seq 0): one connection delivers them in order, and gating on `ts` could
//!   drop genuine changes that share a millisecond or an unchanged `ts`. `ts` is the
//!   exchange time.
//! - The `trade` snapshot right after subscribing repeats recent trades that were already
//!   published (or predate the subscription); it is not re-emitted on every reconnect. Only
//!   `update` pushes become trades.
//! - `side` is taken as the taker's side ("Transaction direction"), as Bitget's own SDKs and
//!   ccxt read it.
//! - The error code is a JSON number in Bitget's examples and a string in some captures;
//!   both are read.

mod wire;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::parse::refuse_collisions;
use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, Session, SymbolId, SymbolTable, malformed, num, print, quote,
};

/// Arguments (channels) per subscribe request.
pub(crate) const ARGS_PER_REQUEST: usize = 50;
/// Two channels per symbol; Bitget advises fewer than 50 channels per connection.
pub(crate) const SYMBOLS_PER_CONNECTION: usize = 25;
/// Keep-alive `ping` period: inside the 30 s the strictest version of the docs allows.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(25);
/// Pause between subscribe requests: at most 5 a second, leaving room for `ping`s within
/// Bitget's 10 inbound messages per second.
pub(crate) const SUBSCRIBE_PACING: Duration = Duration::from_millis(200);

/// The Bitget adapter.
#[derive(Debug, Clone, Copy)]
pub struct Bitget;

fn check_code(code: &str, msg: &str) -> Result<(), ParseError> {
    if code == "00000" {
        Ok(())
    } else {
        Err(ParseError::Exchange(format!("code {code}: {msg}")))
    }
}

fn ts_ms(s: &str) -> Result<i64, ParseError> {
    s.parse::<i64>()
        .map_err(|_| ParseError::BadNumber(s.to_owned()))
}

impl Adapter for Bitget {
    fn id(&self) -> ExchangeId {
        ExchangeId::Bitget
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://ws.bitget.com/v2/ws/public"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.bitget.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: SUBSCRIBE_PACING,
            // The intro page says connections are closed every 24 h; the shared rotation
            // setting handles that like Binance's.
            max_connection_age: Some(Duration::from_secs(24 * 3_600)),
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v2/spot/public/symbols"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v2/spot/market/tickers"
    }

    /// Maps each listing by its `baseCoin`/`quoteCoin`, never by cutting `symbol` apart.
    /// Trading natives that would share one canonical symbol are all left out (which one a
    /// frame meant would be a guess); listings not online take no part in that check.
    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<wire::Symbol<'_>> = serde_json::from_str(body).map_err(malformed)?;
        check_code(&r.code, &r.msg)?;
        let list: Vec<Instrument> = r
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let symbol = Symbol::from_parts(&s.base_coin, &s.quote_coin).ok()?;
                Some(Instrument {
                    native: s.symbol.into_owned(),
                    symbol,
                    trading: s.status == "online",
                    volume_key: None,
                })
            })
            .collect();
        Ok(refuse_collisions("bitget", list))
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<wire::Ticker<'_>> = serde_json::from_str(body).map_err(malformed)?;
        check_code(&r.code, &r.msg)?;
        Ok(r.data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.symbol.into_owned(), num(&t.quote_volume).ok()?)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(BitgetSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }
}

/// The channels we subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Channel {
    Ticker,
    Trade,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "ticker" => Some(Channel::Ticker),
            "trade" => Some(Channel::Trade),
            _ => None,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Channel::Ticker => "ticker",
            Channel::Trade => "trade",
        }
    }
}

/// One Bitget connection. Requests carry no id: each argument awaiting its ack is kept with
/// the request that asked for it.
#[derive(Debug, Default)]
pub struct BitgetSession {
    /// (channel, instId) -> the request awaiting its ack.
    pending: HashMap<(Channel, String), u64>,
    /// Request -> arguments not yet acked.
    unacked: HashMap<u64, usize>,
    /// Arguments of requests already refused: the exchange's further errors for them (one
    /// per argument) report nothing new.
    refused: HashMap<(Channel, String), u64>,
}

impl BitgetSession {
    /// Drops what is kept for `request`.
    fn drop_request(&mut self, request: u64) {
        self.unacked.remove(&request);
        self.pending.retain(|_, r| *r != request);
        self.refused.retain(|_, r| *r != request);
    }

    fn ack(&mut self, arg: Option<&wire::Arg<'_>>) -> Control {
        let Some(arg) = arg else {
            return Control::Ignored;
        };
        let Some(channel) = Channel::parse(&arg.channel) else {
            return Control::Ignored;
        };
        let Some(request) = self.pending.remove(&(channel, arg.inst_id.to_string())) else {
            // A repeated ack, or one for a request given up on.
            return Control::Ignored;
        };
        match self.unacked.get_mut(&request) {
            Some(left) if *left > 1 => {
                *left -= 1;
                Control::Ignored
            }
            Some(_) => {
                self.unacked.remove(&request);
                Control::Subscribed(request)
            }
            None => Control::Ignored,
        }
    }

    fn error(&mut self, env: &wire::Envelope<'_>) -> Control {
        let code = env
            .code
            .as_ref()
            .map_or_else(|| "?".to_owned(), ToString::to_string);
        let reason = format!("code {code}: {}", env.msg.as_deref().unwrap_or(""));
        let key = env
            .arg
            .as_ref()
            .and_then(|arg| Some((Channel::parse(&arg.channel)?, arg.inst_id.to_string())));
        if let Some(key) = key {
            if self.refused.contains_key(&key) {
                // Another argument of a request already refused.
                return Control::Ignored;
            }
            if let Some(id) = self.pending.get(&key).copied() {
                // The whole request is sent again later; its other acks no longer count.
                let args: Vec<(Channel, String)> = self
                    .pending
                    .iter()
                    .filter(|(_, r)| **r == id)
                    .map(|(k, _)| k.clone())
                    .collect();
                self.drop_request(id);
                self.refused.extend(args.into_iter().map(|k| (k, id)));
                return Control::Refused {
                    request: Some(id),
                    reason,
                };
            }
        }
        if env.arg.is_some() || env.op.as_deref() == Some("subscribe") {
            Control::Refused {
                request: None,
                reason,
            }
        } else {
            Control::ExchangeError(reason)
        }
    }
}

impl Session for BitgetSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        natives
            .chunks(ARGS_PER_REQUEST / 2)
            .map(|chunk| {
                let id = *next_id;
                *next_id += 1;
                let mut args = Vec::with_capacity(chunk.len() * 2);
                for n in chunk {
                    for ch in [Channel::Ticker, Channel::Trade] {
                        args.push(serde_json::json!({
                            "instType": "SPOT",
                            "channel": ch.name(),
                            "instId": n,
                        }));
                        self.refused.remove(&(ch, n.clone()));
                        if let Some(old) = self.pending.insert((ch, n.clone()), id)
                            && let Some(left) = self.unacked.get_mut(&old)
                        {
                            // The older request no longer waits for this argument.
                            *left = left.saturating_sub(1);
                        }
                    }
                }
                self.unacked.insert(id, args.len());
                Request {
                    id,
                    natives: chunk.to_vec(),
                    frame: Outgoing::Text(
                        serde_json::json!({"op": "subscribe", "args": args}).to_string(),
                    ),
                }
            })
            .collect()
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        Some(Outgoing::Text("ping".into()))
    }

    fn forget(&mut self, request: u64) {
        self.drop_request(request);
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
        if text == "pong" {
            return Ok(Control::KeepAlive);
        }
        if let Some(f) = ticker_layout(text) {
            let symbol = symbols
                .lookup(f.inst_id)
                .ok_or_else(|| ParseError::UnknownSymbol(f.inst_id.to_owned()))?;
            let q = quote(
                symbol,
                (num(f.bid_pr)?, num(f.bid_sz)?),
                (num(f.ask_pr)?, num(f.ask_sz)?),
                ms_to_ns(ts_ms(f.ts)?),
                recv_ts_ns,
                0,
            )?;
            out.events.push(Event::Quote(q));
            return Ok(Control::Data);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        if let Some(event) = env.event.as_deref() {
            return Ok(match event {
                "subscribe" => self.ack(env.arg.as_ref()),
                "error" => self.error(&env),
                _ => Control::Ignored,
            });
        }
        let (Some(action), Some(arg)) = (env.action.as_deref(), env.arg.as_ref()) else {
            return Err(malformed("neither an event nor a push"));
        };
        // Only spot is subscribed; another product line's push (same instId) is not ours.
        let spot = arg.inst_type.is_empty() || arg.inst_type == "SPOT";
        let (Some(channel), true) = (Channel::parse(&arg.channel), spot) else {
            return Ok(Control::Ignored);
        };
        let symbol = symbols
            .lookup(arg.inst_id.as_ref())
            .ok_or_else(|| ParseError::UnknownSymbol(arg.inst_id.to_string()))?;
        match channel {
            Channel::Ticker => {
                let push: wire::Push<wire::TickerData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                let mut quotes = Vec::with_capacity(push.data.len());
                for d in push.data {
                    quotes.push(quote(
                        symbol,
                        (num(&d.bid_pr)?, num(&d.bid_sz)?),
                        (num(&d.ask_pr)?, num(&d.ask_sz)?),
                        ms_to_ns(ts_ms(&d.ts)?),
                        recv_ts_ns,
                        0,
                    )?);
                }
                if quotes.is_empty() {
                    return Err(malformed("ticker without data"));
                }
                out.events.extend(quotes.into_iter().map(Event::Quote));
                Ok(Control::Data)
            }
            Channel::Trade => {
                let push: wire::Push<wire::TradeData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                // A bad trade is skipped, not the ones after it; the frame is still rejected
                // (its first error), and the trades read are published all the same.
                let mut prints = Vec::with_capacity(push.data.len());
                let mut first_error = None;
                for d in push.data {
                    match trade(symbol, d, recv_ts_ns) {
                        Ok(p) => prints.push(p),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                match action {
                    // Recent trades, repeated on every subscribe: already seen, or older
                    // than the subscription (validated above all the same).
                    "snapshot" => first_error.map_or(Ok(Control::Ignored), Err),
                    "update" => {
                        out.events.extend(prints.into_iter().map(Event::Print));
                        first_error.map_or(Ok(Control::Data), Err)
                    }
                    other => {
                        Err(first_error
                            .unwrap_or_else(|| malformed(format!("trade action {other:?}"))))
                    }
                }
            }
        }
    }
}

/// One element of a `trade` push.
fn trade(
    symbol: SymbolId,
    d: wire::TradeData<'_>,
    recv_ts_ns: i64,
) -> Result<crate::event::Print, ParseError> {
    let side = match d.side.as_ref() {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(malformed(format!("trade side {other:?}"))),
    };
    print(
        symbol,
        (num(&d.price)?, num(&d.size)?),
        side,
        d.trade_id.into_owned(),
        ms_to_ns(ts_ms(&d.ts)?),
        recv_ts_ns,
    )
}

/// `,"name":"value"`: the value.
fn field<'a>(l: &mut Layout<'a>, name: &str) -> Option<&'a str> {
    l.lit(",\"")?;
    l.lit(name)?;
    l.lit("\":\"")?;
    l.until_quote()
}

/// The fields of a one-element spot `ticker` push.
struct TickerFields<'a> {
    inst_id: &'a str,
    bid_pr: &'a str,
    ask_pr: &'a str,
    bid_sz: &'a str,
    ask_sz: &'a str,
    ts: &'a str,
}

/// A spot `ticker` push exactly as Bitget's page lays it out (`action` `snapshot` or
/// `update`, the data fields in the documented order), read without a JSON parser; `None`
/// for any other layout, which then goes through serde.
fn ticker_layout(text: &str) -> Option<TickerFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"action":""#)?;
    if !matches!(l.until_quote()?, "snapshot" | "update") {
        return None;
    }
    l.lit(r#","arg":{"instType":"SPOT","channel":"ticker","instId":""#)?;
    let inst_id = l.until_quote()?;
    l.lit(r#"},"data":[{"instId":""#)?;
    if l.until_quote()? != inst_id {
        return None;
    }
    field(&mut l, "lastPr")?;
    field(&mut l, "open24h")?;
    field(&mut l, "high24h")?;
    field(&mut l, "low24h")?;
    field(&mut l, "change24h")?;
    let bid_pr = field(&mut l, "bidPr")?;
    let ask_pr = field(&mut l, "askPr")?;
    let bid_sz = field(&mut l, "bidSz")?;
    let ask_sz = field(&mut l, "askSz")?;
    field(&mut l, "baseVolume")?;
    field(&mut l, "quoteVolume")?;
    field(&mut l, "openUtc")?;
    field(&mut l, "changeUtc24h")?;
    let ts = field(&mut l, "ts")?;
    l.lit(r#"}],"ts":"#)?;
    l.uint()?;
    l.lit("}")?;
    l.done().then_some(TickerFields {
        inst_id,
        bid_pr,
        ask_pr,
        bid_sz,
        ask_sz,
        ts,
    })
}

#[cfg(test)]
mod tests;
