//! `harness diagnose` on captures the project did not make: real Kamailio and SIPp behind a
//! plain Linux NAT, recorded by `tests/fixtures/make-captures.sh` with tcpdump and tshark on other
//! addresses and ports than the catalogue's (LAN 10.20.30.0/24, router 198.51.100.77, server
//! 192.0.2.50:5080). Each names its cause, and the healthy call nothing. Reads files only: no root.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use harness::diagnose::{self, Confidence, Kind, Report, Severity};

fn fixture(name: &str) -> Result<Report> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    Ok(diagnose::diagnose_file(&path)?)
}

/// The kinds the report stands behind as problems (certain or likely, not merely possible).
fn problems(r: &Report) -> Vec<Kind> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Problem && f.confidence <= Confidence::Likely)
        .map(|f| f.kind)
        .collect()
}

fn certain(r: &Report, kind: Kind) -> bool {
    r.findings.iter().any(|f| {
        f.kind == kind && f.severity == Severity::Problem && f.confidence == Confidence::Certain
    })
}

#[test]
fn a_server_answering_the_via_port_behind_a_symmetric_nat_is_no_rport() -> Result<()> {
    let r = fixture("symmetric-nat-no-rport.pcap")?;
    let text = diagnose::report::text(&r);
    ensure!(certain(&r, Kind::NoRport), "{text}");
    // The server did answer (404, retransmitted): nothing timed out at the server, and the
    // phone's private Contact is never used, so it is no more than possible.
    ensure!(problems(&r) == [Kind::NoRport], "{text}");
    Ok(())
}

#[test]
fn an_incoming_call_to_a_registered_private_contact_is_swallowed_and_times_out() -> Result<()> {
    let r = fixture("private-contact-swallowed.pcap")?;
    let text = diagnose::report::text(&r);
    ensure!(r.registrations == 1 && r.calls == 1, "{text}");
    ensure!(certain(&r, Kind::PrivateAddress), "{text}");
    ensure!(certain(&r, Kind::RequestTimeout), "{text}");
    ensure!(
        problems(&r) == [Kind::PrivateAddress, Kind::RequestTimeout],
        "{text}"
    );
    Ok(())
}

#[test]
fn a_call_with_rtp_both_ways_through_a_port_preserving_nat_is_healthy() -> Result<()> {
    let r = fixture("healthy-call-port-preserving.pcapng")?;
    let text = diagnose::report::text(&r);
    ensure!(r.calls == 1 && r.rtp_packets > 0, "{text}");
    ensure!(!r.has_problem(), "{text}");
    Ok(())
}
