//! Traces: spans of the hot path's stages, exported with OTLP (HTTP, protobuf bodies) when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and
//! off otherwise.
//!
//! The stages are spans on the target [`HOT`] at debug level, one per batch (an ingest
//! publisher batch, an engine acknowledgement batch, an archive file), never one per message:
//! a few hundred a second at full load. With no exporter configured no layer wants them, so
//! they cost one cached callsite check each. With one, sampling is a trace-id ratio
//! (`OTEL_TRACES_SAMPLER_ARG`, default [`DEFAULT_RATIO`]) unless `OTEL_TRACES_SAMPLER` chooses
//! another sampler; spans go through the SDK's batch processor, which exports on its own
//! thread from a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default; full: dropped).
//! Every other `OTEL_*` variable the OpenTelemetry SDK documents (headers, timeout, protocol,
//! resource attributes, `OTEL_SERVICE_NAME`) works as documented.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use crate::config::ConfigError;

/// The tracing target of the hot path's stage spans.
pub const HOT: &str = "spreadagg::hot";
/// Share of traces kept when `OTEL_TRACES_SAMPLER_ARG` does not say.
pub const DEFAULT_RATIO: f64 = 0.01;

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceSettings {
    /// `None`: the SDK reads `OTEL_TRACES_SAMPLER` itself.
    pub ratio: Option<f64>,
    pub service_name: Option<String>,
}

/// Reads the standard variables through `var`; `Ok(None)` when no OTLP endpoint is set.
pub(crate) fn settings_from(
    var: impl Fn(&str) -> Option<String>,
    role: &str,
) -> Result<Option<TraceSettings>, ConfigError> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    // Only OTLP over HTTP with protobuf bodies is built in: another protocol named here would
    // send to a port that does not speak it, and every span would be lost without a word.
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Some(protocol) = set(name)
            && protocol.trim() != "http/protobuf"
        {
            return Err(ConfigError::Invalid(format!(
                "{name}={protocol}: only http/protobuf is supported (point the endpoint at the collector's OTLP/HTTP port, 4318 by default)"
            )));
        }
    }
    let ratio = match set("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) => Some(
            arg.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {arg:?}"
                    ))
                })?,
        ),
        None => Some(DEFAULT_RATIO),
    };
    Ok(Some(TraceSettings {
        // A sampler named in the environment is the SDK's to build (with its argument).
        ratio: if set("OTEL_TRACES_SAMPLER").is_some() {
            None
        } else {
            ratio
        },
        service_name: set("OTEL_SERVICE_NAME")
            .is_none()
            .then(|| format!("spreadagg-{role}")),
    }))
}

/// The exporter's provider; [`Traces::shutdown`] flushes what is queued. Call it outside any
/// async runtime (the exporter's HTTP client is a blocking one).
#[derive(Debug, Default)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Whether spans are being exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued and stops the exporter.
    pub fn shutdown(self) {
        // Bounded: an unreachable collector must not hold the pod past its grace period.
        if let Some(p) = self.provider
            && let Err(error) = p.shutdown_with_timeout(std::time::Duration::from_secs(1))
        {
            tracing::warn!(%error, "trace exporter shutdown");
        }
    }
}

/// Builds the exporter when the environment asks for one.
pub(crate) fn provider(settings: &TraceSettings) -> Result<SdkTracerProvider, ConfigError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| ConfigError::Invalid(format!("OTEL_EXPORTER_OTLP_*: {e}")))?;
    let mut resource = Resource::builder();
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if let Some(ratio) = settings.ratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    Ok(builder.build())
}

/// The layer that hands [`HOT`] spans to the exporter.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("spreadagg"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(HOT, tracing::Level::DEBUG),
        )
}

pub(crate) fn into_traces(provider: Option<SdkTracerProvider>) -> Traces {
    Traces { provider }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn off_without_an_endpoint_and_validated_with_one() {
        assert_eq!(settings_from(env(&[]), "engine").expect("ok"), None);
        assert_eq!(
            settings_from(env(&[("OTEL_TRACES_SAMPLER_ARG", "0.5")]), "engine").expect("ok"),
            None,
            "a sampler alone turns nothing on"
        );
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert_eq!(
            settings_from(env(&on), "engine").expect("ok"),
            Some(TraceSettings {
                ratio: Some(DEFAULT_RATIO),
                service_name: Some("spreadagg-engine".into())
            })
        );
        let s = settings_from(
            env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4318/v1/traces",
                ),
                ("OTEL_TRACES_SAMPLER_ARG", "1"),
                ("OTEL_SERVICE_NAME", "mine"),
            ]),
            "all",
        )
        .expect("ok")
        .expect("on");
        assert_eq!(s.ratio, Some(1.0));
        assert_eq!(s.service_name, None, "the SDK reads OTEL_SERVICE_NAME");
        let sdk = settings_from(env(&[on[0], ("OTEL_TRACES_SAMPLER", "always_on")]), "all")
            .expect("ok")
            .expect("on");
        assert_eq!(sdk.ratio, None, "a named sampler is the SDK's");
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let e = settings_from(env(&[on[0], (name, value)]), "all").expect_err(value);
            assert!(e.to_string().contains(name), "{e}");
        }
        assert!(
            settings_from(
                env(&[on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
                "all"
            )
            .expect("ok")
            .is_some()
        );
        for bad in ["2", "-0.1", "lots", "NaN"] {
            let e = settings_from(env(&[on[0], ("OTEL_TRACES_SAMPLER_ARG", bad)]), "all")
                .expect_err(bad);
            assert!(e.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        }
    }
}
