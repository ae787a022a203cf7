//! The simulated assets and listings, and each exchange's spelling of every instrument.

use std::collections::HashMap;

use spreadagg_model::{ExchangeId, Symbol};

use super::model::{DAY_S, MARKET_DAILY_VOL};

/// A crypto asset or currency with a USD price: `(name, usd price, daily volatility)`.
/// Volatility 0 marks a stablecoin (mean-reverting peg); `USD` itself never moves.
const ASSETS: &[(&str, f64, f64)] = &[
    ("BTC", 67_250.0, 0.025),
    ("ETH", 3_150.0, 0.035),
    ("SOL", 152.0, 0.05),
    ("XRP", 0.523, 0.045),
    ("DOGE", 0.1482, 0.06),
    ("BNB", 585.0, 0.03),
    ("ADA", 0.441, 0.05),
    ("LTC", 82.0, 0.04),
    ("TRX", 0.121, 0.03),
    ("AVAX", 35.0, 0.055),
    ("LINK", 14.5, 0.05),
    ("DOT", 7.1, 0.05),
    ("NULS", 0.312, 0.08),
    ("USDT", 1.0, 0.0),
    ("USDC", 1.0, 0.0),
    ("FDUSD", 1.0, 0.0),
    ("DAI", 1.0, 0.0),
    ("USD", 1.0, 0.0),
    ("EUR", 1.08, 0.004),
    ("TRY", 0.031, 0.006),
];

/// Listings we know: price and quantity decimals, 24 h quote volume on Binance (in the quote
/// currency), typical half-spread in bps, typical top-of-book size in base units.
const LISTINGS: &[(&str, u32, u32, f64, f64, f64)] = &[
    ("BTC-USDT", 2, 5, 1.8e9, 0.01, 2.0),
    ("ETH-USDT", 2, 4, 9.5e8, 0.05, 25.0),
    ("SOL-USDT", 2, 3, 3.8e8, 0.4, 180.0),
    ("XRP-USDT", 4, 0, 1.6e8, 1.0, 25_000.0),
    ("DOGE-USDT", 5, 0, 1.1e8, 1.5, 150_000.0),
    ("BNB-USDT", 2, 3, 1.2e8, 0.8, 40.0),
    ("ADA-USDT", 4, 1, 4.5e7, 1.5, 30_000.0),
    ("BTC-USDC", 2, 5, 2.6e8, 0.05, 0.8),
    ("ETH-BTC", 5, 4, 950.0, 1.2, 35.0),
    ("NULS-USDT", 4, 2, 4.0e4, 12.0, 900.0),
];

/// The default symbol set: the majors, a USDC pair, a non-USD quote and a low-volume pair.
pub(crate) const DEFAULT_SYMBOLS: &[&str] = &[
    "BTC-USDT",
    "ETH-USDT",
    "SOL-USDT",
    "XRP-USDT",
    "DOGE-USDT",
    "BNB-USDT",
    "BTC-USDC",
    "ETH-BTC",
    "NULS-USDT",
];

/// How one exchange differs from the others.
#[derive(Debug, Clone, Copy)]
pub(super) struct Venue {
    /// Share of the reference (Binance) 24 h volume.
    pub(super) volume_share: f64,
    /// Multiplier on the symbol's typical half-spread.
    pub(super) spread_factor: f64,
    /// Stationary standard deviation of the basis, in bps.
    pub(super) basis_std_bps: f64,
}

pub(super) fn venue(exchange: ExchangeId) -> Venue {
    match exchange {
        ExchangeId::Binance => Venue {
            volume_share: 1.0,
            spread_factor: 1.0,
            basis_std_bps: 1.5,
        },
        ExchangeId::Okx => Venue {
            volume_share: 0.35,
            spread_factor: 1.4,
            basis_std_bps: 2.0,
        },
        ExchangeId::Bybit => Venue {
            volume_share: 0.3,
            spread_factor: 1.3,
            basis_std_bps: 2.0,
        },
        ExchangeId::Htx => Venue {
            volume_share: 0.15,
            spread_factor: 1.6,
            basis_std_bps: 2.5,
        },
        ExchangeId::Kucoin => Venue {
            volume_share: 0.12,
            spread_factor: 1.7,
            basis_std_bps: 2.5,
        },
        ExchangeId::Mexc => Venue {
            volume_share: 0.25,
            spread_factor: 1.5,
            basis_std_bps: 3.0,
        },
        ExchangeId::Kraken => Venue {
            volume_share: 0.1,
            spread_factor: 1.5,
            basis_std_bps: 2.5,
        },
        ExchangeId::Coinbase => Venue {
            volume_share: 0.3,
            spread_factor: 1.2,
            basis_std_bps: 2.0,
        },
        ExchangeId::Bitget => Venue {
            volume_share: 0.3,
            spread_factor: 1.5,
            basis_std_bps: 2.5,
        },
        ExchangeId::Gateio => Venue {
            volume_share: 0.3,
            spread_factor: 1.5,
            basis_std_bps: 2.5,
        },
        ExchangeId::Bingx => Venue {
            volume_share: 0.1,
            spread_factor: 1.8,
            basis_std_bps: 3.0,
        },
    }
}

/// One simulated instrument, as every exchange lists it.
#[derive(Debug, Clone)]
pub(crate) struct Instrument {
    pub symbol: Symbol,
    /// `BTCUSDT`: Binance's REST and payload spelling.
    pub concat: String,
    /// `btcusdt`: Binance's stream-name spelling.
    pub stream: String,
    /// Price step is `10^-price_decimals`.
    pub price_decimals: u32,
    /// Quantity step is `10^-qty_decimals`.
    pub qty_decimals: u32,
    /// 24 h volume on the reference exchange, in the quote currency.
    pub quote_volume: f64,
    pub(super) half_spread_bps: f64,
    pub(super) top_qty: f64,
    pub(super) base_asset: usize,
    pub(super) quote_asset: usize,
}

/// How an asset's USD price moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Motion {
    /// The numeraire (`USD`).
    Fixed,
    /// A stablecoin: a peg of about 2 bps, reverting over ten minutes.
    Peg,
    /// A random walk: `beta` times the common market factor plus an independent part with
    /// `own_sigma` per sqrt(second).
    Walk { beta: f64, own_sigma: f64 },
}

#[derive(Debug, Clone)]
pub(super) struct Asset {
    pub(super) log_usd: f64,
    pub(super) daily_vol: f64,
    pub(super) motion: Motion,
}

impl Asset {
    fn new(name: &str, usd: f64, daily_vol: f64) -> Self {
        let motion = if name == "USD" {
            Motion::Fixed
        } else if daily_vol == 0.0 {
            Motion::Peg
        } else {
            // Fiat currencies do not follow crypto; everything else mostly does.
            let beta = if matches!(name, "EUR" | "TRY") {
                0.0
            } else {
                1.0
            };
            let own = (daily_vol.powi(2) - (beta * MARKET_DAILY_VOL).powi(2))
                .max((0.3 * daily_vol).powi(2))
                .sqrt();
            Motion::Walk {
                beta,
                own_sigma: own / DAY_S.sqrt(),
            }
        };
        Self {
            log_usd: usd.ln(),
            daily_vol,
            motion,
        }
    }
}

/// Standard deviation of a stablecoin's peg, in log units (about 2 bps).
pub(super) const PEG_STD: f64 = 2e-4;
/// Half-life of a stablecoin's peg deviation, in seconds.
pub(super) const PEG_HALF_LIFE_S: f64 = 600.0;

/// The simulated exchanges and instruments, with each exchange's name lookups.
#[derive(Debug)]
pub(crate) struct Universe {
    pub instruments: Vec<Instrument>,
    pub exchanges: Vec<ExchangeId>,
    pub(super) assets: Vec<Asset>,
    by_canonical: HashMap<String, usize>,
    by_concat: HashMap<String, usize>,
    by_stream: HashMap<String, usize>,
}

/// FNV-1a: a stable hash, so an unknown symbol gets the same made-up listing on every run.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A number in `[0, 1)` from bits `shift..shift+16` of a hash.
fn unit(h: u64, shift: u32) -> f64 {
    f64::from(((h >> shift) & 0xffff) as u16) / 65_536.0
}

fn clamp_decimals(x: f64) -> u32 {
    // Finite by construction (logs of positive prices); the clamp bounds it to 0..=8.
    x.clamp(0.0, 8.0) as u32
}

impl Universe {
    /// Builds the universe from canonical symbol texts.
    ///
    /// # Errors
    /// A symbol is not canonical, is listed twice, or two symbols would be spelled the same
    /// way on an exchange (`AB-CUSDT` and `ABC-USDT` are both `ABCUSDT` on Binance).
    pub fn new(symbols: &[String], exchanges: &[ExchangeId]) -> Result<Self, String> {
        let mut assets: Vec<Asset> = Vec::new();
        let mut asset_index: HashMap<String, usize> = HashMap::new();
        let mut instruments = Vec::with_capacity(symbols.len());
        let mut by_canonical = HashMap::new();
        let mut by_concat = HashMap::new();
        let mut by_stream = HashMap::new();
        for text in symbols {
            let symbol: Symbol = text.parse().map_err(|e| format!("symbols: {e}"))?;
            let concat = format!("{}{}", symbol.base(), symbol.quote());
            if by_canonical.contains_key(symbol.as_str()) {
                return Err(format!("symbols: {symbol} is listed twice"));
            }
            if let Some(&other) = by_concat.get(&concat) {
                let other: &Instrument = &instruments[other];
                return Err(format!(
                    "symbols: {symbol} and {} are both {concat} on Binance; keep one",
                    other.symbol
                ));
            }
            let mut asset_of = |name: &str| -> usize {
                if let Some(&i) = asset_index.get(name) {
                    return i;
                }
                let asset = match ASSETS.iter().find(|(n, _, _)| *n == name) {
                    Some(&(_, usd, vol)) => Asset::new(name, usd, vol),
                    None => {
                        // Unknown asset: a stable made-up price between $0.01 and $300.
                        let h = fnv1a(name);
                        let usd = 10f64.powf(-2.0 + 4.5 * unit(h, 0));
                        Asset::new(name, usd, 0.04 + 0.04 * unit(h, 16))
                    }
                };
                assets.push(asset);
                asset_index.insert(name.to_owned(), assets.len() - 1);
                assets.len() - 1
            };
            let base_asset = asset_of(symbol.base());
            let quote_asset = asset_of(symbol.quote());
            let base_usd = assets[base_asset].log_usd.exp();
            let quote_usd = assets[quote_asset].log_usd.exp();
            let price = base_usd / quote_usd;
            let known = LISTINGS.iter().find(|l| l.0 == symbol.as_str());
            let (price_decimals, qty_decimals, quote_volume, half_spread_bps, top_qty) = match known
            {
                Some(&(_, pd, qd, vol, hs, top)) => (pd, qd, vol, hs, top),
                None => {
                    let h = fnv1a(symbol.as_str());
                    let pd = clamp_decimals((5.0 - price.log10()).ceil());
                    let qd = clamp_decimals(base_usd.log10().ceil());
                    let volume_usd = 10f64.powf(5.0 + 3.0 * unit(h, 0));
                    let hs = 1.0 + 4.0 * unit(h, 16);
                    let top = 20_000.0 * (0.5 + unit(h, 32)) / base_usd;
                    (pd, qd, volume_usd / quote_usd, hs, top)
                }
            };
            let index = instruments.len();
            by_canonical.insert(symbol.as_str().to_owned(), index);
            by_concat.insert(concat.clone(), index);
            let stream = concat.to_ascii_lowercase();
            by_stream.insert(stream.clone(), index);
            instruments.push(Instrument {
                symbol,
                concat,
                stream,
                price_decimals,
                qty_decimals,
                quote_volume,
                half_spread_bps,
                top_qty,
                base_asset,
                quote_asset,
            });
        }
        Ok(Self {
            instruments,
            exchanges: exchanges.to_vec(),
            assets,
            by_canonical,
            by_concat,
            by_stream,
        })
    }

    /// Index of a canonical symbol (`BTC-USDT`, OKX's `instId`).
    pub fn by_canonical(&self, text: &str) -> Option<usize> {
        self.by_canonical.get(text).copied()
    }

    /// Index of an upper-case concatenated symbol (`BTCUSDT`, Binance REST).
    pub fn by_concat(&self, text: &str) -> Option<usize> {
        self.by_concat.get(text).copied()
    }

    /// Index of a lower-case concatenated symbol (`btcusdt`, Binance stream names).
    pub fn by_stream(&self, text: &str) -> Option<usize> {
        self.by_stream.get(text).copied()
    }
}
