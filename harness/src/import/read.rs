//! Reading a [`Plan`] off a rebuilt server capture: the parties and their NATs
//! ([`super::parties`]), the timeline ([`super::timeline`]), what the registrar does with NATed
//! phones, the keep-alives phones sent, and from the diagnosis the NAT timeout, the fixes and the
//! comment header. Sans-IO.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use super::parties::{self, User, PASSWORD};
use super::plan::{self, Fix, Outcome, Phone, Plan, Registrar};
use super::timeline::{self, ms};
use crate::diagnose::fields::{self, is_private};
use crate::diagnose::rebuild::{gaps, Model};
use crate::diagnose::{Kind, Packet, Report, Severity};
use crate::scenario::emit;
use crate::sip::KeepAlive;
use crate::trace::Payload;

/// Builds the plan `name` from the capture.
pub fn plan(name: &str, packets: &[Packet], m: &Model, report: &Report) -> Result<Plan, String> {
    if m.sip.is_empty() {
        return Err("no SIP in capture".into());
    }
    let server = parties::server_of(m)?;
    let users = parties::users(m, server)?;
    let parties::Placement {
        mapping,
        mut routers,
        mut phones,
    } = parties::place(server, &users, report);
    let registrar = registrar(m, server, &users, &phones);
    let t1_real = timeline::t1_estimate(m);
    let timeline::Timeline {
        steps,
        expect,
        waits,
        scale,
        t1_ms,
    } = timeline::timeline(m, server, &users, &mut phones, t1_real)?;
    keepalives(packets, server, &users, &mut phones, scale);
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
    // A slow answer that died although responses kept coming in below the silence: the router
    // ignores inbound packets for refresh. (Or its binding was shorter than those gaps; the
    // comment says so, and only a capture on the phone's LAN tells.)
    let outbound_only: Vec<(Ipv4Addr, Duration)> = crate::diagnose::findings::slow_answers(m)
        .into_iter()
        .filter(|a| a.refreshed_inbound())
        .filter_map(|a| {
            let wan = mapping.iter().find(|x| x.real == *a.caller.ip())?.scenario;
            Some((wan, a.longest_inbound_gap))
        })
        .collect();
    for r in routers.iter_mut() {
        if outbound_only.iter().any(|(wan, _)| *wan == r.wan) {
            r.nat.refresh = sim_nat::Refresh::OutboundOnly;
        }
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
                    && expect
                        .iter()
                        .any(|o| matches!(o, Outcome::Call { status: 200, .. })) =>
            {
                Some(Fix::Latching)
            }
            Kind::NoRport => Some(Fix::Rport),
            Kind::SymmetricNat if !registrar.far_end => Some(Fix::FarEnd),
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
        comment.push("The NAT type is open: run `harness matrix` on this file to try each.".into());
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
    for (wan, gap) in &outbound_only {
        comment.push(format!(
            "NAT refresh at {wan}: outbound-only. The 200 OK to the silent caller died although \
             responses went to it at most {:.1} s apart; a router that refreshed on inbound \
             packets would have kept the binding, unless it lived less than {:.1} s — capture on \
             the phone's LAN to tell the two apart.",
            gap.as_secs_f64(),
            gap.as_secs_f64()
        ));
    }
    if let Some(secs) = udp_timeout_secs {
        comment.push(format!(
            "NAT UDP timeout: not in the capture; {secs} s is below the scaled idle gap, so the binding expires as it did."
        ));
    }
    let comment = comment.iter().map(|l| emit::wrap(l, 98)).collect();
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

/// How the registrar treats NATed phones, read off where it sent requests for them.
fn registrar(m: &Model, server: Ipv4Addr, users: &[User], phones: &[Phone]) -> Registrar {
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
    // Answers to a Via address with rport, not to where the request came from: rport ignored.
    for t in m.transactions.values() {
        let Some(&first) = t.requests.first() else {
            continue;
        };
        let req = &m.sip[first];
        let (Some(f), Some(via)) = (m.final_response(t), fields::top_via(&req.msg)) else {
            continue;
        };
        if far_end.is_none()
            && *f.src.ip() == server
            && fields::has_rport(&via)
            && f.dst != req.src
            && fields::via_addr(&via) == Some(f.dst)
        {
            far_end = Some((false, format!(
                "literal NAT handling, from the capture: the server answered {} to its Via address {}, not to its source {} although Via asks for rport (frame {})",
                req.msg.method_or_status(), f.dst, req.src, f.frame
            )));
        }
    }
    let (far_end, why) = far_end.unwrap_or((
        true,
        "NAT handling NOT decided by the capture (the server sent nothing to a NATed phone's Contact or source): far-end assumed".into(),
    ));
    Registrar {
        far_end,
        why,
        users: users
            .iter()
            .zip(phones)
            .filter(|(u, _)| u.challenged)
            .map(|(_, p)| (p.name.clone(), PASSWORD.to_string()))
            .collect(),
        stun: phones.iter().any(|p| p.stun_contact),
    }
}

/// Keep-alives each NATed phone sent to the server: kind and median interval, scaled.
fn keepalives(
    packets: &[Packet],
    server: Ipv4Addr,
    users: &[User],
    phones: &mut [Phone],
    scale: f64,
) {
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
}
