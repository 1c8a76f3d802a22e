//! Judges a file's expectations against what a run observed: pure, so either backend's
//! [`Observed`] is judged by the same code.

use std::net::IpAddr;
use std::time::Duration;

use sim_nat::{Filtering, Mapping};

use super::file::{CandidateKindDef, Expect, MediaVerdictDef, Statuses, StunVsWan};
use super::observed::{Observed, Phone};
use super::seen::{Address, PacketQuery};
use super::Scenario;
use crate::rtp::MediaVerdict;
use crate::stun::ClassicNat;

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

/// An expectation on what the phones and programs said; those on the wire and on the diagnosis
/// steps are judged by [`on_the_wire`] and [`by_field_check`].
fn expectation(s: &Scenario, o: &Observed, e: &Expect) -> Check {
    match e {
        Expect::Call { from, status } => call(o, from, status),
        Expect::Registered { ua, value } => {
            let what = if *value {
                "is registered"
            } else {
                "is not registered"
            };
            phone_fact(o, ua, (*value, what), ("registered", Phone::registered))
        }
        Expect::Rang { ua, value } => {
            let what = if *value { "rings" } else { "never rings" };
            phone_fact(o, ua, (*value, what), ("rang", Phone::rang))
        }
        Expect::Media { from, value } => media(o, from, value),
        Expect::Ice { ua, local, remote } => ice(o, ua, *local, *remote),
        Expect::ExitCode { command, code } => {
            let got = o.commands.get(command).and_then(|p| p.exit);
            (
                format!("{command} exits with {code}"),
                got == Some(*code),
                format!("exit = {got:?}"),
            )
        }
        Expect::Log {
            command,
            contains,
            matches,
            stream,
            min,
            max,
        } => {
            let text = o.commands.get(command).map(|p| p.output(*stream));
            let pattern = (contains.as_deref(), matches.as_deref());
            log(command, text.as_deref(), pattern, (*min, *max))
        }
        Expect::Timing { .. } | Expect::Packet { .. } => on_the_wire(s, o, e),
        Expect::StunAddress { .. } | Expect::NatType { .. } | Expect::UdpReachable { .. } => {
            by_field_check(s, o, e)
        }
    }
}

/// An expectation on the captured packets.
fn on_the_wire(s: &Scenario, o: &Observed, e: &Expect) -> Check {
    match e {
        Expect::Timing {
            at,
            first,
            then,
            within_t1,
        } => timing(s, o, at, (first, then), *within_t1),
        Expect::Packet {
            at,
            contains,
            from,
            to,
            min,
            max,
        } => {
            let ends = (from.as_deref(), to.as_deref());
            packet(o, (at, contains), ends, (*min, *max))
        }
        _ => unreachable!("only expectations on packets are judged here"),
    }
}

/// An expectation on what a diagnosis step found.
fn by_field_check(s: &Scenario, o: &Observed, e: &Expect) -> Check {
    match e {
        Expect::StunAddress {
            host,
            router,
            value,
        } => stun_address(s, o, (host, router), *value),
        Expect::NatType {
            host,
            value,
            mapping,
            filtering,
        } => nat_type(o, host, value.classic(), (*mapping, *filtering)),
        Expect::UdpReachable {
            host,
            probe,
            reached,
        } => udp_reachable(o, host, probe.as_deref(), *reached),
        _ => unreachable!("only expectations on diagnosis steps are judged here"),
    }
}

fn call(o: &Observed, from: &str, status: &Statuses) -> Check {
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

/// A yes-or-no fact about phone `ua`: expected `want`, described as `what`; seen as
/// `name = …`.
fn phone_fact(
    o: &Observed,
    ua: &str,
    (want, what): (bool, &str),
    (name, fact): (&str, fn(&Phone) -> bool),
) -> Check {
    let got = o.phones.get(ua).is_some_and(fact);
    (
        format!("{ua} {what}"),
        got == want,
        format!("{name} = {got}"),
    )
}

fn udp_reachable(o: &Observed, host: &str, probe: Option<&str>, reached: u16) -> Check {
    let probes = || o.timeline.probes();
    let run = match probe {
        Some(p) => probes().find(|x| x.name.as_deref() == Some(p)),
        None => probes().rev().find(|x| x.listen == host),
    };
    let label = probe
        .map(|p| format!("probe \"{p}\""))
        .unwrap_or_else(|| "the last UDP probe".into());
    (
        format!("{label} reaches {host} {reached} time(s)"),
        run.is_some_and(|x| x.reached() == usize::from(reached)),
        run.map_or("the probe did not run".into(), |x| x.summary()),
    )
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

fn ice(
    o: &Observed,
    ua: &str,
    local: Option<CandidateKindDef>,
    remote: Option<CandidateKindDef>,
) -> Check {
    let name = |k: Option<CandidateKindDef>| k.map_or("any".to_string(), |k| k.kind().to_string());
    let path = o.timeline.last_ice(ua);
    let pair = path.and_then(|p| p.selected.as_ref());
    let fits = |want: Option<CandidateKindDef>, got: crate::ice::CandidateKind| {
        want.is_none_or(|w| w.kind() == got)
    };
    (
        format!(
            "{ua}'s ICE media went over a {} ↔ {} pair",
            name(local),
            name(remote)
        ),
        pair.is_some_and(|(l, r)| fits(local, l.kind) && fits(remote, r.kind)),
        match (path, pair) {
            (None, _) => "no ICE call ran".into(),
            (Some(_), None) => "no pair was nominated".into(),
            (Some(_), Some((l, r))) => format!("{l} ↔ {r}"),
        },
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

/// Lines of a command's output (`None`: it never started) that contain a text or match a
/// regular expression, `min` to `max` of them.
fn log(
    command: &str,
    text: Option<&str>,
    (contains, matches): (Option<&str>, Option<&str>),
    (min, max): (Option<u32>, Option<u32>),
) -> Check {
    let re = matches.map(|m| regex::Regex::new(m).expect("checked when the file loaded"));
    let hits: Vec<&str> = text
        .unwrap_or("")
        .lines()
        .filter(|l| match (&re, contains) {
            (Some(re), _) => re.is_match(l),
            (None, Some(c)) => l.contains(c),
            (None, None) => false,
        })
        .collect();
    let (min, max) = super::file::packet_bounds(min, max);
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

/// Packets seen at vantage point `at` that contain a text, from and to given addresses,
/// `min` to `max` of them.
fn packet(
    o: &Observed,
    (at, contains): (&str, &str),
    (from, to): (Option<&str>, Option<&str>),
    (min, max): (Option<u32>, Option<u32>),
) -> Check {
    let q = PacketQuery {
        at,
        contains,
        from: from.and_then(Address::parse),
        to: to.and_then(Address::parse),
    };
    let found = super::seen::count(&o.frames, &q);
    let (min, max) = super::file::packet_bounds(min, max);
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

fn stun_address(
    s: &Scenario,
    o: &Observed,
    (host, router): (&str, &str),
    value: StunVsWan,
) -> Check {
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

/// The RFC 3489 name of `host`'s NAT, and its RFC 4787 mapping and filtering if asked.
fn nat_type(
    o: &Observed,
    host: &str,
    classic: ClassicNat,
    (mapping, filtering): (Option<Mapping>, Option<Filtering>),
) -> Check {
    let got = o.timeline.classified(host);
    let found = got.and_then(|c| c.found.as_ref().ok());
    let ok = got.is_some_and(|c| c.classic() == classic)
        && mapping.is_none_or(|m| found.and_then(|b| b.mapping) == Some(m))
        && filtering.is_none_or(|f| found.and_then(|b| b.filtering) == Some(f));
    let mut what = format!("{host} is behind a {classic} NAT");
    if mapping.is_some() {
        what.push_str(&format!(", mapping {}", super::checks::kebab(mapping)));
    }
    if filtering.is_some() {
        what.push_str(&format!(", filtering {}", super::checks::kebab(filtering)));
    }
    (
        what,
        ok,
        got.map_or("no classify-nat ran".into(), |c| c.to_string()),
    )
}
