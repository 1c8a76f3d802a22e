//! The SBC on a virtual clock: two phones behind static NATs (each maps `private:p` to
//! `public:p + offset`, so an SDP port is never the port a packet comes from), the SBC on the
//! public side, zero-latency delivery, time stepped to the earliest deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::rtp::{MediaConfig, MediaReport, MediaStream, MediaVerdict};
use crate::sbc::{Leg, Ping, Sbc, SbcConfig};
use crate::sip::{message, Event, Timers, Ua, UaConfig};

const T1: Duration = Duration::from_millis(50);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `private:p` ⇄ `public:p + offset`.
struct StaticNat {
    private: IpAddr,
    public: IpAddr,
    offset: u16,
}

struct Phone {
    ua: Ua,
    media: Option<MediaStream>,
    nat: StaticNat,
    /// SIP datagrams delivered to the phone.
    received: Vec<Vec<u8>>,
}

struct Net {
    now: Instant,
    sbc: Sbc,
    phones: Vec<Phone>,
    dropped: u64,
}

const SBC: &str = "203.0.113.10:5060";

impl Net {
    fn new(ping: Option<Ping>) -> Self {
        let phone = |user: &str, private: &str, public: &str, offset: u16, seed: u64| Phone {
            ua: Ua::new(UaConfig {
                timers: Timers::scaled(T1),
                answer_after: Some(T1 * 2),
                seed,
                ..UaConfig::new(user, "example.com", sa(&format!("{private}:5060")), sa(SBC))
            }),
            media: None,
            nat: StaticNat {
                private: private.parse().unwrap(),
                public: public.parse().unwrap(),
                offset,
            },
            received: Vec::new(),
        };
        Self {
            now: Instant::now(),
            sbc: Sbc::new(SbcConfig {
                timers: Timers::scaled(T1),
                ping,
                relay_ports: 40000..=40003,
                ..SbcConfig::new(sa(SBC), "example.com")
            }),
            phones: vec![
                phone("alice", "192.168.1.10", "203.0.113.1", 1000, 11),
                phone("bob", "192.168.2.10", "198.51.100.1", 7, 22),
            ],
            dropped: 0,
        }
    }

    fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        let now = self.now;
        // Out through the sender's NAT.
        let src = match self.phones.iter().find(|p| p.nat.private == src.ip()) {
            Some(p) => SocketAddr::new(p.nat.public, src.port() + p.nat.offset),
            None => src,
        };
        if dst.ip() == sa(SBC).ip() {
            self.sbc.handle_datagram(dst, src, &payload, now);
            return;
        }
        // In through the receiver's NAT; a private destination vanishes, as on the internet.
        let Some(p) = self.phones.iter_mut().find(|p| p.nat.public == dst.ip()) else {
            self.dropped += 1;
            return;
        };
        let local = SocketAddr::new(p.nat.private, dst.port().wrapping_sub(p.nat.offset));
        if local == p.ua.config().local {
            p.received.push(payload.clone());
            p.ua.handle_datagram(src, &payload, now);
        } else if let Some(m) = p.media.as_mut().filter(|m| m.local() == local) {
            m.handle_datagram(local, src, &payload, now);
        } else {
            self.dropped += 1;
        }
    }

    fn transmits(&mut self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = self.sbc.poll_transmit() {
            out.push((t.source, t.destination, t.payload));
        }
        for p in &mut self.phones {
            while let Some(t) = p.ua.poll_transmit() {
                out.push((t.source, t.destination, t.payload));
            }
            if let Some(m) = p.media.as_mut() {
                while let Some(t) = m.poll_transmit() {
                    out.push((t.source, t.destination, t.payload));
                }
            }
        }
        out
    }

    fn deadline(&self) -> Option<Instant> {
        let mut all = vec![self.sbc.poll_timeout()];
        for p in &self.phones {
            all.push(p.ua.poll_timeout());
            all.push(p.media.as_ref().and_then(|m| m.poll_timeout()));
        }
        all.into_iter().flatten().min()
    }

    /// Delivers everything, then steps time to each deadline up to `d` from now.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let batch = self.transmits();
            if !batch.is_empty() {
                for (s, t, p) in batch {
                    self.deliver(s, t, p);
                }
                continue;
            }
            match self.deadline().filter(|t| *t <= end) {
                Some(t) => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.sbc.handle_timeout(now);
                    for p in &mut self.phones {
                        p.ua.handle_timeout(now);
                        if let Some(m) = p.media.as_mut() {
                            m.handle_timeout(now);
                        }
                    }
                }
                None => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    fn events(&mut self, i: usize) -> Vec<Event> {
        std::iter::from_fn(|| self.phones[i].ua.poll_event()).collect()
    }
}

#[test]
fn a_call_to_a_natted_phone_goes_through_the_sbc_and_media_latches_onto_the_nat_mappings() {
    let mut net = Net::new(None);
    let now = net.now;
    net.phones[1].ua.register(now);
    net.run_for(T1 * 4);
    let bound = net.sbc.proxy().binding("bob", net.now).unwrap().target;
    assert_eq!(bound, sa("198.51.100.1:5067"), "the observed source");

    let call = net.phones[0].ua.call("bob", net.now).unwrap();
    net.run_for(T1 * 20);
    let established = |events: Vec<Event>| {
        events.into_iter().find_map(|e| match e {
            Event::CallEstablished { remote_media, .. } => remote_media,
            _ => None,
        })
    };
    let alice_remote = established(net.events(0)).expect("alice's call is up");
    let bob_remote = established(net.events(1)).expect("bob's call is up");
    let session = net.sbc.relay().session(&call).expect("a relay session");
    assert_eq!(alice_remote, session.caller.relay);
    assert_eq!(bob_remote, session.callee.relay);
    assert_eq!(session.caller.sdp, Some(sa("192.168.1.10:4000")));
    assert_eq!(session.callee.sdp, Some(sa("192.168.2.10:4000")));
    // What reached bob names only the SBC: Contact (with the alias) and SDP.
    let invite = net.phones[1]
        .received
        .iter()
        .find(|d| d.starts_with(b"INVITE"))
        .unwrap();
    let invite = message::parse(invite).unwrap();
    let contact = message::contact_uri(&invite).unwrap().to_string();
    assert_eq!(
        contact,
        "sip:alice@203.0.113.10:5060;alias=203.0.113.1~6060~1"
    );

    for (i, remote) in [(0, alice_remote), (1, bob_remote)] {
        let local = SocketAddr::new(net.phones[i].nat.private, 4000);
        let mut m = MediaStream::new(MediaConfig {
            duration: Duration::from_secs(1),
            seed: 5 + i as u64,
            ..MediaConfig::pcmu(local, Some(remote))
        });
        m.start(net.now);
        net.phones[i].media = Some(m);
    }
    net.run_for(Duration::from_millis(1100));
    let (a, b) = (
        net.phones[0].media.as_ref().unwrap().stats().clone(),
        net.phones[1].media.as_ref().unwrap().stats().clone(),
    );
    let report = MediaReport::new(&a, &b, 0.95);
    assert_eq!(report.verdict, MediaVerdict::BothWays, "{report}");
    let session = net.sbc.relay().session(&call).unwrap();
    assert_eq!(
        session.leg(Leg::Caller).latched,
        Some(sa("203.0.113.1:5000"))
    );
    assert_eq!(
        session.leg(Leg::Callee).latched,
        Some(sa("198.51.100.1:4007"))
    );

    // Bob hangs up: his BYE goes to alice's aliased Contact through the SBC.
    net.phones[1].ua.hang_up(&call, net.now);
    net.run_for(T1 * 10);
    assert!(net
        .events(0)
        .iter()
        .any(|e| matches!(e, Event::CallEnded { .. })));
    assert!(net.sbc.relay().session(&call).is_none(), "ports released");
    assert!(net.sbc.stats().aliases_resolved >= 2, "ACK and BYE");
}

#[test]
fn options_pings_reach_each_endpoint_at_its_observed_address_every_interval_and_are_answered() {
    let mut net = Net::new(Some(Ping::Options(Duration::from_secs(1))));
    let now = net.now;
    net.phones[1].ua.register(now);
    net.run_for(Duration::from_millis(3500));
    let s = net.sbc.proxy().stats().clone();
    assert_eq!((s.pings_sent, s.pongs), (3, 3), "{s:?}");
    let options = net.phones[1]
        .received
        .iter()
        .filter(|d| d.starts_with(b"OPTIONS"))
        .count();
    assert_eq!(options, 3);
    assert_eq!(
        net.sbc.snapshot().endpoints.get("bob"),
        Some(&sa("198.51.100.1:5067"))
    );
}

#[test]
fn crlf_pings_are_sent_and_nobody_answers_them() {
    let mut net = Net::new(Some(Ping::Crlf(Duration::from_secs(1))));
    let now = net.now;
    net.phones[1].ua.register(now);
    net.run_for(Duration::from_millis(2500));
    let s = net.sbc.proxy().stats().clone();
    assert_eq!((s.pings_sent, s.pongs), (2, 0), "{s:?}");
    assert_eq!(
        net.phones[1]
            .received
            .iter()
            .filter(|d| *d == b"\r\n\r\n")
            .count(),
        2
    );
}
