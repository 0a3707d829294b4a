//! The flags' values: what each one accepts, its bounds, and a message that says which rule
//! the text broke (sizes, durations, counts, rates, addresses, and the named choices).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socketkit::{Endpoint, Engine};

pub(super) fn mode_parser() -> impl clap::builder::TypedValueParser<Value = socketkit::bench::Mode>
{
    use clap::builder::TypedValueParser;
    let names: Vec<&'static str> = socketkit::bench::Mode::ALL
        .iter()
        .map(|m| m.name())
        .collect();
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse().expect("a listed mode"))
}

pub(super) fn payload_parser()
-> impl clap::builder::TypedValueParser<Value = socketkit::bench::Payload> {
    use clap::builder::TypedValueParser;
    use socketkit::bench::Payload;
    clap::builder::PossibleValuesParser::new(["ascii", "unicode"]).map(|name| {
        if name == "unicode" {
            Payload::Unicode
        } else {
            Payload::Ascii
        }
    })
}

pub(super) fn expect_parser()
-> impl clap::builder::TypedValueParser<Value = socketkit::bench::Expect> {
    use clap::builder::TypedValueParser;
    use socketkit::bench::Expect;
    clap::builder::PossibleValuesParser::new(["upper", "echo"]).map(|name| {
        if name == "echo" {
            Expect::Echo
        } else {
            Expect::Upper
        }
    })
}

const KIB: u64 = 1 << 10;
const GIB: u64 = 1 << 30;

/// A size (every BYTES flag): a whole number with an optional K, M or G suffix, powers of 1024
/// (`64K` is 65,536; `KB`, `KiB` read the same), from 1 to `max`.
fn parse_size(text: &str, max: u64) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (number, shift) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 10),
        Some('M') => (&digits[..digits.len() - 1], 20),
        Some('G') => (&digits[..digits.len() - 1], 30),
        _ => (digits, 0),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a size like 4096, 64K or 1G".into());
    }
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift));
    match bytes {
        Some(0) => Err("must be at least 1 byte".into()),
        Some(n) if n <= max => Ok(n),
        _ => Err(format!("too large: at most {}", size_text(max))),
    }
}

/// `max` as a person writes it: `1G`, `64K`, or bytes.
fn size_text(max: u64) -> String {
    match max {
        n if n % GIB == 0 => format!("{}G", n / GIB),
        n if n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n % KIB == 0 => format!("{}K", n / KIB),
        n => n.to_string(),
    }
}

/// `bench --stream-bytes`: 1 byte to 1024G (a terabyte streamed is hours of a run).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size(text, 1024 * GIB)
}

/// `serve --max-buffered`: 1 byte to 1024G (a budget, not an allocation).
pub(super) fn parse_budget(text: &str) -> Result<u64, String> {
    parse_size(text, 1024 * GIB)
}

/// A message's size: `bench --size`, `--max-line` and `--max-frame`: 1 byte to 1G (a message
/// is held whole in memory).
pub(super) fn parse_message_size(text: &str) -> Result<usize, String> {
    parse_size(text, GIB).map(|n| n as usize)
}

/// One `SERVICE[=ENDPOINT,...]` argument.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A built-in service's name.
    pub name: String,
    /// Its own endpoints; empty: the `-l` endpoints or the defaults.
    pub endpoints: Vec<Endpoint>,
}

pub(super) fn parse_service_spec(text: &str) -> Result<ServiceSpec, String> {
    let (name, endpoints) = match text.split_once('=') {
        Some((name, list)) => (name, Some(list)),
        None => (text, None),
    };
    if socketkit::service::info(name).is_none() {
        let names: Vec<_> = socketkit::service::SERVICES
            .iter()
            .map(|s| s.name)
            .collect();
        return Err(format!(
            "unknown service {name:?} (expected one of {})",
            names.join(", ")
        ));
    }
    let endpoints = match endpoints {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|e| e.parse::<Endpoint>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
    };
    Ok(ServiceSpec {
        name: name.to_string(),
        endpoints,
    })
}

/// A client's endpoint: a bare PORT is localhost:PORT.
pub(super) fn parse_connect_endpoint(text: &str) -> Result<Endpoint, String> {
    Endpoint::parse(text, socketkit::endpoint::Role::Connect).map_err(|e| e.to_string())
}

/// What `socketkit port` looks up.
#[derive(Debug, Clone)]
pub enum PortQuery {
    /// A service name or alias.
    Name(String),
    /// A port number.
    Number(u16),
}

pub(super) fn parse_port_query(text: &str) -> Result<PortQuery, String> {
    if text.is_empty() {
        return Err("empty service name".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(PortQuery::Number)
            .map_err(|_| format!("{text:?} is not a port number (0 to 65535)"));
    }
    Ok(PortQuery::Name(text.to_string()))
}

pub(super) fn parse_length_bytes(text: &str) -> Result<u8, String> {
    match text {
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!("{text:?}: the length header is 2 or 4 bytes")),
    }
}

pub(super) fn framing_parser()
-> impl clap::builder::TypedValueParser<Value = socketkit::codec::Framing> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["raw", "line", "length"])
        .map(|name| name.parse().expect("a listed framing"))
}

pub(super) fn engine_parser() -> EngineParser {
    EngineParser
}

/// `-e/--engine`: an engine name, listed in `--help` and completions like any possible value;
/// anything else gets the engines and, since nc and ncat users type `-e PROGRAM`, where a
/// program goes instead.
#[derive(Debug, Clone, Copy)]
pub(super) struct EngineParser;

impl clap::builder::TypedValueParser for EngineParser {
    type Value = Engine;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Engine, clap::Error> {
        let text = value.to_string_lossy();
        text.parse::<Engine>().map_err(|unknown| {
            cmd.clone().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "-e/--engine: {unknown}. -e is the engine here, not nc's -e PROGRAM: to \
                     serve a program, put it after --: socketkit serve -- {text} [ARGS...]"
                ),
            )
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            Engine::ALL
                .into_iter()
                .map(|e| clap::builder::PossibleValue::new(e.name())),
        ))
    }
}

/// A time-out (or a run's length): ncat's syntax (`500ms`, `2s`, `1m`, or a bare, possibly
/// fractional, number of seconds), more than 0 and at most [`MAX_TIMEOUT`]. The rule for every
/// duration flag but `--grace`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_text(text)?;
    if duration.is_zero() {
        return Err("must be more than 0 (0 never means \"no limit\")".into());
    }
    Ok(duration)
}

/// `--grace`: like a time-out, but 0 is allowed and means "close connections in flight at once".
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    parse_duration_text(text)
}

/// The longest duration a flag takes, as the library's limit.
const MAX_TIMEOUT: Duration = socketkit::MAX_TIMEOUT;

/// A duration of zero or more, at most [`MAX_TIMEOUT`], with a message that says which rule the
/// text broke.
fn parse_duration_text(text: &str) -> Result<Duration, String> {
    let too_large = || "too large: at most 365d (a year)".to_string();
    if let Ok(secs) = text.trim().parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err("not a duration of 0 or more".into());
        }
        if secs > MAX_TIMEOUT.as_secs_f64() {
            return Err(too_large());
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    let duration = humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_large(),
        e => format!("not a duration like 500ms, 2s or 1m ({e})"),
    })?;
    if duration > MAX_TIMEOUT {
        return Err(too_large());
    }
    Ok(duration)
}

/// A count (`-m`, `--workers`, `--backlog`): a whole number from 1 to `max`.
fn parse_count(text: &str, max: u64) -> Result<u64, String> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    match digits.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("too large: at most {max}")),
    }
}

/// `-m/--max-connections`: 1 to 1,048,576 (2^20, Linux's default `fs.nr_open`: the most
/// descriptors one process may hold).
pub(super) fn parse_max_connections(text: &str) -> Result<usize, String> {
    parse_count(text, 1 << 20).map(|n| n as usize)
}

/// `--workers`: 1 to 65,536 threads.
pub(super) fn parse_workers(text: &str) -> Result<usize, String> {
    parse_count(text, 1 << 16).map(|n| n as usize)
}

/// `--backlog`: 1 to 2,147,483,647 (listen(2) takes an int; the kernel caps it at
/// `net.core.somaxconn` anyway).
pub(super) fn parse_backlog(text: &str) -> Result<u32, String> {
    parse_count(text, i32::MAX as u64).map(|n| n as u32)
}

/// `bench --pipeline`: 1 to 65,536 requests in flight per connection.
pub(super) fn parse_pipeline(text: &str) -> Result<usize, String> {
    parse_count(text, 1 << 16).map(|n| n as usize)
}

/// `bench -n/--requests`: at least 1.
pub(super) fn parse_requests(text: &str) -> Result<u64, String> {
    parse_count(text, u64::MAX)
}

/// `bench -r/--rate`: requests a second, more than 0 (fractions allowed: 0.5 is one every 2 s)
/// and at most 10,000,000.
pub(super) fn parse_request_rate(text: &str) -> Result<f64, String> {
    const MAX: f64 = 10_000_000.0;
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number of requests a second".to_string())?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err("must be more than 0".into());
    }
    if rate > MAX {
        return Err(format!("too large: at most {MAX}"));
    }
    Ok(rate)
}

/// `--datagram-rate`: a whole number of datagrams per second; 0 means no limit.
pub(super) fn parse_rate(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    digits
        .parse::<u32>()
        .map_err(|_| format!("too large: at most {}", u32::MAX))
}

/// `ping -c`: at least 1 request.
pub(super) fn parse_ping_count(text: &str) -> Result<u64, String> {
    parse_count(text, u64::MAX)
}

/// `ping -i`: 0 or more, as iputils takes it (0: the next request as soon as the last is
/// sent; the library refuses anything under 2 ms to a user other than root).
pub(super) fn parse_ping_interval(text: &str) -> Result<Duration, String> {
    parse_duration_text(text)
}

/// `ping -s`: 0 to 65,527 bytes of payload (IPv6's limit; the library refuses more than
/// 65,507 for an IPv4 target, once the name has resolved).
pub(super) fn parse_ping_size(text: &str) -> Result<usize, String> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number of bytes".into());
    }
    match digits.parse::<usize>() {
        Ok(n) if n <= socketkit::ping::MAX_PAYLOAD_V6 => Ok(n),
        _ => Err(format!(
            "too large: at most {} bytes over IPv4, {} over IPv6",
            socketkit::ping::MAX_PAYLOAD_V4,
            socketkit::ping::MAX_PAYLOAD_V6
        )),
    }
}

/// `on` or `off` (`--multicast-loop`).
pub(super) fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// An interface address or name (`--multicast-if`); whether it exists is checked when joining.
pub(super) fn parse_multicast_if(
    text: &str,
) -> Result<socketkit::multicast::MulticastInterface, String> {
    text.parse().map_err(|e: socketkit::Error| match e {
        socketkit::Error::BadAddress { reason, .. } => reason,
        other => other.to_string(),
    })
}

pub(super) fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT (IPv6 as [::1]:PORT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_ncat() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("365d"), Ok(MAX_TIMEOUT));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_time_out_is_more_than_0_and_at_most_a_year_and_only_grace_may_be_0() {
        for zero in ["0", "0.0", "0s", "0ms", "0.0000000001"] {
            let err = parse_duration(zero).unwrap_err();
            assert!(err.contains("more than 0"), "{zero}: {err}");
            assert_eq!(parse_grace(zero), Ok(Duration::ZERO), "{zero}");
        }
        for huge in [
            "99999999999999999999",
            "99999999999999999999s",
            "366d",
            "1e400",
            "inf",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.starts_with("too large"), "{huge}: {err}");
            assert!(parse_grace(huge).unwrap_err().starts_with("too large"));
        }
        assert!(
            parse_duration("nan")
                .unwrap_err()
                .starts_with("not a duration")
        );
    }

    #[test]
    fn counts_are_at_least_1_and_say_when_too_large() {
        assert_eq!(parse_max_connections("1"), Ok(1));
        assert_eq!(parse_max_connections("1048576"), Ok(1 << 20));
        assert_eq!(parse_workers("65536"), Ok(1 << 16));
        assert_eq!(parse_backlog("2147483647"), Ok(i32::MAX as u32));
        for parse in [
            |t| parse_max_connections(t).map(|n| n as u64),
            |t| parse_workers(t).map(|n| n as u64),
            |t| parse_backlog(t).map(u64::from),
        ] {
            assert_eq!(parse("0"), Err("must be at least 1".into()));
            assert!(
                parse("99999999999999999999")
                    .unwrap_err()
                    .starts_with("too large")
            );
            assert_eq!(parse("ten"), Err("not a whole number".into()));
            assert_eq!(parse("-1"), Err("not a whole number".into()));
        }
        assert_eq!(
            parse_max_connections("1048577"),
            Err("too large: at most 1048576".into())
        );
        assert_eq!(parse_rate("0"), Ok(0)); // a rate: 0 is "no limit"
        assert!(
            parse_rate("4294967296")
                .unwrap_err()
                .starts_with("too large")
        );
    }

    #[test]
    fn bind_takes_an_address_with_or_without_port() {
        assert_eq!(parse_bind("127.0.0.1"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_bind("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert!(parse_bind("localhost").is_err());
    }

    #[test]
    fn byte_counts_take_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64kb"), Ok(64 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1024G"), Ok(1 << 40));
        assert!(parse_bytes("lots").is_err());
        for bad in ["", "K", "1.5K", "-1", "1T", "1BB"] {
            assert_eq!(
                parse_bytes(bad),
                Err("not a size like 4096, 64K or 1G".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_size_flag_reads_the_same_syntax_with_its_own_bound() {
        let parse = parse_message_size;
        assert_eq!(parse("64"), Ok(64));
        assert_eq!(parse("64K"), Ok(64 << 10));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("10G"), Err("too large: at most 1G".into()));
        assert_eq!(parse("0"), Err("must be at least 1 byte".into()));
        assert_eq!(parse("0K"), Err("must be at least 1 byte".into()));
        assert_eq!(parse_bytes("1025G"), Err("too large: at most 1024G".into()));
        assert!(
            parse_bytes("99999999999999999999")
                .unwrap_err()
                .starts_with("too large")
        );
        assert!(
            parse_bytes("17179869184G")
                .unwrap_err()
                .starts_with("too large")
        ); // overflows u64
    }
}
