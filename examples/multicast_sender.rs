//! A multicast sender in the slides' style: the slides' UDP client, sending to a group and
//! printing every member's reply. The standard library only.
//!
//! The slide (UDP characteristics): "Connectionless, unreliable, can broadcast". A datagram to
//! a group address (224.0.0.0/4) reaches every member of the group, so one `sendto` can have
//! many replies; the client reads them until none comes for a second. In Python:
//!   clientSocket = socket(AF_INET, SOCK_DGRAM)
//!   clientSocket.setsockopt(IPPROTO_IP, IP_MULTICAST_TTL, 1)    # this subnet only
//!   clientSocket.settimeout(1)
//!   sentence = input("Input a lowercase sentence:")
//!   clientSocket.sendto(sentence.encode(), (group, serverPort))
//!   while True:                                                 # until socket.timeout
//!       modifiedSentence, serverAddress = clientSocket.recvfrom(1024)
//!       print("From", serverAddress, ":", modifiedSentence.decode())
//!
//! Run: `cargo run --example multicast_sender [GROUP] [PORT]` (default 239.255.0.1 12000)
//! with `cargo run --example multicast_receiver` running on this host or another of the LAN.

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let group: Ipv4Addr = args.next().map_or(Ipv4Addr::new(239, 255, 0, 1), |g| {
        g.parse().expect("an IPv4 group")
    });
    let server_port: u16 = args
        .next()
        .map_or(12000, |p| p.parse().expect("a port number"));

    let client_socket = UdpSocket::bind("0.0.0.0:0")?;
    // IP_MULTICAST_TTL 1 (also the system's default): routers do not forward the request.
    client_socket.set_multicast_ttl_v4(1)?;
    client_socket.set_read_timeout(Some(Duration::from_secs(1)))?;

    print!("Input a lowercase sentence:");
    io::stdout().flush()?;
    let mut sentence = String::new();
    io::stdin().lock().read_line(&mut sentence)?;
    let sentence = sentence.trim_end_matches(['\n', '\r']);
    client_socket.send_to(sentence.as_bytes(), (group, server_port))?;

    // Not connected: each member answers from its own address, never from the group's.
    let mut buffer = [0u8; 1024];
    loop {
        match client_socket.recv_from(&mut buffer) {
            Ok((n, server_address)) => println!(
                "From {server_address}: {}",
                String::from_utf8_lossy(&buffer[..n])
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
