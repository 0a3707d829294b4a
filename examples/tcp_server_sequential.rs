//! The slides' sequential (iterative) TCP server, with the standard library only: it accepts
//! and serves one client at a time.
//!
//! Python (the slides):
//!   serverSocket = socket(AF_INET, SOCK_STREAM)
//!   serverSocket.bind(("", serverPort))
//!   serverSocket.listen(5)
//!   while True:
//!       connectionSocket, addr = serverSocket.accept()
//!       sentence = connectionSocket.recv(1024)
//!       capitalizedSentence = sentence.decode().upper()
//!       connectionSocket.send(capitalizedSentence.encode())
//!       connectionSocket.close()
//!
//! Run: `cargo run --example tcp_server_sequential [PORT]` (default 12000; 0 picks a free port).
//! It binds 127.0.0.1 rather than the slides' "" (every interface), so it is reachable from
//! this machine only.

use std::io::{self, Read, Write};
use std::net::TcpListener;

fn main() -> io::Result<()> {
    let server_port: u16 = std::env::args()
        .nth(1)
        .map_or(12000, |p| p.parse().expect("a port number"));

    // socket(), bind() and listen() in one call (std's backlog is 128, not the slides' 5).
    let server_socket = TcpListener::bind(("127.0.0.1", server_port))?;
    println!(
        "The server is ready to receive on port {}",
        server_socket.local_addr()?.port()
    );

    loop {
        // accept(): a new socket for this client; the listening socket keeps listening.
        let (mut connection_socket, _addr) = server_socket.accept()?;
        let mut sentence = [0u8; 1024];
        let n = connection_socket.read(&mut sentence)?; // recv(1024)
        // decode().upper(): invalid UTF-8 is replaced here, where Python would raise.
        let capitalized = String::from_utf8_lossy(&sentence[..n]).to_uppercase();
        connection_socket.write_all(capitalized.as_bytes())?; // send()
        // close(): connection_socket is dropped at the end of the loop body.
    }
}
