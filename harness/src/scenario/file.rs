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

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use sim_nat::{
    Filtering, InputPolicy, Mapping, NatBehaviour, NatType, PortAllocation, Preset, Refresh, SipAlg,
};
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
    #[schemars(with = "Vec<Component>")]
    pub components: Vec<Spanned<Component>>,
    #[serde(default, rename = "step")]
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
    #[serde(default, rename = "expect")]
    #[schemars(with = "Vec<Expect>")]
    pub expects: Vec<Spanned<Expect>>,
}

/// `[scenario]`: name and timing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Meta {
    /// The scenario's name: its runs/ folder, its snapshot and its JUnit testcase.
    pub name: String,
    /// One line for `harness list`.
    #[serde(default)]
    pub summary: String,
    /// SIP timer T1 in ms; every SIP timer scales with it, so a 408 (64·T1) takes seconds.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    /// Ids of the field guide's lines this file shows (`docs/field-guide.toml`), from which
    /// `docs/catalogue.md` is generated.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub guide: Vec<Spanned<String>>,
}

fn pcmu() -> Vec<String> {
    vec!["PCMU".into()]
}

fn default_t1() -> u64 {
    500
}

/// `[[router]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouterDef {
    /// The router's name: a segment hosts join (`segment = NAME`), and `NAME:wan` / `NAME:lan` as vantage points.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The segment its WAN joins: `internet`, or another router's name for a NAT behind a NAT (a home router behind a CGNAT).
    #[serde(default = "internet")]
    #[schemars(with = "String")]
    pub upstream: Spanned<String>,
    /// Its WAN address, in the upstream segment (documentation ranges on the internet, 100.64/10 behind a CGNAT).
    #[schemars(with = "Ipv4Addr")]
    pub wan: Spanned<Ipv4Addr>,
    /// `192.168.1.1/24`: the router's LAN address and prefix.
    #[schemars(with = "String")]
    pub lan: Spanned<String>,
    /// Its NAT: a type or preset by name, or a table (see Nat). Without it the router only routes.
    #[serde(default)]
    #[schemars(with = "Option<NatDef>")]
    pub nat: Option<Spanned<NatDef>>,
    /// Static port forwards: `[{ proto = "udp", ports = "10000-20000", to = "pbx" }]`.
    #[serde(default)]
    pub forward: Vec<ForwardDef>,
    /// MTU of its WAN link (576–9000; default 1500): 1492 behind PPPoE, less through a tunnel.
    /// A datagram that fits the LAN but not the WAN draws ICMP "fragmentation needed" from the
    /// router when the sender set DF (Linux UDP sockets do for datagrams that fit their own
    /// link), and the sender's kernel fragments the next one.
    pub wan_mtu: Option<u32>,
}

/// One port forward of a `[[router]]`: WAN ports `ports` ("N" or "N-M") go to the same ports of
/// host `to` on the router's LAN, whatever the NAT's filtering and with no binding needed; what
/// `to` sends from those ports leaves from the same WAN port.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardDef {
    /// `udp` (the default; the only transport the harness forwards).
    #[serde(default = "udp")]
    #[schemars(with = "String")]
    pub proto: Spanned<String>,
    /// `"5060"` or a range `"10000-20000"`; the destination port equals the WAN port.
    #[schemars(with = "String")]
    pub ports: Spanned<String>,
    /// The host behind this router that gets them.
    #[schemars(with = "String")]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostDef {
    /// The host's name, used by components, steps and expectations.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// `internet` or a router's name.
    #[schemars(with = "String")]
    pub segment: Spanned<String>,
    /// Its addresses; the first is the one components bind (a STUN server needs two).
    #[schemars(with = "Vec<Ipv4Addr>")]
    pub addrs: Spanned<Vec<Ipv4Addr>>,
    /// MTU of its link to the segment (576–9000; default 1500). Its kernel fragments every UDP
    /// datagram larger than this (a SIP message included), and the segment's bridge follows its
    /// smallest link, so the router sends at most this much to the whole segment too.
    pub mtu: Option<u32>,
}

/// Which output of a command a `log` expectation reads.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogStream {
    Stdout,
    Stderr,
    #[default]
    Both,
}

/// One final status or several acceptable ones: `status = 408` or `status = [408, 480]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses(pub Vec<u16>);

impl Statuses {
    pub fn contains(&self, status: u16) -> bool {
        self.0.contains(&status)
    }
}

impl From<u16> for Statuses {
    fn from(s: u16) -> Self {
        Statuses(vec![s])
    }
}

impl fmt::Display for Statuses {
    /// `408`, or `408 or 480`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&parts.join(" or "))
    }
}

impl JsonSchema for Statuses {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Statuses".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A final status (0 = no final response), or a list of acceptable ones.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 699 },
                { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 699 }, "minItems": 1 }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, JsonSchema)]
        #[serde(untagged)]
        enum OneOrMany {
            One(u16),
            Many(Vec<u16>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => Ok(Statuses(vec![s])),
            Ok(OneOrMany::Many(v)) if !v.is_empty() => Ok(Statuses(v)),
            Ok(OneOrMany::Many(_)) => Err(de::Error::custom(
                "`status = []` accepts nothing: give a status or a list of them",
            )),
            // A missing `status` is reported as such, not as a malformed one.
            Err(e) if e.to_string().contains("missing field") => Err(e),
            Err(_) => Err(de::Error::custom(
                "a status is a number (`status = 408`, 0 = no final response) or a list of them \
                 (`status = [408, 480]`)",
            )),
        }
    }
}

/// A NAT: a name (`full-cone`, `symmetric`, a preset such as `cgnat`) or a table.
#[derive(Debug, Clone)]
pub struct NatDef(pub NatBehaviour);

/// The table form of a NAT: a `type` (or preset) to start from, or `mapping` + `filtering`,
/// then any overrides.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NatTable {
    /// A NAT type or preset to start from (`full-cone`, `symmetric`, `cgnat`, …).
    #[serde(rename = "type")]
    base: Option<String>,
    /// RFC 4787 mapping behaviour (with `filtering`, instead of `type`).
    mapping: Option<Mapping>,
    /// RFC 4787 filtering behaviour (with `mapping`, instead of `type`).
    filtering: Option<Filtering>,
    /// How public ports are chosen: kept from the inside, random, or hashed.
    ports: Option<PortAllocation>,
    /// Lifetime of an idle UDP binding, whole seconds (conntrack counts seconds); default 30.
    udp_timeout_secs: Option<u32>,
    /// Lifetime of an idle established TCP connection through the NAT, whole seconds
    /// (conntrack's `nf_conntrack_tcp_timeout_established` in the router's namespace); default
    /// the kernel's five days. A phone registered over TCP stays callable only while its
    /// connection's binding lives: keep-alives (`keepalive = { type = "crlf", … }`) below it.
    tcp_timeout_secs: Option<u32>,
    /// Which packets refresh a binding: `both` directions (Linux) or `outbound-only`.
    refresh: Option<Refresh>,
    /// Whether inside hosts reach each other through the public address (RFC 4787 REQ-9).
    hairpinning: Option<bool>,
    /// The SIP ALG: `off`, `kernel` (Linux's sip helper) or `{ emulated = [faults] }`.
    sip_alg: Option<SipAlg>,
    /// Ports handed out by random/hashed allocation and port blocks: `[LOW, HIGH]`.
    port_range: Option<(u16, u16)>,
    /// Public addresses the NAT owns, counted up from its WAN address.
    pool_size: Option<u8>,
    /// With a pool: one inside host always leaves from the same public address.
    paired_pooling: Option<bool>,
    /// Ports per subscriber, as a CGNAT allocates them in blocks (RFC 7422).
    port_block: Option<u16>,
    /// A firewall rule: UDP to or from `[LOW, HIGH]` dropped both ways (the RTP range closed).
    blocked_udp_ports: Option<(u16, u16)>,
    /// The router's own firewall for new flows from the WAN to the router itself: `accept` (none,
    /// a plain Linux box; the default of the NAT types), `drop` (silently; enterprise firewalls,
    /// and assumed for carrier NATs) or `reject` (ICMP port unreachable, TCP reset; OpenWrt's wan zone, the
    /// `home-router` preset). Decides whether the far end's early RTP takes the phone's port.
    input: Option<InputPolicy>,
    /// Drop IP fragments in both directions before conntrack reassembles them, as many consumer
    /// routers and firewalls do: a SIP message larger than the path MTU (an INVITE with video and
    /// many codecs) is lost whole. Default `false`.
    drop_fragments: Option<bool>,
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
        if self.tcp_timeout_secs.is_some() {
            b.tcp_timeout_secs = self.tcp_timeout_secs;
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
        if let Some(v) = self.input {
            b.input = v;
        }
        if let Some(v) = self.drop_fragments {
            b.drop_fragments = v;
        }
        b.validate().map_err(|e| e.to_string())?;
        Ok(b)
    }
}

impl JsonSchema for NatDef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Nat".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = NAT_NAMES.split(", ").map(str::trim).collect();
        let table = g.subschema_for::<NatTable>();
        schemars::json_schema!({
            "description": "A NAT type or preset by name, or a table: a `type` (or `mapping` + `filtering`) and any overrides. The four types are a plain Linux router (no input firewall: `input = \"accept\"`). The presets, and where each comes from: `home-router` = port-restricted cone, 30 s timeout, `input = \"reject\"` (OpenWrt's default wan zone rejects input: fw4 answers TCP with a reset and anything else with ICMP port unreachable); `enterprise-firewall` = symmetric, outbound-only refresh, `input = \"drop\"` (default-deny, no answers); `cgnat` = port-restricted cone with 512-port blocks over 1024-65535 (RFC 6888, RFC 7422), `input = \"drop\"` (assumed, not measured: no carrier NAT is reachable from the lab; RFC 6888 asks for no answer); `mobile-carrier` = symmetric, 20 s timeout, outbound-only refresh, `input = \"drop\"` (as `cgnat`).",
            "anyOf": [{ "type": "string", "enum": names }, table]
        })
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatHandlingDef {
    /// Trusts Contact and Via: the naive server of the field's 408.
    Literal,
    /// Far-end NAT traversal: source address, `received`/`rport`.
    FarEnd,
}

impl NatHandlingDef {
    /// The two knobs this shorthand stands for.
    pub fn handling(self) -> crate::sip::NatHandling {
        match self {
            NatHandlingDef::Literal => crate::sip::NatHandling::LITERAL,
            NatHandlingDef::FarEnd => crate::sip::NatHandling::FAR_END,
        }
    }
}

/// What a registrar does with the Contact a phone wrote.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContactHandlingDef {
    /// Stores and forwards it as written (a private address behind NAT).
    AsWritten,
    /// Uses the address the REGISTER came from (Kamailio's `fix_nated_register`).
    Source,
}

/// Whether a server honours RFC 3581 `rport`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RportHandlingDef {
    /// Fills `received`/`rport` and answers to the source port when asked.
    Honour,
    /// Answers to `received` + the Via port (plain RFC 3261).
    Ignore,
}

impl Component {
    /// A proxy's NAT handling: the shorthand, with either knob overridden.
    pub fn proxy_nat_handling(&self) -> Option<crate::sip::NatHandling> {
        use crate::sip::ContactHandling;
        let Component::Proxy {
            nat_handling,
            contact_handling,
            rport_handling,
            ..
        } = self
        else {
            return None;
        };
        let mut nat = nat_handling.handling();
        if let Some(c) = contact_handling {
            nat.contact = match c {
                ContactHandlingDef::AsWritten => ContactHandling::AsWritten,
                ContactHandlingDef::Source => ContactHandling::Source,
            };
        }
        if let Some(h) = rport_handling {
            nat.honour_rport = *h == RportHandlingDef::Honour;
        }
        Some(nat)
    }
}

/// Where a phone's Contact address comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContactDef {
    /// Its own interface address (private behind a NAT).
    Local,
    /// Discovered with STUN against `stun-server` before registering.
    Stun,
}

/// How a phone keeps its NAT binding open.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepAliveDef {
    /// What is sent: `crlf` (RFC 5626 double CRLF), `options` (an OPTIONS request) or `stun`.
    #[serde(rename = "type")]
    pub kind: KeepAliveKind,
    /// How often, in ms; below the NAT's UDP timeout to keep a binding open.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
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

    /// The registrar's NAT ping (proxy or SBC) this asks for; `None` for `stun` (refused when
    /// the file is checked).
    pub fn ping(&self) -> Option<crate::sip::Ping> {
        let every = std::time::Duration::from_millis(self.interval_ms);
        match self.kind {
            KeepAliveKind::Crlf => Some(crate::sip::Ping::Crlf(every)),
            KeepAliveKind::Options => Some(crate::sip::Ping::Options(every)),
            KeepAliveKind::Stun => None,
        }
    }
}

/// When a started command counts as ready.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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

/// A SIP transport in a scenario file.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TransportDef {
    #[default]
    Udp,
    /// RFC 3261 §18 over TCP: Content-Length framing, connection reuse.
    Tcp,
    /// TCP under TLS (RFC 3261 §26.2) on the registrar's SIP port + 1 (5061), with
    /// certificates made for the run: a router's SIP ALG cannot read or rewrite it.
    Tls,
}

impl From<TransportDef> for crate::machine::Transport {
    fn from(t: TransportDef) -> Self {
        match t {
            TransportDef::Udp => crate::machine::Transport::Udp,
            TransportDef::Tcp => crate::machine::Transport::Tcp,
            TransportDef::Tls => crate::machine::Transport::Tls,
        }
    }
}

/// The transport of a readiness port.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PortProtocol {
    #[default]
    Udp,
    Tcp,
}

/// `[[component]]`: what runs on a host.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Component {
    /// A registrar + stateful proxy.
    Proxy {
        /// The host it runs on (its first address).
        host: String,
        /// Its UDP port.
        #[serde(default = "sip_port")]
        port: u16,
        /// How it treats phones behind NAT, as a shorthand for `contact-handling` and
        /// `rport-handling`: `literal` (as written, rport ignored) or `far-end` (source
        /// address, rport honoured).
        #[serde(default = "far_end")]
        nat_handling: NatHandlingDef,
        /// Overrides the shorthand's Contact handling: `as-written` stores and forwards the
        /// Contact the phone wrote; `source` uses the address the REGISTER came from.
        contact_handling: Option<ContactHandlingDef>,
        /// Overrides the shorthand's rport handling: `honour` answers to the source port when
        /// the phone asked for rport (RFC 3581); `ignore` answers to the Via port. Stock
        /// Kamailio without nathelper is `contact-handling = "as-written"`, `rport-handling =
        /// "honour"`.
        rport_handling: Option<RportHandlingDef>,
        /// NAT pings from its SIP socket to each registered phone, as the SBC's (Kamailio
        /// nathelper's `natping_interval`): `{ type = "options" | "crlf", interval-ms = … }`.
        /// They go where the phone's INVITEs would go: its REGISTER's source with Contact
        /// handling `source`, the private Contact (lost, as with nathelper and no received
        /// address) with `as-written`. A router that refreshes bindings on inbound packets
        /// (Linux) keeps the binding for either; one that refreshes on outbound packets only
        /// keeps it for `options` alone, because the phone's 200 OK to it goes out.
        ping: Option<KeepAliveDef>,
        /// Users that must authenticate, with their passwords.
        #[serde(default)]
        users: BTreeMap<String, String>,
        /// Stream transports it also listens on (`["tcp", "tls"]`): TCP on its port, TLS on
        /// the next (5061), with a certificate for its address made for the run; it always
        /// serves UDP. A phone registered over TCP gets its requests down the connection
        /// it registered on (RFC 5923 connection reuse), as no new connection could reach it
        /// behind a NAT.
        #[serde(default)]
        transports: Vec<TransportDef>,
    },
    /// A SIP phone.
    Ua {
        /// The host it runs on (its first address).
        host: String,
        /// User part of its address of record; defaults to the host name.
        user: Option<String>,
        /// Its SIP UDP port.
        #[serde(default = "sip_port")]
        port: u16,
        /// Its registrar and outbound proxy: a host running a `proxy`, `sbc` or `kamailio` (its
        /// first address and SIP port), a `command` declared with `plays = "registrar"` (by the
        /// command's name), or `IP:PORT`.
        proxy: String,
        /// How it talks to its proxy: `udp` (default), `tcp`: one connection from its SIP port
        /// that it keeps open (RFC 5626 flow), with `;transport=tcp` in its Contact, or `tls`:
        /// the same under TLS to the proxy's port + 1 (5061). The proxy must list the transport
        /// in its `transports`.
        #[serde(default)]
        transport: TransportDef,
        /// Put `;rport` in Via (RFC 3581), asking the server to answer to the source port.
        #[serde(default = "yes")]
        rport: bool,
        #[serde(default = "local_contact")]
        contact: ContactDef,
        /// With `contact = "stun"`, `media = "stun"` or `ice = true`: the host running the STUN
        /// server.
        stun_server: Option<String>,
        /// Keep-alives on the SIP flow: `{ type = "crlf" | "options" | "stun", interval-ms = N }`.
        keepalive: Option<KeepAliveDef>,
        /// Registration lifetime it asks for; it refreshes at half of what the registrar grants.
        #[serde(default = "default_expires")]
        expires_secs: u64,
        /// How long it rings before it answers an incoming call.
        #[serde(default = "default_answer")]
        answer_after_ms: u64,
        /// While ringing, repeat the 180 this often (RFC 3261 §13.3.1.1 asks for once a minute;
        /// shorter keeps a caller's NAT binding open through a slow answer). Default: one 180.
        provisional_interval_ms: Option<u64>,
        /// Digest password, for a registrar with `users`.
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
        /// The audio codecs its INVITEs offer, in preference order (`["PCMU", "PCMA", "G722",
        /// "opus", "telephone-event"]`): PCMU, PCMA, G722, G729, GSM, opus, iLBC, speex, AMR-WB,
        /// G726-32, telephone-event. Must include PCMU, which it streams. Default `["PCMU"]`.
        /// Each codec is one or two SDP lines: with `video` the INVITE grows past an Ethernet
        /// MTU and its sender's kernel fragments it.
        #[serde(default = "pcmu")]
        codecs: Vec<String>,
        /// Also offer video (`m=video` with three H.264 profiles and VP8, RTCP feedback), as a
        /// video desk phone or softphone does; about 900 bytes of SDP. No video is sent.
        #[serde(default)]
        video: bool,
        /// ICE (RFC 8445): gather a host candidate, a server-reflexive one from `stun-server`
        /// and a relayed one from `turn-server` (with `turn-password`), offer them in SDP
        /// (`a=candidate`, `a=ice-ufrag`, `a=ice-pwd`; `c=`/`m=` name the relayed one, else the
        /// server-reflexive one), check the pairs with the peer and stream over the nominated
        /// one, keeping consent (RFC 7675). The caller is the controlling agent. With `media =
        /// "local"` (the default) only.
        #[serde(default)]
        ice: bool,
    },
    /// A session border controller: registrar + proxy doing far-end NAT traversal, Contact
    /// rewritten to itself, NAT pings to registered phones, and a latching media relay.
    Sbc {
        /// The host it runs on (its first address).
        host: String,
        /// Its UDP port.
        #[serde(default = "sip_port")]
        port: u16,
        /// Pings to each registered phone: `{ type = "options" | "crlf", interval-ms = … }`.
        ping: Option<KeepAliveDef>,
        /// Users that must authenticate, with their passwords.
        #[serde(default)]
        users: BTreeMap<String, String>,
        /// Stream transports it also serves, as a `proxy`'s `transports`: `["tcp"]`,
        /// `["tls"]` (5061). A phone registered over one is reached down its connection.
        #[serde(default)]
        transports: Vec<TransportDef>,
    },
    /// Kamailio (Debian `kamailio`) with nathelper as the far-end registrar/proxy, on port 5060.
    Kamailio {
        /// The host it runs on (it listens on the first address, port 5060).
        host: String,
        /// Far-end NAT traversal with nathelper (the default). `false`: the stock registrar,
        /// which honours rport but stores the private Contact as written.
        #[serde(default = "yes")]
        nathelper: bool,
        /// nathelper OPTIONS pings to NATed contacts, seconds (0: none).
        #[serde(default)]
        natping_interval_secs: u32,
        /// Relay media through rtpengine (Debian `rtpengine-daemon`, userspace forwarding) in
        /// the same host: `rtpengine_manage()` rewrites every SDP to the relay on the host's
        /// first address, ports 30000–30099, and rtpengine latches each leg onto where that
        /// phone's RTP comes from. Off (the default): signalling only, SDP as the phones wrote it.
        #[serde(default)]
        rtpengine: bool,
    },
    /// A TURN relay (RFC 8656) listening on the host's first address, port 3478.
    TurnServer {
        /// The host it runs on (port 3478 on its first address).
        host: String,
        /// Long-term credentials: user = password.
        #[serde(default)]
        users: BTreeMap<String, String>,
    },
    /// An RFC 5780 STUN server on the host's first two addresses.
    StunServer {
        /// The host it runs on; it needs two addresses (RFC 5780 alternate address).
        host: String,
    },
    /// Any program, run inside the host (sipp, kamailio, coturn, your own binary). Arguments
    /// and `files` may use `{NODE.addr}`, `{NODE.addr2}` (a router: WAN, LAN), `{registrar}`,
    /// `{stun-server}`, `{turn-server}` (`IP:PORT` of those components; the registrar is the
    /// first `proxy`, `sbc`, `kamailio` or command with `plays = "registrar"` in the file),
    /// their `.addr` (IP) and `.port` forms (`{registrar.addr}`, `{registrar.port}`, …),
    /// `{password.USER}` (a registrar's users), `{turn-password.USER}`, `{vars.NAME}` (the
    /// file's `[vars]`), `{scenario.t1-ms}`, `{dir}` (the folder its files are written to), and
    /// `{file:NAME}` for the path of one of its files.
    Command {
        /// Its name, for `start`, `wait-exit`, `exit-code` and `log`.
        name: String,
        /// The host whose namespace it runs in.
        host: String,
        /// The program and its arguments (with `{…}` placeholders).
        run: Vec<String>,
        /// When it counts as started: `{ log = "…" }`, `{ port = N }` or `{ delay-ms = N }`.
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
        /// How to make it place a call, so a `call` step can start from its `user`: text written
        /// to its standard input (`{ stdin = "/dial sip:{to}@{server.addr}" }` for baresip with
        /// its `stdio` module) or a program run in its host (`{ run = […] }`). `{to}` is the user
        /// called. The call's outcome and media are judged from the packets at its host's
        /// interface, as for a command that answers.
        dial: Option<ActionDef>,
        /// How to make it hang up (`{ stdin = "/hangup" }`), for a `call` step from it with
        /// `hold-ms`.
        hang_up: Option<ActionDef>,
        /// The role it plays for the built-in components: `registrar` (a Kamailio, OpenSIPS or
        /// SIPp you configured yourself) lets a phone's `proxy =` name this command, and makes
        /// `{registrar}` its address when it is the file's first registrar.
        plays: Option<PlaysDef>,
        /// With `plays = "registrar"`: the UDP port it serves SIP on, on its host's first
        /// address (default 5060).
        sip_port: Option<u16>,
    },
}

impl Component {
    /// Whether the harness types into this command's standard input (a `stdin` action), so it
    /// starts with that input open.
    pub fn types_commands(&self) -> bool {
        matches!(self, Component::Command { dial, hang_up, .. }
            if dial.iter().chain(hang_up).any(|a| a.stdin.is_some()))
    }
}

/// Something the harness does to a running command: a line on its standard input, or another
/// program run in the same host. Give exactly one of the two.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActionDef {
    /// A line written to the command's standard input (a newline is added); the command is then
    /// started with its standard input open.
    pub stdin: Option<String>,
    /// A program and its arguments, run to completion in the command's host (10 s at most); a
    /// non-zero exit fails the run with its output.
    pub run: Option<Vec<String>>,
}

impl ActionDef {
    /// Every text the action carries, for placeholder checks.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.stdin
            .iter()
            .map(String::as_str)
            .chain(self.run.iter().flatten().map(String::as_str))
    }
}

fn sip_port() -> u16 {
    5060
}

/// A role a `command` plays for the built-in components.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlaysDef {
    /// The registrar/proxy phones register with and call through.
    Registrar,
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MediaDef {
    /// Its interface address: private behind a NAT.
    Local,
    /// The STUN mapping of its RTP port (needs `stun-server`).
    Stun,
    /// A TURN relayed address (needs `turn-server`).
    Turn,
}

/// An ICE candidate type, as SDP names it (RFC 8839 §5.1).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateKindDef {
    /// The phone's own interface address.
    Host,
    /// Its NAT mapping as the STUN server saw it.
    Srflx,
    /// A mapping a connectivity check found (a NAT that maps per destination).
    Prflx,
    /// A TURN relayed address.
    Relay,
}

impl CandidateKindDef {
    pub fn kind(self) -> crate::ice::CandidateKind {
        match self {
            CandidateKindDef::Host => crate::ice::CandidateKind::Host,
            CandidateKindDef::Srflx => crate::ice::CandidateKind::ServerReflexive,
            CandidateKindDef::Prflx => crate::ice::CandidateKind::PeerReflexive,
            CandidateKindDef::Relay => crate::ice::CandidateKind::Relayed,
        }
    }
}

/// A call's media as judged from both ends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
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

    /// When this component serves as a registrar: the name a phone's `proxy =` gives it (the
    /// host of a `proxy`, `sbc` or `kamailio`; the name of a command with `plays =
    /// "registrar"`) and the UDP port it serves SIP on, on its host's first address.
    pub fn registrar(&self) -> Option<(&str, u16)> {
        match self {
            Component::Proxy { host, port, .. } | Component::Sbc { host, port, .. } => {
                Some((host, *port))
            }
            Component::Kamailio { host, .. } => Some((host, sip_port())),
            Component::Command {
                name,
                plays: Some(PlaysDef::Registrar),
                sip_port: p,
                ..
            } => Some((name, p.unwrap_or_else(sip_port))),
            _ => None,
        }
    }

    /// When a backend starts it: servers first (STUN, TURN), then registrars and proxies, then
    /// programs, phones last, since phones talk to the others as soon as they register.
    pub fn start_order(&self) -> u8 {
        match self {
            Component::StunServer { .. } | Component::TurnServer { .. } => 0,
            Component::Proxy { .. } | Component::Sbc { .. } | Component::Kamailio { .. } => 1,
            Component::Command { .. } => 2,
            Component::Ua { .. } => 3,
        }
    }

    /// A `proxy` component's settings, serving on `addr` (its host's first address).
    pub fn proxy_config(
        &self,
        addr: Ipv4Addr,
        timers: crate::sip::Timers,
    ) -> Option<crate::sip::ProxyConfig> {
        let Component::Proxy {
            port,
            users,
            ping,
            transports,
            ..
        } = self
        else {
            return None;
        };
        let local = std::net::SocketAddr::new(addr.into(), *port);
        let nat = self.proxy_nat_handling()?;
        let mut cfg = crate::sip::ProxyConfig::new(local, &addr.to_string(), nat);
        cfg.timers = timers;
        cfg.users = users.clone();
        cfg.ping = ping.as_ref().and_then(|k| k.ping());
        cfg.streams = transports
            .iter()
            .map(|t| crate::machine::Transport::from(*t))
            .filter(|t| t.is_reliable())
            .collect();
        Some(cfg)
    }

    /// An `sbc` component's settings, serving on `addr` (its host's first address).
    pub fn sbc_config(
        &self,
        addr: Ipv4Addr,
        timers: crate::sip::Timers,
    ) -> Option<crate::sbc::SbcConfig> {
        let Component::Sbc {
            port,
            ping,
            users,
            transports,
            ..
        } = self
        else {
            return None;
        };
        let sip = std::net::SocketAddr::new(addr.into(), *port);
        let mut cfg = crate::sbc::SbcConfig::new(sip, &addr.to_string());
        cfg.timers = timers;
        cfg.users = users.clone();
        cfg.ping = ping.as_ref().and_then(|k| k.ping());
        cfg.streams = transports
            .iter()
            .map(|t| crate::machine::Transport::from(*t))
            .filter(|t| t.is_reliable())
            .collect();
        Some(cfg)
    }

    /// A phone's SIP settings as its `ua` component gives them, on socket `local`, registering
    /// with `proxy`: what both backends start a phone with, before its Contact and media
    /// addresses (which depend on STUN, TURN or `externip`) are filled in. `None` for another
    /// kind of component.
    pub fn ua_config(
        &self,
        user: &str,
        local: std::net::SocketAddr,
        proxy: std::net::SocketAddr,
        timers: crate::sip::Timers,
    ) -> Option<crate::sip::UaConfig> {
        let Component::Ua {
            rport,
            keepalive,
            expires_secs,
            answer_after_ms,
            provisional_interval_ms,
            password,
            ..
        } = self
        else {
            return None;
        };
        let mut cfg = crate::sip::UaConfig::new(user, &proxy.ip().to_string(), local, proxy);
        cfg.timers = timers;
        cfg.rport = *rport;
        cfg.expires = std::time::Duration::from_secs(*expires_secs);
        cfg.answer_after = Some(std::time::Duration::from_millis(*answer_after_ms));
        cfg.ring_every = provisional_interval_ms.map(std::time::Duration::from_millis);
        cfg.password = password.clone();
        cfg.keepalive = keepalive.as_ref().map(|k| k.keepalive());
        super::phone::configure(self, &mut cfg);
        Some(cfg)
    }
}

/// Sets a phone's SDP address to `sdp` (its media socket, its STUN mapping or its TURN relay)
/// and, with Asterisk-style `externip`, its Contact and media address to the external one
/// outside `localnet`: the last of a phone's settings, once its media path is known.
pub fn set_phone_addresses(
    cfg: &mut crate::sip::UaConfig,
    sdp: std::net::SocketAddr,
    externip: Option<Ipv4Addr>,
    localnet: &[String],
) {
    cfg.media = crate::sip::Media {
        address: sdp.ip(),
        port: sdp.port(),
    };
    if let Some(ext) = externip {
        let port = cfg.local.port();
        cfg.contact =
            crate::sip::ContactSource::External(std::net::SocketAddr::new(ext.into(), port));
        cfg.external_media = Some(ext.into());
        cfg.localnet = super::localnets(localnet);
    }
}

/// The host and SIP port of the registrar a phone's `proxy =` names (see
/// [`Component::registrar`]).
pub fn registrar_of<'a>(
    components: &'a [Spanned<Component>],
    proxy: &str,
) -> Option<(&'a str, u16)> {
    components
        .iter()
        .map(|c| c.get_ref())
        .find_map(|c| match c.registrar() {
            Some((name, port)) if name == proxy => Some((c.host(), port)),
            _ => None,
        })
}

/// `[[step]]`: the timeline, run in order.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    tag = "action",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Step {
    /// A phone registers (and waits up to `timeout-ms` for the outcome).
    Register {
        /// The phone (its user name).
        ua: String,
        /// How long to wait for the registration's outcome.
        #[serde(default = "step_timeout")]
        timeout_ms: u64,
    },
    /// A phone calls a user; waits until the call is established or fails.
    Call {
        /// The calling phone.
        from: String,
        /// The user called (a phone, or a command's `user`).
        to: String,
        /// Hang up this long after the call is established (0: keep it up).
        #[serde(default)]
        hold_ms: u64,
        /// How long to wait for the call to be established or to fail; with no final response by then the call's status is 0.
        #[serde(default = "call_timeout")]
        timeout_ms: u64,
    },
    Wait {
        /// How long.
        ms: u64,
    },
    /// The router forgets a host's binding(s) now.
    ExpireBinding {
        /// The router that forgets.
        router: String,
        /// The host whose binding goes.
        host: String,
        /// The host's port whose binding goes.
        #[serde(default = "sip_port")]
        port: u16,
    },
    /// The router forgets every binding (reboot).
    FlushBindings {
        /// The router that restarts.
        router: String,
    },
    /// The router's NAT behaviour changes (firmware update, ALG toggled).
    SetNat {
        /// The router whose NAT changes.
        router: String,
        nat: NatDef,
    },
    /// The proxy's NAT handling changes.
    SetNatHandling {
        /// The host running the proxy.
        proxy: String,
        value: NatHandlingDef,
    },
    /// Starts a command declared with `autostart = false`.
    Start {
        /// The command (declared with `autostart = false`).
        command: String,
    },
    /// Waits for a command to exit.
    WaitExit {
        /// The command.
        command: String,
        /// How long to wait before the step fails.
        #[serde(default = "call_timeout")]
        timeout_ms: u64,
    },
    /// Field guide step 3: a STUN Binding from `host` (from `port`) to the host running the
    /// `stun-server` component; records the mapped address, the one the world sees.
    StunCheck {
        /// The host the check runs on.
        host: String,
        /// The host running the STUN server.
        stun_server: String,
        /// The local port the check sends from.
        #[serde(default = "stun_check_port")]
        port: u16,
    },
    /// Field guide step 4: RFC 5780 behaviour discovery from `host` against the RFC 5780
    /// `stun-server` (two addresses); records mapping, filtering and the RFC 3489 name.
    ClassifyNat {
        /// The host the classification runs on.
        host: String,
        /// The host running the STUN server (it needs two addresses).
        stun_server: String,
        /// The local port the discovery sends from.
        #[serde(default = "classify_port")]
        port: u16,
    },
    /// Field guide step 5: UDP probes from `from` (a host outside) to `to`'s WAN address, one per
    /// sampled port of `ports`, each towards a listener on `listen` (the host behind); records
    /// which reached it, which the router dropped and which drew ICMP port unreachable.
    ProbeUdp {
        /// Names the probe for a `udp-reachable` expectation (default: the last probe to `listen`).
        name: Option<String>,
        /// The outside host that sends the probes.
        from: String,
        /// The router whose WAN address is probed.
        to: String,
        /// The host behind the router that listens on the probed ports.
        listen: String,
        /// The range, inclusive: `[10000, 20000]`, the usual RTP range.
        #[serde(default = "rtp_range")]
        ports: (u16, u16),
        /// How many ports of the range to probe: both ends and evenly between them. A Linux
        /// router answers at most 6 ICMP errors back to back to one address, then one a second
        /// (`icmp_ratelimit`), so beyond 6 refused probes some are dropped without an answer —
        /// as a real tester would see them.
        #[serde(default = "probe_samples")]
        samples: u16,
        /// Before probing, `listen` sends one datagram from each sampled port to the prober's
        /// same port, as a phone's RTP does once the call is up (the pinhole it opens).
        #[serde(default)]
        inside_sends_first: bool,
    },
}

fn stun_check_port() -> u16 {
    5062
}
fn classify_port() -> u16 {
    5064
}
fn rtp_range() -> (u16, u16) {
    (10000, 20000)
}
fn probe_samples() -> u16 {
    5
}

/// Most ports one `probe-udp` step may sample: a probe is a sample of the range, not a scan.
pub const MAX_PROBE_SAMPLES: u16 = 64;

/// How a STUN-reported address compares with a router's WAN address.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StunVsWan {
    /// The STUN address is the router's WAN address: that router is the only NAT.
    Equal,
    /// Another NAT (a CGNAT) sits beyond the router, or the phone uses another router.
    Differs,
}

/// The RFC 3489 name of a NAT, as a `nat-type` expectation names it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatTypeDef {
    OpenInternet,
    FullCone,
    RestrictedCone,
    PortRestrictedCone,
    Symmetric,
    SymmetricUdpFirewall,
    UdpBlocked,
    Unknown,
}

impl NatTypeDef {
    /// The discovery's name for the same type.
    pub fn classic(self) -> crate::stun::ClassicNat {
        use crate::stun::ClassicNat as C;
        match self {
            NatTypeDef::OpenInternet => C::OpenInternet,
            NatTypeDef::FullCone => C::FullCone,
            NatTypeDef::RestrictedCone => C::RestrictedCone,
            NatTypeDef::PortRestrictedCone => C::PortRestrictedCone,
            NatTypeDef::Symmetric => C::Symmetric,
            NatTypeDef::SymmetricUdpFirewall => C::SymmetricUdpFirewall,
            NatTypeDef::UdpBlocked => C::UdpBlocked,
            NatTypeDef::Unknown => C::Unknown,
        }
    }
}

fn step_timeout() -> u64 {
    10_000
}
fn call_timeout() -> u64 {
    60_000
}

/// `[[expect]]`: what must hold at the end.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Expect {
    /// The last call `from` made ended with `status` (200 = established; 0 = no final
    /// response), or with any of a list (`status = [408, 480]`).
    Call {
        /// The calling phone.
        from: String,
        /// The final status: one, or a list of acceptable ones.
        status: Statuses,
    },
    /// Whether the phone is registered at the end.
    Registered {
        /// The phone.
        ua: String,
        /// Registered (true) or not (false) at the end of the run.
        value: bool,
    },
    /// Whether the phone rang (received an INVITE) at all.
    Rang {
        /// The phone.
        ua: String,
        /// Whether it received an INVITE.
        value: bool,
    },
    /// Which candidate pair an ICE phone's media went over in its last call: the types of its
    /// local and remote candidates (`host`, `srflx`, `prflx`, `relay`); a side left out
    /// matches any type, and with both left out a pair must merely have been nominated.
    Ice {
        /// The ICE phone (`ice = true`).
        ua: String,
        local: Option<CandidateKindDef>,
        remote: Option<CandidateKindDef>,
    },
    /// Which way audio flowed in the last call `from` placed (≥ 95 % of packets = working).
    Media {
        /// The caller of the call judged.
        from: String,
        value: MediaVerdictDef,
    },
    /// A command's exit code.
    ExitCode {
        /// The command.
        command: String,
        /// Its expected exit code.
        code: i32,
    },
    /// Lines of a command's output — what the program itself reports (SIPp's "Successful
    /// call" counter, Kamailio's log): lines that contain `contains`, or match the regular
    /// expression `matches`, in `stream` (`stdout`, `stderr` or `both`, the default). Holds when
    /// at least `min` and at most `max` lines do, with the defaults of `packet`.
    Log {
        /// The command whose output is read.
        command: String,
        /// Lines that contain this text.
        contains: Option<String>,
        /// Lines that match this regular expression (Rust `regex` syntax).
        matches: Option<String>,
        #[serde(default)]
        stream: LogStream,
        /// At least this many lines (default 1, or 0 when `max` is given).
        min: Option<u32>,
        /// At most this many lines.
        max: Option<u32>,
    },
    /// Order and timing at one vantage point: the first packet containing `first`, then the
    /// first after it containing `then` (matched as in `packet`). With `within-t1 = [LO, HI]`
    /// the time between them, in T1, must lie in that range too: a 408 at 64·T1 after the
    /// INVITE is `within-t1 = [62, 66]`.
    Timing {
        /// The vantage point: a host, or a router side (`home:wan`).
        at: String,
        /// Text of the first packet (matched as `packet` does).
        first: String,
        /// Text of the packet that must come after it.
        then: String,
        /// The time between them, in T1: `[LOW, HIGH]`.
        within_t1: Option<(f64, f64)>,
    },
    /// Packets captured at one vantage point — what a user would look for in the pcap: `at` is
    /// a host (`server`) or a router side (`home:wan`, `home:lan`); `contains` is searched in a
    /// SIP message's whole text, or in the ladder's summary of anything else (`STUN Binding
    /// request`, `RTP PT 0`, `ICMP port unreachable`, `keep-alive (CRLF)`); `from`/`to` narrow by
    /// address (`203.0.113.1` or `203.0.113.1:5060`). Holds when at least `min` and at most
    /// `max` packets match; `min` defaults to 1, or to 0 once `max` is given (`max = 0`: never).
    ///
    /// What TURN carries is always looked inside, no key needed: a datagram in ChannelData
    /// (channels 0x4000–0x7FFF) or in a Send/Data indication's DATA attribute is summarised as
    /// what it carries and how (`RTP PT 0 via TURN ChannelData 0x4000`, `INVITE sip:… SIP/2.0
    /// via TURN Send indication`), and relayed SIP is searched in its whole text. So
    /// `contains = "RTP PT 0"` also counts relayed audio, `contains = "via TURN"` only relayed
    /// packets, and `contains = "ChannelData 0x4000"` the framing. `from`/`to` are the outer
    /// datagram's addresses (the phone and the relay), as in the pcap.
    Packet {
        /// The vantage point: a host, or a router side (`home:wan`, `home:lan`).
        at: String,
        /// Text searched in a SIP message's whole text (also SIP relayed through TURN), or in the
        /// ladder summary of anything else (relayed packets: `RTP PT 0 via TURN ChannelData
        /// 0x4000`).
        contains: String,
        /// Only packets from this address (`IP` or `IP:PORT`); for relayed packets, the outer
        /// datagram's.
        from: Option<String>,
        /// Only packets to this address (`IP` or `IP:PORT`); for relayed packets, the outer
        /// datagram's.
        to: Option<String>,
        /// At least this many packets (default 1, or 0 when `max` is given).
        min: Option<u32>,
        /// At most this many packets (`max = 0`: never).
        max: Option<u32>,
    },
    /// The last `stun-check` from `host` compared with `router`'s WAN address.
    StunAddress {
        /// The host whose `stun-check` is read.
        host: String,
        /// The router whose WAN address the STUN address is compared with.
        router: String,
        value: StunVsWan,
    },
    /// What the last `classify-nat` from `host` found: the RFC 3489 name, and optionally the
    /// RFC 4787 mapping and filtering behind it.
    NatType {
        /// The host whose `classify-nat` is read.
        host: String,
        value: NatTypeDef,
        /// Also require this RFC 4787 mapping behaviour.
        mapping: Option<Mapping>,
        /// Also require this RFC 4787 filtering behaviour.
        filtering: Option<Filtering>,
    },
    /// How many probes of a `probe-udp` step reached the listener on `host`: the step named
    /// `probe`, or the last one listening on `host`.
    UdpReachable {
        /// The listening host.
        host: String,
        /// The probe step's `name` (default: the last probe to `host`).
        probe: Option<String>,
        reached: u16,
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
        let message = e.message().trim().replace('\n', " ");
        // A table whose type is chosen by `kind`/`action` is read in one piece, so the parser
        // points at the table (and not always the right one); find the field itself.
        let (at, message) = match bad_field(text) {
            Some((span, key)) if !message.contains(&format!("`{key}`")) => {
                (Some(span), format!("`{key}`: {message}"))
            }
            Some((span, _)) => (Some(span), message),
            None => (e.span(), message),
        };
        let (line, column) = at.map_or((0, 0), |s| line_col(text, s.start));
        FileError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    })
}

/// The first field of a `[[router]]`, `[[host]]`, `[[component]]`, `[[step]]` or `[[expect]]`
/// table that keeps it from being read: the table is read alone, then without each field in
/// turn; the field whose absence makes it readable (or only missing) is the culprit.
fn bad_field(text: &str) -> Option<(std::ops::Range<usize>, String)> {
    // Spans come from toml_edit; the trial reads go through `toml::Value`, never back through
    // a serializer: toml_write 0.1 counts a run of quotes in a `u8` and overflows on 256 of
    // them (found by the fuzz target `scenario`), and a message about the user's file must
    // not panic on what the user wrote.
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let values: toml::Table = toml::from_str(text).ok()?;
    fn fails<T: serde::de::DeserializeOwned>(
        t: &toml::Table,
        without: Option<&str>,
    ) -> Option<String> {
        let mut t = t.clone();
        if let Some(k) = without {
            t.remove(k);
        }
        toml::Value::Table(t)
            .try_into::<T>()
            .err()
            .map(|e| e.message().to_string())
    }
    fn culprit<T: serde::de::DeserializeOwned>(
        spans: &toml_edit::Table,
        t: &toml::Table,
    ) -> Option<(std::ops::Range<usize>, String)> {
        fails::<T>(t, None)?;
        let tag = ["kind", "action"];
        spans
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !tag.contains(k))
            .find(|k| match fails::<T>(t, Some(k)) {
                None => true,
                Some(m) => m.contains(&format!("missing field `{k}`")),
            })
            .and_then(|k| {
                let span = spans.get(k)?.span().or_else(|| spans.key(k)?.span())?;
                Some((span, k.to_string()))
            })
    }
    for (section, check) in [
        (
            "router",
            culprit::<RouterDef> as fn(&toml_edit::Table, &toml::Table) -> _,
        ),
        ("host", culprit::<HostDef>),
        ("component", culprit::<Component>),
        ("step", culprit::<Step>),
        ("expect", culprit::<Expect>),
    ] {
        let Some(tables) = doc.get(section).and_then(|i| i.as_array_of_tables()) else {
            continue;
        };
        let Some(read) = values.get(section).and_then(toml::Value::as_array) else {
            continue;
        };
        let pairs = tables
            .iter()
            .zip(read.iter().filter_map(toml::Value::as_table));
        if let Some(found) = pairs.into_iter().find_map(|(s, t)| check(s, t)) {
            return Some(found);
        }
    }
    None
}
