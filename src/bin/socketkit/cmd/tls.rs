//! The TLS flags into the library's settings, with the checks that need every endpoint.

use socketkit::{Endpoint, Error};

#[cfg(feature = "tls")]
use crate::cli::{TlsClientArgs, TlsServerArgs};

/// TLS flags given for endpoints none of which is tls://: a mistake, said rather than ignored.
#[cfg(feature = "tls")]
fn unused(what: &str) -> anyhow::Error {
    Error::Config(format!(
        "{what} are for tls:// endpoints, and no endpoint is one"
    ))
    .into()
}

/// The server's TLS settings for `endpoints`, or `None` when none is tls://; with
/// `--tls-self-signed`, also the line that names the certificate and its fingerprint (logged
/// once the servers are bound).
#[cfg(feature = "tls")]
pub fn server(
    args: &TlsServerArgs,
    endpoints: &[&Endpoint],
) -> anyhow::Result<Option<(socketkit::tls::ServerTls, Option<String>)>> {
    use socketkit::tls::ServerTls;
    let tls: Vec<&Endpoint> = endpoints.iter().copied().filter(|e| e.is_tls()).collect();
    if tls.is_empty() {
        return match args.any() {
            true => Err(unused(
                "--tls-cert, --tls-key, --tls-self-signed and --tls-alpn",
            )),
            false => Ok(None),
        };
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok(Some((
            ServerTls::from_pem_files(cert, key, &args.tls_alpn)?,
            None,
        )));
    }
    if !args.tls_self_signed {
        return Err(Error::Config(format!(
            "{} needs a certificate: --tls-cert FILE --tls-key FILE, or --tls-self-signed",
            tls[0]
        ))
        .into());
    }
    let names = self_signed_names(&tls);
    let server = ServerTls::self_signed(&names, &args.tls_alpn)?;
    let line = format!(
        "TLS: a self-signed certificate for {}; SHA-256 fingerprint {}",
        names.join(", "),
        server.fingerprint()
    );
    Ok(Some((server, Some(line))))
}

/// The names a self-signed certificate carries: every tls:// host; an unspecified address
/// (0.0.0.0, [::]) stands for this machine's loopback names, as do loopback addresses.
#[cfg(feature = "tls")]
fn self_signed_names(endpoints: &[&Endpoint]) -> Vec<String> {
    use socketkit::Host;
    let mut names = Vec::new();
    for endpoint in endpoints {
        let Some((host, _)) = endpoint.host_port() else {
            continue;
        };
        let local = match host {
            Host::Ip(ip) => {
                if !ip.is_unspecified() {
                    names.push(ip.to_string());
                }
                ip.is_unspecified() || ip.is_loopback()
            }
            Host::Name(name) => {
                names.push(name.clone());
                name == "localhost"
            }
        };
        if local {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The client's TLS settings; refused when the endpoint is not tls://.
#[cfg(feature = "tls")]
pub fn client(
    args: &TlsClientArgs,
    endpoint: &Endpoint,
) -> anyhow::Result<socketkit::tls::ClientTlsOptions> {
    if !endpoint.is_tls() && args.any() {
        return Err(unused(
            "--tls-ca, --tls-servername, --tls-insecure and --tls-alpn",
        ));
    }
    let mut options = socketkit::tls::ClientTlsOptions::default();
    options.ca = args.tls_ca.clone();
    options.server_name = args.tls_servername.clone();
    options.insecure = args.tls_insecure;
    options.alpn = args.tls_alpn.clone();
    Ok(options)
}

/// Without the `tls` feature: the flags and tls:// are refused.
#[cfg(not(feature = "tls"))]
pub fn refuse(any_flag: bool, endpoints: &[&Endpoint]) -> anyhow::Result<()> {
    if any_flag || endpoints.iter().any(|e| e.is_tls()) {
        return Err(Error::Config(
            "TLS: this socketkit was built without the `tls` feature".into(),
        )
        .into());
    }
    Ok(())
}
