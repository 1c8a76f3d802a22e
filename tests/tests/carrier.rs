//! Carrier-grade NAT (port blocks per subscriber) and address pools (paired or not).

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use harness::shapes::{PEER, SERVER};
use harness::{Topology, INTERNET};
use sim_nat::{NatBehaviour, NatType};
use tests::{recv_within, require_kernel, sa, DELIVERY};

/// Two home routers share a CGNAT whose subscribers get 4 ports each. Alice's fifth flow finds
/// her block full and goes nowhere; Bob, in his own block, is unaffected.
#[tokio::test]
async fn a_subscriber_that_exhausts_its_port_block_cannot_open_another_flow() -> Result<()> {
    require_kernel!();
    let cgn = NatType::PortRestrictedCone
        .behaviour()
        .with_port_range(20000, 20011)
        .with_port_block(4);
    let topo = Topology::builder()
        .nat("cgn", cgn, "203.0.113.1", "100.64.0.1/24")
        .nat_behind(
            "home-a",
            "cgn",
            NatType::PortRestrictedCone,
            "100.64.0.2",
            "192.168.1.1/24",
        )
        .nat_behind(
            "home-b",
            "cgn",
            NatType::PortRestrictedCone,
            "100.64.0.3",
            "192.168.1.1/24",
        )
        .host("alice", "home-a", "192.168.1.10")
        .host("bob", "home-b", "192.168.1.10")
        .host("server", INTERNET, SERVER)
        .build()
        .await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    let alice = topo.node("alice")?;
    let mut seen = Vec::new();
    let mut socks = Vec::new();
    for i in 0..5u16 {
        let s = alice.udp_bind(sa("192.168.1.10", 7000 + i)).await?;
        s.send_to(b"flow", sa(SERVER, 3478)).await?;
        seen.push(recv_within(&server, DELIVERY).await.map(|(_, from)| from));
        socks.push(s);
    }
    for (i, s) in seen.iter().take(4).enumerate() {
        let from = s.with_context(|| format!("alice's flow {i} must get through"))?;
        ensure!(
            from.ip() == "203.0.113.1".parse::<IpAddr>()? && (20000..=20003).contains(&from.port()),
            "alice's flow {i} must leave from her block 20000-20003, saw {from}"
        );
    }
    ensure!(
        seen[4].is_none(),
        "the fifth flow must fail: block exhausted, saw {:?}",
        seen[4]
    );
    let bob = topo.node("bob")?.udp_bind(sa("192.168.1.10", 7000)).await?;
    bob.send_to(b"flow", sa(SERVER, 3478)).await?;
    let (_, from) = recv_within(&server, DELIVERY)
        .await
        .context("bob is unaffected")?;
    ensure!(
        (20004..=20007).contains(&from.port()),
        "bob's block is 20004-20007, saw {from}"
    );
    Ok(())
}

/// Sends from a new socket of alice to each address of `dests` (a new internal port per flow:
/// Linux reuses an existing mapping of the *same* internal endpoint whatever the pool) and returns
/// the public addresses the destinations saw.
async fn public_addresses(nat: NatBehaviour) -> Result<BTreeSet<IpAddr>> {
    let dests = [
        "198.51.100.20",
        "198.51.100.21",
        "198.51.100.22",
        "198.51.100.23",
        "198.51.100.24",
        "198.51.100.25",
        "198.51.100.26",
        "198.51.100.27",
    ];
    let topo = Topology::builder()
        .nat("home", nat, "203.0.113.1", "192.168.1.1/24")
        .host("alice", "home", "192.168.1.10")
        .host_with_addrs("peer", INTERNET, &dests)
        .build()
        .await?;
    let mut seen = BTreeSet::new();
    for (i, d) in dests.into_iter().enumerate() {
        let alice = topo
            .node("alice")?
            .udp_bind(sa("192.168.1.10", 5060 + i as u16))
            .await?;
        let r = topo.node("peer")?.udp_bind(sa(d, 5060)).await?;
        alice.send_to(b"x", sa(d, 5060)).await?;
        let (_, from) = recv_within(&r, DELIVERY)
            .await
            .with_context(|| format!("to {d}"))?;
        seen.insert(from.ip());
    }
    Ok(seen)
}

#[tokio::test]
async fn paired_pooling_keeps_a_host_on_one_public_address() -> Result<()> {
    require_kernel!();
    let seen = public_addresses(NatType::PortRestrictedCone.behaviour().with_pool(4, true)).await?;
    ensure!(
        seen.len() == 1,
        "paired pooling: one address for every destination, saw {seen:?}"
    );
    Ok(())
}

/// Without pairing Linux chooses the address per destination as well: across eight destinations
/// a host shows up from more than one address (all eight picking the same of four addresses by
/// chance has probability 4^-7).
#[tokio::test]
async fn arbitrary_pooling_spreads_a_hosts_flows_over_the_pool() -> Result<()> {
    require_kernel!();
    let seen =
        public_addresses(NatType::PortRestrictedCone.behaviour().with_pool(4, false)).await?;
    ensure!(
        seen.len() > 1,
        "non-paired pooling must use several addresses, saw {seen:?}"
    );
    for a in &seen {
        let IpAddr::V4(v4) = a else { unreachable!() };
        ensure!(
            (1..=4).contains(&v4.octets()[3]),
            "{a} is not in the pool 203.0.113.1-4"
        );
    }
    let _ = PEER;
    Ok(())
}
