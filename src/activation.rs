//! systemd socket activation and readiness (feature `systemd`): the listening sockets a
//! service manager passes (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, sd_listen_fds(3)),
//! and the state it is told (`READY=1`, `STOPPING=1` over `NOTIFY_SOCKET`, sd_notify(3)).
//!
//! The manager binds the sockets (`.socket` unit) and keeps them open across restarts of the
//! service, so connections that arrive while the service restarts wait in the listen queue
//! instead of being refused. The `listenfd` crate takes the descriptors; it does not read
//! `LISTEN_FDNAMES` and ignores a `LISTEN_PID` of another process, so both are read here. Every
//! descriptor is checked before any is used: one that is not a socket, or a socket of a kind
//! socketkit does not serve, is an error for the whole set.

use std::os::fd::OwnedFd;

use crate::error::Error;

/// One socket passed by the service manager.
#[derive(Debug)]
pub struct Passed {
    /// Its name in `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` unit; systemd's
    /// default is the unit's name).
    pub name: Option<String>,
    /// Its descriptor number (3 for the first).
    pub fd: i32,
    /// The socket, to hand to [`ServerBuilder::adopt`](crate::server::ServerBuilder::adopt).
    pub socket: OwnedFd,
}

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The kinds socketkit serves, as `listenfd` checks them (`AF_INET` also takes `AF_INET6`).
const KINDS: [(i32, i32, &str); 5] = [
    (libc::AF_INET, libc::SOCK_STREAM, "TCP socket"),
    (libc::AF_INET, libc::SOCK_DGRAM, "UDP socket"),
    (libc::AF_UNIX, libc::SOCK_STREAM, "Unix stream socket"),
    (libc::AF_UNIX, libc::SOCK_DGRAM, "Unix datagram socket"),
    (
        libc::AF_UNIX,
        libc::SOCK_SEQPACKET,
        "Unix sequenced-packet socket",
    ),
];

/// The sockets the service manager passed to this process; empty when `LISTEN_FDS` is not
/// set. `LISTEN_PID` and `LISTEN_FDS` are unset once read (as sd_listen_fds(3) does with
/// `unset_environment`), so a child process does not take the sockets for its own.
///
/// # Errors
///
/// [`Error::Config`] (exit 2) for a `LISTEN_PID` of another process (the sockets were meant
/// for it), a `LISTEN_FDS` that is not a number, a descriptor that is not a socket or is a
/// socket of a kind socketkit does not serve; no socket is returned then.
pub fn passed_sockets() -> Result<Vec<Passed>, Error> {
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let bad = |what: String| Error::Config(format!("socket activation: {what}"));
    let count: usize = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("LISTEN_FDS is not a number: {count:?}")))?;
    if let Some(pid) = std::env::var_os("LISTEN_PID").filter(|p| !p.is_empty()) {
        let ours = std::process::id().to_string();
        if pid != *ours {
            return Err(bad(format!(
                "LISTEN_PID is {}, and this process is {ours}: the sockets were passed to \
                 another process",
                pid.to_string_lossy()
            )));
        }
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() != count {
        return Err(bad(format!(
            "LISTEN_FDS is {count}, and no descriptor was taken"
        )));
    }
    let mut passed = Vec::with_capacity(count);
    for index in 0..count {
        let fd = FIRST_FD + i32::try_from(index).map_err(|_| bad("too many sockets".into()))?;
        let socket = take(&mut fds, index).map_err(|e| bad(format!("descriptor {fd}: {e}")))?;
        passed.push(Passed {
            name: names.get(index).filter(|n| !n.is_empty()).cloned(),
            fd,
            socket,
        });
    }
    Ok(passed)
}

/// Takes descriptor `index` as the first kind it is.
fn take(fds: &mut listenfd::ListenFd, index: usize) -> Result<OwnedFd, String> {
    for (family, ty, hint) in KINDS {
        if let Ok(Some(socket)) = fds.take_custom::<OwnedFd>(index, family, ty, hint) {
            return Ok(socket);
        }
    }
    let fd = FIRST_FD + i32::try_from(index).unwrap_or(i32::MAX);
    // What the descriptor is, in the kernel's words: socket:[ino], pipe:[ino], a path.
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(target) if target.to_string_lossy().starts_with("socket:") => Err(
            "a socket of a kind socketkit does not serve (it serves TCP, UDP, and Unix stream, \
             datagram and sequenced-packet sockets)"
                .into(),
        ),
        Ok(target) => Err(format!("not a socket ({})", target.display())),
        Err(_) => Err("not an open descriptor".into()),
    }
}

/// Tells the service manager the service is ready (`READY=1`), when it listens
/// (`NOTIFY_SOCKET` is set; else nothing). A failure is logged, not fatal: the service still
/// serves.
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready, "READY=1");
}

/// Tells the service manager the service is stopping (`STOPPING=1`), as [`notify_ready`] does.
pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping, "STOPPING=1");
}

fn notify(state: sd_notify::NotifyState<'_>, text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(&[state]) {
        Ok(()) => tracing::debug!("told the service manager {text}"),
        Err(e) => tracing::warn!("cannot tell the service manager {text}: {e}"),
    }
}
