//! Unit tests of the Coinbase session, and the measurement of how stale the `ticker` channel's
//! best bid/ask is against `level2` on the same simulated market.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use tokio::time::Instant;

use super::session::{DEPTH, IDLE_CLOSE, SUBSCRIBE_WITHIN, Session, synthesize};
use super::wire::rfc3339;
use crate::market::{Board, MarketEvent, Model, Universe, now_us};
use crate::ws::End;
use crate::ws::driver::Protocol;

fn setup(symbols: &[&str]) -> (Arc<Universe>, Arc<Board>, Model) {
    let symbols: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
    let u = Arc::new(Universe::new(&symbols, &[ExchangeId::Coinbase]).expect("universe"));
    let model = Model::new(u.clone(), Duration::from_millis(100), 0.3, 7);
    let board = Arc::new(Board::new(u.instruments.len(), model.snapshot(now_us())));
    (u, board, model)
}

fn session() -> Session {
    let (u, board, _) = setup(&["BTC-USDT", "ETH-USDT"]);
    Session::new(u, board, 0)
}

fn frames(texts: &[String]) -> Vec<Value> {
    texts
        .iter()
        .map(|t| serde_json::from_str(t).expect("json"))
        .collect()
}

fn sub(channel: &str, products: &[&str]) -> String {
    json!({"type": "subscribe", "product_ids": products, "channel": channel}).to_string()
}

#[test]
fn rfc3339_as_coinbase_writes_it() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(1_675_974_770_714_964),
        "2023-02-09T20:32:50.714964Z"
    );
    assert_eq!(rfc3339(1_565_815_347_265_000), "2019-08-14T20:42:27.265Z");
    assert_eq!(rfc3339(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
}

#[tokio::test(start_paused = true)]
async fn subscribe_answers_with_the_whole_listing_and_a_snapshot() {
    let mut s = session();
    let now = Instant::now();
    let (out, rejected) = s.handle(&sub("level2", &["BTC-USDT"]), now);
    assert_eq!(rejected, None);
    let f = frames(&out);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0]["channel"], "subscriptions");
    assert_eq!(f[0]["sequence_num"], 0);
    assert_eq!(
        f[0]["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"]})
    );
    assert_eq!(f[1]["channel"], "l2_data");
    assert_eq!(f[1]["sequence_num"], 1);
    let e = &f[1]["events"][0];
    assert_eq!(
        (e["type"].as_str(), e["product_id"].as_str()),
        (Some("snapshot"), Some("BTC-USDT"))
    );
    assert_eq!(
        e["updates"].as_array().map(Vec::len),
        Some(2 * DEPTH as usize),
        "levels on both sides"
    );
    // Heartbeats and trades: the listing grows, the numbering goes on.
    let (out, _) = s.handle(r#"{"type":"subscribe","channel":"heartbeats"}"#, now);
    let f = frames(&out);
    assert_eq!(f[0]["sequence_num"], 2);
    assert_eq!(
        f[0]["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"], "heartbeats": ["heartbeats"]})
    );
    let (out, _) = s.handle(&sub("market_trades", &["ETH-USDT", "BTC-USDT"]), now);
    let f = frames(&out);
    assert_eq!(
        f[0]["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"], "market_trades": ["BTC-USDT", "ETH-USDT"], "heartbeats": ["heartbeats"]})
    );
    assert!(f[1..].iter().all(|x| x["events"][0]["type"] == "snapshot"));
    // Unsubscribing a whole channel.
    let (out, _) = s.handle(r#"{"type":"unsubscribe","channel":"market_trades"}"#, now);
    assert_eq!(
        frames(&out)[0]["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"], "heartbeats": ["heartbeats"]})
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_change_nothing_and_carry_no_sequence_number() {
    let mut s = session();
    let now = Instant::now();
    for (text, why) in [
        (
            r#"{"type":"subscribe","product_ids":["BTC-USDT"],"channels":["level2","market_trades"]}"#,
            "many_channels",
        ),
        (
            r#"{"type":"subscribe","product_ids":["BTC-USDT"]}"#,
            "no_channel",
        ),
        (&sub("level3", &["BTC-USDT"]) as &str, "unknown_channel"),
        (&sub("level2", &["BTC-USDT", "NOPE-USD"]), "unknown_product"),
        (&sub("level2", &[]), "no_products"),
        ("not json", "invalid_json"),
        (r#"{"type":"hello"}"#, "invalid_type"),
    ] {
        let (out, rejected) = s.handle(text, now);
        assert_eq!(rejected, Some(why), "{text}");
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["type"], "error", "{text}");
        assert!(f[0].get("sequence_num").is_none());
    }
    // Nothing was subscribed: the first accepted reply is number 0 and lists one product.
    let (out, _) = s.handle(&sub("level2", &["BTC-USDT"]), now + Duration::from_secs(2));
    let f = frames(&out);
    assert_eq!(f[0]["sequence_num"], 0);
    assert_eq!(
        f[0]["events"][0]["subscriptions"],
        json!({"level2": ["BTC-USDT"]})
    );
    // The refusal fault answers a subscribe with an error, and nothing else.
    let refused = s
        .refusal(crate::ws::driver::Inbound::Text(&sub(
            "level2",
            &["ETH-USDT"],
        )))
        .expect("a refusal");
    assert_eq!(refused.len(), 1);
    assert!(s.refusal(crate::ws::driver::Inbound::Text("{}")).is_none());
}

#[tokio::test(start_paused = true)]
async fn eight_messages_a_second() {
    let mut s = session();
    let now = Instant::now();
    for _ in 0..8 {
        assert_eq!(s.handle(&sub("level2", &["BTC-USDT"]), now).1, None);
    }
    assert_eq!(
        s.handle(&sub("level2", &["BTC-USDT"]), now).1,
        Some("rate_limited")
    );
    assert_eq!(
        s.handle(&sub("level2", &["BTC-USDT"]), now + Duration::from_secs(1))
            .1,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn unsubscribed_clients_are_closed_after_five_seconds_and_heartbeats_tick() {
    let mut s = session();
    let t0 = Instant::now();
    s.start(t0);
    assert_eq!(s.deadline(), Some(t0 + SUBSCRIBE_WITHIN));
    let mut out = Vec::new();
    assert_eq!(
        s.on_timer(t0 + SUBSCRIBE_WITHIN, &mut out),
        Err(End::NoSubscription)
    );
    assert!(s.goodbye(End::NoSubscription).is_some());

    let mut s = session();
    s.start(t0);
    s.handle(r#"{"type":"subscribe","channel":"heartbeats"}"#, t0);
    let due = s.deadline().expect("a heartbeat is due");
    assert_eq!(due, t0 + Duration::from_secs(1));
    assert_eq!(s.on_timer(due, &mut out), Ok(()));
    assert_eq!(out.len(), 1);
    let crate::ws::driver::Frame::Text(t) = &out[0] else {
        panic!("text")
    };
    let v: Value = serde_json::from_str(t).expect("json");
    assert_eq!(v["channel"], "heartbeats");
    assert_eq!(v["sequence_num"], 1);
    assert_eq!(v["events"][0]["heartbeat_counter"], 1);
    assert_eq!(
        s.on_timer(t0 + SUBSCRIBE_WITHIN * 3, &mut out),
        Ok(()),
        "subscribed: no close"
    );
    assert_eq!(
        s.on_timer(t0 + IDLE_CLOSE * 2, &mut out),
        Ok(()),
        "heartbeats keep a connection without market data open"
    );

    // Without heartbeats, a minute without a push closes the connection; a push resets it.
    let mut s = session();
    s.start(t0);
    s.handle(&sub("level2", &["BTC-USDT"]), t0);
    s.on_sent(t0 + Duration::from_secs(30));
    assert_eq!(
        s.deadline(),
        Some(t0 + Duration::from_secs(30) + IDLE_CLOSE)
    );
    assert_eq!(s.on_timer(t0 + IDLE_CLOSE, &mut out), Ok(()));
    assert_eq!(
        s.on_timer(t0 + Duration::from_secs(30) + IDLE_CLOSE, &mut out),
        Err(End::Idle)
    );
}

/// A client-side book from `l2_data` pushes: ticks as decimal text -> size.
#[derive(Default)]
struct ClientBook {
    bids: BTreeMap<i64, String>,
    asks: BTreeMap<i64, String>,
}

impl ClientBook {
    fn apply(&mut self, event: &Value, price_decimals: u32) {
        if event["type"] == "snapshot" {
            *self = ClientBook::default();
        }
        for u in event["updates"].as_array().expect("updates") {
            let px = u["price_level"].as_str().expect("price");
            let ticks = (px.parse::<f64>().expect("decimal") * 10f64.powi(price_decimals as i32))
                .round() as i64;
            let qty = u["new_quantity"].as_str().expect("qty").to_owned();
            let side = if u["side"] == "bid" {
                &mut self.bids
            } else {
                &mut self.asks
            };
            if qty.parse::<f64>().expect("decimal") == 0.0 {
                side.remove(&ticks);
            } else {
                side.insert(ticks, qty);
            }
        }
    }

    fn top(&self) -> Option<(i64, i64)> {
        Some((
            *self.bids.last_key_value()?.0,
            *self.asks.first_key_value()?.0,
        ))
    }
}

/// The ticker's best bid/ask in ticks.
fn ticker_top(event: &Value, price_decimals: u32) -> (i64, i64) {
    let t = &event["tickers"][0];
    let ticks = |k: &str| {
        (t[k]
            .as_str()
            .expect("price")
            .parse::<f64>()
            .expect("decimal")
            * 10f64.powi(price_decimals as i32))
        .round() as i64
    };
    (ticks("best_bid"), ticks("best_ask"))
}

/// The measurement behind the adapter's choice of `level2` over `ticker` for best bid/ask:
/// one simulated market (the default 100 ms quote interval and 0.3 trade probability), one
/// session subscribed to both channels, every model event fed through the real encoder, and
/// both channels' view of the top of book compared with the model's after every event.
/// Run with `cargo nextest run -p spreadagg-simulate ticker_is_stale --no-capture` to see
/// the figures.
#[tokio::test(start_paused = true)]
async fn ticker_is_stale_between_trades_and_level2_is_not() {
    let symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT"];
    let (u, board, mut model) = setup(&symbols);
    let mut s = Session::new(u.clone(), board, 0);
    let now = Instant::now();
    for channel in ["level2", "ticker"] {
        let (out, rejected) = s.handle(&sub(channel, &symbols), now);
        assert_eq!(rejected, None);
        // Snapshots: the client books and tickers start from them.
        drop(out);
    }
    let n = u.instruments.len();
    let mut books: Vec<ClientBook> = (0..n).map(|_| ClientBook::default()).collect();
    let mut ticker: Vec<Option<(i64, i64)>> = vec![None; n];
    let mut truth: Vec<Option<(i64, i64)>> = vec![None; n];
    // Since when the ticker's top has differed from the truth, per symbol.
    let mut wrong_since: Vec<Option<u64>> = vec![None; n];
    // Each distinct top of book, and whether the ticker ever showed it while it was current.
    let (mut changes, mut missed) = (0u64, 0u64);
    let mut shown_current: Vec<bool> = vec![true; n];
    let (mut samples, mut stale_samples) = (0u64, 0u64);
    let mut ages_us: Vec<u64> = Vec::new();
    let mut l2_mismatches = 0u64;
    let steps = 30_000;
    for _ in 0..steps {
        let t_us = model.peek_due();
        let Some(step) = model.step(i64::try_from(t_us).unwrap_or(0)) else {
            break;
        };
        let sym = step.quote.symbol;
        let inst = &u.instruments[sym];
        let pd = inst.price_decimals;
        let top = (step.quote.book.bid, step.quote.book.ask);
        if truth[sym] != Some(top) {
            if truth[sym].is_some() {
                changes += 1;
                if !shown_current[sym] {
                    missed += 1;
                }
            }
            truth[sym] = Some(top);
            shown_current[sym] = ticker[sym] == Some(top);
        }
        let mut out = Vec::new();
        s.encode(&MarketEvent::Quote(step.quote), &mut out);
        if let Some(trade) = step.trade {
            s.encode(&MarketEvent::Trade(trade), &mut out);
        }
        for f in frames(&out) {
            match f["channel"].as_str() {
                Some("l2_data") => books[sym].apply(&f["events"][0], pd),
                Some("ticker") => {
                    let shown = ticker_top(&f["events"][0], pd);
                    ticker[sym] = Some(shown);
                    if Some(shown) == truth[sym] {
                        shown_current[sym] = true;
                    }
                }
                other => panic!("unexpected push {other:?}"),
            }
        }
        // Level2 after every event: the client's book has the model's top.
        if books[sym].top() != Some(top) && books[sym].top().is_some() {
            l2_mismatches += 1;
        }
        // The ticker, sampled after every event of its symbol.
        samples += 1;
        if ticker[sym] == Some(top) {
            wrong_since[sym] = None;
        } else {
            stale_samples += 1;
            let since = *wrong_since[sym].get_or_insert(t_us);
            ages_us.push(t_us - since);
        }
    }
    ages_us.sort_unstable();
    let pct = |q: f64| {
        ages_us
            .get(((ages_us.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let missed_share = missed as f64 / changes.max(1) as f64;
    let stale_share = stale_samples as f64 / samples.max(1) as f64;
    println!(
        "coinbase ticker vs level2 over {steps} model events ({} symbols, 100 ms quotes, trade probability 0.3):\n  \
         top-of-book changes: {changes}; missed entirely by ticker: {missed} ({:.1} %)\n  \
         samples where ticker's best bid/ask is wrong: {:.1} %; age when wrong: median {} ms, p90 {} ms, max {} ms\n  \
         samples where level2's book top is wrong: {l2_mismatches}",
        symbols.len(),
        missed_share * 100.0,
        stale_share * 100.0,
        pct(0.5) / 1_000,
        pct(0.9) / 1_000,
        ages_us.last().copied().unwrap_or(0) / 1_000,
    );
    assert_eq!(l2_mismatches, 0, "level2 always has the model's top");
    assert!(changes > 1_000, "the market moved: {changes}");
    assert!(
        missed_share > 0.3,
        "the ticker misses many tops: {missed_share}"
    );
    assert!(
        stale_share > 0.3,
        "the ticker is often stale: {stale_share}"
    );
}

#[test]
fn the_synthesized_book_has_the_model_top_and_bounded_depth() {
    let (u, board, _) = setup(&["BTC-USDT"]);
    let view = board.get(0, 0).expect("a view");
    let levels = synthesize(&view.quote.book, &u.instruments[0]);
    assert_eq!(
        levels.bids[0],
        (view.quote.book.bid, view.quote.book.bid_qty)
    );
    assert_eq!(
        levels.asks[0],
        (view.quote.book.ask, view.quote.book.ask_qty)
    );
    assert_eq!(levels.bids.len() as i64, DEPTH);
    assert!(levels.bids.windows(2).all(|w| w[0].0 > w[1].0));
    assert!(levels.asks.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(levels.bids.iter().chain(&levels.asks).all(|&(_, q)| q > 0));
}

#[tokio::test(start_paused = true)]
async fn more_than_sixteen_level2_products_are_refused_as_coinbase_does() {
    use super::session::{MAX_LEVEL2_PRODUCTS, TOO_MANY_L2_STREAMS};
    let names: Vec<String> = (0..=MAX_LEVEL2_PRODUCTS)
        .map(|i| format!("C{i}-USDT"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (u, board, _) = setup(&refs);
    let mut s = Session::new(u, board, 0);
    let now = Instant::now();
    // Sixteen, in two requests (one repeated product does not count twice): accepted.
    let (_, rejected) = s.handle(&sub("level2", &refs[..10]), now);
    assert_eq!(rejected, None);
    let (_, rejected) = s.handle(&sub("level2", &refs[5..MAX_LEVEL2_PRODUCTS]), now);
    assert_eq!(rejected, None);
    // The seventeenth: refused with Coinbase's error text, and nothing changes.
    let (out, rejected) = s.handle(&sub("level2", &refs[MAX_LEVEL2_PRODUCTS..]), now);
    assert_eq!(rejected, Some("too_many_l2_streams"));
    let f = frames(&out);
    assert_eq!(
        f,
        vec![json!({"type": "error", "message": TOO_MANY_L2_STREAMS})]
    );
    // Other channels are not capped.
    let (_, rejected) = s.handle(&sub("market_trades", &refs), now);
    assert_eq!(rejected, None);
    let (out, _) = s.handle(&sub("ticker", &refs[..1]), now);
    let held = &frames(&out)[0]["events"][0]["subscriptions"];
    assert_eq!(
        held["level2"].as_array().map(Vec::len),
        Some(MAX_LEVEL2_PRODUCTS)
    );
}

#[tokio::test(start_paused = true)]
async fn a_deep_snapshot_is_several_megabytes_and_the_next_update_trims_it() {
    let (u, board, mut model) = setup(&["BTC-USDT"]);
    let mut s = Session::new(u, board, 0).with_snapshot_depth(20_000);
    let (out, rejected) = s.handle(&sub("level2", &["BTC-USDT"]), Instant::now());
    assert_eq!(rejected, None);
    let snap = &out[1];
    assert!(snap.len() > 2 << 20, "{} bytes", snap.len());
    let f = frames(&out[1..]);
    assert_eq!(
        f[0]["events"][0]["updates"].as_array().map(Vec::len),
        Some(40_000)
    );
    // The next quote's update deletes what lies past the usual depth.
    let step = model.step(now_us()).expect("a step");
    let mut texts = Vec::new();
    s.encode(&MarketEvent::Quote(step.quote), &mut texts);
    let v: Value = serde_json::from_str(&texts[0]).expect("json");
    let zeros = v["events"][0]["updates"]
        .as_array()
        .map_or(0, |u| u.iter().filter(|l| l["new_quantity"] == "0").count());
    assert!(zeros >= 2 * (20_000 - DEPTH as usize), "{zeros} deleted");
    assert!(
        s.oversized_bytes() > 64 << 20,
        "over the clients' 64 MiB cap"
    );
}
