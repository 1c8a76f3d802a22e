//! A sans-IO session border controller on a public host: far-end NAT traversal as deployed SBCs
//! do it, for phones that know nothing about their NAT (no STUN, no TURN, private Contact and SDP).
//!
//! # Design: a signalling proxy with a media relay, not a B2BUA
//!
//! Kamailio + rtpengine fix NATed phones without terminating dialogs, and so does [`Sbc`]: it is
//! the registrar/proxy of [`crate::sip::proxy`] in its [`NatHandling::FAR_END`] mode (REGISTER
//! bound at the observed source address, `received`/`rport` honoured, Contact fixed to the
//! source, Record-Route, 100 Trying, 408 on Timer B, CANCEL) with a thin layer around it and a
//! [`relay::MediaRelay`] beside it. A B2BUA would also hide the topology and survive phones that
//! ignore Record-Route, at the cost of two dialogs per call and their state; none of the field
//! failures here needs that. What the layer adds:
//!
//! - **Contact to itself.** Every Contact the proxy relays (requests and responses, except
//!   REGISTER's) is rewritten to the SBC's SIP address with the fixed target kept in
//!   `;alias=IP~PORT~PROTO` ([`rewrite::set_contact_alias`]); an in-dialog request whose
//!   Request-URI comes back to the SBC with an alias goes to that target
//!   ([`rewrite::handle_ruri_alias`], Kamailio's names). So ACK/BYE/re-INVITE come through the
//!   SBC even from a peer that ignores Record-Route, and reach the phone through its NAT binding.
//! - **NAT pings.** Every [`SbcConfig::ping`] interval, each registered endpoint gets an OPTIONS
//!   (or a CRLF) from the SBC's SIP socket to its observed address: the proxy's own
//!   [`crate::sip::NatPinger`], which the plain proxy has too. On a NAT that refreshes a
//!   binding on inbound packets too (Linux conntrack) either keeps it alive. On a NAT that
//!   refreshes on outbound packets only ([`sim_nat::Refresh::OutboundOnly`]) the ping itself does
//!   not; an OPTIONS does only because the phone *answers* it (its 200 OK is outbound), a CRLF
//!   ping, which nobody answers, never does — then only the phone's own keep-alives help.
//!   `tests/tests/sbc.rs` measures all of these.
//! - **Media relay with latching.** The SDP of an INVITE and of its 18x/2xx answer is rewritten
//!   to a relay port on the SBC (one per leg, [`SbcConfig::relay_ports`]); RTP that reaches a
//!   leg's port leaves from the other leg's port to where that leg's RTP actually comes from,
//!   not to its SDP address (see [`relay`]). Ports go back to the pool on BYE, CANCEL or a
//!   failed INVITE.
//!
//! Like every machine of the harness: no sockets, no clock. Feed
//! `handle_datagram(local, from, bytes, now)` / `handle_timeout(now)` and drain `poll_transmit`,
//! `poll_event` and `poll_timeout`; `local` says which socket (SIP or a relay port) a datagram
//! reached, so the one multi-socket driver ([`crate::machine::driver::MachineTask`]) runs it
//! ([`SbcTask`]). [`kamailio`] runs the real thing in the same place, for interop.

pub mod driver;
pub mod kamailio;
pub mod relay;
pub mod rewrite;
pub mod rtpengine;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rsip::{Method, Request, SipMessage};

use crate::machine::Machine;
use crate::sip::message;
use crate::sip::{Event as SipEvent, NatHandling, Proxy, ProxyConfig, ProxyStats, Timers};
use crate::stun::Transmit;

pub use driver::SbcTask;
pub use relay::{Leg, LegReport, MediaRelay, RelayEvent, RelayStats, SessionReport};

/// How the SBC keeps the NAT bindings of registered endpoints open: the registrar's own pings
/// ([`crate::sip::ping`]), run by the proxy inside.
pub use crate::sip::ping::Ping;

/// Everything that makes one SBC differ from another.
#[derive(Debug, Clone)]
pub struct SbcConfig {
    /// The SIP socket (public address, fixed port: phones are configured with it).
    pub sip: SocketAddr,
    /// The domain it is registrar for.
    pub domain: String,
    pub timers: Timers,
    /// Users that must authenticate (digest), with their passwords.
    pub users: BTreeMap<String, String>,
    pub max_expires: Duration,
    /// NAT pings to registered endpoints; `None`: none.
    pub ping: Option<Ping>,
    /// The media relay's address (usually the SIP address's IP) and its port range: two ports
    /// per call in progress.
    pub relay_ip: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    /// Stream transports it also serves (TCP on the SIP port, TLS on the next), as its proxy
    /// does ([`ProxyConfig::streams`]).
    pub streams: Vec<crate::machine::Transport>,
    pub seed: u64,
}

impl SbcConfig {
    /// An SBC at `sip` for `domain`: RFC timers, no authentication, OPTIONS pings every 15 s,
    /// relay ports 40000–40063 on the SIP address.
    pub fn new(sip: SocketAddr, domain: &str) -> Self {
        Self {
            sip,
            domain: domain.into(),
            timers: Timers::default(),
            users: BTreeMap::new(),
            max_expires: Duration::from_secs(3600),
            ping: Some(Ping::Options(Duration::from_secs(15))),
            relay_ip: sip.ip(),
            relay_ports: 40000..=40063,
            streams: Vec::new(),
            seed: 3,
        }
    }

    /// Requires `user` to authenticate with `password`.
    pub fn with_user(mut self, user: &str, password: &str) -> Self {
        self.users.insert(user.into(), password.into());
        self
    }

    fn proxy(&self) -> ProxyConfig {
        ProxyConfig {
            timers: self.timers,
            users: self.users.clone(),
            max_expires: self.max_expires,
            ping: self.ping,
            streams: self.streams.clone(),
            seed: self.seed,
            ..ProxyConfig::new(self.sip, &self.domain, NatHandling::FAR_END)
        }
    }
}

/// What the SBC reports: the proxy's events and the relay's.
#[derive(Debug, Clone, PartialEq)]
pub enum SbcEvent {
    Sip(SipEvent),
    Relay(RelayEvent),
}

/// Counters of the SBC layer (the proxy's, its NAT pings included, and the relay's are in
/// [`SbcState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbcStats {
    /// Contacts pointed at the SBC.
    pub contacts_rewritten: u64,
    /// Request-URIs restored from an alias.
    pub aliases_resolved: u64,
    /// SDP bodies pointed at the relay.
    pub sdp_rewritten: u64,
}

/// Everything a test or a ladder reads of a running SBC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SbcState {
    pub stats: SbcStats,
    pub proxy: ProxyStats,
    pub relay: RelayStats,
    /// Registered endpoints (user → observed address) the SBC pings.
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// Relayed calls: ended ones, then live ones.
    pub sessions: Vec<SessionReport>,
}

/// Call-IDs remembered as ended, so a late retransmission does not allocate ports again.
const ENDED: usize = 256;

/// The SBC machine (see the module docs).
#[derive(Debug)]
pub struct Sbc {
    config: SbcConfig,
    proxy: Proxy,
    relay: MediaRelay,
    ended: VecDeque<String>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SbcEvent>,
    stats: SbcStats,
}

impl Sbc {
    pub fn new(config: SbcConfig) -> Self {
        Self {
            proxy: Proxy::new(config.proxy()),
            relay: MediaRelay::new(config.relay_ip, config.relay_ports.clone()),
            config,
            ended: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SbcStats::default(),
        }
    }

    pub fn config(&self) -> &SbcConfig {
        &self.config
    }

    /// The registrar/proxy inside (its location service, its counters).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn relay(&self) -> &MediaRelay {
        &self.relay
    }

    /// Whether a transaction is in progress (NAT pings are stateless, so they never are).
    pub fn pending(&self) -> bool {
        self.proxy.pending()
    }

    pub fn stats(&self) -> &SbcStats {
        &self.stats
    }

    /// Changes the NAT pings from the next one on.
    pub fn set_ping(&mut self, ping: Option<Ping>, now: Instant) {
        self.config.ping = ping;
        self.proxy.set_ping(ping, now);
    }

    /// What [`SbcTask`] publishes after every input.
    pub fn snapshot(&self) -> SbcState {
        SbcState {
            stats: self.stats.clone(),
            proxy: self.proxy.stats().clone(),
            relay: self.relay.stats().clone(),
            endpoints: self.proxy.pinger().endpoints().clone(),
            sessions: self.relay.sessions(),
        }
    }

    /// Every socket the SBC uses: SIP first, then the relay ports.
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.config.sip];
        v.extend(self.relay.local_addresses());
        v
    }

    /// What arrives on the SIP socket, before the proxy sees it: alias resolution, SDP to the
    /// relay. The proxy gets the bytes, rewritten or not, or (unchanged) the message as parsed
    /// here, which is what it would parse from those bytes.
    /// SIP from either transport, rewritten where the SBC must, then through its proxy; an
    /// unchanged message is handed over parsed so the proxy does not parse it again.
    fn hand_to_proxy(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        match self.inbound(bytes) {
            Inbound::Bytes(bytes) => self.proxy.handle_datagram(from, &bytes, now),
            Inbound::Parsed(msg) => self.proxy.handle_message(from, msg, now),
        }
        self.drain_proxy();
    }

    fn inbound(&mut self, bytes: &[u8]) -> Inbound {
        if message::is_keepalive(bytes) {
            return Inbound::Bytes(bytes.to_vec());
        }
        // Malformed: the proxy counts and reports it.
        let Ok(msg) = message::parse(bytes) else {
            return Inbound::Bytes(bytes.to_vec());
        };
        // Every rewrite below returns false only when it left the message as it was.
        match msg {
            SipMessage::Request(mut req) => {
                let mut changed = rewrite::handle_ruri_alias(&mut req, self.config.sip);
                if changed {
                    self.stats.aliases_resolved += 1;
                }
                let call_id = message::call_id(&req).unwrap_or_default();
                match req.method {
                    Method::Invite => changed |= self.offer(&mut req, &call_id),
                    Method::Bye | Method::Cancel => self.end(&call_id),
                    _ => {}
                }
                if changed {
                    Inbound::Bytes(message::serialize(req))
                } else {
                    Inbound::Parsed(SipMessage::Request(req))
                }
            }
            SipMessage::Response(mut resp) => {
                let code = message::status(&resp);
                let call_id = message::call_id(&resp).unwrap_or_default();
                let invite = message::cseq(&resp).is_ok_and(|(_, m)| m == Method::Invite);
                let mut changed = false;
                if invite && (101..300).contains(&code) && !resp.body.is_empty() {
                    // The answer comes from the leg the request did not come from.
                    let tag = message::from_tag(&resp).ok().flatten();
                    if let Some(requester) = self.relay.leg_of_request(&call_id, tag.as_deref()) {
                        changed = self.rewrite_body(&mut resp.body, &call_id, requester.other());
                    }
                } else if invite && code >= 300 {
                    self.end(&call_id);
                }
                if changed {
                    Inbound::Bytes(message::serialize(resp))
                } else {
                    Inbound::Parsed(SipMessage::Response(resp))
                }
            }
        }
    }

    /// An INVITE with SDP: a relay pair for the call (the first INVITE's sender is the caller),
    /// and its SDP pointed at the other leg's port.
    fn offer(&mut self, req: &mut Request, call_id: &str) -> bool {
        if req.body.is_empty() || self.ended.iter().any(|c| c == call_id) {
            return false;
        }
        let tag = message::from_tag(req).ok().flatten();
        if self.relay.allocate(call_id, tag.as_deref()).is_none() {
            self.drain_relay();
            return false;
        }
        self.drain_relay();
        let sender = self
            .relay
            .leg_of_request(call_id, tag.as_deref())
            .unwrap_or(Leg::Caller);
        self.rewrite_body(&mut req.body, call_id, sender)
    }

    /// Points an SDP body sent by `sender` at the relay port of the leg that receives it, and
    /// records what it announced for `sender`.
    fn rewrite_body(&mut self, body: &mut Vec<u8>, call_id: &str, sender: Leg) -> bool {
        let Some(session) = self.relay.session(call_id) else {
            return false;
        };
        let Some((new, announced)) = rewrite::rewrite_sdp(body, session.leg(sender.other()).relay)
        else {
            return false;
        };
        self.relay.set_sdp(call_id, sender, announced);
        *body = new;
        self.stats.sdp_rewritten += 1;
        true
    }

    fn end(&mut self, call_id: &str) {
        if self.relay.session(call_id).is_none() {
            return;
        }
        self.relay.release(call_id);
        if self.ended.len() == ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back(call_id.into());
        self.drain_relay();
    }

    /// What the proxy sends, after: Contact pointed at the SBC (all but REGISTER's).
    fn outbound(&mut self, payload: Vec<u8>) -> Vec<u8> {
        if message::is_keepalive(&payload) {
            return payload;
        }
        // Without a Contact header nothing changes: not worth parsing (most pings and answers).
        if !message::may_have_contact(&payload) {
            return payload;
        }
        let Ok(mut msg) = message::parse(&payload) else {
            return payload;
        };
        if message::cseq(&msg).is_ok_and(|(_, m)| m == Method::Register) {
            return payload;
        }
        let sip = self.config.sip;
        let proxy = &self.proxy;
        let transport_of = |a| proxy.transport_to(a);
        let changed = match &mut msg {
            SipMessage::Request(r) => rewrite::set_contact_alias(r, sip, transport_of),
            SipMessage::Response(r) => rewrite::set_contact_alias(r, sip, transport_of),
        };
        if !changed {
            return payload;
        }
        self.stats.contacts_rewritten += 1;
        message::serialize(msg)
    }

    fn drain_proxy(&mut self) {
        while let Some(t) = self.proxy.poll_transmit() {
            let payload = self.outbound(t.payload);
            self.transmits.push_back(Transmit {
                source: t.source,
                destination: t.destination,
                payload,
            });
        }
        while let Some(e) = self.proxy.poll_event() {
            self.events.push_back(SbcEvent::Sip(e));
        }
    }

    fn drain_relay(&mut self) {
        while let Some(t) = self.relay.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(e) = self.relay.poll_event() {
            self.events.push_back(SbcEvent::Relay(e));
        }
    }
}

impl Machine for Sbc {
    type Event = SbcEvent;

    /// A datagram reached the socket bound to `local` (the SIP socket or a relay port).
    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        if local == self.config.sip {
            self.hand_to_proxy(from, bytes, now);
        } else {
            self.relay.handle_datagram(local, from, bytes);
            self.drain_relay();
        }
    }

    /// A framed message on a stream flow (TCP, TLS) to the SIP side.
    fn handle_stream_message(
        &mut self,
        _local: SocketAddr,
        from: SocketAddr,
        transport: crate::machine::Transport,
        bytes: &[u8],
        now: Instant,
    ) {
        self.proxy.note_flow(from, transport);
        self.hand_to_proxy(from, bytes, now);
    }

    /// SIP to a peer known as a stream flow takes it; relayed media is UDP.
    fn transport_of(&self, t: &Transmit) -> crate::machine::Transport {
        if t.source == self.config.sip {
            self.proxy.transport_to(t.destination)
        } else {
            crate::machine::Transport::Udp
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.proxy.handle_timeout(now);
        self.drain_proxy();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<SbcEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.proxy.poll_timeout()
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        self.local_addresses()
    }
}

/// Whether a program that just started serves yet: sends `probe(n, from)` from a socket in `node`
/// to `to` every 100 ms until `answered` accepts a reply (`Ok`), the program exits, or `within`
/// passes (`Err` saying which).
pub(crate) async fn until_answered(
    process: &mut crate::process::Process,
    node: &crate::topology::Node,
    to: std::net::SocketAddr,
    within: std::time::Duration,
    probe: impl Fn(u32, std::net::SocketAddr) -> Vec<u8>,
    answered: impl Fn(&[u8]) -> bool,
) -> std::result::Result<(), String> {
    let sock = node
        .udp_bind(std::net::SocketAddr::new(to.ip(), 0))
        .await
        .map_err(|e| e.to_string())?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    let mut n = 0u32;
    while std::time::Instant::now() < deadline {
        if let Some(status) = process.try_status() {
            return Err(format!("it exited with {status}"));
        }
        n += 1;
        let _ = sock.send_to(&probe(n, me), to).await;
        let wait = std::time::Duration::from_millis(100);
        if let Ok(Ok((len, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            if answered(&buf[..len]) {
                return Ok(());
            }
        }
    }
    Err("no answer".into())
}

/// What the SBC hands its proxy for a datagram on the SIP socket.
enum Inbound {
    /// Bytes to parse: a keep-alive, a malformed datagram, or a message the SBC rewrote.
    Bytes(Vec<u8>),
    /// A message the SBC parsed and left unchanged.
    Parsed(SipMessage),
}
