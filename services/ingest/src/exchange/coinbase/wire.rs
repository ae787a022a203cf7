//! Coinbase Advanced Trade wire types, named after the exchange's fields.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

/// `GET /api/v3/brokerage/market/products`: `{"products":[..],"num_products":N}`, or an error
/// body `{"error":"..","message":"..","error_details":".."}`.
#[derive(Debug, Deserialize)]
pub(super) struct Products<'a> {
    #[serde(borrow)]
    pub products: Option<Vec<Product<'a>>>,
    #[serde(borrow)]
    pub error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub error_details: Option<Cow<'a, str>>,
}

/// One product of the public product list (only the fields we read).
#[derive(Debug, Deserialize)]
pub(super) struct Product<'a> {
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub base_currency_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub quote_currency_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub status: Cow<'a, str>,
    #[serde(default)]
    pub trading_disabled: bool,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub cancel_only: bool,
    #[serde(borrow, default)]
    pub product_type: Cow<'a, str>,
    /// The product whose market data this one carries (`BTC-USD` for `BTC-USDC`), or "".
    #[serde(borrow, default)]
    pub alias: Cow<'a, str>,
    #[serde(borrow, default)]
    pub approximate_quote_24h_volume: Cow<'a, str>,
    #[serde(borrow, default)]
    pub volume_24h: Cow<'a, str>,
    #[serde(borrow, default)]
    pub price: Cow<'a, str>,
}

/// What every WebSocket frame may carry: an error (`type` and `message`), or a channel push
/// with its per-connection `sequence_num`. The `events` are read in a second pass, by channel.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub timestamp: Option<Cow<'a, str>>,
    pub sequence_num: Option<u64>,
}

/// A push's events, typed by channel.
#[derive(Debug, Deserialize)]
pub(super) struct Push<T> {
    pub events: Vec<T>,
}

/// `subscriptions`: `{"subscriptions":{"level2":["BTC-USD"],"heartbeats":["heartbeats"]}}`.
#[derive(Debug, Deserialize)]
pub(super) struct SubscriptionsEvent<'a> {
    #[serde(borrow)]
    pub subscriptions: HashMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
}

/// `l2_data`: `{"type":"snapshot","product_id":"BTC-USD","updates":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct L2Event<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    #[serde(borrow)]
    pub updates: Vec<L2Update<'a>>,
}

/// `{"side":"bid","event_time":"..","price_level":"21921.73","new_quantity":"0.06317902"}`.
#[derive(Debug, Deserialize)]
pub(super) struct L2Update<'a> {
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub price_level: Cow<'a, str>,
    #[serde(borrow)]
    pub new_quantity: Cow<'a, str>,
    /// When the level last changed; the epoch in the docs' snapshot example.
    #[serde(borrow, default)]
    pub event_time: Option<Cow<'a, str>>,
}

/// `market_trades`: `{"type":"update","trades":[..]}`.
#[derive(Debug, Deserialize)]
pub(super) struct TradesEvent<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub trades: Vec<Trade<'a>>,
}

/// `{"trade_id":"000000000","product_id":"ETH-USD","price":"1260.01","size":"0.3",
/// "side":"BUY","time":"2019-08-14T20:42:27.265Z"}`.
#[derive(Debug, Deserialize)]
pub(super) struct Trade<'a> {
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
}
