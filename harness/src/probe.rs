//! Measures a NAT's RFC 4787 behaviour with plain UDP, from both sides.
//!
//! The client sends from its socket to three server endpoints (same address other port, other
//! address) and compares the sources they saw: that is the mapping. A second client socket that
//! has only ever sent to one endpoint is then probed from an address it never contacted, from
//! another port of the address it did contact, and from that endpoint itself: that is the
//! filtering. No STUN is involved, so this is the ground truth STUN-based classifiers are checked
//! against.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use sim_nat::{Filtering, Mapping};
use tokio::net::UdpSocket;

use crate::error::{Error, Result};
use crate::topology::Node;

/// How long a probe waits for a datagram before calling it dropped.
pub const PROBE_WAIT: Duration = Duration::from_millis(300);

/// What the probes saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// The mapping kept the internal port.
    pub port_preserved: bool,
    /// The first mapping seen, e.g. `203.0.113.1:40000`.
    pub mapped: SocketAddr,
}

async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<SocketAddr> {
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((_, from))) => Some(from),
        _ => None,
    }
}

/// Probes the NAT between `client` (inside) and `server` (public, two addresses) and `peer`
/// (public, another host), using ports from `base` upwards on every side.
pub async fn observe(client: &Node, server: &Node, peer: &Node, base: u16) -> Result<Observed> {
    let [a, b] = match server.addrs() {
        [a, b, ..] => [*a, *b],
        _ => {
            return Err(Error::Topology(format!(
                "`{}` needs two addresses for mapping probes",
                server.name()
            )))
        }
    };
    let sa = |ip, port| SocketAddr::V4(SocketAddrV4::new(ip, port));
    let s1 = server.udp_bind(sa(a, base)).await?;
    let s2 = server.udp_bind(sa(a, base + 1)).await?;
    let s3 = server.udp_bind(sa(b, base)).await?;
    let p = peer.udp_bind(sa(peer.addr(), base)).await?;
    let inside = client.addr();
    let c = client.udp_bind(sa(inside, base)).await?;
    let lost = |what: &str| Error::Io {
        what: format!("probe {what} never arrived: is the path up?"),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    };
    let io = |e| Error::io("send probe")(e);
    let mut seen = Vec::new();
    for s in [&s1, &s2, &s3] {
        c.send_to(b"map", s.local_addr().map_err(io)?)
            .await
            .map_err(io)?;
        seen.push(
            recv_within(s, PROBE_WAIT)
                .await
                .ok_or_else(|| lost("mapping"))?,
        );
    }
    let mapping = if seen[0] != seen[1] {
        Mapping::AddressAndPortDependent
    } else if seen[0] != seen[2] {
        Mapping::AddressDependent
    } else {
        Mapping::EndpointIndependent
    };

    let f = client.udp_bind(sa(inside, base + 1)).await?;
    f.send_to(b"open", s1.local_addr().map_err(io)?)
        .await
        .map_err(io)?;
    let m = recv_within(&s1, PROBE_WAIT)
        .await
        .ok_or_else(|| lost("filtering"))?;
    p.send_to(b"other address", m).await.map_err(io)?;
    let from_other_address = recv_within(&f, PROBE_WAIT).await.is_some();
    s2.send_to(b"other port", m).await.map_err(io)?;
    let from_other_port = recv_within(&f, PROBE_WAIT).await.is_some();
    s1.send_to(b"same endpoint", m).await.map_err(io)?;
    if recv_within(&f, PROBE_WAIT).await.is_none() {
        return Err(lost("reply from the contacted endpoint"));
    }
    let filtering = if from_other_address {
        Filtering::EndpointIndependent
    } else if from_other_port {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Ok(Observed {
        mapping,
        filtering,
        port_preserved: seen[0].port() == base,
        mapped: seen[0],
    })
}
