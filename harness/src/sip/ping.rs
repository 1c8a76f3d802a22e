//! Sans-IO NAT pings from a registrar to the phones it has registered (Kamailio nathelper's
//! `natping_interval` with `sipping_method = OPTIONS`, OpenSIPS's the same): one machine, used by
//! the plain [`crate::sip::Proxy`] and, through it, by the SBC ([`crate::sbc`]).
//!
//! Every interval, each registered user gets an OPTIONS (or a bare CRLF-CRLF) from the
//! registrar's SIP socket to the address its INVITEs would go to: the binding's target. With
//! far-end Contact handling that is the REGISTER's source (received/rport), the phone's NAT
//! binding; with the Contact as written it is the phone's private address, and the ping vanishes
//! like the INVITE would — what nathelper does too when a contact has no received address.
//!
//! What a ping does to the binding depends on the router, not on the ping (measured in
//! `tests/tests/sbc.rs` and `tests/tests/sip.rs`):
//! - a router that refreshes on packets in both directions (Linux conntrack, the default here):
//!   any ping that reaches the binding refreshes it, an unanswered CRLF as well as an OPTIONS;
//! - a router that refreshes on outbound packets only ([`sim_nat::Refresh::OutboundOnly`]): the
//!   ping from outside refreshes nothing. An OPTIONS still keeps the binding because the phone
//!   *answers* it, and its 200 OK leaves from inside; a CRLF, which nobody answers, does not.
//!
//! Pings are stateless (no client transaction, no retransmission), as nathelper sends them; an
//! answer ("pong") is taken out before the proxy sees it and counted. No sockets, no clock.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::{self, Header, UntypedHeader};
use rsip::{Method, Request, Response};

use crate::sip::message::{self, Via};
use crate::sip::{after, Ids, Transmit};

/// What a registrar sends to keep the NAT bindings of its registered phones open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// An OPTIONS request every interval (nathelper's `sipping`); the phone answers.
    Options(Duration),
    /// A CRLF-CRLF every interval (RFC 5626 §3.5.1 shape, server to client); nobody answers.
    Crlf(Duration),
}

impl Ping {
    pub fn interval(self) -> Duration {
        match self {
            Ping::Options(i) | Ping::Crlf(i) => i,
        }
    }
}

/// Counters of the pinger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingStats {
    pub pings_sent: u64,
    /// OPTIONS pings answered (any final response counts: the binding carried it).
    pub pongs: u64,
}

/// What the pinger needs of one registered user at ping time: where its requests go and the
/// Request-URI they carry. The location service answers; the pinger keeps no bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    pub target: SocketAddr,
    pub uri: rsip::Uri,
}

/// The NAT pinger (see the module docs).
#[derive(Debug)]
pub struct NatPinger {
    /// The registrar's SIP socket: pings leave from it, so they travel the phone's flow.
    local: SocketAddr,
    domain: String,
    ping: Option<Ping>,
    ids: Ids,
    /// Registered users (user → where they were bound) still pinged.
    endpoints: BTreeMap<String, SocketAddr>,
    /// Outstanding OPTIONS pings of the current round: branch → user.
    outstanding: BTreeMap<String, String>,
    next: Option<Instant>,
    cseq: u32,
    transmits: VecDeque<Transmit>,
    stats: PingStats,
}

impl NatPinger {
    /// A pinger for the registrar at `local` serving `domain`; `None`: it never pings.
    pub fn new(local: SocketAddr, domain: &str, ping: Option<Ping>, seed: u64) -> Self {
        Self {
            local,
            domain: domain.into(),
            ping,
            ids: Ids::new(seed),
            endpoints: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            next: None,
            cseq: 0,
            transmits: VecDeque::new(),
            stats: PingStats::default(),
        }
    }

    pub fn ping(&self) -> Option<Ping> {
        self.ping
    }

    pub fn stats(&self) -> &PingStats {
        &self.stats
    }

    /// Registered endpoints (user → address bound) the pinger pings.
    pub fn endpoints(&self) -> &BTreeMap<String, SocketAddr> {
        &self.endpoints
    }

    /// Changes the pings from the next one on.
    pub fn set_ping(&mut self, ping: Option<Ping>, now: Instant) {
        self.ping = ping;
        self.next = match ping {
            Some(p) if !self.endpoints.is_empty() => Some(after(now, p.interval())),
            _ => None,
        };
    }

    /// The registrar bound `user` at `target`: it is pinged from the next round on (the first
    /// round one interval after the first binding).
    pub fn handle_bound(&mut self, user: &str, target: SocketAddr, now: Instant) {
        self.endpoints.insert(user.into(), target);
        if self.next.is_none() {
            self.next = self.ping.map(|p| after(now, p.interval()));
        }
    }

    /// A response reached the registrar's socket: `true` if it answers one of our pings (then
    /// it is consumed here, and no transaction should see it).
    pub fn handle_response(&mut self, resp: &Response) -> bool {
        let Some(branch) = message::top_via(resp).ok().and_then(|v| v.branch) else {
            return false;
        };
        if !self.outstanding.contains_key(&branch) {
            return false;
        }
        // A pong: the NAT binding carried the ping and its answer.
        if message::status(resp) >= 200 {
            self.outstanding.remove(&branch);
            self.stats.pongs += 1;
        }
        true
    }

    /// The deadline passed: one round of pings to every user `lookup` still finds bound at the
    /// address it was registered from (a user who moved or whose binding expired is dropped).
    pub fn handle_timeout(&mut self, now: Instant, lookup: impl Fn(&str) -> Option<PingTarget>) {
        if self.next.is_none_or(|t| t > now) {
            return;
        }
        let Some(ping) = self.ping else {
            self.next = None;
            return;
        };
        let mut targets = Vec::new();
        self.endpoints.retain(|user, bound| match lookup(user) {
            Some(t) if t.target == *bound => {
                targets.push((user.clone(), t));
                true
            }
            _ => false,
        });
        // Unanswered pings of the last round stay unanswered.
        self.outstanding.clear();
        for (user, PingTarget { target, uri }) in targets {
            let payload = match ping {
                Ping::Crlf(_) => b"\r\n\r\n".to_vec(),
                Ping::Options(_) => {
                    let (branch, req) = self.options(uri);
                    self.outstanding.insert(branch, user);
                    message::serialize(req)
                }
            };
            self.stats.pings_sent += 1;
            self.transmits.push_back(Transmit {
                source: self.local,
                destination: target,
                payload,
            });
        }
        self.next = (!self.endpoints.is_empty()).then(|| after(now, ping.interval()));
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// An out-of-dialog OPTIONS ping to `uri` (no `rport`: the registrar is not behind a NAT).
    fn options(&mut self, uri: rsip::Uri) -> (String, Request) {
        self.cseq += 1;
        let branch = self.ids.branch();
        let via = Via::udp(self.local, branch.clone(), false);
        let mut h = rsip::Headers::default();
        h.push(Header::Via(headers::Via::new(via.to_string())));
        h.push(Header::MaxForwards(headers::MaxForwards::new("70")));
        h.push(Header::From(headers::From::new(format!(
            "<sip:pinger@{}>;tag={}",
            self.domain,
            self.ids.token()
        ))));
        h.push(Header::To(headers::To::new(format!("<{uri}>"))));
        h.push(Header::CallId(headers::CallId::new(format!(
            "{}@{}",
            self.ids.token(),
            self.local.ip()
        ))));
        h.push(Header::CSeq(headers::CSeq::new(format!(
            "{} OPTIONS",
            self.cseq
        ))));
        let req = Request {
            method: Method::Options,
            uri,
            version: rsip::Version::V2,
            headers: h,
            body: Vec::new(),
        };
        (branch, req)
    }
}
