//! The baseline of the benchmark report: the uppercase server "a competent Rust developer
//! writes" with tokio, with none of socketkit's work (limits, Unicode, framing, shutdown drain).
//!
//! A multi-thread runtime, an accept loop, a task per connection that reads into a 16 KiB buffer
//! (socketkit's default `read_buffer`, so the stream cells compare like with like), upper-cases
//! the ASCII letters in place and writes it all back; and one task answering UDP datagrams.
//!
//! ```text
//! cargo build --release --example tokio_baseline
//! target/release/examples/tokio_baseline --tcp 127.0.0.1:0 --udp 127.0.0.1:0
//! ```
//!
//! Prints `listening on tcp://IP:PORT` and `listening on udp://IP:PORT` to stderr, then serves
//! until SIGINT or SIGTERM, and exits 0.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> io::Result<()> {
    let (mut tcp, mut udp) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let addr = args.next().and_then(|a| a.parse::<SocketAddr>().ok());
        match (flag.as_str(), addr) {
            ("--tcp", Some(addr)) => tcp = Some(addr),
            ("--udp", Some(addr)) => udp = Some(addr),
            _ => {
                eprintln!("usage: tokio_baseline [--tcp ADDR] [--udp ADDR]");
                std::process::exit(2);
            }
        }
    }
    if let Some(addr) = tcp {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("listening on tcp://{}", listener.local_addr()?);
        tokio::spawn(accept_loop(listener));
    }
    if let Some(addr) = udp {
        let socket = UdpSocket::bind(addr).await?;
        eprintln!("listening on udp://{}", socket.local_addr()?);
        tokio::spawn(udp_loop(socket));
    }
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((conn, _peer)) => {
                tokio::spawn(serve(conn));
            }
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(mut conn: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        buf[..n].make_ascii_uppercase();
        conn.write_all(&buf[..n]).await?;
    }
}

async fn udp_loop(socket: UdpSocket) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                buf[..n].make_ascii_uppercase();
                if let Err(e) = socket.send_to(&buf[..n], peer).await {
                    eprintln!("send_to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("recv_from: {e}"),
        }
    }
}
