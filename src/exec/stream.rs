//! One connection's run: the connection's bytes copied to the program's stdin and its stdout
//! copied back, until the program's stdout ends; then the program is reaped.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};

use super::Exec;
use crate::handler::{AsyncStreamHandler, AsyncStreamRequest};

/// Bytes copied from the program's stdout per read: a pipe's default capacity on Linux.
const COPY_BYTES: usize = 64 * 1024;

/// Runs the program for each connection (see [the module docs](super)).
pub(crate) struct ExecHandler(pub(crate) Arc<Exec>);

impl AsyncStreamHandler for ExecHandler {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        let exec = &self.0;
        let peer = request.peer().clone();
        let mut running = exec.spawn(request.context(), request.peer_credentials())?;
        let child = running.child();
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (stdin, stdout) = stdin.zip(stdout).expect("both piped");
        let (reader, writer) = request.split();
        match pump(reader, writer, stdin, stdout).await {
            Ok(()) => {
                exec.report(&peer, running.wait().await, false);
                Ok(())
            }
            Err(e) => {
                exec.report(&peer, running.stop().await, true);
                Err(e)
            }
        }
    }
}

/// Copies both ways until the program's stdout ends, then sends the FIN (the program may go on
/// running; the connection's slot is held until it exits). The peer's EOF closes the program's
/// stdin; a program that stops reading stops the reading of the socket, not the connection.
/// An error of the connection (a reset, the idle or write time-out) ends the run.
async fn pump(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    stdin: ChildStdin,
    mut stdout: ChildStdout,
) -> io::Result<()> {
    let input = std::pin::pin!(feed(reader, stdin));
    let mut input = Some(input);
    let mut buf = vec![0u8; COPY_BYTES];
    loop {
        let n = match &mut input {
            Some(feeding) => tokio::select! {
                fed = feeding => {
                    fed?;
                    input = None;
                    continue;
                }
                n = stdout.read(&mut buf) => n?,
            },
            None => stdout.read(&mut buf).await?,
        };
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
    }
    writer.shutdown().await
}

/// Copies the peer's bytes to the program's stdin until the peer's EOF (then closes stdin),
/// or until the program closes its stdin.
async fn feed(reader: &mut (impl AsyncBufRead + Unpin), mut stdin: ChildStdin) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        match stdin.write_all(chunk).await {
            Ok(()) => reader.consume(n),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                // The program reads no more: stop reading the peer (its bytes wait unread in
                // the socket) and keep waiting for stdout.
                return std::future::pending().await;
            }
            Err(e) => return Err(e),
        }
    }
}
