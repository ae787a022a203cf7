//! `spreadagg`: every role of spread-aggregator in one binary. This crate only parses the
//! command line, builds the shared runtime (logs, metrics, admin server, bus, shutdown) and
//! starts the chosen roles; the roles live in their own crates and never depend on each other.

mod archive_tools;
mod cli;
mod commands;
mod lease;
mod roles;
mod settings;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spreadagg_runtime::admin::{AdminServer, AdminToken};
use spreadagg_runtime::{Health, Shutdown, process, telemetry};
use tokio_util::sync::CancellationToken;

use crate::cli::{ArchiveAction, ArchiveArgs, Cli, Role};
use crate::settings::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // TLS (exchange WebSocket and REST connections, the OTLP exporter) uses rustls with the
    // ring provider; installed before anything builds a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let traces = match telemetry::init(cli.global.log_format, cli.role.name()) {
        Ok(t) => t,
        Err(e) => {
            telemetry::init_logs(cli.global.log_format);
            tracing::error!(error = %e, "configuration");
            return ExitCode::from(2);
        }
    };
    // Install the metrics recorder before any role records: metrics recorded earlier are lost.
    telemetry::metrics();
    if matches!(cli.role, Role::Roles) {
        for role in roles::ROLES {
            println!("{role}");
        }
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(&cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "configuration");
            return ExitCode::from(2);
        }
    };
    // Read before any port is bound: a token the operator set but cannot be used is bad
    // configuration, not an open admin surface.
    let admin_token = match settings.admin_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "configuration");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.role {
            Role::Drain(a) => {
                let Ok(delay) = Duration::try_from_secs_f64(a.delay) else {
                    tracing::error!(delay = a.delay, "--delay must be a number of seconds");
                    return ExitCode::from(2);
                };
                let wait = match a.wait.map(Duration::try_from_secs_f64) {
                    None => None,
                    Some(Ok(w)) => Some(w),
                    Some(Err(_)) => {
                        tracing::error!("--wait must be a number of seconds");
                        return ExitCode::from(2);
                    }
                };
                commands::drain(settings.admin_addr, admin_token, delay, wait).await
            }
            Role::Streams(a) => {
                let Ok(timeout) = Duration::try_from_secs_f64(a.timeout) else {
                    tracing::error!(timeout = a.timeout, "--timeout must be a number of seconds");
                    return ExitCode::from(2);
                };
                commands::streams(&settings, timeout).await
            }
            Role::Archive(ArchiveArgs {
                action: Some(ArchiveAction::Verify(a)),
                ..
            }) => archive_tools::verify(&settings, &a).await,
            Role::Replay(a) => archive_tools::replay(&settings, &a).await,
            role => serve(role, settings, admin_token).await,
        }
    });
    // Every role has returned; do not wait on anything still blocked in the runtime.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // Outside the runtime: the exporter's client is a blocking one.
    traces.shutdown();
    code
}

/// Prints a line tools and tests read (`listening admin 127.0.0.1:9090`) on stdout.
pub(crate) fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(role: Role, settings: Settings, admin_token: Option<AdminToken>) -> ExitCode {
    let shutdown = Shutdown::new();
    let health = Health::new();
    let admin = match AdminServer::bind(
        settings.admin_addr,
        health.clone(),
        shutdown.clone(),
        settings.redacted(),
        admin_token,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, addr = %settings.admin_addr, "cannot bind the admin address");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = admin.local_addr() {
        announce(&format!("listening admin {addr}"));
    }
    // Histograms keep samples until upkeep folds them; do it on a timer, not only on scrape.
    // The process gauges (memory, its limit, readiness) are refreshed on the same timer.
    process::record_build_info();
    let upkeep = {
        let health = health.clone();
        let cgroup = process::CgroupRoot::default();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                process::record(&health, &cgroup);
                telemetry::metrics().run_upkeep();
            }
        })
    };
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin.serve(admin_stop.clone()));
    let signals = {
        let s = shutdown.clone();
        tokio::spawn(async move { s.watch_signals().await })
    };

    let drain_timeout = Duration::from_secs_f64(settings.drain_timeout_s);
    let roles = roles::run(role, settings, health.clone(), shutdown.clone());
    // Once shutdown starts (signal or /drain), readiness fails at once and the roles get
    // `drain_timeout` to finish; a role still draining then is abandoned with an error.
    let deadline = async {
        shutdown.token().cancelled().await;
        health.set_draining();
        tokio::time::sleep(drain_timeout).await;
    };
    let result = tokio::select! {
        r = roles => r,
        () = deadline => {
            tracing::error!(?drain_timeout, "roles did not drain in time; exiting without them");
            Err(roles::RoleError::drain_timeout())
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "role failed");
            ExitCode::FAILURE
        }
    };
    health.set_draining();
    shutdown.trigger();
    admin_stop.cancel();
    let _ = admin_task.await;
    signals.abort();
    let _ = signals.await;
    upkeep.abort();
    let _ = upkeep.await;
    tracing::info!("stopped");
    code
}
