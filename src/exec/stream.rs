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
///
/// The two directions are two futures polled side by side: a write to a peer slow to read
/// the output never holds up the copying of its input to the program, nor the other way.
async fn pump(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    stdin: ChildStdin,
    stdout: ChildStdout,
) -> io::Result<()> {
    let mut feeding = std::pin::pin!(feed(reader, stdin));
    let mut answering = std::pin::pin!(answer(stdout, writer));
    let mut fed = false;
    loop {
        tokio::select! {
            done = &mut feeding, if !fed => {
                done?;
                fed = true;
            }
            done = &mut answering => return done,
        }
    }
}

/// Copies the program's stdout to the peer until it ends, then sends the FIN.
async fn answer(mut stdout: ChildStdout, writer: &mut (impl AsyncWrite + Unpin)) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BYTES];
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            return writer.shutdown().await;
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
    }
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
