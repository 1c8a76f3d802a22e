//! Static port forwards: a router's "port forwarding" / "virtual server" page, which sends what
//! arrives on a range of its WAN ports to one inside host whatever the filtering, with no binding
//! needed — how a PBX behind NAT is reached (the field guide: "open and forward RTP port ranges
//! on the firewall").
//!
//! A forward is *static* both ways, as a Cisco static PAT or a firewall's port forward with
//! "static port" outbound NAT is: what the forwarded host sends from a forwarded port leaves from
//! the same WAN port, so the address its `externip` advertises is the one its packets carry even
//! behind a NAT that randomises every other flow's port. UDP only: the harness's protocols are
//! UDP, and the reference model knows no TCP.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::Error;

/// WAN ports `ports.0..=ports.1` (UDP) go to the same port of `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PortForward {
    /// First and last WAN port, inclusive; the destination port equals the WAN port.
    pub ports: (u16, u16),
    /// The inside host's address.
    pub to: Ipv4Addr,
}

impl PortForward {
    /// Forwards UDP ports `lo..=hi` to the same ports of `to`.
    pub fn udp(lo: u16, hi: u16, to: Ipv4Addr) -> Self {
        Self {
            ports: (lo, hi),
            to,
        }
    }

    /// Whether WAN port `port` is one of this forward's.
    pub fn covers(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    /// `10000-20000`, or `5060` for a single port.
    pub fn range_text(&self) -> String {
        if self.ports.0 == self.ports.1 {
            self.ports.0.to_string()
        } else {
            format!("{}-{}", self.ports.0, self.ports.1)
        }
    }

    /// Where WAN port `port` goes, if a forward of `forwards` covers it.
    pub fn target(forwards: &[PortForward], port: u16) -> Option<SocketAddrV4> {
        forwards
            .iter()
            .find(|f| f.covers(port))
            .map(|f| SocketAddrV4::new(f.to, port))
    }

    /// Whether `src` sends from a port forwarded to it (its flows then keep their port).
    pub fn is_static_source(forwards: &[PortForward], src: SocketAddrV4) -> bool {
        forwards
            .iter()
            .any(|f| f.to == *src.ip() && f.covers(src.port()))
    }

    /// Refuses empty ranges, port 0 and overlapping forwards (one WAN port cannot go to two
    /// places), with the reason.
    pub fn validate_all(forwards: &[PortForward]) -> Result<(), Error> {
        for (i, f) in forwards.iter().enumerate() {
            let (lo, hi) = f.ports;
            if lo == 0 || lo > hi {
                return Err(Error::Invalid(format!(
                    "forwarded ports {lo}-{hi} are empty or start at 0"
                )));
            }
            if let Some(g) = forwards[..i]
                .iter()
                .find(|g| g.ports.0 <= hi && lo <= g.ports.1)
            {
                return Err(Error::Invalid(format!(
                    "forwarded ports {} (to {}) overlap {} (to {}): a WAN port goes to one host",
                    f.range_text(),
                    f.to,
                    g.range_text(),
                    g.to
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_or_empty_forwards_are_refused_with_both_ranges() {
        let a = Ipv4Addr::new(192, 168, 1, 20);
        let b = Ipv4Addr::new(192, 168, 1, 21);
        assert!(PortForward::validate_all(&[
            PortForward::udp(5060, 5060, a),
            PortForward::udp(10000, 20000, a)
        ])
        .is_ok());
        let e = PortForward::validate_all(&[
            PortForward::udp(10000, 20000, a),
            PortForward::udp(20000, 20010, b),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("20000-20010") && e.contains("10000-20000"),
            "{e}"
        );
        assert!(PortForward::validate_all(&[PortForward::udp(20, 10, a)]).is_err());
        assert!(PortForward::validate_all(&[PortForward::udp(0, 10, a)]).is_err());
    }

    #[test]
    fn a_forward_targets_the_same_port_of_its_host() {
        let to = Ipv4Addr::new(192, 168, 1, 20);
        let f = [PortForward::udp(10000, 20000, to)];
        assert_eq!(
            PortForward::target(&f, 12345),
            Some(SocketAddrV4::new(to, 12345))
        );
        assert_eq!(PortForward::target(&f, 9999), None);
        assert!(PortForward::is_static_source(
            &f,
            SocketAddrV4::new(to, 10000)
        ));
        assert!(!PortForward::is_static_source(
            &f,
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 21), 10000)
        ));
    }
}
