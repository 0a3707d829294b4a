//! Access lists: `--allow CIDR` and `--deny CIDR`, checked before a byte is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::Error;
use crate::service::Address;

/// Which peers may be served, by address range (ncat's `--allow`/`--deny`).
///
/// A peer is refused when it matches any `deny` range; otherwise, when there are `allow`
/// ranges, it must match one. Unix peers have no address and are not filtered.
///
/// An IPv4 client is the same peer whether a plain IPv4 listener sees it (`10.0.0.1`) or a
/// dual-stack `[::]` listener does (`::ffff:10.0.0.1`), and a rule may be written in either
/// form: peers and rules are both made canonical, so every combination matches alike.
///
/// - A peer in IPv4-mapped form is matched as its IPv4 address.
/// - A rule inside `::ffff:0:0/96` (prefix /96 or longer) is the IPv4 range of prefix
///   length − 96: `::ffff:127.0.0.1` is `127.0.0.1/32`, `::ffff:127.0.0.0/104` is `127.0.0.0/8`.
/// - A shorter IPv6 rule either holds all of `::ffff:0:0/96` or none of it (ranges nest). One
///   that holds it (`::/0`, `::/1`, `::ffff:0:0/95`) holds every IPv4 address too, in either
///   form, as it would on a dual-stack socket: `--deny ::/0` refuses IPv4 peers as well. Other
///   IPv6 rules (`::1`, `2001:db8::/32`) never match an IPv4 peer.
///
/// Only the mapped form is an IPv4 address here; IPv4-compatible (`::10.0.0.1`) and NAT64
/// (`64:ff9b::/96`) addresses are IPv6 addresses like any other.
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
        self.allow.extend(canonical(parse_cidr(cidr)?));
        Ok(())
    }

    /// Adds a range (CIDR, or a single address) that is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for text that is not an address or a CIDR range.
    pub fn deny(&mut self, cidr: &str) -> Result<(), Error> {
        self.deny.extend(canonical(parse_cidr(cidr)?));
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

/// `::ffff:0:0/96`, where IPv4 addresses live in IPv6 (RFC 4291 §2.5.5.2).
const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// A rule in the form [`AccessList::permits`] compares peers in (see [`AccessList`]): the same
/// set of peers as one or two ranges, none of them IPv4-mapped.
fn canonical(net: IpNet) -> Vec<IpNet> {
    let IpNet::V6(v6) = net else {
        return vec![net];
    };
    if MAPPED.contains(&v6) {
        let [.., a, b, c, d] = v6.network().octets();
        let v4 = Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), v6.prefix_len() - 96);
        vec![IpNet::V4(v4)] // new_assert: a prefix of 96..=128, less 96, fits IPv4
    } else if v6.contains(&MAPPED) {
        // IPv4 peers are compared as IPv4 addresses, so the IPv4 part of this range is
        // written as the IPv4 range that holds them all.
        vec![net, IpNet::V4(Ipv4Net::default())]
    } else {
        vec![net]
    }
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

    /// Every rule form against every peer form: the answer is the same whichever form each is
    /// written in.
    #[test]
    fn rules_in_ipv4_mapped_form_match_like_their_ipv4_form() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // (rule, IPv4 form, peers inside, peers outside)
        let cases: [(&str, &str, &[&str], &[&str]); 4] = [
            (
                "::ffff:127.0.0.1",
                "127.0.0.1",
                &["127.0.0.1"],
                &["127.0.0.2"],
            ),
            (
                "::ffff:127.0.0.0/104",
                "127.0.0.0/8",
                &["127.1.2.3"],
                &["128.0.0.1"],
            ),
            (
                "::ffff:10.1.0.0/112",
                "10.1.0.0/16",
                &["10.1.255.1"],
                &["10.2.0.1"],
            ),
            (
                "::ffff:0:0/96",
                "0.0.0.0/0",
                &["1.2.3.4", "255.255.255.255"],
                &["::1"],
            ),
        ];
        for (mapped, v4, inside, outside) in cases {
            for rule in [mapped, v4] {
                let mut allow = AccessList::default();
                allow.allow(rule).unwrap();
                let mut deny = AccessList::default();
                deny.deny(rule).unwrap();
                for peer in inside.iter().chain(outside) {
                    let plain = ip(peer);
                    let expected = inside.contains(peer);
                    let forms = match plain {
                        IpAddr::V4(v4) => vec![plain, IpAddr::V6(v4.to_ipv6_mapped())],
                        IpAddr::V6(_) => vec![plain],
                    };
                    for form in forms {
                        assert_eq!(allow.permits(form), expected, "allow {rule}, peer {form}");
                        assert_eq!(deny.permits(form), !expected, "deny {rule}, peer {form}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_ipv6_range_holding_the_mapped_block_holds_every_ipv4_peer() {
        for rule in ["::/0", "::/1", "::ffff:0:0/95", "::/64"] {
            let mut deny = AccessList::default();
            deny.deny(rule).unwrap();
            for peer in ["127.0.0.1", "::ffff:127.0.0.1", "203.0.113.9"] {
                assert!(
                    !deny.permits(peer.parse().unwrap()),
                    "deny {rule}, peer {peer}"
                );
            }
            let mut allow = AccessList::default();
            allow.allow(rule).unwrap();
            assert!(
                allow.permits("::ffff:10.0.0.1".parse().unwrap()),
                "allow {rule}"
            );
            assert!(allow.permits("10.0.0.1".parse().unwrap()), "allow {rule}");
        }
        // Ranges that do not hold it never match an IPv4 peer, in either form.
        for rule in [
            "::1",
            "2001:db8::/32",
            "::fffe:0:0/96",
            "::/96",
            "64:ff9b::/96",
        ] {
            let mut deny = AccessList::default();
            deny.deny(rule).unwrap();
            assert!(deny.permits("127.0.0.1".parse().unwrap()), "deny {rule}");
            assert!(
                deny.permits("::ffff:127.0.0.1".parse().unwrap()),
                "deny {rule}"
            );
        }
    }

    #[test]
    fn an_empty_list_permits_everyone() {
        assert!(AccessList::default().permits("203.0.113.9".parse().unwrap()));
        assert!(AccessList::default().permits_peer(&Address::Unix(None)));
    }
}
