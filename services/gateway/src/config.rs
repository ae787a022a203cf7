//! The gateway's configuration (`[gateway]`); each field's comment is its user documentation.

use std::net::SocketAddr;
use std::time::Duration;

use crate::GatewayError;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the dashboard, WebSocket and REST endpoints (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Address of the gRPC API (`--grpc-listen`); none: no gRPC port.
    pub grpc_listen: Option<SocketAddr>,
    /// A file of bearer tokens, one per line (a mounted Secret); when set, every WebSocket,
    /// REST and gRPC call needs one of them. None: no authentication.
    pub auth_tokens_file: Option<std::path::PathBuf>,
    /// Browser origins (`https://desk.example.com`, or `*`) besides the gateway's own that may
    /// open its WebSockets and read its REST answers.
    pub allowed_origins: Vec<String>,
    /// Events queued per client before its oldest are dropped. 1024 (about 450 KB) absorb a
    /// burst of a second or more for a client that is briefly behind.
    pub client_queue: usize,
    /// A client that loses this many events without its queue ever running empty in between
    /// is disconnected (Close 1008 "too slow"). The count starts over whenever the client
    /// catches up, so only a client persistently slower than the feed is dropped.
    pub slow_client_drop_limit: u64,
    /// A client whose oldest queued event has waited longer than this (milliseconds) is
    /// disconnected (Close 1008 "too slow"): it would only see old prices.
    pub max_client_lag_ms: u64,
    /// Concurrent clients (WebSocket sessions and gRPC streams); more get HTTP 503.
    pub max_clients: usize,
    /// Concurrent clients from one address (IPv6: one /64); more get HTTP 429. 0: no cap
    /// (behind a proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// Distinct subscriptions one client may hold; more get a `too_many_subscriptions` error.
    pub max_subscriptions_per_client: usize,
    /// Largest client-to-server message, in bytes; larger ones close the connection (1009).
    pub max_frame_bytes: usize,
    /// Requests a client may send per second on average ...
    pub requests_per_s: f64,
    /// ... and at once; more get a `rate_limited` error.
    pub request_burst: u32,
    /// A client that sends nothing at all (no frame, no pong) for this long is closed.
    pub idle_timeout_s: u64,
    /// Seconds between `heartbeat` frames to every WebSocket client.
    pub heartbeat_s: u64,
    /// Most items in one snapshot (a wider subscription gets `"truncated": true`).
    pub max_snapshot_items: usize,
    /// Symbols whose latest values are kept for snapshots and REST.
    pub max_symbols: usize,
    /// For this long after start an exact symbol not yet seen on the feed is accepted (the
    /// list is still filling); after it, such a subscription gets `unknown_symbol`.
    pub symbol_warmup_s: u64,
    /// How long to wait for the engine's chart window (milliseconds).
    pub chart_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_listen: None,
            auth_tokens_file: None,
            allowed_origins: Vec::new(),
            client_queue: 1024,
            slow_client_drop_limit: 10_000,
            max_client_lag_ms: 10_000,
            max_clients: 1000,
            max_connections_per_ip: 50,
            max_subscriptions_per_client: 256,
            max_frame_bytes: 4096,
            requests_per_s: 20.0,
            request_burst: 100,
            idle_timeout_s: 90,
            heartbeat_s: 10,
            max_snapshot_items: 1000,
            max_symbols: 10_000,
            symbol_warmup_s: 15,
            chart_timeout_ms: 2000,
        }
    }
}

impl GatewayConfig {
    /// Checks every limit is usable.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |field: &str, rule: &str| Err(GatewayError::Config(format!("{field} {rule}")));
        let at_least_one: [(&str, u64); 11] = [
            ("client_queue", self.client_queue as u64),
            ("slow_client_drop_limit", self.slow_client_drop_limit),
            ("max_client_lag_ms", self.max_client_lag_ms),
            ("max_clients", self.max_clients as u64),
            (
                "max_subscriptions_per_client",
                self.max_subscriptions_per_client as u64,
            ),
            ("request_burst", u64::from(self.request_burst)),
            ("idle_timeout_s", self.idle_timeout_s),
            ("heartbeat_s", self.heartbeat_s),
            ("max_snapshot_items", self.max_snapshot_items as u64),
            ("max_symbols", self.max_symbols as u64),
            ("chart_timeout_ms", self.chart_timeout_ms),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return bad(field, "must be at least 1");
            }
        }
        let hour = 3600;
        for (field, value) in [
            ("idle_timeout_s", self.idle_timeout_s),
            ("heartbeat_s", self.heartbeat_s),
            ("symbol_warmup_s", self.symbol_warmup_s),
            ("max_client_lag_ms", self.max_client_lag_ms / 1000),
            ("chart_timeout_ms", self.chart_timeout_ms / 1000),
        ] {
            if value > hour {
                return bad(field, "must be at most an hour");
            }
        }
        for (field, value, max) in [
            ("max_clients", self.max_clients, 1_000_000),
            ("client_queue", self.client_queue, 1_000_000),
            (
                "max_subscriptions_per_client",
                self.max_subscriptions_per_client,
                100_000,
            ),
            ("max_snapshot_items", self.max_snapshot_items, 100_000),
            ("max_symbols", self.max_symbols, 1_000_000),
        ] {
            if value > max {
                return bad(field, &format!("must be at most {max}"));
            }
        }
        if self.chart_timeout_ms > 10_000 {
            return bad("chart_timeout_ms", "must be at most 10000");
        }
        if self.max_frame_bytes < 128 || self.max_frame_bytes > 1 << 20 {
            return bad("max_frame_bytes", "must be between 128 and 1048576");
        }
        if !(self.requests_per_s.is_finite() && (0.01..=1_000_000.0).contains(&self.requests_per_s))
        {
            return bad("requests_per_s", "must be a number from 0.01 to 1000000");
        }
        if self.heartbeat_s >= self.idle_timeout_s {
            return bad("heartbeat_s", "must be below idle_timeout_s");
        }
        for origin in &self.allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && origin.len() <= 256
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return bad(
                    "allowed_origins",
                    &format!("{origin:?} is not an origin (scheme://host[:port], no path) or *"),
                );
            }
        }
        if self
            .grpc_listen
            .is_some_and(|g| g == self.listen && g.port() != 0)
        {
            return bad("grpc_listen", "must differ from listen");
        }
        if self.idle_timeout_s < 3 {
            return bad(
                "idle_timeout_s",
                "must be at least 3 (pings go at a third of it)",
            );
        }
        Ok(())
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bad_value_is_named() {
        GatewayConfig::default().validate().expect("defaults");
        let cases: Vec<(&str, GatewayConfig)> = vec![
            (
                "client_queue",
                GatewayConfig {
                    client_queue: 0,
                    ..Default::default()
                },
            ),
            (
                "max_clients",
                GatewayConfig {
                    max_clients: 0,
                    ..Default::default()
                },
            ),
            (
                "max_frame_bytes",
                GatewayConfig {
                    max_frame_bytes: 64,
                    ..Default::default()
                },
            ),
            (
                "requests_per_s",
                GatewayConfig {
                    requests_per_s: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "requests_per_s",
                GatewayConfig {
                    requests_per_s: 0.0,
                    ..Default::default()
                },
            ),
            (
                "heartbeat_s",
                GatewayConfig {
                    heartbeat_s: 90,
                    ..Default::default()
                },
            ),
            (
                "idle_timeout_s",
                GatewayConfig {
                    idle_timeout_s: 100_000,
                    ..Default::default()
                },
            ),
            (
                "max_snapshot_items",
                GatewayConfig {
                    max_snapshot_items: 0,
                    ..Default::default()
                },
            ),
        ];
        for (field, config) in cases {
            let err = config.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
