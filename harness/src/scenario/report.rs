//! Turns what a run observed into its [`Outcome`]: the trace with every event in it, the
//! terminal ladder, the snapshot, the NAT model's explanations and, for a failed run, the
//! diagnosis of each host's capture. Pure but for [`write_files`], so either backend's
//! [`Observed`] is reported by the same code.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::explain::RouterStory;
use super::judge::Check;
use super::observed::{MediaPath, Observed};
use super::{Outcome, Phases, Scenario, Verdict};
use crate::bindings::{BindingEvent, Opened};
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
        .moved_ports(moved_ports(&o.conntrack))
        .vantages(routers.chain(hosts).collect::<Vec<_>>())
        .t1(Duration::from_millis(s.file.scenario.t1_ms))
}

/// The public ports routers allocated instead of the inside port (masquerade moving a port, a
/// symmetric NAT's random ports): they differ from run to run.
fn moved_ports(bindings: &[(String, Vec<BindingEvent>)]) -> Vec<SocketAddrV4> {
    bindings
        .iter()
        .flat_map(|(_, events)| events)
        .filter_map(|e| match e {
            BindingEvent::Created { binding, .. }
                if binding.direction == Opened::Outbound
                    && binding.external.port() != binding.internal.port() =>
            {
                Some(binding.external)
            }
            _ => None,
        })
        .collect()
}

/// Media in the snapshot as verdicts per direction, not packet counts: which packets of a
/// stream land before a latch or a pinhole opens varies by a packet or two between runs.
fn media_snapshot(o: &Observed) -> String {
    let how = |user: &str| match o.phones.get(user).map(|p| p.media) {
        Some(MediaPath::Relayed) => "via TURN",
        Some(MediaPath::Direct) => "direct",
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
    }
    out
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
