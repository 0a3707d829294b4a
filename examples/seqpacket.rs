//! The slides' uppercase server and client over SOCK_SEQPACKET, with std and socket2 only (std
//! has no SEQPACKET type): the second deck's "Summary of Socket Types" lists
//! `SOCK_STREAM` (TCP, connection-oriented), `SOCK_DGRAM` (UDP, connectionless), `SOCK_RAW`,
//! and "SOCK_RDM, SOCK_SEQPACKET: very rarely used". SEQPACKET is the one in between: a
//! connection (accept, connect, EOF) like SOCK_STREAM, and message boundaries like SOCK_DGRAM,
//! so each `recv` returns exactly one `send` and the TCP slides' "application-level message
//! boundary" is not needed. (SOCK_RDM exists on Linux only for TIPC clusters.)
//!
//! Python (the slides' TCP server, with the one changed line marked):
//!   serverSocket = socket(AF_UNIX, SOCK_SEQPACKET)      # was AF_INET, SOCK_STREAM
//!   serverSocket.bind(path); serverSocket.listen(1)
//!   while True:
//!       connectionSocket, addr = serverSocket.accept()
//!       while sentence := connectionSocket.recv(1024):   # one record per recv
//!           connectionSocket.send(sentence.decode().upper().encode())
//!       connectionSocket.close()
//!
//! Run: `cargo run --example seqpacket server /tmp/upper.sock`, then
//! `cargo run --example seqpacket client /tmp/upper.sock hello world` (one record per word).

use std::io::{self, Read};
use std::net::Shutdown;

use socket2::{Domain, SockAddr, Socket, Type};

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") if args.len() == 2 => server(&args[1]),
        Some("client") if args.len() >= 3 => client(&args[1], &args[2..]),
        _ => {
            eprintln!("usage: seqpacket server PATH | seqpacket client PATH SENTENCE...");
            std::process::exit(2);
        }
    }
}

/// The iterative server: one connection at a time, one reply record per record.
fn server(path: &str) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let server_socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    server_socket.bind(&SockAddr::unix(path)?)?;
    server_socket.listen(1)?;
    println!("The server is ready to receive on {path}");
    loop {
        let (connection_socket, _addr) = server_socket.accept()?;
        let mut sentence = [0u8; 1024];
        loop {
            // One recv, one whole record (a longer one would be cut to 1024 bytes, silently:
            // socketkit reads with MSG_TRUNC to notice).
            let n = (&connection_socket).read(&mut sentence)?;
            if n == 0 {
                break; // the client closed: "server receives 0 bytes after close()"
            }
            let capitalized = String::from_utf8_lossy(&sentence[..n]).to_uppercase();
            connection_socket.send(capitalized.as_bytes())?;
        }
    }
}

/// The client: every sentence is sent first, as its own record, then every reply is read; the
/// boundaries survive, where on a TCP stream they would run together.
fn client(path: &str, sentences: &[String]) -> io::Result<()> {
    let client_socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    client_socket.connect(&SockAddr::unix(path)?)?;
    for sentence in sentences {
        client_socket.send(sentence.as_bytes())?;
    }
    let mut modified = [0u8; 1024];
    for _ in sentences {
        let n = (&client_socket).read(&mut modified)?;
        println!("From Server: {}", String::from_utf8_lossy(&modified[..n]));
    }
    client_socket.shutdown(Shutdown::Write)
}
