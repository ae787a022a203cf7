//! The pages: `GET /` serves the dashboard, one self-contained HTML page (inline script and
//! style, no CDN, no external assets) that opens `/ws`, subscribes to every symbol the gateway
//! has seen and shows a live table per symbol and exchange pair; `GET /docs` serves a
//! browsable reader of `/openapi.json`.

use axum::http::header;
use axum::response::IntoResponse;

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

/// The browsable page of the OpenAPI document, compiled into the binary.
pub const DOCS_HTML: &str = include_str!("docs.html");

/// `GET /docs`.
pub(crate) async fn docs() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        DOCS_HTML,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_are_self_contained() {
        assert!(INDEX_HTML.contains("/ws"));
        assert!(INDEX_HTML.contains("/api/symbols"));
        assert!(DOCS_HTML.contains("/openapi.json"));
        for page in [INDEX_HTML, DOCS_HTML] {
            for external in ["http://", "https://", "<link", "src=\"", "@import"] {
                assert!(!page.contains(external), "page references {external}");
            }
        }
    }
}
