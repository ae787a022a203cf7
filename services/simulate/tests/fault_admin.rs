//! The fault admin API on each exchange's listener: `POST`, `GET` and `DELETE /sim/faults`,
//! with bounded, validated bodies.

mod common;

use common::{http, start};
use serde_json::{Value, json};
use spreadagg_model::ExchangeId;
use spreadagg_simulate::{Fault, FaultError};

async fn call(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let response = req.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn post_get_delete_manage_faults() {
    let sim = start(&[ExchangeId::Okx, ExchangeId::Binance]).await;
    let url = format!("{}/sim/faults", sim.rest(ExchangeId::Okx));
    let post = |body: Value| call(reqwest::Method::POST, &url, Some(body.to_string()));

    let (status, body) = post(json!({"fault": "stall", "duration_ms": 60_000})).await;
    assert_eq!((status, body), (200, json!({"injected": "stall"})));
    let (status, body) = post(json!({"fault": "refuse_subscription", "count": 2})).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = call(reqwest::Method::GET, &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["exchange"], "okx");
    let active = body["active"].as_array().expect("a list");
    assert_eq!(active.len(), 2, "{body}");
    assert_eq!(active[0]["fault"], "stall");
    assert!(
        active[0]["remaining_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 50_000)
    );
    assert_eq!(
        active[1],
        json!({"fault": "refuse_subscription", "remaining": 2})
    );

    // The other exchange's faults are its own.
    assert!(
        sim.sim
            .active_faults(ExchangeId::Binance)
            .expect("simulated")
            .is_empty()
    );
    assert_eq!(
        sim.sim
            .active_faults(ExchangeId::Okx)
            .expect("simulated")
            .len(),
        2
    );

    let (status, body) = call(reqwest::Method::DELETE, &url, None).await;
    assert_eq!((status, body), (200, json!({"cleared": true})));
    let (_, body) = call(reqwest::Method::GET, &url, None).await;
    assert_eq!(body["active"], json!([]));
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let sim = start(&[ExchangeId::Binance]).await;
    let url = format!("{}/sim/faults", sim.rest(ExchangeId::Binance));
    let post = |body: String| call(reqwest::Method::POST, &url, Some(body));
    for (body, want) in [
        ("{not json".to_owned(), 400),
        (r#"{"fault":"explode"}"#.to_owned(), 400),
        (r#"{"fault":"stall"}"#.to_owned(), 400),
        (r#"{"fault":"stall","duration_ms":0}"#.to_owned(), 400),
        (r#"{"fault":"stall","duration_ms":3600001}"#.to_owned(), 400),
        (r#"{"fault":"garbage","count":101}"#.to_owned(), 400),
        (
            r#"{"fault":"slow","duration_ms":10,"delay_ms":10001}"#.to_owned(),
            400,
        ),
        (
            r#"{"fault":"stall","duration_ms":5,"extra":true}"#.to_owned(),
            400,
        ),
        (
            format!(r#"{{"fault":"disconnect","pad":"{}"}}"#, "x".repeat(8_192)),
            413,
        ),
    ] {
        let (status, reply) = post(body.clone()).await;
        assert_eq!(status, want, "{body:.80}: {reply}");
        if status == 400 {
            assert!(reply["error"].is_string(), "{reply}");
        }
    }
    assert!(
        sim.sim
            .active_faults(ExchangeId::Binance)
            .expect("simulated")
            .is_empty()
    );
}

#[tokio::test]
async fn the_rust_api_checks_the_exchange_and_the_bounds() {
    let sim = start(&[ExchangeId::Htx]).await;
    assert_eq!(
        sim.sim.inject(ExchangeId::Kucoin, Fault::Disconnect),
        Err(FaultError::NotSimulated(ExchangeId::Kucoin))
    );
    assert!(matches!(
        sim.sim.inject(ExchangeId::Htx, Fault::Garbage { count: 0 }),
        Err(FaultError::OutOfRange(_))
    ));
    sim.sim
        .inject(ExchangeId::Htx, Fault::IgnorePongs { duration_ms: 1_000 })
        .expect("inject");
    let active = sim.sim.active_faults(ExchangeId::Htx).expect("simulated");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].fault, "ignore_pongs");
}
