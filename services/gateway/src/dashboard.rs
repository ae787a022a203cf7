//! The pages: `GET /` serves the dashboard (`dashboard.html` with `dashboard.js`), a trader's
//! page of the widest spreads, a chart of the selected pair with its bands, the active signals
//! and the exchanges' health; `GET /docs` serves a browsable reader of `/openapi.json`. Their
//! assets, uPlot (vendored from the npm registry, `assets/uplot/VERSION`) included, are
//! compiled into the binary and served under `/assets/`: nothing is fetched from elsewhere.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The dashboard page.
pub const INDEX_HTML: &str = include_str!("dashboard.html");
/// Its script.
pub const DASHBOARD_JS: &str = include_str!("dashboard.js");
/// The browsable page of the OpenAPI document.
pub const DOCS_HTML: &str = include_str!("docs.html");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// Scripts only from this gateway, styles from it or inline (uPlot sizes its elements with
/// style attributes), connections only back to it.
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The docs page is one file with its script inline.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str, policy: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub(crate) async fn index() -> Response {
    page(INDEX_HTML, "text/html; charset=utf-8", DASHBOARD_POLICY)
}

/// `GET /docs`.
pub(crate) async fn docs() -> Response {
    page(DOCS_HTML, "text/html; charset=utf-8", DOCS_POLICY)
}

/// `GET /assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    page(body, content_type, DASHBOARD_POLICY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_reference_nothing_outside_the_gateway() {
        assert!(INDEX_HTML.contains("/assets/uPlot.iife.min.js"));
        assert!(INDEX_HTML.contains("/assets/dashboard.js"));
        assert!(DASHBOARD_JS.contains("/ws") && DASHBOARD_JS.contains("/api/spreads/widest"));
        assert!(DOCS_HTML.contains("/openapi.json"));
        for page in [INDEX_HTML, DASHBOARD_JS, DOCS_HTML] {
            for external in ["http://", "https://", "@import", "//cdn", "src=\"http"] {
                assert!(!page.contains(external), "page references {external}");
            }
        }
    }
}
