//! The export signing key: Ed25519, stored as PKCS#8 (private) and SPKI
//! (public) PEM so openssl and other tools read the same files, and named
//! by a short key id so a manifest says which key signed it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore as _;

use super::sha256;

/// Why a key could not be made, read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system gave no randomness: {0}")]
    Randomness(String),
    #[error("not a PKCS#8 PEM Ed25519 private key: {0}")]
    PrivateKey(String),
    #[error("not an SPKI PEM Ed25519 public key: {0}")]
    PublicKey(String),
    #[error("manifest.sig is not a base64 Ed25519 signature followed by a newline")]
    SignatureFormat,
    #[error("the signature does not verify")]
    BadSignature,
}

/// A fresh key from the operating system's randomness.
pub fn generate_signing_key() -> Result<SigningKey, KeyError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(secret.as_mut())
        .map_err(|error| KeyError::Randomness(error.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), in the
/// v1 form without the public key: OpenSSL 3.0 refuses the v2 form that
/// ed25519-dalek writes by default, and the public key is derived anyway.
pub fn signing_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    let keypair = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    keypair
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| KeyError::PrivateKey(error.to_string()))
}

/// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|error| KeyError::PublicKey(error.to_string()))
}

/// Reads a PKCS#8 PEM private key.
pub fn parse_signing_key_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|error| KeyError::PrivateKey(error.to_string()))
}

/// Reads an SPKI PEM public key.
pub fn parse_public_key_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|error| KeyError::PublicKey(error.to_string()))
}

/// The first 16 hex digits of SHA-256 over the raw 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&sha256(key.as_bytes())[..8])
}

/// The `manifest.sig` file for `manifest`: padded standard base64 of the
/// 64-byte signature, then a newline.
pub fn sign_manifest(key: &SigningKey, manifest: &[u8]) -> Vec<u8> {
    let signature: Signature = key.sign(manifest);
    let mut file = STANDARD.encode(signature.to_bytes()).into_bytes();
    file.push(b'\n');
    file
}

/// Reads a `manifest.sig` file (or its text without the newline).
pub(crate) fn parse_signature(file: &[u8]) -> Result<Signature, KeyError> {
    let text = file.strip_suffix(b"\n").unwrap_or(file);
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| KeyError::SignatureFormat)?;
    let raw: [u8; 64] = bytes.try_into().map_err(|_| KeyError::SignatureFormat)?;
    let signature = Signature::from_bytes(&raw);
    let canonical = sign_file_text(&signature);
    if canonical.as_bytes() != text {
        return Err(KeyError::SignatureFormat);
    }
    Ok(signature)
}

fn sign_file_text(signature: &Signature) -> String {
    STANDARD.encode(signature.to_bytes())
}

/// Whether `signature_file` (a `manifest.sig`) is `key`'s signature over
/// exactly `manifest`. Strict verification: no malleable signatures.
pub fn verify_manifest_signature(
    key: &VerifyingKey,
    manifest: &[u8],
    signature_file: &[u8],
) -> Result<(), KeyError> {
    let signature = parse_signature(signature_file)?;
    key.verify_strict(manifest, &signature)
        .map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_survives_its_pem_files() {
        let key = generate_signing_key().unwrap();
        let private = signing_key_pem(&key).unwrap();
        let public = public_key_pem(&key.verifying_key()).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            parse_signing_key_pem(&private).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(parse_public_key_pem(&public).unwrap(), key.verifying_key());
        assert_eq!(key_id(&key.verifying_key()).len(), 16);
    }

    #[test]
    fn a_signature_verifies_over_its_bytes_only() {
        let key = generate_signing_key().unwrap();
        let signature = sign_manifest(&key, b"manifest");
        assert!(signature.ends_with(b"\n"));
        verify_manifest_signature(&key.verifying_key(), b"manifest", &signature).unwrap();
        assert_eq!(
            verify_manifest_signature(&key.verifying_key(), b"manifest!", &signature),
            Err(KeyError::BadSignature)
        );
        let other = generate_signing_key().unwrap();
        assert_eq!(
            verify_manifest_signature(&other.verifying_key(), b"manifest", &signature),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            verify_manifest_signature(&key.verifying_key(), b"manifest", b"not base64\n"),
            Err(KeyError::SignatureFormat)
        );
    }

    #[test]
    fn a_public_key_file_from_openssl_reads() {
        // The example public key of RFC 8410 §10.1.
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        parse_public_key_pem(pem).unwrap();
    }
}
