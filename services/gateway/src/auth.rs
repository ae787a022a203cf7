//! Who may use the gateway: optional bearer tokens and an Origin allow-list.
//!
//! - Tokens: static, one per line in `auth_tokens_file` (a mounted Secret; `#` comments and
//!   blank lines skipped). When set, every data surface needs one: REST and `/openapi.json`
//!   (`Authorization: Bearer <token>`), the WebSocket endpoints (the same header, or
//!   `?access_token=<token>` since browsers cannot set headers on a WebSocket), and gRPC
//!   (`authorization: Bearer <token>` metadata). The pages `/` and `/docs` are static shells
//!   and stay open; they take the token from the page's URL fragment (`#token=...`) and send it
//!   with their requests. Tokens are never logged.
//! - Origins: a browser's cross-site request carries `Origin`. WebSocket upgrades from an
//!   Origin other than the gateway's own host and those in `allowed_origins` are refused
//!   (browsers do not apply CORS to WebSockets); REST answers carry CORS headers for the same
//!   list (tower-http's `CorsLayer`). Requests without `Origin` (programs) are not affected.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use spreadagg_runtime::admin::AdminToken;

use crate::GatewayError;

/// The accepted tokens; empty when authentication is off.
#[derive(Clone, Default)]
pub(crate) struct Tokens(Arc<Vec<AdminToken>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Reads the tokens file.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming `auth_tokens_file` when it cannot be read or holds no
    /// token (an empty Secret is a mistake, not an open door).
    pub(crate) fn load(path: &Path) -> Result<Tokens, GatewayError> {
        let bad = |why: String| {
            GatewayError::Config(format!("auth_tokens_file {}: {why}", path.display()))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let tokens: Vec<AdminToken> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(AdminToken::new)
            .collect();
        if tokens.is_empty() {
            return Err(bad("holds no token".into()));
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in time that
    /// depends only on lengths, so timing tells neither which nor how much matched.
    pub(crate) fn allows(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |ok, t| t.matches(presented) | ok)
    }

    /// Whether a request may pass: off, or it carries a valid token.
    pub(crate) fn admits(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        !self.enabled() || presented(headers, query).is_some_and(|t| self.allows(&t))
    }
}

/// The token a request carries: the `Authorization: Bearer` header, else an `access_token`
/// query parameter (percent-decoded, as browsers encode it).
fn presented<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Cow::Borrowed(t.trim()));
    bearer.or_else(|| {
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v)
    })
}

/// Refuses requests without a valid token (when tokens are configured): 401, counted.
pub(crate) async fn require_token(
    State(tokens): State<Tokens>,
    request: Request,
    next: Next,
) -> Response {
    if tokens.admits(request.headers(), request.uri().query()) {
        return next.run(request).await;
    }
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "unauthenticated")
        .increment(1);
    tracing::debug!(
        path = request.uri().path(),
        "request without a valid token refused"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required\n",
    )
        .into_response()
}

/// Which browser origins may use the WebSocket endpoints and read REST answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    /// Exact origins (`https://desk.example.com`); `*` allows every origin.
    allowed: Arc<Vec<String>>,
}

impl Origins {
    pub(crate) fn new(allowed: &[String]) -> Self {
        Self {
            allowed: Arc::new(allowed.to_vec()),
        }
    }

    /// Whether a request with these headers may open a WebSocket: no `Origin` (not a
    /// browser), the gateway's own origin, or an allowed one.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return true;
        };
        let own = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
            });
        own || self.allowed.iter().any(|a| a == "*" || a == origin)
    }

    /// The allow-list for the CORS layer.
    pub(crate) fn list(&self) -> &[String] {
        &self.allowed
    }
}

/// Refuses WebSocket upgrades from origins not allowed: 403, counted.
pub(crate) async fn require_origin(
    State(origins): State<Origins>,
    request: Request,
    next: Next,
) -> Response {
    if origins.admits(request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!("spreadagg_gateway_rejected_total", "reason" => "origin").increment(1);
    tracing::debug!(
        path = request.uri().path(),
        "websocket from a foreign origin refused"
    );
    (StatusCode::FORBIDDEN, "origin not allowed\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("ascii"));
        }
        h
    }

    #[test]
    fn tokens_come_from_a_file_and_are_checked_from_header_or_query() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# desk tokens\n\n alpha \nbeta\n").expect("written");
        let t = Tokens::load(&path).expect("loads");
        assert!(t.enabled());
        assert!(t.allows("alpha") && t.allows("beta"));
        assert!(!t.allows("alph") && !t.allows("alphaa") && !t.allows(""));
        let auth = |v: &str| headers(&[(header::AUTHORIZATION, v)]);
        assert!(t.admits(&auth("Bearer beta"), None));
        assert!(!t.admits(&auth("Bearer gamma"), None));
        assert!(!t.admits(&auth("Basic beta"), None));
        assert!(t.admits(&HeaderMap::new(), Some("x=1&access_token=alpha")));
        assert!(!t.admits(&HeaderMap::new(), Some("access_token=nope")));
        std::fs::write(&path, "a+b/c=\n").expect("written");
        let t = Tokens::load(&path).expect("loads");
        assert!(
            t.admits(&HeaderMap::new(), Some("access_token=a%2Bb%2Fc%3D")),
            "decoded"
        );
        assert!(!t.admits(&HeaderMap::new(), None));
        assert!(
            Tokens::default().admits(&HeaderMap::new(), None),
            "off admits all"
        );
        std::fs::write(&path, "# only a comment\n").expect("written");
        let err = Tokens::load(&path).expect_err("empty").to_string();
        assert!(err.contains("auth_tokens_file"), "{err}");
        assert!(Tokens::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn origins_allow_the_own_host_the_list_and_programs() {
        let o = Origins::new(&["https://desk.example.com".into()]);
        assert!(o.admits(&HeaderMap::new()), "no Origin: not a browser");
        assert!(o.admits(&headers(&[
            (header::ORIGIN, "http://gw.local:8080"),
            (header::HOST, "gw.local:8080")
        ])));
        assert!(o.admits(&headers(&[
            (header::ORIGIN, "https://desk.example.com"),
            (header::HOST, "gw.local:8080")
        ])));
        assert!(!o.admits(&headers(&[
            (header::ORIGIN, "https://evil.example"),
            (header::HOST, "gw.local:8080")
        ])));
        assert!(!o.admits(&headers(&[(header::ORIGIN, "https://evil.example")])));
        assert!(
            Origins::new(&["*".into()])
                .admits(&headers(&[(header::ORIGIN, "https://any.example")]))
        );
    }
}
