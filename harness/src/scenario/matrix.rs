//! One scenario across NAT types × SIP ALG modes (× UDP timeouts × whether the routers drop IP
//! fragments): which cells still show the expected outcome.

use sim_nat::{NatType, SipAlg};

use super::{run, Phases, RunOptions, Scenario, Verdict};
use crate::error::Result;

/// One cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    pub nat: NatType,
    pub alg: SipAlg,
    /// `None`: the timeout the file gives.
    pub udp_timeout_secs: Option<u32>,
    /// `None`: what the file says about IP fragments.
    pub drop_fragments: Option<bool>,
    pub verdict: Verdict,
    /// What each failed expectation observed.
    pub failed: Vec<String>,
    /// Each failed expectation, as the file states it (`alice's call ends with 200`).
    pub failed_expectations: Vec<String>,
    /// The cell's ladder, with events.
    pub ladder: String,
    pub duration: std::time::Duration,
    /// Where the cell's time went.
    pub phases: Phases,
    /// The cell's run report (`harness matrix --report`), a self-contained page without pcaps
    /// (cells run without writing any).
    pub report: String,
}

impl Cell {
    /// `full-cone × emulated ALG drop-unparseable × 2 s`: the cell in one line.
    pub fn name(&self) -> String {
        let mut n = format!("{} × {}", self.nat, self.alg);
        if let Some(t) = self.udp_timeout_secs {
            n.push_str(&format!(" × {t} s"));
        }
        match self.drop_fragments {
            Some(true) => n.push_str(" × drops fragments"),
            Some(false) => n.push_str(" × passes fragments"),
            None => {}
        }
        n
    }
}

/// Runs `s` with every NAT router set to each type × ALG × timeout, all cells concurrently (each
/// cell has its own topology).
pub async fn matrix(s: &Scenario, algs: &[SipAlg], timeouts: &[Option<u32>]) -> Result<Vec<Cell>> {
    matrix_with_fragments(s, algs, timeouts, &[None]).await
}

/// [`matrix`] with one more axis: every router dropping IP fragments or passing them (`None`:
/// as the file says). Cells are in row order: NAT type, then ALG, timeout, fragments.
pub async fn matrix_with_fragments(
    s: &Scenario,
    algs: &[SipAlg],
    timeouts: &[Option<u32>],
    fragments: &[Option<bool>],
) -> Result<Vec<Cell>> {
    let mut variants = Vec::new();
    for nat in NatType::ALL {
        for alg in algs {
            for to in timeouts {
                for frag in fragments {
                    let v = s.with_nats(|old| {
                        let mut b = nat.behaviour().with_sip_alg(alg.clone());
                        b.udp_timeout_secs = to.unwrap_or(old.udp_timeout_secs);
                        b.drop_fragments = frag.unwrap_or(old.drop_fragments);
                        b
                    });
                    variants.push((nat, alg.clone(), *to, *frag, v));
                }
            }
        }
    }
    let opts = RunOptions::default();
    let runs = variants.iter().map(|(_, _, _, _, v)| run(v, &opts));
    let outcomes = futures::future::join_all(runs).await;
    let mut cells = Vec::new();
    for ((nat, alg, to, frag, v), o) in variants.into_iter().zip(outcomes) {
        let o = o?;
        let report = crate::report::run_page(&v, &o, std::path::Path::new("."));
        cells.push(Cell {
            report,
            nat,
            alg,
            udp_timeout_secs: to,
            drop_fragments: frag,
            verdict: o.verdict,
            failed: o
                .checks
                .iter()
                .filter(|c| !c.1)
                .map(|c| c.2.clone())
                .chain(o.error)
                .collect(),
            failed_expectations: o
                .checks
                .iter()
                .filter(|c| !c.1)
                .map(|c| c.0.clone())
                .collect(),
            ladder: o.ladder,
            duration: o.duration,
            phases: o.phases,
        });
    }
    Ok(cells)
}
