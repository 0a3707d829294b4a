//! The UCSPI environment of one run: who is connected, as `tcpserver` and `unixserver` tell
//! their programs. Sans-IO: made from the request's [`Context`] (the engine's view of the peer,
//! so a PROXY header the engine honours is what the program sees) and credentials the caller
//! read.

use crate::endpoint::Transport;
pub(crate) use crate::handler::PeerCredentials;
use crate::service::{Address, Context};

/// Every variable a run may set. A run removes all of them from the server's own environment
/// first, so a socketkit started by another UCSPI server (or by a test) never hands its own
/// connection's variables to a program.
pub(crate) const UCSPI_VARIABLES: [&str; 20] = [
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "TCPREMOTEHOST",
    "TCPLOCALHOST",
    "TCPREMOTEINFO",
    "UDPREMOTEIP",
    "UDPREMOTEPORT",
    "UDPLOCALIP",
    "UDPLOCALPORT",
    "UNIXLOCALPATH",
    "UNIXREMOTEPATH",
    "UNIXLOCALPID",
    "UNIXLOCALUID",
    "UNIXLOCALGID",
    "UNIXREMOTEPID",
    "UNIXREMOTEEUID",
    "UNIXREMOTEEGID",
];

/// This process, for `UNIXLOCAL*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalProcess {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The variables for one run, in UCSPI's names:
///
/// | transport | variables |
/// |---|---|
/// | tcp | `PROTO=TCP`, `TCPREMOTEIP`, `TCPREMOTEPORT`, `TCPLOCALIP`, `TCPLOCALPORT` (ucspi-tcp) |
/// | udp | `PROTO=UDP`, `UDPREMOTEIP`, `UDPREMOTEPORT`, `UDPLOCALIP`, `UDPLOCALPORT` (UCSPI's pattern; no tool of djb's serves UDP) |
/// | unix, unixgram | `PROTO=UNIX`, `UNIXLOCALPATH`, `UNIXLOCALPID`/`UID`/`GID` (ucspi-unix), `UNIXREMOTEPID`/`EUID`/`EGID` when the peer's credentials are known (streams: `SO_PEERCRED`), and `UNIXREMOTEPATH` when the peer has a name (ucspi-ipc's name; a datagram's sender) |
///
/// IPv6 addresses are written without brackets, as tcpserver writes them; an abstract name is
/// written `@name`.
pub(crate) fn ucspi(
    ctx: &Context,
    local_process: LocalProcess,
    peer_credentials: Option<PeerCredentials>,
) -> Vec<(&'static str, String)> {
    let mut vars = Vec::with_capacity(10);
    match (ctx.transport, &ctx.peer) {
        (Transport::Tcp | Transport::Udp, peer) => {
            let (proto, names) = if ctx.transport == Transport::Tcp {
                (
                    "TCP",
                    ["TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT"],
                )
            } else {
                (
                    "UDP",
                    ["UDPREMOTEIP", "UDPREMOTEPORT", "UDPLOCALIP", "UDPLOCALPORT"],
                )
            };
            vars.push(("PROTO", proto.to_string()));
            for (address, [ip, port]) in [
                (peer, [names[0], names[1]]),
                (&ctx.local, [names[2], names[3]]),
            ] {
                if let Address::Inet(addr) = address {
                    vars.push((ip, addr.ip().to_canonical().to_string()));
                    vars.push((port, addr.port().to_string()));
                }
            }
        }
        (_, peer) => {
            vars.push(("PROTO", "UNIX".to_string()));
            if let Some(path) = unix_name(&ctx.local) {
                vars.push(("UNIXLOCALPATH", path));
            }
            vars.push(("UNIXLOCALPID", local_process.pid.to_string()));
            vars.push(("UNIXLOCALUID", local_process.uid.to_string()));
            vars.push(("UNIXLOCALGID", local_process.gid.to_string()));
            if let Some(cred) = peer_credentials {
                if let Some(pid) = cred.pid {
                    vars.push(("UNIXREMOTEPID", pid.to_string()));
                }
                vars.push(("UNIXREMOTEEUID", cred.uid.to_string()));
                vars.push(("UNIXREMOTEEGID", cred.gid.to_string()));
            }
            if let Some(path) = unix_name(peer) {
                vars.push(("UNIXREMOTEPATH", path));
            }
        }
    }
    vars
}

/// A Unix address as a string: the path, `@name` for an abstract name, nothing when unnamed.
fn unix_name(address: &Address) -> Option<String> {
    match address {
        Address::Unix(Some(path)) => Some(path.to_string_lossy().into_owned()),
        Address::Abstract(name) => Some(format!("@{}", String::from_utf8_lossy(name))),
        Address::Unix(None) | Address::Inet(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ME: LocalProcess = LocalProcess {
        pid: 10,
        uid: 1000,
        gid: 100,
    };

    fn get<'a>(vars: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn tcp_names_both_ends_as_tcpserver_does() {
        let mut ctx = Context::new(Transport::Tcp, "127.0.0.1:40222".parse().unwrap());
        ctx.local = Address::Inet("127.0.0.1:12000".parse().unwrap());
        let vars = ucspi(&ctx, ME, None);
        assert_eq!(get(&vars, "PROTO"), Some("TCP"));
        assert_eq!(get(&vars, "TCPREMOTEIP"), Some("127.0.0.1"));
        assert_eq!(get(&vars, "TCPREMOTEPORT"), Some("40222"));
        assert_eq!(get(&vars, "TCPLOCALIP"), Some("127.0.0.1"));
        assert_eq!(get(&vars, "TCPLOCALPORT"), Some("12000"));
        assert_eq!(get(&vars, "UNIXLOCALPID"), None);
    }

    #[test]
    fn ipv6_is_written_without_brackets_and_mapped_ipv4_as_ipv4() {
        let ctx = Context::new(Transport::Tcp, "[::1]:5".parse().unwrap());
        assert_eq!(get(&ucspi(&ctx, ME, None), "TCPREMOTEIP"), Some("::1"));
        let ctx = Context::new(Transport::Tcp, "[::ffff:10.0.0.1]:5".parse().unwrap());
        assert_eq!(get(&ucspi(&ctx, ME, None), "TCPREMOTEIP"), Some("10.0.0.1"));
    }

    #[test]
    fn udp_uses_the_udp_names() {
        let ctx = Context::new(Transport::Udp, "127.0.0.1:9".parse().unwrap());
        let vars = ucspi(&ctx, ME, None);
        assert_eq!(get(&vars, "PROTO"), Some("UDP"));
        assert_eq!(get(&vars, "UDPREMOTEPORT"), Some("9"));
        assert_eq!(get(&vars, "TCPREMOTEPORT"), None);
    }

    #[test]
    fn unix_names_the_socket_and_both_processes() {
        let mut ctx = Context::new(Transport::Unix, "127.0.0.1:9".parse().unwrap());
        ctx.peer = Address::Unix(None);
        ctx.local = Address::Unix(Some(PathBuf::from("/run/x.sock")));
        let cred = PeerCredentials {
            pid: Some(77),
            uid: 5,
            gid: 6,
        };
        let vars = ucspi(&ctx, ME, Some(cred));
        assert_eq!(get(&vars, "PROTO"), Some("UNIX"));
        assert_eq!(get(&vars, "UNIXLOCALPATH"), Some("/run/x.sock"));
        assert_eq!(get(&vars, "UNIXLOCALPID"), Some("10"));
        assert_eq!(get(&vars, "UNIXREMOTEPID"), Some("77"));
        assert_eq!(get(&vars, "UNIXREMOTEEUID"), Some("5"));
        assert_eq!(get(&vars, "UNIXREMOTEEGID"), Some("6"));
        assert_eq!(get(&vars, "UNIXREMOTEPATH"), None);
        ctx.peer = Address::Abstract(b"client".to_vec());
        assert_eq!(
            get(&ucspi(&ctx, ME, None), "UNIXREMOTEPATH"),
            Some("@client")
        );
    }

    #[test]
    fn every_variable_set_is_one_a_run_clears_first() {
        let mut ctx = Context::new(Transport::Unix, "127.0.0.1:9".parse().unwrap());
        ctx.peer = Address::Unix(Some(PathBuf::from("/p")));
        ctx.local = Address::Unix(Some(PathBuf::from("/l")));
        let cred = Some(PeerCredentials {
            pid: Some(1),
            uid: 2,
            gid: 3,
        });
        let mut all = ucspi(&ctx, ME, cred);
        for transport in [Transport::Tcp, Transport::Udp] {
            all.extend(ucspi(
                &Context::new(transport, "127.0.0.1:9".parse().unwrap()),
                ME,
                None,
            ));
        }
        for (name, _) in all {
            assert!(UCSPI_VARIABLES.contains(&name), "{name}");
        }
    }
}
