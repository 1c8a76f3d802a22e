//! A topology as data: what a scenario file (or the Rust builder) declares, checked before any
//! namespace exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sim_nat::{NatBehaviour, PortForward};

use crate::error::{Error, Result};
use crate::names::check_node_name;

/// The name of the public segment every topology has.
pub const INTERNET: &str = "internet";

/// Address the internet core answers on in every public /24: the default gateway of public hosts
/// and of the outermost routers.
pub const PUBLIC_GATEWAY_OCTET: u8 = 254;

/// A whole topology: routers (each owning a LAN) and hosts attached to a segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(default)]
    pub routers: Vec<RouterSpec>,
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
}

/// A router between an upstream segment and the LAN it owns; with `nat` it is a NAT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouterSpec {
    pub name: String,
    /// `internet`, or the name of the router whose LAN this router's WAN sits on (double NAT).
    pub upstream: String,
    /// The router's address on the upstream segment (its public address behind no other NAT).
    pub wan: Ipv4Addr,
    /// The router's address on its own LAN.
    pub lan: Ipv4Addr,
    /// Prefix length of the LAN.
    #[serde(default = "default_prefix")]
    pub lan_prefix: u8,
    /// `None`: a plain router that forwards without translating.
    #[serde(default)]
    pub nat: Option<NatBehaviour>,
    /// Static port forwards from its WAN address to hosts on its LAN (a NAT router only).
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// MTU of its WAN link, both ends (1492 behind PPPoE); `None`: 1500.
    #[serde(default)]
    pub wan_mtu: Option<u32>,
}

fn default_prefix() -> u8 {
    24
}

/// An end host (phone, server, STUN server …) on one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    /// `internet`, or the name of the router whose LAN the host is on.
    pub segment: String,
    /// One or more addresses (a STUN server answering CHANGE-REQUEST needs two).
    pub addrs: Vec<Ipv4Addr>,
    /// MTU of its link to the segment, both ends; `None`: 1500. A segment's bridge follows its
    /// smallest port, so the router (or the internet core) then sends at most this much to
    /// every host of the segment too, as on one Ethernet that must share an MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// MTUs a link may have: IPv4's minimum datagram every host must accept (RFC 791) up to jumbo
/// frames.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;

fn check_mtu(who: &str, mtu: Option<u32>) -> Result<()> {
    match mtu {
        Some(m) if !MTU_RANGE.contains(&m) => Err(Error::Topology(format!(
            "`{who}`: MTU {m} must be between {} and {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ))),
        _ => Ok(()),
    }
}

/// The documentation ranges public addresses must come from, so nothing the harness sends can
/// ever mean a real host (RFC 5737).
pub const DOCUMENTATION_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
];

pub(crate) fn in_prefix(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(addr) & mask == u32::from(net) & mask
}

/// The gateway a public address uses: `.254` of its /24.
pub fn public_gateway(addr: Ipv4Addr) -> Ipv4Addr {
    let o = addr.octets();
    Ipv4Addr::new(o[0], o[1], o[2], PUBLIC_GATEWAY_OCTET)
}

fn is_public(addr: Ipv4Addr) -> bool {
    DOCUMENTATION_RANGES
        .iter()
        .any(|(net, p)| in_prefix(addr, *net, *p))
}

/// The pool addresses of a NAT router beyond its WAN address.
pub fn pool_extra(r: &RouterSpec) -> Vec<Ipv4Addr> {
    let n = r.nat.as_ref().map_or(1, |n| n.pool_size.max(1));
    (1..u32::from(n))
        .map(|i| Ipv4Addr::from(u32::from(r.wan) + i))
        .collect()
}

impl TopologySpec {
    pub fn router(&self, name: &str) -> Option<&RouterSpec> {
        self.routers.iter().find(|r| r.name == name)
    }

    /// Every inside address on router `name`'s LAN (hosts and downstream routers' WANs), in
    /// address order: the order port blocks are handed out in.
    pub fn subscribers_of(&self, name: &str) -> Vec<Ipv4Addr> {
        let mut subs: Vec<Ipv4Addr> = self
            .hosts
            .iter()
            .filter(|h| h.segment == name)
            .flat_map(|h| h.addrs.iter().copied())
            .chain(
                self.routers
                    .iter()
                    .filter(|r| r.upstream == name)
                    .map(|r| r.wan),
            )
            .collect();
        subs.sort();
        subs
    }

    /// Routers ordered so that every router comes after its upstream.
    pub fn routers_upstream_first(&self) -> Vec<&RouterSpec> {
        let mut done: BTreeSet<&str> = BTreeSet::from([INTERNET]);
        let mut out = Vec::new();
        while out.len() < self.routers.len() {
            let before = out.len();
            for r in &self.routers {
                if !done.contains(r.name.as_str()) && done.contains(r.upstream.as_str()) {
                    done.insert(&r.name);
                    out.push(r);
                }
            }
            if out.len() == before {
                break; // a cycle; validate() reports it
            }
        }
        out
    }

    /// Checks names, references, subnets and address uniqueness; the message names the culprit.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Topology(m));
        let mut names = BTreeSet::new();
        for n in self
            .routers
            .iter()
            .map(|r| &r.name)
            .chain(self.hosts.iter().map(|h| &h.name))
        {
            check_node_name(n).map_err(Error::Topology)?;
            if n == INTERNET {
                return bad(format!(
                    "`{INTERNET}` is the public segment, not a node name"
                ));
            }
            if !names.insert(n.as_str()) {
                return bad(format!("node name `{n}` is used twice"));
            }
        }
        // Private addresses repeat across LANs (every home has a 192.168.1.1); they must be unique
        // within a segment.
        let mut seen: BTreeMap<(String, Ipv4Addr), String> = BTreeMap::new();
        let mut claim = |segment: &str, addr: Ipv4Addr, who: &str| -> Result<()> {
            if let Some(other) = seen.insert((segment.to_string(), addr), who.to_string()) {
                return Err(Error::Topology(format!(
                    "address {addr} is given to both `{other}` and `{who}` on `{segment}`"
                )));
            }
            Ok(())
        };
        // The segment an address must fall in, by segment name.
        let segment_check = |segment: &str, addr: Ipv4Addr, who: &str| -> Result<()> {
            if segment == INTERNET {
                if !is_public(addr) {
                    return Err(Error::Topology(format!(
                        "`{who}`: {addr} is on the internet segment but not in a documentation \
                         range (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)"
                    )));
                }
                let last = addr.octets()[3];
                if last == 0 || last == 255 || last == PUBLIC_GATEWAY_OCTET {
                    return Err(Error::Topology(format!(
                        "`{who}`: {addr} is reserved (.0, .255, and .{PUBLIC_GATEWAY_OCTET} which \
                         is the internet core's gateway)"
                    )));
                }
                return Ok(());
            }
            let Some(r) = self.router(segment) else {
                return Err(Error::Topology(format!(
                    "`{who}` is attached to `{segment}`, which is neither `{INTERNET}` nor a router"
                )));
            };
            if !in_prefix(addr, r.lan, r.lan_prefix) {
                return Err(Error::Topology(format!(
                    "`{who}`: {addr} is not in the LAN of `{segment}` ({}/{})",
                    r.lan, r.lan_prefix
                )));
            }
            Ok(())
        };
        for r in &self.routers {
            if r.lan_prefix < 8 || r.lan_prefix > 30 {
                return bad(format!(
                    "router `{}`: lan-prefix {} must be between 8 and 30",
                    r.name, r.lan_prefix
                ));
            }
            if r.upstream == r.name {
                return bad(format!("router `{}` cannot be its own upstream", r.name));
            }
            segment_check(&r.upstream, r.wan, &r.name)?;
            claim(&r.upstream, r.wan, &r.name)?;
            check_mtu(&r.name, r.wan_mtu)?;
            for extra in pool_extra(r) {
                segment_check(&r.upstream, extra, &r.name)?;
                claim(&r.upstream, extra, &r.name)?;
            }
            claim(&r.name, r.lan, &r.name)?;
            if let Some(up) = self.router(&r.upstream) {
                let p = up.lan_prefix.min(r.lan_prefix);
                if in_prefix(r.lan, up.lan, p) {
                    return bad(format!(
                        "router `{}`: its LAN {}/{} overlaps the LAN of its upstream `{}` ({}/{}), \
                         so it could not route to its own gateway",
                        r.name, r.lan, r.lan_prefix, up.name, up.lan, up.lan_prefix
                    ));
                }
            }
            if let Some(nat) = &r.nat {
                nat.validate()?;
            }
            if !r.forwards.is_empty() && r.nat.is_none() {
                return bad(format!(
                    "router `{}` forwards ports but does no NAT: without translation every LAN \
                     address is reachable already",
                    r.name
                ));
            }
            PortForward::validate_all(&r.forwards)
                .map_err(|e| Error::Topology(format!("router `{}`: {e}", r.name)))?;
            for f in &r.forwards {
                if !in_prefix(f.to, r.lan, r.lan_prefix) || f.to == r.lan {
                    return bad(format!(
                        "router `{}` forwards ports {} to {}, which is not a host on its LAN \
                         ({}/{})",
                        r.name,
                        f.range_text(),
                        f.to,
                        r.lan,
                        r.lan_prefix
                    ));
                }
            }
        }
        if self.routers_upstream_first().len() != self.routers.len() {
            return bad(
                "routers' upstreams form a cycle: every chain must end at `internet`".into(),
            );
        }
        for h in &self.hosts {
            if h.addrs.is_empty() {
                return bad(format!("host `{}` has no address", h.name));
            }
            check_mtu(&h.name, h.mtu)?;
            for a in &h.addrs {
                segment_check(&h.segment, *a, &h.name)?;
                claim(&h.segment, *a, &h.name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> TopologySpec {
        TopologySpec {
            routers: vec![RouterSpec {
                name: "home".into(),
                upstream: INTERNET.into(),
                wan: "203.0.113.1".parse().unwrap(),
                lan: "192.168.1.1".parse().unwrap(),
                lan_prefix: 24,
                nat: Some(sim_nat::NatType::PortRestrictedCone.behaviour()),
                forwards: Vec::new(),
                wan_mtu: None,
            }],
            hosts: vec![HostSpec {
                name: "alice".into(),
                segment: "home".into(),
                addrs: vec!["192.168.1.10".parse().unwrap()],
                mtu: None,
            }],
        }
    }

    #[test]
    fn a_home_lan_is_valid() {
        home().validate().unwrap();
    }

    #[test]
    fn a_host_outside_its_lan_is_refused() {
        let mut t = home();
        t.hosts[0].addrs = vec!["10.0.0.5".parse().unwrap()];
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("not in the LAN of `home`"), "{e}");
    }

    #[test]
    fn a_real_public_address_is_refused() {
        let mut t = home();
        t.routers[0].wan = "8.8.8.8".parse().unwrap();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("documentation range"), "{e}");
    }

    #[test]
    fn an_address_clash_names_both_nodes() {
        let mut t = home();
        t.hosts[0].addrs = vec!["192.168.1.1".parse().unwrap()];
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("`home`") && e.contains("`alice`"), "{e}");
    }

    #[test]
    fn an_mtu_below_ipv4s_minimum_is_refused() {
        let mut t = home();
        t.hosts[0].mtu = Some(500);
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("`alice`: MTU 500"), "{e}");
        t.hosts[0].mtu = Some(1400);
        t.routers[0].wan_mtu = Some(1492);
        t.validate().unwrap();
    }

    #[test]
    fn a_dangling_segment_is_refused() {
        let mut t = home();
        t.hosts[0].segment = "office".into();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("`office`"), "{e}");
    }

    #[test]
    fn an_upstream_cycle_is_refused() {
        let mut t = home();
        t.routers[0].upstream = "cgn".into();
        t.routers.push(RouterSpec {
            name: "cgn".into(),
            upstream: "home".into(),
            wan: "192.168.1.2".parse().unwrap(),
            lan: "100.64.0.1".parse().unwrap(),
            lan_prefix: 24,
            nat: None,
            forwards: Vec::new(),
            wan_mtu: None,
        });
        t.routers[0].wan = "100.64.0.2".parse().unwrap();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }
}
