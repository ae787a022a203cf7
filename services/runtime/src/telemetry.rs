//! Logs and metrics. Logs go through `tracing`: JSON lines in production, readable text on a
//! terminal. Metrics go through the `metrics` facade into one Prometheus recorder per process,
//! rendered by the admin server's `/metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::ConfigError;
use crate::traces::{self, Traces};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!("unknown log format {other:?} (auto, json, text)")),
        }
    }
}

/// Installs the global log subscriber; the filter comes from `RUST_LOG` (default `info`).
/// Logs go to stderr so that stdout stays for the lines tools read (bound addresses).
/// Calling it twice is harmless.
pub fn init_logs(format: LogFormat) {
    install(format, None);
}

/// As [`init_logs`], and exports the hot path's spans with OTLP when the standard
/// `OTEL_EXPORTER_OTLP_*` variables ask for it (see [`crate::traces`]). `role` names the
/// service (`spreadagg-<role>`) unless `OTEL_SERVICE_NAME` does.
///
/// # Errors
/// When an `OTEL_*` variable is set to something unusable: bad configuration, found at start.
pub fn init(format: LogFormat, role: &str) -> Result<Traces, ConfigError> {
    let settings = traces::settings_from(|k| std::env::var(k).ok(), role)?;
    let provider = match &settings {
        Some(settings) => Some(traces::provider(settings)?),
        None => None,
    };
    install(format, provider.as_ref());
    if let Some(settings) = settings {
        match settings.ratio {
            Some(ratio) => tracing::info!(ratio, "traces exported with OTLP"),
            None => tracing::info!(
                sampler = "from OTEL_TRACES_SAMPLER",
                "traces exported with OTLP"
            ),
        }
    }
    Ok(traces::into_traces(provider))
}

fn install(format: LogFormat, provider: Option<&SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let ansi = std::io::stderr().is_terminal();
    // Each layer has its own filter: RUST_LOG decides what is logged, and the trace layer
    // (when there is one) takes only the hot path's stage spans.
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let spans = provider.map(traces::layer);
    let _already_set = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, in which case ours simply
        // renders nothing; no role installs one.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
