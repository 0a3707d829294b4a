//! Address text and byte order: `inet_aton`, `inet_ntoa`, `htonl` and friends, IPv6 text, packed
//! bytes. Sans-IO, apart from the interface-name look-up of a scoped IPv6 address.
//!
//! `Ipv4Addr::from_str` reads only the four-decimal-parts form. Python's `socket.inet_aton`
//! (glibc's `inet_aton`) also reads the legacy forms the slides' era used, so [`aton`] is our
//! own parser of glibc's rules:
//!
//! | text             | parts                         | address          |
//! |------------------|-------------------------------|------------------|
//! | `128.119.40.12`  | a.b.c.d, one byte each        | 128.119.40.12    |
//! | `127.1`          | a.b: b fills the last 24 bits | 127.0.0.1        |
//! | `10.1.300`       | a.b.c: c fills the last 16    | 10.1.1.44        |
//! | `2130706433`     | one 32-bit number             | 127.0.0.1        |
//! | `0x7f.1`, `017.1`| `0x` hex, a leading `0` octal | 127.0.0.1, 15.0.0.1 |
//!
//! IPv6 text is read with glibc's `inet_pton` rules, again by our own parser so that an error
//! can name the bad group (std's parser only says the syntax is invalid).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Error;

/// Reads IPv4 address text with `inet_aton`'s rules, as Python's `socket.inet_aton` does.
///
/// One to four parts separated by dots; every part but the last is one byte, the last fills the
/// rest of the 32 bits (so `127.1` is 127.0.0.1 and a bare number is the whole address). Each
/// part is a C number: `0x` or `0X` starts hex, a leading `0` octal, otherwise decimal. Like
/// glibc (and so Python), everything after the first ASCII whitespace following the address is
/// ignored: `"1.2.3.4 junk"` reads as 1.2.3.4. Leading whitespace, signs and empty parts are
/// errors. The packed bytes Python returns are [`Ipv4Addr::octets`].
///
/// # Errors
///
/// [`Error::BadAddress`] naming the part that is wrong (its position and text).
///
/// # Examples
///
/// ```
/// use std::net::Ipv4Addr;
/// use socketkit::names::aton;
///
/// assert_eq!(aton("128.119.40.12")?, Ipv4Addr::new(128, 119, 40, 12));
/// assert_eq!(aton("127.1")?, Ipv4Addr::LOCALHOST);
/// assert_eq!(aton("0x7f.1")?, Ipv4Addr::LOCALHOST);
/// assert_eq!(aton("017.1")?, Ipv4Addr::new(15, 0, 0, 1));
/// assert_eq!(aton("4294967295")?, Ipv4Addr::BROADCAST);
///
/// let err = aton("1.2.300.4").unwrap_err();
/// assert_eq!(err.to_string(), r#"bad address "1.2.300.4": part 3 "300" is more than 255"#);
/// # Ok::<(), socketkit::Error>(())
/// ```
#[doc(alias = "inet_aton")]
pub fn aton(text: &str) -> Result<Ipv4Addr, Error> {
    parse_aton(text).map_err(|reason| bad(text, reason))
}

/// Formats a packed IPv4 address as dotted-decimal text, like Python's `socket.inet_ntoa`.
///
/// Python raises on a byte string of the wrong length; here the length is in the type.
///
/// # Examples
///
/// ```
/// use socketkit::names::ntoa;
/// assert_eq!(ntoa([128, 119, 40, 12]), "128.119.40.12");
/// ```
#[doc(alias = "inet_ntoa")]
pub fn ntoa(packed: [u8; 4]) -> String {
    Ipv4Addr::from(packed).to_string()
}

/// Host to network byte order, 32 bits: `u32::to_be` under the slides' name.
///
/// On a little-endian host the bytes swap; on a big-endian host nothing changes.
///
/// ```
/// use socketkit::names::htonl;
/// let n = htonl(0x8077_280c); // 128.119.40.12
/// assert_eq!(n.to_ne_bytes(), [128, 119, 40, 12]); // in memory: the bytes on the wire
/// ```
#[doc(alias = "to_be")]
pub const fn htonl(host: u32) -> u32 {
    host.to_be()
}

/// Host to network byte order, 16 bits: `u16::to_be` under the slides' name.
///
/// ```
/// use socketkit::names::htons;
/// assert_eq!(htons(12000).to_ne_bytes(), [0x2e, 0xe0]);
/// ```
#[doc(alias = "to_be")]
pub const fn htons(host: u16) -> u16 {
    host.to_be()
}

/// Network to host byte order, 32 bits: `u32::from_be` under the slides' name.
///
/// ```
/// use socketkit::names::ntohl;
/// let wire = u32::from_ne_bytes([128, 119, 40, 12]); // as a C program's s_addr holds it
/// assert_eq!(ntohl(wire), 0x8077_280c);
/// ```
#[doc(alias = "from_be")]
pub const fn ntohl(network: u32) -> u32 {
    u32::from_be(network)
}

/// Network to host byte order, 16 bits: `u16::from_be` under the slides' name.
///
/// ```
/// use socketkit::names::ntohs;
/// assert_eq!(ntohs(u16::from_ne_bytes([0x2e, 0xe0])), 12000);
/// ```
#[doc(alias = "from_be")]
pub const fn ntohs(network: u16) -> u16 {
    u16::from_be(network)
}

/// An IPv4 or IPv6 address with an optional IPv6 scope (zone), and the forms the slides show.
///
/// Parsed from text with [`aton`]'s rules for IPv4, or as IPv6 text (`inet_pton`'s rules) with
/// an optional `%zone`: an interface name (only for link-local addresses, as glibc's
/// `getaddrinfo` allows) or a number. It displays as the address, then `%` and the scope id if
/// there is one.
///
/// # Examples
///
/// ```
/// use socketkit::names::IpAddress;
///
/// let addr: IpAddress = "128.119.40.12".parse()?;
/// assert_eq!(addr.packed(), [0x80, 0x77, 0x28, 0x0c]);
/// assert_eq!(addr.network_order(), Some(0x8077_280c));
/// assert_eq!(addr.host_order(), Some(u32::from_ne_bytes([0x80, 0x77, 0x28, 0x0c])));
/// assert_eq!(addr.ipv4_mapped().unwrap().to_string(), "::ffff:128.119.40.12");
///
/// let scoped: IpAddress = "fe80::1%1".parse()?;
/// assert_eq!(scoped.scope_id(), Some(1));
/// assert_eq!(scoped.to_string(), "fe80::1%1");
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpAddress {
    ip: IpAddr,
    /// `sin6_scope_id`: the interface a link-local address belongs to.
    scope_id: Option<u32>,
}

impl IpAddress {
    /// The address without its scope.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The IPv6 scope id (interface index), if the text had a `%zone`.
    pub fn scope_id(&self) -> Option<u32> {
        self.scope_id
    }

    /// The packed bytes, as `inet_aton` or `inet_pton` returns them: 4 or 16, network order.
    pub fn packed(&self) -> Vec<u8> {
        match self.ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }

    /// An IPv4 address's numeric value: the packed bytes read as a big-endian (network order)
    /// 32-bit integer, which is what `ntohl` gives for them. `None` for IPv6.
    pub fn network_order(&self) -> Option<u32> {
        match self.ip {
            IpAddr::V4(v4) => Some(u32::from_be_bytes(v4.octets())),
            IpAddr::V6(_) => None,
        }
    }

    /// An IPv4 address's packed bytes read as a host-order integer: the value a C program on this
    /// machine sees in `sin_addr.s_addr`. Equal to [`IpAddress::network_order`] on a big-endian
    /// host, byte-swapped on a little-endian one. `None` for IPv6.
    pub fn host_order(&self) -> Option<u32> {
        match self.ip {
            IpAddr::V4(v4) => Some(u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(_) => None,
        }
    }

    /// The IPv4 address: itself, or the one an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// carries. `None` for other IPv6 addresses.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        }
    }

    /// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, how a dual-stack socket shows an IPv4 peer):
    /// of an IPv4 address, or the address itself if it is one. `None` for other IPv6 addresses.
    pub fn ipv4_mapped(&self) -> Option<Ipv6Addr> {
        self.ipv4().map(|v4| v4.to_ipv6_mapped())
    }

    /// Reads packed bytes: 4 (IPv4) or 16 (IPv6), in network order, as `inet_ntop` takes them.
    ///
    /// # Errors
    ///
    /// [`Error::BadAddress`] for any other length.
    ///
    /// ```
    /// use socketkit::names::IpAddress;
    /// assert_eq!(IpAddress::from_packed(&[127, 0, 0, 1])?.to_string(), "127.0.0.1");
    /// assert!(IpAddress::from_packed(&[1, 2, 3]).is_err());
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    #[doc(alias = "inet_ntop")]
    pub fn from_packed(bytes: &[u8]) -> Result<IpAddress, Error> {
        let ip = if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
            IpAddr::V4(Ipv4Addr::from(v4))
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
            IpAddr::V6(Ipv6Addr::from(v6))
        } else {
            return Err(bad(
                &hex(bytes),
                format!(
                    "{} bytes: a packed address is 4 bytes (IPv4) or 16 (IPv6)",
                    bytes.len()
                ),
            ));
        };
        Ok(IpAddress::from(ip))
    }

    /// Reads packed bytes written in hex: 8 digits (IPv4) or 32 (IPv6), optionally after `0x`,
    /// with optional spaces, `:` or `-` between them (`7f000001`, `7f 00 00 01`).
    ///
    /// # Errors
    ///
    /// [`Error::BadAddress`] naming a character that is not a hex digit, an odd number of
    /// digits, or a length other than 4 or 16 bytes.
    ///
    /// ```
    /// use socketkit::names::IpAddress;
    /// assert_eq!(IpAddress::from_packed_hex("8077280c")?.to_string(), "128.119.40.12");
    /// let v6 = IpAddress::from_packed_hex("0x0000 0000 0000 0000 0000 0000 0000 0001")?;
    /// assert_eq!(v6.to_string(), "::1");
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn from_packed_hex(text: &str) -> Result<IpAddress, Error> {
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        let mut nibbles = Vec::with_capacity(32);
        for (at, c) in digits.char_indices() {
            if matches!(c, ' ' | '\t' | ':' | '-') {
                continue;
            }
            let nibble = c.to_digit(16).ok_or_else(|| {
                let at = at + (text.len() - digits.len()) + 1;
                bad(text, format!("{c:?} at position {at} is not a hex digit"))
            })?;
            nibbles.push(nibble as u8);
        }
        if nibbles.len() % 2 == 1 {
            return Err(bad(
                text,
                format!("{} hex digits: each byte takes two", nibbles.len()),
            ));
        }
        let bytes: Vec<u8> = nibbles.chunks(2).map(|p| p[0] << 4 | p[1]).collect();
        IpAddress::from_packed(&bytes).map_err(|_| {
            bad(
                text,
                format!(
                    "{} bytes: a packed address is 4 bytes (IPv4, 8 hex digits) or 16 (IPv6, 32)",
                    bytes.len()
                ),
            )
        })
    }
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> IpAddress {
        IpAddress { ip, scope_id: None }
    }
}

impl FromStr for IpAddress {
    type Err = Error;

    /// IPv4 text with [`aton`]'s rules, else IPv6 text with an optional `%zone`.
    fn from_str(text: &str) -> Result<IpAddress, Error> {
        if let Ok(v4) = parse_aton(text) {
            return Ok(IpAddress::from(IpAddr::V4(v4)));
        }
        if !text.contains(':') {
            return aton(text).map(|v4| IpAddress::from(IpAddr::V4(v4)));
        }
        let (ip_text, zone) = match text.split_once('%') {
            Some((ip, zone)) => (ip, Some(zone)),
            None => (text, None),
        };
        let ip = parse_ipv6(ip_text).map_err(|reason| bad(text, reason))?;
        let scope_id = match zone {
            None => None,
            Some(zone) => Some(scope_id(&ip, zone).map_err(|reason| bad(text, reason))?),
        };
        Ok(IpAddress {
            ip: IpAddr::V6(ip),
            scope_id,
        })
    }
}

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope_id {
            Some(scope) => write!(f, "{}%{scope}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

fn bad(text: &str, reason: String) -> Error {
    Error::BadAddress {
        text: text.to_string(),
        reason,
    }
}

/// Lower-case hex of some bytes, without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// C's `isspace` in the C locale, which ends an `inet_aton` address. Unlike
/// `u8::is_ascii_whitespace` it includes the vertical tab.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// glibc's `inet_aton` (`inet_aton_end` in `resolv/inet_addr.c`), with a reason for each way
/// it can fail.
fn parse_aton(text: &str) -> Result<Ipv4Addr, String> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err("empty address".into());
    }
    if bytes.contains(&0) {
        return Err("contains a NUL byte".into()); // Python raises ValueError
    }
    let mut leading = [0u32; 3]; // the one-byte parts before the last
    let mut count = 0;
    let mut start = 0;
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'.' || is_c_space(b))
            .map_or(bytes.len(), |at| start + at);
        // Parts end at ASCII bytes, so these are character boundaries.
        let part = &text[start..end];
        let number = count + 1;
        let value = parse_c_number(part).map_err(|why| match part {
            "" => format!("part {number} is empty"),
            _ => format!("part {number} {part:?} {why}"),
        })?;
        if bytes.get(end) == Some(&b'.') {
            if count == leading.len() {
                let rest = &bytes[end + 1..];
                return Err(if rest.first().is_none_or(|&b| is_c_space(b)) {
                    "ends with a dot after 4 parts".into()
                } else {
                    "more than 4 parts".into()
                });
            }
            if value > 0xff {
                return Err(format!("part {number} {part:?} is more than 255"));
            }
            leading[count] = value;
            count += 1;
            start = end + 1;
            continue;
        }
        // The end of the text, or whitespace after which glibc ignores everything.
        let bits = 32 - 8 * count;
        let max = u32::MAX >> (8 * count);
        if value > max {
            let what = match count {
                0 => "a single number".to_string(),
                n => format!("the last of {} parts", n + 1),
            };
            return Err(format!(
                "part {number} {part:?} is more than {max}: as {what} it fills {bits} bits"
            ));
        }
        let mut address = value;
        for (i, byte) in leading[..count].iter().enumerate() {
            address |= byte << (24 - 8 * i);
        }
        return Ok(Ipv4Addr::from(address));
    }
}

/// One `inet_aton` part, as `strtoul(part, &end, 0)` reads it, which must use the whole part.
fn parse_c_number(part: &str) -> Result<u32, String> {
    let bytes = part.as_bytes();
    match bytes.first() {
        None => return Err("is empty".into()),
        Some(b) if !b.is_ascii_digit() => return Err("does not start with a digit".into()),
        Some(_) => {}
    }
    let (radix, digits, kind) = if bytes.len() >= 2 && bytes[0] == b'0' && bytes[1] | 0x20 == b'x' {
        (16, &part[2..], "hex")
    } else if bytes[0] == b'0' {
        (8, &part[1..], "octal")
    } else {
        (10, part, "decimal")
    };
    if radix == 16 && digits.is_empty() {
        return Err("has no hex digits after 0x".into());
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        let digit = c.to_digit(radix).ok_or_else(|| {
            let hint = if radix == 8 {
                " (a leading 0 means octal)"
            } else {
                ""
            };
            format!(
                "has {c:?}, which is not {kind} digit{hint}",
                kind = article(kind)
            )
        })?;
        value = value * u64::from(radix) + u64::from(digit);
        if value > u64::from(u32::MAX) {
            return Err(format!("is more than {}", u32::MAX));
        }
    }
    Ok(value as u32)
}

fn article(kind: &str) -> String {
    match kind {
        "octal" => "an octal".into(),
        other => format!("a {other}"),
    }
}

/// glibc's `inet_pton(AF_INET6, ...)` (`inet_pton6` in `resolv/inet_pton.c`), with a reason for
/// each way it can fail.
fn parse_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    let bytes = text.as_bytes();
    let mut out = [0u8; 16];
    let mut filled = 0; // bytes of `out` written
    let mut gap: Option<usize> = None; // where `::` stands
    let mut i = 0;
    if bytes.is_empty() {
        return Err("empty address".into());
    }
    if bytes[0] == b':' {
        if bytes.get(1) != Some(&b':') {
            return Err("starts with a single ':' (the zeros are written '::')".into());
        }
        i = 1;
    }
    let mut group_start = i;
    let mut digits = 0;
    let mut value: u16 = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if let Some(d) = char::from(b).to_digit(16) {
            if digits == 4 {
                let group = group_text(text, group_start);
                return Err(format!("group {group:?} has more than 4 hex digits"));
            }
            value = value << 4 | d as u16;
            digits += 1;
            continue;
        }
        if b == b':' {
            group_start = i;
            if digits == 0 {
                if gap.is_some() {
                    return Err(if bytes[i - 2] == b':' && gap == Some(filled) {
                        "':::' is not a separator".into()
                    } else {
                        "more than one '::'".into()
                    });
                }
                gap = Some(filled);
                continue;
            }
            if i == bytes.len() {
                return Err("ends with a single ':'".into());
            }
            if filled == 16 {
                return Err("more than 8 groups".into());
            }
            out[filled..filled + 2].copy_from_slice(&value.to_be_bytes());
            filled += 2;
            digits = 0;
            value = 0;
            continue;
        }
        if b == b'.' {
            let tail = &text[group_start..];
            if filled + 4 > 16 {
                return Err(format!("the IPv4 part {tail:?} comes after 7 groups"));
            }
            let v4 = tail.parse::<Ipv4Addr>().map_err(|_| {
                format!(
                    "{tail:?} is not an IPv4 address for the last 32 bits (4 decimal parts of \
                     0-255, no leading zeros)"
                )
            })?;
            out[filled..filled + 4].copy_from_slice(&v4.octets());
            filled += 4;
            digits = 0;
            break;
        }
        let c = text[i - 1..].chars().next().unwrap_or('?');
        let group = group_text(text, group_start);
        return Err(format!(
            "group {group:?} has {c:?}, which is not a hex digit, ':' or '.'"
        ));
    }
    if digits > 0 {
        if filled == 16 {
            return Err("more than 8 groups".into());
        }
        out[filled..filled + 2].copy_from_slice(&value.to_be_bytes());
        filled += 2;
    }
    match gap {
        Some(_) if filled == 16 => {
            return Err("'::' stands for no group: there are 8 groups already".into());
        }
        Some(at) => {
            let moved = filled - at;
            out.copy_within(at..filled, 16 - moved);
            out[at..16 - moved].fill(0);
        }
        None if filled < 16 => {
            return Err(format!(
                "{} groups of 8 and no '::' for the zeros",
                filled / 2
            ));
        }
        None => {}
    }
    Ok(Ipv6Addr::from(out))
}

/// The IPv6 group that starts at `start`: up to the next ':' (or the end).
fn group_text(text: &str, start: usize) -> &str {
    let rest = &text[start..];
    rest.split(':').next().unwrap_or(rest)
}

/// The scope id for `%zone`, with glibc's rules (`__inet6_scopeid_pton`): an interface name
/// only for a link-local (or node- or link-local multicast) address, otherwise a decimal number.
fn scope_id(ip: &Ipv6Addr, zone: &str) -> Result<u32, String> {
    let o = ip.octets();
    let link_local = ip.is_unicast_link_local() || (o[0] == 0xff && matches!(o[1] & 0x0f, 1 | 2));
    if link_local
        && !zone.is_empty()
        && let Ok(index) = nix::net::if_::if_nametoindex(zone)
    {
        return Ok(index);
    }
    if zone.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(number) = zone.parse::<u32>()
    {
        return Ok(number);
    }
    Err(if zone.is_empty() {
        "empty zone after '%'".into()
    } else if link_local {
        format!("zone {zone:?} is neither an interface on this host nor a number")
    } else {
        format!(
            "zone {zone:?}: an interface name is only for link-local addresses; this one takes \
             a number"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(text: &str) -> Option<[u8; 4]> {
        aton(text).ok().map(|a| a.octets())
    }

    #[test]
    fn aton_reads_the_legacy_forms() {
        assert_eq!(v4("0.0.0.0"), Some([0, 0, 0, 0]));
        assert_eq!(v4("255.255.255.255"), Some([255; 4]));
        assert_eq!(v4("127.1"), Some([127, 0, 0, 1]));
        assert_eq!(v4("0x7f.1"), Some([127, 0, 0, 1]));
        assert_eq!(v4("0X7F.1"), Some([127, 0, 0, 1]));
        assert_eq!(v4("017.1"), Some([15, 0, 0, 1]));
        assert_eq!(v4("10.1.300"), Some([10, 1, 1, 44]));
        assert_eq!(v4("1.16777215"), Some([1, 255, 255, 255]));
        assert_eq!(v4("4294967295"), Some([255; 4]));
        assert_eq!(v4("037777777777"), Some([255; 4]));
        assert_eq!(v4("0xffffffff"), Some([255; 4]));
        assert_eq!(v4("00000000000000000001"), Some([0, 0, 0, 1]));
        assert_eq!(v4("0"), Some([0; 4]));
    }

    #[test]
    fn aton_ignores_what_follows_whitespace_as_glibc_does() {
        assert_eq!(v4("1.2.3.4 junk"), Some([1, 2, 3, 4]));
        assert_eq!(v4("1.2.3.4\n"), Some([1, 2, 3, 4]));
        assert_eq!(v4("1.2.3.4\x0b"), Some([1, 2, 3, 4])); // vertical tab is C whitespace
        assert_eq!(v4(" 1.2.3.4"), None);
        assert_eq!(v4("1.2.3.4\u{a0}"), None); // not ASCII whitespace
    }

    #[test]
    fn aton_rejects_what_glibc_rejects() {
        for text in [
            "",
            "1.",
            "1..2",
            ".1",
            "1.2.3.4.",
            "1.2.3.4.5",
            "256.1",
            "1.16777216",
            "1.2.65536",
            "4294967296",
            "0x100000000",
            "040000000000",
            "08",
            "09.1",
            "0x",
            "0x.1",
            "0xg",
            "1.2.3.0x",
            "+1.2.3.4",
            "1.+2",
            "-1",
            "1e3",
            "a.b.c.d",
            "１.2.3.4",
            "1.2.3.4x",
            "1,2,3,4",
            "1.2.3.4\0",
        ] {
            assert_eq!(v4(text), None, "{text:?}");
        }
    }

    #[test]
    fn aton_errors_name_the_bad_part() {
        let reason = |text: &str| match aton(text).unwrap_err() {
            Error::BadAddress { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("1.2.300.4"), r#"part 3 "300" is more than 255"#);
        assert_eq!(
            reason("1.08.1"),
            r#"part 2 "08" has '8', which is not an octal digit (a leading 0 means octal)"#
        );
        assert_eq!(reason("1..2"), "part 2 is empty");
        assert_eq!(reason("1.2.3.4.5"), "more than 4 parts");
        assert_eq!(reason("1.2.3.4."), "ends with a dot after 4 parts");
        assert_eq!(
            reason("1.2.65536"),
            r#"part 3 "65536" is more than 65535: as the last of 3 parts it fills 16 bits"#
        );
        assert_eq!(
            reason("4294967296"),
            r#"part 1 "4294967296" is more than 4294967295"#
        );
        assert_eq!(reason("0x.1"), r#"part 1 "0x" has no hex digits after 0x"#);
        assert_eq!(reason("x.1"), r#"part 1 "x" does not start with a digit"#);
        assert_eq!(reason(""), "empty address");
    }

    #[test]
    fn byte_order_round_trips_and_matches_the_wire() {
        assert_eq!(htonl(0x8077_280c).to_ne_bytes(), [0x80, 0x77, 0x28, 0x0c]);
        assert_eq!(ntohl(htonl(0x8077_280c)), 0x8077_280c);
        assert_eq!(htons(80).to_ne_bytes(), [0, 80]);
        assert_eq!(ntohs(htons(80)), 80);
    }

    #[test]
    fn ipv6_text_follows_inet_pton() {
        let ok = |text: &str| parse_ipv6(text).map(|a| a.to_string());
        assert_eq!(ok("::").as_deref(), Ok("::"));
        assert_eq!(ok("::1").as_deref(), Ok("::1"));
        assert_eq!(ok("::ffff:1.2.3.4").as_deref(), Ok("::ffff:1.2.3.4"));
        assert_eq!(ok("1:2:3:4:5:6:7::").as_deref(), Ok("1:2:3:4:5:6:7:0"));
        assert_eq!(
            ok("1:2:3:4:5:6:1.2.3.4").as_deref(),
            Ok("1:2:3:4:5:6:102:304")
        );
        assert_eq!(ok("FE80::A").as_deref(), Ok("fe80::a"));
        for text in [
            ":::",
            "1:::2",
            "1::2::3",
            ":1::",
            "1::2:",
            "01234::",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::",
            "::ffff:1.2.3",
            "::ffff:01.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1:2",
            "::g",
            "",
            "::1.2.3.4:5",
            "1.2.3.4",
        ] {
            assert!(parse_ipv6(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn ipv6_errors_name_the_bad_group() {
        let reason = |text: &str| parse_ipv6(text).unwrap_err();
        assert_eq!(
            reason("fe80::12345"),
            r#"group "12345" has more than 4 hex digits"#
        );
        assert_eq!(
            reason("fe80::1g"),
            r#"group "1g" has 'g', which is not a hex digit, ':' or '.'"#
        );
        assert_eq!(reason("1::2::3"), "more than one '::'");
        assert_eq!(reason("1:2"), "2 groups of 8 and no '::' for the zeros");
    }

    #[test]
    fn addresses_read_ipv4_forms_then_ipv6_with_a_zone() {
        let addr: IpAddress = "127.1".parse().unwrap();
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(addr.ipv4_mapped().unwrap().to_string(), "::ffff:127.0.0.1");
        let mapped: IpAddress = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(mapped.ipv4(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(mapped.network_order(), None);
        let scoped: IpAddress = "fe80::1%lo".parse().unwrap();
        assert_eq!(scoped.scope_id(), Some(1)); // lo is interface 1 on Linux
        assert_eq!(
            "fe80::1%7".parse::<IpAddress>().unwrap().scope_id(),
            Some(7)
        );
        assert!("::1%lo".parse::<IpAddress>().is_err()); // names only for link-local, as glibc
        assert_eq!("::1%3".parse::<IpAddress>().unwrap().scope_id(), Some(3));
        assert!("fe80::1%".parse::<IpAddress>().is_err());
        assert!("fe80::1%no-such-interface".parse::<IpAddress>().is_err());
        assert!("127.0.0.1%lo".parse::<IpAddress>().is_err());
    }

    #[test]
    fn packed_hex_reads_both_lengths_and_names_bad_digits() {
        let ip = |t: &str| IpAddress::from_packed_hex(t).map(|a| a.to_string());
        assert_eq!(ip("7f000001").unwrap(), "127.0.0.1");
        assert_eq!(ip("7F:00:00:01").unwrap(), "127.0.0.1");
        assert_eq!(
            ip("00000000000000000000ffff01020304").unwrap(),
            "::ffff:1.2.3.4"
        );
        let reason = |t: &str| match IpAddress::from_packed_hex(t).unwrap_err() {
            Error::BadAddress { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("7f0g0001"), "'g' at position 4 is not a hex digit");
        assert_eq!(reason("0x7f0g0001"), "'g' at position 6 is not a hex digit");
        assert_eq!(reason("7f00001"), "7 hex digits: each byte takes two");
        assert_eq!(
            reason("7f0000"),
            "3 bytes: a packed address is 4 bytes (IPv4, 8 hex digits) or 16 (IPv6, 32)"
        );
    }

    /// A second, independent reading of `inet_aton`: split on dots, each part with
    /// `u32::from_str_radix`. Whitespace handling is left out (the strategy has none).
    fn reference_aton(text: &str) -> Option<u32> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 4 {
            return None;
        }
        let mut values = Vec::new();
        for part in &parts {
            let (radix, digits) =
                if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                    (16, h)
                } else if part.len() > 1 && part.starts_with('0') {
                    (8, &part[1..])
                } else {
                    (10, *part)
                };
            if digits.is_empty() && radix != 8 {
                return None;
            }
            if !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            let value = if digits.is_empty() {
                0
            } else {
                u64::from_str_radix(digits, radix).ok()?
            };
            values.push(value);
        }
        let (last, leading) = values.split_last()?;
        if leading.iter().any(|&v| v > 255) || *last > (u64::from(u32::MAX) >> (8 * leading.len()))
        {
            return None;
        }
        let mut address = *last as u32;
        for (i, &byte) in leading.iter().enumerate() {
            address |= (byte as u32) << (24 - 8 * i);
        }
        Some(address)
    }

    proptest! {
        #[test]
        fn aton_agrees_with_a_reference_reading(
            text in "((0[xX])?[0-9a-fA-FxX]{0,9}\\.?){1,5}"
        ) {
            let ours = parse_aton(&text).ok().map(u32::from);
            prop_assert_eq!(ours, reference_aton(&text), "{:?}", text);
        }

        #[test]
        fn aton_reads_every_dotted_quad_back(octets in any::<[u8; 4]>()) {
            let text = Ipv4Addr::from(octets).to_string();
            prop_assert_eq!(aton(&text).unwrap().octets(), octets);
            prop_assert_eq!(ntoa(octets), text);
        }

        #[test]
        fn aton_reads_every_number_in_every_base(n in any::<u32>()) {
            for text in [n.to_string(), format!("0x{n:x}"), format!("0{n:o}")] {
                prop_assert_eq!(u32::from(aton(&text).unwrap()), n, "{}", text);
            }
        }

        #[test]
        fn ipv6_agrees_with_std_on_text_near_the_grammar(text in "[0-9a-fA-F:.]{0,24}") {
            prop_assert_eq!(parse_ipv6(&text).ok(), text.parse::<Ipv6Addr>().ok(), "{:?}", text);
        }

        #[test]
        fn ipv6_agrees_with_std_on_group_shaped_text(
            text in "([0-9a-fA-F]{0,5}:){0,9}[0-9a-f]{0,5}(\\.[0-9]{1,3}){0,4}"
        ) {
            prop_assert_eq!(parse_ipv6(&text).ok(), text.parse::<Ipv6Addr>().ok(), "{:?}", text);
        }

        #[test]
        fn ipv6_reads_what_std_writes(octets in any::<[u8; 16]>()) {
            let ip = Ipv6Addr::from(octets);
            prop_assert_eq!(parse_ipv6(&ip.to_string()), Ok(ip));
        }
    }
}
