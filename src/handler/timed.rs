//! Time-outs on a tokio stream, for [`AsyncStreamRequest`](super::AsyncStreamRequest): a read
//! that waits longer than the idle time-out fails, and so does a write that makes no progress
//! for the write time-out. The blocking engines wait in `poll` instead, with the same errors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::stats::EndCause;

/// The error that ends a connection whose peer stopped reading (on every engine).
pub(crate) fn write_timed_out(timeout: Duration) -> io::Error {
    EndCause::WriteTimeout.error(
        io::ErrorKind::TimedOut,
        format!("the peer read nothing for {timeout:?} (write time-out)"),
    )
}

/// The error that ends a connection that sent nothing for `idle` (on every engine).
pub(crate) fn idle_timed_out(idle: Duration) -> io::Error {
    EndCause::Idle.error(io::ErrorKind::TimedOut, format!("idle for {idle:?}"))
}

/// A reader whose every read fails with `TimedOut` after `idle` without data.
pub(crate) struct IdleRead<R> {
    inner: R,
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<R> IdleRead<R> {
    pub(crate) fn new(inner: R, idle: std::time::Duration) -> IdleRead<R> {
        IdleRead {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(idle_timed_out(this.idle))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A writer whose write, flush or shutdown fails with `TimedOut` once it has made no progress
/// for `limit` (a peer that stopped reading). The timer is armed only when a write blocks.
pub(crate) struct StallWrite<W> {
    inner: W,
    limit: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    blocked: bool,
}

impl<W> StallWrite<W> {
    pub(crate) fn new(inner: W, limit: std::time::Duration) -> StallWrite<W> {
        StallWrite {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            blocked: false,
        }
    }

    /// Passes `polled` through, and turns a wait longer than the limit into an error.
    fn guard<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.blocked = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.blocked {
                    self.blocked = true;
                    let deadline = tokio::time::Instant::now() + self.limit;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(write_timed_out(self.limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}
