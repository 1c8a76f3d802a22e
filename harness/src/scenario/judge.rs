//! Judges a file's expectations against what a run observed: pure, so either backend's
//! [`Observed`] is judged by the same code.

use std::net::IpAddr;
use std::time::Duration;

use super::file::{Expect, LogStream, MediaVerdictDef, StunVsWan};
use super::observed::{Observed, Phone};
use super::seen::{Address, PacketQuery};
use super::Scenario;
use crate::rtp::MediaVerdict;

/// One expectation judged: its description, whether it held, what was observed.
pub type Check = (String, bool, String);

/// Every expectation of `s`, in file order.
pub fn judge(s: &Scenario, o: &Observed) -> Vec<Check> {
    s.file
        .expects
        .iter()
        .map(|e| expectation(s, o, e.get_ref()))
        .collect()
}

fn expectation(s: &Scenario, o: &Observed, e: &Expect) -> Check {
    let phone = |ua: &str| o.phones.get(ua);
    match e {
        Expect::Call { from, status } => {
            let got = o.timeline.last_call(from).map(|c| c.status);
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
            let reg = phone(ua).is_some_and(Phone::registered);
            (
                format!("{ua} {} registered", if *value { "is" } else { "is not" }),
                reg == *value,
                format!("registered = {reg}"),
            )
        }
        Expect::Rang { ua, value } => {
            let rang = phone(ua).is_some_and(Phone::rang);
            (
                format!("{ua} {}", if *value { "rings" } else { "never rings" }),
                rang == *value,
                format!("rang = {rang}"),
            )
        }
        Expect::Media { from, value } => media(o, from, value),
        Expect::ExitCode { command, code } => {
            let got = o.commands.get(command).and_then(|p| p.exit);
            (
                format!("{command} exits with {code}"),
                got == Some(*code),
                format!("exit = {got:?}"),
            )
        }
        Expect::Timing {
            at,
            first,
            then,
            within_t1,
        } => timing(s, o, at, (first, then), *within_t1),
        Expect::Log { .. } => log(o, e),
        Expect::Packet { .. } => packet(o, e),
        Expect::StunAddress {
            host,
            router,
            value,
        } => stun_address(s, o, host, router, *value),
        Expect::NatType { .. } => nat_type(o, e),
        Expect::UdpReachable {
            host,
            probe,
            reached,
        } => {
            let probes = || o.timeline.probes();
            let run = match probe {
                Some(p) => probes().find(|x| x.name.as_ref() == Some(p)),
                None => probes().rev().find(|x| &x.listen == host),
            };
            let label = probe
                .as_ref()
                .map(|p| format!("probe \"{p}\""))
                .unwrap_or_else(|| "the last UDP probe".into());
            (
                format!("{label} reaches {host} {reached} time(s)"),
                run.is_some_and(|x| x.reached() == usize::from(*reached)),
                run.map_or("the probe did not run".into(), |x| x.summary()),
            )
        }
    }
}

fn media(o: &Observed, from: &str, value: &MediaVerdictDef) -> Check {
    let want = match value {
        MediaVerdictDef::BothWays => MediaVerdict::BothWays,
        MediaVerdictDef::CallerToCallee => MediaVerdict::CallerToCallee,
        MediaVerdictDef::CalleeToCaller => MediaVerdict::CalleeToCaller,
        MediaVerdictDef::None => MediaVerdict::None,
    };
    let got = o.timeline.last_media(from);
    (
        format!("{from}'s call has {value:?} audio"),
        got.is_some_and(|g| g.verdict == want),
        got.map_or("no media ran (no established call)".into(), |g| {
            g.to_string()
        }),
    )
}

/// `first` then `then` at `at`, optionally within a window counted in T1.
fn timing(
    s: &Scenario,
    o: &Observed,
    at: &str,
    (first, then): (&str, &str),
    within_t1: Option<(f64, f64)>,
) -> Check {
    let t1 = Duration::from_millis(s.file.scenario.t1_ms).as_secs_f64();
    let window = within_t1
        .map(|(lo, hi)| format!(" {lo}–{hi}·T1 later"))
        .unwrap_or_default();
    let what = format!("{first:?} then {then:?} at {at}{window}");
    match super::seen::order(&o.frames, at, first, then) {
        Ok((_, b, gap)) => {
            let in_t1 = gap.as_secs_f64() / t1;
            (
                what,
                within_t1.is_none_or(|(lo, hi)| (lo..=hi).contains(&in_t1)),
                format!(
                    "{:.1}·T1 ({:.3} s) later: {}",
                    in_t1,
                    gap.as_secs_f64(),
                    b.line
                ),
            )
        }
        Err(missing) => (what, false, missing),
    }
}

/// `min`..`max` occurrences in words: `never`, `2 line(s)`, `1 to 3 lines`, `at least 1 line(s)`.
fn range(min: u32, max: Option<u32>, unit: &str) -> String {
    match max {
        Some(0) => "never".to_string(),
        Some(m) if m == min => format!("{m} {unit}(s)"),
        Some(m) => format!("{min} to {m} {unit}s"),
        None => format!("at least {min} {unit}(s)"),
    }
}

fn log(o: &Observed, e: &Expect) -> Check {
    let Expect::Log {
        command,
        contains,
        matches,
        stream,
        min,
        max,
    } = e
    else {
        unreachable!("called for a log expectation")
    };
    let text = o.commands.get(command).map(|p| match stream {
        LogStream::Stdout => p.stdout.clone(),
        LogStream::Stderr => p.stderr.clone(),
        LogStream::Both => p.stdout.clone() + &p.stderr,
    });
    let re = matches
        .as_deref()
        .map(|m| regex::Regex::new(m).expect("checked when the file loaded"));
    let hits: Vec<&str> = text
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter(|l| match (&re, contains) {
            (Some(re), _) => re.is_match(l),
            (None, Some(c)) => l.contains(c.as_str()),
            (None, None) => false,
        })
        .collect();
    let (min, max) = super::file::packet_bounds(*min, *max);
    let pattern = match (contains, matches) {
        (Some(c), _) => format!("{c:?}"),
        (_, Some(m)) => format!("/{m}/"),
        _ => String::new(),
    };
    let n = hits.len() as u32;
    (
        format!(
            "{command}'s output has {pattern} in {}",
            range(min, max, "line")
        ),
        text.is_some() && n >= min && max.is_none_or(|m| n <= m),
        match (text.is_some(), hits.first()) {
            (false, _) => "the command never started".to_string(),
            (true, Some(first)) => format!("{n} line(s), first: {}", first.trim()),
            (true, None) => "0 lines".to_string(),
        },
    )
}

fn packet(o: &Observed, e: &Expect) -> Check {
    let Expect::Packet {
        at,
        contains,
        from,
        to,
        min,
        max,
    } = e
    else {
        unreachable!("called for a packet expectation")
    };
    let q = PacketQuery {
        at,
        contains,
        from: from.as_deref().and_then(Address::parse),
        to: to.as_deref().and_then(Address::parse),
    };
    let found = super::seen::count(&o.frames, &q);
    let (min, max) = super::file::packet_bounds(*min, *max);
    let path = match (from, to) {
        (Some(f), Some(t)) => format!(" {f} → {t}"),
        (Some(f), None) => format!(" from {f}"),
        (None, Some(t)) => format!(" to {t}"),
        (None, None) => String::new(),
    };
    (
        format!(
            "{contains:?}{path} seen at {at} {}",
            range(min, max, "time")
        ),
        found.count >= min && max.is_none_or(|m| found.count <= m),
        match found.first {
            Some(first) => format!("{} packet(s), first: {first}", found.count),
            None => "0 packets".to_string(),
        },
    )
}

fn stun_address(s: &Scenario, o: &Observed, host: &str, router: &str, value: StunVsWan) -> Check {
    let wan = s.topology.router(router).map(|r| r.wan);
    let check = o.timeline.stun_check(host);
    let mapped = check.and_then(|c| c.mapped.as_ref().ok());
    let same = mapped.is_some_and(|m| Some(m.ip()) == wan.map(IpAddr::V4));
    let wan = wan.map_or("?".into(), |w| w.to_string());
    let verb = match value {
        StunVsWan::Equal => "equals",
        StunVsWan::Differs => "differs from",
    };
    (
        format!("{host}'s STUN address {verb} {router}'s WAN address {wan}"),
        mapped.is_some()
            && match value {
                StunVsWan::Equal => same,
                StunVsWan::Differs => !same,
            },
        match check {
            Some(c) => c.line(false),
            None => "no stun-check ran".into(),
        },
    )
}

fn nat_type(o: &Observed, e: &Expect) -> Check {
    let Expect::NatType {
        host,
        value,
        mapping,
        filtering,
    } = e
    else {
        unreachable!("called for a nat-type expectation")
    };
    let got = o.timeline.classified(host);
    let found = got.and_then(|c| c.found.as_ref().ok());
    let ok = got.is_some_and(|c| c.classic() == value.classic())
        && mapping.is_none_or(|m| found.and_then(|b| b.mapping) == Some(m))
        && filtering.is_none_or(|f| found.and_then(|b| b.filtering) == Some(f));
    let mut what = format!("{host} is behind a {} NAT", value.classic());
    if let Some(m) = mapping {
        what.push_str(&format!(", mapping {}", super::checks::kebab(Some(*m))));
    }
    if let Some(f) = filtering {
        what.push_str(&format!(", filtering {}", super::checks::kebab(Some(*f))));
    }
    (
        what,
        ok,
        got.map_or("no classify-nat ran".into(), |c| c.to_string()),
    )
}
