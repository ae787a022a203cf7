//! The dashboard: `GET /` serves one self-contained HTML page (inline script and style, no
//! CDN, no external assets) that opens `/ws`, subscribes to every symbol the gateway has seen
//! and shows a live table per symbol and exchange pair; `GET /api/symbols` lists those
//! symbols.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::AppState;
use crate::fanout::MAX_SEEN_SYMBOLS;

/// The page, compiled into the binary.
pub const INDEX_HTML: &str = include_str!("dashboard.html");

/// Only inline script and style from this page itself, and connections back to this gateway.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        INDEX_HTML,
    )
}

/// `GET /api/symbols`: `{"symbols": ["BTC-USDT", ...], "limit": 10000}`, sorted; the symbols
/// seen on the feed since the gateway started, at most `limit`.
pub(crate) async fn symbols(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "symbols": app.registry.symbols(),
        "limit": MAX_SEEN_SYMBOLS,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        assert!(INDEX_HTML.contains("/ws"));
        assert!(INDEX_HTML.contains("/api/symbols"));
        for external in ["http://", "https://", "<link", "src=\"", "@import"] {
            assert!(!INDEX_HTML.contains(external), "page references {external}");
        }
    }
}
