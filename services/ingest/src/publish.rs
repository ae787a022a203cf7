//! The publishing side of an ingestor: events from every connection, encoded as `spreadagg.v1`
//! protobufs and published with a `Nats-Msg-Id` derived from the exchange's own ids, so a
//! repeat (a reconnect replaying the last book, or an active-active replica) is stored once.

use prost::Message as _;
use serde_json::json;
use spreadagg_bus::{Bus, OutMessage};
use spreadagg_model::{ExchangeId, subjects};
use spreadagg_runtime::Component;
use tokio::sync::mpsc;

use crate::exchange::Event;

/// Publishes until every connection has hung up (the channel closes), then flushes.
pub(crate) async fn run(
    exchange: ExchangeId,
    bus: Bus,
    max_in_flight: usize,
    mut events: mpsc::Receiver<Event>,
    component: Component,
) {
    let ex = exchange.as_str();
    let mut publisher = bus.publisher(max_in_flight);
    component.set(true, json!({"state": "publishing", "bus": bus.kind()}));
    let mut published: u64 = 0;
    while let Some(event) = events.recv().await {
        let msg = encode(exchange, &event);
        match publisher.publish(msg).await {
            // Sent; its acknowledgement is awaited later, and a failure comes back then.
            Ok(()) => published += 1,
            Err(failed) => {
                metrics::counter!("spreadagg_ingest_dropped_total", "exchange" => ex, "kind" => "any", "reason" => "publish_failed").increment(1);
                tracing::warn!(exchange = ex, error = %failed, "publish failed after retries; event dropped");
            }
        }
        metrics::gauge!("spreadagg_ingest_queue_depth", "exchange" => ex).set(events.len() as f64);
        if published.is_multiple_of(1000) {
            component.set(true, json!({"state": "publishing", "bus": bus.kind(), "published": published, "queue_depth": events.len(), "in_flight": publisher.in_flight()}));
        }
    }
    if let Err(failed) = publisher.flush().await {
        tracing::warn!(exchange = ex, error = %failed, "final flush failed; event dropped");
    }
    component.set(false, json!({"state": "stopped", "published": published}));
}

/// The bus message for an event: subject, message id and protobuf payload.
pub fn encode(exchange: ExchangeId, event: &Event) -> OutMessage {
    match event {
        Event::Tick(t) => OutMessage {
            subject: subjects::tick(exchange, &t.symbol),
            // The exchange's update id identifies a book state; without one (seq 0) only the
            // receive time can tell ticks apart.
            msg_id: if t.seq == 0 {
                format!("tick:{exchange}:{}:r{}", t.symbol, t.recv_ts_ns)
            } else {
                // With the exchange's time where it sends one: an update id that restarts
                // after maintenance then cannot make a new tick look like an old one.
                format!(
                    "tick:{exchange}:{}:{}:{}",
                    t.symbol, t.seq, t.exchange_ts_ns
                )
            },
            payload: t.encode_to_vec().into(),
        },
        Event::Trade(t) => OutMessage {
            subject: subjects::trade(exchange, &t.symbol),
            msg_id: format!("trade:{exchange}:{}:{}", t.symbol, t.trade_id),
            payload: t.encode_to_vec().into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use spreadagg_model::wire::{Tick, Trade};

    use super::*;

    fn tick(seq: u64, exchange_ts_ns: i64, recv_ts_ns: i64) -> Event {
        Event::Tick(Tick {
            exchange: "okx".into(),
            symbol: "BTC-USDT".into(),
            seq,
            exchange_ts_ns,
            recv_ts_ns,
            ..Tick::default()
        })
    }

    #[test]
    fn message_ids_identify_exchange_updates() {
        let id = |e: &Event| encode(ExchangeId::Okx, e).msg_id;
        // The same update received twice (reconnect replay, or a second replica) is one id.
        assert_eq!(id(&tick(7, 1_000, 1)), id(&tick(7, 1_000, 2)));
        // An update id reused after an exchange restart, at another time, is another id.
        assert_ne!(id(&tick(7, 1_000, 1)), id(&tick(7, 9_000, 2)));
        // Without an update id only the receive time tells ticks apart.
        assert_ne!(id(&tick(0, 0, 1)), id(&tick(0, 0, 2)));
        let trade = Event::Trade(Trade {
            exchange: "okx".into(),
            symbol: "BTC-USDT".into(),
            trade_id: "130639474".into(),
            ..Trade::default()
        });
        let msg = encode(ExchangeId::Okx, &trade);
        assert_eq!(
            (msg.subject.as_str(), msg.msg_id.as_str()),
            ("md.trade.okx.BTC-USDT", "trade:okx:BTC-USDT:130639474")
        );
        assert_eq!(
            encode(ExchangeId::Okx, &tick(1, 1, 1)).subject,
            "md.tick.okx.BTC-USDT"
        );
    }
}
