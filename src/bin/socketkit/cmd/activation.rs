//! `serve` under systemd: which service each passed socket goes to, and the readiness
//! messages. A passed socket whose name (`FileDescriptorName=` in the `.socket` unit) is a
//! service's (`upper`, `echo`, ...) goes to that service; the others go to the service named
//! without endpoints (`upper` by default). Passed sockets replace the default endpoints; `-l`
//! adds more.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use socketkit::Endpoint;

/// Which service listens where (serve's plan).
type Plan = Vec<(String, Vec<Endpoint>)>;

/// A socket passed by the service manager: its name and the socket.
pub struct Passed {
    name: Option<String>,
    socket: OwnedFd,
}

/// The sockets passed to this process, checked (see `socketkit::activation`).
#[cfg(feature = "systemd")]
pub fn passed() -> anyhow::Result<Vec<Passed>> {
    let passed = socketkit::activation::passed_sockets()?;
    for socket in &passed {
        tracing::debug!(
            "socket activation: descriptor {} named {:?}",
            socket.fd,
            socket.name
        );
    }
    Ok(passed
        .into_iter()
        .map(|p| Passed {
            name: p.name,
            socket: p.socket,
        })
        .collect())
}

/// Without the `systemd` feature, passed sockets are refused rather than ignored.
#[cfg(not(feature = "systemd"))]
pub fn passed() -> anyhow::Result<Vec<Passed>> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        anyhow::bail!(socketkit::Error::Config(
            "socket activation (LISTEN_FDS) needs socketkit built with the `systemd` feature"
                .into()
        ));
    }
    Ok(Vec::new())
}

/// Gives each passed socket its service (adding to the plan a service named only by a
/// socket), and drops from the plan a service left with nothing to listen on. `default` is
/// the service for sockets without a service's name.
pub fn assign(
    mut plan: Plan,
    passed: Vec<Passed>,
    default: &str,
) -> anyhow::Result<(Plan, HashMap<String, Vec<OwnedFd>>)> {
    if passed.is_empty() {
        return Ok((plan, HashMap::new()));
    }
    let mut adopted: HashMap<String, Vec<OwnedFd>> = HashMap::new();
    for socket in passed {
        let service = socket
            .name
            .filter(|name| socketkit::service::by_name(name).is_some())
            .unwrap_or_else(|| default.to_string());
        if !plan.iter().any(|(name, _)| *name == service) {
            plan.push((service.clone(), Vec::new()));
        }
        adopted.entry(service).or_default().push(socket.socket);
    }
    plan.retain(|(name, endpoints)| !endpoints.is_empty() || adopted.contains_key(name));
    Ok((plan, adopted))
}

/// `READY=1` to the service manager, if there is one listening.
pub fn ready() {
    #[cfg(feature = "systemd")]
    socketkit::activation::notify_ready();
}

/// `STOPPING=1` to the service manager, if there is one listening.
pub fn stopping() {
    #[cfg(feature = "systemd")]
    socketkit::activation::notify_stopping();
}
