//! Hostile input on the wire: a host on the internet segment floods the proxy, the SBC (its SIP
//! port and a relay port), the STUN and TURN servers and a phone behind a router with the
//! emulated SIP ALG with malformed, oversized
//! and garbage datagrams while two phones register and call through it. Every server keeps
//! serving, counts what it rejected by reason, and the call completes during the flood.
//!
//! The flood is bounded in count ([`MAX_DATAGRAMS`]) and in time ([`MAX_FLOOD`]) and runs until
//! the call has ended, so it covers registration, INVITE, answer and BYE.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::alg::EmulatedAlg;
use harness::sbc::{SbcConfig, SbcTask};
use harness::seeded::Rng;
use harness::shapes::{self, PEER, SERVER, SERVER_ALT};
use harness::sip::{Event, NatHandling, ProxyTask, UaTask};
use harness::stun::{ServerConfig, StunServerTask};
use harness::turn::{TurnServerConfig, TurnServerTask};
use sim_nat::NatType;
use tests::lab::{complete_call_within, phone, proxy_config, ALICE, BOB, DOMAIN, HOME_A};
use tests::{require_kernel, sa};

/// A step may take a little longer than the lab's beside the flood.
const STEP: Duration = Duration::from_secs(4);
/// The flood stops at whichever comes first: the call's end, this many datagrams, this long.
const MAX_DATAGRAMS: u64 = 40_000;
const MAX_FLOOD: Duration = Duration::from_secs(10);
/// Datagrams per burst, and the pause between bursts (about 10,000 datagrams a second).
const BURST: usize = 40;
const PAUSE: Duration = Duration::from_millis(4);

/// splitmix64, so a failing flood can be replayed from its seed.
/// The kinds of hostile datagram, each aimed at a parser's edge.
fn hostile(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        // Random bytes of any length a datagram on a LAN has.
        0 => {
            let n = rng.below(1400);
            rng.bytes(n)
        }
        // Nothing at all.
        1 => Vec::new(),
        // Oversized: more than any MTU, so IP fragments it (the ALG sees the reassembled packet).
        2 => vec![b'A'; 8000 + rng.below(20_000)],
        // A SIP request cut off mid-header.
        3 => {
            let m = b"INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKflood\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: flood\r\nCSeq: 1 INVITE\r\nContent-Length: 200\r\n\r\nv=0\r\n";
            let cut = rng.below(m.len());
            m[..cut].to_vec()
        }
        // A SIP request whose Content-Length lies and whose headers carry binary.
        4 => {
            let mut m = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP \xff\xfe\r\nContent-Length: 99999\r\n\r\n".to_vec();
            let n = rng.below(64);
            m.extend(rng.bytes(n));
            m
        }
        // A STUN header with a length that lies, then garbage attributes.
        5 => {
            let mut m = vec![0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42];
            m.extend(rng.bytes(12));
            let n = rng.below(200);
            m.extend(rng.bytes(n));
            m
        }
        // ChannelData for a channel nobody bound, claiming more than it carries.
        6 => {
            let mut m = vec![0x40, 0x01, 0xff, 0xff];
            let n = rng.below(100);
            m.extend(rng.bytes(n));
            m
        }
        // Bare-LF SIP: a parser that insists on CRLF rejects it.
        _ => b"OPTIONS sip:alice@example.com SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.20\n\n".to_vec(),
    }
}

/// Sends hostile datagrams from `sock` to `targets` in bursts until `stop`, [`MAX_DATAGRAMS`]
/// (across all floods) or [`MAX_FLOOD`]; returns how long it ran.
fn spawn_flood(
    sock: tokio::net::UdpSocket,
    targets: Vec<SocketAddr>,
    seed: u64,
    flooded: Arc<Flooded>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        let begun = Instant::now();
        while !stop.load(Ordering::Relaxed)
            && flooded.sent.load(Ordering::Relaxed) < MAX_DATAGRAMS
            && begun.elapsed() < MAX_FLOOD
        {
            for _ in 0..BURST {
                let to = targets[rng.below(targets.len())];
                let d = hostile(&mut rng);
                match sock.send_to(&d, to).await {
                    Ok(_) => flooded.sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => flooded.send_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            tokio::time::sleep(PAUSE).await;
        }
        begun.elapsed()
    })
}

/// Counts of what the floods sent.
#[derive(Default)]
struct Flooded {
    sent: AtomicU64,
    send_errors: AtomicU64,
}

#[tokio::test]
async fn servers_keep_serving_and_calls_complete_during_a_flood_of_garbage() -> Result<()> {
    require_kernel!();
    let topo = shapes::two_lans(
        NatType::FullCone.behaviour(),
        NatType::PortRestrictedCone.behaviour(),
    )
    .build()
    .await?;
    let server = topo.node("server")?;
    let (proxy, _) = ProxyTask::spawn(server, proxy_config(NatHandling::FAR_END)).await?;
    let (stun, _) = StunServerTask::spawn(server, ServerConfig::new(sa(SERVER_ALT, 3478))).await?;
    let (turn, _turn_events) = TurnServerTask::serve(
        server,
        TurnServerConfig {
            relay_ports: 50000..=50007,
            ..TurnServerConfig::new(sa(SERVER, 3478), "harness.test")
        }
        .user("alice", "secret"),
    )
    .await?;
    let (sbc, _sbc_events) = SbcTask::serve(
        server,
        SbcConfig {
            relay_ports: 40000..=40007,
            ..SbcConfig::new(sa(SERVER_ALT, 5060), DOMAIN)
        },
    )
    .await?;
    let alg = EmulatedAlg::start(topo.node("home-a")?, []).await?;
    let (alice, _) = UaTask::spawn(topo.node("alice")?, phone("alice", ALICE, 11)).await?;
    let (bob, _) = UaTask::spawn(topo.node("bob")?, phone("bob", BOB, 22)).await?;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u64;
    let flooded = Arc::new(Flooded::default());
    let stop = Arc::new(AtomicBool::new(false));
    let peer = topo.node("peer")?;
    let servers = spawn_flood(
        peer.udp_bind(sa(PEER, 5060)).await?,
        vec![
            sa(SERVER, 5060),
            sa(SERVER_ALT, 3478),
            sa(SERVER, 3478),
            sa(SERVER_ALT, 5060),
            sa(SERVER_ALT, 40000),
        ],
        seed,
        flooded.clone(),
        stop.clone(),
    );
    // The legitimate traffic, all during the flood.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_call = flooded.sent.load(Ordering::Relaxed);
    let mut alg_flood = None;
    let outcome = async {
        for ua in [&alice, &bob] {
            ua.register().await?;
            ua.wait_for(|e| matches!(e, Event::Registered { .. }), STEP)
                .await
                .with_context(|| format!("{} did not register during the flood", ua.node()))?;
        }
        // Alice's binding now exists on her full-cone router. A flood from a port that never
        // sent before reaches her through the ALG: the first packet of a flow meets the NAT's
        // DNAT. (Flooding her router before she registered would have made conntrack entries
        // towards the router itself, and the later packets of those flows would never be
        // forwarded, however the binding changes.)
        alg_flood = Some(spawn_flood(
            peer.udp_bind(sa(PEER, 5070)).await?,
            vec![sa(HOME_A, 5060)],
            seed ^ 1,
            flooded.clone(),
            stop.clone(),
        ));
        // Bob calls alice: the INVITE crosses her router's ALG inbound, beside the garbage.
        complete_call_within(&bob, &alice, "alice", STEP)
            .await
            .context("during the flood")?;
        anyhow::Ok(())
    }
    .await;
    let during_call = flooded.sent.load(Ordering::Relaxed) - before_call;
    stop.store(true, Ordering::Relaxed);
    let flood_took = servers.await?;
    if let Some(f) = alg_flood {
        f.await?;
    }
    // Let the last datagrams land before reading the counters.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let p = proxy.stats();
    let s = stun.stats();
    let t = turn.state();
    let a = alg.stats();
    let b = sbc.state();
    let sent = flooded.sent.load(Ordering::Relaxed);
    let report = format!(
        "flood (seed {seed}): {sent} datagrams in {:.1} s ({} send errors), {during_call} of them \
         while the phones registered and called\n\
         proxy: {} malformed {:?}\n\
         STUN server: {} malformed {:?}\n\
         TURN server: {} malformed {:?}, errors by code {:?}, {} dropped for want of an allocation\n\
         SBC: {} malformed {:?}, {} relay packets to ports no call owns\n\
         ALG on home-a: {} unparseable of {} inbound",
        flood_took.as_secs_f64(),
        flooded.send_errors.load(Ordering::Relaxed),
        p.malformed,
        p.malformed_by_kind,
        s.malformed,
        s.malformed_by_reason,
        t.malformed,
        t.malformed_by_reason,
        t.errors,
        t.dropped_no_allocation,
        b.proxy.malformed,
        b.proxy.malformed_by_kind,
        b.relay.unowned,
        a.unparseable,
        a.inbound,
    );
    eprintln!("{report}");
    outcome.context(report.clone())?;
    ensure!(
        during_call > 100,
        "the flood was not running during the call\n{report}"
    );
    ensure!(
        flood_took <= MAX_FLOOD + Duration::from_secs(1),
        "the flood overran its bound\n{report}"
    );
    ensure!(
        p.malformed > 0 && p.malformed_by_kind.len() >= 2,
        "the proxy counted no rejects by kind\n{report}"
    );
    ensure!(
        s.malformed > 0 && s.malformed_by_reason.len() >= 2,
        "the STUN server counted no rejects by reason\n{report}"
    );
    ensure!(
        t.malformed > 0 && t.malformed_by_reason.len() >= 2 && t.dropped_no_allocation > 0,
        "the TURN server counted no rejects by reason\n{report}"
    );
    ensure!(
        b.proxy.malformed > 0 && b.relay.unowned > 0,
        "the SBC counted no rejects\n{report}"
    );
    ensure!(a.unparseable > 0, "the ALG saw no garbage\n{report}");
    // Each server still answers a well-formed request after the flood.
    let mapped = harness::stun::binding(topo.node("bob")?, sa(BOB, 40000), sa(SERVER_ALT, 3478))
        .await
        .context(report.clone())?;
    ensure!(
        mapped.ip().to_string() == "198.51.100.1",
        "STUN mapped {mapped}"
    );
    let probe = peer.udp_bind(sa(PEER, 5080)).await?;
    let options = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {PEER}:5080;rport;branch=z9hG4bKafter\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\n\
         Call-ID: after-the-flood\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    probe
        .send_to(options.as_bytes(), sa(SERVER_ALT, 5060))
        .await?;
    let answer = tests::recv_within(&probe, Duration::from_secs(2)).await;
    ensure!(
        answer.is_some_and(|(a, _)| a.starts_with(b"SIP/2.0 ")),
        "the SBC did not answer OPTIONS after the flood\n{report}"
    );
    Ok(())
}
