//! Name look-ups through the system resolver: forward with canonical name and aliases, reverse,
//! `getfqdn`, and a time limit for any of them.
//!
//! Why these calls: Python's functions go through the C library's resolver (NSS), which reads
//! `/etc/hosts`, then DNS or whatever else nsswitch.conf lists (mDNS, sssd, systemd-resolved). A
//! pure-Rust DNS client such as hickory-resolver would skip all of that and answer differently
//! for `localhost` or any name in `/etc/hosts`. So addresses and the canonical name come from
//! `getaddrinfo` with `AI_CANONNAME` (the dns-lookup crate, a thin safe wrapper), and the alias
//! list, which only a `hostent` carries, from glibc's `gethostbyname_r` and `gethostbyaddr_r`
//! (our own FFI in `sys.rs`, as libc binds neither).

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::time::Duration;

use dns_lookup::{AddrInfoHints, LookupError, LookupErrorKind, SockType};

use super::sys::{self, Family, HOST_NOT_FOUND, HostError, NO_DATA, NO_RECOVERY, TRY_AGAIN};
use crate::Error;

/// What a host look-up found: Python's `(hostname, aliaslist, ipaddrlist)` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The official (canonical) name of the host.
    pub name: String,
    /// Other names of the host, from the same `/etc/hosts` line or DNS CNAME chain.
    pub aliases: Vec<String>,
    /// The host's addresses, in the resolver's order, without repeats.
    pub addresses: Vec<IpAddr>,
}

/// Looks a name up like `getaddrinfo` with `AI_CANONNAME`, plus `gethostbyname_ex`'s aliases:
/// the canonical name, the aliases and every address, IPv4 and IPv6.
///
/// The canonical name and the addresses (in `getaddrinfo`'s order, which follows the system's
/// address selection policy, `/etc/gai.conf`) are what Python's
/// `socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)` gives; the aliases are those of
/// `gethostbyname_ex(name)`, or of its IPv6 twin for a name that has only IPv6 addresses, and
/// empty when neither answers. Numeric text (`127.1`) comes back as itself. This call blocks for
/// as long as the resolver takes; bound it with [`with_timeout`].
///
/// # Errors
///
/// [`Error::NameNotFound`] when the name does not exist, [`Error::Resolve`] when the resolver
/// fails otherwise (no DNS server answered, for one), [`Error::BadAddress`] for a name with a
/// NUL byte.
///
/// # Examples
///
/// ```
/// use socketkit::names::lookup;
///
/// let host = lookup("localhost")?;
/// assert!(host.addresses.iter().all(|a| a.is_loopback()));
/// assert_eq!(lookup("127.1")?.addresses, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "getaddrinfo")]
pub fn lookup(name: &str) -> Result<HostEntry, Error> {
    let c_name = c_string(name)?;
    let hints = AddrInfoHints {
        flags: libc::AI_CANONNAME,
        socktype: SockType::Stream.into(), // one answer per address, not one per socket type
        ..AddrInfoHints::default()
    };
    let found =
        dns_lookup::getaddrinfo(Some(name), None, Some(hints)).map_err(|e| gai_error(name, e))?;
    let mut canonical = None;
    let mut addresses = Vec::new();
    for info in found {
        let info = info.map_err(|e| Error::Resolve {
            host: name.to_string(),
            reason: e.to_string(),
        })?;
        if canonical.is_none() {
            canonical = info.canonname.filter(|c| !c.is_empty());
        }
        let ip = info.sockaddr.ip();
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    if addresses.is_empty() {
        return Err(Error::NameNotFound {
            host: name.to_string(),
        });
    }
    let aliases = sys::host_by_name2(&c_name, Family::V4)
        .or_else(|_| sys::host_by_name2(&c_name, Family::V6))
        .map(|entry| entry.aliases)
        .unwrap_or_default();
    Ok(HostEntry {
        name: canonical.unwrap_or_else(|| name.to_string()),
        aliases,
        addresses,
    })
}

/// Python's `socket.gethostbyname_ex(name)`: the canonical name, the aliases and the IPv4
/// addresses, from `gethostbyname_r`. IPv4 only, as in Python; [`lookup`] gives every address.
///
/// # Errors
///
/// [`Error::NameNotFound`] when the resolver has no such host (`HOST_NOT_FOUND`, `NO_DATA`),
/// [`Error::Resolve`] when it fails otherwise (`TRY_AGAIN`: no DNS server answered), and
/// [`Error::BadAddress`] for a name with a NUL byte.
///
/// # Examples
///
/// ```
/// use socketkit::names::host_by_name;
///
/// let host = host_by_name("localhost")?;
/// assert!(host.addresses.contains(&"127.0.0.1".parse().unwrap()));
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "gethostbyname_ex")]
#[doc(alias = "gethostbyname")]
pub fn host_by_name(name: &str) -> Result<HostEntry, Error> {
    let c_name = c_string(name)?;
    sys::host_by_name(&c_name)
        .map(HostEntry::from)
        .map_err(|e| host_error(name, e))
}

/// Python's `socket.gethostbyaddr(address)`: the reverse look-up of an address, from
/// `gethostbyaddr_r` (so `/etc/hosts` first, then PTR records in DNS).
///
/// Python also accepts a host name here and looks up its first address; [`fqdn`] does that.
///
/// # Errors
///
/// [`Error::NameNotFound`] when no name is known for the address, [`Error::Resolve`] when the
/// resolver fails otherwise.
///
/// # Examples
///
/// ```
/// use std::net::Ipv4Addr;
/// use socketkit::names::host_by_addr;
///
/// let host = host_by_addr(Ipv4Addr::LOCALHOST.into())?;
/// assert!(!host.name.is_empty()); // "localhost" on most systems
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "gethostbyaddr")]
pub fn host_by_addr(address: IpAddr) -> Result<HostEntry, Error> {
    sys::host_by_addr(address)
        .map(HostEntry::from)
        .map_err(|e| host_error(&address.to_string(), e))
}

/// This host's name, as Python's `socket.gethostname()` gives it (`uname -n`).
///
/// # Errors
///
/// [`Error::Io`] if the system call fails, which it does not in practice.
///
/// ```
/// assert!(!socketkit::names::hostname()?.is_empty());
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "gethostname")]
pub fn hostname() -> Result<String, Error> {
    dns_lookup::get_hostname().map_err(|e| Error::io("cannot read the host name", e))
}

/// The fully qualified domain name of `name`, with Python's `socket.getfqdn` algorithm.
///
/// An empty name (or `0.0.0.0`, `::`) means this host: [`hostname`]. The name (or address) is
/// looked up in reverse as `gethostbyaddr` does (a name through its first address); the first
/// of the official name and the aliases that contains a dot is the answer, else the official
/// name. If the look-up fails, the name comes back as given: like Python, this never reports a
/// resolver failure, so on a machine whose `/etc/hosts` says `127.0.0.1 localhost myhost` the
/// answer is `localhost`. Surrounding whitespace is ignored.
///
/// # Errors
///
/// Only the [`hostname`] call can fail (for an empty name).
///
/// # Examples
///
/// ```
/// use socketkit::names::fqdn;
///
/// // Python: socket.getfqdn('127.0.0.1'), the name /etc/hosts gives the loopback address.
/// assert!(!fqdn("127.0.0.1")?.is_empty());
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "getfqdn")]
pub fn fqdn(name: &str) -> Result<String, Error> {
    let mut name = name.trim().to_string();
    if name.is_empty() || name == "0.0.0.0" || name == "::" {
        name = hostname()?;
    }
    let Ok(entry) = address_of(&name).and_then(host_by_addr) else {
        return Ok(name);
    };
    let dotted = std::iter::once(&entry.name)
        .chain(&entry.aliases)
        .find(|n| n.contains('.'));
    Ok(dotted.unwrap_or(&entry.name).clone())
}

/// Runs a blocking look-up on a thread of its own and gives up after `timeout`.
///
/// The C resolver cannot be cancelled, so a look-up that times out keeps its thread until the
/// resolver's own limits end it (`timeout:` and `attempts:` in resolv.conf(5) or `RES_OPTIONS`;
/// glibc's defaults, 5 s times 2 attempts per server, add up to tens of seconds). Its answer is
/// then dropped. A command-line tool exits long before; a long-running program that times out
/// often should also lower the resolver's own limits.
///
/// # Errors
///
/// [`Error::TimedOut`] when the look-up takes longer than `timeout`; [`Error::Config`] for a
/// zero `timeout` (a time-out is more than zero everywhere in socketkit); otherwise the
/// look-up's own result. A panic in the look-up is resumed on the caller's thread.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketkit::names::{lookup, with_timeout};
///
/// let host = with_timeout(Duration::from_secs(5), || lookup("localhost"))?;
/// assert!(!host.addresses.is_empty());
/// # Ok::<(), socketkit::Error>(())
/// ```
pub fn with_timeout<T, F>(timeout: Duration, lookup: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    if timeout.is_zero() {
        return Err(Error::Config(
            "a look-up's time-out must be more than zero".into(),
        ));
    }
    // Room for the answer, so a thread that finishes after we gave up does not block on send.
    let (tx, rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("socketkit-lookup".into())
        .spawn(move || {
            let _ = tx.send(lookup());
        })
        .map_err(|e| Error::io("cannot start a look-up thread", e))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::TimedOut {
            what: "the resolver",
            after: timeout,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the look-up thread sends before it ends"),
        },
    }
}

/// Python's `setipaddr` for `gethostbyaddr`: numeric text as is, else the first address of the
/// name.
fn address_of(text: &str) -> Result<IpAddr, Error> {
    if text == "<broadcast>" {
        return Ok(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    let first = dns_lookup::getaddrinfo(Some(text), None, None)
        .map_err(|e| gai_error(text, e))?
        .flatten()
        .next();
    first
        .map(|info| info.sockaddr.ip())
        .ok_or_else(|| Error::NameNotFound {
            host: text.to_string(),
        })
}

fn c_string(name: &str) -> Result<CString, Error> {
    CString::new(name).map_err(|_| Error::BadAddress {
        text: name.to_string(),
        reason: "contains a NUL byte".into(),
    })
}

fn gai_error(name: &str, error: LookupError) -> Error {
    match error.kind() {
        LookupErrorKind::NoName | LookupErrorKind::NoData => Error::NameNotFound {
            host: name.to_string(),
        },
        _ => Error::Resolve {
            host: name.to_string(),
            reason: std::io::Error::from(error).to_string(),
        },
    }
}

fn host_error(name: &str, error: HostError) -> Error {
    let reason = match error {
        HostError::Resolver(HOST_NOT_FOUND | NO_DATA) => {
            return Error::NameNotFound {
                host: name.to_string(),
            };
        }
        HostError::Resolver(TRY_AGAIN) => {
            "temporary failure in name resolution (no DNS server answered)".to_string()
        }
        HostError::Resolver(NO_RECOVERY) => "unrecoverable resolver error".to_string(),
        HostError::Resolver(other) => format!("resolver error {other}"),
        HostError::Os(e) => e.to_string(),
    };
    Error::Resolve {
        host: name.to_string(),
        reason,
    }
}

impl From<sys::HostEnt> for HostEntry {
    fn from(entry: sys::HostEnt) -> HostEntry {
        let mut addresses: Vec<IpAddr> = Vec::with_capacity(entry.addresses.len());
        for address in entry.addresses {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        HostEntry {
            name: entry.name,
            aliases: entry.aliases,
            addresses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_zero_time_out_is_refused_not_run() {
        let err = with_timeout(Duration::ZERO, || Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn a_look_up_that_takes_too_long_times_out_and_its_thread_finishes_later() {
        let (release, wait) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let err = with_timeout(Duration::from_millis(50), move || {
            let _ = wait.recv(); // held until the caller has given up
            done_tx.send(()).unwrap();
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert_eq!(
            err.to_string(),
            "timed out after 50ms waiting for the resolver"
        );
        release.send(()).unwrap();
        done.recv_timeout(Duration::from_secs(10))
            .expect("the abandoned look-up thread runs to its end");
    }

    #[test]
    fn a_look_up_within_the_time_returns_its_own_result() {
        assert_eq!(with_timeout(Duration::from_secs(10), || Ok(7)).unwrap(), 7);
        let err = with_timeout(Duration::from_secs(10), || {
            Err::<(), _>(Error::NameNotFound { host: "x".into() })
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NameNotFound);
    }

    #[test]
    #[should_panic(expected = "resolver bug")]
    fn a_panic_in_the_look_up_reaches_the_caller() {
        let _ = with_timeout(Duration::from_secs(10), || -> Result<(), Error> {
            panic!("resolver bug")
        });
    }

    #[test]
    fn localhost_resolves_forward_and_back() {
        let forward = lookup("localhost").unwrap();
        assert!(forward.addresses.iter().all(IpAddr::is_loopback));
        let reverse = host_by_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert!(reverse.addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn names_with_a_nul_byte_are_bad_text() {
        assert_eq!(lookup("a\0b").unwrap_err().kind(), ErrorKind::Usage);
        assert_eq!(host_by_name("a\0b").unwrap_err().kind(), ErrorKind::Usage);
    }

    #[test]
    fn an_empty_name_has_no_hostent() {
        // glibc answers "" from its own parsing, without asking DNS (NO_RECOVERY, as Python's
        // `gethostbyname_ex('')` shows); a missing name is tested through the CLI, where
        // RES_OPTIONS can keep a DNS query short.
        assert_eq!(host_by_name("").unwrap_err().kind(), ErrorKind::Other);
    }
}
