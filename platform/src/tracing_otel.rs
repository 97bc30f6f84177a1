//! OpenTelemetry traces, exported over OTLP/gRPC in batches: off unless an
//! endpoint is given, and then one trace follows a money movement from its
//! request through every saga step.
//!
//! The W3C `traceparent` is the one carrier everywhere: the `traceparent`
//! header of gRPC and HTTP requests, and the envelope's `traceparent` of
//! every message. A server span continues the caller's trace, a client call
//! and an enqueued message carry the context of the span that made them, and
//! a consumer's spans continue the trace of the message they handle.
//!
//! With traces off every function here returns at its first line (one
//! relaxed atomic load): no span context is built, parsed or carried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;

/// The header (gRPC metadata, HTTP, AMQP) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How long exporting the last spans may take when the process stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the trace layer records, whatever the log filter says: the
/// services' spans at INFO, without the exporter's own transport (whose
/// spans would be exported by the very export that made them).
/// The log-only spans of consumer outcomes are left out too.
const TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
    opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,lapin=warn,sqlx=warn,\
    corebank_platform::messaging::outcome=off";

/// Set once the trace layer is installed; read by every propagation point.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are recorded and exported in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporting pipeline of this process; keep it until the process stops,
/// then [`Traces::shutdown`] it so the spans still buffered are exported.
/// Dropped without that, it flushes on drop.
#[derive(Debug, Default)]
#[must_use = "dropping it stops exporting spans"]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// No pipeline: traces are off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The export runs on the exporter's own thread over a channel this
        // runtime drives: wait for it without holding a worker.
        let flushed = tokio::task::spawn_blocking(move || flush(&provider)).await;
        if let Err(error) = flushed {
            tracing::warn!(%error, "traces not flushed");
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| flush(&provider));
            }
            _ => flush(&provider),
        }
    }
}

fn flush(provider: &SdkTracerProvider) {
    ENABLED.store(false, Ordering::Relaxed);
    if let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
        tracing::warn!(%error, "traces not flushed");
    }
}

/// The trace layer exporting to `endpoint` (OTLP/gRPC) as `service_name`,
/// with its filter, and the pipeline behind it. Call within a Tokio runtime:
/// the exporter's channel lives on it. [`mark_enabled`] once installed.
pub(crate) fn layer<S>(
    endpoint: &str,
    service_name: &str,
) -> anyhow::Result<(impl tracing_subscriber::Layer<S> + 'static, Traces)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| anyhow::anyhow!("otlp endpoint {endpoint}: {error}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("corebank");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    let filter = EnvFilter::try_new(TRACE_FILTER)?;
    use tracing_subscriber::Layer as _;
    Ok((
        layer.with_filter(filter),
        Traces {
            provider: Some(provider),
        },
    ))
}

/// Turns propagation on, once the layer of [`layer`] is the global one.
pub(crate) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The `traceparent` of the current span, when traces are on and a span is
/// being recorded.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// Makes `span` continue the trace of `traceparent` (a remote parent), when
/// traces are on and the header is valid; call before the span is entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(remote_parent) {
        let _ = span.set_parent(parent);
    }
}

/// Makes the span of a message continue the message's trace: under the
/// current span when that one is in the same trace already (the batch span
/// of the batch's first message), otherwise under the message's
/// `traceparent` itself.
pub fn continue_message_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    let Some(parent) = traceparent.and_then(remote_parent) else {
        return;
    };
    let trace_id = parent.span().span_context().trace_id();
    let current = tracing::Span::current().context();
    if current.span().span_context().trace_id() != trace_id {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` header of an HTTP or gRPC request, if any.
pub fn traceparent_header(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(TRACEPARENT)?.to_str().ok()
}

/// Adds the current span's `traceparent` to an outgoing gRPC call.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(value) = current_traceparent().and_then(|header| header.parse().ok()) {
        metadata.insert(TRACEPARENT, value);
    }
}

/// The context of a valid `traceparent`, as the remote parent of a span.
fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    let context = TraceContextPropagator::new().extract(&Carrier(Some(traceparent.to_owned())));
    context.span().span_context().is_valid().then_some(context)
}

/// A carrier of the one `traceparent` header.
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_a_remote_parent_and_garbage_is_none() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = remote_parent(header).expect("a valid header");
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote());
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert!(remote_parent("not a traceparent").is_none());
        assert!(remote_parent("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
    }

    #[test]
    fn with_traces_off_nothing_is_carried() {
        assert!(current_traceparent().is_none());
    }
}
