//! A sans-IO media relay with latching (what rtpengine does for Kamailio): each call gets one
//! relay port per leg on the SBC's public address; RTP that reaches a leg's port is sent on from
//! the other leg's port, to where that leg's own RTP comes from.
//!
//! Latching ("comedia"): a leg's destination is the address in its SDP only until its first
//! packet arrives; from then on it is that packet's source, the NAT binding the phone's RTP
//! opened. That is what gets audio to a phone whose SDP says `192.168.1.10:4000`, or whose NAT
//! maps port 4000 to some other port. Packets from another source on a latched port are
//! dropped and counted (rtpengine's strict-source), so a stray sender cannot steal the stream.
//! RTCP (port + 1) is not relayed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::stun::Transmit;

/// Which side of a call a relay port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leg {
    /// The side that sent the INVITE (the offer).
    Caller,
    /// The side the INVITE went to.
    Callee,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Callee,
            Leg::Callee => Leg::Caller,
        }
    }

    fn index(self) -> usize {
        match self {
            Leg::Caller => 0,
            Leg::Callee => 1,
        }
    }
}

/// One leg of a relayed call, as a test or ladder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegReport {
    /// The relay port this leg's phone sends to (written into the SDP it received).
    pub relay: SocketAddr,
    /// What the leg's own SDP announced.
    pub sdp: Option<SocketAddr>,
    /// Where its RTP really comes from, once it sent any.
    pub latched: Option<SocketAddr>,
    /// Packets received on the relay port from the latched source.
    pub received: u64,
    /// Packets sent to this leg (relayed from the other one).
    pub sent: u64,
}

/// One relayed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub call_id: String,
    pub caller: LegReport,
    pub callee: LegReport,
    /// The call ended (BYE, CANCEL or a failure) and its ports went back to the pool.
    pub released: bool,
}

impl SessionReport {
    pub fn leg(&self, leg: Leg) -> &LegReport {
        match leg {
            Leg::Caller => &self.caller,
            Leg::Callee => &self.callee,
        }
    }
}

/// Relay counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub sessions: u64,
    /// Packets sent on to the other leg.
    pub relayed: u64,
    /// Packets that had nowhere to go yet (the other leg has no SDP address and sent nothing).
    pub held: u64,
    /// Packets from a source other than the one a port latched onto: dropped.
    pub foreign: u64,
    /// Packets to a relay port no call owns: dropped.
    pub unowned: u64,
    /// Calls that found no free port pair (relayed without media).
    pub exhausted: u64,
}

/// What the relay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    Allocated {
        call_id: String,
        caller: SocketAddr,
        callee: SocketAddr,
    },
    /// A leg's first packet: from now on the relay sends that leg's media to `source`.
    Latched {
        call_id: String,
        leg: Leg,
        source: SocketAddr,
        sdp: Option<SocketAddr>,
    },
    Released {
        call_id: String,
    },
    /// No free port pair for this call.
    Exhausted {
        call_id: String,
    },
}

#[derive(Debug)]
struct Session {
    call_id: String,
    /// The From tag of the INVITE that created the call: tells which leg a message comes from.
    caller_tag: Option<String>,
    legs: [LegReport; 2],
}

impl Session {
    fn report(&self, released: bool) -> SessionReport {
        SessionReport {
            call_id: self.call_id.clone(),
            caller: self.legs[0].clone(),
            callee: self.legs[1].clone(),
            released,
        }
    }
}

/// Ended calls kept for reports.
const HISTORY: usize = 32;

/// The relay machine (see the module docs). Its sockets are `ip` with every port of its range.
#[derive(Debug)]
pub struct MediaRelay {
    ip: IpAddr,
    ports: RangeInclusive<u16>,
    free: BTreeSet<u16>,
    sessions: BTreeMap<String, Session>,
    by_port: BTreeMap<u16, (String, Leg)>,
    history: VecDeque<SessionReport>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RelayEvent>,
    stats: RelayStats,
}

impl MediaRelay {
    pub fn new(ip: IpAddr, ports: RangeInclusive<u16>) -> Self {
        Self {
            ip,
            free: ports.clone().collect(),
            ports,
            sessions: BTreeMap::new(),
            by_port: BTreeMap::new(),
            history: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: RelayStats::default(),
        }
    }

    /// Every relay socket address (the driver binds them all up front).
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        self.ports
            .clone()
            .map(|p| SocketAddr::new(self.ip, p))
            .collect()
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Live calls, then ended ones (oldest first).
    pub fn sessions(&self) -> Vec<SessionReport> {
        let mut v: Vec<SessionReport> = self.history.iter().cloned().collect();
        v.extend(self.sessions.values().map(|s| s.report(false)));
        v
    }

    pub fn session(&self, call_id: &str) -> Option<SessionReport> {
        self.sessions.get(call_id).map(|s| s.report(false))
    }

    /// The leg a message of `call_id` with this From tag comes from, when it is a request (a
    /// response comes from the other leg). `None` for an unknown call.
    pub fn leg_of_request(&self, call_id: &str, from_tag: Option<&str>) -> Option<Leg> {
        let s = self.sessions.get(call_id)?;
        Some(if s.caller_tag.as_deref() == from_tag {
            Leg::Caller
        } else {
            Leg::Callee
        })
    }

    /// Gives `call_id` a port per leg (the INVITE with `caller_tag` in From is the caller's);
    /// the existing pair if it has one. `None` when the range is used up.
    pub fn allocate(&mut self, call_id: &str, caller_tag: Option<&str>) -> Option<SessionReport> {
        if let Some(s) = self.sessions.get(call_id) {
            return Some(s.report(false));
        }
        let mut it = self.free.iter().copied();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            self.stats.exhausted += 1;
            self.events.push_back(RelayEvent::Exhausted {
                call_id: call_id.into(),
            });
            return None;
        };
        self.free.remove(&a);
        self.free.remove(&b);
        let leg = |port| LegReport {
            relay: SocketAddr::new(self.ip, port),
            sdp: None,
            latched: None,
            received: 0,
            sent: 0,
        };
        let session = Session {
            call_id: call_id.into(),
            caller_tag: caller_tag.map(str::to_string),
            legs: [leg(a), leg(b)],
        };
        self.by_port.insert(a, (call_id.into(), Leg::Caller));
        self.by_port.insert(b, (call_id.into(), Leg::Callee));
        self.stats.sessions += 1;
        self.events.push_back(RelayEvent::Allocated {
            call_id: call_id.into(),
            caller: session.legs[0].relay,
            callee: session.legs[1].relay,
        });
        let report = session.report(false);
        self.sessions.insert(call_id.into(), session);
        Some(report)
    }

    /// Records what `leg`'s SDP announced: where its media goes until it latches.
    pub fn set_sdp(&mut self, call_id: &str, leg: Leg, announced: SocketAddr) {
        if let Some(s) = self.sessions.get_mut(call_id) {
            s.legs[leg.index()].sdp = Some(announced);
        }
    }

    /// Ends `call_id`: its ports go back to the pool (idempotent).
    pub fn release(&mut self, call_id: &str) {
        let Some(s) = self.sessions.remove(call_id) else {
            return;
        };
        for l in &s.legs {
            self.by_port.remove(&l.relay.port());
            self.free.insert(l.relay.port());
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(s.report(true));
        self.events.push_back(RelayEvent::Released {
            call_id: call_id.into(),
        });
    }

    /// A datagram reached relay port `local` from `from`.
    pub fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) {
        let Some((call_id, leg)) = self.by_port.get(&local.port()).cloned() else {
            self.stats.unowned += 1;
            return;
        };
        let Some(s) = self.sessions.get_mut(&call_id) else {
            self.stats.unowned += 1;
            return;
        };
        let this = &mut s.legs[leg.index()];
        match this.latched {
            None => {
                this.latched = Some(from);
                self.events.push_back(RelayEvent::Latched {
                    call_id: call_id.clone(),
                    leg,
                    source: from,
                    sdp: this.sdp,
                });
            }
            Some(l) if l != from => {
                self.stats.foreign += 1;
                return;
            }
            Some(_) => {}
        }
        this.received += 1;
        let other = &mut s.legs[leg.other().index()];
        match other.latched.or(other.sdp) {
            Some(destination) => {
                other.sent += 1;
                self.stats.relayed += 1;
                self.transmits.push_back(Transmit {
                    source: other.relay,
                    destination,
                    payload: bytes.to_vec(),
                });
            }
            None => self.stats.held += 1,
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn media_goes_to_the_sdp_address_until_the_leg_latches_then_to_its_real_source() {
        let mut r = MediaRelay::new("203.0.113.10".parse().unwrap(), 40000..=40003);
        let s = r.allocate("c1", Some("t")).unwrap();
        let (pa, pb) = (s.caller.relay, s.callee.relay);
        r.set_sdp("c1", Leg::Caller, sa("192.168.1.10:4000"));
        r.set_sdp("c1", Leg::Callee, sa("192.168.2.10:4000"));
        // The callee speaks first, from its NAT's mapping: the caller gets it at its SDP
        // address (private: lost on the internet, as rtpengine would lose it).
        r.handle_datagram(pb, sa("198.51.100.1:31000"), b"x");
        let t = r.poll_transmit().unwrap();
        assert_eq!((t.source, t.destination), (pa, sa("192.168.1.10:4000")));
        // The caller's first packet latches its leg; the callee's leg is latched already.
        r.handle_datagram(pa, sa("203.0.113.1:50000"), b"y");
        let t = r.poll_transmit().unwrap();
        assert_eq!((t.source, t.destination), (pb, sa("198.51.100.1:31000")));
        r.handle_datagram(pb, sa("198.51.100.1:31000"), b"z");
        let t = r.poll_transmit().unwrap();
        assert_eq!((t.source, t.destination), (pa, sa("203.0.113.1:50000")));
        // Someone else on the caller's port is dropped.
        r.handle_datagram(pa, sa("198.51.100.99:1"), b"evil");
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.stats().foreign, 1);
        assert_eq!(r.leg_of_request("c1", Some("t")), Some(Leg::Caller));
        assert_eq!(r.leg_of_request("c1", Some("u")), Some(Leg::Callee));
    }

    #[test]
    fn ports_are_reused_after_release_and_exhaustion_is_reported() {
        let mut r = MediaRelay::new("203.0.113.10".parse().unwrap(), 40000..=40002);
        assert!(r.allocate("c1", None).is_some());
        assert!(r.allocate("c2", None).is_none());
        assert_eq!(r.stats().exhausted, 1);
        r.release("c1");
        r.release("c1");
        assert!(r.allocate("c2", None).is_some());
        let sessions = r.sessions();
        assert_eq!(sessions.len(), 2);
        assert!(sessions[0].released && !sessions[1].released);
        r.handle_datagram(sa("203.0.113.10:40002"), sa("1.2.3.4:5"), b"x");
        assert_eq!(r.stats().unowned, 1);
    }
}
