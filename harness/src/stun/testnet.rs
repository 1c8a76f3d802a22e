//! Test-only virtual network: a STUN server, an optional toy NAT and one
//! client-side machine, moved forward on a virtual clock (str0m-style
//! `progress()`), so whole RFC 5780 runs take microseconds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sim_nat::{Filtering, Mapping};

use crate::machine::Machine;
use crate::stun::{Event, ServerConfig, StunServer, Transmit};

pub(crate) const PRIMARY: &str = "198.51.100.1:3478";
pub(crate) const ALT_IP: &str = "198.51.100.2";
pub(crate) const ALT_PORT: u16 = 3479;
pub(crate) const CLIENT: &str = "10.0.0.2:5000";
pub(crate) const CLIENT2: &str = "10.0.0.2:5001";
pub(crate) const CLIENT3: &str = "10.0.0.2:5002";
pub(crate) const PUBLIC_IP: &str = "203.0.113.7";
/// Fixed transaction-id seed: virtual runs are reproducible.
pub(crate) const SEED: u64 = 0x5EED;

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn rfc5780_server_config() -> ServerConfig {
    ServerConfig {
        alternate_ip: Some(ALT_IP.parse().unwrap()),
        alternate_port: Some(ALT_PORT),
        ..ServerConfig::new(addr(PRIMARY))
    }
}

#[derive(Debug)]
struct NatBinding {
    internal: SocketAddr,
    /// What the mapping is keyed on besides the internal endpoint.
    key: Option<SocketAddr>,
    external: SocketAddr,
    contacted: Vec<SocketAddr>,
    last_outbound: Instant,
}

/// A pure RFC 4787 NAT: configurable mapping and filtering, bindings that
/// expire `lifetime` after the last *outbound* packet (inbound traffic
/// does not refresh them, as on many real NATs).
#[derive(Debug)]
pub(crate) struct ToyNat {
    mapping: Mapping,
    filtering: Filtering,
    public_ip: IpAddr,
    lifetime: Duration,
    next_port: u16,
    bindings: Vec<NatBinding>,
}

impl ToyNat {
    pub(crate) fn new(mapping: Mapping, filtering: Filtering) -> Self {
        Self {
            mapping,
            filtering,
            public_ip: PUBLIC_IP.parse().unwrap(),
            lifetime: Duration::from_secs(3600),
            next_port: 40000,
            bindings: Vec::new(),
        }
    }

    pub(crate) fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.bindings
            .retain(|b| now.duration_since(b.last_outbound) < lifetime);
    }

    fn outbound(&mut self, src: SocketAddr, dst: SocketAddr, now: Instant) -> SocketAddr {
        self.expire(now);
        let key = match self.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::AddressDependent => Some(SocketAddr::new(dst.ip(), 0)),
            Mapping::AddressAndPortDependent => Some(dst),
        };
        let idx = match self
            .bindings
            .iter()
            .position(|b| b.internal == src && b.key == key)
        {
            Some(i) => i,
            None => {
                let external = SocketAddr::new(self.public_ip, self.next_port);
                self.next_port += 1;
                self.bindings.push(NatBinding {
                    internal: src,
                    key,
                    external,
                    contacted: Vec::new(),
                    last_outbound: now,
                });
                self.bindings.len() - 1
            }
        };
        let b = &mut self.bindings[idx];
        b.last_outbound = now;
        b.contacted.push(dst);
        b.external
    }

    fn inbound(&mut self, from: SocketAddr, to: SocketAddr, now: Instant) -> Option<SocketAddr> {
        self.expire(now);
        let b = self.bindings.iter().find(|b| b.external == to)?;
        let allowed = match self.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => b.contacted.iter().any(|c| c.ip() == from.ip()),
            Filtering::AddressAndPortDependent => b.contacted.contains(&from),
        };
        allowed.then_some(b.internal)
    }
}

/// Anything on the client side of the network: a STUN machine.
pub(crate) trait Agent: crate::machine::Machine<Event = Event> {}
impl<M: crate::machine::Machine<Event = Event>> Agent for M {}

pub(crate) struct Net {
    pub start: Instant,
    pub now: Instant,
    pub server: StunServer,
    pub nat: Option<ToyNat>,
    /// Drop every client datagram (firewall blocking UDP).
    pub blocked: bool,
    pub client_locals: Vec<SocketAddr>,
    /// Client transmissions with their (virtual) send time.
    pub sent: Vec<(Instant, Transmit)>,
    /// Client-side events with their time.
    pub events: Vec<(Instant, Event)>,
    pub server_events: Vec<Event>,
}

impl Net {
    pub(crate) fn new(server: ServerConfig, nat: Option<ToyNat>) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            server: StunServer::new(server).unwrap(),
            nat,
            blocked: false,
            client_locals: vec![addr(CLIENT), addr(CLIENT2), addr(CLIENT3)],
            sent: Vec::new(),
            events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Delivers datagrams (zero latency) until nobody has anything to send.
    pub(crate) fn flush(&mut self, agent: &mut impl Agent) {
        loop {
            let mut moved = false;
            while let Some(t) = agent.poll_transmit() {
                moved = true;
                self.sent.push((self.now, t.clone()));
                if self.blocked {
                    continue;
                }
                let from = match &mut self.nat {
                    Some(nat) => nat.outbound(t.source, t.destination, self.now),
                    None => t.source,
                };
                if self.server.local_addresses().contains(&t.destination) {
                    self.server
                        .handle_datagram(t.destination, from, &t.payload, self.now);
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                let to = match &mut self.nat {
                    Some(nat) => nat.inbound(t.source, t.destination, self.now),
                    None => self
                        .client_locals
                        .contains(&t.destination)
                        .then_some(t.destination),
                };
                if let Some(local) = to {
                    agent.handle_datagram(local, t.source, &t.payload, self.now);
                }
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            while let Some(e) = agent.poll_event() {
                self.events.push((self.now, e));
            }
            if !moved {
                return;
            }
        }
    }

    /// Flush, then jump the clock to the agent's next deadline and fire it.
    /// Returns false once the agent has nothing left to do.
    pub(crate) fn progress(&mut self, agent: &mut impl Agent) -> bool {
        self.flush(agent);
        let Some(at) = agent.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(at);
        agent.handle_timeout(self.now);
        self.flush(agent);
        true
    }

    /// Runs until `done` matches an event or `limit` of virtual time passes.
    pub(crate) fn run_until(
        &mut self,
        agent: &mut impl Agent,
        limit: Duration,
        done: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let mut seen = self.events.len();
        loop {
            let more = self.progress(agent);
            if let Some((_, e)) = self.events[seen..].iter().find(|(_, e)| done(e)) {
                return Some(e.clone());
            }
            seen = self.events.len();
            if !more || self.now.duration_since(self.start) > limit {
                return None;
            }
        }
    }

    /// Runs every deadline up to `now + duration`, then parks the clock there.
    pub(crate) fn run_for(&mut self, agent: &mut impl Agent, duration: Duration) {
        let deadline = self.now + duration;
        loop {
            self.flush(agent);
            match agent.poll_timeout() {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    agent.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = deadline;
    }

    pub(crate) fn events_matching(&self, f: impl Fn(&Event) -> bool) -> Vec<(Duration, Event)> {
        self.events
            .iter()
            .filter(|(_, e)| f(e))
            .map(|(t, e)| (t.duration_since(self.start), e.clone()))
            .collect()
    }
}
