//! Logs (pretty or JSON), traces (OTLP, when asked for) and Prometheus
//! metrics: a `/metrics` endpoint and a tower layer counting gRPC requests
//! and their latency by method and code.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryArgs;
use crate::tracing_otel::{self, Traces};

/// Targets whose events are too loud at the levels they use, quieted unless
/// the filter names them: lapin logs every message the broker returns, bytes
/// and all, at WARN, and an event published to no subscriber is returned by
/// design (the relay counts those itself).
const QUIETED: &[(&str, &str)] = &[("lapin::returned_messages", "error")];

/// Installs the global log subscriber on stderr; later calls are no-ops.
pub fn init_logging(args: &TelemetryArgs) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(args))
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if log_json(args) {
        builder
            .json()
            .flatten_event(true)
            // The current span is the last of `spans` already.
            .with_current_span(false)
            .with_ansi(false)
            .try_init()
    } else {
        builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Logs as [`init_logging`] does and, with `--otlp-endpoint`, exports
/// spans there as `service_name` (see [`crate::tracing_otel`]). Call within
/// the Tokio runtime; keep what it returns until the process stops, then
/// [`Traces::shutdown`] it. Without an endpoint this is [`init_logging`].
pub fn init_telemetry(args: &TelemetryArgs, service_name: &str) -> anyhow::Result<Traces> {
    let Some(endpoint) = args.otlp_endpoint.as_deref() else {
        init_logging(args);
        return Ok(Traces::off());
    };
    let (traces_layer, traces) = tracing_otel::layer(endpoint, service_name)?;
    let logs = if log_json(args) {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(traces_layer)
        .with(logs.with_filter(log_filter(args)))
        .try_init()
        .is_ok();
    if !installed {
        // A subscriber was installed before: its spans are not ours to export.
        return Ok(Traces::off());
    }
    tracing_otel::mark_enabled();
    tracing::info!(%endpoint, service = service_name, "exporting traces");
    Ok(traces)
}

/// The log filter of `args`, with the [`QUIETED`] targets quieted.
fn log_filter(args: &TelemetryArgs) -> EnvFilter {
    let mut filter =
        EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for (target, level) in QUIETED {
        if !args.log_filter.contains(target)
            && let Ok(directive) = format!("{target}={level}").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Whether logs are JSON lines (`auto`: when stderr is not a terminal).
fn log_json(args: &TelemetryArgs) -> bool {
    match args.log_format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    }
}

/// When a gauge read from the database is refreshed: due at once, then at
/// most once per `period`, however often a loop asks.
#[derive(Debug)]
pub struct Every {
    period: std::time::Duration,
    last: Option<Instant>,
}

impl Every {
    pub fn new(period: std::time::Duration) -> Self {
        Self { period, last: None }
    }

    /// Whether the period has passed since the last time this said yes.
    pub fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|at| at.elapsed() >= self.period);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (a test harness); keep ours for rendering anyway.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = metrics_handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds `addr` and serves metrics in the background; logs and carries on if
/// the port is taken (metrics must never stop a service).
pub async fn spawn_metrics(addr: SocketAddr, shutdown: CancellationToken) -> Option<SocketAddr> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let local = listener.local_addr().ok();
            tokio::spawn(async move {
                if let Err(error) = serve_metrics(listener, shutdown).await {
                    tracing::warn!(%error, "metrics endpoint stopped");
                }
            });
            local
        }
        Err(error) => {
            tracing::warn!(%addr, %error, "metrics endpoint not started");
            None
        }
    }
}

/// Counts gRPC requests (`grpc_server_requests_total`) and records their
/// latency (`grpc_server_request_duration_seconds`) by service, method and code.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    service: &'static str,
}

impl GrpcMetricsLayer {
    pub fn new(service: &'static str) -> Self {
        metrics_handle();
        Self { service }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            service: self.service,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    service: &'static str,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let service = self.service;
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                // A handler's error travels in the headers of a trailers-only
                // response; a success carries its status in the trailers.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map(tonic::Code::from_i32)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Internal,
            };
            let code = format!("{code:?}");
            metrics::counter!("grpc_server_requests_total", "service" => service, "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("grpc_server_request_duration_seconds", "service" => service, "method" => method)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Whether a gRPC code is the server's fault. A client error (bad input, an
/// unknown id, a refused business rule, a missing credential) is an outcome,
/// not a failure of the service, and is never logged as an error.
pub fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
            | tonic::Code::Unimplemented
            | tonic::Code::DeadlineExceeded
    )
}

/// The trace layer's failure log: a server error at ERROR, a client error at
/// INFO, each with its code and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcFailureLog;

impl tower_http::trace::OnFailure<tower_http::classify::GrpcFailureClass> for GrpcFailureLog {
    fn on_failure(
        &mut self,
        failure: tower_http::classify::GrpcFailureClass,
        latency: std::time::Duration,
        _span: &tracing::Span,
    ) {
        let latency_ms = latency.as_millis();
        match failure {
            tower_http::classify::GrpcFailureClass::Code(code) => {
                let code = tonic::Code::from_i32(code.get());
                if is_server_error(code) {
                    tracing::error!(?code, latency_ms, "grpc request failed");
                } else {
                    tracing::info!(?code, latency_ms, "grpc request refused");
                }
            }
            tower_http::classify::GrpcFailureClass::Error(error) => {
                tracing::error!(%error, latency_ms, "grpc request failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_is_due_at_once_then_not_again_until_its_period_passed() {
        let mut hourly = Every::new(std::time::Duration::from_secs(3600));
        assert!(hourly.due());
        assert!(!hourly.due());
        let mut always = Every::new(std::time::Duration::ZERO);
        assert!(always.due());
        assert!(always.due());
    }

    use super::*;

    #[test]
    fn only_server_codes_are_server_errors() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::AlreadyExists,
            tonic::Code::FailedPrecondition,
            tonic::Code::Aborted,
            tonic::Code::PermissionDenied,
            tonic::Code::Unauthenticated,
            tonic::Code::ResourceExhausted,
            tonic::Code::OutOfRange,
            tonic::Code::Cancelled,
        ] {
            assert!(!is_server_error(code), "{code:?}");
        }
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::DataLoss,
        ] {
            assert!(is_server_error(code), "{code:?}");
        }
    }
}
