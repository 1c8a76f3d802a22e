//! Every point of the RFC 4787 mapping × filtering grid, with every valid port allocation, is
//! observably what sim-nat configured, measured with plain UDP from both sides.

use anyhow::{ensure, Result};
use harness::{probe, shapes};
use sim_nat::{Filtering, Mapping, NatBehaviour, PortAllocation};
use tests::require_kernel;

const MAPPINGS: [Mapping; 3] = [
    Mapping::EndpointIndependent,
    Mapping::AddressDependent,
    Mapping::AddressAndPortDependent,
];
const FILTERINGS: [Filtering; 3] = [
    Filtering::EndpointIndependent,
    Filtering::AddressDependent,
    Filtering::AddressAndPortDependent,
];
const PORTS: [PortAllocation; 3] = [
    PortAllocation::Preserve,
    PortAllocation::Random,
    PortAllocation::Hash,
];

/// The valid points: sim-nat refuses the contradictory ones (tested in sim-nat).
fn grid() -> Vec<NatBehaviour> {
    let mut out = Vec::new();
    for m in MAPPINGS {
        for f in FILTERINGS {
            for p in PORTS {
                let b = NatBehaviour::new(m, f).with_ports(p);
                if b.validate().is_ok() {
                    out.push(b);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn every_grid_point_behaves_as_configured() -> Result<()> {
    require_kernel!();
    let points = grid();
    ensure!(
        points.len() == 15,
        "3 filterings × 5 valid mapping/port pairs, got {}",
        points.len()
    );
    let runs = points.into_iter().map(|b| async move {
        let topo = shapes::home_lan(b.clone()).build().await?;
        let o = probe::observe(
            topo.node("alice")?,
            topo.node("server")?,
            topo.node("peer")?,
            40000,
        )
        .await?;
        anyhow::Ok((b, o))
    });
    let mut failures = Vec::new();
    for r in futures::future::join_all(runs).await {
        let (b, o) = r?;
        let want_preserved = b.ports == PortAllocation::Preserve;
        if o.mapping != b.mapping
            || o.filtering != b.filtering
            || o.port_preserved != want_preserved
        {
            failures.push(format!(
                "configured {:?}/{:?}/{:?}, observed {:?}/{:?} preserved={}",
                b.mapping, b.filtering, b.ports, o.mapping, o.filtering, o.port_preserved
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "grid mismatches:\n{}",
        failures.join("\n")
    );
    Ok(())
}
