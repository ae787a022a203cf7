//! Across exchanges: one market, shutdown, refusals of unknown exchanges, one exchange alone.

use super::*;

/// Binance and OKX quote the same market: each symbol's mid agrees within 1 %.
#[tokio::test]
async fn the_same_symbol_has_the_same_mid_on_both_exchanges() {
    let sim = start(config()).await;
    let binance = sim.rest(ExchangeId::Binance);
    let okx = sim.rest(ExchangeId::Okx);
    for _ in 0..5 {
        let (_, b) = get(&format!("{binance}/api/v3/ticker/bookTicker")).await;
        let (_, o) = get(&format!("{okx}/api/v5/market/tickers?instType=SPOT")).await;
        for symbol in config().symbols {
            let concat = symbol.replace('-', "");
            let bt = b
                .as_array()
                .and_then(|a| a.iter().find(|t| t["symbol"] == concat.as_str()))
                .expect("binance");
            let ot = o["data"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["instId"] == symbol.as_str()))
                .expect("okx");
            let mid_b = (num(&bt["bidPrice"]) + num(&bt["askPrice"])) / 2.0;
            let mid_o = (num(&ot["bidPx"]) + num(&ot["askPx"])) / 2.0;
            let diff = (mid_b / mid_o - 1.0).abs();
            assert!(diff < 0.01, "{symbol}: binance {mid_b} okx {mid_o}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn stop_closes_every_session_with_a_close_frame_and_join_returns() {
    let mut sim = start(config()).await;
    let binance_url = sim.ws(ExchangeId::Binance);
    let binance = connect(&binance_url).await;
    let mut okx = connect(&sim.ws(ExchangeId::Okx)).await;
    send(
        &mut okx,
        r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#,
    )
    .await;
    wait_for(&mut okx, |v| v["event"] == "subscribe").await;
    let simulator = sim.sim.take().expect("running");
    sim.stop.cancel();
    // Keep reading so both sides finish the closing handshake.
    let read_to_close = |mut ws: Ws| async move {
        let mut texts = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("closes in time")
            {
                Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
                Some(Ok(Message::Close(c))) => return (texts, c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("no Close frame: {e}"),
                None => panic!("no Close frame"),
            }
        }
    };
    let ((b_texts, b_code), (o_texts, o_code)) =
        tokio::join!(read_to_close(binance), read_to_close(okx));
    assert_eq!((b_code, o_code), (Some(1001), Some(1001)));
    assert!(
        b_texts.last().is_some_and(|t| t.contains("serverShutdown")),
        "{b_texts:?}"
    );
    assert!(
        o_texts.last().is_some_and(|t| t.contains("64008")),
        "{o_texts:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), simulator.join())
        .await
        .expect("every task finishes promptly");
    assert!(
        connect_async(binance_url.as_str()).await.is_err(),
        "listeners are closed"
    );
}

#[tokio::test]
async fn one_exchange_alone() {
    let sim = start(SimConfig {
        exchanges: vec![ExchangeId::Okx],
        ..config()
    })
    .await;
    let endpoints = sim
        .sim
        .as_ref()
        .map(Simulator::endpoints)
        .unwrap_or_default();
    assert_eq!(endpoints.len(), 1);
    let (status, time) = get(&format!("{}/api/v5/public/time", sim.rest(ExchangeId::Okx))).await;
    assert_eq!((status, time["code"].as_str()), (200, Some("0")));
    assert!(
        time["data"][0]["ts"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().is_ok())
    );
}
