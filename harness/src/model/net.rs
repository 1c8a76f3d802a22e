//! The model's network, sans-IO: the topology of a scenario file with every NAT router a
//! [`sim_nat::NatModel`], datagrams carried hop by hop at zero latency, and a record of every
//! copy at every link a kernel capture would have seen (hosts' `eth0`, both sides of routers).
//!
//! What the kernel topology does and this reproduces (`shared/kernel-facts.md`):
//! - the internet core swallows a packet to an address nobody on the public segment owns (a
//!   leaked private address): no error, no ICMP — [`Fate::Swallowed`];
//! - a router that keeps an inbound packet for itself (nothing bound, input policy `accept`) or
//!   rejects it (`reject`) answers ICMP port unreachable, recorded on its WAN side and at the
//!   sender if the sender is on that segment; under `drop` it stays silent;
//! - the emulated SIP ALG (`sip-alg = { emulated = […] }`) rewrites or drops SIP to or from port
//!   5060 in the router's FORWARD path: outbound before source NAT (it sees the inside address),
//!   inbound after destination NAT;
//! - a router without NAT forwards untouched.
//!
//! Not modelled: the kernel SIP helper's rewrites (its 3600 s flow timeout is in the NAT model),
//! ICMP delivered to a socket (no machine here reads ICMP), link delay and loss, TCP.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use sim_nat::{AlgFault, NatModel, SipAlg, Verdict};

use super::wire;
use crate::alg::rewrite::{Alg, Direction as AlgDirection, SipVerdict};
use crate::capture::{Direction, Frame, Vantage};
use crate::error::{Error, Result};
use crate::topology::{TopologySpec, INTERNET};

/// The SIP port the emulated ALG intercepts (as `alg::queue` queues it).
const SIP_PORT: u16 = 5060;

/// Where a segment is: the public internet, or the LAN of router `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Internet,
    Lan(usize),
}

struct Host {
    name: String,
    segment: Segment,
    addrs: Vec<Ipv4Addr>,
}

struct Router {
    name: String,
    upstream: Segment,
    wan: Ipv4Addr,
    lan: (Ipv4Addr, u8),
    /// `None`: a plain router.
    nat: Option<NatModel>,
    alg: Option<Alg>,
    forwards: Vec<sim_nat::PortForward>,
}

impl Router {
    fn on_lan(&self, ip: Ipv4Addr) -> bool {
        in_net(ip, self.lan)
    }

    /// One of the addresses the router answers on outside: its WAN address and its pool.
    fn owns_outside(&self, ip: Ipv4Addr) -> bool {
        ip == self.wan
            || self.nat.as_ref().is_some_and(|m| {
                let first = u32::from(m.public());
                let n = u32::from(m.behaviour().pool_size.max(1));
                (first..first.saturating_add(n)).contains(&u32::from(ip))
            })
    }
}

/// Whether an inbound packet the NAT dropped went to the router's own input and drew ICMP port
/// unreachable there: no flow and no DNAT took it, the outbound-only guard (at raw priority,
/// before conntrack) did not drop it first, and the input policy does not drop silently.
/// Outbound-only routers are taken as answering nothing (the guard's drops and the input's are
/// not told apart by the reason; see ARCHITECTURE.md).
fn reaches_input(nat: &sim_nat::NatBehaviour, reason: &sim_nat::DropReason) -> bool {
    use sim_nat::{DropReason as R, InputPolicy};
    match reason {
        R::InputFirewall { policy, .. } => *policy == InputPolicy::Reject,
        R::NoBinding { .. }
        | R::FilteredByAddress { .. }
        | R::FilteredByPort { .. }
        | R::BindingExpired { .. } => {
            nat.refresh == sim_nat::Refresh::Both && nat.input != InputPolicy::Drop
        }
        _ => false,
    }
}

/// Linux's ICMP rate limit per destination (`inet_peer_xrlim_allow`, `icmp_ratelimit` 1 s, a
/// burst of 6): measured, 12 unsolicited probes drew 6 ICMP errors and 6 silences.
const ICMP_INTERVAL: Duration = Duration::from_secs(1);
const ICMP_BURST: u32 = 6;

fn in_net(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It reached host `host` as `from → to` (addresses as the receiver sees them).
    Delivered {
        host: String,
        from: SocketAddrV4,
        to: SocketAddrV4,
        /// The bytes as they arrived (an ALG may have rewritten them).
        payload: Vec<u8>,
    },
    /// Router `router` dropped it, for `why` (the NAT model's reason, or the ALG's).
    Dropped { router: String, why: String },
    /// The internet core swallowed it: nobody on the public segment has that address.
    Swallowed { to: SocketAddrV4 },
    /// It reached a segment with nobody at its destination (no ARP answer).
    Unanswered { to: SocketAddrV4 },
}

/// The network (see the module docs).
pub struct Net {
    hosts: Vec<Host>,
    routers: Vec<Router>,
    /// The instant the run started, and the wall time its records are dated from.
    origin: Instant,
    wall: SystemTime,
    frames: Vec<Frame>,
    /// Public endpoints a NAT gave a flow instead of its inside port (they vary run to run on
    /// the kernel, so snapshots show placeholders for them).
    moved: Vec<SocketAddrV4>,
    /// ICMP rate-limit tokens per (router, destination) and when they were last topped up.
    icmp_tokens: std::collections::HashMap<(usize, Ipv4Addr), (Duration, Instant)>,
    /// Whether to keep frames (a property run that needs only fates turns it off).
    pub record: bool,
}

/// The wall time the model's records start at: fixed, so two runs of a file give the same pcaps.
pub const WALL_ORIGIN: Duration = Duration::from_secs(1_767_225_600);

impl Net {
    /// The network of `spec`, starting at `origin` (the NAT models see instants from it on).
    pub fn new(spec: &TopologySpec, origin: Instant) -> Result<Self> {
        let segment_of = |name: &str| -> Result<Segment> {
            if name == INTERNET {
                return Ok(Segment::Internet);
            }
            spec.routers
                .iter()
                .position(|r| r.name == name)
                .map(Segment::Lan)
                .ok_or_else(|| Error::Topology(format!("no segment `{name}`")))
        };
        let mut routers = Vec::new();
        for (i, r) in spec.routers.iter().enumerate() {
            let nat = match &r.nat {
                Some(b) => Some(
                    NatModel::new(b.clone(), r.wan, (r.lan, r.lan_prefix))
                        .and_then(|m| m.with_forwards(r.forwards.clone()))
                        .map_err(|e| Error::Topology(format!("router {}: {e}", r.name)))?
                        .with_subscribers(spec.subscribers_of(&r.name))
                        .with_seed(0x5eed + i as u64),
                ),
                None => None,
            };
            let alg = match r.nat.as_ref().map(|b| &b.sip_alg) {
                Some(SipAlg::Emulated(faults)) => Some(Alg::new(r.wan, faults.iter().copied())),
                _ => None,
            };
            routers.push(Router {
                name: r.name.clone(),
                upstream: segment_of(&r.upstream)?,
                wan: r.wan,
                lan: (r.lan, r.lan_prefix),
                nat,
                alg,
                forwards: r.forwards.clone(),
            });
        }
        let hosts = spec
            .hosts
            .iter()
            .map(|h| {
                Ok(Host {
                    name: h.name.clone(),
                    segment: segment_of(&h.segment)?,
                    addrs: h.addrs.clone(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            hosts,
            routers,
            origin,
            wall: SystemTime::UNIX_EPOCH + WALL_ORIGIN,
            frames: Vec::new(),
            moved: Vec::new(),
            icmp_tokens: std::collections::HashMap::new(),
            record: true,
        })
    }

    /// The wall time of instant `now`, as the records date it.
    pub fn wall(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.origin)
    }

    /// Every copy of every datagram so far, in the order they crossed their links.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Public endpoints NATs mapped flows to instead of their inside port.
    pub fn moved_ports(&self) -> &[SocketAddrV4] {
        &self.moved
    }

    /// Drains router `i`'s binding events, keeping the moved ports.
    fn drain_events(&mut self, i: usize) {
        let Some(m) = self.routers[i].nat.as_mut() else {
            return;
        };
        while let Some(e) = m.poll_event() {
            if let sim_nat::BindingEvent::Created {
                binding,
                opened_by: sim_nat::Side::Inside,
                ..
            } = e
            {
                if binding.external.port() != binding.internal.port() {
                    self.moved.push(binding.external);
                }
            }
        }
    }

    /// Takes the records out.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// The host that owns address `ip`.
    pub fn host_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.addrs.contains(&ip))
            .map(|h| h.name.as_str())
    }

    /// The NAT model of router `name` (for `expire-binding`, `flush-bindings`, `set-nat`).
    pub fn nat_mut(&mut self, name: &str) -> Option<&mut NatModel> {
        self.routers
            .iter_mut()
            .find(|r| r.name == name)
            .and_then(|r| r.nat.as_mut())
    }

    /// Replaces router `name`'s NAT behaviour, as `set-nat` does on the kernel (a new ruleset:
    /// conntrack keeps its entries there, which this model does not; see ARCHITECTURE.md).
    pub fn set_nat(&mut self, name: &str, nat: &sim_nat::NatBehaviour) -> Result<()> {
        let i = self
            .routers
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| Error::NoSuchNode(name.to_string()))?;
        let r = &mut self.routers[i];
        let m = NatModel::new(nat.clone(), r.wan, r.lan)?
            .with_forwards(r.forwards.clone())?
            .with_seed(0x5eed + i as u64);
        r.alg = match &nat.sip_alg {
            SipAlg::Emulated(f) => Some(Alg::new(r.wan, f.iter().copied())),
            _ => None,
        };
        r.nat = Some(m);
        Ok(())
    }

    fn record(
        &mut self,
        node: &str,
        iface: &str,
        direction: Direction,
        bytes: &[u8],
        now: Instant,
    ) {
        if self.record {
            // Every copy is dated a microsecond per copy recorded before it later than the
            // virtual instant: copies at one instant keep the order they happened in (a
            // capture's timestamps never tie along a path, and "A then B" needs B after A), and
            // a reply is never dated early against its cause, as on the kernel, where every hop
            // and every timer is a little late — the ladder's T1 rounding leans on that.
            let n = u64::try_from(self.frames.len()).unwrap_or(u64::MAX);
            let at = self.wall(now) + Duration::from_micros(n);
            self.frames.push(Frame {
                at,
                vantage: Vantage::new(node, iface),
                direction,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn record_udp(
        &mut self,
        node: &str,
        iface: &str,
        direction: Direction,
        (src, dst): (SocketAddrV4, SocketAddrV4),
        payload: &[u8],
        now: Instant,
    ) {
        if self.record {
            let bytes = wire::udp_frame(src, dst, payload);
            self.record(node, iface, direction, &bytes, now);
        }
    }

    fn segment_of_host(&self, host: &str) -> Option<Segment> {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.segment)
    }

    /// Sends `payload` from host `host`'s socket `src` to `dst` at `now` and carries it to its
    /// end: delivered, dropped by a router, swallowed by the internet or unanswered.
    pub fn send(
        &mut self,
        host: &str,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        now: Instant,
    ) -> Fate {
        let Some(mut segment) = self.segment_of_host(host) else {
            return Fate::Unanswered { to: dst };
        };
        self.record_udp(host, "eth0", Direction::Out, (src, dst), payload, now);
        let (mut src, mut dst) = (src, dst);
        let mut payload = payload.to_vec();
        // At most one pass per router in each direction, plus a hairpin: a bound on loops.
        for _ in 0..=(4 * self.routers.len() + 2) {
            // A host on this segment owns the destination.
            if let Some(h) = self
                .hosts
                .iter()
                .find(|h| h.segment == segment && h.addrs.contains(dst.ip()))
            {
                let name = h.name.clone();
                self.record_udp(&name, "eth0", Direction::In, (src, dst), &payload, now);
                return Fate::Delivered {
                    host: name,
                    from: src,
                    to: dst,
                    payload,
                };
            }
            // A router whose outside is on this segment owns the destination, or its LAN holds
            // it (a plain router forwards down; a NAT only through a binding).
            let down = self.routers.iter().position(|r| {
                r.upstream == segment
                    && (r.owns_outside(*dst.ip()) || (r.nat.is_none() && r.on_lan(*dst.ip())))
            });
            if let Some(i) = down {
                match self.inbound(i, src, dst, &mut payload, now) {
                    Ok((s, d)) => {
                        (src, dst) = (s, d);
                        segment = Segment::Lan(i);
                        continue;
                    }
                    Err(fate) => return fate,
                }
            }
            match segment {
                Segment::Internet => return Fate::Swallowed { to: dst },
                Segment::Lan(i) if self.routers[i].on_lan(*dst.ip()) => {
                    return Fate::Unanswered { to: dst };
                }
                Segment::Lan(i) => match self.outbound(i, src, dst, &mut payload, now) {
                    Ok((s, d, hairpin)) => {
                        (src, dst) = (s, d);
                        if !hairpin {
                            segment = self.routers[i].upstream;
                        }
                    }
                    Err(fate) => return fate,
                },
            }
        }
        Fate::Unanswered { to: dst }
    }

    /// Router `i` takes `src → dst` from its LAN: ALG, then NAT. `Ok((src, dst, hairpinned))`.
    fn outbound(
        &mut self,
        i: usize,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &mut Vec<u8>,
        now: Instant,
    ) -> std::result::Result<(SocketAddrV4, SocketAddrV4, bool), Fate> {
        let name = self.routers[i].name.clone();
        self.record_udp(&name, "lan", Direction::In, (src, dst), payload, now);
        if let Some(fate) = self.alg(i, AlgDirection::Outbound, src, dst, payload) {
            return Err(fate);
        }
        if self.blocked(i, src, dst) {
            return Err(Fate::Dropped {
                router: name,
                why: format!("its firewall drops UDP {src} → {dst} (blocked-udp-ports)"),
            });
        }
        let r = &mut self.routers[i];
        let (s, d) = match r.nat.as_mut() {
            None => (src, dst),
            Some(m) => match m.outbound(src, dst, now) {
                Verdict::Forward { src, dst } => {
                    self.drain_events(i);
                    (src, dst)
                }
                Verdict::Drop { reason } => {
                    self.drain_events(i);
                    return Err(Fate::Dropped {
                        router: name,
                        why: reason.to_string(),
                    });
                }
            },
        };
        if self.routers[i].on_lan(*d.ip()) {
            self.record_udp(&name, "lan", Direction::Out, (s, d), payload, now);
            return Ok((s, d, true));
        }
        self.record_udp(&name, "wan", Direction::Out, (s, d), payload, now);
        Ok((s, d, false))
    }

    /// Router `i` takes `src → dst` from its WAN: NAT, then ALG. `Ok((src, dst))` on its LAN.
    fn inbound(
        &mut self,
        i: usize,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &mut Vec<u8>,
        now: Instant,
    ) -> std::result::Result<(SocketAddrV4, SocketAddrV4), Fate> {
        let name = self.routers[i].name.clone();
        self.record_udp(&name, "wan", Direction::In, (src, dst), payload, now);
        let r = &mut self.routers[i];
        let to_lan = r.on_lan(*dst.ip());
        let (s, d) = match r.nat.as_mut() {
            None if to_lan => (src, dst),
            None => {
                // A plain router's own address: nothing listens, Linux answers ICMP.
                if self.icmp_allowed(i, *src.ip(), now) {
                    self.icmp(i, src, dst, payload, now);
                }
                return Err(Fate::Dropped {
                    router: name,
                    why: format!("nothing listens on {dst} on the router"),
                });
            }
            Some(m) => match m.inbound(src, dst, now) {
                Verdict::Forward { src, dst } => {
                    self.drain_events(i);
                    (src, dst)
                }
                Verdict::Drop { reason } => {
                    let answers = reaches_input(m.behaviour(), &reason);
                    self.drain_events(i);
                    if answers && self.icmp_allowed(i, *src.ip(), now) {
                        self.icmp(i, src, dst, payload, now);
                    }
                    return Err(Fate::Dropped {
                        router: name,
                        why: reason.to_string(),
                    });
                }
            },
        };
        if self.blocked(i, s, d) {
            return Err(Fate::Dropped {
                router: name,
                why: format!("its firewall drops UDP {s} → {d} (blocked-udp-ports)"),
            });
        }
        if let Some(fate) = self.alg(i, AlgDirection::Inbound, s, d, payload) {
            return Err(fate);
        }
        self.record_udp(&name, "lan", Direction::Out, (s, d), payload, now);
        Ok((s, d))
    }

    /// The emulated ALG of router `i` on a datagram to or from the SIP port: rewrites `payload`
    /// in place, or says it dropped it.
    fn alg(
        &mut self,
        i: usize,
        direction: AlgDirection,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &mut Vec<u8>,
    ) -> Option<Fate> {
        if src.port() != SIP_PORT && dst.port() != SIP_PORT {
            return None;
        }
        let r = &mut self.routers[i];
        let alg = r.alg.as_mut()?;
        match alg.handle_sip(direction, src, payload) {
            SipVerdict::Unchanged => None,
            SipVerdict::Rewritten(p) => {
                *payload = p;
                None
            }
            SipVerdict::Drop => Some(Fate::Dropped {
                router: r.name.clone(),
                why: format!("its SIP ALG ({}) dropped it", AlgFault::DropUnparseable),
            }),
        }
    }

    /// Router `i` answers `src → dst` with ICMP port unreachable from its WAN address. The error
    /// goes back the way the datagram came: a NAT on the way translates it as the conntrack
    /// entry it relates to (the quoted datagram's flow), so a sender behind a NAT gets it too.
    fn icmp(
        &mut self,
        i: usize,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        now: Instant,
    ) {
        if !self.record {
            return;
        }
        let r = &self.routers[i];
        let (from, mut segment) = (r.wan, r.upstream);
        let (mut src, mut bytes) = (src, wire::port_unreachable(from, src, dst, payload));
        self.record(
            &self.routers[i].name.clone(),
            "wan",
            Direction::Out,
            &bytes,
            now,
        );
        for _ in 0..=self.routers.len() {
            let host = self
                .hosts
                .iter()
                .find(|h| h.segment == segment && h.addrs.contains(src.ip()))
                .map(|h| h.name.clone());
            if let Some(h) = host {
                self.record(&h, "eth0", Direction::In, &bytes, now);
                return;
            }
            // A NAT whose outside holds the quoted source: back through its binding.
            let Some(j) = self
                .routers
                .iter()
                .position(|r| r.upstream == segment && r.owns_outside(*src.ip()))
            else {
                return;
            };
            let inside = self.routers[j].nat.as_ref().and_then(|m| {
                m.bindings(now)
                    .into_iter()
                    .find(|b| b.binding.external == src && b.binding.remote == dst)
                    .map(|b| b.binding.internal)
            });
            let name = self.routers[j].name.clone();
            self.record(&name, "wan", Direction::In, &bytes, now);
            let Some(internal) = inside else {
                return;
            };
            src = internal;
            bytes = wire::port_unreachable(from, src, dst, payload);
            self.record(&name, "lan", Direction::Out, &bytes, now);
            segment = Segment::Lan(j);
        }
    }

    /// Whether router `i` may send another ICMP error to `to` now (token bucket per
    /// destination, as the kernel's inet peer keeps it).
    fn icmp_allowed(&mut self, i: usize, to: Ipv4Addr, now: Instant) -> bool {
        let cap = ICMP_INTERVAL * ICMP_BURST;
        let (tokens, last) = self.icmp_tokens.entry((i, to)).or_insert((cap, now));
        *tokens = (*tokens + now.saturating_duration_since(*last)).min(cap);
        *last = now;
        if *tokens >= ICMP_INTERVAL {
            *tokens -= ICMP_INTERVAL;
            true
        } else {
            false
        }
    }

    /// Whether router `i`'s `blocked-udp-ports` firewall (forward hook, after DNAT and before
    /// SNAT) drops `src → dst`: either port in the range, unless a port forward opens it.
    fn blocked(&self, i: usize, src: SocketAddrV4, dst: SocketAddrV4) -> bool {
        let r = &self.routers[i];
        let Some((lo, hi)) = r.nat.as_ref().and_then(|m| m.behaviour().blocked_udp_ports) else {
            return false;
        };
        let opened = r.forwards.iter().any(|f| {
            let within = |p: u16| (f.ports.0..=f.ports.1).contains(&p);
            (*dst.ip() == f.to && within(dst.port())) || (*src.ip() == f.to && within(src.port()))
        });
        let closed = |p: u16| (lo..=hi).contains(&p);
        !opened && (closed(src.port()) || closed(dst.port()))
    }

    /// The earliest instant a NAT model wants to report a binding event.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.routers
            .iter()
            .filter_map(|r| r.nat.as_ref().and_then(NatModel::poll_timeout))
            .min()
    }

    /// Lets every NAT model expire what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.routers.len() {
            if let Some(m) = self.routers[i].nat.as_mut() {
                m.handle_timeout(now);
            }
            self.drain_events(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{HostSpec, RouterSpec};
    use sim_nat::NatType;

    fn spec(nat: NatType) -> TopologySpec {
        TopologySpec {
            routers: vec![RouterSpec {
                name: "home".into(),
                upstream: INTERNET.into(),
                wan: "203.0.113.1".parse().unwrap(),
                lan: "192.168.1.1".parse().unwrap(),
                lan_prefix: 24,
                nat: Some(nat.into()),
                forwards: Vec::new(),
                wan_mtu: None,
            }],
            hosts: vec![
                HostSpec {
                    name: "alice".into(),
                    segment: "home".into(),
                    addrs: vec!["192.168.1.10".parse().unwrap()],
                    mtu: None,
                },
                HostSpec {
                    name: "server".into(),
                    segment: INTERNET.into(),
                    addrs: vec!["203.0.113.10".parse().unwrap()],
                    mtu: None,
                },
            ],
        }
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// `host` sends one datagram `src → dst` at `t`.
    fn send(net: &mut Net, host: &str, src: &str, dst: &str, t: Instant) -> Fate {
        net.send(host, sa(src), sa(dst), b"x", t)
    }

    #[test]
    fn a_packet_out_and_its_answer_back_cross_the_nat_and_are_recorded_at_every_link() {
        let t0 = Instant::now();
        let mut net = Net::new(&spec(NatType::PortRestrictedCone), t0).unwrap();
        let out = send(
            &mut net,
            "alice",
            "192.168.1.10:5060",
            "203.0.113.10:5060",
            t0,
        );
        assert_eq!(
            out,
            Fate::Delivered {
                host: "server".into(),
                from: sa("203.0.113.1:5060"),
                to: sa("203.0.113.10:5060"),
                payload: b"x".to_vec(),
            }
        );
        let back = send(
            &mut net,
            "server",
            "203.0.113.10:5060",
            "203.0.113.1:5060",
            t0,
        );
        assert!(matches!(back, Fate::Delivered { ref host, .. } if host == "alice"));
        let labels: Vec<String> = net.frames().iter().map(|f| f.vantage.label()).collect();
        assert_eq!(
            labels,
            [
                "alice", "home:lan", "home:wan", "server", "server", "home:wan", "home:lan",
                "alice"
            ]
        );
    }

    #[test]
    fn the_internet_swallows_a_private_address_and_a_router_answers_icmp_for_an_unbound_port() {
        let t0 = Instant::now();
        let mut net = Net::new(&spec(NatType::PortRestrictedCone), t0).unwrap();
        let lost = send(
            &mut net,
            "server",
            "203.0.113.10:5060",
            "192.168.1.10:5060",
            t0,
        );
        assert_eq!(
            lost,
            Fate::Swallowed {
                to: sa("192.168.1.10:5060")
            }
        );
        assert_eq!(net.frames().len(), 1, "only the sender's copy");
        let kept = send(
            &mut net,
            "server",
            "203.0.113.10:5060",
            "203.0.113.1:4000",
            t0,
        );
        assert!(matches!(kept, Fate::Dropped { .. }));
        let icmp = crate::trace::Trace::from_frames(net.frames())
            .entries()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    crate::trace::Entry::Packet {
                        payload: crate::trace::Payload::Icmp(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(icmp, 2, "leaving home:wan and reaching the server");
    }

    #[test]
    fn a_binding_expires_after_the_nat_timeout() {
        let t0 = Instant::now();
        let mut nat: sim_nat::NatBehaviour = NatType::PortRestrictedCone.into();
        nat.udp_timeout_secs = 2;
        let mut s = spec(NatType::PortRestrictedCone);
        s.routers[0].nat = Some(nat);
        let mut net = Net::new(&s, t0).unwrap();
        let (a, b) = (sa("192.168.1.10:5060"), sa("203.0.113.10:5060"));
        let _ = net.send("alice", a, b, b"x", t0);
        let pub_a = sa("203.0.113.1:5060");
        let t = t0 + Duration::from_millis(1900);
        assert!(matches!(
            net.send("server", b, pub_a, b"y", t),
            Fate::Delivered { .. }
        ));
        let t = t + Duration::from_millis(2100);
        assert!(matches!(
            net.send("server", b, pub_a, b"y", t),
            Fate::Dropped { .. }
        ));
    }
}
