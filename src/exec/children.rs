//! The programs running for a server, and how they end: reaped when they exit, stopped
//! (`SIGTERM`, then `SIGKILL` after [`KILL_AFTER`]) when their connection ends first, and
//! finished off once the server has drained.
//!
//! Each program runs in a process group of its own and is signalled as a group, so `sh -c
//! 'a | b'` stops whole; a group is signalled only while its leader is not yet reaped, so its
//! id cannot have been reused.
//!
//! A forced stop (a second signal: [`crate::server::exit`]) ends the process without a drain:
//! the programs running then are in process groups of their own, which no terminal's Ctrl-C
//! reaches, so [`kill_all`] kills them first, from a list of every server's programs.

use std::io;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;

/// How long a program has between `SIGTERM` and `SIGKILL`. Short because it comes after the
/// connection's own end (or after the whole grace period, at shutdown): the program has had
/// its time; this is only for it to flush and remove what it made, as systemd's stop does
/// (whose default of 90 s is for services, not per-connection programs).
pub(crate) const KILL_AFTER: Duration = Duration::from_secs(1);

/// The process group (its leader's pid) of every program of this process not yet known to
/// have exited, across servers: what [`kill_all`] kills.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A program's place in [`RUNNING`], given up when dropped: once its leader has been reaped.
struct Entry(u32);

impl Entry {
    fn new(child: &Child) -> Option<Entry> {
        let pid = child.id()?;
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Some(Entry(pid))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = running.iter().position(|&pid| pid == self.0) {
            running.swap_remove(at);
        }
    }
}

/// Kills (`SIGKILL`) the process group of every program still running in this process, for a
/// stop that does not wait ([`crate::server::exit`]). A group is killed only while its leader
/// is still a child of this process (the moment between a leader's reaping and its entry's
/// removal must not kill a stranger that took its number).
pub(crate) fn kill_all() {
    let me = std::process::id().to_string();
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in running.iter() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if parent == Some(me.as_str()) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Programs whose connection ended before they did (the grace period ran out, the task was
/// dropped): signalled with `SIGTERM`, waiting to be reaped.
#[derive(Default)]
pub(crate) struct Children {
    stopping: Mutex<Vec<(Child, Instant, Option<Entry>)>>,
}

impl Children {
    /// Reaps the stopping programs that have exited and kills those past [`KILL_AFTER`]
    /// (called at each new run, so a busy server keeps no zombies).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        stopping.retain_mut(|(child, since, _)| {
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            if now.duration_since(*since) >= KILL_AFTER {
                signal(child, Signal::SIGKILL);
            }
            true
        });
    }

    /// After serving: waits up to [`KILL_AFTER`] for the stopping programs, then kills the
    /// rest and reaps them. Blocks (the engine's runtime is gone by now). Returns how many had
    /// to be killed.
    pub(crate) fn finish(&self) -> usize {
        let start = Instant::now();
        let mut killed = 0;
        loop {
            let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
            stopping.retain_mut(|(child, _, _)| matches!(child.try_wait(), Ok(None)));
            if stopping.is_empty() {
                return killed;
            }
            let elapsed = start.elapsed();
            if elapsed >= KILL_AFTER && killed == 0 {
                killed = stopping.len();
                tracing::info!("killing {killed} program(s) still running (SIGKILL)");
                stopping
                    .iter_mut()
                    .for_each(|(child, _, _)| signal(child, Signal::SIGKILL));
            }
            if elapsed >= KILL_AFTER * 3 {
                // SIGKILL is not ignorable: only a process stuck in the kernel (D state) gets
                // here. Leave it to init rather than hang the server's exit.
                tracing::warn!("{} program(s) did not die after SIGKILL", stopping.len());
                return killed;
            }
            drop(stopping);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop_later(&self, mut child: Child, entry: Option<Entry>) {
        signal(&mut child, Signal::SIGTERM);
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        stopping.push((child, Instant::now(), entry));
    }
}

/// Signals a program's process group, if the program has not been reaped (which this checks,
/// reaping it if it has exited).
fn signal(child: &mut Child, signal: Signal) {
    if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
        // ESRCH: the group is gone already. The leader is not reaped, so the id is still ours.
        let _ = killpg(Pid::from_raw(pid as i32), signal);
    }
}

/// One running program. Dropped before it was waited for (its connection's task was dropped
/// at the end of the grace period), it gets `SIGTERM` and goes to [`Children`], which kills it
/// if it outlives [`KILL_AFTER`].
pub(crate) struct Running {
    child: Option<Child>,
    children: Arc<Children>,
    /// Dropped with `child`, once it is reaped (or handed to `children` with it).
    entry: Option<Entry>,
}

impl Running {
    pub(crate) fn new(child: Child, children: Arc<Children>) -> Running {
        Running {
            entry: Entry::new(&child),
            child: Some(child),
            children,
        }
    }

    /// The program, for its pipes.
    pub(crate) fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("not yet waited for")
    }

    /// Waits for the program to exit and reaps it.
    pub(crate) async fn wait(mut self) -> io::Result<ExitStatus> {
        let status = self.child().wait().await;
        self.child = None;
        self.entry = None;
        status
    }

    /// Stops the program now: `SIGTERM`, then `SIGKILL` if it has not exited within
    /// [`KILL_AFTER`]; reaps it.
    pub(crate) async fn stop(mut self) -> io::Result<ExitStatus> {
        signal(self.child(), Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(KILL_AFTER, self.child().wait()).await {
            self.child = None;
            self.entry = None;
            return status;
        }
        signal(self.child(), Signal::SIGKILL);
        self.wait().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            self.children.stop_later(child, self.entry.take());
        }
    }
}
