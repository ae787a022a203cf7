//! Binance over real sockets: stream shapes, requests, pings, limits and REST.

use super::*;

#[tokio::test]
async fn binance_subscribe_ack_and_data_shapes() {
    let sim = start(config()).await;
    let url = sim.ws(ExchangeId::Binance);
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws"),
        "{url}"
    );
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 1}));

    let book = wait_for(&mut ws, |v| v.get("u").is_some()).await;
    let keys: Vec<&str> = book
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 6, "{book}");
    assert!(book["u"].is_u64());
    assert_eq!(book["s"], "BTCUSDT");
    for k in ["b", "B", "a", "A"] {
        assert!(has_eight_decimals(&book[k]), "{k} in {book}");
    }
    assert!(
        0.0 < num(&book["b"]) && num(&book["b"]) < num(&book["a"]),
        "{book}"
    );

    let trade = wait_for(&mut ws, |v| v["e"] == "trade").await;
    assert_eq!(trade["s"], "BTCUSDT");
    for k in ["E", "t", "T"] {
        assert!(trade[k].is_u64(), "{k} in {trade}");
    }
    assert!(num(&trade["p"]) > 0.0 && num(&trade["q"]) > 0.0, "{trade}");
    assert!(trade["m"].is_boolean() && trade["M"] == true, "{trade}");

    // Update ids increase.
    let mut last = book["u"].as_u64().unwrap_or(0);
    for _ in 0..5 {
        let next = wait_for(&mut ws, |v| v.get("u").is_some()).await;
        let u = next["u"].as_u64().unwrap_or(0);
        assert!(u > last, "{u} after {last}");
        assert!(num(&next["b"]) < num(&next["a"]));
        last = u;
    }
}

#[tokio::test]
async fn binance_list_unsubscribe_and_bad_json_keep_the_connection() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    let pause = || tokio::time::sleep(Duration::from_millis(250)); // stay under 5 messages/s
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["ethbtc@trade","foousdt@bookTicker"],"id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 1}));
    pause().await;
    send(&mut ws, "this is not json").await;
    let err = wait_for(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(err["error"]["code"], 3, "{err}");
    assert!(
        err["error"]["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid JSON")),
        "{err}"
    );
    pause().await;
    send(&mut ws, r#"{"method":"FROB","id":2}"#).await;
    let err = wait_for(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(
        (err["error"]["code"].as_i64(), err["id"].as_i64()),
        (Some(2), Some(2)),
        "{err}"
    );
    pause().await;
    send(
        &mut ws,
        r#"{"method":"UNSUBSCRIBE","params":["foousdt@bookTicker"],"id":3}"#,
    )
    .await;
    wait_for(&mut ws, |v| v.get("result").is_some() && v["id"] == 3).await;
    pause().await;
    send(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#).await;
    let list = wait_for(&mut ws, |v| v["id"] == 4).await;
    assert_eq!(list["result"], json!(["ethbtc@trade"]));
    // Still streaming.
    let trade = wait_for(&mut ws, |v| v["e"] == "trade").await;
    assert_eq!(trade["s"], "ETHBTC");
}

#[tokio::test]
async fn binance_combined_streams_are_wrapped() {
    let sim = start(config()).await;
    let base = sim.ws(ExchangeId::Binance);
    let url = base.replace("/ws", "/stream?streams=solusdt@bookTicker/btcusdc@trade");
    let mut ws = connect(&url).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let v = next_json(&mut ws).await;
        let stream = v["stream"].as_str().expect("combined payload").to_owned();
        assert!(v["data"].is_object(), "{v}");
        seen.insert(stream);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["btcusdc@trade".to_owned(), "solusdt@bookTicker".to_owned()]
    );
}

#[tokio::test]
async fn binance_sends_ping_frames_and_keeps_clients_that_pong() {
    let sim = start(SimConfig {
        binance_ping_interval_s: 1,
        ..config()
    })
    .await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while pings < 3 {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("pings within 4 s")
            .expect("open")
            .expect("frame");
        if let Message::Ping(payload) = frame {
            assert!(!payload.is_empty(), "Binance pings carry a payload to echo");
            pings += 1; // tungstenite answers with the same payload
        }
    }
    send(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"result": [], "id": 1}));
}

#[tokio::test]
async fn binance_disconnects_a_client_sending_more_than_five_messages_a_second() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Binance)).await;
    for id in 0..6 {
        send(
            &mut ws,
            &format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#),
        )
        .await;
    }
    let mut replies = 0;
    let mut closed = None;
    while let Ok(Some(frame)) = tokio::time::timeout(WAIT, ws.next()).await {
        match frame {
            Ok(Message::Text(_)) => replies += 1,
            Ok(Message::Close(c)) => {
                closed = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(replies, 5);
    assert_eq!(closed, Some(1008));
    // The server is fine: a new connection works.
    let mut again = connect(&sim.ws(ExchangeId::Binance)).await;
    send(&mut again, r#"{"method":"LIST_SUBSCRIPTIONS","id":9}"#).await;
    assert_eq!(next_json(&mut again).await, json!({"result": [], "id": 9}));
}

#[tokio::test]
async fn binance_rest_lists_the_configured_symbols_with_quote_volumes() {
    let sim = start(config()).await;
    let rest = sim.rest(ExchangeId::Binance);
    assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
    let (status, info) = get(&format!("{rest}/api/v3/exchangeInfo")).await;
    assert_eq!(status, 200);
    assert_eq!(info["timezone"], "UTC");
    let listed: Vec<(String, String, String)> = info["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "TRADING");
            (
                s["symbol"].as_str().unwrap_or_default().to_owned(),
                s["baseAsset"].as_str().unwrap_or_default().to_owned(),
                s["quoteAsset"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = config()
        .symbols
        .iter()
        .map(|s| {
            let (b, q) = s.split_once('-').unwrap_or_default();
            (format!("{b}{q}"), b.to_owned(), q.to_owned())
        })
        .collect();
    assert_eq!(listed, expected);

    let (status, tickers) = get(&format!("{rest}/api/v3/ticker/24hr")).await;
    assert_eq!(status, 200);
    let volume = |sym: &str| {
        tickers
            .as_array()
            .and_then(|a| a.iter().find(|t| t["symbol"] == sym))
            .map(|t| {
                for k in ["lastPrice", "bidPrice", "askPrice", "volume", "quoteVolume"] {
                    assert!(t[k].is_string(), "{k} in {t}");
                }
                assert!(num(&t["bidPrice"]) < num(&t["askPrice"]), "{t}");
                num(&t["quoteVolume"])
            })
            .unwrap_or_else(|| panic!("{sym} listed"))
    };
    assert!(volume("BTCUSDT") > 100_000_000.0);
    assert!(
        volume("NULSUSDT") < 1_000_000.0,
        "the low-volume pair is tiny"
    );
    assert!(volume("ETHUSDT") < volume("BTCUSDT"));

    let (status, one) = get(&format!("{rest}/api/v3/ticker/24hr?symbol=ETHBTC")).await;
    assert_eq!(
        (status, one["symbol"].as_str()),
        (200, Some("ETHBTC")),
        "{one}"
    );
    let (status, bad) = get(&format!("{rest}/api/v3/ticker/24hr?symbol=NOPE")).await;
    assert_eq!(status, 400);
    assert_eq!(bad, json!({"code": -1121, "msg": "Invalid symbol."}));
}
