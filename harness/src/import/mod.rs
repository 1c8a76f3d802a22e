//! From a ticket's capture to a scenario that reproduces it: `harness import FILE -o OUT.toml`.
//!
//! `diagnose` names the cause; `import` turns the same rebuilt capture into a [`Plan`] — who is
//! a phone, who sits behind which NAT, what the registrar does with NATed phones, the timers,
//! the timeline and how it ended — with the capture's addresses mapped into the documentation
//! and private ranges, so the failure becomes a failing test and each fix the diagnosis names a
//! twin that must pass. Sans-IO: [`import`] takes decoded packets and hands back scenario data
//! ([`crate::scenario::emit::Doc`]); only [`import_file`] reads a file.

mod parties;
mod plan;
mod read;
#[cfg(test)]
mod tests;
mod timeline;

use std::net::Ipv4Addr;
use std::path::Path;

pub use plan::{Fix, Plan};

use crate::diagnose::{self, rebuild::Model, Packet, Report};
use crate::error::{Error, Result};
use crate::scenario::emit::Doc;

/// One address of the capture and the one the scenario uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub real: Ipv4Addr,
    pub scenario: Ipv4Addr,
    /// Whose address it is (`server`, `home WAN`, `bob`).
    pub role: String,
}

/// What `import` makes of a capture: the reproduction, one twin per fix, and what the user
/// should know (the address mapping, NAT types the capture leaves open).
#[derive(Debug, Clone)]
pub struct Imported {
    pub plan: Plan,
    /// The reproduction, expecting what the capture showed.
    pub scenario: Doc,
    /// `(suffix, file)`: `-fix-far-end`, `-fix-rport`, … each expecting success.
    pub fixes: Vec<(String, Doc)>,
}

impl Imported {
    /// The address mapping as lines `real → scenario  (role)`.
    pub fn mapping_lines(&self) -> Vec<String> {
        plan::mapping_lines(&self.plan.mapping)
    }
}

/// Rebuilds the capture, diagnoses it and writes the scenario `name` (and its fix twins) from
/// both. `file` only names the capture in errors. No IO.
pub fn import(
    file: &str,
    name: &str,
    packets: impl IntoIterator<Item = Packet>,
) -> Result<Imported> {
    let packets: Vec<Packet> = packets.into_iter().collect();
    let mut report = diagnose::analyse(packets.iter().cloned());
    report.file = file.to_string();
    let model = Model::build(packets.iter().cloned());
    import_model(file, name, &packets, &model, &report)
}

/// [`import`] from the packets, already rebuilt and diagnosed.
pub fn import_model(
    file: &str,
    name: &str,
    packets: &[Packet],
    model: &Model,
    report: &Report,
) -> Result<Imported> {
    let bad = |what: String| Error::Import {
        file: file.to_string(),
        what,
    };
    let plan = read::plan(name, packets, model, report).map_err(bad)?;
    let scenario = plan.to_doc();
    let fixes = plan
        .fixes()
        .into_iter()
        .map(|(suffix, p)| (suffix, p.to_doc()))
        .collect();
    Ok(Imported {
        plan,
        scenario,
        fixes,
    })
}

/// Reads a pcap/pcapng and imports it as scenario `name`.
pub fn import_file(path: &Path, name: &str) -> Result<Imported> {
    let file = path.display().to_string();
    let bad = |e: diagnose::ReadError| Error::Capture {
        file: file.clone(),
        what: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(Error::io(format!("open {file}")))?;
    let mut reader = diagnose::CaptureReader::new(std::io::BufReader::new(f)).map_err(bad)?;
    let mut packets = Vec::new();
    while let Some(d) = reader.next() {
        match d {
            Ok(d) => packets.extend(Packet::decode(d)),
            // A capture cut short is imported as far as it goes, as `diagnose` reads it.
            Err(_) if reader.stats().frames > 0 => break,
            Err(e) => return Err(bad(e)),
        }
    }
    import(&file, name, packets)
}
