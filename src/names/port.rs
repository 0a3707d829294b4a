//! Well-known ports: `getservbyname` and `getservbyport` over the system's services database,
//! with a built-in table of the classic ones for machines that have none.
//!
//! The system database (`/etc/services`, through nsswitch's `services:` line) is what Python's
//! `socket.getservbyname` reads, so the answers agree. Minimal containers often lack it (Debian's
//! `netbase` package provides it); then [`WELL_KNOWN_PORTS`], the classic assignments of
//! RFC 1700 and their later IANA peers, answers instead, and says so in [`ServiceEntry::source`].

use std::ffi::CString;
use std::fmt;

use super::sys;
use crate::Error;

/// The transport a service port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
}

impl Protocol {
    /// The name the services database uses: `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Protocol::Tcp => c"tcp",
            Protocol::Udp => c"udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The system's services database (`/etc/services`), as Python reads it.
    System,
    /// socketkit's built-in table, [`WELL_KNOWN_PORTS`]: the system database had no answer.
    BuiltIn,
}

impl Source {
    /// `system` or `builtin`, as `socketkit port --json` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Source::System => "system",
            Source::BuiltIn => "builtin",
        }
    }
}

/// One service: a line of `/etc/services` for one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The official name (`http`).
    pub name: String,
    /// Other names (`www`).
    pub aliases: Vec<String>,
    /// The port number.
    pub port: u16,
    /// The protocol that was asked for.
    pub protocol: Protocol,
    /// The system database or the built-in table.
    pub source: Source,
}

/// A classic well-known port, as the built-in table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WellKnownPort {
    /// The name Debian's `/etc/services` uses (RFC 1700's where Debian has none).
    pub name: &'static str,
    /// Other names, RFC 1700's among them (`www-http` for `http`).
    pub aliases: &'static [&'static str],
    /// The port number.
    pub port: u16,
    /// The protocols the port is assigned for.
    pub protocols: &'static [Protocol],
}

const TCP: &[Protocol] = &[Protocol::Tcp];
const UDP: &[Protocol] = &[Protocol::Udp];
const BOTH: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];

const fn port(
    name: &'static str,
    aliases: &'static [&'static str],
    port: u16,
    protocols: &'static [Protocol],
) -> WellKnownPort {
    WellKnownPort {
        name,
        aliases,
        port,
        protocols,
    }
}

/// The built-in table: the classic well-known ports (RFC 1700, 1994) and the few assigned since
/// that every socket programmer meets (ssh, https, imaps, ...). Names follow Debian's
/// `/etc/services`, so an answer reads the same with or without it. The simple services of
/// RFCs 862-868 (echo to time) are listed for TCP and UDP, as their RFCs define both.
pub const WELL_KNOWN_PORTS: &[WellKnownPort] = &[
    port("tcpmux", &[], 1, TCP),
    port("echo", &[], 7, BOTH),
    port("discard", &["sink", "null"], 9, BOTH),
    port("systat", &["users"], 11, TCP),
    port("daytime", &[], 13, BOTH),
    port("netstat", &[], 15, TCP),
    port("qotd", &["quote"], 17, BOTH),
    port("chargen", &["ttytst", "source"], 19, BOTH),
    port("ftp-data", &[], 20, TCP),
    port("ftp", &[], 21, TCP),
    port("ssh", &[], 22, TCP),
    port("telnet", &[], 23, TCP),
    port("smtp", &["mail"], 25, TCP),
    port("time", &["timserver"], 37, BOTH),
    port("nameserver", &["name"], 42, BOTH),
    port("whois", &["nicname"], 43, TCP),
    port("domain", &[], 53, BOTH),
    port("bootps", &[], 67, UDP),
    port("bootpc", &[], 68, UDP),
    port("tftp", &[], 69, UDP),
    port("gopher", &[], 70, TCP),
    port("finger", &[], 79, TCP),
    port("http", &["www", "www-http"], 80, TCP),
    port("kerberos", &["kerberos5", "krb5", "kerberos-sec"], 88, BOTH),
    port("pop3", &["pop-3"], 110, TCP),
    port("sunrpc", &["portmapper"], 111, BOTH),
    port("auth", &["authentication", "tap", "ident"], 113, TCP),
    port("nntp", &["readnews", "untp"], 119, TCP),
    port("ntp", &[], 123, UDP),
    port("netbios-ns", &[], 137, UDP),
    port("netbios-dgm", &[], 138, UDP),
    port("netbios-ssn", &[], 139, TCP),
    port("imap2", &["imap"], 143, TCP),
    port("snmp", &[], 161, BOTH),
    port("snmp-trap", &["snmptrap"], 162, BOTH),
    port("bgp", &[], 179, TCP),
    port("irc", &[], 194, BOTH),
    port("ldap", &[], 389, BOTH),
    port("https", &[], 443, BOTH),
    port("exec", &[], 512, TCP),
    port("biff", &["comsat"], 512, UDP),
    port("login", &[], 513, TCP),
    port("who", &["whod"], 513, UDP),
    port("shell", &["cmd"], 514, TCP),
    port("syslog", &[], 514, UDP),
    port("printer", &["spooler"], 515, TCP),
    port("talk", &[], 517, UDP),
    port("ntalk", &[], 518, UDP),
    port("route", &["router", "routed"], 520, UDP),
    port("uucp", &["uucpd"], 540, TCP),
    port("submission", &[], 587, TCP),
    port("ldaps", &[], 636, BOTH),
    port("imaps", &[], 993, TCP),
    port("pop3s", &[], 995, TCP),
];

impl WellKnownPort {
    fn entry(&self, protocol: Protocol) -> ServiceEntry {
        ServiceEntry {
            name: self.name.to_string(),
            aliases: self.aliases.iter().map(|a| a.to_string()).collect(),
            port: self.port,
            protocol,
            source: Source::BuiltIn,
        }
    }
}

/// The port of a service, by name or alias, like Python's `socket.getservbyname(name, proto)`.
///
/// Asks the system's services database; when it has no answer, the built-in
/// [`WELL_KNOWN_PORTS`]. Safe to call from any thread: the C calls are not reentrant, so they run
/// under a lock.
///
/// # Errors
///
/// [`Error::ServiceNotFound`] when neither knows the name for this protocol.
///
/// # Examples
///
/// ```
/// use socketkit::names::{Protocol, service_by_name};
///
/// assert_eq!(service_by_name("http", Protocol::Tcp)?.port, 80);
/// assert_eq!(service_by_name("domain", Protocol::Udp)?.port, 53);
/// assert!(service_by_name("no-such-service", Protocol::Tcp).is_err());
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "getservbyname")]
pub fn service_by_name(name: &str, protocol: Protocol) -> Result<ServiceEntry, Error> {
    let not_found = || Error::ServiceNotFound {
        service: name.to_string(),
        protocol: protocol.name(),
    };
    let c_name = CString::new(name).map_err(|_| not_found())?;
    if let Some(found) = sys::serv_by_name(&c_name, protocol.c_name()) {
        return Ok(ServiceEntry {
            name: found.name,
            aliases: found.aliases,
            port: found.port,
            protocol,
            source: Source::System,
        });
    }
    builtin_by_name(name, protocol)
        .map(|w| w.entry(protocol))
        .ok_or_else(not_found)
}

/// The service on a port, like Python's `socket.getservbyport(port, proto)`.
///
/// Asks the system's services database; when it has no answer, the built-in
/// [`WELL_KNOWN_PORTS`].
///
/// # Errors
///
/// [`Error::ServiceNotFound`] when neither knows the port for this protocol.
///
/// # Examples
///
/// ```
/// use socketkit::names::{Protocol, service_by_port};
///
/// assert_eq!(service_by_port(22, Protocol::Tcp)?.name, "ssh");
/// assert_eq!(service_by_port(53, Protocol::Udp)?.name, "domain");
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "getservbyport")]
pub fn service_by_port(port: u16, protocol: Protocol) -> Result<ServiceEntry, Error> {
    if let Some(found) = sys::serv_by_port(port, protocol.c_name()) {
        return Ok(ServiceEntry {
            name: found.name,
            aliases: found.aliases,
            port: found.port,
            protocol,
            source: Source::System,
        });
    }
    builtin_by_port(port, protocol)
        .map(|w| w.entry(protocol))
        .ok_or_else(|| Error::ServiceNotFound {
            service: port.to_string(),
            protocol: protocol.name(),
        })
}

fn builtin_by_name(name: &str, protocol: Protocol) -> Option<&'static WellKnownPort> {
    WELL_KNOWN_PORTS
        .iter()
        .find(|w| w.protocols.contains(&protocol) && (w.name == name || w.aliases.contains(&name)))
}

fn builtin_by_port(port: u16, protocol: Protocol) -> Option<&'static WellKnownPort> {
    WELL_KNOWN_PORTS
        .iter()
        .find(|w| w.port == port && w.protocols.contains(&protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_entry_per_port_and_protocol() {
        for (i, a) in WELL_KNOWN_PORTS.iter().enumerate() {
            for b in &WELL_KNOWN_PORTS[i + 1..] {
                let shared = a.protocols.iter().any(|p| b.protocols.contains(p));
                assert!(!(shared && a.port == b.port), "{a:?} and {b:?}");
                assert!(!(shared && a.name == b.name), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn the_table_answers_by_name_alias_and_port() {
        let by_name = |name, p| builtin_by_name(name, p).map(|w| w.port);
        assert_eq!(by_name("www-http", Protocol::Tcp), Some(80));
        assert_eq!(by_name("echo", Protocol::Udp), Some(7));
        assert_eq!(by_name("tftp", Protocol::Tcp), None);
        assert_eq!(builtin_by_port(514, Protocol::Udp).unwrap().name, "syslog");
        assert_eq!(builtin_by_port(514, Protocol::Tcp).unwrap().name, "shell");
    }

    #[test]
    fn unknown_services_are_not_found() {
        let err = service_by_name("socketkit-no-such-service", Protocol::Udp).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NameNotFound);
        assert_eq!(
            err.to_string(),
            "service not found: socketkit-no-such-service/udp"
        );
        assert!(service_by_name("a\0b", Protocol::Tcp).is_err());
        let err = service_by_port(0, Protocol::Tcp).unwrap_err();
        assert_eq!(err.to_string(), "service not found: 0/tcp");
    }
}
