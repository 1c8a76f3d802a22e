//! The field guide's diagnosis steps as run from inside the lab (`stun-check`, `classify-nat`,
//! `probe-udp`; the checks themselves are in [`crate::scenario::checks`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{first_addr, io_err, Running};
use crate::error::Result;
use crate::scenario::checks::{self, FieldCheck, ProbePlan, ProbeRun};
use crate::scenario::file::Step;
use crate::scenario::observed::Timeline;
use crate::scenario::Scenario;

/// Runs one diagnosis step.
pub(super) async fn check(
    s: &Scenario,
    r: &Running,
    t: &Timeline,
    step: &Step,
) -> Result<FieldCheck> {
    match step {
        Step::StunCheck {
            host,
            stun_server,
            port,
        }
        | Step::ClassifyNat {
            host,
            stun_server,
            port,
        } => {
            let (node, local, server) = from_host(r, host, *port, stun_server)?;
            let host = host.clone();
            Ok(match step {
                Step::StunCheck { .. } => {
                    let check = checks::stun_check(node, local, server).await;
                    let at = r.clock.now();
                    FieldCheck::Stun { at, host, check }
                }
                _ => {
                    let found = checks::classify_nat(node, local, server).await;
                    let at = r.clock.now();
                    FieldCheck::Nat { at, host, found }
                }
            })
        }
        Step::ProbeUdp { .. } => {
            // Each probe step its own source ports, 100 apart (at most 64 samples).
            let step_no = u16::try_from(t.probes().count()).unwrap_or(u16::MAX);
            let run = probe(s, r, step, step_no).await?;
            let at = r.clock.now();
            Ok(FieldCheck::Probe { at, run })
        }
        _ => unreachable!("only diagnosis steps are checks"),
    }
}

/// A host's node, the local address a check sends from, and the STUN server's address.
fn from_host<'a>(
    r: &'a Running,
    host: &str,
    port: u16,
    stun_server: &str,
) -> Result<(&'a crate::topology::Node, SocketAddr, SocketAddr)> {
    let node = r.topo.node(host)?;
    let local = SocketAddr::new(node.addr().into(), port);
    let server = SocketAddr::new(first_addr(&r.topo, stun_server)?.into(), 3478);
    Ok((node, local, server))
}

/// Probes a sample of a router's WAN ports from outside, and explains each probe that did not
/// get in from the capture and the NAT model.
async fn probe(s: &Scenario, r: &Running, step: &Step, step_no: u16) -> Result<ProbeRun> {
    let Step::ProbeUdp {
        name,
        from,
        to,
        listen,
        ports,
        samples,
        inside_sends_first,
    } = step
    else {
        unreachable!("only a probe-udp step probes")
    };
    let wan = s
        .topology
        .router(to)
        .map(|r| r.wan)
        .ok_or_else(|| io_err(format!("no router `{to}`")))?;
    let sampled = checks::sample(ports.0, ports.1, *samples);
    let plan = ProbePlan {
        prober: r.topo.node(from)?,
        listener: r.topo.node(listen)?,
        wan,
        source_base: 40000u16.saturating_add(step_no.saturating_mul(100)),
        inside_sends_first: *inside_sends_first,
    };
    let probes = checks::probe_udp(plan, &sampled).await?;
    let mut run = ProbeRun {
        name: name.clone(),
        from: from.clone(),
        router: to.clone(),
        wan,
        listen: listen.clone(),
        range: *ports,
        inside_sends_first: *inside_sends_first,
        probes,
    };
    // The kernel already reported each ICMP error to the prober's socket; wait (a bounded
    // while) until the capture has read those frames too, so the run names who sent each one
    // however loaded the machine is.
    let deadline = Instant::now() + Duration::from_secs(2);
    let frames = loop {
        let frames = r.frames();
        if run.icmp_seen(&frames) || Instant::now() >= deadline {
            break frames;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    run.explain(&frames, &crate::scenario::explain::kept(s, &frames));
    Ok(run)
}
