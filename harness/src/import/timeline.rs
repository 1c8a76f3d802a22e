//! The timeline of a server capture as scenario steps: each user's first registration and each
//! call in order, idle gaps as `wait` steps, and the scale that keeps a long capture's run in
//! seconds with its ratios (T1, gaps, hold and answer times) intact; plus what the capture
//! showed at the end — registered or not, each call's status as its caller saw it, whether the
//! callee rang. Sans-IO.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use super::parties::{clean, user_of, User};
use super::plan::{Action, Outcome, Phone};
use crate::diagnose::fields;
use crate::diagnose::rebuild::{gaps, Model, Sip};

/// The longest idle gap a scenario keeps unscaled: longer captures are compressed to this.
const LONGEST_WAIT_MS: f64 = 8000.0;
/// The largest T1 a scenario keeps unscaled (a 408 then takes 64·T1 ≈ 13 s).
const LARGEST_T1_MS: f64 = 250.0;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

/// T1 as the capture shows it: the first gap of any retransmitted request, in ms.
pub fn t1_estimate(m: &Model) -> Option<f64> {
    m.transactions
        .values()
        .filter(|t| t.requests.len() >= 2)
        .filter_map(|t| {
            let times: Vec<SystemTime> = t.requests.iter().map(|&i| m.sip[i].at).collect();
            gaps(&times).first().copied()
        })
        .min()
        .map(ms)
}

/// A registration or call and when the capture saw it.
struct Event {
    start: SystemTime,
    end: SystemTime,
    action: Action,
}

/// The steps and expectations of a capture, scaled.
pub struct Timeline {
    pub steps: Vec<Action>,
    pub expect: Vec<Outcome>,
    /// The scaled `wait` steps, ms.
    pub waits: Vec<u64>,
    /// Scenario time per capture time (≤ 1).
    pub scale: f64,
    pub t1_ms: u64,
}

/// Reads the timeline; sets each callee's `answer_after_ms` (ringing to answer, scaled).
pub fn timeline(
    m: &Model,
    server: Ipv4Addr,
    users: &[User],
    phones: &mut [Phone],
    t1_real: Option<f64>,
) -> Result<Timeline, String> {
    let names: Vec<String> = phones.iter().map(|p| p.name.clone()).collect();
    let phone_of = |u: &str| {
        users
            .iter()
            .position(|x| x.name == u)
            .map(|i| names[i].clone())
    };
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
        // The phone's view: a final response sent elsewhere than the REGISTER came from while
        // the phone kept resending it did not reach the phone.
        let reached = m
            .transactions
            .values()
            .find(|t| t.requests.first() == Some(&r.request))
            .and_then(|t| {
                let f = m.final_response(t)?;
                let resent = t.requests.iter().any(|&i| m.sip[i].at > f.at);
                (f.dst == s.src || !resent).then_some(f.msg.status()?)
            });
        registered.insert(ua.clone(), reached.is_some_and(|c| (200..300).contains(&c)));
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
        let (Some(from), Some(to_user)) = (
            user_of(inv).and_then(|u| phone_of(&u)),
            inv.msg
                .to
                .as_deref()
                .and_then(fields::uri_user)
                .and_then(|u| clean(&u)),
        ) else {
            continue;
        };
        // A call to a user no phone in the capture is (a service, an unknown number) is kept:
        // the scenario calls the same name, which its registrar does not know (404).
        let callee_is_phone = phone_of(&to_user).is_some();
        let to = phone_of(&to_user).unwrap_or(to_user);
        let dialog: Vec<&Sip> = m
            .sip
            .iter()
            .filter(|x| x.msg.call_id.as_deref() == Some(c.call_id.as_str()))
            .collect();
        let caller_src = inv.src;
        // The callee's answers: responses to the server from anyone but the caller (a phone
        // that registered again from a new port answers from there, not its first source).
        let from_callee = |x: &Sip| {
            callee_is_phone && x.msg.is_response() && x.src != caller_src && *x.src.ip() != server
        };
        // The callee rang when it answered anything (180, 200) — seen as a response from it.
        let rang = dialog
            .iter()
            .any(|x| from_callee(x) && x.msg.status().is_some_and(|c| (180..300).contains(&c)));
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
        // A 2xx the server kept resending and the caller never acknowledged, while the caller
        // resent nothing (a provisional had reached it): no copy got through, and nothing final
        // ever reached the caller (binding-expiry-slow-answer: the 200 dies at the router).
        let resent_unacked = |f: &Sip| {
            f.msg.status().is_some_and(|c| (200..300).contains(&c))
                && !acked(f.at)
                && dialog
                    .iter()
                    .filter(|x| {
                        *x.src.ip() == server && x.dst == f.dst && x.msg.status() == f.msg.status()
                    })
                    .count()
                    > 1
        };
        let status = match final_to_caller {
            Some(f) if !retransmitted_after(f.at) && resent_unacked(f) => 0,
            Some(f) if acked(f.at) || !retransmitted_after(f.at) => f.msg.status().unwrap_or(0),
            _ => 408,
        };
        let answer = dialog
            .iter()
            .find(|x| from_callee(x) && x.msg.status() == Some(180))
            .and_then(|ring| {
                dialog
                    .iter()
                    .find(|x| from_callee(x) && x.msg.status() == Some(200) && x.at >= ring.at)
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
        // A callee that repeated its 180 (one To tag, several copies): the median gap.
        let rings: Vec<SystemTime> = dialog
            .iter()
            .filter(|x| from_callee(x) && x.msg.status() == Some(180))
            .map(|x| x.at)
            .collect();
        let mut ring_gaps: Vec<Duration> = gaps(&rings);
        ring_gaps.sort();
        let ring_every = ring_gaps
            .get(ring_gaps.len() / 2)
            .map(|g| g.as_secs_f64() * 1000.0);
        if let Some(i) = phones.iter().position(|p| p.name == to) {
            phones[i].answer_after_ms = answer.map(|a| a.round() as u64);
            phones[i].provisional_interval_ms = ring_every.map(|g| g.round() as u64);
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
        if callee_is_phone {
            expect_calls.retain(|o| !matches!(o, Outcome::Rang { ua, .. } if *ua == to));
            expect_calls.push(Outcome::Rang {
                ua: to,
                value: rang,
            });
        }
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
    for p in phones.iter_mut() {
        p.answer_after_ms = p
            .answer_after_ms
            // To 10 ms: a capture's 201 ms is the phone's 200 ms plus the trip.
            .map(|a| (a as f64 * scale / 10.0).round() as u64 * 10)
            .filter(|&a| a != 200);
        p.provisional_interval_ms = p
            .provisional_interval_ms
            .map(|r| ((r as f64 * scale / 10.0).round() as u64 * 10).max(10));
    }
    let mut expect: Vec<Outcome> = registered
        .iter()
        .map(|(ua, &value)| Outcome::Registered {
            ua: ua.clone(),
            value,
        })
        .collect();
    expect.extend(expect_calls);
    Ok(Timeline {
        steps,
        expect,
        waits,
        scale,
        t1_ms,
    })
}
