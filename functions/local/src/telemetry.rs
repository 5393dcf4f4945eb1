//! What the local binary tells its operator: logs (`--log-format pretty|json`,
//! filtered by `OBLIVIOUS_LOG`), traces (OpenTelemetry over OTLP/HTTP when
//! `[tracing] otlp_endpoint` is set) and metrics (Prometheus text at
//! `/metrics` when `[metrics] listen` is set). Each is free when off: no
//! recorder means every `metrics` call is a no-op, and no trace exporter
//! means the relay's spans are disabled where they are made.

use axum::extract::Request;
use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use oblivious_core::config::TracingSettings;
use oblivious_core::telemetry as t;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line (for Loki, CloudWatch, Elasticsearch…).
    Json,
}

/// The trace pipeline, flushed when the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (bounded by the exporter's own timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.traces {
            // Off the async runtime: the exporter's HTTP client blocks.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// Installs the log (and, with an endpoint, trace) pipeline. Call before the
/// async runtime starts: the OTLP exporter's HTTP client is a blocking one.
pub fn init(format: LogFormat, tracing: Option<&TracingSettings>) -> Result<Telemetry, String> {
    // The relay's spans are for traces; log lines carry their own fields.
    let filter = || {
        let base = std::env::var("OBLIVIOUS_LOG").unwrap_or_else(|_| "info".into());
        EnvFilter::try_new(format!("{base},oblivious::span=off")).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let logs = match format {
        LogFormat::Pretty => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let (provider, traces) = match tracing.and_then(|t| t.otlp_endpoint.as_deref().map(|e| (t, e))) {
        Some((settings, endpoint)) => {
            let provider = tracer_provider(settings, endpoint)?;
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("oblivious")).with_filter(
                tracing_subscriber::filter::Targets::new().with_target("oblivious::span", tracing::Level::INFO),
            );
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| format!("cannot install the log pipeline: {e}"))?;
    Ok(Telemetry { traces: provider })
}

fn tracer_provider(s: &TracingSettings, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(s.service_name.clone()).build();
    Ok(SdkTracerProvider::builder()
        // A caller's sampling decision is followed; new traces are sampled at the ratio.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(s.sample_ratio))))
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The request's root span, a child of the caller's `traceparent` when it sent one.
pub fn request_span(req: &Request) -> tracing::Span {
    let span = tracing::info_span!(
        target: "oblivious::span",
        "request",
        otel.name = %format!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
    );
    if !span.is_disabled() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
        let _ = span.set_parent(parent);
    }
    span
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The Prometheus side: the installed recorder and the process figures.
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Metrics {
    /// Installs the Prometheus recorder (once per process).
    pub fn install() -> Result<Metrics, String> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), t::SECONDS_BUCKETS)
            .map_err(|e| e.to_string())?
            .install_recorder()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        let process = metrics_process::Collector::default();
        process.describe();
        oblivious_relay::describe_metrics();
        metrics::gauge!(t::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "runtime" => "local").set(1.0);
        Ok(Metrics { handle, process })
    }

    /// The exposition text (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.run_upkeep();
        self.handle.render()
    }
}
