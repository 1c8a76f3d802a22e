//! The emulated consumer-router SIP ALG (failure catalogue item 2) on real packets: at the
//! router's inside and outside exactly the header each fault names differs, each fault
//! reproduces its field symptom with our phones and proxy, turning the ALG off (with the usual
//! NAT fix where the ALG only moved the failure) fixes it, and the kernel's own helper rewrites
//! other headers of the same traffic.
//!
//! Shapes: `home_lan` puts alice (192.168.1.10) behind `home` (203.0.113.1); the proxy listens on
//! `server` 203.0.113.10:5060 and carol, a public phone, on `peer` 198.51.100.20:5060. T1 is 50 ms,
//! so Timer B/F (408) fires at 3.2 s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::alg::packet::Udp4;
use harness::alg::{AlgFault, EmulatedAlg};
use harness::capture::{Capture, Frame};
use harness::shapes::{self, PEER, SERVER};
use harness::sip::{
    ContactSource, Direction, Event, Media, NatHandling, ProxyConfig, ProxyTask, UaConfig, UaTask,
};
use harness::stun::{self, ServerConfig, StunServerTask};
use harness::trace::{Ladder, Payload, Trace};
use harness::Topology;
use sim_nat::{NatBehaviour, PortAllocation, SipAlg};
use tests::lab::{
    self, complete_call, phone, prc, proxy_config, register, register_anew, timer_b, Lab, ALICE,
    HOME_A as HOME, STEP,
};
use tests::{recv_within, require_kernel, sa, DELIVERY};

/// Endpoint-independent mapping that does not keep ports (a hash picks them, stable run to run):
/// the NAT behind which "the public address with the private port" is the wrong address.
fn remapping() -> NatBehaviour {
    NatBehaviour {
        ports: PortAllocation::Hash,
        ..prc()
    }
}

/// A proxy on `server`, alice behind `home`, carol on `peer` (registered).
async fn lab(topo: Topology, proxy: ProxyConfig, alice: UaConfig) -> Result<Lab> {
    let l = Lab::new(topo, proxy)
        .await?
        .phone("alice", alice)
        .await?
        .phone("peer", phone("carol", PEER, 33))
        .await?;
    register(l.ua("carol")).await?;
    Ok(l)
}

/// Waits for `ua`'s call to fail; returns the status.
async fn call_fails(ua: &UaTask, call: &str) -> Result<u16> {
    Ok(lab::call_fails(ua, call).await?.0)
}

// ---------------------------------------------------------------------------------------------
// What each fault changes, seen at the router's inside (home:lan) and outside (home:wan).

/// An INVITE carrying everything an ALG might touch: Via, Contact, Authorization, SDP.
fn invite(call_id: &str) -> String {
    let sdp = "v=0\r\no=- 42 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:carol@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-{call_id};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: <sip:carol@example.com>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.168.1.10:5060>\r\n\
Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", uri=\"sip:carol@example.com\", response=\"0\"\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// SIP payloads captured at `vantage` whose text contains `needle`.
fn sip_at(frames: &[Frame], vantage: &str, needle: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.vantage.label() == vantage && f.bytes.len() > 14 && f.bytes[12..14] == [8, 0])
        .filter_map(|f| {
            let ip = &f.bytes[14..];
            let udp = Udp4::parse(ip)?;
            let text = String::from_utf8_lossy(udp.payload(ip)).into_owned();
            text.contains(needle).then_some(text)
        })
        .collect()
}

/// `name: before → after` for every line that differs (our ALGs never add or remove lines).
fn diff(inside: &str, outside: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (
        inside.split("\r\n").collect(),
        outside.split("\r\n").collect(),
    );
    if a.len() != b.len() {
        return vec![format!("{} lines → {} lines", a.len(), b.len())];
    }
    a.iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("{x}  →  {y}"))
        .collect()
}

fn header_names(diff: &[String]) -> Vec<String> {
    diff.iter()
        .map(|l| match l.find([':', '=']) {
            Some(i) if l.as_bytes()[i] == b'=' => l[..=i].to_string(),
            Some(i) => l[..i].to_string(),
            None => l.clone(),
        })
        .collect()
}

/// Sends `payload` from alice:5060 to the server and returns the (inside, outside) copies, or
/// `None` outside when the router did not forward it.
async fn through_router(
    topo: &Topology,
    payload: &str,
    call_id: &str,
) -> Result<(String, Option<String>)> {
    let cap = Capture::start(topo).await?;
    let alice = topo.node("alice")?.udp_bind(sa(ALICE, 5060)).await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 5060)).await?;
    alice.send_to(payload.as_bytes(), sa(SERVER, 5060)).await?;
    let arrived = recv_within(&server, DELIVERY).await;
    let frames = cap.stop().await;
    let inside = sip_at(&frames, "home:lan", call_id)
        .into_iter()
        .next()
        .context("the message was not seen inside the router")?;
    let outside = sip_at(&frames, "home:wan", call_id).into_iter().next();
    ensure!(
        arrived.is_some() == outside.is_some(),
        "the server's view and the WAN capture disagree"
    );
    // The ladder, rendered from the same capture, places the copies before and after the NAT.
    let trace = Trace::from_frames(&frames);
    let seen: Vec<String> = trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            harness::trace::Entry::Packet {
                vantage,
                payload: Payload::Sip(_),
                ..
            } => Some(vantage.label()),
            _ => None,
        })
        .collect();
    ensure!(seen.iter().any(|v| v == "home:lan"), "{seen:?}");
    Ok((inside, outside))
}

#[tokio::test]
async fn at_the_routers_inside_and_outside_exactly_the_header_each_fault_names_differs(
) -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(prc()).build().await?;
    let expected: [(AlgFault, &[&str]); 5] = [
        (AlgFault::RewriteContactNotVia, &["Contact"]),
        (
            AlgFault::RewriteSdpConnectionNotMediaPort,
            &["Content-Length", "c="],
        ),
        (AlgFault::RewriteWithoutFixingContentLength, &["o=", "c="]),
        (AlgFault::BreakDigest, &["Authorization"]),
        (AlgFault::RewriteAlreadyPublic, &["Via", "Contact"]),
    ];
    let mut table = String::new();
    for (fault, headers) in expected {
        // One ALG after the other on the same router: stopping one really takes it away.
        let alg = EmulatedAlg::start(topo.node("home")?, [fault]).await?;
        let call_id = format!("{fault}@192.168.1.10");
        let (inside, outside) = through_router(&topo, &invite(&call_id), &call_id).await?;
        let outside = outside.with_context(|| format!("{fault}: not forwarded"))?;
        let d = diff(&inside, &outside);
        ensure!(header_names(&d) == headers, "{fault}: changed {d:#?}");
        let stats = alg.stop().await;
        ensure!(stats.by_fault.get(&fault) == Some(&1), "{fault}: {stats:?}");
        table.push_str(&format!("{fault}\n"));
        for line in d {
            table.push_str(&format!("  {line}\n"));
        }
    }

    // drop-unparseable: the same INVITE with bare-LF line ends never leaves the router; the
    // well-formed one passes byte for byte.
    let alg = EmulatedAlg::start(topo.node("home")?, [AlgFault::DropUnparseable]).await?;
    let bare_lf = invite("lf@192.168.1.10").replace("\r\n", "\n");
    let (_, outside) = through_router(&topo, &bare_lf, "lf@192.168.1.10").await?;
    ensure!(outside.is_none(), "bare-LF SIP was forwarded: {outside:?}");
    let fine = invite("ok@192.168.1.10");
    let (inside, outside) = through_router(&topo, &fine, "ok@192.168.1.10").await?;
    ensure!(outside.as_deref() == Some(inside.as_str()), "{outside:?}");
    let stats = alg.stop().await;
    ensure!(stats.dropped == 1 && stats.unparseable == 1, "{stats:?}");
    table.push_str("drop-unparseable\n  bare-LF INVITE seen at home:lan, not at home:wan\n");

    // Every stopped ALG took its rules with it, and with no ALG at all nothing differs.
    let (_, rules, _) = topo
        .node("home")?
        .output("iptables", &["-w", "-t", "mangle", "-S", "FORWARD"], STEP)
        .await?;
    ensure!(!rules.contains("NFQUEUE"), "rules left behind:\n{rules}");
    let (inside, outside) =
        through_router(&topo, &invite("off@192.168.1.10"), "off@192.168.1.10").await?;
    ensure!(outside.as_deref() == Some(inside.as_str()));
    insta::assert_snapshot!(table);
    Ok(())
}

/// The headers one ALG changed on alice's INVITE, as `header: inside → outside` lines.
/// The reader thread's context switches so far, as the scheduler counts them.
fn switches(tid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))?;
    Ok(status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

/// An idle ALG sleeps: its reader wakes for packets, not on a timer, and a packet still goes
/// through (rewritten) at once. A reader that polled every millisecond, on each router of a
/// 64-topology matrix, starved the kernel's expedited RCU grace periods and stalled every
/// bring-up on the machine for a minute (issue 22).
#[tokio::test]
async fn an_idle_alg_does_not_wake_up_and_wakes_at_once_for_sip() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(prc()).build().await?;
    let alg = EmulatedAlg::start(topo.node("home")?, [AlgFault::RewriteContactNotVia]).await?;
    let before = switches(alg.reader_tid())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = switches(alg.reader_tid())? - before;
    ensure!(
        idle <= 2,
        "the idle reader was switched in {idle} times in 500 ms"
    );
    let (inside, outside) =
        through_router(&topo, &invite("idle-then-sip"), "idle-then-sip").await?;
    let outside = outside.context("the INVITE did not leave the router within DELIVERY")?;
    ensure!(
        inside.contains("Contact: <sip:alice@192.168.1.10:5060>")
            && outside.contains(&format!("Contact: <sip:alice@{HOME}:5060>")),
        "not rewritten:\n{outside}"
    );
    ensure!(alg.stats().rewritten == 1, "{:?}", alg.stats());
    Ok(())
}

async fn rewritten_by(alg: Option<Vec<AlgFault>>, kernel: bool) -> Result<String> {
    let nat = prc().with_sip_alg(if kernel { SipAlg::Kernel } else { SipAlg::Off });
    let topo = shapes::home_lan(nat).build().await?;
    let _alg = match alg {
        Some(f) => Some(EmulatedAlg::start(topo.node("home")?, f).await?),
        None => None,
    };
    let (inside, outside) =
        through_router(&topo, &invite("cmp@192.168.1.10"), "cmp@192.168.1.10").await?;
    Ok(diff(&inside, &outside.context("not forwarded")?).join("\n"))
}

#[tokio::test]
async fn the_kernel_helper_and_a_consumer_alg_rewrite_different_headers_of_the_same_invite(
) -> Result<()> {
    require_kernel!();
    let consumer = vec![
        AlgFault::RewriteContactNotVia,
        AlgFault::RewriteSdpConnectionNotMediaPort,
    ];
    let (kernel, emulated, already_public) = futures::join!(
        rewritten_by(None, true),
        rewritten_by(Some(consumer), false),
        rewritten_by(Some(vec![AlgFault::RewriteAlreadyPublic]), false),
    );
    let (kernel, emulated, already_public) = (kernel?, emulated?, already_public?);
    // The kernel helper rewrites Via, Contact, o= and c= (and fixes Content-Length); it too keeps
    // the m= port, but opens an expectation for it, which no consumer fault here does.
    for h in ["Via:", "Contact:", "o=", "c=", "Content-Length:"] {
        ensure!(
            kernel.contains(&format!("\n{h}")) || kernel.starts_with(h),
            "kernel: {kernel}"
        );
    }
    ensure!(!kernel.contains("m=audio"), "{kernel}");
    ensure!(
        !emulated.contains("Via:") && !emulated.contains("o="),
        "{emulated}"
    );
    insta::assert_snapshot!(format!(
        "kernel helper (sip-alg = \"kernel\"):\n{kernel}\n\n\
         emulated [rewrite-contact-not-via, rewrite-sdp-connection-not-media-port]:\n{emulated}\n\n\
         emulated [rewrite-already-public]:\n{already_public}\n"
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Symptoms, and the fix.

async fn break_digest_gives_a_401_loop() -> Result<()> {
    let topo = shapes::home_lan(prc()).build().await?;
    let proxy = proxy_config(NatHandling::FAR_END).with_user("alice", "secret");
    let alice = UaConfig {
        password: Some("secret".into()),
        ..phone("alice", ALICE, 11)
    };
    let l = lab(topo, proxy, alice).await?;
    let alg = EmulatedAlg::start(l.topo.node("home")?, [AlgFault::BreakDigest]).await?;
    l.ua("alice").register().await?;
    let failed = l
        .ua("alice")
        .wait_for(|e| matches!(e, Event::RegistrationFailed { .. }), STEP)
        .await?;
    ensure!(
        failed.event == Event::RegistrationFailed { status: 401 },
        "{failed:?}"
    );
    let statuses: Vec<u16> = l
        .ua("alice")
        .datagrams()
        .iter()
        .filter(|d| d.direction == Direction::Received)
        .filter_map(|d| d.status())
        .collect();
    ensure!(statuses == [401, 401], "alice got {statuses:?}");
    ensure!(l.proxy.stats().challenges == 2, "{:?}", l.proxy.stats());
    ensure!(alg.stats().by_fault.get(&AlgFault::BreakDigest) == Some(&1));
    // ALG off: the same phone registers at once.
    alg.stop().await;
    register(l.ua("alice")).await.context("with the ALG off")?;
    Ok(())
}

async fn stale_content_length_makes_the_proxy_drop_the_invite() -> Result<()> {
    let topo = shapes::home_lan(prc()).build().await?;
    let l = lab(
        topo,
        proxy_config(NatHandling::FAR_END),
        phone("alice", ALICE, 11),
    )
    .await?;
    register(l.ua("alice")).await?;
    let alg = EmulatedAlg::start(
        l.topo.node("home")?,
        [AlgFault::RewriteWithoutFixingContentLength],
    )
    .await?;
    let call = l.ua("alice").call("carol").await?;
    let status = call_fails(l.ua("alice"), &call).await?;
    ensure!(status == 408, "failed with {status}");
    let stats = l.proxy.stats();
    let malformed = stats
        .malformed_by_kind
        .get("content_length")
        .copied()
        .unwrap_or(0);
    ensure!(
        malformed >= 2 && malformed == stats.malformed,
        "every INVITE retransmission is a malformed datagram at the proxy: {stats:?}"
    );
    ensure!(
        !l.ua("carol")
            .events()
            .iter()
            .any(|e| matches!(e.event, Event::IncomingCall { .. })),
        "carol must never ring"
    );
    alg.stop().await;
    complete_call(l.ua("alice"), l.ua("carol"), "carol")
        .await
        .context("with the ALG off")?;
    Ok(())
}

/// Alice calls carol behind a remapping NAT; returns the media address carol got and what
/// carol's RTP to it did.
async fn media_through(alg: Option<AlgFault>, stun_media: bool) -> Result<(SocketAddr, u16, bool)> {
    let topo = shapes::home_lan(remapping()).build().await?;
    let (_stun, _) =
        StunServerTask::spawn(topo.node("server")?, ServerConfig::new(sa(SERVER, 3478))).await?;
    let mut alice = phone("alice", ALICE, 11);
    if stun_media {
        let mapped = stun::binding(topo.node("alice")?, sa(ALICE, 4000), sa(SERVER, 3478)).await?;
        alice.media = Media {
            address: mapped.ip(),
            port: mapped.port(),
        };
    }
    let l = lab(topo, proxy_config(NatHandling::FAR_END), alice).await?;
    register(l.ua("alice")).await?;
    let _alg = match alg {
        Some(f) => Some(EmulatedAlg::start(l.topo.node("home")?, [f]).await?),
        None => None,
    };
    let call = l.ua("alice").call("carol").await?;
    let up = l
        .ua("carol")
        .wait_for(
            |e| matches!(e, Event::CallEstablished { call_id, .. } if *call_id == call),
            STEP,
        )
        .await?;
    let Event::CallEstablished {
        remote_media: Some(remote_media),
        ..
    } = up.event
    else {
        anyhow::bail!("carol got no media address: {up:?}")
    };
    // Alice talks first (opening her NAT binding towards carol), then carol answers to what the
    // SDP told her.
    let a_rtp = l.topo.node("alice")?.udp_bind(sa(ALICE, 4000)).await?;
    let c_rtp = l.topo.node("peer")?.udp_bind(sa(PEER, 4000)).await?;
    a_rtp.send_to(b"alice's audio", sa(PEER, 4000)).await?;
    let (_, alice_seen_from) = recv_within(&c_rtp, DELIVERY)
        .await
        .context("alice's RTP must reach carol")?;
    c_rtp.send_to(b"carol's audio", remote_media).await?;
    let back = recv_within(&a_rtp, DELIVERY).await.is_some();
    Ok((remote_media, alice_seen_from.port(), back))
}

async fn sdp_c_without_m_port_gives_one_way_audio() -> Result<()> {
    let (faulty, fixed) = futures::join!(
        media_through(Some(AlgFault::RewriteSdpConnectionNotMediaPort), false),
        media_through(None, true)
    );
    let (media, alice_port, back) = faulty?;
    ensure!(media == sa(HOME, 4000), "carol was told {media}");
    ensure!(
        alice_port != 4000 && !back,
        "alice's audio leaves from {HOME}:{alice_port}, carol's goes to {media} and is lost: one-way audio (back: {back})"
    );
    let (media, alice_port, back) = fixed.context("ALG off, STUN-discovered media")?;
    ensure!(
        media == sa(HOME, alice_port) && back,
        "ALG off + STUN: carol was told {media}, alice sends from port {alice_port}, back: {back}"
    );
    Ok(())
}

async fn contact_not_via_sends_the_call_to_the_wrong_port() -> Result<()> {
    let topo = shapes::home_lan(remapping()).build().await?;
    let l = lab(
        topo,
        proxy_config(NatHandling::LITERAL),
        phone("alice", ALICE, 11),
    )
    .await?;
    let _alg = EmulatedAlg::start(l.topo.node("home")?, [AlgFault::RewriteContactNotVia]).await?;
    l.ua("alice").register().await?;
    let deadline = tokio::time::Instant::now() + STEP;
    let binding = loop {
        if let Some(b) = l.proxy.binding("alice").await? {
            break b;
        }
        ensure!(tokio::time::Instant::now() < deadline, "alice never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let from = l
        .proxy
        .datagrams()
        .iter()
        .find(|d| {
            d.direction == Direction::Received
                && d.is_request("REGISTER")
                && d.remote.ip() == sa(HOME, 0).ip()
        })
        .map(|d| d.remote)
        .context("no REGISTER at the proxy")?;
    ensure!(
        binding.target == sa(HOME, 5060) && from.ip() == binding.target.ip() && from.port() != 5060,
        "the registrar stored {} while alice's binding is {from}",
        binding.target
    );
    let call = l.ua("carol").call("alice").await?;
    let status = call_fails(l.ua("carol"), &call).await?;
    ensure!(status == 408, "carol's call failed with {status}");
    ensure!(
        l.proxy
            .datagrams()
            .iter()
            .any(|d| d.direction == Direction::Sent
                && d.is_request("INVITE")
                && d.remote == sa(HOME, 5060)),
        "the INVITE must go to the public address on the private port"
    );
    Ok(())
}

/// Alice fixed her Contact and Via with STUN behind a remapping NAT; a literal registrar.
async fn already_public_undoes_stun() -> Result<()> {
    let topo = shapes::home_lan(remapping()).build().await?;
    let (_stun, _) =
        StunServerTask::spawn(topo.node("server")?, ServerConfig::new(sa(SERVER, 3478))).await?;
    let mapped = stun::binding(topo.node("alice")?, sa(ALICE, 5060), sa(SERVER, 3478)).await?;
    ensure!(mapped.port() != 5060, "the NAT kept the port: {mapped}");
    // The STUN client's socket goes with its aborted task, on the runtime's next turn.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let alice = UaConfig {
        contact: ContactSource::Discovered,
        ..phone("alice", ALICE, 11)
    };
    let l = lab(topo, proxy_config(NatHandling::LITERAL), alice).await?;
    l.ua("alice").set_discovered_address(mapped).await?;
    // contact-not-via leaves an address that is already public alone: the call completes.
    let benign = EmulatedAlg::start(l.topo.node("home")?, [AlgFault::RewriteContactNotVia]).await?;
    register(l.ua("alice"))
        .await
        .context("contact-not-via + STUN")?;
    ensure!(benign.stop().await.rewritten == 0);

    let alg = EmulatedAlg::start(l.topo.node("home")?, [AlgFault::RewriteAlreadyPublic]).await?;
    l.ua("alice").register().await?;
    let failed = l
        .ua("alice")
        .wait_for(
            |e| matches!(e, Event::RegistrationFailed { .. }),
            timer_b() + STEP,
        )
        .await?;
    ensure!(
        failed.event == Event::RegistrationFailed { status: 408 },
        "{failed:?}"
    );
    ensure!(
        l.proxy
            .datagrams()
            .iter()
            .any(|d| d.direction == Direction::Sent
                && d.status() == Some(200)
                && d.remote == sa(HOME, 5060)),
        "the 200 must go to the port the ALG wrote into Via, not alice's binding {mapped}"
    );
    // ALG off: the STUN-fixed phone registers and can be called.
    alg.stop().await;
    register_anew(l.ua("alice"))
        .await
        .context("with the ALG off")?;
    let b = l.proxy.binding("alice").await?.context("alice bound")?;
    ensure!(b.target == mapped, "{b:?}");
    complete_call(l.ua("carol"), l.ua("alice"), "alice").await?;
    Ok(())
}

const JUNK: [&[u8]; 3] = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 definitely not SIP",
    b"OPTIONS sip:example.com SIP/2.0\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-lf\nFrom: <sip:x@example.com>;tag=1\nTo: <sip:example.com>\nCall-ID: lf@x\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
    b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-c\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: c@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: twelve\r\n\r\n",
];

async fn drop_unparseable_swallows_junk_and_stun_on_the_sip_port() -> Result<()> {
    let topo = shapes::home_lan(prc()).build().await?;
    let server = topo.node("server")?;
    let (proxy, _) = ProxyTask::spawn(server, proxy_config(NatHandling::FAR_END)).await?;
    let (_stun, _) = StunServerTask::spawn(server, ServerConfig::new(sa(SERVER, 3478))).await?;
    let alice = topo.node("alice")?;
    let alg = EmulatedAlg::start(topo.node("home")?, [AlgFault::DropUnparseable]).await?;
    let junk = alice.udp_bind(sa(ALICE, 40000)).await?;
    let send_junk = || async {
        for j in JUNK {
            junk.send_to(j, sa(SERVER, 5060)).await?;
        }
        anyhow::Ok(())
    };
    send_junk().await?;
    // A well-formed request still passes and is answered.
    junk.send_to(
        b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:40000;branch=z9hG4bK-ok;rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@example.com>;tag=ok\r\nTo: <sip:example.com>\r\nCall-ID: ok@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sa(SERVER, 5060),
    )
    .await?;
    let (reply, _) = recv_within(&junk, DELIVERY)
        .await
        .context("OPTIONS through the ALG")?;
    ensure!(reply.starts_with(b"SIP/2.0 200"));
    ensure!(proxy.stats().malformed == 0, "{:?}", proxy.stats());
    // STUN from the SIP socket is not SIP either: discovery on the SIP port fails.
    let stun_on_sip_port = tokio::time::timeout(
        Duration::from_secs(1),
        stun::binding(alice, sa(ALICE, 5060), sa(SERVER, 3478)),
    )
    .await;
    ensure!(
        !matches!(stun_on_sip_port, Ok(Ok(_))),
        "STUN from port 5060 got through: {stun_on_sip_port:?}"
    );
    let stats = alg.stop().await;
    // The junk and at least one STUN Binding request (retransmissions too).
    ensure!(stats.dropped > JUNK.len() as u64, "{stats:?}");

    // ALG off: the proxy sees (and counts) the junk, and STUN on the SIP port works.
    send_junk().await?;
    proxy
        .wait_for_stats(|s| s.malformed == JUNK.len() as u64, STEP)
        .await
        .map_err(|s| anyhow::anyhow!("proxy counted {s:?}"))?;
    let mapped = stun::binding(alice, sa(ALICE, 5060), sa(SERVER, 3478)).await?;
    ensure!(mapped == sa(HOME, 5060), "{mapped}");
    Ok(())
}

#[tokio::test]
async fn each_fault_reproduces_its_symptom_and_turning_the_alg_off_fixes_it() -> Result<()> {
    require_kernel!();
    let (digest, length, media, contact, public, unparseable) = futures::join!(
        break_digest_gives_a_401_loop(),
        stale_content_length_makes_the_proxy_drop_the_invite(),
        sdp_c_without_m_port_gives_one_way_audio(),
        contact_not_via_sends_the_call_to_the_wrong_port(),
        already_public_undoes_stun(),
        drop_unparseable_swallows_junk_and_stun_on_the_sip_port(),
    );
    let results: BTreeMap<&str, Result<()>> = BTreeMap::from([
        ("break-digest", digest),
        ("rewrite-without-fixing-content-length", length),
        ("rewrite-sdp-connection-not-media-port", media),
        ("rewrite-contact-not-via", contact),
        ("rewrite-already-public", public),
        ("drop-unparseable", unparseable),
    ]);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(k, r)| r.as_ref().err().map(|e| format!("{k}: {e:#}")))
        .collect();
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

/// A SIP ladder of the 401 loop, as a field engineer would paste it into a ticket.
#[tokio::test]
async fn the_401_loop_as_a_ladder() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(prc()).build().await?;
    let proxy = proxy_config(NatHandling::FAR_END).with_user("alice", "secret");
    let (_proxy, _) = ProxyTask::spawn(topo.node("server")?, proxy).await?;
    let (alice, _) = UaTask::spawn(
        topo.node("alice")?,
        UaConfig {
            password: Some("secret".into()),
            ..phone("alice", ALICE, 11)
        },
    )
    .await?;
    let _alg = EmulatedAlg::start(topo.node("home")?, [AlgFault::BreakDigest]).await?;
    let cap = Capture::start(&topo).await?;
    alice.register().await?;
    alice
        .wait_for(|e| matches!(e, Event::RegistrationFailed { .. }), STEP)
        .await?;
    let trace = Trace::from_frames(&cap.stop().await);
    let ladder = Ladder::new(&trace)
        .vantages(["home:lan", "home:wan"])
        .without_events()
        .render();
    ensure!(ladder.matches("401").count() >= 4, "{ladder}");
    insta::assert_snapshot!(ladder);
    Ok(())
}
