//! Symbol discovery: the exchange's instrument list and 24 h quote volumes over REST, filtered
//! by quote asset and volume bounds (inclusive), or the explicit `--symbols` list, then this
//! replica's shard.

use std::collections::{BTreeMap, HashMap};

use spreadagg_model::Symbol;

use crate::IngestConfig;
use crate::exchange::{Adapter, Instrument, ParseError};

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: {source}")]
    Parse { url: String, source: ParseError },
}

/// Largest REST body accepted (Binance's full exchangeInfo is a few MB).
const MAX_BODY_BYTES: usize = 32 << 20;

/// The instruments this ingestor subscribes to, by canonical symbol.
pub type Selection = BTreeMap<Symbol, Instrument>;

/// Fetches the instrument list and volumes and applies the configured filters.
///
/// # Errors
/// When a REST call fails or its body is not the documented shape.
pub async fn discover(
    adapter: &dyn Adapter,
    http: &reqwest::Client,
    rest_url: &str,
    config: &IngestConfig,
) -> Result<Selection, DiscoveryError> {
    let query = adapter.discovery_query(now_ms());
    let instruments = get(
        http,
        rest_url,
        &with_query(adapter.instruments_path(), query.as_deref()),
        |b| adapter.parse_instruments(b),
    )
    .await?;
    let needs_volume =
        config.symbols.is_empty() && (config.min_volume.is_some() || config.max_volume.is_some());
    let volumes = if needs_volume {
        get(
            http,
            rest_url,
            &with_query(adapter.volumes_path(), query.as_deref()),
            |b| adapter.parse_volumes(b),
        )
        .await?
    } else {
        HashMap::new()
    };
    Ok(select(instruments, &volumes, config))
}

/// The wall clock in Unix milliseconds (0 before the epoch).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `path` with `query` appended after `?` or `&`, whichever the path needs.
fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        None | Some("") => path.to_owned(),
        Some(q) if path.contains('?') => format!("{path}&{q}"),
        Some(q) => format!("{path}?{q}"),
    }
}

async fn get<T>(
    http: &reqwest::Client,
    rest_url: &str,
    path: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, DiscoveryError> {
    let url = format!("{}{path}", rest_url.trim_end_matches('/'));
    let http_err = |reason: String| DiscoveryError::Http {
        url: url.clone(),
        reason,
    };
    let mut response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| http_err(e.to_string()))?;
    let status = response.status();
    // Read the body in chunks under a cap: an instrument list is a few MB, never more.
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http_err(e.to_string()))?
    {
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(http_err(format!("body larger than {MAX_BODY_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&bytes);
    if !status.is_success() {
        return Err(http_err(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    parse(&body).map_err(|source| DiscoveryError::Parse { url, source })
}

/// Applies the filters: explicit symbols win; otherwise trading instruments whose quote is
/// listed and whose 24 h quote volume lies within the bounds, inclusive. Then the shard.
pub fn select(
    instruments: Vec<Instrument>,
    volumes: &HashMap<String, f64>,
    config: &IngestConfig,
) -> Selection {
    let wanted: Option<Vec<Symbol>> = (!config.symbols.is_empty()).then(|| config.symbols.clone());
    let mut selection = Selection::new();
    for inst in instruments {
        if !inst.trading {
            continue;
        }
        let keep = match &wanted {
            Some(list) => list.contains(&inst.symbol),
            None => {
                let quote_ok = config.quotes.iter().any(|q| q == inst.symbol.quote());
                let volume = volumes.get(inst.volume_key()).copied();
                let min_ok = config
                    .min_volume
                    .is_none_or(|min| volume.is_some_and(|v| v >= min));
                let max_ok = config
                    .max_volume
                    .is_none_or(|max| volume.is_some_and(|v| v <= max));
                quote_ok && min_ok && max_ok
            }
        };
        if keep && config.shard.owns(inst.symbol.as_str()) {
            selection.insert(inst.symbol.clone(), inst);
        }
    }
    if let Some(list) = &wanted {
        for s in list
            .iter()
            .filter(|s| !selection.contains_key(*s) && config.shard.owns(s.as_str()))
        {
            tracing::warn!(symbol = %s, "requested symbol is not listed as trading on this exchange; skipped");
        }
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shard;

    #[test]
    fn a_discovery_query_is_appended_after_the_path_or_its_query() {
        assert_eq!(with_query("/a/b", None), "/a/b");
        assert_eq!(with_query("/a/b", Some("")), "/a/b");
        assert_eq!(with_query("/a/b", Some("timestamp=5")), "/a/b?timestamp=5");
        assert_eq!(
            with_query("/a?instType=SPOT", Some("timestamp=5")),
            "/a?instType=SPOT&timestamp=5"
        );
        assert!(now_ms() > 1_600_000_000_000);
    }

    fn inst(native: &str, canonical: &str, trading: bool) -> Instrument {
        Instrument {
            native: native.into(),
            symbol: canonical.parse().expect("symbol"),
            trading,
            volume_key: None,
        }
    }

    fn listing() -> (Vec<Instrument>, HashMap<String, f64>) {
        let instruments = vec![
            inst("BTCUSDT", "BTC-USDT", true),
            inst("ETHUSDC", "ETH-USDC", true),
            inst("ETHBTC", "ETH-BTC", true),
            inst("LOWUSDT", "LOW-USDT", true),
            inst("OLDUSDT", "OLD-USDT", false),
        ];
        let volumes = [
            ("BTCUSDT", 1e9),
            ("ETHUSDC", 5e6),
            ("ETHBTC", 1e6),
            ("LOWUSDT", 1000.0),
            ("OLDUSDT", 1e9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        (instruments, volumes)
    }

    fn names(s: &Selection) -> Vec<&str> {
        s.keys().map(Symbol::as_str).collect()
    }

    #[test]
    fn quote_filter_and_trading_state() {
        let (i, v) = listing();
        let s = select(i, &v, &IngestConfig::default());
        assert_eq!(names(&s), ["BTC-USDT", "ETH-USDC", "LOW-USDT"]);
    }

    #[test]
    fn volume_bounds_are_inclusive() {
        let (i, v) = listing();
        let config = IngestConfig {
            min_volume: Some(1000.0),
            max_volume: Some(5e6),
            ..IngestConfig::default()
        };
        assert_eq!(names(&select(i, &v, &config)), ["ETH-USDC", "LOW-USDT"]);
        let (i, v) = listing();
        let config = IngestConfig {
            min_volume: Some(1000.5),
            ..IngestConfig::default()
        };
        assert_eq!(names(&select(i, &v, &config)), ["BTC-USDT", "ETH-USDC"]);
    }

    #[test]
    fn volumes_are_joined_by_the_volume_key_when_rest_names_differ() {
        // Kraken: the WebSocket says `BTC/USD`, the 24 h ticker list `XXBTZUSD`.
        let mut btc = inst("BTC/USD", "BTC-USD", true);
        btc.volume_key = Some("XXBTZUSD".into());
        let eth = inst("ETH/USD", "ETH-USD", true);
        let volumes: HashMap<String, f64> = [("XXBTZUSD", 1e9), ("ETH/USD", 10.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let config = IngestConfig {
            quotes: vec!["USD".into()],
            min_volume: Some(1e6),
            ..IngestConfig::default()
        };
        assert_eq!(
            names(&select(vec![btc, eth], &volumes, &config)),
            ["BTC-USD"]
        );
    }

    #[test]
    fn explicit_symbols_win_over_filters() {
        let (i, v) = listing();
        let config = IngestConfig {
            symbols: vec![
                "ETH-BTC".parse().expect("symbol"),
                "NOPE-USDT".parse().expect("symbol"),
            ],
            min_volume: Some(1e12),
            ..IngestConfig::default()
        };
        assert_eq!(names(&select(i, &v, &config)), ["ETH-BTC"]);
    }

    #[test]
    fn shards_partition_the_symbols() {
        let symbols: Vec<Symbol> = (0..200)
            .map(|i| format!("S{i}-USDT").parse().expect("symbol"))
            .collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for s in &symbols {
            assert_eq!(
                shards.iter().filter(|sh| sh.owns(s.as_str())).count(),
                1,
                "{s}"
            );
        }
        assert!(
            shards
                .iter()
                .all(|sh| symbols.iter().filter(|s| sh.owns(s.as_str())).count() > 40)
        );
    }
}
