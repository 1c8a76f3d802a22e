//! Binding client: request/response transactions with RFC 8489 §6.2.1
//! retransmission, response validation, and NAT keep-alives that notice
//! when the NAT re-maps us.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::machine::Machine;
use crate::stun::codec::{Attribute, Class, Message, Method, TransactionId};
use crate::stun::{after, scale, Credentials, Event, StunError, Transmit};

/// Retransmission schedule of RFC 8489 §6.2.1. Configurable because the
/// defaults make one failed transaction last 39.5 s, which tests scale down
/// and lossy-link experiments may want to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// Initial retransmission timeout (RFC: 500 ms); doubles each time.
    pub rto: Duration,
    /// Total transmissions, Rc (RFC: 7).
    pub max_transmissions: u32,
    /// After the last transmission wait `final_wait_factor × rto`, Rm
    /// (RFC: 16).
    pub final_wait_factor: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_transmissions: 7,
            final_wait_factor: 16,
        }
    }
}

impl RetransmitConfig {
    /// How long a transaction that never gets an answer lives (39.5 s with
    /// the defaults). Callers waiting for "no answer" need this number.
    pub fn transaction_timeout(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut interval = self.rto;
        for _ in 1..self.max_transmissions.max(1) {
            total = total.saturating_add(interval);
            interval = scale(interval, 2);
        }
        total.saturating_add(scale(self.rto, self.final_wait_factor))
    }
}

/// What the keep-alive sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveKind {
    /// Binding request: costs a response, but detects re-mapping.
    Request,
    /// Binding indication: refreshes the NAT binding only, no answer, so
    /// re-mapping goes unnoticed (RFC 8489 §6.3.2 / RFC 5626 style).
    Indication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub kind: KeepAliveKind,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub retransmit: RetransmitConfig,
    /// If set, requests carry USERNAME + MESSAGE-INTEGRITY and success
    /// responses without a valid MESSAGE-INTEGRITY are discarded.
    pub credentials: Option<Credentials>,
    pub software: Option<String>,
    pub keepalive: Option<KeepAlive>,
    /// Seeds transaction ids. Sans-IO code takes its randomness from the
    /// caller so tests are reproducible (they set a fixed seed); the
    /// default comes from [`os_seed`]. The generator is not cryptographic:
    /// fine for a test harness, not for an Internet-facing client that must
    /// resist off-path spoofing.
    pub seed: u64,
}

impl Default for ClientConfig {
    /// RFC 8489 retransmissions, no credentials, no keep-alive, transaction
    /// ids seeded from the OS.
    fn default() -> Self {
        Self {
            retransmit: RetransmitConfig::default(),
            credentials: None,
            software: None,
            keepalive: None,
            seed: os_seed(),
        }
    }
}

/// A transaction-id seed that differs between runs, processes and calls.
///
/// Mixes the wall clock's nanoseconds, the process id and a per-process
/// counter (so clients created in the same nanosecond still differ), the
/// way production constructors seed; the machines never call it
/// themselves, they take the seed from their configuration. Not
/// cryptographic, see [`ClientConfig::seed`].
pub fn os_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32) ^ call.rotate_left(48);
    IdGenerator(mixed).next_u64()
}

/// SplitMix64: tiny, deterministic, good enough to make ids unique.
#[derive(Debug, Clone)]
pub(crate) struct IdGenerator(u64);

impl IdGenerator {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn transaction_id(&mut self) -> TransactionId {
        TransactionId::from_draws(|| self.next_u64())
    }
}

/// One Binding request to send, with the RFC 5780 knobs discovery needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestSpec {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub change_request: Option<(bool, bool)>,
    pub response_port: Option<u16>,
}

/// What happened to a transaction, reported by [`Requester`].
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Sent {
        tid: TransactionId,
        server: SocketAddr,
        attempt: u32,
    },
    Success {
        server: SocketAddr,
        mapped: SocketAddr,
        response_origin: Option<SocketAddr>,
        other_address: Option<SocketAddr>,
    },
    Failed {
        server: SocketAddr,
        error: StunError,
    },
    TimedOut {
        tid: TransactionId,
        server: SocketAddr,
    },
    Malformed {
        from: SocketAddr,
        reason: StunError,
    },
}

#[derive(Debug)]
struct Pending {
    tid: TransactionId,
    source: SocketAddr,
    destination: SocketAddr,
    payload: Vec<u8>,
    sent: u32,
    interval: Duration,
    /// Next retransmission, or the final deadline after the last one.
    next: Instant,
}

/// The transaction engine shared by [`BindingClient`] and
/// [`crate::stun::Discovery`]: owns retransmission and response matching so
/// both follow RFC 8489 the same way.
#[derive(Debug)]
pub(crate) struct Requester {
    retransmit: RetransmitConfig,
    credentials: Option<Credentials>,
    software: Option<String>,
    ids: IdGenerator,
    pending: Vec<Pending>,
    transmits: VecDeque<Transmit>,
}

impl Requester {
    pub(crate) fn new(
        retransmit: RetransmitConfig,
        credentials: Option<Credentials>,
        software: Option<String>,
        seed: u64,
    ) -> Self {
        Self {
            retransmit,
            credentials,
            software,
            ids: IdGenerator(seed),
            pending: Vec::new(),
            transmits: VecDeque::new(),
        }
    }

    fn build(
        &mut self,
        class: Class,
        spec: &RequestSpec,
    ) -> Result<(TransactionId, Vec<u8>), StunError> {
        let tid = self.ids.transaction_id();
        let mut msg = Message::new(class, Method::BINDING, tid);
        if let Some(sw) = &self.software {
            msg.attributes.push(Attribute::Software(sw.clone()));
        }
        if let Some((change_ip, change_port)) = spec.change_request {
            msg.attributes.push(Attribute::ChangeRequest {
                change_ip,
                change_port,
            });
        }
        if let Some(port) = spec.response_port {
            msg.attributes.push(Attribute::ResponsePort(port));
        }
        let key = match (&self.credentials, class) {
            (Some(c), Class::Request) => {
                msg.attributes.push(Attribute::Username(c.username.clone()));
                Some(c.password.as_bytes())
            }
            _ => None,
        };
        Ok((tid, msg.encode(key, true)?))
    }

    /// Starts a transaction and queues its first transmission.
    pub(crate) fn start(
        &mut self,
        spec: RequestSpec,
        now: Instant,
    ) -> Result<TransactionId, StunError> {
        let (tid, payload) = self.build(Class::Request, &spec)?;
        self.transmits.push_back(Transmit {
            source: spec.source,
            destination: spec.destination,
            payload: payload.clone(),
        });
        let single = self.retransmit.max_transmissions <= 1;
        self.pending.push(Pending {
            tid,
            source: spec.source,
            destination: spec.destination,
            payload,
            sent: 1,
            interval: self.retransmit.rto,
            next: after(
                now,
                if single {
                    scale(self.retransmit.rto, self.retransmit.final_wait_factor)
                } else {
                    self.retransmit.rto
                },
            ),
        });
        Ok(tid)
    }

    /// Fire-and-forget Binding indication (keep-alive).
    pub(crate) fn indication(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> Result<(), StunError> {
        let spec = RequestSpec {
            source,
            destination,
            change_request: None,
            response_port: None,
        };
        let (_, payload) = self.build(Class::Indication, &spec)?;
        self.transmits.push_back(Transmit {
            source,
            destination,
            payload,
        });
        Ok(())
    }

    pub(crate) fn cancel_all(&mut self) {
        self.pending.clear();
    }

    pub(crate) fn handle_datagram(
        &mut self,
        _local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
        _now: Instant,
    ) -> Option<Outcome> {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(reason) => return Some(Outcome::Malformed { from, reason }),
        };
        if !matches!(msg.class, Class::SuccessResponse | Class::ErrorResponse) {
            return None;
        }
        // Unmatched ids are answers to retransmissions we already settled.
        let idx = self
            .pending
            .iter()
            .position(|p| p.tid == msg.transaction_id)?;
        if let Some(creds) = &self.credentials {
            // Error responses to failed authentication cannot carry
            // MESSAGE-INTEGRITY; accept those so the user sees "401"
            // instead of a timeout. Success responses must be authentic.
            if msg.class == Class::SuccessResponse || msg.has_integrity() {
                if let Err(reason) = msg.verify_integrity(creds.password.as_bytes()) {
                    return Some(Outcome::Malformed { from, reason });
                }
            }
        }
        let pending = self.pending.swap_remove(idx);
        let server = pending.destination;
        if msg.class == Class::ErrorResponse {
            let (code, reason) = msg
                .error_code()
                .map(|(c, r)| (c, r.to_string()))
                .unwrap_or((0, "error response without ERROR-CODE".to_string()));
            let error = StunError::ErrorResponse { code, reason };
            return Some(Outcome::Failed { server, error });
        }
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            let error = StunError::UnknownComprehensionRequired(unknown);
            return Some(Outcome::Failed { server, error });
        }
        match msg.mapped_address() {
            Some(mapped) => Some(Outcome::Success {
                server,
                mapped,
                response_origin: msg.response_origin(),
                other_address: msg.other_address(),
            }),
            None => Some(Outcome::Failed {
                server,
                error: StunError::NoMappedAddress,
            }),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        let cfg = self.retransmit;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if p.next > now {
                i += 1;
                continue;
            }
            if p.sent >= cfg.max_transmissions {
                out.push(Outcome::TimedOut {
                    tid: p.tid,
                    server: p.destination,
                });
                self.pending.swap_remove(i);
                continue;
            }
            p.sent += 1;
            p.interval = scale(p.interval, 2);
            // Schedule from the planned time, not `now`, so a late wake-up
            // does not stretch the whole schedule.
            let wait = if p.sent >= cfg.max_transmissions {
                scale(cfg.rto, cfg.final_wait_factor)
            } else {
                p.interval
            };
            p.next = after(p.next, wait);
            self.transmits.push_back(Transmit {
                source: p.source,
                destination: p.destination,
                payload: p.payload.clone(),
            });
            out.push(Outcome::Sent {
                tid: p.tid,
                server: p.destination,
                attempt: p.sent,
            });
        }
        out
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next).min()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}

/// Learns and keeps watching our public (server-reflexive) address as seen
/// by one STUN server, from one local socket.
#[derive(Debug)]
pub struct BindingClient {
    local: SocketAddr,
    server: SocketAddr,
    keepalive: Option<KeepAlive>,
    requester: Requester,
    events: VecDeque<Event>,
    current: Option<TransactionId>,
    mapped: Option<SocketAddr>,
    next_keepalive: Option<Instant>,
}

impl BindingClient {
    /// `local` is the address of the socket all transmits leave from (may
    /// be unspecified, e.g. `0.0.0.0:5060`, when there is just one socket).
    pub fn new(local: SocketAddr, server: SocketAddr, config: ClientConfig) -> Self {
        Self {
            local,
            server,
            keepalive: config.keepalive,
            requester: Requester::new(
                config.retransmit,
                config.credentials,
                config.software,
                config.seed,
            ),
            events: VecDeque::new(),
            current: None,
            mapped: None,
            next_keepalive: None,
        }
    }

    /// Starts a Binding transaction now, unless one is already running.
    pub fn bind(&mut self, now: Instant) {
        if self.current.is_some() {
            return;
        }
        let spec = RequestSpec {
            source: self.local,
            destination: self.server,
            change_request: None,
            response_port: None,
        };
        match self.requester.start(spec, now) {
            Ok(tid) => {
                self.current = Some(tid);
                self.events.push_back(Event::RequestSent {
                    server: self.server,
                    transaction_id: tid,
                    attempt: 1,
                });
            }
            Err(error) => self.events.push_back(Event::Error {
                server: self.server,
                error,
            }),
        }
    }

    /// The STUN server it asks.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Last mapped address learned, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The socket its requests leave from (a virtual network delivers the answers there).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    fn on_outcome(&mut self, outcome: Outcome, now: Instant) {
        let settled = match outcome {
            Outcome::Sent {
                tid,
                server,
                attempt,
            } => {
                self.events.push_back(Event::RequestSent {
                    server,
                    transaction_id: tid,
                    attempt,
                });
                false
            }
            Outcome::Malformed { from, reason } => {
                self.events.push_back(Event::Malformed { from, reason });
                false
            }
            Outcome::Success {
                server,
                mapped,
                response_origin,
                other_address,
                ..
            } => {
                let previous = self.mapped.replace(mapped);
                self.events.push_back(Event::Mapped {
                    server,
                    mapped,
                    response_origin,
                    other_address,
                });
                if let Some(previous) = previous.filter(|p| *p != mapped) {
                    self.events.push_back(Event::MappingChanged {
                        server,
                        previous,
                        current: mapped,
                    });
                }
                true
            }
            Outcome::Failed { server, error, .. } => {
                self.events.push_back(Event::Error { server, error });
                true
            }
            Outcome::TimedOut { tid, server } => {
                self.events.push_back(Event::Timeout {
                    server,
                    transaction_id: tid,
                });
                true
            }
        };
        if settled {
            self.current = None;
            // Keep refreshing after failures too: the NAT or server may
            // come back, and the harness wants to see when.
            if let (Some(ka), Some(_)) = (self.keepalive, self.mapped) {
                self.next_keepalive = Some(after(now, ka.interval));
            }
        }
    }
}

impl Machine for BindingClient {
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
        if let (Some(at), Some(ka)) = (self.next_keepalive, self.keepalive) {
            if at <= now {
                self.next_keepalive = None;
                match ka.kind {
                    KeepAliveKind::Request => self.bind(now),
                    KeepAliveKind::Indication => {
                        if let Err(error) = self.requester.indication(self.local, self.server) {
                            self.events.push_back(Event::Error {
                                server: self.server,
                                error,
                            });
                        }
                        self.next_keepalive = Some(after(now, ka.interval));
                    }
                }
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
        match (self.requester.poll_timeout(), self.next_keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        vec![self.local]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::testnet::{
        addr, rfc5780_server_config, Net, ToyNat, ALT_IP, ALT_PORT, CLIENT, PRIMARY, SEED,
    };
    use crate::stun::ServerConfig;
    use sim_nat::{Filtering, Mapping};

    /// A client with a fixed seed, so runs are reproducible.
    fn client(config: ClientConfig) -> BindingClient {
        let config = ClientConfig {
            seed: SEED,
            ..config
        };
        BindingClient::new(addr(CLIENT), addr(PRIMARY), config)
    }

    fn eim_nat() -> ToyNat {
        ToyNat::new(
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        )
    }

    #[test]
    fn production_configs_seed_transaction_ids_differently() {
        let ids = |config: ClientConfig| {
            let mut c = BindingClient::new(addr(CLIENT), addr(PRIMARY), config);
            c.bind(Instant::now());
            let t = c.poll_transmit().unwrap();
            Message::decode(&t.payload).unwrap().transaction_id
        };
        let (a, b) = (ClientConfig::default(), ClientConfig::default());
        assert_ne!(a.seed, b.seed);
        assert_ne!(ids(a), ids(b));
        // A fixed seed reproduces the id.
        let fixed = || ClientConfig {
            seed: SEED,
            ..ClientConfig::default()
        };
        assert_eq!(ids(fixed()), ids(fixed()));
    }

    #[test]
    fn binding_client_learns_its_public_mapping_through_a_nat() {
        let mut net = Net::new(rfc5780_server_config(), Some(eim_nat()));
        let mut c = client(ClientConfig::default());
        c.bind(net.now);
        let ev = net.run_until(&mut c, Duration::from_secs(60), |e| {
            matches!(e, Event::Mapped { .. })
        });
        assert_eq!(
            ev,
            Some(Event::Mapped {
                server: addr(PRIMARY),
                mapped: addr("203.0.113.7:40000"),
                response_origin: Some(addr(PRIMARY)),
                other_address: Some(addr(&format!("{ALT_IP}:{ALT_PORT}"))),
            })
        );
        assert_eq!(c.mapped(), Some(addr("203.0.113.7:40000")));
        assert_eq!(
            c.poll_timeout(),
            None,
            "nothing left to do without keep-alives"
        );
    }

    #[test]
    fn retransmissions_follow_rto_doubling_then_time_out_after_rm_times_rto() {
        let mut net = Net::new(rfc5780_server_config(), None);
        net.blocked = true;
        let retransmit = RetransmitConfig {
            rto: Duration::from_millis(100),
            ..RetransmitConfig::default()
        };
        let mut c = client(ClientConfig {
            retransmit,
            ..ClientConfig::default()
        });
        c.bind(net.now);
        let ev = net.run_until(&mut c, Duration::from_secs(60), |e| {
            matches!(e, Event::Timeout { .. })
        });
        assert!(matches!(ev, Some(Event::Timeout { .. })));
        let sent: Vec<u128> = net
            .sent
            .iter()
            .map(|(t, _)| t.duration_since(net.start).as_millis())
            .collect();
        // RTO, 2·RTO, 4·RTO, … between the Rc = 7 transmissions.
        assert_eq!(sent, vec![0, 100, 300, 700, 1500, 3100, 6300]);
        assert!(
            net.sent.windows(2).all(|w| w[0].1 == w[1].1),
            "retransmissions are identical"
        );
        // Then Rm = 16 × RTO of silence before giving up.
        let timeouts = net.events_matching(|e| matches!(e, Event::Timeout { .. }));
        assert_eq!(timeouts[0].0, Duration::from_millis(7900));
        assert_eq!(
            retransmit.transaction_timeout(),
            Duration::from_millis(7900)
        );
        assert_eq!(
            RetransmitConfig::default().transaction_timeout(),
            Duration::from_millis(39500)
        );
        let attempts: Vec<u32> = net
            .events_matching(|e| matches!(e, Event::RequestSent { .. }))
            .into_iter()
            .map(|(_, e)| match e {
                Event::RequestSent { attempt, .. } => attempt,
                _ => 0,
            })
            .collect();
        assert_eq!(attempts, (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn client_with_credentials_authenticates_and_surfaces_401_for_a_wrong_password() {
        let server = ServerConfig {
            credentials: Some(Credentials::new("alice", "secret")),
            ..rfc5780_server_config()
        };
        let mut net = Net::new(server.clone(), None);
        let mut c = client(ClientConfig {
            credentials: Some(Credentials::new("alice", "secret")),
            ..ClientConfig::default()
        });
        c.bind(net.now);
        let ev = net.run_until(&mut c, Duration::from_secs(60), |e| {
            matches!(e, Event::Mapped { .. })
        });
        assert!(matches!(ev, Some(Event::Mapped { mapped, .. }) if mapped == addr(CLIENT)));

        let mut net = Net::new(server, None);
        let mut c = client(ClientConfig {
            credentials: Some(Credentials::new("alice", "guess")),
            ..ClientConfig::default()
        });
        c.bind(net.now);
        let ev = net.run_until(&mut c, Duration::from_secs(60), |e| {
            matches!(e, Event::Error { .. })
        });
        assert!(
            matches!(
                &ev,
                Some(Event::Error {
                    error: StunError::ErrorResponse { code: 401, .. },
                    ..
                })
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn client_with_credentials_discards_unauthenticated_success_responses() {
        let mut net = Net::new(rfc5780_server_config(), None);
        let mut c = client(ClientConfig {
            credentials: Some(Credentials::new("alice", "secret")),
            ..ClientConfig::default()
        });
        c.bind(net.now);
        let ev = net.run_until(&mut c, Duration::from_secs(60), |e| {
            matches!(e, Event::Timeout { .. } | Event::Mapped { .. })
        });
        assert!(matches!(ev, Some(Event::Timeout { .. })));
        let dropped = net.events_matching(|e| {
            matches!(
                e,
                Event::Malformed {
                    reason: StunError::MissingIntegrity,
                    ..
                }
            )
        });
        assert_eq!(dropped.len(), 7, "one per (re)transmission answered");
    }

    #[test]
    fn keepalive_reports_mapping_change_when_the_nat_binding_expires() {
        let nat = eim_nat().with_lifetime(Duration::from_secs(30));
        let mut net = Net::new(rfc5780_server_config(), Some(nat));
        let mut c = client(ClientConfig {
            keepalive: Some(KeepAlive {
                interval: Duration::from_secs(45),
                kind: KeepAliveKind::Request,
            }),
            ..ClientConfig::default()
        });
        c.bind(net.now);
        net.run_for(&mut c, Duration::from_secs(100));
        let changes = net.events_matching(|e| matches!(e, Event::MappingChanged { .. }));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].0, Duration::from_secs(45));
        assert_eq!(
            changes[0].1,
            Event::MappingChanged {
                server: addr(PRIMARY),
                previous: addr("203.0.113.7:40000"),
                current: addr("203.0.113.7:40001"),
            }
        );
    }

    #[test]
    fn keepalive_faster_than_the_nat_timeout_keeps_the_mapping() {
        for kind in [KeepAliveKind::Request, KeepAliveKind::Indication] {
            let nat = eim_nat().with_lifetime(Duration::from_secs(30));
            let mut net = Net::new(rfc5780_server_config(), Some(nat));
            let mut c = client(ClientConfig {
                keepalive: Some(KeepAlive {
                    interval: Duration::from_secs(20),
                    kind,
                }),
                ..ClientConfig::default()
            });
            c.bind(net.now);
            net.run_for(&mut c, Duration::from_secs(200));
            assert!(net
                .events_matching(|e| matches!(e, Event::MappingChanged { .. }))
                .is_empty());
            // A fresh request still finds the original mapping.
            c.bind(net.now);
            net.run_for(&mut c, Duration::from_secs(1));
            assert_eq!(c.mapped(), Some(addr("203.0.113.7:40000")), "{kind:?}");
            if kind == KeepAliveKind::Indication {
                assert_eq!(net.server.stats().indications, 10);
            }
        }
    }
}
