//! The field guide's rules: each looks at the rebuilt [`Model`] and says what it shows, with the
//! frames that show it, the cause in plain words, the fixes, and the catalogue file that
//! reproduces it. A rule states a cause as certain only when the capture shows it happening;
//! otherwise it says how sure it is and which capture would settle it.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::fields::{self, is_private};
use super::rebuild::{gaps, Call, Model, Sip, Transaction};
use super::{Confidence, Evidence, Finding, Kind, ReadError, Severity};

/// Runs every rule.
pub fn judge(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(private_addresses(m));
    out.extend(no_rport(m));
    out.extend(request_timeouts(m));
    out.extend(fragmented_requests(m));
    let slow = unacknowledged_answers(m);
    let answered_dead: Vec<SocketAddrV4> = slow.iter().map(|(a, _)| *a).collect();
    out.extend(slow.into_iter().map(|(_, f)| f));
    out.extend(binding_expiry(m, &answered_dead));
    out.extend(alg_signatures(m));
    out.extend(content_length(m));
    out.extend(digest_uri(m));
    out.extend(symmetric_nat(m));
    // Once, not per call: it reads every SIP message.
    let hosts = m.capture_hosts();
    let calls = m.calls();
    // With several calls, the SDP addresses of them all: a flow to or from one belongs to that
    // call, not to another call's judgement.
    let claimed: Option<HashSet<SocketAddrV4>> = (calls.len() > 1).then(|| {
        calls
            .iter()
            .flat_map(|c| [c.offer.map(|o| o.1), c.answer.map(|a| a.1)])
            .flatten()
            .collect()
    });
    for c in &calls {
        out.extend(media(m, &hosts, claimed.as_ref(), c));
    }
    out.sort_by_key(|f| (f.severity != Severity::Problem, f.confidence, f.kind));
    out
}

/// A finding for a capture that stops in a damaged or cut-short record.
pub fn truncated(e: &ReadError) -> Finding {
    Finding {
        kind: Kind::CaptureTruncated,
        severity: Severity::Note,
        confidence: Confidence::Certain,
        summary: format!("the capture stops early: {e}"),
        evidence: Vec::new(),
        cause: "the capture was cut (tcpdump killed, disk full, a partial copy); what follows \
                the last whole record is missing"
            .into(),
        fixes: vec![
            "stop tcpdump with Ctrl-C (SIGINT) so it flushes, or copy the whole file".into(),
        ],
        scenario: None,
        settle: None,
    }
}

fn ev(m: &Model, s: &Sip, text: impl Into<String>) -> Evidence {
    Evidence {
        frame: s.frame,
        t: m.t(s.at),
        text: text.into(),
    }
}

fn line(s: &Sip) -> String {
    format!("{} → {}  {}", s.src, s.dst, s.msg.first_line)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn scenario(name: &str) -> Option<String> {
    Some(format!("scenarios/{name}.toml"))
}

/// Requests sent after message `i` to `ip`.
fn requests_to(m: &Model, after: usize, ip: Ipv4Addr) -> impl Iterator<Item = &Sip> {
    m.sip[after..]
        .iter()
        .filter(move |s| !s.msg.is_response() && *s.dst.ip() == ip)
}

fn private_addresses(m: &Model) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // On a LAN (a capture whose host is private) private addresses are where packets really
    // go; whether they leak is for a capture beyond the NAT to tell.
    if m.capture_hosts().iter().any(|h| is_private(*h)) {
        return out;
    }
    let mut seen = Vec::new();
    // Responses by destination address, in capture order: finding the responses that followed
    // a private Via is a lookup, not a scan of the rest of the capture for every request.
    let mut responses_to: HashMap<Ipv4Addr, Vec<usize>> = HashMap::new();
    for (i, s) in m
        .sip
        .iter()
        .enumerate()
        .filter(|(_, s)| s.msg.is_response())
    {
        responses_to.entry(*s.dst.ip()).or_default().push(i);
    }
    for (i, s) in m.sip.iter().enumerate() {
        let src_ip = *s.src.ip();
        // A REGISTER's 200 echoes the Contacts it stored: the REGISTER itself is the evidence.
        let echo = s.msg.is_response() && s.msg.cseq_parts().is_some_and(|(_, m)| m == "REGISTER");
        // Contact: where the registrar (or the peer, in a dialog) will send requests.
        if let Some(c) = fields::contact_addr(&s.msg).filter(|_| !echo) {
            if is_private(*c.ip()) && *c.ip() != src_ip && !seen.contains(&("contact", c)) {
                seen.push(("contact", c));
                out.push(private_contact(m, i, s, c));
            }
        }
        // SDP c=: where the far end will send RTP.
        if let Some(media) = fields::sdp_media(&s.msg) {
            if is_private(*media.ip()) && *media.ip() != src_ip && !seen.contains(&("sdp", media)) {
                seen.push(("sdp", media));
                out.push(private_sdp(m, s, media));
            }
        }
        // Via: harmful only when the responses follow it there.
        if let Some(v) = fields::top_via(&s.msg).as_ref().and_then(fields::via_addr) {
            if !s.msg.is_response()
                && is_private(*v.ip())
                && *v.ip() != src_ip
                && !seen.contains(&("via", v))
            {
                let to_v = responses_to.get(v.ip()).map_or(&[][..], Vec::as_slice);
                let lost: Vec<&Sip> = to_v[to_v.partition_point(|&r| r < i)..]
                    .iter()
                    .take(3)
                    .map(|&r| &m.sip[r])
                    .collect();
                if let Some(first) = lost.first() {
                    seen.push(("via", v));
                    out.push(Finding {
                        kind: Kind::PrivateAddress,
                        severity: Severity::Problem,
                        confidence: Confidence::Certain,
                        summary: format!(
                            "responses are sent to the private Via address {v} of a request from {}",
                            s.src
                        ),
                        evidence: vec![
                            ev(m, s, format!("{}  Via: {}", line(s), s.msg.via[0])),
                            ev(m, first, format!("{}  — to a private address", line(first))),
                        ],
                        cause: "the server answers to the Via's sent-by instead of the address \
                                the request came from; a private address is unreachable from \
                                the internet"
                            .into(),
                        fixes: vec![
                            "answer to the source address (`received`, RFC 3261 §18.2.2) and \
                             port (`rport`, RFC 3581)"
                                .into(),
                            "STUN-discovered Via/Contact on the phone, or an SBC in front".into(),
                        ],
                        scenario: scenario("408-outgoing-no-rport"),
                        settle: None,
                    });
                }
            }
        }
    }
    out
}

fn private_contact(m: &Model, i: usize, s: &Sip, c: SocketAddrV4) -> Finding {
    let what = if s.msg.method_or_status() == "REGISTER" {
        "registers"
    } else {
        "advertises"
    };
    let mut evidence = vec![ev(
        m,
        s,
        format!(
            "{}  Contact: {}",
            line(s),
            s.msg.contact.as_deref().unwrap_or("")
        ),
    )];
    let to_private: Vec<&Sip> = requests_to(m, i + 1, *c.ip()).collect();
    let to_public: Vec<&Sip> = requests_to(m, i + 1, *s.src.ip())
        .filter(|r| r.msg.method_or_status() != "REGISTER")
        .collect();
    let (severity, confidence, settle, outcome) = if let Some(first) = to_private.first() {
        evidence.push(ev(
            m,
            first,
            format!(
                "{}  — sent to the private Contact ({} cop{})",
                line(first),
                to_private.len(),
                if to_private.len() == 1 { "y" } else { "ies" }
            ),
        ));
        (
            Severity::Problem,
            Confidence::Certain,
            None,
            "requests went to it",
        )
    } else if let Some(first) = to_public.first() {
        evidence.push(ev(
            m,
            first,
            format!("{}  — sent to the source address instead", line(first)),
        ));
        (
            Severity::Note,
            Confidence::Certain,
            None,
            "the server routes to the source address instead, so it does no harm here",
        )
    } else {
        (
            Severity::Problem,
            Confidence::Possible,
            Some("capture an incoming call (INVITE from the server to this phone) to see where it is sent".to_string()),
            "no later request shows whether the server uses it",
        )
    };
    Finding {
        kind: Kind::PrivateAddress,
        severity,
        confidence,
        summary: format!(
            "{} {what} the private Contact {c}, not its source address; {outcome}",
            s.src
        ),
        evidence,
        cause: "a phone behind NAT writes its LAN address in Contact; a registrar that stores it \
                literally sends incoming calls there, and the internet drops them (INVITE \
                retransmitted until Timer B, then 408)"
            .into(),
        fixes: vec![
            "far-end NAT traversal at the registrar/SBC: store the REGISTER's source address \
             (Kamailio fix_nated_register)"
                .into(),
            "a STUN-discovered Contact on the phone (behind endpoint-independent NATs only)".into(),
        ],
        scenario: scenario("408-private-contact"),
        settle,
    }
}

fn private_sdp(m: &Model, s: &Sip, media: SocketAddrV4) -> Finding {
    let mut evidence = vec![ev(
        m,
        s,
        format!(
            "{}  c={}  m={}",
            line(s),
            s.msg.sdp_c.as_deref().unwrap_or(""),
            s.msg.sdp_m.as_deref().unwrap_or("")
        ),
    )];
    let sent_there = m.media.iter().find(|((_, d), _)| *d == media);
    let (severity, confidence, settle, outcome) = match sent_there {
        Some(((src, dst), f)) => {
            evidence.push(Evidence {
                frame: f.first_frame,
                t: m.t(f.first_at),
                text: format!("{src} → {dst}  {} media packets sent to the private address", f.packets),
            });
            (Severity::Problem, Confidence::Certain, None, "media was sent there")
        }
        None => (
            Severity::Problem,
            Confidence::Possible,
            Some("capture at the far end: whether its RTP goes to this address or to where this side's RTP comes from (latching)".to_string()),
            "media reaches it only if the far end latches (symmetric RTP)",
        ),
    };
    Finding {
        kind: Kind::PrivateAddress,
        severity,
        confidence,
        summary: format!(
            "the SDP from {} offers the private media address {media}; {outcome}",
            s.src
        ),
        evidence,
        cause: "the phone offers its LAN address in SDP; the far end sends RTP there and the \
                internet drops it: one-way audio (the phone's own RTP still gets out)"
            .into(),
        fixes: vec![
            "a media endpoint that latches onto where the phone's RTP comes from (SBC, media relay)"
                .into(),
            "STUN/ICE-correct addresses in SDP, or TURN".into(),
        ],
        scenario: scenario("one-way-audio-private-sdp"),
        settle,
    }
}

fn no_rport(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for t in m.transactions.values() {
        let Some(&first) = t.requests.first() else {
            continue;
        };
        let s = &m.sip[first];
        if s.msg.method_or_status() == "ACK" {
            continue;
        }
        let Some(via) = fields::top_via(&s.msg) else {
            continue;
        };
        let Some(sent_by) = fields::via_addr(&via) else {
            continue;
        };
        if fields::has_rport(&via) || sent_by.port() == s.src.port() || seen.contains(&s.src) {
            continue;
        }
        seen.push(s.src);
        let mut evidence = vec![ev(m, s, format!("{}  Via: {}", line(s), s.msg.via[0]))];
        let to_via_port: Vec<&Sip> = t
            .responses
            .iter()
            .map(|&r| &m.sip[r])
            .filter(|r| r.dst.port() == sent_by.port() && r.dst.port() != s.src.port())
            .collect();
        if let Some(r) = to_via_port.first() {
            evidence.push(ev(
                m,
                r,
                format!(
                    "{}  — to the Via port {}, not the source port {}",
                    line(r),
                    sent_by.port(),
                    s.src.port()
                ),
            ));
        }
        if t.requests.len() > 1 {
            let last = &m.sip[*t.requests.last().expect("non-empty")];
            evidence.push(ev(
                m,
                last,
                format!(
                    "request sent {} times: the responses never reached it",
                    t.requests.len()
                ),
            ));
        }
        let certain = !to_via_port.is_empty();
        out.push(Finding {
            kind: Kind::NoRport,
            severity: Severity::Problem,
            confidence: if certain {
                Confidence::Certain
            } else {
                Confidence::Likely
            },
            summary: format!(
                "{} sends without rport; its NAT changed the source port ({} in Via, {} seen)",
                s.src,
                sent_by.port(),
                s.src.port()
            ),
            evidence,
            cause: "responses follow the top Via: without rport (RFC 3581) the server answers to \
                    the Via port, which the NAT did not map; the responses are dropped, the phone \
                    retransmits until Timer B and reports 408"
                .into(),
            fixes: vec![
                "rport in Via on the phone, honoured by the server".into(),
                "force_rport on the server/SBC (answer to the source port anyway)".into(),
            ],
            scenario: scenario("408-outgoing-no-rport"),
            settle: (!certain).then(|| {
                "capture the server's responses to this phone: a response to the Via port settles it"
                    .to_string()
            }),
        });
    }
    out
}

/// A client transaction retransmitted with no final response.
fn timed_out(m: &Model, t: &Transaction) -> bool {
    t.requests.len() >= 3 && m.final_response(t).is_none()
}

fn request_timeouts(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in m.transactions.values() {
        if !timed_out(m, t) {
            continue;
        }
        let copies: Vec<&Sip> = t.requests.iter().map(|&i| &m.sip[i]).collect();
        let first = copies[0];
        let method = first.msg.method_or_status().to_string();
        if method == "ACK" {
            continue;
        }
        let times: Vec<_> = copies.iter().map(|s| s.at).collect();
        let g = gaps(&times);
        let t1 = g[0];
        let span = times[times.len() - 1]
            .duration_since(times[0])
            .unwrap_or_default();
        let gap_list: Vec<String> = g
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        let mut evidence = vec![
            ev(m, first, line(first)),
            ev(
                m,
                copies[copies.len() - 1],
                format!(
                    "copy {} of the same request; gaps {} s (T1 ≈ {} ms)",
                    copies.len(),
                    gap_list.join(", "),
                    t1.as_millis()
                ),
            ),
        ];
        let call_id = first.msg.call_id.as_deref();
        if let Some(r408) = m.sip.iter().find(|s| {
            s.msg.call_id.as_deref() == call_id && s.msg.status() == Some(408) && s.at > first.at
        }) {
            evidence.push(ev(m, r408, line(r408)));
        }
        for e in m.icmp_for(first.dst).take(1) {
            evidence.push(Evidence {
                frame: e.frame,
                t: m.t(e.at),
                text: format!("ICMP {} from {} for it", e.icmp, e.from),
            });
        }
        let timer = if method == "INVITE" {
            "Timer B"
        } else {
            "Timer F"
        };
        let private = is_private(*first.dst.ip());
        out.push(Finding {
            kind: Kind::RequestTimeout,
            severity: Severity::Problem,
            confidence: Confidence::Certain,
            summary: format!(
                "{method} to {} sent {} times over {} without a final response ({timer} = 64·T1 ≈ {})",
                first.dst,
                copies.len(),
                secs(span),
                secs(t1 * 64)
            ),
            evidence,
            cause: if private {
                "the request goes to a private address, which the internet drops".into()
            } else {
                "nothing answered: the request or its responses are lost on the way (a NAT \
                 binding that expired, a Via port the NAT did not map, an ALG that mangled the \
                 message); the other findings say which"
                    .into()
            },
            fixes: vec!["fix the cause the other findings name; the timeout is its symptom".into()],
            scenario: scenario("408-private-contact"),
            settle: None,
        });
    }
    out
}

/// The largest UDP payload one IP packet carries over a 1500-byte Ethernet MTU (20 bytes of IP
/// header, 8 of UDP).
const ONE_PACKET: usize = 1500 - 20 - 8;

/// Requests that timed out and were too large for one IP packet: each copy left in fragments,
/// and a router or firewall that drops fragments loses it whole (the capture was taken before
/// it, or the request would have been answered). *Likely*, not certain: the capture shows the
/// size and the silence, not the drop.
fn fragmented_requests(m: &Model) -> Vec<Finding> {
    m.transactions
        .values()
        .filter(|t| timed_out(m, t))
        .filter_map(|t| {
            let first = &m.sip[t.requests[0]];
            let method = first.msg.method_or_status().to_string();
            (first.msg.len > ONE_PACKET && method != "ACK").then(|| Finding {
                kind: Kind::FragmentedRequest,
                severity: Severity::Problem,
                confidence: Confidence::Likely,
                summary: format!(
                    "{method} to {} of {} bytes, more than one IP packet holds on a 1500-byte \
                     link ({ONE_PACKET}), sent {} times without an answer",
                    first.dst,
                    first.msg.len,
                    t.requests.len()
                ),
                evidence: vec![ev(
                    m,
                    first,
                    format!("{} ({} bytes of SDP)", line(first), first.msg.body_len),
                )],
                cause: "the sender's kernel cut each copy into IP fragments, and a router or \
                        firewall on the way drops fragments (no ports in a non-initial \
                        fragment, so no binding to match): the whole request is lost, every \
                        retransmission too"
                    .into(),
                fixes: vec![
                    "a smaller SDP (fewer codecs, no video) so the request fits one packet".into(),
                    "SIP over TCP (RFC 3261 §18.1.1 asks for it above 1300 bytes)".into(),
                    "let the router pass IP fragments".into(),
                ],
                scenario: scenario("408-fragmented-invite"),
                settle: Some(
                    "a capture at the router's WAN side or at the server: fragments there mean \
                     they passed"
                        .into(),
                ),
            })
        })
        .collect()
}

/// A 2xx to INVITE sent to a caller's NATed address again and again and never acknowledged,
/// after the caller had been silent since its INVITE: the slow-answer face of binding expiry.
#[derive(Debug, Clone)]
pub struct SlowAnswer {
    /// The caller's public address (its NAT mapping).
    pub caller: SocketAddrV4,
    /// Index into [`Model::sip`] of the first 2xx to the caller.
    pub first_ok: usize,
    /// How many copies of the 2xx went to it.
    pub copies: usize,
    /// The caller's last packet before the 2xx.
    pub last_heard: (u64, std::time::SystemTime),
    /// From the caller's last packet to the first 2xx.
    pub silence: Duration,
    /// Provisional responses sent to the caller during that silence.
    pub rings: Vec<usize>,
    /// The longest stretch with nothing sent towards the caller, within the silence.
    pub longest_inbound_gap: Duration,
}

impl SlowAnswer {
    /// Whether responses towards the caller split its silence into gaps short enough to have
    /// kept a binding alive that refreshes on inbound packets: then either the binding was
    /// shorter than those gaps, or the router refreshes on outbound packets only.
    pub fn refreshed_inbound(&self) -> bool {
        // One 180 right after the INVITE splits nothing.
        self.longest_inbound_gap + Duration::from_millis(500) < self.silence
    }
}

/// Every [`SlowAnswer`] of the capture, one per caller address.
pub fn slow_answers(m: &Model) -> Vec<SlowAnswer> {
    let mut out: Vec<SlowAnswer> = Vec::new();
    for c in m.calls() {
        let invite = &m.sip[c.invite];
        let caller = invite.src;
        if is_private(*caller.ip()) || out.iter().any(|a| a.caller == caller) {
            continue;
        }
        let same_call = |i: &usize| m.sip[*i].msg.call_id.as_deref() == Some(c.call_id.as_str());
        let to_caller: Vec<usize> = (0..m.sip.len())
            .filter(same_call)
            .filter(|&i| m.sip[i].dst == caller && m.sip[i].msg.is_response())
            .filter(|&i| {
                m.sip[i]
                    .msg
                    .cseq_parts()
                    .is_some_and(|(_, meth)| meth == "INVITE")
            })
            .collect();
        let status_in = |i: usize, r: std::ops::Range<u16>| {
            m.sip[i].msg.status().is_some_and(|st| r.contains(&st))
        };
        let oks: Vec<usize> = to_caller
            .iter()
            .copied()
            .filter(|&i| status_in(i, 200..300))
            .collect();
        let Some(&first_ok) = oks.first() else {
            continue;
        };
        let ok_at = m.sip[first_ok].at;
        let acked = (0..m.sip.len()).filter(same_call).any(|i| {
            let s = &m.sip[i];
            s.src == caller && s.at > ok_at && s.msg.method_or_status() == "ACK"
        });
        if oks.len() < 3 || acked {
            continue;
        }
        let Some(last_heard) = m.last_heard(caller, ok_at) else {
            continue;
        };
        let silence = ok_at.duration_since(last_heard.1).unwrap_or_default();
        if silence < Duration::from_secs(1) {
            continue;
        }
        let rings: Vec<usize> = to_caller
            .iter()
            .copied()
            .filter(|&i| status_in(i, 101..200))
            .filter(|&i| m.sip[i].at > last_heard.1 && m.sip[i].at < ok_at)
            .collect();
        let mut times = vec![last_heard.1];
        times.extend(rings.iter().map(|&i| m.sip[i].at));
        times.push(ok_at);
        let longest_inbound_gap = gaps(&times).into_iter().max().unwrap_or(silence);
        out.push(SlowAnswer {
            caller,
            first_ok,
            copies: oks.len(),
            last_heard,
            silence,
            rings,
            longest_inbound_gap,
        });
    }
    out
}

/// The finding for each [`SlowAnswer`]; the idle-gap rule then leaves those callers alone, so a
/// later BYE does not date the same dead binding again.
fn unacknowledged_answers(m: &Model) -> Vec<(SocketAddrV4, Finding)> {
    let mut out = Vec::new();
    for a in slow_answers(m) {
        let caller = a.caller;
        let first_ok = &m.sip[a.first_ok];
        let (last_frame, last_at) = a.last_heard;
        let copies_of = m
            .sip
            .iter()
            .filter(|s| {
                s.dst == caller
                    && s.msg.call_id == first_ok.msg.call_id
                    && s.msg.status() == first_ok.msg.status()
            })
            .map(|s| s.at)
            .max()
            .unwrap_or(first_ok.at);
        let span = copies_of.duration_since(first_ok.at).unwrap_or_default();
        let mut evidence = vec![
            Evidence {
                frame: last_frame,
                t: m.t(last_at),
                text: format!("last packet from the caller {caller}; nothing from it after this"),
            },
            ev(
                m,
                first_ok,
                format!(
                    "{}  — sent {} times over {}, never acknowledged",
                    line(first_ok),
                    a.copies,
                    secs(span)
                ),
            ),
        ];
        let refreshed_inbound = a.refreshed_inbound();
        if let Some(&last_ring) = a.rings.last().filter(|_| refreshed_inbound) {
            let last_ring = &m.sip[last_ring];
            evidence.insert(
                1,
                ev(m, last_ring, format!(
                    "{} provisional response(s) went to the caller while it was silent, the last {} before the 200; no gap between packets towards it exceeded {}",
                    a.rings.len(),
                    secs(first_ok.at.duration_since(last_ring.at).unwrap_or_default()),
                    secs(a.longest_inbound_gap)
                )),
            );
        }
        let (summary, settle) = if !refreshed_inbound {
            (
                format!(
                    "the answer to {caller}'s INVITE came {} after its last packet and was never acknowledged: the caller's NAT binding lived less than {}",
                    secs(a.silence),
                    secs(a.silence)
                ),
                "capture on the router's WAN side or the phone's LAN: the 200 OK arriving and not being forwarded proves it".to_string(),
            )
        } else {
            (
                format!(
                    "the answer to {caller}'s INVITE came {} after its last packet and was never acknowledged, although responses kept going to it at most {} apart: its NAT binding died within {} (if those responses did not reach the phone) or its router does not count inbound packets as activity (outbound-only refresh)",
                    secs(a.silence),
                    secs(a.longest_inbound_gap),
                    secs(a.longest_inbound_gap)
                ),
                "capture on the phone's LAN: the last provisional response that reached the phone dates the binding's death and tells the two apart".to_string(),
            )
        };
        out.push((
            caller,
            Finding {
                kind: Kind::BindingExpired,
                severity: Severity::Problem,
                confidence: Confidence::Likely,
                summary,
                evidence,
                cause: "the NAT binding of the caller's SIP flow times out while it waits for the \
                        answer: nothing leaves the phone between its INVITE and the 200 OK, so \
                        a slow answer outlives the binding; the 200 OK is dropped at the router and \
                        retransmitted until Timer H"
                    .into(),
                fixes: vec![
                    "keep-alives from the phone below the binding timeout, also during call setup".into(),
                    "OPTIONS pings from an SBC in front (the phone answers them outbound)".into(),
                    "a far end that repeats its 180 below the timeout (only behind routers that refresh on inbound packets too)".into(),
                ],
                scenario: scenario("binding-expiry-slow-answer"),
                settle: Some(settle),
            },
        ));
    }
    out
}

fn binding_expiry(m: &Model, answered_dead: &[SocketAddrV4]) -> Vec<Finding> {
    let mut out = Vec::new();
    let registered_from: Vec<(usize, SocketAddrV4)> = m
        .registrations()
        .iter()
        .map(|r| (r.request, m.sip[r.request].src))
        .collect();
    let mut seen = Vec::new();
    for t in m.transactions.values() {
        if !timed_out(m, t) {
            continue;
        }
        let first = &m.sip[t.requests[0]];
        let dst = first.dst;
        if is_private(*dst.ip()) || seen.contains(&dst) || answered_dead.contains(&dst) {
            continue;
        }
        // A NATed contact: an address a phone registered from, which is not the Contact it wrote.
        let Some(&(reg, _)) = registered_from
            .iter()
            .find(|(i, a)| *a == dst && *i < t.requests[0])
        else {
            continue;
        };
        let natted = fields::contact_addr(&m.sip[reg].msg) != Some(dst)
            || fields::top_via(&m.sip[reg].msg)
                .and_then(|v| fields::via_addr(&v))
                .is_some_and(|v| v != dst);
        let Some((last_frame, last_at)) = m.last_heard(dst, first.at) else {
            continue;
        };
        let gap = first.at.duration_since(last_at).unwrap_or_default();
        if gap < Duration::from_secs(1) {
            continue;
        }
        seen.push(dst);
        let register = &m.sip[reg];
        // The NAT itself answering "port unreachable" shows the binding is gone.
        let refused = m
            .icmp_for(dst)
            .find(|e| e.from == *dst.ip() && e.icmp.is_port_unreachable());
        out.push(Finding {
            kind: Kind::BindingExpired,
            severity: Severity::Problem,
            confidence: if refused.is_some() {
                Confidence::Certain
            } else {
                Confidence::Likely
            },
            summary: format!(
                "{} was silent for {} before the {} to it, which went unanswered: the NAT binding lived less than {}",
                dst,
                secs(gap),
                first.msg.method_or_status(),
                secs(gap)
            ),
            evidence: vec![
                ev(m, register, format!("{}  — registered from this address{}", line(register), if natted { " (a NAT mapping: Contact/Via differ)" } else { "" })),
                Evidence {
                    frame: last_frame,
                    t: m.t(last_at),
                    text: format!("last packet from {dst}; no keep-alive (CRLF, STUN, OPTIONS) from it after this"),
                },
                ev(m, first, format!("{}  — {} copies, no response", line(first), t.requests.len())),
            ].into_iter().chain(refused.map(|e| Evidence {
                frame: e.frame,
                t: m.t(e.at),
                text: format!("ICMP port unreachable from the NAT {} itself: no binding for port {}", e.from, dst.port()),
            })).collect(),
            cause: "the NAT forgets an idle UDP binding after its timeout (30–60 s in the field); \
                    the request then arrives at a port nothing is bound to and is dropped, while \
                    the registration is still valid"
                .into(),
            fixes: vec![
                "keep-alives below the binding timeout: CRLF or STUN (RFC 5626) from the phone, or OPTIONS pings from the SBC".into(),
                "a registration expiry shorter than the binding timeout".into(),
            ],
            scenario: scenario("binding-expiry"),
            settle: refused.is_none().then(|| "capture on the router's WAN side (or the phone's LAN): the request arriving there and not being forwarded proves it".into()),
        });
    }
    out
}

fn alg_signatures(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for s in &m.sip {
        let src_ip = *s.src.ip();
        let contact = fields::contact_addr(&s.msg);
        let via = fields::top_via(&s.msg).and_then(|v| fields::via_addr(&v));
        let c_ip = s.msg.sdp_c.as_deref().and_then(fields::sdp_ip);
        let o_ip = s.msg.sdp_o.as_deref().and_then(fields::sdp_ip);
        let mut why = Vec::new();
        if let (Some(c), Some(v)) = (contact, via) {
            if !s.msg.is_response() {
                if *c.ip() == src_ip && !is_private(src_ip) && is_private(*v.ip()) {
                    why.push(format!(
                        "Contact has the public address {} but Via the private {}",
                        c.ip(),
                        v.ip()
                    ));
                } else if *v.ip() == src_ip && !is_private(src_ip) && is_private(*c.ip()) {
                    why.push(format!(
                        "Via has the public address {} but Contact the private {}",
                        v.ip(),
                        c.ip()
                    ));
                }
            }
        }
        // A phone with STUN for media alone (baresip's medianat=stun) writes its RTP mapping in
        // c= and leaves o= and its Contact private: that mix is the phone's own. An ALG that
        // rewrites c= rewrites the Contact too.
        let stun_media = contact.is_some_and(|c| is_private(*c.ip()));
        if let (Some(c), Some(o), false) = (c_ip, o_ip, stun_media) {
            if c == src_ip && !is_private(c) && is_private(o) {
                why.push(format!(
                    "SDP c= has the public address {c} but o= the private {o}"
                ));
            }
        }
        if why.is_empty() || seen.contains(&s.src) {
            continue;
        }
        seen.push(s.src);
        out.push(Finding {
            kind: Kind::AlgRewrite,
            severity: Severity::Problem,
            confidence: Confidence::Likely,
            summary: format!(
                "a message from {} was rewritten inconsistently: {}",
                s.src,
                why.join("; ")
            ),
            evidence: vec![ev(
                m,
                s,
                format!(
                    "{}  Via: {}  Contact: {}  c={}  o={}",
                    line(s),
                    s.msg.via.first().map(String::as_str).unwrap_or("-"),
                    s.msg.contact.as_deref().unwrap_or("-"),
                    s.msg.sdp_c.as_deref().unwrap_or("-"),
                    s.msg.sdp_o.as_deref().unwrap_or("-")
                ),
            )],
            cause: "a SIP ALG in the router rewrites some addresses to its public one and misses \
                    others; no phone writes such a mix itself"
                .into(),
            fixes: vec![
                "turn the SIP ALG off on the router; handle NAT at the SBC (far-end NAT traversal)"
                    .into(),
            ],
            scenario: scenario("408-private-contact-kernel-alg"),
            settle: Some(
                "capture on the phone's LAN too: the same message there shows what the phone wrote"
                    .into(),
            ),
        });
    }
    out
}

fn content_length(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for s in &m.sip {
        let Some(declared) = s
            .msg
            .content_length
            .as_deref()
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            continue;
        };
        if declared == s.msg.body_len || seen.contains(&s.src) {
            continue;
        }
        seen.push(s.src);
        let rewritten = s.msg.sdp_c.as_deref().and_then(fields::sdp_ip) == Some(*s.src.ip())
            && s.msg
                .sdp_o
                .as_deref()
                .and_then(fields::sdp_ip)
                .is_some_and(is_private);
        let copies = m
            .sip
            .iter()
            .filter(|o| {
                o.src == s.src
                    && o.msg.first_line == s.msg.first_line
                    && o.msg.call_id == s.msg.call_id
            })
            .count();
        let mut evidence = vec![ev(
            m,
            s,
            format!(
                "{}  Content-Length: {declared}, body {} bytes",
                line(s),
                s.msg.body_len
            ),
        )];
        if copies > 1 {
            evidence.push(ev(
                m,
                s,
                format!("the same request sent {copies} times: nobody accepts it"),
            ));
        }
        out.push(Finding {
            kind: Kind::ContentLengthMismatch,
            severity: Severity::Problem,
            confidence: Confidence::Certain,
            summary: format!(
                "Content-Length {declared} but a {}-byte body from {}: the receiver discards the message as malformed",
                s.msg.body_len, s.src
            ),
            evidence,
            cause: format!(
                "a SIP ALG rewrote addresses in the body (a different length) without fixing Content-Length{}",
                if rewritten { "; the SDP c= has the public address while o= kept the private one" } else { " (likely: a phone or server writing a wrong length is rare)" }
            ),
            fixes: vec!["turn the SIP ALG off on the router".into()],
            scenario: scenario("alg-content-length"),
            settle: (!rewritten).then(|| "capture on the phone's LAN: if the length matches there, the router changed it".to_string()),
        });
    }
    out
}

fn digest_uri(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for s in &m.sip {
        let (Some(auth), Some(ruri)) = (s.msg.authorization.as_deref(), s.msg.request_uri()) else {
            continue;
        };
        let Some(uri) = fields::digest_uri(auth) else {
            continue;
        };
        if uri == ruri || seen.contains(&s.src) {
            continue;
        }
        seen.push(s.src);
        let challenges: Vec<&Sip> = m
            .sip
            .iter()
            .filter(|r| r.msg.call_id == s.msg.call_id && matches!(r.msg.status(), Some(401 | 407)))
            .collect();
        let mut evidence = vec![ev(
            m,
            s,
            format!("{}  Authorization: … uri=\"{uri}\" …", line(s)),
        )];
        if let Some(last) = challenges.last() {
            evidence.push(ev(
                m,
                last,
                format!(
                    "{}  — {} challenge(s) in this registration",
                    line(last),
                    challenges.len()
                ),
            ));
        }
        out.push(Finding {
            kind: Kind::DigestUriMismatch,
            severity: Severity::Problem,
            confidence: if challenges.len() >= 2 {
                Confidence::Certain
            } else {
                Confidence::Likely
            },
            summary: format!(
                "the digest uri \"{uri}\" differs from the Request-URI {ruri}{}",
                if challenges.len() >= 2 {
                    format!(": {} × 401/407, a 401 loop", challenges.len())
                } else {
                    String::new()
                }
            ),
            evidence,
            cause: "a SIP ALG rewrote the address inside the Authorization header; the server \
                    computes the digest over the rewritten uri, it no longer matches the phone's \
                    response, and every retry is challenged again"
                .into(),
            fixes: vec!["turn the SIP ALG off on the router".into()],
            scenario: scenario("alg-break-digest"),
            settle: Some("capture on the phone's LAN: the uri the phone wrote is there".into()),
        });
    }
    out
}

fn symmetric_nat(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for x in &m.stun {
        let mapped = x.mapped;
        if is_private(*mapped.ip()) || seen.contains(&mapped) {
            continue;
        }
        // SIP: the STUN mapping written in Via/Contact, the same socket's SIP seen from another port.
        let sip = m.sip.iter().find(|s| {
            *s.src.ip() == *mapped.ip()
                && s.src.port() != mapped.port()
                && (fields::contact_addr(&s.msg) == Some(mapped)
                    || fields::top_via(&s.msg).and_then(|v| fields::via_addr(&v)) == Some(mapped))
        });
        // SDP: the STUN mapping offered for media, the RTP from that side leaving from another port.
        let sdp = m
            .sip
            .iter()
            .find(|s| fields::sdp_media(&s.msg) == Some(mapped));
        let moved_rtp = sdp.and_then(|_| {
            m.media.iter().find(|((src, dst), _)| {
                *src.ip() == *mapped.ip() && src.port() != mapped.port() && *dst != x.server
            })
        });
        let stun_ev = Evidence {
            frame: x.response_frame,
            t: m.t(x.at),
            text: format!(
                "STUN Binding {} → {}: mapped {mapped} (request frame {})",
                x.client, x.server, x.request_frame
            ),
        };
        if let Some(s) = sip {
            seen.push(mapped);
            let lost: Vec<&Sip> = m
                .sip
                .iter()
                .filter(|r| r.dst == mapped && r.at >= s.at)
                .collect();
            let mut evidence = vec![
                stun_ev,
                ev(
                    m,
                    s,
                    format!(
                        "{}  — Via/Contact say {mapped}, the packet comes from {}",
                        line(s),
                        s.src
                    ),
                ),
            ];
            if let Some(r) = lost.first() {
                evidence.push(ev(m, r, format!("{}  — sent to the STUN mapping", line(r))));
            }
            for e in m.icmp_for(mapped).take(1) {
                evidence.push(Evidence {
                    frame: e.frame,
                    t: m.t(e.at),
                    text: format!("ICMP {} from {} for it", e.icmp, e.from),
                });
            }
            out.push(Finding {
                kind: Kind::SymmetricNat,
                severity: if lost.is_empty() { Severity::Note } else { Severity::Problem },
                confidence: Confidence::Certain,
                summary: format!(
                    "the NAT maps per destination: STUN saw {mapped}, the SIP server sees the same phone at {}{}",
                    s.src,
                    if lost.is_empty() { " (the server answers to the source, so no harm here)" } else { "; what is sent to the STUN mapping is dropped" }
                ),
                evidence,
                cause: "behind address-and-port-dependent (symmetric) mapping a STUN-discovered address is valid only towards the STUN server".into(),
                fixes: vec![
                    "far-end NAT traversal at the registrar/SBC: use the source address and port (rport)".into(),
                    "TURN or an SBC media relay for media".into(),
                ],
                scenario: scenario("symmetric-stun-contact"),
                settle: None,
            });
        } else if let (Some(s), Some(((src, dst), f))) = (sdp, moved_rtp) {
            // The peer's RTP reaching the STUN port first moves a Linux NAT's mapping as well
            // ("who sends first"), so then per-destination mapping is only one explanation.
            let peer_first = m
                .media
                .iter()
                .any(|((_, d), g)| *d == mapped && g.first_at < f.first_at);
            seen.push(mapped);
            out.push(Finding {
                kind: Kind::SymmetricNat,
                severity: Severity::Problem,
                confidence: if peer_first {
                    Confidence::Possible
                } else {
                    Confidence::Likely
                },
                summary: format!(
                    "the NAT maps per destination: SDP offers the STUN mapping {mapped}, but RTP to {dst} leaves from {src}",
                ),
                evidence: vec![
                    stun_ev,
                    ev(m, s, format!("{}  c={}  m={}", line(s), s.msg.sdp_c.as_deref().unwrap_or(""), s.msg.sdp_m.as_deref().unwrap_or(""))),
                    Evidence { frame: f.first_frame, t: m.t(f.first_at), text: format!("{src} → {dst}  {} RTP packets, from another port than the SDP's", f.packets) },
                ],
                cause: "behind address-and-port-dependent (symmetric) mapping the STUN-discovered media address is valid only towards the STUN server; the peer's RTP to it matches no mapping and is dropped".into(),
                fixes: vec!["TURN (RFC 8656) or an SBC media relay that latches".into()],
                scenario: scenario("no-audio-symmetric-stun"),
                settle: Some(if peer_first {
                    "the peer's RTP reached the STUN port before this side's left: on a Linux NAT that alone moves the mapping (one-way-audio-who-sends-first.toml); a STUN test towards two servers (RFC 5780) tells the NAT type".into()
                } else {
                    "capture on the phone's LAN: the same local RTP port behind both public ports proves it".into()
                }),
            });
        }
    }
    out
}

/// Media of one answered call, judged at the point the capture was taken.
/// With several calls in the capture (`claimed`: every call's SDP addresses), a call's media is
/// the flows to or from its own SDP addresses, or else the host's flows no other call claims.
fn media(
    m: &Model,
    capture_hosts: &[Ipv4Addr],
    claimed: Option<&HashSet<SocketAddrV4>>,
    c: &Call,
) -> Vec<Finding> {
    // Only an established call (2xx and its ACK) is expected to carry media.
    let (Some((oi, offer)), Some((ai, answer)), Some(ok), Some(ack)) =
        (c.offer, c.answer, c.ok, c.ack)
    else {
        return Vec::new();
    };
    let offerer = &m.sip[oi];
    let answerer = &m.sip[ai];
    // Which side's media passes this capture point: a phone's own interface (its SDP address)
    // or its NAT (a private SDP address, signalling from this public address).
    // On a LAN capture the phone's own signalling leaves from the capture host whatever
    // (STUN, TURN) address its SDP offers.
    let local = |host: Ipv4Addr, sdp: SocketAddrV4, sender: &Sip| {
        *sdp.ip() == host
            || ((is_private(*sdp.ip()) || is_private(host)) && *sender.src.ip() == host)
    };
    let Some((host, peer, my_sdp)) = capture_hosts.iter().copied().find_map(|h| {
        if local(h, offer, offerer) {
            Some((h, answer, offer))
        } else if local(h, answer, answerer) {
            Some((h, offer, answer))
        } else {
            None
        }
    }) else {
        return Vec::new();
    };
    // One call's flows leave from its SDP address or go to the peer's; another call from the
    // same host (a PBX, an office NAT) is not this call's audio. A direction with no such flow
    // keeps the host's flows that no call's SDP names, as with a single call (NAT-moved or
    // relayed media).
    let flows = |outbound: bool| -> Vec<_> {
        let at_host: Vec<_> = m
            .media
            .iter()
            .filter(|((s, d), _)| *(if outbound { s } else { d }).ip() == host)
            .collect();
        let Some(claimed) = claimed else {
            return at_host;
        };
        let own: Vec<_> = at_host
            .iter()
            .copied()
            .filter(|((s, d), _)| {
                let (mine, theirs) = if outbound { (s, d) } else { (d, s) };
                *mine == my_sdp || *theirs == peer
            })
            .collect();
        if own.is_empty() {
            at_host
                .into_iter()
                .filter(|((s, d), _)| !claimed.contains(s) && !claimed.contains(d))
                .collect()
        } else {
            own
        }
    };
    let out_flows = flows(true);
    let in_flows = flows(false);
    // A flow is lost when it goes to a private address from a public point, or draws ICMP —
    // unless the peer's RTP then comes back from that very address and no error follows: a
    // router with an input firewall turned away the early packets and the path opened once its
    // phone sent (one-way-audio-who-sends-first-fix-input-firewall.toml).
    let host_public = !is_private(host);
    let lost_reason = |src: SocketAddrV4, dst: SocketAddrV4| -> Option<String> {
        if host_public && is_private(*dst.ip()) {
            return Some(format!(
                "to the private address {dst}: the internet drops it"
            ));
        }
        let errors: Vec<_> = m
            .icmp
            .iter()
            .filter(|e| {
                e.icmp.is_port_unreachable() && e.icmp.quoted_udp.is_some_and(|(_, qd)| qd == dst)
            })
            .collect();
        let (first, last) = (errors.first()?, errors.last()?);
        let opened = m
            .media
            .get(&(dst, src))
            .is_some_and(|back| back.first_frame > last.frame);
        (!opened).then(|| {
            format!(
                "answered with ICMP port unreachable from {} (frame {})",
                first.from, first.frame
            )
        })
    };
    let sent: u64 = out_flows.iter().map(|(_, f)| f.packets).sum();
    let received: u64 = in_flows.iter().map(|(_, f)| f.packets).sum();
    let mut evidence = vec![
        ev(
            m,
            offerer,
            format!("offer: {}  media at {offer}", line(offerer)),
        ),
        ev(
            m,
            answerer,
            format!("answer: {}  media at {answer}", line(answerer)),
        ),
    ];
    evidence.push(ev(
        m,
        &m.sip[ack],
        format!("{}  — the call is established", line(&m.sip[ack])),
    ));
    let mut delivered_out = 0;
    let mut where_out = Vec::new();
    for ((s, d), f) in &out_flows {
        let lost = lost_reason(*s, *d);
        let note = match (&lost, *d == peer) {
            (Some(r), _) => r.clone(),
            (None, true) => "to the address the peer's SDP gives".to_string(),
            (None, false) => format!("to {d}, not the SDP's {peer} (latched or relayed)"),
        };
        if lost.is_none() {
            delivered_out += f.packets;
        } else {
            where_out.push(note.clone());
        }
        evidence.push(Evidence {
            frame: f.first_frame,
            t: m.t(f.first_at),
            text: format!("{s} → {d}  {} packets out, {note}", f.packets),
        });
    }
    let mut delivered_in = 0;
    for ((s, d), f) in &in_flows {
        // Inbound media the NAT itself rejects never reaches the phone.
        let rejected = m
            .icmp
            .iter()
            .find(|e| e.from == host && e.icmp.quoted_udp.is_some_and(|(_, qd)| qd == *d));
        let note = match rejected {
            Some(e) => format!(
                "rejected here with ICMP port unreachable (frame {}): no mapping for it",
                e.frame
            ),
            None => "arrives".to_string(),
        };
        if rejected.is_none() {
            delivered_in += f.packets;
        }
        evidence.push(Evidence {
            frame: f.first_frame,
            t: m.t(f.first_at),
            text: format!("{s} → {d}  {} packets in, {note}", f.packets),
        });
    }
    let mut evidence_tail = Vec::new();
    if sent == 0 {
        evidence_tail.push("no media leaves this point".to_string());
    }
    if received == 0 {
        evidence_tail.push("no media arrives at this point".to_string());
    }
    let label = if my_sdp == offer {
        "the caller"
    } else {
        "the callee"
    };
    let rtp_range = |p: u16| (10000..=20000).contains(&p);
    let kind_and = match (delivered_out > 0, delivered_in > 0) {
        (true, true) => return Vec::new(),
        (false, false) if sent == 0 && received == 0 && *my_sdp.ip() != host => Some((
            Kind::RtpBlocked,
            Confidence::Likely,
            format!(
                "the call was answered and acknowledged, yet no RTP crossed this point (the NAT in front of {label}) in either direction; SDP predicts {offer} ⇄ {answer}{}",
                if rtp_range(offer.port()) || rtp_range(answer.port()) { ", inside the usual RTP range 10000–20000" } else { "" }
            ),
            "a firewall on the media path drops the RTP port range while SIP on 5060 passes: signalling is fine, media blacks out".to_string(),
            vec!["open the RTP range on the firewall, or move media to a permitted range".to_string()],
            "rtp-range-blocked",
            Some("capture on the router's LAN side: RTP from the phone there and not here proves the router drops it".to_string()),
        )),
        (false, false) => Some((
            Kind::NoAudio,
            if where_out.is_empty() && sent > 0 { Confidence::Likely } else { Confidence::Certain },
            format!(
                "no audio either way at {label}: {sent} packets sent{}, {received} received{}",
                if where_out.is_empty() { String::new() } else { format!(" ({})", where_out.join("; ")) },
                if received > delivered_in { ", rejected before the phone" } else { "" }
            ),
            "each side's RTP goes to an address that does not lead to the other: a private SDP address, a STUN mapping a symmetric NAT does not honour for this peer, or a blocked port".to_string(),
            vec!["TURN or an SBC media relay that latches".to_string(), "STUN only behind endpoint-independent NATs".to_string()],
            "no-audio-symmetric-stun",
            None,
        )),
        (true, false) => Some((
            Kind::OneWayAudio,
            if received > 0 { Confidence::Certain } else if is_private(*my_sdp.ip()) { Confidence::Likely } else { Confidence::Possible },
            format!(
                "one-way audio: {label}'s media leaves ({delivered_out} packets), none reaches {label}{}",
                if received > 0 { format!(" ({received} arrive here and are rejected)") } else { String::new() }
            ),
            if is_private(*my_sdp.ip()) && received == 0 {
                format!("{label}'s SDP offers the private address {my_sdp}; the far end sends there unless it latches, or a firewall drops the range")
            } else {
                "the far end's RTP arrives at a port the NAT has no mapping for (a STUN port taken by an earlier inbound flow, a symmetric mapping) or is filtered".to_string()
            },
            vec!["a media endpoint that latches (symmetric RTP, RFC 4961) or an SBC relay".to_string(), "STUN/ICE-correct SDP, or TURN".to_string()],
            if is_private(*my_sdp.ip()) { "one-way-audio-private-sdp" } else { "one-way-audio-who-sends-first" },
            (received == 0).then(|| "capture at the far end: where its RTP goes settles it".to_string()),
        )),
        (false, true) => Some((
            Kind::OneWayAudio,
            if where_out.is_empty() { Confidence::Likely } else { Confidence::Certain },
            format!(
                "one-way audio: media reaches {label} ({delivered_in} packets), {label}'s does not get out{}",
                if where_out.is_empty() { String::new() } else { format!(" ({})", where_out.join("; ")) }
            ),
            if where_out.iter().any(|w| w.contains("private")) {
                "the far end's SDP offers a private address; media sent there is dropped by the internet".to_string()
            } else if where_out.iter().any(|w| w.contains("ICMP")) {
                "the far end's NAT has no mapping for the port its SDP gave (an earlier inbound flow took the STUN port, or the mapping is per destination); its own RTP comes from another port".to_string()
            } else {
                "the media leaves nowhere: the phone sends no RTP, or to an address this capture does not show".to_string()
            },
            vec!["latch: send to where the far end's RTP comes from (symmetric RTP, RFC 4961)".to_string(), "an SBC media relay, or TURN".to_string()],
            if where_out.iter().any(|w| w.contains("private")) { "one-way-audio-private-sdp" } else { "one-way-audio-who-sends-first" },
            where_out.is_empty().then(|| "capture at the far end".to_string()),
        )),
    };
    let Some((kind, confidence, summary, cause, fixes, file, settle)) = kind_and else {
        return Vec::new();
    };
    for t in evidence_tail {
        evidence.push(Evidence {
            frame: m.sip[ok].frame,
            t: m.t(m.sip[ok].at),
            text: t,
        });
    }
    vec![Finding {
        kind,
        severity: Severity::Problem,
        confidence,
        summary,
        evidence,
        cause,
        fixes,
        scenario: scenario(file),
        settle,
    }]
}
