//! The kernel's own SIP helper (the "SIP ALG" of Linux routers) rewrites what it sees, and only
//! when turned on.

use anyhow::{ensure, Context, Result};
use harness::shapes::{self, SERVER};
use sim_nat::{NatType, SipAlg};
use tests::{recv_within, require_kernel, sa, DELIVERY};

const REGISTER: &str = "REGISTER sip:203.0.113.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@203.0.113.10>;tag=1\r\n\
To: <sip:alice@203.0.113.10>\r\n\
Call-ID: 1@192.168.1.10\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.168.1.10:5060>\r\n\
Expires: 60\r\n\
Content-Length: 0\r\n\r\n";

async fn register_as_seen(alg: SipAlg) -> Result<String> {
    let topo = shapes::home_lan(NatType::PortRestrictedCone.behaviour().with_sip_alg(alg))
        .build()
        .await?;
    let a = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 5060))
        .await?;
    let s = topo.node("server")?.udp_bind(sa(SERVER, 5060)).await?;
    a.send_to(REGISTER.as_bytes(), sa(SERVER, 5060)).await?;
    let (bytes, _) = recv_within(&s, DELIVERY)
        .await
        .context("REGISTER must arrive")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_kernel_sip_helper_rewrites_via_and_contact_to_the_public_address() -> Result<()> {
    require_kernel!();
    let seen = register_as_seen(SipAlg::Kernel).await?;
    ensure!(seen.contains("Via: SIP/2.0/UDP 203.0.113.1:5060"), "{seen}");
    ensure!(
        seen.contains("Contact: <sip:alice@203.0.113.1:5060>"),
        "{seen}"
    );
    ensure!(!seen.contains("192.168.1.10:5060>"), "{seen}");
    Ok(())
}

#[tokio::test]
async fn without_the_helper_sip_passes_untouched() -> Result<()> {
    require_kernel!();
    let seen = register_as_seen(SipAlg::Off).await?;
    ensure!(
        seen == REGISTER,
        "the REGISTER must arrive byte for byte:\n{seen}"
    );
    Ok(())
}
