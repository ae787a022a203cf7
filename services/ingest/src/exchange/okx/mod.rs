//! OKX v5 public market data, spot.
//!
//! Docs: <https://www.okx.com/docs-v5/en/#overview-websocket> and
//! <https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-bbo-tbt-channel>.
//! Endpoint `wss://ws.okx.com:8443/ws/v5/public`; `bbo-tbt` pushes the best bid/ask
//! tick-by-tick (levels `[px, sz, "0", numOrders]`), `trades` the public trades. The client
//! keeps the connection alive with a text `ping` (answer `pong`) when idle, since OKX closes a
//! connection silent for 30 s; a `notice` event (64008) announces a service upgrade.

mod wire;

use std::collections::HashMap;
use std::time::Duration;

use spreadagg_model::wire::{Side, Trade};
use spreadagg_model::{ExchangeId, Symbol, time::ms_to_ns};

use super::{
    Adapter, ClientPing, Control, Event, Instrument, ParseError, SymbolMap, malformed, num, tick,
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

    fn symbols_per_connection(&self) -> usize {
        SYMBOLS_PER_CONNECTION
    }

    fn subscribe_frames(&self, natives: &[String]) -> Vec<String> {
        let args: Vec<serde_json::Value> = natives
            .iter()
            .flat_map(|n| {
                [
                    serde_json::json!({"channel": "bbo-tbt", "instId": n}),
                    serde_json::json!({"channel": "trades", "instId": n}),
                ]
            })
            .collect();
        args.chunks(ARGS_PER_REQUEST)
            .map(|chunk| serde_json::json!({"op": "subscribe", "args": chunk}).to_string())
            .collect()
    }

    fn subscribe_pacing(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn client_ping(&self) -> Option<ClientPing> {
        Some(ClientPing {
            text: "ping".into(),
            every: Duration::from_secs(20),
        })
    }

    fn parse(
        &self,
        text: &str,
        symbols: &SymbolMap,
        recv_ts_ns: i64,
        out: &mut Vec<Event>,
    ) -> Result<Control, ParseError> {
        if text == "pong" {
            return Ok(Control::Pong);
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
            return Ok(match event {
                "subscribe" | "unsubscribe" => Control::Ack,
                "error" => Control::ExchangeError(detail()),
                "notice" => Control::Reconnect(detail()),
                _ => Control::Ignored,
            });
        }
        let arg = env
            .arg
            .ok_or_else(|| malformed("neither an event nor a push"))?;
        let symbol = symbols
            .get(arg.inst_id.as_ref())
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
                    out.push(Event::Tick(tick(
                        ExchangeId::Okx,
                        symbol,
                        level(bid)?,
                        level(ask)?,
                        ms_to_ns(ts_ms(&d.ts)?),
                        recv_ts_ns,
                        seq,
                    )?));
                }
                Ok(Control::Data)
            }
            "trades" => {
                let push: wire::Push<wire::TradeData<'_>> =
                    serde_json::from_str(text).map_err(malformed)?;
                for d in push.data {
                    let (price, qty) = (num(&d.px)?, num(&d.sz)?);
                    if price <= 0.0 || qty <= 0.0 {
                        return Err(ParseError::BadNumber(format!("{} x {}", d.px, d.sz)));
                    }
                    let side = match d.side.as_ref() {
                        "buy" => Side::Buy,
                        "sell" => Side::Sell,
                        other => return Err(malformed(format!("trade side {other:?}"))),
                    };
                    out.push(Event::Trade(Trade {
                        exchange: ExchangeId::Okx.as_str().to_owned(),
                        symbol: symbol.as_str().to_owned(),
                        price,
                        qty,
                        side: side.into(),
                        trade_id: d.trade_id.into_owned(),
                        exchange_ts_ns: ms_to_ns(ts_ms(&d.ts)?),
                        recv_ts_ns,
                    }));
                }
                Ok(Control::Data)
            }
            _ => Ok(Control::Ignored),
        }
    }
}

#[cfg(test)]
mod tests;
