//! The agent on a virtual clock: two agents, a network that can swallow paths and a NAT that
//! rewrites one side's source address.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(seed: u64) -> IceConfig {
    IceConfig {
        seed,
        ..IceConfig::default()
    }
}

fn host(a: &str) -> Candidate {
    Candidate::gathered(CandidateKind::Host, addr(a), addr(a))
}

/// Two agents and what connects them: `blocked` destinations swallow everything, `nat` rewrites
/// the source of what A sends from its base (inside → outside) and back.
struct Net {
    a: IceAgent,
    b: IceAgent,
    a_base: SocketAddr,
    nat: Option<SocketAddr>,
    blocked: BTreeSet<SocketAddr>,
    /// A's bases whose datagrams are swallowed.
    blocked_sources: BTreeSet<SocketAddr>,
    /// B stops answering (gone without a BYE).
    b_gone: bool,
    now: Instant,
    sent: Vec<(SocketAddr, SocketAddr)>,
}

impl Net {
    fn new(a: IceAgent, b: IceAgent, a_base: SocketAddr) -> Self {
        Net {
            a,
            b,
            a_base,
            nat: None,
            blocked: BTreeSet::new(),
            blocked_sources: BTreeSet::new(),
            b_gone: false,
            now: Instant::now(),
            sent: Vec::new(),
        }
    }

    fn start(&mut self) {
        let (da, db) = (
            self.a.local_description().clone(),
            self.b.local_description().clone(),
        );
        self.a.set_remote(db, Role::Controlling, self.now);
        self.b.set_remote(da, Role::Controlled, self.now);
    }

    /// Runs until `until` (virtual time), delivering every datagram at once.
    fn run(&mut self, until: Duration) {
        let end = self.now + until;
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.sent.push((t.source, t.destination));
                let blocked = self.blocked.contains(&t.destination)
                    || self.blocked_sources.contains(&t.source);
                if blocked || self.b_gone {
                    continue;
                }
                let from = match self.nat {
                    Some(n) if t.source == self.a_base => n,
                    _ => t.source,
                };
                self.b
                    .handle_stun(t.destination, from, &t.payload, self.now);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                if self.blocked.contains(&t.destination) || self.b_gone {
                    continue;
                }
                let to = match self.nat {
                    Some(n) if t.destination == n => self.a_base,
                    _ => t.destination,
                };
                self.a.handle_stun(to, t.source, &t.payload, self.now);
            }
            if moved {
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }
}

fn events(a: &mut IceAgent) -> Vec<IceEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

#[test]
fn host_candidates_rank_above_reflexive_and_reflexive_above_relayed() {
    let p = |k| priority(k, 65535, 1);
    assert!(p(CandidateKind::Host) > p(CandidateKind::PeerReflexive));
    assert!(p(CandidateKind::PeerReflexive) > p(CandidateKind::ServerReflexive));
    assert!(p(CandidateKind::ServerReflexive) > p(CandidateKind::Relayed));
    // RFC 8445 §5.1.2.1 for a host candidate, component 1: 126·2²⁴ + 65535·2⁸ + 255.
    assert_eq!(p(CandidateKind::Host), 2_130_706_431);
}

#[test]
fn pair_priority_follows_rfc_8445_and_breaks_ties_for_the_controlling_side() {
    assert_eq!(pair_priority(10, 20), (1 << 32) * 10 + 2 * 20);
    assert_eq!(pair_priority(20, 10), (1 << 32) * 10 + 2 * 20 + 1);
    // The smaller of the two decides first: a relayed side sinks a pair whatever the other.
    let host = priority(CandidateKind::Host, 65535, 1);
    let relay = priority(CandidateKind::Relayed, 65535, 1);
    let srflx = priority(CandidateKind::ServerReflexive, 65535, 1);
    assert!(pair_priority(srflx, srflx) > pair_priority(host, relay));
}

#[test]
fn a_candidate_line_round_trips_and_third_party_lines_parse() {
    let mut c = Candidate::gathered(
        CandidateKind::ServerReflexive,
        addr("203.0.113.1:4000"),
        addr("192.168.1.10:4000"),
    );
    c.related = Some(addr("192.168.1.10:4000"));
    let parsed = Candidate::parse(&format!("a={}", c.to_sdp())).unwrap();
    assert_eq!(parsed.address, c.address);
    assert_eq!(parsed.kind, c.kind);
    assert_eq!(parsed.priority, c.priority);
    assert_eq!(parsed.related, c.related);
    // baresip's (libre) form: lower-case transport, a relayed candidate with raddr/rport.
    let r = Candidate::parse(
        "a=candidate:3 1 udp 16777215 203.0.113.20 50002 typ relay raddr 198.51.100.1 rport 4000",
    )
    .unwrap();
    assert_eq!(r.kind, CandidateKind::Relayed);
    assert_eq!(r.address, addr("203.0.113.20:50002"));
    assert!(Candidate::parse("a=candidate:1 1 TCP 1 1.2.3.4 9 typ host tcptype active").is_none());
}

#[test]
fn an_sdp_without_ice_credentials_is_not_ice_and_one_with_them_gives_its_candidates() {
    assert!(IceDescription::parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").is_none());
    let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 4000 RTP/AVP 0\r\n\
               a=candidate:1 1 UDP 2130706431 192.168.1.10 4000 typ host\r\n\
               a=candidate:1 2 UDP 2130706430 192.168.1.10 4001 typ host\r\nm=video 0 RTP/AVP 96\r\n\
               a=candidate:9 1 UDP 1 10.0.0.1 9 typ host\r\n";
    let d = IceDescription::parse(sdp).unwrap();
    assert_eq!(d.ufrag, "abcd");
    assert_eq!(
        d.candidates.len(),
        2,
        "RTP and RTCP; the video section is not ours"
    );
    assert_eq!(d.candidates[1].component, 2);
}

#[test]
fn the_check_list_pairs_host_and_relayed_bases_with_every_remote_and_checks_the_best_first() {
    let locals = vec![
        host("192.168.1.10:4000"),
        Candidate::gathered(
            CandidateKind::ServerReflexive,
            addr("203.0.113.1:4000"),
            addr("192.168.1.10:4000"),
        ),
        Candidate::gathered(
            CandidateKind::Relayed,
            addr("203.0.113.20:50000"),
            addr("203.0.113.20:50000"),
        ),
    ];
    let mut a = IceAgent::new(config(1), locals, Role::Controlling);
    let remote = IceDescription {
        ufrag: "peer".into(),
        pwd: "0123456789012345678901".into(),
        candidates: vec![
            host("192.168.2.10:4000"),
            Candidate::gathered(
                CandidateKind::ServerReflexive,
                addr("198.51.100.1:4000"),
                addr("192.168.2.10:4000"),
            ),
        ],
        lite: false,
    };
    let now = Instant::now();
    a.set_remote(remote, Role::Controlling, now);
    // Server-reflexive locals are pruned: their base is the host socket.
    assert_eq!(a.pairs().len(), 4);
    a.handle_timeout(now);
    let first = a.poll_transmit().unwrap();
    assert_eq!(first.source, addr("192.168.1.10:4000"));
    assert_eq!(first.destination, addr("192.168.2.10:4000"));
    assert!(a.poll_transmit().is_none(), "one check per Ta");
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_millis(50)));
    let msg = crate::stun::Message::decode(&first.payload).unwrap();
    assert!(msg.username().unwrap().starts_with("peer:"));
    assert!(msg.ice_controlling().is_some() && msg.ice_priority().is_some());
    assert!(
        !msg.use_candidate(),
        "regular nomination: no USE-CANDIDATE before a pair is valid"
    );
    msg.verify_integrity(b"0123456789012345678901").unwrap();
}

#[test]
fn two_agents_on_one_network_select_the_host_pair_on_both_sides() {
    let a = IceAgent::new(config(1), vec![host("10.0.0.1:4000")], Role::Controlling);
    let b = IceAgent::new(config(2), vec![host("10.0.0.2:4000")], Role::Controlled);
    let mut net = Net::new(a, b, addr("10.0.0.1:4000"));
    net.start();
    net.run(Duration::from_secs(2));
    let sa = net.a.selected().expect("A selected");
    let sb = net.b.selected().expect("B selected");
    assert_eq!(
        (sa.local.address, sa.remote.address),
        (addr("10.0.0.1:4000"), addr("10.0.0.2:4000"))
    );
    assert_eq!(
        (sb.local.address, sb.remote.address),
        (addr("10.0.0.2:4000"), addr("10.0.0.1:4000"))
    );
    assert!(sa.nominated && sb.nominated);
}

#[test]
fn behind_a_nat_both_sides_learn_peer_reflexive_candidates_and_nominate_what_worked() {
    // A's host is unreachable from B, B's host is reachable; A's packets leave through a NAT
    // whose mapping B was never told about.
    let a = IceAgent::new(
        config(3),
        vec![host("192.168.1.10:4000")],
        Role::Controlling,
    );
    let b = IceAgent::new(config(4), vec![host("203.0.113.50:4000")], Role::Controlled);
    let mut net = Net::new(a, b, addr("192.168.1.10:4000"));
    net.nat = Some(addr("203.0.113.1:41234"));
    net.blocked.insert(addr("192.168.1.10:4000"));
    net.start();
    net.run(Duration::from_secs(2));
    let sa = net.a.selected().expect("A selected");
    assert_eq!(sa.local.kind, CandidateKind::PeerReflexive);
    assert_eq!(sa.local.address, addr("203.0.113.1:41234"));
    let sb = net.b.selected().expect("B selected");
    assert_eq!(sb.remote.kind, CandidateKind::PeerReflexive);
    assert_eq!(sb.remote.address, addr("203.0.113.1:41234"));
}

#[test]
fn a_blocked_better_pair_fails_and_the_relayed_one_is_nominated() {
    let a_locals = vec![
        host("192.168.1.10:4000"),
        Candidate::gathered(
            CandidateKind::Relayed,
            addr("203.0.113.20:50000"),
            addr("203.0.113.20:50000"),
        ),
    ];
    let a = IceAgent::new(config(5), a_locals, Role::Controlling);
    let b = IceAgent::new(config(6), vec![host("198.51.100.9:4000")], Role::Controlled);
    let mut net = Net::new(a, b, addr("192.168.1.10:4000"));
    // Nothing passes between A's host and B (no route); the relay does.
    net.blocked.insert(addr("192.168.1.10:4000"));
    net.blocked_sources.insert(addr("192.168.1.10:4000"));
    net.start();
    net.run(Duration::from_secs(10));
    let ev = events(&mut net.a);
    let sa = net.a.selected().expect("A selected");
    assert_eq!(sa.local.kind, CandidateKind::Relayed, "{ev:?}");
    assert!(net
        .a
        .pairs()
        .iter()
        .any(|p| p.local.kind == CandidateKind::Host && p.state == PairState::Failed));
}

#[test]
fn consent_is_lost_thirty_seconds_after_the_peer_stops_answering() {
    let a = IceAgent::new(config(7), vec![host("10.0.0.1:4000")], Role::Controlling);
    let b = IceAgent::new(config(8), vec![host("10.0.0.2:4000")], Role::Controlled);
    let mut net = Net::new(a, b, addr("10.0.0.1:4000"));
    net.start();
    net.run(Duration::from_secs(20));
    assert!(net.a.selected().is_some(), "consent kept while B answers");
    let _ = events(&mut net.a);
    net.b_gone = true;
    // The last answer came at most one consent interval (≤ 6 s) before B went.
    net.run(Duration::from_secs(23));
    assert!(net.a.selected().is_some(), "not yet");
    net.run(Duration::from_secs(8));
    assert!(net.a.selected().is_none());
    assert!(events(&mut net.a)
        .iter()
        .any(|e| matches!(e, IceEvent::ConsentLost { .. })));
}

#[test]
fn two_controlling_agents_settle_the_conflict_and_still_select_a_pair() {
    let a = IceAgent::new(config(9), vec![host("10.0.0.1:4000")], Role::Controlling);
    let b = IceAgent::new(config(10), vec![host("10.0.0.2:4000")], Role::Controlling);
    let mut net = Net::new(a, b, addr("10.0.0.1:4000"));
    let (da, db) = (
        net.a.local_description().clone(),
        net.b.local_description().clone(),
    );
    net.a.set_remote(db, Role::Controlling, net.now);
    net.b.set_remote(da, Role::Controlling, net.now);
    net.run(Duration::from_secs(3));
    assert_ne!(net.a.role(), net.b.role());
    assert!(net.a.selected().is_some() && net.b.selected().is_some());
}

#[test]
fn a_peer_reflexive_remote_that_the_sdp_then_names_becomes_the_signalled_candidate() {
    // B's checks reach A before B's SDP does (the callee checks as soon as it answers).
    let a = IceAgent::new(config(11), vec![host("10.0.0.1:4000")], Role::Controlling);
    let b = IceAgent::new(config(12), vec![host("10.0.0.2:4000")], Role::Controlled);
    let mut net = Net::new(a, b, addr("10.0.0.1:4000"));
    let da = net.a.local_description().clone();
    net.b.set_remote(da, Role::Controlled, net.now);
    net.run(Duration::from_millis(40));
    let learnt = net
        .a
        .pairs()
        .iter()
        .find(|p| p.remote.address == addr("10.0.0.2:4000"));
    assert_eq!(
        learnt.map(|p| p.remote.kind),
        Some(CandidateKind::PeerReflexive)
    );
    let db = net.b.local_description().clone();
    net.a.set_remote(db, Role::Controlling, net.now);
    net.run(Duration::from_secs(2));
    let sa = net.a.selected().expect("A selected");
    assert_eq!(sa.remote.kind, CandidateKind::Host, "the SDP's word wins");
}

#[test]
fn rtcp_is_nominated_as_its_own_component() {
    let rtcp = |a: &str| host(a).for_component(2);
    let a = IceAgent::new(
        config(13),
        vec![host("10.0.0.1:4000"), rtcp("10.0.0.1:4001")],
        Role::Controlling,
    );
    let b = IceAgent::new(
        config(14),
        vec![host("10.0.0.2:4000"), rtcp("10.0.0.2:4001")],
        Role::Controlled,
    );
    let mut net = Net::new(a, b, addr("10.0.0.1:4000"));
    net.start();
    net.run(Duration::from_secs(2));
    assert_eq!(net.a.pairs().len(), 2, "RTP with RTP, RTCP with RTCP");
    let r = net.b.selected_for(2).expect("B's RTCP pair");
    assert_eq!(r.remote.address, addr("10.0.0.1:4001"));
    assert_eq!(
        net.b.selected().unwrap().remote.address,
        addr("10.0.0.1:4000")
    );
}
