//! Little networks of Linux network namespaces, for the tests that loopback cannot host
//! (broadcast, multicast): a namespace alone ([`Netns`]), or a LAN ([`Lab`]) of a "switch"
//! namespace holding a bridge and one namespace per host, each joined to the bridge by a veth
//! pair, on the private subnet 10.77.0.0/24 (host N is 10.77.0.N, broadcast 10.77.0.255).
//! Every address, route and veth is made inside namespaces this process created, so nothing
//! touches the host's own network. Making namespaces needs root and `ip`; where they cannot be
//! made the tests print SKIP to stderr and pass.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{SAFETY_TIMEOUT, Spawned};

/// A bound on every one-shot command, so a bug fails the test instead of hanging it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Namespaces made by this process so far: with the PID, makes their names unique.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// The `socketkit` binary's path.
const BIN: &str = env!("CARGO_BIN_EXE_socketkit");

/// Runs `ip ARGS` to completion; an error describes the failure.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let output = assert_cmd::Command::new("ip")
        .args(args)
        .timeout(RUN_TIMEOUT)
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A network namespace this process made, deleted on drop (with its interfaces).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a namespace named after `tag` (unique per process and call) with its loopback up.
    pub fn new(tag: &str) -> Result<Netns, String> {
        let name = format!(
            "sk-{tag}-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NS PROGRAM ARGS`, with the caller's RUST_LOG removed.
    pub fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .env_remove("RUST_LOG");
        command
    }

    /// `socketkit ARGS` in this namespace.
    pub fn socketkit(&self, args: &[&str]) -> Command {
        self.exec(BIN, args)
    }

    /// Starts `socketkit serve ARGS` here and waits for its one `listening on` line, which must
    /// name `listen`.
    pub fn serve(&self, listen: &str, args: &[&str]) -> Spawned {
        let mut all = vec!["serve", "-l", listen];
        all.extend_from_slice(args);
        let mut server = Spawned::start(self.socketkit(&all));
        let endpoints = server.listening(1);
        assert_eq!(endpoints[0].to_string(), listen, "{:?}", server.seen);
        server
    }

    /// Runs `socketkit ARGS` here to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        assert_cmd::Command::from_std(self.socketkit(args))
            .timeout(RUN_TIMEOUT)
            .output()
            .expect("run socketkit in a namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("namespace cleanup: {e}");
        }
    }
}

/// A LAN of network namespaces; dropping it deletes every namespace (and with them their veths
/// and the bridge), even when an assertion failed.
pub struct Lab {
    /// Host N (1-based) is `hosts[N - 1]`, address 10.77.0.N. Dropped before the switch.
    hosts: Vec<Netns>,
    switch: Netns,
}

impl Lab {
    /// Builds a switch and `count` hosts, or says why it cannot (then the caller skips).
    pub fn new(tag: &str, count: usize) -> Result<Lab, String> {
        let mut lab = Lab {
            hosts: Vec::new(),
            switch: Netns::new(&format!("{tag}-sw"))?,
        };
        lab.build(tag, count)?;
        Ok(lab)
    }

    fn build(&mut self, tag: &str, count: usize) -> Result<(), String> {
        let sw = &self.switch;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        for n in 1..=count {
            let host = Netns::new(&format!("{tag}-h{n}"))?;
            let port = format!("p{n}");
            let address = format!("10.77.0.{n}/24");
            // Made inside the host namespace with its peer put straight into the switch's:
            // the veths never exist in the namespace the tests run in.
            host.ip(&[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                sw.name(),
            ])?;
            self.hosts.push(host);
            let host = &self.hosts[n - 1];
            sw.ip(&["link", "set", &port, "master", "br0"])?;
            sw.ip(&["link", "set", &port, "up"])?;
            host.ip(&["addr", "add", &address, "brd", "+", "dev", "eth0"])?;
            host.ip(&["link", "set", "eth0", "up"])?;
        }
        // Until the kernel has processed the carrier change a link drops what it is given: wait
        // for every link to be operationally up before any test traffic.
        let mut links = vec![(sw, "br0".to_string())];
        for (i, host) in self.hosts.iter().enumerate() {
            links.push((sw, format!("p{}", i + 1)));
            links.push((host, "eth0".to_string()));
        }
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        for (ns, link) in &links {
            loop {
                let shown = ns.ip(&["-o", "link", "show", "dev", link])?;
                if shown.contains("state UP") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{link} in {} never came up: {shown}", ns.name()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// The switch's namespace.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Host `n`'s namespace.
    pub fn host(&self, n: usize) -> &Netns {
        &self.hosts[n - 1]
    }

    /// Every host, in order.
    pub fn hosts(&self) -> &[Netns] {
        &self.hosts
    }
}

/// `made()`, or `None` after printing why `test` is skipped.
pub fn or_skip<T>(test: &str, made: impl FnOnce() -> Result<T, String>) -> Option<T> {
    match made() {
        Ok(made) => Some(made),
        Err(why) => {
            eprintln!(
                "SKIP {test}: cannot build network namespaces (needs root and iproute2): {why}"
            );
            None
        }
    }
}
