//! TURN on a virtual clock: server and clients (and the kernel NAT's reference model) in one
//! process, stepped to the earliest deadline.

use std::net::SocketAddr;
use std::time::Duration;

use sim_nat::NatType;

use crate::machine::Machine;
use crate::rtp::sim::Net;
use crate::rtp::{MediaConfig, MediaReport, MediaStream, MediaVerdict};
use crate::stun::RetransmitConfig;
use crate::turn::{
    Event, RelayedMedia, TurnClient, TurnClientConfig, TurnError, TurnServer, TurnServerConfig,
};

const SERVER: &str = "203.0.113.10:3478";
const ALICE: &str = "192.168.1.10:4000";
const BOB: &str = "192.168.2.10:4000";
const PEER: &str = "198.51.100.20:6000";
const REALM: &str = "harness.test";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server_config() -> TurnServerConfig {
    TurnServerConfig {
        relay_ports: 50000..=50009,
        seed: 1,
        ..TurnServerConfig::new(sa(SERVER), REALM)
    }
    .user("alice", "secret")
    .user("bob", "hunter2")
}

fn client_config(local: &str, user: &str, password: &str, seed: u64) -> TurnClientConfig {
    TurnClientConfig {
        seed,
        retransmit: RetransmitConfig {
            rto: Duration::from_millis(100),
            max_transmissions: 3,
            final_wait_factor: 4,
        },
        ..TurnClientConfig::new(sa(local), sa(SERVER), user, password)
    }
}

/// Two LANs behind symmetric NATs, as `shapes::two_lans(Symmetric, Symmetric)`.
fn two_symmetric_lans() -> Net {
    Net::new()
        .nat(NatType::Symmetric, "203.0.113.1", "192.168.1.0/24")
        .nat(NatType::Symmetric, "198.51.100.1", "192.168.2.0/24")
}

fn drain<E>(m: &mut impl crate::rtp::Machine<Event = E>) -> Vec<E> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn allocate_is_challenged_with_401_then_succeeds_with_long_term_credentials() {
    let mut net = two_symmetric_lans();
    let mut server = TurnServer::new(server_config()).unwrap();
    let mut alice = TurnClient::new(client_config(ALICE, "alice", "secret", 1));
    alice.allocate(net.now);
    net.run_for(&mut [&mut server, &mut alice], Duration::from_secs(1));
    let relayed = alice.relayed().expect("allocated");
    assert_eq!(relayed.ip().to_string(), "203.0.113.10");
    assert!((50000..=50009).contains(&relayed.port()));
    // The server saw Alice through her NAT.
    assert_eq!(alice.mapped().unwrap().ip().to_string(), "203.0.113.1");
    let server_events = drain(&mut server);
    assert!(matches!(
        server_events[0],
        Event::Rejected {
            method: "Allocate",
            code: 401,
            ..
        }
    ));
    assert!(matches!(server_events[1], Event::Allocated { relayed: r, .. } if r == relayed));
    let s = server.stats();
    assert_eq!((s.requests, s.challenges, s.allocations_created), (2, 1, 1));
    assert_eq!(server.relayed_addresses(), vec![relayed]);
    assert!(matches!(
        drain(&mut alice)[..],
        [Event::Allocated { lifetime, .. }] if lifetime == Duration::from_secs(600)
    ));
}

#[test]
fn a_wrong_password_fails_after_the_challenge_instead_of_looping() {
    let mut net = Net::new();
    let mut server = TurnServer::new(server_config()).unwrap();
    let mut mallory = TurnClient::new(client_config(PEER, "alice", "guess", 1));
    mallory.allocate(net.now);
    net.run_for(&mut [&mut server, &mut mallory], Duration::from_secs(5));
    assert_eq!(mallory.relayed(), None);
    let failed: Vec<_> = drain(&mut mallory)
        .into_iter()
        .filter_map(|e| match e {
            Event::Failed { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&failed[..], [TurnError::ErrorResponse { code: 401, .. }]),
        "{failed:?}"
    );
    assert_eq!(server.stats().errors[&401], 2);
    assert_eq!(server.stats().allocations_created, 0);
}

#[test]
fn phones_behind_symmetric_nats_get_audio_both_ways_through_turn() {
    let mut net = two_symmetric_lans();
    let mut server = TurnServer::new(server_config()).unwrap();
    let media = |seed| MediaConfig {
        seed,
        ..MediaConfig::pcmu(sa("0.0.0.0:0"), None)
    };
    let mut alice = RelayedMedia::new(client_config(ALICE, "alice", "secret", 1), media(1));
    let mut bob = RelayedMedia::new(client_config(BOB, "bob", "hunter2", 2), media(2));
    alice.allocate(net.now);
    bob.allocate(net.now);
    net.run_for(
        &mut [&mut server, &mut alice, &mut bob],
        Duration::from_secs(1),
    );
    // The relayed addresses are what each side's SDP carries.
    let (a, b) = (alice.relayed().unwrap(), bob.relayed().unwrap());
    alice.connect(b, net.now).unwrap();
    bob.connect(a, net.now).unwrap();
    net.run_for(
        &mut [&mut server, &mut alice, &mut bob],
        Duration::from_secs(1),
    );
    assert!(alice.is_ready() && bob.is_ready());
    alice.start_media(net.now);
    bob.start_media(net.now);
    net.run_for(
        &mut [&mut server, &mut alice, &mut bob],
        Duration::from_secs(6),
    );
    let report = MediaReport::new(&alice.stats(), &bob.stats(), 0.95);
    assert_eq!(report.verdict, MediaVerdict::BothWays, "{report}");
    assert_eq!(report.caller_to_callee.received, 250);
    assert_eq!(report.callee_to_caller.received, 250);
    // Each side hears the other from the other's relayed address, as ChannelData.
    assert_eq!(
        bob.stats().by_source.keys().copied().collect::<Vec<_>>(),
        vec![a]
    );
    let s = server.stats();
    assert_eq!(
        (s.to_peer, s.to_client, s.to_client_channel_data),
        (500, 500, 500)
    );
    assert_eq!(s.dropped_no_permission, 0);
}

#[test]
fn send_indications_carry_media_when_no_channel_is_bound() {
    let mut net = Net::new().nat(NatType::Symmetric, "203.0.113.1", "192.168.1.0/24");
    let mut server = TurnServer::new(server_config()).unwrap();
    let mut alice = RelayedMedia::new(
        client_config(ALICE, "alice", "secret", 1),
        MediaConfig {
            seed: 1,
            ..MediaConfig::pcmu(sa("0.0.0.0:0"), None)
        },
    )
    .without_channel();
    // A public peer (an SBC) that latches onto where Alice's RTP comes from: her relay.
    let mut sbc = MediaStream::new(MediaConfig {
        latching: true,
        seed: 2,
        ..MediaConfig::pcmu(sa(PEER), None)
    });
    alice.allocate(net.now);
    net.run_for(
        &mut [&mut server, &mut alice, &mut sbc],
        Duration::from_secs(1),
    );
    alice.connect(sa(PEER), net.now).unwrap();
    alice.start_media(net.now);
    sbc.start(net.now);
    net.run_for(
        &mut [&mut server, &mut alice, &mut sbc],
        Duration::from_secs(6),
    );
    let report = MediaReport::new(&alice.stats(), sbc.stats(), 0.95);
    assert_eq!(report.verdict, MediaVerdict::BothWays, "{report}");
    assert_eq!(sbc.stats().latched, alice.relayed());
    let s = server.stats();
    assert_eq!(s.to_client_channel_data, 0);
    assert!(s.to_client >= 245, "{s:?}");
}

#[test]
fn a_peer_without_permission_is_not_relayed() {
    let mut net = Net::new();
    let mut server = TurnServer::new(server_config()).unwrap();
    let mut alice = TurnClient::new(client_config(ALICE, "alice", "secret", 1));
    alice.allocate(net.now);
    net.run_for(&mut [&mut server, &mut alice], Duration::from_secs(1));
    let relayed = alice.relayed().unwrap();
    let mut stranger = MediaStream::new(MediaConfig {
        duration: Duration::from_millis(200),
        seed: 3,
        ..MediaConfig::pcmu(sa(PEER), Some(relayed))
    });
    stranger.start(net.now);
    // Alice also tries to send to the stranger without asking for a permission.
    alice.send_to(sa(PEER), b"hello", net.now).unwrap();
    net.run_for(
        &mut [&mut server, &mut alice, &mut stranger],
        Duration::from_secs(1),
    );
    assert_eq!(server.stats().dropped_no_permission, 11);
    assert_eq!(server.stats().to_client + server.stats().to_peer, 0);
    assert!(!drain(&mut alice)
        .iter()
        .any(|e| matches!(e, Event::Data { .. })));
}

#[test]
fn refreshes_keep_allocation_permission_and_channel_alive_and_silence_expires_them() {
    let mut net = Net::new();
    let mut server = TurnServer::new(server_config().lifetimes_divided_by(100)).unwrap();
    let mut alice =
        TurnClient::new(client_config(ALICE, "alice", "secret", 1).lifetimes_divided_by(100));
    alice.allocate(net.now);
    net.run_for(&mut [&mut server, &mut alice], Duration::from_millis(100));
    alice.bind_channel(sa(PEER), net.now).unwrap();
    // 60 virtual seconds: ten allocation lifetimes (6 s), twenty permission lifetimes (3 s).
    net.run_for(&mut [&mut server, &mut alice], Duration::from_secs(60));
    let s = server.stats().clone();
    assert_eq!(
        (
            s.allocations_active,
            s.allocations_expired,
            s.permissions_expired,
            s.channels_expired
        ),
        (1, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(alice.channel(sa(PEER)), Some(0x4000));
    drain(&mut server);
    // Alice goes quiet (her phone crashed): only the server's clock runs.
    net.run_for(&mut [&mut server], Duration::from_secs(10));
    let s = server.stats();
    assert_eq!((s.allocations_active, s.allocations_expired), (0, 1));
    let ended: Vec<_> = drain(&mut server)
        .into_iter()
        .filter(|e| matches!(e, Event::AllocationEnded { .. }))
        .collect();
    assert!(
        matches!(&ended[..], [Event::AllocationEnded { reason, .. }] if reason.starts_with("expired")),
        "{ended:?}"
    );
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut net = Net::new();
    let mut server = TurnServer::new(server_config()).unwrap();
    let mut alice = TurnClient::new(client_config(ALICE, "alice", "secret", 1));
    alice.allocate(net.now);
    net.run_for(&mut [&mut server, &mut alice], Duration::from_secs(1));
    assert!(alice.relayed().is_some());
    alice.deallocate(net.now);
    net.run_for(&mut [&mut server, &mut alice], Duration::from_secs(1));
    assert_eq!(alice.relayed(), None);
    assert_eq!(server.stats().allocations_deleted, 1);
    assert!(server.relayed_addresses().is_empty());
    assert!(drain(&mut alice)
        .iter()
        .any(|e| matches!(e, Event::AllocationEnded { .. })));
}

#[test]
fn garbage_on_the_listening_port_is_counted_not_fatal() {
    let mut server = TurnServer::new(server_config()).unwrap();
    let now = std::time::Instant::now();
    for bytes in [
        &b""[..],
        b"\x40\x00\x00\x10ab",
        b"\x00\x03\x00\x04\x21\x12",
        b"INVITE",
    ] {
        server.handle_datagram(sa(SERVER), sa(PEER), bytes, now);
    }
    assert_eq!(server.stats().malformed, 4);
    assert_eq!(server.stats().dropped_no_allocation, 0);
    assert!(server.poll_transmit().is_none());
}
