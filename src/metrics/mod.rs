//! `serve --metrics`: the listeners' counters ([`crate::stats`]), `socketkit_build_info` and
//! the standard `process_*` metrics in the Prometheus text format (version 0.0.4, written by
//! prometheus-client) at `GET /metrics`, over HTTP/1 (hyper).
//!
//! The exporter runs on its own thread and runtime, so a scrape never takes time from serving,
//! and it is bounded like any server: at most [`MAX_SCRAPERS`] connections at once (more are
//! closed at once), a request's head must arrive within [`HEADER_TIMEOUT`], and a connection
//! lasts at most [`CONNECTION_TIMEOUT`] whatever the scraper does; one request per connection.
//! Anything but `GET /metrics` is 404.
//!
//! ```
//! use socketkit::{Server, metrics::MetricsServer, stats::Stats};
//!
//! let stats = Stats::new();
//! let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).stats(&stats).bind()?;
//! let exporter = MetricsServer::start(&"tcp://127.0.0.1:0".parse()?, stats)?;
//! println!("scrape http://{}/metrics", exporter.local_addr());
//! exporter.stop();
//! # drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod collect;
mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, oneshot};

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stats::Stats;

/// Scrapes served at once; a connection beyond them is closed at once.
pub const MAX_SCRAPERS: usize = 8;
/// How long a scraper may take to send its request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one scrape's connection may last, the reply's writing included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A running metrics exporter. Dropping it (or [`MetricsServer::stop`]) stops it.
#[derive(Debug)]
pub struct MetricsServer {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `endpoint` (a `tcp://` endpoint) and serves `stats` there on a thread of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an endpoint other than TCP, [`Error::Bind`] when it cannot be
    /// bound, an I/O error when the thread or its runtime cannot start.
    pub fn start(endpoint: &Endpoint, stats: Stats) -> Result<MetricsServer, Error> {
        if !matches!(endpoint, Endpoint::Tcp { .. }) {
            return Err(Error::Config(format!(
                "--metrics takes a tcp:// endpoint (HTTP), not {endpoint}"
            )));
        }
        let bind_err = |source| Error::Bind {
            endpoint: endpoint.clone(),
            source,
        };
        let addr = endpoint.socket_addrs()?[0];
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the metrics runtime", e))?;
        let registry = Arc::new(registry(stats));
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("socketkit-metrics".into())
            .spawn(move || runtime.block_on(serve(listener, registry, stopped)))
            .map_err(|e| Error::io("cannot start the metrics thread", e))?;
        Ok(MetricsServer {
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops it and waits for its thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The registry a scrape encodes: the listeners, the build, the process.
fn registry(stats: Stats) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "socketkit_build",
        "socketkit's version, as a label; the value is 1",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(collect::StatsCollector { stats }));
    registry.register_collector(Box::new(process::ProcessCollector));
    registry
}

async fn serve(
    listener: std::net::TcpListener,
    registry: Arc<Registry>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("metrics: cannot adopt the listener: {e}"),
    };
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::debug!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: {MAX_SCRAPERS} scrapes already in progress; closed");
            continue; // dropped: closed
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false);
            let service = hyper::service::service_fn(move |request| {
                let reply = answer(&request, &registry);
                async move { Ok::<_, Infallible>(reply) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "metrics: {e}"),
                Err(_) => tracing::debug!(%peer, "metrics: scrape took too long; closed"),
            }
            drop(permit);
        });
    }
}

/// `GET /metrics` gets the text; anything else, 404.
fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    let mut text = String::new();
    match prometheus_text::encode(&mut text, registry) {
        Ok(()) => reply(StatusCode::OK, prometheus_text::CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "cannot encode the metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
