//! TLS on a real corebank gRPC server. The server is a [`GrpcServer`] whose
//! auth comes from the flags a service takes (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`), and each client's credentials come from the flags a
//! caller takes (`--tls-ca`, `--tls-cert`, `--tls-key`), parsed by clap, so
//! the tests cover the path a user's flags go through. The server's routes
//! hold a reflection service that counts the requests reaching it: a refused
//! client is one the server never served, not merely one that saw an error.
//! Every refused client presents a valid token, so only TLS can refuse it.

#[path = "common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Code, Status};
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

use corebank_platform::auth::{AuthArgs, Credentials};
use corebank_platform::grpc::GrpcServer;

use pki::{Ca, Leaf, Pki};

/// How long a call may take before the test calls it hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The auth flags, as every corebank binary flattens them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    auth: AuthArgs,
}

/// Two CAs: the one the server trusts for clients, and a foreign one.
struct Setup {
    pki: Pki,
    ca: Ca,
    server: Leaf,
    client: Leaf,
    foreign_client: Leaf,
}

impl Setup {
    fn new() -> Self {
        let pki = Pki::new();
        let ca = pki.ca("corebank-test-ca");
        let foreign = pki.ca("foreign-ca");
        let server = pki.server(&ca, "server", &["localhost", "127.0.0.1"]);
        let client = pki.client(&ca, "payments");
        let foreign_client = pki.client(&foreign, "intruder");
        Self {
            pki,
            ca,
            server,
            client,
            foreign_client,
        }
    }

    /// `AuthArgs` from `flags`, all sharing one development signing key, so
    /// every client's token is valid on the server.
    fn args(&self, flags: &[(&str, &Path)]) -> AuthArgs {
        let dev_key = self.pki.path("dev-signing-key.pem");
        let mut command_line: Vec<OsString> = vec!["corebank".into()];
        for (flag, path) in [("--dev-signing-key", dev_key.as_path())]
            .iter()
            .chain(flags)
        {
            command_line.push(flag.into());
            command_line.push(path.into());
        }
        Flags::try_parse_from(command_line)
            .expect("the flags parse")
            .auth
    }

    /// `--tls-cert`, `--tls-key` and, for mTLS, `--tls-client-ca`.
    fn server_args(&self, mutual: bool) -> AuthArgs {
        let mut flags = vec![
            ("--tls-cert", self.server.cert.as_path()),
            ("--tls-key", self.server.key.as_path()),
        ];
        if mutual {
            flags.push(("--tls-client-ca", self.ca.cert.as_path()));
        }
        self.args(&flags)
    }

    /// A caller trusting the server's CA and presenting `identity`, if any,
    /// with the token it signs as a service.
    fn client(&self, identity: Option<&Leaf>) -> Credentials {
        let mut flags = vec![("--tls-ca", self.ca.cert.as_path())];
        if let Some(leaf) = identity {
            flags.push(("--tls-cert", leaf.cert.as_path()));
            flags.push(("--tls-key", leaf.key.as_path()));
        }
        self.args(&flags)
            .service_auth("caller")
            .expect("client auth from flags")
            .credentials
    }
}

/// A reflection service that counts the requests the server hands it.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    served: Arc<AtomicUsize>,
}

impl<S: NamedService> NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.served.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

/// A [`GrpcServer`] on a free port, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl TestServer {
    async fn start(args: &AuthArgs) -> Self {
        let auth = args
            .service_auth("mtls-test")
            .expect("server auth from flags");
        assert!(auth.tls.is_some(), "the flags configure server TLS");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let served = Arc::new(AtomicUsize::new(0));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("reflection service");
        let routes = Routes::new(Counted {
            inner: reflection,
            served: served.clone(),
        });
        let server = GrpcServer {
            name: "mtls-test",
            services: Vec::new(),
            auth,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(server.serve(listener, routes, shutdown.clone()));
        Self {
            addr,
            served,
            shutdown,
        }
    }

    fn https(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The services the server lists through reflection: an authenticated call.
async fn list_services(credentials: &Credentials, url: &str) -> Result<Vec<String>, Status> {
    let channel = credentials.channel(url).expect("a channel");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let call = async {
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await?
            .into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| Status::unknown("the stream ended without an answer"))?;
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => Ok(list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect()),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
}

/// The call failed as a transport failure does, not as a handler refusal.
fn assert_refused_by_transport(result: Result<Vec<String>, Status>) {
    let status = result.expect_err("the server served the call");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_client_with_a_certificate_from_the_trusted_ca_and_a_token_is_served() {
    let setup = Setup::new();
    let server = TestServer::start(&setup.server_args(true)).await;

    let services = list_services(&setup.client(Some(&setup.client)), &server.https())
        .await
        .expect("served");

    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
    assert_eq!(server.served(), 1);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_by_an_mtls_server() {
    let setup = Setup::new();
    let server = TestServer::start(&setup.server_args(true)).await;
    list_services(&setup.client(Some(&setup.client)), &server.https())
        .await
        .expect("a client with a certificate is served");

    let refused = list_services(&setup.client(None), &server.https()).await;

    assert_refused_by_transport(refused);
    assert_eq!(
        server.served(),
        1,
        "the client without a certificate reached no service"
    );
}

#[tokio::test]
async fn a_client_certificate_signed_by_a_foreign_ca_is_refused() {
    let setup = Setup::new();
    let server = TestServer::start(&setup.server_args(true)).await;
    list_services(&setup.client(Some(&setup.client)), &server.https())
        .await
        .expect("a client with a trusted certificate is served");

    let refused = list_services(&setup.client(Some(&setup.foreign_client)), &server.https()).await;

    assert_refused_by_transport(refused);
    assert_eq!(
        server.served(),
        1,
        "the foreign certificate reached no service"
    );
}

#[tokio::test]
async fn a_plain_text_client_is_refused_by_a_tls_server_without_a_client_ca() {
    let setup = Setup::new();
    let server = TestServer::start(&setup.server_args(false)).await;
    list_services(&setup.client(None), &server.https())
        .await
        .expect("without --tls-client-ca a TLS client needs no certificate");

    // The same token, without TLS.
    let plain = setup
        .args(&[])
        .service_auth("caller")
        .expect("client auth from flags")
        .credentials;
    let refused = list_services(&plain, &format!("http://{}", server.addr)).await;

    assert_refused_by_transport(refused);
    assert_eq!(
        server.served(),
        1,
        "the plain-text client reached no service"
    );
}

#[tokio::test]
async fn a_trusted_client_certificate_without_a_token_identifies_a_service() {
    let setup = Setup::new();
    let server = TestServer::start(&setup.server_args(true)).await;
    let client_tls = setup
        .args(&[
            ("--tls-ca", setup.ca.cert.as_path()),
            ("--tls-cert", setup.client.cert.as_path()),
            ("--tls-key", setup.client.key.as_path()),
        ])
        .tls
        .client_tls()
        .expect("client TLS from flags")
        .expect("--tls-ca is set");

    let services = list_services(
        &Credentials::anonymous().with_tls(client_tls),
        &server.https(),
    )
    .await
    .expect("the certificate is the caller's identity");

    assert!(!services.is_empty());
    assert_eq!(server.served(), 1);
}

#[tokio::test]
async fn a_client_configured_for_tls_refuses_a_plain_http_endpoint() {
    let setup = Setup::new();

    let error = setup
        .client(Some(&setup.client))
        .channel("http://127.0.0.1:50051")
        .expect_err("refused");

    assert!(error.to_string().contains("not https://"), "{error}");
}

#[test]
fn a_client_ca_without_a_server_certificate_is_refused_at_start() {
    let setup = Setup::new();

    let error = setup
        .args(&[("--tls-client-ca", setup.ca.cert.as_path())])
        .server_tls()
        .expect_err("refused");

    assert!(error.to_string().contains("--tls-client-ca"), "{error}");
}
