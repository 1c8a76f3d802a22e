//! A sans-IO SIP user agent (a phone): REGISTER with digest auth and
//! refresh, calls as caller and callee (INVITE/100/180/200/ACK, BYE,
//! CANCEL), OPTIONS answered, and NAT keep-alives (CRLF or STUN per RFC 5626,
//! or OPTIONS).
//!
//! The knobs a NAT scenario flips are in [`UaConfig`]: whether Via asks for
//! `rport`, where the Contact/Via address comes from ([`ContactSource`]),
//! the SDP address toward the outside (`external_media`), the local
//! networks that get the local address instead (`localnet`, Asterisk's
//! names with `externip`), the registration expiry and the keep-alive. Every request goes to the
//! configured outbound proxy (the phone's "SIP server"), which is how
//! phones behind NAT are deployed and keeps the UA free of DNS.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rsip::headers::{self, Header, UntypedHeader};
use rsip::prelude::{HasHeaders, HeadersExt, ToTypedHeader};
use rsip::{Method, Request, Response, SipMessage};

use crate::machine::Transport;
use crate::sip::message::{self, status, MessageError, Via};
use crate::sip::transaction::{Key, Timers, TransactionEvent, TransactionLayer};
use crate::sip::{after, earliest, Event, Ids, Transmit};
use crate::stun::codec::{
    is_stun, Class, Message as StunMessage, Method as StunMethod, TransactionId,
};

/// Where the address in Contact and Via comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactSource {
    /// The local interface address: private behind a NAT (the field's bug).
    Local,
    /// A configured public address (a phone's "NAT address" setting, a PBX's `externip`);
    /// destinations in [`UaConfig::localnet`] still get the local address.
    External(SocketAddr),
    /// Whatever [`Ua::set_discovered_address`] was last told (STUN);
    /// the local address until then.
    Discovered,
}

/// How the UA keeps its NAT binding open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// RFC 5626 §3.5.1 CRLF ping ("\r\n\r\n") every interval.
    Crlf(Duration),
    /// An OPTIONS request to the proxy every interval.
    Options(Duration),
    /// RFC 5626 §4.4.2: a STUN Binding request to the proxy from the SIP socket every
    /// interval. The edge proxy answers on the same flow, so the binding sees traffic both ways,
    /// and a changed XOR-MAPPED-ADDRESS tells the phone its NAT moved it: it re-registers at
    /// once instead of waiting to miss calls.
    Stun(Duration),
}

impl KeepAlive {
    pub fn interval(&self) -> Duration {
        match self {
            KeepAlive::Crlf(d) | KeepAlive::Options(d) | KeepAlive::Stun(d) => *d,
        }
    }
}

/// The audio endpoint advertised in SDP (`c=` and `m=audio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    pub address: IpAddr,
    pub port: u16,
}

/// Everything that makes one phone differ from another.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Local socket address (the interface the phone binds).
    pub local: SocketAddr,
    /// User part of the address of record `sip:user@domain`.
    pub user: String,
    pub domain: String,
    /// Digest password; `None` gives up on the first challenge.
    pub password: Option<String>,
    /// Outbound proxy and registrar: every request goes here.
    pub proxy: SocketAddr,
    /// How it talks to the proxy: UDP, or one TCP/TLS connection it opens and keeps (RFC 5626
    /// flow), down which the proxy also sends it requests.
    pub transport: Transport,
    pub timers: Timers,
    /// Put `;rport` in Via (RFC 3581).
    pub rport: bool,
    pub contact: ContactSource,
    /// Registration lifetime asked for. The UA refreshes at half the
    /// lifetime the registrar granted.
    pub expires: Duration,
    /// Auto-answer incoming calls this long after ringing; `None`: ring
    /// until [`Ua::answer`].
    pub answer_after: Option<Duration>,
    /// While ringing, repeat the 180 this often. RFC 3261 §13.3.1.1 asks for a repeat every
    /// minute so proxies keep the INVITE alive; a shorter interval also keeps the caller's NAT
    /// binding open through a slow answer, on routers that refresh on inbound packets.
    pub ring_every: Option<Duration>,
    pub keepalive: Option<KeepAlive>,
    pub media: Media,
    /// Asterisk's `externip` for media: the SDP `c=`/`o=` address toward destinations outside
    /// [`Self::localnet`] (the port stays `media.port`: the router forwards it unchanged).
    /// `None`: always `media.address`.
    pub external_media: Option<IpAddr>,
    /// Asterisk's `localnet`: destinations in these networks (address, prefix length) get the
    /// local address in Contact, Via and SDP — a LAN phone must not be sent to the router's
    /// public address, which it could reach only through hairpinning.
    pub localnet: Vec<(Ipv4Addr, u8)>,
    /// What its INVITEs offer: codecs and video (the size of its SDP).
    pub offer: crate::sip::sdp::Offer,
    /// Attribute lines (without `a=`) added to the audio section of its offers and answers: an
    /// ICE phone's `ice-ufrag`, `ice-pwd` and `candidate` lines (RFC 8839).
    pub media_attributes: Vec<String>,
    /// Seeds branches, tags and Call-IDs (fixed in tests: reproducible traces).
    pub seed: u64,
}

impl UaConfig {
    /// A phone `user@domain` at `local` using `proxy`, with RFC timers,
    /// rport on, local Contact, 3600 s registrations, auto-answer after
    /// 1 s, no keep-alive and media on the local IP port 4000.
    pub fn new(user: &str, domain: &str, local: SocketAddr, proxy: SocketAddr) -> Self {
        Self {
            local,
            user: user.into(),
            domain: domain.into(),
            password: None,
            proxy,
            transport: Transport::Udp,
            timers: Timers::default(),
            rport: true,
            contact: ContactSource::Local,
            expires: Duration::from_secs(3600),
            answer_after: Some(Duration::from_secs(1)),
            ring_every: None,
            keepalive: None,
            media: Media {
                address: local.ip(),
                port: 4000,
            },
            external_media: None,
            localnet: Vec::new(),
            offer: Default::default(),
            media_attributes: Vec::new(),
            seed: seed_of(user, local),
        }
    }
}

/// A seed of its own for each phone, fixed by its user and address: two phones drawing the same
/// branches, tags and Call-IDs is something no real pair of phones does (and it merged their
/// transactions in ladders), while a fixed seed keeps a scenario's trace reproducible.
fn seed_of(user: &str, local: SocketAddr) -> u64 {
    // FNV-1a.
    format!("{user}@{local}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Caller: INVITE sent. Callee: ringing.
    Early,
    /// Callee: 200 sent, waiting for the ACK.
    Answered,
    Established,
    /// BYE sent.
    Ending,
}

/// 2xx retransmission by the callee's core (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct PendingOk {
    bytes: Vec<u8>,
    to: SocketAddr,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

#[derive(Debug)]
struct Call {
    role: Role,
    state: CallState,
    local_tag: String,
    remote_tag: Option<String>,
    /// Header values for our in-dialog requests.
    local_party: String,
    remote_party: String,
    remote_target: Option<rsip::Uri>,
    /// Route values for our in-dialog requests, in order.
    route_set: Vec<String>,
    local_cseq: u32,
    /// Caller: our INVITE. Callee: the INVITE received.
    invite: Request,
    invite_key: Option<Key>,
    provisional: bool,
    authenticated: bool,
    answer_at: Option<Instant>,
    /// Callee, still ringing: when the 180 goes out again.
    ring_again_at: Option<Instant>,
    ok: Option<PendingOk>,
    ack: Option<Vec<u8>>,
    remote_media: Option<SocketAddr>,
}

#[derive(Debug)]
struct Registration {
    call_id: String,
    from_tag: String,
    cseq: u32,
    pending: Option<Key>,
    authenticated: bool,
    refresh_at: Option<Instant>,
    registered: bool,
}

/// Counters a test or ladder reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UaStats {
    pub malformed: u64,
    pub keepalives_sent: u64,
    /// STUN keep-alives the proxy answered.
    pub stun_answers: u64,
}

/// The user agent machine.
#[derive(Debug)]
pub struct Ua {
    config: UaConfig,
    ids: Ids,
    layer: TransactionLayer,
    discovered: Option<SocketAddr>,
    registration: Registration,
    calls: BTreeMap<String, Call>,
    keepalive_at: Option<Instant>,
    /// The STUN keep-alive awaiting its answer (a late answer to an older one is ignored).
    stun_pending: Option<TransactionId>,
    /// The flow's public address as the proxy's last STUN answer gave it.
    flow_mapping: Option<SocketAddr>,
    events: std::collections::VecDeque<Event>,
    stats: UaStats,
    /// Set by [`Ua::wind_down`]: nothing new starts from a timer.
    winding_down: bool,
}

impl Ua {
    pub fn new(config: UaConfig) -> Self {
        let mut ids = Ids::new(config.seed);
        let registration = Registration {
            call_id: format!("{}@{}", ids.token(), config.local.ip()),
            from_tag: ids.token(),
            cseq: 0,
            pending: None,
            authenticated: false,
            refresh_at: None,
            registered: false,
        };
        let mut layer = TransactionLayer::new(config.local, config.timers);
        layer.set_flow(config.proxy, config.transport);
        Self {
            layer,
            config,
            ids,
            discovered: None,
            registration,
            calls: BTreeMap::new(),
            keepalive_at: None,
            winding_down: false,
            stun_pending: None,
            flow_mapping: None,
            events: Default::default(),
            stats: UaStats::default(),
        }
    }

    pub fn config(&self) -> &UaConfig {
        &self.config
    }

    /// Whether a transaction is in progress or a 2xx is still being retransmitted for want of
    /// its ACK (see [`TransactionLayer::pending`]); timers that only refresh (registration,
    /// keep-alives) are not pending.
    pub fn pending(&self) -> bool {
        self.layer.pending() || self.calls.values().any(|c| c.ok.is_some())
    }

    pub fn stats(&self) -> &UaStats {
        &self.stats
    }

    pub fn is_registered(&self) -> bool {
        self.registration.registered
    }

    /// Call-IDs of calls in progress.
    pub fn calls(&self) -> Vec<String> {
        self.calls.keys().cloned().collect()
    }

    /// The address written into Contact and Via of what goes to the proxy (every request),
    /// per [`ContactSource`].
    pub fn contact_address(&self) -> SocketAddr {
        self.contact_address_to(self.config.proxy.ip())
    }

    /// Whether `dest` is in one of the configured local networks.
    fn is_local(&self, dest: IpAddr) -> bool {
        let IpAddr::V4(d) = dest else {
            return false;
        };
        self.config.localnet.iter().any(|(net, prefix)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(d) & mask == u32::from(*net) & mask
        })
    }

    /// The Contact/Via address in a message to `dest`: the local one inside `localnet`.
    fn contact_address_to(&self, dest: IpAddr) -> SocketAddr {
        match self.config.contact {
            ContactSource::Local => self.config.local,
            _ if self.is_local(dest) => self.config.local,
            ContactSource::External(a) => a,
            ContactSource::Discovered => self.discovered.unwrap_or(self.config.local),
        }
    }

    /// The SDP media endpoint in a message to `dest`.
    fn media_to(&self, dest: IpAddr) -> Media {
        match self.config.external_media {
            Some(address) if !self.is_local(dest) => Media {
                address,
                port: self.config.media.port,
            },
            _ => self.config.media,
        }
    }

    /// Tells the UA its public address (from STUN); used when the Contact
    /// source is [`ContactSource::Discovered`], from the next request on.
    pub fn set_discovered_address(&mut self, addr: SocketAddr) {
        self.discovered = Some(addr);
    }

    /// Flips `rport` in future Vias.
    pub fn set_rport(&mut self, rport: bool) {
        self.config.rport = rport;
    }

    pub fn set_contact_source(&mut self, source: ContactSource) {
        self.config.contact = source;
    }

    fn aor(&self) -> String {
        format!("sip:{}@{}", self.config.user, self.config.domain)
    }

    fn contact_value(&self) -> String {
        self.contact_value_to(self.config.proxy.ip())
    }

    fn contact_value_to(&self, dest: IpAddr) -> String {
        // RFC 3261 §19.1.4: a Contact reached over TCP says so, or it means UDP.
        let transport = match self.config.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", t.via_name().to_ascii_lowercase()),
        };
        format!(
            "<sip:{}@{}{transport}>",
            self.config.user,
            self.contact_address_to(dest)
        )
    }

    fn new_via(&mut self) -> Via {
        Via::udp(self.contact_address(), self.ids.branch(), self.config.rport)
            .over(self.config.transport)
    }

    /// The transport of what goes to `dest`: the configured one towards the proxy, and to a
    /// peer whose request came over a stream flow, that flow.
    pub fn transport_to(&self, dest: SocketAddr) -> Transport {
        self.layer.transport_to(dest)
    }

    /// A request with the headers every request needs.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        method: Method,
        uri: rsip::Uri,
        from: String,
        to: String,
        call_id: &str,
        cseq: u32,
        routes: &[String],
    ) -> Request {
        let via = self.new_via();
        let mut h = rsip::Headers::default();
        h.push(Header::Via(headers::Via::new(via.to_string())));
        h.push(Header::MaxForwards(headers::MaxForwards::new("70")));
        h.push(Header::From(headers::From::new(from)));
        h.push(Header::To(headers::To::new(to)));
        h.push(Header::CallId(headers::CallId::new(call_id)));
        h.push(Header::CSeq(headers::CSeq::new(format!("{cseq} {method}"))));
        for r in routes {
            h.push(Header::Route(headers::Route::new(r.clone())));
        }
        if matches!(method, Method::Invite | Method::Register) {
            h.push(Header::Contact(headers::Contact::new(self.contact_value())));
        }
        Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers: h,
            body: Vec::new(),
        }
    }

    /// Starts (or refreshes) the registration.
    pub fn register(&mut self, now: Instant) {
        let uri = match message::parse_uri(&format!("sip:{}", self.config.domain)) {
            Ok(u) => u,
            Err(_) => return,
        };
        self.registration.cseq += 1;
        let aor = self.aor();
        let from = format!("<{aor}>;tag={}", self.registration.from_tag);
        let call_id = self.registration.call_id.clone();
        let mut req = self.request(
            Method::Register,
            uri,
            from,
            format!("<{aor}>"),
            &call_id,
            self.registration.cseq,
            &[],
        );
        let secs = self.config.expires.as_secs();
        req.headers
            .push(Header::Expires(headers::Expires::new(secs.to_string())));
        self.registration.authenticated = false;
        self.registration.refresh_at = None;
        self.send_register(req, now);
        if self.keepalive_at.is_none() && !self.winding_down {
            if let Some(k) = self.config.keepalive {
                self.keepalive_at = Some(after(now, k.interval()));
            }
        }
    }

    fn send_register(&mut self, req: Request, now: Instant) {
        self.registration.pending = self.layer.send_request(req, self.config.proxy, now);
    }

    /// Calls `target` (`sip:bob@example.com`, or just `bob` for
    /// `sip:bob@<domain>`). Returns the Call-ID.
    pub fn call(&mut self, target: &str, now: Instant) -> Result<String, MessageError> {
        let target = if target.starts_with("sip:") {
            target.to_string()
        } else {
            format!("sip:{target}@{}", self.config.domain)
        };
        let uri = message::parse_uri(&target)?;
        let call_id = format!("{}@{}", self.ids.token(), self.config.local.ip());
        let local_tag = self.ids.token();
        let local_party = format!("<{}>;tag={local_tag}", self.aor());
        let remote_party = format!("<{target}>");
        let mut invite = self.request(
            Method::Invite,
            uri,
            local_party.clone(),
            remote_party.clone(),
            &call_id,
            1,
            &[],
        );
        let sdp = self.sdp(self.config.proxy.ip(), None);
        set_sdp(&mut invite, sdp);
        let key = self
            .layer
            .send_request(invite.clone(), self.config.proxy, now);
        self.calls.insert(
            call_id.clone(),
            Call {
                role: Role::Caller,
                state: CallState::Early,
                local_tag,
                remote_tag: None,
                local_party,
                remote_party,
                remote_target: None,
                route_set: Vec::new(),
                local_cseq: 1,
                invite,
                invite_key: key,
                provisional: false,
                authenticated: false,
                answer_at: None,
                ring_again_at: None,
                ok: None,
                ack: None,
                remote_media: None,
            },
        );
        Ok(call_id)
    }

    /// Answers a ringing incoming call (200 OK with SDP).
    pub fn answer(&mut self, call_id: &str, now: Instant) {
        let t1 = self.config.timers.t1;
        let timeout = self.config.timers.timeout();
        let Some(dest) = self
            .calls
            .get(call_id)
            .and_then(|c| c.invite_key.as_ref())
            .and_then(|k| self.layer.server(k))
            .map(|s| s.reply_to())
        else {
            return;
        };
        let offer = self.calls.get(call_id).map(|c| c.invite.body.clone());
        let sdp = self.sdp(dest.ip(), offer.as_deref());
        let contact = self.contact_value_to(dest.ip());
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.role != Role::Callee || call.state != CallState::Early {
            return;
        }
        let Some(key) = call.invite_key.clone() else {
            return;
        };
        let Some(to) = self.layer.server(&key).map(|s| s.reply_to()) else {
            return;
        };
        let mut ok = message::response(&call.invite, 200, Some(&call.local_tag));
        ok.headers
            .push(Header::Contact(headers::Contact::new(contact)));
        set_sdp(&mut ok, sdp);
        call.ok = Some(PendingOk {
            bytes: message::serialize(ok.clone()),
            to,
            interval: t1,
            next: after(now, t1),
            give_up: after(now, timeout),
        });
        call.answer_at = None;
        call.ring_again_at = None;
        call.state = CallState::Answered;
        self.layer.respond(&key, ok, now);
    }

    /// Ends a call: BYE when established, CANCEL while the INVITE is
    /// pending, 603 Decline when ringing here.
    pub fn hang_up(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        match (call.role, call.state) {
            (_, CallState::Established) | (Role::Callee, CallState::Answered) => {
                self.send_in_dialog(call_id, Method::Bye, now);
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.state = CallState::Ending;
                    c.ok = None;
                }
            }
            (Role::Caller, CallState::Early) => {
                let cancel = cancel_for(&call.invite);
                self.layer.send_request(cancel, self.config.proxy, now);
            }
            (Role::Callee, CallState::Early) => {
                if let Some(key) = call.invite_key.clone() {
                    let resp = message::response(&call.invite, 603, Some(&call.local_tag));
                    self.layer.respond(&key, resp, now);
                }
                self.end_call(call_id);
            }
            _ => {}
        }
    }

    /// Sends an OPTIONS to `target` through the proxy (a reachability ping).
    pub fn options(&mut self, target: &str, now: Instant) {
        let Ok(uri) = message::parse_uri(target) else {
            return;
        };
        let call_id = format!("{}@{}", self.ids.token(), self.config.local.ip());
        let from = format!("<{}>;tag={}", self.aor(), self.ids.token());
        let req = self.request(
            Method::Options,
            uri,
            from,
            format!("<{target}>"),
            &call_id,
            1,
            &[],
        );
        self.layer.send_request(req, self.config.proxy, now);
    }

    fn send_in_dialog(&mut self, call_id: &str, method: Method, now: Instant) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.local_cseq += 1;
        let cseq = call.local_cseq;
        let uri = call
            .remote_target
            .clone()
            .unwrap_or_else(|| call.invite.uri.clone());
        let to = match &call.remote_tag {
            Some(t) => format!("{};tag={t}", strip_tag(&call.remote_party)),
            None => call.remote_party.clone(),
        };
        let (from, routes) = (call.local_party.clone(), call.route_set.clone());
        let req = self.request(method, uri, from, to, call_id, cseq, &routes);
        self.layer.send_request(req, self.config.proxy, now);
    }

    /// The SDP in a message to `dest`: our offer, or the answer to `offer`.
    fn sdp(&mut self, dest: IpAddr, offer: Option<&[u8]>) -> Vec<u8> {
        let m = self.media_to(dest);
        let session = self.ids.next_u64() % 1_000_000_000;
        let sdp = match offer {
            None => self.config.offer.render(session, m.address, m.port),
            Some(offer) => crate::sip::sdp::answer(offer, session, m.address, m.port),
        };
        crate::sip::sdp::with_audio_attributes(sdp, &self.config.media_attributes).into_bytes()
    }

    /// A STUN Binding request to the registrar on the SIP flow (RFC 5626 §4.4.2); its answer is
    /// matched by transaction id in [`Self::on_stun`].
    fn send_stun_binding(&mut self) {
        let tid = TransactionId::from_draws(|| self.ids.next_u64());
        let req = StunMessage::new(Class::Request, StunMethod::BINDING, tid)
            .encode(None, true)
            .expect("a bare Binding request encodes");
        self.stun_pending = Some(tid);
        self.layer.send_raw(req, self.config.proxy);
    }

    /// A STUN message on the SIP socket: the answer to a keep-alive, or garbage (counted).
    fn on_stun(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let m = match StunMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                self.events.push_back(Event::MalformedDatagram {
                    from,
                    error: MessageError::Unparsable(format!("STUN on the SIP port: {e}")),
                });
                return;
            }
        };
        if m.class != Class::SuccessResponse || self.stun_pending != Some(m.transaction_id) {
            return; // An answer to an older keep-alive, or a request we do not serve.
        }
        self.stun_pending = None;
        self.stats.stun_answers += 1;
        let Some(mapped) = m.mapped_address() else {
            return;
        };
        let old = self.flow_mapping.replace(mapped);
        if let Some(old) = old.filter(|o| *o != mapped) {
            // RFC 5626 §4.4.2: the flow's mapping changed, so the registrar holds a dead address.
            self.events
                .push_back(Event::FlowMappingChanged { old, new: mapped });
            if self.registration.registered && self.registration.pending.is_none() {
                self.register(now);
            }
        }
    }

    /// The next message from `from` came over `transport` (a stream flow's, framed by the
    /// driver): what goes back to `from` takes the same flow.
    pub fn note_flow(&mut self, from: SocketAddr, transport: Transport) {
        self.layer.note_flow(from, transport);
    }

    /// A datagram arrived on the UA's socket, or a stream flow's message after
    /// [`Self::note_flow`].
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if message::is_keepalive(bytes) {
            return; // RFC 5626 pong, or a ping we do not answer.
        }
        if is_stun(bytes) {
            self.on_stun(from, bytes, now);
            self.drain_layer(now);
            return;
        }
        match message::parse(bytes) {
            Err(error) => {
                self.stats.malformed += 1;
                self.events
                    .push_back(Event::MalformedDatagram { from, error });
            }
            Ok(SipMessage::Response(resp)) => self.layer.handle_response(resp, now),
            Ok(SipMessage::Request(req)) => {
                if let Some(req) = self.layer.handle_request(req, now) {
                    self.on_request(req, from, now);
                }
            }
        }
        self.drain_layer(now);
    }

    /// Stops the timers that start new exchanges (registration refresh, keep-alives) and lets
    /// what is in progress finish: the end of a run, where a refresh falling due while the last
    /// transactions complete would make the trace's tail depend on timing.
    pub fn wind_down(&mut self) {
        self.winding_down = true;
        self.registration.refresh_at = None;
        self.keepalive_at = None;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        if self.registration.refresh_at.is_some_and(|t| t <= now) {
            self.register(now);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            match self.config.keepalive {
                Some(KeepAlive::Crlf(_)) => {
                    self.layer.send_raw(b"\r\n\r\n".to_vec(), self.config.proxy);
                }
                Some(KeepAlive::Options(_)) => {
                    let target = format!("sip:{}", self.config.proxy);
                    self.options(&target, now);
                }
                Some(KeepAlive::Stun(_)) => self.send_stun_binding(),
                None => {}
            }
            self.keepalive_at = self.config.keepalive.map(|k| after(now, k.interval()));
            self.stats.keepalives_sent += 1;
        }
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.answer_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.answer(&id, now);
        }
        self.ring_again(now);
        let mut gave_up = Vec::new();
        for (id, call) in self.calls.iter_mut() {
            let Some(ok) = call.ok.as_mut() else { continue };
            if ok.give_up <= now {
                call.ok = None;
                gave_up.push(id.clone());
            } else if ok.next <= now {
                self.layer.send_raw(ok.bytes.clone(), ok.to);
                ok.interval = (ok.interval * 2).min(self.config.timers.t2);
                ok.next = after(now, ok.interval);
            }
        }
        for id in gave_up {
            // RFC 3261 §13.3.1.4: no ACK for 64·T1 ends the dialog with BYE.
            self.send_in_dialog(&id, Method::Bye, now);
            if let Some(c) = self.calls.get_mut(&id) {
                c.state = CallState::Ending;
            }
        }
        self.drain_layer(now);
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
        let mut t = earliest(self.layer.poll_timeout(), self.registration.refresh_at);
        t = earliest(t, self.keepalive_at);
        for c in self.calls.values() {
            t = earliest(t, c.answer_at);
            t = earliest(t, c.ring_again_at);
            if let Some(ok) = &c.ok {
                t = earliest(t, Some(ok.next.min(ok.give_up)));
            }
        }
        t
    }

    fn drain_layer(&mut self, now: Instant) {
        while let Some(e) = self.layer.poll_event() {
            match e {
                TransactionEvent::Response { key, response } => {
                    self.on_response(key, response, now)
                }
                TransactionEvent::Timeout { key, request } => self.on_timeout(key, request),
                TransactionEvent::Stray(resp) => self.on_stray(resp),
                TransactionEvent::NoAck { .. } => {}
            }
        }
    }

    fn on_timeout(&mut self, key: Key, request: Request) {
        if self.registration.pending.as_ref() == Some(&key) {
            self.registration.pending = None;
            self.registration.registered = false;
            self.events
                .push_back(Event::RegistrationFailed { status: 408 });
            return;
        }
        let Ok(call_id) = message::call_id(&request) else {
            return;
        };
        match request.method {
            Method::Invite if self.calls.remove(&call_id).is_some() => {
                self.events.push_back(Event::CallFailed {
                    call_id,
                    status: 408,
                });
            }
            Method::Bye => self.end_call(&call_id),
            _ => {}
        }
    }

    fn end_call(&mut self, call_id: &str) {
        if self.calls.remove(call_id).is_some() {
            self.events.push_back(Event::CallEnded {
                call_id: call_id.to_string(),
            });
        }
    }

    fn on_response(&mut self, key: Key, resp: Response, now: Instant) {
        let code = status(&resp);
        if self.registration.pending.as_ref() == Some(&key) {
            self.on_register_response(resp, now);
            return;
        }
        let Ok(call_id) = message::call_id(&resp) else {
            return;
        };
        match key.method.as_str() {
            "INVITE" => self.on_invite_response(&call_id, resp, now),
            "BYE" if code >= 200 => self.end_call(&call_id),
            _ => {}
        }
    }

    fn on_register_response(&mut self, resp: Response, now: Instant) {
        let code = status(&resp);
        if code < 200 {
            return;
        }
        self.registration.pending = None;
        if code < 300 {
            let granted = message::expires(&resp)
                .map(|s| Duration::from_secs(s.into()))
                .unwrap_or(self.config.expires);
            self.registration.registered = true;
            if !self.winding_down {
                self.registration.refresh_at = Some(after(now, granted / 2));
            }
            // The registrar now knows the flow as it is: learn its mapping at once with a STUN
            // request, so the first keep-alive that finds it changed already re-registers
            // (RFC 5626 §4.4.2 compares STUN answers). Not from the 200's Via received/rport: a
            // SIP ALG rewrites those back to the private address (measured with the kernel
            // helper), which would look like a move on every keep-alive and re-register forever.
            if matches!(self.config.keepalive, Some(KeepAlive::Stun(_))) {
                self.flow_mapping = None;
                self.send_stun_binding();
            }
            self.events.push_back(Event::Registered {
                contact: self.contact_value(),
                expires: granted,
            });
            return;
        }
        if matches!(code, 401 | 407) && !self.registration.authenticated {
            let Some(original) = self.layer_request_for_register(&resp) else {
                return;
            };
            if let Some(mut retry) = self.authorized_retry(&original, &resp) {
                self.registration.cseq += 1;
                set_cseq(&mut retry, self.registration.cseq, Method::Register);
                self.registration.authenticated = true;
                self.send_register(retry, now);
                return;
            }
        }
        self.registration.registered = false;
        self.events
            .push_back(Event::RegistrationFailed { status: code });
    }

    /// Rebuilds the REGISTER that was challenged (the transaction is gone).
    fn layer_request_for_register(&mut self, resp: &Response) -> Option<Request> {
        let uri = message::parse_uri(&format!("sip:{}", self.config.domain)).ok()?;
        let aor = self.aor();
        let from = format!("<{aor}>;tag={}", self.registration.from_tag);
        let call_id = self.registration.call_id.clone();
        let (seq, _) = message::cseq(resp).ok()?;
        let mut req = self.request(
            Method::Register,
            uri,
            from,
            format!("<{aor}>"),
            &call_id,
            seq,
            &[],
        );
        let secs = self.config.expires.as_secs();
        req.headers
            .push(Header::Expires(headers::Expires::new(secs.to_string())));
        Some(req)
    }

    /// `original` with a fresh branch and an Authorization (401) or
    /// Proxy-Authorization (407) answering the challenge in `resp`
    /// (RFC 2617 digest, MD5, qop=auth when offered).
    fn authorized_retry(&mut self, original: &Request, resp: &Response) -> Option<Request> {
        let password = self.config.password.clone()?;
        let proxy_auth = status(resp) == 407;
        let challenge_value = resp.headers.iter().find_map(|h| match h {
            Header::WwwAuthenticate(w) if !proxy_auth => Some(w.value().to_string()),
            Header::ProxyAuthenticate(p) if proxy_auth => Some(p.value().to_string()),
            _ => None,
        })?;
        let challenge = headers::WwwAuthenticate::new(challenge_value)
            .typed()
            .ok()?;
        let cnonce = self.ids.token();
        let qop = challenge
            .qop
            .as_ref()
            .map(|_| rsip::headers::auth::AuthQop::Auth {
                cnonce: cnonce.clone(),
                nc: 1,
            });
        let digest = rsip::services::DigestGenerator {
            username: &self.config.user,
            password: &password,
            nonce: &challenge.nonce,
            uri: &original.uri,
            realm: &challenge.realm,
            method: &original.method,
            qop: qop.as_ref(),
            algorithm: rsip::headers::auth::Algorithm::Md5,
        }
        .compute();
        let mut value = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{digest}\", algorithm=MD5",
            self.config.user, challenge.realm, challenge.nonce, original.uri
        );
        if let Some(opaque) = &challenge.opaque {
            value.push_str(&format!(", opaque=\"{opaque}\""));
        }
        if qop.is_some() {
            value.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
        }
        let mut retry = original.clone();
        retry
            .headers
            .retain(|h| !matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)));
        retry.headers.push(if proxy_auth {
            Header::ProxyAuthorization(headers::ProxyAuthorization::new(value))
        } else {
            Header::Authorization(headers::Authorization::new(value))
        });
        let via = self.new_via();
        message::set_top_via(&mut retry, &via);
        Some(retry)
    }

    fn on_invite_response(&mut self, call_id: &str, resp: Response, now: Instant) {
        let code = status(&resp);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if code < 200 {
            call.provisional = true;
            if (180..200).contains(&code) && call.remote_tag.is_none() {
                call.remote_tag = message::to_tag(&resp).ok().flatten();
                self.events.push_back(Event::CallRinging {
                    call_id: call_id.to_string(),
                });
            }
            return;
        }
        if code < 300 {
            call.remote_tag = message::to_tag(&resp).ok().flatten();
            call.remote_target = message::contact_uri(&resp);
            // The caller's route set is the Record-Route list reversed.
            call.route_set = record_routes(&resp).into_iter().rev().collect();
            call.remote_media = parse_sdp(&resp.body);
            call.state = CallState::Established;
            let ack = self.ack_for_2xx(call_id);
            if let Some(ack) = ack {
                let bytes = message::serialize(ack);
                self.layer.send_raw(bytes.clone(), self.config.proxy);
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.ack = Some(bytes);
                    self.events.push_back(Event::CallEstablished {
                        call_id: call_id.to_string(),
                        remote_media: c.remote_media,
                    });
                }
            }
            return;
        }
        if matches!(code, 401 | 407) && !call.authenticated {
            call.authenticated = true;
            let original = call.invite.clone();
            if let Some(mut retry) = self.authorized_retry(&original, &resp) {
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.local_cseq += 1;
                    set_cseq(&mut retry, c.local_cseq, Method::Invite);
                    c.invite = retry.clone();
                    c.invite_key = self.layer.send_request(retry, self.config.proxy, now);
                }
                return;
            }
        }
        self.calls.remove(call_id);
        self.events.push_back(Event::CallFailed {
            call_id: call_id.to_string(),
            status: code,
        });
    }

    /// RFC 3261 §13.2.2.4: the ACK of a 2xx is a new transaction-less
    /// request within the dialog, with the INVITE's CSeq number.
    fn ack_for_2xx(&mut self, call_id: &str) -> Option<Request> {
        let call = self.calls.get(call_id)?;
        let uri = call
            .remote_target
            .clone()
            .unwrap_or_else(|| call.invite.uri.clone());
        let to = match &call.remote_tag {
            Some(t) => format!("{};tag={t}", strip_tag(&call.remote_party)),
            None => call.remote_party.clone(),
        };
        let (seq, _) = message::cseq(&call.invite).ok()?;
        let (from, routes) = (call.local_party.clone(), call.route_set.clone());
        Some(self.request(Method::Ack, uri, from, to, call_id, seq, &routes))
    }

    fn on_stray(&mut self, resp: Response) {
        // A retransmitted 2xx: our ACK was lost; send it again.
        let Ok(call_id) = message::call_id(&resp) else {
            return;
        };
        if let Some(ack) = self.calls.get(&call_id).and_then(|c| c.ack.clone()) {
            self.layer.send_raw(ack, self.config.proxy);
        }
    }

    fn on_request(&mut self, req: Request, from: SocketAddr, now: Instant) {
        // Answer where RFC 3261 §18.2.2 / RFC 3581 say: down the same connection over a stream.
        let reply_to = match message::top_via(&req) {
            _ if self.layer.transport_to(from).is_reliable() => from,
            Ok(mut via) => {
                via.stamp(from, true);
                via.response_target().unwrap_or(from)
            }
            Err(_) => from,
        };
        let Ok(call_id) = message::call_id(&req) else {
            return;
        };
        if req.method == Method::Ack {
            if let Some(call) = self.calls.get_mut(&call_id) {
                if call.state == CallState::Answered {
                    call.state = CallState::Established;
                    call.ok = None;
                    let remote_media = call.remote_media;
                    self.events.push_back(Event::CallEstablished {
                        call_id,
                        remote_media,
                    });
                }
            }
            return;
        }
        let Some(key) = self.layer.accept(&req, reply_to) else {
            return;
        };
        match req.method {
            Method::Invite if message::to_tag(&req).ok().flatten().is_none() => {
                self.on_invite(req, key, now)
            }
            Method::Invite => {
                // A re-INVITE: keep the session as it is.
                let mut ok = message::response(&req, 200, None);
                ok.headers.push(Header::Contact(headers::Contact::new(
                    self.contact_value_to(reply_to.ip()),
                )));
                let sdp = self.sdp(reply_to.ip(), Some(&req.body));
                set_sdp(&mut ok, sdp);
                self.layer.respond(&key, ok, now);
            }
            Method::Bye => {
                let known = self.calls.contains_key(&call_id);
                let code = if known { 200 } else { 481 };
                self.layer
                    .respond(&key, message::response(&req, code, None), now);
                self.end_call(&call_id);
            }
            Method::Cancel => self.on_cancel(req, key, &call_id, now),
            Method::Options => {
                let mut ok = message::response(&req, 200, Some(&self.ids.token()));
                push_allow(&mut ok);
                self.layer.respond(&key, ok, now);
            }
            _ => {
                let mut resp = message::response(&req, 405, Some(&self.ids.token()));
                push_allow(&mut resp);
                self.layer.respond(&key, resp, now);
            }
        }
    }

    fn on_invite(&mut self, req: Request, key: Key, now: Instant) {
        let Ok(call_id) = message::call_id(&req) else {
            return;
        };
        let local_tag = self.ids.token();
        let ringing = self.ringing(&key, &req, &local_tag);
        self.layer.respond(&key, ringing, now);
        let from_value = req.from_header().map(|h| h.value().to_string());
        let to_value = req.to_header().map(|h| h.value().to_string());
        let (Ok(remote_party), Ok(to_value)) = (from_value, to_value) else {
            return;
        };
        let remote_tag = message::from_tag(&req).ok().flatten();
        let call = Call {
            role: Role::Callee,
            state: CallState::Early,
            local_party: format!("{to_value};tag={local_tag}"),
            local_tag,
            remote_party: strip_tag(&remote_party).to_string(),
            remote_tag,
            remote_target: message::contact_uri(&req),
            // The callee's route set is the Record-Route list in order.
            route_set: record_routes(&req),
            local_cseq: 0,
            remote_media: parse_sdp(&req.body),
            invite: req,
            invite_key: Some(key),
            provisional: true,
            authenticated: false,
            answer_at: self.config.answer_after.map(|d| after(now, d)),
            ring_again_at: self.config.ring_every.map(|d| after(now, d)),
            ok: None,
            ack: None,
        };
        let from = message::from_uri(&call.invite)
            .map(|u| u.to_string())
            .unwrap_or_default();
        self.calls.insert(call_id.clone(), call);
        self.events.push_back(Event::IncomingCall { call_id, from });
    }

    /// Our 180 Ringing to the INVITE of server transaction `key`, the same each time it is
    /// sent; its Contact is the one for where the response goes (`externip`/`localnet`).
    fn ringing(&self, key: &Key, invite: &Request, local_tag: &str) -> Response {
        let dest = self
            .layer
            .server(key)
            .map_or(self.config.proxy.ip(), |s| s.reply_to().ip());
        let mut ringing = message::response(invite, 180, Some(local_tag));
        ringing.headers.push(Header::Contact(headers::Contact::new(
            self.contact_value_to(dest),
        )));
        ringing
    }

    /// Sends the 180 again for every call still ringing whose repeat is due.
    fn ring_again(&mut self, now: Instant) {
        let Some(every) = self.config.ring_every else {
            return;
        };
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.ring_again_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            let still_ringing = call.state == CallState::Early && call.ok.is_none();
            let key = call.invite_key.clone();
            call.ring_again_at = still_ringing.then(|| after(now, every));
            let (Some(key), true) = (key, still_ringing) else {
                continue;
            };
            let (invite, tag) = (call.invite.clone(), call.local_tag.clone());
            let ringing = self.ringing(&key, &invite, &tag);
            self.layer.respond(&key, ringing, now);
        }
    }

    fn on_cancel(&mut self, req: Request, key: Key, call_id: &str, now: Instant) {
        let invite_key = Key {
            branch: key.branch.clone(),
            method: "INVITE".into(),
        };
        let pending = self
            .layer
            .server(&invite_key)
            .is_some_and(|s| s.final_status().is_none());
        let code = if pending { 200 } else { 481 };
        self.layer
            .respond(&key, message::response(&req, code, None), now);
        if pending {
            if let Some(call) = self.calls.get(call_id) {
                let resp = message::response(&call.invite, 487, Some(&call.local_tag));
                self.layer.respond(&invite_key, resp, now);
            }
            self.end_call(call_id);
        }
    }
}

/// The CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI,
/// Call-ID, From, To, CSeq number and top Via (so it shares the branch).
pub fn cancel_for(invite: &Request) -> Request {
    let mut h = rsip::Headers::default();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        h.push(via.clone());
    }
    for x in invite.headers.iter() {
        if matches!(
            x,
            Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::Route(_)
                | Header::MaxForwards(_)
        ) {
            h.push(x.clone());
        }
    }
    let seq = message::cseq(invite).map_or(1, |(s, _)| s);
    h.push(Header::CSeq(headers::CSeq::new(format!("{seq} CANCEL"))));
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers: h,
        body: Vec::new(),
    }
}

fn strip_tag(party: &str) -> &str {
    match party.find(";tag=") {
        Some(i) => &party[..i],
        None => party,
    }
}

fn set_cseq(req: &mut Request, seq: u32, method: Method) {
    req.headers
        .unique_push(Header::CSeq(headers::CSeq::new(format!("{seq} {method}"))));
}

fn push_allow(resp: &mut Response) {
    resp.headers.push(Header::Allow(headers::Allow::new(
        "INVITE, ACK, BYE, CANCEL, OPTIONS",
    )));
}

/// Record-Route values in message order, one entry per URI.
pub(crate) fn record_routes(msg: &impl HasHeaders) -> Vec<String> {
    msg.headers()
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(r) => Some(r.value().to_string()),
            _ => None,
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Request and Response both carry a body; rsip has no trait for it.
trait Body: HasHeaders {
    fn body_mut(&mut self) -> &mut Vec<u8>;
}

impl Body for Request {
    fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }
}

impl Body for Response {
    fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }
}

fn set_sdp(msg: &mut impl Body, body: Vec<u8>) {
    msg.headers_mut()
        .push(Header::ContentType(headers::ContentType::new(
            "application/sdp",
        )));
    *msg.body_mut() = body;
}

/// The audio destination an SDP body announces: `c=` address and
/// `m=audio` port (session-level `c=` only).
pub fn parse_sdp(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip = None;
    let mut port = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("c=") {
            ip = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}
