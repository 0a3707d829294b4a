//! Every built-in service by name, with its RFC and well-known port (`socketkit services`).

use super::{AnyService, Chargen, Daytime, Discard, Echo, Qotd, Time, Upper};

/// A built-in service's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The name to select it with (`socketkit serve NAME`).
    pub name: &'static str,
    /// The RFC that defines it, if any.
    pub rfc: Option<u16>,
    /// Its well-known port (TCP and UDP), if any. Binding it needs privileges.
    pub port: Option<u16>,
    /// One line on what it does.
    pub summary: &'static str,
}

/// The built-in services, in `socketkit services` order.
pub const SERVICES: &[ServiceInfo] = &[
    ServiceInfo {
        name: "upper",
        rfc: None,
        port: None,
        summary: "replies with the request in upper case (the slides' service, port 12000)",
    },
    ServiceInfo {
        name: "echo",
        rfc: Some(862),
        port: Some(7),
        summary: "replies with the request",
    },
    ServiceInfo {
        name: "discard",
        rfc: Some(863),
        port: Some(9),
        summary: "throws everything away, never replies",
    },
    ServiceInfo {
        name: "chargen",
        rfc: Some(864),
        port: Some(19),
        summary: "streams rotating 72-character lines; one line per datagram",
    },
    ServiceInfo {
        name: "qotd",
        rfc: Some(865),
        port: Some(17),
        summary: "sends a short quote, then closes",
    },
    ServiceInfo {
        name: "daytime",
        rfc: Some(867),
        port: Some(13),
        summary: "sends the date and time as text (UTC), then closes",
    },
    ServiceInfo {
        name: "time",
        rfc: Some(868),
        port: Some(37),
        summary: "sends seconds since 1900 as 32-bit big-endian, then closes",
    },
];

/// Whether `port` is the well-known port of a built-in service. socketkit never answers a
/// datagram that comes from one (inetd's rule): a spoofed datagram from echo's port to
/// chargen's would otherwise set two servers answering each other forever.
///
/// ```
/// assert!(socketkit::service::is_service_port(19));
/// assert!(!socketkit::service::is_service_port(12000));
/// ```
pub fn is_service_port(port: u16) -> bool {
    // Every datagram a listener receives is checked: most ports are past the highest at once.
    port <= HIGHEST_SERVICE_PORT && SERVICES.iter().any(|s| s.port == Some(port))
}

/// The highest well-known port among [`SERVICES`].
const HIGHEST_SERVICE_PORT: u16 = {
    let (mut i, mut highest) = (0, 0);
    while i < SERVICES.len() {
        if let Some(port) = SERVICES[i].port
            && port > highest
        {
            highest = port;
        }
        i += 1;
    }
    highest
};

/// The facts about a built-in service.
pub fn info(name: &str) -> Option<&'static ServiceInfo> {
    SERVICES.iter().find(|s| s.name == name)
}

/// A built-in service by name, ready for [`crate::ServerBuilder::service`].
///
/// ```
/// let echo = socketkit::service::by_name("echo").expect("a built-in");
/// let server = socketkit::Server::builder()
///     .listen("tcp://127.0.0.1:0".parse()?)
///     .service(echo)
///     .bind()?;
/// assert_eq!(server.service_name(), "echo");
/// # Ok::<(), socketkit::Error>(())
/// ```
pub fn by_name(name: &str) -> Option<AnyService> {
    Some(match name {
        "upper" => AnyService::new(Upper),
        "echo" => AnyService::new(Echo),
        "discard" => AnyService::new(Discard),
        "chargen" => AnyService::new(Chargen::default()),
        "qotd" => AnyService::new(Qotd),
        "daytime" => AnyService::new(Daytime),
        "time" => AnyService::new(Time),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quick_port_check_agrees_with_the_list_on_every_port() {
        for port in 0..=u16::MAX {
            let listed = super::SERVICES.iter().any(|s| s.port == Some(port));
            assert_eq!(super::is_service_port(port), listed, "port {port}");
        }
    }

    #[test]
    fn every_listed_service_exists_under_its_name() {
        for info in super::SERVICES {
            let service = super::by_name(info.name).unwrap();
            assert_eq!(crate::service::Service::name(&service), info.name);
        }
        assert!(super::by_name("nope").is_none());
    }
}
