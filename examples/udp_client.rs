//! The slides' UDP client, with the standard library only.
//!
//! Python (the slides):
//!   clientSocket = socket(AF_INET, SOCK_DGRAM)
//!   sentence = input("Input a lowercase sentence:")
//!   clientSocket.sendto(sentence.encode(), (serverName, serverPort))
//!   modifiedSentence, serverAddress = clientSocket.recvfrom(1024)
//!   print("From Server:", modifiedSentence.decode())
//!   clientSocket.close()
//!
//! Run: `cargo run --example udp_client [HOST] [PORT]` (default localhost 12000).

use std::io::{self, BufRead, Write};
use std::net::UdpSocket;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let server_name = args.next().unwrap_or_else(|| "localhost".into());
    let server_port: u16 = args
        .next()
        .map_or(12000, |p| p.parse().expect("a port number"));

    // socket(AF_INET, SOCK_DGRAM): port 0, the system picks an ephemeral port at the first send.
    let client_socket = UdpSocket::bind("0.0.0.0:0")?;

    print!("Input a lowercase sentence:");
    io::stdout().flush()?;
    let mut sentence = String::new();
    io::stdin().lock().read_line(&mut sentence)?;
    let sentence = sentence.trim_end_matches(['\n', '\r']);

    // sendto(): no connection; the destination goes with each datagram.
    client_socket.send_to(sentence.as_bytes(), (server_name.as_str(), server_port))?;

    // recvfrom(1024): one datagram, and who sent it.
    let mut buffer = [0u8; 1024];
    let (n, _server_address) = client_socket.recv_from(&mut buffer)?;
    println!("From Server: {}", String::from_utf8_lossy(&buffer[..n]));
    Ok(())
}
