//! Packet capture on every link of a topology, as each vantage point saw it.
//!
//! One `AF_PACKET` socket per captured interface, opened inside the interface's namespace by the
//! node's worker and read on the caller's runtime, with kernel receive timestamps
//! (`SO_TIMESTAMPNS`) so packets seen at different vantage points order correctly. No tcpdump
//! process is involved, so capture starts in microseconds and cannot lose the first packet to a
//! process start-up race. Frames are kept in memory and written as classic pcap files (one per
//! link) that Wireshark, tcpdump and sngrep open.

mod pcap;
mod sniffer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use pcap::{read_pcap, write_pcap};

use crate::error::{Error, Result};
use crate::topology::{Role, Topology};

/// Where a frame was seen: a node and one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vantage {
    pub node: String,
    pub iface: String,
}

impl Vantage {
    pub fn new(node: &str, iface: &str) -> Self {
        Vantage {
            node: node.to_string(),
            iface: iface.to_string(),
        }
    }

    /// `alice` for a host's only interface, `home:wan` for a router's.
    pub fn label(&self) -> String {
        if self.iface == "eth0" {
            self.node.clone()
        } else {
            format!("{}:{}", self.node, self.iface)
        }
    }
}

impl std::fmt::Display for Vantage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// Whether a frame entered or left the interface it was captured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One captured Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Kernel receive time (wall clock, as pcap wants it).
    pub at: SystemTime,
    pub vantage: Vantage,
    pub direction: Direction,
    pub bytes: Vec<u8>,
}

/// A running capture; [`Capture::stop`] returns what it saw.
pub struct Capture {
    frames: Arc<Mutex<Vec<Frame>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    vantages: Vec<Vantage>,
}

/// Which interfaces to capture: every host's `eth0` and both sides of every router.
pub fn default_vantages(topo: &Topology) -> Vec<Vantage> {
    let mut v = Vec::new();
    for n in topo.nodes() {
        match n.role() {
            Role::Host => v.push(Vantage::new(n.name(), "eth0")),
            Role::Router => {
                v.push(Vantage::new(n.name(), "lan"));
                v.push(Vantage::new(n.name(), "wan"));
            }
            Role::Internet => {}
        }
    }
    v
}

impl Capture {
    /// Starts capturing on every link of `topo` ([`default_vantages`]).
    pub async fn start(topo: &Topology) -> Result<Self> {
        Self::start_on(topo, default_vantages(topo)).await
    }

    /// Starts capturing on the given interfaces.
    pub async fn start_on(topo: &Topology, vantages: Vec<Vantage>) -> Result<Self> {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for v in &vantages {
            let node = topo.node(&v.node)?;
            let iface = v.iface.clone();
            let fd = node
                .run(move || sniffer::open(&iface))
                .await?
                .map_err(Error::io(format!("capture on {v}")))?;
            // SAFETY: `fd` is an open socket the AsyncFd takes ownership of; nothing else closes it.
            let afd = unsafe { tokio::io::unix::AsyncFd::register(fd) }
                .map_err(|e| Error::io("register capture")(std::io::Error::from(e)))?;
            tasks.push(tokio::spawn(sniffer::run(afd, v.clone(), frames.clone())));
        }
        Ok(Capture {
            frames,
            tasks,
            vantages,
        })
    }

    pub fn vantages(&self) -> &[Vantage] {
        &self.vantages
    }

    /// Frames captured so far (a copy), in capture order per vantage.
    pub fn snapshot(&self) -> Vec<Frame> {
        let mut f = self
            .frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        f.sort_by_key(|f| f.at);
        f
    }

    /// Stops capturing (after a short grace period so in-flight frames are read) and returns
    /// every frame, ordered by kernel timestamp.
    pub async fn stop(self) -> Vec<Frame> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        for t in &self.tasks {
            t.abort();
        }
        self.snapshot()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Writes one pcap file per vantage into `dir` (`alice.pcap`, `home-wan.pcap`, …) and returns
/// their paths.
pub fn write_pcaps(frames: &[Frame], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mut vantages: Vec<&Vantage> = frames.iter().map(|f| &f.vantage).collect();
    vantages.sort();
    vantages.dedup();
    let mut paths = Vec::new();
    for v in vantages {
        let path = dir.join(format!("{}.pcap", v.label().replace(':', "-")));
        let mine: Vec<&Frame> = frames.iter().filter(|f| &f.vantage == v).collect();
        write_pcap(&path, &mine)?;
        paths.push(path);
    }
    Ok(paths)
}

/// An Ethernet + IPv4 + UDP frame carrying `payload`, for tests of what reads captures
/// (checksums left zero: nothing here checks them).
#[cfg(test)]
pub(crate) fn udp_frame(
    at: SystemTime,
    vantage: Vantage,
    direction: Direction,
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    payload: &[u8],
) -> Frame {
    let mut b = vec![0u8; 12];
    b.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    b.extend_from_slice(&ip);
    b.extend_from_slice(&src.port().to_be_bytes());
    b.extend_from_slice(&dst.port().to_be_bytes());
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    Frame {
        at,
        vantage,
        direction,
        bytes: b,
    }
}
