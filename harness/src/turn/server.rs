//! A TURN server (RFC 8656, UDP) with long-term credentials: Allocate after a 401 challenge,
//! Refresh (lifetime 0 deletes), CreatePermission, ChannelBind, Send/Data indications and
//! ChannelData, with every lifetime on the `now` it is given.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::rtp::SplitMix;
use crate::stun::codec::{attr_type, Attribute, Class, Message, Method, TransactionId};
use crate::stun::Transmit;
use crate::turn::{
    attr, lifetime_secs, long_term_key, method_name, ChannelData, Event, TurnError, CHANNELS,
    CHANNEL_LIFETIME, DEFAULT_ALLOCATION_LIFETIME, MAX_ALLOCATION_LIFETIME, PERMISSION_LIFETIME,
    UDP,
};

/// What the server serves and for how long.
#[derive(Debug, Clone)]
pub struct TurnServerConfig {
    /// The listening address clients send requests to (e.g. 203.0.113.10:3478).
    pub listen: SocketAddr,
    /// Relayed addresses are this IP and a port of `relay_ports`.
    pub relay_ip: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    pub realm: String,
    /// Username → password.
    pub users: BTreeMap<String, String>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// How long a NONCE is accepted before 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    pub software: Option<String>,
    /// Seeds nonces, transaction ids of Data indications and the first relay port tried.
    pub seed: u64,
}

impl TurnServerConfig {
    /// RFC lifetimes, relay ports 49152–65535 on the listening IP, no users yet.
    pub fn new(listen: SocketAddr, realm: impl Into<String>) -> Self {
        Self {
            listen,
            relay_ip: listen.ip(),
            relay_ports: 49152..=65535,
            realm: realm.into(),
            users: BTreeMap::new(),
            default_lifetime: DEFAULT_ALLOCATION_LIFETIME,
            max_lifetime: MAX_ALLOCATION_LIFETIME,
            permission_lifetime: PERMISSION_LIFETIME,
            channel_lifetime: CHANNEL_LIFETIME,
            nonce_lifetime: Duration::from_secs(3600),
            software: Some("harness TURN".into()),
            seed: crate::stun::os_seed(),
        }
    }

    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(username.into(), password.into());
        self
    }

    /// Every lifetime divided by `divisor`, so expiry shows in seconds instead of minutes.
    pub fn lifetimes_divided_by(mut self, divisor: u32) -> Self {
        let d = divisor.max(1);
        self.default_lifetime /= d;
        self.max_lifetime /= d;
        self.permission_lifetime /= d;
        self.channel_lifetime /= d;
        self.nonce_lifetime /= d;
        self
    }
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnServerStats {
    pub requests: u64,
    /// 401s sent to requests without credentials: the normal first round trip.
    pub challenges: u64,
    /// Error responses by code (401 challenges included).
    pub errors: BTreeMap<u16, u64>,
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    pub allocations_expired: u64,
    pub allocations_active: u64,
    pub permissions_created: u64,
    pub permissions_expired: u64,
    pub channels_bound: u64,
    pub channels_expired: u64,
    /// Datagrams relayed client → peer (Send indications and ChannelData).
    pub to_peer: u64,
    pub to_peer_bytes: u64,
    /// Datagrams relayed peer → client (Data indications and ChannelData).
    pub to_client: u64,
    pub to_client_bytes: u64,
    pub to_client_channel_data: u64,
    /// Data dropped for want of a permission (either direction).
    pub dropped_no_permission: u64,
    /// Indications or ChannelData with no allocation or channel behind them.
    pub dropped_no_allocation: u64,
    pub malformed: u64,
    /// Malformed datagrams by reason: a [`crate::stun::StunError`] kind, `channel_data`, or
    /// `send_indication_incomplete`.
    pub malformed_by_reason: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone)]
struct Allocation {
    client: SocketAddr,
    local: SocketAddr,
    relayed: SocketAddr,
    username: String,
    created_by: TransactionId,
    mapped_reply_lifetime: Duration,
    expires: Instant,
    permissions: BTreeMap<IpAddr, Instant>,
    /// Channel → (peer, expiry).
    channels: BTreeMap<u16, (SocketAddr, Instant)>,
}

/// Why the relay refused to pass a datagram on (each has its counter in [`TurnServerStats`]).
#[derive(Debug, Clone, Copy)]
enum Refused {
    NoAllocation,
    NoPermission,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, (p, e))| *p == peer && *e > now)
            .map(|(c, _)| *c)
    }
}

/// An error to answer with.
struct Reject {
    code: u16,
    reason: &'static str,
    /// Add REALM and NONCE (401 and 438).
    challenge: bool,
    key: Option<[u8; 16]>,
}

fn reject(code: u16, reason: &'static str) -> Reject {
    Reject {
        code,
        reason,
        challenge: false,
        key: None,
    }
}

/// The TURN server (see the module docs).
#[derive(Debug)]
pub struct TurnServer {
    config: TurnServerConfig,
    rng: SplitMix,
    /// Keyed by (client address, local address): the 5-tuple of RFC 8656 over UDP.
    allocations: BTreeMap<(SocketAddr, SocketAddr), Allocation>,
    relays: BTreeMap<SocketAddr, (SocketAddr, SocketAddr)>,
    nonces: BTreeMap<String, Instant>,
    next_port: u16,
    stats: TurnServerStats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl TurnServer {
    pub fn new(config: TurnServerConfig) -> Result<Self, TurnError> {
        if config.relay_ports.is_empty() {
            return Err(TurnError::Config("the relay port range is empty".into()));
        }
        if config.relay_ip.is_ipv4() != config.listen.is_ipv4() {
            return Err(TurnError::Config(
                "relay IP and listening address must be of the same family".into(),
            ));
        }
        let mut rng = SplitMix(config.seed);
        let span = u64::from(config.relay_ports.end() - config.relay_ports.start()) + 1;
        let next_port = config.relay_ports.start() + (rng.next_u64() % span) as u16;
        Ok(Self {
            config,
            rng,
            allocations: BTreeMap::new(),
            relays: BTreeMap::new(),
            nonces: BTreeMap::new(),
            next_port,
            stats: TurnServerStats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    pub fn stats(&self) -> &TurnServerStats {
        &self.stats
    }

    pub fn config(&self) -> &TurnServerConfig {
        &self.config
    }

    /// Relayed addresses of the live allocations.
    pub fn relayed_addresses(&self) -> Vec<SocketAddr> {
        self.relays.keys().copied().collect()
    }

    /// The listening address and every relay: the sockets the I/O layer must have.
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.config.listen];
        v.extend(self.relays.keys());
        v
    }

    /// Drops an allocation whose relay socket the I/O layer could not open.
    pub fn release(&mut self, relayed: SocketAddr, now: Instant) {
        if let Some(key) = self.relays.get(&relayed).copied() {
            self.remove(key, "the relay socket could not be opened", now);
        }
    }

    fn tid(&mut self) -> TransactionId {
        TransactionId::from_draws(|| self.rng.next_u64())
    }

    fn nonce(&mut self, now: Instant) -> String {
        let n = format!("{:016x}", self.rng.next_u64());
        self.nonces
            .insert(n.clone(), now + self.config.nonce_lifetime);
        n
    }

    /// Counts and reports a datagram the relay refused to pass on.
    fn dropped(&mut self, why: Refused, from: SocketAddr, to: SocketAddr, reason: &'static str) {
        match why {
            Refused::NoAllocation => self.stats.dropped_no_allocation += 1,
            Refused::NoPermission => self.stats.dropped_no_permission += 1,
        }
        self.events.push_back(Event::Dropped { from, to, reason });
    }

    fn malformed(&mut self, from: SocketAddr, kind: &'static str, reason: String) {
        self.stats.malformed += 1;
        *self.stats.malformed_by_reason.entry(kind).or_default() += 1;
        self.events.push_back(Event::Malformed { from, reason });
    }

    fn client_channel_data(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let cd = match ChannelData::decode(bytes) {
            Ok(cd) => cd,
            Err(e) => return self.malformed(from, "channel_data", e.to_string()),
        };
        let target = self.allocations.get(&(from, local)).and_then(|a| {
            a.channels
                .get(&cd.channel)
                .filter(|(_, e)| *e > now)
                .map(|(peer, _)| (a.relayed, *peer))
        });
        let Some((relayed, peer)) = target else {
            return self.dropped(
                Refused::NoAllocation,
                from,
                local,
                "ChannelData on a channel that is not bound",
            );
        };
        self.relay_to_peer(relayed, peer, cd.data.to_vec());
    }

    fn relay_to_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, data: Vec<u8>) {
        self.stats.to_peer += 1;
        self.stats.to_peer_bytes += data.len() as u64;
        self.transmits.push_back(Transmit {
            source: relayed,
            destination: peer,
            payload: data,
        });
    }

    fn client_message(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.malformed(from, e.kind(), e.to_string()),
        };
        match msg.class {
            Class::Request => {}
            Class::Indication if msg.method == Method::SEND => {
                return self.send_indication(local, from, &msg, now)
            }
            _ => return,
        }
        self.stats.requests += 1;
        let result = match msg.method {
            Method::BINDING => self.binding(local, from, &msg),
            Method::ALLOCATE => self.allocate(local, from, &msg, now),
            Method::REFRESH => self.refresh(local, from, &msg, now),
            Method::CREATE_PERMISSION => self.create_permission(local, from, &msg, now),
            Method::CHANNEL_BIND => self.channel_bind(local, from, &msg, now),
            _ => Err(reject(
                400,
                "Bad Request: not a TURN method this server knows",
            )),
        };
        if let Err(r) = result {
            self.send_error(local, from, &msg, r, now);
        }
    }

    fn send_indication(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) {
        let peer = msg.xor_peer_address();
        let data = msg.data().map(<[u8]>::to_vec);
        let (Some(peer), Some(data)) = (peer, data) else {
            return self.malformed(
                from,
                "send_indication_incomplete",
                "Send indication without XOR-PEER-ADDRESS or DATA".into(),
            );
        };
        let Some(a) = self.allocations.get(&(from, local)) else {
            return self.dropped(
                Refused::NoAllocation,
                from,
                peer,
                "Send indication without an allocation",
            );
        };
        if !a.permitted(peer.ip(), now) {
            return self.dropped(
                Refused::NoPermission,
                from,
                peer,
                "no permission for the peer (CreatePermission first)",
            );
        }
        let relayed = a.relayed;
        self.relay_to_peer(relayed, peer, data);
    }

    fn peer_datagram(
        &mut self,
        key: (SocketAddr, SocketAddr),
        peer: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let Some(a) = self.allocations.get(&key) else {
            return;
        };
        if !a.permitted(peer.ip(), now) {
            return self.dropped(
                Refused::NoPermission,
                peer,
                a.relayed,
                "peer has no permission on this allocation",
            );
        }
        let (client, local) = (a.client, a.local);
        let payload = match a.channel_of(peer, now) {
            Some(channel) => {
                self.stats.to_client_channel_data += 1;
                ChannelData::encode(channel, bytes)
            }
            None => {
                let ind = Message::new(Class::Indication, Method::DATA, self.tid())
                    .with(Attribute::XorPeerAddress(peer))
                    .with(Attribute::Data(bytes.to_vec()));
                let Ok(p) = ind.encode(None, false) else {
                    return;
                };
                p
            }
        };
        self.stats.to_client += 1;
        self.stats.to_client_bytes += bytes.len() as u64;
        self.transmits.push_back(Transmit {
            source: local,
            destination: client,
            payload,
        });
    }

    /// Checks long-term credentials: the username and key, or the error to answer.
    fn authenticate(&mut self, msg: &Message, now: Instant) -> Result<(String, [u8; 16]), Reject> {
        let challenge = |code, reason| Reject {
            code,
            reason,
            challenge: true,
            key: None,
        };
        if !msg.has_integrity() {
            self.stats.challenges += 1;
            return Err(challenge(401, "Unauthenticated"));
        }
        let nonce = msg.nonce();
        let realm = msg.realm();
        let (Some(username), Some(realm), Some(nonce)) = (msg.username(), realm, nonce) else {
            return Err(reject(
                400,
                "Bad Request: USERNAME, REALM and NONCE required",
            ));
        };
        if self.nonces.get(nonce).is_none_or(|e| *e <= now) {
            return Err(challenge(438, "Stale Nonce"));
        }
        if realm != self.config.realm {
            return Err(challenge(401, "Unauthenticated: wrong REALM"));
        }
        let Some(password) = self.config.users.get(username) else {
            return Err(challenge(401, "Unauthenticated: unknown USERNAME"));
        };
        let key = long_term_key(username, realm, password);
        if msg.verify_integrity(&key).is_err() {
            return Err(challenge(
                401,
                "Unauthenticated: MESSAGE-INTEGRITY mismatch",
            ));
        }
        Ok((username.to_string(), key))
    }

    /// Authenticates a request on an existing allocation.
    fn existing(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Result<[u8; 16], Reject> {
        let (username, key) = self.authenticate(msg, now)?;
        let Some(a) = self.allocations.get(&(from, local)) else {
            return Err(Reject {
                key: Some(key),
                ..reject(437, "Allocation Mismatch: no allocation for this 5-tuple")
            });
        };
        if a.username != username {
            return Err(Reject {
                key: Some(key),
                ..reject(441, "Wrong Credentials: not the allocation's USERNAME")
            });
        }
        let unknown = unknown_attributes(msg);
        if !unknown.is_empty() {
            return Err(Reject {
                key: Some(key),
                ..reject(420, "Unknown Attribute")
            });
        }
        Ok(key)
    }

    fn binding(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
    ) -> Result<(), Reject> {
        let resp = msg
            .reply(Class::SuccessResponse)
            .with(Attribute::XorMappedAddress(from));
        self.respond(local, from, resp, None);
        Ok(())
    }

    fn allocate(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let (username, key) = self.authenticate(msg, now)?;
        let with_key = |r: Reject| Reject {
            key: Some(key),
            ..r
        };
        if let Some(a) = self.allocations.get(&(from, local)) {
            // A retransmission of the request that made it gets the same answer (§7.2).
            if a.created_by == msg.transaction_id {
                let (relayed, lifetime) = (a.relayed, a.mapped_reply_lifetime);
                self.allocate_success(local, from, msg, relayed, lifetime, key);
                return Ok(());
            }
            return Err(with_key(reject(
                437,
                "Allocation Mismatch: already allocated",
            )));
        }
        let unknown = unknown_attributes(msg);
        if !unknown.is_empty() {
            return Err(with_key(reject(420, "Unknown Attribute")));
        }
        let transport = msg.requested_transport();
        match transport {
            None => {
                return Err(with_key(reject(
                    400,
                    "Bad Request: REQUESTED-TRANSPORT missing",
                )))
            }
            Some(UDP) => {}
            Some(_) => return Err(with_key(reject(442, "Unsupported Transport Protocol"))),
        }
        let even = msg.get(attr::EVEN_PORT).is_some();
        let Some(port) = self.free_port(even) else {
            return Err(with_key(reject(
                508,
                "Insufficient Capacity: no relay port free",
            )));
        };
        let relayed = SocketAddr::new(self.config.relay_ip, port);
        let lifetime = self.lifetime(msg);
        self.allocations.insert(
            (from, local),
            Allocation {
                client: from,
                local,
                relayed,
                username,
                created_by: msg.transaction_id,
                mapped_reply_lifetime: lifetime,
                expires: now + lifetime,
                permissions: BTreeMap::new(),
                channels: BTreeMap::new(),
            },
        );
        self.relays.insert(relayed, (from, local));
        self.stats.allocations_created += 1;
        self.stats.allocations_active = self.allocations.len() as u64;
        self.events.push_back(Event::Allocated {
            client: from,
            relayed,
            mapped: from,
            lifetime,
        });
        self.allocate_success(local, from, msg, relayed, lifetime, key);
        Ok(())
    }

    fn allocate_success(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        relayed: SocketAddr,
        lifetime: Duration,
        key: [u8; 16],
    ) {
        let resp = msg
            .reply(Class::SuccessResponse)
            .with(Attribute::XorRelayedAddress(relayed))
            .with(Attribute::Lifetime(lifetime_secs(lifetime)))
            .with(Attribute::XorMappedAddress(from));
        self.respond(local, from, resp, Some(key));
    }

    /// The lifetime a request asks for, within the server's bounds (§7.2).
    fn lifetime(&self, msg: &Message) -> Duration {
        let asked = msg.lifetime().map(|s| Duration::from_secs(u64::from(s)));
        asked.unwrap_or(self.config.default_lifetime).clamp(
            self.config.default_lifetime,
            self.config.max_lifetime.max(self.config.default_lifetime),
        )
    }

    fn free_port(&mut self, even: bool) -> Option<u16> {
        let (lo, hi) = (
            *self.config.relay_ports.start(),
            *self.config.relay_ports.end(),
        );
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            let addr = SocketAddr::new(self.config.relay_ip, p);
            if (!even || p.is_multiple_of(2)) && !self.relays.contains_key(&addr) {
                return Some(p);
            }
        }
        None
    }

    fn refresh(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let key = self.existing(local, from, msg, now)?;
        let zero = msg.lifetime() == Some(0);
        let lifetime = if zero {
            Duration::ZERO
        } else {
            self.lifetime(msg)
        };
        let resp = msg
            .reply(Class::SuccessResponse)
            .with(Attribute::Lifetime(if zero {
                0
            } else {
                lifetime_secs(lifetime)
            }));
        self.respond(local, from, resp, Some(key));
        if zero {
            self.stats.allocations_deleted += 1;
            self.remove((from, local), "deleted by Refresh with LIFETIME 0", now);
        } else if let Some(a) = self.allocations.get_mut(&(from, local)) {
            a.expires = now + lifetime;
            self.events.push_back(Event::Refreshed {
                relayed: a.relayed,
                lifetime,
            });
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let key = self.existing(local, from, msg, now)?;
        let peers = msg.xor_peer_addresses();
        if peers.is_empty() {
            return Err(Reject {
                key: Some(key),
                ..reject(400, "Bad Request: XOR-PEER-ADDRESS missing")
            });
        }
        if peers
            .iter()
            .any(|p| p.is_ipv4() != self.config.relay_ip.is_ipv4())
        {
            return Err(Reject {
                key: Some(key),
                ..reject(443, "Peer Address Family Mismatch")
            });
        }
        for p in peers {
            self.permit((from, local), p.ip(), now);
        }
        let resp = msg.reply(Class::SuccessResponse);
        self.respond(local, from, resp, Some(key));
        Ok(())
    }

    fn permit(&mut self, key: (SocketAddr, SocketAddr), ip: IpAddr, now: Instant) {
        let lifetime = self.config.permission_lifetime;
        let Some(a) = self.allocations.get_mut(&key) else {
            return;
        };
        let fresh = !a.permitted(ip, now);
        a.permissions.insert(ip, now + lifetime);
        if fresh {
            self.stats.permissions_created += 1;
        }
        self.events.push_back(Event::PermissionCreated {
            relayed: a.relayed,
            peer: ip,
        });
    }

    fn channel_bind(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let key = self.existing(local, from, msg, now)?;
        let bad = |reason| Reject {
            key: Some(key),
            ..reject(400, reason)
        };
        let channel = msg.channel_number();
        let peer = msg.xor_peer_address();
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return Err(bad(
                "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS required",
            ));
        };
        if !CHANNELS.contains(&channel) {
            return Err(bad("Bad Request: channel number outside 0x4000–0x7FFF"));
        }
        if peer.is_ipv4() != self.config.relay_ip.is_ipv4() {
            return Err(Reject {
                key: Some(key),
                ..reject(443, "Peer Address Family Mismatch")
            });
        }
        let lifetime = self.config.channel_lifetime;
        let Some(a) = self.allocations.get_mut(&(from, local)) else {
            return Err(bad("Bad Request"));
        };
        if let Some((bound, _)) = a.channels.get(&channel) {
            if *bound != peer {
                return Err(bad("Bad Request: channel already bound to another peer"));
            }
        }
        if a.channels
            .iter()
            .any(|(c, (p, _))| *p == peer && *c != channel)
        {
            return Err(bad("Bad Request: peer already bound to another channel"));
        }
        let fresh = !a.channels.contains_key(&channel);
        a.channels.insert(channel, (peer, now + lifetime));
        let relayed = a.relayed;
        if fresh {
            self.stats.channels_bound += 1;
        }
        self.events.push_back(Event::ChannelBound {
            relayed,
            peer,
            channel,
        });
        // §12.2: a channel binding installs or refreshes the peer's permission too.
        self.permit((from, local), peer.ip(), now);
        let resp = msg.reply(Class::SuccessResponse);
        self.respond(local, from, resp, Some(key));
        Ok(())
    }

    fn respond(
        &mut self,
        local: SocketAddr,
        to: SocketAddr,
        mut resp: Message,
        key: Option<[u8; 16]>,
    ) {
        if let Some(sw) = &self.config.software {
            resp.attributes.push(Attribute::Software(sw.clone()));
        }
        let Ok(payload) = resp.encode(key.as_ref().map(|k| k.as_slice()), true) else {
            return;
        };
        self.transmits.push_back(Transmit {
            source: local,
            destination: to,
            payload,
        });
    }

    fn send_error(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        msg: &Message,
        r: Reject,
        now: Instant,
    ) {
        *self.stats.errors.entry(r.code).or_default() += 1;
        self.events.push_back(Event::Rejected {
            from,
            method: method_name(msg.method),
            code: r.code,
        });
        let mut resp = msg.reply(Class::ErrorResponse).with(Attribute::ErrorCode {
            code: r.code,
            reason: r.reason.to_string(),
        });
        if r.code == 420 {
            resp.attributes
                .push(Attribute::UnknownAttributes(unknown_attributes(msg)));
        }
        if r.challenge {
            let nonce = self.nonce(now);
            resp.attributes
                .push(Attribute::Realm(self.config.realm.clone()));
            resp.attributes.push(Attribute::Nonce(nonce));
        }
        self.respond(local, from, resp, r.key);
    }

    fn remove(&mut self, key: (SocketAddr, SocketAddr), reason: &'static str, _now: Instant) {
        if let Some(a) = self.allocations.remove(&key) {
            self.relays.remove(&a.relayed);
            self.stats.allocations_active = self.allocations.len() as u64;
            self.events.push_back(Event::AllocationEnded {
                relayed: a.relayed,
                reason,
            });
        }
    }

    /// Drops whatever has expired by `now`.
    fn expire(&mut self, now: Instant) {
        let dead: Vec<_> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.stats.allocations_expired += 1;
            self.remove(k, "expired: not refreshed in time", now);
        }
        for a in self.allocations.values_mut() {
            let relayed = a.relayed;
            let events = &mut self.events;
            let stats = &mut self.stats;
            a.permissions.retain(|ip, e| {
                let live = *e > now;
                if !live {
                    stats.permissions_expired += 1;
                    events.push_back(Event::PermissionExpired { relayed, peer: *ip });
                }
                live
            });
            a.channels.retain(|c, (peer, e)| {
                let live = *e > now;
                if !live {
                    stats.channels_expired += 1;
                    events.push_back(Event::ChannelExpired {
                        relayed,
                        peer: *peer,
                        channel: *c,
                    });
                }
                live
            });
        }
        self.nonces.retain(|_, e| *e > now);
    }
}

/// Comprehension-required attributes this server does not understand (EVEN-PORT it does).
fn unknown_attributes(msg: &Message) -> Vec<u16> {
    msg.unknown_comprehension_required()
        .into_iter()
        .filter(|t| *t != attr::EVEN_PORT && *t != attr_type::PADDING)
        .collect()
}

impl Machine for TurnServer {
    type Event = Event;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.expire(now);
        if local == self.config.listen {
            if ChannelData::is_channel_data(bytes) {
                self.client_channel_data(local, from, bytes, now);
            } else {
                self.client_message(local, from, bytes, now);
            }
        } else if let Some(key) = self.relays.get(&local).copied() {
            self.peer_datagram(key, from, bytes, now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next expiry of an allocation, permission, channel or nonce.
    fn poll_timeout(&self) -> Option<Instant> {
        let allocations = self.allocations.values().flat_map(|a| {
            std::iter::once(a.expires)
                .chain(a.permissions.values().copied())
                .chain(a.channels.values().map(|(_, e)| *e))
        });
        allocations.chain(self.nonces.values().copied()).min()
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        self.local_addresses()
    }
}
