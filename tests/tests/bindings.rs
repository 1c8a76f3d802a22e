//! A router's bindings can be listed, expired on demand, flushed, and watched.

use std::net::SocketAddrV4;

use anyhow::{ensure, Context, Result};
use harness::bindings::{self, BindingEvent, BindingWatch, Opened};
use harness::shapes::{self, SERVER};
use sim_nat::NatType;
use tests::{recv_within, require_kernel, sa, DELIVERY};

fn alice() -> SocketAddrV4 {
    "192.168.1.10:5060".parse().unwrap()
}

#[tokio::test]
async fn a_routers_bindings_list_alices_flow() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone.behaviour().with_udp_timeout(30))
        .build()
        .await?;
    let a = topo.node("alice")?.udp_bind(alice().into()).await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    a.send_to(b"x", sa(SERVER, 3478)).await?;
    recv_within(&s, DELIVERY).await.context("delivered")?;
    let list = bindings::list(topo.node("home")?).await?;
    let b = list
        .iter()
        .find(|b| b.internal == alice())
        .with_context(|| format!("alice's binding missing from {list:?}"))?;
    ensure!(b.external == "203.0.113.1:5060".parse()?, "{b}");
    ensure!(b.remote == "203.0.113.10:3478".parse()?, "{b}");
    ensure!(b.direction == Opened::Outbound && !b.replied, "{b}");
    ensure!((28..=30).contains(&b.seconds_left), "{b}");
    Ok(())
}

/// "The router forgets alice's binding now": the very next inbound packet is dropped, for a
/// port-restricted NAT (conntrack alone) and a full-cone one (whose learnt map must forget too).
#[tokio::test]
async fn an_expired_binding_drops_the_very_next_inbound_packet() -> Result<()> {
    require_kernel!();
    for t in [NatType::PortRestrictedCone, NatType::FullCone] {
        let topo = shapes::home_lan(t).build().await?;
        let a = topo.node("alice")?.udp_bind(alice().into()).await?;
        let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
        a.send_to(b"register", sa(SERVER, 3478)).await?;
        let (_, m) = recv_within(&s, DELIVERY).await.context("outbound")?;
        s.send_to(b"before", m).await?;
        ensure!(
            recv_within(&a, DELIVERY).await.is_some(),
            "{t}: reachable before"
        );
        let n = bindings::expire(topo.node("home")?, alice()).await?;
        ensure!(n == 1, "{t}: one binding expired, got {n}");
        s.send_to(b"INVITE", m).await?;
        ensure!(
            recv_within(&a, DELIVERY).await.is_none(),
            "{t}: the next inbound packet must be dropped"
        );
        ensure!(bindings::list(topo.node("home")?)
            .await?
            .iter()
            .all(|b| b.internal != alice()));
    }
    Ok(())
}

#[tokio::test]
async fn a_flush_forgets_every_binding_like_a_reboot() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::FullCone).build().await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    let mut socks = Vec::new();
    for p in 5060..5063 {
        let a = topo.node("alice")?.udp_bind(sa("192.168.1.10", p)).await?;
        a.send_to(b"x", sa(SERVER, 3478)).await?;
        recv_within(&s, DELIVERY).await.context("delivered")?;
        socks.push(a);
    }
    ensure!(bindings::list(topo.node("home")?).await?.len() >= 3);
    bindings::flush(topo.node("home")?).await?;
    ensure!(bindings::list(topo.node("home")?).await?.is_empty());
    s.send_to(b"x", sa("203.0.113.1", 5060)).await?;
    ensure!(
        recv_within(&socks[0], DELIVERY).await.is_none(),
        "full cone must have forgotten too"
    );
    Ok(())
}

#[tokio::test]
async fn binding_creation_and_removal_are_seen_as_events() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone)
        .build()
        .await?;
    let home = topo.node("home")?;
    let watch = BindingWatch::start(home).await?;
    let a = topo.node("alice")?.udp_bind(alice().into()).await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    a.send_to(b"x", sa(SERVER, 3478)).await?;
    recv_within(&s, DELIVERY).await.context("delivered")?;
    bindings::expire(home, alice()).await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ev = watch.events();
    let created = ev
        .iter()
        .any(|e| matches!(e, BindingEvent::Created { binding, .. } if binding.internal == alice()));
    let destroyed = ev.iter().any(
        |e| matches!(e, BindingEvent::Destroyed { binding, .. } if binding.internal == alice()),
    );
    ensure!(
        created && destroyed,
        "expected NEW and DESTROY for alice, got {ev:?}"
    );
    Ok(())
}

/// Binding events land in the trace between the packets that caused them.
#[tokio::test]
async fn binding_events_appear_in_the_trace_in_order() -> Result<()> {
    use harness::capture::Capture;
    use harness::trace::{Entry, Ladder, Trace};
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone)
        .build()
        .await?;
    let home = topo.node("home")?;
    let watch = BindingWatch::start(home).await?;
    let cap = Capture::start(&topo).await?;
    let a = topo.node("alice")?.udp_bind(alice().into()).await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    a.send_to(b"x", sa(SERVER, 3478)).await?;
    let (_, m) = recv_within(&s, DELIVERY).await.context("delivered")?;
    bindings::expire(home, alice()).await?;
    s.send_to(b"after expiry", m).await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut trace = Trace::from_frames(&cap.stop().await);
    watch.add_to(&mut trace, "home");
    let lines: Vec<String> = trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Event { text, .. } => Some(format!("event {text}")),
            Entry::Packet {
                vantage, payload, ..
            } if vantage.label() == "home:wan" => Some(format!("wan {payload:?}")),
            _ => None,
        })
        .collect();
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let created = pos("binding 192.168.1.10:5060 → 203.0.113.1:5060 created")
        .context(format!("{lines:#?}"))?;
    let removed = pos("removed").context(format!("{lines:#?}"))?;
    let first_out = pos("wan Udp").context(format!("{lines:#?}"))?;
    ensure!(
        created <= first_out + 1 && removed > first_out,
        "order: {lines:#?}"
    );
    let ladder = Ladder::new(&trace).render();
    ensure!(
        ladder.contains("** binding 192.168.1.10:5060 → 203.0.113.1:5060 removed"),
        "{ladder}"
    );
    Ok(())
}

/// A binding that timed out is shown expired at its timeout after the last packet that
/// refreshed it — here the server's answer, as Linux refreshes on both directions — and the
/// later destroy event, when the server's next packet makes conntrack look, is marked as the
/// moment conntrack noticed, not as what that packet did.
#[tokio::test]
async fn an_expiry_is_shown_at_the_timeout_after_the_last_refresh_not_when_conntrack_notices(
) -> Result<()> {
    use harness::capture::Capture;
    use harness::trace::{Entry, Trace};
    use std::time::Duration;
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone.behaviour().with_udp_timeout(1))
        .build()
        .await?;
    let home = topo.node("home")?;
    let watch = BindingWatch::start(home).await?;
    let cap = Capture::start(&topo).await?;
    let a = topo.node("alice")?.udp_bind(alice().into()).await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?;
    a.send_to(b"register", sa(SERVER, 3478)).await?;
    let (_, m) = recv_within(&s, DELIVERY).await.context("delivered")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.send_to(b"answer", m).await?;
    recv_within(&a, DELIVERY)
        .await
        .context("answer delivered")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.send_to(b"late", m).await?;
    ensure!(
        recv_within(&a, Duration::from_millis(300)).await.is_none(),
        "the binding must be gone"
    );
    let frames = cap.stop().await;
    let mut trace = Trace::from_frames(&frames);
    watch.add_to(&mut trace, "home");
    let at_of = |needle: &str| {
        trace.entries().iter().find_map(|e| match e {
            Entry::Event { at, text, .. } if text.contains(needle) => Some(*at),
            _ => None,
        })
    };
    let wan_in = |body: &[u8]| {
        frames.iter().find_map(|f| {
            let (_, _, p) = harness::trace::udp_of(f)?;
            (f.vantage.label() == "home:wan"
                && f.direction == harness::capture::Direction::In
                && p == body)
                .then_some(f.at)
        })
    };
    let answer = wan_in(b"answer").context("answer captured")?;
    let late = wan_in(b"late").context("late packet captured")?;
    let events: Vec<String> = trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Event { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    let expired = at_of("203.0.113.1:5060 (remote 203.0.113.10:3478) expired (timeout 1 s")
        .with_context(|| format!("{events:#?}"))?;
    let noticed = at_of("conntrack noticed the expiry of binding 192.168.1.10:5060")
        .with_context(|| format!("{events:#?}"))?;
    let after_answer = expired.duration_since(answer)?;
    ensure!(
        (Duration::from_millis(950)..Duration::from_millis(1100)).contains(&after_answer),
        "expired {after_answer:?} after the answer, not 1 s: {events:#?}"
    );
    ensure!(
        expired < late && noticed >= expired,
        "expired before the late packet, noticed after it expired: {events:#?}"
    );
    Ok(())
}
