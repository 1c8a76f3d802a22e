//! The ALG's rewrites on bytes: each fault changes exactly what it names, and nothing panics.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;

use super::packet::{checksum, Udp4};
use super::*;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn alice() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 5060)
}

const SDP: &str = "v=0\r\no=- 42 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite() -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@192.168.1.10\r\n\
CSeq: 2 INVITE\r\n\
Contact: <sip:alice@192.168.1.10:5060>\r\n\
Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", uri=\"sip:bob@example.com\", response=\"00\"\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn run(faults: &[AlgFault], msg: &str) -> SipVerdict {
    Alg::new(PUBLIC, faults.iter().copied()).handle_sip(
        Direction::Outbound,
        alice(),
        msg.as_bytes(),
    )
}

fn rewritten(faults: &[AlgFault], msg: &str) -> String {
    match run(faults, msg) {
        SipVerdict::Rewritten(b) => String::from_utf8(b).unwrap(),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

/// Lines of `after` that differ from `before`, line by line (same line count).
fn changed_lines(before: &str, after: &str) -> Vec<String> {
    let (b, a): (Vec<&str>, Vec<&str>) = (
        before.split("\r\n").collect(),
        after.split("\r\n").collect(),
    );
    assert_eq!(b.len(), a.len(), "{after}");
    b.iter()
        .zip(&a)
        .filter(|(x, y)| x != y)
        .map(|(_, y)| y.to_string())
        .collect()
}

#[test]
fn an_alg_without_faults_passes_sip_untouched() {
    assert_eq!(run(&[], &invite()), SipVerdict::Unchanged);
}

#[test]
fn contact_not_via_rewrites_only_the_contact_address_and_keeps_its_port() {
    let out = rewritten(&[AlgFault::RewriteContactNotVia], &invite());
    assert_eq!(
        changed_lines(&invite(), &out),
        ["Contact: <sip:alice@203.0.113.1:5060>"]
    );
}

#[test]
fn sdp_connection_not_media_port_rewrites_c_and_fixes_content_length() {
    let out = rewritten(&[AlgFault::RewriteSdpConnectionNotMediaPort], &invite());
    let new_len = SDP.len() - 1;
    assert_eq!(
        changed_lines(&invite(), &out),
        [
            format!("Content-Length: {new_len}"),
            "c=IN IP4 203.0.113.1".to_string()
        ]
    );
    assert!(out.contains("m=audio 4000 RTP/AVP 0"));
}

#[test]
fn a_stale_content_length_promises_more_body_than_the_rewrite_left() {
    let out = rewritten(&[AlgFault::RewriteWithoutFixingContentLength], &invite());
    assert_eq!(
        changed_lines(&invite(), &out),
        ["o=- 42 1 IN IP4 203.0.113.1", "c=IN IP4 203.0.113.1"]
    );
    assert!(crate::sip::message::parse(out.as_bytes()).is_err(), "{out}");
    // The ALG's own parser says the same of its work.
    assert_eq!(run(&[AlgFault::DropUnparseable], &out), SipVerdict::Drop);
}

#[test]
fn break_digest_rewrites_the_digest_uri_and_nothing_else() {
    let out = rewritten(&[AlgFault::BreakDigest], &invite());
    let changed = changed_lines(&invite(), &out);
    assert_eq!(changed.len(), 1);
    assert!(changed[0].starts_with("Authorization:"), "{changed:?}");
    assert!(
        changed[0].contains("uri=\"sip:bob@203.0.113.1\""),
        "{changed:?}"
    );
}

#[test]
fn already_public_replaces_a_stun_fixed_via_and_contact_with_the_wan_and_the_source_port() {
    let stun_fixed = invite()
        .replace("192.168.1.10:5060;branch", "203.0.113.1:31234;branch")
        .replace("alice@192.168.1.10:5060", "alice@203.0.113.1:31234");
    let out = rewritten(&[AlgFault::RewriteAlreadyPublic], &stun_fixed);
    assert_eq!(
        changed_lines(&stun_fixed, &out),
        [
            "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-1;rport",
            "Contact: <sip:alice@203.0.113.1:5060>"
        ]
    );
}

#[test]
fn already_public_leaves_the_vias_of_a_response_alone() {
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-p\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-2\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>;tag=a\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.10>\r\nContent-Length: 0\r\n\r\n";
    let out = rewritten(&[AlgFault::RewriteAlreadyPublic], resp);
    assert_eq!(
        changed_lines(resp, &out),
        ["Contact: <sip:alice@203.0.113.1:5060>"]
    );
}

#[test]
fn only_whole_addresses_are_rewritten() {
    let msg = invite().replace("alice@192.168.1.10:5060", "alice@192.168.1.100:5060");
    assert_eq!(
        run(&[AlgFault::RewriteContactNotVia], &msg),
        SipVerdict::Unchanged
    );
}

#[test]
fn drop_unparseable_drops_junk_bare_lf_and_stun_but_passes_sip_and_keepalives() {
    let alg_drops = |bytes: &[u8]| {
        Alg::new(PUBLIC, [AlgFault::DropUnparseable]).handle_sip(Direction::Inbound, alice(), bytes)
            == SipVerdict::Drop
    };
    let stun_binding = [
        0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    assert!(alg_drops(&stun_binding));
    assert!(alg_drops(b"\x16\x03\x01 not SIP"));
    assert!(alg_drops(invite().replace("\r\n", "\n").as_bytes()));
    assert!(alg_drops(
        invite()
            .replace("Call-ID: c1@192.168.1.10\r\n", "")
            .as_bytes()
    ));
    assert!(!alg_drops(invite().as_bytes()));
    assert!(!alg_drops(b"\r\n\r\n"));
    // Without the fault, junk passes.
    assert_eq!(run(&[], "\x16 junk"), SipVerdict::Unchanged);
}

#[test]
fn compact_headers_are_rewritten_too() {
    let msg = invite().replace("Contact:", "m:");
    let out = rewritten(&[AlgFault::RewriteContactNotVia], &msg);
    assert!(out.contains("m: <sip:alice@203.0.113.1:5060>"), "{out}");
}

#[test]
fn inbound_sip_is_not_rewritten() {
    let mut alg = Alg::new(PUBLIC, AlgFault::ALL);
    assert_eq!(
        alg.handle_sip(Direction::Inbound, alice(), invite().as_bytes()),
        SipVerdict::Unchanged
    );
}

#[test]
fn fault_names_round_trip_through_serde_and_from_str() {
    for f in AlgFault::ALL {
        let toml = toml::to_string(&std::collections::BTreeMap::from([("f", f)])).unwrap();
        assert_eq!(toml.trim(), format!("f = \"{}\"", f.name()));
        assert_eq!(f.name().parse::<AlgFault>(), Ok(f));
    }
    let err = "rewrite-everything".parse::<AlgFault>().unwrap_err();
    assert!(err.to_string().contains("break-digest"), "{err}");
}

/// An IPv4/UDP packet from alice to the server carrying `payload`, checksums right.
fn packet(payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 192, 168, 1, 10, 203, 0, 113, 10,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 0]);
    ip[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(payload);
    let udp = Udp4::parse(&ip).unwrap();
    udp.with_payload(&ip.clone(), payload).unwrap()
}

fn checksums_hold(ip: &[u8]) -> bool {
    let hl = usize::from(ip[0] & 0xf) * 4;
    let udp_len = &ip[hl + 4..hl + 6];
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(udp_len);
    checksum(&[&ip[..hl]], 0) == 0 && checksum(&[&pseudo, &ip[hl..]], 0) == 0
}

#[test]
fn a_rewritten_packet_has_its_lengths_and_checksums_fixed() {
    let before = packet(invite().as_bytes());
    assert!(checksums_hold(&before));
    let mut alg = Alg::new(PUBLIC, [AlgFault::RewriteSdpConnectionNotMediaPort]);
    let Decision::Replace(after) = alg.handle_packet(Direction::Outbound, &before) else {
        panic!("expected a rewrite")
    };
    assert_eq!(after.len(), before.len() - 1);
    assert_eq!(
        usize::from(u16::from_be_bytes([after[2], after[3]])),
        after.len()
    );
    assert_eq!(
        usize::from(u16::from_be_bytes([after[24], after[25]])),
        after.len() - 20
    );
    assert!(checksums_hold(&after));
    assert_eq!(after[4..6], before[4..6], "the IP ID is kept");
    assert_eq!(
        alg.stats()
            .by_fault
            .get(&AlgFault::RewriteSdpConnectionNotMediaPort),
        Some(&1)
    );
}

#[test]
fn fragments_and_non_udp_pass_unexamined() {
    let mut frag = packet(invite().as_bytes());
    frag[6] |= 0x20; // more fragments
    let mut alg = Alg::new(PUBLIC, AlgFault::ALL);
    assert_eq!(
        alg.handle_packet(Direction::Outbound, &frag),
        Decision::Accept
    );
    assert_eq!(
        alg.handle_packet(Direction::Outbound, &[0x60; 40]),
        Decision::Accept
    );
}

proptest! {
    #[test]
    fn no_bytes_make_the_alg_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), dir in any::<bool>()) {
        let dir = if dir { Direction::Inbound } else { Direction::Outbound };
        let mut alg = Alg::new(PUBLIC, AlgFault::ALL);
        let _ = alg.handle_packet(dir, &bytes);
        let _ = alg.handle_sip(dir, alice(), &bytes);
    }

    #[test]
    fn mangled_sip_never_makes_it_panic_and_rewrites_stay_parseable_when_length_is_fixed(
        cut in 0usize..2000,
        splice in proptest::collection::vec(any::<u8>(), 0..40),
        at in 0usize..2000,
        faults in proptest::sample::subsequence(AlgFault::ALL.to_vec(), 0..=6),
    ) {
        let mut bytes = invite().into_bytes();
        let at = at % (bytes.len() + 1);
        bytes.splice(at..at, splice);
        bytes.truncate(cut.max(1).min(bytes.len()));
        let mut alg = Alg::new(PUBLIC, faults.iter().copied());
        let verdict = alg.handle_sip(Direction::Outbound, alice(), &bytes);
        let p = packet(&bytes);
        let _ = alg.handle_packet(Direction::Outbound, &p);
        if let SipVerdict::Rewritten(out) = verdict {
            if !faults.contains(&AlgFault::RewriteWithoutFixingContentLength) {
                // Our rewrite of a message the ALG could parse is one it can parse again.
                let again = Alg::new(PUBLIC, [AlgFault::DropUnparseable]).handle_sip(Direction::Outbound, alice(), &out);
                prop_assert_ne!(again, SipVerdict::Drop);
            }
        }
    }

    #[test]
    fn rewritten_packets_always_carry_valid_checksums(
        faults in proptest::sample::subsequence(AlgFault::ALL.to_vec(), 1..=6),
        pad in 0usize..300,
    ) {
        let msg = invite().replace("Max-Forwards: 70", &format!("Max-Forwards: 70\r\nX-Pad: {}", "x".repeat(pad)));
        let mut alg = Alg::new(PUBLIC, faults.iter().copied());
        if let Decision::Replace(out) = alg.handle_packet(Direction::Outbound, &packet(msg.as_bytes())) {
            prop_assert!(checksums_hold(&out));
        }
    }
}
