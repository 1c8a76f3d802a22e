//! A phone's media with ICE, as one sans-IO machine on one socket (its RTP port): it gathers a
//! server-reflexive candidate from a STUN server and a relayed one from a TURN server, runs the
//! [`IceAgent`] once the peer's SDP is known, and streams RTP over the pair the agent selects —
//! straight from the socket, or through the TURN allocation when the selected local candidate
//! is the relayed one. Everything shares the socket, as on a real ICE phone: STUN answers from
//! the STUN server go to the binding client, TURN traffic to the TURN client (whose Data is
//! checks or RTP from the peer), other STUN to the agent, RTP to the stream.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::agent::{IceAgent, IceConfig, IceEvent, Role};
use super::candidate::{Candidate, CandidateKind, IceDescription};
use crate::machine::{Machine, Transmit};
use crate::rtp::{MediaConfig, MediaEvent, MediaStats, MediaStream};
use crate::stun::{BindingClient, ClientConfig};
use crate::turn::{TurnClient, TurnClientConfig};

/// What an [`IceMedia`] is built from.
#[derive(Debug, Clone)]
pub struct IceMediaConfig {
    /// The phone's RTP socket: its host candidate, and the base of its server-reflexive one.
    pub local: SocketAddr,
    /// Its RTCP socket (RTP + 1), checked as ICE component 2 with candidates of its own (a
    /// second TURN allocation for the relayed one): peers such as baresip refuse an offer whose
    /// RTCP address no candidate names (`a=ice-mismatch`), and do not finish ICE until RTCP has
    /// a nominated pair too. `None`: RTP only.
    pub rtcp: Option<SocketAddr>,
    /// Where the server-reflexive candidate comes from.
    pub stun_server: Option<SocketAddr>,
    /// Where the relayed candidate comes from (`local` must be the config's `local`).
    pub turn: Option<TurnClientConfig>,
    pub ice: IceConfig,
    /// The stream; its `local` and `destination` are set here.
    pub media: MediaConfig,
}

/// What it reports.
#[derive(Debug, Clone, PartialEq)]
pub enum IceMediaEvent {
    /// Gathering is over: these are the candidates the SDP offers.
    Gathered(Vec<Candidate>),
    Ice(IceEvent),
    Turn(crate::turn::Event),
    Stun(crate::stun::Event),
    Media(MediaEvent),
}

/// See the module docs.
#[derive(Debug)]
pub struct IceMedia {
    local: SocketAddr,
    rtcp: Option<SocketAddr>,
    stun: Option<BindingClient>,
    stun_done: bool,
    rtcp_stun: Option<BindingClient>,
    rtcp_stun_done: bool,
    turn: Option<TurnClient>,
    turn_done: bool,
    rtcp_turn: Option<TurnClient>,
    rtcp_turn_done: bool,
    rtcp_permitted: BTreeSet<IpAddr>,
    ice: IceConfig,
    agent: Option<IceAgent>,
    pending_remote: Option<(IceDescription, Role)>,
    permitted: BTreeSet<IpAddr>,
    stream: MediaStream,
    /// What each call's stream is made from.
    media: MediaConfig,
    start_requested: bool,
    consent_lost: bool,
    failed: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceMediaEvent>,
}

impl IceMedia {
    pub fn new(config: IceMediaConfig) -> Self {
        let stun = config
            .stun_server
            .map(|s| BindingClient::new(config.local, s, ClientConfig::default()));
        let rtcp_stun = config
            .stun_server
            .zip(config.rtcp)
            .map(|(s, l)| BindingClient::new(l, s, ClientConfig::default()));
        let rtcp_turn = config.turn.clone().zip(config.rtcp).map(|(mut c, local)| {
            c.local = local;
            c.seed = c.seed.wrapping_add(1);
            TurnClient::new(c)
        });
        let media = MediaConfig {
            local: config.local,
            destination: None,
            source: crate::rtp::RtpSource::Symmetric,
            ..config.media
        };
        let stream = MediaStream::new(media.clone());
        IceMedia {
            local: config.local,
            rtcp: config.rtcp,
            stun_done: stun.is_none(),
            stun,
            rtcp_stun_done: rtcp_stun.is_none(),
            rtcp_stun,
            turn_done: config.turn.is_none(),
            rtcp_turn_done: rtcp_turn.is_none(),
            rtcp_turn,
            rtcp_permitted: BTreeSet::new(),
            turn: config.turn.map(TurnClient::new),
            ice: config.ice,
            agent: None,
            pending_remote: None,
            permitted: BTreeSet::new(),
            stream,
            media,
            start_requested: false,
            consent_lost: false,
            failed: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts gathering: a Binding request to the STUN server, an Allocate to the TURN server.
    pub fn gather(&mut self, now: Instant) {
        if let Some(s) = &mut self.stun {
            s.bind(now);
        }
        if let Some(s) = &mut self.rtcp_stun {
            s.bind(now);
        }
        for t in [&mut self.turn, &mut self.rtcp_turn].into_iter().flatten() {
            t.allocate(now);
        }
        self.pump(now);
    }

    /// Our ICE attributes for the SDP, once gathered.
    pub fn description(&self) -> Option<&IceDescription> {
        self.agent.as_ref().map(IceAgent::local_description)
    }

    /// The candidate the SDP's `c=`/`m=` name (RFC 8445 §5.1.4: the one most likely to work
    /// for a peer without ICE): relayed, else server-reflexive, else host.
    pub fn default_candidate(&self) -> Option<SocketAddr> {
        self.default_of(1)
    }

    /// The RTCP candidate the SDP's `a=rtcp` names, chosen the same way.
    pub fn default_rtcp(&self) -> Option<SocketAddr> {
        self.default_of(2)
    }

    fn default_of(&self, component: u8) -> Option<SocketAddr> {
        let d = self.description()?;
        let kinds = [
            CandidateKind::Relayed,
            CandidateKind::ServerReflexive,
            CandidateKind::Host,
        ];
        let of = |k| {
            d.candidates
                .iter()
                .find(|c: &&Candidate| c.kind == k && c.component == component)
        };
        kinds.into_iter().find_map(of).map(|c| c.address)
    }

    pub fn agent(&self) -> Option<&IceAgent> {
        self.agent.as_ref()
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(TurnClient::relayed)
    }

    /// The RTCP socket's relayed address.
    fn rtcp_relayed(&self) -> Option<SocketAddr> {
        self.rtcp_turn.as_ref().and_then(TurnClient::relayed)
    }

    pub fn stats(&self) -> MediaStats {
        self.stream.stats().clone()
    }

    pub fn stream(&self) -> &MediaStream {
        &self.stream
    }

    /// Gathering is over (each server answered or gave up).
    pub fn is_gathered(&self) -> bool {
        self.agent.is_some()
    }

    pub fn consent_lost(&self) -> bool {
        self.consent_lost
    }

    /// Every pair failed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The peer's ICE attributes (from its SDP) and our role: checks start.
    pub fn set_remote(&mut self, remote: IceDescription, role: Role, now: Instant) {
        if self.agent.as_ref().is_some_and(IceAgent::has_remote) {
            self.new_session();
        }
        self.pending_remote = Some((remote, role));
        self.pump(now);
    }

    /// A later call is a new session: a fresh agent (same SDP attributes) and a fresh stream.
    fn new_session(&mut self) {
        if let Some(a) = &self.agent {
            self.agent = Some(a.renewed());
        }
        self.media.seed = self.media.seed.wrapping_add(1);
        self.stream = MediaStream::new(self.media.clone());
        self.start_requested = false;
        self.consent_lost = false;
        self.failed = false;
    }

    /// A check naming another peer ufrag than the running session's comes from the next call's
    /// peer, whose checks can arrive before its SDP has reached us: that starts a new session
    /// (the old agent would judge it by the old call's role).
    fn new_session_if_other_peer(&mut self, bytes: &[u8]) {
        let Some(current) = self.agent.as_ref().and_then(IceAgent::remote_ufrag) else {
            return;
        };
        let Ok(msg) = crate::stun::Message::decode(bytes) else {
            return;
        };
        let theirs = msg.username().and_then(|u| u.split(':').nth(1));
        if msg.class == crate::stun::Class::Request && theirs.is_some_and(|t| t != current) {
            self.new_session();
        }
    }

    /// Streams once a pair is selected.
    pub fn start_media(&mut self, now: Instant) {
        self.start_requested = true;
        self.pump(now);
    }

    fn candidates(&self) -> Vec<Candidate> {
        let mut c = vec![Candidate::gathered(
            CandidateKind::Host,
            self.local,
            self.local,
        )];
        let turn_mapped = self.turn.as_ref().and_then(TurnClient::mapped);
        let mapped = self
            .stun
            .as_ref()
            .and_then(BindingClient::mapped)
            .or(turn_mapped);
        if let Some(m) = mapped.filter(|m| *m != self.local) {
            c.push(Candidate::gathered(
                CandidateKind::ServerReflexive,
                m,
                self.local,
            ));
        }
        if let (Some(r), Some(m)) = (self.relayed(), turn_mapped) {
            let mut relay = Candidate::gathered(CandidateKind::Relayed, r, r);
            relay.related = Some(m);
            c.push(relay);
        }
        if let Some(rtcp) = self.rtcp {
            c.push(Candidate::gathered(CandidateKind::Host, rtcp, rtcp).for_component(2));
            let mapped = self.rtcp_stun.as_ref().and_then(BindingClient::mapped);
            if let Some(m) = mapped.filter(|m| *m != rtcp) {
                let srflx = Candidate::gathered(CandidateKind::ServerReflexive, m, rtcp);
                c.push(srflx.for_component(2));
            }
            let mapped = self.rtcp_turn.as_ref().and_then(TurnClient::mapped);
            if let (Some(r), Some(m)) = (self.rtcp_relayed(), mapped) {
                let mut relay = Candidate::gathered(CandidateKind::Relayed, r, r).for_component(2);
                relay.related = Some(m);
                c.push(relay);
            }
        }
        c
    }

    /// Where a datagram from base `source` really leaves: the host socket, or the TURN
    /// allocation for the relayed base.
    fn send_from(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) {
        if Some(source) == self.relayed() {
            if let Some(t) = &mut self.turn {
                let _ = t.send_to(destination, payload, now);
            }
        } else if Some(source) == self.rtcp_relayed() {
            if let Some(t) = &mut self.rtcp_turn {
                let _ = t.send_to(destination, payload, now);
            }
        } else if Some(source) == self.rtcp {
            self.transmits.push_back(Transmit {
                source,
                destination,
                payload: payload.to_vec(),
            });
        } else {
            self.transmits.push_back(Transmit {
                source: self.local,
                destination,
                payload: payload.to_vec(),
            });
        }
    }

    fn pump(&mut self, now: Instant) {
        self.stun_done |= drain_stun(&mut self.stun, &mut self.events);
        self.rtcp_stun_done |= drain_stun(&mut self.rtcp_stun, &mut self.events);
        let (allocated, relayed_in) = drain_turn(&mut self.turn, &mut self.events);
        self.turn_done |= allocated;
        let (allocated, rtcp_in) = drain_turn(&mut self.rtcp_turn, &mut self.events);
        self.rtcp_turn_done |= allocated;
        for (_, data) in rtcp_in.iter().chain(&relayed_in) {
            if crate::stun::is_stun(data) {
                self.new_session_if_other_peer(data);
            }
        }
        // What reaches the RTCP relay is checks (RTCP itself is not read).
        let rtcp_relayed = self.rtcp_relayed();
        if let (Some(a), Some(r)) = (&mut self.agent, rtcp_relayed) {
            for (peer, data) in rtcp_in.iter().filter(|(_, d)| crate::stun::is_stun(d)) {
                a.handle_stun(r, *peer, data, now);
            }
        }
        let relayed = self.relayed();
        for (peer, data) in relayed_in {
            let checked = match (&mut self.agent, relayed) {
                (Some(a), Some(r)) if crate::stun::is_stun(&data) => {
                    a.handle_stun(r, peer, &data, now)
                }
                _ => false,
            };
            if !checked && crate::rtp::is_rtp(&data) {
                self.stream.handle_datagram(self.local, peer, &data, now);
            }
        }
        let gathered =
            self.stun_done && self.rtcp_stun_done && self.turn_done && self.rtcp_turn_done;
        if self.agent.is_none() && gathered {
            let candidates = self.candidates();
            self.events
                .push_back(IceMediaEvent::Gathered(candidates.clone()));
            self.agent = Some(IceAgent::new(
                self.ice.clone(),
                candidates,
                Role::Controlled,
            ));
        }
        if let (Some(a), Some((remote, role))) = (&mut self.agent, self.pending_remote.take()) {
            a.set_remote(remote, role, now);
        }
        self.permit(now);
        self.drain_agent(now);
        if self.start_requested && !self.consent_lost && self.selected().is_some() {
            self.stream.start(now);
        }
        let route = self.selected().map(|(l, _)| l.base);
        while let Some(t) = self.stream.poll_transmit() {
            // RFC 7675: no consent, no media; and nothing before a pair is selected.
            if let (Some(base), false) = (route, self.consent_lost) {
                self.send_from(base, t.destination, &t.payload, now);
            }
        }
        while let Some(e) = self.stream.poll_event() {
            self.events.push_back(IceMediaEvent::Media(e));
        }
        for s in [&mut self.stun, &mut self.rtcp_stun].into_iter().flatten() {
            while let Some(t) = s.poll_transmit() {
                self.transmits.push_back(t);
            }
        }
        for t in [&mut self.turn, &mut self.rtcp_turn].into_iter().flatten() {
            while let Some(t) = t.poll_transmit() {
                self.transmits.push_back(t);
            }
        }
    }

    /// TURN permissions for every remote address a relayed check may go to (RFC 8656 §9: the
    /// relay drops what comes from, and refuses to send to, an address without one).
    fn permit(&mut self, now: Instant) {
        let Some(a) = &self.agent else { return };
        let ips: Vec<IpAddr> = a.remote_addresses().into_iter().map(|r| r.ip()).collect();
        let turns = [
            (&mut self.turn, &mut self.permitted),
            (&mut self.rtcp_turn, &mut self.rtcp_permitted),
        ];
        for (turn, permitted) in turns {
            let Some(t) = turn.as_mut().filter(|t| t.relayed().is_some()) else {
                continue;
            };
            for ip in &ips {
                if permitted.insert(*ip) {
                    t.create_permission(*ip, now);
                }
            }
        }
    }

    fn drain_agent(&mut self, now: Instant) {
        let Some(a) = &mut self.agent else { return };
        let mut out = Vec::new();
        while let Some(t) = a.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = a.poll_event() {
            events.push(e);
        }
        for t in out {
            self.send_from(t.source, t.destination, &t.payload, now);
        }
        for e in events {
            match &e {
                IceEvent::Selected { remote, .. } if remote.component == 1 => {
                    self.stream.set_destination(remote.address)
                }
                IceEvent::ConsentLost { .. } => self.consent_lost = true,
                IceEvent::Failed => self.failed = true,
                _ => {}
            }
            self.events.push_back(IceMediaEvent::Ice(e));
        }
        for t in [&mut self.turn, &mut self.rtcp_turn].into_iter().flatten() {
            while let Some(tx) = t.poll_transmit() {
                self.transmits.push_back(tx);
            }
        }
    }

    /// The selected pair: (local, remote).
    pub fn selected(&self) -> Option<(Candidate, Candidate)> {
        let p = self.agent.as_ref()?.selected()?;
        Some((p.local.clone(), p.remote.clone()))
    }
}

impl Machine for IceMedia {
    type Event = IceMediaEvent;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        let turn_server = self.turn.as_ref().map(TurnClient::server);
        let stun_server = self.stun_server();
        let rtcp = Some(local) == self.rtcp;
        if Some(from) == turn_server {
            let t = if rtcp {
                &mut self.rtcp_turn
            } else {
                &mut self.turn
            };
            if let Some(t) = t {
                t.handle_datagram(local, from, bytes, now);
            }
        } else if crate::stun::is_stun(bytes) {
            self.new_session_if_other_peer(bytes);
            let agent = self
                .agent
                .as_mut()
                .is_some_and(|a| a.handle_stun(local, from, bytes, now));
            let client = if rtcp {
                &mut self.rtcp_stun
            } else {
                &mut self.stun
            };
            if let (false, true, Some(s)) = (agent, Some(from) == stun_server, client) {
                s.handle_datagram(local, from, bytes, now);
            }
        } else if crate::rtp::is_rtp(bytes) && !rtcp {
            self.stream.handle_datagram(self.local, from, bytes, now);
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        for s in [&mut self.stun, &mut self.rtcp_stun].into_iter().flatten() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        for t in [&mut self.turn, &mut self.rtcp_turn].into_iter().flatten() {
            if t.poll_timeout().is_some_and(|t| t <= now) {
                t.handle_timeout(now);
            }
        }
        if let Some(a) = &mut self.agent {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
        }
        if self.stream.poll_timeout().is_some_and(|t| t <= now) {
            self.stream.handle_timeout(now);
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<IceMediaEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.stun.as_ref().and_then(|s| s.poll_timeout()),
            self.rtcp_stun.as_ref().and_then(|s| s.poll_timeout()),
            self.turn.as_ref().and_then(|t| t.poll_timeout()),
            self.rtcp_turn.as_ref().and_then(|t| t.poll_timeout()),
            self.agent.as_ref().and_then(IceAgent::poll_timeout),
            self.stream.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.local).chain(self.rtcp).collect()
    }
}

impl IceMedia {
    fn stun_server(&self) -> Option<SocketAddr> {
        self.stun.as_ref().map(BindingClient::server)
    }
}

/// Drains a binding client's events into `events`; whether its transaction has settled.
fn drain_stun(client: &mut Option<BindingClient>, events: &mut VecDeque<IceMediaEvent>) -> bool {
    let mut settled = false;
    while let Some(e) = client.as_mut().and_then(BindingClient::poll_event) {
        settled |= matches!(
            e,
            crate::stun::Event::Mapped { .. }
                | crate::stun::Event::Timeout { .. }
                | crate::stun::Event::Error { .. }
        );
        events.push_back(IceMediaEvent::Stun(e));
    }
    settled
}

/// Drains a TURN client's events: what arrived through the relay is returned, the rest goes to
/// `events`; with whether its Allocate has settled.
fn drain_turn(
    client: &mut Option<TurnClient>,
    events: &mut VecDeque<IceMediaEvent>,
) -> (bool, Vec<(SocketAddr, Vec<u8>)>) {
    let (mut settled, mut data) = (false, Vec::new());
    while let Some(e) = client.as_mut().and_then(TurnClient::poll_event) {
        match e {
            crate::turn::Event::Data { peer, data: d } => data.push((peer, d)),
            e => {
                settled |= matches!(
                    e,
                    crate::turn::Event::Allocated { .. }
                        | crate::turn::Event::Failed {
                            method: "Allocate",
                            ..
                        }
                );
                events.push_back(IceMediaEvent::Turn(e));
            }
        }
    }
    (settled, data)
}
