//! The verifier against the attacks the issue lists, and key pinning.
//! The PEM files in `testdata/` are throwaway keys made for these tests.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

const EC_PRIVATE: &str = include_str!("testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("testdata/ec-public.pem");
const RSA_PRIVATE: &str = include_str!("testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("testdata/rsa-public.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(audience: &str) -> Claims {
    Claims {
        sub: "partner-a".to_owned(),
        iss: DEFAULT_ISSUER.to_owned(),
        aud: audience.to_owned(),
        exp: now() + 600,
        nbf: Some(now()),
        iat: Some(now()),
        scope: "customers:read".to_owned(),
    }
}

fn partner_claims() -> Claims {
    claims(DEFAULT_PARTNER_AUDIENCE)
}

fn refused(result: Result<Principal, AuthError>) -> AuthError {
    result.expect_err("the token is refused")
}

#[tokio::test]
async fn a_valid_token_gives_its_principal() {
    let key = DevKey::generate().unwrap();
    let auth = key.authenticator();
    let token = key.sign(&partner_claims()).unwrap();
    let principal = auth.verify(&token, Audience::Partner).await.unwrap();
    assert_eq!(principal.subject, "partner-a");
    assert_eq!(principal.kind, PrincipalKind::Partner);
    assert_eq!(principal.tenant(), Some("partner-a"));
    assert!(principal.has_scope("customers:read"));

    let service = key
        .issue(&TokenSpec::new(
            "service:account",
            "service",
            Audience::Internal,
        ))
        .unwrap();
    let principal = auth.verify(&service, Audience::Internal).await.unwrap();
    assert_eq!(principal.kind, PrincipalKind::Service);
}

#[tokio::test]
async fn an_expired_token_is_refused_but_skew_within_the_leeway_is_not() {
    let key = DevKey::generate().unwrap();
    let auth = key.authenticator();
    let mut expired = partner_claims();
    expired.exp = now() - 120;
    let error = refused(
        auth.verify(&key.sign(&expired).unwrap(), Audience::Partner)
            .await,
    );
    assert!(matches!(error, AuthError::Invalid("expired")), "{error:?}");

    let mut skewed = partner_claims();
    skewed.exp = now() - 10;
    auth.verify(&key.sign(&skewed).unwrap(), Audience::Partner)
        .await
        .expect("10 s of skew is tolerated");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let key = DevKey::generate().unwrap();
    let mut early = partner_claims();
    early.nbf = Some(now() + 120);
    let error = refused(
        key.authenticator()
            .verify(&key.sign(&early).unwrap(), Audience::Partner)
            .await,
    );
    assert!(
        matches!(error, AuthError::Invalid("not yet valid")),
        "{error:?}"
    );
}

#[tokio::test]
async fn wrong_issuer_and_wrong_audience_are_refused() {
    let key = DevKey::generate().unwrap();
    let auth = key.authenticator();
    let mut other_issuer = partner_claims();
    other_issuer.iss = "someone-else".to_owned();
    let error = refused(
        auth.verify(&key.sign(&other_issuer).unwrap(), Audience::Partner)
            .await,
    );
    assert!(
        matches!(error, AuthError::Invalid("wrong issuer")),
        "{error:?}"
    );

    // A partner token presented where internal tokens are expected.
    let partner = key.sign(&partner_claims()).unwrap();
    let error = refused(auth.verify(&partner, Audience::Internal).await);
    assert!(
        matches!(error, AuthError::Invalid("wrong audience")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_token_without_exp_or_aud_is_refused() {
    let key = DevKey::generate().unwrap();
    for claims in [
        serde_json::json!({"sub": "p", "iss": DEFAULT_ISSUER, "aud": DEFAULT_PARTNER_AUDIENCE}),
        serde_json::json!({"sub": "p", "iss": DEFAULT_ISSUER, "exp": now() + 600}),
    ] {
        let token = key.sign(&claims).unwrap();
        refused(key.authenticator().verify(&token, Audience::Partner).await);
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let key = DevKey::generate().unwrap();
    let other = DevKey::generate().unwrap();
    let token = other.sign(&partner_claims()).unwrap();
    let error = refused(key.authenticator().verify(&token, Audience::Partner).await);
    assert!(
        matches!(error, AuthError::Invalid("bad signature")),
        "{error:?}"
    );

    // A valid signature over other claims, with the payload swapped.
    let good = key.sign(&partner_claims()).unwrap();
    let mut forged_claims = partner_claims();
    forged_claims.scope = "kyc:write".to_owned();
    let forged = other.sign(&forged_claims).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    refused(
        key.authenticator()
            .verify(&spliced, Audience::Partner)
            .await,
    );
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = DevKey::generate().unwrap();
    let payload = serde_json::to_vec(&partner_claims()).unwrap();
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        for signature in ["", "AAAA"] {
            let token = format!("{}.{}.{signature}", b64(header.as_bytes()), b64(&payload));
            refused(key.authenticator().verify(&token, Audience::Partner).await);
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let key = DevKey::generate().unwrap();
    let raw = key.verifying_key().to_bytes();
    let ec_auth = Authenticator::new(KeySource::Pem(EC_PUBLIC.to_owned())).unwrap();
    for (auth, secret) in [
        (key.authenticator(), raw.to_vec()),
        (ec_auth, EC_PUBLIC.as_bytes().to_vec()),
    ] {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &partner_claims(),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        let error = refused(auth.verify(&token, Audience::Partner).await);
        assert!(matches!(error, AuthError::Algorithm), "{error:?}");
    }
}

#[tokio::test]
async fn es256_and_rs256_keys_verify_their_own_algorithm_only() {
    let ec = Authenticator::new(KeySource::Pem(EC_PUBLIC.to_owned())).unwrap();
    let rsa = Authenticator::new(KeySource::Pem(RSA_PUBLIC.to_owned())).unwrap();
    let es256 = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &partner_claims(),
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &partner_claims(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let ps256 = jsonwebtoken::encode(
        &Header::new(Algorithm::PS256),
        &partner_claims(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    ec.verify(&es256, Audience::Partner)
        .await
        .expect("ES256 on a P-256 key");
    rsa.verify(&rs256, Audience::Partner)
        .await
        .expect("RS256 on an RSA key");
    assert!(matches!(
        refused(ec.verify(&rs256, Audience::Partner).await),
        AuthError::Algorithm
    ));
    assert!(matches!(
        refused(rsa.verify(&es256, Audience::Partner).await),
        AuthError::Algorithm
    ));
    // Another algorithm of the same key family is refused too.
    assert!(matches!(
        refused(rsa.verify(&ps256, Audience::Partner).await),
        AuthError::Algorithm
    ));
}

#[tokio::test]
async fn a_signed_credential_is_renewed_before_it_expires() {
    let key = DevKey::generate().unwrap();
    let spec = TokenSpec::new("service:test", "service", Audience::Internal)
        .with_ttl(Duration::from_secs(2));
    let credentials = Credentials::signed(key.clone(), spec);
    let first = credentials.authorization().unwrap().unwrap();
    assert_eq!(credentials.authorization().unwrap().unwrap(), first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = credentials.authorization().unwrap().unwrap();
    assert_ne!(renewed, first);
    let token = renewed.to_str().unwrap().strip_prefix("Bearer ").unwrap();
    key.authenticator()
        .verify(token, Audience::Internal)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_verified_token_is_remembered_but_only_its_exact_bytes_for_its_audience() {
    let key = DevKey::generate().unwrap();
    let auth = key.authenticator();
    let token = key.sign(&partner_claims()).unwrap();
    auth.verify(&token, Audience::Partner).await.unwrap();
    assert_eq!(auth.cached_tokens(), 1);
    let again = auth.verify(&token, Audience::Partner).await.unwrap();
    assert_eq!(again.subject, "partner-a");
    assert_eq!(auth.cached_tokens(), 1, "the second check hit the cache");

    // Another signature over the same claims is not the cached token.
    let (body, signature) = token.rsplit_once('.').unwrap();
    let mut forged = signature.as_bytes().to_vec();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{body}.{}", String::from_utf8(forged).unwrap());
    let error = refused(auth.verify(&forged, Audience::Partner).await);
    assert!(matches!(error, AuthError::Invalid(_)), "{error:?}");

    // Verified as a partner token, it is still refused on an internal port.
    let error = refused(auth.verify(&token, Audience::Internal).await);
    assert!(
        matches!(error, AuthError::Invalid("wrong audience")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_cached_token_is_not_honoured_past_its_expiry() {
    let key = DevKey::generate().unwrap();
    let auth = key.authenticator();
    let mut short = partner_claims();
    // Whole seconds: `now() + 2` is at least one second away, so the first
    // check cannot fall past it, and 3.1 s later it has passed.
    short.exp = now() + 2;
    let token = key.sign(&short).unwrap();
    auth.verify(&token, Audience::Partner).await.unwrap();
    assert!(auth.verified_principal(&token, Audience::Partner).is_some());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Past `exp` the cache no longer answers; the verifier does, and it
    // still accepts the token within the leeway, so check the cache itself.
    assert!(auth.verified_principal(&token, Audience::Partner).is_none());
}
