//! The server: a builder, then `bind()`, then `serve_forever()` (socketserver's shape).

pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod shutdown;

use std::sync::Arc;
use std::time::Duration;

pub use limits::{Limits, MAX_DATAGRAM_BYTES};
pub use shutdown::ShutdownHandle;

use crate::endpoint::Endpoint;
use crate::engine::{self, Engine, Shared};
use crate::error::Error;
use crate::service::{DynService, Service, Upper};
use listener::Listener;
use shutdown::Trigger;

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
    service: Arc<dyn DynService>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("endpoints", &self.endpoints)
            .field("engine", &self.engine)
            .field("limits", &self.limits)
            .field("service", &self.service.name())
            .finish()
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

    /// Sets [`Limits::grace`].
    pub fn grace(mut self, grace: Duration) -> ServerBuilder {
        self.limits.grace = grace;
        self
    }

    /// Chooses the service to run. Default: [`Upper`].
    pub fn service<S: Service>(mut self, service: S) -> ServerBuilder {
        self.service = Arc::new(service);
        self
    }

    /// Creates and binds every listening socket, so [`Server::local_endpoints`] reports real
    /// ports before serving starts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] without an endpoint; [`Error::Bind`] when a socket cannot be bound
    /// (address in use, permission denied); [`Error::NameNotFound`] for a host that does not
    /// resolve.
    pub fn bind(self) -> Result<Server, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("a server needs at least one endpoint".into()));
        }
        let mut listeners = Vec::with_capacity(self.endpoints.len());
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for endpoint in &self.endpoints {
            let listener = Listener::bind(endpoint, &self.limits)?;
            endpoints.push(listener.local_endpoint().map_err(|source| Error::Bind {
                endpoint: endpoint.clone(),
                source,
            })?);
            listeners.push(listener);
        }
        let trigger = || Trigger::new().map_err(|e| Error::io("cannot create a wake-up pipe", e));
        let shared = Arc::new(Shared {
            service: self.service,
            limits: self.limits,
            stop: Arc::new(trigger()?),
            force: trigger()?,
        });
        Ok(Server {
            listeners,
            endpoints,
            engine: self.engine,
            shared,
        })
    }
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .field("engine", &self.engine)
            .field("service", &self.shared.service.name())
            .finish()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            endpoints: Vec::new(),
            engine: Engine::default(),
            limits: Limits::default(),
            service: Arc::new(Upper),
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

    /// The engine this server runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The name of the service this server runs, e.g. `upper`.
    pub fn service_name(&self) -> &str {
        self.shared.service.name()
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
        engine::serve(self.engine, self.shared, self.listeners)
    }
}
