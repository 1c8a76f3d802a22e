//! Captures on every link, as pcap files other tools read, decoded into a ladder that shows each
//! packet before and after the NAT.

use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use harness::capture::{self, Capture};
use harness::shapes::{self, SERVER};
use harness::trace::{Ladder, Payload, Trace};
use sim_nat::NatType;
use tests::{recv_within, require_kernel, sa, DELIVERY};

const REGISTER: &str = "REGISTER sip:203.0.113.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-77;rport\r\n\
From: <sip:alice@203.0.113.10>;tag=a1\r\n\
To: <sip:alice@203.0.113.10>\r\n\
Call-ID: c1@192.168.1.10\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.168.1.10:5060>\r\n\
Content-Length: 0\r\n\r\n";

#[tokio::test]
async fn a_register_is_seen_before_and_after_the_nat_and_the_pcaps_open_in_libpcap() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::Symmetric).build().await?;
    let cap = Capture::start(&topo).await?;
    let alice = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 5060))
        .await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 5060)).await?;
    alice.send_to(REGISTER.as_bytes(), sa(SERVER, 5060)).await?;
    let (_, from) = recv_within(&server, DELIVERY)
        .await
        .context("REGISTER arrives")?;
    server.send_to(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-77;rport\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n", from).await?;
    recv_within(&alice, DELIVERY).await.context("200 arrives")?;
    let frames = cap.stop().await;
    let trace = Trace::from_frames(&frames);

    // The REGISTER at each vantage, in path order, with its source translated at the WAN side.
    let seen: Vec<(String, SocketAddr)> = trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            harness::trace::Entry::Packet {
                vantage,
                src,
                payload: Payload::Sip(s),
                ..
            } if s.method_or_status() == "REGISTER" => {
                Some((vantage.label(), SocketAddr::V4(*src)))
            }
            _ => None,
        })
        .collect();
    let order: Vec<&str> = seen.iter().map(|(v, _)| v.as_str()).collect();
    ensure!(
        order == ["alice", "home:lan", "home:wan", "server"],
        "{order:?}"
    );
    ensure!(
        seen[1].1 == sa("192.168.1.10", 5060),
        "inside the NAT: {:?}",
        seen[1]
    );
    ensure!(
        seen[2].1 == from && from.ip().to_string() == "203.0.113.1",
        "outside: {:?}",
        seen[2]
    );

    let dir = std::env::temp_dir().join(format!("snh-capture-{}", std::process::id()));
    let files = capture::write_pcaps(&frames, &dir)?;
    ensure!(
        files.len() == 5,
        "a pcap per vantage (alice, server, peer, home lan/wan): {files:?}"
    );
    let wan = dir.join("home-wan.pcap");
    // Run as uid 1000 of a nested user namespace: tcpdump run as uid 0 switches to its own user,
    // which a rootless run's user namespace cannot (no setgroups there).
    let out = std::process::Command::new("unshare")
        .args(["--map-user=1000", "--map-group=1000", "tcpdump", "-n", "-r"])
        .arg(&wan)
        .output()
        .context("tcpdump")?;
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).ok();
    ensure!(
        out.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains(&format!(
            "IP {} > 203.0.113.10.5060: SIP",
            from.to_string().replace(':', ".")
        )),
        "tcpdump must read the WAN capture and see the translated REGISTER:\n{text}"
    );

    let ladder = Ladder::new(&trace)
        .vantages(["alice", "home:wan", "server"])
        .render();
    ensure!(
        ladder.contains("REGISTER sip:203.0.113.10 SIP/2.0"),
        "{ladder}"
    );
    ensure!(
        ladder.contains("Contact: <sip:alice@192.168.1.10:5060>"),
        "{ladder}"
    );
    ensure!(
        ladder.contains("203.0.113.1:{p1}"),
        "the random mapping port is normalised: {ladder}"
    );
    Ok(())
}

/// A packet to a leaked private address shows up at the sender and nowhere else, and no ICMP
/// comes back: the capture confirms what the internet does.
#[tokio::test]
async fn a_packet_to_a_private_address_is_seen_leaving_and_then_nowhere() -> Result<()> {
    require_kernel!();
    let topo = shapes::home_lan(NatType::PortRestrictedCone)
        .build()
        .await?;
    let cap = Capture::start(&topo).await?;
    let server = topo.node("server")?.udp_bind(sa(SERVER, 5060)).await?;
    server
        .send_to(
            b"INVITE sip:bob@192.168.1.10 SIP/2.0\r\n\r\n",
            sa("192.168.1.10", 5060),
        )
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let trace = Trace::from_frames(&cap.stop().await);
    let sip_seen: Vec<String> = trace
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
    ensure!(sip_seen == ["server"], "{sip_seen:?}");
    let icmp = trace.entries().iter().any(|e| {
        matches!(
            e,
            harness::trace::Entry::Packet {
                payload: Payload::Icmp(_),
                ..
            }
        )
    });
    ensure!(!icmp, "no ICMP error may come back");
    Ok(())
}
