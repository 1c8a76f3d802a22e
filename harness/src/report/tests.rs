use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::relative;
use super::sequence::{lane_order, Sequence};
use crate::capture::{Direction, Frame, Vantage};
use crate::trace::Trace;

/// An Ethernet + IPv4 + UDP frame carrying `payload` (checksums left zero: the decoder does
/// not check them).
fn frame(ms: u64, at: (&str, &str), dir: Direction, src: &str, dst: &str, payload: &str) -> Frame {
    crate::capture::udp_frame(
        UNIX_EPOCH + Duration::from_secs(1000) + Duration::from_millis(ms),
        Vantage::new(at.0, at.1),
        dir,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        payload.replace('\n', "\r\n").as_bytes(),
    )
}

fn register(contact: &str) -> String {
    format!(
        "REGISTER sip:203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKr1\n\
         Call-ID: reg1\nCSeq: 1 REGISTER\nContact: <sip:bob@{contact}>\nContent-Length: 0\n\n"
    )
}

const INVITE: &str = "INVITE sip:bob@192.168.1.10:5060 SIP/2.0\n\
    Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKi1\nCall-ID: call1\nCSeq: 1 INVITE\n\
    Content-Length: 0\n\n";

fn topology() -> crate::topology::TopologySpec {
    toml::from_str(
        r#"
        [[routers]]
        name = "home"
        upstream = "internet"
        wan = "203.0.113.1"
        lan = "192.168.1.1"
        lan-prefix = 24
        [[hosts]]
        name = "bob"
        segment = "home"
        addrs = ["192.168.1.10"]
        [[hosts]]
        name = "server"
        segment = "internet"
        addrs = ["203.0.113.10"]
        "#,
    )
    .expect("a topology")
}

fn two_messages() -> Trace {
    use Direction::{In, Out};
    Trace::from_frames(&[
        frame(
            0,
            ("bob", "eth0"),
            Out,
            "192.168.1.10:5060",
            "203.0.113.10:5060",
            &register("192.168.1.10:5060"),
        ),
        frame(
            1,
            ("home", "lan"),
            In,
            "192.168.1.10:5060",
            "203.0.113.10:5060",
            &register("192.168.1.10:5060"),
        ),
        // An ALG rewrote Contact on the way out.
        frame(
            2,
            ("home", "wan"),
            Out,
            "203.0.113.1:5060",
            "203.0.113.10:5060",
            &register("203.0.113.1:5060"),
        ),
        frame(
            3,
            ("server", "eth0"),
            In,
            "203.0.113.1:5060",
            "203.0.113.10:5060",
            &register("203.0.113.1:5060"),
        ),
        frame(
            4000,
            ("server", "eth0"),
            Out,
            "203.0.113.10:5060",
            "192.168.1.10:5060",
            INVITE,
        ),
        frame(
            4200,
            ("server", "eth0"),
            Out,
            "203.0.113.10:5060",
            "192.168.1.10:5060",
            INVITE,
        ),
    ])
}

#[test]
fn lanes_run_from_the_phone_through_its_router_to_the_public_hosts() {
    assert_eq!(
        lane_order(&topology()),
        ["bob", "home:lan", "home:wan", "server"]
    );
}

#[test]
fn copies_are_grouped_into_messages_and_a_rewrite_is_marked_on_its_hop() {
    let trace = two_messages();
    let seq = Sequence::build(&trace, &lane_order(&topology()), &[]);
    assert_eq!(
        seq.messages.len(),
        3,
        "REGISTER, INVITE, its retransmission"
    );
    assert_eq!(seq.copies(), 6, "every SIP packet is drawn once");
    let reg = &seq.messages[0];
    assert_eq!(reg.copies.len(), 4);
    assert!(reg.delivered(&seq.lanes));
    let rewritten: Vec<usize> = (0..reg.hops.len())
        .filter(|&i| !reg.hops[i].rewrites.is_empty())
        .collect();
    assert_eq!(
        rewritten,
        [1],
        "only the hop home:lan → home:wan rewrote Contact"
    );
    assert_eq!(reg.hops[1].rewrites[0].header, "Contact");
    let (invite, again) = (&seq.messages[1], &seq.messages[2]);
    assert_eq!((invite.retransmission, again.retransmission), (0, 1));
    assert!(invite
        .lost
        .as_deref()
        .is_some_and(|w| w.contains("private address 192.168.1.10:5060")));
}

#[test]
fn the_page_is_self_contained_and_counts_what_the_trace_holds() {
    let trace = two_messages();
    let seq = Sequence::build(&trace, &lane_order(&topology()), &[]);
    let start = trace.start().unwrap();
    let svg = super::sequence::svg(&seq, start).to_string();
    assert_eq!(svg.matches("class=\"copy\"").count(), 6);
    assert_eq!(svg.matches("<g class=\"msg").count(), 3);
    assert!(svg.contains("✎ Contact"));
    assert!(
        !svg.contains("http://")
            || svg.matches("http://").count()
                == svg.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
}

#[test]
fn links_are_relative_to_the_page() {
    assert_eq!(
        relative(Path::new("/r/runs"), Path::new("/r/runs/a/bob.pcap")),
        Path::new("a/bob.pcap")
    );
    assert_eq!(
        relative(Path::new("/r/pages"), Path::new("/r/runs/a/bob.pcap")),
        Path::new("../runs/a/bob.pcap")
    );
    let _ = SystemTime::now();
}
