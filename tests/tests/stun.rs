//! Our STUN server and clients on real packets through real kernel NATs, and against STUN peers
//! nobody here wrote (Debian's vovida `stun`, coturn's `turnserver` and `turnutils_natdiscovery`).
//!
//! Every test builds `home_lan`: alice (192.168.1.10) behind `home` (203.0.113.1), a public
//! `server` with 203.0.113.10 and .11. Retransmissions are scaled down (RTO 100 ms, 3
//! transmissions: "no answer" after 700 ms) so the filtering tests, which wait for silence, stay
//! short; nothing is lost on a namespace link, so that is still ample.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::peers::coturn::{self, Coturn, CoturnConfig};
use harness::peers::vovida_stun::ClassicVerdict;
use harness::shapes::{self, SERVER, SERVER_ALT};
use harness::stun::driver::EventReceiver;
use harness::stun::{
    self, BindingTask, Class, ClientConfig, DiscoveryConfig, Event, KeepAlive, KeepAliveKind,
    LifetimeProbe, Message, Method, NodeEvent, RetransmitConfig, ServerConfig, StunServerTask,
    TransactionId,
};
use harness::Topology;
use sim_nat::{Filtering, Mapping, NatBehaviour, NatType, PortAllocation};
use tests::{require_kernel, sa};

/// Alice's address, and the NAT's public one.
const ALICE: &str = "192.168.1.10";
const PUBLIC: &str = "203.0.113.1";

fn fast() -> RetransmitConfig {
    RetransmitConfig {
        rto: Duration::from_millis(100),
        max_transmissions: 3,
        final_wait_factor: 4,
    }
}

fn discovery_config(local_port: u16, server: SocketAddr) -> DiscoveryConfig {
    DiscoveryConfig {
        retransmit: fast(),
        ..DiscoveryConfig::new(sa(ALICE, local_port), server)
    }
}

/// A home LAN with our RFC 5780 server on `server` (both addresses, ports 3478 and 3479).
struct Lab {
    topo: Topology,
    server: StunServerTask,
    server_events: EventReceiver,
}

async fn lab(nat: impl Into<NatBehaviour>) -> Result<Lab> {
    let topo = shapes::home_lan(nat).build().await?;
    let config = ServerConfig::rfc5780(sa(SERVER, 3478), sa(SERVER_ALT, 3479));
    let (server, server_events) = StunServerTask::spawn(topo.node("server")?, config).await?;
    Ok(Lab {
        topo,
        server,
        server_events,
    })
}

/// Everything a driver reported so far.
fn drain(rx: &mut EventReceiver) -> Vec<NodeEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Every valid mapping × filtering × port allocation: the four classic types, each with port
/// preservation on and off where sim-nat allows it, and address-dependent mapping.
fn grid() -> Vec<NatBehaviour> {
    use Filtering as F;
    use Mapping as M;
    let mut out = Vec::new();
    for m in [
        M::EndpointIndependent,
        M::AddressDependent,
        M::AddressAndPortDependent,
    ] {
        for f in [
            F::EndpointIndependent,
            F::AddressDependent,
            F::AddressAndPortDependent,
        ] {
            for p in [
                PortAllocation::Preserve,
                PortAllocation::Random,
                PortAllocation::Hash,
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
async fn discovery_reports_exactly_the_mapping_and_filtering_sim_nat_configured() -> Result<()> {
    require_kernel!();
    let points = grid();
    ensure!(points.len() == 15, "grid has {} points", points.len());
    for t in NatType::ALL {
        ensure!(points.contains(&t.behaviour()), "{t} is covered");
    }
    let runs = points.into_iter().map(|b| async move {
        let mut l = lab(b.clone()).await?;
        let alice = l.topo.node("alice")?;
        let found = stun::discover(alice, discovery_config(40000, sa(SERVER, 3478))).await?;
        let server_saw: Vec<SocketAddr> = drain(&mut l.server_events)
            .into_iter()
            .filter_map(|e| match e.event {
                Event::Answered { from, .. } => Some(from),
                _ => None,
            })
            .collect();
        anyhow::Ok((b, found, server_saw))
    });
    let mut failures = Vec::new();
    for r in futures::future::join_all(runs).await {
        let (b, found, server_saw) = r?;
        let mapped = found.mapped.context("test I got no answer")?;
        let preserved = b.ports == PortAllocation::Preserve;
        let ok = found.mapping == Some(b.mapping)
            && found.filtering == Some(b.filtering)
            && found.is_behind_nat()
            && mapped.ip().to_string() == PUBLIC
            && (mapped.port() == 40000) == preserved
            // Test I's mapping is what our server saw on the wire first.
            && server_saw.first() == Some(&mapped);
        if !ok {
            failures.push(format!(
                "configured {:?}/{:?}/{:?}: discovered {found:?}; server saw {server_saw:?}",
                b.mapping, b.filtering, b.ports
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn binding_lifetime_probe_finds_the_nat_udp_timeout() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let l = lab(t.behaviour().with_udp_timeout(3)).await?;
        let alice = l.topo.node("alice")?;
        let config = DiscoveryConfig {
            // min..max brackets 3 s; four halvings reach 0.5 s in about 10 s of waiting.
            lifetime: Some(LifetimeProbe {
                second_local: sa(ALICE, 40001),
                min: Duration::from_secs(1),
                max: Duration::from_secs(5),
                resolution: Duration::from_millis(500),
            }),
            ..discovery_config(40000, sa(SERVER, 3478))
        };
        let found = stun::discover(alice, config).await?;
        let lifetime = found.binding_lifetime.context("no lifetime measured")?;
        // RESPONSE-PORT requests reached our server from the second socket.
        let probes = l.server.stats();
        anyhow::Ok((t, lifetime, found, probes))
    });
    for r in futures::future::join_all(runs).await {
        let (t, lifetime, found, stats) = r?;
        let secs = lifetime.as_secs_f64();
        eprintln!("{t}: binding lifetime found: {secs} s");
        ensure!(
            (secs - 3.0).abs() <= 1.0,
            "{t}: lifetime {secs} s for a 3 s UDP timeout ({found:?})"
        );
        ensure!(
            found.mapping == Some(t.behaviour().mapping),
            "{t}: {found:?}"
        );
        ensure!(
            stats.requests >= 8,
            "{t}: the search ran on the server: {stats:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn vovida_stun_client_names_each_nat_type_against_our_server() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let mut l = lab(t).await?;
        let (_, out, err) = l
            .topo
            .node("alice")?
            .output("stun", &[SERVER], Duration::from_secs(30))
            .await?;
        let v = ClassicVerdict::parse(&out)
            .with_context(|| format!("{t}: stun printed no verdict:\n{out}{err}"))?;
        let classic = drain(&mut l.server_events)
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::Answered {
                        classic: true,
                        error_code: None,
                        ..
                    }
                )
            })
            .count();
        anyhow::Ok((t, v, classic))
    });
    for r in futures::future::join_all(runs).await {
        let (t, v, classic) = r?;
        ensure!(v.nat_type() == Some(t), "{t}: stun said `{}`", v.line);
        if t != NatType::Symmetric {
            ensure!(v.preserves_ports, "{t}: ports are preserved: `{}`", v.line);
        }
        ensure!(
            classic >= 3,
            "{t}: our server answered {classic} RFC 3489 requests"
        );
    }
    Ok(())
}

#[tokio::test]
async fn our_clients_agree_with_coturn() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let topo = shapes::home_lan(t).build().await?;
        let (alice, server) = (topo.node("alice")?, topo.node("server")?);
        let coturn = Coturn::start(server, CoturnConfig::stun_only(server)).await?;
        ensure!(
            coturn.primary() == sa(SERVER, 3478),
            "{:?}",
            coturn.listeners()
        );
        // The same socket asks coturn and then a server of ours on another port.
        let config = || ClientConfig {
            retransmit: fast(),
            ..ClientConfig::default()
        };
        let local = sa(ALICE, 40000);
        let by_coturn = stun::binding_with(alice, local, coturn.primary(), config(), None).await?;
        let (ours, mut ours_events) =
            StunServerTask::spawn(server, ServerConfig::new(sa(SERVER, 4478))).await?;
        let by_ours = stun::binding_with(alice, local, sa(SERVER, 4478), config(), None).await?;
        let ours_saw = drain(&mut ours_events)
            .into_iter()
            .find_map(|e| match e.event {
                Event::Answered { from, .. } => Some(from),
                _ => None,
            });
        drop(ours);
        // Our RFC 5780 client against coturn's RFC 5780 server, from a fresh socket.
        let found = stun::discover(alice, discovery_config(40001, coturn.primary())).await?;
        anyhow::Ok((t, by_coturn, by_ours, ours_saw, found))
    });
    for r in futures::future::join_all(runs).await {
        let (t, by_coturn, by_ours, ours_saw, found) = r?;
        ensure!(
            ours_saw == Some(by_ours),
            "{t}: we were told {by_ours}, the server saw {ours_saw:?}"
        );
        ensure!(
            by_coturn.ip().to_string() == PUBLIC,
            "{t}: coturn says {by_coturn}"
        );
        if t.behaviour().mapping == Mapping::EndpointIndependent {
            ensure!(
                by_coturn == sa(PUBLIC, 40000) && by_ours == by_coturn,
                "{t}: one mapping, port preserved: coturn {by_coturn}, ours {by_ours}"
            );
        }
        let b = t.behaviour();
        ensure!(
            found.mapping == Some(b.mapping) && found.filtering == Some(b.filtering),
            "{t}: our discovery against coturn found {found:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn coturn_natdiscovery_names_mapping_and_filtering_against_our_server() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let l = lab(t).await?;
        let v = coturn::natdiscovery(l.topo.node("alice")?, sa(SERVER, 3478)).await?;
        anyhow::Ok((t, v, l.server.stats()))
    });
    for r in futures::future::join_all(runs).await {
        let (t, v, stats) = r?;
        let b = t.behaviour();
        ensure!(
            v.mapping == Some(b.mapping) && v.filtering == Some(b.filtering) && !v.no_nat,
            "{t}: turnutils_natdiscovery said {:?}/{:?}:\n{}",
            v.mapping,
            v.filtering,
            v.output
        );
        ensure!(stats.success_responses >= 4, "{t}: {stats:?}");
    }
    Ok(())
}

#[tokio::test]
async fn server_counts_malformed_datagrams_and_still_answers() -> Result<()> {
    require_kernel!();
    let mut l = lab(NatType::PortRestrictedCone).await?;
    let alice = l.topo.node("alice")?;
    let sock = alice.udp_bind(sa(ALICE, 40000)).await?;
    let valid = Message::new(Class::Request, Method::BINDING, TransactionId([7; 12]))
        .encode(None, true)
        .expect("a bare Binding request encodes");
    let mut bad_fingerprint = valid.clone();
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 0xff;
    let mut padded = valid.clone();
    padded.extend_from_slice(&[0; 4]);
    let garbage: [(&str, Vec<u8>); 4] = [
        ("truncated", b"STUN?".to_vec()),
        (
            "not_stun",
            b"OPTIONS sip:alice@example.com SIP/2.0\r\n\r\n".to_vec(),
        ),
        ("fingerprint_mismatch", bad_fingerprint),
        ("length_mismatch", padded),
    ];
    for (_, bytes) in &garbage {
        sock.send_to(bytes, sa(SERVER, 3478)).await?;
    }
    drop(sock);
    // The next valid request, from the same socket, is answered.
    let config = ClientConfig {
        retransmit: fast(),
        ..ClientConfig::default()
    };
    let mapped =
        stun::binding_with(alice, sa(ALICE, 40000), sa(SERVER, 3478), config, None).await?;
    ensure!(mapped == sa(PUBLIC, 40000), "mapped {mapped}");
    let stats = l
        .server
        .wait_for_stats(|s| s.malformed == 4, Duration::from_secs(2))
        .await
        .map_err(|s| anyhow::anyhow!("server counted {s:?}"))?;
    for (kind, _) in &garbage {
        ensure!(
            stats.malformed_by_reason.get(kind) == Some(&1),
            "one `{kind}`: {stats:?}"
        );
    }
    ensure!(
        stats.requests == 1 && stats.success_responses == 1,
        "{stats:?}"
    );
    let events = drain(&mut l.server_events);
    let malformed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Malformed { from, reason } => Some((*from, reason.kind())),
            _ => None,
        })
        .collect();
    ensure!(
        malformed
            == garbage
                .iter()
                .map(|(k, _)| (sa(PUBLIC, 40000), *k))
                .collect::<Vec<_>>(),
        "malformed events, in order, from alice's mapping: {malformed:?}"
    );
    ensure!(
        events.iter().all(|e| e.node == "server"),
        "events name their node"
    );
    Ok(())
}

#[tokio::test]
async fn keepalives_faster_than_the_nat_timeout_keep_the_mapping_and_slower_ones_lose_it(
) -> Result<()> {
    require_kernel!();
    // Symmetric NAT, random ports: a lost binding comes back on another port.
    let l = lab(NatType::Symmetric.behaviour().with_udp_timeout(2)).await?;
    let alice = l.topo.node("alice")?;
    let keepalive = |secs: f64| ClientConfig {
        retransmit: fast(),
        keepalive: Some(KeepAlive {
            interval: Duration::from_secs_f64(secs),
            kind: KeepAliveKind::Request,
        }),
        ..ClientConfig::default()
    };
    let server = sa(SERVER, 3478);
    let (fast_task, mut fast_events) =
        BindingTask::spawn(alice, sa(ALICE, 40010), server, keepalive(0.8)).await?;
    let (slow_task, mut slow_events) =
        BindingTask::spawn(alice, sa(ALICE, 40011), server, keepalive(3.0)).await?;
    let start = tokio::time::Instant::now();
    let first = fast_task
        .wait_mapped(Duration::from_secs(2))
        .await
        .context("no first mapping")?;
    let slow_first = slow_task
        .wait_mapped(Duration::from_secs(2))
        .await
        .context("no first mapping")?;
    // The slow client's first refresh (at 3 s) finds its binding gone; wait for it to say so.
    let changed = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(e) = slow_events.recv().await {
            if let Event::MappingChanged {
                previous, current, ..
            } = e.event
            {
                return Some((previous, current));
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    tokio::time::sleep_until(start + Duration::from_millis(3500)).await;

    let fast_seen = drain(&mut fast_events);
    let mapped: Vec<SocketAddr> = fast_seen
        .iter()
        .filter_map(|e| match e.event {
            Event::Mapped { mapped, .. } => Some(mapped),
            _ => None,
        })
        .collect();
    ensure!(
        mapped.len() >= 4,
        "0.8 s keep-alives over 3.5 s: {mapped:?}"
    );
    ensure!(
        mapped.iter().all(|m| *m == first) && fast_task.mapped() == Some(first),
        "the mapping held: {mapped:?}"
    );
    ensure!(
        !fast_seen
            .iter()
            .any(|e| matches!(e.event, Event::MappingChanged { .. })),
        "no re-mapping"
    );

    let (previous, current) =
        changed.context("3 s keep-alives behind a 2 s timeout must see a new mapping")?;
    ensure!(
        previous == slow_first && current != previous && slow_task.mapped() == Some(current),
        "{previous} → {current}"
    );
    Ok(())
}
