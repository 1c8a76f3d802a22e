//! RFC 4787 behaviour of each classic NAT type, observed from both sides with real UDP.
//!
//! Each test builds `home_lan`: alice behind the NAT under test, a public `server` with two
//! addresses and a public `peer`. Alice sends from one socket; the receivers report the source
//! they saw (the mapping); then public sockets try to reach that mapping and the test records what
//! gets through (the filtering).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::shapes::{self, PEER, SERVER, SERVER_ALT};
use harness::Topology;
use sim_nat::{NatBehaviour, NatType};
use tests::{recv_within, require_kernel, sa, DELIVERY};
use tokio::net::UdpSocket;

struct Lab {
    _topo: Topology,
    alice: UdpSocket,
    /// server primary address, primary port
    s1: UdpSocket,
    /// server primary address, other port
    s2: UdpSocket,
    /// server other address
    s3: UdpSocket,
    /// a different public host
    peer: UdpSocket,
}

async fn lab(nat: NatBehaviour) -> Result<Lab> {
    let topo = shapes::home_lan(nat).build().await?;
    let alice = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 5060))
        .await?;
    let server = topo.node("server")?;
    let s1 = server.udp_bind(sa(SERVER, 3478)).await?;
    let s2 = server.udp_bind(sa(SERVER, 3479)).await?;
    let s3 = server.udp_bind(sa(SERVER_ALT, 3478)).await?;
    let peer = topo.node("peer")?.udp_bind(sa(PEER, 3478)).await?;
    Ok(Lab {
        _topo: topo,
        alice,
        s1,
        s2,
        s3,
        peer,
    })
}

/// Sends from alice to `to` and returns the source address `at` saw: alice's mapping.
async fn mapping_seen(alice: &UdpSocket, at: &UdpSocket) -> Result<SocketAddr> {
    let to = at.local_addr()?;
    alice.send_to(b"outbound", to).await?;
    let (_, from) = recv_within(at, DELIVERY)
        .await
        .with_context(|| format!("alice's packet to {to} never arrived"))?;
    Ok(from)
}

/// Sends from `from` to `mapping` and reports whether alice received it.
async fn reaches_alice(alice: &UdpSocket, from: &UdpSocket, mapping: SocketAddr) -> Result<bool> {
    from.send_to(b"inbound", mapping).await?;
    Ok(recv_within(alice, DELIVERY).await.is_some())
}

struct Observed {
    same_mapping_for_other_port: bool,
    same_mapping_for_other_address: bool,
    port_preserved: bool,
    from_same_endpoint: bool,
    from_same_address_other_port: bool,
    from_other_address: bool,
}

async fn observe(nat: NatBehaviour) -> Result<Observed> {
    let l = lab(nat).await?;
    let m1 = mapping_seen(&l.alice, &l.s1).await?;
    let m2 = mapping_seen(&l.alice, &l.s2).await?;
    let m3 = mapping_seen(&l.alice, &l.s3).await?;
    // Filtering is probed on the first mapping. The peer (other address) goes first: if it were
    // let in, nothing else on the mapping would change what the next probes see.
    let from_other_address = reaches_alice(&l.alice, &l.peer, m1).await?;
    let from_same_address_other_port = reaches_alice(&l.alice, &l.s2, m1).await?;
    let from_same_endpoint = reaches_alice(&l.alice, &l.s1, m1).await?;
    Ok(Observed {
        same_mapping_for_other_port: m1 == m2,
        same_mapping_for_other_address: m1 == m3,
        port_preserved: m1.port() == 5060,
        from_same_endpoint,
        from_same_address_other_port,
        from_other_address,
    })
}

#[tokio::test]
async fn full_cone_maps_independently_and_admits_anyone() -> Result<()> {
    require_kernel!();
    let o = observe(NatType::FullCone.behaviour()).await?;
    ensure!(
        o.same_mapping_for_other_port && o.same_mapping_for_other_address,
        "EIM"
    );
    ensure!(o.port_preserved, "port 5060 preserved");
    ensure!(
        o.from_same_endpoint && o.from_same_address_other_port && o.from_other_address,
        "EIF"
    );
    Ok(())
}

#[tokio::test]
async fn restricted_cone_admits_only_addresses_alice_sent_to() -> Result<()> {
    require_kernel!();
    let o = observe(NatType::RestrictedCone.behaviour()).await?;
    ensure!(
        o.same_mapping_for_other_port && o.same_mapping_for_other_address,
        "EIM"
    );
    ensure!(
        o.from_same_endpoint && o.from_same_address_other_port,
        "ADF lets the address in"
    );
    ensure!(!o.from_other_address, "ADF keeps an unknown address out");
    Ok(())
}

#[tokio::test]
async fn port_restricted_cone_admits_only_endpoints_alice_sent_to() -> Result<()> {
    require_kernel!();
    // Alice has sent to s1 and s2 (same address, two ports): both are known endpoints, so the
    // port test needs an endpoint she has *not* sent to. Probe it on a fresh lab.
    let l = lab(NatType::PortRestrictedCone.behaviour()).await?;
    let m1 = mapping_seen(&l.alice, &l.s1).await?;
    let m3 = mapping_seen(&l.alice, &l.s3).await?;
    ensure!(
        m1 == m3 && m1.port() == 5060,
        "EIM with port preservation: {m1} vs {m3}"
    );
    ensure!(
        !reaches_alice(&l.alice, &l.s2, m1).await?,
        "APDF keeps another port of a known address out"
    );
    ensure!(
        !reaches_alice(&l.alice, &l.peer, m1).await?,
        "APDF keeps an unknown address out"
    );
    ensure!(
        reaches_alice(&l.alice, &l.s1, m1).await?,
        "APDF lets the known endpoint in"
    );
    Ok(())
}

#[tokio::test]
async fn symmetric_maps_each_destination_anew_and_admits_only_it() -> Result<()> {
    require_kernel!();
    let l = lab(NatType::Symmetric.behaviour()).await?;
    let m1 = mapping_seen(&l.alice, &l.s1).await?;
    let m2 = mapping_seen(&l.alice, &l.s2).await?;
    let m3 = mapping_seen(&l.alice, &l.s3).await?;
    ensure!(m1 != m2 && m1 != m3 && m2 != m3, "APDM: {m1} {m2} {m3}");
    ensure!(
        !reaches_alice(&l.alice, &l.s3, m1).await?,
        "APDF: s3 has its own mapping, not m1"
    );
    ensure!(
        !reaches_alice(&l.alice, &l.peer, m1).await?,
        "APDF keeps an unknown address out"
    );
    ensure!(
        reaches_alice(&l.alice, &l.s1, m1).await?,
        "the endpoint of m1 gets in"
    );
    Ok(())
}

/// The binding dies `timeout` after the last packet and not before; checked for every type with a
/// 2 s timeout, probing at 1.6 s (alive) on one lab and at 2.5 s (gone) on another, since a probe
/// that gets through refreshes the binding. conntrack's and nft's timeouts are exact to the
/// jiffy (kernel-facts: alive at 1.9 s, gone at 2.1 s); the ±0.4/0.5 s margins absorb scheduling
/// jitter of four labs running at once on two cores.
#[tokio::test]
async fn binding_lives_exactly_its_udp_timeout_for_every_type() -> Result<()> {
    require_kernel!();
    let mut checks = Vec::new();
    for t in NatType::ALL {
        checks.push(async move {
            let nat = t.behaviour().with_udp_timeout(2);
            let alive = {
                let l = lab(nat.clone()).await?;
                let m = mapping_seen(&l.alice, &l.s1).await?;
                tokio::time::sleep(Duration::from_millis(1600)).await;
                reaches_alice(&l.alice, &l.s1, m).await?
            };
            let (gone, remapped) = {
                let l = lab(nat).await?;
                let m = mapping_seen(&l.alice, &l.s1).await?;
                tokio::time::sleep(Duration::from_millis(2500)).await;
                let gone = !reaches_alice(&l.alice, &l.s1, m).await?;
                let again = mapping_seen(&l.alice, &l.s1).await?;
                (gone, again != m)
            };
            anyhow::Ok((t, alive, gone, remapped))
        });
    }
    for r in futures::future::join_all(checks).await {
        let (t, alive, gone, remapped) = r?;
        ensure!(
            alive,
            "{t}: binding must still be alive 1.6 s into a 2 s timeout"
        );
        ensure!(gone, "{t}: binding must be gone 2.5 s into a 2 s timeout");
        if t == NatType::Symmetric {
            ensure!(
                remapped,
                "{t}: a new outbound packet after expiry gets a new random port"
            );
        }
    }
    Ok(())
}

/// Outbound packets every 700 ms keep a 2 s binding alive for 4 s.
#[tokio::test]
async fn outbound_keepalives_keep_the_binding_alive() -> Result<()> {
    require_kernel!();
    for t in [NatType::PortRestrictedCone, NatType::Symmetric] {
        let l = lab(t.behaviour().with_udp_timeout(2)).await?;
        let m = mapping_seen(&l.alice, &l.s1).await?;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let again = mapping_seen(&l.alice, &l.s1).await?;
            ensure!(
                again == m,
                "{t}: keep-alives must keep the same mapping ({m} → {again})"
            );
        }
        ensure!(
            reaches_alice(&l.alice, &l.s1, m).await?,
            "{t}: still reachable after 4.2 s"
        );
    }
    Ok(())
}

/// Sends from `from` to `mapping` every 400 ms for `n` rounds; returns, per ping, how long after
/// `since` it was sent and whether it reached alice.
async fn inbound_keepalives(
    alice: &UdpSocket,
    from: &UdpSocket,
    mapping: SocketAddr,
    since: std::time::Instant,
    n: usize,
) -> Result<Vec<(Duration, bool)>> {
    let mut got = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let at = since.elapsed();
        got.push((at, reaches_alice(alice, from, mapping).await?));
    }
    Ok(got)
}

/// Linux refreshes a binding on inbound packets too: an SBC pinging a phone every 0.4 s keeps a
/// 2 s binding open without the phone ever sending again (measured: shared/kernel-facts.md).
#[tokio::test]
async fn inbound_packets_refresh_a_linux_binding() -> Result<()> {
    require_kernel!();
    let l = lab(NatType::PortRestrictedCone.behaviour().with_udp_timeout(2)).await?;
    let since = std::time::Instant::now();
    let m = mapping_seen(&l.alice, &l.s1).await?;
    let got = inbound_keepalives(&l.alice, &l.s1, m, since, 9).await?;
    ensure!(
        got.last().unwrap().0 > Duration::from_millis(3500),
        "pings must outlast the timeout"
    );
    ensure!(
        got.iter().all(|g| g.1),
        "every inbound ping must arrive: {got:?}"
    );
    Ok(())
}

/// With outbound-only refresh (many consumer routers), the same inbound pings do not keep the
/// binding: they stop arriving once the timeout has passed since alice's last packet. Margins:
/// ±300 ms around the 2 s timeout for scheduling jitter (conntrack and nft set timeouts are exact
/// to the jiffy, so the margin is all ours).
#[tokio::test]
async fn outbound_only_refresh_ignores_inbound_keepalives() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let nat = t
            .behaviour()
            .with_udp_timeout(2)
            .with_refresh(sim_nat::Refresh::OutboundOnly);
        let l = lab(nat).await?;
        let since = std::time::Instant::now();
        let m = mapping_seen(&l.alice, &l.s1).await?;
        let got = inbound_keepalives(&l.alice, &l.s1, m, since, 7).await?;
        for (at, arrived) in &got {
            if *at < Duration::from_millis(1700) {
                ensure!(
                    *arrived,
                    "{t}: a ping {at:?} after alice's packet must arrive: {got:?}"
                );
            }
            if *at > Duration::from_millis(2300) {
                ensure!(
                    !*arrived,
                    "{t}: a ping {at:?} after alice's packet must be dropped: {got:?}"
                );
            }
        }
        // Alice's own keep-alive restores it.
        let again = mapping_seen(&l.alice, &l.s1).await?;
        ensure!(
            reaches_alice(&l.alice, &l.s1, again).await?,
            "{t}: outbound refresh reopens it"
        );
        anyhow::Ok(())
    });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(())
}
