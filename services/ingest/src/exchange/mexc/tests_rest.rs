//! MEXC discovery: the REST bodies as MEXC documents them (both `status` spellings, a
//! `null` quote volume).

use super::*;

#[test]
fn discovery_bodies() {
    let info = r#"{"timezone":"CST","serverTime":1736412092433,"rateLimits":[],"exchangeFilters":[],"symbols":[
        {"symbol":"BTCUSDT","status":"1","baseAsset":"BTC","quoteAsset":"USDT","isSpotTradingAllowed":true,"permissions":["SPOT"],"filters":[]},
        {"symbol":"TOMO3LUSDT","status":"ENABLED","baseAsset":"TOMO3L","quoteAsset":"USDT","isSpotTradingAllowed":false},
        {"symbol":"PAUSEDUSDT","status":"2","baseAsset":"PAUSED","quoteAsset":"USDT"},
        {"symbol":"GONEUSDT","status":"3","baseAsset":"GONE","quoteAsset":"USDT"},
        {"symbol":"USDT","status":"1","baseAsset":"","quoteAsset":"USDT"}]}"#;
    let list = Mexc.parse_instruments(info).expect("instruments");
    let got: Vec<(&str, &str, bool)> = list
        .iter()
        .map(|i| (i.native.as_str(), i.symbol.as_str(), i.trading))
        .collect();
    assert_eq!(
        got,
        vec![
            ("BTCUSDT", "BTC-USDT", true),
            ("TOMO3LUSDT", "TOMO3L-USDT", true),
            ("PAUSEDUSDT", "PAUSED-USDT", false),
            ("GONEUSDT", "GONE-USDT", false),
        ],
        "an invalid base is skipped"
    );
    let vols = Mexc
        .parse_volumes(r#"[{"symbol":"BTCUSDT","lastPrice":"46263.71","volume":"1732.461487","quoteVolume":"80150000.5","openTime":1641349500000},
            {"symbol":"ETHUSDT","quoteVolume":12.5},{"symbol":"IDLEUSDT","quoteVolume":null},{"symbol":"BADUSDT","quoteVolume":"x"}]"#)
        .expect("volumes");
    assert_eq!(vols.get("BTCUSDT"), Some(&80_150_000.5));
    assert_eq!(vols.get("ETHUSDT"), Some(&12.5));
    assert_eq!(vols.len(), 2, "null and unparsable volumes are absent");
    assert!(Mexc.parse_volumes(r#"{"code":700003,"msg":"x"}"#).is_err());
    assert_eq!(
        (Mexc.instruments_path(), Mexc.volumes_path()),
        ("/api/v3/exchangeInfo", "/api/v3/ticker/24hr")
    );
    assert_eq!(
        Some(crate::exchange::adapter(ExchangeId::Mexc).id()),
        Some(ExchangeId::Mexc)
    );
}
