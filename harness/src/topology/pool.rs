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
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::try_join_all;

use super::node::{Node, Role};
use super::timeline::{Recorder, Stage, Timeline};
use super::{Topology, TopologySpec};
use crate::error::{Error, Result};
use crate::netlink::Netlink;

/// How long a killed process may take to leave its namespace.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// How long the sockets of aborted tasks may take to close.
const SOCKET_GRACE: Duration = Duration::from_millis(200);

/// Idle topologies, reset and ready for a user of the same shape.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Topology>>,
    /// Most idle topologies kept; giving back one more drops the longest idle.
    capacity: usize,
    counts: Mutex<PoolCounts>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::with_capacity(DEFAULT_CAPACITY)
    }
}

/// Idle topologies a pool keeps unless told otherwise: each holds a worker thread and a few
/// descriptors per namespace.
const DEFAULT_CAPACITY: usize = 16;

/// What a pool did, for a suite's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Topologies brought up because no idle one had the shape asked for.
    pub built: usize,
    /// Takes served by an idle topology.
    pub reused: usize,
    /// ... of which the NAT behaviours had to be changed (same wiring, other NATs).
    pub renatted: usize,
    /// Topologies given back whose reset failed (a socket still held …): dropped.
    pub refused: usize,
    /// Idle topologies dropped to stay within the capacity.
    pub evicted: usize,
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

    /// A pool that keeps at most `capacity` idle topologies.
    pub fn with_capacity(capacity: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            capacity,
            counts: Mutex::new(PoolCounts::default()),
        }
    }

    /// The process-wide pool a test suite shares across its tests ([`crate::scenario::run_with`]).
    /// Its idle topologies live until [`Pool::clear`], the process's exit (a static is never
    /// dropped, so an `atexit` handler removes every namespace left: after `main` returns or
    /// panics, or `exit`), an interrupt (the signal handler does the same) or, after a SIGKILL,
    /// the next reap.
    pub fn shared() -> &'static Pool {
        static SHARED: OnceLock<Pool> = OnceLock::new();
        SHARED.get_or_init(|| {
            extern "C" fn remove_all_at_exit() {
                crate::registry::cleanup_all();
            }
            // SAFETY: registers a plain `extern "C" fn` without arguments, as atexit(3) expects.
            unsafe { libc::atexit(remove_all_at_exit) };
            Pool::new()
        })
    }

    /// A topology for `spec`: an idle one of the same spec if there is one, else an idle one
    /// wired the same way whose NAT behaviours are changed to `spec`'s, else a new one. A reused
    /// topology's netlink connections are reopened on the caller's runtime (the previous user's
    /// may be gone with its runtime).
    pub async fn take(&self, spec: TopologySpec) -> Result<Topology> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let shape = wiring(&spec);
            idle.iter()
                .position(|t| t.spec == spec)
                .or_else(|| idle.iter().position(|t| wiring(&t.spec) == shape))
                .map(|i| idle.remove(i))
        };
        match reused {
            Some(mut t) => {
                let renat = t.spec != spec;
                t.rebind().await?;
                if renat {
                    t.adopt_nats(spec).await?;
                }
                let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                counts.reused += 1;
                counts.renatted += usize::from(renat);
                Ok(t)
            }
            None => {
                let t = Topology::build(spec).await?;
                // What later resets compare the NAT tables against.
                try_join_all(t.nodes.iter().map(Node::record_pristine_nat)).await?;
                self.counts.lock().unwrap_or_else(|e| e.into_inner()).built += 1;
                Ok(t)
            }
        }
    }

    /// Resets `topo` and keeps it for the next [`Pool::take`] of its shape. When the reset fails
    /// (a socket its user still holds, a process that would not die) the topology is dropped,
    /// which removes it, and the error says what was left.
    pub async fn give_back(&self, mut topo: Topology) -> Result<Reset> {
        let reset = match topo.reset().await {
            Ok(r) => r,
            Err(e) => {
                self.counts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .refused += 1;
                return Err(e);
            }
        };
        let evicted = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(topo);
            let over = idle.len().saturating_sub(self.capacity);
            idle.drain(..over).collect::<Vec<_>>()
        };
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evicted += evicted.len();
        drop(evicted);
        Ok(reset)
    }

    /// How many topologies wait for reuse.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// What this pool has done so far.
    pub fn counts(&self) -> PoolCounts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every idle topology, which removes their namespaces.
    pub fn clear(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
    }
}

/// What a topology's wiring depends on: the spec without its NAT behaviours, except whether a
/// router has one at all and the extra public addresses of a NAT's address pool (both change
/// what bring-up made beyond the ruleset).
fn wiring(spec: &TopologySpec) -> (TopologySpec, Vec<(bool, Vec<std::net::Ipv4Addr>)>) {
    let nats = spec
        .routers
        .iter()
        .map(|r| (r.nat.is_some(), super::spec::pool_extra(r)))
        .collect();
    let mut bare = spec.clone();
    for r in &mut bare.routers {
        r.nat = None;
    }
    (bare, nats)
}

impl Topology {
    /// Makes this topology as it was right after its bring-up, or says what stops that.
    pub async fn reset(&mut self) -> Result<Reset> {
        let rec = Recorder::new();
        let out = self.reset_steps(&rec).await;
        self.reset_timeline = rec.finish();
        out
    }

    /// Makes this reset topology `spec`'s, whose wiring is the same: each NAT router gets its
    /// behaviour in `spec` (a full reload of its table).
    async fn adopt_nats(&mut self, spec: TopologySpec) -> Result<()> {
        let rec = Recorder::new();
        self.spec = spec;
        let spec = &self.spec;
        try_join_all(
            self.nodes
                .iter()
                .filter(|n| n.role == Role::Router)
                .map(|n| {
                    let nat = spec.router(&n.name).and_then(|r| r.nat.clone());
                    let rec = &rec;
                    async move { n.restore_nat(nat.as_ref(), rec).await }
                }),
        )
        .await?;
        Ok(())
    }

    /// Reopens every node's netlink connection on the calling runtime: the one a pooled
    /// topology's previous user drove it on may have ended. (The emulated ALG's reader is a
    /// thread of its own, bound to no runtime.)
    async fn rebind(&mut self) -> Result<()> {
        let fresh = try_join_all(self.nodes.iter().map(|n| Netlink::open(&n.ns))).await?;
        for (n, netlink) in self.nodes.iter_mut().zip(fresh) {
            n.netlink = netlink;
        }
        Ok(())
    }

    /// Where the last [`Topology::reset`] spent its time, step by step.
    pub fn reset_timeline(&self) -> &Timeline {
        &self.reset_timeline
    }

    async fn reset_steps(&mut self, rec: &Recorder) -> Result<Reset> {
        rec.time(Stage::Abort, "all", async {
            for n in &self.nodes {
                n.abort_tasks();
            }
            // Let the runtime drop the aborted tasks, and the sockets they own.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let reset = Reset {
            killed: rec
                .time(Stage::Kill, "all", kill_processes(&self.nodes))
                .await?,
        };
        // An aborted task drops its future (and its sockets, captures included) when a worker
        // of its runtime next gets to it, not inside `abort()`: give that a moment.
        let deadline = Instant::now() + SOCKET_GRACE;
        loop {
            let open = try_join_all(self.nodes.iter().map(|n| {
                rec.time(Stage::Sockets, &n.name, async move {
                    Ok::<_, Error>((n, n.run(open_sockets).await?))
                })
            }))
            .await?;
            let Some((n, sockets)) = open.into_iter().find(|(_, s)| !s.is_empty()) else {
                break;
            };
            if Instant::now() >= deadline {
                return Err(Error::Topology(format!(
                    "`{}` still has {} open socket(s) ({}) {SOCKET_GRACE:?} after its tasks \
                     were aborted: its user holds them, so the topology cannot be reused",
                    n.name,
                    sockets.len(),
                    sockets.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let spec = &self.spec;
        try_join_all(self.nodes.iter().map(|n| reset_node(n, spec, rec))).await?;
        Ok(reset)
    }
}

/// Puts one node back as bring-up left it; every node's reset runs at once.
async fn reset_node(n: &Node, spec: &TopologySpec, rec: &Recorder) -> Result<()> {
    let mut sysctls = Node::BASE_SYSCTLS.to_vec();
    if n.role != Role::Host {
        sysctls.push(("net/ipv4/ip_forward", "1", false));
    }
    if n.bridge.get().is_some() {
        sysctls.push(Node::BRIDGE_SYSCTL);
    }
    // Read and compared; rewritten only where a user changed them.
    rec.time(Stage::Sysctls, &n.name, n.sysctls(&sysctls))
        .await?;
    rec.time(Stage::Neighbours, &n.name, async {
        n.netlink.flush_neighbours().await?;
        if let Some(bridge) = n.bridge.get() {
            n.netlink.flush_bridge_fdb(bridge).await?;
        }
        // Also drops cached route exceptions (a PMTU learnt from ICMP).
        n.run(|| std::fs::write("/proc/sys/net/ipv4/route/flush", "1"))
            .await?
            .map_err(Error::io(format!("flush route cache in {}", n.name)))
    })
    .await?;
    // Every node: a user may have added rules that track connections on a host too. A
    // namespace whose count is 0 is skipped, as a flush walks the machine-wide hash table.
    rec.time(Stage::Conntrack, &n.name, n.run(flush_conntrack))
        .await?
        .map_err(Error::io(format!("flush conntrack in {}", n.name)))?;
    if n.role == Role::Router {
        let nat = spec.router(&n.name).and_then(|r| r.nat.clone());
        n.restore_nat(nat.as_ref(), rec).await?;
    }
    Ok(())
}

/// Kills every process living in one of `nodes`' namespaces and waits until they are gone;
/// returns them by node. One pass over `/proc` when nothing is left, the common case; otherwise
/// each is killed through a pidfd and awaited by polling it (readable once it has exited), so
/// nothing sleeps a fixed time.
async fn kill_processes(nodes: &[Node]) -> Result<Vec<(String, u32)>> {
    let mut inodes = Vec::with_capacity(nodes.len());
    for n in nodes {
        let ino = std::fs::metadata(n.ns.path())
            .map_err(Error::io(format!("stat {}", n.ns.path().display())))?
            .ino();
        inodes.push((format!("net:[{ino}]"), n.name.clone()));
    }
    let found = processes_in(&inodes);
    if found.is_empty() {
        return Ok(found);
    }
    let pids: Vec<u32> = found.iter().map(|(_, pid)| *pid).collect();
    tokio::task::spawn_blocking(move || kill_and_wait(&pids, EXIT_WAIT))
        .await
        .map_err(|e| Error::Topology(format!("waiting for killed processes panicked: {e}")))?;
    let left = processes_in(&inodes);
    if !left.is_empty() {
        return Err(Error::Topology(format!(
            "processes {left:?} survived SIGKILL for {EXIT_WAIT:?}"
        )));
    }
    Ok(found)
}

/// SIGKILLs `pids` and waits, up to `limit`, until each has exited. A pidfd names the process
/// itself, so a PID reused meanwhile is never signalled; a process gone before its pidfd was
/// opened needs no wait.
fn kill_and_wait(pids: &[u32], limit: Duration) {
    let mut fds = Vec::new();
    for &pid in pids {
        // SAFETY: pidfd_open(2) with no flags; the result is checked and owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: pidfd_send_signal(2) on our pidfd, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                raw,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        fds.push(fd);
    }
    let deadline = Instant::now() + limit;
    for fd in &fds {
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(fd),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: one valid pollfd; readable once the process has exited.
        unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
    }
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

/// Sockets open in the calling thread's namespace (UDP, TCP including TIME_WAIT, raw, packet;
/// v4 and v6), as `proto local-address` lines.
///
/// The namespace's own counters (`/proc/net/sockstat`, `sockstat6`: O(1)) are read first, and the
/// socket tables only when a counter is not 0, to name what is open: reading `/proc/net/tcp`
/// walks the machine-wide established hash (262144 buckets here, 1–6 ms a read), which made this
/// check 85–94 % of a reset when it ran on every node.
fn open_sockets() -> Vec<String> {
    let mut found = packet_sockets();
    let mut counted = Vec::new();
    for file in ["sockstat", "sockstat6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) else {
            // No counters: fall back to the tables.
            counted.push(format!("{file} unreadable"));
            continue;
        };
        counted.extend(open_in_sockstat(&text));
    }
    if counted.is_empty() {
        return found;
    }
    let before = found.len();
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
    if found.len() == before {
        // Closed between the two reads, or a kind the tables do not list: the counts say it.
        found.extend(counted);
    }
    found
}

/// Non-zero per-namespace socket counts in a `sockstat` file (`TCP: inuse 1 … tw 0 …`), as
/// `TCP inuse 1` entries. `FRAG` counts reassembly queues, not sockets.
fn open_in_sockstat(text: &str) -> Vec<String> {
    let mut open = Vec::new();
    for line in text.lines() {
        let Some((proto, fields)) = line.split_once(':') else {
            continue;
        };
        if proto == "sockets" || proto.starts_with("FRAG") {
            continue;
        }
        let fields: Vec<&str> = fields.split_whitespace().collect();
        for pair in fields.chunks(2) {
            if let [name @ ("inuse" | "tw"), n] = pair {
                if n.parse::<u64>().map_or(true, |n| n > 0) {
                    open.push(format!("{proto} {name} {n}"));
                }
            }
        }
    }
    open
}

/// Packet sockets (a capture) open in the calling thread's namespace: `/proc/net/packet` lists
/// the namespace's own, without a walk of any machine-wide table.
fn packet_sockets() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/packet") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // sk RefCnt Type Proto Iface R Rmem User Inode
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("packet proto {} iface {}", f.get(3)?, f.get(4)?))
        })
        .collect()
}

/// Equivalent to `conntrack -F; conntrack -F expect`: deletes every conntrack entry and
/// expectation of the calling thread's namespace, one ctnetlink request each. Skipped when the
/// namespace's `nf_conntrack_count` is 0: a flush walks the whole machine's hash table (262144
/// buckets here), whichever namespace asks.
fn flush_conntrack() -> std::io::Result<()> {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const NFNL_SUBSYS_CTNETLINK_EXP: u16 = 2;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    const IPCTNL_MSG_EXP_DELETE: u16 = 2;
    let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|c| c.trim().parse::<u64>().ok());
    if count == Some(0) {
        // No entry, hence no expectation either (each belongs to a master entry).
        return Ok(());
    }
    ctnetlink_delete_all((NFNL_SUBSYS_CTNETLINK_EXP << 8) | IPCTNL_MSG_EXP_DELETE)?;
    ctnetlink_delete_all((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE)
}

/// Sends one ctnetlink delete request of `msg_type` with no selector (delete all, IPv4) and
/// reads its ack.
fn ctnetlink_delete_all(msg_type: u16) -> std::io::Result<()> {
    const NETLINK_NETFILTER: i32 = 12;
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
    msg.extend_from_slice(&msg_type.to_ne_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_counts_name_open_and_time_wait_sockets_and_ignore_fragments_and_globals() {
        let text = "sockets: used 30\nTCP: inuse 0 orphan 3 tw 2 alloc 9 mem 4\n\
                    UDP: inuse 1 mem 305\nUDPLITE: inuse 0\nRAW: inuse 0\n\
                    FRAG: inuse 1 memory 0\n";
        assert_eq!(open_in_sockstat(text), ["TCP tw 2", "UDP inuse 1"]);
        let quiet = "TCP6: inuse 0\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\n\
                     FRAG6: inuse 0 memory 0\n";
        assert!(open_in_sockstat(quiet).is_empty());
    }
}
