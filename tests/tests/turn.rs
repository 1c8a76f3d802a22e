//! TURN and RTP on real packets through real kernel NATs, and against coturn.
//!
//! Every test builds `two_lans(Symmetric, Symmetric)`: alice (192.168.1.10) behind `home-a`
//! (203.0.113.1), bob (192.168.2.10) behind `home-b` (198.51.100.1), a public `server`
//! (203.0.113.10/.11) and a public `peer` (198.51.100.20). Media is 5 s of PCMU at 20 ms:
//! 250 packets each way.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::peers::coturn::{Coturn, CoturnConfig};
use harness::rtp::{MediaConfig, MediaReport, MediaStream, MediaVerdict};
use harness::shapes::{self, PEER, SERVER};
use harness::stun::{self, ServerConfig, StunServerTask};
use harness::turn::driver::RelayedMediaState;
use harness::turn::{
    MediaTask, RelayedMedia, RelayedMediaTask, TurnClientConfig, TurnServerConfig, TurnServerTask,
};
use harness::{Node, Topology};
use sim_nat::NatType;
use tests::{require_kernel, sa};

const ALICE: &str = "192.168.1.10";
const BOB: &str = "192.168.2.10";
const REALM: &str = "harness.test";
/// Long enough for 250 packets and the last ones' flight.
const CALL: Duration = Duration::from_secs(8);
const SETUP: Duration = Duration::from_secs(5);

async fn symmetric_lans() -> Result<Topology> {
    Ok(shapes::two_lans(NatType::Symmetric, NatType::Symmetric)
        .build()
        .await?)
}

fn our_turn_server() -> TurnServerConfig {
    TurnServerConfig {
        relay_ports: 50000..=50031,
        ..TurnServerConfig::new(sa(SERVER, 3478), REALM)
    }
    .user("alice", "secret")
    .user("bob", "hunter2")
}

/// A softphone that sends its RTP through a TURN allocation on `server`.
async fn relayed_phone(
    node: &Node,
    ip: &str,
    server: SocketAddr,
    user: &str,
    password: &str,
) -> Result<(RelayedMediaTask, SocketAddr)> {
    let turn = TurnClientConfig::new(sa(ip, 4000), server, user, password);
    let media = RelayedMedia::new(turn, MediaConfig::pcmu(sa("0.0.0.0", 0), None));
    let (task, _events) = RelayedMediaTask::allocate(node, media).await?;
    let state = task
        .wait_for(|s| s.relayed.is_some(), SETUP)
        .await
        .map_err(|s| anyhow::anyhow!("{user} got no allocation from {server}: {s:?}"))?;
    Ok((task, state.relayed.context("relayed")?))
}

async fn wait_ready(phone: &RelayedMediaTask, who: &str) -> Result<RelayedMediaState> {
    phone
        .wait_for(|s| s.ready, SETUP)
        .await
        .map_err(|s| anyhow::anyhow!("{who}: no permission/channel to the peer: {s:?}"))
}

#[tokio::test]
async fn phones_behind_symmetric_nats_get_audio_both_ways_through_our_turn_server() -> Result<()> {
    require_kernel!();
    let topo = symmetric_lans().await?;
    let (server, _events) = TurnServerTask::serve(topo.node("server")?, our_turn_server()).await?;
    let server_addr = sa(SERVER, 3478);
    let (alice, a) =
        relayed_phone(topo.node("alice")?, ALICE, server_addr, "alice", "secret").await?;
    let (bob, b) = relayed_phone(topo.node("bob")?, BOB, server_addr, "bob", "hunter2").await?;
    // The relayed addresses are what each SDP carries.
    alice.call(move |m, now| m.connect(b, now)).await??;
    bob.call(move |m, now| m.connect(a, now)).await??;
    wait_ready(&alice, "alice").await?;
    wait_ready(&bob, "bob").await?;
    alice.call(|m, now| m.start_media(now)).await?;
    bob.call(|m, now| m.start_media(now)).await?;
    tokio::time::sleep(CALL).await;
    let (sa_, sb) = (alice.state(), bob.state());
    let report = MediaReport::new(&sa_.stats, &sb.stats, 0.95);
    eprintln!("through our TURN server: {report}");
    ensure!(report.verdict == MediaVerdict::BothWays, "{report}");
    ensure!(sa_.stats.sent == 250 && sb.stats.sent == 250, "{report}");
    // Each hears the other from the other's relayed address, never from a NAT.
    ensure!(
        sb.stats.by_source.keys().eq([&a]) && sa_.stats.by_source.keys().eq([&b]),
        "sources: alice {:?}, bob {:?}",
        sa_.stats.by_source.keys(),
        sb.stats.by_source.keys()
    );
    let s = server.state();
    ensure!(
        s.allocations_created == 2 && s.challenges == 2 && s.to_client_channel_data >= 475,
        "{s:?}"
    );
    Ok(())
}

#[tokio::test]
async fn phones_behind_symmetric_nats_with_only_stun_discovered_addresses_get_no_audio(
) -> Result<()> {
    require_kernel!();
    let topo = symmetric_lans().await?;
    let (_stun, _events) =
        StunServerTask::spawn(topo.node("server")?, ServerConfig::new(sa(SERVER, 3478))).await?;
    let (alice_node, bob_node) = (topo.node("alice")?, topo.node("bob")?);
    // Each learns its RTP socket's mapping towards the STUN server and puts it in its SDP.
    let alice_sdp = stun::binding(alice_node, sa(ALICE, 4000), sa(SERVER, 3478)).await?;
    let bob_sdp = stun::binding(bob_node, sa(BOB, 4000), sa(SERVER, 3478)).await?;
    let phone = |ip, peer| MediaStream::new(MediaConfig::pcmu(sa(ip, 4000), Some(peer)));
    let (alice, _) = MediaTask::bind(alice_node, phone(ALICE, bob_sdp)).await?;
    let (bob, _) = MediaTask::bind(bob_node, phone(BOB, alice_sdp)).await?;
    alice.call(|m, now| m.start(now)).await?;
    bob.call(|m, now| m.start(now)).await?;
    tokio::time::sleep(CALL).await;
    let report = MediaReport::new(&alice.state(), &bob.state(), 0.95);
    eprintln!("STUN-discovered addresses ({alice_sdp} / {bob_sdp}): {report}");
    ensure!(report.verdict == MediaVerdict::None, "{report}");
    ensure!(
        report.caller_to_callee.sent == 250
            && report.caller_to_callee.received == 0
            && report.callee_to_caller.received == 0,
        "{report}"
    );
    Ok(())
}

/// coturn with one long-term credential user, relaying on 203.0.113.10 ports 50000–50031.
fn coturn_config(server: &Node) -> CoturnConfig {
    let mut c = CoturnConfig::stun_only(server);
    c.stun_only = false;
    c.no_auth = false;
    c.extra_args = [
        "--lt-cred-mech",
        "--user",
        "alice:secret",
        "--realm",
        REALM,
        "--relay-ip",
        SERVER,
        "--min-port",
        "50000",
        "--max-port",
        "50031",
    ]
    .map(String::from)
    .to_vec();
    c
}

#[tokio::test]
async fn our_turn_client_relays_rtp_through_coturn_to_a_latching_peer() -> Result<()> {
    require_kernel!();
    let topo = symmetric_lans().await?;
    let server = topo.node("server")?;
    let coturn = Coturn::start(server, coturn_config(server)).await?;
    let (alice, a) = relayed_phone(
        topo.node("alice")?,
        ALICE,
        coturn.primary(),
        "alice",
        "secret",
    )
    .await
    .with_context(|| format!("coturn said:\n{}", coturn.log()))?;
    // The peer (an SBC) learns nothing from SDP and latches onto Alice's relayed RTP.
    let sbc = MediaStream::new(MediaConfig {
        latching: true,
        ..MediaConfig::pcmu(sa(PEER, 6000), None)
    });
    let (peer, _) = MediaTask::bind(topo.node("peer")?, sbc).await?;
    alice
        .call(|m, now| m.connect(sa(PEER, 6000), now))
        .await??;
    wait_ready(&alice, "alice")
        .await
        .with_context(|| format!("coturn said:\n{}", coturn.log()))?;
    alice.call(|m, now| m.start_media(now)).await?;
    peer.call(|m, now| m.start(now)).await?;
    tokio::time::sleep(CALL).await;
    let (sa_, sp) = (alice.state(), peer.state());
    let report = MediaReport::new(&sa_.stats, &sp, 0.95);
    eprintln!("through coturn (relayed {a}): {report}");
    ensure!(report.verdict == MediaVerdict::BothWays, "{report}");
    ensure!(sp.latched == Some(a), "peer latched onto {:?}", sp.latched);
    Ok(())
}

#[tokio::test]
async fn coturn_uclient_exchanges_data_client_to_client_through_our_turn_server() -> Result<()> {
    require_kernel!();
    let topo = symmetric_lans().await?;
    let (server, _events) = TurnServerTask::serve(topo.node("server")?, our_turn_server()).await?;
    let (status, out, err) = topo
        .node("alice")?
        .output(
            "turnutils_uclient",
            &[
                "-u", "alice", "-w", "secret", "-y", "-c", "-n", "50", "-m", "1", "-p", "3478",
                SERVER,
            ],
            Duration::from_secs(60),
        )
        .await?;
    let all = format!("{out}{err}");
    let stats = server.state();
    eprintln!("turnutils_uclient ({status:?}):\n{all}\nour server: {stats:?}");
    ensure!(
        status.is_some_and(|s| s.success()),
        "uclient failed:\n{all}"
    );
    let lost = uclient_number(&all, "Total lost packets").context("no loss line")?;
    let sent = uclient_number(&all, "tot_send_msgs=").context("no send count")?;
    let received = uclient_number(&all, "tot_recv_msgs=").context("no receive count")?;
    ensure!(sent >= 50 && received == sent && lost == 0, "{all}");
    ensure!(
        stats.allocations_created >= 2 && stats.to_peer >= 50 && stats.to_client >= 50,
        "{stats:?}"
    );
    Ok(())
}

/// The integer right after `key` in uclient's output, e.g. `tot_recv_msgs=100`.
fn uclient_number(out: &str, key: &str) -> Option<u64> {
    let at = out.rfind(key)? + key.len();
    let digits: String = out[at..]
        .trim_start_matches([' ', '='])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
