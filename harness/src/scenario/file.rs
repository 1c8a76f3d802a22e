//! The scenario file format (TOML) and its parsing into checked data.
//!
//! A file describes a customer's topology and what happens in it:
//!
//! ```toml
//! [scenario]
//! name = "408-private-contact"
//! t1-ms = 50
//!
//! [[router]]
//! name = "home"
//! wan = "203.0.113.1"
//! lan = "192.168.1.1/24"
//! nat = "port-restricted-cone"          # or { type = "symmetric", udp-timeout-secs = 2 }
//! # Static port forwards (DNAT) from the WAN address to a host on this LAN, same port:
//! # forward = [{ proto = "udp", ports = "10000-20000", to = "pbx" }]
//!
//! [[host]]
//! name = "bob"
//! segment = "home"
//! addrs = ["192.168.1.10"]
//!
//! [[component]]
//! kind = "ua"
//! host = "bob"
//! proxy = "server"
//!
//! [[step]]
//! action = "register"
//! ua = "bob"
//!
//! [[expect]]
//! kind = "call"
//! from = "alice"
//! status = 408
//! ```
//!
//! Every error names the file, line and column and says what is wrong; unknown keys and values
//! list the valid ones.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use sim_nat::{Filtering, Mapping, NatBehaviour, NatType, PortAllocation, Preset, Refresh, SipAlg};
use toml::Spanned;

/// A problem in a scenario file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for FileError {}

/// Line and column (1-based) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub scenario: Meta,
    /// `[vars]`: values of your own for commands' arguments and files, as `{vars.NAME}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default, rename = "router")]
    pub routers: Vec<RouterDef>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostDef>,
    #[serde(default, rename = "component")]
    pub components: Vec<Spanned<Component>>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Spanned<Step>>,
    #[serde(default, rename = "expect")]
    pub expects: Vec<Spanned<Expect>>,
}

/// `[scenario]`: name and timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Meta {
    pub name: String,
    /// One line for `harness list`.
    #[serde(default)]
    pub summary: String,
    /// SIP timer T1 in ms; every SIP timer scales with it, so a 408 (64·T1) takes seconds.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
}

fn default_t1() -> u64 {
    500
}

/// `[[router]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouterDef {
    pub name: Spanned<String>,
    #[serde(default = "internet")]
    pub upstream: Spanned<String>,
    pub wan: Spanned<Ipv4Addr>,
    /// `192.168.1.1/24`: the router's LAN address and prefix.
    pub lan: Spanned<String>,
    #[serde(default)]
    pub nat: Option<Spanned<NatDef>>,
    /// Static port forwards: `[{ proto = "udp", ports = "10000-20000", to = "pbx" }]`.
    #[serde(default)]
    pub forward: Vec<ForwardDef>,
}

/// One port forward of a `[[router]]`: WAN ports `ports` ("N" or "N-M") go to the same ports of
/// host `to` on the router's LAN, whatever the NAT's filtering and with no binding needed; what
/// `to` sends from those ports leaves from the same WAN port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardDef {
    /// `udp` (the default; the only transport the harness forwards).
    #[serde(default = "udp")]
    pub proto: Spanned<String>,
    pub ports: Spanned<String>,
    pub to: Spanned<String>,
}

fn udp() -> Spanned<String> {
    Spanned::new(0..0, "udp".to_string())
}

/// `"5060"` → (5060, 5060), `"10000-20000"` → (10000, 20000); ports 1–65535, low ≤ high.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let p = s.trim().parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

fn internet() -> Spanned<String> {
    Spanned::new(0..0, crate::topology::INTERNET.to_string())
}

/// `[[host]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostDef {
    pub name: Spanned<String>,
    /// `internet` or a router's name.
    pub segment: Spanned<String>,
    pub addrs: Spanned<Vec<Ipv4Addr>>,
}

/// A NAT: a name (`full-cone`, `symmetric`, a preset such as `cgnat`) or a table.
#[derive(Debug, Clone)]
pub struct NatDef(pub NatBehaviour);

/// The table form of a NAT: a `type` (or preset) to start from, or `mapping` + `filtering`,
/// then any overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NatTable {
    #[serde(rename = "type")]
    base: Option<String>,
    mapping: Option<Mapping>,
    filtering: Option<Filtering>,
    ports: Option<PortAllocation>,
    udp_timeout_secs: Option<u32>,
    refresh: Option<Refresh>,
    hairpinning: Option<bool>,
    sip_alg: Option<SipAlg>,
    port_range: Option<(u16, u16)>,
    pool_size: Option<u8>,
    paired_pooling: Option<bool>,
    port_block: Option<u16>,
    blocked_udp_ports: Option<(u16, u16)>,
}

const NAT_NAMES: &str = "full-cone, restricted-cone, port-restricted-cone, symmetric, \
                         home-router, cgnat, enterprise-firewall, mobile-carrier";

fn named_nat(name: &str) -> Result<NatBehaviour, String> {
    if let Ok(t) = name.parse::<NatType>() {
        return Ok(t.behaviour());
    }
    if let Ok(p) = name.parse::<Preset>() {
        return Ok(p.into());
    }
    Err(format!("unknown NAT type `{name}`; valid: {NAT_NAMES}"))
}

impl NatTable {
    fn build(self) -> Result<NatBehaviour, String> {
        let mut b = match (&self.base, self.mapping, self.filtering) {
            (Some(name), None, None) => named_nat(name)?,
            (Some(_), _, _) => {
                return Err("give either `type` or `mapping` + `filtering`, not both".into())
            }
            (None, Some(m), Some(f)) => NatBehaviour::new(m, f),
            (None, _, _) => {
                return Err(format!(
                    "a NAT table needs `type` ({NAT_NAMES}) or both `mapping` and `filtering`"
                ))
            }
        };
        if let Some(v) = self.ports {
            b.ports = v;
        }
        if let Some(v) = self.udp_timeout_secs {
            b.udp_timeout_secs = v;
        }
        if let Some(v) = self.refresh {
            b.refresh = v;
        }
        if let Some(v) = self.hairpinning {
            b.hairpinning = v;
        }
        if let Some(v) = self.sip_alg {
            b.sip_alg = v;
        }
        if let Some(v) = self.port_range {
            b.port_range = v;
        }
        if let Some(v) = self.pool_size {
            b.pool_size = v;
        }
        if let Some(v) = self.paired_pooling {
            b.paired_pooling = v;
        }
        if self.port_block.is_some() {
            b.port_block = self.port_block;
        }
        if self.blocked_udp_ports.is_some() {
            b.blocked_udp_ports = self.blocked_udp_ports;
        }
        b.validate().map_err(|e| e.to_string())?;
        Ok(b)
    }
}

impl<'de> Deserialize<'de> for NatDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NatDef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a NAT type name ({NAT_NAMES}) or a table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NatDef, E> {
                named_nat(s).map(NatDef).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NatDef, A::Error> {
                let t = NatTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                t.build().map(NatDef).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// How a SIP server treats requests from behind NAT.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NatHandlingDef {
    /// Trusts Contact and Via: the naive server of the field's 408.
    Literal,
    /// Far-end NAT traversal: source address, `received`/`rport`.
    FarEnd,
}

/// Where a phone's Contact address comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ContactDef {
    /// Its own interface address (private behind a NAT).
    Local,
    /// Discovered with STUN against `stun-server` before registering.
    Stun,
}

/// How a phone keeps its NAT binding open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepAliveDef {
    #[serde(rename = "type")]
    pub kind: KeepAliveKind,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeepAliveKind {
    Crlf,
    Options,
    /// RFC 5626 STUN Binding requests to the registrar on the SIP flow (phones only: a phone
    /// does not answer STUN, so an SBC cannot ping with it).
    Stun,
}

impl KeepAliveDef {
    /// The phone's keep-alive this asks for.
    pub fn keepalive(&self) -> crate::sip::KeepAlive {
        let every = std::time::Duration::from_millis(self.interval_ms);
        match self.kind {
            KeepAliveKind::Crlf => crate::sip::KeepAlive::Crlf(every),
            KeepAliveKind::Options => crate::sip::KeepAlive::Options(every),
            KeepAliveKind::Stun => crate::sip::KeepAlive::Stun(every),
        }
    }

    /// The SBC's NAT ping this asks for; `None` for `stun` (refused when the file is checked).
    pub fn ping(&self) -> Option<crate::sbc::Ping> {
        let every = std::time::Duration::from_millis(self.interval_ms);
        match self.kind {
            KeepAliveKind::Crlf => Some(crate::sbc::Ping::Crlf(every)),
            KeepAliveKind::Options => Some(crate::sbc::Ping::Options(every)),
            KeepAliveKind::Stun => None,
        }
    }
}

/// When a started command counts as ready.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadyDef {
    /// A line its output must contain.
    pub log: Option<String>,
    /// A port it must have bound (UDP) or be listening on (TCP), in its host's namespace.
    pub port: Option<u16>,
    /// The port's protocol: `udp` (default) or `tcp`.
    #[serde(default)]
    pub protocol: PortProtocol,
    /// A fixed delay.
    pub delay_ms: Option<u64>,
}

/// The transport of a readiness port.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PortProtocol {
    #[default]
    Udp,
    Tcp,
}

/// `[[component]]`: what runs on a host.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Component {
    /// A registrar + stateful proxy.
    Proxy {
        host: String,
        #[serde(default = "sip_port")]
        port: u16,
        #[serde(default = "far_end")]
        nat_handling: NatHandlingDef,
        /// Users that must authenticate, with their passwords.
        #[serde(default)]
        users: BTreeMap<String, String>,
    },
    /// A SIP phone.
    Ua {
        host: String,
        /// User part of its address of record; defaults to the host name.
        user: Option<String>,
        #[serde(default = "sip_port")]
        port: u16,
        /// The host running the proxy (its first address, port 5060), or `IP:PORT`.
        proxy: String,
        #[serde(default = "yes")]
        rport: bool,
        #[serde(default = "local_contact")]
        contact: ContactDef,
        /// With `contact = "stun"`: the host running the STUN server.
        stun_server: Option<String>,
        keepalive: Option<KeepAliveDef>,
        #[serde(default = "default_expires")]
        expires_secs: u64,
        #[serde(default = "default_answer")]
        answer_after_ms: u64,
        password: Option<String>,
        /// The RTP port its SDP offers (from the phone's own interface).
        #[serde(default = "media_port")]
        media_port: u16,
        /// Where the SDP `c=`/`m=` address comes from.
        #[serde(default = "local_media")]
        media: MediaDef,
        /// With `media = "turn"`: the host running the TURN server.
        turn_server: Option<String>,
        /// Asterisk's `externip`: the address put in Contact, Via and SDP `c=` toward
        /// destinations outside `localnet` (a PBX behind a NAT that forwards its SIP and RTP
        /// ports; the ports stay `port` and `media-port`).
        externip: Option<Ipv4Addr>,
        /// Asterisk's `localnet` (`["192.168.1.0/24"]`): destinations inside these networks get
        /// the local address, never `externip`.
        #[serde(default)]
        localnet: Vec<String>,
        /// TURN credentials; default: the user name and `secret`.
        turn_password: Option<String>,
        /// Send RTP to where the peer's RTP comes from (an SBC's or media server's behaviour).
        #[serde(default)]
        latching: bool,
        /// How long each call streams RTP (20 ms packets).
        #[serde(default = "media_ms")]
        media_ms: u64,
    },
    /// A session border controller: registrar + proxy doing far-end NAT traversal, Contact
    /// rewritten to itself, NAT pings to registered phones, and a latching media relay.
    Sbc {
        host: String,
        #[serde(default = "sip_port")]
        port: u16,
        /// Pings to each registered phone: `{ type = "options" | "crlf", interval-ms = … }`.
        ping: Option<KeepAliveDef>,
        #[serde(default)]
        users: BTreeMap<String, String>,
    },
    /// Kamailio (Debian `kamailio`) with nathelper as the far-end registrar/proxy, on port 5060.
    Kamailio {
        host: String,
        /// nathelper OPTIONS pings to NATed contacts, seconds (0: none).
        #[serde(default)]
        natping_interval_secs: u32,
    },
    /// A TURN relay (RFC 8656) listening on the host's first address, port 3478.
    TurnServer {
        host: String,
        /// Long-term credentials: user = password.
        #[serde(default)]
        users: BTreeMap<String, String>,
    },
    /// An RFC 5780 STUN server on the host's first two addresses.
    StunServer { host: String },
    /// Any program, run inside the host (sipp, kamailio, coturn, your own binary). Arguments
    /// and `files` may use `{NODE.addr}`, `{NODE.addr2}` (a router: WAN, LAN), `{registrar}`,
    /// `{stun-server}`, `{turn-server}` (`IP:PORT` of those components), `{password.USER}` (a
    /// registrar's users), `{turn-password.USER}`, `{vars.NAME}` (the file's `[vars]`),
    /// `{scenario.t1-ms}`, `{dir}` (the folder its files are written to), and `{file:NAME}` for
    /// the path of one of its files.
    Command {
        name: String,
        host: String,
        run: Vec<String>,
        ready: Option<ReadyDef>,
        /// Configuration files to write before starting it: name → contents.
        #[serde(default)]
        files: BTreeMap<String, String>,
        /// Start with the topology (default) or only at a `start` step.
        #[serde(default = "yes")]
        autostart: bool,
        /// The SIP user it answers calls as (a softphone's account). A `call` step to this user
        /// then gets a media verdict too: the program's side is read off the packets at its
        /// host's interface, since the harness cannot ask it what it heard.
        user: Option<String>,
    },
}

fn sip_port() -> u16 {
    5060
}
fn far_end() -> NatHandlingDef {
    NatHandlingDef::FarEnd
}
fn yes() -> bool {
    true
}
fn local_contact() -> ContactDef {
    ContactDef::Local
}
fn default_expires() -> u64 {
    3600
}
fn default_answer() -> u64 {
    200
}
fn media_port() -> u16 {
    4000
}
fn local_media() -> MediaDef {
    MediaDef::Local
}
fn media_ms() -> u64 {
    1000
}

/// Where a phone's SDP address comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MediaDef {
    /// Its interface address: private behind a NAT.
    Local,
    /// The STUN mapping of its RTP port (needs `stun-server`).
    Stun,
    /// A TURN relayed address (needs `turn-server`).
    Turn,
}

/// A call's media as judged from both ends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MediaVerdictDef {
    BothWays,
    CallerToCallee,
    CalleeToCaller,
    None,
}

impl Component {
    pub fn host(&self) -> &str {
        match self {
            Component::Proxy { host, .. }
            | Component::Ua { host, .. }
            | Component::StunServer { host }
            | Component::TurnServer { host, .. }
            | Component::Sbc { host, .. }
            | Component::Kamailio { host, .. }
            | Component::Command { host, .. } => host,
        }
    }
}

/// `[[step]]`: the timeline, run in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Step {
    /// A phone registers (and waits up to `timeout-ms` for the outcome).
    Register {
        ua: String,
        #[serde(default = "step_timeout")]
        timeout_ms: u64,
    },
    /// A phone calls a user; waits until the call is established or fails.
    Call {
        from: String,
        to: String,
        /// Hang up this long after the call is established (0: keep it up).
        #[serde(default)]
        hold_ms: u64,
        #[serde(default = "call_timeout")]
        timeout_ms: u64,
    },
    Wait {
        ms: u64,
    },
    /// The router forgets a host's binding(s) now.
    ExpireBinding {
        router: String,
        host: String,
        #[serde(default = "sip_port")]
        port: u16,
    },
    /// The router forgets every binding (reboot).
    FlushBindings {
        router: String,
    },
    /// The router's NAT behaviour changes (firmware update, ALG toggled).
    SetNat {
        router: String,
        nat: NatDef,
    },
    /// The proxy's NAT handling changes.
    SetNatHandling {
        proxy: String,
        value: NatHandlingDef,
    },
    /// Starts a command declared with `autostart = false`.
    Start {
        command: String,
    },
    /// Waits for a command to exit.
    WaitExit {
        command: String,
        #[serde(default = "call_timeout")]
        timeout_ms: u64,
    },
}

fn step_timeout() -> u64 {
    10_000
}
fn call_timeout() -> u64 {
    60_000
}

/// `[[expect]]`: what must hold at the end.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Expect {
    /// The last call `from` made ended with `status` (200 = established).
    Call { from: String, status: u16 },
    /// Whether the phone is registered at the end.
    Registered { ua: String, value: bool },
    /// Whether the phone rang (received an INVITE) at all.
    Rang { ua: String, value: bool },
    /// Which way audio flowed in the last call `from` placed (≥ 95 % of packets = working).
    Media {
        from: String,
        value: MediaVerdictDef,
    },
    /// A command's exit code.
    ExitCode { command: String, code: i32 },
    /// Packets captured at one vantage point — what a user would look for in the pcap: `at` is
    /// a host (`server`) or a router side (`home:wan`, `home:lan`); `contains` is searched in a
    /// SIP message's whole text, or in the ladder's summary of anything else (`STUN Binding
    /// request`, `RTP PT 0`, `ICMP port unreachable`, `keep-alive (CRLF)`); `from`/`to` narrow by
    /// address (`203.0.113.1` or `203.0.113.1:5060`). Holds when at least `min` and at most
    /// `max` packets match; `min` defaults to 1, or to 0 once `max` is given (`max = 0`: never).
    Packet {
        at: String,
        contains: String,
        from: Option<String>,
        to: Option<String>,
        min: Option<u32>,
        max: Option<u32>,
    },
}

/// The count range of a `packet` expectation, defaults applied.
pub fn packet_bounds(min: Option<u32>, max: Option<u32>) -> (u32, Option<u32>) {
    (min.unwrap_or(if max.is_some() { 0 } else { 1 }), max)
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<(ScenarioFile, String), FileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    let parsed = parse(&file, &text)?;
    Ok((parsed, text))
}

/// Parses scenario text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<ScenarioFile, FileError> {
    toml::from_str::<ScenarioFile>(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        FileError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().replace('\n', " "),
        }
    })
}
