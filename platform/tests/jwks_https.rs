//! The JWKS fetched over https, as from Keycloak or any OIDC provider: a
//! local tokio-rustls server with a certificate from a test CA, and an
//! authenticator built from the flags a service takes (`--jwks-url`,
//! `--jwks-ca-file`). A provider whose certificate does not chain to a
//! trusted root, or names another host, is never asked for its keys.

#[path = "common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use jsonwebtoken::{Algorithm, Header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};

use corebank_platform::auth::{Audience, AuthArgs, AuthError, Authenticator, DevKey, TokenSpec};

use pki::{Leaf, Pki};

/// The auth flags, as every corebank binary flattens them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    auth: AuthArgs,
}

/// An https server answering every GET with one JWKS document; it counts
/// the requests it read, which a failed TLS handshake never reaches.
struct HttpsJwks {
    url: String,
    fetches: Arc<AtomicUsize>,
}

impl HttpsJwks {
    async fn start(certificate: &Leaf, document: String) -> Self {
        let acceptor = acceptor(certificate);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counted, document) =
                    (acceptor.clone(), counted.clone(), document.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        answer(stream, &document, &counted).await;
                    }
                });
            }
        });
        Self {
            url: format!("https://localhost:{port}/realms/test/protocol/openid-connect/certs"),
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn acceptor(certificate: &Leaf) -> TlsAcceptor {
    let chain = CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).expect("key PEM");
    let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

/// Reads one request head and answers `document`.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    document: &str,
    counted: &AtomicUsize,
) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
    counted.fetch_add(1, Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
        document.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn jwks(kid: &str, key: &DevKey) -> String {
    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.verifying_key().as_bytes(),
    );
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
    serde_json::json!({ "keys": [jwk] }).to_string()
}

fn token(key: &DevKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let claims = TokenSpec::new("partner-a", "customers:read", Audience::Partner).claims();
    jsonwebtoken::encode(&header, &claims, key.encoding_key()).expect("a signed token")
}

/// The authenticator `--jwks-url url --jwks-ca-file ca` gives.
fn authenticator(url: &str, ca: &std::path::Path) -> Authenticator {
    let command_line: Vec<OsString> = vec![
        "corebank".into(),
        "--jwks-url".into(),
        url.into(),
        "--jwks-ca-file".into(),
        ca.into(),
    ];
    Flags::try_parse_from(command_line)
        .expect("the flags parse")
        .auth
        .authenticator()
        .expect("an authenticator from the flags")
}

#[tokio::test]
async fn a_jwks_served_over_https_by_a_provider_the_ca_file_trusts_verifies_tokens() {
    let pki = Pki::new();
    let ca = pki.ca("idp-ca");
    let provider = pki.server(&ca, "idp", &["localhost"]);
    let key = DevKey::generate().expect("a signing key");
    let server = HttpsJwks::start(&provider, jwks("k1", &key)).await;

    let principal = authenticator(&server.url, &ca.cert)
        .verify(&token(&key, "k1"), Audience::Partner)
        .await
        .expect("the key fetched over https verifies the token");

    assert_eq!(principal.subject, "partner-a");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_provider_certificate_from_an_untrusted_ca_is_refused() {
    let pki = Pki::new();
    let trusted = pki.ca("idp-ca");
    let untrusted = pki.ca("someone-else");
    let impostor = pki.server(&untrusted, "impostor", &["localhost"]);
    let key = DevKey::generate().expect("a signing key");
    let server = HttpsJwks::start(&impostor, jwks("k1", &key)).await;

    let refused = authenticator(&server.url, &trusted.cert)
        .verify(&token(&key, "k1"), Audience::Partner)
        .await;

    let Err(AuthError::KeysUnavailable(reason)) = refused else {
        panic!("expected the keys to be unavailable, got {refused:?}");
    };
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(
        tonic::Status::from(AuthError::KeysUnavailable(reason)).code(),
        tonic::Code::Unavailable
    );
    assert_eq!(server.fetches(), 0, "no request went past the handshake");
}

#[tokio::test]
async fn a_provider_certificate_for_another_host_is_refused() {
    let pki = Pki::new();
    let ca = pki.ca("idp-ca");
    let elsewhere = pki.server(&ca, "elsewhere", &["idp.example.com"]);
    let key = DevKey::generate().expect("a signing key");
    let server = HttpsJwks::start(&elsewhere, jwks("k1", &key)).await;

    let refused = authenticator(&server.url, &ca.cert)
        .verify(&token(&key, "k1"), Audience::Partner)
        .await;

    assert!(
        matches!(&refused, Err(AuthError::KeysUnavailable(reason)) if reason.contains("not valid for name")),
        "{refused:?}"
    );
    assert_eq!(server.fetches(), 0, "no request went past the handshake");
}

#[test]
fn a_jwks_ca_file_without_a_jwks_url_is_a_flag_error() {
    let parsed = Flags::try_parse_from(["corebank", "--jwks-ca-file", "/etc/idp-ca.pem"]);

    assert!(parsed.is_err());
}

#[test]
fn an_unreadable_jwks_ca_file_is_named_at_start() {
    let error = Flags::try_parse_from([
        "corebank",
        "--jwks-url",
        "https://idp.example.com/certs",
        "--jwks-ca-file",
        "/nonexistent/idp-ca.pem",
    ])
    .expect("the flags parse")
    .auth
    .authenticator()
    .expect_err("refused");

    assert!(
        format!("{error:#}").contains("/nonexistent/idp-ca.pem"),
        "{error:#}"
    );
}
