//! Whether this process may use io_uring, and the operations the uring engine needs: asked
//! once, before serving, so that a server told `--engine uring` where io_uring is refused
//! (Docker's default seccomp profile, `kernel.io_uring_disabled`, an old kernel) falls back to
//! the async engine with one warning line instead of failing.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use super::bufring::BufRing;

/// The environment variable that rules io_uring out: `SOCKETKIT_URING=refuse` makes the probe
/// fail as if the kernel had refused (for tests, and for users who want the async engine
/// whatever `--engine` says).
pub(crate) const ENV: &str = "SOCKETKIT_URING";

/// Why io_uring cannot serve here, and what would change that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// What failed.
    pub(crate) cause: String,
    /// How to make it work.
    pub(crate) fix: &'static str,
}

/// The fix when the kernel or a sandbox refuses io_uring itself.
const ALLOW: &str = "allow io_uring (sysctl kernel.io_uring_disabled=0; in Docker, a seccomp \
                     profile that permits io_uring_setup, io_uring_enter and io_uring_register)";
/// The fix when the kernel is too old for an operation.
const NEWER: &str = "run on Linux 6.0 or later (multishot receive, provided-buffer rings)";

/// Asks the kernel for everything the engine (and `bench --engine uring`) uses: a ring, the
/// wait with a time-out (`IORING_FEAT_EXT_ARG`), the opcodes, multishot receive (Linux 6.0,
/// probed through an opcode of the same release) and the registration of a provided-buffer
/// ring.
pub(crate) fn probe() -> Result<(), Refused> {
    if std::env::var_os(ENV).is_some_and(|v| v == "refuse") {
        return Err(Refused {
            cause: format!("{ENV}=refuse is set"),
            fix: "unset it",
        });
    }
    // The kernel's answer does not change: asked once per process. On a thread of its own,
    // because the kernel tears a ring down after its last close and then signals the thread
    // that created it (task work): a blocking read with a time-out on the caller's thread
    // would fail with EINTR.
    static KERNEL: std::sync::OnceLock<Result<(), Refused>> = std::sync::OnceLock::new();
    KERNEL
        .get_or_init(|| {
            std::thread::spawn(probe_kernel).join().unwrap_or_else(|_| {
                Err(Refused {
                    cause: "the io_uring probe panicked".into(),
                    fix: ALLOW,
                })
            })
        })
        .clone()
}

/// [`probe`]'s questions to the kernel.
fn probe_kernel() -> Result<(), Refused> {
    let refused = |what: &str, e: io::Error| Refused {
        cause: format!("{what}: {e}"),
        fix: ALLOW,
    };
    let ring = IoUring::new(8).map_err(|e| refused("io_uring_setup failed", e))?;
    if !ring.params().is_feature_ext_arg() {
        return Err(Refused {
            cause: "the kernel's io_uring cannot wait with a time-out (IORING_FEAT_EXT_ARG)".into(),
            fix: NEWER,
        });
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| refused("io_uring_register(PROBE) failed", e))?;
    let needed = [
        (opcode::Accept::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::RecvMsg::CODE, "recvmsg"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll"),
        (opcode::AsyncCancel::CODE, "cancel"),
        // `bench --engine uring` makes its connections on the ring.
        (opcode::Connect::CODE, "connect"),
        // Multishot receive came with Linux 6.0, as did this opcode; a probe cannot ask for a
        // flag, only for an opcode.
        (
            opcode::SendZc::CODE,
            "send_zc (Linux 6.0: multishot receive)",
        ),
    ];
    if let Some((_, name)) = needed.iter().find(|(code, _)| !probe.is_supported(*code)) {
        return Err(Refused {
            cause: format!("the kernel's io_uring lacks the {name} operation"),
            fix: NEWER,
        });
    }
    // Multishot accept came with the provided-buffer rings (Linux 5.19).
    BufRing::new(&ring, 0, 2, 64)
        .map(drop)
        .map_err(|e| refused("registering a provided-buffer ring failed", e))
}
