//! Network namespaces joined by veth pairs, for tests in which peers must not reach each other
//! directly (TURN). Made with `ip netns add` (root); every namespace, and with it every link, is
//! removed on drop. Commands run inside with `nsenter --net` rather than `ip netns exec`, which
//! also remounts / and fails where / is not a mount point (a chroot). Code runs inside one on a
//! thread that joined it: the sockets it opens, and the threads it starts, live there.

use anyhow::Context as _;
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};

pub struct Netns {
    pub name: String,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

impl Netns {
    /// A new namespace with its loopback up. Needs root (CI runs as root).
    pub fn add(tag: &str) -> anyhow::Result<Self> {
        let name = format!("sc-{tag}-{}", std::process::id());
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name]).context("network namespaces need root (ip netns add)")?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside and waits for it.
    pub fn exec(&self, cmd: &[&str]) -> anyhow::Result<()> {
        let net = format!("--net={}", self.path());
        let mut args = vec![net.as_str(), "--"];
        args.extend_from_slice(cmd);
        run("nsenter", &args)
    }

    /// A command that will run inside (spawn it yourself).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg("--").arg(program);
        c
    }

    /// Runs `f` on a new thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(ns.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("join the namespace (root needed)");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Joins `a` (`None`: the test's own namespace) and `b` with a veth pair, `a_cidr` on a's end
/// and `b_cidr` on b's (`10.77.1.1/24`). Names avoid the `veth` prefix, which the relay skips
/// as a container's.
pub fn link(a: Option<&Netns>, a_cidr: &str, b: &Netns, b_cidr: &str, tag: &str) -> anyhow::Result<()> {
    let id = std::process::id() % 100_000;
    let (a_if, b_if) = (format!("sc{tag}a{id}"), format!("sc{tag}b{id}"));
    let _ = run("ip", &["link", "del", &a_if]);
    run("ip", &["link", "add", &a_if, "type", "veth", "peer", "name", &b_if])?;
    run("ip", &["link", "set", &b_if, "netns", &b.name])?;
    b.exec(&["ip", "addr", "add", b_cidr, "dev", &b_if])?;
    b.exec(&["ip", "link", "set", &b_if, "up"])?;
    match a {
        Some(a) => {
            run("ip", &["link", "set", &a_if, "netns", &a.name])?;
            a.exec(&["ip", "addr", "add", a_cidr, "dev", &a_if])?;
            a.exec(&["ip", "link", "set", &a_if, "up"])?;
        }
        None => {
            run("ip", &["addr", "add", a_cidr, "dev", &a_if])?;
            run("ip", &["link", "set", &a_if, "up"])?;
        }
    }
    Ok(())
}
