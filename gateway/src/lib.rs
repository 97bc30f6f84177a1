//! corebank-gateway: the partner-facing REST facade over corebank's gRPC
//! APIs, on port 8080.
//!
//! Nothing here is written per RPC. At start the gateway reads the
//! descriptor set: every method with a `google.api.http` annotation becomes
//! a route ([`routes`]), its `corebank.v1.scope` option the scope a caller
//! needs; requests are transcoded with prost-reflect ([`transcode`]) and
//! sent as generic gRPC calls ([`backend`]); streams become Server-Sent
//! Events or NDJSON ([`sse`]); the OpenAPI document comes from the same
//! table ([`openapi`]). Bearer tokens are checked at the edge ([`auth`]), a
//! rate limit applies per principal ([`limits`]), and errors keep one shape
//! ([`errors`]).

pub mod auth;
pub mod backend;
pub mod errors;
pub mod handler;
pub mod limits;
pub mod observe;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod template;
pub mod testing;
pub mod transcode;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use corebank_platform::auth::{DevKey, development_key_path};
use corebank_platform::db::SchemaSpec;
use corebank_platform::service::{Bound, Context, Service};
use prost_reflect::DescriptorPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_governor::GovernorLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, MakeSpan, TraceLayer};

use crate::auth::{EdgeAuth, PlatformAuth};
use crate::backend::Backends;
use crate::handler::Gateway;
use crate::routes::RouteTable;
use tonic::transport::ClientTlsConfig;

/// The gateway keeps no state: its migrator is empty, so `migrate` creates
/// an empty schema and a role it never uses.
pub static MIGRATOR: Migrator = Migrator::DEFAULT;

/// The gateway's (empty) place in PostgreSQL.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "gateway",
    role: "corebank_gateway",
    append_only: &[],
    migrator: &MIGRATOR,
};

/// Which service answers each proto service, by the name `Peers` knows it.
pub const BACKENDS: &[(&str, &str)] = &[
    ("corebank.v1.CustomerService", "customer"),
    ("corebank.v1.AccountService", "account"),
    ("corebank.v1.TransactionService", "transaction"),
    ("corebank.v1.SagaAdminService", "orchestrator"),
    ("corebank.v1.FraudService", "fraud"),
    ("corebank.v1.ReportingService", "reporting"),
];

/// Flags of the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// HTTP listen address.
    #[arg(id = "gateway_addr", long = "gateway-addr", env = "COREBANK_GATEWAY_ADDR", default_value = GatewayService::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    #[arg(
        id = "gateway_customer_endpoint",
        long = "gateway-customer-endpoint",
        env = "COREBANK_GATEWAY_CUSTOMER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub customer_endpoint: String,
    #[arg(
        id = "gateway_account_endpoint",
        long = "gateway-account-endpoint",
        env = "COREBANK_GATEWAY_ACCOUNT_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub account_endpoint: String,
    #[arg(
        id = "gateway_transaction_endpoint",
        long = "gateway-transaction-endpoint",
        env = "COREBANK_GATEWAY_TRANSACTION_ENDPOINT",
        default_value = "http://127.0.0.1:50053"
    )]
    pub transaction_endpoint: String,
    #[arg(
        id = "gateway_orchestrator_endpoint",
        long = "gateway-orchestrator-endpoint",
        env = "COREBANK_GATEWAY_ORCHESTRATOR_ENDPOINT",
        default_value = "http://127.0.0.1:50054"
    )]
    pub orchestrator_endpoint: String,
    #[arg(
        id = "gateway_fraud_endpoint",
        long = "gateway-fraud-endpoint",
        env = "COREBANK_GATEWAY_FRAUD_ENDPOINT",
        default_value = "http://127.0.0.1:50055"
    )]
    pub fraud_endpoint: String,
    #[arg(
        id = "gateway_reporting_endpoint",
        long = "gateway-reporting-endpoint",
        env = "COREBANK_GATEWAY_REPORTING_ENDPOINT",
        default_value = "http://127.0.0.1:50056"
    )]
    pub reporting_endpoint: String,
    /// The longest a request may take; it is also the backend call's gRPC deadline.
    #[arg(long, env = "COREBANK_REQUEST_TIMEOUT", default_value = "30s", value_parser = corebank_platform::config::parse_duration)]
    pub request_timeout: Duration,
    /// Sustained requests a second per principal.
    #[arg(long, env = "COREBANK_RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,
    /// Requests a principal may make at once before the sustained rate applies.
    #[arg(long, env = "COREBANK_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// The largest request body accepted (413 beyond).
    #[arg(long, env = "COREBANK_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// The gateway's own internal token (scope `delegate`); in development,
    /// without it, the gateway signs one with the development key.
    #[arg(long, env = "COREBANK_GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Option<secrecy::SecretString>,
}

impl GatewayArgs {
    fn endpoint_flag(&self, peer: &str) -> &str {
        match peer {
            "customer" => &self.customer_endpoint,
            "account" => &self.account_endpoint,
            "transaction" => &self.transaction_endpoint,
            "orchestrator" => &self.orchestrator_endpoint,
            "fraud" => &self.fraud_endpoint,
            _ => &self.reporting_endpoint,
        }
    }
}

/// The gateway as `corebank up`, `serve` and the test harness run it.
#[derive(Debug, Clone, Copy)]
pub struct GatewayService;

impl Service for GatewayService {
    const NAME: &'static str = "gateway";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:8080";
    const CALLS: &'static [&'static str] = &[
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
        "reporting",
    ];
    type Args = GatewayArgs;
    type Settings = Settings;

    fn listen_addr(args: &GatewayArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &GatewayArgs) -> anyhow::Result<Settings> {
        let endpoints = BACKENDS
            .iter()
            .map(|(service, peer)| {
                let endpoint = context
                    .peer_endpoint(peer)
                    .unwrap_or_else(|| args.endpoint_flag(peer).to_owned());
                ((*service).to_owned(), endpoint)
            })
            .collect();
        let credentials = match &args.gateway_token {
            Some(token) => corebank_platform::auth::Credentials::bearer(
                secrecy::ExposeSecret::expose_secret(token),
            )?,
            None => PlatformAuth::development(&development_key()?).credentials,
        };
        let tls = context.auth.credentials.tls().cloned();
        let auth = PlatformAuth {
            authenticator: context.auth.authenticator.clone(),
            credentials,
        };
        Ok(Settings {
            pool: DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET)?,
            endpoints,
            backend_tls: tls,
            auth: Some(Arc::new(auth)),
            request_timeout: args.request_timeout,
            rate_limit_per_second: args.rate_limit_per_second,
            rate_limit_burst: args.rate_limit_burst,
            max_body_bytes: args.max_body_bytes,
        })
    }

    async fn start(
        settings: Settings,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bound> {
        let app = Application::build(settings, addr).await?;
        Ok(Bound::new(
            app.local_addr(),
            app.run_until_stopped(shutdown),
        ))
    }
}

/// The development signing key (`COREBANK_DEV_SIGNING_KEY`, else the
/// default path `corebank up` creates).
fn development_key() -> anyhow::Result<DevKey> {
    let path = std::env::var_os("COREBANK_DEV_SIGNING_KEY")
        .map(PathBuf::from)
        .unwrap_or_else(development_key_path);
    DevKey::load_or_create_at(&path)
}

/// What the gateway runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The descriptors routes are generated from.
    pub pool: DescriptorPool,
    /// Proto service name → gRPC endpoint.
    pub endpoints: HashMap<String, String>,
    /// TLS (and the client certificate) for the backends, from `--tls-ca`,
    /// `--tls-cert` and `--tls-key`; the endpoints are then `https://`.
    pub backend_tls: Option<ClientTlsConfig>,
    /// `None` turns authentication off (tests of the transcoding alone).
    pub auth: Option<Arc<dyn EdgeAuth>>,
    pub request_timeout: Duration,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub max_body_bytes: usize,
}

impl Settings {
    /// Trusts `key` for partner tokens and signs the gateway's delegate
    /// tokens with it (the test harness's own key).
    pub fn use_development_key(&mut self, key: &DevKey) {
        self.auth = Some(Arc::new(PlatformAuth::development(key)));
    }
}

/// A bound, ready-to-run gateway.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Builds the route table and binds `addr` (port 0 picks a free port).
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let router = router(settings)?;
        let listener = corebank_platform::listen::bind(addr).await?;
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let address = self.local_addr();
        tracing::info!(%address, "gateway listening");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The whole HTTP surface: `/healthz`, `/openapi.json`, and every generated
/// route behind authentication and the rate limit.
pub fn router(settings: Settings) -> anyhow::Result<Router> {
    let routes = RouteTable::from_pool(&settings.pool)?;
    let document = Arc::new(serde_json::to_vec(&openapi::document(&routes))?);
    let backends = Backends::new(
        &settings.endpoints,
        Duration::from_secs(5),
        settings.backend_tls.as_ref(),
    )?;
    let governor =
        limits::governor_config(settings.rate_limit_per_second, settings.rate_limit_burst)?;
    let gateway = Arc::new(Gateway {
        routes,
        backends,
        auth: settings.auth,
        request_timeout: settings.request_timeout,
        max_body_bytes: settings.max_body_bytes,
    });
    let generated = Router::new()
        .fallback(handler::dispatch)
        .layer(GovernorLayer::new(governor).error_handler(limits::rate_limited))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            limits::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            observe::count,
        ))
        .with_state(gateway);
    let openapi = get(move || {
        let document = document.clone();
        async move {
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                document.as_ref().clone(),
            )
                .into_response()
        }
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", openapi)
        .fallback_service(generated)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)))
}

/// The span of one HTTP request: with traces on, an INFO span continuing the
/// caller's `traceparent` (or starting a trace) that every backend call of
/// the request carries on; otherwise tower-http's usual DEBUG span.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    if !corebank_platform::tracing_otel::enabled() {
        return DefaultMakeSpan::new().make_span(request);
    }
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
    );
    corebank_platform::tracing_otel::continue_trace(
        &span,
        corebank_platform::tracing_otel::traceparent_header(request.headers()),
    );
    span
}
