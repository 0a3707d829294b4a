//! Engines: the I/O drivers. Each runs any service on every transport.
//!
//! An engine accepts connections and receives datagrams, feeds the bytes to a
//! [`StreamSession`](crate::service::StreamSession) or a service's `datagram` method, and writes
//! what comes back. The protocol logic is not here: it lives in [`crate::service`].

mod accept;
mod blocking;
mod conn;
mod datagram;
mod guard;
pub(crate) mod listener;
mod peer_log;
mod rate;
mod runtime;
mod slots;
pub(crate) mod socket_file;
mod sources;
mod tokio;
#[cfg(feature = "uring")]
mod uring;
#[cfg(feature = "uring")]
pub(crate) use uring::BufRing;
mod wait;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub(crate) use blocking::Conn;
use listener::Listener;
pub(crate) use peer_log::Traffic;
pub(crate) use runtime::{App, ErrorHook, SessionError, Shared, VerifyHook, context};

/// How a server runs its connections.
///
/// | engine | a connection runs on | handlers it runs |
/// |---|---|---|
/// | [`Engine::Async`] | a tokio task | services, [`AsyncStreamHandler`](crate::handler::AsyncStreamHandler), programs ([`crate::exec`]) |
/// | [`Engine::Sequential`] | the listener's own thread, one at a time | services, blocking handlers |
/// | [`Engine::Threaded`] | a new thread | services, blocking handlers |
/// | [`Engine::Pool`] | one of [`Limits::workers`](crate::Limits::workers) threads while it has bytes to read or write (a blocking handler: for its whole session); a poller between | services, blocking handlers |
/// | [`Engine::Uring`] | its thread's io_uring (thread-per-core) | services, [`AsyncStreamHandler`](crate::handler::AsyncStreamHandler) (on the async engine) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Engine {
    /// tokio tasks: one lightweight task per connection (the default).
    #[default]
    Async,
    /// One connection at a time per listener, each listener in its own loop: the slides'
    /// iterative server. A second client waits in the listen queue until the first is done.
    #[doc(alias = "TCPServer")]
    #[doc(alias = "iterative")]
    Sequential,
    /// A new thread per connection: the slides' concurrent server, Python's `ThreadingMixIn`.
    #[doc(alias = "ThreadingMixIn")]
    #[doc(alias = "ThreadingTCPServer")]
    Threaded,
    /// A fixed pool of worker threads ([`Limits::workers`](crate::Limits::workers)) behind a poller, like Apache's
    /// event MPM: a service's connection takes a worker only while it has bytes to read or a
    /// reply to write, and waits for its peer in the poller (epoll) otherwise, so silent and
    /// slow peers cost a descriptor and a little memory each, never a worker. A blocking
    /// [`StreamHandler`](crate::handler::StreamHandler) owns its socket for its whole session, as in socketserver, so each
    /// session holds a worker until it ends; sessions beyond `workers` wait, accepted, for a
    /// free one.
    #[doc(alias = "ThreadPool")]
    Pool,
    /// io_uring, thread-per-core ([`Limits::threads`](crate::Limits::threads) threads, each
    /// with its own ring): multishot accept, multishot receive over a provided-buffer ring (an
    /// idle connection holds no buffer; a peer that sends ahead of its replies is read one
    /// buffer at a time, so TCP holds it back), one system call per loop turn for every send and
    /// receive. Runs services and async handlers (a server with an async handler is handed to
    /// the async engine whole). Where io_uring is refused (a container's seccomp profile,
    /// `kernel.io_uring_disabled`, a kernel older than 6.0, a build without the `uring`
    /// feature, or the environment variable `SOCKETKIT_URING=refuse`),
    /// [`ServerBuilder::bind`](crate::ServerBuilder::bind) falls back to [`Engine::Async`]
    /// with one warning line, and [`Server::engine`](crate::Server::engine) says so.
    #[doc(alias = "io_uring")]
    Uring,
}

impl Engine {
    /// Every engine, for tests and `--help`.
    pub const ALL: [Engine; 5] = [
        Engine::Async,
        Engine::Sequential,
        Engine::Threaded,
        Engine::Pool,
        Engine::Uring,
    ];

    /// The engine's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Async => "async",
            Engine::Sequential => "sequential",
            Engine::Threaded => "threaded",
            Engine::Pool => "pool",
            Engine::Uring => "uring",
        }
    }

    /// Whether this engine runs blocking handlers (the thread engines) rather than async ones.
    pub fn is_blocking(self) -> bool {
        !matches!(self, Engine::Async | Engine::Uring)
    }

    /// The engine that will really serve when this one is asked for: the uring engine probes
    /// the kernel and, where io_uring is refused, falls back to [`Engine::Async`] with one
    /// warning line naming the cause and the fix. Every other engine is itself.
    pub(crate) fn resolve(self) -> Engine {
        if self != Engine::Uring {
            return self;
        }
        match uring_refusal() {
            None => Engine::Uring,
            Some((cause, fix)) => {
                tracing::warn!(
                    "the uring engine cannot run ({cause}); serving on the async engine \
                     instead. To use io_uring: {fix}"
                );
                Engine::Async
            }
        }
    }
}

/// Why io_uring cannot run here and how to make it run (`None` when it can): the uring
/// engine's probe, with its `SOCKETKIT_URING=refuse` rule; also asked by `bench --engine uring`.
#[cfg(feature = "uring")]
pub(crate) fn uring_refusal() -> Option<(String, &'static str)> {
    uring::probe().err().map(|r| (r.cause, r.fix))
}

/// Without the `uring` feature io_uring never runs.
#[cfg(not(feature = "uring"))]
pub(crate) fn uring_refusal() -> Option<(String, &'static str)> {
    Some((
        "this socketkit was built without the `uring` feature".to_string(),
        "build it with the default features",
    ))
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    /// ```
    /// use socketkit::Engine;
    /// assert_eq!("sequential".parse::<Engine>(), Ok(Engine::Sequential));
    /// assert!("fast".parse::<Engine>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Engine, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Engine::ALL.iter().map(|e| e.name()).collect();
                format!("unknown engine {text:?} (expected {})", names.join(", "))
            })
    }
}

/// Told once an engine serves: every connection to its listeners is taken at once (see
/// [`crate::Server::serve_forever_with_ready`]).
pub(crate) type Ready = Box<dyn FnOnce() + Send>;

/// Runs `listeners` on `engine` until `shared.stop` fires and the drain is done; calls `ready`
/// once it serves.
pub(crate) fn serve(
    engine: Engine,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    ready: Ready,
) -> Result<(), crate::Error> {
    // Every listener is this process's own before any of them answers a datagram.
    let _own = guard::Listening::all(&listeners);
    #[cfg(feature = "uring")]
    if engine == Engine::Uring {
        // Ready only once every thread has made its ring and armed its accepts.
        return uring::serve(shared, listeners, ready);
    }
    // The other engines accept from the bound listeners as soon as they run: a connection
    // waits in the listen queue for the moment it takes them to start.
    ready();
    match engine {
        Engine::Async => self::tokio::serve(shared, listeners),
        Engine::Sequential => blocking::serve(shared, listeners, blocking::Mode::Inline),
        Engine::Threaded => blocking::serve(shared, listeners, blocking::Mode::Thread),
        Engine::Pool => blocking::serve(shared, listeners, blocking::Mode::Pool),
        // Served above; `resolve` never keeps the uring engine without the feature.
        Engine::Uring => self::tokio::serve(shared, listeners),
    }
}
