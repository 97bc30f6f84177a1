//! A throwaway PKI for the TLS tests: certificate authorities, server and
//! client certificates made with rcgen at test time and written as PEM
//! files, because the flags under test take file paths.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A directory of PEM files, removed when dropped.
pub struct Pki {
    dir: TempDir,
}

/// A certificate authority that signs [`Leaf`]s.
pub struct Ca {
    certificate: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate, for `--tls-ca`, `--tls-client-ca`, `--jwks-ca-file`.
    pub cert: PathBuf,
}

/// A server or client certificate and its key, as files and as PEM text.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A path inside the directory, for files a test writes itself.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A self-signed CA named `name`.
    pub fn ca(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).expect("a self-signed CA");
        let cert = write(self.dir.path(), &format!("{name}.pem"), &certificate.pem());
        Ca {
            certificate,
            key,
            cert,
        }
    }

    /// A server certificate for `hosts` (DNS names or IP addresses), signed by `ca`.
    pub fn server(&self, ca: &Ca, name: &str, hosts: &[&str]) -> Leaf {
        let hosts: Vec<String> = hosts.iter().map(|host| (*host).to_owned()).collect();
        self.leaf(ca, name, hosts, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `name`, signed by `ca`.
    pub fn client(&self, ca: &Ca, name: &str) -> Leaf {
        self.leaf(ca, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(
        &self,
        ca: &Ca,
        name: &str,
        hosts: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(hosts).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let certificate = params
            .signed_by(&key, &ca.certificate, &ca.key)
            .expect("a leaf signed by the CA");
        let (cert_pem, key_pem) = (certificate.pem(), key.serialize_pem());
        Leaf {
            cert: write(self.dir.path(), &format!("{name}.pem"), &cert_pem),
            key: write(self.dir.path(), &format!("{name}.key"), &key_pem),
            cert_pem,
            key_pem,
        }
    }
}

fn write(dir: &Path, file: &str, pem: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, pem).expect("writing a PEM file");
    path
}
