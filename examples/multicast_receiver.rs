//! A multicast receiver in the slides' style: the slides' UDP server, plus the one step that
//! makes it a member of a group. The standard library and socket2 only.
//!
//! The slide (UDP characteristics): "Connectionless, unreliable, can broadcast". Broadcast
//! reaches every host of a subnet; multicast reaches the hosts that joined a group (an address
//! in 224.0.0.0/4), on this subnet or, through routers, beyond. In Python:
//!   serverSocket = socket(AF_INET, SOCK_DGRAM)
//!   serverSocket.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)        # several members per host
//!   serverSocket.bind((group, serverPort))                      # this group's datagrams only
//!   mreq = inet_aton(group) + inet_aton("0.0.0.0")              # any interface: the route's
//!   serverSocket.setsockopt(IPPROTO_IP, IP_ADD_MEMBERSHIP, mreq)
//!   while True:
//!       sentence, clientAddress = serverSocket.recvfrom(1024)
//!       serverSocket.sendto(sentence.decode().upper().encode(), clientAddress)   # unicast
//!
//! socket2 is needed for one thing std lacks: setting SO_REUSEADDR before `bind`.
//!
//! Run: `cargo run --example multicast_receiver [GROUP] [PORT]` (default 239.255.0.1 12000),
//! then `cargo run --example multicast_sender` or `socketkit send udp://239.255.0.1:12000 hi`.
//! The host needs a route for the group (a default route will do).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Socket, Type};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let group: Ipv4Addr = args.next().map_or(Ipv4Addr::new(239, 255, 0, 1), |g| {
        g.parse().expect("an IPv4 group")
    });
    let server_port: u16 = args
        .next()
        .map_or(12000, |p| p.parse().expect("a port number"));
    assert!(group.is_multicast(), "{group} is not in 224.0.0.0/4");

    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((group, server_port)).into())?;
    let server_socket: UdpSocket = socket.into();
    // IP_ADD_MEMBERSHIP: from now on this host's interface accepts the group's datagrams.
    server_socket.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)?;
    println!(
        "The server is ready to receive on {}",
        server_socket.local_addr()?
    );

    let mut sentence = [0u8; 1024];
    loop {
        let (n, client_address) = server_socket.recv_from(&mut sentence)?;
        let capitalized = String::from_utf8_lossy(&sentence[..n]).to_uppercase();
        // The reply goes to the sender alone, from this host's own address.
        server_socket.send_to(capitalized.as_bytes(), client_address)?;
    }
}
