//! rtpengine (Debian `rtpengine-daemon`) as Kamailio's media relay: the pairing most open-source
//! SBC deployments run, so that a user can hold our SBC's relay against it on the same topology.
//!
//! It runs in userspace forwarding only (`--table=-1`): the kernel module would install
//! iptables rules and a kernel table, which a test harness must not do, and the module is not
//! packaged for this kernel anyway. Forwarding in userspace changes how fast packets go, not
//! which packets go where: the same latching (rtpengine learns each leg's real source from its
//! first RTP, "symmetric" by default) decides what a NATed phone hears.
//!
//! The control socket (the "ng" protocol, bencoded over UDP) listens on the host's loopback, so
//! only the Kamailio in the same host can reach it; readiness is its answer to `ping`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::preflight;
use crate::process::Process;
use crate::topology::Node;

/// How long rtpengine may take to answer its first `ping`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Where Kamailio reaches rtpengine's ng control protocol inside their host.
pub const NG: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2223);

/// What the media relay should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpengineConfig {
    /// The address it relays media on (`--interface`), written into the SDP it rewrites.
    pub interface: IpAddr,
    /// Its media ports (`--port-min`, `--port-max`); rtpengine wants an even start.
    pub ports: RangeInclusive<u16>,
}

impl RtpengineConfig {
    /// Relays on `interface`, ports 30000–30099 (apart from our SBC's 40000 and TURN's 50000).
    pub fn new(interface: IpAddr) -> Self {
        Self {
            interface,
            ports: 30000..=30099,
        }
    }

    /// The command line, with its pid file in `dir`.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        vec![
            "--config-file=none".into(),
            "--foreground".into(),
            "--log-stderr".into(),
            "--log-level=6".into(),
            "--table=-1".into(),
            format!("--interface={}", self.interface),
            format!("--listen-ng={NG}"),
            format!("--port-min={}", self.ports.start()),
            format!("--port-max={}", self.ports.end()),
            format!("--pidfile={}", dir.join("rtpengine.pid").display()),
            "--num-threads=2".into(),
            "--delete-delay=0".into(),
        ]
    }
}

/// A running rtpengine; killed (and its directory removed) when dropped.
pub struct Rtpengine {
    process: Process,
    dir: PathBuf,
}

impl Rtpengine {
    /// Starts `rtpengine` in `node` (its files in `dir`, which it owns from now on) and waits
    /// until its control socket answers `ping`.
    pub async fn start(node: &Node, config: &RtpengineConfig, dir: PathBuf) -> Result<Rtpengine> {
        preflight::require_program("rtpengine")?;
        std::fs::create_dir_all(&dir).map_err(Error::io(format!(
            "create rtpengine directory {}",
            dir.display()
        )))?;
        let args = config.args(&dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = node.start("rtpengine", &args).await?;
        let mut r = Rtpengine { process, dir };
        if let Err(why) = r.ready(node).await {
            let log = r.log();
            r.process.kill();
            return Err(Error::Io {
                what: format!(
                    "rtpengine in `{}` did not answer ng ping on {NG} within {READY_WITHIN:?} \
                     ({why}); it said:\n{log}",
                    node.name()
                ),
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
        Ok(r)
    }

    /// Sends the ng `ping` every 100 ms until `pong` comes back.
    async fn ready(&mut self, node: &Node) -> std::result::Result<(), String> {
        let ping = |n: u32, _| format!("ready{n} d7:command4:pinge").into_bytes();
        super::until_answered(&mut self.process, node, NG, READY_WITHIN, ping, is_pong).await
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }
}

/// Whether an ng reply is `COOKIE d6:result4:ponge`.
fn is_pong(reply: &[u8]) -> bool {
    reply.windows(b"4:pong".len()).any(|w| w == b"4:pong")
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userspace_only_on_loopback_control() {
        let c = RtpengineConfig::new("203.0.113.10".parse().unwrap());
        let args = c.args(Path::new("/tmp/x"));
        assert!(args.contains(&"--table=-1".to_string()), "{args:?}");
        assert!(args.contains(&"--listen-ng=127.0.0.1:2223".to_string()));
        assert!(args.contains(&"--interface=203.0.113.10".to_string()));
        assert!(args.contains(&"--config-file=none".to_string()));
    }

    #[test]
    fn a_pong_is_recognised_and_an_error_is_not() {
        assert!(is_pong(b"ready1 d6:result4:ponge"));
        assert!(!is_pong(b"ready1 d6:result5:error12:error-reason3:bade"));
    }
}
