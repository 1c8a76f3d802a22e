//! Media on a virtual clock, through the kernel NAT's reference model: the one-way-audio rows of
//! the failure catalogue and their fixes, in microseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sim_nat::NatType;

use crate::machine::Machine;
use crate::rtp::sim::Net;
use crate::rtp::{
    Direction, MediaConfig, MediaEvent, MediaReport, MediaStream, MediaVerdict, RtpPacket,
    RtpSource, PCMU,
};
use crate::stun::Transmit;

const ALICE: &str = "192.168.1.10:4000";
const ALICE_SEND: &str = "192.168.1.10:4001";
const BOB_PRIVATE: &str = "192.168.2.10:6000";
/// An SBC's media port, or a phone with a public address.
const SBC: &str = "198.51.100.20:6000";
const STUN: &str = "203.0.113.10:3478";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Five seconds of PCMU: 250 packets.
fn media(local: &str, destination: Option<&str>, seed: u64) -> MediaConfig {
    MediaConfig {
        seed,
        ..MediaConfig::pcmu(sa(local), destination.map(sa))
    }
}

/// Alice behind a home router (`nat`, public 203.0.113.1), the far end public.
fn home(nat: NatType) -> Net {
    Net::new().nat(nat, "203.0.113.1", "192.168.1.0/24")
}

/// Starts both streams, runs six virtual seconds, and judges the call.
fn call(net: &mut Net, caller: &mut MediaStream, callee: &mut MediaStream) -> MediaReport {
    caller.start(net.now);
    callee.start(net.now);
    net.run_for(&mut [caller, callee], Duration::from_secs(6));
    MediaReport::new(caller.stats(), callee.stats(), 0.95)
}

#[test]
fn a_stream_sends_one_pcmu_packet_every_20_ms_with_rising_seq_and_timestamp() {
    let mut s = MediaStream::new(MediaConfig {
        duration: Duration::from_millis(100),
        ..media(ALICE, Some(SBC), 7)
    });
    let t0 = Instant::now();
    s.start(t0);
    let mut sent: Vec<(Instant, Transmit)> = Vec::new();
    let mut now = t0;
    loop {
        while let Some(t) = s.poll_transmit() {
            sent.push((now, t));
        }
        let Some(at) = s.poll_timeout() else { break };
        now = at;
        s.handle_timeout(now);
    }
    assert_eq!(sent.len(), 5);
    let packets: Vec<RtpPacket> = sent
        .iter()
        .map(|(_, t)| RtpPacket::decode(&t.payload).unwrap())
        .collect();
    for (k, ((at, t), p)) in sent.iter().zip(&packets).enumerate() {
        assert_eq!(*at - t0, Duration::from_millis(20 * k as u64));
        assert_eq!((t.source, t.destination), (sa(ALICE), sa(SBC)));
        assert_eq!(p.payload_type, PCMU);
        assert_eq!(p.payload.len(), 160);
        assert_eq!(p.ssrc, s.ssrc());
        assert_eq!(p.sequence, packets[0].sequence.wrapping_add(k as u16));
        assert_eq!(
            p.timestamp,
            packets[0].timestamp.wrapping_add(160 * k as u32)
        );
    }
    assert!(s.is_finished());
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(matches!(
        events.last(),
        Some(MediaEvent::Finished { sent: 5 })
    ));
}

#[test]
fn the_receiver_counts_loss_reordering_and_duplicates_per_source() {
    let mut rx = MediaStream::new(media(SBC, None, 1));
    let now = Instant::now();
    let from = sa(ALICE);
    let packet = |seq: u16| {
        RtpPacket {
            marker: false,
            payload_type: PCMU,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 42,
            payload: vec![0; 160],
        }
        .encode()
    };
    // 65534, 65535, 0 (wrap), 3, 2 (late), 2 (duplicate); 1 never comes.
    for seq in [65534, 65535, 0, 3, 2, 2] {
        rx.handle_datagram(sa(SBC), from, &packet(seq), now);
    }
    rx.handle_datagram(sa(SBC), from, b"\x00\x01garbage-stun-ish-bytes", now);
    let s = rx.stats();
    assert_eq!((s.received, s.unique, s.duplicates), (6, 5, 1));
    assert_eq!((s.lost, s.out_of_order, s.malformed), (1, 1, 1));
    assert_eq!(s.by_source[&from].packets, 6);
    assert_eq!(s.by_source[&from].ssrcs, vec![42]);
}

#[test]
fn a_private_c_address_in_the_callers_sdp_gives_one_way_audio() {
    let mut net = home(NatType::PortRestrictedCone);
    // Alice's SDP says c=192.168.1.10 m=4000; the far end believes it.
    let mut alice = MediaStream::new(media(ALICE, Some(SBC), 1));
    let mut far = MediaStream::new(media(SBC, Some(ALICE), 2));
    let report = call(&mut net, &mut alice, &mut far);
    assert_eq!(report.verdict, MediaVerdict::CallerToCallee, "{report}");
    assert_eq!(report.caller_to_callee.received, 250);
    assert_eq!(report.callee_to_caller.sent, 250);
    assert_eq!(report.callee_to_caller.direction, Direction::Broken);
    assert_eq!(net.drops("not routable"), 250);
    // The far end sees Alice's RTP from the NAT's public address, not from her SDP's.
    let sources: Vec<_> = far.stats().by_source.keys().copied().collect();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].ip().to_string(), "203.0.113.1");
}

#[test]
fn a_far_end_that_latches_onto_the_callers_rtp_restores_audio_both_ways() {
    let mut net = home(NatType::Symmetric);
    let mut alice = MediaStream::new(media(ALICE, Some(SBC), 1));
    let mut sbc = MediaStream::new(MediaConfig {
        latching: true,
        ..media(SBC, Some(ALICE), 2)
    });
    let report = call(&mut net, &mut alice, &mut sbc);
    assert_eq!(report.verdict, MediaVerdict::BothWays, "{report}");
    assert_eq!(report.caller_to_callee.received, 250);
    // At most the packet sent before Alice's first one arrived goes to the private address.
    assert!(report.callee_to_caller.received >= 249, "{report}");
    assert_eq!(
        sbc.stats().latched,
        sbc.stats().by_source.keys().next().copied()
    );
}

#[test]
fn asymmetric_rtp_defeats_latching_and_audio_stays_one_way() {
    let mut net = home(NatType::PortRestrictedCone);
    let mut alice = MediaStream::new(MediaConfig {
        source: RtpSource::Asymmetric(sa(ALICE_SEND)),
        ..media(ALICE, Some(SBC), 1)
    });
    let mut sbc = MediaStream::new(MediaConfig {
        latching: true,
        ..media(SBC, Some(ALICE), 2)
    });
    let report = call(&mut net, &mut alice, &mut sbc);
    assert_eq!(report.verdict, MediaVerdict::CallerToCallee, "{report}");
    // The SBC's answer reaches the binding of Alice's *send* socket, where no phone listens.
    assert_eq!(alice.stats().received, 0);
    assert!(alice.stats().stray >= 249, "{:?}", alice.stats());
}

#[test]
fn phones_behind_symmetric_nats_with_stun_discovered_addresses_get_no_audio() {
    let mut net = Net::new()
        .nat(NatType::Symmetric, "203.0.113.1", "192.168.1.0/24")
        .nat(NatType::Symmetric, "198.51.100.1", "192.168.2.0/24");
    // Each learns its mapping towards the STUN server and puts it in its SDP.
    let alice_sdp = net.stun_mapped(sa(ALICE), sa(STUN));
    let bob_sdp = net.stun_mapped(sa(BOB_PRIVATE), sa(STUN));
    let mut alice = MediaStream::new(MediaConfig {
        seed: 1,
        ..MediaConfig::pcmu(sa(ALICE), Some(bob_sdp))
    });
    let mut bob = MediaStream::new(MediaConfig {
        seed: 2,
        ..MediaConfig::pcmu(sa(BOB_PRIVATE), Some(alice_sdp))
    });
    let report = call(&mut net, &mut alice, &mut bob);
    assert_eq!(report.verdict, MediaVerdict::None, "{report}");
    assert_eq!((alice.stats().received, bob.stats().received), (0, 0));
    assert_eq!(net.drops("inbound"), 500);
}

#[test]
fn the_report_names_each_direction_against_the_threshold() {
    use crate::rtp::MediaStats;
    let stats = |sent, unique| MediaStats {
        sent,
        unique,
        ..MediaStats::default()
    };
    let r = MediaReport::new(&stats(100, 95), &stats(100, 100), 0.95);
    assert_eq!(r.verdict, MediaVerdict::BothWays);
    let r = MediaReport::new(&stats(100, 94), &stats(100, 100), 0.95);
    assert_eq!(r.verdict, MediaVerdict::CallerToCallee);
    assert_eq!(r.callee_to_caller.direction, Direction::Degraded);
    let r = MediaReport::new(&stats(100, 100), &stats(100, 0), 0.95);
    assert_eq!(r.verdict, MediaVerdict::CalleeToCaller);
    assert_eq!(r.caller_to_callee.direction, Direction::Broken);
    assert_eq!(
        r.to_string(),
        "caller→callee 0/100 (0.0 %), callee→caller 100/100 (100.0 %): one-way audio: callee → caller only"
    );
    let r = MediaReport::new(&stats(0, 0), &stats(0, 0), 0.95);
    assert_eq!(r.verdict, MediaVerdict::None);
}

#[test]
fn packets_lost_while_the_path_opened_are_told_apart_from_loss_once_audio_flows() {
    use crate::rtp::MediaStats;
    // The caller sent 150 packets from sequence 1000; the callee's first arrival is `first`, and
    // `unique` arrived in all.
    let caller = MediaStats {
        sent: 150,
        first_sent: Some((7, 1000)),
        unique: 150,
        first_received: [(8, 2000)].into(),
        ..MediaStats::default()
    };
    let callee = |first: u16, unique| MediaStats {
        sent: 150,
        first_sent: Some((8, 2000)),
        unique,
        first_received: [(7, first)].into(),
        ..MediaStats::default()
    };
    // 20 lost before a relay latched, the other 130 all through: working.
    let r = MediaReport::new(&caller, &callee(1020, 130), 0.95);
    assert_eq!(r.caller_to_callee.direction, Direction::Working, "{r}");
    assert_eq!(r.caller_to_callee.startup, 20);
    assert!(
        r.to_string()
            .contains("130/130 (100.0 % after 20 lost while the path opened)"),
        "{r}"
    );
    // A second of clipped audio is a fault even when the rest arrives.
    let r = MediaReport::new(&caller, &callee(1050, 100), 0.95);
    assert_eq!(r.caller_to_callee.direction, Direction::Degraded, "{r}");
    // Loss once audio flows counts as before: 20 at the start, then 10 of 130 missing.
    let r = MediaReport::new(&caller, &callee(1020, 120), 0.95);
    assert_eq!(r.caller_to_callee.direction, Direction::Degraded, "{r}");
    // A sequence from before the first packet sent (wrapped) is not a start-up: judge it all.
    let r = MediaReport::new(&caller, &callee(999, 150), 0.95);
    assert_eq!(r.caller_to_callee.startup, 0, "{r}");
}

#[test]
fn a_sender_that_skips_sequence_numbers_while_silent_has_not_lost_them() {
    use crate::rtp::{MediaStats, SentRuns};
    // Seen from baresip 1.0 with ICE: one packet, then nothing for 3 s while its check list
    // settled, its sequence running on meanwhile; then 220 packets from 252, all received.
    let mut runs = SentRuns::default();
    runs.record(7, 100);
    for seq in 252..472 {
        runs.record(7, seq);
    }
    assert_eq!(runs.sent_before(7, 100), Some(0));
    assert_eq!(runs.sent_before(7, 252), Some(1));
    assert_eq!(runs.sent_before(7, 300), Some(49));
    assert_eq!(runs.sent_before(7, 200), None, "never sent");
    assert_eq!(runs.sent_before(8, 252), None, "another SSRC");
    let caller = MediaStats {
        sent: 221,
        first_sent: Some((7, 100)),
        sent_runs: runs,
        unique: 200,
        first_received: [(8, 2000)].into(),
        ..MediaStats::default()
    };
    let callee = MediaStats {
        sent: 200,
        first_sent: Some((8, 2000)),
        unique: 220,
        first_received: [(7, 252)].into(),
        ..MediaStats::default()
    };
    let r = MediaReport::new(&caller, &callee, 0.95);
    assert_eq!(r.caller_to_callee.startup, 1, "{r}");
    assert_eq!(r.caller_to_callee.direction, Direction::Working, "{r}");
    assert_eq!(r.verdict, MediaVerdict::BothWays, "{r}");
    // Across a wrap of the 16-bit sequence number, too.
    let mut runs = SentRuns::default();
    for seq in (65530..=65535).chain(0..10) {
        runs.record(9, seq);
    }
    assert_eq!(runs.sent_before(9, 3), Some(9));
}

#[test]
fn sent_runs_stop_estimating_rather_than_guess_after_too_many_jumps() {
    use crate::rtp::SentRuns;
    let mut runs = SentRuns::default();
    for i in 0..=SentRuns::MAX as u16 {
        runs.record(1, i * 2);
    }
    assert_eq!(runs.sent_before(1, 2), None);
}
