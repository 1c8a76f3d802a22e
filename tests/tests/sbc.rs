//! Far-end NAT traversal at an SBC on real packets through real kernel NATs: our
//! [`harness::sbc`] (registrar + proxy + latching media relay + NAT pings) and Kamailio in its
//! place, for phones that know nothing about their NAT (`ContactSource::Local`: private Contact
//! and SDP, no STUN, no TURN).
//!
//! T1 is 50 ms (Timer B = 3.2 s). `two_lans` puts alice (192.168.1.10) behind `home-a`
//! (203.0.113.1) and bob (192.168.2.10) behind `home-b` (198.51.100.1); `home_lan` puts alice
//! behind `home` (203.0.113.1) with carol on the public `peer` (198.51.100.20). The SBC listens on
//! `server` 203.0.113.10:5060 and relays media on 203.0.113.10:40000–40015. Media is 2 s of PCMU
//! at 20 ms: 100 packets each way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::future::join_all;
use harness::rtp::{MediaConfig, MediaReport, MediaStats, MediaStream, MediaVerdict};
use harness::sbc::kamailio::{Kamailio, KamailioConfig};
use harness::sbc::rtpengine::RtpengineConfig;
use harness::sbc::{Ping, SbcConfig, SbcState, SbcTask};
use harness::shapes::{self, PEER, SERVER};
use harness::sip::{Direction, Event, KeepAlive, Timers, UaConfig, UaTask};
use harness::turn::MediaTask;
use harness::{Node, Topology};
use sim_nat::{NatType, Refresh};
use tests::lab::{
    call_settles, phone, prc, register, timer_b, ALICE, BOB, DOMAIN, HOME_A, HOME_B, STEP, T1,
};
use tests::{require_kernel, sa};

const MEDIA: Duration = Duration::from_secs(2);
const PACKETS: u64 = 100;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sbc_config(ping: Option<Ping>) -> SbcConfig {
    SbcConfig {
        timers: Timers::scaled(T1),
        ping,
        relay_ports: 40000..=40015,
        ..SbcConfig::new(sa(SERVER, 5060), DOMAIN)
    }
}

async fn serve(topo: &Topology, ping: Option<Ping>) -> Result<SbcTask> {
    let (sbc, _events) = SbcTask::serve(topo.node("server")?, sbc_config(ping)).await?;
    Ok(sbc)
}

fn remote_media(e: &Event, call: &str) -> Option<Option<SocketAddr>> {
    match e {
        Event::CallEstablished {
            call_id,
            remote_media,
        } if call_id == call => Some(*remote_media),
        _ => None,
    }
}

/// `caller` calls `callee` (a user name); both see the call up. The SDP address each got.
async fn establish(
    caller: &UaTask,
    callee: &UaTask,
    user: &str,
) -> Result<(String, SocketAddr, SocketAddr)> {
    let call = caller.call(user).await?;
    let mut got = Vec::new();
    for ua in [caller, callee] {
        let e = ua
            .wait_for(|e| remote_media(e, &call).is_some(), STEP)
            .await
            .with_context(|| format!("{}: the call did not come up", ua.node()))?;
        got.push(remote_media(&e.event, &call).flatten().context("no SDP")?);
    }
    Ok((call, got[0], got[1]))
}

async fn hang_up(caller: &UaTask, callee: &UaTask, call: &str) -> Result<()> {
    caller.hang_up(call).await?;
    for ua in [caller, callee] {
        ua.wait_for(
            |e| matches!(e, Event::CallEnded { call_id } if call_id == call),
            STEP,
        )
        .await
        .with_context(|| format!("{} did not see the call end", ua.node()))?;
    }
    Ok(())
}

/// Each phone sends 2 s of RTP from its SDP port (4000) to the address its peer's SDP named
/// and counts what arrives there; the stats of both once everything was sent.
async fn talk(
    caller: (&Node, &str, SocketAddr),
    callee: (&Node, &str, SocketAddr),
) -> Result<(MediaStats, MediaStats)> {
    let mut tasks = Vec::new();
    for (i, (node, ip, remote)) in [caller, callee].into_iter().enumerate() {
        let stream = MediaStream::new(MediaConfig {
            duration: MEDIA,
            seed: 100 + i as u64,
            ..MediaConfig::pcmu(sa(ip, 4000), Some(remote))
        });
        let (task, _) = MediaTask::bind(node, stream).await?;
        tasks.push(task);
    }
    for t in &tasks {
        t.call(|m, now| m.start(now)).await?;
    }
    for t in &tasks {
        let _ = t
            .wait_for(|s| s.sent + s.held >= PACKETS, MEDIA + STEP)
            .await;
    }
    // The last packets' flight through two NATs and the relay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((tasks[0].state(), tasks[1].state()))
}

fn session(state: &SbcState, call: &str) -> Result<harness::sbc::SessionReport> {
    state
        .sessions
        .iter()
        .find(|s| s.call_id == call)
        .cloned()
        .with_context(|| format!("no relay session for {call}: {state:?}"))
}

/// Bob (our UA, private Contact and SDP) behind `nat` registers through our SBC; alice behind a
/// symmetric NAT calls him; both talk for 2 s through the relay; alice hangs up.
async fn call_to_phone_behind(nat: NatType) -> Result<String> {
    let topo = shapes::two_lans(NatType::Symmetric, nat).build().await?;
    let sbc = serve(&topo, Some(Ping::Options(Duration::from_secs(1)))).await?;
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    let (bob, _) = UaTask::spawn(topo.node("bob")?, phone("bob", BOB, 22)).await?;
    register(&bob).await?;
    let bound = sbc.state().endpoints.get("bob").copied();
    ensure!(
        bound.is_some_and(|b| b.ip() == ip(HOME_B)),
        "bob bound at {bound:?}, not at his NAT"
    );
    let (call, at_alice, at_bob) = establish(&alice, &bob, "bob").await?;
    ensure!(
        at_alice.ip() == ip(SERVER) && at_bob.ip() == ip(SERVER) && at_alice != at_bob,
        "SDP not pointed at the relay: alice got {at_alice}, bob got {at_bob}"
    );
    let (a, b) = talk(
        (topo.node("alice")?, ALICE, at_alice),
        (topo.node("bob")?, BOB, at_bob),
    )
    .await?;
    let report = MediaReport::new(&a, &b, 0.95);
    let s = session(&sbc.state(), &call)?;
    ensure!(
        report.verdict == MediaVerdict::BothWays && a.sent == PACKETS && b.sent == PACKETS,
        "{report}; relay {s:?}"
    );
    // The relay sends to where each phone's RTP comes from: their NATs, never the private SDP.
    let (from_alice, from_bob) = (s.caller.latched, s.callee.latched);
    ensure!(
        from_alice.is_some_and(|l| l.ip() == ip(HOME_A))
            && from_bob.is_some_and(|l| l.ip() == ip(HOME_B))
            && s.caller.sdp == Some(sa(ALICE, 4000))
            && s.callee.sdp == Some(sa(BOB, 4000)),
        "{s:?}"
    );
    // Each phone hears the other from the relay port its SDP named, nothing else.
    ensure!(
        a.by_source.keys().eq([&at_alice]) && b.by_source.keys().eq([&at_bob]),
        "sources: alice {:?}, bob {:?}",
        a.by_source.keys(),
        b.by_source.keys()
    );
    hang_up(&alice, &bob, &call).await?;
    ensure!(session(&sbc.state(), &call)?.released, "ports not released");
    let stats = sbc.state().stats;
    ensure!(
        stats.contacts_rewritten >= 2 && stats.aliases_resolved >= 2,
        "{stats:?}"
    );
    Ok(format!(
        "{nat:?}: {report}; relay latched alice {} bob {}",
        from_alice.context("latched")?,
        from_bob.context("latched")?
    ))
}

#[tokio::test]
async fn a_phone_behind_each_nat_type_registers_through_our_sbc_and_gets_audio_both_ways_through_its_relay(
) -> Result<()> {
    require_kernel!();
    let types = [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ];
    let results = join_all(types.map(call_to_phone_behind)).await;
    let mut failures = Vec::new();
    for (nat, r) in types.iter().zip(results) {
        match r {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(format!("{nat:?}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// What became of carol's call to alice 5 s after alice registered behind a NAT whose UDP
/// bindings last 2 s.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Established,
    Failed(u16),
}

struct Expiry {
    outcome: Outcome,
    pings: u64,
    pongs: u64,
}

async fn call_5s_after_register(
    refresh: Refresh,
    ping: Option<Ping>,
    keepalive: Option<KeepAlive>,
) -> Result<Expiry> {
    let nat = prc().with_udp_timeout(2).with_refresh(refresh);
    let topo = shapes::home_lan(nat).build().await?;
    let sbc = serve(&topo, ping).await?;
    let alice = UaConfig {
        keepalive,
        ..phone("alice", ALICE, 11)
    };
    let (alice, _) = UaTask::spawn(topo.node("alice")?, alice).await?;
    let (carol, _) = UaTask::spawn(topo.node("peer")?, phone("carol", PEER, 33)).await?;
    register(&alice).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let call = carol.call("alice").await?;
    let outcome = match call_settles(&carol, &call, timer_b() + STEP).await? {
        Some(status) => Outcome::Failed(status),
        None => Outcome::Established,
    };
    let stats = sbc.state().proxy;
    Ok(Expiry {
        outcome,
        pings: stats.pings_sent,
        pongs: stats.pongs,
    })
}

#[tokio::test]
async fn the_sbcs_pings_keep_a_linux_nat_binding_alive_but_on_an_outbound_only_nat_only_answered_pings_or_the_phones_own_keepalives_do(
) -> Result<()> {
    require_kernel!();
    let every = Duration::from_secs(1);
    let (both, out) = (Refresh::Both, Refresh::OutboundOnly);
    let cases = [
        (
            "Linux refresh, no pings",
            both,
            None,
            None,
            Outcome::Failed(408),
        ),
        (
            "Linux refresh, SBC CRLF pings",
            both,
            Some(Ping::Crlf(every)),
            None,
            Outcome::Established,
        ),
        (
            "Linux refresh, SBC OPTIONS pings",
            both,
            Some(Ping::Options(every)),
            None,
            Outcome::Established,
        ),
        (
            "outbound-only, SBC CRLF pings",
            out,
            Some(Ping::Crlf(every)),
            None,
            Outcome::Failed(408),
        ),
        // The phone's 200 OK to each OPTIONS is outbound traffic: that, not the ping, refreshes.
        (
            "outbound-only, SBC OPTIONS pings",
            out,
            Some(Ping::Options(every)),
            None,
            Outcome::Established,
        ),
        (
            "outbound-only, SBC CRLF pings + phone's CRLF keep-alives",
            out,
            Some(Ping::Crlf(every)),
            Some(KeepAlive::Crlf(every)),
            Outcome::Established,
        ),
    ];
    let results = join_all(
        cases
            .iter()
            .map(|(_, refresh, ping, ka, _)| call_5s_after_register(*refresh, *ping, *ka)),
    )
    .await;
    let mut failures = Vec::new();
    for ((what, _, ping, _, expected), r) in cases.iter().zip(results) {
        match r {
            Ok(e) => {
                eprintln!(
                    "{what}: {:?} ({} pings, {} answered)",
                    e.outcome, e.pings, e.pongs
                );
                if e.outcome != *expected {
                    failures.push(format!("{what}: {:?}, expected {expected:?}", e.outcome));
                }
                if ping.is_some() && e.pings < 4 {
                    failures.push(format!("{what}: only {} pings in 5 s", e.pings));
                }
            }
            Err(e) => failures.push(format!("{what}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// SIPp's built-in UAC on the public `peer` calls bob (our UA behind a port-restricted NAT)
/// through our SBC.
async fn sipp_calls_our_phone_through_our_sbc() -> Result<()> {
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    let sbc = serve(&topo, Some(Ping::Options(Duration::from_secs(1)))).await?;
    let (bob, _) = UaTask::spawn(topo.node("bob")?, phone("bob", BOB, 22)).await?;
    register(&bob).await?;
    let outcome = tests::lab::sipp_uac_calls(&topo, "bob").await?;
    ensure!(outcome.succeeded(), "{outcome}");
    let events = bob.events();
    let bob_media = events
        .iter()
        .find_map(|e| match &e.event {
            Event::CallEstablished { remote_media, .. } => *remote_media,
            _ => None,
        })
        .context("bob's call never came up")?;
    ensure!(bob_media.ip() == ip(SERVER), "bob got SDP {bob_media}");
    ensure!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::CallEnded { .. })),
        "{events:?}"
    );
    let state = sbc.state();
    ensure!(
        state.stats.sdp_rewritten >= 2 && state.sessions.iter().all(|s| s.released),
        "{state:?}"
    );
    Ok(())
}

/// SIPp behind a NAT registers a private Contact through our SBC, then answers alice's call as
/// the built-in UAS on the same port: the SBC reaches it through the NAT.
async fn sipp_registers_behind_a_nat_and_answers_through_our_sbc() -> Result<()> {
    let topo = shapes::two_lans(prc(), prc()).build().await?;
    // CRLF pings: SIPp's UAS would take an OPTIONS for a new call and fail it.
    let sbc = serve(&topo, Some(Ping::Crlf(Duration::from_secs(1)))).await?;
    let uas = tests::lab::sipp_bob_registers_then_answers(&topo, || async {
        let bound = sbc.state().endpoints.get("bob").copied();
        ensure!(bound == Some(sa(HOME_B, 5060)), "SIPp bound at {bound:?}");
        Ok(())
    })
    .await?;
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    let (call, _, _) = establish_with_sipp(&alice).await?;
    alice.hang_up(&call).await?;
    alice
        .wait_for(|e| matches!(e, Event::CallEnded { .. }), STEP)
        .await?;
    let outcome = uas.wait().await?;
    ensure!(outcome.succeeded(), "{outcome}");
    ensure!(sbc.state().stats.sdp_rewritten >= 2, "{:?}", sbc.state());
    Ok(())
}

/// Alice calls `bob` (SIPp's UAS): only her side can be watched.
async fn establish_with_sipp(alice: &UaTask) -> Result<(String, SocketAddr, ())> {
    let call = alice.call("bob").await?;
    let e = alice
        .wait_for(|e| remote_media(e, &call).is_some(), STEP)
        .await?;
    let media = remote_media(&e.event, &call).flatten().context("no SDP")?;
    ensure!(media.ip() == ip(SERVER), "alice got SDP {media}");
    Ok((call, media, ()))
}

#[tokio::test]
async fn sipp_calls_and_registers_through_our_sbc() -> Result<()> {
    require_kernel!();
    let (uac, reg) = futures::join!(
        sipp_calls_our_phone_through_our_sbc(),
        sipp_registers_behind_a_nat_and_answers_through_our_sbc()
    );
    uac.context("SIPp UAC → our SBC → our phone behind NAT")?;
    reg.context("SIPp REGISTER + UAS behind NAT ← our SBC ← our phone")?;
    Ok(())
}

/// The far end an SBC test runs against.
enum FarEnd {
    Ours(SbcTask),
    Kamailio(Box<Kamailio>),
}

/// Bob behind a port-restricted NAT registers through `far end`, alice behind a symmetric NAT
/// calls him, bob hangs up: the call completes both ways through the SBC.
async fn phone_behind_port_restricted_nat(kamailio: bool) -> Result<String> {
    let topo = shapes::two_lans(NatType::Symmetric, prc()).build().await?;
    let server = topo.node("server")?;
    let far_end = if kamailio {
        let config = KamailioConfig {
            natping_interval: 1,
            ..KamailioConfig::new(sa(SERVER, 5060), DOMAIN)
        };
        FarEnd::Kamailio(Box::new(Kamailio::start(server, config).await?))
    } else {
        FarEnd::Ours(serve(&topo, Some(Ping::Options(Duration::from_secs(1)))).await?)
    };
    let log = || match &far_end {
        FarEnd::Kamailio(k) => k.log(),
        FarEnd::Ours(s) => format!("{:?}", s.state()),
    };
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    let (bob, _) = UaTask::spawn(topo.node("bob")?, phone("bob", BOB, 22)).await?;
    register(&bob).await.with_context(log)?;
    let (call, _, _) = establish(&alice, &bob, "bob").await.with_context(log)?;
    // The callee ends it: his BYE must find alice through her symmetric NAT (alias / Contact).
    hang_up(&bob, &alice, &call).await.with_context(log)?;
    // NAT pings reached bob through his binding (nathelper's sipping, or ours).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pings = bob
        .datagrams()
        .iter()
        .filter(|d| {
            d.direction == Direction::Received
                && d.is_request("OPTIONS")
                && d.remote == sa(SERVER, 5060)
        })
        .count();
    ensure!(pings >= 1, "no OPTIONS ping reached bob; {}", log());
    Ok(format!("{pings} OPTIONS pings reached bob"))
}

#[tokio::test]
async fn kamailio_as_the_far_end_sbc_completes_the_call_to_a_phone_behind_a_port_restricted_nat_as_ours_does(
) -> Result<()> {
    require_kernel!();
    let (ours, kamailio) = futures::join!(
        phone_behind_port_restricted_nat(false),
        phone_behind_port_restricted_nat(true)
    );
    let ours = ours.context("our SBC")?;
    let kamailio = kamailio.context("Kamailio 5.6 + nathelper")?;
    eprintln!("our SBC: {ours}; Kamailio: {kamailio}");
    Ok(())
}

/// Both phones behind symmetric NATs with private SDP and no STUN: without a media relay the
/// RTP goes to private addresses and nobody hears anything; Kamailio with rtpengine rewrites both
/// SDPs to the relay on the server, which latches each leg onto where that phone's RTP really
/// comes from (its NAT), as our SBC does (`call_to_phone_behind`).
#[tokio::test]
async fn kamailio_with_rtpengine_relays_audio_both_ways_between_two_symmetric_nats_and_without_it_there_is_none(
) -> Result<()> {
    require_kernel!();
    let (with, without) = futures::join!(kamailio_call(true), kamailio_call(false));
    let (with, at_alice, at_bob) = with.context("Kamailio + rtpengine")?;
    let (without, private_a, private_b) = without.context("Kamailio alone")?;
    ensure!(
        with.verdict == MediaVerdict::BothWays && at_alice.ip() == ip(SERVER),
        "with rtpengine: {with}, alice heard {at_alice}"
    );
    ensure!(
        without.verdict == MediaVerdict::None && private_a == sa(BOB, 4000),
        "without: {without}, alice's SDP named {private_a}"
    );
    eprintln!(
        "Kamailio + rtpengine: {with}; relay ports {at_alice} / {at_bob}\n\
         Kamailio alone: {without}; SDP named {private_a} / {private_b}"
    );
    Ok(())
}

/// Alice calls bob through Kamailio (with rtpengine or not), both behind symmetric NATs; 2 s of
/// audio each way. The media report and the address each side's SDP named.
async fn kamailio_call(rtpengine: bool) -> Result<(MediaReport, SocketAddr, SocketAddr)> {
    let topo = shapes::two_lans(NatType::Symmetric, NatType::Symmetric)
        .build()
        .await?;
    let config = KamailioConfig {
        natping_interval: 1,
        rtpengine: rtpengine.then(|| RtpengineConfig::new(ip(SERVER))),
        ..KamailioConfig::new(sa(SERVER, 5060), DOMAIN)
    };
    let kamailio = Kamailio::start(topo.node("server")?, config).await?;
    let log = || kamailio.log();
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    let (bob, _) = UaTask::spawn(topo.node("bob")?, phone("bob", BOB, 22)).await?;
    register(&bob).await.with_context(log)?;
    let (call, at_alice, at_bob) = establish(&alice, &bob, "bob").await.with_context(log)?;
    let (a, b) = talk(
        (topo.node("alice")?, ALICE, at_alice),
        (topo.node("bob")?, BOB, at_bob),
    )
    .await?;
    let report = MediaReport::new(&a, &b, 0.95);
    if rtpengine {
        // Each phone hears the other from the relay port its SDP named, nothing else.
        ensure!(
            at_bob.ip() == ip(SERVER)
                && at_alice != at_bob
                && a.by_source.keys().eq([&at_alice])
                && b.by_source.keys().eq([&at_bob]),
            "SDP alice {at_alice} bob {at_bob}; sources: alice {:?}, bob {:?}\n{}",
            a.by_source.keys(),
            b.by_source.keys(),
            log()
        );
    }
    hang_up(&alice, &bob, &call).await.with_context(log)?;
    Ok((report, at_alice, at_bob))
}
