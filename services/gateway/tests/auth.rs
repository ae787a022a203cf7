//! Authentication and origins, on every surface: with a tokens file configured, WebSocket,
//! REST, the OpenAPI document and gRPC refuse callers without a valid bearer token; browsers
//! from origins not allowed cannot open the WebSockets.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use spreadagg_gateway::GatewayConfig;
use spreadagg_gateway::grpc_api::gateway_client::GatewayClient;
use spreadagg_gateway::grpc_api::{self as api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn raw_get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n")
            .as_bytes(),
    )
    .await
    .expect("sent");
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    raw
}

fn status(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

async fn ws_status(addr: SocketAddr, path: &str, header: Option<(&str, &str)>) -> u16 {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some((k, v)) = header {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn every_surface_needs_a_token_when_tokens_are_configured() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# desk\nsecret-one\nsecret-two\n").expect("written");
    let gw = start(GatewayConfig {
        auth_tokens_file: Some(tokens),
        grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..config()
    })
    .await;
    let addr = gw.addr;

    // REST and the OpenAPI document.
    for path in [
        "/api/symbols",
        "/api/spreads?symbol=*",
        "/api/exchanges",
        "/openapi.json",
    ] {
        let raw = raw_get(addr, path, "").await;
        assert_eq!(status(&raw), 401, "{path}: {raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{raw}"
        );
        assert_eq!(
            status(&raw_get(addr, path, "Authorization: Bearer nope\r\n").await),
            401,
            "{path}"
        );
        assert_eq!(
            status(&raw_get(addr, path, "Authorization: Bearer secret-two\r\n").await),
            200,
            "{path}"
        );
    }
    // The static pages stay open (they carry no data).
    assert_eq!(status(&raw_get(addr, "/", "").await), 200);
    assert_eq!(
        status(&raw_get(addr, "/assets/dashboard.js", "").await),
        200
    );

    // WebSockets: the header, or access_token for browsers.
    for path in [
        "/ws",
        "/ws/realtime",
        "/ws/realtime_charts?symbol=BTC-USDT&exchange1=binance&exchange2=okx",
    ] {
        assert_eq!(ws_status(addr, path, None).await, 401, "{path}");
        assert_eq!(
            ws_status(addr, path, Some(("authorization", "Bearer wrong"))).await,
            401
        );
        assert_eq!(
            ws_status(addr, path, Some(("authorization", "Bearer secret-one"))).await,
            101
        );
    }
    assert_eq!(
        ws_status(addr, "/ws?access_token=secret-one", None).await,
        101
    );
    assert_eq!(
        ws_status(addr, "/ws?access_token=secret-on", None).await,
        401
    );
    let mut ws = connect_to(addr, "/ws?access_token=secret-two").await;
    send(&mut ws, json!({"op": "ping", "id": 1})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong", "id": 1}));

    // gRPC.
    let grpc = gw.grpc_addr.expect("gRPC bound");
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut c = GatewayClient::new(channel);
    let err = c
        .get_exchanges(api::ExchangesRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let refused = c
        .subscribe(api::SubscribeRequest {
            channel: api::Channel::Spreads as i32,
            symbol: "*".into(),
            exchanges: vec![],
            snapshot: false,
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut with = tonic::Request::new(api::ExchangesRequest {});
    with.metadata_mut()
        .insert("authorization", "Bearer secret-one".parse().expect("ascii"));
    let ok = c.get_exchanges(with).await.expect("with a token");
    assert_eq!(ok.into_inner().exchanges.len(), 11);
    gw.stop().await;
}

#[tokio::test]
async fn an_empty_or_missing_tokens_file_stops_the_gateway_before_it_binds() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n# nothing\n").expect("written");
    for file in [empty, dir.path().join("missing")] {
        let err = spreadagg_gateway::Gateway::bind(GatewayConfig {
            auth_tokens_file: Some(file),
            ..config()
        })
        .await
        .expect_err("refused");
        assert!(err.to_string().contains("auth_tokens_file"), "{err}");
    }
}

#[tokio::test]
async fn websockets_from_foreign_origins_are_refused() {
    let gw = start(GatewayConfig {
        allowed_origins: vec!["https://desk.example.com".into()],
        ..config()
    })
    .await;
    let addr = gw.addr;
    assert_eq!(
        ws_status(addr, "/ws", Some(("origin", "https://evil.example"))).await,
        403
    );
    assert_eq!(
        ws_status(addr, "/ws", Some(("origin", "https://desk.example.com"))).await,
        101
    );
    assert_eq!(
        ws_status(addr, "/ws", Some(("origin", &format!("http://{addr}")))).await,
        101,
        "own origin"
    );
    assert_eq!(
        ws_status(addr, "/ws", None).await,
        101,
        "programs send no Origin"
    );
    // REST answers carry CORS headers for the allowed origin only.
    let raw = raw_get(addr, "/api/symbols", "Origin: https://desk.example.com\r\n").await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://desk.example.com"),
        "{raw}"
    );
    let raw = raw_get(addr, "/api/symbols", "Origin: https://evil.example\r\n").await;
    assert!(
        !raw.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{raw}"
    );
    gw.stop().await;
}
