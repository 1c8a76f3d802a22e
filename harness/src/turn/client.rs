//! A TURN client allocation (RFC 8656, UDP) as a sans-IO machine, after firezone snownet's
//! `allocation.rs`: Allocate with the 401 retry, Refresh before expiry, CreatePermission and
//! ChannelBind (kept alive), and data to and from peers through Send/Data indications or
//! ChannelData.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::rtp::SplitMix;
use crate::stun::codec::{Attribute, Class, Message, Method, TransactionId};
use crate::stun::{RetransmitConfig, Transmit};
use crate::turn::{
    lifetime_secs, long_term_key, method_name, ChannelData, Event, TurnError, CHANNELS,
    CHANNEL_LIFETIME, PERMISSION_LIFETIME, UDP,
};

/// Credentials retries per transaction (401 then 438s); more means the password is wrong.
const MAX_AUTH_RETRIES: u32 = 3;

/// Where to allocate and with which credentials.
#[derive(Debug, Clone)]
pub struct TurnClientConfig {
    /// The client's socket.
    pub local: SocketAddr,
    /// The TURN server's listening address.
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    /// LIFETIME to ask for; `None`: the server's default.
    pub lifetime: Option<Duration>,
    pub retransmit: RetransmitConfig,
    /// How often to refresh permissions (RFC: they live 300 s; default 240 s).
    pub permission_refresh: Duration,
    /// How often to refresh channel bindings (RFC: they live 600 s; default 540 s).
    pub channel_refresh: Duration,
    /// Seeds transaction ids.
    pub seed: u64,
}

impl TurnClientConfig {
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            local,
            server,
            username: username.into(),
            password: password.into(),
            lifetime: None,
            retransmit: RetransmitConfig::default(),
            permission_refresh: PERMISSION_LIFETIME - Duration::from_secs(60),
            channel_refresh: CHANNEL_LIFETIME - Duration::from_secs(60),
            seed: crate::stun::os_seed(),
        }
    }

    /// Refresh intervals divided by `divisor`, matching
    /// [`crate::turn::TurnServerConfig::lifetimes_divided_by`].
    pub fn lifetimes_divided_by(mut self, divisor: u32) -> Self {
        let d = divisor.max(1);
        self.permission_refresh /= d;
        self.channel_refresh /= d;
        self.lifetime = self.lifetime.map(|l| l / d);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh { lifetime: Option<u32> },
    CreatePermission { peers: Vec<IpAddr> },
    ChannelBind { channel: u16, peer: SocketAddr },
}

impl Kind {
    fn method(&self) -> Method {
        match self {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh { .. } => Method::REFRESH,
            Kind::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Kind::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    payload: Vec<u8>,
    transmissions: u32,
    rto: Duration,
    next: Instant,
    /// The NONCE it carried, if authenticated.
    nonce: Option<String>,
    auth_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allocation {
    relayed: SocketAddr,
    mapped: SocketAddr,
    lifetime: Duration,
    refresh_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    confirmed: bool,
    refresh_at: Option<Instant>,
}

/// One TURN allocation (see the module docs).
#[derive(Debug)]
pub struct TurnClient {
    config: TurnClientConfig,
    rng: SplitMix,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    allocation: Option<Allocation>,
    allocating: bool,
    pending: BTreeMap<TransactionId, Pending>,
    /// Permissions wanted, with their next refresh once installed.
    permissions: BTreeMap<IpAddr, Option<Instant>>,
    channels: BTreeMap<SocketAddr, Channel>,
    next_channel: u16,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl TurnClient {
    pub fn new(config: TurnClientConfig) -> Self {
        Self {
            rng: SplitMix(config.seed),
            config,
            realm: None,
            nonce: None,
            key: None,
            allocation: None,
            allocating: false,
            pending: BTreeMap::new(),
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_channel: *CHANNELS.start(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The relayed transport address peers send to, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.allocation.map(|a| a.relayed)
    }

    /// The client's server-reflexive address, as the server saw it.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.allocation.map(|a| a.mapped)
    }

    pub fn local(&self) -> SocketAddr {
        self.config.local
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// Whether a permission for `peer` is installed on the server.
    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(Option::is_some)
    }

    /// The confirmed channel to `peer`, if any.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.confirmed)
            .map(|c| c.number)
    }

    /// Starts the allocation (the first Allocate goes without credentials and draws the 401).
    pub fn allocate(&mut self, now: Instant) {
        if self.allocation.is_some() || self.allocating {
            return;
        }
        self.allocating = true;
        self.send_request(Kind::Allocate, now, 0);
    }

    /// Asks for a permission for `peer`'s IP now, or as soon as the allocation exists; it is
    /// then refreshed every `permission_refresh`.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) {
        self.permissions.entry(peer).or_insert(None);
        if self.allocation.is_some() {
            self.send_request(Kind::CreatePermission { peers: vec![peer] }, now, 0);
        }
    }

    /// Binds a channel to `peer` (which also installs its permission); returns the number.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, TurnError> {
        if let Some(c) = self.channels.get(&peer) {
            return Ok(c.number);
        }
        if !CHANNELS.contains(&self.next_channel) {
            return Err(TurnError::Config(
                "all 16384 channel numbers are in use".into(),
            ));
        }
        let number = self.next_channel;
        self.next_channel += 1;
        // The binding installs the peer's permission; it lives half as long, so it is
        // refreshed on its own schedule from then on.
        self.permissions.entry(peer.ip()).or_insert(None);
        self.channels.insert(
            peer,
            Channel {
                number,
                confirmed: false,
                refresh_at: None,
            },
        );
        if self.allocation.is_some() {
            self.send_request(
                Kind::ChannelBind {
                    channel: number,
                    peer,
                },
                now,
                0,
            );
        }
        Ok(number)
    }

    /// Sends `data` to `peer` through the relay: ChannelData once a channel is confirmed, a Send
    /// indication before.
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        _now: Instant,
    ) -> Result<(), TurnError> {
        if self.allocation.is_none() {
            return Err(TurnError::NotAllocated);
        }
        let payload = match self.channel(peer) {
            Some(channel) => ChannelData::encode(channel, data),
            None => {
                let tid = self.tid();
                Message::new(Class::Indication, Method::SEND, tid)
                    .with(Attribute::XorPeerAddress(peer))
                    .with(Attribute::Data(data.to_vec()))
                    .encode(None, true)?
            }
        };
        self.transmits.push_back(Transmit {
            source: self.config.local,
            destination: self.config.server,
            payload,
        });
        Ok(())
    }

    /// Deletes the allocation (Refresh with LIFETIME 0).
    pub fn deallocate(&mut self, now: Instant) {
        if self.allocation.is_some() {
            self.send_request(Kind::Refresh { lifetime: Some(0) }, now, 0);
        }
    }

    fn tid(&mut self) -> TransactionId {
        TransactionId::from_draws(|| self.rng.next_u64())
    }

    fn send_request(&mut self, kind: Kind, now: Instant, auth_retries: u32) {
        let tid = self.tid();
        let mut msg = Message::new(Class::Request, kind.method(), tid);
        match &kind {
            Kind::Allocate => {
                msg.attributes.push(Attribute::RequestedTransport(UDP));
                if let Some(l) = self.config.lifetime {
                    msg.attributes.push(Attribute::Lifetime(lifetime_secs(l)));
                }
            }
            Kind::Refresh { lifetime } => {
                let l = lifetime.or(self.config.lifetime.map(lifetime_secs));
                if let Some(l) = l {
                    msg.attributes.push(Attribute::Lifetime(l));
                }
            }
            Kind::CreatePermission { peers } => {
                for ip in peers {
                    msg.attributes
                        .push(Attribute::XorPeerAddress(SocketAddr::new(*ip, 0)));
                }
            }
            Kind::ChannelBind { channel, peer } => {
                msg.attributes.push(Attribute::ChannelNumber(*channel));
                msg.attributes.push(Attribute::XorPeerAddress(*peer));
            }
        }
        let nonce = self.nonce.clone();
        if let (Some(realm), Some(nonce)) = (&self.realm, &nonce) {
            msg.attributes
                .push(Attribute::Username(self.config.username.clone()));
            msg.attributes.push(Attribute::Realm(realm.clone()));
            msg.attributes.push(Attribute::Nonce(nonce.clone()));
        }
        let key = self.key.filter(|_| nonce.is_some());
        let payload = match msg.encode(key.as_ref().map(|k| k.as_slice()), true) {
            Ok(p) => p,
            Err(e) => {
                return self.fail(kind.method(), e.into());
            }
        };
        self.transmits.push_back(Transmit {
            source: self.config.local,
            destination: self.config.server,
            payload: payload.clone(),
        });
        let rto = self.config.retransmit.rto;
        self.pending.insert(
            tid,
            Pending {
                kind,
                payload,
                transmissions: 1,
                rto,
                next: now + rto,
                nonce,
                auth_retries,
            },
        );
    }

    fn fail(&mut self, method: Method, error: TurnError) {
        if method == Method::ALLOCATE {
            self.allocating = false;
        }
        self.events.push_back(Event::Failed {
            method: method_name(method),
            error,
        });
    }

    fn response(&mut self, msg: Message, now: Instant) {
        let Some(p) = self.pending.get(&msg.transaction_id) else {
            return;
        };
        let authenticated = p.nonce.is_some();
        // A success to an authenticated request must carry our MESSAGE-INTEGRITY; anything
        // else is not from the server we share the key with.
        if msg.class == Class::SuccessResponse && authenticated {
            if let Some(key) = self.key {
                if msg.verify_integrity(&key).is_err() {
                    return;
                }
            }
        }
        let Some(p) = self.pending.remove(&msg.transaction_id) else {
            return;
        };
        let method = p.kind.method();
        if msg.class == Class::ErrorResponse {
            let (code, reason) = msg
                .error_code()
                .map(|(c, r)| (c, r.to_string()))
                .unwrap_or((0, String::new()));
            let realm = msg.realm().map(str::to_string);
            let nonce = msg.nonce().map(str::to_string);
            // RFC 8489 §9.2.5: a 401 to a request that carried credentials means they are
            // wrong; retrying would loop. A 438 only asks for the new NONCE.
            let retry =
                (code == 401 && !authenticated || code == 438) && p.auth_retries < MAX_AUTH_RETRIES;
            if matches!(code, 401 | 438) && retry {
                let (Some(realm), Some(nonce)) = (realm, nonce) else {
                    return self.fail(method, TurnError::NoChallenge);
                };
                self.key = Some(long_term_key(
                    &self.config.username,
                    &realm,
                    &self.config.password,
                ));
                self.realm = Some(realm);
                self.nonce = Some(nonce);
                return self.send_request(p.kind, now, p.auth_retries + 1);
            }
            if method == Method::REFRESH && code == 437 {
                if let Some(a) = self.allocation.take() {
                    self.events.push_back(Event::AllocationEnded {
                        relayed: a.relayed,
                        reason: "the server no longer knows the allocation (437)",
                    });
                }
            }
            return self.fail(
                method,
                TurnError::ErrorResponse {
                    method: method_name(method),
                    code,
                    reason,
                },
            );
        }
        match p.kind {
            Kind::Allocate => self.allocated(&msg, now),
            Kind::Refresh { lifetime } => {
                let granted = msg.lifetime();
                let Some(mut a) = self.allocation else { return };
                if lifetime == Some(0) || granted == Some(0) {
                    self.allocation = None;
                    self.events.push_back(Event::AllocationEnded {
                        relayed: a.relayed,
                        reason: "released (Refresh with LIFETIME 0)",
                    });
                    return;
                }
                if let Some(s) = granted {
                    a.lifetime = Duration::from_secs(u64::from(s));
                }
                a.refresh_at = now + a.lifetime / 2;
                self.allocation = Some(a);
                self.events.push_back(Event::Refreshed {
                    relayed: a.relayed,
                    lifetime: a.lifetime,
                });
            }
            Kind::CreatePermission { peers } => {
                let Some(relayed) = self.relayed() else {
                    return;
                };
                for ip in peers {
                    self.permissions
                        .insert(ip, Some(now + self.config.permission_refresh));
                    self.events
                        .push_back(Event::PermissionCreated { relayed, peer: ip });
                }
            }
            Kind::ChannelBind { channel, peer } => {
                let Some(relayed) = self.relayed() else {
                    return;
                };
                let refresh_at = now + self.config.channel_refresh;
                let permission = self.permissions.entry(peer.ip()).or_insert(None);
                if permission.is_none() {
                    *permission = Some(now + self.config.permission_refresh);
                    self.events.push_back(Event::PermissionCreated {
                        relayed,
                        peer: peer.ip(),
                    });
                }
                if let Some(c) = self.channels.get_mut(&peer) {
                    let first = !c.confirmed;
                    c.confirmed = true;
                    c.refresh_at = Some(refresh_at);
                    if first {
                        self.events.push_back(Event::ChannelBound {
                            relayed,
                            peer,
                            channel,
                        });
                    }
                }
            }
        }
    }

    fn allocated(&mut self, msg: &Message, now: Instant) {
        self.allocating = false;
        let relayed = msg.xor_relayed_address();
        let lifetime = msg
            .lifetime()
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(crate::turn::DEFAULT_ALLOCATION_LIFETIME);
        let (Some(relayed), Some(mapped)) = (relayed, msg.mapped_address()) else {
            return self.fail(
                Method::ALLOCATE,
                TurnError::Config(
                    "Allocate success without XOR-RELAYED-ADDRESS or XOR-MAPPED-ADDRESS".into(),
                ),
            );
        };
        self.allocation = Some(Allocation {
            relayed,
            mapped,
            lifetime,
            refresh_at: now + lifetime / 2,
        });
        self.events.push_back(Event::Allocated {
            client: self.config.local,
            relayed,
            mapped,
            lifetime,
        });
        // What was asked for before the allocation existed.
        let peers: Vec<IpAddr> = self.permissions.keys().copied().collect();
        if !peers.is_empty() {
            self.send_request(Kind::CreatePermission { peers }, now, 0);
        }
        let channels: Vec<(SocketAddr, u16)> =
            self.channels.iter().map(|(p, c)| (*p, c.number)).collect();
        for (peer, channel) in channels {
            self.send_request(Kind::ChannelBind { channel, peer }, now, 0);
        }
    }
}

impl Machine for TurnClient {
    type Event = Event;

    fn handle_datagram(
        &mut self,
        _local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        if from != self.config.server {
            return;
        }
        if ChannelData::is_channel_data(bytes) {
            let Ok(cd) = ChannelData::decode(bytes) else {
                self.events.push_back(Event::Malformed {
                    from,
                    reason: "bad ChannelData".into(),
                });
                return;
            };
            let peer = self
                .channels
                .iter()
                .find(|(_, c)| c.number == cd.channel)
                .map(|(p, _)| *p);
            if let Some(peer) = peer {
                self.events.push_back(Event::Data {
                    peer,
                    data: cd.data.to_vec(),
                });
            }
            return;
        }
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.events.push_back(Event::Malformed {
                    from,
                    reason: e.to_string(),
                });
                return;
            }
        };
        match msg.class {
            Class::Indication if msg.method == Method::DATA => {
                let peer = msg.xor_peer_address();
                let data = msg.data().map(<[u8]>::to_vec);
                if let (Some(peer), Some(data)) = (peer, data) {
                    self.events.push_back(Event::Data { peer, data });
                }
            }
            Class::SuccessResponse | Class::ErrorResponse => self.response(msg, now),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(t, _)| *t)
            .collect();
        let retransmit = self.config.retransmit;
        for tid in due {
            let Some(p) = self.pending.get_mut(&tid) else {
                continue;
            };
            if p.transmissions >= retransmit.max_transmissions.max(1) {
                let method = p.kind.method();
                self.pending.remove(&tid);
                self.fail(
                    method,
                    TurnError::Timeout {
                        method: method_name(method),
                    },
                );
                continue;
            }
            p.transmissions += 1;
            p.rto = p.rto.saturating_mul(2);
            p.next = if p.transmissions >= retransmit.max_transmissions {
                now + retransmit.rto.saturating_mul(retransmit.final_wait_factor)
            } else {
                now + p.rto
            };
            self.transmits.push_back(Transmit {
                source: self.config.local,
                destination: self.config.server,
                payload: p.payload.clone(),
            });
        }
        let busy = |pending: &BTreeMap<TransactionId, Pending>, k: &dyn Fn(&Kind) -> bool| {
            pending.values().any(|p| k(&p.kind))
        };
        if let Some(a) = self.allocation {
            if a.refresh_at <= now && !busy(&self.pending, &|k| matches!(k, Kind::Refresh { .. })) {
                self.send_request(Kind::Refresh { lifetime: None }, now, 0);
            }
            let due: Vec<IpAddr> = self
                .permissions
                .iter()
                .filter(|(_, at)| at.is_some_and(|at| at <= now))
                .map(|(ip, _)| *ip)
                .collect();
            for ip in due {
                self.permissions.insert(ip, None);
                self.send_request(Kind::CreatePermission { peers: vec![ip] }, now, 0);
            }
            let due: Vec<(SocketAddr, u16)> = self
                .channels
                .iter()
                .filter(|(_, c)| c.refresh_at.is_some_and(|at| at <= now))
                .map(|(p, c)| (*p, c.number))
                .collect();
            for (peer, channel) in due {
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.refresh_at = None;
                }
                self.send_request(Kind::ChannelBind { channel, peer }, now, 0);
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let retransmits = self.pending.values().map(|p| p.next);
        let refresh = self.allocation.map(|a| a.refresh_at);
        let permissions = self.permissions.values().flatten().copied();
        let channels = self.channels.values().filter_map(|c| c.refresh_at);
        let timers = retransmits.chain(refresh);
        if self.allocation.is_some() {
            timers.chain(permissions).chain(channels).min()
        } else {
            timers.min()
        }
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        vec![self.config.local]
    }
}
