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
use std::time::{Instant, SystemTime};

use sim_nat::{NatBehaviour, NatModel, PortForward};

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

/// Every drop at `router`, explained: `(when, router, text)`.
pub fn router_drops(frames: &[Frame], r: &Router) -> Vec<(SystemTime, String, String)> {
    drops(frames, r)
        .into_iter()
        .map(|d| (d.at, d.router, d.text))
        .collect()
}

/// Every drop at `router`, explained, as data (a probe looks its own datagrams up in them).
pub fn drops(frames: &[Frame], r: &Router) -> Vec<Dropped> {
    let lan_in = at_side(frames, &r.name, "lan", Direction::In);
    let lan_out = at_side(frames, &r.name, "lan", Direction::Out);
    let wan_in = at_side(frames, &r.name, "wan", Direction::In);
    let wan_out = at_side(frames, &r.name, "wan", Direction::Out);
    // Outbound: from the LAN to beyond it. SNAT changes only the source.
    let outbound: Vec<Seen> = lan_in
        .into_iter()
        .filter(|s| !in_net(*s.dst.ip(), r.lan))
        .collect();
    let out_to_wan = cross(&outbound, &wan_out, |s| s.dst);
    // Inbound: to the public address. DNAT changes only the destination.
    let inbound: Vec<Seen> = wan_in
        .into_iter()
        .filter(|s| *s.dst.ip() == r.public)
        .collect();
    let in_to_lan = cross(&inbound, &lan_out, |s| s.src);

    let Ok(model) = NatModel::new(r.nat.clone(), r.public, r.lan) else {
        return Vec::new();
    };
    let Ok(model) = model
        .with_subscribers(r.subscribers.clone())
        .with_forwards(r.forwards.clone())
    else {
        return Vec::new();
    };
    let mut model = model;
    let origin = Instant::now();
    let start = outbound
        .iter()
        .chain(&inbound)
        .map(|s| s.at)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let instant = |t: SystemTime| origin + t.duration_since(start).unwrap_or_default();
    let mut order: Vec<(SystemTime, bool, usize)> = (0..outbound.len())
        .map(|i| (outbound[i].at, false, i))
        .chain((0..inbound.len()).map(|i| (inbound[i].at, true, i)))
        .collect();
    order.sort();
    // The kernel's external port → the model's (they differ where the NAT picks ports).
    let mut port_of: HashMap<u16, u16> = HashMap::new();
    let mut out = Vec::new();
    for (at, is_inbound, i) in order {
        let now = instant(at);
        if !is_inbound {
            let s = &outbound[i];
            let v = model.outbound(s.src, s.dst, now);
            match (out_to_wan[i], v.forwarded()) {
                (Some(j), Some((mapped, _))) => {
                    port_of.insert(wan_out[j].src.port(), mapped.port());
                }
                (Some(_), None) | (None, Some(_)) => {}
                (None, None) => {
                    let why = v.drop_reason().map(ToString::to_string).unwrap_or_default();
                    out.push(Dropped {
                        at,
                        router: r.name.clone(),
                        src: s.src,
                        dst: s.dst,
                        text: format!(
                            "dropped {} from {} to {}: {why}",
                            summary(s.frame),
                            s.src,
                            s.dst
                        ),
                        why,
                    })
                }
            }
            continue;
        }
        let s = &inbound[i];
        let to = SocketAddrV4::new(
            r.public,
            port_of.get(&s.dst.port()).copied().unwrap_or(s.dst.port()),
        );
        let v = model.inbound(s.src, to, now);
        if in_to_lan[i].is_some() {
            continue;
        }
        let why = match v.drop_reason() {
            Some(reason) => reason.to_string(),
            // The NAT would have let it in: something else on the router took it (an ALG).
            None => "not by its NAT, which would have forwarded it (its SIP ALG?)".into(),
        };
        out.push(Dropped {
            at,
            router: r.name.clone(),
            src: s.src,
            dst: s.dst,
            text: format!(
                "dropped {} from {} to {}: {why}",
                summary(s.frame),
                s.src,
                s.dst
            ),
            why,
        });
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Vantage;
    use std::time::Duration;

    fn udp(iface: &str, direction: Direction, ms: u64, src: &str, dst: &str) -> Frame {
        let (src, dst): (SocketAddrV4, SocketAddrV4) = (src.parse().unwrap(), dst.parse().unwrap());
        let payload = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src.ip().octets());
        ip.extend_from_slice(&dst.ip().octets());
        b.extend_from_slice(&ip);
        b.extend_from_slice(&src.port().to_be_bytes());
        b.extend_from_slice(&dst.port().to_be_bytes());
        b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&payload);
        Frame {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms),
            vantage: Vantage::new("office", iface),
            direction,
            bytes: b,
        }
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
