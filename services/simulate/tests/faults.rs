//! Fault injection seen from a real WebSocket client: each fault, injected through
//! `Simulator::inject` on a started simulator, has its observable effect on the wire.

mod common;

use std::time::Duration;

use common::{close_code, connect, json_of, next_frame, next_until, send, start, wait_for};
use serde_json::Value;
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{Fault, OVERSIZED_BYTES};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const OKX_BBO: &str = r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"}]}"#;

fn is_okx_data(v: &Value) -> bool {
    v.get("data").is_some()
}

#[tokio::test]
async fn stall_withholds_data_while_pings_are_answered_then_data_resumes() {
    let sim = start(&[ExchangeId::Okx]).await;
    let mut ws = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut ws, OKX_BBO).await;
    wait_for(&mut ws, is_okx_data).await;

    sim.sim
        .inject(ExchangeId::Okx, Fault::Stall { duration_ms: 1_500 })
        .expect("inject");
    let t0 = Instant::now();
    // Frames already on the way when the stall began may still arrive.
    while let Some(Some(Ok(_))) = next_until(&mut ws, t0 + Duration::from_millis(150)).await {}
    let mut pongs = 0;
    while Instant::now() < t0 + Duration::from_millis(1_300) {
        send(&mut ws, "ping").await;
        let until = Instant::now() + Duration::from_millis(250);
        while let Some(frame) = next_until(&mut ws, until).await {
            match frame {
                Some(Ok(Message::Text(t))) if t.as_str() == "pong" => pongs += 1,
                Some(Ok(Message::Text(t))) => panic!("data during the stall: {t}"),
                other => panic!("unexpected during the stall: {other:?}"),
            }
        }
    }
    assert!(
        pongs >= 3,
        "pings are answered during a stall ({pongs} pongs)"
    );
    wait_for(&mut ws, is_okx_data).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1_400),
        "data resumed after {:?}, before the window ended",
        t0.elapsed()
    );
}

#[tokio::test]
async fn disconnect_drops_every_session_without_a_close_frame() {
    let sim = start(&[ExchangeId::Binance]).await;
    let url = format!("{}/btcusdt@bookTicker", sim.ws(ExchangeId::Binance));
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    for ws in [&mut a, &mut b] {
        wait_for(ws, |v| v.get("u").is_some()).await;
    }
    sim.sim
        .inject(ExchangeId::Binance, Fault::Disconnect)
        .expect("inject");
    for ws in [&mut a, &mut b] {
        let ended = loop {
            match next_frame(ws).await {
                Some(Ok(Message::Close(c))) => panic!("a Close frame was sent: {c:?}"),
                Some(Ok(_)) => {}
                other => break other,
            }
        };
        assert!(
            matches!(ended, None | Some(Err(_))),
            "the socket ends without a closing handshake: {ended:?}"
        );
    }
    // The listener still serves new connections.
    let mut c = connect(&url).await;
    wait_for(&mut c, |v| v.get("u").is_some()).await;
}

#[tokio::test]
async fn garbage_frames_arrive_among_data_on_okx() {
    let sim = start(&[ExchangeId::Okx]).await;
    let mut ws = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut ws, OKX_BBO).await;
    wait_for(&mut ws, is_okx_data).await;
    sim.sim
        .inject(ExchangeId::Okx, Fault::Garbage { count: 3 })
        .expect("inject");
    let (mut garbage, mut data_after) = (0, 0);
    while data_after < 10 {
        match next_frame(&mut ws).await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) if garbage == 3 && is_okx_data(&v) => data_after += 1,
                Ok(_) => {}
                Err(_) => garbage += 1,
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(garbage, 3, "exactly the injected garbage frames");
}

#[tokio::test]
async fn garbage_frames_on_htx_are_not_gzip() {
    let sim = start(&[ExchangeId::Htx]).await;
    let mut ws = connect(&sim.ws(ExchangeId::Htx)).await;
    send(&mut ws, r#"{"sub":"market.btcusdt.bbo","id":"g"}"#).await;
    wait_for(&mut ws, |v| v.get("tick").is_some()).await;
    sim.sim
        .inject(ExchangeId::Htx, Fault::Garbage { count: 2 })
        .expect("inject");
    let (mut garbage, mut data_after) = (0, 0);
    while data_after < 10 {
        match next_frame(&mut ws).await {
            Some(Ok(msg @ Message::Binary(_))) => match json_of(&msg) {
                Some(v) if garbage == 2 && v.get("tick").is_some() => data_after += 1,
                Some(_) => {}
                None => garbage += 1,
            },
            other => panic!("HTX sends binary frames only: {other:?}"),
        }
    }
    assert_eq!(garbage, 2);
}

#[tokio::test]
async fn oversized_sends_one_frame_over_two_mib() {
    let sim = start(&[ExchangeId::Binance]).await;
    let url = format!("{}/btcusdt@trade", sim.ws(ExchangeId::Binance));
    let mut ws = connect(&url).await;
    sim.sim
        .inject(ExchangeId::Binance, Fault::Oversized)
        .expect("inject");
    let big = loop {
        match next_frame(&mut ws).await {
            Some(Ok(Message::Text(t))) if t.len() > 64 * 1024 => break t,
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    };
    assert!(big.len() > 2 * 1024 * 1024, "{} bytes", big.len());
    assert!(big.len() >= OVERSIZED_BYTES);
    // The session carries on after it.
    wait_for(&mut ws, |v| v.get("e").is_some_and(|e| e == "trade")).await;
}

#[tokio::test]
async fn refuse_subscription_answers_each_exchange_documented_error() {
    let sim = start(&[ExchangeId::Binance, ExchangeId::Okx, ExchangeId::Htx]).await;
    for ex in [ExchangeId::Binance, ExchangeId::Okx, ExchangeId::Htx] {
        sim.sim
            .inject(ex, Fault::RefuseSubscription { count: 1 })
            .expect("inject");
    }

    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}"#,
    )
    .await;
    let r = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(
        (r["id"].as_i64(), r["error"]["code"].as_i64()),
        (Some(7), Some(2)),
        "{r}"
    );
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":8}"#,
    )
    .await;
    let r = wait_for(&mut ws, |v| v.get("id").is_some()).await;
    assert_eq!(
        r,
        serde_json::json!({"result": null, "id": 8}),
        "only one refusal"
    );

    let mut ws = connect(&sim.ws(ExchangeId::Okx)).await;
    let okx = r#"{"id":"r1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#;
    send(&mut ws, okx).await;
    let r = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(
        (r["event"].as_str(), r["code"].as_str(), r["id"].as_str()),
        (Some("error"), Some("60014"), Some("r1")),
        "{r}"
    );
    send(&mut ws, okx).await;
    let r = wait_for(&mut ws, |v| v.get("event").is_some()).await;
    assert_eq!(r["event"], "subscribe", "{r}");

    let mut ws = connect(&sim.ws(ExchangeId::Htx)).await;
    let htx = r#"{"sub":"market.btcusdt.bbo","id":"h1"}"#;
    send(&mut ws, htx).await;
    let r = wait_for(&mut ws, |v| v.get("status").is_some()).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["err-code"].as_str(),
            r["id"].as_str()
        ),
        (Some("error"), Some("bad-request"), Some("h1")),
        "{r}"
    );
    send(&mut ws, htx).await;
    let r = wait_for(&mut ws, |v| v.get("status").is_some()).await;
    assert_eq!(r["status"], "ok", "{r}");
}

#[tokio::test]
async fn close_with_notice_sends_the_documented_notice_then_close() {
    let sim = start(&[ExchangeId::Binance, ExchangeId::Okx, ExchangeId::Htx]).await;
    let mut binance = connect(&sim.ws(ExchangeId::Binance)).await;
    let mut okx = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut okx, OKX_BBO).await;
    wait_for(&mut okx, is_okx_data).await;
    let mut htx = connect(&sim.ws(ExchangeId::Htx)).await;
    for ex in [ExchangeId::Binance, ExchangeId::Okx, ExchangeId::Htx] {
        sim.sim.inject(ex, Fault::CloseWithNotice).expect("inject");
    }
    let notice = wait_for(&mut binance, |v| v.get("e").is_some()).await;
    assert_eq!(notice["e"], "serverShutdown", "{notice}");
    assert_eq!(close_code(&mut binance, |_| false).await, 1001);
    let notice = wait_for(&mut okx, |v| v.get("event").is_some()).await;
    assert_eq!(
        (notice["event"].as_str(), notice["code"].as_str()),
        (Some("notice"), Some("64008")),
        "{notice}"
    );
    assert_eq!(close_code(&mut okx, |_| false).await, 1001);
    // HTX documents no notice: a Close frame only.
    assert_eq!(
        close_code(&mut htx, |v| v.get("ping").is_none()).await,
        1001
    );
}

#[tokio::test]
async fn close_without_notice_sends_only_a_close_frame() {
    let sim = start(&[ExchangeId::Binance, ExchangeId::Okx]).await;
    let mut binance = connect(&format!(
        "{}/btcusdt@bookTicker",
        sim.ws(ExchangeId::Binance)
    ))
    .await;
    wait_for(&mut binance, |v| v.get("u").is_some()).await;
    let mut okx = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut okx, OKX_BBO).await;
    wait_for(&mut okx, is_okx_data).await;
    for ex in [ExchangeId::Binance, ExchangeId::Okx] {
        sim.sim
            .inject(ex, Fault::CloseWithoutNotice)
            .expect("inject");
    }
    let code = close_code(&mut binance, |v| {
        v.get("e").is_some_and(|e| e == "serverShutdown")
    })
    .await;
    assert_eq!(code, 1001);
    let code = close_code(&mut okx, |v| v.get("event").is_some_and(|e| e == "notice")).await;
    assert_eq!(code, 1001);
}

/// How long a Binance LIST_SUBSCRIPTIONS takes to be answered.
async fn timed_reply(ws: &mut common::Ws, id: u32) -> Duration {
    let t0 = Instant::now();
    send(
        ws,
        &format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#),
    )
    .await;
    wait_for(ws, |v| v.get("id").is_some()).await;
    t0.elapsed()
}

#[tokio::test]
async fn slow_delays_every_outbound_frame() {
    let sim = start(&[ExchangeId::Binance]).await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    assert!(timed_reply(&mut ws, 1).await < Duration::from_millis(600));
    sim.sim
        .inject(
            ExchangeId::Binance,
            Fault::Slow {
                duration_ms: 5_000,
                delay_ms: 800,
            },
        )
        .expect("inject");
    let slow = timed_reply(&mut ws, 2).await;
    assert!(slow >= Duration::from_millis(800), "{slow:?}");
    sim.sim.clear_faults(ExchangeId::Binance).expect("clear");
    let fast = timed_reply(&mut ws, 3).await;
    assert!(fast < Duration::from_millis(600), "{fast:?}");
}

#[tokio::test]
async fn ignore_pongs_lets_htx_close_a_client_that_answers() {
    let sim = start(&[ExchangeId::Htx]).await;
    let mut ws = connect(&sim.ws(ExchangeId::Htx)).await;
    // A first ping answered: the client is a good one.
    let ping = wait_for(&mut ws, |v| v.get("ping").is_some()).await;
    send(&mut ws, &format!(r#"{{"pong":{}}}"#, ping["ping"])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.sim
        .inject(
            ExchangeId::Htx,
            Fault::IgnorePongs {
                duration_ms: 60_000,
            },
        )
        .expect("inject");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(20);
    let code = loop {
        match next_until(&mut ws, until)
            .await
            .expect("closed within 20 s")
        {
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(msg)) => {
                if let Some(n) = json_of(&msg).and_then(|v| v.get("ping").cloned()) {
                    send(&mut ws, &format!(r#"{{"pong":{n}}}"#)).await;
                }
            }
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1000), "HTX's pong-timeout close");
    // The answered ping does not count; the next one (within 5 s) expires 10 s later.
    let after = t0.elapsed();
    assert!(after >= Duration::from_secs(12), "{after:?}");
}
