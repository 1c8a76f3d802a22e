//! A sans-IO registrar and stateful proxy (the "SIP server"/SBC of the
//! field guide): location service, digest challenge, INVITE forwarding
//! with Record-Route, 100 Trying, 408 on Timer B, CANCEL, and one switch,
//! [`NatHandling`], that decides whether phones behind NAT can be called.
//!
//! `Literal` is the naive server that produces the field's "100 Trying,
//! then 408, the phone never rings": it stores the Contact as given
//! (private) and forwards the next INVITE there. `FarEnd` is Kamailio's
//! `fix_nated_register` + `fix_nated_contact` + RFC 3581: it stores the
//! REGISTER's source address and answers to the source port when asked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::{self, Header, UntypedHeader};
use rsip::prelude::{HeadersExt, ToTypedHeader};
use rsip::{Method, Request, Response, SipMessage};

use crate::machine::Transport;
use crate::sip::message::{self, status, Via};
use crate::sip::ping::{NatPinger, Ping, PingTarget};
use crate::sip::transaction::{Key, Timers, TransactionEvent, TransactionLayer};
use crate::sip::{after, earliest, Event, Ids, Transmit};
use crate::stun::codec::{is_stun, Attribute, Class, Message as StunMessage, Method as StunMethod};

/// RFC 5626 §4.4.2 / §8: an edge proxy answers a STUN Binding request on its SIP port with the
/// source it saw, so a phone's keep-alive is answered on the same flow. `None` for any other
/// STUN message (it falls through to the malformed-datagram count).
fn stun_keepalive_answer(from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let req = StunMessage::decode(bytes).ok()?;
    if req.class != Class::Request || req.method != StunMethod::BINDING {
        return None;
    }
    req.reply(Class::SuccessResponse)
        .with(Attribute::XorMappedAddress(from))
        .encode(None, true)
        .ok()
}

/// How the server treats addresses written by a UA that may sit behind NAT: two independent
/// behaviours, because real servers mix them (stock Kamailio without nathelper honours `rport`
/// yet stores the private Contact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatHandling {
    /// Where requests for a registered user go, and the Contact forwarded in INVITEs and their
    /// responses.
    pub contact: ContactHandling,
    /// Whether `rport` (RFC 3581) is honoured: `received`/`rport` filled in and responses sent
    /// to the source port. Ignored, responses go to `received` + the Via port (plain RFC 3261
    /// §18.2.2), which a NAT that changed the port does not forward.
    pub honour_rport: bool,
}

/// What the server does with the Contact a UA wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactHandling {
    /// Stores and forwards it as written: a private address behind NAT, where INVITEs die.
    AsWritten,
    /// Stores the REGISTER's source address (Kamailio's `fix_nated_register`) and rewrites the
    /// Contact of INVITEs and their responses to the source address (`fix_nated_contact`).
    Source,
}

impl NatHandling {
    /// Trusts what the UA wrote: Contact as given, `rport` ignored — the naive server of the
    /// field's 408. Behind a port-preserving NAT REGISTER succeeds, yet INVITEs go to the
    /// private Contact and die.
    pub const LITERAL: NatHandling = NatHandling {
        contact: ContactHandling::AsWritten,
        honour_rport: false,
    };
    /// Far-end NAT traversal: the source address for Contact, and `rport` honoured.
    pub const FAR_END: NatHandling = NatHandling {
        contact: ContactHandling::Source,
        honour_rport: true,
    };
}

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub local: SocketAddr,
    /// The domain it is responsible for (Request-URIs `sip:user@domain`
    /// are looked up in the location service). Its own IP also counts.
    pub domain: String,
    /// Digest realm.
    pub realm: String,
    pub nat: NatHandling,
    pub timers: Timers,
    /// Users that must authenticate, with their passwords. Users not
    /// listed register without a challenge.
    pub users: BTreeMap<String, String>,
    /// Upper bound on granted registration lifetimes.
    pub max_expires: Duration,
    /// NAT pings to registered phones ([`crate::sip::ping`]); `None`: none.
    pub ping: Option<Ping>,
    /// Stream transports it also listens on, besides UDP: TCP at `local`, TLS at the next port
    /// ([`listen_address`]). A phone registered
    /// over one is sent its requests down the connection it registered on.
    pub streams: Vec<Transport>,
    pub seed: u64,
}

impl ProxyConfig {
    pub fn new(local: SocketAddr, domain: &str, nat: NatHandling) -> Self {
        Self {
            local,
            domain: domain.into(),
            realm: domain.into(),
            nat,
            timers: Timers::default(),
            users: BTreeMap::new(),
            max_expires: Duration::from_secs(3600),
            ping: None,
            streams: Vec::new(),
            seed: 2,
        }
    }

    /// Requires `user` to authenticate with `password`.
    pub fn with_user(mut self, user: &str, password: &str) -> Self {
        self.users.insert(user.into(), password.into());
        self
    }
}

/// Where a proxy at `local` (its UDP address) listens for `transport`: the same address for TCP,
/// the next port for TLS (5061 for 5060, RFC 3261 §26.2's default for `sips`).
pub fn listen_address(local: SocketAddr, transport: Transport) -> SocketAddr {
    match transport {
        Transport::Tls => SocketAddr::new(local.ip(), local.port().wrapping_add(1)),
        Transport::Udp | Transport::Tcp => local,
    }
}

/// One location-service entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the UA wrote it.
    pub contact: String,
    /// Where requests for this user are sent (per [`NatHandling`]).
    pub target: SocketAddr,
    /// The Request-URI forwarded requests carry.
    pub uri: rsip::Uri,
    pub expires_at: Instant,
}

/// Counters a test or a ladder reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub requests: u64,
    pub responses: u64,
    /// Datagrams dropped as malformed, in total and by [`message::MessageError::kind`].
    pub malformed: u64,
    pub malformed_by_kind: BTreeMap<&'static str, u64>,
    /// The last few malformed-datagram reasons, oldest first (the log).
    pub malformed_log: VecDeque<String>,
    pub challenges: u64,
    pub timeouts: u64,
    /// RFC 5626 STUN keep-alives answered on the SIP port.
    pub stun_answers: u64,
    /// NAT pings sent to registered phones.
    pub pings_sent: u64,
    /// OPTIONS pings answered (any final response counts: the binding carried it).
    pub pongs: u64,
}

/// A request forwarded statefully: the server transaction upstream and
/// the client transaction downstream.
#[derive(Debug)]
struct Forward {
    server: Key,
    method: String,
    call_id: String,
    /// What we sent downstream (for CANCEL).
    request: Request,
    target: SocketAddr,
    provisional: bool,
    final_sent: bool,
    cancel_pending: bool,
}

/// The registrar + proxy machine.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    ids: Ids,
    layer: TransactionLayer,
    location: BTreeMap<String, Binding>,
    pinger: NatPinger,
    nonces: BTreeSet<String>,
    /// By downstream client transaction key.
    forwards: BTreeMap<(String, String), Forward>,
    events: VecDeque<Event>,
    stats: ProxyStats,
}

fn fkey(k: &Key) -> (String, String) {
    (k.branch.clone(), k.method.clone())
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            ids: Ids::new(config.seed),
            layer: TransactionLayer::new(config.local, config.timers),
            // Seeded apart from the proxy's own ids, so pings never share a branch with a
            // forwarded request.
            pinger: NatPinger::new(
                config.local,
                &config.domain,
                config.ping,
                config.seed.wrapping_add(1),
            ),
            config,
            location: BTreeMap::new(),
            nonces: BTreeSet::new(),
            forwards: BTreeMap::new(),
            events: VecDeque::new(),
            stats: ProxyStats::default(),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Whether a transaction is in progress (see [`TransactionLayer::pending`]).
    pub fn pending(&self) -> bool {
        self.layer.pending()
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// The current binding of `user`, if registered and not expired.
    pub fn binding(&self, user: &str, now: Instant) -> Option<&Binding> {
        self.location.get(user).filter(|b| b.expires_at > now)
    }

    /// The NAT pinger inside (its endpoints, its counters).
    pub fn pinger(&self) -> &NatPinger {
        &self.pinger
    }

    /// Changes the NAT pings from the next one on.
    pub fn set_ping(&mut self, ping: Option<Ping>, now: Instant) {
        self.config.ping = ping;
        self.pinger.set_ping(ping, now);
    }

    pub fn set_nat_handling(&mut self, nat: NatHandling) {
        self.config.nat = nat;
    }

    fn fixes_contact(&self) -> bool {
        self.config.nat.contact == ContactHandling::Source
    }

    /// The transport of what goes to `dest`: the stream flow a message came from, else UDP.
    pub fn transport_to(&self, dest: SocketAddr) -> Transport {
        self.layer.transport_to(dest)
    }

    /// The next message from `from` came over `transport` (a stream flow's, framed by the
    /// driver): what goes back to `from` takes the same flow (RFC 3261 §18.2.2: responses down
    /// the connection the request came on; RFC 5923/5626: requests to a phone down the
    /// connection it registered on).
    pub fn note_flow(&mut self, from: SocketAddr, transport: Transport) {
        self.layer.note_flow(from, transport);
    }

    /// A message (or keep-alive) from `from`: a datagram, or a stream flow's message after
    /// [`Self::note_flow`].
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if message::is_keepalive(bytes) {
            if bytes.len() >= 4 {
                // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                self.layer.send_raw(b"\r\n".to_vec(), from);
            }
            return;
        }
        if is_stun(bytes) {
            if let Some(answer) = stun_keepalive_answer(from, bytes) {
                self.stats.stun_answers += 1;
                self.layer.send_raw(answer, from);
                return;
            }
        }
        match message::parse(bytes) {
            Err(error) => {
                self.stats.malformed += 1;
                *self
                    .stats
                    .malformed_by_kind
                    .entry(error.kind())
                    .or_default() += 1;
                if self.stats.malformed_log.len() == 16 {
                    self.stats.malformed_log.pop_front();
                }
                self.stats
                    .malformed_log
                    .push_back(format!("from {from}: {error}"));
                self.events
                    .push_back(Event::MalformedDatagram { from, error });
            }
            Ok(msg) => {
                self.handle_message(from, msg, now);
                return;
            }
        }
        self.drain_layer(now);
    }

    /// A datagram from `from` that [`message::parse`] already turned into `msg` (an SBC in front
    /// parsed it and left it unchanged): what [`Proxy::handle_datagram`] does with it.
    pub fn handle_message(&mut self, from: SocketAddr, msg: SipMessage, now: Instant) {
        match msg {
            SipMessage::Request(mut req) => {
                self.stats.requests += 1;
                let Ok(mut via) = message::top_via(&req) else {
                    return;
                };
                via.stamp(from, self.config.nat.honour_rport);
                message::set_top_via(&mut req, &via);
                let reply_to = if self.transport_to(from).is_reliable() {
                    from
                } else {
                    via.response_target().unwrap_or(from)
                };
                if self.fixes_contact() && req.method == Method::Invite {
                    fix_contact(&mut req, from);
                }
                if let Some(req) = self.layer.handle_request(req, now) {
                    self.on_request(req, from, reply_to, now);
                }
            }
            SipMessage::Response(mut resp) => {
                self.stats.responses += 1;
                if self.pinger.handle_response(&resp) {
                    self.stats.pongs = self.pinger.stats().pongs;
                    return;
                }
                if self.fixes_contact() {
                    fix_contact(&mut resp, from);
                }
                self.layer.handle_response(resp, now);
            }
        }
        self.drain_layer(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.drain_layer(now);
        let location = &self.location;
        self.pinger.handle_timeout(now, |user| {
            location
                .get(user)
                .filter(|b| b.expires_at > now)
                .map(|b| PingTarget {
                    target: b.target,
                    uri: b.uri.clone(),
                })
        });
        while let Some(t) = self.pinger.poll_transmit() {
            let payload = self.over_flow(t.payload, t.destination);
            self.layer.send_raw(payload, t.destination);
        }
        self.stats.pings_sent = self.pinger.stats().pings_sent;
    }

    /// A ping's request with its Via saying the transport it takes: the pinger writes UDP, and
    /// a phone registered over TCP is pinged down its connection.
    fn over_flow(&self, payload: Vec<u8>, destination: SocketAddr) -> Vec<u8> {
        let transport = self.transport_to(destination);
        if !transport.is_reliable() {
            return payload;
        }
        let Ok(SipMessage::Request(mut req)) = message::parse(&payload) else {
            return payload; // A CRLF ping.
        };
        let Ok(via) = message::top_via(&req) else {
            return payload;
        };
        let sent_by = listen_address(self.config.local, transport);
        let mut via = via.over(transport);
        via.port = Some(sent_by.port());
        message::set_top_via(&mut req, &via);
        message::serialize(req)
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.layer.poll_timeout(), self.pinger.poll_timeout())
    }

    fn is_ours(&self, uri: &rsip::Uri) -> bool {
        let host = uri.host_with_port.host.to_string();
        host.eq_ignore_ascii_case(&self.config.domain) || host == self.config.local.ip().to_string()
    }

    fn on_request(&mut self, req: Request, from: SocketAddr, reply_to: SocketAddr, now: Instant) {
        if req.method == Method::Ack {
            // The ACK of a 2xx: forwarded statelessly along the route.
            self.forward_stateless(req, now);
            return;
        }
        let Some(key) = self.layer.accept(&req, reply_to) else {
            return;
        };
        let to_us = self.is_ours(&req.uri) && req.uri.user().is_none();
        match req.method {
            Method::Register => self.on_register(req, key, from, now),
            Method::Cancel => self.on_cancel(req, key, now),
            Method::Options if to_us => {
                let ok = message::response(&req, 200, Some(&self.ids.token()));
                self.layer.respond(&key, ok, now);
            }
            _ => self.forward(req, key, now),
        }
    }

    fn on_register(&mut self, req: Request, key: Key, from: SocketAddr, now: Instant) {
        let Some(user) = req
            .to_header()
            .ok()
            .and_then(|t| t.typed().ok())
            .and_then(|t| t.uri.user().map(str::to_string))
        else {
            self.reply(&req, &key, 400, now);
            return;
        };
        if let Some(password) = self.config.users.get(&user).cloned() {
            if !self.authorized(&req, &user, &password) {
                self.stats.challenges += 1;
                let nonce = self.ids.token();
                self.nonces.insert(nonce.clone());
                let mut resp = message::response(&req, 401, Some(&self.ids.token()));
                resp.headers
                    .push(Header::WwwAuthenticate(headers::WwwAuthenticate::new(
                        format!(
                            "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5",
                            self.config.realm
                        ),
                    )));
                self.layer.respond(&key, resp, now);
                return;
            }
        }
        let Some(contact) = message::contact_uri(&req) else {
            // A query: answer with the current binding.
            let mut ok = message::response(&req, 200, Some(&self.ids.token()));
            if let Some(b) = self.binding(&user, now) {
                ok.headers
                    .push(Header::Contact(headers::Contact::new(format!(
                        "<{}>",
                        b.contact
                    ))));
            }
            self.layer.respond(&key, ok, now);
            return;
        };
        let asked = message::expires(&req).unwrap_or(3600);
        let granted = Duration::from_secs(asked.into()).min(self.config.max_expires);
        if granted.is_zero() {
            self.location.remove(&user);
            self.reply(&req, &key, 200, now);
            return;
        }
        let target = match self.config.nat.contact {
            ContactHandling::AsWritten => match message::uri_addr(&contact) {
                Some(a) => a,
                None => {
                    self.reply(&req, &key, 400, now);
                    return;
                }
            },
            ContactHandling::Source => from,
        };
        let transport = self.layer.transport_to(from);
        if transport.is_reliable() {
            // Requests for this phone take the flow it registered on (its source address),
            // or, for a Contact stored as written, a new connection to it.
            self.layer.set_flow(target, transport);
        }
        let mut uri = contact.clone();
        if self.fixes_contact() {
            uri.host_with_port = from.into();
        }
        self.location.insert(
            user.clone(),
            Binding {
                contact: contact.to_string(),
                target,
                uri,
                expires_at: after(now, granted),
            },
        );
        self.pinger.handle_bound(&user, target, now);
        self.events.push_back(Event::ContactBound {
            aor: format!("sip:{user}@{}", self.config.domain),
            contact: contact.to_string(),
            target,
        });
        let mut ok = message::response(&req, 200, Some(&self.ids.token()));
        ok.headers
            .push(Header::Contact(headers::Contact::new(format!(
                "<{contact}>;expires={}",
                granted.as_secs()
            ))));
        self.layer.respond(&key, ok, now);
    }

    fn authorized(&self, req: &Request, user: &str, password: &str) -> bool {
        let Some(auth) = req.authorization_header().and_then(|h| h.typed().ok()) else {
            return false;
        };
        auth.username == user
            && auth.realm == self.config.realm
            && self.nonces.contains(&auth.nonce)
            && rsip::services::DigestGenerator::from(&auth, password, &req.method)
                .verify(&auth.response)
    }

    fn reply(&mut self, req: &Request, key: &Key, code: u16, now: Instant) {
        let resp = message::response(req, code, Some(&self.ids.token()));
        self.layer.respond(key, resp, now);
    }

    /// Where a request goes next: strips our own Route, then the next
    /// Route, a location lookup for our domain, or the Request-URI.
    /// Returns the target, or the status to answer with.
    fn route(&mut self, req: &mut Request, now: Instant) -> Result<SocketAddr, u16> {
        let mine = format!("{}", self.config.local);
        let mut all: Vec<Header> = std::mem::take(&mut req.headers).into();
        let mut next_route = None;
        let mut stripped = false;
        all.retain(|h| match h {
            Header::Route(r) if !stripped && r.value().contains(&mine) => {
                stripped = true;
                false
            }
            Header::Route(r) if next_route.is_none() => {
                next_route = Some(r.value().to_string());
                true
            }
            _ => true,
        });
        req.headers = all.into();
        if let Some(r) = next_route {
            let uri = r
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("");
            return message::parse_uri(uri)
                .ok()
                .as_ref()
                .and_then(message::uri_addr)
                .ok_or(404);
        }
        if self.is_ours(&req.uri) {
            if let Some(user) = req.uri.user().map(str::to_string) {
                let b = self.binding(&user, now).ok_or(404u16)?;
                req.uri = b.uri.clone();
                return Ok(b.target);
            }
        }
        message::uri_addr(&req.uri).ok_or(404)
    }

    fn forward(&mut self, mut req: Request, key: Key, now: Instant) {
        let call_id = message::call_id(&req).unwrap_or_default();
        let method = req.method.to_string();
        if req.method == Method::Invite {
            // RFC 3261 §16.2: answer 100 at once so the caller stops
            // retransmitting; then try the callee.
            let trying = message::response(&req, 100, None);
            self.layer.respond(&key, trying, now);
        }
        if let Ok(h) = req.max_forwards_header() {
            let left: u32 = h.value().trim().parse().unwrap_or(70);
            if left == 0 {
                self.reply(&req, &key, 483, now);
                return;
            }
            req.headers
                .unique_push(Header::MaxForwards(headers::MaxForwards::new(
                    (left - 1).to_string(),
                )));
        }
        let target = match self.route(&mut req, now) {
            Ok(t) => t,
            Err(code) => {
                self.reply(&req, &key, code, now);
                return;
            }
        };
        if req.method == Method::Invite {
            let rr = format!("<sip:{};lr>", self.config.local);
            let mut all: Vec<Header> = std::mem::take(&mut req.headers).into();
            all.insert(0, Header::RecordRoute(headers::RecordRoute::new(rr)));
            req.headers = all.into();
        }
        let via = self.own_via(target);
        message::push_via(&mut req, &via);
        let Some(client) = self.layer.send_request(req.clone(), target, now) else {
            return;
        };
        self.events.push_back(Event::Forwarded {
            method: method.clone(),
            call_id: call_id.clone(),
            target,
        });
        self.forwards.insert(
            fkey(&client),
            Forward {
                server: key,
                method,
                call_id,
                request: req,
                target,
                provisional: false,
                final_sent: false,
                cancel_pending: false,
            },
        );
    }

    /// The Via the proxy adds to a request it forwards to `target`: its address on the
    /// transport the request takes.
    fn own_via(&mut self, target: SocketAddr) -> Via {
        let transport = self.transport_to(target);
        let sent_by = listen_address(self.config.local, transport);
        Via::udp(sent_by, self.ids.branch(), false).over(transport)
    }

    fn forward_stateless(&mut self, mut req: Request, now: Instant) {
        let target = match self.route(&mut req, now) {
            Ok(t) => t,
            Err(_) => return,
        };
        let via = self.own_via(target);
        message::push_via(&mut req, &via);
        self.layer.send_stateless(req, target);
    }

    fn on_cancel(&mut self, req: Request, key: Key, now: Instant) {
        let invite_server = Key {
            branch: key.branch.clone(),
            method: "INVITE".into(),
        };
        let found = self
            .forwards
            .iter_mut()
            .find(|(_, f)| f.server == invite_server && !f.final_sent);
        let Some((_, fwd)) = found else {
            self.reply(&req, &key, 481, now);
            return;
        };
        let cancel = if fwd.provisional {
            Some((crate::sip::ua::cancel_for(&fwd.request), fwd.target))
        } else {
            // RFC 3261 §9.1: no CANCEL before a provisional response; send
            // it when one arrives, and end the caller's wait now.
            fwd.cancel_pending = true;
            fwd.final_sent = true;
            None
        };
        self.reply(&req, &key, 200, now);
        match cancel {
            Some((c, target)) => {
                self.layer.send_request(c, target, now);
            }
            None => {
                if let Some(invite) = self
                    .layer
                    .server(&invite_server)
                    .map(|s| s.request().clone())
                {
                    let resp = message::response(&invite, 487, Some(&self.ids.token()));
                    self.layer.respond(&invite_server, resp, now);
                }
            }
        }
    }

    fn drain_layer(&mut self, now: Instant) {
        while let Some(e) = self.layer.poll_event() {
            match e {
                TransactionEvent::Response { key, response } => {
                    self.on_response(key, response, now)
                }
                TransactionEvent::Timeout { key, .. } => self.on_timeout(key, now),
                TransactionEvent::Stray(resp) => self.relay_stray(resp),
                TransactionEvent::NoAck { .. } => {}
            }
        }
    }

    fn on_response(&mut self, key: Key, mut resp: Response, now: Instant) {
        let code = status(&resp);
        let Some(fwd) = self.forwards.get_mut(&fkey(&key)) else {
            return;
        };
        if code < 200 {
            fwd.provisional = true;
            if fwd.cancel_pending {
                fwd.cancel_pending = false;
                let c = crate::sip::ua::cancel_for(&fwd.request);
                let target = fwd.target;
                self.layer.send_request(c, target, now);
                return;
            }
            if code == 100 {
                return; // hop by hop: we already sent our own 100
            }
        }
        if fwd.final_sent {
            return;
        }
        if code >= 200 {
            fwd.final_sent = true;
        }
        let server = fwd.server.clone();
        message::pop_via(&mut resp);
        self.layer.respond(&server, resp, now);
        if code >= 200 {
            self.forwards.remove(&fkey(&key));
        }
    }

    fn on_timeout(&mut self, key: Key, now: Instant) {
        let Some(fwd) = self.forwards.remove(&fkey(&key)) else {
            return;
        };
        if fwd.final_sent {
            return;
        }
        // RFC 3261 §16.7 step 6 / §8.1.3.1: a client transaction timeout is
        // a 408 from the TU's point of view, and the best (only) response.
        self.stats.timeouts += 1;
        if let Some(req) = self.layer.server(&fwd.server).map(|s| s.request().clone()) {
            self.reply(&req, &fwd.server, 408, now);
        }
        self.events.push_back(Event::ForwardTimedOut {
            method: fwd.method,
            call_id: fwd.call_id,
        });
    }

    /// A 2xx retransmission (its client transaction is gone): forward it
    /// upstream statelessly, to where the next Via says.
    fn relay_stray(&mut self, mut resp: Response) {
        if status(&resp) >= 300 {
            return;
        }
        let Some(ours) = message::pop_via(&mut resp) else {
            return;
        };
        if ours.sent_by() != Some(self.config.local) {
            return;
        }
        let Some(target) = message::top_via(&resp)
            .ok()
            .and_then(|v| v.response_target())
        else {
            return;
        };
        self.layer.send_stateless(resp, target);
    }
}

/// Rewrites the Contact host:port to the packet's source when they differ
/// (Kamailio's `fix_nated_contact`), so in-dialog requests reach the NAT.
fn fix_contact(msg: &mut impl HeadersExt, source: SocketAddr) {
    if let Some(uri) = message::contact_uri(msg) {
        if message::uri_addr(&uri) != Some(source) {
            message::set_contact_address(msg, source);
        }
    }
}
