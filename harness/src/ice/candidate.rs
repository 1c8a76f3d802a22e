//! ICE candidates (RFC 8445 §5.1) and their SDP form (RFC 8839 §5.1): what a phone gathers and
//! offers, how each is ranked, and how a pair of them is ranked. No IO.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The four candidate types of RFC 8445 §5.1.1, named as SDP names them (`typ host` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateKind {
    /// The phone's own interface address.
    Host,
    /// The NAT's mapping of the host address, as a STUN server saw it.
    ServerReflexive,
    /// A mapping learnt from a connectivity check (a NAT that maps per destination gives one the
    /// STUN server never saw).
    PeerReflexive,
    /// An address on a TURN server that relays to the phone.
    Relayed,
}

impl CandidateKind {
    /// RFC 8445 §5.1.2.2's recommended type preferences: direct paths before relayed ones.
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    /// The `typ` token of an `a=candidate` line.
    pub fn sdp_name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    fn from_sdp(name: &str) -> Option<Self> {
        Some(match name {
            "host" => CandidateKind::Host,
            "srflx" => CandidateKind::ServerReflexive,
            "prflx" => CandidateKind::PeerReflexive,
            "relay" => CandidateKind::Relayed,
            _ => return None,
        })
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

/// One transport address a peer may be reached at (UDP; component 1 is RTP, 2 is RTCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: CandidateKind,
    pub address: SocketAddr,
    /// Where checks and media for it leave from: the host socket for host, server- and
    /// peer-reflexive candidates, the relayed address itself for a relayed one (RFC 8445 §5.1.1).
    pub base: SocketAddr,
    pub priority: u32,
    pub foundation: String,
    /// RTP is component 1 (RFC 8445 §5.1.1.1).
    pub component: u8,
    /// `raddr`/`rport` of the SDP line: the base of a reflexive candidate, the mapped address of
    /// a relayed one. Informational only (RFC 8839 §5.1).
    pub related: Option<SocketAddr>,
}

/// RFC 8445 §5.1.2.1: type preference, then local preference, then component.
pub fn priority(kind: CandidateKind, local_preference: u16, component: u8) -> u32 {
    (kind.type_preference() << 24)
        + (u32::from(local_preference) << 8)
        + (256 - u32::from(component))
}

/// RFC 8445 §6.1.2.3: `G` is the controlling agent's candidate priority, `D` the controlled's.
pub fn pair_priority(controlling: u32, controlled: u32) -> u64 {
    let (g, d) = (u64::from(controlling), u64::from(controlled));
    (1 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
}

impl Candidate {
    /// A candidate gathered locally; its foundation follows from its type and base (RFC 8445
    /// §5.1.1.3: same type, same base IP, same server: same foundation).
    pub fn gathered(kind: CandidateKind, address: SocketAddr, base: SocketAddr) -> Self {
        let related = match kind {
            CandidateKind::Host => None,
            CandidateKind::Relayed => None,
            _ => Some(base),
        };
        Candidate {
            kind,
            address,
            base,
            priority: priority(kind, 65535, 1),
            foundation: foundation(kind, base.ip()),
            component: 1,
            related,
        }
    }

    /// The same candidate for another component (RTCP is 2): its priority follows.
    pub fn for_component(mut self, component: u8) -> Self {
        self.priority = priority(self.kind, 65535, component);
        self.component = component;
        self
    }

    /// A peer-reflexive candidate learnt from a check, with the priority the check carried.
    pub fn peer_reflexive(address: SocketAddr, base: SocketAddr, priority: u32) -> Self {
        Candidate {
            priority,
            ..Candidate::gathered(CandidateKind::PeerReflexive, address, base)
        }
    }

    /// The value of its `a=candidate:` attribute (RFC 8839 §5.1), without the `a=`.
    pub fn to_sdp(&self) -> String {
        let mut line = format!(
            "candidate:{} {} UDP {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind
        );
        if let Some(r) = self.related {
            line.push_str(&format!(" raddr {} rport {}", r.ip(), r.port()));
        }
        line
    }

    /// Parses an `a=candidate:` line (with or without `a=`); `None` for a TCP candidate, an
    /// unknown type or a malformed line. A remote candidate's base is its address: only the
    /// peer knows its base.
    pub fn parse(line: &str) -> Option<Candidate> {
        let value = line.trim().trim_start_matches("a=");
        let rest = value.strip_prefix("candidate:")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 8 || !f[2].eq_ignore_ascii_case("udp") || f[6] != "typ" {
            return None;
        }
        let ip: IpAddr = f[4].parse().ok()?;
        let address = SocketAddr::new(ip, f[5].parse().ok()?);
        let mut related_ip = None;
        let mut related_port = None;
        let mut i = 8;
        while i + 1 < f.len() {
            match f[i] {
                "raddr" => related_ip = f[i + 1].parse::<IpAddr>().ok(),
                "rport" => related_port = f[i + 1].parse::<u16>().ok(),
                _ => {}
            }
            i += 2;
        }
        Some(Candidate {
            kind: CandidateKind::from_sdp(f[7])?,
            address,
            base: address,
            priority: f[3].parse().ok()?,
            foundation: f[0].to_string(),
            component: f[1].parse().ok()?,
            related: related_ip
                .zip(related_port)
                .map(|(i, p)| SocketAddr::new(i, p)),
        })
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.address)
    }
}

/// A short foundation from the type and the base address (FNV-1a; only equality matters).
fn foundation(kind: CandidateKind, base: IpAddr) -> String {
    let h = format!("{kind}{base}")
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    format!("{}", h % 1_000_000)
}

/// What one side's SDP says about ICE (RFC 8839): credentials and candidates of its first audio
/// section, RTP (component 1) and RTCP (component 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceDescription {
    pub ufrag: String,
    pub pwd: String,
    pub candidates: Vec<Candidate>,
    /// `a=ice-lite`: the peer never checks, it only answers.
    pub lite: bool,
}

impl IceDescription {
    /// The ICE attributes of an SDP body (session level, or the first audio section's); `None`
    /// when it has no `a=ice-ufrag`/`a=ice-pwd`: the peer does not do ICE.
    pub fn parse(sdp: &str) -> Option<IceDescription> {
        let mut d = IceDescription::default();
        let mut section = "session";
        let mut audio_seen = false;
        for line in sdp.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                let audio = m.starts_with("audio") && !audio_seen;
                audio_seen |= audio;
                section = if audio { "audio" } else { "other" };
                continue;
            }
            if section == "other" {
                continue;
            }
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                d.ufrag = u.trim().to_string();
            } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
                d.pwd = p.trim().to_string();
            } else if line == "a=ice-lite" {
                d.lite = true;
            } else if line.starts_with("a=candidate:") {
                if let Some(c) = Candidate::parse(line).filter(|c| matches!(c.component, 1 | 2)) {
                    d.candidates.push(c);
                }
            }
        }
        (!d.ufrag.is_empty() && !d.pwd.is_empty()).then_some(d)
    }

    /// The media-level attribute lines (without `a=`) that describe it.
    pub fn sdp_attributes(&self) -> Vec<String> {
        let mut lines = vec![
            format!("ice-ufrag:{}", self.ufrag),
            format!("ice-pwd:{}", self.pwd),
        ];
        lines.extend(self.candidates.iter().map(Candidate::to_sdp));
        lines
    }
}
