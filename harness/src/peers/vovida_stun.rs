//! The classic RFC 3489 classifier: Debian's `stun` client (vovida) against its `stund` server.
//!
//! `stund` needs two addresses on the server host (it answers CHANGE-REQUEST from the other one);
//! the client prints one line such as
//! `Primary: Independent Mapping, Port Dependent Filter, preserves ports, no hairpin`.

use std::time::Duration;

use sim_nat::{Filtering, Mapping, NatType};

use crate::error::{Error, Result};
use crate::topology::Node;

/// What the classic classifier said about the NAT in front of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicVerdict {
    /// The client's `Primary:` line, as printed.
    pub line: String,
    pub mapping: Option<Mapping>,
    pub filtering: Option<Filtering>,
    pub preserves_ports: bool,
    pub hairpin: bool,
}

impl ClassicVerdict {
    /// Parses the client's output.
    pub fn parse(stdout: &str) -> Option<Self> {
        let line = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("Primary:"))?
            .trim()
            .to_string();
        let mapping = if line.contains("Independent Mapping") {
            Some(Mapping::EndpointIndependent)
        } else if line.contains("Dependent Mapping") {
            // RFC 3489 cannot tell address- from address-and-port-dependent mapping.
            Some(Mapping::AddressAndPortDependent)
        } else {
            None
        };
        let filtering = if line.contains("Independent Filter") {
            Some(Filtering::EndpointIndependent)
        } else if line.contains("Address Dependent Filter") {
            Some(Filtering::AddressDependent)
        } else if line.contains("Port Dependent Filter") {
            Some(Filtering::AddressAndPortDependent)
        } else {
            None
        };
        Some(ClassicVerdict {
            preserves_ports: line.contains("preserves ports"),
            hairpin: !line.contains("no hairpin") && line.contains("hairpin"),
            line,
            mapping,
            filtering,
        })
    }

    /// The RFC 3489 type name this verdict amounts to.
    pub fn nat_type(&self) -> Option<NatType> {
        match (self.mapping?, self.filtering) {
            (Mapping::EndpointIndependent, Some(Filtering::EndpointIndependent)) => {
                Some(NatType::FullCone)
            }
            (Mapping::EndpointIndependent, Some(Filtering::AddressDependent)) => {
                Some(NatType::RestrictedCone)
            }
            (Mapping::EndpointIndependent, Some(Filtering::AddressAndPortDependent)) => {
                Some(NatType::PortRestrictedCone)
            }
            (Mapping::EndpointIndependent, None) => None,
            (_, _) => Some(NatType::Symmetric),
        }
    }
}

/// Runs `stund` on `server` (its first two addresses) and `stun` on `client`; returns the verdict.
pub async fn classify(client: &Node, server: &Node) -> Result<ClassicVerdict> {
    let [a, b] = match server.addrs() {
        [a, b, ..] => [a.to_string(), b.to_string()],
        _ => {
            return Err(Error::Topology(format!(
                "`{}` needs two addresses to run an RFC 3489 server",
                server.name()
            )))
        }
    };
    let mut stund = server.start("stund", &["-h", &a, "-a", &b]).await?;
    // stund prints nothing when ready; it binds within a few ms of starting.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, out, err) = client
        .output("stun", &[&a], Duration::from_secs(30))
        .await?;
    stund.kill();
    ClassicVerdict::parse(&out).ok_or_else(|| Error::Io {
        what: format!("the stun client printed no verdict: {out}{err}"),
        source: std::io::Error::other("unparseable stun output"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_classic_line() {
        let cases = [
            ("Primary: Independent Mapping, Independent Filter, preserves ports, no hairpin", Some(NatType::FullCone)),
            ("Primary: Independent Mapping, Address Dependent Filter, preserves ports, no hairpin", Some(NatType::RestrictedCone)),
            ("Primary: Independent Mapping, Port Dependent Filter, preserves ports, no hairpin", Some(NatType::PortRestrictedCone)),
            ("Primary: Dependent Mapping, random port, no hairpin", Some(NatType::Symmetric)),
        ];
        for (line, want) in cases {
            let v =
                ClassicVerdict::parse(&format!("STUN client version 0.97\n{line}\t\n")).unwrap();
            assert_eq!(v.nat_type(), want, "{line}");
        }
        assert!(ClassicVerdict::parse("garbage").is_none());
    }
}
