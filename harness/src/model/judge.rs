//! The expectations a model run can judge, worded as the kernel run words them (the snapshot
//! and the agreement test compare them): call outcomes, registration, ringing, media verdicts,
//! and what the per-link records show (`packet`, `timing`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::agent::{Agent, Machine};
use crate::capture::Frame;
use crate::rtp::{MediaReport, MediaVerdict};
use crate::scenario::file::{Expect, MediaVerdictDef};
use crate::scenario::{seen, Scenario};
use crate::sip::Event;

/// One check: what was expected, whether it held, what was observed.
pub type Check = (String, bool, String);

/// Judges every expectation of `s` against what the model run left.
pub fn judge(
    s: &Scenario,
    agents: &[Agent],
    calls: &BTreeMap<String, u16>,
    reports: &BTreeMap<String, MediaReport>,
    frames: &[Frame],
) -> Vec<Check> {
    let phone = |ua: &str| {
        agents
            .iter()
            .find(|a| matches!(a.machine, Machine::Ua(_)) && a.user.as_deref() == Some(ua))
    };
    let t1 = Duration::from_millis(s.file.scenario.t1_ms).as_secs_f64();
    s.file
        .expects
        .iter()
        .map(|e| match e.get_ref() {
            Expect::Call { from, status } => {
                let got = calls.get(from).copied();
                (
                    format!("{from}'s call ends with {status}"),
                    got.is_some_and(|g| status.contains(g)),
                    match got {
                        Some(0) => "no final response".to_string(),
                        Some(c) => format!("got {c}"),
                        None => "no call was placed".to_string(),
                    },
                )
            }
            Expect::Registered { ua, value } => {
                let reg = phone(ua)
                    .and_then(|a| {
                        a.sip_events().filter_map(|e| match e {
                            Event::Registered { .. } => Some(true),
                            Event::RegistrationFailed { .. } => Some(false),
                            _ => None,
                        })
                        .last()
                    })
                    .unwrap_or(false);
                (
                    format!("{ua} {} registered", if *value { "is" } else { "is not" }),
                    reg == *value,
                    format!("registered = {reg}"),
                )
            }
            Expect::Rang { ua, value } => {
                let rang = phone(ua).is_some_and(|a| {
                    a.sip_events()
                        .any(|e| matches!(e, Event::IncomingCall { .. }))
                });
                (
                    format!("{ua} {}", if *value { "rings" } else { "never rings" }),
                    rang == *value,
                    format!("rang = {rang}"),
                )
            }
            Expect::Media { from, value } => {
                let want = match value {
                    MediaVerdictDef::BothWays => MediaVerdict::BothWays,
                    MediaVerdictDef::CallerToCallee => MediaVerdict::CallerToCallee,
                    MediaVerdictDef::CalleeToCaller => MediaVerdict::CalleeToCaller,
                    MediaVerdictDef::None => MediaVerdict::None,
                };
                let got = reports.get(from);
                (
                    format!("{from}'s call has {value:?} audio"),
                    got.is_some_and(|g| g.verdict == want),
                    got.map_or("no media ran (no established call)".into(), |g| g.to_string()),
                )
            }
            Expect::Timing {
                at,
                first,
                then,
                within_t1,
            } => {
                let window = within_t1
                    .map(|(lo, hi)| format!(" {lo}–{hi}·T1 later"))
                    .unwrap_or_default();
                let what = format!("{first:?} then {then:?} at {at}{window}");
                match seen::order(frames, at, first, then) {
                    Ok((_, b, gap)) => {
                        let in_t1 = gap.as_secs_f64() / t1;
                        (
                            what,
                            within_t1.is_none_or(|(lo, hi)| (lo..=hi).contains(&in_t1)),
                            format!("{:.1}·T1 ({:.3} s) later: {}", in_t1, gap.as_secs_f64(), b.line),
                        )
                    }
                    Err(missing) => (what, false, missing),
                }
            }
            Expect::Packet {
                at,
                contains,
                from,
                to,
                min,
                max,
            } => {
                let q = seen::PacketQuery {
                    at,
                    contains,
                    from: from.as_deref().and_then(seen::Address::parse),
                    to: to.as_deref().and_then(seen::Address::parse),
                };
                let found = seen::count(frames, &q);
                let (min, max) = crate::scenario::file::packet_bounds(*min, *max);
                let range = match max {
                    Some(0) => "never".to_string(),
                    Some(m) if m == min => format!("{m} time(s)"),
                    Some(m) => format!("{min} to {m} times"),
                    None => format!("at least {min} time(s)"),
                };
                let path = match (from, to) {
                    (Some(f), Some(t)) => format!(" {f} → {t}"),
                    (Some(f), None) => format!(" from {f}"),
                    (None, Some(t)) => format!(" to {t}"),
                    (None, None) => String::new(),
                };
                (
                    format!("{contains:?}{path} seen at {at} {range}"),
                    found.count >= min && max.is_none_or(|m| found.count <= m),
                    match found.first {
                        Some(first) => format!("{} packet(s), first: {first}", found.count),
                        None => "0 packets".to_string(),
                    },
                )
            }
            other => (
                format!("{other:?}"),
                false,
                "not judged on the model (refused files only)".into(),
            ),
        })
        .collect()
}
