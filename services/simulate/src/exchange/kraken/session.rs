//! One Kraken WebSocket v2 connection: status on connect, per-symbol acks and refusals,
//! ticker (bbo- or trade-triggered) and trade pushes, heartbeats once subscribed, ping/pong,
//! and the idle deadline.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{HEARTBEAT_EVERY, IDLE_TIMEOUT, KrakenState, wire};
use crate::market::{MarketEvent, now_us};
use crate::ws::End;
use crate::ws::driver::{Frame, Goodbye, Inbound, Protocol, Reply};

/// Longest symbol echoed back in an error.
const MAX_ECHO: usize = 64;
/// Symbols one request may name (Kraken documents none; a bound on the work one frame asks).
const MAX_SYMBOLS_PER_REQUEST: usize = 1_000;

/// Per symbol: what this connection is subscribed to.
#[derive(Debug, Clone, Copy, Default)]
struct Wants {
    /// `Some(true)`: ticker on every best bid/offer change; `Some(false)`: on trades only.
    ticker: Option<bool>,
    trade: bool,
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One connection's protocol state; [`crate::ws::driver::run`] does the I/O.
#[derive(Debug)]
pub(crate) struct Session {
    state: Arc<KrakenState>,
    connection_id: u64,
    wants: Vec<Wants>,
    subscribed: bool,
    /// When the client last sent anything, and when the server last sent anything.
    last_client: Instant,
    last_sent: Instant,
}

impl Session {
    pub(crate) fn new(state: Arc<KrakenState>) -> Self {
        let wants = vec![Wants::default(); state.ctx.universe.instruments.len()];
        Self {
            state,
            connection_id: rand::random::<u64>() >> 1,
            wants,
            subscribed: false,
            last_client: Instant::now(),
            last_sent: Instant::now(),
        }
    }

    /// Index of a v2 symbol (`BTC/USD`).
    fn symbol(&self, name: &str) -> Option<usize> {
        let (base, quote) = name.split_once('/')?;
        if quote.contains('/') {
            return None;
        }
        self.state
            .ctx
            .universe
            .by_canonical(&format!("{base}-{quote}"))
    }

    /// Answers one client message.
    pub(crate) fn handle(&mut self, text: &str) -> (Vec<String>, Vec<&'static str>) {
        let time_in = wire::rfc3339(now_us());
        let err = |method: Option<&str>, id: Option<&Value>, symbol: Option<&str>, msg: &str| {
            wire::error(method, id, symbol, msg, &time_in, &wire::rfc3339(now_us()))
        };
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return (
                vec![err(None, None, None, "EGeneral:Invalid arguments")],
                vec!["invalid_json"],
            );
        };
        let req_id = msg.get("req_id").filter(|v| v.is_u64());
        if msg.get("req_id").is_some() && req_id.is_none() {
            return (
                vec![err(None, None, None, "EGeneral:Invalid arguments:req_id")],
                vec!["bad_id"],
            );
        }
        let method = msg.get("method").and_then(Value::as_str);
        match method {
            Some("ping") => {
                let out = wire::pong(req_id, &time_in, &wire::rfc3339(now_us()));
                (vec![out], Vec::new())
            }
            Some(m @ ("subscribe" | "unsubscribe")) => {
                self.subscription(m, req_id, msg.get("params"), &time_in)
            }
            Some(other) => (
                vec![err(
                    Some(cut(other, MAX_ECHO)),
                    req_id,
                    None,
                    "Method not found",
                )],
                vec!["unknown_method"],
            ),
            None => (
                vec![err(None, req_id, None, "EGeneral:Invalid arguments")],
                vec!["invalid_request"],
            ),
        }
    }

    fn subscription(
        &mut self,
        method: &str,
        req_id: Option<&Value>,
        params: Option<&Value>,
        time_in: &str,
    ) -> (Vec<String>, Vec<&'static str>) {
        let subscribe = method == "subscribe";
        let mut frames = Vec::new();
        let mut rejected = Vec::new();
        let err = |symbol: Option<&str>, msg: &str| {
            wire::error(
                Some(method),
                req_id,
                symbol,
                msg,
                time_in,
                &wire::rfc3339(now_us()),
            )
        };
        let Some(params) = params.and_then(Value::as_object) else {
            return (
                vec![err(None, "EGeneral:Invalid arguments:params")],
                vec!["invalid_request"],
            );
        };
        let channel = params.get("channel").and_then(Value::as_str);
        let ticker = match channel {
            Some("ticker") => true,
            Some("trade") => false,
            Some(other) => {
                let msg = format!("Channel {} not found", cut(other, MAX_ECHO));
                return (vec![err(None, &msg)], vec!["no_such_channel"]);
            }
            None => {
                return (
                    vec![err(None, "EGeneral:Invalid arguments:channel")],
                    vec!["invalid_request"],
                );
            }
        };
        let bbo = match params.get("event_trigger") {
            None => false,
            Some(Value::String(t)) if ticker && t == "bbo" => true,
            Some(Value::String(t)) if ticker && t == "trades" => false,
            Some(_) => {
                return (
                    vec![err(None, "EGeneral:Invalid arguments:event_trigger")],
                    vec!["invalid_request"],
                );
            }
        };
        let snapshot = match params.get("snapshot") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return (
                    vec![err(None, "EGeneral:Invalid arguments:snapshot")],
                    vec!["invalid_request"],
                );
            }
        };
        let symbols: Vec<&str> = match params.get("symbol").and_then(Value::as_array) {
            Some(list)
                if !list.is_empty()
                    && list.len() <= MAX_SYMBOLS_PER_REQUEST
                    && list.iter().all(Value::is_string) =>
            {
                list.iter().filter_map(Value::as_str).collect()
            }
            _ => {
                return (
                    vec![err(None, "EGeneral:Invalid arguments:symbol")],
                    vec!["invalid_request"],
                );
            }
        };
        for name in symbols {
            let Some(i) = self.symbol(name) else {
                let name = cut(name, MAX_ECHO);
                frames.push(err(
                    Some(name),
                    &format!("Currency pair not supported {name}"),
                ));
                rejected.push("unknown_symbol");
                continue;
            };
            let mut result = json!({
                "channel": if ticker { "ticker" } else { "trade" },
                "symbol": name,
            });
            if subscribe {
                result["snapshot"] = json!(snapshot);
                if ticker {
                    result["event_trigger"] = json!(if bbo { "bbo" } else { "trades" });
                }
            }
            frames.push(wire::ack(
                method,
                req_id,
                result,
                time_in,
                &wire::rfc3339(now_us()),
            ));
            let wants = &mut self.wants[i];
            if !subscribe {
                if ticker {
                    wants.ticker = None;
                } else {
                    wants.trade = false;
                }
                continue;
            }
            self.subscribed = true;
            let inst = &self.state.ctx.universe.instruments[i];
            if ticker {
                wants.ticker = Some(bbo);
                if snapshot && let Some(view) = self.state.ctx.board.get(self.state.ctx.index, i) {
                    frames.push(wire::ticker(inst, &view.quote, "snapshot"));
                }
            } else {
                wants.trade = true;
                if snapshot {
                    let objects: Vec<String> = self
                        .state
                        .recent_trades(i)
                        .iter()
                        .map(|t| wire::trade_object(inst, t))
                        .collect();
                    frames.push(wire::trades(&objects, "snapshot"));
                }
            }
        }
        (frames, rejected)
    }

    /// The frames for a market event this connection listens to.
    pub(crate) fn encode(&self, event: &MarketEvent, out: &mut Vec<String>) {
        let ctx = &self.state.ctx;
        match event {
            MarketEvent::Quote(q) => {
                let (Some(w), Some(inst)) = (
                    self.wants.get(q.symbol),
                    ctx.universe.instruments.get(q.symbol),
                ) else {
                    return;
                };
                if w.ticker == Some(true) {
                    out.push(wire::ticker(inst, q, "update"));
                }
            }
            MarketEvent::Trade(t) => {
                self.state.note_trade(t);
                let (Some(w), Some(inst)) = (
                    self.wants.get(t.symbol),
                    ctx.universe.instruments.get(t.symbol),
                ) else {
                    return;
                };
                if w.trade {
                    out.push(wire::trades(&[wire::trade_object(inst, t)], "update"));
                }
                // A trade-triggered ticker: the book as it stands after the trade.
                if w.ticker == Some(false)
                    && let Some(view) = ctx.board.get(ctx.index, t.symbol)
                {
                    out.push(wire::ticker(inst, &view.quote, "update"));
                }
            }
        }
    }
}

impl Protocol for Session {
    fn start(&mut self, now: Instant) {
        self.last_client = now;
        self.last_sent = now;
    }

    fn hello(&mut self, _now: Instant) -> Reply {
        Reply::frames(vec![Frame::Text(wire::status(
            self.connection_id,
            "online",
        ))])
    }

    fn on_client(&mut self, frame: Inbound<'_>, now: Instant) -> Reply {
        // Any client frame, control frames included, shows the client is there.
        self.last_client = now;
        let Some(text) = frame.request_text() else {
            return Reply::default();
        };
        let (frames, rejected) = self.handle(&text);
        Reply {
            frames: frames.into_iter().map(Frame::Text).collect(),
            rejected,
            end: None,
        }
    }

    fn on_event(&mut self, event: &MarketEvent, out: &mut Vec<Frame>) {
        let mut frames = Vec::new();
        self.encode(event, &mut frames);
        out.extend(frames.into_iter().map(Frame::Text));
    }

    fn deadline(&self) -> Option<Instant> {
        let idle = self.last_client + IDLE_TIMEOUT;
        Some(if self.subscribed {
            idle.min(self.last_sent + HEARTBEAT_EVERY)
        } else {
            idle
        })
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Frame>) -> Result<(), End> {
        if self.last_client + IDLE_TIMEOUT <= now {
            return Err(End::Idle);
        }
        if self.subscribed && self.last_sent + HEARTBEAT_EVERY <= now {
            out.push(Frame::Text(wire::HEARTBEAT.to_owned()));
            // Also set by `on_sent`; set here so a stalled send cannot spin the timer.
            self.last_sent = now;
        }
        Ok(())
    }

    fn on_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    fn goodbye(&self, end: End) -> Option<Goodbye> {
        let (code, reason) = match end {
            End::Shutdown | End::MarketClosed => (1001, "server shutdown"),
            End::Idle => (1000, "idle timeout"),
            _ => return None,
        };
        Some(Goodbye {
            notice: None,
            code,
            reason,
        })
    }

    /// A subscribe request refused as Kraken refuses one: a failure per symbol named, each
    /// echoing the request's `req_id` and the symbol.
    fn refusal(&self, frame: Inbound<'_>) -> Option<Vec<Frame>> {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(frame.text()?) else {
            return None;
        };
        if msg.get("method").and_then(Value::as_str) != Some("subscribe") {
            return None;
        }
        let req_id = msg.get("req_id").filter(|v| v.is_u64());
        let symbols = msg.get("params")?.get("symbol")?.as_array()?;
        let time_in = wire::rfc3339(now_us());
        Some(
            symbols
                .iter()
                .filter_map(Value::as_str)
                .take(MAX_SYMBOLS_PER_REQUEST)
                .map(|s| {
                    Frame::Text(wire::error(
                        Some("subscribe"),
                        req_id,
                        Some(cut(s, MAX_ECHO)),
                        "Exceeded msg rate",
                        &time_in,
                        &wire::rfc3339(now_us()),
                    ))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use spreadagg_model::ExchangeId;
    use tokio::sync::{Semaphore, broadcast};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::market::{Board, Model, Universe};
    use crate::ws::ExchangeCtx;

    fn session() -> Session {
        let symbols = vec!["BTC-USD".to_owned(), "ETH-USDT".to_owned()];
        let universe = Arc::new(Universe::new(&symbols, &[ExchangeId::Kraken]).expect("universe"));
        let model = Model::new(universe.clone(), Duration::from_millis(100), 0.0, 1);
        let n = universe.instruments.len();
        let (events, _) = broadcast::channel(16);
        let ctx = Arc::new(ExchangeCtx {
            exchange: ExchangeId::Kraken,
            index: 0,
            universe,
            board: Arc::new(Board::new(n, model.snapshot(now_us()))),
            events,
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sessions: Arc::new(Semaphore::new(4)),
            binance_ping_interval: Duration::from_secs(20),
            faults: Arc::new(crate::fault::Faults::new(ExchangeId::Kraken)),
        });
        Session::new(Arc::new(KrakenState {
            recent: Mutex::new(vec![VecDeque::new(); n]),
            ctx,
        }))
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_after_a_minute_and_heartbeats_wait_for_a_subscription() {
        let mut s = session();
        let t0 = Instant::now();
        s.start(t0);
        assert_eq!(
            s.deadline(),
            Some(t0 + IDLE_TIMEOUT),
            "no heartbeat unsubscribed"
        );
        let mut out = Vec::new();
        assert_eq!(s.on_timer(t0 + Duration::from_secs(30), &mut out), Ok(()));
        assert!(out.is_empty());
        // A ping 30 s in keeps the connection for another minute.
        let r = s.on_client(
            Inbound::Text(r#"{"method":"ping","req_id":5}"#),
            t0 + Duration::from_secs(30),
        );
        let Frame::Text(pong) = &r.frames[0] else {
            panic!("text")
        };
        assert_eq!(json(pong)["req_id"], 5);
        assert_eq!(s.on_timer(t0 + Duration::from_secs(61), &mut out), Ok(()));
        assert_eq!(
            s.on_timer(t0 + Duration::from_secs(90), &mut out),
            Err(End::Idle)
        );
        assert_eq!(
            s.goodbye(End::Idle).map(|g| (g.code, g.notice.is_none())),
            Some((1000, true))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_fill_a_second_of_silence_once_subscribed() {
        let mut s = session();
        let t0 = Instant::now();
        s.start(t0);
        let r = s.on_client(
            Inbound::Text(r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":1}"#),
            t0,
        );
        assert_eq!(r.frames.len(), 1, "the ack alone");
        s.on_sent(t0);
        assert_eq!(s.deadline(), Some(t0 + HEARTBEAT_EVERY));
        let mut out = Vec::new();
        s.on_timer(t0 + HEARTBEAT_EVERY, &mut out).expect("open");
        assert_eq!(out, vec![Frame::Text(wire::HEARTBEAT.to_owned())]);
        // Traffic postpones the next one.
        s.on_sent(t0 + Duration::from_millis(1_500));
        assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(2_500)));
    }

    #[test]
    fn a_refusal_answers_every_symbol_of_the_request() {
        let s = session();
        let frames = s
            .refusal(Inbound::Text(
                r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD","ETH/USDT"],"event_trigger":"bbo"},"req_id":3}"#,
            ))
            .expect("a subscribe request");
        let v: Vec<Value> = frames
            .iter()
            .map(|f| match f {
                Frame::Text(t) => json(t),
                other => panic!("text: {other:?}"),
            })
            .collect();
        assert_eq!(v.len(), 2);
        for (f, sym) in v.iter().zip(["BTC/USD", "ETH/USDT"]) {
            assert_eq!(
                (
                    f["method"].as_str(),
                    f["req_id"].as_u64(),
                    f["success"].as_bool()
                ),
                (Some("subscribe"), Some(3), Some(false))
            );
            assert_eq!(f["symbol"], sym);
            assert!(f["error"].is_string());
        }
        assert!(s.refusal(Inbound::Text(r#"{"method":"ping"}"#)).is_none());
        assert!(s.refusal(Inbound::Text("nope")).is_none());
    }
}
