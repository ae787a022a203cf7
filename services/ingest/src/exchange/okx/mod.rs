//! OKX v5 public market data, spot.
//!
//! Docs: <https://www.okx.com/docs-v5/en/#overview-websocket> and
//! <https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-bbo-tbt-channel>.
//! Endpoint `wss://ws.okx.com:8443/ws/v5/public`; `bbo-tbt` pushes the best bid/ask
//! tick-by-tick (levels `[px, sz, "0", numOrders]`), `trades` the public trades. The client
//! keeps the connection alive with a text `ping` (answer `pong`) when idle, since OKX closes a
//! connection silent for 30 s; a `notice` event (64008) announces a service upgrade.
//!
//! Subscribe `{"id":"7","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},..]}`
//! is answered with one `{"id":"7","event":"subscribe","arg":{..},"connId":".."}` per argument,
//! or `{"id":"7","event":"error","code":"60018","msg":".."}`.

mod wire;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::Side;
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, Control, Event, Frame, Instrument, Layout, Limits, Outgoing, Output, ParseError,
    Request, SeqGate, Session, SymbolTable, malformed, num, print, quote,
};

/// Args per subscribe request.
const ARGS_PER_REQUEST: usize = 100;
/// Two channels per symbol; OKX advises modest per-connection subscription counts.
const SYMBOLS_PER_CONNECTION: usize = 200;

/// The OKX adapter.
#[derive(Debug, Clone, Copy)]
pub struct Okx;

fn check_code(code: &str, msg: &str) -> Result<(), ParseError> {
    if code == "0" {
        Ok(())
    } else {
        Err(ParseError::Exchange(format!("code {code}: {msg}")))
    }
}

fn ts_ms(s: &str) -> Result<i64, ParseError> {
    s.parse::<i64>()
        .map_err(|_| ParseError::BadNumber(s.to_owned()))
}

impl Adapter for Okx {
    fn id(&self) -> ExchangeId {
        ExchangeId::Okx
    }

    fn default_ws_url(&self) -> &'static str {
        "wss://ws.okx.com:8443/ws/v5/public"
    }

    fn default_rest_url(&self) -> &'static str {
        "https://www.okx.com"
    }

    fn limits(&self) -> Limits {
        Limits {
            symbols_per_connection: SYMBOLS_PER_CONNECTION,
            subscribe_pacing: Duration::from_millis(100),
            max_connection_age: None,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    fn instruments_path(&self) -> &'static str {
        "/api/v5/public/instruments?instType=SPOT"
    }

    fn volumes_path(&self) -> &'static str {
        "/api/v5/market/tickers?instType=SPOT"
    }

    fn parse_instruments(&self, body: &str) -> Result<Vec<Instrument>, ParseError> {
        let r: wire::Response<wire::Instrument<'_>> =
            serde_json::from_str(body).map_err(malformed)?;
        check_code(&r.code, &r.msg)?;
        Ok(r.data
            .into_iter()
            .filter_map(|i| {
                let symbol = Symbol::from_parts(&i.base_ccy, &i.quote_ccy).ok()?;
                Some(Instrument {
                    native: i.inst_id.into_owned(),
                    symbol,
                    trading: i.state == "live",
                    volume_key: None,
                })
            })
            .collect())
    }

    fn parse_volumes(&self, body: &str) -> Result<HashMap<String, f64>, ParseError> {
        let r: wire::Response<wire::Ticker<'_>> = serde_json::from_str(body).map_err(malformed)?;
        check_code(&r.code, &r.msg)?;
        // For SPOT, volCcy24h is in the quote currency.
        Ok(r.data
            .into_iter()
            .filter_map(|t| Some((t.inst_id.into_owned(), num(&t.vol_ccy_24h).ok()?)))
            .collect())
    }

    fn session(&self) -> Box<dyn Session> {
        Box::new(OkxSession::default())
    }

    fn keepalive_every(&self) -> Option<Duration> {
        Some(Duration::from_secs(20))
    }
}

/// One OKX connection: each argument of a request is acked on its own, echoing the request's
/// id; the request is confirmed when every argument is.
#[derive(Debug, Default)]
pub struct OkxSession {
    /// Request id -> arguments not yet acked.
    unacked: HashMap<u64, usize>,
    seq: SeqGate,
}

impl Session for OkxSession {
    fn subscribe(&mut self, natives: &[String], next_id: &mut u64) -> Vec<Request> {
        natives
            .chunks(ARGS_PER_REQUEST / 2)
            .map(|chunk| {
                let args: Vec<serde_json::Value> = chunk
                    .iter()
                    .flat_map(|n| {
                        [
                            serde_json::json!({"channel": "bbo-tbt", "instId": n}),
                            serde_json::json!({"channel": "trades", "instId": n}),
                        ]
                    })
                    .collect();
                let id = *next_id;
                *next_id += 1;
                self.unacked.insert(id, args.len());
                Request {
                    id,
                    natives: chunk.to_vec(),
                    frame: Outgoing::Text(
                        serde_json::json!({"id": id.to_string(), "op": "subscribe", "args": args})
                            .to_string(),
                    ),
                }
            })
            .collect()
    }

    fn keepalive(&mut self) -> Option<Outgoing> {
        Some(Outgoing::Text("ping".into()))
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
        let Frame::Text(text) = frame else {
            return Err(malformed("binary frame"));
        };
        if text == "pong" {
            return Ok(Control::KeepAlive);
        }
        if let Some(f) = bbo_layout(text) {
            let symbol = symbols
                .lookup(f.inst_id)
                .ok_or_else(|| ParseError::UnknownSymbol(f.inst_id.to_owned()))?;
            let q = quote(
                symbol,
                (num(f.bid_px)?, num(f.bid_sz)?),
                (num(f.ask_px)?, num(f.ask_sz)?),
                ms_to_ns(ts_ms(f.ts)?),
                recv_ts_ns,
                f.seq_id,
            )?;
            self.seq.admit(&q)?;
            out.events.push(Event::Quote(q));
            return Ok(Control::Data);
        }
        let env: wire::Envelope<'_> = serde_json::from_str(text).map_err(malformed)?;
        if let Some(event) = env.event.as_deref() {
            let detail = || {
                format!(
                    "code {}: {}",
                    env.code.as_deref().unwrap_or("?"),
                    env.msg.as_deref().unwrap_or("")
                )
            };
            let request = env.id.as_deref().and_then(|i| i.parse::<u64>().ok());
            return Ok(match (event, request) {
                ("subscribe", Some(id)) => match self.unacked.get_mut(&id) {
                    Some(left) if *left > 1 => {
                        *left -= 1;
                        Control::Ignored
                    }
                    Some(_) => {
                        self.unacked.remove(&id);
                        Control::Subscribed(id)
                    }
                    None => Control::Ignored,
                },
                ("subscribe" | "unsubscribe", _) => Control::Ignored,
                ("error", request) => {
                    if let Some(id) = request {
                        self.unacked.remove(&id);
                    }
                    if request.is_some() {
                        Control::Refused {
                            request,
                            reason: detail(),
                        }
                    } else {
                        Control::ExchangeError(detail())
                    }
                }
                ("notice", _) => Control::Rotate(detail()),
                _ => Control::Ignored,
            });
        }
        let arg = env
            .arg
            .ok_or_else(|| malformed("neither an event nor a push"))?;
        let symbol = symbols
            .lookup(arg.inst_id.as_ref())
            .ok_or_else(|| ParseError::UnknownSymbol(arg.inst_id.to_string()))?;
        match arg.channel.as_ref() {
            "bbo-tbt" => {
                let push: wire::Push<wire::Bbo<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                for d in push.data {
                    let (Some(bid), Some(ask)) = (d.bids.first(), d.asks.first()) else {
                        return Err(malformed("empty side in bbo-tbt"));
                    };
                    let level =
                        |l: &Vec<std::borrow::Cow<'_, str>>| -> Result<(f64, f64), ParseError> {
                            match (l.first(), l.get(1)) {
                                (Some(px), Some(sz)) => Ok((num(px)?, num(sz)?)),
                                _ => Err(malformed("level without price and size")),
                            }
                        };
                    let seq = u64::try_from(d.seq_id).unwrap_or(0);
                    let q = quote(
                        symbol,
                        level(bid)?,
                        level(ask)?,
                        ms_to_ns(ts_ms(&d.ts)?),
                        recv_ts_ns,
                        seq,
                    )?;
                    self.seq.admit(&q)?;
                    out.events.push(Event::Quote(q));
                }
                Ok(Control::Data)
            }
            "trades" => {
                let push: wire::Push<wire::TradeData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                for d in push.data {
                    let side = match d.side.as_ref() {
                        "buy" => Side::Buy,
                        "sell" => Side::Sell,
                        other => return Err(malformed(format!("trade side {other:?}"))),
                    };
                    out.events.push(Event::Print(print(
                        symbol,
                        (num(&d.px)?, num(&d.sz)?),
                        side,
                        d.trade_id.into_owned(),
                        ms_to_ns(ts_ms(&d.ts)?),
                        recv_ts_ns,
                    )?));
                }
                Ok(Control::Data)
            }
            _ => Ok(Control::Ignored),
        }
    }
}

/// The fields of a one-level `bbo-tbt` push.
struct BboFields<'a> {
    inst_id: &'a str,
    ask_px: &'a str,
    ask_sz: &'a str,
    bid_px: &'a str,
    bid_sz: &'a str,
    ts: &'a str,
    seq_id: u64,
}

/// A `bbo-tbt` push exactly as OKX lays it out
/// (`{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","seqId":123456}]}`),
/// read without a JSON parser; `None` for any other layout, which then goes through serde.
fn bbo_layout(text: &str) -> Option<BboFields<'_>> {
    let mut l = Layout::new(text);
    l.lit(r#"{"arg":{"channel":"bbo-tbt","instId":""#)?;
    let inst_id = l.until_quote()?;
    l.lit(r#"},"data":[{"asks":[[""#)?;
    let ask_px = l.until_quote()?;
    l.lit(r#",""#)?;
    let ask_sz = l.until_quote()?;
    l.lit(r#",""#)?;
    l.until_quote()?;
    l.lit(r#",""#)?;
    l.until_quote()?;
    l.lit(r#"]],"bids":[[""#)?;
    let bid_px = l.until_quote()?;
    l.lit(r#",""#)?;
    let bid_sz = l.until_quote()?;
    l.lit(r#",""#)?;
    l.until_quote()?;
    l.lit(r#",""#)?;
    l.until_quote()?;
    l.lit(r#"]],"ts":""#)?;
    let ts = l.until_quote()?;
    l.lit(r#","seqId":"#)?;
    let seq_id = l.uint()?;
    l.lit("}]}")?;
    l.done().then_some(BboFields {
        inst_id,
        ask_px,
        ask_sz,
        bid_px,
        bid_sz,
        ts,
        seq_id,
    })
}

#[cfg(test)]
mod tests;
