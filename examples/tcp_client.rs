//! The slides' TCP client, with the standard library only.
//!
//! Python (the slides):
//!   clientSocket = socket(AF_INET, SOCK_STREAM)
//!   clientSocket.connect((serverName, serverPort))
//!   sentence = input("Input a lowercase sentence:")
//!   clientSocket.send(sentence.encode())
//!   modifiedSentence = clientSocket.recv(1024)
//!   print("From Server:", modifiedSentence.decode())
//!   clientSocket.close()
//!
//! Run: `cargo run --example tcp_client [HOST] [PORT]` (default localhost 12000).

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let server_name = args.next().unwrap_or_else(|| "localhost".into());
    let server_port: u16 = args
        .next()
        .map_or(12000, |p| p.parse().expect("a port number"));

    // connect(): socket() and connect() in one call; tries every address the name has.
    let mut client_socket = TcpStream::connect((server_name.as_str(), server_port))?;

    // input(): print the prompt, read one line, drop its newline.
    print!("Input a lowercase sentence:");
    io::stdout().flush()?;
    let mut sentence = String::new();
    io::stdin().lock().read_line(&mut sentence)?;
    let sentence = sentence.trim_end_matches(['\n', '\r']);

    // send(sentence.encode()): the sentence's UTF-8 bytes, no newline.
    client_socket.write_all(sentence.as_bytes())?;

    // recv(1024): at most 1024 bytes, whatever has arrived (one read, as in the slides).
    let mut buffer = [0u8; 1024];
    let n = client_socket.read(&mut buffer)?;
    println!("From Server: {}", String::from_utf8_lossy(&buffer[..n]));
    Ok(()) // close(): dropping the socket closes it
}
