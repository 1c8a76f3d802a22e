//! Topology shapes behave like the networks they stand for.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::shapes::{self, SERVER};
use harness::{Topology, INTERNET};
use sim_nat::NatType;
use tests::lab::TwoLanSockets;
use tests::{recv_within, require_kernel, sa, DELIVERY};

/// A packet to a leaked private address vanishes silently, as on the internet: no ENETUNREACH at
/// `send`, no ICMP error afterwards, so a proxy times out (408) instead of failing fast (477).
#[tokio::test]
async fn the_internet_swallows_packets_to_private_addresses() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone)
        .build()
        .await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 5060)).await?;
    server.connect(sa("192.168.1.10", 5060)).await?;
    server
        .send(b"INVITE")
        .await
        .context("send to a private address must not fail")?;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_millis(500), server.recv(&mut buf)).await;
    ensure!(
        r.is_err(),
        "expected silence, got {r:?} (an ICMP error would be ECONNREFUSED/EHOSTUNREACH)"
    );
    // and alice did not get it either
    Ok(())
}

/// Two LANs behind two NATs reach a public server, and each other through their public mappings
/// when both are full cone.
#[tokio::test]
async fn two_lans_reach_each_other_through_full_cone_mappings() -> Result<()> {
    require_kernel!();
    let lab = TwoLanSockets::build(NatType::FullCone, NatType::FullCone).await?;
    let (alice, bob, server) = (&lab.alice, &lab.bob, &lab.server);
    alice.send_to(b"a", sa(SERVER, 3478)).await?;
    let (_, a_pub) = recv_within(server, DELIVERY)
        .await
        .context("alice → server")?;
    bob.send_to(b"b", sa(SERVER, 3478)).await?;
    let (_, b_pub) = recv_within(server, DELIVERY)
        .await
        .context("bob → server")?;
    ensure!(a_pub == sa("203.0.113.1", 4000), "alice seen as {a_pub}");
    ensure!(b_pub == sa("198.51.100.1", 4000), "bob seen as {b_pub}");
    alice.send_to(b"hello bob", b_pub).await?;
    let (m, from) = recv_within(bob, DELIVERY).await.context("alice → bob")?;
    ensure!(m == b"hello bob" && from == a_pub);
    Ok(())
}

/// Two port-restricted NATs: alice's first packet to bob's public address is dropped by bob's
/// router — and it poisons bob's port. Linux keeps that packet as an unreplied inbound flow on
/// 198.51.100.1:4000, so when bob then sends to alice from 4000, his router finds the tuple taken
/// and maps him to another port, which alice's router does not admit. Measured with baresip on
/// this kernel (shared/kernel-facts.md, "who sends first matters"): the root of one-way audio
/// from the kernel alone, and not an idealised hole punch.
#[tokio::test]
async fn a_first_unsolicited_packet_makes_the_far_nat_remap_the_answer() -> Result<()> {
    require_kernel!();
    let lab =
        TwoLanSockets::build(NatType::PortRestrictedCone, NatType::PortRestrictedCone).await?;
    let (alice, bob, server) = (&lab.alice, &lab.bob, &lab.server);
    alice
        .send_to(b"hello bob", sa("198.51.100.1", 4000))
        .await?;
    ensure!(
        recv_within(bob, DELIVERY).await.is_none(),
        "bob's NAT must drop it"
    );
    bob.send_to(b"hello alice", sa("203.0.113.1", 4000)).await?;
    ensure!(
        recv_within(alice, DELIVERY).await.is_none(),
        "bob is remapped off 4000, so alice's pinhole (towards :4000) must not admit him"
    );
    // The new port sticks: Linux reuses an existing mapping of the same source for new flows
    // (find_appropriate_src), so bob's whole binding moved — STUN would now report the new port.
    bob.send_to(b"stun", sa(SERVER, 3478)).await?;
    let (_, b_pub) = recv_within(server, DELIVERY)
        .await
        .context("bob → server")?;
    ensure!(
        b_pub.ip() == "198.51.100.1".parse::<std::net::IpAddr>()? && b_pub.port() != 4000,
        "bob's mapping must have moved off the poisoned port 4000, server saw {b_pub}"
    );
    Ok(())
}

async fn hairpin(on: bool) -> Result<Option<SocketAddr>> {
    let topo = Topology::builder()
        .nat(
            "home",
            NatType::FullCone.behaviour().with_hairpinning(on),
            "203.0.113.1",
            "192.168.1.1/24",
        )
        .host("alice", "home", "192.168.1.10")
        .host("carol", "home", "192.168.1.11")
        .host("server", INTERNET, SERVER)
        .build()
        .await?;
    let alice = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 5060))
        .await?;
    let carol = topo
        .node("carol")?
        .udp_bind(sa("192.168.1.11", 5062))
        .await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    alice.send_to(b"register", sa(SERVER, 3478)).await?;
    let (_, alice_pub) = recv_within(&server, DELIVERY)
        .await
        .context("alice → server")?;
    carol.send_to(b"via public", alice_pub).await?;
    Ok(recv_within(&alice, DELIVERY).await.map(|(_, from)| from))
}

#[tokio::test]
async fn hairpinning_on_delivers_with_the_senders_public_address() -> Result<()> {
    require_kernel!();
    let from = hairpin(true)
        .await?
        .context("hairpinned packet must arrive")?;
    ensure!(
        from == sa("203.0.113.1", 5062),
        "REQ-9: source must be carol's mapping, got {from}"
    );
    Ok(())
}

#[tokio::test]
async fn hairpinning_off_does_not_deliver() -> Result<()> {
    require_kernel!();
    ensure!(hairpin(false).await?.is_none());
    Ok(())
}

/// An external program runs inside the host's namespace and sees only its interfaces.
#[tokio::test]
async fn an_external_command_runs_inside_its_host() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::FullCone).build().await?;
    let (status, out, _) = topo
        .node("alice")?
        .output("ip", &["-4", "-o", "addr", "show"], Duration::from_secs(5))
        .await?;
    ensure!(status.is_some_and(|s| s.success()));
    ensure!(out.contains("192.168.1.10/24"), "{out}");
    ensure!(
        !out.contains("203.0.113"),
        "alice must not see public interfaces: {out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_program_names_its_debian_package() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::FullCone).build().await?;
    let e = topo
        .node("alice")?
        .start("snh-no-such-program", &[])
        .await
        .err()
        .context("must fail")?;
    ensure!(e.to_string().contains("not found"), "{e}");
    Ok(())
}

/// Changing a router's NAT mid-run takes effect for new flows.
#[tokio::test]
async fn nat_behaviour_can_change_mid_scenario() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::FullCone).build().await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    let alice = topo.node("alice")?;
    let a1 = alice.udp_bind(sa("192.168.1.10", 6000)).await?;
    a1.send_to(b"x", sa(SERVER, 3478)).await?;
    let (_, m1) = recv_within(&server, DELIVERY).await.context("before")?;
    ensure!(m1.port() == 6000);
    topo.node("home")?
        .set_nat(&NatType::Symmetric.behaviour())
        .await?;
    let a2 = alice.udp_bind(sa("192.168.1.10", 6001)).await?;
    a2.send_to(b"x", sa(SERVER, 3478)).await?;
    let (_, m2) = recv_within(&server, DELIVERY).await.context("after")?;
    ensure!(
        m2.port() != 6001,
        "symmetric NAT with random ports must not preserve 6001"
    );
    Ok(())
}
