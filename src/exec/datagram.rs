//! One datagram's run: the datagram on the program's stdin, the reply from its stdout, both
//! bounded (the reply by the datagram limit, the whole run by the message time-out).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Exec;
use crate::service::Context;

impl Exec {
    /// Runs the program once for `request`; returns its stdout as the reply, or `None` for no
    /// reply: empty output, output over `max_reply` bytes, a run (its reply and its exit) longer
    /// than `within` (the program is then stopped), or a program that could not start. Each is
    /// logged.
    pub(crate) async fn answer(
        &self,
        ctx: &Context,
        request: &[u8],
        max_reply: usize,
        within: Duration,
    ) -> Option<Vec<u8>> {
        let peer = &ctx.peer;
        let mut running = match self.spawn(ctx, None) {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(%peer, "cannot run {}: {e}", self.name());
                return None;
            }
        };
        let child = running.child();
        let (mut stdin, stdout) = child.stdin.take().zip(child.stdout.take())?;
        // The request goes in while the reply comes out: a program may answer before it has
        // read all of a datagram larger than a pipe holds.
        let feed = async move {
            // A program that reads nothing (EPIPE) may still answer.
            let _ = stdin.write_all(request).await;
        };
        let mut reply = Vec::new();
        // The whole run is timed, its exit too: a program that closed its stdout and lingers
        // (cleaning up, or `exec >&-; sleep`) would otherwise hold the reply and the slot for
        // as long as it likes.
        let run = async {
            let read = async {
                let mut limited = stdout.take(max_reply as u64 + 1);
                limited.read_to_end(&mut reply).await
            };
            tokio::join!(feed, read).1?;
            if reply.len() > max_reply {
                return Ok(false);
            }
            running.child().wait().await.map(|_| true)
        };
        let outcome = tokio::time::timeout(within, run).await;
        let name = self.name();
        match outcome {
            Ok(Ok(false)) => {
                tracing::info!(
                    %peer,
                    "{name} wrote more than the datagram limit of {max_reply} bytes: no reply"
                );
                self.report(peer, running.stop().await, true);
                None
            }
            Ok(Ok(true)) => {
                // Exited already: this only takes its status.
                self.report(peer, running.wait().await, false);
                (!reply.is_empty()).then_some(reply)
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, "cannot read {name}'s reply: {e}");
                self.report(peer, running.stop().await, true);
                None
            }
            Err(_) => {
                tracing::info!(
                    %peer,
                    "{name} did not write its reply and exit within the message time-out of \
                     {within:?}: stopped, no reply"
                );
                self.report(peer, running.stop().await, true);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Program;
    use super::*;
    use crate::endpoint::Transport;

    fn answer(argv: &[&str], request: &[u8], max: usize, within: Duration) -> Option<Vec<u8>> {
        let exec = Exec::new(Program::new(argv.iter().copied()).unwrap());
        let ctx = Context::new(Transport::Udp, "127.0.0.1:9".parse().unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(exec.answer(&ctx, request, max, within))
    }

    #[test]
    fn the_reply_is_the_programs_stdout() {
        let reply = answer(
            &["tr", "a-z", "A-Z"],
            b"hello",
            100,
            Duration::from_secs(10),
        );
        assert_eq!(reply.as_deref(), Some(&b"HELLO"[..]));
    }

    #[test]
    fn empty_output_means_no_reply_and_over_the_limit_too() {
        assert_eq!(answer(&["true"], b"x", 100, Duration::from_secs(10)), None);
        assert_eq!(answer(&["cat"], b"12345", 4, Duration::from_secs(10)), None);
        assert_eq!(
            answer(&["cat"], b"1234", 4, Duration::from_secs(10)).as_deref(),
            Some(&b"1234"[..])
        );
    }

    #[test]
    fn a_program_past_the_time_is_stopped_without_a_reply() {
        let start = std::time::Instant::now();
        let reply = answer(&["sleep", "30"], b"", 100, Duration::from_millis(200));
        assert_eq!(reply, None);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
