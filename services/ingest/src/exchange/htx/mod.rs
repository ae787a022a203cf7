//! HTX (formerly Huobi) public market data, spot.
//!
//! Docs: <https://www.htx.com/en-us/opend/newApiPages/?id=7ec53b69-7773-11ed-9966-0242ac110003>
//! (WebSocket market data: `bbo`, `trade.detail`) and
//! <https://huobiapi.github.io/docs/spot/v1/en/#websocket-market-data>.
//! Endpoint `wss://api.huobi.pro/ws`. Every server frame is gzip-compressed binary. The server
//! pings with `{"ping":1492420473027}` and drops a client that does not answer
//! `{"pong":1492420473027}` (the same number) after two missed pings, so the session answers
//! every ping itself through [`Output::replies`]; the client sends no keep-alive of its own.
//!
//! One topic per request: `{"sub":"market.btcusdt.bbo","id":"7"}` is answered with
//! `{"id":"7","status":"ok","subbed":"market.btcusdt.bbo","ts":..}` or
//! `{"id":"7","status":"error","err-code":"bad-request","err-msg":"invalid topic ..","ts":..}`;
//! each symbol therefore takes two requests (`bbo` and `trade.detail`). Prices are JSON
//! numbers. Native symbols are the lowercase spelling the channels carry (`btcusdt`), which
//! is also what REST `symbol` fields say.

mod wire;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolTable, malformed, print, quote,
};
use crate::codec::{Compression, Inflater, MAX_INFLATED_BYTES};

/// Symbols per connection: two topics each, well inside the per-connection topic cap HTX
/// documents.
const SYMBOLS_PER_CONNECTION: usize = 100;
/// Pause between two subscribe requests (HTX rate-limits inbound requests per connection).
const SUBSCRIBE_PACING: Duration = Duration::from_millis(60);
/// The two topics of one symbol, as channel suffixes.
const TOPICS: [Topic; 2] = [Topic::Bbo, Topic::Trades];

/// The HTX adapter.
#[derive(Debug, Clone, Copy)]
pub struct Htx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Topic {
    Bbo,
    Trades,
}

impl Topic {
    fn suffix(self) -> &'static str {
        match self {
            Topic::Bbo => "bbo",
            Topic::Trades => "trade.detail",
        }
    }

    fn channel(self, native: &str) -> String {
        format!("market.{native}.{}", self.suffix())
    }
}

/// Splits `market.btcusdt.bbo` / `market.btcusdt.trade.detail` into symbol and topic.
fn split_channel(ch: &str) -> Option<(&str, Topic)> {
    let rest = ch.strip_prefix("market.")?;
    if let Some(sym) = rest.strip_suffix(".bbo") {
        Some((sym, Topic::Bbo))
    } else {
        rest.strip_suffix(".trade.detail")
            .map(|sym| (sym, Topic::Trades))
    }
}

fn check_status(status: &str, code: Option<&str>, msg: Option<&str>) -> Result<(), ParseError> {
    if status == "ok" {
        Ok(())
    } else {
        Err(ParseError::Exchange(format!(
            "{status} {}: {}",
            code.unwrap_or("?"),
            msg.unwrap_or("")
        )))
    }
}

impl Adapter for Htx {
    fn id(&self) -> ExchangeId {
        ExchangeId::Htx
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://api.huobi.pro/ws"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://api.huobi.pro"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: SUBSCRIBE_PACING,
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/v1/common/symbols"
    }

    fn volumes_path(&self) -> &'static str {
        "/market/tickers"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<'_, wire::SymbolInfo<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        check_status(&r.status, r.err_code.as_deref(), r.err_msg.as_deref())?;
        Ok(r.data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| {
                let symbol = Symbol::from_parts(&i.base_currency, &i.quote_currency).ok()?;
                Some(Instrument {
                    native: i.symbol.into_owned(),
                    symbol,
                    trading: i.state == "online",
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<'_, wire::Ticker<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        check_status(&r.status, r.err_code.as_deref(), r.err_msg.as_deref())?;
        // `vol` is the 24 h turnover in the quote currency.
        Ok(r.data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| {
                let vol = t.vol.filter(|v| v.is_finite())?;
                Some((t.symbol.into_owned(), vol))
            })
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(HtxSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        // The server pings; the session answers.
        None
    }
}

/// One HTX connection: one request per topic, acked on its own; the session answers server
/// pings and remembers which topics are confirmed so that a retry re-sends only the rest.
#[derive(Debug, Default)]
pub struct HtxSession {
    /// Request id -> the topic it asked for (native symbol, topic).
    unacked: HashMap<u64, (String, Topic)>,
    /// Topics confirmed on this connection (bounded by the symbols it carries, times two).
    subbed: HashSet<(String, Topic)>,
    seq: SeqGate,
    /// Decompression buffer and state, reused across frames.
    scratch: Vec<u8>,
    inflater: Inflater,
}

impl Session for HtxSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        let mut requests = Vec::with_capacity(natives.len() * TOPICS.len());
        for native in natives {
            for topic in TOPICS {
                let key = (native.clone(), topic);
                if self.subbed.contains(&key) {
                    continue;
                }
                let id = *next_id;
                *next_id += 1;
                let frame = serde_json::json!({"sub": topic.channel(native), "id": id.to_string()})
                    .to_string();
                self.unacked.insert(id, key);
                requests.push(Request {
                    id,
                    natives: vec![native.clone()],
                    frame: Outgoing::Text(frame),
                });
            }
        }
        requests
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
        let bytes = match frame {
            Frame::Binary(b) => b,
            // HTX sends only gzip binary; a text frame is not of its protocol.
            Frame::Text(_) => return Err(malformed("text frame (HTX frames are gzip binary)")),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self
            .inflater
            .inflate(Compression::Gzip, bytes, MAX_INFLATED_BYTES, &mut scratch)
            .map_err(ParseError::from)
            .and_then(|()| self.on_json(&scratch, symbols, recv_ts_ns, out));
        self.scratch = scratch;
        result
    }
}

impl HtxSession {
    fn on_json(
        &mut self,
        json: &[u8],
        symbols: &SymbolTable,
        recv_ts_ns: i64,
        out: &mut Output,
    ) -> Result<Control, ParseError> {
        // The hot frame in HTX's documented layout, read without a JSON parser; any other
        // layout goes through serde below (the two agree: tests and property tests).
        if let Some(b) = std::str::from_utf8(json).ok().and_then(bbo_layout) {
            let symbol = symbols
                .lookup(b.native)
                .ok_or_else(|| ParseError::UnknownSymbol(b.native.chars().take(40).collect()))?;
            let q = quote(
                symbol,
                (b.bid, b.bid_size),
                (b.ask, b.ask_size),
                ms_to_ns(b.quote_time),
                recv_ts_ns,
                b.seq_id,
            )?;
            self.seq.admit(&q)?;
            out.events.push(Event::Quote(q));
            return Ok(Control::Data);
        }
        let env: wire::Envelope<'_> = serde_json::from_slice(json).map_err(malformed)?;
        if let Some(n) = env.ping {
            out.replies
                .push(Outgoing::Text(format!(r#"{{"pong":{n}}}"#)));
            return Ok(Control::KeepAlive);
        }
        if let Some(status) = env.status.as_deref() {
            let request = env.id.as_deref().and_then(|i| i.parse::<u64>().ok());
            if status == "ok" {
                return Ok(
                    match request.and_then(|id| self.unacked.remove(&id).map(|k| (id, k))) {
                        Some((id, key)) => {
                            self.subbed.insert(key);
                            Control::Subscribed(id)
                        }
                        // An unsubscribe answer, or an ack for a request given up on.
                        None => Control::Ignored,
                    },
                );
            }
            let reason = format!(
                "{}: {}",
                env.err_code.as_deref().unwrap_or("?"),
                env.err_msg.as_deref().unwrap_or("")
            );
            return Ok(match request {
                Some(id) => {
                    self.unacked.remove(&id);
                    Control::Refused {
                        request: Some(id),
                        reason,
                    }
                }
                None => Control::ExchangeError(reason),
            });
        }
        let ch = env
            .ch
            .as_deref()
            .ok_or_else(|| malformed("neither a ping, an answer nor a push"))?;
        let Some((native, topic)) = split_channel(ch) else {
            return Ok(Control::Ignored);
        };
        let symbol = symbols
            .lookup(native)
            .ok_or_else(|| ParseError::UnknownSymbol(native.to_owned()))?;
        match topic {
            Topic::Bbo => {
                let push: wire::Push<wire::Bbo> =
                    serde_json::from_slice(json).map_err(malformed)?;
                let t = push.tick;
                let ts_ms = t
                    .quote_time
                    .or(env.ts)
                    .ok_or_else(|| malformed("bbo without a time"))?;
                let q = quote(
                    symbol,
                    (t.bid, t.bid_size),
                    (t.ask, t.ask_size),
                    ms_to_ns(ts_ms),
                    recv_ts_ns,
                    t.seq_id,
                )?;
                self.seq.admit(&q)?;
                out.events.push(Event::Quote(q));
            }
            Topic::Trades => {
                let push: wire::Push<wire::TradeTick> =
                    serde_json::from_slice(json).map_err(malformed)?;
                for d in push.tick.data {
                    let side = match d.direction {
                        wire::Direction::Buy => Side::Buy,
                        wire::Direction::Sell => Side::Sell,
                    };
                    out.events.push(Event::Print(print(
                        symbol,
                        (d.price, d.amount),
                        side,
                        d.trade_id.to_string(),
                        ms_to_ns(d.ts),
                        recv_ts_ns,
                    )?));
                }
            }
        }
        Ok(Control::Data)
    }
}

/// The fields of a `bbo` push in HTX's documented layout.
struct BboFields<'a> {
    native: &'a str,
    seq_id: u64,
    ask: f64,
    ask_size: f64,
    bid: f64,
    bid_size: f64,
    quote_time: i64,
}

/// `{"ch":"market.<sym>.bbo","ts":N,"tick":{"seqId":N,"ask":X,"askSize":X,"bid":X,
/// "bidSize":X,"quoteTime":N,"symbol":"<sym>"}}` exactly, or `None`. As in the general path,
/// the symbol is the channel's; the tick's own `symbol` is not compared.
fn bbo_layout(text: &str) -> Option<BboFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"ch":"market."#)?;
    let native = l.until_quote()?.strip_suffix(".bbo")?;
    l.lit(r#","ts":"#)?;
    // Out of `i64`'s range: the general parser rejects the frame, so it gets the frame.
    i64::try_from(l.uint()?).ok()?;
    l.lit(r#","tick":{"seqId":"#)?;
    let seq_id = l.uint()?;
    l.lit(r#","ask":"#)?;
    let ask = l.number()?;
    l.lit(r#","askSize":"#)?;
    let ask_size = l.number()?;
    l.lit(r#","bid":"#)?;
    let bid = l.number()?;
    l.lit(r#","bidSize":"#)?;
    let bid_size = l.number()?;
    l.lit(r#","quoteTime":"#)?;
    let quote_time = i64::try_from(l.uint()?).ok()?;
    l.lit(r#","symbol":""#)?;
    l.until_quote()?;
    l.lit("}}")?;
    l.done().then_some(BboFields {
        native,
        seq_id,
        ask,
        ask_size,
        bid,
        bid_size,
        quote_time,
    })
}

#[cfg(test)]
mod tests;
