//! The server: a builder, then `bind()`, then `serve_forever()` (socketserver's shape).

mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use crate::access::AccessList;
pub use crate::engine::socket_file::exit;
pub use crate::limits::{Limits, MAX_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES_V6, MAX_TIMEOUT};
pub use crate::shutdown::ShutdownHandle;

use crate::codec::Framing;
use crate::endpoint::{Endpoint, Transport};
use crate::engine::listener::Listener;
use crate::engine::{self, App, Engine, ErrorHook, Shared, VerifyHook};
use crate::error::Error;
use crate::exec::{Exec, ExecHandler, Program};
use crate::handler::{
    AsyncStreamHandler, DatagramHandler, DynAsyncHandler, HandlerError, StreamHandler,
};
use crate::multicast::MulticastInterface;
use crate::service::{Address, DynService, Service, Upper};
use crate::stats::{ListenerStats, Stats};

/// Configures a [`Server`]. Every setting has a default: no endpoint is the only error.
///
/// ```
/// use socketkit::{Engine, Server, service::Upper};
/// use std::time::Duration;
///
/// let server = Server::builder()
///     .listen("tcp://127.0.0.1:0".parse()?) // port 0: the system picks one
///     .listen("udp://127.0.0.1:0".parse()?)
///     .engine(Engine::Sequential)
///     .backlog(16)
///     .grace(Duration::from_secs(1))
///     .service(Upper)
///     .bind()?;
/// assert_eq!(server.local_endpoints().len(), 2);
/// # Ok::<(), socketkit::Error>(())
/// ```
#[must_use = "a builder does nothing until bind() is called"]
pub struct ServerBuilder {
    endpoints: Vec<Endpoint>,
    engine: Engine,
    limits: Limits,
    framing: Framing,
    service: Arc<dyn DynService>,
    name: Option<String>,
    stream_handler: Option<Arc<dyn StreamHandler>>,
    datagram_handler: Option<Arc<dyn DatagramHandler>>,
    async_handler: Option<Arc<dyn DynAsyncHandler>>,
    exec: Option<Arc<Exec>>,
    verify_request: Option<VerifyHook>,
    handle_error: Option<ErrorHook>,
    access: AccessList,
    multicast_if: Option<MulticastInterface>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
    stats: Option<Stats>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("endpoints", &self.endpoints)
            .field("engine", &self.engine)
            .field("limits", &self.limits)
            .field("service", &self.service.name())
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Adds an endpoint to listen on. Call it once per endpoint.
    pub fn listen(mut self, endpoint: Endpoint) -> ServerBuilder {
        self.endpoints.push(endpoint);
        self
    }

    /// Chooses the engine. Default: [`Engine::Async`].
    pub fn engine(mut self, engine: Engine) -> ServerBuilder {
        self.engine = engine;
        self
    }

    /// Replaces every limit at once.
    pub fn limits(mut self, limits: Limits) -> ServerBuilder {
        self.limits = limits;
        self
    }

    /// Sets [`Limits::backlog`].
    pub fn backlog(mut self, backlog: u32) -> ServerBuilder {
        self.limits.backlog = backlog;
        self
    }

    /// Sets [`Limits::idle_timeout`].
    pub fn idle_timeout(mut self, idle: Duration) -> ServerBuilder {
        self.limits.idle_timeout = idle;
        self
    }

    /// Sets [`Limits::message_timeout`].
    pub fn message_timeout(mut self, deadline: Duration) -> ServerBuilder {
        self.limits.message_timeout = deadline;
        self
    }

    /// Sets [`Limits::write_timeout`].
    pub fn write_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.limits.write_timeout = timeout;
        self
    }

    /// Sets [`Limits::datagram_rate`] (0: no limit).
    pub fn datagram_rate(mut self, per_second: u32) -> ServerBuilder {
        self.limits.datagram_rate = per_second;
        self
    }

    /// Sets [`Limits::grace`].
    pub fn grace(mut self, grace: Duration) -> ServerBuilder {
        self.limits.grace = grace;
        self
    }

    /// Chooses the framing of stream connections. Default [`Framing::Raw`]: the service's
    /// stream session sees the bytes as they come. With `line` or `length` framing, the
    /// service's [`message`](Service::message) function answers each whole message. Datagrams
    /// are messages already and ignore the framing; handlers do their own reading.
    ///
    /// ```
    /// use socketkit::{Server, codec::Framing};
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .framing(Framing::Line)
    ///     .max_line(1024)
    ///     .bind()?;
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn framing(mut self, framing: Framing) -> ServerBuilder {
        self.framing = framing;
        self
    }

    /// Sets [`Limits::max_line`].
    pub fn max_line(mut self, max: usize) -> ServerBuilder {
        self.limits.max_line = max;
        self
    }

    /// Sets [`Limits::max_frame`].
    pub fn max_frame(mut self, max: usize) -> ServerBuilder {
        self.limits.max_frame = max;
        self
    }

    /// Sets [`Limits::max_buffered`]: the process's budget for input held by framed sessions.
    pub fn max_buffered(mut self, max: usize) -> ServerBuilder {
        self.limits.max_buffered = max;
        self
    }

    /// Sets [`Limits::max_connections`].
    pub fn max_connections(mut self, max: usize) -> ServerBuilder {
        self.limits.max_connections = max;
        self
    }

    /// Sets [`Limits::threads`] (the `uring` engine's threads, the `async` engine's runtime
    /// threads; 0: one per CPU this process may run on).
    pub fn threads(mut self, threads: usize) -> ServerBuilder {
        self.limits.threads = threads;
        self
    }

    /// Sets [`Limits::workers`] (the `pool` engine's threads).
    pub fn workers(mut self, workers: usize) -> ServerBuilder {
        self.limits.workers = workers;
        self
    }

    /// Chooses the service to run. Default: [`Upper`].
    pub fn service<S: Service>(mut self, service: S) -> ServerBuilder {
        self.service = crate::service::erase(service);
        self
    }

    /// Serves streams with a blocking handler (thread engines), in place of the service.
    ///
    /// ```
    /// use std::io::{self, Write};
    /// use socketkit::{Engine, Server, handler::{StreamHandler, StreamRequest}};
    ///
    /// struct Hello;
    /// impl StreamHandler for Hello {
    ///     fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
    ///         let peer = request.peer().to_string();
    ///         writeln!(request.writer(), "hello, {peer}")
    ///     }
    /// }
    ///
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .engine(Engine::Threaded)
    ///     .stream_handler(Hello)
    ///     .bind()?;
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    #[doc(alias = "RequestHandlerClass")]
    pub fn stream_handler<H: StreamHandler>(mut self, handler: H) -> ServerBuilder {
        self.name.get_or_insert_with(|| short_type_name::<H>());
        self.stream_handler = Some(Arc::new(handler));
        self
    }

    /// Serves datagrams with a blocking handler (thread engines), in place of the service.
    pub fn datagram_handler<H: DatagramHandler>(mut self, handler: H) -> ServerBuilder {
        self.name.get_or_insert_with(|| short_type_name::<H>());
        self.datagram_handler = Some(Arc::new(handler));
        self
    }

    /// Serves streams with an async handler (the async engine), in place of the service.
    pub fn async_handler<H: AsyncStreamHandler>(mut self, handler: H) -> ServerBuilder {
        self.name.get_or_insert_with(|| short_type_name::<H>());
        self.async_handler = Some(Arc::new(handler));
        self
    }

    /// Runs `program` for each connection and each datagram, in place of the service (see
    /// [`crate::exec`]): the connection on its stdin and stdout, UCSPI's variables naming the
    /// peer; a datagram on its stdin, its stdout the reply. The async engine only.
    ///
    /// ```
    /// use socketkit::{Server, exec::Program};
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .exec(Program::new(["cat"])?)
    ///     .bind()?;
    /// assert_eq!(server.service_name(), "cat");
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    #[doc(alias = "inetd")]
    #[doc(alias = "tcpserver")]
    pub fn exec(mut self, program: Program) -> ServerBuilder {
        self.name = Some(program.argv()[0].to_string_lossy().into_owned());
        let exec = Arc::new(Exec::new(program));
        self.async_handler = Some(Arc::new(ExecHandler(exec.clone())));
        self.exec = Some(exec);
        self
    }

    /// socketserver's `verify_request`: called with each peer before a byte is read (for
    /// datagrams, before the service or handler sees one). `false` closes the connection, or
    /// drops the datagram.
    ///
    /// ```
    /// use socketkit::{Server, service::Address};
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .verify_request(|peer: &Address| peer.inet().is_some_and(|a| a.ip().is_loopback()))
    ///     .bind()?;
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn verify_request(
        mut self,
        verify: impl Fn(&Address) -> bool + Send + Sync + 'static,
    ) -> ServerBuilder {
        self.verify_request = Some(Arc::new(verify));
        self
    }

    /// Only peers the access list permits are served; checked before `verify_request`, before
    /// a byte is read (for datagrams, before the service sees one).
    ///
    /// ```
    /// use socketkit::{Server, server::AccessList};
    /// let mut access = AccessList::default();
    /// access.allow("127.0.0.0/8")?;
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .access(access)
    ///     .bind()?;
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn access(mut self, access: AccessList) -> ServerBuilder {
        self.access = access;
        self
    }

    /// The interface on which `udp://GROUP:PORT` listeners join their multicast group (see
    /// [`MulticastInterface`]). Default: the system's choice. Listeners that are not groups
    /// ignore it, and [`bind`](Self::bind) refuses it when no endpoint is a group.
    ///
    /// ```no_run
    /// use socketkit::Server;
    /// let server = Server::builder()
    ///     .listen("udp://239.1.2.3:12000".parse()?) // joins 239.1.2.3 on eth0
    ///     .multicast_interface("eth0".parse()?)
    ///     .bind()?;
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn multicast_interface(mut self, interface: MulticastInterface) -> ServerBuilder {
        self.multicast_if = Some(interface);
        self
    }

    /// The certificate and key of the `tls://` endpoints (the `tls` feature): each of their
    /// connections begins with a TLS handshake, bounded by [`Limits::message_timeout`] and
    /// holding a slot of [`Limits::max_connections`]. The async engine alone carries TLS;
    /// [`bind`](Self::bind) refuses `tls://` on the others.
    ///
    /// ```
    /// use socketkit::{Server, tls::ServerTls};
    /// let server = Server::builder()
    ///     .listen("tls://127.0.0.1:0".parse()?)
    ///     .tls(ServerTls::self_signed(&["127.0.0.1".into()], &[])?)
    ///     .bind()?;
    /// assert!(server.local_endpoints()[0].is_tls());
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> ServerBuilder {
        self.tls = Some(tls);
        self
    }

    /// socketserver's `handle_error`: called when a connection or datagram fails with an error
    /// or a panic. Only that connection closes; the server goes on. Default: one log line with
    /// the peer's address.
    pub fn handle_error(
        mut self,
        on_error: impl Fn(&Address, &HandlerError) + Send + Sync + 'static,
    ) -> ServerBuilder {
        self.handle_error = Some(Arc::new(on_error));
        self
    }

    /// Counts what every listener of this server does in `stats` (labelled by the service's
    /// name and the endpoint as bound): what `serve --metrics` exports. Several servers may
    /// share one [`Stats`]. Without it the counters are kept all the same, unread.
    pub fn stats(mut self, stats: &Stats) -> ServerBuilder {
        self.stats = Some(stats.clone());
        self
    }

    /// Creates and binds every listening socket, so [`Server::local_endpoints`] reports real
    /// ports before serving starts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] without an endpoint, or with a handler the engine cannot run (blocking
    /// handlers need a thread engine, async handlers the async engine); [`Error::Bind`] when a socket cannot be bound
    /// (address in use, permission denied) or a multicast group cannot be joined;
    /// [`Error::NameNotFound`] for a host that does not resolve, [`Error::InterfaceNotFound`]
    /// for a multicast interface that does not exist.
    ///
    /// [`Engine::Uring`] probes the kernel here and falls back to [`Engine::Async`] where
    /// io_uring is refused (one warning line); [`Server::engine`] names the engine that runs.
    pub fn bind(mut self) -> Result<Server, Error> {
        self.engine = self.engine.resolve();
        if self.endpoints.is_empty() {
            return Err(Error::Config("a server needs at least one endpoint".into()));
        }
        self.check_handlers()?;
        #[cfg(feature = "tls")]
        let has_tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let has_tls = false;
        tls::check(&self.endpoints, self.engine, has_tls)?;
        self.limits.check().map_err(Error::Config)?;
        let mut listeners = Vec::with_capacity(self.endpoints.len());
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for endpoint in &self.endpoints {
            let listener = Listener::bind(endpoint, &self.limits, self.multicast_if.as_ref())?;
            let bound = listener.local_endpoint().map_err(|source| Error::Bind {
                endpoint: endpoint.clone(),
                source,
            })?;
            endpoints.push(tls::as_bound(endpoint, bound));
            listeners.push(listener);
        }
        if let Some(interface) = &self.multicast_if
            && !endpoints
                .iter()
                .any(|e| e.socket_addrs().is_ok_and(|a| a[0].ip().is_multicast()))
        {
            return Err(Error::Config(format!(
                "a multicast interface ({interface}) is for multicast group listeners, and \
                 no endpoint is a group (udp://GROUP:PORT, GROUP in 224.0.0.0/4 or ff00::/8)"
            )));
        }
        let name = self.name.unwrap_or_else(|| self.service.name().to_string());
        let app = App {
            service: self.service,
            stream_handler: self.stream_handler,
            datagram_handler: self.datagram_handler,
            async_handler: self.async_handler,
            exec: self.exec.clone(),
        };
        let listener_stats: Vec<_> = endpoints
            .iter()
            .map(|endpoint| {
                let stream = endpoint.transport().is_connected();
                Arc::new(ListenerStats::new(&name, &endpoint.to_string(), stream))
            })
            .collect();
        if let Some(stats) = &self.stats {
            for listener in &listener_stats {
                stats.add(listener.clone());
            }
        }
        #[allow(unused_mut)] // mut for the tls feature
        let mut shared = Shared::new(
            app,
            self.framing,
            self.limits,
            self.access,
            self.verify_request,
            self.handle_error,
            listener_stats,
        )
        .map_err(|e| Error::io("cannot create a wake-up pipe", e))?;
        #[cfg(feature = "tls")]
        {
            shared.tls = self.tls.map(|t| (t, tls::addresses(&endpoints)));
        }
        Ok(Server {
            listeners,
            endpoints,
            engine: self.engine,
            name,
            shared: Arc::new(shared),
            exec: self.exec,
        })
    }

    /// Refuses handlers the chosen engine cannot run, rather than ignoring them, and settings
    /// a sequenced-packet listener cannot honour.
    fn check_handlers(&self) -> Result<(), Error> {
        if self.exec.is_some() && self.engine != Engine::Async {
            return Err(Error::Config(format!(
                "a program (serve -- PROGRAM) runs on the async engine only, not {}",
                self.engine
            )));
        }
        if let Some(packet) = self
            .endpoints
            .iter()
            .find(|e| e.transport() == Transport::UnixSeqpacket)
        {
            if self.framing != Framing::Raw {
                return Err(Error::Config(format!(
                    "{packet} keeps message boundaries itself (one record is one message): \
                     framing {} does not apply; leave it raw",
                    self.framing
                )));
            }
            if self.exec.is_some() {
                return Err(Error::Config(format!(
                    "{packet} keeps records, and a program (serve -- PROGRAM) gets a byte \
                     stream: use unix:// for it"
                )));
            }
            // A handler's reader and writer are buffered byte streams: records would be merged
            // and split.
            if self.stream_handler.is_some() || self.async_handler.is_some() {
                return Err(Error::Config(format!(
                    "{packet} serves services only: a stream handler's buffered reader and \
                     writer would merge and split its records"
                )));
            }
        }
        let blocking = self.engine.is_blocking();
        let has_stream = self.endpoints.iter().any(|e| e.transport().is_connected());
        let has_datagram = self.endpoints.iter().any(|e| !e.transport().is_connected());
        if !blocking && has_stream && self.stream_handler.is_some() && self.async_handler.is_none()
        {
            return Err(Error::Config(format!(
                "a blocking stream handler needs a thread engine (sequential, threaded, pool), \
                 not {}",
                self.engine
            )));
        }
        if !blocking && has_datagram && self.datagram_handler.is_some() {
            return Err(Error::Config(format!(
                "a datagram handler is blocking and needs a thread engine, not {}",
                self.engine
            )));
        }
        if blocking && has_stream && self.async_handler.is_some() && self.stream_handler.is_none() {
            return Err(Error::Config(format!(
                "an async handler needs the async engine, not {}",
                self.engine
            )));
        }
        Ok(())
    }
}

/// `my_crate::handlers::Reverse` → `Reverse`, for the `listening on` line.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full).to_string()
}

/// A bound server, ready to serve.
///
/// # Examples
///
/// Serve upper case on an ephemeral port, talk to it, and stop it from another thread:
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::{Shutdown, TcpStream};
/// use socketkit::Server;
///
/// let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
/// let addr = server.local_addr().expect("a TCP listener");
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut conn = TcpStream::connect(addr)?;
/// conn.write_all("straße".as_bytes())?;
/// conn.shutdown(Shutdown::Write)?;
/// let mut reply = String::new();
/// conn.read_to_string(&mut reply)?;
/// assert_eq!(reply, "STRASSE");
///
/// stop.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    listeners: Vec<Listener>,
    endpoints: Vec<Endpoint>,
    engine: Engine,
    name: String,
    shared: Arc<Shared>,
    /// The program run per connection, if any: its stragglers are stopped after serving.
    exec: Option<Arc<Exec>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .field("engine", &self.engine)
            .field("service", &self.name)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            endpoints: Vec::new(),
            engine: Engine::default(),
            limits: Limits::default(),
            framing: Framing::Raw,
            service: Arc::new(Upper),
            name: None,
            stream_handler: None,
            datagram_handler: None,
            async_handler: None,
            exec: None,
            verify_request: None,
            handle_error: None,
            access: AccessList::default(),
            multicast_if: None,
            #[cfg(feature = "tls")]
            tls: None,
            stats: None,
        }
    }

    /// The endpoints as bound, in the order they were given, with real port numbers
    /// (socket's `getsockname`).
    #[doc(alias = "getsockname")]
    #[doc(alias = "server_address")]
    pub fn local_endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The socket address of the first TCP or UDP endpoint, if there is one.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoints
            .iter()
            .find_map(|e| e.socket_addrs().ok()?.first().copied())
    }

    /// The engine this server runs on: the one asked for, or [`Engine::Async`] when
    /// [`Engine::Uring`] was asked for where io_uring is refused (see [`ServerBuilder::bind`]).
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The name of what this server runs: the service's (`upper`), or a handler's type name.
    pub fn service_name(&self) -> &str {
        &self.name
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// A handle that stops this server from any thread or task.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: self.shared.stop.clone(),
        }
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called, then stops accepting, lets
    /// connections in flight finish within [`Limits::grace`], closes the rest and returns.
    ///
    /// Blocks the calling thread. The async engine starts its own tokio runtime, so do not call
    /// this from inside one (use `spawn_blocking` or a thread).
    ///
    /// # Errors
    ///
    /// Only when the engine cannot start (no thread or runtime could be made). Errors on one
    /// connection close that connection and are logged; they never end serving.
    pub fn serve_forever(self) -> Result<(), Error> {
        self.serve_forever_with_ready(|| {})
    }

    /// Serves as [`Server::serve_forever`] does, and calls `ready` once the engine serves:
    /// from then on every connection is taken at once. On [`Engine::Uring`] that is once every
    /// thread has made its ring and armed its accepts (before it, a connection waits in the
    /// listen queue for a thread, and threads that start late take none of the first ones);
    /// the other engines are ready as they start. `ready` is not called when the engine
    /// cannot start (then this returns the error).
    ///
    /// `socketkit serve` prints its `listening on` lines from here, so a line means ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketkit::{Engine, Server};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .listen("tcp://127.0.0.1:0".parse()?)
    ///     .engine(Engine::Uring)
    ///     .bind()?;
    /// let stop = server.shutdown_handle();
    /// let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    /// let serving = std::thread::spawn(move || {
    ///     server.serve_forever_with_ready(move || ready_tx.send(()).unwrap())
    /// });
    /// ready_rx.recv()?; // every thread accepts now
    /// stop.shutdown();
    /// serving.join().unwrap()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Server::serve_forever`].
    pub fn serve_forever_with_ready(
        self,
        ready: impl FnOnce() + Send + 'static,
    ) -> Result<(), Error> {
        let served = engine::serve(self.engine, self.shared, self.listeners, Box::new(ready));
        // Programs whose connections the grace period's end closed got SIGTERM; they get a
        // moment, then SIGKILL, and are reaped before serving is said to be over.
        if let Some(exec) = self.exec {
            exec.finish();
        }
        served
    }
}
