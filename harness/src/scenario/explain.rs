//! Why a packet vanished in a kernel run: every packet that entered a NAT router and did not
//! leave it gets the reason `sim_nat::NatModel` gives when fed the same packets at the instants
//! the router's capture saw them, and a packet a public host sent to a private address is named
//! as what the internet does with it. The ladder shows these as events at the router (or host),
//! so a dropped INVITE reads "binding 192.168.1.10:5060 → 203.0.113.1:5060 expired 1.2 s before
//! this packet" instead of just stopping.
//!
//! No IO: captured frames and the topology's description in, dated events out. The model is
//! only asked about routers whose behaviour the run did not change, flush or expire mid-way (it
//! would be asked about a router that no longer exists); those routers' drops stay unexplained
//! rather than explained wrongly.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use sim_nat::{Binding, BindingEvent, DropReason, NatBehaviour, NatModel, PortForward, Side};

use crate::capture::{Direction, Frame};
use crate::trace::{decode_frame, udp_of, Entry};

/// A NAT router as the explanation needs it.
#[derive(Debug, Clone)]
pub struct Router {
    pub name: String,
    pub nat: NatBehaviour,
    pub public: Ipv4Addr,
    /// The LAN's address and prefix length.
    pub lan: (Ipv4Addr, u8),
    pub subscribers: Vec<Ipv4Addr>,
    /// Its static port forwards: what they let in is no drop.
    pub forwards: Vec<PortForward>,
}

/// One UDP datagram at one side of a router.
struct Seen<'a> {
    at: SystemTime,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &'a [u8],
    frame: &'a Frame,
}

fn at_side<'a>(frames: &'a [Frame], router: &str, iface: &str, dir: Direction) -> Vec<Seen<'a>> {
    frames
        .iter()
        .filter(|f| f.vantage.node == router && f.vantage.iface == iface && f.direction == dir)
        .filter_map(|f| {
            let (src, dst, payload) = udp_of(f)?;
            Some(Seen {
                at: f.at,
                src,
                dst,
                payload,
                frame: f,
            })
        })
        .collect()
}

/// For each of `from` (one side of the router), the copy in `to` (the other side) that is the
/// same datagram. The router drops but never reorders, and both sides are stamped by the kernel,
/// so a copy leaves after it came in and before the next like it came in: the first unused one
/// with the same bytes in those bounds, or — for a datagram the router rewrote (an ALG, the
/// kernel's helper) — with the same `key` (the address NAT leaves alone). No time window: a
/// softirq deferred under load delays the copy, it does not lose it.
fn cross(from: &[Seen], to: &[Seen], key: impl Fn(&Seen) -> SocketAddrV4) -> Vec<Option<usize>> {
    let mut used = vec![false; to.len()];
    from.iter()
        .enumerate()
        .map(|(i, a)| {
            let find = |same: &dyn Fn(&Seen) -> bool| {
                let next = from[i + 1..].iter().find(|n| same(n)).map(|n| n.at);
                to.iter().enumerate().position(|(j, b)| {
                    !used[j] && b.at >= a.at && next.is_none_or(|n| b.at < n) && same(b)
                })
            };
            let hit = find(&|b: &Seen| b.payload == a.payload)
                .or_else(|| find(&|b: &Seen| key(b) == key(a)));
            if let Some(j) = hit {
                used[j] = true;
            }
            hit
        })
        .collect()
}

fn summary(f: &Frame) -> String {
    match decode_frame(f) {
        Some(Entry::Packet { payload, .. }) => {
            let s = payload.summary();
            s.strip_suffix(" SIP/2.0").map(str::to_string).unwrap_or(s)
        }
        _ => "a datagram".into(),
    }
}

fn in_net(a: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    u32::from(a) & mask == u32::from(net) & mask
}

/// Every drop at `router`, explained: `(when, router, text)`.
pub fn router_drops(frames: &[Frame], r: &Router) -> Vec<(SystemTime, String, String)> {
    router_story(frames, r)
        .drops
        .into_iter()
        .map(|d| (d.at, r.name.clone(), d.to_string()))
        .collect()
}

/// A datagram that entered a router and did not leave it, with the model's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub at: SystemTime,
    pub router: String,
    /// The datagram as it entered the router.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The ladder's line: what was dropped, from and to whom, and why.
    pub text: String,
    /// The reason alone.
    pub why: String,
}

impl Dropped {
    /// One of a [`RouterStory`]'s drops, at `router`.
    pub fn of(router: &str, d: Drop) -> Self {
        Dropped {
            at: d.at,
            router: router.to_string(),
            src: d.src,
            dst: d.dst,
            text: d.to_string(),
            why: match &d.reason {
                Some(reason) => reason.to_string(),
                None => "not by its NAT, which would have forwarded it (its SIP ALG?)".into(),
            },
        }
    }
}

/// Every drop at `router`, explained, as data (a probe looks its own datagrams up in them).
pub fn drops(frames: &[Frame], r: &Router) -> Vec<Dropped> {
    router_story(frames, r)
        .drops
        .into_iter()
        .map(|d| Dropped::of(&r.name, d))
        .collect()
}

/// What the model of one router saw: each binding's life (created, refreshed, expired) and
/// each packet the router dropped with the reason. The run report draws it as the router's
/// binding timeline; the ladder shows the drops as events.
#[derive(Debug, Clone)]
pub struct RouterStory {
    pub router: String,
    /// The router's UDP binding timeout.
    pub timeout: Duration,
    /// In time order.
    pub changes: Vec<Change>,
    /// In time order.
    pub drops: Vec<Drop>,
}

/// Something the model says happened to a binding, at the instant the router's capture puts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub at: SystemTime,
    pub what: ChangeKind,
    /// The datagram that caused it (`src → dst` as it entered the router), if a packet did.
    pub packet: Option<(SocketAddrV4, SocketAddrV4)>,
}

/// [`sim_nat::BindingEvent`] with wall-clock instants.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// `displaced_from`: port preservation wanted this port, but its tuple was taken.
    Created {
        binding: Binding,
        opened_by: Side,
        displaced_from: Option<u16>,
    },
    Refreshed {
        binding: Binding,
        by: Side,
    },
    /// Timed out, `timeout` after its last packet.
    Expired {
        binding: Binding,
    },
    Removed {
        binding: Binding,
    },
    /// An inbound packet nothing admitted holds `to` towards `from` until it times out.
    UnsolicitedHeld {
        from: SocketAddrV4,
        to: SocketAddrV4,
    },
    UnsolicitedReleased {
        from: SocketAddrV4,
        to: SocketAddrV4,
    },
}

/// A datagram that entered the router and did not leave it, and why (the model's reason, or
/// `None` when the model would have forwarded it: something else on the router took it).
#[derive(Debug, Clone, PartialEq)]
pub struct Drop {
    pub at: SystemTime,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// What the datagram was (`INVITE sip:bob@…`, `RTP PT 0`).
    pub what: String,
    pub reason: Option<DropReason>,
}

impl Drop {
    /// The binding the reason names, if it names one.
    pub fn binding(&self) -> Option<Binding> {
        match self.reason.as_ref()? {
            DropReason::BindingExpired { binding, .. }
            | DropReason::FilteredByAddress { binding, .. }
            | DropReason::FilteredByPort { binding, .. }
            | DropReason::OutboundIdle { binding, .. } => Some(*binding),
            _ => None,
        }
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dropped {} from {} to {}: ",
            self.what, self.src, self.dst
        )?;
        match &self.reason {
            Some(reason) => write!(f, "{reason}"),
            None => f.write_str("not by its NAT, which would have forwarded it (its SIP ALG?)"),
        }
    }
}

/// Feeds the model of `r` the packets its capture saw cross it (see the module docs).
pub fn router_story(frames: &[Frame], r: &Router) -> RouterStory {
    let mut story = RouterStory {
        router: r.name.clone(),
        timeout: Duration::from_secs(r.nat.udp_timeout_secs.into()),
        changes: Vec::new(),
        drops: Vec::new(),
    };
    let Some(model) = model_of(r) else {
        return story;
    };
    let c = crossings(frames, r);
    let start = c.outbound.iter().map(|(s, _)| s.at);
    let start = start.chain(c.inbound.iter().map(|(s, _)| s.at)).min();
    let mut replay = Replay {
        model,
        origin: Instant::now(),
        start: start.unwrap_or(SystemTime::UNIX_EPOCH),
        port_of: HashMap::new(),
    };
    let mut order: Vec<(SystemTime, bool, usize)> = (c.outbound.iter().enumerate())
        .map(|(i, (s, _))| (s.at, false, i))
        .chain(
            c.inbound
                .iter()
                .enumerate()
                .map(|(i, (s, _))| (s.at, true, i)),
        )
        .collect();
    order.sort();
    for (_, is_inbound, i) in order {
        match is_inbound {
            false => replay.outbound(&c.outbound[i], &mut story),
            true => replay.inbound(&c.inbound[i], r.public, &mut story),
        }
    }
    // Bindings that timed out after the last packet but before the capture ended.
    if let Some(end) = frames.iter().map(|f| f.at).max() {
        let now = replay.instant(end);
        replay.model.handle_timeout(now);
        replay.drain(None, &mut story.changes);
    }
    // A timed-out binding's event comes with the packet that let time pass, after its instant.
    story.changes.sort_by_key(|c| c.at);
    story
}

/// `r`'s NAT as the model runs it; `None` if the model refuses its behaviour.
fn model_of(r: &Router) -> Option<NatModel> {
    let model = NatModel::new(r.nat.clone(), r.public, r.lan).ok()?;
    model
        .with_subscribers(r.subscribers.clone())
        .with_forwards(r.forwards.clone())
        .ok()
}

/// The datagrams that entered a router to cross it, each way, in capture order.
struct Crossings<'a> {
    /// From the LAN to beyond it, each with the source port its copy left the WAN side from
    /// (`None`: it never left). SNAT changes only the source.
    outbound: Vec<(Seen<'a>, Option<u16>)>,
    /// To the public address, each with whether a copy left the LAN side. DNAT changes only the
    /// destination.
    inbound: Vec<(Seen<'a>, bool)>,
}

fn crossings<'a>(frames: &'a [Frame], r: &Router) -> Crossings<'a> {
    let side = |iface, dir| at_side(frames, &r.name, iface, dir);
    let (lan_out, wan_out) = (side("lan", Direction::Out), side("wan", Direction::Out));
    let outbound: Vec<Seen> = side("lan", Direction::In)
        .into_iter()
        .filter(|s| !in_net(*s.dst.ip(), r.lan))
        .collect();
    let inbound: Vec<Seen> = side("wan", Direction::In)
        .into_iter()
        .filter(|s| *s.dst.ip() == r.public)
        .collect();
    let out_to_wan = cross(&outbound, &wan_out, |s| s.dst);
    let in_to_lan = cross(&inbound, &lan_out, |s| s.src);
    let left_wan = out_to_wan
        .into_iter()
        .map(|j| j.map(|j| wan_out[j].src.port()));
    Crossings {
        outbound: outbound.into_iter().zip(left_wan).collect(),
        inbound: inbound
            .into_iter()
            .zip(in_to_lan.into_iter().map(|j| j.is_some()))
            .collect(),
    }
}

/// A router's model fed its crossings on the model's own clock.
struct Replay {
    model: NatModel,
    /// The model's clock reads `origin` at the capture's first crossing, `start`.
    origin: Instant,
    start: SystemTime,
    /// The kernel's external port → the model's (they differ where the NAT picks ports).
    port_of: HashMap<u16, u16>,
}

impl Replay {
    fn instant(&self, t: SystemTime) -> Instant {
        self.origin + t.duration_since(self.start).unwrap_or_default()
    }

    /// The model's events so far, dated on the capture's clock.
    fn drain(&mut self, packet: Option<(SocketAddrV4, SocketAddrV4)>, changes: &mut Vec<Change>) {
        let (origin, start) = (self.origin, self.start);
        while let Some(e) = self.model.poll_event() {
            changes.push(change(e, packet, |i| {
                start + i.saturating_duration_since(origin)
            }));
        }
    }

    fn outbound(&mut self, (s, left): &(Seen, Option<u16>), story: &mut RouterStory) {
        let v = self.model.outbound(s.src, s.dst, self.instant(s.at));
        self.drain(Some((s.src, s.dst)), &mut story.changes);
        match (left, v.forwarded()) {
            (Some(port), Some((mapped, _))) => {
                self.port_of.insert(*port, mapped.port());
            }
            (Some(_), None) | (None, Some(_)) => {}
            (None, None) => story.drops.push(dropped(s, v.drop_reason())),
        }
    }

    fn inbound(&mut self, (s, left): &(Seen, bool), public: Ipv4Addr, story: &mut RouterStory) {
        let port = self.port_of.get(&s.dst.port()).copied();
        let to = SocketAddrV4::new(public, port.unwrap_or(s.dst.port()));
        let v = self.model.inbound(s.src, to, self.instant(s.at));
        self.drain(Some((s.src, s.dst)), &mut story.changes);
        if !left {
            story.drops.push(dropped(s, v.drop_reason()));
        }
    }
}

fn dropped(s: &Seen, reason: Option<&DropReason>) -> Drop {
    Drop {
        at: s.at,
        src: s.src,
        dst: s.dst,
        what: summary(s.frame),
        reason: reason.cloned(),
    }
}

/// Expiries are dated by the model, not by the packet that made it notice them.
fn change(
    e: BindingEvent,
    packet: Option<(SocketAddrV4, SocketAddrV4)>,
    wall: impl Fn(Instant) -> SystemTime,
) -> Change {
    let (at, what, packet) = match e {
        BindingEvent::Created {
            binding,
            opened_by,
            at,
            displaced_from,
        } => (
            at,
            ChangeKind::Created {
                binding,
                opened_by,
                displaced_from,
            },
            packet,
        ),
        BindingEvent::Refreshed {
            binding, by, at, ..
        } => (at, ChangeKind::Refreshed { binding, by }, packet),
        BindingEvent::Expired { binding, at, .. } => (at, ChangeKind::Expired { binding }, None),
        BindingEvent::Removed { binding, at } => (at, ChangeKind::Removed { binding }, None),
        BindingEvent::UnsolicitedHeld { from, to, at, .. } => {
            (at, ChangeKind::UnsolicitedHeld { from, to }, packet)
        }
        BindingEvent::UnsolicitedReleased { from, to, at } => {
            (at, ChangeKind::UnsolicitedReleased { from, to }, None)
        }
    };
    Change {
        at: wall(at),
        what,
        packet,
    }
}

/// A private address per RFC 1918, RFC 6598 (carrier-grade NAT) or RFC 3927 (link-local).
pub fn is_private(a: Ipv4Addr) -> bool {
    a.is_private() || a.is_link_local() || in_net(a, (Ipv4Addr::new(100, 64, 0, 0), 10))
}

/// What public hosts sent to private addresses: the internet swallows it, without an ICMP error.
pub fn swallowed(
    frames: &[Frame],
    public_hosts: &BTreeSet<String>,
) -> Vec<(SystemTime, String, String)> {
    frames
        .iter()
        .filter(|f| f.direction == Direction::Out && public_hosts.contains(&f.vantage.node))
        .filter_map(|f| {
            let (src, dst, _) = udp_of(f)?;
            is_private(*dst.ip()).then(|| {
                (
                    f.at,
                    f.vantage.node.clone(),
                    format!(
                        "sent {} from {src} to {dst}: a private address, which the internet \
                         swallows (no route, no ICMP error)",
                        summary(f)
                    ),
                )
            })
        })
        .collect()
}

/// The NAT routers of `s` as the explanation needs them, upstream first (the order the lab
/// builds them in), leaving out those the timeline changes, flushes or expires: one of those
/// is left unexplained rather than explained wrongly.
pub fn modelled_routers(s: &super::Scenario) -> Vec<Router> {
    let touched: BTreeSet<&str> = s
        .file
        .steps
        .iter()
        .filter_map(|step| match step.get_ref() {
            super::Step::SetNat { router, .. }
            | super::Step::ExpireBinding { router, .. }
            | super::Step::FlushBindings { router } => Some(router.as_str()),
            _ => None,
        })
        .collect();
    let spec = &s.topology;
    spec.routers_upstream_first()
        .into_iter()
        .filter(|r| !touched.contains(r.name.as_str()))
        .filter_map(|r| {
            Some(Router {
                name: r.name.clone(),
                nat: r.nat.clone()?,
                public: r.wan,
                lan: (r.lan, r.lan_prefix),
                subscribers: spec.subscribers_of(&r.name),
                forwards: r.forwards.clone(),
            })
        })
        .collect()
}

/// What the model of each of `s`'s modelled routers saw in `frames`.
pub fn stories(s: &super::Scenario, frames: &[Frame]) -> Vec<RouterStory> {
    modelled_routers(s)
        .iter()
        .map(|r| router_story(frames, r))
        .collect()
}

/// Every packet one of `s`'s modelled routers kept, with its model's reason.
pub fn kept(s: &super::Scenario, frames: &[Frame]) -> Vec<Dropped> {
    stories(s, frames)
        .into_iter()
        .flat_map(|st| {
            let router = st.router.clone();
            st.drops.into_iter().map(move |d| Dropped::of(&router, d))
        })
        .collect()
}

/// Why each packet that vanished did, as ladder events `(when, where, why)`: the modelled
/// routers' drops, and what public hosts sent to private addresses; with the routers' stories
/// for the run report's binding timelines.
pub fn vanished(
    s: &super::Scenario,
    frames: &[Frame],
) -> (Vec<(SystemTime, String, String)>, Vec<RouterStory>) {
    let stories = stories(s, frames);
    let mut out: Vec<(SystemTime, String, String)> = stories
        .iter()
        .flat_map(|st| {
            st.drops
                .iter()
                .map(|d| (d.at, st.router.clone(), d.to_string()))
        })
        .collect();
    let public_hosts = s
        .topology
        .hosts
        .iter()
        .filter(|h| h.segment == crate::topology::INTERNET)
        .map(|h| h.name.clone())
        .collect();
    out.extend(swallowed(frames, &public_hosts));
    (out, stories)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Vantage;
    use std::time::Duration;

    fn udp(iface: &str, direction: Direction, ms: u64, src: &str, dst: &str) -> Frame {
        crate::capture::udp_frame(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms),
            Vantage::new("office", iface),
            direction,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            &[0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7],
        )
    }

    fn office(forwards: Vec<PortForward>) -> Router {
        Router {
            name: "office".into(),
            nat: sim_nat::NatType::PortRestrictedCone.behaviour(),
            public: Ipv4Addr::new(203, 0, 113, 1),
            lan: (Ipv4Addr::new(192, 168, 1, 0), 24),
            subscribers: Vec::new(),
            forwards,
        }
    }

    fn forward() -> Vec<PortForward> {
        vec![PortForward::udp(
            10000,
            20000,
            Ipv4Addr::new(192, 168, 1, 20),
        )]
    }

    #[test]
    fn a_forwarded_first_packet_and_its_answer_are_no_drop() {
        let frames = [
            udp(
                "wan",
                Direction::In,
                0,
                "198.51.100.20:4000",
                "203.0.113.1:10000",
            ),
            udp(
                "lan",
                Direction::Out,
                1,
                "198.51.100.20:4000",
                "192.168.1.20:10000",
            ),
            udp(
                "lan",
                Direction::In,
                20,
                "192.168.1.20:10000",
                "198.51.100.20:4000",
            ),
            udp(
                "wan",
                Direction::Out,
                21,
                "203.0.113.1:10000",
                "198.51.100.20:4000",
            ),
            udp(
                "wan",
                Direction::In,
                40,
                "198.51.100.20:4000",
                "203.0.113.1:10000",
            ),
            udp(
                "lan",
                Direction::Out,
                41,
                "198.51.100.20:4000",
                "192.168.1.20:10000",
            ),
        ];
        assert!(router_drops(&frames, &office(forward())).is_empty());
    }

    #[test]
    fn a_packet_to_a_forwarded_port_the_kernel_lost_is_not_blamed_on_the_nat() {
        let frames = [udp(
            "wan",
            Direction::In,
            0,
            "198.51.100.20:4000",
            "203.0.113.1:10000",
        )];
        let with = router_drops(&frames, &office(forward()));
        assert!(with[0].2.contains("not by its NAT"), "{with:?}");
        let without = router_drops(&frames, &office(Vec::new()));
        assert!(
            without[0]
                .2
                .contains("nothing is bound to 203.0.113.1:10000"),
            "{without:?}"
        );
    }
}
