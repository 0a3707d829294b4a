//! The command line, as clap derive types. Parsing only: the work is in `cmd/`, and what each
//! flag's value accepts is in `values`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use socketkit::{Endpoint, Engine};

mod dump;
mod limits;
mod listen;
mod relay;
mod tls;
mod values;

pub use dump::DumpArgs;
pub use limits::ServerLimitArgs;
pub use listen::ListenArgs;
pub use relay::RelayArgs;
pub use tls::{TlsClientArgs, TlsServerArgs};
pub use values::{PortQuery, ServiceSpec};
use values::{
    engine_parser, expect_parser, framing_parser, mode_parser, parse_bind, parse_budget,
    parse_bytes, parse_connect_endpoint, parse_duration, parse_length_bytes, parse_max_connections,
    parse_message_size, parse_multicast_if, parse_on_off, parse_ping_count, parse_ping_interval,
    parse_ping_size, parse_pipeline, parse_port_query, parse_rate, parse_request_rate,
    parse_requests, parse_service_spec, parse_workers, payload_parser,
};

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
  8    TLS handshake failed (unknown issuer, name mismatch, expired, not TLS)
  130  forced stop by a second SIGINT, SIGTERM or SIGHUP";

const ENDPOINTS: &str = "\
Endpoints: tcp://HOST:PORT, udp://HOST:PORT, unix:///path, unixgram:///path, or a bare
HOST:PORT (TCP). IPv6 goes in brackets: tcp://[::1]:12000; [::] listens on IPv6 and IPv4.
A bare PORT (12000, udp://7007) is 127.0.0.1:PORT for serve, localhost:PORT for clients;
PORT may be a service name (localhost:http, udp://127.0.0.1:echo).
unix://@name and unixgram://@name are Linux abstract sockets (no file; ./@name is a file).
unixpacket:///path is a Unix SOCK_SEQPACKET socket: connected like a stream, each record one
message (no --framing); a record over 65,527 bytes closes its connection unanswered.
udp://GROUP:PORT with GROUP in 224.0.0.0/4 or ff00::/8 is a multicast group: serve joins it.
tls://HOST:PORT is TLS over TCP (serve: async engine only, with --tls-cert/--tls-key or
--tls-self-signed; clients check the certificate against the system's roots or --tls-ca).";

const VALUES: &str = "\
Values, the same rule for every flag of a kind (anything else is a usage error, exit 2):
  DUR    500ms, 2s, 1m, or a bare number of seconds. Every time-out (-w, -i,
         --message-timeout, --write-timeout) and bench's -d are more than 0 and at most
         365d; 0 is refused, never \"no time-out\". --grace alone may be 0: close at once.
  N      counts (-m, --workers, --threads, --backlog) are at least 1; --datagram-rate 0 means no limit.
  BYTES  a number with an optional K, M or G suffix, powers of 1024 (64K = 65536), at
         least 1, at most 1G (--max-line, --max-frame, bench --size) or 1024G
         (bench --stream-bytes).";

const SHORT_FLAGS: &str = "\
Short flags mean one thing in every command, as in nc and ncat:
  -s ADDR  the local (source) address to send from (send, client: nc's -s)
  -w DUR   the time-out for a connection, a reply or a look-up (send, client, bench,
           resolve: nc's -w)
  -l ENDP  an endpoint to listen on (serve)
  -i DUR   the idle time-out (serve: ncat's -i, not nc's interval between lines)
  -u       UDP (port --udp; listen -u: a bare port is UDP, nc's -lu)
  -p PORT  the port to listen on (listen: nc's -l -p)
  -k       keep listening for the next peer (listen: nc's -k)
  -b       broadcast (send: nc's -b)
  -e NAME  the engine (serve; not nc's -e PROGRAM: a program goes after --,
           serve -- PROGRAM ARGS...)
  -v, -q   more logs, errors only (every command; -q is not nc's -q SECS)
One letter differs by command: -m is serve's --max-connections (ncat's -m) and bench's
--mode. bench also takes the load generators' -c connections, -n requests, -d duration and
-r rate (ab, hey, wrk). ping is the one command whose short flags follow iputils ping
rather than nc, as its users type them: -c count, -i interval, -W per-reply time-out,
-w deadline, -s payload size, -n numeric.";

/// socketkit: socket servers, clients and tools, after the classic sockets lectures.
///
/// Serve the uppercase service over TCP, UDP and Unix sockets on an iterative or an async
/// engine, and talk to any server from scripts. Data goes to stdout, everything else to stderr.
#[derive(Debug, Parser)]
#[command(
    name = "socketkit",
    version,
    after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"),
    after_long_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{SHORT_FLAGS}\n\n{EXIT_CODES}")
)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace; timestamps on). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Errors only: no "listening on" lines, no informational logs.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// The log lines' format on stderr: human, or json (one JSON object per line, for log
    /// shippers: timestamp, level, fields, message).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The format of the log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a service (default: upper on tcp://127.0.0.1:12000 and udp://127.0.0.1:12000).
    ///
    /// SIGINT, SIGTERM or SIGHUP (a closing terminal) stops it gracefully: it stops accepting,
    /// lets connections in flight finish within --grace, closes the rest and exits 0; a second
    /// signal stops at once with 130. Unix socket files are removed on either path, each only
    /// if it is still the socket this server made.
    ///
    /// serve [OPTIONS] -- PROGRAM [ARGS...] serves a program instead of a service (inetd,
    /// tcpserver, ncat -e, socat EXEC:): each connection runs PROGRAM with the connection on its
    /// stdin and stdout, its stderr this server's; each datagram runs it once, the datagram on
    /// its stdin, its stdout the reply. It serves the program to whoever may connect: the
    /// default listen address is loopback; use --allow/--deny before listening elsewhere. No
    /// shell runs unless you write one (-- sh -c '...').
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Serve(ServeArgs),
    /// Send one message (MESSAGE, or all of stdin) and print the reply on stdout.
    ///
    /// Streams (tcp, unix): write the message as given, close the write side, and copy the reply
    /// until the server closes. Datagrams (udp, unixgram): send one datagram, print the one reply.
    /// Sequenced packets (unixpacket): send one record, close the write side, print every reply
    /// record until the server closes.
    /// With --framing line or length, each line of the message is sent as one message, and each
    /// reply message is printed on a line of its own.
    ///
    /// When send stops waiting (streams), the first of: the server closes (exit 0); with
    /// --quit-after DUR, the message is all sent and nothing has arrived for DUR (exit 0);
    /// nothing arrives for -w (exit 5); --max-time passes since the start (exit 5). With
    /// --no-wait it exits 0 as soon as the message is sent. A reset by the server before any
    /// reply exits 4, after part of one 1.
    ///
    /// To a multicast group (udp://GROUP:PORT, GROUP in 224.0.0.0/4 or ff00::/8), and with
    /// --broadcast, it prints every reply that arrives within -w, one line per responder:
    /// `ADDRESS REPLY`.
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Send(SendArgs),
    /// Talk to a server interactively, like the slides' clients in a loop.
    ///
    /// Datagrams (udp, unixgram): each line of stdin is one datagram (without its newline),
    /// each reply is printed on its own line; on a terminal each line is prompted with
    /// "Input a lowercase sentence:". Streams (tcp, unix): full duplex like nc: stdin to the
    /// socket, the socket to stdout; after stdin ends the write side is half-closed, and the
    /// command exits when the server closes. Sequenced packets (unixpacket): each line is one
    /// record and each reply record is printed on its own line, full duplex.
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Client(ClientArgs),
    /// Load-test a server: verify every reply, report throughput and latency percentiles.
    ///
    /// Modes: pingpong (persistent connections, one request at a time or --pipeline K),
    /// connect (a new connection per request, the slides' client), udp (one datagram per
    /// request; no reply within --timeout is a loss), stream (stream --stream-bytes through the
    /// server and read it all back), idle (open -c connections, one round trip each, then hold
    /// them for --duration). With --rate, latency counts from each request's intended send
    /// time (no coordinated omission), and "sched lag" shows how late requests actually left.
    /// Exit code 3 on a wrong reply, 5 on time-outs or losses, 4 when every error was a
    /// refusal (or a reset before any reply), 1 on other errors or when nothing was answered.
    /// --plot draws the run as an SVG; --hdr-log keeps its histograms as an HdrHistogram log,
    /// which `socketkit report` adds up across runs and machines.
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Bench(BenchArgs),
    /// Look up names and addresses with the system resolver, like Python's gethostbyname_ex,
    /// gethostbyaddr and getfqdn.
    ///
    /// A NAME prints its canonical name, its aliases and every address, IPv4 and IPv6
    /// (getaddrinfo with AI_CANONNAME, plus gethostbyname_ex's aliases). An ADDRESS (IPv4, or
    /// IPv6 with an optional %zone) is looked up in reverse, like gethostbyaddr. /etc/hosts and
    /// nsswitch.conf apply, as in Python. --fqdn prints what socket.getfqdn(NAME) would, one
    /// line per NAME (without NAME: this host's).
    #[command(after_help = format!("{RESOLVE_HELP}\n\n{VALUES}\n\n{EXIT_CODES}"))]
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
    /// Send ICMP echo requests to HOST and print the replies, like iputils ping (SOCK_RAW).
    ///
    /// Uses an unprivileged ICMP datagram socket where net.ipv4.ping_group_range holds the
    /// process's group, else a raw socket (root or CAP_NET_RAW), as iputils does; when neither
    /// is allowed the error names both ways. Output and statistics are iputils': one line per
    /// reply, then the summary (rtt min/avg/max/mdev, mdev = sqrt(mean(t²) - mean(t)²)).
    /// SIGINT or SIGTERM stops it and prints the summary. The short flags are iputils', not
    /// nc's: -w is the overall deadline here, -W the time-out per reply, -s the payload size.
    ///
    /// Exit 0 when a reply came, 5 when none did, 6 for a HOST that does not resolve, 2 for a
    /// size over 65507 (IPv4) or 65527 (IPv6), or an interval under 2ms for a user other
    /// than root, 1 when neither kind of ICMP socket may be opened.
    #[command(after_help = format!("{PING_HELP}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Ping(PingArgs),
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
    /// Wait for a peer and talk to it over stdin and stdout, like nc -l.
    ///
    /// Streams (tcp, unix): wait for one peer, copy stdin to it and it to stdout, full duplex;
    /// half-close after stdin ends (unless --no-shutdown); exit when both ends are done. -k
    /// takes the next peer after it, one at a time. Datagrams (udp, unixgram): print each
    /// datagram as it comes, and send each line of stdin (its newline kept) to whoever sent
    /// the last one; runs until stopped, or until -i passes without a datagram (exit 5).
    /// The "listening on" line gives the real port when 0 was asked for; -v names each peer.
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Listen(ListenArgs),
    /// Relay each peer of LISTEN to TARGET, both ways, like socat TCP-LISTEN:a,fork TCP:b.
    ///
    /// Every accepted peer gets its own connection to TARGET; bytes are copied both ways, and
    /// a half-close on either side is carried to the other. Streams relay to streams across
    /// kinds (tcp to unix, unix to tcp). It runs on the async engine with serve's limits:
    /// --max-connections, the time-outs, --allow/--deny, and the same graceful stop on
    /// SIGINT, SIGTERM or SIGHUP. A TARGET that refuses or does not answer within -w closes
    /// that peer with one log line; the relay goes on. A TARGET that is the relay's own
    /// listening address is refused at start (exit 2). udp:// relays to udp:// with one upstream
    /// socket per client (so replies reach the client that asked), closed after -i without
    /// traffic either way; -m caps the clients.
    #[command(after_help = format!("{ENDPOINTS}\n\n{VALUES}\n\n{EXIT_CODES}"))]
    Relay(RelayArgs),
    /// Add up bench runs (from several machines, or one after another) into one report.
    ///
    /// Reads `bench --hdr-log` logs or `bench --json` outputs, adds their histograms (never
    /// averaging percentiles), and prints the report as bench does (or --json), listing what was
    /// merged. Runs whose parameters differ (mode, endpoint, connections, size, pipeline, rate)
    /// are merged only with --force. Counts, connections and rates are summed; the elapsed
    /// time is the longest run's, as for runs that went at the same time. Exit 2 for a file
    /// that is not such a log (the error names its line) or runs that differ.
    #[command(after_help = EXIT_CODES)]
    Report(ReportArgs),
}

/// `socketkit report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The runs: `bench --hdr-log` files, or `bench --json` outputs (one run a line).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,

    /// Merge runs whose parameters differ.
    #[arg(long)]
    pub force: bool,

    /// Print the merged report as one JSON object (bench's fields, and "merged": the runs).
    #[arg(long)]
    pub json: bool,

    /// Draw the merged runs as an SVG picture in FILE, as bench --plot does.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
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

    /// After --: a program to run for each connection or datagram instead of a service, with
    /// its arguments (no shell: write sh -c '...' for one). It listens on the -l endpoints or
    /// the defaults; not with SERVICE names. Its environment names the peer as UCSPI does:
    /// PROTO=TCP, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT (tcp); PROTO=UDP and
    /// UDP* alike (udp); PROTO=UNIX, UNIXLOCALPATH, UNIXLOCALPID/UID/GID, UNIXREMOTEPID/EUID/EGID
    /// (unix streams), UNIXREMOTEPATH (a named peer). A datagram's run has --message-timeout
    /// to write its reply (within the datagram limit) and exit, else no reply. --max-connections bounds
    /// the programs running; at the end of --grace the rest get SIGTERM, and SIGKILL 1 s later.
    /// The async engine only (the others refuse it, exit 2). A missing program: exit 2.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub program: Vec<std::ffi::OsString>,

    /// Where a service given without endpoints listens; repeat for several endpoints.
    /// [default: tcp://127.0.0.1:12000 and udp://127.0.0.1:12000]
    #[arg(short, long = "listen", value_name = "ENDPOINT")]
    pub listen: Vec<Endpoint>,

    /// The engine: async (tokio tasks), sequential (one connection at a time per listener, the
    /// slides' iterative server), threaded (a thread per connection, the slides' concurrent
    /// server), pool (worker threads that serve connections with bytes to read, and a
    /// poller that holds them in between; see --workers) or uring (io_uring, a ring per
    /// thread, see --threads). Where io_uring is refused (seccomp, kernel.io_uring_disabled,
    /// Linux before 6.0, or SOCKETKIT_URING=refuse in the environment) uring falls back to
    /// async with one warning line, and the `listening on` line names the engine that runs.
    /// Not nc's -e PROGRAM: a program goes after -- (serve -- PROGRAM ARGS...), and runs on
    /// async only. tls:// runs on async only too (the others refuse it, exit 2).
    #[arg(short, long, default_value = "async", value_parser = engine_parser())]
    pub engine: Engine,

    #[command(flatten)]
    pub limits: ServerLimitArgs,

    /// Datagrams answered per second per source address while other sources wait (a burst of
    /// one second's worth); a source alone is never limited. 0: no limit (a rate, not a count).
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = parse_rate)]
    pub datagram_rate: u32,

    /// The most input held for messages not yet complete (line and length framing), all
    /// connections of the process together; a connection that would go past it is closed.
    /// A connection's first 4 KiB are not counted. 1 to 1024G.
    #[arg(long, default_value = "64M", value_parser = parse_budget, value_name = "BYTES")]
    pub max_buffered: u64,

    /// Worker threads of the pool engine: 1 to 65536. A connection holds one only while it has
    /// bytes to read or a reply to write; --max-connections bounds the connections open.
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = parse_workers)]
    pub workers: usize,

    /// Threads of the uring engine (a ring each) and of the async engine's runtime: 1 to
    /// 65536. [default: the CPUs this process may run on]
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub threads: Option<usize>,

    /// The interface on which udp://GROUP:PORT listeners (224.0.0.0/4, ff00::/8) join their
    /// multicast group: an address of it, or its name (eth0) [default: the system's choice; an
    /// IPv6 group takes the endpoint's zone, udp://[ff02::1%eth0]:PORT]. Refused without a
    /// group listener (exit 2); an unknown interface exits 6.
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_multicast_if)]
    pub multicast_if: Option<socketkit::multicast::MulticastInterface>,

    /// Serve Prometheus metrics at http://ENDPOINT/metrics (a tcp:// endpoint, e.g.
    /// tcp://127.0.0.1:9100): connections, datagrams, bytes, ends by cause, durations, per
    /// service and listener, and process metrics. Only GET /metrics is answered (404
    /// otherwise); scrapers are bounded in number and time and never slow serving.
    #[arg(long, value_name = "ENDPOINT")]
    pub metrics: Option<Endpoint>,

    #[command(flatten)]
    pub framing: FramingArgs,

    #[command(flatten)]
    pub dump: DumpArgs,

    #[command(flatten)]
    pub tls: TlsServerArgs,
}

/// `socketkit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to load.
    pub endpoint: Endpoint,

    /// The load pattern: pingpong, connect, udp, stream or idle [default: udp for a udp://
    /// endpoint, pingpong otherwise].
    #[arg(short, long, value_parser = mode_parser())]
    pub mode: Option<socketkit::bench::Mode>,

    /// Connections (sockets for udp, concurrent workers for connect).
    #[arg(short, long, default_value = "1", value_parser = parse_max_connections, value_name = "N")]
    pub connections: usize,

    /// Message size in bytes, the line's newline included: 1 to 1G (K, M, G: powers of 1024).
    /// Long form only: -s is the source address wherever a command has one.
    #[arg(long, default_value = "64", value_parser = parse_message_size, value_name = "BYTES")]
    pub size: usize,

    /// Requests in flight per connection (pingpong).
    #[arg(long, default_value = "1", value_parser = parse_pipeline, value_name = "K")]
    pub pipeline: usize,

    /// A fixed total rate in requests per second (open model).
    #[arg(short, long, value_parser = parse_request_rate, value_name = "PER_SECOND")]
    pub rate: Option<f64>,

    /// Stop after this long [default: 10s when --requests is not given either].
    #[arg(short, long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// Stop after this many requests.
    #[arg(short = 'n', long, value_parser = parse_requests, value_name = "N")]
    pub requests: Option<u64>,

    /// Bytes to stream through the server in all (stream mode): 1 to 1024G (K, M, G: powers of
    /// 1024).
    #[arg(long, default_value = "64M", value_parser = parse_bytes, value_name = "BYTES")]
    pub stream_bytes: u64,

    /// How long a connect, and a request for its whole reply (its writing included), may take.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// Message content: ascii (lowercase) or unicode (a mix of scripts).
    #[arg(long, default_value = "ascii", value_parser = payload_parser())]
    pub payload: socketkit::bench::Payload,

    /// The reply to expect: upper (the request in upper case) or echo (the request).
    #[arg(long, default_value = "upper", value_parser = expect_parser())]
    pub expect: socketkit::bench::Expect,

    /// The load generator's engine: async (tokio tasks, every mode) or uring (io_uring, one
    /// ring per thread, so the load generator costs less CPU per request: pingpong on tcp://
    /// and unix://, and udp; not tls://, no --rate). Both count, time and record every request
    /// the same way. Where io_uring is refused (or SOCKETKIT_URING=refuse is set) the load
    /// runs on async, with one warning line, as serve -e uring does; the report names the
    /// engine that ran.
    #[arg(short, long, default_value = "async", value_parser = bench_engine_parser())]
    pub engine: Engine,

    /// Print the report as one JSON object (with the load generator's own CPU time: own_cpu_s,
    /// own_cpu_per_request_us; and "engine", the engine the load ran on).
    #[arg(long)]
    pub json: bool,

    /// Draw the run as an SVG picture in FILE: the latency percentile distribution, then
    /// throughput and p99 (and the schedule lag's p99 with --rate) second by second. A run
    /// longer than 10 minutes is drawn by intervals of 2, 4, 8 ... seconds (adjacent seconds
    /// added, no reply lost), at most 600 points, so its memory stays bounded however long
    /// the run: from 20 MB (sub-millisecond latencies) to at most 180 MB (latencies up to
    /// 60 s). The summary's percentiles stay exact.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,

    /// Keep the run's latency histograms in FILE as an HdrHistogram V2 interval log (one
    /// interval a second; schedule lags tagged "lag"), for `socketkit report` and
    /// HdrHistogram's own tools. Written as the run goes, each second as it ends (none is
    /// held in memory), the run's results last: a log without its closing line was cut
    /// short.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub framing: FramingArgs,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// bench's `-e/--engine`: async or uring.
fn bench_engine_parser() -> impl clap::builder::TypedValueParser<Value = Engine> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new([Engine::Async.name(), Engine::Uring.name()])
        .map(|name: String| name.parse::<Engine>().expect("a listed engine"))
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

    /// The largest frame in length framing, in bytes; a larger one closes the connection (a
    /// longer input line of send or client is refused, exit 2). 1 to 1G (K, M, G: powers of
    /// 1024).
    #[arg(long, default_value = "1M", value_name = "BYTES", value_parser = parse_message_size)]
    pub max_frame: usize,

    /// The longest line in line framing, in bytes; a longer one closes the connection (a
    /// longer input line of send or client is refused, exit 2). 1 to 1G (K, M, G: powers of
    /// 1024).
    #[arg(long, default_value = "64K", value_name = "BYTES", value_parser = parse_message_size)]
    pub max_line: usize,
}

/// `socketkit client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server to talk to (a bare PORT is localhost:PORT).
    #[arg(value_parser = parse_connect_endpoint)]
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

    /// Streams: after stdin ends, exit (0) once nothing has arrived for DUR, though the server
    /// keeps the connection open (nc's -q).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub quit_after: Option<Duration>,

    #[command(flatten)]
    pub framing: FramingArgs,

    #[command(flatten)]
    pub dump: DumpArgs,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

/// `socketkit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The server to send to (a bare PORT is localhost:PORT).
    #[arg(value_parser = parse_connect_endpoint)]
    pub endpoint: Endpoint,

    /// The message, sent exactly as given (no newline added). Without it, stdin is sent.
    pub message: Option<std::ffi::OsString>,

    /// Local address to send from: IP or IP:PORT (port 0 or none: the system picks). `-s` as
    /// in nc.
    #[arg(short = 's', long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Option<SocketAddr>,

    /// How long to wait for the connection, and for each part of the reply: the longest
    /// silence between two reads (exit 5). It does not bound the whole exchange: see
    /// --max-time.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// Streams: once the message is all sent, exit 0 when nothing has arrived for DUR (nc's
    /// -q), for a server that replies but keeps the connection open. Replaces -w as the bound
    /// on silence from then on.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub quit_after: Option<Duration>,

    /// Send the message and exit 0 at once, reading no reply (discard-like services). On
    /// tls:// it first waits, within -w, for the records to go out and the server to close,
    /// its bytes dropped: exiting sooner would cut the stream short.
    #[arg(long, conflicts_with_all = ["quit_after", "broadcast"])]
    pub no_wait: bool,

    /// Bound the whole exchange, connecting included, however steadily the reply trickles in
    /// (curl's --max-time); exit 5 when it passes.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub max_time: Option<Duration>,

    /// UDP broadcast: set SO_BROADCAST and print every reply that arrives within the timeout,
    /// one line per responder: `ADDRESS REPLY`. A multicast group needs no flag (see below).
    #[arg(short, long)]
    pub broadcast: bool,

    /// Multicast: the request's hop limit (IP_MULTICAST_TTL, IPV6_MULTICAST_HOPS), 0 to 255
    /// [default: the system's, 1: this subnet]. Only with a group target: a udp:// endpoint in
    /// 224.0.0.0/4 or ff00::/8, to which send prints every member's reply, one line per
    /// responder, as --broadcast does.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=255))]
    pub ttl: Option<u32>,

    /// Multicast: whether members on this host get the request too (IP_MULTICAST_LOOP) [default:
    /// the system's, on]. Only with a group target.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub multicast_loop: Option<bool>,

    #[command(flatten)]
    pub framing: FramingArgs,

    #[command(flatten)]
    pub dump: DumpArgs,

    #[command(flatten)]
    pub tls: TlsClientArgs,
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

const PING_HELP: &str = "\
--json prints one object per line (NDJSON): one per reply, then a summary.
  {\"type\": \"reply\", \"from\": \"127.0.0.1\", \"bytes\": 64, \"seq\": 1, \"ttl\": 64,
   \"time_ms\": 0.045}
  type: reply, duplicate (a further reply to a request already answered: iputils' DUP!),
  late (a reply after its -W time-out: counted as late, not received) or error (an ICMP
  error about a request: from, seq, message; from is null for a send that failed).
  ttl: the TTL or IPv6 hop limit, or null when unknown. time_ms: the round trip, the
  number the text line prints (time=0.045 ms).
  {\"type\": \"summary\", \"host\": \"localhost\", \"address\": \"127.0.0.1\",
   \"socket\": \"raw\", \"transmitted\": 3, \"received\": 3, \"duplicates\": 0,
   \"late\": 0, \"errors\": 0, \"loss_percent\": 0.0, \"time_ms\": 2003,
   \"rtt_ms\": {\"min\": 0.024, \"avg\": 0.031, \"max\": 0.038, \"mdev\": 0.007}}
  socket: datagram (unprivileged ICMP socket) or raw. rtt_ms: null when no reply came.
With -c and no -w, ping sends COUNT requests and waits for each reply up to -W. With -w,
it stops at the deadline, or once COUNT replies have come (iputils' rule).";

/// `socketkit ping`: iputils ping's flags, as its users type them.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The host: a name or an IPv4 or IPv6 address.
    pub host: String,

    /// Stop after sending COUNT requests (and waiting for their replies); with -w, after COUNT
    /// replies. [default: until stopped]
    #[arg(short, long, value_name = "COUNT", value_parser = parse_ping_count)]
    pub count: Option<u64>,

    /// Time between requests. Under 2ms (down to 0) only for root (iputils' rule).
    #[arg(short, long, default_value = "1s", value_parser = parse_ping_interval, value_name = "DUR")]
    pub interval: Duration,

    /// How long to wait for each reply; a reply after it counts as late (iputils' -W).
    #[arg(short = 'W', long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    /// Stop after this long, however many requests were sent (iputils' -w; not nc's -w).
    #[arg(short = 'w', long, value_parser = parse_duration, value_name = "DUR")]
    pub deadline: Option<Duration>,

    /// Payload bytes per request: 0 to 65507 over IPv4, 65527 over IPv6 (iputils' -s).
    #[arg(short, long, default_value_t = 56, value_parser = parse_ping_size, value_name = "BYTES")]
    pub size: usize,

    /// IPv4 only.
    #[arg(short = '4', long, conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only.
    #[arg(short = '6', long)]
    pub ipv6: bool,

    /// Print addresses, no reverse look-ups (a HOST given as an address implies it).
    #[arg(short, long)]
    pub numeric: bool,

    /// One JSON object per reply and a summary object (NDJSON; fields below).
    #[arg(long)]
    pub json: bool,
}

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

/// clap's usage error on one line, with the help hint at its end: `unexpected argument '-x'
/// found (try 'socketkit send --help')`. clap's own text is kept; its blank lines, its `Usage:`
/// block and its "For more information" line go. `args` (the whole command line) name the
/// subcommand whose help to suggest.
pub fn usage_line(error: &clap::Error, args: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let text = error.render().to_string(); // plain text: Display drops the styles
    let mut parts = Vec::new();
    for block in text.split("\n\n") {
        let block = block.trim();
        if block.is_empty()
            || block.starts_with("Usage:")
            || block.starts_with("For more information")
        {
            continue;
        }
        let line: Vec<&str> = block.lines().map(str::trim).collect();
        parts.push(line.join(" "));
    }
    let message = parts
        .first()
        .map_or("bad usage", |m| m.strip_prefix("error: ").unwrap_or(m));
    // The first word that is not a flag names the subcommand (the global flags take no value).
    let command = Cli::command();
    let help = match args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .and_then(|name| command.find_subcommand(name))
    {
        Some(sub) => format!("socketkit {} --help", sub.get_name()),
        None => "socketkit --help".to_string(),
    };
    let mut hints: Vec<String> = parts.iter().skip(1).cloned().collect();
    hints.push(format!("try '{help}'"));
    format!("{message} ({})", hints.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    /// -s is the source address wherever a command has one, -w always the time-out, and so on:
    /// a letter keeps one meaning across commands. -m is the one documented exception.
    #[test]
    fn each_short_flag_keeps_one_meaning_across_commands() {
        use clap::CommandFactory;
        use std::collections::{BTreeMap, BTreeSet};
        let cli = Cli::command();
        let mut meanings: BTreeMap<char, BTreeSet<String>> = BTreeMap::new();
        // ping takes iputils' letters instead (its own test below).
        let commands =
            std::iter::once(&cli).chain(cli.get_subcommands().filter(|c| c.get_name() != "ping"));
        for command in commands {
            for arg in command.get_arguments() {
                if let Some(short) = arg.get_short() {
                    meanings
                        .entry(short)
                        .or_default()
                        .insert(arg.get_id().to_string());
                }
            }
        }
        let one = |id: &str| BTreeSet::from([id.to_string()]);
        assert_eq!(
            meanings.remove(&'m'),
            Some(BTreeSet::from(["max_connections".into(), "mode".into()]))
        );
        assert_eq!(meanings[&'s'], one("bind"));
        assert_eq!(meanings[&'w'], one("timeout"));
        assert_eq!(meanings[&'l'], one("listen"));
        assert_eq!(meanings[&'v'], one("verbose"));
        assert_eq!(meanings[&'q'], one("quiet"));
        for (short, ids) in &meanings {
            assert_eq!(ids.len(), 1, "-{short} means {ids:?}");
        }
    }

    /// ping's letters are iputils ping's, as its users type them.
    #[test]
    fn ping_takes_iputils_short_flags() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let ping = cli.find_subcommand("ping").unwrap();
        let letter = |id: &str| {
            ping.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_short())
        };
        for (short, id) in [
            ('c', "count"),
            ('i', "interval"),
            ('W', "timeout"),
            ('w', "deadline"),
            ('s', "size"),
            ('4', "ipv4"),
            ('6', "ipv6"),
            ('n', "numeric"),
        ] {
            assert_eq!(letter(id), Some(short), "{id}");
        }
        let args = Cli::try_parse_from(
            "socketkit ping -c 3 -i 0.2 -W 1 -w 5 -s 100 -4 -n localhost".split(' '),
        )
        .unwrap();
        let Command::Ping(args) = args.command else {
            panic!("not ping")
        };
        assert_eq!(args.count, Some(3));
        assert_eq!(args.interval, Duration::from_millis(200));
        assert_eq!(args.timeout, Duration::from_secs(1));
        assert_eq!(args.deadline, Some(Duration::from_secs(5)));
        assert_eq!(args.size, 100);
        assert!(args.ipv4 && args.numeric);
    }

    #[test]
    fn a_usage_error_is_one_line_with_the_subcommands_help() {
        let args = |line: &str| -> Vec<std::ffi::OsString> {
            line.split_whitespace().map(Into::into).collect()
        };
        for (line, expected) in [
            (
                "socketkit -v send",
                "the following required arguments were not provided: <ENDPOINT> \
                 (try 'socketkit send --help')",
            ),
            (
                "socketkit serve -m 0",
                "invalid value '0' for '--max-connections <N>': must be at least 1 \
                 (try 'socketkit serve --help')",
            ),
            (
                "socketkit frobnicate",
                "unrecognized subcommand 'frobnicate' (try 'socketkit --help')",
            ),
        ] {
            let error = Cli::try_parse_from(args(line)).unwrap_err();
            assert_eq!(usage_line(&error, &args(line)), expected);
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
