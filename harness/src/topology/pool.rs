//! A pool of finished topologies, reset for the next user of the same shape instead of being torn
//! down and rebuilt.
//!
//! Dropping a topology is cheap for the caller but the kernel's deferred namespace cleanup
//! (100–170 ms for 2 NATs / 5 hosts) runs afterwards and stalls the next bring-up behind RTNL.
//! A reset keeps the namespaces and links and undoes what a user can leave behind: its tasks,
//! processes, conntrack entries (NAT bindings), the learnt sets and maps (reloaded with the
//! ruleset) and the NAT and base sysctls. What cannot be undone from here — a socket the user
//! still holds — makes [`Pool::give_back`] drop the topology instead of reusing it.

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::node::{Node, Role};
use super::{Topology, TopologySpec};
use crate::error::{Error, Result};

/// How long a killed process may take to leave its namespace.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Idle topologies, reset and ready for a user of the same spec.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<Topology>>,
}

/// What a reset found and undid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reset {
    /// Processes still running in the topology's namespaces, killed.
    pub killed: Vec<(String, u32)>,
}

impl Pool {
    pub fn new() -> Self {
        Pool::default()
    }

    /// A topology for `spec`: an idle one of the same spec if there is one, else a new one.
    pub async fn take(&self, spec: TopologySpec) -> Result<Topology> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter()
                .position(|t| t.spec == spec)
                .map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(t) => Ok(t),
            None => Topology::build(spec).await,
        }
    }

    /// Resets `topo` and keeps it for the next [`Pool::take`] of its spec. When the reset fails
    /// (a socket its user still holds, a process that would not die) the topology is dropped,
    /// which removes it, and the error says what was left.
    pub async fn give_back(&self, mut topo: Topology) -> Result<Reset> {
        let reset = topo.reset().await?;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(topo);
        Ok(reset)
    }

    /// How many topologies wait for reuse.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Topology {
    /// Makes this topology as it was right after its bring-up, or says what stops that.
    pub async fn reset(&mut self) -> Result<Reset> {
        for n in &self.nodes {
            n.abort_tasks();
        }
        // Let the runtime drop the aborted tasks, and the sockets they own.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let reset = Reset {
            killed: kill_processes(&self.nodes).await?,
        };
        for n in &self.nodes {
            let sockets = n.run(open_sockets).await?;
            if !sockets.is_empty() {
                return Err(Error::Topology(format!(
                    "`{}` still has {} open socket(s) ({}): its user holds them, so the \
                     topology cannot be reused",
                    n.name,
                    sockets.len(),
                    sockets.join(", ")
                )));
            }
        }
        for n in &self.nodes {
            let mut sysctls = Node::BASE_SYSCTLS.to_vec();
            if n.role != Role::Host {
                sysctls.push(("net/ipv4/ip_forward", "1", false));
            }
            n.sysctls(&sysctls).await?;
            if n.role == Role::Router {
                n.run(flush_conntrack)
                    .await?
                    .map_err(Error::io(format!("flush conntrack in {}", n.name)))?;
                let nat = self.spec.router(&n.name).and_then(|r| r.nat.clone());
                n.restore_nat(nat.as_ref()).await?;
            }
        }
        Ok(reset)
    }
}

/// Kills every process living in one of `nodes`' namespaces and waits until they are gone;
/// returns them by node. One pass over `/proc` when nothing is left, the common case.
async fn kill_processes(nodes: &[Node]) -> Result<Vec<(String, u32)>> {
    let mut inodes = Vec::with_capacity(nodes.len());
    for n in nodes {
        let ino = std::fs::metadata(n.ns.path())
            .map_err(Error::io(format!("stat {}", n.ns.path().display())))?
            .ino();
        inodes.push((format!("net:[{ino}]"), n.name.clone()));
    }
    let found = processes_in(&inodes);
    for (_, pid) in &found {
        // SAFETY: kill(2) on a PID read from /proc; a PID that exited meanwhile gives ESRCH.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + EXIT_WAIT;
    while !found.is_empty() {
        let left = processes_in(&inodes);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Topology(format!(
                "processes {left:?} survived SIGKILL for {EXIT_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(found)
}

/// Live processes whose network namespace link reads as one of `inodes` (`net:[N]`, node), by
/// node; a zombie has no namespace left and does not count.
fn processes_in(inodes: &[(String, String)]) -> Vec<(String, u32)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
            let link = link.to_string_lossy();
            inodes
                .iter()
                .find(|(want, _)| *want == link)
                .map(|(_, node)| (node.clone(), pid))
        })
        .collect()
}

/// Sockets open in the calling thread's namespace (UDP, TCP, raw; v4 and v6), as
/// `proto local-address` lines.
fn open_sockets() -> Vec<String> {
    let mut found = Vec::new();
    for table in ["udp", "udp6", "tcp", "tcp6", "raw", "raw6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(local) = line.split_whitespace().nth(1) {
                found.push(format!("{table} {local}"));
            }
        }
    }
    found
}

/// Equivalent to `conntrack -F`: deletes every conntrack entry of the calling thread's
/// namespace, through one ctnetlink request.
fn flush_conntrack() -> std::io::Result<()> {
    const NETLINK_NETFILTER: i32 = 12;
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // nlmsghdr (len, type, flags, seq, pid) + nfgenmsg (family, version, res_id).
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    // SAFETY: sending our own buffer on our socket (to the kernel: a zeroed sockaddr_nl).
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            raw,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 256];
    // SAFETY: receiving into our own buffer.
    let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The ack is an NLMSG_ERROR whose first field is 0 or -errno.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        // ENOENT: nothing to flush.
        if code != 0 && code != -libc::ENOENT {
            return Err(std::io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}
