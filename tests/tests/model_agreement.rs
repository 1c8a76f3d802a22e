//! The pure reference model (sim-nat's `NatModel`, virtual time) and the kernel NAT give the same
//! verdicts for the same packets.
//!
//! Each kernel run records when each packet was actually sent; the model is fed the same packets
//! at the same offsets, so scheduling jitter cannot make them disagree. Only packets within
//! `BOUNDARY` of an expiry instant are left out of the comparison: conntrack counts jiffies and
//! the model nanoseconds, so at the boundary either answer is right.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::shapes::{self, SERVER};
use harness::{probe, Topology};
use sim_nat::{
    Filtering, InputPolicy, Mapping, NatBehaviour, NatModel, NatType, PortAllocation, Refresh,
};
use tests::lab::TwoLanSockets;
use tests::{recv_within, require_kernel, sa, DELIVERY};
use tokio::net::UdpSocket;

const BOUNDARY: Duration = Duration::from_millis(150);

fn v4(s: SocketAddr) -> SocketAddrV4 {
    match s {
        SocketAddr::V4(v) => v,
        SocketAddr::V6(_) => unreachable!("the harness is IPv4"),
    }
}

fn grid() -> Vec<NatBehaviour> {
    let mut out = Vec::new();
    for m in [
        Mapping::EndpointIndependent,
        Mapping::AddressDependent,
        Mapping::AddressAndPortDependent,
    ] {
        for f in [
            Filtering::EndpointIndependent,
            Filtering::AddressDependent,
            Filtering::AddressAndPortDependent,
        ] {
            for p in [
                PortAllocation::Preserve,
                PortAllocation::Random,
                PortAllocation::Hash,
                PortAllocation::Sequential,
            ] {
                let b = NatBehaviour::new(m, f).with_ports(p);
                if b.validate().is_ok() {
                    out.push(b);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn model_and_kernel_classify_every_grid_point_alike() -> Result<()> {
    require_kernel!();
    let runs = grid().into_iter().map(|b| async move {
        let topo = shapes::home_lan(b.clone()).build().await?;
        let k = probe::observe(
            topo.node("alice")?,
            topo.node("server")?,
            topo.node("peer")?,
            40000,
        )
        .await?;
        let m = sim_nat::observe_home_lan(&b, Instant::now())?;
        anyhow::Ok((b, k, m))
    });
    let mut diffs = Vec::new();
    for r in futures::future::join_all(runs).await {
        let (b, k, m) = r?;
        if (k.mapping, k.filtering, k.port_preserved) != (m.mapping, m.filtering, m.port_preserved)
        {
            diffs.push(format!(
                "{:?}/{:?}/{:?}: kernel {:?}/{:?}/{} model {:?}/{:?}/{}",
                b.mapping,
                b.filtering,
                b.ports,
                k.mapping,
                k.filtering,
                k.port_preserved,
                m.mapping,
                m.filtering,
                m.port_preserved
            ));
        }
    }
    ensure!(
        diffs.is_empty(),
        "model and kernel disagree:\n{}",
        diffs.join("\n")
    );
    Ok(())
}

/// Kernel-facts "who sends first matters": alice's packet reaches bob's public port before bob
/// sends from it; bob's answer is remapped off that port, and the move sticks for bob's next flow —
/// in the kernel and in the model alike. Alice sits behind a full cone so she receives bob's
/// answer and can tell which port it came from.
///
/// Bob's router's own input firewall decides it (kernel-facts, "a router's own firewall decides the
/// who-sends-first collision"): with none (`accept`) conntrack keeps alice's packet as an
/// unreplied flow to the router, which takes the port; `drop` and `reject` discard it before
/// conntrack confirms the entry, so nothing is kept and bob's answer keeps its port.
#[tokio::test]
async fn model_and_kernel_agree_that_who_sends_first_moves_the_answer() -> Result<()> {
    require_kernel!();
    let runs = InputPolicy::ALL.into_iter().map(|policy| async move {
        let nat = NatType::PortRestrictedCone.behaviour().with_input(policy);
        let TwoLanSockets {
            alice,
            bob,
            server,
            topo,
        } = TwoLanSockets::build(NatType::FullCone, nat.clone()).await?;
        alice.send_to(b"first", sa("198.51.100.1", 4000)).await?;
        let k_first = recv_within(&bob, DELIVERY).await.is_some();
        // What conntrack kept of alice's unsolicited packet.
        let k_held = harness::bindings::list(topo.node("home-b")?)
            .await?
            .iter()
            .any(|b| b.direction == harness::bindings::Opened::ToRouter);
        bob.send_to(b"answer", sa("203.0.113.1", 4000)).await?;
        let (_, k_answer) = recv_within(&alice, DELIVERY)
            .await
            .context("bob's answer reaches alice")?;
        bob.send_to(b"next", sa(SERVER, 3478)).await?;
        let (_, k_next) = recv_within(&server, DELIVERY)
            .await
            .context("bob → server")?;

        let t0 = Instant::now();
        let mut m = NatModel::new(nat, "198.51.100.1".parse()?, ("192.168.2.0".parse()?, 24))?;
        let m_first = m.inbound(
            "203.0.113.1:4000".parse()?,
            "198.51.100.1:4000".parse()?,
            t0,
        );
        let m_held = !m.unsolicited(t0).is_empty();
        let m_answer = m
            .outbound(
                "192.168.2.10:4000".parse()?,
                "203.0.113.1:4000".parse()?,
                t0,
            )
            .forwarded()
            .context("model forwards bob's answer")?
            .0;
        let m_next = m
            .outbound("192.168.2.10:4000".parse()?, v4(sa(SERVER, 3478)), t0)
            .forwarded()
            .context("model forwards bob's next flow")?
            .0;
        let kernel = (
            k_first,
            k_held,
            k_answer.port() != 4000,
            k_next.port() == k_answer.port(),
        );
        let model = (
            m_first.forwarded().is_some(),
            m_held,
            m_answer.port() != 4000,
            m_next.port() == m_answer.port(),
        );
        let collision = policy == InputPolicy::Accept;
        ensure!(
            kernel == (false, collision, collision, true),
            "{policy}: kernel: first delivered / held by conntrack / answer moved / move sticks \
             = {kernel:?}"
        );
        ensure!(
            model == kernel,
            "{policy}: model {model:?} vs kernel {kernel:?}"
        );
        anyhow::Ok(())
    });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

async fn pings(
    alice: &UdpSocket,
    from: &UdpSocket,
    mapping: SocketAddr,
    t0: Instant,
    n: usize,
) -> Result<Vec<(Duration, bool)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let at = t0.elapsed();
        from.send_to(b"ping", mapping).await?;
        out.push((at, recv_within(alice, DELIVERY).await.is_some()));
    }
    Ok(out)
}

/// Inbound pings after one outbound packet, with a 2 s timeout, for every classic type and both
/// refresh directions: kernel and model admit and drop the same pings.
#[tokio::test]
async fn model_and_kernel_expire_and_refresh_bindings_alike() -> Result<()> {
    require_kernel!();
    let mut cases = Vec::new();
    for t in NatType::ALL {
        for r in [Refresh::Both, Refresh::OutboundOnly] {
            cases.push(t.behaviour().with_udp_timeout(2).with_refresh(r));
        }
    }
    let runs = cases.into_iter().map(|b| async move {
        let topo: Topology = shapes::home_lan(b.clone()).build().await?;
        let alice = topo
            .node("alice")?
            .udp_bind(sa("192.168.1.10", 5060))
            .await?;
        let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
        let t0 = Instant::now();
        alice.send_to(b"out", sa(SERVER, 3478)).await?;
        let (_, mapping) = recv_within(&server, DELIVERY).await.context("outbound")?;
        let kernel = pings(&alice, &server, mapping, t0, 9).await?;

        let mut model = NatModel::new(
            b.clone(),
            "203.0.113.1".parse()?,
            ("192.168.1.0".parse()?, 24),
        )?;
        let m_map = model
            .outbound("192.168.1.10:5060".parse()?, v4(sa(SERVER, 3478)), t0)
            .forwarded()
            .context("model maps alice")?
            .0;
        let mut diffs = Vec::new();
        let mut last_admitted = Duration::ZERO;
        for (at, k_ok) in &kernel {
            let m_ok = model
                .inbound(v4(sa(SERVER, 3478)), m_map, t0 + *at)
                .forwarded()
                .is_some();
            // The instant the binding would expire, as either side counts it.
            let expiry = if b.refresh == Refresh::Both {
                last_admitted
            } else {
                Duration::ZERO
            } + Duration::from_secs(2);
            let near = at.abs_diff(expiry) < BOUNDARY;
            if m_ok != *k_ok && !near {
                diffs.push(format!("ping at {at:?}: kernel {k_ok}, model {m_ok}"));
            }
            if *k_ok {
                last_admitted = *at;
            }
        }
        anyhow::Ok((b, kernel, diffs))
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(runs).await {
        let (b, kernel, diffs) = r?;
        if !diffs.is_empty() {
            all.push(format!(
                "{:?}/{:?} {:?}: {}\n  kernel {kernel:?}",
                b.mapping,
                b.filtering,
                b.refresh,
                diffs.join("; ")
            ));
        }
    }
    ensure!(
        all.is_empty(),
        "model and kernel disagree:\n{}",
        all.join("\n")
    );
    Ok(())
}

/// What one forward run observed, kernel or model alike: each a delivery or a source port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ForwardRun {
    /// The server's packet to the forwarded WAN port 10000, before the pbx sent anything.
    inbound_first_delivered: bool,
    /// The pbx's answer from 10000, as the server sees its source port.
    answer_port: u16,
    /// The pbx sending first from forwarded port 10001, to the peer and then to the server.
    outbound_first_ports: (u16, u16),
    /// The pbx's SIP port 5060 (not forwarded) kept its number.
    unforwarded_kept: bool,
    /// Alice's port 10002 (forwarded range, another host) kept its number.
    other_host_kept: bool,
    /// The peer's packet to WAN port 9999 (not forwarded) delivered anywhere.
    unforwarded_delivered: bool,
    /// After every flow went idle past the timeout: the peer's packet to WAN port 10005.
    after_idle_delivered: bool,
}

/// A forward of UDP 10000–20000 to `pbx`, measured on the kernel and asked of the model: an
/// inbound packet to a forwarded port reaches the host before it sent anything, whatever the
/// filtering or refresh; what it sends from a forwarded port keeps the port even behind a NAT
/// that randomises every other flow's; nothing else changes.
#[tokio::test]
async fn model_and_kernel_agree_on_port_forwards() -> Result<()> {
    require_kernel!();
    let cases = [
        NatType::PortRestrictedCone.behaviour().with_udp_timeout(2),
        NatType::Symmetric.behaviour().with_udp_timeout(2),
        NatType::Symmetric
            .behaviour()
            .with_udp_timeout(2)
            .with_refresh(Refresh::OutboundOnly),
        NatType::FullCone.behaviour().with_udp_timeout(2),
    ];
    let runs = cases.into_iter().map(|b| async move {
        let topo = shapes::home_lan(b.clone())
            .host("pbx", "home", "192.168.1.20")
            .forward("home", 10000, 20000, "192.168.1.20")
            .build()
            .await?;
        let kernel = forward_run_kernel(&topo).await?;
        let model = forward_run_model(&b)?;
        anyhow::Ok((b, kernel, model))
    });
    let mut diffs = Vec::new();
    for r in futures::future::join_all(runs).await {
        let (b, kernel, model) = r?;
        eprintln!(
            "{:?}/{:?} {:?}: kernel {kernel:?}",
            b.mapping, b.filtering, b.refresh
        );
        // The fixed expectations: what a forward is for.
        ensure!(
            kernel.inbound_first_delivered && kernel.answer_port == 10000,
            "{b:?}: kernel {kernel:?}"
        );
        ensure!(
            kernel.outbound_first_ports == (10001, 10001),
            "{b:?}: kernel {kernel:?}"
        );
        ensure!(kernel.after_idle_delivered, "{b:?}: kernel {kernel:?}");
        if kernel != model {
            diffs.push(format!(
                "{:?}/{:?} {:?}:\n  kernel {kernel:?}\n  model  {model:?}",
                b.mapping, b.filtering, b.refresh
            ));
        }
    }
    ensure!(
        diffs.is_empty(),
        "model and kernel disagree:\n{}",
        diffs.join("\n")
    );
    Ok(())
}

async fn forward_run_kernel(topo: &Topology) -> Result<ForwardRun> {
    let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    let peer = topo.node("peer")?.udp_bind(sa(shapes::PEER, 4000)).await?;
    let pbx_node = topo.node("pbx")?;
    let rtp = pbx_node.udp_bind(sa("192.168.1.20", 10000)).await?;
    let rtp2 = pbx_node.udp_bind(sa("192.168.1.20", 10001)).await?;
    let sip = pbx_node.udp_bind(sa("192.168.1.20", 5060)).await?;
    let late = pbx_node.udp_bind(sa("192.168.1.20", 10005)).await?;
    let alice = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 10002))
        .await?;
    let wan = |port| sa("203.0.113.1", port);

    server.send_to(b"first", wan(10000)).await?;
    let inbound_first_delivered = recv_within(&rtp, DELIVERY).await.is_some();
    rtp.send_to(b"answer", sa(SERVER, 3478)).await?;
    let (_, answer) = recv_within(&server, DELIVERY)
        .await
        .context("the pbx's answer reaches the server")?;
    rtp2.send_to(b"out", sa(shapes::PEER, 4000)).await?;
    let (_, to_peer) = recv_within(&peer, DELIVERY).await.context("pbx → peer")?;
    rtp2.send_to(b"out", sa(SERVER, 3478)).await?;
    let (_, to_server) = recv_within(&server, DELIVERY)
        .await
        .context("pbx → server")?;
    sip.send_to(b"register", sa(SERVER, 3478)).await?;
    let (_, sip_mapped) = recv_within(&server, DELIVERY)
        .await
        .context("pbx sip → server")?;
    alice.send_to(b"hello", sa(SERVER, 3478)).await?;
    let (_, alice_mapped) = recv_within(&server, DELIVERY)
        .await
        .context("alice → server")?;
    peer.send_to(b"probe", wan(9999)).await?;
    let unforwarded_delivered = recv_within(&sip, DELIVERY).await.is_some()
        || recv_within(&alice, Duration::from_millis(50))
            .await
            .is_some();
    // Every flow idle past the 2 s timeout (and its outbound-only guard), then a stranger.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    peer.send_to(b"late", wan(10005)).await?;
    let after_idle_delivered = recv_within(&late, DELIVERY).await.is_some();
    Ok(ForwardRun {
        inbound_first_delivered,
        answer_port: answer.port(),
        outbound_first_ports: (to_peer.port(), to_server.port()),
        unforwarded_kept: sip_mapped.port() == 5060,
        other_host_kept: alice_mapped.port() == 10002,
        unforwarded_delivered,
        after_idle_delivered,
    })
}

fn forward_run_model(b: &NatBehaviour) -> Result<ForwardRun> {
    let mut m = NatModel::new(
        b.clone(),
        "203.0.113.1".parse()?,
        ("192.168.1.0".parse()?, 24),
    )?
    .with_forwards(vec![sim_nat::PortForward::udp(
        10000,
        20000,
        "192.168.1.20".parse()?,
    )])?;
    let t0 = Instant::now();
    let server = v4(sa(SERVER, 3478));
    let peer = v4(sa(shapes::PEER, 4000));
    let wan = |port| SocketAddrV4::new("203.0.113.1".parse().expect("address"), port);
    let pbx = |port| SocketAddrV4::new("192.168.1.20".parse().expect("address"), port);
    let out_port = |m: &mut NatModel, src, dst| -> Result<u16> {
        Ok(m.outbound(src, dst, t0)
            .forwarded()
            .context("the model forwards an outbound packet")?
            .0
            .port())
    };
    let inbound_first_delivered = m.inbound(server, wan(10000), t0).forwarded().is_some();
    let answer_port = out_port(&mut m, pbx(10000), server)?;
    let outbound_first_ports = (
        out_port(&mut m, pbx(10001), peer)?,
        out_port(&mut m, pbx(10001), server)?,
    );
    let unforwarded_kept = out_port(&mut m, pbx(5060), server)? == 5060;
    let other_host_kept = out_port(&mut m, "192.168.1.10:10002".parse()?, server)? == 10002;
    let unforwarded_delivered = m.inbound(peer, wan(9999), t0).forwarded().is_some();
    let after_idle_delivered = m
        .inbound(peer, wan(10005), t0 + Duration::from_millis(2600))
        .forwarded()
        .is_some();
    Ok(ForwardRun {
        inbound_first_delivered,
        answer_port,
        outbound_first_ports,
        unforwarded_kept,
        other_host_kept,
        unforwarded_delivered,
        after_idle_delivered,
    })
}

/// The forward's other rules on the kernel: with hairpinning, alice on the LAN reaches the pbx
/// at the public address and forwarded port, and the pbx sees her public mapping (REQ-9), as
/// the model says; a `blocked-udp-ports` firewall over the same range still drops alice's own
/// RTP-range traffic but lets the forwarded host's through both ways.
#[tokio::test]
async fn a_forward_loops_back_with_hairpinning_and_opens_a_blocked_range_for_its_host() -> Result<()>
{
    require_kernel!();
    let b = NatType::PortRestrictedCone
        .behaviour()
        .with_hairpinning(true)
        .with_blocked_udp_ports(10000, 20000);
    let topo = shapes::home_lan(b.clone())
        .host("pbx", "home", "192.168.1.20")
        .forward("home", 10000, 20000, "192.168.1.20")
        .build()
        .await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    let pbx = topo
        .node("pbx")?
        .udp_bind(sa("192.168.1.20", 10000))
        .await?;
    let alice_node = topo.node("alice")?;
    let alice = alice_node.udp_bind(sa("192.168.1.10", 4000)).await?;
    let alice_rtp = alice_node.udp_bind(sa("192.168.1.10", 10002)).await?;

    alice.send_to(b"loop", sa("203.0.113.1", 10000)).await?;
    let (_, k_hairpin_from) = recv_within(&pbx, DELIVERY)
        .await
        .context("alice's packet to the public forwarded port reaches the pbx")?;
    server.send_to(b"in", sa("203.0.113.1", 10000)).await?;
    let k_in = recv_within(&pbx, DELIVERY).await.is_some();
    pbx.send_to(b"out", sa(SERVER, 3478)).await?;
    let k_out = recv_within(&server, DELIVERY).await.map(|(_, a)| a);
    alice_rtp.send_to(b"blocked", sa(SERVER, 3478)).await?;
    let k_alice_rtp = recv_within(&server, DELIVERY).await.is_some();

    let mut m = NatModel::new(b, "203.0.113.1".parse()?, ("192.168.1.0".parse()?, 24))?
        .with_forwards(vec![sim_nat::PortForward::udp(
            10000,
            20000,
            "192.168.1.20".parse()?,
        )])?;
    let m_hairpin = m
        .outbound(
            "192.168.1.10:4000".parse()?,
            "203.0.113.1:10000".parse()?,
            Instant::now(),
        )
        .forwarded()
        .context("the model hairpins to the forward")?;
    ensure!(
        m_hairpin == (v4(k_hairpin_from), "192.168.1.20:10000".parse()?),
        "hairpin: kernel from {k_hairpin_from}, model {m_hairpin:?}"
    );
    ensure!(
        k_hairpin_from == sa("203.0.113.1", 4000),
        "the pbx sees alice's public mapping: {k_hairpin_from}"
    );
    ensure!(k_in, "the forwarded range is open inbound for the pbx");
    ensure!(
        k_out == Some(sa("203.0.113.1", 10000)),
        "the pbx's RTP leaves through the firewall from its port: {k_out:?}"
    );
    ensure!(
        !k_alice_rtp,
        "alice's own RTP-range port is still blocked by the firewall"
    );
    Ok(())
}
