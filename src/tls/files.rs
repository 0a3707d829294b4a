//! Certificates, keys and roots from PEM files (rustls-pki-types' `PemObject`), and the system's
//! roots; every failure one line naming the file ([`Error::Config`], exit 2).

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

use crate::error::Error;

/// The PEM text of `path`, read once: the encrypted-key check needs the text, and a file that
/// cannot be read is named here rather than by a PEM parser.
fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

/// Every certificate of a PEM file, in order (the server's first, then its chain).
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = read(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| Error::Config(format!("bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "no certificate (BEGIN CERTIFICATE) in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). An encrypted key is refused by
/// name: rustls reads no passphrases.
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let text = read(path, "key")?;
    let encrypted = String::from_utf8_lossy(&text);
    if encrypted.contains("ENCRYPTED PRIVATE KEY") || encrypted.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::Config(format!(
            "the TLS key {} is encrypted: give it decrypted (openssl pkey -in FILE -out KEY)",
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::Config(format!(
            "no private key (BEGIN PRIVATE KEY) in {}",
            path.display()
        )),
        e => Error::Config(format!("bad PEM key in {}: {e}", path.display())),
    })
}

/// The roots of `--tls-ca FILE`: every certificate in it.
pub(super) fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "a certificate of {} cannot be a root: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The system's roots (rustls-native-certs: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or the
/// distribution's bundle). Certificates it cannot parse are skipped; none at all is an error.
pub(super) fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("reading the system's TLS roots: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    tracing::debug!("{added} system TLS roots ({skipped} skipped)");
    if roots.is_empty() {
        return Err(Error::Config(
            "no system TLS roots found (install ca-certificates, or give --tls-ca FILE)".into(),
        ));
    }
    Ok(roots)
}
