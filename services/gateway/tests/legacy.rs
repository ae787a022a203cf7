//! The prototype's endpoints against the shapes its clients expect: `/ws/realtime` sends
//! `{"MessageType": ..., "Payload": ...}` envelopes with PascalCase fields (an
//! `AllSymbolInfo` first, then `Spread` and `Trade`), `/ws/realtime_charts` sends chart
//! snapshots `{symbol, exchange1, exchange2, timestamps[], spreads[], upperBand[],
//! lowerBand[]}`.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message as _;
use serde_json::json;
use spreadagg_model::wire::ChartSnapshot;

#[tokio::test]
async fn realtime_sends_symbol_info_then_spread_and_trade_envelopes() {
    let gw = start(config()).await;
    publish_tick(&gw.bus, &tick("okx", "BTC-USDT", 1)).await;
    publish_tick(&gw.bus, &tick("binance", "BTC-USDT", 2)).await;
    publish_tick(&gw.bus, &tick("okx", "ETH-USDT", 3)).await;
    wait_latest(gw.addr, "ticks", "*", 3).await;
    let mut ws = connect_to(gw.addr, "/ws/realtime").await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"MessageType":"AllSymbolInfo","Payload":[
            {"Symbol":"BTC-USDT","Exchanges":["binance","okx"]},
            {"Symbol":"ETH-USDT","Exchanges":["okx"]}]})
    );
    publish_tick(&gw.bus, &tick("okx", "BTC-USDT", 4)).await; // not part of this protocol
    publish(&gw.bus, &point("BTC-USDT", "binance", "okx", 5)).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["MessageType"], "Spread");
    assert_eq!(
        (
            &v["Payload"]["Symbol"],
            &v["Payload"]["ExchangeA"],
            &v["Payload"]["BidBidPct"]
        ),
        (&json!("BTC-USDT"), &json!("binance"), &json!(-0.75))
    );
    assert_eq!(v["Payload"]["TsNs"], json!(1_700_000_000_001_000_005_i64));
    publish_trade(&gw.bus, &trade("okx", "ETH-USDT", 6)).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        v,
        json!({"MessageType":"Trade","Payload":{"Exchange":"okx","Symbol":"ETH-USDT",
            "Price":106.0,"Qty":0.5,"Side":"Buy","TradeId":"t6",
            "ExchangeTsNs":1_700_000_000_000_000_006_i64,"RecvTsNs":1_700_000_000_001_000_006_i64}})
    );
    gw.stop().await;
}

#[tokio::test]
async fn realtime_charts_sends_the_pairs_chart_in_the_prototype_shape() {
    let gw = start(config()).await;
    let mut engine = gw.bus.serve("md.chart.>").await.expect("serves");
    let answering = tokio::spawn(async move {
        let mut n = 0i64;
        while let Some(req) = engine.next().await {
            n += 1;
            let chart = ChartSnapshot {
                symbol: "BTC-USDT".into(),
                exchange_a: "binance".into(),
                exchange_b: "okx".into(),
                ts_ns: vec![
                    1_700_000_000_000_000_000,
                    1_700_000_000_000_000_000 + n * 1_000_000,
                ],
                spread_pct: vec![0.5, -0.25],
                upper_band: vec![0.75, 0.75],
                lower_band: vec![-0.5, -0.5],
            };
            req.respond(Bytes::from(chart.encode_to_vec()))
                .await
                .expect("answered");
        }
    });
    let mut ws = connect_to(
        gw.addr,
        "/ws/realtime_charts?symbol=BTC-USDT&exchange1=okx&exchange2=binance",
    )
    .await;
    let first = recv(&mut ws).await;
    assert_eq!(
        first,
        json!({"symbol":"BTC-USDT","exchange1":"binance","exchange2":"okx",
               "timestamps":[1_700_000_000_000_i64, 1_700_000_000_001_i64],
               "spreads":[0.5,-0.25],"upperBand":[0.75,0.75],"lowerBand":[-0.5,-0.5]})
    );
    // The window moved: a newer chart follows about a second later.
    let second = recv(&mut ws).await;
    assert_eq!(second["timestamps"][1], json!(1_700_000_000_002_i64));
    answering.abort();
    gw.stop().await;
}

#[tokio::test]
async fn realtime_charts_without_a_pair_is_refused() {
    let gw = start(config()).await;
    for path in [
        "/ws/realtime_charts",
        "/ws/realtime_charts?symbol=BTC-USDT",
        "/ws/realtime_charts?symbol=btc&exchange1=okx&exchange2=binance",
        "/ws/realtime_charts?symbol=BTC-USDT&exchange1=okx&exchange2=okx",
    ] {
        match tokio_tungstenite::connect_async(format!("ws://{}{path}", gw.addr)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400, "{path}");
            }
            other => panic!("{path}: expected HTTP 400, got {other:?}"),
        }
    }
    gw.stop().await;
}
