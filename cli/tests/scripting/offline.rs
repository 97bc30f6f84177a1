//! The commands that need no corebank: a key pair made (and not made
//! twice) and a token issued.

use std::path::Path;

use crate::cli::{BAD_INPUT, Cli, text};

/// The export signing key pair `keygen` made: the private key the running
/// corebank signs exports with, the public key a reader verifies them with.
pub struct ExportKey {
    pub private: String,
    pub public: String,
}

/// Makes the export key pair in `scratch`; a second `keygen` to the same
/// place is bad input.
pub async fn keygen(offline: &Cli, scratch: &Path) -> ExportKey {
    let keygen = offline
        .json(&[
            "keygen",
            "--out-dir",
            &scratch.display().to_string(),
            "--name",
            "export",
            "--json",
        ])
        .await;
    let export_key = text(&keygen, "private_key");
    let export_public_key = text(&keygen, "public_key");
    assert!(Path::new(&export_public_key).exists(), "{keygen}");
    let again = offline
        .run(&[
            "keygen",
            "--out-dir",
            &scratch.display().to_string(),
            "--name",
            "export",
        ])
        .await;
    assert_eq!(
        again.code(),
        Some(BAD_INPUT),
        "a key that exists is refused as bad input: {}",
        again.explain()
    );
    ExportKey {
        private: export_key,
        public: export_public_key,
    }
}

/// A token issued offline is a JWT: three dot-separated parts.
pub async fn token(offline: &Cli) {
    let token = offline
        .json(&["token", "issue", "--sub", "partner-1", "--json"])
        .await;
    assert_eq!(text(&token, "token").split('.').count(), 3, "{token}");
}
