//! A custom service on socketkit's framework, socketserver style: each line a client sends
//! comes back reversed. The handler is the whole program; the engine does the rest.
//!
//! Run: `cargo run --example reverse_handler [ENDPOINT]` (default tcp://127.0.0.1:12001), then
//! `printf 'hello\nworld\n' | socketkit send tcp://127.0.0.1:12001`.

use std::io::{self, BufRead, Write};

use socketkit::handler::{StreamHandler, StreamRequest};
use socketkit::{Engine, Server};

/// Like a Python `StreamRequestHandler` subclass: `handle()` serves one whole connection.
struct Reverse;

impl StreamHandler for Reverse {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let (reader, writer) = request.split(); // self.rfile, self.wfile
        for line in reader.lines() {
            let reversed: String = line?.chars().rev().collect();
            writeln!(writer, "{reversed}")?;
            writer.flush()?; // one reply per line, now
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
