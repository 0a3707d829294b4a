//! The engines' runtime state: what a server runs ([`App`]), its limits and hooks, and the
//! triggers that stop it ([`Shared`]), made here from the builder's settings, so `server` hands
//! the engines their inputs and never builds their state. Also how a connection's end is
//! reported (`handle_error`, log lines).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use super::peer_log::{RefusalLog, Traffic};
use crate::access::AccessList;
use crate::codec::budget::Budget;
use crate::codec::session::{FramedSession, RecordSession};
use crate::codec::{Framing, MessageCodec};
use crate::endpoint::Transport;
use crate::handler::{DatagramHandler, DynAsyncHandler, HandlerError, StreamHandler};
use crate::limits::Limits;
use crate::service::{Address, Context, DynService, StreamSession};
use crate::shutdown::Trigger;
use crate::stats::{EndCause, ListenerStats, Refusal};

/// What a server runs: a service, and optionally handlers that take its place on streams or
/// datagrams.
pub(crate) struct App {
    pub(crate) service: Arc<dyn DynService>,
    pub(crate) stream_handler: Option<Arc<dyn StreamHandler>>,
    pub(crate) datagram_handler: Option<Arc<dyn DatagramHandler>>,
    pub(crate) async_handler: Option<Arc<dyn DynAsyncHandler>>,
    /// A program run per connection (as `async_handler`) and per datagram.
    pub(crate) exec: Option<Arc<crate::exec::Exec>>,
}

/// `verify_request`: may this peer be served?
pub(crate) type VerifyHook = Arc<dyn Fn(&Address) -> bool + Send + Sync>;
/// `handle_error`: report a failed connection or datagram.
pub(crate) type ErrorHook = Arc<dyn Fn(&Address, &HandlerError) + Send + Sync>;

/// What every engine needs while serving.
pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) framing: Framing,
    pub(crate) limits: Limits,
    pub(crate) verify_request: Option<VerifyHook>,
    pub(crate) access: AccessList,
    pub(crate) handle_error: ErrorHook,
    /// Stop accepting.
    pub(crate) stop: Arc<Trigger>,
    /// The grace period is over: close every connection.
    pub(crate) force: Trigger,
    /// Refused peers, logged at info level at most once per interval.
    pub(crate) refusals: RefusalLog,
    /// Each listener's counters, in the order of the listeners handed to the engine.
    pub(crate) listener_stats: Vec<Arc<ListenerStats>>,
    /// The TLS settings of the `tls://` listeners, and their bound addresses.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(crate::tls::ServerTls, Vec<std::net::SocketAddr>)>,
}

impl Shared {
    /// The engines' state for serving `app` with these settings; `handle_error` defaults to
    /// one log line per failure ([`default_handle_error`]). The triggers are made here.
    ///
    /// # Errors
    ///
    /// When a trigger's wake-up pipe cannot be made (out of descriptors).
    pub(crate) fn new(
        app: App,
        framing: Framing,
        limits: Limits,
        access: AccessList,
        verify_request: Option<VerifyHook>,
        handle_error: Option<ErrorHook>,
        listener_stats: Vec<Arc<ListenerStats>>,
    ) -> io::Result<Shared> {
        Ok(Shared {
            app,
            framing,
            limits,
            verify_request,
            access,
            handle_error: handle_error.unwrap_or_else(|| Arc::new(default_handle_error)),
            stop: Arc::new(Trigger::new()?),
            force: Trigger::new()?,
            refusals: RefusalLog::default(),
            listener_stats,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// The counters of the listener at `index` in the engine's list of listeners.
    pub(crate) fn listener_stats(&self, index: usize) -> Arc<ListenerStats> {
        self.listener_stats[index].clone()
    }

    /// The TLS settings of the listener bound to `local`, if it is a `tls://` listener.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_for(&self, local: &Address) -> Option<crate::tls::ServerTls> {
        let (tls, addrs) = self.tls.as_ref()?;
        let local = local.inet()?;
        addrs.contains(&local).then(|| tls.clone())
    }

    /// A session for a new stream: the service's own in `raw` framing, else the service's
    /// message function behind the framing's codec. A sequenced-packet connection's records
    /// are its messages: the message function answers each one.
    pub(crate) fn session(&self, ctx: &Context) -> Box<dyn StreamSession> {
        if ctx.transport == Transport::UnixSeqpacket {
            return Box::new(RecordSession::new(self.app.service.clone(), ctx.clone()));
        }
        match MessageCodec::new(self.framing, self.limits.max_line, self.limits.max_frame) {
            None => self.app.service.session(ctx),
            Some(codec) => Box::new(FramedSession::new(
                self.app.service.clone(),
                ctx.clone(),
                codec,
                Budget::process(self.limits.max_buffered),
            )),
        }
    }

    /// socketserver's `verify_request`: a refusal closes the connection before a byte is read
    /// (with a reset: see [`refuse`]). Refusals are logged, rate-limited.
    #[inline]
    pub(crate) fn verify(&self, peer: &Address) -> Result<(), Refusal> {
        // The common case, checked first: no list and no hook (a datagram listener asks this
        // for every datagram).
        if self.access.is_empty() && self.verify_request.is_none() {
            return Ok(());
        }
        self.verify_listed(peer)
    }

    fn verify_listed(&self, peer: &Address) -> Result<(), Refusal> {
        if !self.access.permits_peer(peer) {
            self.refusals
                .refused(peer, "by the access list (--allow/--deny)");
            return Err(Refusal::AccessList);
        }
        // The hook is the program's code, run on the listener's loop: a panic in it refuses
        // this peer (and is reported), it does not end the loop.
        let allowed = self.verify_request.as_ref().is_none_or(|verify| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(peer))).unwrap_or_else(
                |panic| {
                    self.handle_error(peer, &HandlerError::from_panic(panic));
                    false
                },
            )
        });
        if !allowed {
            self.refusals.refused(peer, "by verify_request");
            return Err(Refusal::VerifyRequest);
        }
        Ok(())
    }

    /// Reports how a connection or datagram ended. Expected endings (EOF, a peer that went
    /// away, an idle time-out, the end of the grace period) are logged; real failures and
    /// panics go to `handle_error`.
    pub(crate) fn report(&self, peer: &Address, result: Result<(), SessionError>) {
        self.report_ending(peer, result, None);
    }

    /// [`Shared::report`] for a stream connection: each line carries its traffic, and a
    /// failure reported to `handle_error` gets a debug line with it too. The connection is
    /// added to its listener's counters with the cause of its end.
    pub(crate) fn report_stream(
        &self,
        peer: &Address,
        traffic: &Traffic,
        result: Result<(), SessionError>,
    ) {
        traffic.ended(end_cause(&result, traffic.saw_eof()));
        self.report_ending(peer, result, Some(traffic));
    }

    fn report_ending(
        &self,
        peer: &Address,
        result: Result<(), SessionError>,
        traffic: Option<&Traffic>,
    ) {
        let tail = TrafficTail(traffic);
        match result {
            Ok(()) => tracing::debug!(%peer, "connection closed{tail}"),
            Err(SessionError::Io(e)) if is_peer_gone(&e) => {
                tracing::debug!(%peer, "connection ended: {e}{tail}")
            }
            Err(SessionError::Io(e)) if is_timeout(&e) => {
                tracing::info!(%peer, "connection closed: {e}{tail}")
            }
            Err(e) => {
                if traffic.is_some() {
                    tracing::debug!(%peer, "connection failed{tail}");
                }
                match e {
                    SessionError::Io(e) => self.handle_error(peer, &HandlerError::Io(e)),
                    SessionError::Panic(e) => self.handle_error(peer, &e),
                }
            }
        }
    }

    /// Calls the `handle_error` hook. It runs on a listener's loop or a pool worker, so a panic
    /// in it is logged here rather than ending either.
    fn handle_error(&self, peer: &Address, error: &HandlerError) {
        let reported = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.handle_error)(peer, error)
        }));
        if reported.is_err() {
            tracing::error!(%peer, "handle_error panicked while reporting: {error}");
        }
    }
}

/// Why a stream connection ended, for its listener's counters: a cause carried by the error
/// ([`EndCause::error`]: the connection machine's time-outs, the grace period), else by the
/// error's kind.
fn end_cause(result: &Result<(), SessionError>, saw_eof: bool) -> EndCause {
    match result {
        Ok(()) if saw_eof => EndCause::Eof,
        Ok(()) => EndCause::Closed,
        Err(SessionError::Panic(_)) => EndCause::Panic,
        Err(SessionError::Io(e)) => EndCause::of(e).unwrap_or_else(|| match e.kind() {
            _ if is_peer_gone(e) => EndCause::Reset,
            io::ErrorKind::UnexpectedEof => EndCause::Eof,
            _ if is_timeout(e) => EndCause::Idle,
            _ => EndCause::Error,
        }),
    }
}

/// A stream's traffic as the tail of its log line (`: 5 bytes in, ...`), or nothing.
struct TrafficTail<'a>(Option<&'a Traffic>);

impl fmt::Display for TrafficTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(traffic) => write!(f, " ({traffic})"),
            None => Ok(()),
        }
    }
}

/// socketserver's default `handle_error`: one log line with the peer; serving goes on.
pub(crate) fn default_handle_error(peer: &Address, error: &HandlerError) {
    tracing::warn!(%peer, "error while serving: {error}");
}

/// Why a connection ended other than by closing normally. Idle time-outs are
/// `io::ErrorKind::TimedOut`; the end of the grace period is `ConnectionAborted`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Panic(HandlerError),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Builds the context for one request.
pub(crate) fn context(transport: Transport, peer: Address, local: Address) -> Context {
    context_at(transport, peer, local, SystemTime::now())
}

/// [`context`] with the time already read (once for a batch of datagrams received together).
pub(crate) fn context_at(
    transport: Transport,
    peer: Address,
    local: Address,
    now: SystemTime,
) -> Context {
    Context {
        peer,
        local,
        transport,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conn::{Ending, grace_over};
    use std::time::Duration;

    #[test]
    fn a_connection_end_is_counted_by_its_cause_not_its_text() {
        let io = |e: io::Error| Err(SessionError::Io(e));
        assert_eq!(end_cause(&Ok(()), true), EndCause::Eof);
        assert_eq!(end_cause(&Ok(()), false), EndCause::Closed);
        let second = Duration::from_secs(1);
        for (ending, cause) in [
            (Ending::Idle(second), EndCause::Idle),
            (Ending::Message(second), EndCause::MessageTimeout),
            (Ending::Write(second), EndCause::WriteTimeout),
            (Ending::GraceOver, EndCause::GraceOver),
        ] {
            assert_eq!(end_cause(&io(ending.error()), false), cause, "{ending:?}");
        }
        assert_eq!(end_cause(&io(grace_over()), true), EndCause::GraceOver);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(end_cause(&io(reset), false), EndCause::Reset);
        let other = io::Error::other("a handler's own failure");
        assert_eq!(end_cause(&io(other), false), EndCause::Error);
        let panic = HandlerError::from_panic(Box::new("boom"));
        assert_eq!(
            end_cause(&Err(SessionError::Panic(panic)), false),
            EndCause::Panic
        );
    }
}
