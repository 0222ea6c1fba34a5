//! OpenTelemetry spans over OTLP/HTTP (protobuf), when `[traces]` names an
//! endpoint. The spans are the `tracing` spans Gatehouse opens anyway (the
//! HTTP request, each `tools/call`), exported by `tracing-opentelemetry`;
//! W3C trace context is read and written in `gatehouse_mcp::trace_context`.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TracesConfig;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client. The SDK's own follows redirects (also from
/// https to plain http, with any `OTEL_EXPORTER_OTLP_HEADERS` credential)
/// and takes a proxy from the environment: this one goes to the configured
/// endpoint only, as every other outbound client of Gatehouse does. Built
/// on a thread of its own: a blocking client cannot be made on a runtime.
fn export_client() -> anyhow::Result<reqwest::blocking::Client> {
    std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(EXPORT_TIMEOUT)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter's HTTP client panicked"))?
    .context("cannot build the OTLP exporter's HTTP client")
}

/// The W3C propagator reads and writes `traceparent`, whether or not spans
/// are exported (the trace id of a request goes into its log lines).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The exporting side; flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Starts the exporter, if configured: spans are batched on the SDK's own
/// thread (the blocking HTTP client runs there, never on a Tokio worker).
pub fn start(config: &TracesConfig) -> anyhow::Result<Option<(Telemetry, SdkTracer)>> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(export_client()?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot start the OTLP exporter (traces.otlp_endpoint)")?;
    let provider = SdkTracerProvider::builder()
        // Every request is exported. The SDK's default follows a remote
        // parent's "not sampled" flag, which would let any caller, before
        // authentication, keep its requests out of the traces.
        .with_sampler(Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("gatehouse");
    Ok(Some((Telemetry { provider }, tracer)))
}

impl Telemetry {
    /// Exports what is still batched, then stops. Blocking, so off the
    /// Tokio workers.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}
