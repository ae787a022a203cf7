//! OKX over real sockets: acks, data shapes, ping/pong, errors and REST.

use super::*;

#[tokio::test]
async fn okx_subscribe_ack_and_data_shapes() {
    let sim = start(config()).await;
    let url = sim.ws(ExchangeId::Okx);
    assert!(url.ends_with("/ws/v5/public"), "{url}");
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},{"channel":"trades","instId":"BTC-USDT"}]}"#,
    )
    .await;
    let mut acks = Vec::new();
    let mut bbo = None;
    let mut trade = None;
    while acks.len() < 2 || bbo.is_none() || trade.is_none() {
        let v = next_json(&mut ws).await;
        if v["event"] == "subscribe" {
            let conn = v["connId"].as_str().expect("connId");
            assert!(
                conn.len() == 8 && conn.bytes().all(|b| b.is_ascii_hexdigit()),
                "{v}"
            );
            acks.push(v["arg"].clone());
        } else if v["arg"]["channel"] == "bbo-tbt" {
            bbo.get_or_insert(v);
        } else if v["arg"]["channel"] == "trades" {
            trade.get_or_insert(v);
        } else {
            panic!("unexpected {v}");
        }
    }
    assert_eq!(
        acks,
        vec![
            json!({"channel": "bbo-tbt", "instId": "BTC-USDT"}),
            json!({"channel": "trades", "instId": "BTC-USDT"})
        ]
    );
    let bbo = bbo.unwrap_or_default();
    assert_eq!(
        bbo["arg"],
        json!({"channel": "bbo-tbt", "instId": "BTC-USDT"})
    );
    let d = &bbo["data"][0];
    for side in ["asks", "bids"] {
        let level = d[side][0].as_array().expect("level");
        assert_eq!(level.len(), 4, "{bbo}");
        assert!(level.iter().all(Value::is_string), "{bbo}");
        assert_eq!(level[2], "0");
    }
    assert!(
        d["ts"].as_str().is_some_and(|t| t.parse::<u64>().is_ok()),
        "{bbo}"
    );
    assert!(d["seqId"].is_u64(), "{bbo}");
    assert!(0.0 < num(&d["bids"][0][0]) && num(&d["bids"][0][0]) < num(&d["asks"][0][0]));

    let trade = trade.unwrap_or_default();
    let t = &trade["data"][0];
    assert_eq!(t["instId"], "BTC-USDT");
    for k in ["tradeId", "px", "sz", "side", "ts", "count"] {
        assert!(t[k].is_string(), "{k} in {trade}");
    }
    assert!(t["side"] == "buy" || t["side"] == "sell");
    assert!(num(&t["px"]) > 0.0 && num(&t["sz"]) > 0.0);
}

#[tokio::test]
async fn okx_ping_pong_and_errors_keep_the_connection() {
    let sim = start(config()).await;
    let mut ws = connect(&sim.ws(ExchangeId::Okx)).await;
    send(&mut ws, "ping").await;
    assert_eq!(next_text(&mut ws).await, "pong");
    send(&mut ws, "{definitely not json").await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["event"].as_str(), e["code"].as_str()),
        (Some("error"), Some("60012")),
        "{e}"
    );
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid request")),
        "{e}"
    );
    send(
        &mut ws,
        r#"{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"NOPE-USDT"}]}"#,
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "60018", "{e}");
    assert!(e["connId"].is_string());
    send(
        &mut ws,
        r#"{"id":"7","op":"subscribe","args":[{"channel":"tickers","instId":"ETH-BTC"}]}"#,
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(
        (ack["id"].as_str(), ack["event"].as_str()),
        (Some("7"), Some("subscribe")),
        "{ack}"
    );
    let ticker = wait_for(&mut ws, |v| v["arg"]["channel"] == "tickers").await;
    assert!(num(&ticker["data"][0]["volCcy24h"]) > 0.0, "{ticker}");
    send(&mut ws, "ping").await;
    wait_for_text(&mut ws, "pong").await;
}

#[tokio::test]
async fn okx_rest_lists_the_configured_symbols_with_quote_volumes() {
    let sim = start(config()).await;
    let rest = sim.rest(ExchangeId::Okx);
    let (status, inst) = get(&format!("{rest}/api/v5/public/instruments?instType=SPOT")).await;
    assert_eq!((status, inst["code"].as_str()), (200, Some("0")));
    let ids: Vec<&str> = inst["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| {
            assert_eq!(
                (i["instType"].as_str(), i["state"].as_str()),
                (Some("SPOT"), Some("live"))
            );
            let id = i["instId"].as_str().unwrap_or_default();
            assert_eq!(
                format!(
                    "{}-{}",
                    i["baseCcy"].as_str().unwrap_or_default(),
                    i["quoteCcy"].as_str().unwrap_or_default()
                ),
                id
            );
            id
        })
        .collect();
    assert_eq!(
        ids,
        config()
            .symbols
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    let (status, tickers) = get(&format!("{rest}/api/v5/market/tickers?instType=SPOT")).await;
    assert_eq!((status, tickers["code"].as_str()), (200, Some("0")));
    let quote_volume = |id: &str| {
        tickers["data"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["instId"] == id))
            .map(|t| {
                for k in ["last", "bidPx", "askPx", "vol24h", "volCcy24h", "ts"] {
                    assert!(t[k].is_string(), "{k} in {t}");
                }
                assert!(num(&t["bidPx"]) < num(&t["askPx"]));
                num(&t["volCcy24h"])
            })
            .unwrap_or_else(|| panic!("{id} listed"))
    };
    assert!(quote_volume("BTC-USDT") > 50_000_000.0);
    assert!(quote_volume("NULS-USDT") < 1_000_000.0);

    for (query, status_want, code) in [("", 400, "50014"), ("?instType=PERP", 400, "51000")] {
        let (status, body) = get(&format!("{rest}/api/v5/market/tickers{query}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (status_want, Some(code)),
            "{body}"
        );
        assert_eq!(body["data"], json!([]));
    }
}
