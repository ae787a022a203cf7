//! The two subcommands that are clients, not roles: `drain` (the preStop hook) and `streams`
//! (the Helm hook Job). Neither binds the admin address.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use spreadagg_bus::Bus;
use spreadagg_runtime::admin::AdminToken;
use spreadagg_runtime::net::dialable;
use tokio::time::Instant;

use crate::announce;
use crate::settings::Settings;

/// `spreadagg drain`: after `delay` (load balancers stop sending new work to a pod being
/// deleted; the gateway's hook waits for that), POST /drain to the local role; then, with a
/// `wait`, wait until the role stops answering.
///
/// As a preStop hook it runs with no wait: the role is the container's main process, so its
/// exit ends the hook too, and the hook's only job is to start the drain (SIGTERM, which
/// follows the hook, finds the role already draining). Exit 0 when the drain was accepted
/// (and, with a wait, the role stopped) or nothing listens (already stopped); 1 when the drain
/// was refused, the request failed otherwise, or the role still runs after the wait.
pub async fn drain(
    admin_addr: SocketAddr,
    token: Option<AdminToken>,
    delay: Duration,
    wait: Option<Duration>,
) -> ExitCode {
    // Bound to "any", the role is reached on loopback.
    let target = dialable(admin_addr);
    // No proxy: the request is for this host, and the token must not travel further.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client");
            return ExitCode::FAILURE;
        }
    };
    if !delay.is_zero() {
        announce(&format!("waiting {} ms before draining", delay.as_millis()));
        tokio::time::sleep(delay).await;
    }
    let mut request = client.post(format!("http://{target}/drain"));
    if let Some(token) = &token {
        request = request.bearer_auth(token.secret());
    }
    match request.send().await {
        Err(e) if refused(&e) => {
            announce(&format!("nothing listening on {target}: already stopped"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            tracing::error!(addr = %target, error = %e, "drain request failed");
            return ExitCode::FAILURE;
        }
        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
            announce(&format!("draining {target}"));
        }
        Ok(r) => {
            tracing::error!(addr = %target, status = r.status().as_u16(), "drain refused");
            return ExitCode::FAILURE;
        }
    }
    let Some(wait) = wait else {
        return ExitCode::SUCCESS;
    };
    let deadline = Instant::now() + wait;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match client.get(format!("http://{target}/healthz")).send().await {
            Err(e) if refused(&e) => {
                announce(&format!(
                    "stopped after {} ms",
                    started.elapsed().as_millis()
                ));
                return ExitCode::SUCCESS;
            }
            _ if Instant::now() >= deadline => {
                tracing::error!(addr = %target, wait_s = wait.as_secs_f64(), "still running after the wait");
                return ExitCode::FAILURE;
            }
            _ => {}
        }
    }
}

/// Whether the connection was refused: nothing listens (a timeout or a reset is not that).
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    false
}

/// `spreadagg streams`: creates or updates the four streams (connecting does), retrying while
/// NATS is not reachable, at most `timeout`. Exit 2 without a NATS URL.
pub async fn streams(settings: &Settings, timeout: Duration) -> ExitCode {
    let Some(url) = &settings.nats_url else {
        tracing::error!(
            "streams needs --nats-url (or NATS_URL): the in-process bus has no streams to create"
        );
        return ExitCode::from(2);
    };
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(500);
    loop {
        match Bus::connect(url, &settings.streams).await {
            Ok(_) => {
                let names: Vec<&str> = spreadagg_model::subjects::STREAMS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                announce(&format!("streams up to date: {}", names.join(" ")));
                return ExitCode::SUCCESS;
            }
            Err(e) if Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "streams: NATS not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "streams: giving up");
                return ExitCode::FAILURE;
            }
        }
    }
}
