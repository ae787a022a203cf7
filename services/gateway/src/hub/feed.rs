//! The feed tasks: one live subscription per stream (`MD_SPREADS`, `MD_TICKS`, `MD_TRADES`,
//! `MD_SIGNALS`), each decoding every message into the hub. Re-opened with exponential backoff
//! and jitter after bus errors; a message that cannot be decoded or routed is counted and
//! logged, never fatal. Each reports into its own health component `gateway.feed.<channel>`:
//! ready while subscribed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use spreadagg_bus::{Bus, BusError, Consumer};
use spreadagg_model::subjects;
use spreadagg_model::wire::{Signal, Spread, Tick, Trade};
use spreadagg_runtime::Component;
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::event::{Channel, Payload, Unroutable};

/// First and largest wait before re-opening a feed after a bus error.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// After this many consecutive errors on one subscription, it is re-opened.
const REOPEN_AFTER_ERRORS: u32 = 3;
/// How often the health detail is refreshed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One feed's counters.
#[derive(Debug, Default)]
pub(crate) struct FeedStats {
    pub(crate) messages: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) bus_errors: AtomicU64,
}

/// The stream and subject filter a channel is fed from.
pub(crate) fn source(channel: Channel) -> (&'static str, &'static str) {
    match channel {
        Channel::Spreads => (subjects::STREAM_SPREADS, subjects::ALL_SPREADS),
        Channel::Ticks => (subjects::STREAM_TICKS, subjects::ALL_TICKS),
        Channel::Trades => (subjects::STREAM_TRADES, subjects::ALL_TRADES),
        Channel::Signals => (subjects::STREAM_SIGNALS, subjects::ALL_SIGNALS),
    }
}

fn decode(channel: Channel, bytes: &[u8]) -> Result<Payload, Unroutable> {
    let bad = |e: prost::DecodeError| Unroutable::Undecodable(e.to_string());
    Ok(match channel {
        Channel::Spreads => Payload::Spread(Spread::decode(bytes).map_err(bad)?),
        Channel::Ticks => Payload::Tick(Tick::decode(bytes).map_err(bad)?),
        Channel::Trades => Payload::Trade(Trade::decode(bytes).map_err(bad)?),
        Channel::Signals => Payload::Signal(Signal::decode(bytes).map_err(bad)?),
    })
}

/// Decodes one bus payload into the hub; a bad payload is counted and logged, never fatal.
pub(crate) fn handle_payload(hub: &Hub, channel: Channel, payload: &[u8]) {
    let stats = hub.feed_stats(channel);
    stats.messages.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("spreadagg_gateway_messages_total", "channel" => channel.as_str())
        .increment(1);
    if channel == Channel::Spreads {
        metrics::counter!("spreadagg_gateway_points_total").increment(1);
    }
    if let Err(rejected) = decode(channel, payload).and_then(|p| hub.publish(p).map(drop)) {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "spreadagg_gateway_feed_rejected_total",
            "channel" => channel.as_str(),
            "reason" => rejected.reason()
        )
        .increment(1);
        tracing::debug!(channel = channel.as_str(), error = %rejected, "bus message rejected");
    }
}

/// Runs one channel's feed until `stop` is cancelled.
pub(crate) async fn run_feed(
    bus: Bus,
    hub: Arc<Hub>,
    channel: Channel,
    component: Component,
    stop: CancellationToken,
) {
    let (stream, filter) = source(channel);
    let mut backoff = BACKOFF_MIN;
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let report_detail = |state: &str| detail(&hub, channel, state, &bus);
    'open: loop {
        component.set(false, report_detail("connecting"));
        let opened = tokio::select! {
            biased;
            () = stop.cancelled() => break 'open,
            opened = bus.live(stream, filter) => opened,
        };
        let mut consumer: Consumer = match opened {
            Ok(c) => c,
            Err(e) => {
                bus_error(&hub, channel, &e, "cannot subscribe");
                component.set(false, report_detail("retrying"));
                if !sleep_or_stop(jittered(backoff), &stop).await {
                    break 'open;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue 'open;
            }
        };
        tracing::info!(stream, bus = bus.kind(), "gateway feed subscribed");
        component.set(true, report_detail("live"));
        let mut errors = 0u32;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break 'open,
                _ = report.tick() => {
                    if channel == Channel::Ticks {
                        hub.latest.refresh_rates(std::time::Instant::now());
                    }
                    component.set(true, report_detail("live"));
                }
                next = consumer.next() => match next {
                    Ok(delivery) => {
                        errors = 0;
                        backoff = BACKOFF_MIN;
                        handle_payload(&hub, channel, &delivery.payload);
                    }
                    Err(BusError::Closed) => {
                        bus_error(&hub, channel, &BusError::Closed, "subscription closed");
                        break;
                    }
                    Err(e) => {
                        errors += 1;
                        bus_error(&hub, channel, &e, "subscription error");
                        if errors >= REOPEN_AFTER_ERRORS {
                            break;
                        }
                        if !sleep_or_stop(jittered(backoff), &stop).await {
                            break 'open;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
            }
        }
        drop(consumer);
        component.set(false, report_detail("retrying"));
        if !sleep_or_stop(jittered(backoff), &stop).await {
            break 'open;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    component.set(false, report_detail("stopped"));
}

fn bus_error(hub: &Hub, channel: Channel, e: &BusError, what: &str) {
    hub.feed_stats(channel)
        .bus_errors
        .fetch_add(1, Ordering::Relaxed);
    metrics::counter!("spreadagg_gateway_feed_errors_total", "channel" => channel.as_str())
        .increment(1);
    tracing::warn!(channel = channel.as_str(), error = %e, "gateway feed: {what}");
}

fn detail(hub: &Hub, channel: Channel, state: &str, bus: &Bus) -> serde_json::Value {
    let s = hub.feed_stats(channel);
    json!({
        "state": state,
        "bus": bus.kind(),
        "stream": source(channel).0,
        "messages": s.messages.load(Ordering::Relaxed),
        "rejected": s.rejected.load(Ordering::Relaxed),
        "bus_errors": s.bus_errors.load(Ordering::Relaxed),
    })
}

/// Between half and all of `d`, so that many gateways do not retry in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// Sleeps unless stopped first; `false` when stopped.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_and_unroutable_payloads_are_counted_not_fatal() {
        let hub = Hub::new(&crate::hub::HubLimits::for_tests());
        handle_payload(&hub, Channel::Spreads, b"\xff\xff\xff garbage");
        let unknown = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "ftx".into(),
            exchange_b: "okx".into(),
            ..Spread::default()
        };
        handle_payload(&hub, Channel::Spreads, &unknown.encode_to_vec());
        let lower = Tick {
            symbol: "btc".into(),
            exchange: "okx".into(),
            ..Tick::default()
        };
        handle_payload(&hub, Channel::Ticks, &lower.encode_to_vec());
        let good = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            ..Spread::default()
        };
        handle_payload(&hub, Channel::Spreads, &good.encode_to_vec());
        let spreads = hub.feed_stats(Channel::Spreads);
        assert_eq!(spreads.messages.load(Ordering::Relaxed), 3);
        assert_eq!(spreads.rejected.load(Ordering::Relaxed), 2);
        assert_eq!(
            hub.feed_stats(Channel::Ticks)
                .rejected
                .load(Ordering::Relaxed),
            1
        );
        assert_eq!(hub.latest.symbol_count(), 1, "the good point is kept");
    }
}
