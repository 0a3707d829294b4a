//! The `pool` engine's threads, after Apache's event MPM: a fixed set of workers, and one
//! poller thread that holds every connection waiting for its peer.
//!
//! A service's connection costs a worker only while it has something to do. The poller
//! ([`poller`]) watches the waiting connections with epoll (mio) and their deadlines with a
//! heap; when one becomes readable (or writable, for a reply that did not fit), when its
//! connection machine's deadline passes, or when shutdown concerns it, the poller queues it
//! for a worker. The worker ([`ready`]) reads what is there without blocking, feeds the
//! [`Connection`](crate::engine::conn::Connection) machine, writes the reply, and parks the connection
//! with the poller again as soon as a read or write would block (a quick peer's after a wait of
//! about 200 µs for its next request, so that ping-pong skips the poller). So silent and slow
//! peers cost a descriptor and a little memory each, never a worker.
//!
//! Blocking [`StreamHandler`](crate::handler::StreamHandler)s own their socket for the whole
//! session, as in socketserver: each session is one [`Work::Run`] job that holds its worker
//! until it ends. Datagram handlers are such jobs too.
//!
//! Jobs reach the workers through a multi-consumer queue (crossbeam-channel): a burst wakes
//! every idle worker at once, where a `Mutex<mpsc::Receiver>` lets one worker wait for the next
//! job while holding the lock and the others wait for the lock.

mod poller;
mod pooled;
mod ready;
mod work;

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::engine::slots::Permit;
use crate::engine::{Conn, Shared, Traffic};
use crate::service::Context;
use poller::Hub;
pub(crate) use work::Job;
use work::Work;

/// The workers, their queue and the poller.
pub(crate) struct Pool {
    /// `None` once joined: later jobs are dropped (their connections close).
    jobs: Mutex<Option<Sender<Work>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    hub: Arc<Hub>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl Pool {
    /// Starts `workers` workers (at least one) and the poller.
    pub(crate) fn new(shared: Arc<Shared>, workers: usize) -> io::Result<Pool> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Work>();
        let (hub, poll) = Hub::new(shared, queue.clone())?;
        let poller = {
            let (hub, jobs) = (hub.clone(), jobs.clone());
            std::thread::Builder::new()
                .name("socketkit-poller".into())
                .spawn(move || poller::run(poll, &hub, &jobs))?
        };
        let pool = Pool {
            jobs: Mutex::new(Some(jobs)),
            workers: Mutex::new(Vec::new()),
            hub,
            poller: Mutex::new(Some(poller)),
        };
        for index in 0..workers.max(1) {
            let (queue, hub) = (queue.clone(), pool.hub.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("socketkit-worker-{index}"))
                .spawn(move || work(&queue, &hub));
            match spawned {
                Ok(worker) => pool.lock_workers().push(worker),
                Err(e) => {
                    pool.join();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Queues a job; after [`Pool::join`] the job is dropped (its connection closes).
    pub(crate) fn execute(&self, job: Job) {
        self.send(Work::Run(job));
    }

    /// The job that serves an accepted stream connection: a blocking handler's session holds
    /// its worker to the end; a service's connection is served in rounds, parked with the
    /// poller between them.
    pub(crate) fn connection(
        &self,
        shared: Arc<Shared>,
        conn: Conn,
        ctx: Context,
        traffic: Traffic,
        permit: Permit,
    ) -> Job {
        // The PROXY header is read on the worker, which it holds for the message time-out at
        // most (a balancer sends it with the connection, at once).
        if shared.app.stream_handler.is_some() {
            return Box::new(move || {
                let _permit = permit;
                #[cfg(feature = "proxy")]
                let Some(ctx) = super::proxied::proxied(&shared, &conn, ctx, &traffic) else {
                    return;
                };
                super::stream::serve_stream(&shared, conn, ctx, traffic);
            });
        }
        let hub = self.hub.clone();
        Box::new(move || {
            #[cfg(feature = "proxy")]
            let Some(ctx) = super::proxied::proxied(&shared, &conn, ctx, &traffic) else {
                return;
            };
            #[cfg(not(feature = "proxy"))]
            drop(shared);
            ready::open(&hub, conn, ctx, traffic, permit)
        })
    }

    fn send(&self, work: Work) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jobs) = jobs.as_ref() {
            let _ = jobs.send(work);
        }
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the poller, lets the workers finish the queue, then joins them. Called once the
    /// drain is over, when no connection is left.
    pub(crate) fn join(&self) {
        self.hub.close();
        if let Some(poller) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = poller.join();
        }
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let workers = std::mem::take(&mut *self.lock_workers());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn work(queue: &Receiver<Work>, hub: &Hub) {
    // Jobs and rounds catch their own panics, so the worker lives on.
    for work in queue {
        match work {
            Work::Run(job) => job(),
            Work::Ready(conn) => ready::resume(hub, conn),
        }
    }
}
