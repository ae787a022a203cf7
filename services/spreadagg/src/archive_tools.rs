//! The archive's tools, clients rather than roles (no admin address is bound):
//! `archive verify` (is every stream sequence in the archive?) and `replay` (archived ticks and
//! trades back into NATS). Both print a JSON report on stdout; logs go to stderr.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use spreadagg_archive::StreamKind;
use spreadagg_archive::replay::{self, ReplaySpec};
use spreadagg_archive::store::{self, ArchiveStore};
use spreadagg_archive::verify::{self, StreamBounds, Window};
use spreadagg_bus::Bus;
use spreadagg_runtime::shutdown::Shutdown;

use crate::cli::{ReplayArgs, VerifyArgs};
use crate::settings::Settings;

/// How long reaching NATS for the streams' bounds may take before verify goes on without.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);

fn open_store(settings: &Settings) -> Result<ArchiveStore, ExitCode> {
    let a = &settings.archive;
    store::open(&a.store, &a.prefix, a.store_options()).map_err(|e| {
        tracing::error!(error = %e, "--store");
        ExitCode::from(2)
    })
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => crate::announce(&text),
        Err(e) => tracing::error!(error = %e, "cannot print the report"),
    }
}

/// `spreadagg archive verify`: exit 0 complete, 1 incomplete, 2 bad flags or configuration,
/// 3 the archive could not be read.
pub async fn verify(settings: &Settings, args: &VerifyArgs) -> ExitCode {
    let window = match Window::parse(args.from.as_deref(), args.to.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "--from / --to");
            return ExitCode::from(2);
        }
    };
    let store = match open_store(settings) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let bounds = match &settings.nats_url {
        Some(url) => stream_bounds(url).await,
        None => BTreeMap::new(),
    };
    match verify::verify(&store, window, &bounds).await {
        Ok(report) => {
            print_json(&report);
            if report.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            tracing::error!(error = %e, store = store.location(), "cannot read the archive");
            ExitCode::from(3)
        }
    }
}

/// Each archived stream's first and last sequence; empty (verify goes on without) when NATS
/// cannot be reached. Reads only: no stream is created or changed.
async fn stream_bounds(url: &str) -> BTreeMap<StreamKind, StreamBounds> {
    let mut out = BTreeMap::new();
    let bus = match tokio::time::timeout(NATS_TIMEOUT, Bus::connect_existing(url)).await {
        Ok(Ok(bus)) => bus,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "NATS not reachable: verifying the archive alone");
            return out;
        }
        Err(_) => {
            tracing::warn!("NATS not reachable in time: verifying the archive alone");
            return out;
        }
    };
    for kind in StreamKind::ALL {
        match tokio::time::timeout(NATS_TIMEOUT, bus.stream_state(kind.stream())).await {
            Ok(Ok(s)) => {
                out.insert(
                    kind,
                    StreamBounds {
                        first_seq: s.first_seq,
                        last_seq: s.last_seq,
                    },
                );
            }
            Ok(Err(e)) => tracing::warn!(stream = kind.stream(), error = %e, "no stream state"),
            Err(_) => tracing::warn!(stream = kind.stream(), "stream state timed out"),
        }
    }
    out
}

/// `spreadagg replay`: exit 0 done (or interrupted by a signal, said in the report), 1 a read
/// or publish failed, 2 bad flags or configuration.
pub async fn replay(settings: &Settings, args: &ReplayArgs) -> ExitCode {
    let Some(url) = &settings.nats_url else {
        tracing::error!("replay needs --nats-url (or NATS_URL): it publishes into NATS");
        return ExitCode::from(2);
    };
    let window = match Window::parse(Some(&args.from), Some(&args.to)) {
        Ok(Some(w)) => w,
        Ok(None) => unreachable_window(),
        Err(e) => {
            tracing::error!(error = %e, "--from / --to");
            return ExitCode::from(2);
        }
    };
    let spec = ReplaySpec {
        window,
        speed: args.speed,
        subject_prefix: args.subject_prefix.clone(),
    };
    if let Err(e) = replay::check(&spec) {
        tracing::error!(error = %e, "replay");
        return ExitCode::from(2);
    }
    let store = match open_store(settings) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let bus = match Bus::connect(url, &settings.streams).await {
        Ok(bus) => bus,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach NATS");
            return ExitCode::FAILURE;
        }
    };
    // SIGTERM or SIGINT stops the replay after what was published is acknowledged.
    let shutdown = Shutdown::new();
    let stop = shutdown.token();
    let signals = shutdown.clone();
    let watcher = tokio::spawn(async move { signals.watch_signals().await });
    let result = replay::replay(&store, &bus, &spec, &stop).await;
    shutdown.trigger();
    let _ = watcher.await;
    match result {
        Ok(report) => {
            print_json(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "replay failed");
            ExitCode::FAILURE
        }
    }
}

/// Both ends are given (clap requires them), so the window is never absent.
fn unreachable_window() -> Window {
    Window {
        from_ns: i64::MIN,
        to_ns: i64::MAX,
    }
}
