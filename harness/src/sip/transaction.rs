//! RFC 3261 §17 transactions over UDP, TCP and TLS as sans-IO state machines: client
//! INVITE (Timers A, B, D), client non-INVITE (E, F, K), server INVITE
//! (G, H, I, absorbing the ACK of a non-2xx) and server non-INVITE (J).
//!
//! A transaction never reads the clock: every input carries `now`, every
//! retransmission is a [`Transmit`] and every timer a deadline from
//! `poll_timeout`. [`Timers`] holds T1/T2/T4 so a test can scale T1 down and
//! see the 408 of Timer B (64·T1) in milliseconds of virtual time.
//! [`TransactionLayer`] multiplexes many transactions for one transaction
//! user (UA or proxy) on one socket.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::{self, Header, UntypedHeader};
use rsip::prelude::HeadersExt;
use rsip::{Method, Request, Response, SipMessage};

use crate::machine::Transport;
use crate::sip::message::{self, serialize, status};
use crate::sip::{after, earliest, Transmit};

/// RFC 3261 timer base values (§17.1.1.1, Table 4). Everything else is
/// derived: Timer B = F = H = J = 64·T1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate (RFC: 500 ms). Retransmissions start here.
    pub t1: Duration,
    /// Cap of non-INVITE and response retransmission intervals (RFC: 4 s).
    pub t2: Duration,
    /// How long a message lingers in the network (RFC: 5 s); Timers I and K.
    pub t4: Duration,
    /// Timer D: how long a client INVITE absorbs response retransmissions
    /// after a non-2xx final (RFC: at least 32 s over UDP).
    pub d: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d: Duration::from_secs(32),
        }
    }
}

impl Timers {
    /// All timers scaled in RFC proportion to `t1` (T2 = 8·T1, T4 = 10·T1,
    /// D = 64·T1), so a scenario keeps the same shape at any speed.
    pub fn scaled(t1: Duration) -> Self {
        Self {
            t1,
            t2: t1.saturating_mul(8),
            t4: t1.saturating_mul(10),
            d: t1.saturating_mul(64),
        }
    }

    /// Timer B/F/H/J: 64·T1, the transaction timeout behind every "408".
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// What identifies a transaction (RFC 3261 §17.1.3/§17.2.3): the top Via
/// branch and the method, with ACK mapped to INVITE so it finds the INVITE
/// server transaction it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub branch: String,
    /// Method name (rsip's `Method` is not `Hash`).
    pub method: String,
}

impl Key {
    /// The key of a parsed message (request or response).
    pub fn of(msg: &impl HeadersExt) -> Option<Key> {
        let branch = message::top_via(msg).ok()?.branch?;
        let (_, method) = message::cseq(msg).ok()?;
        let method = if method == Method::Ack {
            Method::Invite
        } else {
            method
        };
        Some(Key {
            branch,
            method: method.to_string(),
        })
    }
}

/// The three timers every RFC 3261 §17 transaction runs, INVITE or not, client or server:
/// retransmission (A, E, G), transaction timeout (B, F, H) and linger (D, K, I, J). Only how the
/// retransmission interval grows differs between them, so that is the one thing
/// [`Schedule::fire`] is told.
#[derive(Debug)]
struct Schedule {
    /// The current retransmission interval.
    interval: Duration,
    /// Timer A / E / G.
    retransmit_at: Option<Instant>,
    /// Timer B / F / H.
    timeout_at: Option<Instant>,
    /// Timer D / K / I / J.
    linger_until: Option<Instant>,
    /// Over TCP or TLS (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): the transport
    /// delivers or fails, so nothing is retransmitted and nothing lingers for retransmissions
    /// (Timers A, E, G off; D, I, J, K zero). Timers B, F and H still run.
    reliable: bool,
}

/// What fired at one [`Schedule::fire`].
#[derive(Debug, Clone, Copy)]
struct Fired {
    /// The transaction timed out (B, F or H); nothing else runs.
    timed_out: bool,
    /// A retransmission is due.
    retransmit: bool,
    /// The transaction is over: timed out, or done lingering.
    ended: bool,
}

impl Schedule {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            retransmit_at: None,
            timeout_at: None,
            linger_until: None,
            reliable: false,
        }
    }

    /// Starts lingering (Timer D, I, J or K) for `d`, or not at all over a reliable transport.
    fn linger(&mut self, now: Instant, d: Duration) {
        self.linger_until = Some(if self.reliable { now } else { after(now, d) });
    }

    /// Arms the retransmission timer (A, E or G) unless the transport is reliable.
    fn retransmit_in(&mut self, now: Instant, d: Duration) {
        self.retransmit_at = (!self.reliable).then(|| after(now, d));
    }

    /// Stops retransmitting and the transaction timeout (a final response, or an ACK).
    fn stop(&mut self) {
        self.retransmit_at = None;
        self.timeout_at = None;
    }

    /// Runs the timers due at `now`: the timeout wins; a due retransmission re-arms with the
    /// interval `grow` makes of the current one; a due linger ends.
    fn fire(&mut self, now: Instant, grow: impl FnOnce(Duration) -> Duration) -> Fired {
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.stop();
            return Fired {
                timed_out: true,
                retransmit: false,
                ended: true,
            };
        }
        let retransmit = self.retransmit_at.is_some_and(|t| t <= now);
        if retransmit {
            self.interval = grow(self.interval);
            self.retransmit_at = Some(after(now, self.interval));
        }
        let lingered = self.linger_until.is_some_and(|t| t <= now);
        if lingered {
            self.linger_until = None;
        }
        Fired {
            timed_out: false,
            retransmit,
            ended: lingered,
        }
    }

    fn next(&self) -> Option<Instant> {
        earliest(
            earliest(self.retransmit_at, self.timeout_at),
            self.linger_until,
        )
    }
}

/// A transaction's outputs: datagrams on its one flow (`source` → `destination`) and events.
#[derive(Debug)]
struct Outbox<E> {
    source: SocketAddr,
    destination: SocketAddr,
    transmits: VecDeque<Transmit>,
    events: VecDeque<E>,
}

impl<E> Outbox<E> {
    fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        Self {
            source,
            destination,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether a datagram or an event waits to be handed out.
    fn busy(&self) -> bool {
        !self.transmits.is_empty() || !self.events.is_empty()
    }

    fn send(&mut self, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            source: self.source,
            destination: self.destination,
            payload,
        });
    }

    /// Acts on what fired: sends `resend` (the retransmission, if one was due), reports
    /// `timeout` if the transaction timed out; whether the transaction is over.
    fn apply(&mut self, fired: Fired, resend: Option<Vec<u8>>, timeout: E) -> bool {
        if let Some(payload) = resend.filter(|_| fired.retransmit) {
            self.send(payload);
        }
        if fired.timed_out {
            self.events.push_back(timeout);
        }
        fired.ended
    }
}

/// What a client transaction tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A response to pass up (first copy of each; retransmissions of a
    /// final response are absorbed).
    Response(Response),
    /// Timer B (INVITE) or F (non-INVITE) fired without a final response.
    /// RFC 3261 §8.1.3.1: the TU treats this as a 408 Request Timeout.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE "Calling" / non-INVITE "Trying".
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// One client transaction: the request, its retransmission schedule and
/// its timeout.
#[derive(Debug)]
pub struct ClientTransaction {
    key: Key,
    request: Request,
    bytes: Vec<u8>,
    timers: Timers,
    state: ClientState,
    /// Timers A, B and D (INVITE) or E, F and K.
    schedule: Schedule,
    ack: Option<Vec<u8>>,
    out: Outbox<ClientEvent>,
}

impl ClientTransaction {
    /// Starts the transaction and queues the first transmission. The
    /// request must carry a top Via with a branch and a CSeq.
    pub fn new(
        request: Request,
        source: SocketAddr,
        destination: SocketAddr,
        timers: Timers,
        now: Instant,
    ) -> Option<Self> {
        let key = Key::of(&request)?;
        let bytes = serialize(request.clone());
        let schedule = Schedule {
            retransmit_at: Some(after(now, timers.t1)),
            timeout_at: Some(after(now, timers.timeout())),
            ..Schedule::new(timers.t1)
        };
        let mut tx = Self {
            key,
            request,
            bytes,
            timers,
            state: ClientState::Calling,
            schedule,
            ack: None,
            out: Outbox::new(source, destination),
        };
        tx.out.send(tx.bytes.clone());
        Some(tx)
    }

    /// The same transaction over TCP or TLS: no retransmissions, no lingering.
    pub fn over_reliable_transport(mut self) -> Self {
        self.schedule.reliable = true;
        self.schedule.retransmit_at = None;
        self
    }

    fn is_invite(&self) -> bool {
        self.key.method == "INVITE"
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn destination(&self) -> SocketAddr {
        self.out.destination
    }

    /// A response matching this transaction arrived.
    pub fn handle_response(&mut self, response: Response, now: Instant) {
        let code = status(&response);
        match self.state {
            ClientState::Calling | ClientState::Proceeding if code < 200 => {
                if self.state == ClientState::Calling {
                    self.state = ClientState::Proceeding;
                    if self.is_invite() {
                        // RFC 3261 §17.1.1.2: stop A and B; a proxy that
                        // needs a bound sets its own Timer C.
                        self.schedule.stop();
                    } else {
                        self.schedule.interval = self.timers.t2;
                        self.schedule.retransmit_in(now, self.timers.t2);
                    }
                }
                self.out.events.push_back(ClientEvent::Response(response));
            }
            ClientState::Calling | ClientState::Proceeding => {
                self.schedule.stop();
                if self.is_invite() && code < 300 {
                    // 2xx: the TU ACKs end to end; retransmitted 2xx reach
                    // it as stray responses.
                    self.state = ClientState::Terminated;
                } else {
                    if self.is_invite() {
                        let ack = serialize(non_2xx_ack(&self.request, &response));
                        self.out.send(ack.clone());
                        self.ack = Some(ack);
                        self.schedule.linger(now, self.timers.d);
                    } else {
                        self.schedule.linger(now, self.timers.t4);
                    }
                    self.state = ClientState::Completed;
                }
                self.out.events.push_back(ClientEvent::Response(response));
            }
            ClientState::Completed => {
                // A retransmitted final response: our ACK was lost.
                if let Some(ack) = self.ack.clone() {
                    self.out.send(ack);
                }
            }
            ClientState::Terminated => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let (invite, proceeding, t2) = (
            self.is_invite(),
            self.state == ClientState::Proceeding,
            self.timers.t2,
        );
        let grow = |interval: Duration| {
            if invite {
                // Timer A doubles without a cap.
                interval.saturating_mul(2)
            } else if proceeding {
                t2
            } else {
                interval.saturating_mul(2).min(t2)
            }
        };
        let fired = self.schedule.fire(now, grow);
        let resend = fired.retransmit.then(|| self.bytes.clone());
        if self.out.apply(fired, resend, ClientEvent::Timeout) {
            self.state = ClientState::Terminated;
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.out.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.next()
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

/// The ACK a client INVITE transaction sends for a 3xx–6xx (RFC 3261
/// §17.1.1.3): same Request-URI, Call-ID, From, CSeq number and top Via as
/// the INVITE, To (with tag) from the response, Routes from the INVITE.
pub fn non_2xx_ack(invite: &Request, response: &Response) -> Request {
    let mut headers = rsip::Headers::default();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for h in invite.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    if let Ok(to) = response.to_header() {
        headers.push(Header::To(to.clone()));
    }
    let seq = message::cseq(invite).map_or(1, |(s, _)| s);
    headers.push(Header::CSeq(headers::CSeq::new(format!("{seq} ACK"))));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// What a server transaction tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H fired: a 3xx–6xx to an INVITE was never ACKed.
    NoAck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE "Trying" (no response yet); INVITE starts in Proceeding.
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: the ACK arrived; Timer I absorbs ACK retransmissions.
    Confirmed,
    Terminated,
}

/// One server transaction: absorbs request retransmissions by repeating
/// the last response, retransmits an INVITE's final error until ACKed.
#[derive(Debug)]
pub struct ServerTransaction {
    key: Key,
    request: Request,
    timers: Timers,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    final_status: Option<u16>,
    /// Timers G, H and I (INVITE) or J.
    schedule: Schedule,
    /// Responses go from the socket the request arrived on to `reply_to`.
    out: Outbox<ServerEvent>,
}

impl ServerTransaction {
    /// A new request arrived on `local`; responses will go to `reply_to`
    /// (computed by the TU from the Via, which is where NAT handling lives).
    pub fn new(
        request: Request,
        local: SocketAddr,
        reply_to: SocketAddr,
        timers: Timers,
    ) -> Option<Self> {
        let key = Key::of(&request)?;
        let state = if key.method == "INVITE" {
            ServerState::Proceeding
        } else {
            ServerState::Trying
        };
        Some(Self {
            key,
            request,
            timers,
            state,
            last_response: None,
            final_status: None,
            schedule: Schedule::new(timers.t1),
            out: Outbox::new(local, reply_to),
        })
    }

    /// The same transaction over TCP or TLS: no retransmissions, no lingering.
    pub fn over_reliable_transport(mut self) -> Self {
        self.schedule.reliable = true;
        self
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn reply_to(&self) -> SocketAddr {
        self.out.destination
    }

    /// The final status sent, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// The TU sends a response through this transaction.
    pub fn respond(&mut self, response: Response, now: Instant) {
        if matches!(
            self.state,
            ServerState::Completed | ServerState::Confirmed | ServerState::Terminated
        ) {
            return;
        }
        let code = status(&response);
        let bytes = serialize(response);
        self.out.send(bytes.clone());
        self.last_response = Some(bytes);
        if code < 200 {
            self.state = ServerState::Proceeding;
            return;
        }
        self.final_status = Some(code);
        let invite = self.key.method == "INVITE";
        if invite && code < 300 {
            // RFC 3261 §17.2.1: the TU retransmits 2xx until the ACK. The
            // layer keeps the terminated transaction for 64·T1 so the
            // INVITE's retransmissions are still absorbed.
            self.state = ServerState::Terminated;
            self.schedule.linger(now, self.timers.timeout());
        } else if invite {
            self.state = ServerState::Completed;
            self.schedule.retransmit_in(now, self.timers.t1);
            self.schedule.timeout_at = Some(after(now, self.timers.timeout()));
        } else {
            self.state = ServerState::Completed;
            self.schedule.linger(now, self.timers.timeout());
        }
    }

    /// A request matching this transaction arrived: a retransmission, or
    /// the ACK of a non-2xx final.
    pub fn handle_request(&mut self, request: &Request, now: Instant) {
        if request.method == Method::Ack {
            if self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                self.schedule.stop();
                self.schedule.linger(now, self.timers.t4);
            }
            return;
        }
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            self.resend_last();
        }
    }

    fn resend_last(&mut self) {
        if let Some(last) = self.last_response.clone() {
            self.out.send(last);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.timers.t2;
        // Timer G doubles up to T2.
        let fired = self.schedule.fire(now, |i| i.saturating_mul(2).min(t2));
        let resend = fired
            .retransmit
            .then(|| self.last_response.clone())
            .flatten();
        if self.out.apply(fired, resend, ServerEvent::NoAck) {
            self.state = ServerState::Terminated;
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.out.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.next()
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

/// What the [`TransactionLayer`] hands its transaction user.
#[derive(Debug, Clone, PartialEq)]
pub enum TransactionEvent {
    /// A client transaction passed up a response.
    Response { key: Key, response: Response },
    /// A client transaction timed out (Timer B/F); `request` is what it sent.
    Timeout { key: Key, request: Request },
    /// A response no client transaction claims: a retransmitted 2xx to an
    /// INVITE (its transaction ended on the first 2xx).
    Stray(Response),
    /// A server INVITE transaction's final error was never ACKed (Timer H).
    NoAck { key: Key },
}

/// All transactions of one transaction user on one socket.
#[derive(Debug)]
pub struct TransactionLayer {
    local: SocketAddr,
    timers: Timers,
    /// Peers reached over a stream flow (TCP, TLS), by address; everything else is UDP.
    flows: HashMap<SocketAddr, Transport>,
    clients: HashMap<Key, ClientTransaction>,
    servers: HashMap<Key, ServerTransaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TransactionEvent>,
}

impl TransactionLayer {
    pub fn new(local: SocketAddr, timers: Timers) -> Self {
        Self {
            local,
            timers,
            flows: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// From now on, what goes to `remote` goes over `transport` (a message arrived from it on a
    /// TCP connection, or a phone's configured transport to its proxy); UDP forgets it.
    pub fn set_flow(&mut self, remote: SocketAddr, transport: Transport) {
        if transport == Transport::Udp {
            self.flows.remove(&remote);
        } else {
            self.flows.insert(remote, transport);
        }
    }

    /// A message arrived from `remote` over `transport`: a stream flow is remembered (UDP
    /// changes nothing, so a peer's stream flow outlives a stray datagram from it).
    pub fn note_flow(&mut self, remote: SocketAddr, transport: Transport) {
        if transport.is_reliable() {
            self.flows.insert(remote, transport);
        }
    }

    /// The transport towards `remote`: the stream flow known for it, else UDP.
    pub fn transport_to(&self, remote: SocketAddr) -> Transport {
        self.flows.get(&remote).copied().unwrap_or_default()
    }

    /// Whether a transaction still has something to send or is owed something by a timer: a
    /// request being retransmitted or timing out (Timers A/B, E/F), a request its TU has not
    /// answered yet, or an INVITE answered with an error and not yet ACKed. Absorbing
    /// retransmissions (Timers D, I, J, K) is not pending, and neither is an INVITE in
    /// Proceeding: RFC 3261 gives it no timer, so only someone else's pending answer can end it.
    /// When no machine is pending, a run may end without cutting a story short.
    pub fn pending(&self) -> bool {
        let client = |c: &ClientTransaction| match c.state() {
            ClientState::Calling => true,
            ClientState::Proceeding => c.request().method != Method::Invite,
            ClientState::Completed | ClientState::Terminated => false,
        };
        let server = |s: &ServerTransaction| match s.state() {
            ServerState::Trying | ServerState::Proceeding => true,
            ServerState::Completed => s.request().method == Method::Invite,
            ServerState::Confirmed | ServerState::Terminated => false,
        };
        self.clients.values().any(client) || self.servers.values().any(server)
    }

    /// Starts a client transaction for `request` toward `destination`.
    /// `None` if the request has no branch/CSeq (a bug in the caller).
    pub fn send_request(
        &mut self,
        request: Request,
        destination: SocketAddr,
        now: Instant,
    ) -> Option<Key> {
        let mut tx = ClientTransaction::new(request, self.local, destination, self.timers, now)?;
        if self.transport_to(destination).is_reliable() {
            tx = tx.over_reliable_transport();
        }
        let key = tx.key.clone();
        self.clients.insert(key.clone(), tx);
        self.collect();
        Some(key)
    }

    /// Sends raw bytes outside any transaction (CRLF keep-alive).
    pub fn send_raw(&mut self, payload: Vec<u8>, destination: SocketAddr) {
        self.transmits.push_back(Transmit {
            source: self.local,
            destination,
            payload,
        });
    }

    /// Sends a message outside any transaction (ACK of a 2xx, a stateless
    /// forward, a 2xx retransmission).
    pub fn send_stateless(&mut self, msg: impl Into<SipMessage>, destination: SocketAddr) {
        self.transmits.push_back(Transmit {
            source: self.local,
            destination,
            payload: serialize(msg),
        });
    }

    /// A request arrived. Returns it if it starts something new for the
    /// TU; `None` if a server transaction absorbed it (retransmission, or
    /// ACK of a non-2xx). The TU must then call [`Self::accept`] for
    /// requests other than ACK.
    pub fn handle_request(&mut self, request: Request, now: Instant) -> Option<Request> {
        let key = Key::of(&request)?;
        if let Some(tx) = self.servers.get_mut(&key) {
            let ack_of_2xx = request.method == Method::Ack && tx.state() == ServerState::Terminated;
            if !ack_of_2xx {
                tx.handle_request(&request, now);
                self.collect();
                return None;
            }
        }
        Some(request)
    }

    /// Creates the server transaction for a new request; responses go to `reply_to`.
    pub fn accept(&mut self, request: &Request, reply_to: SocketAddr) -> Option<Key> {
        let mut tx = ServerTransaction::new(request.clone(), self.local, reply_to, self.timers)?;
        if self.transport_to(reply_to).is_reliable() {
            tx = tx.over_reliable_transport();
        }
        let key = tx.key.clone();
        self.servers.insert(key.clone(), tx);
        Some(key)
    }

    /// Sends `response` through the server transaction `key`.
    pub fn respond(&mut self, key: &Key, response: Response, now: Instant) {
        if let Some(tx) = self.servers.get_mut(key) {
            tx.respond(response, now);
        }
        self.collect();
    }

    pub fn server(&self, key: &Key) -> Option<&ServerTransaction> {
        self.servers.get(key)
    }

    pub fn client(&self, key: &Key) -> Option<&ClientTransaction> {
        self.clients.get(key)
    }

    /// A response arrived.
    pub fn handle_response(&mut self, response: Response, now: Instant) {
        match Key::of(&response).and_then(|k| self.clients.get_mut(&k)) {
            Some(tx) => tx.handle_response(response, now),
            None => self.events.push_back(TransactionEvent::Stray(response)),
        }
        self.collect();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for tx in self.clients.values_mut() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                tx.handle_timeout(now);
            }
        }
        for tx in self.servers.values_mut() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                tx.handle_timeout(now);
            }
        }
        self.collect();
    }

    /// Moves every transaction's outputs into the layer's queues and
    /// forgets terminated transactions. Sorted by key so the order of
    /// outputs does not depend on hash order (reproducible traces).
    fn collect(&mut self) {
        // Only transactions with something to hand out or to remove (cloning every key on
        // every input was a tenth of a model run); in branch order, as before.
        let mut keys: Vec<Key> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.out.busy() || tx.is_terminated())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_by(|a, b| a.branch.cmp(&b.branch));
        for key in keys {
            let Some(tx) = self.clients.get_mut(&key) else {
                continue;
            };
            while let Some(t) = tx.poll_transmit() {
                self.transmits.push_back(t);
            }
            while let Some(e) = tx.poll_event() {
                self.events.push_back(match e {
                    ClientEvent::Response(response) => TransactionEvent::Response {
                        key: key.clone(),
                        response,
                    },
                    ClientEvent::Timeout => TransactionEvent::Timeout {
                        key: key.clone(),
                        request: tx.request.clone(),
                    },
                });
            }
            if tx.is_terminated() {
                self.clients.remove(&key);
            }
        }
        let mut keys: Vec<Key> = self
            .servers
            .iter()
            .filter(|(_, tx)| {
                tx.out.busy() || (tx.is_terminated() && tx.schedule.linger_until.is_none())
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_by(|a, b| a.branch.cmp(&b.branch));
        for key in keys {
            let Some(tx) = self.servers.get_mut(&key) else {
                continue;
            };
            while let Some(t) = tx.poll_transmit() {
                self.transmits.push_back(t);
            }
            while let Some(ServerEvent::NoAck) = tx.poll_event() {
                self.events
                    .push_back(TransactionEvent::NoAck { key: key.clone() });
            }
            if tx.is_terminated() && tx.schedule.linger_until.is_none() {
                self.servers.remove(&key);
            }
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|t| t.poll_timeout())
            .chain(self.servers.values().filter_map(|t| t.poll_timeout()))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;

    const INVITE: &str = "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc\r\n\
To: <sip:bob@192.0.2.20>\r\n\
From: <sip:alice@192.0.2.10>;tag=a1\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn req(raw: &str) -> Request {
        match parse(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Steps the transaction's own deadlines until `until`, recording the
    /// offset of every transmission.
    fn run(tx: &mut ClientTransaction, start: Instant, until: Duration) -> Vec<Duration> {
        let mut sent = Vec::new();
        while tx.poll_transmit().is_some() {
            sent.push(Duration::ZERO);
        }
        while let Some(at) = tx.poll_timeout() {
            if at > start + until {
                break;
            }
            tx.handle_timeout(at);
            while tx.poll_transmit().is_some() {
                sent.push(at - start);
            }
        }
        sent
    }

    #[test]
    fn an_unanswered_invite_is_resent_doubling_over_udp_sent_once_over_tcp_and_times_out_at_64_t1()
    {
        let t1 = Duration::from_millis(10);
        let doubling: Vec<Duration> = [0, 1, 3, 7, 15, 31, 63].iter().map(|k| t1 * *k).collect();
        for (reliable, expected) in [(false, doubling), (true, vec![Duration::ZERO])] {
            let now = Instant::now();
            let mut tx = ClientTransaction::new(
                req(INVITE),
                addr("192.0.2.10:5060"),
                addr("192.0.2.20:5060"),
                Timers::scaled(t1),
                now,
            )
            .unwrap();
            if reliable {
                tx = tx.over_reliable_transport();
            }
            assert_eq!(run(&mut tx, now, Duration::from_secs(10)), expected);
            assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
            assert!(tx.is_terminated());
        }
    }

    #[test]
    fn a_layer_sends_to_a_known_flow_reliably_and_answers_its_error_once_until_timer_h() {
        let t1 = Duration::from_millis(10);
        let now = Instant::now();
        let peer = addr("192.0.2.10:5060");
        let mut layer = TransactionLayer::new(addr("192.0.2.20:5060"), Timers::scaled(t1));
        layer.set_flow(peer, Transport::Tcp);
        assert_eq!(layer.transport_to(peer), Transport::Tcp);
        assert_eq!(layer.transport_to(addr("192.0.2.11:5060")), Transport::Udp);
        let invite = req(INVITE);
        let key = layer.accept(&invite, peer).unwrap();
        layer.respond(&key, message::response(&invite, 486, Some("t")), now);
        assert!(layer.poll_transmit().is_some());
        // No Timer G over TCP: the 486 is not repeated while the ACK is awaited.
        let mut at = now;
        while let Some(next) = layer.poll_timeout() {
            at = next;
            layer.handle_timeout(at);
            assert!(
                layer.poll_transmit().is_none(),
                "retransmitted at {:?}",
                at - now
            );
        }
        assert_eq!(at - now, t1 * 64, "Timer H still runs");
        assert!(matches!(
            layer.poll_event(),
            Some(TransactionEvent::NoAck { .. })
        ));
    }

    #[test]
    fn a_provisional_response_stops_invite_retransmissions_and_timer_b() {
        let timers = Timers::scaled(Duration::from_millis(10));
        let now = Instant::now();
        let mut tx = ClientTransaction::new(
            req(INVITE),
            addr("192.0.2.10:5060"),
            addr("192.0.2.20:5060"),
            timers,
            now,
        )
        .unwrap();
        let trying = message::response(&req(INVITE), 100, None);
        tx.handle_response(trying, now);
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.state(), ClientState::Proceeding);
    }

    #[test]
    fn a_non_2xx_final_is_acked_by_the_transaction_and_its_retransmission_re_acked() {
        let now = Instant::now();
        let mut tx = ClientTransaction::new(
            req(INVITE),
            addr("192.0.2.10:5060"),
            addr("192.0.2.20:5060"),
            Timers::default(),
            now,
        )
        .unwrap();
        let _ = tx.poll_transmit();
        let busy = message::response(&req(INVITE), 486, Some("b1"));
        tx.handle_response(busy.clone(), now);
        let ack = parse(&tx.poll_transmit().unwrap().payload).unwrap();
        let SipMessage::Request(ack) = ack else {
            panic!("not a request")
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(message::to_tag(&ack).unwrap().as_deref(), Some("b1"));
        assert_eq!(
            message::top_via(&ack).unwrap().branch.as_deref(),
            Some("z9hG4bKabc")
        );
        assert!(matches!(tx.poll_event(), Some(ClientEvent::Response(_))));
        tx.handle_response(busy, now);
        assert!(tx.poll_transmit().is_some());
        assert_eq!(tx.poll_event(), None);
        tx.handle_timeout(now + Duration::from_secs(32));
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_retransmissions_are_capped_at_t2_and_time_out_at_64_t1() {
        let raw = INVITE
            .replace("INVITE sip", "OPTIONS sip")
            .replace("1 INVITE", "1 OPTIONS");
        let timers = Timers::scaled(Duration::from_millis(10));
        let now = Instant::now();
        let mut tx = ClientTransaction::new(
            req(&raw),
            addr("192.0.2.10:5060"),
            addr("192.0.2.20:5060"),
            timers,
            now,
        )
        .unwrap();
        let sent = run(&mut tx, now, Duration::from_secs(10));
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..4], [10, 20, 40, 80].map(Duration::from_millis));
        assert!(gaps.iter().all(|g| *g <= timers.t2));
        assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
    }

    #[test]
    fn a_server_invite_retransmits_its_error_until_the_ack_and_absorbs_the_ack() {
        let timers = Timers::scaled(Duration::from_millis(10));
        let now = Instant::now();
        let mut layer = TransactionLayer::new(addr("192.0.2.20:5060"), timers);
        let invite = layer.handle_request(req(INVITE), now).unwrap();
        let key = layer.accept(&invite, addr("192.0.2.10:5060")).unwrap();
        layer.respond(&key, message::response(&invite, 486, Some("b1")), now);
        assert!(layer.poll_transmit().is_some());
        // A retransmitted INVITE is answered from the transaction.
        assert!(layer.handle_request(req(INVITE), now).is_none());
        assert!(layer.poll_transmit().is_some());
        // Timer G.
        let g = layer.poll_timeout().unwrap();
        assert_eq!(g - now, timers.t1);
        layer.handle_timeout(g);
        assert!(layer.poll_transmit().is_some());
        let ack = non_2xx_ack(&invite, &message::response(&invite, 486, Some("b1")));
        assert!(layer.handle_request(ack, g).is_none());
        assert_eq!(layer.server(&key).unwrap().state(), ServerState::Confirmed);
        layer.handle_timeout(g + timers.t4);
        assert!(layer.server(&key).is_none());
        assert_eq!(layer.poll_event(), None);
    }

    #[test]
    fn an_unacked_server_error_ends_with_timer_h() {
        let timers = Timers::scaled(Duration::from_millis(10));
        let now = Instant::now();
        let mut layer = TransactionLayer::new(addr("192.0.2.20:5060"), timers);
        let invite = layer.handle_request(req(INVITE), now).unwrap();
        let key = layer.accept(&invite, addr("192.0.2.10:5060")).unwrap();
        layer.respond(&key, message::response(&invite, 480, Some("b1")), now);
        while let Some(t) = layer.poll_timeout() {
            layer.handle_timeout(t);
        }
        assert_eq!(layer.poll_event(), Some(TransactionEvent::NoAck { key }));
    }
}
