//! The command line, as clap derive types. Parsing only: the work is in `cmd/`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use socketkit::{Endpoint, Engine};

const EXIT_CODES: &str = "\
Exit codes (the same for every command):
  0    success (a signal-driven graceful stop included)
  1    other failure
  2    bad usage or arguments
  3    protocol error (bad frame, oversize, a reply that failed verification)
  4    connection refused
  5    timed out
  6    name not found
  7    cannot bind (address in use, permission denied)
  130  forced stop by a second SIGINT or SIGTERM";

const ENDPOINTS: &str = "\
Endpoints: tcp://HOST:PORT, udp://HOST:PORT, unix:///path, unixgram:///path, or a bare
HOST:PORT (TCP). IPv6 goes in brackets: tcp://[::1]:12000; [::] listens on IPv6 and IPv4.
Durations: 500ms, 2s, 1m, or a bare number of seconds.";

/// socketkit: socket servers, clients and tools, after the classic sockets lectures.
///
/// Serve the uppercase service over TCP, UDP and Unix sockets on an iterative or an async
/// engine, and talk to any server from scripts. Data goes to stdout, everything else to stderr.
#[derive(Debug, Parser)]
#[command(name = "socketkit", version, after_help = format!("{ENDPOINTS}\n\n{EXIT_CODES}"))]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace; timestamps on). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Errors only: no "listening on" lines, no informational logs.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a service (default: upper on tcp://127.0.0.1:12000 and udp://127.0.0.1:12000).
    #[command(after_help = format!("{ENDPOINTS}\n\n{EXIT_CODES}"))]
    Serve(ServeArgs),
    /// Send one message (MESSAGE, or all of stdin) and print the reply on stdout.
    ///
    /// Streams (tcp, unix): write the message as given, close the write side, and copy the reply
    /// until the server closes. Datagrams (udp, unixgram): send one datagram, print the one reply.
    /// With --framing line or length, each line of the message is sent as one message, and each
    /// reply message is printed on a line of its own.
    #[command(after_help = format!("{ENDPOINTS}\n\n{EXIT_CODES}"))]
    Send(SendArgs),
    /// Talk to a server interactively, like the slides' clients in a loop.
    ///
    /// Datagrams (udp, unixgram): each line of stdin is one datagram (without its newline),
    /// each reply is printed on its own line; on a terminal each line is prompted with
    /// "Input a lowercase sentence:". Streams (tcp, unix): full duplex like nc: stdin to the
    /// socket, the socket to stdout; after stdin ends the write side is half-closed, and the
    /// command exits when the server closes.
    #[command(after_help = format!("{ENDPOINTS}\n\n{EXIT_CODES}"))]
    Client(ClientArgs),
    /// Load-test a server: verify every reply, report throughput and latency percentiles.
    ///
    /// Modes: pingpong (persistent connections, one request at a time or --pipeline K),
    /// connect (a new connection per request, the slides' client), udp (one datagram per
    /// request; no reply within --timeout is a loss), stream (stream --stream-bytes through the
    /// server and read it all back), idle (open -c connections, one round trip each, then hold
    /// them for --duration). With --rate, latency counts from each request's intended send
    /// time (no coordinated omission). Exit code 3 on a wrong reply, 5 on time-outs or losses.
    #[command(after_help = format!("{ENDPOINTS}\n\n{EXIT_CODES}"))]
    Bench(BenchArgs),
    /// Look up names and addresses with the system resolver, like Python's gethostbyname_ex,
    /// gethostbyaddr and getfqdn.
    ///
    /// A NAME prints its canonical name, its aliases and every address, IPv4 and IPv6
    /// (getaddrinfo with AI_CANONNAME, plus gethostbyname_ex's aliases). An ADDRESS (IPv4, or
    /// IPv6 with an optional %zone) is looked up in reverse, like gethostbyaddr. /etc/hosts and
    /// nsswitch.conf apply, as in Python. --fqdn prints what socket.getfqdn(NAME) would, one
    /// line per NAME (without NAME: this host's).
    #[command(after_help = format!("{RESOLVE_HELP}\n\n{EXIT_CODES}"))]
    Resolve(ResolveArgs),
    /// Show an address in every form: text, packed bytes, the 32-bit integer in network and in
    /// host byte order, and the IPv4-mapped IPv6 form.
    ///
    /// VALUE is read with inet_aton's rules (128.119.40.12; the short forms 127.1 and 10.1.300;
    /// hex and octal parts as in 0x7f.1 and 017.1; a bare number such as 2130706433) or as IPv6
    /// text (::1, ::ffff:1.2.3.4, fe80::1%lo). --packed reads packed bytes in hex instead.
    #[command(after_help = format!("{ADDR_HELP}\n\n{EXIT_CODES}"))]
    Addr(AddrArgs),
    /// Look up a well-known port by service name, or the service on a port number.
    ///
    /// Reads the system's services database (/etc/services, as Python's getservbyname and
    /// getservbyport do), falling back to a built-in table of the classic ports (RFC 1700).
    /// Prints a line as services(5) has it: NAME PORT/PROTOCOL [ALIASES...].
    #[command(after_help = format!("{PORT_HELP}\n\n{EXIT_CODES}"))]
    Port(PortArgs),
    /// List the built-in services with their RFC and well-known port.
    Services {
        /// One JSON object per line (name, rfc, port, summary).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// For example: socketkit completions bash > ~/.local/share/bash-completion/completions/socketkit
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `socketkit serve`.
///
/// Several services in one process: `socketkit serve echo=tcp://127.0.0.1:7007,udp://127.0.0.1:7007
/// daytime=tcp://127.0.0.1:13013`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The services to run: NAME, or NAME=ENDPOINT[,ENDPOINT...] to give a service endpoints
    /// of its own (several services in one process). See `socketkit services`. [default: upper]
    #[arg(value_name = "SERVICE[=ENDPOINTS]", value_parser = parse_service_spec)]
    pub services: Vec<ServiceSpec>,

    /// Where a service given without endpoints listens; repeat for several endpoints.
    /// [default: tcp://127.0.0.1:12000 and udp://127.0.0.1:12000]
    #[arg(short, long = "listen", value_name = "ENDPOINT")]
    pub listen: Vec<Endpoint>,

    /// The engine: async (tokio tasks), sequential (one connection at a time per listener, the
    /// slides' iterative server), threaded (a thread per connection, the slides' concurrent
    /// server) or pool (a fixed pool of worker threads, see --workers).
    #[arg(short, long, default_value = "async", value_parser = engine_parser())]
    pub engine: Engine,

    /// After SIGINT/SIGTERM, how long connections may take to finish: in line and length
    /// framing those between messages are closed at once; raw streams run to the peer's EOF.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub grace: Duration,

    /// Length of the queue of connections not yet accepted (listen's backlog).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub backlog: u32,

    /// Close a connection that sends nothing for this long (ncat's -i; not nc's line interval).
    #[arg(short, long, default_value = "300s", value_parser = parse_duration, value_name = "DUR")]
    pub idle_timeout: Duration,

    /// A message begun (part of a line or frame) must be complete within this time, however
    /// steadily its bytes trickle in.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub message_timeout: Duration,

    /// Close a connection whose peer reads nothing of a reply for this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub write_timeout: Duration,

    /// Connections served at once, on every engine; beyond it, clients wait in the listen queue.
    #[arg(
        short,
        long,
        default_value_t = 10_000,
        value_name = "N",
        visible_alias = "max-conns"
    )]
    pub max_connections: usize,

    /// Datagrams answered per second per source address while other sources wait (a burst of
    /// one second's worth); a source alone is never limited. 0: no limit.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub datagram_rate: u32,

    /// The most input held for messages not yet complete (line and length framing), all
    /// connections of the process together; a connection that would go past it is closed.
    /// A connection's first 4 KiB are not counted.
    #[arg(long, default_value = "64M", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_buffered: u64,

    /// Worker threads of the pool engine.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub workers: usize,

    /// Serve only peers in this range (CIDR or one address); repeatable. IPv4-mapped IPv6
    /// peers match as their IPv4 address. Checked before a byte is read.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Refuse peers in this range (CIDR or one address); repeatable; wins over --allow.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<String>,

    #[command(flatten)]
    pub framing: FramingArgs,
}

/// `socketkit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to load.
    pub endpoint: Endpoint,

    /// The load pattern: pingpong, connect, udp, stream or idle.
    #[arg(short, long, default_value = "pingpong", value_parser = mode_parser())]
    pub mode: socketkit::bench::Mode,

    /// Connections (sockets for udp, concurrent workers for connect).
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    pub connections: usize,

    /// Message size in bytes, the line's newline included.
    #[arg(short, long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,

    /// Requests in flight per connection (pingpong).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub pipeline: usize,

    /// A fixed total rate in requests per second (open model).
    #[arg(short, long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,

    /// Stop after this long [default: 10s when --requests is not given either].
    #[arg(short, long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// Stop after this many requests.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,

    /// Bytes to stream through the server in all (stream mode); K, M, G suffixes allowed.
    #[arg(long, default_value = "64M", value_parser = parse_bytes, value_name = "BYTES")]
    pub stream_bytes: u64,

    /// How long a request may wait for its reply.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// Message content: ascii (lowercase) or unicode (a mix of scripts).
    #[arg(long, default_value = "ascii", value_parser = payload_parser())]
    pub payload: socketkit::bench::Payload,

    /// The reply to expect: upper (the request in upper case) or echo (the request).
    #[arg(long, default_value = "upper", value_parser = expect_parser())]
    pub expect: socketkit::bench::Expect,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub framing: FramingArgs,
}

fn mode_parser() -> impl clap::builder::TypedValueParser<Value = socketkit::bench::Mode> {
    use clap::builder::TypedValueParser;
    let names: Vec<&'static str> = socketkit::bench::Mode::ALL
        .iter()
        .map(|m| m.name())
        .collect();
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse().expect("a listed mode"))
}

fn payload_parser() -> impl clap::builder::TypedValueParser<Value = socketkit::bench::Payload> {
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

fn expect_parser() -> impl clap::builder::TypedValueParser<Value = socketkit::bench::Expect> {
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

/// A byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(['B', 'I']);
    let (number, shift) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 10),
        Some('M') => (&digits[..digits.len() - 1], 20),
        Some('G') => (&digits[..digits.len() - 1], 30),
        _ => (digits, 0),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a byte count like 4096, 64K, 1G"))
}

/// One `SERVICE[=ENDPOINT,...]` argument.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A built-in service's name.
    pub name: String,
    /// Its own endpoints; empty: the `-l` endpoints or the defaults.
    pub endpoints: Vec<Endpoint>,
}

fn parse_service_spec(text: &str) -> Result<ServiceSpec, String> {
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

/// Framing flags, shared by serve, send and client.
#[derive(Debug, Args)]
pub struct FramingArgs {
    /// Message boundaries on streams: raw (none: bytes as they come), line (newline-delimited)
    /// or length (a big-endian length header, then the payload). Datagrams are messages already.
    #[arg(long, default_value = "raw", value_parser = framing_parser())]
    pub framing: socketkit::codec::Framing,

    /// Width of the length header in bytes (length framing): 2 or 4.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = parse_length_bytes)]
    pub length_bytes: u8,

    /// The largest frame in length framing, in bytes; a larger one closes the connection.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_frame: usize,

    /// The longest line in line framing, in bytes; a longer one closes the connection.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_line: usize,
}

/// `socketkit client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server to talk to.
    pub endpoint: Endpoint,

    /// Local address to send from: IP or IP:PORT (port 0 or none: the system picks). `-s` as
    /// in nc.
    #[arg(short = 's', long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Option<SocketAddr>,

    /// How long to wait for the connection, and for each datagram's reply.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// Streams: do not half-close the write side after stdin ends (ncat's --no-shutdown).
    #[arg(long)]
    pub no_shutdown: bool,

    #[command(flatten)]
    pub framing: FramingArgs,
}

/// `socketkit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The server to send to.
    pub endpoint: Endpoint,

    /// The message, sent exactly as given (no newline added). Without it, stdin is sent.
    pub message: Option<std::ffi::OsString>,

    /// Local address to send from: IP or IP:PORT (port 0 or none: the system picks). `-s` as
    /// in nc.
    #[arg(short = 's', long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Option<SocketAddr>,

    /// How long to wait for the connection and for each part of the reply.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// UDP broadcast: set SO_BROADCAST and print every reply that arrives within the timeout,
    /// one line per responder: `ADDRESS REPLY`.
    #[arg(short, long)]
    pub broadcast: bool,

    #[command(flatten)]
    pub framing: FramingArgs,
}

const RESOLVE_HELP: &str = "\
--json prints one object per NAME or ADDRESS, on a line of its own:
  {\"query\": \"localhost\", \"type\": \"forward\", \"name\": \"localhost\", \"aliases\": [],
   \"addresses\": [\"127.0.0.1\"]}
  type: forward (a NAME), reverse (an ADDRESS) or fqdn (--fqdn). name: the canonical name,
  the host name found for the address, or the FQDN. aliases, addresses: lists of strings, not
  present for fqdn.
A failed look-up prints its error line on stderr and the others go on; the exit code is that
of the last failure: 6 name not found, 5 timed out (--timeout), 2 malformed address text.";

const ADDR_HELP: &str = "\
--json prints one object:
  {\"input\": \"128.119.40.12\", \"family\": \"ipv4\", \"address\": \"128.119.40.12\",
   \"scope_id\": null, \"packed\": \"8077280c\", \"network_order\": 2155292684,
   \"host_order\": 203978624, \"ipv4\": \"128.119.40.12\",
   \"ipv4_mapped\": \"::ffff:128.119.40.12\"}
  family: ipv4 or ipv6. scope_id: the %zone's interface index, or null. packed: the bytes in
  network order, as hex. network_order: the packed bytes read as a big-endian integer (the
  address's value, what ntohl gives). host_order: the same bytes read in this machine's byte
  order (s_addr as a C program here sees it; the example is a little-endian machine's). Both
  are null for IPv6. ipv4, ipv4_mapped: the IPv4 address and its ::ffff: form, for IPv4 and
  IPv4-mapped addresses; null otherwise.
Malformed text exits with 2, naming the bad part.";

const PORT_HELP: &str = "\
--json prints one object:
  {\"query\": \"http\", \"name\": \"http\", \"port\": 80, \"protocol\": \"tcp\",
   \"aliases\": [\"www\"], \"source\": \"system\"}
  source: system (the services database) or builtin (socketkit's table of classic ports).
A service that neither knows exits with 6.";

/// `socketkit resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Host names to look up, or addresses to look up in reverse. At least one, except with
    /// --fqdn.
    #[arg(value_name = "NAME|ADDRESS", required_unless_present = "fqdn")]
    pub names: Vec<String>,

    /// Print the fully qualified domain name, as Python's socket.getfqdn() does: the first name
    /// with a dot among the host name and aliases found for NAME's address.
    #[arg(long)]
    pub fqdn: bool,

    /// Give up on a look-up after this long (exit code 5). The resolver's own limits apply too
    /// (RES_OPTIONS="timeout:1 attempts:1", resolv.conf(5)).
    #[arg(
        short = 'w',
        long,
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DUR"
    )]
    pub timeout: Duration,

    /// One JSON object per line (query, type, name, aliases, addresses).
    #[arg(long)]
    pub json: bool,
}

/// `socketkit addr`.
#[derive(Debug, Args)]
pub struct AddrArgs {
    /// An IPv4 address in any of inet_aton's forms, or an IPv6 address.
    #[arg(
        value_name = "VALUE",
        required_unless_present = "packed",
        conflicts_with = "packed"
    )]
    pub value: Option<String>,

    /// Read packed bytes written in hex: 8 digits (IPv4) or 32 (IPv6), e.g. 8077280c.
    #[arg(long, value_name = "HEX")]
    pub packed: Option<String>,

    /// One JSON object (input, family, address, scope_id, packed, network_order, host_order,
    /// ipv4, ipv4_mapped).
    #[arg(long)]
    pub json: bool,
}

/// `socketkit port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// A service name (http, www) or a port number (80).
    #[arg(value_name = "NAME|NUMBER", value_parser = parse_port_query)]
    pub service: PortQuery,

    /// Look the service up for UDP instead of TCP.
    #[arg(short, long)]
    pub udp: bool,

    /// One JSON object (query, name, port, protocol, aliases, source).
    #[arg(long)]
    pub json: bool,
}

/// What `socketkit port` looks up.
#[derive(Debug, Clone)]
pub enum PortQuery {
    /// A service name or alias.
    Name(String),
    /// A port number.
    Number(u16),
}

fn parse_port_query(text: &str) -> Result<PortQuery, String> {
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

impl FramingArgs {
    /// The framing the flags describe.
    pub fn framing(&self) -> socketkit::codec::Framing {
        use socketkit::codec::{Framing, LengthWidth};
        match self.framing {
            Framing::Length(_) if self.length_bytes == 2 => Framing::Length(LengthWidth::U16),
            Framing::Length(_) => Framing::Length(LengthWidth::U32),
            other => other,
        }
    }
}

fn parse_length_bytes(text: &str) -> Result<u8, String> {
    match text {
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!("{text:?}: the length header is 2 or 4 bytes")),
    }
}

fn framing_parser() -> impl clap::builder::TypedValueParser<Value = socketkit::codec::Framing> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["raw", "line", "length"])
        .map(|name| name.parse().expect("a listed framing"))
}

fn engine_parser() -> impl clap::builder::TypedValueParser<Value = Engine> {
    use clap::builder::TypedValueParser;
    let names: Vec<&'static str> = Engine::ALL.iter().map(|e| e.name()).collect();
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse::<Engine>().expect("a listed engine name"))
}

/// ncat's duration syntax: `500ms`, `2s`, `1m`, or a bare (possibly fractional) number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?} is not a duration of zero seconds or more"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 2s or 1m ({e})"))
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
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
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
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
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
