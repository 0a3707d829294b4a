//! A fixed pool of worker threads for the `pool` engine. Jobs wait in a queue that the
//! connection slots bound: at most `max_connections` connections are accepted at once.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Pool {
    sender: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn new(workers: usize) -> io::Result<Pool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers.max(1) {
            let receiver = receiver.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("socketkit-worker-{index}"))
                    .spawn(move || work(&receiver))?,
            );
        }
        Ok(Pool {
            sender: Mutex::new(Some(sender)),
            workers: Mutex::new(handles),
        })
    }

    /// Queues a job; after [`Pool::join`] the job is dropped (its connection closes).
    pub(crate) fn execute(&self, job: Job) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = sender.as_ref() {
            let _ = sender.send(job);
        }
    }

    /// Lets the workers finish the queue, then joins them.
    pub(crate) fn join(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take a job, not while running it.
        let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(job) => job(), // jobs catch their own panics, so the worker lives on
            Err(_) => return,
        }
    }
}
