//! `--tls-self-signed`: a fresh certificate and key, made with rcgen at start.

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;

/// A self-signed certificate for `names` (a name that parses as an address becomes an IP
/// subject alternative name), valid from a day ago for a year, and its key (ECDSA P-256).
pub(super) fn make(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
    let bad =
        |e: rcgen::Error| Error::Config(format!("cannot make a self-signed certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(bad)?;
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    params.not_before = (now - day).into();
    params.not_after = (now + 365 * day).into();
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("socketkit", String::as_str),
    );
    params.distinguished_name = name;
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}
