//! The gRPC server every service runs: health (`grpc.health.v1`), reflection,
//! request ids, a default deadline, tracing spans (continuing the caller's
//! `traceparent`) and metrics, and graceful shutdown that reports
//! NOT_SERVING before draining.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{AuthLayer, ServiceAuth};
use crate::telemetry::GrpcMetricsLayer;

/// The longest a request may run when the client sets no shorter deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// A gRPC server for one corebank service.
#[derive(Debug)]
pub struct GrpcServer {
    /// Metrics label, e.g. `account`.
    pub name: &'static str,
    /// Fully qualified gRPC service names reported SERVING by health.
    pub services: Vec<&'static str>,
    /// Authenticates every caller (health excepted) and serves TLS when set.
    pub auth: ServiceAuth,
}

impl GrpcServer {
    /// Serves `routes` on `listener` until `shutdown` is cancelled, then stops
    /// taking requests and waits for in-flight ones.
    pub async fn serve(
        self,
        listener: TcpListener,
        routes: Routes,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        for service in &self.services {
            reporter
                .set_service_status(*service, ServingStatus::Serving)
                .await;
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(corebank_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let routes = routes.add_service(health).add_service(reflection);

        let name = self.name;
        let layers = tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_grpc().make_span_with(move |request: &http::Request<_>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                let span = tracing::info_span!("grpc", service = name, method = %request.uri().path(), request_id);
                if crate::tracing_otel::enabled() {
                    // The caller's trace goes on here, when it sent one.
                    let traceparent = crate::tracing_otel::traceparent_header(request.headers());
                    crate::tracing_otel::continue_trace(&span, traceparent);
                }
                span
            }).on_failure(crate::telemetry::GrpcFailureLog))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(GrpcMetricsLayer::new(name))
            .layer(crate::idempotency::ReplayMarkerLayer)
            .layer(AuthLayer::new(self.auth.authenticator.clone()))
            .layer(crate::input::InputCheckLayer::new());

        let address = listener.local_addr()?;
        tracing::info!(service = name, %address, "grpc listening");
        let drain = shutdown.clone();
        let services = self.services.clone();
        let signal = async move {
            drain.cancelled().await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for service in services {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        };
        let mut builder = Server::builder();
        if let Some(tls) = self.auth.tls.clone() {
            install_crypto_provider();
            builder = builder.tls_config(tls)?;
        }
        builder
            .timeout(DEFAULT_DEADLINE)
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // Small answers must not wait on Nagle's algorithm for the
                // peer's delayed ACK (a 40 ms stall at the tail).
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await?;
        tracing::info!(service = name, "grpc stopped");
        Ok(())
    }
}

/// Makes ring rustls's process-wide crypto provider, unless one is already
/// installed. tonic builds its server TLS config from that default, and this
/// binary links rustls with both ring (tonic's `tls-ring`) and aws-lc-rs
/// (lapin's AMQP TLS): with two and none chosen, rustls panics on the first
/// TLS server start.
fn install_crypto_provider() {
    let ring = tokio_rustls::rustls::crypto::ring::default_provider();
    if ring.install_default().is_err() {
        tracing::debug!("a rustls crypto provider was already installed");
    }
}
