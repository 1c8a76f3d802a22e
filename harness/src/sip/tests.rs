//! Virtual-clock scenarios from the failure catalogue (item 1, both
//! faces): phones behind `sim_nat` NAT models, a registrar/proxy with
//! either [`NatHandling`], T1 scaled to 10 ms.

use std::time::Duration;

use sim_nat::{Filtering, Mapping, NatBehaviour, PortAllocation};

use crate::machine::Transport;
use crate::sip::testnet::{addr, Fate, Net};
use crate::sip::{
    ContactSource, Event, KeepAlive, NatHandling, Proxy, ProxyConfig, Timers, Ua, UaConfig,
};

const T1: Duration = Duration::from_millis(10);
const PROXY: &str = "198.51.100.10:5060";
const ALICE: &str = "198.51.100.20:5060";
const BOB_PUBLIC: &str = "198.51.100.30:5060";
const BOB_PRIVATE: &str = "10.0.0.2:5060";
const HOME_IP: &str = "203.0.113.7";
const ALICE_PRIVATE: &str = "10.0.1.2:5060";
const OFFICE_IP: &str = "203.0.113.8";
const DOMAIN: &str = "example.com";

fn proxy(nat: NatHandling) -> Proxy {
    Proxy::new(ProxyConfig {
        timers: Timers::scaled(T1),
        ..ProxyConfig::new(addr(PROXY), DOMAIN, nat)
    })
}

fn phone(user: &str, local: &str, seed: u64) -> UaConfig {
    UaConfig {
        timers: Timers::scaled(T1),
        answer_after: Some(T1 * 5),
        seed,
        ..UaConfig::new(user, DOMAIN, addr(local), addr(PROXY))
    }
}

/// A Linux home router: endpoint-independent mapping that keeps the
/// source port, address-and-port-dependent filtering.
fn port_preserving() -> NatBehaviour {
    NatBehaviour::new(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    )
}

/// `masquerade random` (symmetric): every flow gets a new random port.
fn port_changing() -> NatBehaviour {
    let b = NatBehaviour::new(
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
    );
    assert_eq!(b.ports, PortAllocation::Random);
    b
}

/// Bob behind a port-preserving home NAT with a private Contact, Alice on
/// the public side, both registered.
fn bob_at_home(nat: NatHandling) -> Net {
    let mut net = Net::new();
    let home = net.router(port_preserving(), HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(nat));
    net.add_ua("alice", Ua::new(phone("alice", ALICE, 11)), None);
    net.add_ua("bob", Ua::new(phone("bob", BOB_PRIVATE, 22)), Some(home));
    for who in ["alice", "bob"] {
        net.ua(who, |ua, now| ua.register(now));
        assert!(
            net.run_until(Duration::from_secs(1), |n, e| n == who
                && matches!(e, Event::Registered { .. })),
            "{who} did not register:\n{}\n{:?}",
            net.ladder_text(),
            net.events
        );
    }
    net
}

fn sent_offsets(net: &Net, from: &str, what: &str, dst: &str) -> Vec<Duration> {
    let hops: Vec<_> = net
        .ladder
        .iter()
        .filter(|h| h.from == from && h.what == what && h.dst == addr(dst))
        .collect();
    let first = hops.first().map(|h| h.at).unwrap_or_default();
    hops.iter().map(|h| h.at - first).collect()
}

fn doubling_from_t1() -> Vec<Duration> {
    [0, 1, 3, 7, 15, 31, 63].iter().map(|k| T1 * *k).collect()
}

#[test]
fn a_literal_registrar_forwards_to_the_private_contact_so_the_caller_gets_100_trying_then_408_at_64_t1(
) {
    let mut net = bob_at_home(NatHandling::LITERAL);
    let now = net.now;
    assert_eq!(
        net.proxy("proxy").binding("bob", now).unwrap().target,
        addr(BOB_PRIVATE)
    );
    let start = net.now - net.start;
    let call = net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();

    assert!(net.run_until(Duration::from_secs(5), |n, e| n == "alice"
        && matches!(e, Event::CallFailed { .. })));
    let ladder = net.ladder_text();
    let (at, failed) = net.events_of("alice").last().cloned().unwrap();
    assert_eq!(
        failed,
        Event::CallFailed {
            call_id: call,
            status: 408
        },
        "{ladder}"
    );
    assert_eq!(at - start, T1 * 64, "408 must come at Timer B:\n{ladder}");

    // The proxy's INVITE toward the private address vanishes; Timer A
    // retransmits it at T1, 2·T1, 4·T1, …
    assert_eq!(
        sent_offsets(&net, "proxy", "INVITE", BOB_PRIVATE),
        doubling_from_t1(),
        "{ladder}"
    );
    assert!(net
        .ladder
        .iter()
        .filter(|h| h.dst == addr(BOB_PRIVATE))
        .all(|h| matches!(h.fate, Fate::Dropped(_))));
    // What the caller saw: 100 Trying at once, 408 at 64·T1, no ringing.
    let to_alice: Vec<_> = net
        .ladder
        .iter()
        .filter(|h| h.fate == Fate::Delivered("alice") && h.what != "200 OK")
        .map(|h| (h.at - start, h.what.as_str()))
        .collect();
    assert_eq!(
        to_alice,
        [
            (Duration::ZERO, "100 Trying"),
            (T1 * 64, "408 Request Timeout")
        ],
        "{ladder}"
    );
    assert!(!net
        .events_of("bob")
        .iter()
        .any(|(_, e)| matches!(e, Event::IncomingCall { .. })));
}

#[test]
fn a_far_end_registrar_stores_the_source_address_so_the_call_rings_connects_and_hangs_up() {
    let mut net = bob_at_home(NatHandling::FAR_END);
    let now = net.now;
    let public_bob = addr(&format!("{HOME_IP}:5060"));
    assert_eq!(
        net.proxy("proxy").binding("bob", now).unwrap().target,
        public_bob
    );
    let call = net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();

    assert!(net.run_until(Duration::from_secs(2), |n, e| n == "bob"
        && matches!(e, Event::CallEstablished { .. })));
    let ladder = net.ladder_text();
    let alice: Vec<Event> = net.events_of("alice").into_iter().map(|(_, e)| e).collect();
    assert!(
        alice.contains(&Event::CallRinging {
            call_id: call.clone()
        }),
        "{ladder}"
    );
    assert!(alice.contains(&Event::CallEstablished {
        call_id: call.clone(),
        remote_media: Some(addr("10.0.0.2:4000")),
    }));
    for what in ["INVITE", "ACK"] {
        assert!(
            net.ladder
                .iter()
                .any(|h| h.what == what && h.fate == Fate::Delivered("bob")),
            "{what} did not reach bob:\n{ladder}"
        );
    }

    net.ua("alice", |ua, now| ua.hang_up(&call, now));
    net.run_for(Duration::from_secs(1));
    for who in ["alice", "bob"] {
        assert!(
            net.events_of(who)
                .iter()
                .any(|(_, e)| matches!(e, Event::CallEnded { .. })),
            "{who}:\n{}",
            net.ladder_text()
        );
    }
    assert!(net
        .ladder
        .iter()
        .any(|h| h.what == "BYE" && h.fate == Fate::Delivered("bob")));
}

/// Alice behind a NAT that changes the source port calls Bob (public)
/// through a FarEnd proxy.
fn alice_behind_port_changing_nat(rport: bool) -> (Net, String) {
    let mut net = Net::new();
    let office = net.router(port_changing(), OFFICE_IP, "10.0.1.0");
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua(
        "alice",
        Ua::new(UaConfig {
            rport,
            ..phone("alice", ALICE_PRIVATE, 11)
        }),
        Some(office),
    );
    net.add_ua("bob", Ua::new(phone("bob", BOB_PUBLIC, 22)), None);
    net.ua("bob", |ua, now| ua.register(now));
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::Registered { .. })));
    let call = net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    (net, call)
}

#[test]
fn without_rport_responses_go_to_the_via_port_the_nat_never_opened_so_the_caller_retransmits_until_408(
) {
    let (mut net, call) = alice_behind_port_changing_nat(false);
    let start = net.now - net.start;
    assert!(net.run_until(Duration::from_secs(5), |n, e| n == "alice"
        && matches!(e, Event::CallFailed { .. })));
    let ladder = net.ladder_text();
    let (at, failed) = net.events_of("alice").last().cloned().unwrap();
    assert_eq!(
        failed,
        Event::CallFailed {
            call_id: call,
            status: 408
        },
        "{ladder}"
    );
    assert_eq!(at - start, T1 * 64, "{ladder}");
    assert_eq!(
        sent_offsets(&net, "alice", "INVITE", PROXY),
        doubling_from_t1(),
        "{ladder}"
    );
    // Not even 100 Trying got back: everything to OFFICE_IP:5060 was dropped.
    let to_via_port = addr(&format!("{OFFICE_IP}:5060"));
    let replies: Vec<_> = net.ladder.iter().filter(|h| h.dst == to_via_port).collect();
    assert!(replies.iter().any(|h| h.what == "100 Trying"), "{ladder}");
    assert!(
        replies.iter().all(|h| matches!(h.fate, Fate::Dropped(_))),
        "{ladder}"
    );
    assert!(
        !net.ladder
            .iter()
            .any(|h| h.fate == Fate::Delivered("alice")),
        "{ladder}"
    );
}

#[test]
fn with_rport_the_proxy_answers_the_source_port_and_the_same_call_connects() {
    let (mut net, call) = alice_behind_port_changing_nat(true);
    assert!(net.run_until(Duration::from_secs(2), |n, e| n == "alice"
        && matches!(e, Event::CallEstablished { .. })));
    let alice: Vec<Event> = net.events_of("alice").into_iter().map(|(_, e)| e).collect();
    assert!(alice.contains(&Event::CallRinging { call_id: call }));
    // Alice sent the INVITE once: nothing was lost.
    assert_eq!(
        sent_offsets(&net, "alice", "INVITE", PROXY).len(),
        1,
        "{}",
        net.ladder_text()
    );
}

#[test]
fn a_registrar_with_credentials_challenges_with_401_and_accepts_the_digest_retry() {
    let mut net = Net::new();
    net.add_proxy(
        "proxy",
        Proxy::new(ProxyConfig {
            timers: Timers::scaled(T1),
            ..ProxyConfig::new(addr(PROXY), DOMAIN, NatHandling::FAR_END).with_user("bob", "s3cret")
        }),
    );
    net.add_ua(
        "bob",
        Ua::new(UaConfig {
            password: Some("s3cret".into()),
            ..phone("bob", BOB_PUBLIC, 22)
        }),
        None,
    );
    net.add_ua(
        "mallory",
        Ua::new(UaConfig {
            password: Some("guess".into()),
            ..phone("bob", "198.51.100.66:5060", 66)
        }),
        None,
    );
    net.ua("bob", |ua, now| ua.register(now));
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::Registered { .. })));
    let seen: Vec<&str> = net
        .ladder
        .iter()
        .filter(|h| h.from == "bob" || h.fate == Fate::Delivered("bob"))
        .map(|h| h.what.as_str())
        .collect();
    assert_eq!(seen, ["REGISTER", "401 Unauthorized", "REGISTER", "200 OK"]);

    net.ua("mallory", |ua, now| ua.register(now));
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "mallory"
        && *e == Event::RegistrationFailed { status: 401 }));
    assert_eq!(net.proxy("proxy").stats().challenges, 3);
}

#[test]
fn malformed_datagrams_are_counted_and_the_next_request_is_served() {
    let mut net = Net::new();
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua("bob", Ua::new(phone("bob", BOB_PUBLIC, 22)), None);
    let junk = addr("192.0.2.99:5060");
    let truncated = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKx\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nContent-Length: 100\r\n\r\nv=0";
    let no_via = b"OPTIONS sip:example.com SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 2\r\nCSeq: 1 OPTIONS\r\n\r\n";
    net.inject(junk, "proxy", b"\x16\x03\x01 definitely not SIP");
    net.inject(junk, "proxy", truncated);
    net.inject(junk, "proxy", no_via);
    let stats = net.proxy("proxy").stats().clone();
    assert_eq!(stats.malformed, 3);
    assert_eq!(stats.malformed_by_kind.get("content_length"), Some(&1));
    assert_eq!(stats.malformed_by_kind.get("missing_header"), Some(&1));
    assert_eq!(stats.malformed_log.len(), 3);
    assert_eq!(
        net.events_of("proxy")
            .iter()
            .filter(|(_, e)| matches!(e, Event::MalformedDatagram { .. }))
            .count(),
        3
    );

    net.ua("bob", |ua, now| ua.register(now));
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::Registered { .. })));

    net.inject(junk, "bob", b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(net.ua("bob", |ua, _| ua.stats().malformed), 1);
}

#[test]
fn a_phone_refreshes_its_registration_before_it_expires_and_keeps_the_nat_open_with_crlf() {
    let mut net = Net::new();
    let home = net.router(port_preserving(), HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua(
        "bob",
        Ua::new(UaConfig {
            expires: Duration::from_secs(2),
            keepalive: Some(KeepAlive::Crlf(Duration::from_millis(500))),
            ..phone("bob", BOB_PRIVATE, 22)
        }),
        Some(home),
    );
    net.ua("bob", |ua, now| ua.register(now));
    net.run_for(Duration::from_millis(4500));
    let registered: Vec<Duration> = net
        .events_of("bob")
        .iter()
        .filter(|(_, e)| matches!(e, Event::Registered { .. }))
        .map(|(t, _)| *t)
        .collect();
    // Refreshed at half the granted 2 s: t = 0, 1, 2, 3, 4 s.
    assert_eq!(registered.len(), 5, "{}", net.ladder_text());
    let now = net.now;
    assert!(net.proxy("proxy").binding("bob", now).is_some());
    let pings = net
        .ladder
        .iter()
        .filter(|h| h.from == "bob" && h.what == "CRLF")
        .count();
    let pongs = net
        .ladder
        .iter()
        .filter(|h| h.what == "CRLF" && h.fate == Fate::Delivered("bob"))
        .count();
    assert_eq!((pings, pongs), (9, 9));
}

/// Bob behind a symmetric NAT with a 1 s binding timeout and STUN keep-alives (RFC 5626) every
/// `every`; what the run saw after 5 s: (keep-alives sent, answers delivered, flow moves, REGISTERs).
fn stun_keepalive_run(every: Duration) -> (usize, usize, usize, usize, Net) {
    let mut net = Net::new();
    let home = net.router(port_changing().with_udp_timeout(1), HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua(
        "bob",
        Ua::new(UaConfig {
            keepalive: Some(KeepAlive::Stun(every)),
            ..phone("bob", BOB_PRIVATE, 22)
        }),
        Some(home),
    );
    net.ua("bob", |ua, now| ua.register(now));
    net.run_for(Duration::from_secs(5));
    let count =
        |f: &dyn Fn(&crate::sip::testnet::Hop) -> bool| net.ladder.iter().filter(|h| f(h)).count();
    let pings = count(&|h| h.from == "bob" && h.what == "STUN Request");
    let answers = count(&|h| h.what == "STUN SuccessResponse" && h.fate == Fate::Delivered("bob"));
    let registers = count(&|h| h.from == "bob" && h.what == "REGISTER");
    let moves = net
        .events_of("bob")
        .iter()
        .filter(|(_, e)| matches!(e, Event::FlowMappingChanged { .. }))
        .count();
    (pings, answers, moves, registers, net)
}

#[test]
fn stun_keepalives_faster_than_the_timeout_are_answered_on_the_flow_and_keep_its_mapping() {
    let (pings, answers, moves, registers, mut net) =
        stun_keepalive_run(Duration::from_millis(400));
    // 12 keep-alives plus the request that learns the mapping right after the REGISTER.
    assert_eq!(
        (pings, answers, moves, registers),
        (13, 13, 0, 1),
        "{}",
        net.ladder_text()
    );
    assert_eq!(net.proxy("proxy").stats().stun_answers, 13);
}

#[test]
fn a_stun_keepalive_slower_than_the_timeout_sees_the_flow_move_and_the_phone_re_registers_at_once()
{
    // Every 1.5 s on a 1 s timeout: each keep-alive finds the binding gone and gets a new random
    // port; the answer differs from the mapping learnt right after the last REGISTER, so even
    // the first keep-alive shows the move, and the phone registers the new address straight
    // away (and learns the new mapping: one more STUN request per REGISTER).
    let (pings, answers, moves, registers, mut net) =
        stun_keepalive_run(Duration::from_millis(1500));
    assert_eq!(moves, 3, "{}", net.ladder_text());
    assert_eq!(registers, 1 + moves, "{}", net.ladder_text());
    assert_eq!(
        (pings, answers),
        (3 + registers, 3 + registers),
        "{}",
        net.ladder_text()
    );
    let newest = net
        .events_of("bob")
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            Event::FlowMappingChanged { new, .. } => Some(*new),
            _ => None,
        });
    let now = net.now;
    let target = net.proxy("proxy").binding("bob", now).map(|b| b.target);
    assert_eq!(target, newest, "the registrar holds the newest mapping");
}

#[test]
fn a_discovered_contact_makes_even_a_literal_registrar_reach_the_phone() {
    let mut net = Net::new();
    let home = net.router(port_preserving(), HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(NatHandling::LITERAL));
    net.add_ua("alice", Ua::new(phone("alice", ALICE, 11)), None);
    net.add_ua(
        "bob",
        Ua::new(UaConfig {
            contact: ContactSource::Discovered,
            ..phone("bob", BOB_PRIVATE, 22)
        }),
        Some(home),
    );
    // What the STUN client would report behind a port-preserving NAT.
    net.ua("bob", |ua, now| {
        ua.set_discovered_address(addr(&format!("{HOME_IP}:5060")));
        ua.register(now)
    });
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::Registered { .. })));
    net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    assert!(
        net.run_until(Duration::from_secs(2), |n, e| n == "alice"
            && matches!(e, Event::CallEstablished { .. })),
        "{}",
        net.ladder_text()
    );
}

#[test]
fn a_caller_cancels_a_ringing_call_and_both_sides_see_it_end() {
    let mut net = bob_at_home(NatHandling::FAR_END);
    let call = net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    assert!(net.run_until(Duration::from_millis(30), |n, e| n == "alice"
        && matches!(e, Event::CallRinging { .. })));
    net.ua("alice", |ua, now| ua.hang_up(&call, now));
    assert!(
        net.run_until(Duration::from_secs(1), |n, e| n == "alice"
            && matches!(e, Event::CallFailed { status: 487, .. })),
        "{}",
        net.ladder_text()
    );
    assert!(net
        .events_of("bob")
        .iter()
        .any(|(_, e)| matches!(e, Event::CallEnded { .. })));
    assert!(!net
        .events_of("bob")
        .iter()
        .any(|(_, e)| matches!(e, Event::CallEstablished { .. })));
}

/// Bob behind a port-preserving NAT with a 1 s binding timeout and the given refresh direction
/// calls Alice, who answers after 3 s and repeats her 180 every `ring_every`; whether Bob's call
/// got established within 10 s, and how many 180s reached him.
fn slow_answer_run(refresh: sim_nat::Refresh, ring_every: Option<Duration>) -> (bool, usize, Net) {
    let mut net = Net::new();
    let nat = port_preserving().with_udp_timeout(1).with_refresh(refresh);
    let home = net.router(nat, HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua(
        "alice",
        Ua::new(UaConfig {
            answer_after: Some(Duration::from_secs(3)),
            ring_every,
            ..phone("alice", ALICE, 11)
        }),
        None,
    );
    net.add_ua("bob", Ua::new(phone("bob", BOB_PRIVATE, 22)), Some(home));
    for who in ["alice", "bob"] {
        net.ua(who, |ua, now| ua.register(now));
        assert!(net.run_until(Duration::from_secs(1), |n, e| n == who
            && matches!(e, Event::Registered { .. })));
    }
    net.ua("bob", |ua, now| ua.call("alice", now)).unwrap();
    let established = net.run_until(Duration::from_secs(10), |n, e| {
        n == "bob" && matches!(e, Event::CallEstablished { .. })
    });
    let rings = net
        .ladder
        .iter()
        .filter(|h| h.what == "180 Ringing" && h.fate == Fate::Delivered("bob"))
        .count();
    (established, rings, net)
}

#[test]
fn a_slow_answer_dies_at_the_callers_nat_unless_the_callee_repeats_its_180_below_the_timeout() {
    use sim_nat::Refresh;
    let (established, rings, net) = slow_answer_run(Refresh::Both, None);
    assert!(!established, "{}", net.ladder_text());
    assert_eq!(rings, 1, "{}", net.ladder_text());

    // 180s at 0, 0.5, …, 2.5 s: each inbound packet refreshes a Linux-style binding, so the 200
    // OK at 3 s still finds it; the repeats stop once answered.
    let (established, rings, net) =
        slow_answer_run(Refresh::Both, Some(Duration::from_millis(500)));
    assert!(established, "{}", net.ladder_text());
    assert_eq!(rings, 6, "{}", net.ladder_text());

    // A router that refreshes on outbound packets only lets the binding die all the same.
    let (established, _, net) =
        slow_answer_run(Refresh::OutboundOnly, Some(Duration::from_millis(500)));
    assert!(!established, "{}", net.ladder_text());
}

/// What a PBX with `externip` and `localnet` answers a caller at `caller_addr`: the 180's and
/// 200's Contact, and the 200's SDP.
fn pbx_answers(caller_addr: &str) -> (Vec<String>, String) {
    let pbx_addr = addr("192.168.1.20:5060");
    let mut pbx = Ua::new(UaConfig {
        contact: ContactSource::External(addr("203.0.113.1:5060")),
        external_media: Some("203.0.113.1".parse().unwrap()),
        localnet: vec![("192.168.1.0".parse().unwrap(), 24)],
        media: crate::sip::Media {
            address: "192.168.1.20".parse().unwrap(),
            port: 10000,
        },
        ..phone("pbx", "192.168.1.20:5060", 7)
    });
    let mut caller = Ua::new(UaConfig {
        answer_after: None,
        ..phone("alice", caller_addr, 8)
    });
    let now = std::time::Instant::now();
    caller.call("pbx", now).unwrap();
    let invite = caller.poll_transmit().expect("the INVITE");
    pbx.handle_datagram(addr(caller_addr), &invite.payload, now);
    pbx.handle_timeout(now + T1 * 10);
    let mut contacts = Vec::new();
    let mut sdp = String::new();
    while let Some(t) = pbx.poll_transmit() {
        let text = String::from_utf8_lossy(&t.payload).to_string();
        assert_eq!(t.destination, addr(caller_addr), "{text}");
        assert_eq!(t.source, pbx_addr);
        contacts.extend(
            text.lines()
                .filter(|l| l.starts_with("Contact:"))
                .map(str::to_string),
        );
        if let Some(body) = text.split("\r\n\r\n").nth(1).filter(|b| !b.is_empty()) {
            sdp = body.to_string();
        }
    }
    (contacts, sdp)
}

#[test]
fn externip_goes_to_the_internet_and_localnet_keeps_the_lan_on_the_local_address() {
    let (contacts, sdp) = pbx_answers("198.51.100.20:5060");
    assert!(
        !contacts.is_empty()
            && contacts
                .iter()
                .all(|c| c == "Contact: <sip:pbx@203.0.113.1:5060>"),
        "{contacts:?}"
    );
    assert!(
        sdp.contains("c=IN IP4 203.0.113.1\r\n") && sdp.contains("m=audio 10000 "),
        "{sdp}"
    );
    let (contacts, sdp) = pbx_answers("192.168.1.30:5060");
    assert!(
        !contacts.is_empty()
            && contacts
                .iter()
                .all(|c| c == "Contact: <sip:pbx@192.168.1.20:5060>"),
        "{contacts:?}"
    );
    assert!(
        sdp.contains("c=IN IP4 192.168.1.20\r\n") && !sdp.contains("203.0.113.1"),
        "{sdp}"
    );
}

#[test]
fn a_call_is_pending_until_the_callee_has_its_ack_and_a_wound_down_phone_starts_nothing_new() {
    let mut net = bob_at_home(NatHandling::FAR_END);
    let idle = |net: &mut Net| {
        [
            net.ua("alice", |ua, _| ua.pending()),
            net.ua("bob", |ua, _| ua.pending()),
            net.proxy("proxy").pending(),
        ]
    };
    assert_eq!(idle(&mut net), [false; 3], "registered, nothing in flight");
    net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    assert_eq!(
        idle(&mut net),
        [true, false, false],
        "the INVITE is on its way"
    );
    // Bob answers after 5·T1; the moment his 200 leaves, he owes it retransmissions until the ACK.
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::IncomingCall { .. })));
    // Alice's INVITE is in Proceeding (no timer of its own); bob owes the answer.
    assert_eq!(
        idle(&mut net),
        [false, true, true],
        "ringing: bob's INVITE server transaction awaits his answer, the proxy's awaits bob's"
    );
    assert!(net.run_until(Duration::from_secs(1), |n, e| n == "bob"
        && matches!(e, Event::CallEstablished { .. })));
    assert_eq!(
        idle(&mut net),
        [false; 3],
        "the ACK arrived: nothing left to say"
    );

    // Refreshes fall due at half the granted expiry; wound down, bob sends no new REGISTER.
    let registers = |net: &Net| {
        net.ladder
            .iter()
            .filter(|h| h.what.starts_with("REGISTER"))
            .count()
    };
    let before = registers(&net);
    net.ua("bob", |ua, _| ua.wind_down());
    net.run_for(Duration::from_secs(2000));
    assert_eq!(
        registers(&net),
        before + 1,
        "only alice refreshed (at 1800 s):\n{}",
        net.ladder_text()
    );
}

/// Bob behind a port-preserving NAT whose bindings last 2 s (refreshed as `refresh` says)
/// registers with a far-end proxy that pings with `ping`; Alice calls him 5 s later. Whether the
/// call got established, and the proxy's counters.
fn pinged_run(
    refresh: sim_nat::Refresh,
    ping: Option<crate::sip::Ping>,
) -> (bool, crate::sip::ProxyStats, Net) {
    let mut net = Net::new();
    let nat = port_preserving().with_udp_timeout(2).with_refresh(refresh);
    let home = net.router(nat, HOME_IP, "10.0.0.0");
    net.add_proxy(
        "proxy",
        Proxy::new(ProxyConfig {
            timers: Timers::scaled(T1),
            ping,
            ..ProxyConfig::new(addr(PROXY), DOMAIN, NatHandling::FAR_END)
        }),
    );
    net.add_ua("alice", Ua::new(phone("alice", ALICE, 11)), None);
    net.add_ua("bob", Ua::new(phone("bob", BOB_PRIVATE, 22)), Some(home));
    for who in ["alice", "bob"] {
        net.ua(who, |ua, now| ua.register(now));
        assert!(net.run_until(Duration::from_secs(1), |n, e| n == who
            && matches!(e, Event::Registered { .. })));
    }
    net.run_for(Duration::from_secs(5));
    net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    let established = net.run_until(Duration::from_secs(2), |n, e| {
        n == "alice" && matches!(e, Event::CallEstablished { .. })
    });
    let stats = net.proxy("proxy").stats().clone();
    (established, stats, net)
}

#[test]
fn the_plain_proxys_pings_keep_bob_callable_but_on_an_outbound_only_nat_only_answered_options_do() {
    use crate::sip::Ping;
    use sim_nat::Refresh;
    let every = Duration::from_secs(1);
    let (established, stats, net) = pinged_run(Refresh::Both, None);
    assert!(!established, "no pings: {}", net.ladder_text());
    assert_eq!(stats.pings_sent, 0);

    // Any packet through the binding refreshes it on a Linux-style NAT, even an unanswered CRLF.
    let (established, stats, net) = pinged_run(Refresh::Both, Some(Ping::Crlf(every)));
    assert!(established, "{}", net.ladder_text());
    assert!(stats.pings_sent >= 5, "{stats:?}");
    assert_eq!(stats.pongs, 0, "nobody answers a CRLF ping");

    // Inbound pings refresh nothing there; the CRLF dies with the binding...
    let (established, _, net) = pinged_run(Refresh::OutboundOnly, Some(Ping::Crlf(every)));
    assert!(!established, "{}", net.ladder_text());

    // ...while bob's 200 OK to each OPTIONS is outbound, and that keeps it.
    let (established, stats, net) = pinged_run(Refresh::OutboundOnly, Some(Ping::Options(every)));
    assert!(established, "{}", net.ladder_text());
    assert!(
        stats.pongs >= 5 && stats.pongs == stats.pings_sent,
        "{stats:?}"
    );
    let pings = net
        .ladder
        .iter()
        .filter(|h| {
            h.what == "OPTIONS"
                && h.from == "proxy"
                && h.dst == addr(&format!("{HOME_IP}:5060"))
                && h.fate == Fate::Delivered("bob")
        })
        .count();
    assert!(
        pings >= 5,
        "OPTIONS to bob's far-end address: {}",
        net.ladder_text()
    );
}

/// Bob registered over TCP (behind his home NAT) with `keepalive`, alice over UDP; alice calls
/// bob `after` the registration, behind a NAT whose bindings last 2 s.
fn tcp_call_after(keepalive: Option<KeepAlive>, after: Duration) -> (Net, String) {
    let mut net = Net::new();
    let home = net.router(port_preserving().with_udp_timeout(2), HOME_IP, "10.0.0.0");
    net.add_proxy("proxy", proxy(NatHandling::FAR_END));
    net.add_ua("alice", Ua::new(phone("alice", ALICE, 11)), None);
    let bob = UaConfig {
        transport: Transport::Tcp,
        keepalive,
        ..phone("bob", BOB_PRIVATE, 22)
    };
    net.add_ua("bob", Ua::new(bob), Some(home));
    for who in ["alice", "bob"] {
        net.ua(who, |ua, now| ua.register(now));
    }
    net.run_for(after);
    let call = net.ua("alice", |ua, now| ua.call("bob", now)).unwrap();
    net.run_for(T1 * 70);
    (net, call)
}

#[test]
fn a_tcp_phone_gets_its_invite_down_the_flow_it_registered_on_without_retransmissions() {
    let (mut net, call) = tcp_call_after(None, Duration::from_millis(100));
    assert_event(
        &net,
        "alice",
        |e| matches!(e, Event::CallEstablished { call_id, .. } if *call_id == call),
    );
    // One INVITE towards bob's flow (the NAT's public side of his connection), not Timer A's
    // doubling series: TCP delivers or fails.
    let public_bob = one_invite_to_bobs_flow(&net);
    assert_eq!(
        net.proxy("proxy").transport_to(addr(&public_bob)),
        Transport::Tcp
    );
}

#[test]
fn a_tcp_flow_idle_past_the_nat_timeout_loses_the_invite_once_and_the_caller_gets_408() {
    let (net, call) = tcp_call_after(None, Duration::from_secs(3));
    assert_event(
        &net,
        "alice",
        |e| matches!(e, Event::CallFailed { call_id, status: 408 } if *call_id == call),
    );
    one_invite_to_bobs_flow(&net);
}

/// Asserts `who` reported an event `matches` accepts (showing the ladder if not).
fn assert_event(net: &Net, who: &str, matches: impl Fn(&Event) -> bool) {
    let seen = net.events_of(who).iter().any(|(_, e)| matches(e));
    assert!(seen, "{}", net.ladder_text());
}

/// Asserts the proxy sent bob's flow (his router's public side) exactly one INVITE; that address.
fn one_invite_to_bobs_flow(net: &Net) -> String {
    let public_bob = format!("{HOME_IP}:5060");
    assert_eq!(
        sent_offsets(net, "proxy", "INVITE", &public_bob),
        [Duration::ZERO],
        "{}",
        net.ladder_text()
    );
    public_bob
}

#[test]
fn crlf_pings_on_the_tcp_flow_keep_it_open_and_the_late_call_connects() {
    let (net, call) = tcp_call_after(
        Some(KeepAlive::Crlf(Duration::from_millis(900))),
        Duration::from_secs(3),
    );
    assert_event(
        &net,
        "bob",
        |e| matches!(e, Event::IncomingCall { call_id, .. } if *call_id == call),
    );
    let pongs = net
        .ladder
        .iter()
        .filter(|h| h.what == "CRLF" && h.fate == Fate::Delivered("bob"))
        .count();
    assert!(pongs >= 3, "{}", net.ladder_text());
}
