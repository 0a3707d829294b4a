//! Access lists: `--allow CIDR` and `--deny CIDR`, checked before a byte is read.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;
use crate::service::Address;

/// Which peers may be served, by address range (ncat's `--allow`/`--deny`).
///
/// A peer is refused when it matches any `deny` range; otherwise, when there are `allow`
/// ranges, it must match one. IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`, as a dual-stack
/// listener sees IPv4 clients) are matched as their IPv4 address. Unix peers have no address
/// and are not filtered.
///
/// ```
/// use socketkit::server::AccessList;
/// let mut access = AccessList::default();
/// access.allow("127.0.0.0/8")?;
/// access.deny("127.0.0.2")?;
/// assert!(access.permits("127.0.0.1".parse().unwrap()));
/// assert!(!access.permits("127.0.0.2".parse().unwrap()));
/// assert!(!access.permits("10.0.0.1".parse().unwrap()));
/// assert!(access.permits("::ffff:127.0.0.1".parse().unwrap()));
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// Adds a range (CIDR, or a single address) that may be served.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for text that is not an address or a CIDR range.
    pub fn allow(&mut self, cidr: &str) -> Result<(), Error> {
        self.allow.push(parse_cidr(cidr)?);
        Ok(())
    }

    /// Adds a range (CIDR, or a single address) that is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for text that is not an address or a CIDR range.
    pub fn deny(&mut self, cidr: &str) -> Result<(), Error> {
        self.deny.push(parse_cidr(cidr)?);
        Ok(())
    }

    /// Whether the list has any range at all.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical(); // ::ffff:a.b.c.d is a.b.c.d
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether a peer may be served; Unix peers always may.
    pub fn permits_peer(&self, peer: &Address) -> bool {
        peer.inet().is_none_or(|addr| self.permits(addr.ip()))
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, Error> {
    let text = text.trim();
    let parsed = match text.parse::<IpNet>() {
        Ok(net) => Ok(net),
        Err(_) => text.parse::<IpAddr>().map(IpNet::from),
    };
    parsed.map(|net| net.trunc()).map_err(|_| {
        Error::Config(format!(
            "{text:?} is not an address or a CIDR range (e.g. 10.0.0.0/8, ::1/128)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_over_allow_and_bad_text_is_refused() {
        let mut access = AccessList::default();
        access.allow("::/0").unwrap();
        access.allow("0.0.0.0/0").unwrap();
        access.deny("192.168.1.0/24").unwrap();
        assert!(!access.permits("192.168.1.77".parse().unwrap()));
        assert!(!access.permits("::ffff:192.168.1.77".parse().unwrap()));
        assert!(access.permits("::1".parse().unwrap()));
        assert!(AccessList::default().allow("10.0.0.0/33").is_err());
        assert!(AccessList::default().deny("localhost").is_err());
    }

    #[test]
    fn an_empty_list_permits_everyone() {
        assert!(AccessList::default().permits("203.0.113.9".parse().unwrap()));
        assert!(AccessList::default().permits_peer(&Address::Unix(None)));
    }
}
