//! The server's side of `tls://` endpoints: which engines carry TLS, and what a server with
//! `tls://` endpoints must be given. Apart from `mod.rs` so the builder stays one concept.

use crate::endpoint::Endpoint;
use crate::engine::Engine;
use crate::error::Error;

/// The engines that carry TLS: the async engine alone. The thread engines would need the
/// handshake and the record layer in every one of their drivers (the pool's poller hands
/// connections between threads by readiness, which TLS's buffered records break), so they
/// refuse `tls://` rather than run it badly.
pub(super) fn engine_carries_tls(engine: Engine) -> bool {
    engine == Engine::Async
}

/// Refuses `tls://` endpoints without TLS settings or on an engine that cannot carry them,
/// and TLS settings without a `tls://` endpoint. `has_settings`: the builder was given them.
pub(super) fn check(
    endpoints: &[Endpoint],
    engine: Engine,
    has_settings: bool,
) -> Result<(), Error> {
    let tls = endpoints.iter().find(|e| e.is_tls());
    match tls {
        Some(endpoint) if !cfg!(feature = "tls") => Err(Error::Config(format!(
            "{endpoint}: this socketkit was built without the `tls` feature"
        ))),
        Some(endpoint) if !has_settings => Err(Error::Config(format!(
            "{endpoint} needs a certificate: --tls-cert FILE --tls-key FILE, or \
             --tls-self-signed"
        ))),
        Some(endpoint) if !engine_carries_tls(engine) => Err(Error::Config(format!(
            "{endpoint}: TLS runs on the async engine only, not {engine}"
        ))),
        None if has_settings => Err(Error::Config(
            "TLS settings (--tls-cert, --tls-key, --tls-self-signed) are for tls:// endpoints, \
             and no endpoint is one"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The endpoint as bound, `tls://` again where it was asked for (the listener is TCP).
pub(super) fn as_bound(asked: &Endpoint, bound: Endpoint) -> Endpoint {
    match (asked.is_tls(), bound.socket_addrs()) {
        (true, Ok(addrs)) if addrs.len() == 1 => Endpoint::tls(addrs[0]),
        _ => bound,
    }
}

/// The bound addresses of the `tls://` endpoints among `bound`.
#[cfg(feature = "tls")]
pub(super) fn addresses(bound: &[Endpoint]) -> Vec<std::net::SocketAddr> {
    bound
        .iter()
        .filter(|e| e.is_tls())
        .filter_map(|e| e.socket_addrs().ok()?.first().copied())
        .collect()
}
