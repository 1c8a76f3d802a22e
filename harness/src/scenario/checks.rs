//! The field guide's diagnosis steps 3–5, run from inside a topology the way an engineer runs them
//! on site: a STUN Binding from the phone's LAN (is the address the world sees the router's WAN
//! address, or is there a second NAT?), RFC 5780 behaviour discovery (which NAT type: symmetric
//! means STUN addresses are useless for peer-to-peer media), and UDP probes from outside to a
//! sample of the RTP range (does anything get in, before and after the phone sent?).
//!
//! The probes' fates come from the kernel: a listener on the inside host either got the datagram
//! or not, and the prober's connected socket reports the ICMP port unreachable a router answers
//! with when nothing is bound to the port. What the NAT model says about each probe the router
//! kept ([`super::explain`]) is attached afterwards by [`ProbeRun::explain`], which has no IO.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use crate::capture::{Direction, Frame};
use crate::error::Result;
use crate::stun::{
    ClassicNat, ClientConfig, DiscoveredBehaviour, DiscoveryConfig, RetransmitConfig,
};
use crate::topology::Node;
use crate::trace::{decode_frame, Entry, Payload};

/// How long a probe waits for its datagram (or the ICMP error it draws) before calling it
/// dropped. Inside the lab a datagram crosses a NAT in well under a millisecond.
pub const PROBE_WAIT: Duration = crate::probe::PROBE_WAIT;

/// STUN retransmissions for checks: the lab's server answers within milliseconds, so an RTO of
/// 100 ms and 4 sends conclude "no answer" in 2.3 s instead of RFC 8489's 39.5 s, and a blocked
/// RFC 5780 filtering test costs that, not a minute.
fn fast() -> RetransmitConfig {
    RetransmitConfig {
        rto: Duration::from_millis(100),
        max_transmissions: 4,
        final_wait_factor: 8,
    }
}

/// What a `stun-check` step saw.
#[derive(Debug, Clone)]
pub struct StunCheck {
    pub host: String,
    pub local: SocketAddr,
    pub server: SocketAddr,
    /// The mapped (server-reflexive) address, or why there is none.
    pub mapped: std::result::Result<SocketAddr, String>,
}

/// `IP:PORT`, or for a snapshot `IP:{port}` when the port is one a NAT picks at random (≥ 30000,
/// as the ladder's snapshots normalise them): stable run to run, the address kept.
pub fn stable(a: SocketAddr, redact: bool) -> String {
    if redact && a.port() >= 30000 {
        format!("{}:{{port}}", a.ip())
    } else {
        a.to_string()
    }
}

impl StunCheck {
    /// The ladder's line; `redact` for snapshots.
    pub fn line(&self, redact: bool) -> String {
        let head = format!("STUN check {} → {}: ", self.local, self.server);
        match &self.mapped {
            Ok(m) => format!("{head}mapped {}", stable(*m, redact)),
            Err(e) => format!("{head}no mapping ({e})"),
        }
    }
}

/// One STUN Binding from `local` in `node` to `server`. A server that never answers is a result
/// (UDP blocked), not an error of the run.
pub async fn stun_check(node: &Node, local: SocketAddr, server: SocketAddr) -> StunCheck {
    let config = ClientConfig {
        retransmit: fast(),
        ..ClientConfig::default()
    };
    let mapped = crate::stun::binding_with(node, local, server, config, None)
        .await
        .map_err(|e| e.to_string());
    StunCheck {
        host: node.name().to_string(),
        local,
        server,
        mapped,
    }
}

/// What a `classify-nat` step found.
#[derive(Debug, Clone)]
pub struct Classified {
    pub host: String,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub found: std::result::Result<DiscoveredBehaviour, String>,
}

impl Classified {
    /// The RFC 3489 name; `Unknown` when discovery could not run.
    pub fn classic(&self) -> ClassicNat {
        self.found
            .as_ref()
            .map_or(ClassicNat::Unknown, DiscoveredBehaviour::classic_name)
    }
}

/// `kebab-case` name of a serde-named behaviour (`address-and-port-dependent`), or `unknown`.
pub fn kebab<T: serde::Serialize>(v: Option<T>) -> String {
    v.and_then(|v| serde_json::to_value(v).ok())
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NAT type from {} (RFC 5780 against {}): ",
            self.local, self.server
        )?;
        match &self.found {
            Ok(b) => write!(
                f,
                "{} (mapping {}, filtering {})",
                b.classic_name(),
                kebab(b.mapping),
                kebab(b.filtering)
            ),
            Err(e) => write!(f, "not classified ({e})"),
        }
    }
}

/// RFC 5780 discovery from `local` in `node` against the two-address server at `server`; the
/// filtering tests run from a fresh socket after the mapping tests (the one-socket trap in
/// [`crate::stun::discovery`]).
pub async fn classify_nat(node: &Node, local: SocketAddr, server: SocketAddr) -> Classified {
    let mut config = DiscoveryConfig::new(local, server);
    config.retransmit = fast();
    let found = crate::stun::discover(node, config)
        .await
        .map_err(|e| e.to_string());
    Classified {
        host: node.name().to_string(),
        local,
        server,
        found,
    }
}

/// `n` ports of `lo..=hi`: both ends (firewall ranges are often off by one there) and evenly
/// spaced between them, so a rule covering part of the range shows, without scanning all of it.
pub fn sample(lo: u16, hi: u16, n: u16) -> Vec<u16> {
    let (lo32, hi32, n32) = (u32::from(lo), u32::from(hi), u32::from(n));
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => {
            let mut ports: Vec<u16> = (0..n32)
                .map(|i| lo32 + (hi32 - lo32) * i / (n32 - 1))
                .map(|p| u16::try_from(p).unwrap_or(hi))
                .collect();
            ports.dedup();
            ports
        }
    }
}

/// What became of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The listener on the inside host received it.
    Reached,
    /// ICMP port unreachable came back (from `by`, when the capture shows who sent it).
    Refused { by: Option<Ipv4Addr> },
    /// Nothing arrived and nothing came back.
    Dropped,
}

/// One probe: from the prober's `source` to the router's WAN address at `port`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub port: u16,
    pub source: SocketAddrV4,
    pub fate: Fate,
    /// With `inside-sends-first`: where the inside host's opening datagram reached the prober
    /// from (the mapping the world sees for that port), or `None` if it never did.
    pub opened_from: Option<SocketAddr>,
    /// The NAT model's reason for a probe a router kept.
    pub why: Option<String>,
}

/// What a `probe-udp` step saw.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub name: Option<String>,
    pub from: String,
    pub router: String,
    pub wan: Ipv4Addr,
    pub listen: String,
    pub range: (u16, u16),
    pub inside_sends_first: bool,
    pub probes: Vec<Probe>,
}

impl ProbeRun {
    pub fn reached(&self) -> usize {
        self.probes
            .iter()
            .filter(|p| p.fate == Fate::Reached)
            .count()
    }

    /// `"unsolicited" ` or empty: how the ladder and verdicts name this probe.
    fn label(&self) -> String {
        self.name
            .as_ref()
            .map(|n| format!("\"{n}\" "))
            .unwrap_or_default()
    }

    /// One line: what was probed, and how many got in.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self.probes.iter().map(|p| p.port.to_string()).collect();
        format!(
            "UDP probe {}from {} to {} {}:{}-{} (sampled {}){}: {} of {} reached {}",
            self.label(),
            self.from,
            self.router,
            self.wan,
            self.range.0,
            self.range.1,
            ports.join(", "),
            if self.inside_sends_first {
                format!(", after {} sent from each port to the prober", self.listen)
            } else {
                ", unsolicited".into()
            },
            self.reached(),
            self.probes.len(),
            self.listen
        )
    }

    /// One line per probe, for the ladder; `why` adds the model's reason, `redact` normalises
    /// random ports for a snapshot.
    pub fn lines(&self, why: bool, redact: bool) -> Vec<String> {
        self.probes
            .iter()
            .map(|p| {
                let fate = match &p.fate {
                    Fate::Reached => format!("reached {}", self.listen),
                    Fate::Refused { by } => format!(
                        "ICMP port unreachable{}",
                        by.map(|a| format!(" from {a}")).unwrap_or_default()
                    ),
                    Fate::Dropped => "dropped, no answer".into(),
                };
                let opened = match (self.inside_sends_first, p.opened_from) {
                    (false, _) => String::new(),
                    (true, Some(a)) => format!(
                        " ({}'s opening datagram came from {})",
                        self.listen,
                        stable(a, redact)
                    ),
                    (true, None) => format!(" ({}'s opening datagram never arrived)", self.listen),
                };
                let reason = match (&p.why, why) {
                    (Some(w), true) => format!(" — {w}"),
                    _ => String::new(),
                };
                format!(
                    "probe {} → {}:{}: {fate}{opened}{reason}",
                    p.source, self.wan, p.port
                )
            })
            .collect()
    }

    /// Whether `frames` hold the ICMP error of every refused probe.
    pub fn icmp_seen(&self, frames: &[Frame]) -> bool {
        self.probes
            .iter()
            .filter(|p| matches!(p.fate, Fate::Refused { .. }))
            .all(|p| {
                icmp_from(
                    frames,
                    &self.from,
                    p.source,
                    SocketAddrV4::new(self.wan, p.port),
                )
                .is_some()
            })
    }

    /// Attaches what the capture and the NAT model say about each probe that did not get in: who
    /// sent its ICMP error, and the reason of the router that kept it.
    pub fn explain(&mut self, frames: &[Frame], drops: &[super::explain::Dropped]) {
        for p in &mut self.probes {
            if p.fate == Fate::Reached {
                continue;
            }
            let target = SocketAddrV4::new(self.wan, p.port);
            if let Fate::Refused { by } = &mut p.fate {
                *by = icmp_from(frames, &self.from, p.source, target);
            }
            p.why = drops
                .iter()
                .rev()
                .find(|d| d.src == p.source)
                .map(|d| format!("{}: {}", d.router, d.why));
        }
    }
}

/// One diagnosis step's result, with when and from which host it ran: the one record the
/// ladder's notes, the snapshot's "diagnosis checks" and the outcome's `field_checks` are all
/// rendered from.
#[derive(Debug, Clone)]
pub enum FieldCheck {
    Stun {
        at: SystemTime,
        host: String,
        check: StunCheck,
    },
    Nat {
        at: SystemTime,
        host: String,
        found: Classified,
    },
    Probe {
        at: SystemTime,
        run: ProbeRun,
    },
}

impl FieldCheck {
    pub fn at(&self) -> SystemTime {
        match self {
            FieldCheck::Stun { at, .. }
            | FieldCheck::Nat { at, .. }
            | FieldCheck::Probe { at, .. } => *at,
        }
    }

    /// The host it ran from (a probe's prober).
    pub fn host(&self) -> &str {
        match self {
            FieldCheck::Stun { host, .. } | FieldCheck::Nat { host, .. } => host,
            FieldCheck::Probe { run, .. } => &run.from,
        }
    }

    /// Its summary line and the lines under it (a probe's, one per port). `redact` normalises
    /// random ports and leaves out the NAT model's reasons, for a snapshot.
    pub fn lines(&self, redact: bool) -> (String, Vec<String>) {
        match self {
            FieldCheck::Stun { check, .. } => (check.line(redact), Vec::new()),
            FieldCheck::Nat { found, .. } => (found.to_string(), Vec::new()),
            FieldCheck::Probe { run, .. } => (run.summary(), run.lines(!redact, redact)),
        }
    }

    /// `host: summary`, then each line under it indented: the snapshot's and the outcome's form.
    pub fn report(&self, redact: bool) -> Vec<String> {
        let (head, under) = self.lines(redact);
        std::iter::once(format!("{}: {head}", self.host()))
            .chain(under.into_iter().map(|l| format!("  {l}")))
            .collect()
    }
}

/// Who answered the probe `src → dst` with ICMP port unreachable, as the prober's capture shows.
fn icmp_from(
    frames: &[Frame],
    prober: &str,
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> Option<Ipv4Addr> {
    frames
        .iter()
        .filter(|f| f.vantage.node == prober && f.direction == Direction::In)
        .find_map(|f| match decode_frame(f)? {
            Entry::Packet {
                src: from,
                payload: Payload::Icmp(i),
                ..
            } if i.is_port_unreachable() && i.quoted_udp == Some((src, dst)) => Some(*from.ip()),
            _ => None,
        })
}

/// Where a probe goes and from where.
#[derive(Debug, Clone, Copy)]
pub struct ProbePlan<'a> {
    pub prober: &'a Node,
    pub listener: &'a Node,
    pub wan: Ipv4Addr,
    /// The prober's source port for the first probe; the i-th uses `source_base + i`. Each step
    /// gets its own ports: an unsolicited probe leaves an unreplied conntrack flow from its
    /// source on the router, and a later flow with the same tuple would meet it ("who sends
    /// first"), which is a different test.
    pub source_base: u16,
    pub inside_sends_first: bool,
}

/// Sends one probe per port of `ports` and reports each one's fate (reasons not yet attached).
pub async fn probe_udp(plan: ProbePlan<'_>, ports: &[u16]) -> Result<Vec<Probe>> {
    let prober_ip = plan.prober.addr();
    let inside_ip = plan.listener.addr();
    let mut listeners = Vec::new();
    let mut probers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let listen = SocketAddr::from((inside_ip, *port));
        listeners.push(plan.listener.udp_bind(listen).await?);
        let offset = u16::try_from(i).unwrap_or(u16::MAX);
        let source = SocketAddrV4::new(prober_ip, plan.source_base.saturating_add(offset));
        probers.push((source, plan.prober.udp_bind(source.into()).await?));
    }
    let io = |what: &str| crate::error::Error::io(what.to_string());
    // The inside host opens each port towards the prober, as a phone's first RTP packet does.
    let mut opened = vec![None; ports.len()];
    if plan.inside_sends_first {
        for (l, (source, _)) in listeners.iter().zip(&probers) {
            l.send_to(b"opening from inside", SocketAddr::V4(*source))
                .await
                .map_err(io("send from inside"))?;
        }
        for (i, (_, p)) in probers.iter().enumerate() {
            let mut buf = [0u8; 64];
            if let Ok(Ok((_, from))) = tokio::time::timeout(PROBE_WAIT, p.recv_from(&mut buf)).await
            {
                opened[i] = Some(from);
            }
        }
    }
    // Connected sockets: the kernel then reports an ICMP error for the flow as ECONNREFUSED.
    for ((_, p), port) in probers.iter().zip(ports) {
        let to = SocketAddr::from((plan.wan, *port));
        p.connect(to).await.map_err(io("connect probe"))?;
        p.send(b"probe from outside")
            .await
            .map_err(io("send probe"))?;
    }
    tokio::time::sleep(PROBE_WAIT).await;
    let mut out = Vec::new();
    for (i, ((source, p), l)) in probers.iter().zip(&listeners).enumerate() {
        let mut buf = [0u8; 64];
        let mut reached = false;
        while let Ok((n, _)) = l.try_recv_from(&mut buf) {
            reached |= &buf[..n] == b"probe from outside";
        }
        // SO_ERROR, read straight from the socket: the pending ICMP error of a connected socket.
        let refused = matches!(p.take_error(), Ok(Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        let fate = match (reached, refused) {
            (true, _) => Fate::Reached,
            (false, true) => Fate::Refused { by: None },
            (false, false) => Fate::Dropped,
        };
        out.push(Probe {
            port: ports[i],
            source: *source,
            fate,
            opened_from: opened[i],
            why: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fates: [Fate; 2]) -> ProbeRun {
        let [a, b] = fates;
        let probe = |port, source: &str, fate| Probe {
            port,
            source: source.parse().unwrap(),
            fate,
            opened_from: None,
            why: None,
        };
        ProbeRun {
            name: Some("rtp".into()),
            from: "tester".into(),
            router: "home".into(),
            wan: Ipv4Addr::new(203, 0, 113, 1),
            listen: "bob".into(),
            range: (10000, 20000),
            inside_sends_first: false,
            probes: vec![
                probe(10000, "198.51.100.30:40000", a),
                probe(20000, "198.51.100.30:40001", b),
            ],
        }
    }

    #[test]
    fn a_probe_the_router_kept_gets_that_routers_reason_and_a_reached_one_none() {
        let mut r = run([Fate::Reached, Fate::Refused { by: None }]);
        let drop = super::super::explain::Dropped {
            at: std::time::SystemTime::UNIX_EPOCH,
            router: "home".into(),
            src: "198.51.100.30:40001".parse().unwrap(),
            dst: "203.0.113.1:20000".parse().unwrap(),
            text: String::new(),
            why: "nothing is bound to 203.0.113.1:20000".into(),
        };
        r.explain(&[], &[drop]);
        assert_eq!(r.reached(), 1);
        assert_eq!(r.probes[0].why, None);
        assert_eq!(
            r.lines(true, false),
            vec![
                "probe 198.51.100.30:40000 → 203.0.113.1:10000: reached bob".to_string(),
                "probe 198.51.100.30:40001 → 203.0.113.1:20000: ICMP port unreachable — home: \
                 nothing is bound to 203.0.113.1:20000"
                    .to_string(),
            ]
        );
        // Without an ICMP frame in the capture, the sender stays unnamed rather than guessed.
        assert!(!r.icmp_seen(&[]));
        assert!(
            r.summary().ends_with("1 of 2 reached bob"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_random_mapped_port_is_normalised_for_snapshots_only() {
        let a: SocketAddr = "203.0.113.1:41234".parse().unwrap();
        assert_eq!(stable(a, true), "203.0.113.1:{port}");
        assert_eq!(stable(a, false), "203.0.113.1:41234");
        let fixed: SocketAddr = "203.0.113.1:5062".parse().unwrap();
        assert_eq!(stable(fixed, true), "203.0.113.1:5062");
    }

    #[test]
    fn a_sample_keeps_both_ends_and_spaces_the_rest_evenly() {
        assert_eq!(
            sample(10000, 20000, 5),
            vec![10000, 12500, 15000, 17500, 20000]
        );
        assert_eq!(sample(10000, 20000, 1), vec![10000]);
        assert_eq!(sample(5, 6, 2), vec![5, 6]);
        assert_eq!(sample(7, 7, 1), vec![7]);
        assert_eq!(sample(0, 65535, 3), vec![0, 32767, 65535]);
    }
}
