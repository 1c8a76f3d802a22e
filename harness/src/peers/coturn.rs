//! coturn as a peer: `turnserver`, an RFC 5780 STUN server (and later the TURN server) nobody
//! here wrote, and its RFC 5780 classifier `turnutils_natdiscovery`.
//!
//! Two things about Debian's coturn decide the command line: `/etc/turnserver.conf` says
//! `no-rfc5780`, so the server reads no configuration file (`-c /dev/null -n`); and by default it
//! writes logs under `/var/log`, a pid file under `/var/run` and opens the SQLite user database in
//! `/var/lib/turn`, so all three are pointed away from the system (`--log-file stdout`,
//! `--pidfile /dev/null`, `-b :memory:`). With two listening addresses coturn answers
//! CHANGE-REQUEST from the other address and port `+1`, as RFC 5780 needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sim_nat::{Filtering, Mapping};

use crate::error::{Error, Result};
use crate::process::Process;
use crate::topology::Node;

/// How long `turnserver` may take to open its listeners.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// What `turnserver` should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoturnConfig {
    /// Listening addresses (`-L`); two make it an RFC 5780 server.
    pub listening: Vec<IpAddr>,
    /// Listening port (`-p`); coturn's alternate port is this plus one.
    pub port: u16,
    /// STUN only (`-S`): TURN requests are ignored.
    pub stun_only: bool,
    /// No credentials for TURN (`-z`).
    pub no_auth: bool,
    /// Anything else, appended as is (TURN users, relay port ranges …).
    pub extra_args: Vec<String>,
}

impl CoturnConfig {
    /// An RFC 5780 STUN-only server on the node's first two addresses, port 3478 (and 3479).
    pub fn stun_only(node: &Node) -> Self {
        Self {
            listening: node
                .addrs()
                .iter()
                .take(2)
                .map(|a| IpAddr::V4(*a))
                .collect(),
            port: 3478,
            stun_only: true,
            no_auth: true,
            extra_args: Vec::new(),
        }
    }

    /// The command line, without the program name.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-c",
            "/dev/null",
            "-n",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            "/dev/null",
            "-b",
            ":memory:",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            // Moderate verbosity: the "UDP listener opened" lines are the readiness signal.
            "-v",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["-p".into(), self.port.to_string()]);
        for ip in &self.listening {
            args.extend(["-L".into(), ip.to_string()]);
        }
        if self.stun_only {
            args.push("-S".into());
        }
        if self.no_auth {
            args.push("-z".into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Every UDP address the server listens on: each IP on the port and the port plus one.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.listening
            .iter()
            .flat_map(|ip| {
                [self.port, self.port.saturating_add(1)].map(|p| SocketAddr::new(*ip, p))
            })
            .collect()
    }
}

/// A running `turnserver`; killed when dropped.
pub struct Coturn {
    process: Process,
    config: CoturnConfig,
}

impl std::fmt::Debug for Coturn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coturn")
            .field("pid", &self.process.pid())
            .field("config", &self.config)
            .finish()
    }
}

impl Coturn {
    /// Starts `turnserver` in `node` and waits until every UDP listener is open.
    pub async fn start(node: &Node, config: CoturnConfig) -> Result<Coturn> {
        if config.listening.is_empty() {
            return Err(Error::Topology(format!(
                "coturn in `{}` needs at least one listening address",
                node.name()
            )));
        }
        let args = config.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = node.start("turnserver", &args).await?;
        for l in config.listeners() {
            let line = format!("UDP listener opened on: {l}");
            if !process.wait_for_output(&line, READY_WITHIN).await {
                let out = format!("{}{}", process.stdout(), process.stderr());
                process.kill();
                return Err(Error::Io {
                    what: format!(
                        "turnserver in `{}` did not open {l} within {READY_WITHIN:?}; it said:\n{out}",
                        node.name()
                    ),
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        }
        Ok(Coturn { process, config })
    }

    /// The primary address: first listening IP, configured port.
    pub fn primary(&self) -> SocketAddr {
        self.config.listeners()[0]
    }

    /// Every UDP address it listens on.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.config.listeners()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.process.stdout()
    }

    /// Stops it (also done on drop).
    pub fn stop(mut self) {
        self.process.kill();
    }
}

/// What `turnutils_natdiscovery -m -f` said about the NAT in front of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatDiscoveryVerdict {
    /// `None` when the mapping test printed no verdict (server unreachable, no RFC 5780).
    pub mapping: Option<Mapping>,
    pub filtering: Option<Filtering>,
    /// It said "No NAT!".
    pub no_nat: bool,
    /// Everything it printed, for failure messages.
    pub output: String,
}

impl NatDiscoveryVerdict {
    /// Parses its output: lines such as `NAT with Address and Port Dependent Mapping!`,
    /// `NAT with Endpoint Independent Filtering!` or `No NAT! (Endpoint Independent Mapping)`.
    pub fn parse(output: &str) -> Self {
        // Longest phrase first: "Address and Port Dependent" also ends in "Dependent".
        let kind = |what: &str| {
            let has = |adj: &str| output.contains(&format!("{adj} {what}"));
            if has("Address and Port Dependent") {
                Some(2)
            } else if has("Address Dependent") {
                Some(1)
            } else if has("Endpoint Independent") {
                Some(0)
            } else {
                None
            }
        };
        let mapping = kind("Mapping").map(|k| match k {
            0 => Mapping::EndpointIndependent,
            1 => Mapping::AddressDependent,
            _ => Mapping::AddressAndPortDependent,
        });
        let filtering = kind("Filtering").map(|k| match k {
            0 => Filtering::EndpointIndependent,
            1 => Filtering::AddressDependent,
            _ => Filtering::AddressAndPortDependent,
        });
        Self {
            mapping,
            filtering,
            no_nat: output.contains("No NAT!"),
            output: output.to_string(),
        }
    }
}

/// Runs `turnutils_natdiscovery -m -f -p PORT IP` in `client` against the RFC 5780 server at
/// `server` (coturn's, or any other) and parses its mapping and filtering verdicts.
pub async fn natdiscovery(client: &Node, server: SocketAddr) -> Result<NatDiscoveryVerdict> {
    let port = server.port().to_string();
    let ip = server.ip().to_string();
    let (status, out, err) = client
        .output(
            "turnutils_natdiscovery",
            &["-m", "-f", "-p", &port, &ip],
            Duration::from_secs(60),
        )
        .await?;
    let verdict = NatDiscoveryVerdict::parse(&format!("{out}{err}"));
    if status.is_none() || (verdict.mapping.is_none() && verdict.filtering.is_none()) {
        return Err(Error::Io {
            what: format!(
                "turnutils_natdiscovery in `{}` against {server} gave no verdict ({}):\n{out}{err}",
                client.name(),
                status.map_or("killed after 60 s".into(), |s| s.to_string()),
            ),
            source: std::io::Error::other("no natdiscovery verdict"),
        });
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natdiscovery_verdicts_parse_into_rfc_4787_terms() {
        let out =
            "-= Mapping Behavior Discovery =-\n...\nNAT with Address and Port Dependent Mapping!\n\
                   -= Filtering Behavior Discovery =-\nNAT with Address Dependent Filtering!\n";
        let v = NatDiscoveryVerdict::parse(out);
        assert_eq!(v.mapping, Some(Mapping::AddressAndPortDependent));
        assert_eq!(v.filtering, Some(Filtering::AddressDependent));
        assert!(!v.no_nat);
        let v = NatDiscoveryVerdict::parse(
            "No NAT! (Endpoint Independent Mapping)\nNAT with Endpoint Independent Filtering!",
        );
        assert_eq!(v.mapping, Some(Mapping::EndpointIndependent));
        assert_eq!(v.filtering, Some(Filtering::EndpointIndependent));
        assert!(v.no_nat);
        let v = NatDiscoveryVerdict::parse(
            "NAT with Address Dependent Mapping!\nNAT with Address and Port Dependent Filtering!",
        );
        assert_eq!(v.mapping, Some(Mapping::AddressDependent));
        assert_eq!(v.filtering, Some(Filtering::AddressAndPortDependent));
        assert_eq!(NatDiscoveryVerdict::parse("timeout").mapping, None);
    }

    #[test]
    fn stun_only_command_keeps_coturn_away_from_system_files() {
        let c = CoturnConfig {
            listening: vec![
                "203.0.113.10".parse().unwrap(),
                "203.0.113.11".parse().unwrap(),
            ],
            port: 3478,
            stun_only: true,
            no_auth: true,
            extra_args: vec![],
        };
        let args = c.args().join(" ");
        for needed in [
            "-c /dev/null",
            "--log-file stdout",
            "--pidfile /dev/null",
            "-b :memory:",
            "-L 203.0.113.10 -L 203.0.113.11",
            "-S",
        ] {
            assert!(args.contains(needed), "`{needed}` missing from `{args}`");
        }
        assert_eq!(c.listeners().len(), 4);
        assert_eq!(c.listeners()[1], "203.0.113.10:3479".parse().unwrap());
    }
}
