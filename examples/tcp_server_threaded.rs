//! The slides' concurrent TCP server, with the standard library only: a new thread serves each
//! connection while the main thread goes back to accept().
//!
//! Python (the slides):
//!   def thd_func(client):
//!       connectionSocket, addr = client
//!       sentence = connectionSocket.recv(1024)
//!       capitalizedSentence = sentence.decode().upper()
//!       connectionSocket.send(capitalizedSentence.encode())
//!       connectionSocket.close()
//!   ...
//!   while True:
//!       client = serverSocket.accept()
//!       newthd = threading.Thread(target=thd_func, args=(client,))
//!       newthd.start()
//!
//! Run: `cargo run --example tcp_server_threaded [PORT]` (default 12000; 0 picks a free port).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// thd_func: serves one client.
fn thd_func(mut connection_socket: TcpStream) -> io::Result<()> {
    let mut sentence = [0u8; 1024];
    let n = connection_socket.read(&mut sentence)?;
    let capitalized = String::from_utf8_lossy(&sentence[..n]).to_uppercase();
    connection_socket.write_all(capitalized.as_bytes())
}

fn main() -> io::Result<()> {
    let server_port: u16 = std::env::args()
        .nth(1)
        .map_or(12000, |p| p.parse().expect("a port number"));
    let server_socket = TcpListener::bind(("127.0.0.1", server_port))?;
    println!(
        "The server is ready to receive on port {}",
        server_socket.local_addr()?.port()
    );
    loop {
        let (client, _addr) = server_socket.accept()?;
        // threading.Thread(target=thd_func, args=(client,)).start()
        thread::spawn(move || {
            if let Err(e) = thd_func(client) {
                eprintln!("client failed: {e}");
            }
        });
    }
}
