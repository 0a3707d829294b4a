//! Programs as servers: `socketkit serve -- PROGRAM [ARGS...]`, as inetd, ucspi-tcp's
//! `tcpserver`, ncat's `-e` and socat's `EXEC:` run them.
//!
//! Each connection runs the program once, the connection's bytes on its stdin and stdout, its
//! stderr the server's own (the log), with UCSPI's environment variables naming the peer
//! (`PROTO`, `TCPREMOTEIP`, ...: see [`env`]). Each datagram runs it once: the datagram is its
//! stdin, its stdout (within the datagram limit and the message time-out) the reply. No shell
//! runs unless the program is one (`sh -c '...'`).
//!
//! # Pipes, not the socket
//!
//! inetd and tcpserver hand the program the socket itself (dup'ed onto 0 and 1): no copy, the
//! cheapest. socketkit gives it two pipes and copies between them and the connection in the
//! engine instead, for what only the engine can do on the way: the idle and write time-outs
//! and the end of the grace period (a program holding the socket itself would outlive them),
//! the byte counts of the connection's log line, the `--dump` taps, and a PROXY header or TLS
//! layer the engine strips before the program's first byte. The peer address in the variables
//! is the engine's ([`Context::peer`](crate::service::Context::peer)), so behind a proxy that
//! the engine honours the program sees the real client. The cost is one copy per byte each
//! way through a pipe, small beside a process per connection.
//!
//! The runs are a handler the engine runs like any other ([`crate::handler::AsyncStreamHandler`]),
//! so the connection limit (a run is a connection: `--max-connections` bounds the programs
//! running), the access lists, the time-outs and the drain are the server's own. It runs on the
//! async engine; the thread engines refuse it at `bind()`.

mod children;
mod datagram;
pub(crate) mod env;
mod stream;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use crate::error::Error;
use crate::service::{Address, Context};
pub(crate) use children::kill_all;
use children::{Children, Running};
use env::{LocalProcess, PeerCredentials};
pub(crate) use stream::ExecHandler;

/// A program to run for each connection or datagram: its path, found on `PATH` once when made
/// (as `execvp` would), and its arguments.
///
/// # Examples
///
/// ```
/// use socketkit::exec::Program;
///
/// let cat = Program::new(["cat"])?;
/// assert!(cat.path().is_absolute());
/// assert!(Program::new(["no-such-program-here"]).is_err());
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    argv: Vec<OsString>,
}

impl Program {
    /// The program `argv[0]` (a path, or a name looked up on `PATH`) with arguments
    /// `argv[1..]`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (exit code 2) for an empty `argv`, or a program that is not found or
    /// not an executable file: refused before serving, not at the first connection.
    pub fn new<I, S>(argv: I) -> Result<Program, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let Some(name) = argv.first() else {
            return Err(Error::Config("no program to run after --".into()));
        };
        let path = find(name).ok_or_else(|| {
            Error::Config(format!(
                "program {:?} not found, or not an executable file{}",
                name.to_string_lossy(),
                if name.as_bytes().contains(&b'/') {
                    ""
                } else {
                    " on PATH"
                }
            ))
        })?;
        Ok(Program { path, argv })
    }

    /// Where the program was found.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The program's name and arguments, as given.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }
}

/// `name` as `execvp` finds it: a name with a slash as it is, else the first executable file
/// of that name in `PATH`'s directories (an empty entry is the current directory).
fn find(name: &OsStr) -> Option<PathBuf> {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.is_empty() {
        return None;
    }
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return executable(&path).then_some(path);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&dirs)
        .map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            dir.join(name)
        })
        .find(|path| executable(path))
}

/// A program as a server runs it: the program, the runs stopping, and this process's ids for
/// `UNIXLOCAL*`.
pub(crate) struct Exec {
    program: Program,
    children: Arc<Children>,
    local: LocalProcess,
}

impl Exec {
    pub(crate) fn new(program: Program) -> Exec {
        Exec {
            program,
            children: Arc::default(),
            local: LocalProcess {
                pid: std::process::id(),
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            },
        }
    }

    /// The program's name, for log lines.
    fn name(&self) -> std::borrow::Cow<'_, str> {
        self.program.argv[0].to_string_lossy()
    }

    /// Starts one run for `ctx`, stdin and stdout piped, stderr the server's. In a process
    /// group of its own, so that stopping it stops its children too, and so that a terminal's
    /// Ctrl-C reaches the server (which then drains) rather than every program at once.
    fn spawn(&self, ctx: &Context, cred: Option<PeerCredentials>) -> std::io::Result<Running> {
        self.children.sweep();
        let mut command = tokio::process::Command::new(&self.program.path);
        command
            .arg0(&self.program.argv[0])
            .args(&self.program.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        for name in env::UCSPI_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env::ucspi(ctx, self.local, cred));
        let child = command.spawn()?;
        Ok(Running::new(child, self.children.clone()))
    }

    /// Logs how a run ended: success at debug level, a failure status at info, a signal (a
    /// crash) at warn, unless the server sent it (`stopped`: the connection ended first), which
    /// is debug. Each costs only its own connection or datagram.
    fn report(&self, peer: &Address, status: std::io::Result<ExitStatus>, stopped: bool) {
        use nix::sys::signal::Signal;
        use std::os::unix::process::ExitStatusExt;
        let name = self.name();
        match status {
            Ok(status) if status.success() => tracing::debug!(%peer, "{name} exited 0"),
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => tracing::info!(%peer, "{name} exited with status {code}"),
                (None, Some(signal)) => {
                    let ours = [Signal::SIGTERM as i32, Signal::SIGKILL as i32];
                    let name_of = Signal::try_from(signal)
                        .map_or_else(|_| signal.to_string(), |s| s.as_str().to_string());
                    if stopped && ours.contains(&signal) {
                        tracing::debug!(%peer, "{name} stopped ({name_of})");
                    } else {
                        tracing::warn!(%peer, "{name} was killed by {name_of}");
                    }
                }
                (None, None) => tracing::info!(%peer, "{name} ended: {status}"),
            },
            Err(e) => tracing::warn!(%peer, "cannot wait for {name}: {e}"),
        }
    }

    /// After serving: the programs whose connections were closed at the end of the grace
    /// period got `SIGTERM`; waits briefly for them, then kills the rest.
    pub(crate) fn finish(&self) {
        self.children.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_on_path_and_a_path_is_taken_as_it_is() {
        assert!(Program::new(["sh"]).unwrap().path().ends_with("sh"));
        assert_eq!(
            Program::new(["/bin/sh"]).unwrap().path(),
            Path::new("/bin/sh")
        );
        assert_eq!(Program::new(["sh", "-c", "x"]).unwrap().argv().len(), 3);
    }

    #[test]
    fn missing_empty_or_not_executable_programs_are_usage_errors() {
        for argv in [
            vec![],
            vec![""],
            vec!["no-such-program-anywhere"],
            vec!["/etc/passwd"],
            vec!["/"],
        ] {
            let err = Program::new(argv.clone()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{argv:?}");
        }
    }
}
