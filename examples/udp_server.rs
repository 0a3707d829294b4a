//! The slides' UDP server, with the standard library only: one socket serves every client,
//! one datagram at a time.
//!
//! Python (the slides):
//!   serverSocket = socket(AF_INET, SOCK_DGRAM)
//!   serverSocket.bind(("", serverPort))
//!   while True:
//!       sentence, clientAddress = serverSocket.recvfrom(1024)
//!       capitalizedSentence = sentence.decode().upper()
//!       serverSocket.sendto(capitalizedSentence.encode(), clientAddress)
//!
//! Run: `cargo run --example udp_server [PORT]` (default 12000; 0 picks a free port).

use std::io;
use std::net::UdpSocket;

fn main() -> io::Result<()> {
    let server_port: u16 = std::env::args()
        .nth(1)
        .map_or(12000, |p| p.parse().expect("a port number"));
    let server_socket = UdpSocket::bind(("127.0.0.1", server_port))?;
    println!(
        "The server is ready to receive on port {}",
        server_socket.local_addr()?.port()
    );
    let mut sentence = [0u8; 1024];
    loop {
        let (n, client_address) = server_socket.recv_from(&mut sentence)?;
        let capitalized = String::from_utf8_lossy(&sentence[..n]).to_uppercase();
        server_socket.send_to(capitalized.as_bytes(), client_address)?;
    }
}
