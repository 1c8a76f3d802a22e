//! Our SIP UA and registrar/proxy on real packets through real kernel NATs (failure catalogue
//! item 1, both faces, and item 3), and against SIPp, a SIP stack nobody here wrote.
//!
//! T1 is scaled to 50 ms, so Timer B (the 408 of the field) fires at 64·T1 = 3.2 s. Topologies
//! come from `shapes`: `two_lans` puts alice (192.168.1.10) behind `home-a` (203.0.113.1) and bob
//! (192.168.2.10) behind `home-b` (198.51.100.1); the proxy listens on `server` 203.0.113.10:5060.
//! The internet core swallows packets to private addresses without an ICMP error, as the internet
//! does. The kernel SIP helper stays off everywhere (it would keep expiring flows alive).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::future::join_all;
use harness::peers::sipp::{Scenario, Sipp, SippVerdict};
use harness::shapes::{self, PEER, SERVER};
use harness::sip::{
    ContactSource, Datagram, Direction, Event, KeepAlive, NatHandling, Ping, ProxyConfig,
    ProxyTask, UaConfig, UaTask,
};
use harness::stun::{self, ServerConfig, StunServerTask};
use harness::{Node, Topology};
use sim_nat::Refresh;
use tests::lab::{
    self, call_settles, phone, prc, proxy_config, register, symmetric, timer_b, Lab, ALICE, BOB,
    HOME_A, HOME_B, STEP, T1,
};
use tests::{recv_within, require_kernel, sa, DELIVERY};

/// Slack for "at T": timers and scheduling on a busy 2-CPU runner run late, never early.
const LATE: Duration = Duration::from_millis(400);

/// A proxy on `server`, alice behind `home-a` and bob behind `home-b`.
async fn lab(topo: Topology, nat: NatHandling, alice: UaConfig, bob: UaConfig) -> Result<Lab> {
    lab_with(topo, proxy_config(nat), alice, bob).await
}

async fn lab_with(
    topo: Topology,
    proxy: ProxyConfig,
    alice: UaConfig,
    bob: UaConfig,
) -> Result<Lab> {
    Lab::new(topo, proxy)
        .await?
        .phone("alice", alice)
        .await?
        .phone("bob", bob)
        .await
}

/// Alice calls bob; the call rings, connects both ways, and alice's BYE ends it on both sides.
async fn complete_call(alice: &UaTask, bob: &UaTask) -> Result<String> {
    let call = lab::complete_call(alice, bob, "bob").await?;
    ensure!(
        saw(
            alice,
            |e| matches!(e, Event::CallRinging { call_id } if *call_id == call)
        ),
        "alice's call never rang"
    );
    Ok(call)
}

/// Waits for alice's call to fail; returns the status and how long after her first INVITE left.
async fn call_fails(alice: &UaTask, call: &str) -> Result<(u16, Duration)> {
    let (status, at) = lab::call_fails(alice, call).await?;
    let sent = first_sent(alice, "INVITE").context("alice sent no INVITE")?;
    Ok((status, at - sent))
}

fn first_sent(ua: &UaTask, method: &str) -> Option<Instant> {
    ua.datagrams()
        .into_iter()
        .find(|d| d.direction == Direction::Sent && d.is_request(method))
        .map(|d| d.at)
}

/// Send times of `method` requests `from` a machine `to` an address, relative to the first.
fn sent_offsets(datagrams: &[Datagram], method: &str, to: SocketAddr) -> Vec<Duration> {
    let at: Vec<Instant> = datagrams
        .iter()
        .filter(|d| d.direction == Direction::Sent && d.is_request(method) && d.remote == to)
        .map(|d| d.at)
        .collect();
    at.iter().map(|t| *t - at[0]).collect()
}

/// Timer A: the INVITE at 0, then after T1, 2·T1, 4·T1, … until Timer B: 0, 1, 3, 7, 15, 31, 63
/// times T1.
fn ensure_timer_a(offsets: &[Duration], what: &str) -> Result<()> {
    let expected = [0u32, 1, 3, 7, 15, 31, 63].map(|k| T1 * k);
    ensure!(
        offsets.len() == expected.len()
            && offsets
                .iter()
                .zip(expected)
                .all(|(got, want)| *got + Duration::from_millis(5) >= want && *got <= want + LATE),
        "{what}: INVITE sent at {offsets:?}, expected Timer A doubling from T1: {expected:?}"
    );
    Ok(())
}

fn received_statuses(ua: &UaTask) -> Vec<u16> {
    ua.datagrams()
        .iter()
        .filter(|d| d.direction == Direction::Received)
        .filter_map(Datagram::status)
        .collect()
}

fn saw(ua: &UaTask, what: impl Fn(&Event) -> bool) -> bool {
    ua.events().iter().any(|e| what(&e.event))
}

/// ICMP messages received by `node` so far (`Icmp: InMsgs` of its namespace).
async fn icmp_in(node: &Node) -> Result<u64> {
    // /proc/self is the process's main thread; the worker thread is the one in the namespace.
    let snmp = node
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .await??;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (lines.next(), lines.next());
    let (names, values) = names.zip(values).context("no Icmp lines in snmp")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InMsgs")
        .and_then(|(_, v)| v.parse().ok())
        .context("no Icmp InMsgs")
}

#[tokio::test]
async fn a_literal_registrar_sends_the_invite_to_bobs_private_contact_and_alice_gets_100_then_408_at_64_t1(
) -> Result<()> {
    require_kernel!();
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    let l = lab(
        topo,
        NatHandling::LITERAL,
        phone("alice", ALICE, 11),
        phone("bob", BOB, 22),
    )
    .await?;
    register(l.ua("bob")).await?;
    let private = sa(BOB, 5060);
    let binding = l.proxy.binding("bob").await?.context("bob is bound")?;
    ensure!(binding.target == private, "{binding:?}");
    let icmp_before = icmp_in(l.topo.node("server")?).await?;

    let call = l.ua("alice").call("bob").await?;
    let (status, after) = call_fails(l.ua("alice"), &call).await?;
    ensure!(status == 408, "alice's call failed with {status}, not 408");
    ensure!(
        after >= timer_b() && after <= timer_b() + LATE,
        "408 came {after:?} after the INVITE; Timer B is {:?}",
        timer_b()
    );
    // What alice saw: 100 Trying at once, then the proxy's 408, nothing else, no ringing.
    ensure!(
        received_statuses(l.ua("alice")) == [100, 408],
        "{:?}",
        l.ua("alice").datagrams()
    );
    ensure!(!saw(l.ua("alice"), |e| matches!(
        e,
        Event::CallRinging { .. }
    )));
    // The proxy's INVITE and its Timer A retransmissions really left for 192.168.2.10…
    let proxy_sent = l.proxy.datagrams();
    ensure_timer_a(&sent_offsets(&proxy_sent, "INVITE", private), "proxy")?;
    ensure!(
        l.proxy.wire_stats().send_errors == 0,
        "no route is not what the internet does: {:?}",
        l.proxy.wire_stats()
    );
    ensure!(l.proxy.stats().timeouts == 1);
    // …and vanished: bob never got one, and no ICMP error came back to the proxy's host.
    ensure!(
        !l.ua("bob")
            .datagrams()
            .iter()
            .any(|d| d.is_request("INVITE")),
        "{:?}",
        l.ua("bob").datagrams()
    );
    ensure!(!saw(l.ua("bob"), |e| matches!(
        e,
        Event::IncomingCall { .. }
    )));
    let icmp = icmp_in(l.topo.node("server")?).await? - icmp_before;
    ensure!(icmp == 0, "{icmp} ICMP message(s) reached the proxy's host");
    eprintln!(
        "408 at {after:?} after the INVITE (64·T1 = {:?}); proxy INVITEs to {private} at {:?}",
        timer_b(),
        sent_offsets(&proxy_sent, "INVITE", private)
    );
    Ok(())
}

/// Bob behind `bob_nat` registers at a FarEnd registrar, then alice calls him through it: the
/// call completes, and the registrar bound bob at the returned address.
async fn far_end_call(bob_nat: sim_nat::NatBehaviour, what: &str) -> Result<SocketAddr> {
    let topo = shapes::two_lans(prc(), bob_nat).build().await?;
    let l = lab(
        topo,
        NatHandling::FAR_END,
        phone("alice", ALICE, 11),
        phone("bob", BOB, 22),
    )
    .await?;
    register(l.ua("bob")).await?;
    let binding = l.proxy.binding("bob").await?.context("bob is bound")?;
    complete_call(l.ua("alice"), l.ua("bob"))
        .await
        .with_context(|| format!("{what}, bob bound at {}", binding.target))?;
    Ok(binding.target)
}

/// Fix 1: the registrar stores where the REGISTER came from.
async fn far_end_registrar() -> Result<()> {
    let target = far_end_call(prc(), "FarEnd").await?;
    ensure!(target == sa(HOME_B, 5060), "bound at {target}");
    Ok(())
}

/// Fix 2: bob learns his public address with STUN on his SIP port and writes it into Contact,
/// so even the literal registrar reaches him.
async fn stun_discovered_contact() -> Result<()> {
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    let server = topo.node("server")?;
    let (_stun, _) = StunServerTask::spawn(server, ServerConfig::new(sa(SERVER, 3478))).await?;
    let mapped = stun::binding(topo.node("bob")?, sa(BOB, 5060), sa(SERVER, 3478)).await?;
    ensure!(mapped == sa(HOME_B, 5060), "STUN mapped {mapped}");
    let bob = UaConfig {
        contact: ContactSource::Discovered,
        ..phone("bob", BOB, 22)
    };
    let l = lab(topo, NatHandling::LITERAL, phone("alice", ALICE, 11), bob).await?;
    l.ua("bob").set_discovered_address(mapped).await?;
    register(l.ua("bob")).await?;
    let binding = l.proxy.binding("bob").await?.context("bob is bound")?;
    ensure!(binding.target == mapped, "{binding:?}");
    complete_call(l.ua("alice"), l.ua("bob"))
        .await
        .context("STUN")?;
    Ok(())
}

/// Fix 3: behind a symmetric NAT only the source port works; FarEnd stores it, rport answers it.
async fn symmetric_nat_far_end_with_rport() -> Result<()> {
    let target = far_end_call(symmetric(), "symmetric").await?;
    ensure!(
        target.ip() == HOME_B.parse::<std::net::IpAddr>()?,
        "bound at {target}"
    );
    Ok(())
}

#[tokio::test]
async fn far_end_registration_a_stun_discovered_contact_and_rport_behind_symmetric_nat_each_complete_the_call(
) -> Result<()> {
    require_kernel!();
    let [far_end, stun, symmetric] = <[_; 3]>::try_from(
        join_all([
            Box::pin(far_end_registrar())
                as std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>,
            Box::pin(stun_discovered_contact()),
            Box::pin(symmetric_nat_far_end_with_rport()),
        ])
        .await,
    )
    .expect("three cases");
    far_end.context("FarEnd registrar")?;
    stun.context("STUN-discovered Contact")?;
    symmetric.context("symmetric NAT + FarEnd + rport")?;
    Ok(())
}

/// Alice behind a symmetric NAT (random port) calls bob through a FarEnd proxy.
async fn outgoing_call(rport: bool) -> Result<Lab> {
    let topo = shapes::two_lans(symmetric(), prc()).build().await?;
    let alice = UaConfig {
        rport,
        ..phone("alice", ALICE, 11)
    };
    let l = lab(topo, NatHandling::FAR_END, alice, phone("bob", BOB, 22)).await?;
    register(l.ua("bob")).await?;
    Ok(l)
}

async fn without_rport_responses_are_lost() -> Result<String> {
    let l = outgoing_call(false).await?;
    let icmp_before = icmp_in(l.topo.node("server")?).await?;
    let call = l.ua("alice").call("bob").await?;
    let (status, after) = call_fails(l.ua("alice"), &call).await?;
    ensure!(status == 408, "failed with {status}");
    ensure!(
        after >= timer_b() && after <= timer_b() + LATE,
        "408 {after:?} after the INVITE"
    );
    ensure_timer_a(
        &sent_offsets(&l.ua("alice").datagrams(), "INVITE", sa(SERVER, 5060)),
        "alice",
    )?;
    // The proxy answered, to the Via port on the NAT's address, which the NAT never opened:
    // not even 100 Trying came back.
    let via_port = sa(HOME_A, 5060);
    ensure!(
        l.proxy
            .datagrams()
            .iter()
            .any(|d| d.direction == Direction::Sent
                && d.remote == via_port
                && d.status() == Some(100)),
        "{:?}",
        l.proxy.datagrams()
    );
    ensure!(
        l.ua("alice").wire_stats().received == 0,
        "{:?}",
        l.ua("alice").datagrams()
    );
    // Unlike the internet core, alice's router refuses them (ICMP port unreachable: nothing
    // listens on 203.0.113.1:5060). This is also the control that shows the ICMP counter of the
    // 408 test works. The proxy's unconnected socket is not told, and the proxy carries on.
    let icmp = icmp_in(l.topo.node("server")?).await? - icmp_before;
    ensure!(
        icmp >= 1,
        "the NAT's port unreachables did not reach the proxy's host"
    );
    ensure!(
        l.proxy.wire_stats().recv_errors == 0,
        "{:?}",
        l.proxy.wire_stats()
    );
    Ok(format!(
        "{after:?}, {icmp} ICMP port unreachable from the NAT"
    ))
}

async fn with_rport_the_call_completes() -> Result<()> {
    let l = outgoing_call(true).await?;
    complete_call(l.ua("alice"), l.ua("bob")).await?;
    let invites = sent_offsets(&l.ua("alice").datagrams(), "INVITE", sa(SERVER, 5060));
    ensure!(invites.len() == 1, "INVITE retransmitted: {invites:?}");
    Ok(())
}

#[tokio::test]
async fn behind_a_symmetric_nat_a_caller_without_rport_retransmits_until_408_and_with_rport_connects(
) -> Result<()> {
    require_kernel!();
    let (without, with) = futures::join!(
        without_rport_responses_are_lost(),
        with_rport_the_call_completes()
    );
    let at = without.context("without rport")?;
    with.context("with rport")?;
    eprintln!("without rport: 408 at {at} (64·T1 = {:?})", timer_b());
    Ok(())
}

/// Datagrams that are not acceptable SIP, as a capture would show them.
const MALFORMED: [&[u8]; 4] = [
    // Garbage (a TLS ClientHello start).
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 definitely not SIP",
    // Truncated: Content-Length promises more body than arrived.
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-t\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: t@x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 120\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.168.1.10\r\n",
    // Content-Length that is not a number.
    b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-c\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: c@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: twelve\r\n\r\n",
    // No Via at all.
    b"OPTIONS sip:example.com SIP/2.0\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: v@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
];

fn options_to(uri: &str, n: u32) -> Vec<u8> {
    format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-ok{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@example.com>;tag=ok{n}\r\nTo: <{uri}>\r\nCall-ID: ok{n}@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn malformed_datagrams_through_a_nat_are_counted_and_the_next_valid_request_is_served(
) -> Result<()> {
    require_kernel!();
    // The sender sits behind `home` so the junk crosses a real NAT; carol is a public phone.
    let topo = shapes::home_lan(prc()).build().await?;
    let (proxy, _) =
        ProxyTask::spawn(topo.node("server")?, proxy_config(NatHandling::FAR_END)).await?;
    let (carol, _) = UaTask::spawn(topo.node("peer")?, phone("carol", PEER, 33)).await?;
    let junk = topo.node("alice")?.udp_bind(sa(ALICE, 40000)).await?;
    let (to_proxy, to_carol) = (sa(SERVER, 5060), sa(PEER, 5060));
    for bytes in MALFORMED {
        junk.send_to(bytes, to_proxy).await?;
        junk.send_to(bytes, to_carol).await?;
    }
    let n = MALFORMED.len() as u64;
    let proxy_stats = proxy
        .wait_for_stats(|s| s.malformed == n, STEP)
        .await
        .map_err(|s| anyhow::anyhow!("proxy counted {s:?}"))?;
    carol
        .wait_for_stats(|s| s.malformed == n, STEP)
        .await
        .map_err(|s| anyhow::anyhow!("carol counted {s:?}"))?;
    ensure!(
        proxy_stats.malformed_by_kind.get("content_length") == Some(&1)
            && proxy_stats.malformed_by_kind.get("missing_header") == Some(&1)
            && proxy_stats.malformed_log.len() == MALFORMED.len(),
        "{proxy_stats:?}"
    );
    let dropped = carol
        .events()
        .iter()
        .filter(|e| matches!(e.event, Event::MalformedDatagram { .. }))
        .count();
    ensure!(dropped == MALFORMED.len(), "carol reported {dropped}");
    ensure!(
        proxy.wire_stats().sent == 0 && carol.wire_stats().sent == 0,
        "nothing is answered to junk"
    );

    // Both still serve the next valid request, from the same sender through the same NAT.
    for (n, (to, uri)) in [
        (to_proxy, "sip:example.com"),
        (to_carol, "sip:carol@198.51.100.20"),
    ]
    .into_iter()
    .enumerate()
    {
        junk.send_to(&options_to(uri, n as u32), to).await?;
        let (reply, from) = recv_within(&junk, DELIVERY)
            .await
            .with_context(|| format!("no answer from {to} after the junk"))?;
        let reply = String::from_utf8_lossy(&reply);
        ensure!(from == to && reply.starts_with("SIP/2.0 200 OK"), "{reply}");
    }
    register(&carol).await?;
    ensure!(!proxy.is_finished() && !carol.is_finished());
    Ok(())
}

/// Bob behind a NAT whose UDP bindings last 2 s registers; alice calls 4 s later.
async fn call_after_binding_timeout(keepalive: Option<KeepAlive>) -> Result<Lab> {
    let topo = shapes::two_lans(prc(), prc().with_udp_timeout(2))
        .build()
        .await?;
    let bob = UaConfig {
        keepalive,
        ..phone("bob", BOB, 22)
    };
    let l = lab(topo, NatHandling::FAR_END, phone("alice", ALICE, 11), bob).await?;
    register(l.ua("bob")).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    Ok(l)
}

async fn expired_binding_gives_408() -> Result<Duration> {
    let l = call_after_binding_timeout(None).await?;
    let call = l.ua("alice").call("bob").await?;
    let (status, after) = call_fails(l.ua("alice"), &call).await?;
    ensure!(status == 408, "failed with {status}");
    ensure!(
        after >= timer_b() && after <= timer_b() + LATE,
        "408 {after:?} after the INVITE"
    );
    // The proxy still sends to bob's old public binding; the NAT has forgotten it.
    ensure_timer_a(
        &sent_offsets(&l.proxy.datagrams(), "INVITE", sa(HOME_B, 5060)),
        "proxy",
    )?;
    ensure!(!saw(l.ua("bob"), |e| matches!(
        e,
        Event::IncomingCall { .. }
    )));
    Ok(after)
}

async fn crlf_keepalives_keep_it() -> Result<u64> {
    let l = call_after_binding_timeout(Some(KeepAlive::Crlf(Duration::from_secs(1)))).await?;
    complete_call(l.ua("alice"), l.ua("bob")).await?;
    Ok(l.ua("bob").stats().keepalives_sent)
}

#[tokio::test]
async fn after_the_nat_binding_expires_an_incoming_call_gets_408_unless_crlf_keepalives_refresh_it(
) -> Result<()> {
    require_kernel!();
    let (expired, kept) = futures::join!(expired_binding_gives_408(), crlf_keepalives_keep_it());
    let after = expired.context("without keep-alives")?;
    let pings = kept.context("with CRLF keep-alives every 1 s")?;
    ensure!(pings >= 3, "only {pings} keep-alives in 4 s");
    eprintln!("expired binding: 408 at {after:?}; with keep-alives: {pings} CRLF pings");
    Ok(())
}

/// What the plain proxy's NAT pings did for bob, registered behind a NAT whose bindings last 2 s
/// and are refreshed as `refresh` says, when alice calls 5 s after he registered.
struct Pinged {
    /// The call was established (else it failed, with 408).
    established: bool,
    pings_sent: u64,
    pongs: u64,
    /// Pings that reached bob's socket through his NAT.
    pings_received: usize,
}

async fn pinged_call(refresh: Refresh, ping: Ping) -> Result<Pinged> {
    let topo = shapes::two_lans(prc(), prc().with_udp_timeout(2).with_refresh(refresh))
        .build()
        .await?;
    let config = ProxyConfig {
        ping: Some(ping),
        ..proxy_config(NatHandling::FAR_END)
    };
    let l = lab_with(
        topo,
        config,
        phone("alice", ALICE, 11),
        phone("bob", BOB, 22),
    )
    .await?;
    let (proxy, alice, bob) = (&l.proxy, l.ua("alice"), l.ua("bob"));
    register(bob).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let call = alice.call("bob").await?;
    let failed = call_settles(alice, &call, timer_b() + STEP).await?;
    let stats = proxy.stats();
    // Pings leave the proxy's SIP socket for bob's far-end (source) address, his NAT binding.
    let to_binding = proxy
        .datagrams()
        .iter()
        .filter(|d| d.direction == Direction::Sent && d.remote == sa(HOME_B, 5060))
        .filter(|d| d.is_request("OPTIONS") || d.payload == b"\r\n\r\n")
        .count();
    ensure!(
        to_binding as u64 == stats.pings_sent,
        "{to_binding} pings to {HOME_B}:5060, {} counted",
        stats.pings_sent
    );
    let pings_received = bob
        .datagrams()
        .iter()
        .filter(|d| d.direction == Direction::Received && d.remote == sa(SERVER, 5060))
        .filter(|d| d.is_request("OPTIONS") || d.payload == b"\r\n\r\n")
        .count();
    drop(l);
    Ok(Pinged {
        established: failed.is_none(),
        pings_sent: stats.pings_sent,
        pongs: stats.pongs,
        pings_received,
    })
}

/// The plain proxy pings like the SBC (`tests/tests/sbc.rs`), and what a ping does to the NAT
/// binding is the router's doing: Linux conntrack refreshes it on the inbound ping itself; a
/// router that refreshes on outbound packets only lets it die under CRLF pings (the later ones
/// are dropped at the router) and keeps it under OPTIONS pings only because bob's 200 OK goes out.
#[tokio::test]
async fn the_plain_proxys_pings_refresh_a_linux_binding_inbound_and_an_outbound_only_one_only_through_the_phones_answer(
) -> Result<()> {
    require_kernel!();
    let every = Duration::from_secs(1);
    let (crlf, crlf_out, options_out) = futures::join!(
        pinged_call(Refresh::Both, Ping::Crlf(every)),
        pinged_call(Refresh::OutboundOnly, Ping::Crlf(every)),
        pinged_call(Refresh::OutboundOnly, Ping::Options(every)),
    );
    let crlf = crlf.context("Linux refresh, CRLF pings")?;
    ensure!(
        crlf.established,
        "Linux refresh, CRLF pings: the call failed"
    );
    ensure!(crlf.pings_sent >= 4 && crlf.pongs == 0);
    // Every ping reached bob (the last may still be on its way when counted).
    ensure!(
        crlf.pings_received + 1 >= crlf.pings_sent as usize,
        "Linux refresh: {} of {} CRLF pings reached bob",
        crlf.pings_received,
        crlf.pings_sent
    );

    let crlf_out = crlf_out.context("outbound-only, CRLF pings")?;
    ensure!(
        !crlf_out.established,
        "outbound-only, CRLF pings: the call got through"
    );
    ensure!(
        crlf_out.pings_sent >= 4 && crlf_out.pings_received <= 2,
        "outbound-only: {} of {} CRLF pings reached bob; the binding should die 2 s after REGISTER",
        crlf_out.pings_received,
        crlf_out.pings_sent
    );

    let options_out = options_out.context("outbound-only, OPTIONS pings")?;
    ensure!(
        options_out.established,
        "outbound-only, OPTIONS pings: the call failed"
    );
    ensure!(
        options_out.pings_sent >= 4 && options_out.pongs + 1 >= options_out.pings_sent,
        "outbound-only: {} OPTIONS, {} answered",
        options_out.pings_sent,
        options_out.pongs
    );
    eprintln!(
        "Linux/CRLF: {}/{} pings arrived; outbound-only/CRLF: {}/{} arrived, 408; outbound-only/OPTIONS: {}/{} answered",
        crlf.pings_received, crlf.pings_sent, crlf_out.pings_received, crlf_out.pings_sent,
        options_out.pongs, options_out.pings_sent
    );
    Ok(())
}

/// SIPp's built-in UAC (public) calls bob, our phone behind a NAT, through our FarEnd proxy.
async fn sipp_uac_calls_our_phone_through_our_proxy() -> Result<()> {
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    let l = lab(
        topo,
        NatHandling::FAR_END,
        phone("alice", ALICE, 11),
        phone("bob", BOB, 22),
    )
    .await?;
    register(l.ua("bob")).await?;
    let outcome = tests::lab::sipp_uac_calls(&l.topo, "bob").await?;
    ensure!(outcome.succeeded(), "{outcome}");
    for what in ["IncomingCall", "CallEstablished", "CallEnded"] {
        ensure!(
            saw(l.ua("bob"), |e| format!("{e:?}").starts_with(what)),
            "bob saw no {what}: {:?}",
            l.ua("bob").events()
        );
    }
    Ok(())
}

/// Alice, our phone behind a NAT, calls SIPp's built-in UAS directly (SIPp is her outbound
/// proxy), then hangs up.
async fn our_phone_calls_sipp_uas_directly() -> Result<()> {
    let topo = shapes::home_lan(prc()).build().await?;
    let uas = Sipp::new(Scenario::Uas, sa(PEER, 5060))
        .timeout(Duration::from_secs(10))
        .start(topo.node("peer")?)
        .await?;
    let alice = UaConfig {
        proxy: sa(PEER, 5060),
        ..phone("alice", ALICE, 11)
    };
    let (alice, _) = UaTask::spawn(topo.node("alice")?, alice).await?;
    // SIPp needs a moment to bind; the INVITE's retransmissions cover it either way.
    lab::call_sipp_uas(&alice, "sip:service@198.51.100.20:5060", uas).await
}

/// SIPp behind a NAT registers a private Contact with a REGISTER scenario of our own, then
/// answers as the built-in UAS on the same port: our FarEnd proxy reaches it through the NAT.
async fn sipp_registers_behind_a_nat_and_answers_through_our_proxy() -> Result<()> {
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    let (proxy, _) =
        ProxyTask::spawn(topo.node("server")?, proxy_config(NatHandling::FAR_END)).await?;
    let uas = lab::sipp_bob_registers_then_answers(&topo, || async {
        let binding = proxy.binding("bob").await?.context("SIPp is bound")?;
        ensure!(
            binding.target == sa(HOME_B, 5060) && binding.contact.contains(BOB),
            "{binding:?}"
        );
        Ok(())
    })
    .await?;
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    lab::call_sipp_uas(&alice, "bob", uas).await
}

#[tokio::test]
async fn sipp_interoperates_as_caller_callee_and_registering_phone_behind_a_nat() -> Result<()> {
    require_kernel!();
    let (uac, uas, reg) = futures::join!(
        sipp_uac_calls_our_phone_through_our_proxy(),
        our_phone_calls_sipp_uas_directly(),
        sipp_registers_behind_a_nat_and_answers_through_our_proxy()
    );
    uac.context("SIPp UAC → our proxy → our phone")?;
    uas.context("our phone → SIPp UAS")?;
    reg.context("SIPp REGISTER + UAS behind NAT ← our proxy ← our phone")?;
    Ok(())
}

#[tokio::test]
async fn sipp_reports_a_failed_call_with_exit_code_1() -> Result<()> {
    require_kernel!();
    // Nobody is registered as bob: our proxy answers 404, which SIPp's UAC does not expect.
    let topo = shapes::home_lan(prc()).build().await?;
    let (_proxy, _) =
        ProxyTask::spawn(topo.node("server")?, proxy_config(NatHandling::FAR_END)).await?;
    let outcome = tests::lab::sipp_uac_calls(&topo, "bob").await?;
    ensure!(outcome.verdict == SippVerdict::SomeCallsFailed, "{outcome}");
    Ok(())
}
