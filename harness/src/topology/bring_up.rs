//! Bringing a [`TopologySpec`] up: independent nodes concurrently, in three waves.
//!
//! 1. every namespace at once (each with its netlink connection);
//! 2. per node, at once: its sysctls in one trip to its worker, the bridge and address of the
//!    segment it owns, the core's blackhole route; meanwhile every NAT loads its ruleset;
//! 3. per member of a segment, at once: its veth created in place, both ends up, addresses and
//!    its default route; then every port is awaited until it forwards.
//!
//! A segment with one member (a home LAN with one phone, a carrier NAT with one home router
//! behind it) has no bridge: the veth's far end *is* the owner's `lan` (or `inet`). The
//! interface names, addresses and what a capture on them sees stay the same, and the bridge's
//! setup, forwarding delay and its costly teardown (`rcu_barrier()` under RTNL) are gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::future::{join_all, try_join, try_join_all};
use sim_nat::RouterPorts;

use super::node::{Node, Role};
use super::spec::{self, public_gateway, TopologySpec, INTERNET};
use super::timeline::{Recorder, Stage};
use super::Topology;
use crate::error::{Error, Result};

/// Longest wait for a port to forward after both its ends are up.
const FORWARDING_TIMEOUT: Duration = Duration::from_secs(3);

/// The interface that forms `segment` inside the namespace that owns it.
pub(super) fn segment_iface(segment: &str) -> &'static str {
    if segment == INTERNET {
        "inet"
    } else {
        "lan"
    }
}

/// One node plugged into a segment: its interface there, and the name of the veth's far end in
/// the segment's owner.
struct Member<'a> {
    node: &'a str,
    segment: &'a str,
    iface: &'static str,
    port: String,
    bridged: bool,
    /// Both ends' MTU (`None`: the kernel's 1500); set before the port joins its bridge, which
    /// then follows its smallest port.
    mtu: Option<u32>,
}

/// Every segment's members, in the order their ports are numbered (routers upstream first, then
/// hosts, as declared).
fn members(spec: &TopologySpec) -> Vec<Member<'_>> {
    let mut plugged: Vec<(&str, &str, &'static str, Option<u32>)> = spec
        .routers_upstream_first()
        .into_iter()
        .map(|r| (r.name.as_str(), r.upstream.as_str(), "wan", r.wan_mtu))
        .collect();
    plugged.extend(
        spec.hosts
            .iter()
            .map(|h| (h.name.as_str(), h.segment.as_str(), "eth0", h.mtu)),
    );
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, segment, _, _) in &plugged {
        *count.entry(segment).or_default() += 1;
    }
    let mut numbered: BTreeMap<&str, usize> = BTreeMap::new();
    plugged
        .into_iter()
        .map(|(node, segment, iface, mtu)| {
            let bridged = count[segment] > 1;
            let n = numbered.entry(segment).or_default();
            *n += 1;
            let port = if bridged {
                format!("p{n}")
            } else {
                segment_iface(segment).to_string()
            };
            Member {
                node,
                segment,
                iface,
                port,
                bridged,
                mtu,
            }
        })
        .collect()
}

/// Whether `segment` has a bridge: anything but exactly one member.
fn bridged(members: &[Member<'_>], segment: &str) -> bool {
    members.iter().filter(|m| m.segment == segment).count() != 1
}

impl Topology {
    pub(super) async fn bring_up(&mut self, spec: &TopologySpec, rec: &Recorder) -> Result<()> {
        let mut order = vec![(INTERNET, Role::Internet)];
        order.extend(
            spec.routers_upstream_first()
                .into_iter()
                .map(|r| (r.name.as_str(), Role::Router)),
        );
        order.extend(spec.hosts.iter().map(|h| (h.name.as_str(), Role::Host)));
        let run = &self.run;
        let created = join_all(
            order
                .iter()
                .map(|(name, role)| Node::create(run.ns_name(name), name, *role, rec)),
        )
        .await;
        // Keep every node made before reporting a failure, so dropping `self` removes it.
        let mut first_error = None;
        for node in created {
            match node {
                Ok(n) => self.nodes.push(n),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let public_nets = public_nets(spec);
        for node in &mut self.nodes {
            describe(node, spec, &public_nets);
        }

        let members = members(spec);
        let nodes = &self.nodes;
        let nat = try_join_all(spec.routers.iter().filter_map(|r| {
            let nat = r.nat.as_ref()?;
            Some(async move { node(nodes, &r.name)?.apply_nat(nat, rec).await })
        }));
        let wiring = async {
            try_join_all(
                nodes
                    .iter()
                    .map(|n| self.prepare(n, &members, &public_nets, rec)),
            )
            .await?;
            try_join_all(members.iter().map(|m| self.plug(m, &public_nets, rec))).await?;
            try_join_all(members.iter().map(|m| async move {
                let owner = node(nodes, m.segment)?;
                let wait = async {
                    if m.bridged {
                        owner
                            .netlink
                            .wait_forwarding(&m.port, FORWARDING_TIMEOUT)
                            .await
                    } else {
                        owner
                            .netlink
                            .wait_transmitting(&m.port, FORWARDING_TIMEOUT)
                            .await
                    }
                };
                rec.time(Stage::Forwarding, m.node, wait).await
            }))
            .await?;
            Ok::<_, Error>(())
        };
        try_join(nat, wiring).await?;
        Ok(())
    }

    /// A node's own settings and the segment it owns, before anything is plugged into it.
    async fn prepare(
        &self,
        node: &Node,
        members: &[Member<'_>],
        public_nets: &BTreeSet<Ipv4Addr>,
        rec: &Recorder,
    ) -> Result<()> {
        let owns_bridge = node.role != Role::Host && bridged(members, &node.name);
        let mut sysctls = Node::BASE_SYSCTLS.to_vec();
        if node.role != Role::Host {
            sysctls.push(("net/ipv4/ip_forward", "1", false));
        }
        if owns_bridge {
            sysctls.push(Node::BRIDGE_SYSCTL);
        }
        rec.time(Stage::Sysctls, &node.name, node.sysctls(&sysctls))
            .await?;
        if owns_bridge {
            let iface = segment_iface(&node.name);
            let _ = node.bridge.set(iface);
            rec.time(Stage::Bridge, &node.name, async {
                node.netlink.add_bridge(iface).await?;
                node.netlink.up(iface, None).await
            })
            .await?;
            rec.time(
                Stage::Addresses,
                &node.name,
                self.add_segment_addresses(node, iface, public_nets),
            )
            .await?;
        }
        if node.role == Role::Internet {
            rec.time(
                Stage::Routes,
                &node.name,
                node.netlink.add_blackhole_default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Plugs `m` into its segment: a veth created with its far end already in the owner, both
    /// ends up, the addresses on both ends where the segment has no bridge, the member's default
    /// route.
    async fn plug(
        &self,
        m: &Member<'_>,
        public_nets: &BTreeSet<Ipv4Addr>,
        rec: &Recorder,
    ) -> Result<()> {
        let nodes = &self.nodes;
        let (me, owner) = (node(nodes, m.node)?, node(nodes, m.segment)?);
        rec.time(Stage::Links, m.node, async {
            me.netlink.add_veth(m.iface, &m.port, &owner.ns).await?;
            if let Some(mtu) = m.mtu {
                me.netlink.set_mtu(m.iface, mtu).await?;
                owner.netlink.set_mtu(&m.port, mtu).await?;
            }
            // The owner's end first, so the member's end finds carrier when it comes up.
            let bridge = m.bridged.then(|| segment_iface(m.segment));
            owner.netlink.up(&m.port, bridge).await?;
            me.netlink.up(m.iface, None).await
        })
        .await?;
        let (prefix, gateway) = self.segment_gateway(m.segment, me.addrs[0]);
        let own: Vec<Ipv4Addr> = if me.role == Role::Router {
            let r = self.spec.router(m.node).expect("validated");
            std::iter::once(r.wan).chain(spec::pool_extra(r)).collect()
        } else {
            me.addrs.clone()
        };
        rec.time(Stage::Addresses, m.node, async {
            if !m.bridged {
                self.add_segment_addresses(owner, &m.port, public_nets)
                    .await?;
            }
            for a in own {
                me.netlink.add_address(m.iface, a, prefix).await?;
            }
            Ok::<_, Error>(())
        })
        .await?;
        rec.time(Stage::Routes, m.node, me.netlink.add_default_route(gateway))
            .await
    }

    /// The owner's addresses on the segment it owns: the router's LAN address, or the internet
    /// core's gateway on every public /24 in use.
    async fn add_segment_addresses(
        &self,
        owner: &Node,
        iface: &str,
        public_nets: &BTreeSet<Ipv4Addr>,
    ) -> Result<()> {
        if owner.role == Role::Internet {
            for gw in public_nets {
                owner.netlink.add_address(iface, *gw, 24).await?;
            }
            Ok(())
        } else {
            let r = self.spec.router(&owner.name).expect("validated");
            owner.netlink.add_address(iface, r.lan, r.lan_prefix).await
        }
    }
}

/// The internet core's gateways: one per public /24 a router or host is on.
fn public_nets(spec: &TopologySpec) -> BTreeSet<Ipv4Addr> {
    let mut nets = BTreeSet::new();
    for r in spec.routers.iter().filter(|r| r.upstream == INTERNET) {
        nets.insert(public_gateway(r.wan));
    }
    for h in spec.hosts.iter().filter(|h| h.segment == INTERNET) {
        nets.extend(h.addrs.iter().map(|a| public_gateway(*a)));
    }
    nets
}

/// Fills in what a node is, from the spec: its addresses and, for a router, its NAT's ports.
fn describe(node: &mut Node, spec: &TopologySpec, public_nets: &BTreeSet<Ipv4Addr>) {
    match node.role {
        Role::Internet => node.addrs = public_nets.iter().copied().collect(),
        Role::Router => {
            let r = spec.router(&node.name).expect("validated");
            node.addrs = vec![r.wan, r.lan];
            node.addrs.extend(spec::pool_extra(r));
            node.router_ports = Some(RouterPorts {
                wan: "wan".into(),
                lan: "lan".into(),
                public: r.wan,
                subscribers: spec.subscribers_of(&r.name),
                forwards: r.forwards.clone(),
            });
        }
        Role::Host => {
            let h = spec
                .hosts
                .iter()
                .find(|h| h.name == node.name)
                .expect("validated");
            node.addrs = h.addrs.clone();
        }
    }
}

fn node<'a>(nodes: &'a [Node], name: &str) -> Result<&'a Node> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| Error::NoSuchNode(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::shapes;
    use sim_nat::NatType;

    #[test]
    fn a_segment_with_one_member_has_no_bridge_and_its_far_end_is_the_owners_lan() {
        let spec = shapes::home_lan(NatType::FullCone).spec().clone();
        let m = members(&spec);
        let alice = m.iter().find(|m| m.node == "alice").expect("alice");
        assert!(!alice.bridged);
        assert_eq!(alice.port, "lan");
        let ports: Vec<(&str, &str, bool)> = m
            .iter()
            .filter(|m| m.segment == INTERNET)
            .map(|m| (m.node, m.port.as_str(), m.bridged))
            .collect();
        assert_eq!(
            ports,
            [
                ("home", "p1", true),
                ("server", "p2", true),
                ("peer", "p3", true)
            ]
        );
    }

    #[test]
    fn a_carrier_nat_with_one_home_router_behind_it_has_no_bridge() {
        let spec = shapes::double_nat(NatType::FullCone, NatType::Symmetric)
            .spec()
            .clone();
        let m = members(&spec);
        let home = m.iter().find(|m| m.node == "home").expect("home");
        assert_eq!(
            (home.segment, home.port.as_str(), home.bridged),
            ("cgn", "lan", false)
        );
    }
}
