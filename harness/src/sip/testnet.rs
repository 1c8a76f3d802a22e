//! Test-only virtual network for the SIP machines: phones behind
//! `sim_nat::NatModel` routers, a proxy and other phones on the public
//! side, zero-latency delivery on a virtual clock (str0m-style
//! `progress`), and a ladder of every datagram with its fate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use sim_nat::{NatBehaviour, NatModel, Verdict};

use crate::sip::message;
use crate::sip::{Event, Machine, Proxy, Transmit, Ua};

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) enum Node {
    Ua(Box<Ua>),
    Proxy(Box<Proxy>),
}

impl Node {
    fn machine(&mut self) -> &mut dyn Machine<Event = Event> {
        match self {
            Node::Ua(u) => u.as_mut(),
            Node::Proxy(p) => p.as_mut(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Node::Ua(u) => u.poll_timeout(),
            Node::Proxy(p) => p.poll_timeout(),
        }
    }
}

struct Host {
    name: &'static str,
    node: Node,
    addr: SocketAddr,
    /// Index of the router it sits behind.
    router: Option<usize>,
}

struct Router {
    model: NatModel,
    public: Ipv4Addr,
}

/// What happened to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    Delivered(&'static str),
    Dropped(String),
}

/// One line of the ladder: a datagram as it left its sender (after NAT).
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    pub at: Duration,
    pub from: &'static str,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// "INVITE", "100 Trying", "CRLF", or "malformed".
    pub what: String,
    pub fate: Fate,
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fate = match &self.fate {
            Fate::Delivered(to) => format!("-> {to}"),
            Fate::Dropped(why) => format!("DROPPED: {why}"),
        };
        write!(
            f,
            "{:>7.1?} {:<6} {} -> {} {:<22} {fate}",
            self.at, self.from, self.src, self.dst, self.what
        )
    }
}

pub(crate) struct Net {
    pub start: Instant,
    pub now: Instant,
    hosts: Vec<Host>,
    routers: Vec<Router>,
    pub ladder: Vec<Hop>,
    pub events: Vec<(Duration, &'static str, Event)>,
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the test network is IPv4"),
    }
}

fn describe(payload: &[u8]) -> String {
    if message::is_keepalive(payload) {
        return "CRLF".into();
    }
    if let Ok(m) = crate::stun::codec::Message::decode(payload) {
        return format!("STUN {:?}", m.class);
    }
    match message::parse(payload) {
        Ok(rsip::SipMessage::Request(r)) => r.method.to_string(),
        Ok(m) => message::summary(&m),
        Err(e) => format!("malformed ({})", e.kind()),
    }
}

impl Net {
    pub(crate) fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            hosts: Vec::new(),
            routers: Vec::new(),
            ladder: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds a NAT router with public address `public` in front of `lan` (a /24).
    pub(crate) fn router(&mut self, behaviour: NatBehaviour, public: &str, lan: &str) -> usize {
        let public: Ipv4Addr = public.parse().unwrap();
        let model = NatModel::new(behaviour, public, (lan.parse().unwrap(), 24)).unwrap();
        self.routers.push(Router { model, public });
        self.routers.len() - 1
    }

    pub(crate) fn add_ua(&mut self, name: &'static str, ua: Ua, behind: Option<usize>) {
        let addr = ua.config().local;
        self.hosts.push(Host {
            name,
            node: Node::Ua(Box::new(ua)),
            addr,
            router: behind,
        });
    }

    pub(crate) fn add_proxy(&mut self, name: &'static str, proxy: Proxy) {
        let addr = proxy.config().local;
        self.hosts.push(Host {
            name,
            node: Node::Proxy(Box::new(proxy)),
            addr,
            router: None,
        });
    }

    fn host(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Runs `f` on the phone `name` at the current virtual time.
    pub(crate) fn ua<R>(&mut self, name: &str, f: impl FnOnce(&mut Ua, Instant) -> R) -> R {
        let now = self.now;
        // Not flushed here: the next run_* delivers, so it sees the events.
        match &mut self.host(name).node {
            Node::Ua(u) => f(u, now),
            Node::Proxy(_) => panic!("{name} is a proxy"),
        }
    }

    pub(crate) fn proxy(&mut self, name: &str) -> &mut Proxy {
        match &mut self.host(name).node {
            Node::Proxy(p) => p,
            Node::Ua(_) => panic!("{name} is a phone"),
        }
    }

    /// A raw datagram from an outside address straight to a public host.
    pub(crate) fn inject(&mut self, from: SocketAddr, to: &str, payload: &[u8]) {
        let now = self.now;
        let host = self.host(to);
        let (dst, name) = (host.addr, host.name);
        let local = host.addr;
        host.node
            .machine()
            .handle_datagram(local, from, payload, now);
        self.ladder.push(Hop {
            at: now - self.start,
            from: "inject",
            src: from,
            dst,
            what: describe(payload),
            fate: Fate::Delivered(name),
        });
        self.flush();
    }

    fn route(&mut self, from: usize, t: Transmit) {
        let now = self.now;
        // A stream flow is carried like a datagram through the NAT model (its binding stands
        // for the connection's conntrack entry); the receiver is told the transport.
        let transport = self.hosts[from].node.machine().transport_of(&t);
        let mut src = t.source;
        let mut hop = Hop {
            at: now - self.start,
            from: self.hosts[from].name,
            src,
            dst: t.destination,
            what: describe(&t.payload),
            fate: Fate::Dropped(String::new()),
        };
        if let Some(r) = self.hosts[from].router {
            let model = &mut self.routers[r].model;
            if model.poll_timeout().is_some_and(|d| d <= now) {
                model.handle_timeout(now);
            }
            match model.outbound(v4(t.source), v4(t.destination), now) {
                Verdict::Forward { src: s, .. } => src = SocketAddr::V4(s),
                Verdict::Drop { reason } => {
                    hop.fate = Fate::Dropped(reason.to_string());
                    self.ladder.push(hop);
                    return;
                }
            }
            while self.routers[r].model.poll_event().is_some() {}
        }
        hop.src = src;
        let to_router = self
            .routers
            .iter()
            .position(|r| IpAddr::V4(r.public) == t.destination.ip());
        let target = if let Some(r) = to_router {
            let model = &mut self.routers[r].model;
            if model.poll_timeout().is_some_and(|d| d <= now) {
                model.handle_timeout(now);
            }
            let verdict = model.inbound(v4(src), v4(t.destination), now);
            while model.poll_event().is_some() {}
            match verdict {
                Verdict::Forward { dst, .. } => self
                    .hosts
                    .iter()
                    .position(|h| h.router == Some(r) && h.addr == SocketAddr::V4(dst))
                    .ok_or(format!("no host at {dst}")),
                Verdict::Drop { reason } => Err(reason.to_string()),
            }
        } else {
            self.hosts
                .iter()
                .position(|h| h.router.is_none() && h.addr == t.destination)
                .ok_or(format!("no route to {}", t.destination))
        };
        match target {
            Ok(i) => {
                hop.fate = Fate::Delivered(self.hosts[i].name);
                self.ladder.push(hop);
                let local = self.hosts[i].addr;
                self.hosts[i]
                    .node
                    .machine()
                    .handle_stream_message(local, src, transport, &t.payload, now);
            }
            Err(why) => {
                hop.fate = Fate::Dropped(why);
                self.ladder.push(hop);
            }
        }
    }

    /// Delivers datagrams until nobody has anything to send.
    pub(crate) fn flush(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.hosts.len() {
                while let Some(t) = self.hosts[i].node.machine().poll_transmit() {
                    moved = true;
                    self.route(i, t);
                }
                while let Some(e) = self.hosts[i].node.machine().poll_event() {
                    self.events
                        .push((self.now - self.start, self.hosts[i].name, e));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Flushes, then fires the earliest deadline if it is not after
    /// `limit`. False when nothing is due by then.
    fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let Some(next) = self
            .hosts
            .iter()
            .filter_map(|h| h.node.poll_timeout())
            .min()
        else {
            return false;
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        for h in &mut self.hosts {
            if h.node.poll_timeout().is_some_and(|t| t <= now) {
                h.node.machine().handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Runs every deadline within `d`, then parks the clock at its end.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = limit;
    }

    /// Runs until an event matches (true) or `d` of virtual time passes.
    pub(crate) fn run_until(
        &mut self,
        d: Duration,
        done: impl Fn(&'static str, &Event) -> bool,
    ) -> bool {
        let limit = self.now + d;
        let seen = self.events.len();
        loop {
            self.flush();
            if self.events[seen..].iter().any(|(_, n, e)| done(n, e)) {
                return true;
            }
            if !self.step(limit) {
                return false;
            }
        }
    }

    /// Events of one host, with their virtual time.
    pub(crate) fn events_of(&self, name: &str) -> Vec<(Duration, Event)> {
        self.events
            .iter()
            .filter(|(_, n, _)| *n == name)
            .map(|(t, _, e)| (*t, e.clone()))
            .collect()
    }

    /// The ladder as text, for failure messages.
    pub(crate) fn ladder_text(&self) -> String {
        self.ladder
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
