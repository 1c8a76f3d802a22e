//! RFC 5780 NAT behaviour discovery (mapping §4.3, filtering §4.4, binding
//! lifetime §4.6), with the RFC 3489 "cone" names that SIP people still use.
//!
//! Which socket runs which test matters, because every test leaves state in
//! the NAT that the next one sees:
//!
//! - With [`DiscoveryConfig::filtering_local`] (what RFC 5780 §4.4
//!   recommends, and what the kernel driver always does), the mapping tests
//!   run on `local` and the filtering tests on a fresh socket afterwards, so
//!   neither sees the other's traces.
//! - Without it, everything runs on `local` and the filtering tests go right
//!   after test I, *before* the mapping tests send anything to the alternate
//!   IP: otherwise, behind an endpoint-independent mapping, mapping test II
//!   would open the NAT's filter for the alternate IP and an
//!   address-dependent filter would be misreported as endpoint-independent.
//!   This order has its own trap on Linux: behind an endpoint-independent
//!   filter, the admitted answer to filtering test II becomes a conntrack
//!   flow from the alternate address and port, and mapping test III to that
//!   same endpoint then leaves as its reply, through test I's mapping, so an
//!   address-dependent mapping reads as address-and-port-dependent
//!   (seen with sim-nat's hashed-port ADM + EIF ruleset on kernel 6.18).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sim_nat::{Filtering, Mapping};

use crate::machine::Machine;
use crate::stun::client::{os_seed, Outcome, RequestSpec, Requester, RetransmitConfig};
use crate::stun::{after, Credentials, Event, StunError, Transmit};

/// RFC 3489 classification, still the vocabulary of SIP/VoIP folklore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassicNat {
    OpenInternet,
    FullCone,
    RestrictedCone,
    PortRestrictedCone,
    Symmetric,
    /// No NAT, but a firewall filters unsolicited inbound traffic.
    SymmetricUdpFirewall,
    UdpBlocked,
    /// Some test could not be run (e.g. the server has no alternate IP).
    Unknown,
}

impl ClassicNat {
    pub fn name(self) -> &'static str {
        match self {
            ClassicNat::OpenInternet => "Open Internet",
            ClassicNat::FullCone => "Full Cone",
            ClassicNat::RestrictedCone => "Restricted Cone",
            ClassicNat::PortRestrictedCone => "Port Restricted Cone",
            ClassicNat::Symmetric => "Symmetric",
            ClassicNat::SymmetricUdpFirewall => "Symmetric UDP Firewall",
            ClassicNat::UdpBlocked => "UDP blocked",
            ClassicNat::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for ClassicNat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What discovery found out about the NAT in front of a socket, in
/// [`sim_nat`]'s RFC 4787 terms so it compares directly with what a
/// topology configured. `None` fields mean "could not be determined",
/// which is different from any behaviour; without a NAT the mapping is
/// reported as endpoint-independent (see [`DiscoveredBehaviour::is_behind_nat`]).
///
/// Named apart from [`sim_nat::NatBehaviour`], which is what a NAT *is*
/// configured to do; this is what a client *observed*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredBehaviour {
    pub local: SocketAddr,
    /// Mapped address from test I; `None` if the server never answered.
    pub mapped: Option<SocketAddr>,
    pub mapping: Option<Mapping>,
    pub filtering: Option<Filtering>,
    /// Largest idle time after which the binding still worked (within the
    /// configured resolution, clamped to the configured range).
    pub binding_lifetime: Option<Duration>,
}

impl DiscoveredBehaviour {
    pub fn is_behind_nat(&self) -> bool {
        self.mapped.is_some_and(|m| m != self.local)
    }

    pub fn classic_name(&self) -> ClassicNat {
        if self.mapped.is_none() {
            return ClassicNat::UdpBlocked;
        }
        if !self.is_behind_nat() {
            return match self.filtering {
                Some(Filtering::EndpointIndependent) => ClassicNat::OpenInternet,
                Some(_) => ClassicNat::SymmetricUdpFirewall,
                None => ClassicNat::Unknown,
            };
        }
        match (self.mapping, self.filtering) {
            (Some(Mapping::AddressDependent | Mapping::AddressAndPortDependent), _) => {
                ClassicNat::Symmetric
            }
            (Some(Mapping::EndpointIndependent), Some(Filtering::EndpointIndependent)) => {
                ClassicNat::FullCone
            }
            (Some(Mapping::EndpointIndependent), Some(Filtering::AddressDependent)) => {
                ClassicNat::RestrictedCone
            }
            (Some(Mapping::EndpointIndependent), Some(Filtering::AddressAndPortDependent)) => {
                ClassicNat::PortRestrictedCone
            }
            _ => ClassicNat::Unknown,
        }
    }
}

/// RFC 5780 §4.6 binding-lifetime search. Needs a second local socket so
/// probing does not itself refresh the binding under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimeProbe {
    pub second_local: SocketAddr,
    pub min: Duration,
    pub max: Duration,
    /// Stop when the bracket is this narrow (e.g. 1 s).
    pub resolution: Duration,
}

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Primary address of an RFC 5780 server (two IPs, two ports).
    pub server: SocketAddr,
    /// Local address of the main socket (must be the real interface
    /// address, not 0.0.0.0, for "no NAT" to be recognised).
    pub local: SocketAddr,
    /// A socket used for nothing but the filtering tests, run after the
    /// mapping tests (RFC 5780 §4.4); `None` runs them first on `local`
    /// (see the module docs for why the separate socket is better).
    pub filtering_local: Option<SocketAddr>,
    pub lifetime: Option<LifetimeProbe>,
    /// Also sets how long "no answer" takes to conclude, i.e. how long
    /// each blocked filtering test lasts.
    pub retransmit: RetransmitConfig,
    pub credentials: Option<Credentials>,
    pub software: Option<String>,
    /// Seeds transaction ids, see [`crate::stun::ClientConfig::seed`].
    pub seed: u64,
}

impl DiscoveryConfig {
    /// Discovery from `local` against the RFC 5780 server at `server`, with
    /// RFC 8489 retransmissions and transaction ids seeded from the OS.
    pub fn new(local: SocketAddr, server: SocketAddr) -> Self {
        Self {
            server,
            local,
            filtering_local: None,
            lifetime: None,
            retransmit: RetransmitConfig::default(),
            credentials: None,
            software: None,
            seed: os_seed(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    TestI,
    /// Test I again from the filtering socket (separate-socket order only).
    FilteringI,
    FilteringII,
    FilteringIII,
    MappingII,
    MappingIII {
        m2: SocketAddr,
    },
    /// Refresh (or create) the binding of the main socket before waiting.
    LifetimeRefresh {
        lo: Duration,
        hi: Duration,
    },
    LifetimeWait {
        lo: Duration,
        hi: Duration,
        until: Instant,
        port: u16,
    },
    LifetimeProbe {
        lo: Duration,
        hi: Duration,
    },
    Done,
}

impl Phase {
    fn test_name(self) -> &'static str {
        match self {
            Phase::TestI => "test I (mapping)",
            Phase::FilteringI => "filtering test I (fresh socket)",
            Phase::FilteringII => "filtering test II (change IP and port)",
            Phase::FilteringIII => "filtering test III (change port)",
            Phase::MappingII => "mapping test II (alternate IP)",
            Phase::MappingIII { .. } => "mapping test III (alternate IP and port)",
            Phase::LifetimeRefresh { .. } => "binding lifetime refresh",
            Phase::LifetimeProbe { .. } => "binding lifetime probe",
            _ => "none",
        }
    }
}

/// Runs the RFC 5780 tests one transaction at a time against one server.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    requester: Requester,
    events: VecDeque<Event>,
    phase: Phase,
    behaviour: DiscoveredBehaviour,
    other: Option<SocketAddr>,
    finished: bool,
}

impl Discovery {
    pub fn new(config: DiscoveryConfig) -> Result<Self, StunError> {
        if config.filtering_local == Some(config.local) {
            return Err(StunError::Config(
                "filtering_local must be a socket distinct from local (or None)".into(),
            ));
        }
        if let Some(l) = &config.lifetime {
            if l.min >= l.max || l.resolution.is_zero() {
                return Err(StunError::Config(format!(
                    "binding lifetime search needs min < max and a non-zero resolution (got {:?}..{:?} step {:?})",
                    l.min, l.max, l.resolution
                )));
            }
            if l.second_local == config.local {
                return Err(StunError::Config(
                    "binding lifetime search needs a second local socket distinct from the main one"
                        .into(),
                ));
            }
        }
        Ok(Self {
            requester: Requester::new(
                config.retransmit,
                config.credentials.clone(),
                config.software.clone(),
                config.seed,
            ),
            behaviour: DiscoveredBehaviour {
                local: config.local,
                mapped: None,
                mapping: None,
                filtering: None,
                binding_lifetime: None,
            },
            config,
            events: VecDeque::new(),
            phase: Phase::Idle,
            other: None,
            finished: false,
        })
    }

    /// Sends test I. Calling it again after the start has no effect.
    pub fn start(&mut self, now: Instant) {
        if self.phase == Phase::Idle {
            self.enter(Phase::TestI, now);
        }
    }

    /// The final result, once [`Event::NatDiscovered`] has been emitted.
    pub fn result(&self) -> Option<&DiscoveredBehaviour> {
        self.finished.then_some(&self.behaviour)
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn request(&mut self, spec: RequestSpec, now: Instant) {
        match self.requester.start(spec, now) {
            Ok(tid) => self.events.push_back(Event::RequestSent {
                server: spec.destination,
                transaction_id: tid,
                attempt: 1,
            }),
            Err(error) => {
                self.events.push_back(Event::Error {
                    server: spec.destination,
                    error,
                });
                self.phase = Phase::Done;
            }
        }
    }

    fn spec(&self, destination: SocketAddr) -> RequestSpec {
        RequestSpec {
            source: self.config.local,
            destination,
            change_request: None,
            response_port: None,
        }
    }

    /// Enters `phase` and sends the request it needs.
    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        let server = self.config.server;
        match phase {
            Phase::TestI => self.request(self.spec(server), now),
            Phase::FilteringI => {
                let spec = RequestSpec {
                    source: self.filtering_source(),
                    ..self.spec(server)
                };
                self.request(spec, now);
            }
            Phase::FilteringII | Phase::FilteringIII => {
                let change = Some((phase == Phase::FilteringII, true));
                let spec = RequestSpec {
                    source: self.filtering_source(),
                    change_request: change,
                    ..self.spec(server)
                };
                self.request(spec, now);
            }
            Phase::MappingII => {
                let Some(other) = self.other else { return };
                self.request(self.spec(SocketAddr::new(other.ip(), server.port())), now);
            }
            Phase::MappingIII { .. } => {
                let Some(other) = self.other else { return };
                self.request(self.spec(other), now);
            }
            Phase::LifetimeRefresh { lo, hi } => {
                let Some(probe) = self.config.lifetime else {
                    return;
                };
                if hi.saturating_sub(lo) <= probe.resolution {
                    self.behaviour.binding_lifetime = Some(lo);
                    self.finish();
                } else {
                    self.request(self.spec(server), now);
                }
            }
            Phase::LifetimeProbe { .. } => {}
            Phase::LifetimeWait { .. } | Phase::Idle | Phase::Done => {}
        }
    }

    fn filtering_source(&self) -> SocketAddr {
        self.config.filtering_local.unwrap_or(self.config.local)
    }

    /// Test I answered with an OTHER-ADDRESS: on to mapping (separate
    /// filtering socket) or filtering (one socket).
    fn after_test_one(&mut self, now: Instant) {
        if self.config.filtering_local.is_some() {
            self.start_mapping(now);
        } else {
            self.enter(Phase::FilteringII, now);
        }
    }

    /// Mapping tests II and III, needed only behind a NAT.
    fn start_mapping(&mut self, now: Instant) {
        if self.behaviour.is_behind_nat() && self.other.is_some() {
            self.enter(Phase::MappingII, now);
        } else {
            if !self.behaviour.is_behind_nat() {
                self.behaviour.mapping = Some(Mapping::EndpointIndependent);
            }
            self.after_mapping(now);
        }
    }

    /// Separate socket: mapping, filtering, lifetime. One socket: filtering,
    /// mapping, lifetime. Then done.
    fn after_filtering(&mut self, now: Instant) {
        if self.config.filtering_local.is_some() {
            self.start_lifetime(now);
        } else {
            self.start_mapping(now);
        }
    }

    fn after_mapping(&mut self, now: Instant) {
        let filtering_next = self.config.filtering_local.is_some()
            && self.other.is_some()
            && self.behaviour.filtering.is_none();
        if filtering_next {
            self.enter(Phase::FilteringI, now);
        } else {
            self.start_lifetime(now);
        }
    }

    fn start_lifetime(&mut self, now: Instant) {
        match self.config.lifetime {
            Some(p) => self.enter(
                Phase::LifetimeRefresh {
                    lo: p.min,
                    hi: p.max,
                },
                now,
            ),
            None => self.finish(),
        }
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.finished = true;
        self.requester.cancel_all();
        self.events
            .push_back(Event::NatDiscovered(self.behaviour.clone()));
    }

    /// Feeds one test result (`None` = no answer) into the state machine.
    fn on_result(&mut self, result: Option<(SocketAddr, Option<SocketAddr>)>, now: Instant) {
        let phase = self.phase;
        self.events.push_back(Event::TestFinished {
            test: phase.test_name(),
            mapped: result.map(|r| r.0),
        });
        match phase {
            Phase::TestI => match result {
                None => self.finish(),
                Some((mapped, other)) => {
                    self.behaviour.mapped = Some(mapped);
                    self.other = other;
                    if other.is_none() {
                        self.events.push_back(Event::Error {
                            server: self.config.server,
                            error: StunError::NoOtherAddress,
                        });
                        if !self.behaviour.is_behind_nat() {
                            self.behaviour.mapping = Some(Mapping::EndpointIndependent);
                        }
                        self.after_mapping(now);
                    } else {
                        self.after_test_one(now);
                    }
                }
            },
            Phase::FilteringI => match result {
                Some(_) => self.enter(Phase::FilteringII, now),
                // The server answered `local` but not this socket: filtering
                // stays unknown.
                None => self.after_filtering(now),
            },
            Phase::FilteringII => match result {
                Some(_) => {
                    self.behaviour.filtering = Some(Filtering::EndpointIndependent);
                    self.after_filtering(now);
                }
                None => self.enter(Phase::FilteringIII, now),
            },
            Phase::FilteringIII => {
                self.behaviour.filtering = Some(match result {
                    Some(_) => Filtering::AddressDependent,
                    None => Filtering::AddressAndPortDependent,
                });
                self.after_filtering(now);
            }
            Phase::MappingII => match result {
                Some((m2, _)) if Some(m2) == self.behaviour.mapped => {
                    self.behaviour.mapping = Some(Mapping::EndpointIndependent);
                    self.after_mapping(now);
                }
                Some((m2, _)) => self.enter(Phase::MappingIII { m2 }, now),
                None => self.after_mapping(now),
            },
            Phase::MappingIII { m2 } => {
                self.behaviour.mapping = match result {
                    Some((m3, _)) if m3 == m2 => Some(Mapping::AddressDependent),
                    Some(_) => Some(Mapping::AddressAndPortDependent),
                    None => None,
                };
                self.after_mapping(now);
            }
            Phase::LifetimeRefresh { lo, hi } => match result {
                Some((mapped, _)) => {
                    let t = lo + (hi - lo) / 2;
                    self.phase = Phase::LifetimeWait {
                        lo,
                        hi,
                        until: after(now, t),
                        port: mapped.port(),
                    };
                }
                // The server stopped answering: report what we have.
                None => self.finish(),
            },
            Phase::LifetimeProbe { lo, hi } => {
                let t = lo + (hi - lo) / 2;
                let (lo, hi) = if result.is_some() { (t, hi) } else { (lo, t) };
                self.enter(Phase::LifetimeRefresh { lo, hi }, now);
            }
            Phase::LifetimeWait { .. } | Phase::Idle | Phase::Done => {}
        }
    }

    fn on_outcome(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Sent {
                tid,
                server,
                attempt,
            } => self.events.push_back(Event::RequestSent {
                server,
                transaction_id: tid,
                attempt,
            }),
            Outcome::Malformed { from, reason } => {
                self.events.push_back(Event::Malformed { from, reason })
            }
            Outcome::Success {
                mapped,
                other_address,
                ..
            } => self.on_result(Some((mapped, other_address)), now),
            Outcome::TimedOut { .. } => self.on_result(None, now),
            Outcome::Failed { server, error, .. } => {
                self.events.push_back(Event::Error { server, error });
                if matches!(
                    self.phase,
                    Phase::LifetimeRefresh { .. } | Phase::LifetimeProbe { .. }
                ) {
                    // E.g. 420 for RESPONSE-PORT: the server cannot run the
                    // lifetime test; report the rest.
                    self.finish();
                } else if self.phase == Phase::TestI {
                    // Not "blocked": the server answered, but refused us
                    // (wrong credentials?). No honest result to report.
                    self.phase = Phase::Done;
                    self.requester.cancel_all();
                } else {
                    self.on_result(None, now);
                }
            }
        }
    }
}

impl Machine for Discovery {
    type Event = Event;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        if let Some(outcome) = self.requester.handle_datagram(local, from, bytes, now) {
            self.on_outcome(outcome, now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for outcome in self.requester.handle_timeout(now) {
            self.on_outcome(outcome, now);
        }
        if let Phase::LifetimeWait {
            lo,
            hi,
            until,
            port,
        } = self.phase
        {
            if until <= now {
                let Some(probe) = self.config.lifetime else {
                    return;
                };
                self.phase = Phase::LifetimeProbe { lo, hi };
                // RFC 5780 §4.6: ask from socket Y that the answer go to
                // X's mapped port; it only arrives if X's binding survived.
                let spec = RequestSpec {
                    source: probe.second_local,
                    destination: self.config.server,
                    change_request: None,
                    response_port: Some(port),
                };
                self.request(spec, now);
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.requester.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let wait = match self.phase {
            Phase::LifetimeWait { until, .. } => Some(until),
            _ => None,
        };
        match (self.requester.poll_timeout(), wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // The main socket, the filtering tests' socket and the lifetime probe's second socket.
    fn local_addresses(&self) -> Vec<SocketAddr> {
        let c = &self.config;
        let lifetime = c.lifetime.map(|p| p.second_local);
        [Some(c.local), c.filtering_local, lifetime]
            .into_iter()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::testnet::{
        addr, rfc5780_server_config, Net, ToyNat, CLIENT, CLIENT2, CLIENT3, PRIMARY, SEED,
    };
    use crate::stun::ServerConfig;

    const MAPPINGS: [Mapping; 3] = [
        Mapping::EndpointIndependent,
        Mapping::AddressDependent,
        Mapping::AddressAndPortDependent,
    ];
    const FILTERINGS: [Filtering; 3] = [
        Filtering::EndpointIndependent,
        Filtering::AddressDependent,
        Filtering::AddressAndPortDependent,
    ];

    fn config() -> DiscoveryConfig {
        DiscoveryConfig {
            // Scaled down: "no answer" then takes 79 × 50 ms.
            retransmit: RetransmitConfig {
                rto: Duration::from_millis(50),
                ..RetransmitConfig::default()
            },
            seed: SEED,
            ..DiscoveryConfig::new(addr(CLIENT), addr(PRIMARY))
        }
    }

    fn discover(net: &mut Net, config: DiscoveryConfig) -> DiscoveredBehaviour {
        let mut d = Discovery::new(config).unwrap();
        d.start(net.now);
        let ev = net.run_until(&mut d, Duration::from_secs(3600), |e| {
            matches!(e, Event::NatDiscovered(_))
        });
        let Some(Event::NatDiscovered(result)) = ev else {
            panic!("discovery did not finish: {:?}", net.events);
        };
        assert_eq!(d.result(), Some(&result));
        assert!(d.is_done());
        result
    }

    fn behind(mapping: Mapping, filtering: Filtering) -> DiscoveredBehaviour {
        let mut net = Net::new(
            rfc5780_server_config(),
            Some(ToyNat::new(mapping, filtering)),
        );
        discover(&mut net, config())
    }

    #[test]
    fn discovery_names_every_mapping_and_filtering_combination() {
        for mapping in MAPPINGS {
            for filtering in FILTERINGS {
                let r = behind(mapping, filtering);
                assert_eq!(r.mapping, Some(mapping), "{mapping:?}/{filtering:?}");
                assert_eq!(r.filtering, Some(filtering), "{mapping:?}/{filtering:?}");
                assert_eq!(r.mapped, Some(addr("203.0.113.7:40000")));
                assert!(r.is_behind_nat());
                let expected = match (mapping, filtering) {
                    (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => {
                        ClassicNat::FullCone
                    }
                    (Mapping::EndpointIndependent, Filtering::AddressDependent) => {
                        ClassicNat::RestrictedCone
                    }
                    (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                        ClassicNat::PortRestrictedCone
                    }
                    _ => ClassicNat::Symmetric,
                };
                assert_eq!(r.classic_name(), expected, "{mapping:?}/{filtering:?}");
            }
        }
    }

    #[test]
    fn discovery_with_a_separate_filtering_socket_names_every_combination() {
        for mapping in MAPPINGS {
            for filtering in FILTERINGS {
                let mut net = Net::new(
                    rfc5780_server_config(),
                    Some(ToyNat::new(mapping, filtering)),
                );
                let config = DiscoveryConfig {
                    filtering_local: Some(addr(CLIENT3)),
                    ..config()
                };
                let r = discover(&mut net, config);
                let case = format!("{mapping:?}/{filtering:?}");
                assert_eq!(r.mapping, Some(mapping), "{case}");
                assert_eq!(r.filtering, Some(filtering), "{case}");
                assert_eq!(r.mapped, Some(addr("203.0.113.7:40000")), "{case}");
                // Mapping tests on the main socket first, then every
                // CHANGE-REQUEST from the filtering socket only.
                let sources: Vec<SocketAddr> = net.sent.iter().map(|(_, t)| t.source).collect();
                let first_filtering = sources.iter().position(|s| *s == addr(CLIENT3));
                let first_filtering = first_filtering.expect("filtering socket used");
                assert!(
                    sources[..first_filtering]
                        .iter()
                        .all(|s| *s == addr(CLIENT)),
                    "{case}: {sources:?}"
                );
                assert!(
                    sources[first_filtering..]
                        .iter()
                        .all(|s| *s == addr(CLIENT3)),
                    "{case}: {sources:?}"
                );
            }
        }
    }

    #[test]
    fn discovery_rejects_a_filtering_socket_equal_to_the_main_one() {
        let err = Discovery::new(DiscoveryConfig {
            filtering_local: Some(addr(CLIENT)),
            ..config()
        })
        .unwrap_err();
        assert!(err.to_string().contains("filtering_local"), "{err}");
    }

    #[test]
    fn discovery_reports_apdm_behind_symmetric_nat() {
        let r = behind(
            Mapping::AddressAndPortDependent,
            Filtering::AddressAndPortDependent,
        );
        assert_eq!(r.mapping, Some(Mapping::AddressAndPortDependent));
        assert_eq!(r.classic_name().name(), "Symmetric");
    }

    #[test]
    fn discovery_reports_restricted_cone_for_eim_with_address_dependent_filtering() {
        // The case that a naive test order gets wrong (see module docs).
        let r = behind(Mapping::EndpointIndependent, Filtering::AddressDependent);
        assert_eq!(r.classic_name(), ClassicNat::RestrictedCone);
    }

    #[test]
    fn discovery_reports_open_internet_without_nat() {
        let mut net = Net::new(rfc5780_server_config(), None);
        let r = discover(&mut net, config());
        assert!(!r.is_behind_nat());
        assert_eq!(r.mapped, Some(addr(CLIENT)));
        assert_eq!(r.mapping, Some(Mapping::EndpointIndependent));
        assert_eq!(r.classic_name(), ClassicNat::OpenInternet);
    }

    #[test]
    fn discovery_reports_udp_blocked_when_test_one_gets_no_answer() {
        let mut net = Net::new(rfc5780_server_config(), None);
        net.blocked = true;
        let r = discover(&mut net, config());
        assert_eq!(r.mapped, None);
        assert_eq!(r.classic_name(), ClassicNat::UdpBlocked);
        assert_eq!(
            net.now.duration_since(net.start),
            Duration::from_millis(79 * 50)
        );
    }

    #[test]
    fn discovery_against_a_single_address_server_says_why_it_cannot_classify() {
        let mut net = Net::new(
            ServerConfig::new(addr(PRIMARY)),
            Some(ToyNat::new(
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent,
            )),
        );
        let r = discover(&mut net, config());
        assert_eq!(r.mapping, None);
        assert_eq!(r.classic_name(), ClassicNat::Unknown);
        assert!(!net
            .events_matching(|e| matches!(
                e,
                Event::Error {
                    error: StunError::NoOtherAddress,
                    ..
                }
            ))
            .is_empty());
    }

    #[test]
    fn discovery_finds_the_binding_lifetime_within_the_resolution() {
        for (mapping, filtering, lifetime) in [
            (
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
                37,
            ),
            (
                Mapping::AddressAndPortDependent,
                Filtering::EndpointIndependent,
                90,
            ),
            (
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent,
                5,
            ),
        ] {
            let nat = ToyNat::new(mapping, filtering).with_lifetime(Duration::from_secs(lifetime));
            let mut net = Net::new(rfc5780_server_config(), Some(nat));
            let probe = LifetimeProbe {
                second_local: addr(CLIENT2),
                min: Duration::from_secs(1),
                max: Duration::from_secs(180),
                resolution: Duration::from_secs(1),
            };
            let r = discover(
                &mut net,
                DiscoveryConfig {
                    lifetime: Some(probe),
                    ..config()
                },
            );
            let found = r.binding_lifetime.expect("lifetime measured").as_secs_f64();
            assert!(
                (found - lifetime as f64).abs() <= 1.0,
                "NAT lifetime {lifetime}s, found {found}s"
            );
            assert_eq!(r.mapping, Some(mapping));
            assert_eq!(r.filtering, Some(filtering));
            // Probes went out from the second socket.
            assert!(net.sent.iter().any(|(_, t)| t.source == addr(CLIENT2)));
        }
    }

    #[test]
    fn discovery_rejects_a_lifetime_probe_without_a_second_socket() {
        let err = Discovery::new(DiscoveryConfig {
            lifetime: Some(LifetimeProbe {
                second_local: addr(CLIENT),
                min: Duration::from_secs(1),
                max: Duration::from_secs(10),
                resolution: Duration::from_secs(1),
            }),
            ..config()
        })
        .unwrap_err();
        assert!(err.to_string().contains("second local socket"));
    }
}
