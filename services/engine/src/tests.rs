//! The role's own tests: ticks lost in delivery are read back in order.

use super::*;
use spreadagg_bus::StreamSettings;
use spreadagg_model::subjects::STREAM_SPREADS;

fn tick(exchange: &str, bid: f64, ts_ns: i64) -> OutMessage {
    let t = Tick {
        exchange: exchange.into(),
        symbol: "BTC-USDT".into(),
        bid_px: bid,
        bid_qty: 1.0,
        ask_px: bid + 0.1,
        ask_qty: 1.0,
        recv_ts_ns: ts_ns,
        ..Tick::default()
    };
    OutMessage {
        subject: format!("md.tick.{exchange}.BTC-USDT"),
        msg_id: format!("{exchange}-{ts_ns}"),
        payload: t.encode_to_vec().into(),
    }
}

/// Deliveries 2 and 3 are lost on the way (as on a dropped connection): 4 arrives first.
/// The engine reads 2 and 3 back and applies them in order before 4; their later
/// redeliveries are acknowledged without a second application. The points stored are
/// exactly those of the ticks in stream order.
#[tokio::test]
async fn ticks_lost_in_delivery_are_read_back_in_order_not_taken_for_applied() {
    let bus = Bus::in_process(&StreamSettings::default());
    let now = spreadagg_model::time::now_ns();
    for (i, (ex, bid)) in [
        ("okx", 100.0),
        ("binance", 100.2),
        ("okx", 100.4),
        ("binance", 100.1),
        ("okx", 100.3),
    ]
    .into_iter()
    .enumerate()
    {
        bus.publish(&tick(ex, bid, now + i64::try_from(i).unwrap_or(0)))
            .await
            .expect("stored");
    }
    let spec = ConsumerSpec {
        stream: STREAM_TICKS.into(),
        durable: "t".into(),
        filter: subjects::ALL_TICKS.into(),
        ack_wait: Duration::from_millis(200),
        max_ack_pending: 100,
        batch: 10,
        start_seq: None,
    };
    let mut consumer = bus.durable(&spec).await.expect("consumer");
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(consumer.next().await.expect("delivery"));
    }
    let config = EngineConfig::default();
    let mut work = Work::new(&config, config.limits().expect("limits"), &bus);
    let stop = CancellationToken::new();
    let mut d = deliveries.into_iter();
    let (one, two, three, four, five) = (
        d.next().expect("1"),
        d.next().expect("2"),
        d.next().expect("3"),
        d.next().expect("4"),
        d.next().expect("5"),
    );
    drop((two, three));
    work.handle(one, &stop).await.ok().expect("handled");
    work.handle(four, &stop).await.ok().expect("handled");
    // 2 and 3 come back after the ack wait: acknowledged, not applied again.
    for _ in 0..2 {
        let again = consumer.next().await.expect("redelivery");
        assert!(again.redelivered && again.stream_seq < 4);
        work.handle(again, &stop).await.ok().expect("handled");
    }
    work.handle(five, &stop).await.ok().expect("handled");
    work.publisher.flush().await.expect("flushed");
    work.ack_settled().await;
    assert!(work.waiting.is_empty(), "every tick acknowledged");

    let mut reference = SpreadState::new(config.limits().expect("limits"));
    let mut expected = Vec::new();
    for seq in 1..=5 {
        let m = bus
            .get(STREAM_TICKS, seq)
            .await
            .expect("get")
            .expect("stored");
        expected.extend(
            reference
                .on_tick(&Tick::decode(m.payload).expect("tick"))
                .expect("in order"),
        );
    }
    let state = bus.stream_state(STREAM_SPREADS).await.expect("spreads");
    let mut stored = Vec::new();
    for seq in state.first_seq..=state.last_seq {
        let m = bus
            .get(STREAM_SPREADS, seq)
            .await
            .expect("get")
            .expect("stored");
        stored.push(spreadagg_model::wire::Spread::decode(m.payload).expect("spread"));
    }
    assert_eq!(expected.len(), 4);
    assert_eq!(stored, expected, "every point once, in stream order");
}
