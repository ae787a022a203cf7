//! The gRPC API against a real gateway: a tonic client generated from
//! `proto/spreadagg/gateway/v1/gateway.proto`, subscriptions with snapshots, unary calls,
//! argument errors, authentication, and the end of streams on stop.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use prost::Message as _;
use spreadagg_gateway::GatewayConfig;
use spreadagg_gateway::grpc_api::gateway_client::GatewayClient;
use spreadagg_gateway::grpc_api::{self as api, event::Kind};
use spreadagg_model::wire::ChartSnapshot;
use tonic::Code;
use tonic::transport::Channel;

fn grpc_config() -> GatewayConfig {
    GatewayConfig {
        grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..config()
    }
}

async fn client(addr: SocketAddr) -> GatewayClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("gRPC connects");
    GatewayClient::new(channel)
}

fn req(
    channel: api::Channel,
    symbol: &str,
    exchanges: &[&str],
    snapshot: bool,
) -> api::SubscribeRequest {
    api::SubscribeRequest {
        channel: channel as i32,
        symbol: symbol.into(),
        exchanges: exchanges.iter().map(|s| (*s).to_owned()).collect(),
        snapshot,
    }
}

async fn next(stream: &mut tonic::Streaming<api::Event>) -> Kind {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within 10 s")
        .expect("no error")
        .expect("the stream goes on")
        .kind
        .expect("a kind")
}

#[tokio::test]
async fn subscribe_streams_the_snapshot_then_live_messages() {
    let gw = start(grpc_config()).await;
    let addr = gw.grpc_addr.expect("gRPC bound");
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "bybit", "okx", 2)).await;
    wait_latest(gw.addr, "spreads", "BTC-USDT", 2).await;
    let mut c = client(addr).await;
    let mut stream = c
        .subscribe(req(api::Channel::Spreads, "BTC-USDT", &["okx", "*"], true))
        .await
        .expect("subscribed")
        .into_inner();
    let mut snapshot = Vec::new();
    loop {
        match next(&mut stream).await {
            Kind::Spread(s) => snapshot.push(s.ts_ns - 1_700_000_000_001_000_000),
            Kind::SnapshotEnd(end) => {
                assert!(!end.truncated);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(snapshot, [1, 2]);
    publish(&gw.bus, &point("BTC-USDT", "binance", "bybit", 3)).await; // no okx: not selected
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 4)).await;
    match next(&mut stream).await {
        Kind::Spread(s) => {
            assert_eq!(s.ts_ns - 1_700_000_000_001_000_000, 4);
            assert_eq!((s.exchange_a.as_str(), s.bid_a), ("binance", 104.0));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Ticks of one exchange, no snapshot.
    let mut ticks = c
        .subscribe(req(api::Channel::Ticks, "*", &["kraken"], false))
        .await
        .expect("subscribed")
        .into_inner();
    publish_tick(&gw.bus, &tick("okx", "ETH-USDT", 5)).await;
    publish_tick(&gw.bus, &tick("kraken", "ETH-USDT", 6)).await;
    match next(&mut ticks).await {
        Kind::Tick(t) => assert_eq!((t.exchange.as_str(), t.seq), ("kraken", 6)),
        other => panic!("unexpected {other:?}"),
    }
    // Stopping ends the streams with UNAVAILABLE, the hint to reconnect.
    let stopping = tokio::spawn(gw.stop());
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends");
    let status = end.expect("ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("reconnect"), "{status:?}");
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn unary_calls_answer_and_bad_arguments_are_named() {
    let gw = start(grpc_config()).await;
    let addr = gw.grpc_addr.expect("gRPC bound");
    publish_tick(&gw.bus, &tick("okx", "BTC-USDT", 1)).await;
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 2)).await;
    wait_latest(gw.addr, "spreads", "*", 1).await;
    let mut c = client(addr).await;
    let snap = c
        .snapshot(req(api::Channel::Spreads, "*-USDT", &[], true))
        .await
        .expect("snapshot")
        .into_inner();
    assert_eq!(snap.items.len(), 1);
    let ex = c
        .get_exchanges(api::ExchangesRequest {})
        .await
        .expect("exchanges")
        .into_inner();
    assert_eq!(ex.exchanges.len(), 11);
    let okx = ex
        .exchanges
        .iter()
        .find(|e| e.exchange == "okx")
        .expect("okx");
    assert_eq!((okx.state.as_str(), okx.symbols), ("live", 1));
    let kraken = ex
        .exchanges
        .iter()
        .find(|e| e.exchange == "kraken")
        .expect("kraken");
    assert_eq!(
        (kraken.state.as_str(), kraken.last_tick_age_ms),
        ("unseen", None)
    );

    let mut engine = gw.bus.serve("md.chart.>").await.expect("serves");
    let answering = tokio::spawn(async move {
        while let Some(r) = engine.next().await {
            let chart = ChartSnapshot {
                symbol: "BTC-USDT".into(),
                exchange_a: "binance".into(),
                exchange_b: "okx".into(),
                ts_ns: vec![7],
                spread_pct: vec![0.5],
                upper_band: vec![0.75],
                lower_band: vec![-0.5],
            };
            r.respond(Bytes::from(chart.encode_to_vec()))
                .await
                .expect("answered");
        }
    });
    let chart = c
        .get_chart(api::ChartRequest {
            symbol: "BTC-USDT".into(),
            exchange_a: "okx".into(),
            exchange_b: "binance".into(),
        })
        .await
        .expect("chart")
        .into_inner();
    assert_eq!((chart.ts_ns, chart.upper_band), (vec![7], vec![0.75]));
    answering.abort();

    for (name, bad) in [
        (
            "no channel",
            req(api::Channel::Unspecified, "*", &[], false),
        ),
        ("bad symbol", req(api::Channel::Spreads, "btc", &[], false)),
        (
            "unknown exchange",
            req(api::Channel::Ticks, "*", &["ftx"], false),
        ),
        (
            "pair on ticks",
            req(api::Channel::Ticks, "*", &["okx", "binance"], false),
        ),
        (
            "chart of a wildcard",
            req(api::Channel::Charts, "*", &["okx", "binance"], true),
        ),
    ] {
        let err = c.subscribe(bad).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(!err.message().is_empty());
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_its_client_does_not_read_is_closed_and_gives_its_place_back() {
    let gw = start(GatewayConfig {
        max_connections_per_ip: 1,
        max_client_lag_ms: 500,
        ..grpc_config()
    })
    .await;
    let addr = gw.grpc_addr.expect("gRPC bound");
    let mut c = client(addr).await;
    let stalled = c
        .subscribe(req(api::Channel::Spreads, "*", &[], false))
        .await
        .expect("subscribed");
    // Never read: HTTP/2 flow control stops the server once its windows are full.
    let mut n = 0;
    while gw.detail("gateway.clients", "slow_disconnects") == 0 {
        assert!(n < 200_000, "the stalled stream was never closed");
        for _ in 0..500 {
            publish(&gw.bus, &point("BTC-USDT", "binance", "okx", n)).await;
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its place is back: a new stream from the same address is admitted.
    let again = tokio::time::timeout(WAIT, async {
        loop {
            match c
                .subscribe(req(api::Channel::Spreads, "*", &[], false))
                .await
            {
                Ok(s) => return s,
                Err(e) if e.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await
    .expect("the place comes back");
    drop((stalled, again));
    gw.stop().await;
}

#[tokio::test]
async fn streams_count_against_the_client_caps() {
    let gw = start(GatewayConfig {
        max_connections_per_ip: 1,
        ..grpc_config()
    })
    .await;
    let addr = gw.grpc_addr.expect("gRPC bound");
    let mut c = client(addr).await;
    let _first = c
        .subscribe(req(api::Channel::Spreads, "*", &[], false))
        .await
        .expect("first stream");
    let err = c
        .subscribe(req(api::Channel::Spreads, "*", &[], false))
        .await
        .expect_err("a second from the same address");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    gw.stop().await;
}
