//! Runs without sudo: a process that is not root moves itself into a user namespace (where it
//! is root over the namespaces it creates) and a mount namespace of its own (where `/run/netns`
//! and `/run/snh` are private tmpfs mounts), before it starts any thread.
//!
//! Why the mount namespace: named network namespaces are bind mounts under `/run/netns`, and an
//! unprivileged user cannot mount there in the host's mount namespace. In a private one the
//! harness's namespaces, owner entries and their bind mounts exist only for this process and
//! its children, so parallel rootless runs cannot see (or reap) each other's, and everything
//! goes with the process when it exits, however it exits.
//!
//! What works rootless (measured on this kernel): veth pairs, bridges, addresses and routes,
//! nftables NAT rulesets and sets, per-namespace conntrack sysctls (`nf_conntrack_udp_timeout`),
//! conntrack events, packet capture, child processes. What does not, and is refused with the
//! reason (see [`limits`]): loading a kernel module (the kernel SIP helper, `nf_conntrack_sip`,
//! must already be loaded or built in); `ip netns exec` from another shell into a `--keep`
//! topology (the names live in this process's mount namespace: `nsenter -t PID -U -m` first).

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getgid, getuid, Gid, Uid};

use crate::netns::NETNS_DIR;
use crate::registry::OWNERS_DIR;

/// Set to `0` to never enter a user namespace (a kernel test then needs root).
pub const DISABLE_ENV: &str = "SNH_ROOTLESS";

/// How this process holds the privileges the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Really root (or with CAP_NET_ADMIN + CAP_SYS_ADMIN): the host's `/run/netns`.
    Root,
    /// Root inside a user namespace of its own, with private `/run/netns` and `/run/snh`.
    Rootless,
    /// Neither; why not, and what would fix it.
    Unprivileged(String),
}

/// Enters a user and mount namespace when the process is not root; does nothing when it is
/// (or already did). Must run before the process starts a second thread: `unshare(CLONE_NEWUSER)`
/// refuses a multi-threaded process, which is why binaries call it first thing in `main` and the
/// test crate from a constructor.
pub fn enter() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    MODE.get_or_init(enter_once).clone()
}

fn enter_once() -> Mode {
    raise_fd_limit();
    if nix::unistd::geteuid().is_root() {
        return Mode::Root;
    }
    if std::env::var(DISABLE_ENV).is_ok_and(|v| v == "0") {
        return Mode::Unprivileged(format!(
            "not root, and {DISABLE_ENV}=0 forbids a user namespace: run as root (sudo)"
        ));
    }
    match unshare_and_map(getuid(), getgid()).and_then(|()| private_run_dirs()) {
        Ok(()) => Mode::Rootless,
        Err(why) => Mode::Unprivileged(format!(
            "not root, and a user namespace could not be entered ({why}): run as root (sudo), \
             or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
             user.max_user_namespaces > 0; on Ubuntu 24.04+ also \
             kernel.apparmor_restrict_unprivileged_userns=0)"
        )),
    }
}

/// A run holds many descriptors (sockets per component, a namespace file and a netlink socket
/// per node, pipes per process, conntrack listeners): a dozen parallel scenarios passed 1024,
/// the usual soft limit of a user's shell (root's here is 20000). Raised to the hard limit,
/// as servers do; nothing else changes.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn unshare_and_map(uid: Uid, gid: Gid) -> Result<(), String> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .unwrap_or(1);
    if threads > 1 {
        return Err(format!(
            "the process already runs {threads} threads; rootless::enter must come first"
        ));
    }
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWUSER | CLONE_NEWNS): {e}"))?;
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| format!("write {path}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Makes every mount private (nothing propagates back to the host), then puts a tmpfs on
/// `/run/netns` and `/run/snh`, or on `/run` itself where one of them does not exist (an
/// unprivileged user cannot create it in the host's `/run`).
fn private_run_dirs() -> Result<(), String> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("make / private: {e}"))?;
    let tmpfs = |at: &str| {
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| format!("mount a tmpfs on {at}: {e}"))
    };
    let dirs = [NETNS_DIR, OWNERS_DIR];
    if dirs.iter().all(|d| Path::new(d).is_dir()) {
        for d in dirs {
            tmpfs(d)?;
        }
    } else {
        tmpfs("/run")?;
        for d in dirs {
            std::fs::create_dir_all(d).map_err(|e| format!("create {d}: {e}"))?;
        }
    }
    Ok(())
}

/// A scenario feature that cannot work in this mode, with the reason; `None` when it can.
pub fn limits(feature: Feature) -> Option<String> {
    if enter() != Mode::Rootless {
        return None;
    }
    match feature {
        Feature::KernelSipHelper => (!Path::new("/sys/module/nf_conntrack_sip").exists()).then(|| {
            "the kernel SIP helper (nf_conntrack_sip) is not loaded, and a user namespace cannot \
             load a kernel module: run `sudo modprobe nf_conntrack_sip nf_nat_sip` once, or run \
             as root"
                .to_string()
        }),
    }
}

/// Kernel features a rootless run may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// The kernel's `sip` conntrack helper (`sip-alg = "kernel"`).
    KernelSipHelper,
}
