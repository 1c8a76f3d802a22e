//! The topologies field engineers meet most, ready to build.
//!
//! Addresses are fixed per shape, so traces and snapshots can keep them.

use sim_nat::NatBehaviour;

use super::{Topology, TopologyBuilder, INTERNET};

/// Public address of the STUN/SBC/registrar-side server in every shape.
pub const SERVER: &str = "203.0.113.10";
/// Its second address (RFC 5780 / RFC 3489 servers need two).
pub const SERVER_ALT: &str = "203.0.113.11";
/// A second public peer, so tests can tell endpoint-dependent behaviour apart.
pub const PEER: &str = "198.51.100.20";

/// One home router (`home`, WAN 203.0.113.1) with `alice` (192.168.1.10) behind it, a public
/// `server` with two addresses and a public `peer`: 1 NAT, 3 hosts.
pub fn home_lan(nat: impl Into<NatBehaviour>) -> TopologyBuilder {
    Topology::builder()
        .nat("home", nat, "203.0.113.1", "192.168.1.1/24")
        .host("alice", "home", "192.168.1.10")
        .host_with_addrs("server", INTERNET, &[SERVER, SERVER_ALT])
        .host("peer", INTERNET, PEER)
}

/// Two LANs behind two NATs talking through the public segment: `alice` behind `home-a`
/// (203.0.113.1), `bob` behind `home-b` (198.51.100.1), plus `server` and `peer`: 2 NATs,
/// 4 hosts.
pub fn two_lans(a: impl Into<NatBehaviour>, b: impl Into<NatBehaviour>) -> TopologyBuilder {
    Topology::builder()
        .nat("home-a", a, "203.0.113.1", "192.168.1.1/24")
        .nat("home-b", b, "198.51.100.1", "192.168.2.1/24")
        .host("alice", "home-a", "192.168.1.10")
        .host("bob", "home-b", "192.168.2.10")
        .host_with_addrs("server", INTERNET, &[SERVER, SERVER_ALT])
        .host("peer", INTERNET, PEER)
}

/// Double NAT: `alice` behind `home` (WAN 100.64.0.2 on the carrier's shared address space,
/// RFC 6598) behind carrier-grade NAT `cgn` (203.0.113.1), plus `server` and `peer`.
pub fn double_nat(home: impl Into<NatBehaviour>, cgn: impl Into<NatBehaviour>) -> TopologyBuilder {
    Topology::builder()
        .nat("cgn", cgn, "203.0.113.1", "100.64.0.1/24")
        .nat_behind("home", "cgn", home, "100.64.0.2", "192.168.1.1/24")
        .host("alice", "home", "192.168.1.10")
        .host_with_addrs("server", INTERNET, &[SERVER, SERVER_ALT])
        .host("peer", INTERNET, PEER)
}
