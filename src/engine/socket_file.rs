//! Unix socket files: the one a server makes at bind is removed when the server is done with
//! it, but only while the path still names that socket; a stale one left by a server that is
//! gone is told from a live server's without blocking.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use socket2::{Domain, SockAddr, Socket, Type};

/// What a bind made at `path`: its device and inode tell it from whatever replaces it later
/// (another server's socket re-bound there, a file someone put there).
#[derive(Debug)]
struct Made {
    path: PathBuf,
    dev: u64,
    ino: u64,
    removed: AtomicBool,
}

impl Made {
    /// Removes the path if it still names the socket made here; only the first call acts.
    ///
    /// There is no "unlink if this inode" system call, so another process could still replace
    /// the file between the check and the unlink. An equal inode is ours unless our file was
    /// unlinked, our socket closed and a new file given the freed number, all in between.
    fn remove(&self) {
        if self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if is_same_socket(&meta, self.dev, self.ino) => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::debug!("cannot remove {}: {e}", self.path.display());
                }
            }
            Ok(_) => tracing::info!(
                "{} is no longer the socket this server made; left in place",
                self.path.display()
            ),
            Err(_) => {} // removed by someone else already
        }
    }
}

fn is_same_socket(meta: &std::fs::Metadata, dev: u64, ino: u64) -> bool {
    meta.file_type().is_socket() && meta.dev() == dev && meta.ino() == ino
}

/// The socket files of this process's servers that are still bound, for [`exit`], which runs
/// no destructors. Held across each bind as well, so that `exit` never misses a file that is
/// being made. Process-wide because what it serves, ending the process, is.
static MADE: Mutex<Vec<Weak<Made>>> = Mutex::new(Vec::new());

/// A Unix socket file this server made. Dropping it removes the file, if it is still that one.
/// An abstract socket (`unix://@name`) has none: its name goes when the socket closes.
#[derive(Debug)]
pub(crate) struct SocketFile(Option<Arc<Made>>);

impl SocketFile {
    /// Runs `bind`, which makes the socket file at `path`, and records what it made.
    pub(crate) fn bind<T>(
        path: &Path,
        bind: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<(T, SocketFile)> {
        let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
        let socket = bind()?;
        let meta = std::fs::symlink_metadata(path)?;
        let record = Arc::new(Made {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            removed: AtomicBool::new(false),
        });
        made.retain(|m| m.strong_count() > 0);
        made.push(Arc::downgrade(&record));
        Ok((socket, SocketFile(Some(record))))
    }

    /// An abstract socket's: nothing to remove, nothing for [`exit`] to do.
    pub(crate) fn none() -> SocketFile {
        SocketFile(None)
    }

    /// The path the socket was bound at; `None` for an abstract socket.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.0.as_ref().map(|made| made.path.as_path())
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(made) = &self.0 {
            made.remove();
        }
    }
}

/// Ends the process at once with `code`, like [`std::process::exit`], after removing the Unix
/// socket file of every server of this process that is still bound (each only if the path
/// still names the socket that server made), and killing (`SIGKILL`) the programs its servers
/// run ([`ServerBuilder::exec`](crate::ServerBuilder::exec)), each with its process group:
/// they are in groups of their own, which a terminal's Ctrl-C does not reach.
///
/// `std::process::exit` runs no destructors, so a server that is never dropped leaves its
/// socket files behind; call this instead where a program must stop without waiting for
/// [`Server::serve_forever`](crate::Server::serve_forever) to return, as `socketkit serve`
/// does on a second SIGINT, SIGTERM or SIGHUP (exit code 130). No server of this process can
/// make a new socket file while it runs.
pub fn exit(code: i32) -> ! {
    let made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    for record in made.iter().filter_map(Weak::upgrade) {
        record.remove();
    }
    crate::exec::kill_all();
    // Exits holding the lock: a bind on another thread waits rather than make a file now.
    std::process::exit(code)
}

/// Removes a Unix socket file left behind by a server that is gone (connecting is refused), so
/// that a restart does not fail. A live server's socket, or a file that is not a socket, is
/// left alone: then `bind` fails with "address in use", as it should.
///
/// The probe never blocks: a blocking `connect` to a live listener whose accept queue is full
/// waits for room, which would hang start-up. "Would block" means a listener is there.
pub(crate) fn remove_if_stale(path: &Path, stream: bool) {
    remove_if_stale_of(path, if stream { Type::STREAM } else { Type::DGRAM });
}

/// [`remove_if_stale`] for a socket of type `ty` (a sequenced-packet socket too).
pub(crate) fn remove_if_stale_of(path: &Path, ty: Type) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.file_type().is_socket() {
        return;
    }
    let probe = Socket::new(Domain::UNIX, ty, None).and_then(|socket| {
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::unix(path)?)
    });
    let refused = probe.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
    // Only the file that was probed: not one that a starting server has just bound there.
    let unchanged = || {
        std::fs::symlink_metadata(path).is_ok_and(|m| is_same_socket(&m, meta.dev(), meta.ino()))
    };
    if refused && unchanged() {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::{UnixDatagram, UnixListener};

    use super::*;

    #[test]
    fn only_the_socket_made_here_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_listener, file) = SocketFile::bind(&path, || UnixListener::bind(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"precious").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");

        std::fs::remove_file(&path).unwrap();
        let (_gram, file) = SocketFile::bind(&path, || UnixDatagram::bind(&path)).unwrap();
        drop(file);
        assert!(!path.exists(), "its own socket is removed");
    }

    #[test]
    fn a_stale_socket_is_removed_and_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.sock");
        drop(UnixListener::bind(&path).unwrap()); // the file stays; nobody listens
        remove_if_stale(&path, true);
        assert!(!path.exists(), "a stale stream socket is removed");
        let _live = UnixListener::bind(&path).unwrap();
        remove_if_stale(&path, true);
        assert!(path.exists(), "a live stream socket is kept");

        let path = dir.path().join("gram.sock");
        drop(UnixDatagram::bind(&path).unwrap());
        remove_if_stale(&path, false);
        assert!(!path.exists(), "a stale datagram socket is removed");
        let _live = UnixDatagram::bind(&path).unwrap();
        remove_if_stale(&path, false);
        assert!(path.exists(), "a live datagram socket is kept");

        let path = dir.path().join("file");
        std::fs::write(&path, b"precious").unwrap();
        remove_if_stale(&path, true);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
