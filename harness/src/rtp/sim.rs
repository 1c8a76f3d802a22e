//! Test-only virtual Internet: endpoints (any [`Machine`]) on public or private addresses, NAT
//! routers that are `sim_nat::NatModel`s (the reference model of the kernel's NAT), zero
//! latency, and a virtual clock stepped to the earliest deadline (str0m's `progress`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use sim_nat::{NatBehaviour, NatModel};

use crate::rtp::Machine;
use crate::stun::Transmit;

/// A machine with its events left to the test: what the network needs of an endpoint.
pub(crate) trait Endpoint {
    fn deliver(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant);
    fn fire(&mut self, now: Instant);
    fn next_transmit(&mut self) -> Option<Transmit>;
    fn deadline(&self) -> Option<Instant>;
    fn locals(&self) -> Vec<SocketAddr>;
}

impl<M: Machine> Endpoint for M {
    fn deliver(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.handle_datagram(local, from, bytes, now);
    }
    fn fire(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn next_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit()
    }
    fn deadline(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn locals(&self) -> Vec<SocketAddr> {
        self.local_addresses()
    }
}

struct Router {
    model: NatModel,
    net: u32,
    mask: u32,
}

impl Router {
    fn inside(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => u32::from(ip) & self.mask == self.net,
            IpAddr::V6(_) => false,
        }
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The virtual Internet (see the module docs).
pub(crate) struct Net {
    pub now: Instant,
    routers: Vec<Router>,
    /// Every datagram that did not arrive, and why.
    pub dropped: Vec<(Transmit, String)>,
    pub delivered: u64,
}

impl Net {
    pub(crate) fn new() -> Self {
        let start = Instant::now();
        Self {
            now: start,
            routers: Vec::new(),
            dropped: Vec::new(),
            delivered: 0,
        }
    }

    /// Adds a NAT router with public address `public` in front of `inside` (e.g. 192.168.1.0/24).
    pub(crate) fn nat(
        mut self,
        behaviour: impl Into<NatBehaviour>,
        public: &str,
        inside: &str,
    ) -> Self {
        let (net, prefix) = inside.split_once('/').expect("inside as a.b.c.d/len");
        let net: Ipv4Addr = net.parse().unwrap();
        let prefix: u8 = prefix.parse().unwrap();
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let model = NatModel::new(behaviour.into(), public.parse().unwrap(), (net, prefix))
            .unwrap()
            .with_seed(0x5eed + self.routers.len() as u64);
        self.routers.push(Router {
            model,
            net: u32::from(net) & mask,
            mask,
        });
        self
    }

    /// Where a datagram sent as `t` arrives: `(from, to)` as the receiver sees them.
    fn route(&mut self, t: &Transmit) -> Result<(SocketAddr, SocketAddr), String> {
        let now = self.now;
        let (mut src, dst) = (t.source, t.destination);
        let here = self.routers.iter().position(|r| r.inside(src.ip()));
        if let Some(i) = here {
            if self.routers[i].inside(dst.ip()) {
                return Ok((src, dst));
            }
            let (Some(s), Some(d)) = (v4(src), v4(dst)) else {
                return Err("IPv6 through an IPv4 NAT".into());
            };
            match self.routers[i].model.outbound(s, d, now) {
                sim_nat::Verdict::Forward { src: s2, .. } => src = SocketAddr::V4(s2),
                sim_nat::Verdict::Drop { reason } => return Err(format!("outbound: {reason}")),
            }
        }
        let public = |r: &Router| IpAddr::V4(r.model.public()) == dst.ip();
        if let Some(j) = self.routers.iter().position(public) {
            let (Some(s), Some(d)) = (v4(src), v4(dst)) else {
                return Err("IPv6 through an IPv4 NAT".into());
            };
            return match self.routers[j].model.inbound(s, d, now) {
                sim_nat::Verdict::Forward { dst: d2, .. } => Ok((src, SocketAddr::V4(d2))),
                sim_nat::Verdict::Drop { reason } => Err(format!("inbound: {reason}")),
            };
        }
        if self.routers.iter().any(|r| r.inside(dst.ip())) {
            return Err(format!(
                "{dst} is a private address behind another NAT: not routable on the Internet"
            ));
        }
        Ok((src, dst))
    }

    /// Delivers datagrams until nobody has anything to send.
    pub(crate) fn flush(&mut self, endpoints: &mut [&mut dyn Endpoint]) {
        loop {
            let mut moved = false;
            for i in 0..endpoints.len() {
                while let Some(t) = endpoints[i].next_transmit() {
                    moved = true;
                    let (from, to) = match self.route(&t) {
                        Ok(x) => x,
                        Err(why) => {
                            self.dropped.push((t, why));
                            continue;
                        }
                    };
                    let owner = endpoints.iter().position(|e| e.locals().contains(&to));
                    match owner {
                        Some(k) => {
                            self.delivered += 1;
                            endpoints[k].deliver(to, from, &t.payload, self.now);
                        }
                        None => self.dropped.push((t, format!("nobody listens on {to}"))),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs every deadline up to `now + duration`, then parks the clock there.
    pub(crate) fn run_for(&mut self, endpoints: &mut [&mut dyn Endpoint], duration: Duration) {
        let deadline = self.now + duration;
        loop {
            self.flush(endpoints);
            let next = endpoints.iter().filter_map(|e| e.deadline()).min();
            match next {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    for e in endpoints.iter_mut() {
                        if e.deadline().is_some_and(|d| d <= self.now) {
                            e.fire(self.now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = deadline;
    }

    /// The address a STUN server at `server` would see for `internal`: sends one packet through
    /// `internal`'s NAT, as a Binding request would, and returns its source after translation.
    pub(crate) fn stun_mapped(&mut self, internal: SocketAddr, server: SocketAddr) -> SocketAddr {
        let t = Transmit {
            source: internal,
            destination: server,
            payload: Vec::new(),
        };
        self.route(&t).expect("the STUN server is reachable").0
    }

    /// How many drops match `what`.
    pub(crate) fn drops(&self, what: &str) -> usize {
        self.dropped
            .iter()
            .filter(|(_, w)| w.contains(what))
            .count()
    }
}
