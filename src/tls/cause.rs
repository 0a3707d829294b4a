//! Why a handshake failed, in one phrase that starts with its class (`unknown issuer`, `name
//! mismatch`, `expired`, `protocol`, ...), and the verifier of `--tls-insecure`.

use std::io;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::{
    self, AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme,
};

/// One phrase naming why a handshake failed (its first words are the class: `unknown
/// issuer`, `name mismatch`, `expired`, `not yet valid`, `bad certificate`, `refused by the
/// peer`, `protocol`, `reset`, `timed out`).
///
/// ```
/// use std::io;
/// let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
/// assert!(socketkit::tls::cause(&eof).starts_with("protocol:"));
/// ```
pub fn cause(e: &io::Error) -> String {
    if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return of_rustls(tls);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "protocol: the peer closed the connection during the handshake (does it speak TLS?)"
                .into()
        }
        io::ErrorKind::ConnectionReset => {
            "reset: the peer reset the connection during the handshake".into()
        }
        io::ErrorKind::TimedOut => format!("timed out: {e}"),
        _ => format!("{e}"),
    }
}

fn of_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(cert) => of_certificate(cert),
        E::AlertReceived(alert) => of_alert(*alert),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            format!("protocol: the peer does not speak TLS (plain text?): {e}")
        }
        E::NoApplicationProtocol => "protocol: no ALPN protocol in common (--tls-alpn)".into(),
        E::PeerIncompatible(why) => format!("protocol: nothing in common with the peer ({why:?})"),
        E::PeerMisbehaved(why) => format!("protocol: the peer misbehaved ({why:?})"),
        e => format!("protocol: {e}"),
    }
}

fn of_certificate(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => "unknown issuer: the certificate is not signed by a trusted CA \
                             (--tls-ca FILE trusts another)"
            .into(),
        C::NotValidForName => "name mismatch: the certificate is not for this name \
                               (--tls-servername NAME checks another)"
            .into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "name mismatch: the certificate is not for {expected:?} (it names {})",
            presented.join(", ")
        ),
        C::Expired | C::ExpiredContext { .. } => {
            format!("expired: the certificate has expired ({e})")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("not yet valid: the certificate is not valid yet ({e})")
        }
        // webpki's error, behind rustls' `Other` (rustls does not name it): the certificate
        // `openssl req -x509` makes by default, whose CA:TRUE webpki refuses for a server's.
        C::Other(other) if other.to_string() == "CaUsedAsEndEntity" => {
            "bad certificate: the server's certificate is a CA's (basicConstraints CA:TRUE, as \
             openssl req -x509 makes it), which is never taken for a server's own: serve one \
             signed by that CA, or make it with -addext basicConstraints=critical,CA:FALSE"
                .into()
        }
        e => format!("bad certificate: {e}"),
    }
}

fn of_alert(alert: AlertDescription) -> String {
    let why = match alert {
        AlertDescription::UnknownCA => "unknown issuer: the peer does not trust our certificate",
        AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => {
            "bad certificate: the peer refused our certificate"
        }
        AlertDescription::CertificateExpired => "expired: the peer says our certificate expired",
        AlertDescription::NoApplicationProtocol => {
            "protocol: the peer has no ALPN protocol in common with ours"
        }
        AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => {
            "protocol: no TLS version or cipher suite in common with the peer"
        }
        _ => "refused by the peer",
    };
    format!("{why} (alert {alert:?})")
}

/// `--tls-insecure`: every certificate passes, for any name; signatures are still checked,
/// so the peer must at least hold the key of the certificate it shows.
#[derive(Debug)]
pub(super) struct NoVerification(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e) // as tokio-rustls reports it
    }

    #[test]
    fn each_failure_is_named_by_its_class_first() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown issuer:",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "name mismatch:",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "expired:",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
                "not yet valid:",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                "bad certificate:",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                "unknown issuer:",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
                "protocol:",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "protocol: the peer does not speak TLS",
            ),
            (rustls::Error::NoApplicationProtocol, "protocol: no ALPN"),
        ];
        for (error, class) in cases {
            let text = cause(&wrapped(error));
            assert!(
                text.starts_with(class),
                "{text:?} should start with {class:?}"
            );
            assert!(!text.contains('\n'), "one line: {text:?}");
        }
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(cause(&reset).starts_with("reset:"));
    }
}
