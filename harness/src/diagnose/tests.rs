//! The reader on hand-made captures: every link type, fragments, SIP on any port, pcapng with
//! mixed interfaces, damaged files; and the rules on packets made in memory.

use std::net::SocketAddrV4;
use std::time::{Duration, UNIX_EPOCH};

use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use proptest::prelude::*;

use super::read::{Body, CaptureReader, Datagram};
use super::test_sip as sip;
use super::*;

const ALICE: [u8; 4] = [198, 51, 100, 20];
const SERVER: [u8; 4] = [203, 0, 113, 10];
const REGISTER: &[u8] = b"REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1\r\nContact: <sip:bob@192.168.1.10:5060>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

/// An IPv4/UDP packet from ALICE:`sport` to SERVER:`dport`.
fn ip_udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(ALICE, SERVER, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("writes to a Vec");
    out
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

fn sll(ip: &[u8]) -> Vec<u8> {
    // packet type, ARPHRD_ETHER, address length, address (8), protocol
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

fn sll2(ip: &[u8]) -> Vec<u8> {
    // protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address (8)
    let mut f = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    f.extend_from_slice(ip);
    f
}

/// A classic little-endian microsecond pcap.
fn pcap(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&link.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&250_000u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn block(typ: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = (body.len() + 12) as u32;
    let mut b = typ.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A pcapng with one interface per link type (nanosecond resolution on the second) and one
/// packet per `(interface, frame)`.
fn pcapng(links: &[u16], packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut out = block(0x0a0d_0d0a, &shb);
    for (i, link) in links.iter().enumerate() {
        let mut idb = link.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65535u32.to_le_bytes());
        if i == 1 {
            // if_tsresol = 9 (nanoseconds), then opt_endofopt
            idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        }
        out.extend(block(1, &idb));
    }
    for (iface, data) in packets {
        let units: u64 = if *iface == 1 {
            1_700_000_000_500_000_000
        } else {
            1_700_000_000_500_000
        };
        let mut epb = iface.to_le_bytes().to_vec();
        epb.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(units as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        out.extend(block(6, &epb));
    }
    out
}

fn read_all(bytes: &[u8]) -> Result<Vec<Datagram>, ReadError> {
    CaptureReader::new(bytes)?.collect()
}

fn sip_first_line(d: &Datagram) -> String {
    match Packet::decode(d.clone()).map(|p| p.payload) {
        Some(crate::trace::Payload::Sip(s)) => s.first_line,
        other => format!("{other:?}"),
    }
}

#[test]
fn every_link_type_yields_the_same_sip_datagram() {
    let ip = ip_udp(5060, 5060, REGISTER);
    for (link, frame) in [
        (1, ethernet(&ip)),
        (113, sll(&ip)),
        (276, sll2(&ip)),
        (101, ip.clone()),
        (12, ip.clone()),
        (14, ip.clone()),
        (228, ip.clone()),
    ] {
        let d = read_all(&pcap(link, &[frame])).unwrap_or_else(|e| panic!("link {link}: {e}"));
        assert_eq!(d.len(), 1, "link {link}");
        assert_eq!(d[0].src, SocketAddrV4::new(ALICE.into(), 5060));
        assert_eq!(d[0].frame, 1);
        assert_eq!(
            d[0].at,
            UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000)
        );
        assert_eq!(sip_first_line(&d[0]), "REGISTER sip:203.0.113.10 SIP/2.0");
    }
}

#[test]
fn sip_is_found_by_content_on_any_port_and_other_traffic_is_skipped() {
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        f
    };
    let frames = vec![
        arp,
        ethernet(&ip_udp(40000, 15060, REGISTER)),
        ethernet(&ip_udp(53, 53, b"\x12\x34 not sip at all")),
    ];
    let d = read_all(&pcap(1, &frames)).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].frame, 2);
    assert_eq!(d[0].dst.port(), 15060);
    assert_eq!(sip_first_line(&d[0]), "REGISTER sip:203.0.113.10 SIP/2.0");
    assert!(matches!(
        Packet::decode(d[1].clone()).unwrap().payload,
        crate::trace::Payload::Udp { .. }
    ));
}

#[test]
fn ipv4_fragments_are_reassembled_into_one_sip_message() {
    let mut body = REGISTER.to_vec();
    body.truncate(body.len() - 4);
    body.extend_from_slice(b"\r\nX-Pad: ");
    body.extend(std::iter::repeat_n(b'a', 2000));
    body.extend_from_slice(b"\r\n\r\n");
    let whole = ip_udp(5060, 5060, &body);
    let udp = &whole[20..];
    let split = 1480;
    let frag = |offset: usize, data: &[u8], more: bool| {
        let mut h = Ipv4Header::new(data.len() as u16, 64, IpNumber::UDP, ALICE, SERVER).unwrap();
        h.identification = 77;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(data);
        ethernet(&p)
    };
    // Out of order, as they can arrive.
    let frames = vec![
        frag(split, &udp[split..], false),
        frag(0, &udp[..split], true),
    ];
    let d = read_all(&pcap(1, &frames)).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].frame, 2, "numbered by the frame that completed it");
    assert_eq!(d[0].body, Body::Udp(body.clone()));
    assert_eq!(sip_first_line(&d[0]), "REGISTER sip:203.0.113.10 SIP/2.0");
}

#[test]
fn pcapng_with_an_ethernet_and_a_raw_interface_reads_both_with_their_clocks() {
    let ip = ip_udp(5060, 5060, REGISTER);
    let bytes = pcapng(&[1, 101], &[(0, ethernet(&ip)), (1, ip.clone())]);
    let d = read_all(&bytes).unwrap();
    assert_eq!(d.len(), 2);
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
    assert_eq!(d[0].at, t, "microsecond interface");
    assert_eq!(d[1].at, t, "nanosecond interface (if_tsresol = 9)");
    assert!(d
        .iter()
        .all(|d| sip_first_line(d) == "REGISTER sip:203.0.113.10 SIP/2.0"));
}

#[test]
fn empty_unknown_and_truncated_files_are_one_line_errors() {
    let e = read_all(b"").unwrap_err();
    assert_eq!(e.to_string(), "empty file");
    let e = read_all(b"hello, this is not a capture").unwrap_err();
    assert!(e.to_string().contains("not a capture file"), "{e}");
    let e = read_all(&pcap(1, &[])[..10]).unwrap_err();
    assert!(e.to_string().contains("damaged pcap header"), "{e}");
    let f = ethernet(&ip_udp(5060, 5060, REGISTER));
    let full = pcap(1, &[f.clone(), f]);
    let mut reader = CaptureReader::new(&full[..full.len() - 30]).unwrap();
    assert!(reader.next().unwrap().is_ok());
    let e = reader.next().unwrap().unwrap_err();
    assert!(
        e.to_string().contains("truncated") && e.to_string().ends_with("after frame 1"),
        "{e}"
    );
    assert!(reader.next().is_none());
    for e in [
        read_all(&pcapng(&[1], &[(3, ethernet(&ip_udp(1, 2, b"x")))])).unwrap_err(),
        read_all(
            &pcap(1, &[])[..24]
                .iter()
                .chain(&[1u8; 7])
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap_err(),
    ] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn an_unknown_link_type_is_skipped_not_fatal() {
    let bytes = pcap(147, &[vec![1, 2, 3]]);
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    assert!(r.next().is_none());
    assert_eq!(r.stats().skipped, 1);
}

#[test]
fn an_invite_retransmitted_to_a_private_contact_is_diagnosed_with_its_timer() {
    let mut p = vec![
        sip(1, 0.0, "203.0.113.1:5060", "203.0.113.10:5060", "REGISTER sip:203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKr;rport\nContact: <sip:bob@192.168.1.10:5060>\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
        sip(2, 0.01, "203.0.113.10:5060", "203.0.113.1:5060", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKr;rport=5060;received=203.0.113.1\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
    ];
    let mut t = 1.0;
    for (i, gap) in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0].iter().enumerate() {
        p.push(sip(3 + i as u64, t, "203.0.113.10:5060", "192.168.1.10:5060", "INVITE sip:bob@192.168.1.10 SIP/2.0\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKi\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n"));
        t += gap;
    }
    let r = analyse(p);
    assert!(r.has_problem());
    let kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&Kind::PrivateAddress), "{kinds:?}");
    let timeout = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::RequestTimeout)
        .unwrap();
    assert!(timeout.summary.contains("6 times"), "{}", timeout.summary);
    assert!(
        timeout.evidence[1].text.contains("T1 ≈ 500 ms"),
        "{:?}",
        timeout.evidence
    );
}

#[test]
fn an_invite_too_large_for_one_packet_that_nobody_answers_points_at_dropped_fragments() {
    let sdp = "a=rtpmap:96 H264/90000\n".repeat(70);
    let invite = |len_sdp: &str| {
        format!(
            "INVITE sip:alice@203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKi;rport\nCall-ID: c\nCSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: {}\n\n{len_sdp}",
            len_sdp.len()
        )
    };
    let timed_out = |text: &str| {
        let mut t = 0.0;
        let mut p = Vec::new();
        for (i, gap) in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0].iter().enumerate() {
            p.push(sip(
                1 + i as u64,
                t,
                "192.168.1.10:5060",
                "203.0.113.10:5060",
                text,
            ));
            t += gap;
        }
        analyse(p)
    };
    let r = timed_out(&invite(&sdp));
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::FragmentedRequest)
        .expect("a fragmented-request finding");
    assert!(f.summary.contains("sent 6 times"), "{}", f.summary);
    assert_eq!(f.confidence, Confidence::Likely);
    assert_eq!(
        f.scenario
            .as_deref()
            .map(|s| s.contains("408-fragmented-invite")),
        Some(true)
    );
    // The same silence with a request that fits one packet is not about fragments.
    let small = timed_out(&invite("v=0\n"));
    assert!(small
        .findings
        .iter()
        .all(|f| f.kind != Kind::FragmentedRequest));
}

#[test]
fn a_healthy_registration_has_no_problem() {
    let r = analyse(vec![
        sip(1, 0.0, "198.51.100.20:5060", "203.0.113.10:5060", "REGISTER sip:203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKr;rport\nContact: <sip:alice@198.51.100.20:5060>\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
        sip(2, 0.01, "203.0.113.10:5060", "198.51.100.20:5060", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKr;rport=5060\nCall-ID: r\nCSeq: 1 REGISTER\nContent-Length: 0\n\n"),
    ]);
    assert!(!r.has_problem(), "{:?}", r.findings);
    assert_eq!((r.registrations, r.sip_messages), (1, 2));
    assert!(report::text(&r).contains("healthy"));
}

#[test]
fn an_alg_that_leaves_via_private_and_breaks_content_length_is_named() {
    let r = analyse(vec![sip(1, 0.0, "203.0.113.1:5060", "203.0.113.10:5060", "INVITE sip:alice@203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKa;rport\nContact: <sip:bob@203.0.113.1:5060>\nCall-ID: a\nCSeq: 1 INVITE\nContent-Length: 60\n\nv=0\no=- 1 1 IN IP4 192.168.1.10\nc=IN IP4 203.0.113.1\nm=audio 4000 RTP/AVP 0\n")]);
    let kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&Kind::AlgRewrite), "{kinds:?}");
    assert!(kinds.contains(&Kind::ContentLengthMismatch), "{kinds:?}");
}

#[test]
fn a_phone_with_stun_for_media_only_is_not_taken_for_an_alg() {
    // baresip with medianat=stun: c= carries the STUN mapping (the router's address), o=, Via
    // and Contact stay private. Nothing was rewritten on the way.
    let r = analyse(vec![sip(1, 0.0, "203.0.113.1:5060", "203.0.113.10:5060", "INVITE sip:bob@203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKa;rport\nContact: <sip:alice@192.168.1.10:5060>\nCall-ID: a\nCSeq: 1 INVITE\nContent-Length: 60\n\nv=0\no=- 1 1 IN IP4 192.168.1.10\nc=IN IP4 203.0.113.1\nm=audio 10000 RTP/AVP 0\n")]);
    let kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
    assert!(!kinds.contains(&Kind::AlgRewrite), "{kinds:?}");
}

#[test]
fn json_names_kinds_in_kebab_case() {
    let r = analyse(vec![sip(1, 0.0, "203.0.113.1:5060", "203.0.113.10:5060", "REGISTER sip:203.0.113.10 SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKr\nAuthorization: Digest username=\"bob\", uri=\"sip:203.0.113.1\", response=\"x\"\nCall-ID: r\nCSeq: 2 REGISTER\nContent-Length: 0\n\n")]);
    let j = report::json(&[r]);
    assert!(j.contains("\"digest-uri-mismatch\""), "{j}");
    assert!(j.contains("\"severity\": \"problem\""), "{j}");
}

proptest! {
    // `just fuzz` runs this with PROPTEST_CASES=1000000; plain `cargo test` with the default.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes, and arbitrary bytes after a valid pcap or pcapng header, never panic:
    /// they read as datagrams or end in one error.
    #[test]
    fn the_reader_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        head in 0usize..4,
        link in prop_oneof![Just(1u32), Just(113), Just(276), Just(101), Just(0), any::<u32>()],
    ) {
        let mut bytes = match head {
            0 => Vec::new(),
            1 => pcap(link, &[]),
            2 => pcapng(&[link as u16, 101], &[]),
            _ => pcap(link, &[ethernet(&ip_udp(5060, 5060, REGISTER))]),
        };
        bytes.extend_from_slice(&tail);
        if let Ok(r) = CaptureReader::new(&bytes[..]) {
            let packets: Vec<Packet> = r
                .take_while(Result::is_ok)
                .filter_map(|d| d.ok().and_then(Packet::decode))
                .collect();
            let _ = report::text(&analyse(packets));
        }
    }
}

fn rtp(frame: u64, secs: f64, src: &str, dst: &str, seq: u16) -> Packet {
    let mut b = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
    b.extend_from_slice(&[0xd5; 160]);
    Packet::decode(Datagram {
        frame,
        at: UNIX_EPOCH + Duration::from_secs_f64(1000.0 + secs),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        body: Body::Udp(b),
    })
    .unwrap()
}

/// INVITE with SDP, 200 with SDP and ACK of call `id` from 198.51.100.20:5060, media at
/// 198.51.100.20:`port` and 192.0.2.60:`port`.
fn answered_call(first_frame: u64, secs: f64, id: &str, port: u16) -> Vec<Packet> {
    let sdp = |a: &str| {
        format!("v=0\no=- 1 1 IN IP4 {a}\ns=-\nc=IN IP4 {a}\nt=0 0\nm=audio {port} RTP/AVP 0\n")
    };
    let msg = |start: &str, cseq: &str, body: &str| {
        format!(
            "{start}\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK{id}{cseq};rport\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>;tag=2\nCall-ID: {id}\nCSeq: {cseq}\nContact: <sip:a@198.51.100.20:5060>\n{}Content-Length: {}\n\n{body}",
            if body.is_empty() { "" } else { "Content-Type: application/sdp\n" },
            body.replace('\n', "\r\n").len()
        )
    };
    let phone = "198.51.100.20:5060";
    let server = "203.0.113.10:5060";
    vec![
        sip(
            first_frame,
            secs,
            phone,
            server,
            &msg(
                "INVITE sip:b@203.0.113.10 SIP/2.0",
                "1 INVITE",
                &sdp("198.51.100.20"),
            ),
        ),
        sip(
            first_frame + 1,
            secs + 0.01,
            server,
            phone,
            &msg("SIP/2.0 200 OK", "1 INVITE", &sdp("192.0.2.60")),
        ),
        sip(
            first_frame + 2,
            secs + 0.02,
            phone,
            server,
            &msg("ACK sip:b@203.0.113.10 SIP/2.0", "1 ACK", ""),
        ),
    ]
}

#[test]
fn a_silent_call_next_to_a_healthy_one_from_the_same_host_is_not_masked_by_its_audio() {
    let mut p = answered_call(1, 0.0, "good", 40000);
    p.extend(answered_call(4, 0.1, "silent", 40002));
    for i in 0..50u16 {
        let t = 0.2 + i as f64 * 0.02;
        let f = 7 + 2 * i as u64;
        p.push(rtp(f, t, "198.51.100.20:40000", "192.0.2.60:40000", i));
        p.push(rtp(f + 1, t, "192.0.2.60:40000", "198.51.100.20:40000", i));
    }
    let r = analyse(p);
    assert_eq!(r.calls, 2);
    let media: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| matches!(f.kind, Kind::NoAudio | Kind::OneWayAudio | Kind::RtpBlocked))
        .collect();
    assert_eq!(media.len(), 1, "{}", report::text(&r));
    // It is the silent call's: its own media addresses are in the evidence.
    assert!(
        media[0].evidence.iter().any(|e| e.text.contains(":40002")),
        "{}",
        report::text(&r)
    );
}

/// A caller at 203.0.113.1:5060 (behind NAT) whose INVITE is answered 4 s later, with 180s to it
/// at `rings` seconds, the 200 OK resent `oks` times, and an ACK if `acked`.
fn slow_answer(rings: &[f64], oks: usize, acked: bool) -> Vec<Packet> {
    let caller = "203.0.113.1:5060";
    let server = "203.0.113.10:5060";
    let msg = |start: &str, cseq: &str| {
        format!("{start}\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKs;rport\nFrom: <sip:bob@x>;tag=1\nTo: <sip:alice@x>;tag=2\nCall-ID: slow\nCSeq: {cseq}\nContact: <sip:bob@192.168.1.10:5060>\nContent-Length: 0\n\n")
    };
    let mut p = vec![sip(
        1,
        0.0,
        caller,
        server,
        &msg("INVITE sip:alice@203.0.113.10 SIP/2.0", "1 INVITE"),
    )];
    let mut frame = 2;
    for &t in rings {
        p.push(sip(
            frame,
            t,
            server,
            caller,
            &msg("SIP/2.0 180 Ringing", "1 INVITE"),
        ));
        frame += 1;
    }
    let mut t = 4.0;
    let mut gap = 0.2;
    for _ in 0..oks {
        p.push(sip(
            frame,
            t,
            server,
            caller,
            &msg("SIP/2.0 200 OK", "1 INVITE"),
        ));
        frame += 1;
        t += gap;
        gap = (gap * 2.0).min(1.6);
    }
    if acked {
        p.push(sip(
            frame,
            4.05,
            caller,
            server,
            &msg("ACK sip:alice@198.51.100.20 SIP/2.0", "1 ACK"),
        ));
    }
    p
}

#[test]
fn a_200_ok_resent_to_a_silent_caller_and_never_acknowledged_dates_the_binding() {
    let r = analyse(slow_answer(&[0.01], 7, false));
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::BindingExpired)
        .unwrap_or_else(|| panic!("{}", report::text(&r)));
    assert!(
        f.summary.contains("came 4.0 s after its last packet")
            && f.summary.contains("lived less than 4.0 s"),
        "{}",
        f.summary
    );
    assert_eq!(
        f.scenario.as_deref(),
        Some("scenarios/binding-expiry-slow-answer.toml")
    );
}

#[test]
fn repeated_180s_to_the_silent_caller_point_at_outbound_only_refresh_and_ask_for_a_lan_capture() {
    let r = analyse(slow_answer(&[0.01, 1.4, 2.8], 7, false));
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::BindingExpired)
        .unwrap_or_else(|| panic!("{}", report::text(&r)));
    assert!(f.summary.contains("at most 1.4 s apart"), "{}", f.summary);
    assert!(f.summary.contains("outbound-only refresh"), "{}", f.summary);
    assert!(
        f.settle
            .as_deref()
            .is_some_and(|s| s.contains("phone's LAN")),
        "{:?}",
        f.settle
    );
}

#[test]
fn an_acknowledged_slow_answer_is_no_binding_problem() {
    let r = analyse(slow_answer(&[0.01], 1, true));
    assert!(
        !r.findings.iter().any(|f| f.kind == Kind::BindingExpired),
        "{}",
        report::text(&r)
    );
}
