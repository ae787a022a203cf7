//! Unit tests of the configuration and the simulator's start.

use std::collections::BTreeMap;

use super::*;

#[test]
fn defaults_are_valid_and_realistic() {
    let c = SimConfig::default();
    c.validate().expect("defaults validate");
    for s in [
        "BTC-USDT",
        "ETH-USDT",
        "SOL-USDT",
        "XRP-USDT",
        "DOGE-USDT",
        "BTC-USDC",
        "ETH-BTC",
        "NULS-USDT",
    ] {
        assert!(c.symbols.iter().any(|x| x == s), "{s}");
    }
    assert_eq!(c.exchanges, SIMULATED_EXCHANGES.to_vec());
    assert_eq!((c.update_interval_ms, c.binance_ping_interval_s), (100, 20));
}

#[test]
fn config_files_use_exchange_ids() {
    let c: SimConfig = serde_json::from_value(serde_json::json!({
        "exchanges": ["okx"],
        "ports": {"okx": 18443},
        "seed": 7
    }))
    .expect("parses");
    assert_eq!(c.exchanges, vec![ExchangeId::Okx]);
    assert_eq!(c.ports.get(&ExchangeId::Okx), Some(&18443));
    assert_eq!(c.seed, Some(7));
    let round: SimConfig =
        serde_json::from_value(serde_json::to_value(&c).expect("serialises")).expect("round trip");
    assert_eq!(round, c);
    for bad in [
        serde_json::json!({"exchange": ["okx"]}),
        serde_json::json!({"exchanges": ["ftx"]}),
        serde_json::json!({"ports": {"Binance": 1}}),
    ] {
        assert!(
            serde_json::from_value::<SimConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn invalid_configs_name_the_problem() {
    let cases: Vec<(SimConfig, &str)> = vec![
        (
            SimConfig {
                exchanges: vec![],
                ..Default::default()
            },
            "exchanges",
        ),
        (
            SimConfig {
                exchanges: vec![ExchangeId::Okx, ExchangeId::Okx],
                ..Default::default()
            },
            "twice",
        ),
        (
            SimConfig {
                ports: BTreeMap::from([(ExchangeId::Binance, 9000), (ExchangeId::Okx, 9000)]),
                ..Default::default()
            },
            "each exchange needs its own",
        ),
        (
            SimConfig {
                exchanges: vec![ExchangeId::Okx],
                ports: BTreeMap::from([(ExchangeId::Binance, 9000)]),
                ..Default::default()
            },
            "ports",
        ),
        (
            SimConfig {
                symbols: vec![],
                ..Default::default()
            },
            "symbols",
        ),
        (
            SimConfig {
                symbols: vec!["btcusdt".into()],
                ..Default::default()
            },
            "symbols",
        ),
        (
            SimConfig {
                update_interval_ms: 0,
                ..Default::default()
            },
            "update_interval_ms",
        ),
        (
            SimConfig {
                trade_probability: 1.5,
                ..Default::default()
            },
            "trade_probability",
        ),
        (
            SimConfig {
                trade_probability: f64::NAN,
                ..Default::default()
            },
            "trade_probability",
        ),
        (
            SimConfig {
                binance_ping_interval_s: 0,
                ..Default::default()
            },
            "binance_ping_interval_s",
        ),
        (
            SimConfig {
                bybit_idle_timeout_s: 0,
                ..Default::default()
            },
            "bybit_idle_timeout_s",
        ),
    ];
    for (config, needle) in cases {
        let err = config.validate().expect_err(needle).to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
}

#[tokio::test]
async fn a_taken_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = SimConfig {
        ports: BTreeMap::from([(ExchangeId::Okx, port)]),
        ..Default::default()
    };
    let err = Simulator::start(config, CancellationToken::new())
        .await
        .expect_err("port taken");
    assert!(
        matches!(
            err,
            SimError::Bind {
                exchange: ExchangeId::Okx,
                ..
            }
        ),
        "{err}"
    );
}
