//! A custom service on socketkit's framework, socketserver style: each line a client sends
//! comes back reversed. The handler is the whole program; the engine does the rest.
//!
//! Run: `cargo run --example reverse_handler [ENDPOINT]` (default tcp://127.0.0.1:12001), then
//! `printf 'hello\nworld\n' | socketkit send tcp://127.0.0.1:12001`.

use std::io::{self, Write};

use socketkit::handler::{StreamHandler, StreamRequest};
use socketkit::{Engine, Server};

/// Like a Python `StreamRequestHandler` subclass: `handle()` serves one whole connection.
struct Reverse;

impl StreamHandler for Reverse {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = String::new();
        // self.rfile.readline(), bounded: a line over --max-line (64 KiB) or slower than the
        // message deadline is an error, and the connection closes.
        while request.read_line(&mut line)? > 0 {
            let reversed: String = line.trim_end_matches(['\n', '\r']).chars().rev().collect();
            writeln!(request.writer(), "{reversed}")?; // self.wfile
            request.writer().flush()?; // one reply per line, now
            line.clear();
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or("tcp://127.0.0.1:12001".into());
    let server = Server::builder()
        .listen(endpoint.parse()?)
        .engine(Engine::Threaded) // ThreadingMixIn: a thread per connection
        .stream_handler(Reverse)
        .bind()?;
    println!("reversing lines on {}", server.local_endpoints()[0]);
    server.serve_forever()?;
    Ok(())
}
