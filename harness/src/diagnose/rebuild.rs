//! Decoded packets → what happened: SIP messages grouped into transactions (with their
//! retransmissions), calls with offer and answer, registrations, STUN exchanges, media flows and
//! ICMP errors. Sans-IO; media is kept as counters per flow, so a long capture costs memory in
//! proportion to its signalling, not to its RTP.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use super::{fields, Packet};
use crate::stun::codec::Class;
use crate::trace::{IcmpSummary, Payload, SipSummary};

/// One SIP message and where it was seen.
#[derive(Debug, Clone)]
pub struct Sip {
    pub frame: u64,
    pub at: SystemTime,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub msg: SipSummary,
}

/// A transaction (RFC 3261 §17): Call-ID, CSeq and top-Via branch, seen from one sender to one
/// receiver; every copy of the request and every response.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Indexes into [`Model::sip`]: the request and its retransmissions, in order.
    pub requests: Vec<usize>,
    /// Indexes into [`Model::sip`]: responses, in order.
    pub responses: Vec<usize>,
}

/// A STUN request and its success response.
#[derive(Debug, Clone)]
pub struct StunExchange {
    pub request_frame: u64,
    pub response_frame: u64,
    pub at: SystemTime,
    /// Where the request came from, as this capture saw it.
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    /// XOR-MAPPED-ADDRESS: where the server saw it come from.
    pub mapped: SocketAddrV4,
}

/// Media packets between two transport addresses, in one direction.
#[derive(Debug, Clone)]
pub struct Flow {
    pub packets: u64,
    pub first_frame: u64,
    pub first_at: SystemTime,
    pub last_at: SystemTime,
}

/// An ICMP error and the UDP datagram it quotes.
#[derive(Debug, Clone)]
pub struct IcmpError {
    pub frame: u64,
    pub at: SystemTime,
    pub from: Ipv4Addr,
    pub icmp: IcmpSummary,
}

/// An INVITE dialog: who offered what, who answered what.
#[derive(Debug, Clone)]
pub struct Call {
    pub call_id: String,
    /// Index into [`Model::sip`] of the first INVITE.
    pub invite: usize,
    /// The first INVITE carrying SDP and its media address.
    pub offer: Option<(usize, SocketAddrV4)>,
    /// The first 2xx to INVITE carrying SDP and its media address.
    pub answer: Option<(usize, SocketAddrV4)>,
    /// The first 2xx to INVITE, with or without SDP.
    pub ok: Option<usize>,
    pub ack: Option<usize>,
    /// The final status of the first INVITE transaction that got one.
    pub final_status: Option<u16>,
}

/// A REGISTER transaction: from where, with which Contact, and how it ended.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Index into [`Model::sip`] of the first REGISTER copy.
    pub request: usize,
    pub contact: Option<SocketAddrV4>,
    pub expires: Option<u32>,
    pub status: Option<u16>,
}

/// Everything rebuilt from one capture.
#[derive(Debug, Default)]
pub struct Model {
    pub frames: u64,
    pub datagrams: u64,
    pub start: Option<SystemTime>,
    pub sip: Vec<Sip>,
    /// Keyed by (Call-ID, CSeq, branch, sender, receiver).
    pub transactions: BTreeMap<TxKey, Transaction>,
    pub stun: Vec<StunExchange>,
    /// RTP, RTCP and TURN-wrapped media, keyed by (source, destination).
    pub media: BTreeMap<(SocketAddrV4, SocketAddrV4), Flow>,
    pub icmp: Vec<IcmpError>,
    /// Signalling-plane packets (SIP, STUN, keep-alives) from each source: frame and time.
    /// Media is left out, so this stays small; it tells how long an address was silent.
    pub activity: HashMap<SocketAddrV4, Vec<(u64, SystemTime)>>,
}

/// (Call-ID, CSeq text, top-Via branch, request sender, request receiver).
pub type TxKey = (String, String, String, SocketAddrV4, SocketAddrV4);

impl Model {
    pub fn build(packets: impl IntoIterator<Item = Packet>) -> Model {
        let mut m = Model::default();
        let mut stun_requests: HashMap<[u8; 12], (u64, SocketAddrV4, SocketAddrV4)> =
            HashMap::new();
        for p in packets {
            m.datagrams += 1;
            m.frames = m.frames.max(p.frame);
            m.start.get_or_insert(p.at);
            match p.payload {
                Payload::Sip(msg) => {
                    m.activity.entry(p.src).or_default().push((p.frame, p.at));
                    m.add_sip(Sip {
                        frame: p.frame,
                        at: p.at,
                        src: p.src,
                        dst: p.dst,
                        msg: *msg,
                    });
                }
                Payload::KeepAlive => {
                    m.activity.entry(p.src).or_default().push((p.frame, p.at));
                }
                Payload::Stun(s) => {
                    let is_media = s.method == "Send" || s.method == "Data";
                    if is_media {
                        m.add_media(&p.src, &p.dst, p.frame, p.at);
                        continue;
                    }
                    m.activity.entry(p.src).or_default().push((p.frame, p.at));
                    match s.class {
                        Class::Request => {
                            stun_requests.insert(s.transaction, (p.frame, p.src, p.dst));
                        }
                        Class::SuccessResponse => {
                            let mapped = match s.mapped {
                                Some(std::net::SocketAddr::V4(a)) => a,
                                _ => continue,
                            };
                            if let Some((request_frame, client, server)) =
                                stun_requests.remove(&s.transaction)
                            {
                                m.stun.push(StunExchange {
                                    request_frame,
                                    response_frame: p.frame,
                                    at: p.at,
                                    client,
                                    server,
                                    mapped,
                                });
                            }
                        }
                        _ => {}
                    }
                }
                Payload::Rtp { .. } | Payload::ChannelData { .. } => {
                    m.add_media(&p.src, &p.dst, p.frame, p.at)
                }
                Payload::Icmp(icmp) => m.icmp.push(IcmpError {
                    frame: p.frame,
                    at: p.at,
                    from: *p.src.ip(),
                    icmp,
                }),
                Payload::Rtcp { .. }
                | Payload::Udp { .. }
                | Payload::Tcp { .. }
                | Payload::Tls { .. } => {}
            }
        }
        m
    }

    fn add_media(&mut self, src: &SocketAddrV4, dst: &SocketAddrV4, frame: u64, at: SystemTime) {
        let f = self.media.entry((*src, *dst)).or_insert(Flow {
            packets: 0,
            first_frame: frame,
            first_at: at,
            last_at: at,
        });
        f.packets += 1;
        f.last_at = at;
    }

    fn add_sip(&mut self, s: Sip) {
        let i = self.sip.len();
        let call_id = s.msg.call_id.clone().unwrap_or_default();
        let cseq = s.msg.cseq.clone().unwrap_or_default();
        let branch = fields::top_via(&s.msg)
            .and_then(|v| v.branch)
            .unwrap_or_default();
        if s.msg.is_response() {
            // A response travels the other way: its transaction was sent dst → src.
            let key = (call_id, cseq, branch, s.dst, s.src);
            let key = if self.transactions.contains_key(&key) {
                key
            } else {
                // Seen only the response (the capture missed the request, or a proxy answers
                // from another address): find the request by everything but the addresses.
                self.transactions
                    .keys()
                    .find(|k| k.0 == key.0 && k.1 == key.1 && k.2 == key.2)
                    .cloned()
                    .unwrap_or(key)
            };
            self.transactions
                .entry(key)
                .or_insert(Transaction {
                    requests: Vec::new(),
                    responses: Vec::new(),
                })
                .responses
                .push(i);
        } else {
            // ACK to a 2xx is its own transaction; like any request it is keyed by its branch.
            let key = (call_id, cseq, branch, s.src, s.dst);
            self.transactions
                .entry(key)
                .or_insert(Transaction {
                    requests: Vec::new(),
                    responses: Vec::new(),
                })
                .requests
                .push(i);
        }
        self.sip.push(s);
    }

    /// Seconds since the capture's first packet.
    pub fn t(&self, at: SystemTime) -> f64 {
        self.start
            .and_then(|s| at.duration_since(s).ok())
            .unwrap_or_default()
            .as_secs_f64()
    }

    pub fn dialogs(&self) -> usize {
        let mut ids: Vec<&str> = self
            .sip
            .iter()
            .filter_map(|s| s.msg.call_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn rtp_packets(&self) -> u64 {
        self.media.values().map(|f| f.packets).sum()
    }

    /// The final response (≥ 200) of a transaction, if one was seen.
    pub fn final_response(&self, t: &Transaction) -> Option<&Sip> {
        t.responses
            .iter()
            .map(|&i| &self.sip[i])
            .find(|s| s.msg.status().is_some_and(|c| c >= 200))
    }

    /// Every REGISTER transaction.
    pub fn registrations(&self) -> Vec<Registration> {
        self.transactions
            .values()
            .filter(|t| {
                t.requests
                    .first()
                    .is_some_and(|&i| self.sip[i].msg.method_or_status() == "REGISTER")
            })
            .map(|t| {
                let r = &self.sip[t.requests[0]].msg;
                Registration {
                    request: t.requests[0],
                    contact: fields::contact_addr(r),
                    expires: fields::expires(r),
                    status: self.final_response(t).and_then(|s| s.msg.status()),
                }
            })
            .collect()
    }

    /// Every INVITE dialog, by Call-ID, in order of its first INVITE.
    pub fn calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = Vec::new();
        // Call-ID → index in `calls`: a lookup per message, not a scan of every call so far.
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.sip.iter().enumerate() {
            let Some(call_id) = s.msg.call_id.as_deref() else {
                continue;
            };
            let method = s.msg.cseq_parts().map(|(_, m)| m).unwrap_or("");
            let pos = by_id.get(call_id).copied();
            let is_invite = !s.msg.is_response() && s.msg.method_or_status() == "INVITE";
            let c = match pos {
                Some(p) => &mut calls[p],
                None if is_invite => {
                    by_id.insert(call_id, calls.len());
                    calls.push(Call {
                        call_id: call_id.to_string(),
                        invite: i,
                        offer: None,
                        answer: None,
                        ok: None,
                        ack: None,
                        final_status: None,
                    });
                    calls.last_mut().expect("just pushed")
                }
                None => continue,
            };
            let media = fields::sdp_media(&s.msg);
            if is_invite && c.offer.is_none() {
                c.offer = media.map(|a| (i, a));
            }
            if s.msg.is_response() && method == "INVITE" {
                let code = s.msg.status().unwrap_or(0);
                if code >= 200 && c.final_status.is_none() {
                    c.final_status = Some(code);
                }
                if (200..300).contains(&code) {
                    c.ok.get_or_insert(i);
                    if c.answer.is_none() {
                        c.answer = media.map(|a| (i, a));
                    }
                }
            }
            if !s.msg.is_response() && s.msg.method_or_status() == "ACK" && c.ok.is_some() {
                c.ack.get_or_insert(i);
            }
        }
        calls
    }

    /// The IP addresses every SIP packet of this capture was sent from or to: the host (or
    /// router interface) the capture was taken on is among them. A capture of one conversation
    /// between two hosts leaves both, and the caller decides which fits.
    pub fn capture_hosts(&self) -> Vec<Ipv4Addr> {
        let Some(first) = self.sip.first() else {
            return Vec::new();
        };
        let mut c = vec![*first.src.ip(), *first.dst.ip()];
        for s in &self.sip[1..] {
            if c.is_empty() {
                break;
            }
            let here = [*s.src.ip(), *s.dst.ip()];
            c.retain(|ip| here.contains(ip));
        }
        c.dedup();
        c
    }

    /// The last signalling packet from `addr` strictly before `at`.
    pub fn last_heard(&self, addr: SocketAddrV4, at: SystemTime) -> Option<(u64, SystemTime)> {
        self.activity
            .get(&addr)?
            .iter()
            .rev()
            .find(|(_, t)| *t < at)
            .copied()
    }

    /// ICMP errors quoting a UDP datagram sent to `dst`.
    pub fn icmp_for(&self, dst: SocketAddrV4) -> impl Iterator<Item = &IcmpError> {
        self.icmp
            .iter()
            .filter(move |e| e.icmp.quoted_udp.is_some_and(|(_, d)| d == dst))
    }
}

/// Gaps between consecutive times.
pub fn gaps(times: &[SystemTime]) -> Vec<Duration> {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
        .collect()
}
