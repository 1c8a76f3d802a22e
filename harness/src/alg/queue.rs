//! The emulated ALG on a real router: iptables queues SIP to an NFQUEUE reader thread that lives
//! in the router's namespace and hands each packet to the sans-IO [`Alg`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::nfqueue::{Incoming, NfQueue, Packet, Verdict};
use super::rewrite::{Alg, AlgStats, Decision, Direction};
use super::AlgFault;
use crate::error::{Error, Result};
use crate::topology::Node;

/// The UDP port whose traffic is queued (either end).
pub const SIP_PORT: u16 = 5060;

/// Queue numbers are per network namespace; a process-wide counter still keeps two ALGs started
/// on one router (a replace mid-scenario) apart.
static NEXT_QUEUE: AtomicU16 = AtomicU16::new(5060);

/// A running emulated SIP ALG on one router. Dropping it stops the reader, which removes its
/// iptables rules; [`EmulatedAlg::stop`] does the same and waits for it.
#[derive(Debug)]
pub struct EmulatedAlg {
    router: String,
    queue: u16,
    faults: Vec<AlgFault>,
    /// The write end of the reader's stop pipe: closing it wakes the reader and tells it to go.
    stop: Option<OwnedFd>,
    stats: Arc<Mutex<AlgStats>>,
    reader: Option<JoinHandle<()>>,
    /// The reader thread's Linux thread id (`/proc/self/task/TID`).
    reader_tid: i32,
}

/// What the reader needs to know about its router.
struct Setup {
    iptables: PathBuf,
    queue: u16,
    wan: String,
    alg: Alg,
    stats: Arc<Mutex<AlgStats>>,
    /// Readable (at its end of file) once the handle is stopped or dropped.
    stop: OwnedFd,
}

/// A pipe whose ends are closed on exec: the iptables children must not hold the write end,
/// or closing it would not wake the reader until they exit.
fn stop_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes; both are owned at once.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

impl EmulatedAlg {
    /// Starts an ALG with `faults` on router `node`: binds an NFQUEUE reader inside the router's
    /// namespace, then adds (equivalent to `ip netns exec ROUTER iptables -w -t mangle -A FORWARD
    /// -p udp --dport 5060 -j NFQUEUE --queue-num N --queue-bypass`, and the same for
    /// `--sport 5060`). Returns once SIP through the router is intercepted.
    pub async fn start(node: &Node, faults: impl IntoIterator<Item = AlgFault>) -> Result<Self> {
        let ports = node.router_ports.clone().ok_or_else(|| {
            Error::Topology(format!(
                "`{}` is not a router; only routers have a SIP ALG",
                node.name()
            ))
        })?;
        let iptables = crate::preflight::require_program("iptables")?;
        let faults: Vec<AlgFault> = faults.into_iter().collect();
        let queue = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
        let (stop_rx, stop) =
            stop_pipe().map_err(Error::io("create the ALG reader's stop pipe"))?;
        let stats = Arc::new(Mutex::new(AlgStats::default()));
        let setup = Setup {
            iptables,
            queue,
            wan: ports.wan.clone(),
            alg: Alg::new(ports.public, faults.iter().copied()),
            stats: stats.clone(),
            stop: stop_rx,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<std::io::Result<i32>>();
        let name = format!("alg-{}", node.name());
        // Spawned from the namespace's worker, the reader thread starts inside the namespace
        // (a thread inherits its creator's): its netlink socket and its iptables children belong
        // to the router, and it can clean up after itself even when nobody awaits it.
        let reader = node
            .run(move || {
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || read_queue(setup, ready_tx))
            })
            .await?
            .map_err(Error::io("spawn the ALG reader thread"))?;
        let ready = ready_rx.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the ALG reader ended before it was ready",
            ))
        });
        let mut alg = EmulatedAlg {
            router: node.name().to_string(),
            queue,
            faults,
            stop: Some(stop),
            stats,
            reader: Some(reader),
            reader_tid: 0,
        };
        alg.reader_tid = ready.map_err(Error::io(format!(
            "start the emulated SIP ALG on `{}` (NFQUEUE {queue})",
            alg.router
        )))?;
        Ok(alg)
    }

    pub fn router(&self) -> &str {
        &self.router
    }

    pub fn faults(&self) -> &[AlgFault] {
        &self.faults
    }

    /// The reader thread's Linux thread id: its scheduler statistics are in
    /// `/proc/self/task/TID/status` (an idle reader does not wake up).
    pub fn reader_tid(&self) -> i32 {
        self.reader_tid
    }

    /// The NFQUEUE number its rules use.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// What it has seen and done so far.
    pub fn stats(&self) -> AlgStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Removes the rules and stops the reader; SIP passes untouched afterwards.
    pub async fn stop(mut self) -> AlgStats {
        self.stop = None;
        if let Some(reader) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
        self.stats()
    }
}

impl Drop for EmulatedAlg {
    fn drop(&mut self) {
        // Closing the pipe wakes the reader, which removes its rules and exits; nobody needs to
        // wait for it.
        self.stop = None;
    }
}

fn rule_args(op: &str, queue: u16, port_flag: &str) -> Vec<String> {
    [
        "-w",
        "-t",
        "mangle",
        op,
        "FORWARD",
        "-p",
        "udp",
        port_flag,
        "5060",
        "-j",
        "NFQUEUE",
        "--queue-num",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([queue.to_string(), "--queue-bypass".to_string()])
    .collect()
}

fn iptables(program: &PathBuf, args: &[String]) -> std::io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The reader thread: runs inside the router's namespace until told to stop.
fn read_queue(mut s: Setup, ready: tokio::sync::oneshot::Sender<std::io::Result<i32>>) {
    // 256 packets wait at most; past that the queue fails open (SIP passes unrewritten).
    let mut queue = match NfQueue::bind(s.queue, 256) {
        Ok(q) => q,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let wan_index = {
        let name = std::ffi::CString::new(s.wan.clone()).unwrap_or_default();
        // SAFETY: a valid NUL-terminated string; the call only reads it.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    };
    let mut added = Vec::new();
    for flag in ["--dport", "--sport"] {
        match iptables(&s.iptables, &rule_args("-A", s.queue, flag)) {
            Ok(()) => added.push(flag),
            Err(e) => {
                for f in added {
                    let _ = iptables(&s.iptables, &rule_args("-D", s.queue, f));
                }
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    // SAFETY: gettid has no preconditions.
    let _ = ready.send(Ok(unsafe { libc::gettid() }));

    // Asleep in poll(2) until a packet is queued or the handle goes: no wake-ups while idle.
    while let Ok(true) = queue.wait(s.stop.as_raw_fd()) {
        match queue.recv() {
            Ok(batch) => handle_all(&mut s, &queue, batch, wan_index),
            Err(_) => break, // the socket is unusable: --queue-bypass lets SIP through unchanged
        }
    }
    // Rules first, then whatever is still queued: nothing waits on a reader that is leaving.
    for flag in ["--dport", "--sport"] {
        let _ = iptables(&s.iptables, &rule_args("-D", s.queue, flag));
    }
    while let Ok(batch) = queue.recv() {
        if batch.is_empty() {
            break;
        }
        handle_all(&mut s, &queue, batch, wan_index);
    }
}

fn handle_all(s: &mut Setup, queue: &NfQueue, batch: Vec<Incoming>, wan_index: u32) {
    for m in batch {
        if let Incoming::Packet(p) = m {
            verdict(s, queue, p, wan_index);
        }
    }
}

fn verdict(s: &mut Setup, queue: &NfQueue, packet: Packet, wan_index: u32) {
    let direction = if packet.indev == wan_index {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    // The rewrite is property-tested not to panic; a panic here would still only cost this one
    // packet its rewrite, never the router its SIP.
    let decided = catch_unwind(AssertUnwindSafe(|| {
        s.alg.handle_packet(direction, &packet.payload)
    }))
    .unwrap_or(Decision::Accept);
    *s.stats.lock().unwrap_or_else(|e| e.into_inner()) = s.alg.stats().clone();
    let _ = match decided {
        Decision::Accept => queue.verdict(packet.id, Verdict::Accept, None),
        Decision::Drop => queue.verdict(packet.id, Verdict::Drop, None),
        Decision::Replace(bytes) => queue.verdict(packet.id, Verdict::Accept, Some(&bytes)),
    };
}
