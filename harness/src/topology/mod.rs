//! Topologies of namespaces: the public internet, routers (NAT or not) with their LANs, and hosts.
//!
//! Shape of what gets built, for a home LAN:
//!
//! ```text
//!  alice (eth0 192.168.1.10) ──────── lan (192.168.1.1)  home  wan (203.0.113.1) ── p1 ┐
//!                                                                                      inet (bridge, .254, internet core)
//!                                          stun (eth0 203.0.113.10, .11) ── p2 ───────┘
//! ```
//!
//! A segment with several members is a Linux bridge, so hosts on it talk at layer 2 as on a real
//! LAN or exchange; a segment with one member is the veth alone, its far end named as the bridge
//! would be (`lan`, `inet`). The internet core routes between public /24s and swallows anything
//! else (a blackhole default route, no ICMP), as the internet does with a leaked private address;
//! see `shared/kernel-facts.md` for why neither "no route" nor a local blackhole would do.

mod bring_up;
mod nft;
mod node;
mod pool;
pub mod shapes;
mod spec;
mod timeline;

use std::net::Ipv4Addr;
use std::sync::Once;

pub use node::{NatHistory, Node, Role};
pub use pool::{Pool, PoolCounts, Reset};
use sim_nat::NatBehaviour;
pub use spec::{
    public_gateway, HostSpec, RouterSpec, TopologySpec, DOCUMENTATION_RANGES, INTERNET,
    PUBLIC_GATEWAY_OCTET,
};

use timeline::Recorder;
pub use timeline::{Stage, StageEvent, Timeline};

use crate::error::{Error, Result};
use crate::names::RunId;
use crate::{preflight, reaper, registry};

/// Builds a [`TopologySpec`] in code; reads like the picture it describes.
#[derive(Debug, Default, Clone)]
pub struct TopologyBuilder {
    spec: TopologySpec,
    errors: Vec<String>,
}

fn parse_addr(s: &str, errors: &mut Vec<String>) -> Ipv4Addr {
    s.parse().unwrap_or_else(|_| {
        errors.push(format!("`{s}` is not an IPv4 address"));
        Ipv4Addr::UNSPECIFIED
    })
}

fn parse_cidr(s: &str, errors: &mut Vec<String>) -> (Ipv4Addr, u8) {
    match s.split_once('/') {
        Some((a, p)) => match p.parse::<u8>() {
            Ok(p) => (parse_addr(a, errors), p),
            Err(_) => {
                errors.push(format!("`{s}`: prefix length `{p}` is not a number"));
                (Ipv4Addr::UNSPECIFIED, 24)
            }
        },
        None => (parse_addr(s, errors), 24),
    }
}

impl TopologyBuilder {
    /// A NAT router whose WAN is on the internet: `nat("home", NatType::FullCone, "203.0.113.1",
    /// "192.168.1.1/24")`.
    pub fn nat(self, name: &str, nat: impl Into<NatBehaviour>, wan: &str, lan: &str) -> Self {
        self.nat_behind(name, INTERNET, nat, wan, lan)
    }

    /// A NAT router whose WAN is on another router's LAN (home router behind a carrier NAT).
    pub fn nat_behind(
        mut self,
        name: &str,
        upstream: &str,
        nat: impl Into<NatBehaviour>,
        wan: &str,
        lan: &str,
    ) -> Self {
        let wan = parse_addr(wan, &mut self.errors);
        let (lan, lan_prefix) = parse_cidr(lan, &mut self.errors);
        self.spec.routers.push(RouterSpec {
            name: name.into(),
            upstream: upstream.into(),
            wan,
            lan,
            lan_prefix,
            nat: Some(nat.into()),
            forwards: Vec::new(),
            wan_mtu: None,
        });
        self
    }

    /// A static port forward on router `router` (declared before): its WAN ports `lo..=hi`
    /// (UDP) go to the same ports of `to` on its LAN.
    pub fn forward(mut self, router: &str, lo: u16, hi: u16, to: &str) -> Self {
        let to = parse_addr(to, &mut self.errors);
        match self.spec.routers.iter_mut().find(|r| r.name == router) {
            Some(r) => r.forwards.push(sim_nat::PortForward::udp(lo, hi, to)),
            None => self.errors.push(format!(
                "forward on `{router}`, which is not a router declared before"
            )),
        }
        self
    }

    /// Any router, as data.
    pub fn router(mut self, router: RouterSpec) -> Self {
        self.spec.routers.push(router);
        self
    }

    /// A host with one address on `segment` (`internet` or a router's name).
    pub fn host(self, name: &str, segment: &str, addr: &str) -> Self {
        self.host_with_addrs(name, segment, &[addr])
    }

    /// A host with several addresses (an RFC 5780 STUN server needs two).
    pub fn host_with_addrs(mut self, name: &str, segment: &str, addrs: &[&str]) -> Self {
        let addrs = addrs
            .iter()
            .map(|a| parse_addr(a, &mut self.errors))
            .collect();
        self.spec.hosts.push(HostSpec {
            name: name.into(),
            segment: segment.into(),
            addrs,
            mtu: None,
        });
        self
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// Validates and brings the topology up.
    pub async fn build(self) -> Result<Topology> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(Error::Topology(e));
        }
        Topology::build(self.spec).await
    }
}

/// A running topology; dropping it removes every namespace, link, ruleset and process it made.
pub struct Topology {
    run: RunId,
    spec: TopologySpec,
    /// Creation order; dropped in reverse so hosts go before the routers they hang off.
    nodes: Vec<Node>,
    /// Where the bring-up's time went.
    timeline: Timeline,
    /// Where the last pool reset's time went.
    reset_timeline: Timeline,
    /// Locked while this topology lives, so a reaper in another process can prove the run is
    /// gone even when this process is a zombie or its PID was reused. Declared last: it is
    /// dropped after the namespaces are removed. `None` when `/run/snh` cannot be written; the
    /// reaper then falls back to `/proc`.
    owner: Option<registry::OwnerEntry>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("run", &self.run)
            .field("nodes", &self.nodes)
            .field("owner", &self.owner.as_ref().map(|o| o.path()))
            .finish()
    }
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Checks privileges and tools, reaps namespaces left by dead runs, then builds `spec`.
    pub async fn build(spec: TopologySpec) -> Result<Topology> {
        spec.validate()?;
        preflight::check()?;
        registry::install_interrupt_handler();
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            for name in reaper::reap_stale() {
                eprintln!("harness: removed stale namespace {name}");
            }
        });
        let run = RunId::new();
        let owner = match registry::OwnerEntry::create(run.as_str()) {
            Ok(entry) => Some(entry),
            Err(e) => {
                eprintln!(
                    "harness: cannot write the owner entry of run {} ({e}); `harness reap` will rely on /proc",
                    run.as_str()
                );
                None
            }
        };
        let mut topo = Topology {
            run,
            spec: spec.clone(),
            nodes: Vec::new(),
            timeline: Timeline::default(),
            reset_timeline: Timeline::default(),
            owner,
        };
        // On error the partial topology is dropped, which removes what was made so far.
        let rec = Recorder::new();
        topo.bring_up(&spec, &rec).await?;
        topo.timeline = rec.finish();
        Ok(topo)
    }

    /// Prefix length and default gateway for an address on `segment`.
    fn segment_gateway(&self, segment: &str, addr: Ipv4Addr) -> (u8, Ipv4Addr) {
        if segment == INTERNET {
            (24, public_gateway(addr))
        } else {
            let r = self
                .spec
                .router(segment)
                .expect("validated: segments name routers");
            (r.lan_prefix, r.lan)
        }
    }

    /// Where this topology's bring-up spent its time, step by step.
    pub fn bring_up_timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The run id every namespace name of this topology carries.
    pub fn run_id(&self) -> &str {
        self.run.as_str()
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The node called `name` (`internet` is the public core).
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::NoSuchNode(name.to_string()))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    /// Names of every namespace of this topology, for `ip netns exec`.
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.ns_name().to_string()).collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.abort_tasks();
        }
        while let Some(n) = self.nodes.pop() {
            drop(n);
        }
    }
}
