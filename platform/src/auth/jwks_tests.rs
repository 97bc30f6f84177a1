//! The JWKS cache against a tiny local HTTP server that counts its fetches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serves `keys` (a JWKS document, changeable) and counts requests.
struct JwksServer {
    url: String,
    document: Arc<std::sync::Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/realms/test/certs",
            listener.local_addr().unwrap()
        );
        let document = Arc::new(std::sync::Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        let Ok(read) = stream.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..read]);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    // A slow provider, so concurrent callers overlap.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            document,
            fetches,
        }
    }

    fn serve(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn jwk(kid: &str, key: &DevKey) -> serde_json::Value {
    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.verifying_key().as_bytes(),
    );
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
}

fn jwks(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn token(key: &DevKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let claims = TokenSpec::new("partner-a", "customers:read", Audience::Partner).claims();
    jsonwebtoken::encode(&header, &claims, &encoding(key)).unwrap()
}

fn encoding(key: &DevKey) -> jsonwebtoken::EncodingKey {
    key.encoding_key().clone()
}

fn authenticator(url: &str, floor: Duration) -> Authenticator {
    Authenticator::new(KeySource::Jwks {
        url: url.to_owned(),
        floor,
        ca_file: None,
    })
    .unwrap()
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_the_floor_has_passed_and_concurrent_callers_share_one_fetch()
{
    let first = DevKey::generate().unwrap();
    let rotated = DevKey::generate().unwrap();
    let server = JwksServer::start(jwks(&[jwk("k1", &first)])).await;
    let floor = Duration::from_secs(2);
    let auth = Arc::new(authenticator(&server.url, floor));

    auth.verify(&token(&first, "k1"), Audience::Partner)
        .await
        .expect("k1 from the first fetch");
    auth.verify(&token(&first, "k1"), Audience::Partner)
        .await
        .expect("k1 from the cache");
    assert_eq!(server.fetches(), 1);

    // The provider rotates; within the floor an unknown kid fetches nothing.
    server.serve(jwks(&[jwk("k1", &first), jwk("k2", &rotated)]));
    let early = auth.verify(&token(&rotated, "k2"), Audience::Partner).await;
    assert!(matches!(early, Err(AuthError::UnknownKey)), "{early:?}");
    assert_eq!(server.fetches(), 1, "the floor holds");

    tokio::time::sleep(floor + Duration::from_millis(50)).await;
    let mut verifications = Vec::new();
    for _ in 0..20 {
        let auth = auth.clone();
        let token = token(&rotated, "k2");
        verifications.push(tokio::spawn(async move {
            auth.verify(&token, Audience::Partner).await
        }));
    }
    for verification in verifications {
        verification.await.unwrap().expect("k2 after one refetch");
    }
    assert_eq!(server.fetches(), 2, "twenty concurrent unknowns, one fetch");

    // Made-up kids right after cannot make it fetch again.
    for attempt in 0..5 {
        let made_up = auth
            .verify(
                &token(&rotated, &format!("nope-{attempt}")),
                Audience::Partner,
            )
            .await;
        assert!(matches!(made_up, Err(AuthError::UnknownKey)), "{made_up:?}");
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn symmetric_keys_in_a_jwks_are_ignored() {
    let key = DevKey::generate().unwrap();
    let secret = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        b"shared-secret-shared-secret-1234",
    );
    let oct = serde_json::json!({"kty": "oct", "k": secret, "kid": "h1", "alg": "HS256"});
    let server = JwksServer::start(jwks(&[oct, jwk("k1", &key)])).await;
    let auth = authenticator(&server.url, Duration::from_secs(30));
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("h1".to_owned());
        let claims = TokenSpec::new("partner-a", "customers:read", Audience::Partner).claims();
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"shared-secret-shared-secret-1234").unwrap(),
        )
        .unwrap()
    };
    let refused = auth.verify(&hs256, Audience::Partner).await;
    assert!(matches!(refused, Err(AuthError::UnknownKey)), "{refused:?}");
    auth.verify(&token(&key, "k1"), Audience::Partner)
        .await
        .expect("the Ed25519 key still verifies");
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable_not_unauthenticated() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    drop(listener);
    let key = DevKey::generate().unwrap();
    let result = authenticator(&url, Duration::from_secs(30))
        .verify(&token(&key, "k1"), Audience::Partner)
        .await;
    assert!(
        matches!(result, Err(AuthError::KeysUnavailable(_))),
        "{result:?}"
    );
}
