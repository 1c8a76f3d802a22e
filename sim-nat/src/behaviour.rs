//! The axes of NAT behaviour (RFC 4787 §4–§6) and the classic RFC 3489 names over them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the NAT picks the external address:port for an internal endpoint (RFC 4787 §4.1).
///
/// This is what decides whether a STUN-discovered address is any use towards a *different* peer:
/// only with endpoint-independent mapping is it the address that peer will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// One mapping per internal endpoint, whatever the destination.
    EndpointIndependent,
    /// A new mapping per destination address.
    AddressDependent,
    /// A new mapping per destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound packets an existing mapping admits (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Anyone who knows the external address:port gets in ("full cone").
    EndpointIndependent,
    /// Only addresses the internal endpoint has sent to.
    AddressDependent,
    /// Only address:port pairs the internal endpoint has sent to (plain Linux conntrack).
    AddressAndPortDependent,
}

/// How the external port of a new mapping is chosen (RFC 4787 §4.2.2, REQ-3, REQ-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PortAllocation {
    /// Keep the internal source port when it is free (Linux `snat`/`masquerade` default); on a
    /// clash the kernel picks another one, which is exactly the field's "port clash" failure.
    Preserve,
    /// A fresh random port per mapping (`fully-random`).
    Random,
    /// A deterministic hash of the fields the mapping depends on, so ports are stable run to run
    /// (snapshots) without being preserved.
    Hash,
    /// The next port of the range for every new mapping (`numgen inc`), as many CPE and
    /// enterprise NATs hand them out: a peer seeing one mapping can guess the next.
    Sequential,
}

/// Which traffic keeps a binding alive (RFC 4787 §4.3, REQ-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Refresh {
    /// Packets in either direction refresh it (what Linux conntrack does on its own).
    Both,
    /// Only outbound packets refresh it, as on many consumer routers: an SBC's pings towards the
    /// phone then do *not* keep the phone reachable, only the phone's own keep-alives do.
    OutboundOnly,
}

/// What the router does with a new flow from the WAN addressed to the router itself: traffic no
/// binding, port forward or looser filter took in (`iifname "wan" ct state new` in a filter chain
/// on the input hook). Replies and DNAT'd flows never reach it: they match conntrack or are
/// forwarded, not delivered locally.
///
/// It decides the "who sends first" collision (kernel-facts): under `Accept` the far end's early
/// RTP is confirmed by conntrack as an unreplied inbound flow that takes the phone's STUN port
/// tuple; `Drop` and `Reject` discard it before conntrack confirms the entry, so nothing takes the
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InputPolicy {
    /// No input firewall (a plain Linux box): the packet reaches the router's own stack, which
    /// answers ICMP port unreachable for a closed UDP port, and conntrack keeps the flow.
    Accept,
    /// Discarded silently, as default-deny enterprise firewalls do (the `enterprise-firewall`
    /// preset; the carrier presets assume the same).
    Drop,
    /// Discarded with an answer, as OpenWrt's wan zone does (fw4's `handle_reject`): TCP reset for
    /// TCP, ICMP port unreachable for anything else.
    Reject,
}

impl InputPolicy {
    pub const ALL: [InputPolicy; 3] = [InputPolicy::Accept, InputPolicy::Drop, InputPolicy::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            InputPolicy::Accept => "accept",
            InputPolicy::Drop => "drop",
            InputPolicy::Reject => "reject",
        }
    }

    /// Whether conntrack keeps an unsolicited inbound flow to the router (only without a
    /// firewall: the firewall discards the packet before its entry is confirmed).
    pub fn keeps_unsolicited(self) -> bool {
        self == InputPolicy::Accept
    }

    /// Whether the router answers an unsolicited UDP packet with ICMP port unreachable (its own
    /// stack under `Accept`, the firewall's `reject` under `Reject`).
    pub fn answers_icmp(self) -> bool {
        self != InputPolicy::Drop
    }
}

impl fmt::Display for InputPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the router does to SIP passing through it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SipAlg {
    /// SIP passes untouched.
    Off,
    /// The kernel's own `sip` conntrack helper rewrites Via/Contact/SDP and holds the SIP flow
    /// open for `sip_timeout` (3600 s here) whatever the UDP timeout says.
    Kernel,
    /// A consumer router's buggy ALG, emulated in user space (`harness::alg`) with the named
    /// faults; `sip-alg = { emulated = ["break-digest"] }` in a scenario file.
    Emulated(Vec<crate::AlgFault>),
}

/// As a scenario file names it: `off`, `kernel`, `emulated break-digest+drop-unparseable`.
impl fmt::Display for SipAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SipAlg::Off => f.write_str("ALG off"),
            SipAlg::Kernel => f.write_str("kernel ALG"),
            SipAlg::Emulated(faults) => {
                let names: Vec<&str> = faults.iter().map(|x| x.name()).collect();
                write!(f, "emulated ALG {}", names.join("+"))
            }
        }
    }
}

/// One router's NAT behaviour: a point in the RFC 4787 space plus the options that matter to SIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NatBehaviour {
    pub mapping: Mapping,
    pub filtering: Filtering,
    #[serde(default = "default_ports")]
    pub ports: PortAllocation,
    /// Lifetime of an idle UDP binding, in whole seconds: conntrack counts seconds, so finer values
    /// would promise a precision the kernel does not have.
    #[serde(default = "default_timeout")]
    pub udp_timeout_secs: u32,
    #[serde(default = "default_refresh")]
    pub refresh: Refresh,
    /// Whether internal hosts reach each other through the external address (RFC 4787 REQ-9).
    #[serde(default)]
    pub hairpinning: bool,
    #[serde(default = "default_alg")]
    pub sip_alg: SipAlg,
    /// Ports handed out by `Random` and `Hash` allocation and by port blocks, inclusive.
    #[serde(default = "default_port_range")]
    pub port_range: (u16, u16),
    /// How many public addresses the NAT owns, counted upwards from its WAN address (RFC 4787
    /// §4.1 address pooling).
    #[serde(default = "default_pool_size")]
    pub pool_size: u8,
    /// With a pool: an internal host always gets the same public address (RFC 4787 REQ-2).
    /// Without pairing, a host's flows to different destinations may leave from different
    /// addresses, which breaks SIP whose signalling and media then come from two addresses.
    #[serde(default = "default_paired")]
    pub paired_pooling: bool,
    /// Ports per subscriber, as carrier-grade NATs allocate them (RFC 6888 REQ-4, RFC 7422
    /// deterministic blocks): subscriber *i* (in LAN address order) gets ports
    /// `port_range.0 + i·n ..= port_range.0 + (i+1)·n − 1`, and its next flow fails once they are
    /// all in use.
    #[serde(default)]
    pub port_block: Option<u16>,
    /// A firewall rule many routers and enterprise firewalls ship: UDP to or from this port range
    /// is dropped in both directions (catalogue row 7: the RTP range 10000–20000 closed, SIP fine).
    #[serde(default)]
    pub blocked_udp_ports: Option<(u16, u16)>,
    /// The router's own input firewall on the WAN (see [`InputPolicy`]). `Accept` unless a preset
    /// says otherwise: the RFC 3489 types stand for a plain Linux NAT.
    #[serde(default = "default_input")]
    pub input: InputPolicy,
    /// Drop IP fragments arriving on either side, before conntrack reassembles them: a
    /// well-known consumer-router and firewall fault (no ports in a non-initial fragment, so no
    /// binding to match). A UDP datagram larger than the path MTU — an INVITE with a large SDP —
    /// is then lost whole, and the phone's call times out with 408. Off in every type and preset:
    /// it is firmware- and configuration-specific, not a property of a kind of device.
    #[serde(default)]
    pub drop_fragments: bool,
    /// Lifetime of an idle established TCP connection's binding, in whole seconds: conntrack's
    /// per-namespace `nf_conntrack_tcp_timeout_established`. `None` keeps the kernel's default
    /// (432000 s, five days); consumer routers and carrier NATs cut idle TCP far sooner (RFC
    /// 5382 REQ-5 asks for at least 2 h 4 min, the field sees minutes), which kills a phone's
    /// SIP-over-TCP flow unless it sends keep-alives (RFC 5626 §4.4.1).
    #[serde(default)]
    pub tcp_timeout_secs: Option<u32>,
}

fn default_ports() -> PortAllocation {
    PortAllocation::Preserve
}
fn default_timeout() -> u32 {
    30
}
fn default_refresh() -> Refresh {
    Refresh::Both
}
fn default_alg() -> SipAlg {
    SipAlg::Off
}
fn default_port_range() -> (u16, u16) {
    (30000, 49999)
}
fn default_pool_size() -> u8 {
    1
}
fn default_paired() -> bool {
    true
}
fn default_input() -> InputPolicy {
    InputPolicy::Accept
}

impl NatBehaviour {
    /// A behaviour with the given mapping and filtering and the defaults of a Linux home router.
    pub fn new(mapping: Mapping, filtering: Filtering) -> Self {
        let ports = match mapping {
            Mapping::EndpointIndependent => PortAllocation::Preserve,
            Mapping::AddressDependent => PortAllocation::Hash,
            Mapping::AddressAndPortDependent => PortAllocation::Random,
        };
        Self {
            mapping,
            filtering,
            ports,
            udp_timeout_secs: default_timeout(),
            refresh: default_refresh(),
            hairpinning: false,
            sip_alg: default_alg(),
            port_range: default_port_range(),
            pool_size: default_pool_size(),
            paired_pooling: default_paired(),
            port_block: None,
            blocked_udp_ports: None,
            input: default_input(),
            drop_fragments: false,
            tcp_timeout_secs: None,
        }
    }

    /// A named preset: what a kind of device in the field typically does.
    pub fn preset(p: Preset) -> Self {
        use Filtering as F;
        use Mapping as M;
        match p {
            // Linux-based home gateways: masquerade, conntrack defaults (but a field-typical
            // 30 s idle timeout rather than conntrack's 120 s stream timeout), and OpenWrt's
            // default wan zone: `option input REJECT` (fw4's `handle_reject`).
            Preset::HomeRouter => Self::new(M::EndpointIndependent, F::AddressAndPortDependent)
                .with_input(InputPolicy::Reject),
            // RFC 6888: EIM, port blocks per subscriber, paired pooling. A carrier NAT offers no
            // service on its pool addresses and RFC 6888 asks for no answer there: `drop`, an
            // assumption (no carrier NAT could be measured from this lab), chosen because it is
            // the silent one of the two firewalls.
            Preset::Cgnat => Self::new(M::EndpointIndependent, F::AddressAndPortDependent)
                .with_port_block(512)
                .with_port_range(1024, 65535)
                .with_input(InputPolicy::Drop),
            // Enterprise firewalls randomise ports, refresh on outbound traffic only and drop
            // what nobody asked for (a default-deny policy, stealth: no ICMP answers).
            Preset::EnterpriseFirewall => {
                Self::new(M::AddressAndPortDependent, F::AddressAndPortDependent)
                    .with_refresh(Refresh::OutboundOnly)
                    .with_input(InputPolicy::Drop)
            }
            // Mobile carriers: symmetric, short idle timeouts, outbound-only refresh, and a
            // carrier NAT's silence towards unsolicited packets.
            Preset::MobileCarrier => {
                Self::new(M::AddressAndPortDependent, F::AddressAndPortDependent)
                    .with_udp_timeout(20)
                    .with_refresh(Refresh::OutboundOnly)
                    .with_input(InputPolicy::Drop)
            }
        }
    }

    pub fn with_port_range(mut self, lo: u16, hi: u16) -> Self {
        self.port_range = (lo, hi);
        self
    }

    /// Gives the NAT `size` public addresses; `paired` keeps each host on one of them.
    pub fn with_pool(mut self, size: u8, paired: bool) -> Self {
        self.pool_size = size;
        self.paired_pooling = paired;
        self
    }

    /// Drops UDP to or from ports `lo..=hi` through the router.
    pub fn with_blocked_udp_ports(mut self, lo: u16, hi: u16) -> Self {
        self.blocked_udp_ports = Some((lo, hi));
        self
    }

    /// Limits each subscriber to a block of `size` ports.
    pub fn with_port_block(mut self, size: u16) -> Self {
        self.port_block = Some(size);
        self
    }

    pub fn with_ports(mut self, ports: PortAllocation) -> Self {
        self.ports = ports;
        self
    }

    pub fn with_udp_timeout(mut self, secs: u32) -> Self {
        self.udp_timeout_secs = secs;
        self
    }

    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    pub fn with_hairpinning(mut self, on: bool) -> Self {
        self.hairpinning = on;
        self
    }

    /// Gives the router an input firewall on its WAN (or none: `Accept`).
    pub fn with_input(mut self, input: InputPolicy) -> Self {
        self.input = input;
        self
    }

    /// Makes the router drop IP fragments (see [`Self::drop_fragments`]).
    pub fn with_drop_fragments(mut self, on: bool) -> Self {
        self.drop_fragments = on;
        self
    }

    pub fn with_sip_alg(mut self, alg: SipAlg) -> Self {
        self.sip_alg = alg;
        self
    }

    /// Refuses combinations that cannot be built or would not be what they claim.
    pub fn validate(&self) -> Result<(), Error> {
        use Mapping::*;
        use PortAllocation::*;
        let why = match (self.mapping, self.ports) {
            (EndpointIndependent, Random) => Some(
                "endpoint-independent mapping needs the same port for every destination; \
                 `random` picks a new one per flow (use `preserve` or `hash`)",
            ),
            (AddressDependent, Preserve) => Some(
                "address-dependent mapping with `preserve` would reuse the internal port for every \
                 destination, which is endpoint-independent (use `hash`)",
            ),
            (AddressDependent, Random) => Some(
                "address-dependent mapping must reuse the mapping for a second port of the same \
                 address; `random` cannot (use `hash`)",
            ),
            (EndpointIndependent | AddressDependent, Sequential) => Some(
                "`sequential` gives every new flow the next port, which is \
                 address-and-port-dependent mapping",
            ),
            (AddressAndPortDependent, Preserve) => Some(
                "address-and-port-dependent mapping with `preserve` keeps the port for every \
                 destination, which Linux makes endpoint-independent (use `random` or `hash`)",
            ),
            _ => None,
        };
        if let Some(why) = why {
            return Err(Error::Invalid(why.into()));
        }
        if self.udp_timeout_secs == 0 {
            return Err(Error::Invalid(
                "udp-timeout-secs must be at least 1: conntrack counts whole seconds".into(),
            ));
        }
        if self.tcp_timeout_secs == Some(0) {
            return Err(Error::Invalid(
                "tcp-timeout-secs must be at least 1: conntrack counts whole seconds".into(),
            ));
        }
        let (lo, hi) = self.port_range;
        if lo == 0 || lo > hi {
            return Err(Error::Invalid(format!(
                "port-range {lo}-{hi} is empty or starts at 0"
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::Invalid(
                "pool-size must be at least 1 (the WAN address)".into(),
            ));
        }
        if self.pool_size > 1
            && matches!(
                self.ports,
                PortAllocation::Hash | PortAllocation::Sequential
            )
        {
            return Err(Error::Invalid(
                "an address pool needs `preserve` or `random` port allocation; `hash` picks ports \
                 for a single address"
                    .into(),
            ));
        }
        if let Some(block) = self.port_block {
            if block == 0 || u32::from(block) > u32::from(hi - lo) + 1 {
                return Err(Error::Invalid(format!(
                    "port-block {block} must be between 1 and the size of port-range {lo}-{hi}"
                )));
            }
            if self.ports == PortAllocation::Hash {
                return Err(Error::Invalid(
                    "port blocks need `preserve` or `random` port allocation inside the block"
                        .into(),
                ));
            }
            if self.mapping == Mapping::AddressDependent {
                return Err(Error::Invalid(
                    "port blocks cannot express address-dependent mapping (it needs `hash`)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The RFC 3489 name a classic classifier gives this behaviour, if it has one.
    pub fn classic_type(&self) -> Option<NatType> {
        match (self.mapping, self.filtering) {
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => {
                Some(NatType::FullCone)
            }
            (Mapping::EndpointIndependent, Filtering::AddressDependent) => {
                Some(NatType::RestrictedCone)
            }
            (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                Some(NatType::PortRestrictedCone)
            }
            (_, _) => Some(NatType::Symmetric),
        }
    }
}

/// Named kinds of device, as shorthands over [`NatBehaviour`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    HomeRouter,
    Cgnat,
    EnterpriseFirewall,
    MobileCarrier,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::HomeRouter,
        Preset::Cgnat,
        Preset::EnterpriseFirewall,
        Preset::MobileCarrier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::HomeRouter => "home-router",
            Preset::Cgnat => "cgnat",
            Preset::EnterpriseFirewall => "enterprise-firewall",
            Preset::MobileCarrier => "mobile-carrier",
        }
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownType {
                given: s.into(),
                valid: "home-router, cgnat, enterprise-firewall, mobile-carrier",
            })
    }
}

impl From<Preset> for NatBehaviour {
    fn from(p: Preset) -> Self {
        NatBehaviour::preset(p)
    }
}

/// The four RFC 3489 NAT types, as shorthands over [`NatBehaviour`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatType {
    FullCone,
    RestrictedCone,
    PortRestrictedCone,
    Symmetric,
}

impl NatType {
    pub const ALL: [NatType; 4] = [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ];

    /// The behaviour this name stands for, with a Linux home router's other defaults.
    pub fn behaviour(self) -> NatBehaviour {
        use Filtering as F;
        use Mapping as M;
        match self {
            NatType::FullCone => NatBehaviour::new(M::EndpointIndependent, F::EndpointIndependent),
            NatType::RestrictedCone => {
                NatBehaviour::new(M::EndpointIndependent, F::AddressDependent)
            }
            NatType::PortRestrictedCone => {
                NatBehaviour::new(M::EndpointIndependent, F::AddressAndPortDependent)
            }
            NatType::Symmetric => {
                NatBehaviour::new(M::AddressAndPortDependent, F::AddressAndPortDependent)
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
        }
    }
}

impl From<NatType> for NatBehaviour {
    fn from(t: NatType) -> Self {
        t.behaviour()
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NatType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NatType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::UnknownType {
                given: s.into(),
                valid: "full-cone, restricted-cone, port-restricted-cone, symmetric",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names_round_trip_through_their_behaviour() {
        for t in NatType::ALL {
            assert_eq!(t.behaviour().classic_type(), Some(t));
            assert_eq!(t.as_str().parse::<NatType>().unwrap(), t);
            t.behaviour().validate().unwrap();
        }
    }

    #[test]
    fn contradictory_port_allocation_is_refused_with_a_reason() {
        let b = NatBehaviour::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent)
            .with_ports(PortAllocation::Random);
        let e = b.validate().unwrap_err().to_string();
        assert!(e.contains("endpoint-independent mapping"), "{e}");
    }

    #[test]
    fn every_preset_is_valid() {
        for p in Preset::ALL {
            NatBehaviour::preset(p).validate().unwrap();
            assert_eq!(p.as_str().parse::<Preset>().unwrap(), p);
        }
    }

    /// Firmware's input policies (documented in `docs/scenario-format.md`, under Nat); the
    /// RFC 3489 types stay plain Linux, as the catalogue's routers always were.
    #[test]
    fn presets_carry_their_firmware_input_policy_and_types_none() {
        let input = |p| NatBehaviour::preset(p).input;
        assert_eq!(input(Preset::HomeRouter), InputPolicy::Reject);
        assert_eq!(input(Preset::EnterpriseFirewall), InputPolicy::Drop);
        assert_eq!(input(Preset::Cgnat), InputPolicy::Drop);
        assert_eq!(input(Preset::MobileCarrier), InputPolicy::Drop);
        for t in NatType::ALL {
            assert_eq!(t.behaviour().input, InputPolicy::Accept);
        }
    }

    #[test]
    fn a_port_block_larger_than_the_range_is_refused() {
        let b = NatType::PortRestrictedCone
            .behaviour()
            .with_port_range(1024, 1100)
            .with_port_block(512);
        let e = b.validate().unwrap_err().to_string();
        assert!(e.contains("port-block 512"), "{e}");
    }

    #[test]
    fn unknown_type_names_the_valid_ones() {
        let e = "cone".parse::<NatType>().unwrap_err().to_string();
        assert!(e.contains("port-restricted-cone"), "{e}");
    }
}
