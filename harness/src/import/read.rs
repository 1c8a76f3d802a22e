//! Reading a [`Plan`] off a rebuilt capture: who is the registrar, who is a phone, which phone
//! sits behind a NAT (a private Contact, Via or SDP from a public source, or a source port that
//! is not the Via port), what the registrar does with NATed phones, the timers and idle gaps,
//! the timeline and how each registration and call ended. Sans-IO.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use sim_nat::{NatType, SipAlg};

use super::plan::{self, Action, Fix, Outcome, Phone, Plan, Registrar, Router, SERVER};
use super::Mapped;
use crate::diagnose::fields::{self, is_private};
use crate::diagnose::rebuild::{gaps, Model, Sip};
use crate::diagnose::{Kind, Packet, Report, Severity};
use crate::sip::KeepAlive;
use crate::trace::Payload;

/// The longest idle gap a scenario keeps unscaled: longer captures are compressed to this.
const LONGEST_WAIT_MS: f64 = 8000.0;
/// The largest T1 a scenario keeps unscaled (a 408 then takes 64·T1 ≈ 13 s).
const LARGEST_T1_MS: f64 = 250.0;
/// The password written for users the capture shows being challenged (the real one is unknown).
const PASSWORD: &str = "secret";

/// What the capture says about one SIP user talking to the registrar.
#[derive(Debug, Clone)]
struct User {
    name: String,
    /// Where its first message came from, as the server saw it.
    source: SocketAddrV4,
    contact: Option<SocketAddrV4>,
    via: Option<SocketAddrV4>,
    rport: bool,
    sdp: Option<SocketAddrV4>,
    expires: Option<u32>,
    challenged: bool,
    first_frame: u64,
}

impl User {
    /// The private address it reveals (Contact, Via, SDP), if any.
    fn private(&self) -> Option<Ipv4Addr> {
        [self.contact, self.via, self.sdp]
            .into_iter()
            .flatten()
            .map(|a| *a.ip())
            .find(|ip| is_private(*ip))
    }

    /// Its Via port differs from the port its packets came from: the NAT does not keep ports.
    fn port_changed(&self) -> bool {
        self.via.is_some_and(|v| v.port() != self.source.port())
    }

    fn natted(&self) -> bool {
        !is_private(*self.source.ip()) && (self.private().is_some() || self.port_changed())
    }
}

fn user_of(s: &Sip) -> Option<String> {
    let header = if s.msg.is_response() {
        s.msg.to.as_deref()
    } else {
        s.msg.from.as_deref()
    }?;
    clean(&fields::uri_user(header)?)
}

/// A SIP user as a scenario name: lower case, letters, digits and `-`.
fn clean(u: &str) -> Option<String> {
    let clean: String = u
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_string();
    (!clean.is_empty()).then_some(clean)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

/// The registrar: the capture host that REGISTERs go to, else the one every SIP packet shares.
fn server_of(m: &Model) -> Result<Ipv4Addr, String> {
    let hosts = m.capture_hosts();
    let registers_to = m
        .sip
        .iter()
        .find(|s| s.msg.method_or_status() == "REGISTER" && !s.msg.is_response())
        .map(|s| *s.dst.ip());
    let server = match registers_to {
        Some(r) if hosts.is_empty() || hosts.contains(&r) => r,
        _ => *hosts.first().ok_or(
            "the SIP in it was not all sent to or from one host: import reads a capture taken at the SIP server",
        )?,
    };
    if is_private(server) {
        return Err(format!(
            "the capture was taken on a LAN ({server} is private): import reads a capture taken at the SIP server"
        ));
    }
    Ok(server)
}

/// Builds the plan `name` from the capture.
pub fn plan(name: &str, packets: &[Packet], m: &Model, report: &Report) -> Result<Plan, String> {
    if m.sip.is_empty() {
        return Err("no SIP in capture".into());
    }
    let server = server_of(m)?;
    let to_server = |s: &&Sip| *s.dst.ip() == server && *s.src.ip() != server;

    // Users, in order of first appearance.
    let mut users: BTreeMap<String, User> = BTreeMap::new();
    for s in m.sip.iter().filter(to_server) {
        let Some(name) = user_of(s) else { continue };
        let u = users.entry(name.clone()).or_insert_with(|| User {
            name,
            source: s.src,
            contact: None,
            via: None,
            rport: true,
            sdp: None,
            expires: None,
            challenged: false,
            first_frame: s.frame,
        });
        if !s.msg.is_response() {
            if let Some(v) = fields::top_via(&s.msg) {
                if u.via.is_none() {
                    u.via = fields::via_addr(&v);
                    u.rport = fields::has_rport(&v);
                }
            }
            if u.contact.is_none() {
                u.contact = fields::contact_addr(&s.msg);
            }
            if s.msg.method_or_status() == "REGISTER" && u.expires.is_none() {
                u.expires = fields::expires(&s.msg);
            }
        }
        if u.sdp.is_none() {
            u.sdp = fields::sdp_media(&s.msg);
        }
    }
    for s in m.sip.iter().filter(|s| *s.src.ip() == server) {
        if matches!(s.msg.status(), Some(401 | 407)) {
            if let Some(u) = user_of(s).and_then(|n| users.get_mut(&n)) {
                u.challenged = true;
            }
        }
    }
    let mut users: Vec<User> = users.into_values().collect();
    users.sort_by_key(|u| u.first_frame);
    if !users.iter().any(User::natted) {
        return Err("cannot tell who is behind a NAT: capture at the server has no private address and no port change".into());
    }

    // Routers: one per public source address that NATed phones share.
    let mut mapping = vec![Mapped {
        real: server,
        scenario: Ipv4Addr::new(203, 0, 113, 10),
        role: "server (registrar/proxy)".into(),
    }];
    let mut map = |real: Ipv4Addr, scenario: Ipv4Addr, role: String| {
        if !mapping.iter().any(|x| x.real == real) {
            mapping.push(Mapped {
                real,
                scenario,
                role,
            });
        }
    };
    let symmetric_seen = report.findings.iter().any(|f| f.kind == Kind::SymmetricNat);
    let faults: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .filter_map(|f| plan::alg_fault(f.kind))
        .collect();
    let mut routers: Vec<Router> = Vec::new();
    let mut phones: Vec<Phone> = Vec::new();
    let mut public_n = 0u8;
    let mut taken: Vec<String> = vec![SERVER.into()];
    let mut wans: Vec<Ipv4Addr> = Vec::new();
    for u in &users {
        let mut name = u.name.clone();
        while taken.contains(&name) {
            name.push_str("-ua");
        }
        taken.push(name.clone());
        let router = if u.natted() {
            let wan = *u.source.ip();
            let k = match wans.iter().position(|w| *w == wan) {
                Some(k) => k,
                None => {
                    let k = routers.len();
                    wans.push(wan);
                    let n = k as u8 + 1;
                    let rname = if k == 0 {
                        "home".to_string()
                    } else {
                        format!("home-{n}")
                    };
                    let scenario_wan = Ipv4Addr::new(203, 0, 113, n);
                    map(
                        wan,
                        scenario_wan,
                        format!("{rname} WAN (NAT in front of {name})"),
                    );
                    let (nat_type, why, candidates) = if u.port_changed() {
                        (
                            NatType::Symmetric,
                            format!(
                                "NAT type from the capture: {name}'s packets come from port {} but its Via says {}: the router does not keep ports, so symmetric",
                                u.source.port(),
                                u.via.map_or(0, |v| v.port())
                            ),
                            Vec::new(),
                        )
                    } else if symmetric_seen {
                        (
                            NatType::Symmetric,
                            "NAT type from the capture: a STUN mapping differs from the address the server sees: symmetric".to_string(),
                            Vec::new(),
                        )
                    } else {
                        (
                            NatType::PortRestrictedCone,
                            format!(
                                "NAT type NOT decided by the capture: the router kept {name}'s port ({}); port-restricted-cone, the commonest home router, is assumed; full-cone and restricted-cone fit the capture too",
                                u.source.port()
                            ),
                            vec![
                                NatType::FullCone,
                                NatType::RestrictedCone,
                                NatType::PortRestrictedCone,
                            ],
                        )
                    };
                    let mut nat = nat_type.behaviour();
                    if !faults.is_empty() {
                        nat.sip_alg = SipAlg::Emulated(faults.clone());
                    }
                    routers.push(Router {
                        name: rname,
                        wan: scenario_wan,
                        lan: Ipv4Addr::new(192, 168, n, 1),
                        nat,
                        why,
                        candidates,
                    });
                    k
                }
            };
            Some(k)
        } else {
            None
        };
        let addr = match router {
            Some(k) => {
                let n = k as u8 + 1;
                let inside = phones
                    .iter()
                    .filter(|p| p.router.as_deref() == Some(routers[k].name.as_str()))
                    .count() as u8;
                let a = Ipv4Addr::new(192, 168, n, 10 + inside);
                if let Some(p) = u.private() {
                    map(
                        p,
                        a,
                        format!("{name} (private, behind {})", routers[k].name),
                    );
                }
                a
            }
            None => {
                let a = Ipv4Addr::new(198, 51, 100, 20 + public_n);
                public_n += 1;
                map(*u.source.ip(), a, format!("{name} (public)"));
                a
            }
        };
        phones.push(Phone {
            name,
            router: router.map(|k| routers[k].name.clone()),
            addr,
            rport: u.rport,
            stun_contact: false,
            keepalive: None,
            expires_secs: u.expires.filter(|&e| e != 3600).map(u64::from),
            answer_after_ms: None,
            media_port: u.sdp.map(|a| a.port()).filter(|&p| p != 4000),
            latching: false,
            password: u.challenged.then(|| PASSWORD.to_string()),
        });
    }
    // `users` and `phones` are parallel: a user's scenario name is its phone's.
    let names: Vec<String> = phones.iter().map(|p| p.name.clone()).collect();
    let phone_of = |u: &str| {
        users
            .iter()
            .position(|x| x.name == u)
            .map(|i| names[i].clone())
    };

    // The registrar's NAT handling: where it sent requests for NATed phones.
    let mut far_end = None;
    for s in m
        .sip
        .iter()
        .filter(|s| *s.src.ip() == server && !s.msg.is_response())
    {
        for u in users.iter().filter(|u| u.natted()) {
            let Some(c) = u.contact else { continue };
            if s.dst == c && is_private(*c.ip()) && far_end.is_none() {
                far_end = Some((false, format!(
                    "literal NAT handling, from the capture: the server sent {} to {}'s private Contact {c} (frame {})",
                    s.msg.method_or_status(), u.name, s.frame
                )));
            } else if s.dst == u.source && c != u.source && far_end.is_none() {
                far_end = Some((true, format!(
                    "far-end NAT handling, from the capture: the server sent {} to {}'s source address {}, not its Contact {c} (frame {})",
                    s.msg.method_or_status(), u.name, u.source, s.frame
                )));
            }
        }
    }
    let (far_end, why) = far_end.unwrap_or((
        true,
        "NAT handling NOT decided by the capture (the server sent nothing to a NATed phone's Contact or source): far-end assumed".into(),
    ));
    let registrar = Registrar {
        far_end,
        why,
        users: users
            .iter()
            .zip(&phones)
            .filter(|(u, _)| u.challenged)
            .map(|(_, p)| (p.name.clone(), PASSWORD.to_string()))
            .collect(),
        stun: false,
    };

    // T1: the first gap of any retransmitted request.
    let t1_real = m
        .transactions
        .values()
        .filter(|t| t.requests.len() >= 2)
        .filter_map(|t| {
            let times: Vec<SystemTime> = t.requests.iter().map(|&i| m.sip[i].at).collect();
            gaps(&times).first().copied()
        })
        .min()
        .map(ms);

    // The timeline: each user's first registration and each call, in order.
    struct Event {
        start: SystemTime,
        end: SystemTime,
        action: Action,
    }
    let mut events: Vec<Event> = Vec::new();
    let mut registered: BTreeMap<String, bool> = BTreeMap::new();
    let mut regs: Vec<_> = m.registrations();
    regs.sort_by_key(|r| r.request);
    for r in &regs {
        let s = &m.sip[r.request];
        if *s.dst.ip() != server {
            continue;
        }
        let Some(ua) = user_of(s).and_then(|u| phone_of(&u)) else {
            continue;
        };
        // A 401 is part of registering; the last final status per user is what holds at the end.
        registered.insert(
            ua.clone(),
            r.status.is_some_and(|c| (200..300).contains(&c)),
        );
        if events
            .iter()
            .any(|e| matches!(&e.action, Action::Register { ua: u } if *u == ua))
        {
            continue;
        }
        let end = m
            .sip
            .iter()
            .filter(|x| x.msg.call_id == s.msg.call_id && x.at >= s.at)
            .map(|x| x.at)
            .max()
            .unwrap_or(s.at);
        events.push(Event {
            start: s.at,
            end,
            action: Action::Register { ua },
        });
    }
    let mut expect_calls: Vec<Outcome> = Vec::new();
    for c in m.calls() {
        let inv = &m.sip[c.invite];
        let (Some(from), Some(to)) = (
            user_of(inv).and_then(|u| phone_of(&u)),
            inv.msg
                .to
                .as_deref()
                .and_then(fields::uri_user)
                .and_then(|u| clean(&u))
                .and_then(|u| phone_of(&u)),
        ) else {
            continue;
        };
        let dialog: Vec<&Sip> = m
            .sip
            .iter()
            .filter(|x| x.msg.call_id.as_deref() == Some(c.call_id.as_str()))
            .collect();
        let callee_src = names.iter().position(|n| *n == to).map(|i| users[i].source);
        let caller_src = inv.src;
        // The callee rang when it answered anything (180, 200) — seen as a response from it.
        let rang = dialog.iter().any(|x| {
            x.msg.is_response()
                && Some(x.src) == callee_src
                && x.msg.status().is_some_and(|c| c >= 180 && c < 300)
        });
        let final_to_caller = dialog.iter().find(|x| {
            x.msg.is_response()
                && *x.src.ip() == server
                && *x.dst.ip() == *caller_src.ip()
                && x.msg.cseq.as_deref().is_some_and(|c| c.ends_with("INVITE"))
                && x.msg.status().is_some_and(|c| c >= 200)
        });
        let acked = |after: SystemTime| {
            dialog
                .iter()
                .any(|x| x.src == caller_src && x.msg.method_or_status() == "ACK" && x.at >= after)
        };
        let retransmitted_after = |after: SystemTime| {
            dialog.iter().any(|x| {
                x.src == caller_src && x.msg.method_or_status() == "INVITE" && x.at > after
            })
        };
        // The caller's view: a final response it never acknowledged while it kept resending
        // the INVITE did not reach it; its own Timer B ends the call with 408.
        let status = match final_to_caller {
            Some(f) if acked(f.at) || !retransmitted_after(f.at) => f.msg.status().unwrap_or(0),
            _ => 408,
        };
        let answer = dialog
            .iter()
            .find(|x| Some(x.src) == callee_src && x.msg.status() == Some(180))
            .and_then(|ring| {
                dialog
                    .iter()
                    .find(|x| {
                        Some(x.src) == callee_src && x.msg.status() == Some(200) && x.at >= ring.at
                    })
                    .map(|ok| ms(since(ring.at, ok.at)))
            });
        let bye = dialog
            .iter()
            .find(|x| x.msg.method_or_status() == "BYE")
            .map(|b| b.at);
        let ok_at = c.ok.map(|i| m.sip[i].at);
        // Held only when the caller had the call: a callee that never got its ACK also ends
        // the dialog with BYE, which is not a hang-up.
        let hold = match (ok_at, bye) {
            (Some(o), Some(b)) if status == 200 => ms(since(o, b)),
            _ => 0.0,
        };
        let end = dialog.iter().map(|x| x.at).max().unwrap_or(inv.at);
        if let Some(i) = phones.iter().position(|p| p.name == to) {
            phones[i].answer_after_ms = answer.map(|a| a.round() as u64);
        }
        events.push(Event {
            start: inv.at,
            end,
            action: Action::Call {
                from: from.clone(),
                to: to.clone(),
                hold_ms: hold.round() as u64,
            },
        });
        expect_calls.retain(|o| !matches!(o, Outcome::Call { from: f, .. } if *f == from));
        expect_calls.push(Outcome::Call { from, status });
        expect_calls.retain(|o| !matches!(o, Outcome::Rang { ua, .. } if *ua == to));
        expect_calls.push(Outcome::Rang {
            ua: to,
            value: rang,
        });
    }
    events.sort_by_key(|e| e.start);
    if !events
        .iter()
        .any(|e| matches!(e.action, Action::Call { .. }))
        && registered.is_empty()
    {
        return Err(
            "no REGISTER and no INVITE to the server in the capture: nothing to replay".into(),
        );
    }

    // Idle gaps between steps, and the scale that keeps the run short with the ratios intact.
    let threshold = t1_real.unwrap_or(500.0).max(200.0) * 5.0;
    let idle: Vec<f64> = events
        .windows(2)
        .map(|w| ms(since(w[0].end, w[1].start)))
        .collect();
    let longest = idle.iter().copied().fold(0.0, f64::max);
    let mut scale = 1.0f64;
    if longest > LONGEST_WAIT_MS {
        scale = scale.min(LONGEST_WAIT_MS / longest);
    }
    if let Some(t1) = t1_real {
        if t1 > LARGEST_T1_MS {
            scale = scale.min(200.0 / t1);
        }
    }
    let t1_ms = t1_real
        .map(|t| (t * scale / 10.0).round() as u64 * 10)
        .unwrap_or(200)
        .max(50);
    let mut steps = Vec::new();
    let mut waits = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 && idle[i - 1] > threshold {
            let w = (idle[i - 1] * scale).round() as u64;
            waits.push(w);
            steps.push(Action::Wait {
                ms: w,
                why: format!(
                    "the capture is silent for {:.1} s here (scaled ×{scale:.2})",
                    idle[i - 1] / 1000.0
                ),
            });
        }
        steps.push(match &e.action {
            Action::Call { from, to, hold_ms } => Action::Call {
                from: from.clone(),
                to: to.clone(),
                hold_ms: (*hold_ms as f64 * scale).round() as u64,
            },
            a => a.clone(),
        });
    }
    for p in &mut phones {
        p.answer_after_ms = p
            .answer_after_ms
            .map(|a| (a as f64 * scale).round() as u64)
            .filter(|&a| a != 200);
    }

    // Keep-alives each NATed phone sent to the server: kind and median interval.
    for (u, p) in users.iter().zip(phones.iter_mut()) {
        let mut crlf = Vec::new();
        let mut stun = Vec::new();
        let mut options = Vec::new();
        for k in packets
            .iter()
            .filter(|k| k.src == u.source && *k.dst.ip() == server)
        {
            match &k.payload {
                Payload::KeepAlive => crlf.push(k.at),
                Payload::Stun(s) if s.class == crate::stun::codec::Class::Request => {
                    stun.push(k.at)
                }
                Payload::Sip(s) if s.method_or_status() == "OPTIONS" => options.push(k.at),
                _ => {}
            }
        }
        let median = |times: &[SystemTime]| {
            let mut g = gaps(times);
            g.sort();
            g.get(g.len() / 2)
                .map(|d| Duration::from_millis((ms(*d) * scale).round() as u64))
        };
        p.keepalive = [
            (crlf, KeepAlive::Crlf as fn(Duration) -> KeepAlive),
            (options, KeepAlive::Options),
            (stun, KeepAlive::Stun),
        ]
        .into_iter()
        .filter(|(t, _)| t.len() >= 2)
        .max_by_key(|(t, _)| t.len())
        .and_then(|(t, k)| median(&t).map(k));
    }

    // Findings → NAT timeout, fixes, the comment header.
    let problems: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .collect();
    let has = |k: Kind| problems.iter().any(|f| f.kind == k);
    let mut udp_timeout_secs = None;
    if has(Kind::BindingExpired) {
        let gap = waits.iter().copied().max().unwrap_or(4000);
        let secs = ((gap / 2000) as u32).max(1);
        for r in &mut routers {
            r.nat.udp_timeout_secs = secs;
        }
        udp_timeout_secs = Some(secs);
    }
    let mut fixes = Vec::new();
    let private_contact = users
        .iter()
        .any(|u| u.natted() && u.contact.is_some_and(|c| is_private(*c.ip())));
    for f in &problems {
        let fix = match f.kind {
            Kind::PrivateAddress if private_contact && !registrar.far_end => Some(Fix::FarEnd),
            Kind::PrivateAddress
                if users
                    .iter()
                    .any(|u| u.natted() && u.sdp.is_some_and(|a| is_private(*a.ip())))
                    && expect_calls
                        .iter()
                        .any(|o| matches!(o, Outcome::Call { status: 200, .. })) =>
            {
                Some(Fix::Latching)
            }
            Kind::NoRport => Some(Fix::Rport),
            Kind::BindingExpired => Some(Fix::KeepAlive),
            Kind::DigestUriMismatch | Kind::ContentLengthMismatch => Some(Fix::AlgOff),
            Kind::OneWayAudio => Some(Fix::Latching),
            _ => None,
        };
        if let Some(fix) = fix {
            if !fixes.contains(&fix) {
                fixes.push(fix);
            }
        }
    }

    let mut expect: Vec<Outcome> = registered
        .iter()
        .map(|(ua, &value)| Outcome::Registered {
            ua: ua.clone(),
            value,
        })
        .collect();
    expect.extend(expect_calls);

    let symptom = expect
        .iter()
        .map(|o| match o {
            Outcome::Registered { ua, value: true } => format!("{ua} is registered"),
            Outcome::Registered { ua, value: false } => format!("{ua} never registers"),
            Outcome::Call { from, status } => format!("{from}'s call ends with {status}"),
            Outcome::Rang { ua, value: true } => format!("{ua} rings"),
            Outcome::Rang { ua, value: false } => format!("{ua} never rings"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    // The root cause: the first problem that is not only a symptom (a timeout is one).
    let root = problems
        .iter()
        .find(|f| f.kind != Kind::RequestTimeout)
        .or(problems.first());
    let mut comment = vec![format!("Symptom: {symptom}.")];
    match root {
        Some(f) => {
            comment.push(format!("Root cause: {} — {}.", f.summary, f.cause));
            let twins: Vec<String> = fixes
                .iter()
                .map(|x| format!("{name}-fix-{}.toml", x.suffix()))
                .collect();
            comment.push(format!(
                "Fix: {}{}",
                f.fixes.first().cloned().unwrap_or_default(),
                if twins.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", twins.join(", "))
                }
            ));
        }
        None => {
            comment.push("Root cause: diagnose finds none of the field guide's failures.".into());
            comment.push("Fix: none needed.".into());
        }
    }
    comment.push(String::new());
    comment.push(format!(
        "Imported by `harness import` from {}.",
        report.file
    ));
    comment.push("Addresses (capture → scenario):".into());
    comment.extend(
        plan::mapping_lines(&mapping)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    for r in &routers {
        comment.push(format!("{}: {}.", r.name, r.why));
    }
    if routers.iter().any(|r| !r.candidates.is_empty()) {
        comment.push(format!(
            "The NAT type is open: run `harness matrix scenarios/{name}.toml` to try each."
        ));
    }
    comment.push(format!("Registrar: {}.", registrar.why));
    comment.push(match t1_real {
        Some(t) => format!(
            "Timers: T1 ≈ {t:.0} ms in the capture (first retransmission gap) → t1-ms = {t1_ms}; times scaled ×{scale:.2}."
        ),
        None => format!(
            "Timers: no retransmission in the capture, T1 unknown → t1-ms = {t1_ms}; times scaled ×{scale:.2}."
        ),
    });
    if let Some(secs) = udp_timeout_secs {
        comment.push(format!(
            "NAT UDP timeout: not in the capture; {secs} s is below the scaled idle gap, so the binding expires as it did."
        ));
    }
    Ok(Plan {
        name: name.to_string(),
        summary: format!("imported capture: {symptom}"),
        comment,
        t1_ms,
        mapping,
        routers,
        server: [
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 11),
        ],
        registrar,
        phones,
        steps,
        expect,
        fixes,
        udp_timeout_secs,
    })
}
