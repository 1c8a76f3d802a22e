//! The run report: one self-contained HTML page per scenario run (`harness run --report`), for
//! people to look at rather than grep.
//!
//! The page holds the verdicts, the diagnosis of each host's capture with links to the frames it
//! cites, the SIP ladder as a sequence diagram across every vantage point (retransmissions and
//! header rewrites marked on the hop that did them), each NAT router's bindings over time with
//! the packets that refreshed them and those that arrived after they died, media per direction,
//! and links to the pcaps. No network access and no external assets: CSS is inline, the
//! diagrams are inline SVG, and there is no script, so it opens from a CI artefact or a ticket.
//!
//! HTML comes from `maud` templates ([`page`]), SVG from the `svg` crate's typed elements
//! ([`sequence`], [`timeline`], [`media`]); both escape what they are given. Everything here
//! reads the run's [`Trace`] (packets decoded once) and the NAT model's story; no IO but
//! [`write_run`] and [`write_index`].

pub mod axis;
pub mod capture;
pub mod media;
mod page;
pub mod sequence;
pub mod timeline;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::scenario::{Outcome, Scenario};
use crate::trace::{Entry, Payload, Trace};

/// Where each packet of the trace can be linked to on the page.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    /// Per vantage label: trace entry indices of its packets, in capture order (a pcap's frame
    /// numbers as `diagnose::packets_at` counts them).
    by_vantage: BTreeMap<String, Vec<usize>>,
    /// Entry indices drawn in the sequence diagram (SIP).
    drawn: std::collections::BTreeSet<usize>,
    /// (vantage, time, source, destination) → entry index.
    exact: BTreeMap<(String, SystemTime, SocketAddrV4, SocketAddrV4), usize>,
}

impl Anchors {
    fn new(trace: &Trace) -> Self {
        let mut a = Anchors::default();
        for (i, e) in trace.entries().iter().enumerate() {
            if let Entry::Packet {
                at,
                vantage,
                src,
                dst,
                payload,
                ..
            } = e
            {
                let label = vantage.label();
                a.by_vantage.entry(label.clone()).or_default().push(i);
                a.exact.insert((label, *at, *src, *dst), i);
                if matches!(payload, Payload::Sip(_)) {
                    a.drawn.insert(i);
                }
            }
        }
        a
    }

    /// The drawn copy of a datagram as it entered `router` (LAN side out, WAN side in).
    pub fn at_router(
        &self,
        router: &str,
        at: SystemTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
    ) -> Option<usize> {
        ["lan", "wan"]
            .iter()
            .find_map(|side| {
                self.exact
                    .get(&(format!("{router}:{side}"), at, src, dst))
                    .copied()
            })
            .filter(|i| self.drawn.contains(i))
    }

    /// Frame `frame` (1-based) of vantage `vantage`'s capture: its entry index.
    fn frame(&self, vantage: &str, frame: u64) -> Option<usize> {
        let i = usize::try_from(frame).ok()?.checked_sub(1)?;
        self.by_vantage.get(vantage)?.get(i).copied()
    }

    /// `#e…` for a frame drawn in the diagram, `#f…` for one listed in the cited frames.
    fn href(&self, entry: usize) -> String {
        if self.drawn.contains(&entry) {
            format!("#e{entry}")
        } else {
            format!("#f{entry}")
        }
    }
}

/// A path from `from_dir` to `to`, for links that survive moving the folder (`../x/a.pcap`).
pub fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .map(|c| c.as_os_str().to_os_string())
            .collect::<Vec<_>>()
    };
    let (a, b) = (abs(from_dir), abs(to));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

/// The page of one run, with its links relative to `page_dir` (where the page will be written).
pub fn run_page(s: &Scenario, o: &Outcome, page_dir: &Path) -> String {
    page::run(s, o, page_dir).into_string()
}

/// Writes the page of one run to `path`.
pub fn write_run(s: &Scenario, o: &Outcome, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    let html = run_page(
        s,
        o,
        if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        },
    );
    std::fs::write(path, html).map_err(Error::io(format!("write {}", path.display())))
}

/// Writes the page of a ticket's capture `capture`, diagnosed as `report`, to `path`.
pub fn write_capture(capture: &Path, report: &crate::diagnose::Report, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let html = capture::capture_page(capture, report, dir)?;
    std::fs::write(path, html).map_err(Error::io(format!("write {}", path.display())))
}

/// One line of the index: a scenario, its verdict and its page.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub name: String,
    /// `PASS`, `FAIL` or `ERROR: …`.
    pub verdict: String,
    pub summary: String,
    /// The page, if the run produced one.
    pub page: Option<PathBuf>,
}

/// Writes `index.html` at `path` linking to each page.
pub fn write_index(entries: &[IndexEntry], path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let html = page::index(entries, dir).into_string();
    std::fs::write(path, html).map_err(Error::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests;
