//! Scenarios: a customer's topology, the components in it, a timeline and expectations — read from
//! a file, checked with located errors, and run.

pub mod batch;
pub mod checks;
pub mod emit;
pub mod explain;
pub mod file;
pub mod judge;
mod kernel;
mod load;
mod matrix;
pub mod observed;
mod phone;
mod placed;
pub mod reference;
pub mod report;
mod run;
pub mod seen;
pub mod vars;

use std::net::Ipv4Addr;
use std::path::Path;

pub use file::{Component, Expect, FileError, ScenarioFile, Step};
pub use matrix::{matrix, matrix_with_fragments, Cell};
pub use run::{run, run_with, Outcome, Phases, RunOptions, Verdict};

use crate::topology::TopologySpec;

/// A scenario that parsed and whose every reference resolves.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: String,
    pub file: ScenarioFile,
    pub topology: TopologySpec,
    /// The comment block at the top of the file (symptom, root cause, fix).
    pub header: String,
    /// Commands' `{…}` placeholders and their values ([`vars::table`]).
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Parsed `localnet` entries (checked when the file loaded).
pub fn localnets(localnet: &[String]) -> Vec<(Ipv4Addr, u8)> {
    localnet
        .iter()
        .filter_map(|n| load::parse_cidr(n))
        .collect()
}

impl Scenario {
    /// Reads, parses and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let (parsed, text) = file::load(path)?;
        load::check(&path.display().to_string(), &text, parsed)
    }

    /// Parses and checks scenario text.
    pub fn from_str(name: &str, text: &str) -> Result<Self, FileError> {
        let parsed = file::parse(name, text)?;
        load::check(name, text, parsed)
    }

    pub fn name(&self) -> &str {
        &self.file.scenario.name
    }

    /// A copy with every NAT router's behaviour replaced by `f(old)`: what `harness matrix` runs.
    pub fn with_nats(&self, f: impl Fn(&sim_nat::NatBehaviour) -> sim_nat::NatBehaviour) -> Self {
        let mut s = self.clone();
        for r in &mut s.topology.routers {
            if let Some(n) = &r.nat {
                r.nat = Some(f(n));
            }
        }
        s
    }
}
