//! Turns what a run observed into its [`Outcome`]: the trace with every event in it, the
//! terminal ladder, the snapshot, the NAT model's explanations and, for a failed run, the
//! diagnosis of each host's capture. Pure but for [`write_files`], so either backend's
//! [`Observed`] is reported by the same code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::explain::RouterStory;
use super::judge::Check;
use super::observed::{MediaPath, Observed};
use super::{Outcome, Phases, Scenario, Verdict};
use crate::error::{Error, Result};
use crate::sip::Event;
use crate::trace::{Ladder, Trace};

/// The outcome of `s` from what was observed and how its expectations were judged. Its pcaps,
/// duration and phases are the backend's to fill in.
pub fn outcome(s: &Scenario, o: &Observed, checks: Vec<Check>) -> Outcome {
    let (trace, nat) = trace(s, o);
    let ladder = ladder(s, o, &trace);
    let snapshot = ladder
        .clone()
        .without_events()
        .sip_only()
        .by_transaction()
        .render()
        + &media_snapshot(o)
        + &checks_snapshot(o);
    let ladder = ladder.render();
    let error = o.timeline.error.clone();
    let verdict = if error.is_none() && checks.iter().all(|c| c.1) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let diagnosis = match verdict {
        Verdict::Fail => diagnose_hosts(s, &trace),
        Verdict::Pass => Vec::new(),
    };
    Outcome {
        name: s.name().to_string(),
        verdict,
        checks,
        error,
        ladder,
        snapshot,
        trace,
        pcaps: Vec::new(),
        duration: Duration::ZERO,
        phases: Phases::default(),
        diagnosis,
        field_checks: o
            .timeline
            .field_checks
            .iter()
            .flat_map(|c| c.report(false))
            .collect(),
        nat,
        bindings: o.conntrack.clone(),
    }
}

/// The observed trace with every event in it: why packets vanished (the NAT model's reasons),
/// the phones' and proxies' SIP events, the runner's notes and the diagnosis steps; with the NAT
/// model's story of each router it explains.
fn trace(s: &Scenario, o: &Observed) -> (Trace, Vec<RouterStory>) {
    let mut trace = o.trace.clone();
    let (vanished, stories) = super::explain::vanished(s, &o.frames);
    for (at, source, text) in vanished {
        trace.push_event(at, &source, text);
    }
    for phone in o.phones.values() {
        for (at, e) in &phone.events {
            if let Some(text) = describe(e) {
                trace.push_event(*at, &phone.host, text);
            }
        }
    }
    for (at, host, text) in &o.timeline.notes {
        trace.push_event(*at, host, text.clone());
    }
    for check in &o.timeline.field_checks {
        let (head, under) = check.lines(false);
        for text in std::iter::once(head).chain(under) {
            trace.push_event(check.at(), check.host(), text);
        }
    }
    for (host, events) in &o.proxies {
        for (at, e) in events {
            if let Some(text) = describe(e) {
                trace.push_event(*at, host, text);
            }
        }
    }
    (trace, stories)
}

/// The ladder of `trace` as both renderings start from: hosts and routers' WAN sides, the ports
/// routers moved redacted, time in T1.
fn ladder<'a>(s: &Scenario, o: &Observed, trace: &'a Trace) -> Ladder<'a> {
    let spec = &s.topology;
    let routers = spec
        .routers_upstream_first()
        .into_iter()
        .map(|r| format!("{}:wan", r.name));
    let hosts = spec.hosts.iter().map(|h| h.name.clone());
    Ladder::new(trace)
        .moved_ports(o.moved_ports.iter().copied())
        .vantages(routers.chain(hosts).collect::<Vec<_>>())
        .t1(Duration::from_millis(s.file.scenario.t1_ms))
}

/// Media in the snapshot as verdicts per direction, not packet counts: which packets of a
/// stream land before a latch or a pinhole opens varies by a packet or two between runs.
fn media_snapshot(o: &Observed) -> String {
    let how = |user: &str| match o.phones.get(user).map(|p| p.media) {
        Some(MediaPath::Relayed) => "via TURN",
        Some(MediaPath::Direct) => "direct",
        Some(MediaPath::Ice) => "ICE",
        None => "seen at its interface",
    };
    let mut out = String::new();
    for (caller, (report, callee)) in o.timeline.media_by_caller() {
        out.push_str(&format!(
            "── media of {caller}'s call ──\n  {caller} ({}) → {callee} ({}): {:?}\n  {callee} → {caller}: {:?}\n  verdict: {:?}\n",
            how(caller),
            how(callee),
            report.caller_to_callee.direction,
            report.callee_to_caller.direction,
            report.verdict
        ));
        let call = o
            .timeline
            .calls
            .iter()
            .rposition(|c| c.from == caller && c.media.is_some());
        for user in [caller, callee] {
            let path = o
                .timeline
                .ice
                .iter()
                .find(|p| Some(p.call) == call && p.user == user);
            if let Some(p) = path {
                out.push_str(&format!("  {}\n", ice_line(p, &o.moved_ports)));
            }
        }
    }
    out
}

/// Which pair an ICE phone's media went over, with the ports a run draws (those a NAT moved,
/// TURN relay and other ports ≥ 30000) as `{p}`.
fn ice_line(p: &super::observed::IcePath, moved: &[std::net::SocketAddrV4]) -> String {
    let at = |a: std::net::SocketAddr| {
        let drawn = match a {
            std::net::SocketAddr::V4(v4) => moved.contains(&v4),
            std::net::SocketAddr::V6(_) => false,
        };
        if drawn || a.port() >= 30000 {
            format!("{}:{{p}}", a.ip())
        } else {
            a.to_string()
        }
    };
    match &p.selected {
        Some((l, r)) => format!(
            "ICE {}: {} {} ↔ {} {}{}",
            p.user,
            l.kind,
            at(l.address),
            r.kind,
            at(r.address),
            if p.consent_lost {
                " (consent lost)"
            } else {
                ""
            }
        ),
        None => format!("ICE {}: no pair nominated", p.user),
    }
}

/// What the diagnosis steps found, redacted for a snapshot.
fn checks_snapshot(o: &Observed) -> String {
    let checks = &o.timeline.field_checks;
    if checks.is_empty() {
        return String::new();
    }
    let mut out = "── diagnosis checks ──\n".to_string();
    for line in checks.iter().flat_map(|c| c.report(true)) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// A SIP event as a ladder line; `None` for those the packets already show.
fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::Registered { contact, expires } => {
            format!("registered {contact} for {} s", expires.as_secs())
        }
        Event::RegistrationFailed { status } => format!("registration failed: {status}"),
        Event::IncomingCall { from, .. } => format!("incoming call from {from}: ringing"),
        Event::CallEstablished { remote_media, .. } => match remote_media {
            Some(m) => format!("call established, media to {m}"),
            None => "call established".into(),
        },
        Event::CallFailed { status, .. } => format!("call failed: {status}"),
        Event::CallEnded { .. } => "call ended".into(),
        Event::ContactBound { aor, target, .. } => format!("location: {aor} → {target}"),
        Event::ForwardTimedOut { method, .. } => {
            format!("forwarded {method} timed out: 408 upstream")
        }
        Event::MalformedDatagram { from, error } => {
            format!("malformed datagram from {from} dropped ({})", error.kind())
        }
        Event::FlowMappingChanged { old, new } => {
            format!("STUN keep-alive: flow moved from {old} to {new}, re-registering")
        }
        Event::CallRinging { .. } | Event::Forwarded { .. } => return None,
    })
}

/// The diagnosis of each host's capture, as `harness diagnose` would give it for that host's
/// pcap; only the captures that show a problem.
fn diagnose_hosts(s: &Scenario, trace: &Trace) -> Vec<crate::diagnose::Report> {
    s.topology
        .hosts
        .iter()
        .filter_map(|h| {
            let mut report = crate::diagnose::analyse(crate::diagnose::packets_at(trace, &h.name));
            report.file = format!("{}.pcap", h.name);
            report.has_problem().then_some(report)
        })
        .collect()
}

/// Writes `<dir>/<scenario>/`: a pcap per vantage point, `ladder.txt`, and each program's log;
/// the pcaps' paths.
pub fn write_files(dir: &Path, s: &Scenario, o: &Observed, ladder: &str) -> Result<Vec<PathBuf>> {
    let dir = dir.join(s.name());
    let pcaps = crate::capture::write_pcaps(&o.frames, &dir)?;
    let write = |file: String, text: &str| {
        std::fs::write(dir.join(file), text).map_err(Error::io(format!("write {}", dir.display())))
    };
    write("ladder.txt".into(), ladder)?;
    // External programs' output stays with the run's other artefacts.
    for (file, text) in &o.logs {
        write(file.clone(), text)?;
    }
    for (name, p) in &o.commands {
        let log = format!("--- stdout ---\n{}\n--- stderr ---\n{}", p.stdout, p.stderr);
        write(format!("{name}.log"), &log)?;
    }
    Ok(pcaps)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::capture::{udp_frame, Direction, Vantage};
    use crate::rtp::{MediaReport, MediaStats, MediaVerdict};
    use crate::scenario::observed::{Call, MediaPath, Phone};
    use crate::scenario::{judge, Scenario};

    fn catalogue(name: &str) -> Scenario {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        Scenario::load(&dir.join(format!("{name}.toml"))).unwrap()
    }

    /// 50 packets each way, every one received.
    fn both_ways() -> MediaReport {
        let side = MediaStats {
            sent: 50,
            received: 50,
            unique: 50,
            ..MediaStats::default()
        };
        MediaReport::new(&side, &side, 0.95)
    }

    fn phone(host: &str, events: Vec<(SystemTime, Event)>) -> Phone {
        let (host, media) = (host.to_string(), MediaPath::Direct);
        Phone {
            host,
            media,
            events,
        }
    }

    /// What a backend with no kernel would hand over for `lan-call-works`: the two phones'
    /// events, the call and its media, and the INVITE as bob's interface saw it.
    fn lan_call(t0: SystemTime) -> Observed {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let registered = |ms| {
            let (contact, expires) = ("<sip:x@192.168.1.10>".into(), Duration::from_secs(3600));
            (at(ms), Event::Registered { contact, expires })
        };
        let (call_id, from) = ("c1".to_string(), "carol".to_string());
        let ringing = (at(30), Event::IncomingCall { call_id, from });
        let invite = b"INVITE sip:bob@192.168.1.10:5060 SIP/2.0\r\nCall-ID: c1\r\n\r\n";
        let (pbx, bob) = ("192.168.1.5:5060", "192.168.1.10:5060");
        let (src, dst): (SocketAddrV4, SocketAddrV4) = (pbx.parse().unwrap(), bob.parse().unwrap());
        let bob_eth0 = Vantage::new("bob", "eth0");
        let frame = udp_frame(at(20), bob_eth0, Direction::In, src, dst, invite);
        let mut o = Observed {
            trace: Trace::from_frames(std::slice::from_ref(&frame)),
            frames: vec![frame],
            ..Observed::default()
        };
        o.phones
            .insert("bob".into(), phone("bob", vec![registered(0), ringing]));
        o.phones
            .insert("carol".into(), phone("carol", vec![registered(10)]));
        o.timeline.calls.push(Call {
            from: "carol".into(),
            to: "bob".into(),
            status: 200,
            media: Some(both_ways()),
        });
        o
    }

    #[test]
    fn a_run_observed_without_a_kernel_is_judged_and_reported_like_a_kernel_run() {
        let s = catalogue("lan-call-works");
        let o = lan_call(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let checks = judge::judge(&s, &o);
        assert!(checks.iter().all(|c| c.1), "{checks:#?}");
        let outcome = outcome(&s, &o, checks);
        assert_eq!(outcome.verdict, Verdict::Pass);
        assert!(outcome
            .snapshot
            .contains("INVITE sip:bob@192.168.1.10:5060"));
        assert!(
            outcome.snapshot.contains(
                "── media of carol's call ──\n  carol (direct) → bob (direct): Working\n"
            ),
            "{}",
            outcome.snapshot
        );
        assert!(outcome.ladder.contains("incoming call from carol: ringing"));
    }

    #[test]
    fn a_call_that_observed_no_final_response_fails_its_expectation_and_the_run() {
        let s = catalogue("lan-call-works");
        let mut o = lan_call(SystemTime::UNIX_EPOCH);
        o.timeline.calls[0].status = 0;
        o.timeline.calls[0].media = None;
        let checks = judge::judge(&s, &o);
        let call = checks
            .iter()
            .find(|c| c.0 == "carol's call ends with 200")
            .unwrap();
        assert_eq!((call.1, call.2.as_str()), (false, "no final response"));
        let media = checks.iter().find(|c| c.0.contains("audio")).unwrap();
        assert_eq!(media.2, "no media ran (no established call)");
        assert_eq!(outcome(&s, &o, checks).verdict, Verdict::Fail);
        assert_eq!(both_ways().verdict, MediaVerdict::BothWays);
    }
}
