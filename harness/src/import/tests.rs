//! The pure import on hand-made captures with field addresses (not the documentation ranges),
//! so the mapping, the NAT evidence, the timers and the fix twins are each seen doing their job.

use std::net::Ipv4Addr;

use sim_nat::NatType;

use super::plan::{Action, Outcome};
use super::*;
use crate::diagnose::test_sip as sip;
use crate::scenario::{Component, Scenario, Step};

const SERVER: &str = "77.1.1.1:5060";
const WAN: &str = "85.10.20.30:5060";

fn register(frame: u64, t: f64, src: &str, via: &str) -> Vec<Packet> {
    vec![
        sip(frame, t, src, SERVER, &format!("REGISTER sip:77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bKr;rport\nFrom: <sip:Bob@77.1.1.1>;tag=1\nTo: <sip:Bob@77.1.1.1>\nContact: <sip:bob@{via}>\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n")),
        sip(frame + 1, t + 0.01, SERVER, src, "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bKr\nFrom: <sip:Bob@77.1.1.1>;tag=1\nTo: <sip:Bob@77.1.1.1>;tag=s\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
    ]
}

const INVITE_IN: &str = "INVITE sip:bob@77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKa;rport\nFrom: <sip:alice@77.1.1.1>;tag=a\nTo: <sip:bob@77.1.1.1>\nContact: <sip:alice@93.4.5.6:5060>\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n";

/// alice (public) calls bob; the server forwards to `to`, retransmitting with `t1` until Timer B,
/// then answers alice 408 and she acknowledges it.
fn unanswered_call(frame: u64, t: f64, to: &str, t1: f64) -> Vec<Packet> {
    let mut p = vec![sip(frame, t, "93.4.5.6:5060", SERVER, INVITE_IN)];
    let fwd = "INVITE sip:bob@10.0.0.23:5060 SIP/2.0\nVia: SIP/2.0/UDP 77.1.1.1:5060;branch=z9hG4bKp\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKa;rport\nFrom: <sip:alice@77.1.1.1>;tag=a\nTo: <sip:bob@77.1.1.1>\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
    let mut at = t + 0.01;
    let mut gap = t1;
    for i in 0..7 {
        p.push(sip(frame + 1 + i, at, SERVER, to, fwd));
        at += gap;
        gap *= 2.0;
    }
    let end = t + 64.0 * t1;
    p.push(sip(frame + 8, end, SERVER, "93.4.5.6:5060", "SIP/2.0 408 Request Timeout\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKa;rport=5060\nFrom: <sip:alice@77.1.1.1>;tag=a\nTo: <sip:bob@77.1.1.1>;tag=x\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n"));
    p.push(sip(frame + 9, end + 0.01, "93.4.5.6:5060", SERVER, "ACK sip:bob@77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKa;rport\nFrom: <sip:alice@77.1.1.1>;tag=a\nTo: <sip:bob@77.1.1.1>;tag=x\nCall-ID: c\nCSeq: 1 ACK\nContent-Length: 0\n\n"));
    p
}

fn scenario_of(doc: &crate::scenario::emit::Doc) -> Scenario {
    let text = doc.to_toml();
    Scenario::from_str("imported.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn a_private_contact_routed_literally_maps_addresses_and_writes_a_far_end_twin() {
    let mut p = register(1, 0.0, WAN, "10.0.0.23:5060");
    p.extend(unanswered_call(3, 0.1, "10.0.0.23:5060", 0.5));
    let imp = import("ticket.pcap", "ticket", p).unwrap();
    let map: Vec<(Ipv4Addr, Ipv4Addr)> = imp
        .plan
        .mapping
        .iter()
        .map(|m| (m.real, m.scenario))
        .collect();
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        map,
        vec![
            (ip("77.1.1.1"), ip("203.0.113.10")),
            (ip("85.10.20.30"), ip("203.0.113.1")),
            (ip("10.0.0.23"), ip("192.168.1.10")),
            (ip("93.4.5.6"), ip("198.51.100.20")),
        ]
    );
    let plan = &imp.plan;
    assert!(!plan.registrar.far_end, "{}", plan.registrar.why);
    assert_eq!(plan.routers.len(), 1);
    assert_eq!(
        plan.routers[0].nat.mapping,
        NatType::PortRestrictedCone.behaviour().mapping
    );
    assert!(
        !plan.routers[0].candidates.is_empty(),
        "the capture kept the port: undecided"
    );
    // T1 of 500 ms is scaled to 200 ms so a 408 takes 13 s, not 32 s.
    assert_eq!(plan.t1_ms, 200);
    assert_eq!(
        plan.expect,
        vec![
            Outcome::Registered {
                ua: "bob".into(),
                value: true
            },
            Outcome::Call {
                from: "alice".into(),
                status: 408
            },
            Outcome::Rang {
                ua: "bob".into(),
                value: false
            },
        ]
    );
    let text = imp.scenario.to_toml();
    assert!(text.starts_with("# Symptom: bob is registered; alice's call ends with 408; bob never rings.\n# Root cause: "), "{text}");
    assert!(
        text.contains("#   85.10.20.30     → 203.0.113.1     (home WAN"),
        "{text}"
    );
    assert!(text.contains("run `harness matrix` on this file"), "{text}");
    let s = scenario_of(&imp.scenario);
    assert!(s.file.components.iter().any(|c| matches!(
        c.get_ref(),
        Component::Proxy {
            nat_handling: crate::scenario::file::NatHandlingDef::Literal,
            ..
        }
    )));
    assert_eq!(imp.fixes.len(), 1);
    let (suffix, twin) = &imp.fixes[0];
    assert_eq!(suffix, "-fix-far-end");
    let t = scenario_of(twin);
    assert_eq!(t.name(), "ticket-fix-far-end");
    assert!(t.file.components.iter().any(|c| matches!(
        c.get_ref(),
        Component::Proxy {
            nat_handling: crate::scenario::file::NatHandlingDef::FarEnd,
            ..
        }
    )));
    assert!(twin.to_toml().contains("status = 200"));
}

#[test]
fn a_source_port_that_is_not_the_via_port_means_a_symmetric_nat_and_an_rport_twin() {
    let src = "85.10.20.30:40312";
    let invite = "INVITE sip:alice@77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bKb\nFrom: <sip:bob@77.1.1.1>;tag=b\nTo: <sip:alice@77.1.1.1>\nContact: <sip:bob@10.0.0.23:5060>\nCall-ID: o\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
    let mut p = vec![sip(1, 0.0, "93.4.5.6:5060", SERVER, "REGISTER sip:77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKr;rport\nFrom: <sip:alice@77.1.1.1>;tag=1\nTo: <sip:alice@77.1.1.1>\nContact: <sip:alice@93.4.5.6:5060>\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
        sip(2, 0.01, SERVER, "93.4.5.6:5060", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 93.4.5.6:5060;branch=z9hG4bKr;rport=5060\nFrom: <sip:alice@77.1.1.1>;tag=1\nTo: <sip:alice@77.1.1.1>;tag=s\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n")];
    // Without rport the server answers to the Via port, which the NAT did not keep: bob keeps
    // resending his INVITE while the 200 OK goes nowhere.
    let ok = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bKb;received=85.10.20.30\nFrom: <sip:bob@77.1.1.1>;tag=b\nTo: <sip:alice@77.1.1.1>;tag=z\nCall-ID: o\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
    let mut t = 1.0;
    for i in 0..5 {
        p.push(sip(3 + 2 * i, t, src, SERVER, invite));
        p.push(sip(4 + 2 * i, t + 0.01, SERVER, "85.10.20.30:5060", ok));
        t += 0.5 * f64::from(1u32 << i);
    }
    let imp = import("t.pcap", "no-rport", p).unwrap();
    let plan = &imp.plan;
    assert_eq!(plan.routers[0].nat, NatType::Symmetric.behaviour());
    assert!(
        plan.routers[0].candidates.is_empty(),
        "decided by the port change"
    );
    let bob = plan.phones.iter().find(|p| p.name == "bob").unwrap();
    assert!(!bob.rport);
    assert!(
        plan.expect.contains(&Outcome::Call {
            from: "bob".into(),
            status: 408
        }),
        "{:?}",
        plan.expect
    );
    let fixes: Vec<&str> = imp.fixes.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(fixes, ["-fix-rport"]);
    let twin = scenario_of(&imp.fixes[0].1);
    assert!(twin
        .file
        .components
        .iter()
        .all(|c| !matches!(c.get_ref(), Component::Ua { rport: false, .. })));
}

#[test]
fn a_long_idle_gap_becomes_a_scaled_wait_and_a_nat_timeout_below_it() {
    // Registered through the NAT, then 40 s of silence, then an INVITE to the mapping that
    // nothing answers (T1 = 500 ms).
    let mut p = register(1, 0.0, WAN, "10.0.0.23:5060");
    p.extend(unanswered_call(3, 40.0, WAN, 0.5));
    let imp = import("t.pcap", "expiry", p).unwrap();
    let plan = &imp.plan;
    assert!(plan.registrar.far_end, "{}", plan.registrar.why);
    // 40 s is compressed to 8 s (×0.2) and T1 with it: 100 ms.
    let waits: Vec<u64> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Action::Wait { ms, .. } => Some(*ms),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 1);
    assert!((7900..=8100).contains(&waits[0]), "{waits:?}");
    assert_eq!(plan.t1_ms, 100);
    assert_eq!(plan.udp_timeout_secs, Some(4));
    assert_eq!(plan.routers[0].nat.udp_timeout_secs, 4);
    let s = scenario_of(&imp.scenario);
    assert!(s
        .file
        .steps
        .iter()
        .any(|st| matches!(st.get_ref(), Step::Wait { ms } if *ms == waits[0])));
    let (suffix, twin) = &imp.fixes[0];
    assert_eq!(suffix, "-fix-keepalive");
    assert!(twin
        .to_toml()
        .contains("keepalive = { type = \"crlf\", interval-ms = 2000 }"));
}

#[test]
fn captures_import_cannot_read_say_why_in_one_line() {
    let e = import("empty.pcap", "x", Vec::new())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "empty.pcap: cannot import: no SIP in capture");
    // Everyone public and every port kept: nothing shows a NAT.
    let mut p = register(1, 0.0, "85.10.20.30:5060", "85.10.20.30:5060");
    p.extend(unanswered_call(3, 0.1, "85.10.20.30:5060", 0.5));
    let e = import("pub.pcap", "x", p).unwrap_err().to_string();
    assert!(
        e.starts_with("pub.pcap: cannot import: cannot tell who is behind a NAT"),
        "{e}"
    );
}

#[test]
fn a_register_answered_to_its_via_not_its_source_is_literal_handling_and_never_registers() {
    // The phone writes the STUN mapping towards another destination (port 41000) in Via and
    // Contact; the symmetric NAT sends the REGISTER from 40000; the server answers to Via.
    let src = "85.10.20.30:40000";
    let register = "REGISTER sip:77.1.1.1 SIP/2.0\nVia: SIP/2.0/UDP 85.10.20.30:41000;branch=z9hG4bKs;rport\nFrom: <sip:bob@77.1.1.1>;tag=1\nTo: <sip:bob@77.1.1.1>\nContact: <sip:bob@85.10.20.30:41000>\nCall-ID: s\nCSeq: 1 REGISTER\nContent-Length: 0\n\n";
    let ok = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 85.10.20.30:41000;branch=z9hG4bKs;rport=40000;received=85.10.20.30\nFrom: <sip:bob@77.1.1.1>;tag=1\nTo: <sip:bob@77.1.1.1>;tag=r\nCall-ID: s\nCSeq: 1 REGISTER\nContent-Length: 0\n\n";
    let mut p = Vec::new();
    let mut t = 0.0;
    for i in 0..4 {
        p.push(sip(2 * i + 1, t, src, SERVER, register));
        p.push(sip(2 * i + 2, t + 0.001, SERVER, "85.10.20.30:41000", ok));
        t += 0.2 * f64::from(1u32 << i);
    }
    let imp = import("t.pcap", "stun-contact", p).unwrap();
    let plan = &imp.plan;
    assert!(!plan.registrar.far_end, "{}", plan.registrar.why);
    assert!(
        plan.registrar.why.contains("Via address 85.10.20.30:41000"),
        "{}",
        plan.registrar.why
    );
    assert_eq!(plan.routers[0].nat, NatType::Symmetric.behaviour());
    assert_eq!(
        plan.expect,
        vec![Outcome::Registered {
            ua: "bob".into(),
            value: false
        }]
    );
    // No STUN exchange in this capture: the Contact is not taken for a STUN one.
    assert!(!plan.phones[0].stun_contact);
    assert_eq!(plan.t1_ms, 200);
}
