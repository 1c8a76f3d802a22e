//! A [`Report`] for people (a short header, then each finding with its evidence) and for
//! tools (JSON).

use std::fmt::Write;

use super::{Confidence, Report, Severity};

/// The report as text for a terminal or a ticket.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", r.file);
    let _ = writeln!(
        o,
        "  {} frames, {} UDP/ICMP datagrams, {} SIP messages, {} dialogs ({} calls, {} registrations), {} media packets",
        r.frames, r.datagrams, r.sip_messages, r.dialogs, r.calls, r.registrations, r.rtp_packets
    );
    let problems = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    if problems == 0 {
        let _ = writeln!(
            o,
            "  healthy: none of the field guide's failures shows in this capture"
        );
    }
    for f in &r.findings {
        let sure = match f.confidence {
            Confidence::Certain => "certain",
            Confidence::Likely => "likely",
            Confidence::Possible => "possible",
        };
        let sev = match f.severity {
            Severity::Problem => "PROBLEM",
            Severity::Note => "note",
        };
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(o, "\n  {sev} [{kind}, {sure}] {}", f.summary);
        for e in &f.evidence {
            let _ = writeln!(o, "    #{:<6} {:>8.3} s  {}", e.frame, e.t, e.text);
        }
        let _ = writeln!(o, "    cause: {}", f.cause);
        for x in &f.fixes {
            let _ = writeln!(o, "    fix:   {x}");
        }
        if let Some(s) = &f.scenario {
            let _ = writeln!(o, "    see:   {s} (harness run {s})");
        }
        if let Some(s) = &f.settle {
            let _ = writeln!(o, "    to settle it: {s}");
        }
    }
    o
}

/// The reports as JSON (one array, one object per file).
pub fn json(reports: &[Report]) -> String {
    serde_json::to_string_pretty(reports).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
