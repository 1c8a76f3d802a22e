//! The HTML around the diagrams: `maud` templates for the run page and the index.
//!
//! Order on the page is the order a reader needs it in: what was expected and what happened,
//! what the diagnosis names as the cause (linked to its frames), then the evidence — the
//! ladder, the bindings, the media — and last the files.

use std::path::Path;
use std::time::SystemTime;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::axis::Axis;
use super::sequence::{self, Sequence};
use super::{media, relative, timeline, Anchors, IndexEntry};
use crate::diagnose::{self, Confidence, Report, Severity};
use crate::scenario::{Outcome, Scenario, Verdict};
use crate::trace::{Entry, Payload};

pub(super) const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 24px 40px; color: #1d2330; }
h1 { font-size: 22px; margin: 18px 0 4px; }
h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid #d5d9e0; padding-bottom: 3px; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 4px; color: #fff; font-weight: 600; margin-right: 8px; }
.badge.pass { background: #2f8f46; } .badge.fail { background: #c0392b; }
.summary { color: #4a5263; margin: 0 0 6px; }
pre.header { background: #f5f6f8; padding: 8px 10px; border-left: 3px solid #8a94a6; white-space: pre-wrap; margin: 6px 0; }
ul.checks { list-style: none; padding-left: 0; margin: 4px 0; }
ul.checks li { padding: 2px 0; }
.ok { color: #2f8f46; font-weight: 700; } .bad { color: #c0392b; font-weight: 700; }
.seen { color: #5b6475; }
.finding { border: 1px solid #e0c4c0; background: #fff8f6; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.finding.note { border-color: #d5d9e0; background: #fafbfc; }
.finding summary { cursor: pointer; }
.finding .kind { font-family: monospace; color: #8a3b2f; }
.finding ol { margin: 4px 0; padding-left: 20px; font-family: monospace; font-size: 12.5px; }
.finding p { margin: 3px 0; }
.scroll { overflow-x: auto; border: 1px solid #e3e6eb; border-radius: 6px; background: #fff; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2330; }
svg .lane { stroke: #c4cad4; stroke-width: 1; }
svg .lane.router { stroke-dasharray: 4 3; stroke: #9aa4b5; }
svg .lane-name { font-weight: 700; font-size: 13px; }
svg .time { fill: #7a8394; font-size: 11px; font-family: monospace; }
svg .msg .arrow { stroke: #2a5caa; stroke-width: 1.6; fill: none; }
svg .msg.response .arrow { stroke: #3f8a5a; }
svg .msg.retx .arrow { stroke-dasharray: 5 3; opacity: .75; }
svg .msg.lost .arrow { stroke: #c0392b; }
svg .arrowhead { fill: #2a5caa; } svg .arrowhead.lost { fill: #c0392b; }
svg .msg .label { font-size: 11.5px; }
svg .msg.retx .label { fill: #6b7385; }
svg .copy { fill: #fff; stroke: #2a5caa; stroke-width: 1.5; }
svg .copy:target { fill: #ffd34d; stroke: #b8860b; r: 7px; }
svg .nat { fill: #9aa4b5; }
svg .rewrite rect { fill: #f39c12; } svg .rewrite text { fill: #b35c00; font-size: 10.5px; font-weight: 600; }
svg .cross { fill: #c0392b; font-size: 16px; font-weight: 700; }
svg .why { fill: #c0392b; font-size: 11px; }
svg .private { fill: #b35c00; font-size: 11px; font-weight: 600; }
svg .gap { fill: #f2f3f6; } svg .gap-text { fill: #7a8394; font-style: italic; font-size: 11px; }
svg .axis line { stroke: #eceef2; } svg .axis text { fill: #8a93a3; font-size: 10px; }
svg .row-name { font-family: monospace; font-size: 11.5px; }
svg .stream-name { font-weight: 600; font-size: 12px; }
svg .life { fill: #cfe8d5; stroke: #2f8f46; } svg .life.ended { fill: #dfeee3; }
svg .mark path { stroke: #2f8f46; stroke-width: 2; fill: none; }
svg .mark.refresh-in path { stroke: #2a5caa; }
svg .mark.expired path, svg .mark.removed path { stroke: #c0392b; stroke-width: 3; }
svg .mark.released path { stroke: #9aa4b5; stroke-width: 2; }
svg .mark.drop path { stroke: #c0392b; stroke-width: 2.2; }
svg .mark.kernel-created path, svg .mark.kernel-removed path { fill: #9aa4b5; stroke: none; }
svg .mark-text { font-size: 11px; } svg .created-text { fill: #b35c00; font-weight: 600; } svg .expired-text, svg .drop-text { fill: #c0392b; font-weight: 600; }
svg .sip-tick { stroke: #c9d3e6; stroke-dasharray: 2 3; }
svg .sip-method { fill: #2a5caa; font-size: 11px; }
svg .strip path { stroke: #2a5caa; stroke-width: 1; }
svg .strip.short path { stroke: #c0392b; }
svg .strip.short .row-name { fill: #c0392b; font-weight: 600; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
tr:target { background: #ffd34d; }
.glance { border: 2px solid #c0392b33; background: #fffaf0; border-radius: 6px; padding: 6px 12px; margin: 10px 0; }
.glance ul { margin: 4px 0; padding-left: 20px; } .bad-line { color: #a5281b; font-weight: 600; }
.legend { color: #5b6475; font-size: 12.5px; margin: 4px 0 8px; }
"#;

fn secs(at: SystemTime, start: SystemTime) -> f64 {
    at.duration_since(start).unwrap_or_default().as_secs_f64()
}

/// The run page.
pub fn run(s: &Scenario, o: &Outcome, page_dir: &Path) -> Markup {
    let trace = &o.trace;
    let start = trace.start().unwrap_or(SystemTime::UNIX_EPOCH);
    let end = trace.entries().last().map_or(start, Entry::at);
    let order = sequence::lane_order(&s.topology);
    let seq = Sequence::build(trace, &order, &o.nat);
    let anchors = Anchors::new(trace);
    let axis = Axis::new(start, end, 420.0, 900.0);
    let streams = media::streams(trace, &seq.lanes);
    // A run that passes because it reproduces a failure still has a cause to show: diagnose
    // every host's capture here, as `harness diagnose` would.
    let diagnosis: Vec<Report> = if o.diagnosis.is_empty() {
        seq.lanes
            .iter()
            .filter(|l| !l.contains(':'))
            .filter_map(|host| {
                let mut r = diagnose::analyse(diagnose::packets_at(trace, host));
                r.file = format!("{host}.pcap");
                r.has_problem().then_some(r)
            })
            .collect()
    } else {
        o.diagnosis.clone()
    };
    let mut cited: Vec<(usize, String)> = Vec::new();
    for r in &diagnosis {
        let vantage = r.file.trim_end_matches(".pcap");
        for e in r.findings.iter().flat_map(|f| &f.evidence) {
            if let Some(i) = anchors.frame(vantage, e.frame) {
                if !anchors.drawn.contains(&i) {
                    cite(&mut cited, i, trace, start);
                }
            }
        }
    }
    let routers: Vec<String> = s.topology.routers.iter().map(|r| r.name.clone()).collect();
    let pass = o.verdict == Verdict::Pass;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (o.name) " — " (if pass { "PASS" } else { "FAIL" }) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 {
                    span class=(if pass { "badge pass" } else { "badge fail" }) {
                        (if pass { "PASS" } else { "FAIL" })
                    }
                    (o.name)
                }
                p class="summary" {
                    (s.file.scenario.summary) " · " (format!("{:.1} s", o.duration.as_secs_f64()))
                    " · T1 = " (s.file.scenario.t1_ms) " ms · " (s.path)
                }
                @if !s.header.trim().is_empty() {
                    pre class="header" { (s.header.trim()) }
                }
                @let glance = at_a_glance(&seq, &streams, &o.nat);
                @if !glance.is_empty() {
                    div class="glance" {
                        b { "What the packets show" }
                        ul {
                            @for (bad, line) in &glance {
                                li class=(if *bad { "bad-line" } else { "" }) { (line) }
                            }
                        }
                    }
                }
                h2 { "Expectations" }
                ul class="checks" {
                    @for (what, ok, seen) in &o.checks {
                        li {
                            @if *ok { span class="ok" { "✓ " } } @else { span class="bad" { "✗ " } }
                            (what) " " span class="seen" { "(" (seen) ")" }
                        }
                    }
                    @if let Some(e) = &o.error {
                        li { span class="bad" { "✗ step failed: " } (e) }
                    }
                }
                h2 id="diagnosis" { "Diagnosis of the captures" }
                @if diagnosis.is_empty() {
                    p { "No host's capture shows one of the field guide's failures." }
                }
                @for r in &diagnosis {
                    @for f in &r.findings {
                        (finding(r, f, &|v, fr| anchors.frame(v, fr).map(|i| anchors.href(i))))
                    }
                }
                h2 id="ladder" { "SIP ladder" }
                p class="legend" {
                    "One row per message sent; dots are the copies each vantage point captured "
                    "(hover for headers). ↻n and dashes: the n-th retransmission. ✎: headers "
                    "rewritten on that hop. ✗ in red: the message vanished there, and why. "
                    "Grey dot on a hop: NAT translated the addresses."
                }
                div class="scroll" { (PreEscaped(sequence::svg(&seq, start).to_string())) }
                h2 id="bindings" { "NAT bindings" }
                @if routers.is_empty() {
                    p { "No router in this topology." }
                }
                @for router in &routers {
                    @let story = o.nat.iter().find(|st| &st.router == router);
                    @let kernel = o.bindings.iter().find(|(r, _)| r == router).map_or(&[][..], |(_, e)| &e[..]);
                    @let sip = sip_at_wan(trace, router);
                    h3 { (router) }
                    p class="legend" {
                        @if let Some(st) = story {
                            "UDP timeout " (st.timeout.as_secs()) " s. Bars: the model's binding "
                            "lives; ticks up: refreshed by an outbound packet, down: by an inbound one; "
                            "red X: expired; red x: a packet dropped, with the model's reason (hover). "
                            "Grey triangles and squares: conntrack's own new/destroy events."
                        } @else {
                            "The run changed this router mid-way, so only conntrack's own events are shown."
                        }
                    }
                    div class="scroll" {
                        (PreEscaped(timeline::svg(router, story, kernel, &sip, &axis, &anchors).to_string()))
                    }
                }
                h2 id="media" { "Media" }
                @if streams.is_empty() {
                    p { "No RTP in the captures." }
                } @else {
                    p class="legend" { "Each RTP stream, one strip per vantage point in path order; a strip in red saw less than half of what was sent." }
                    div class="scroll" { (PreEscaped(media::svg(&streams, &axis).to_string())) }
                }
                @if !cited.is_empty() {
                    h2 { "Other frames cited" }
                    table {
                        @for (entry, text) in &cited {
                            tr id=(format!("f{entry}")) { td { (text) } }
                        }
                    }
                }
                h2 { "Files" }
                ul {
                    @for p in &o.pcaps {
                        li { a href=(relative(page_dir, p).display().to_string()) { (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()) } }
                    }
                    @if o.pcaps.is_empty() { li { "No pcaps were written (run without --out)." } }
                }
                p class="summary" { "Phases: " (o.phases.to_string()) }
            }
        }
    }
}

/// The few lines that say what went wrong, read off the evidence below them: messages that
/// vanished and why, what each NAT dropped and why, and media that did not arrive. `(bad, line)`.
fn at_a_glance(
    seq: &Sequence,
    streams: &[media::Stream],
    stories: &[crate::scenario::explain::RouterStory],
) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    // Lost SIP messages, retransmissions counted with their first copy.
    let mut lost: Vec<(String, String, usize)> = Vec::new();
    for m in &seq.messages {
        let Some(why) = &m.lost else { continue };
        let what = m
            .origin()
            .sip
            .first_line
            .trim_end_matches(" SIP/2.0")
            .to_string();
        match lost.iter_mut().find(|(w, _, _)| *w == what) {
            Some(l) => l.2 += 1,
            None => lost.push((what, why.clone(), 1)),
        }
    }
    for (what, why, n) in lost {
        let times = if n > 1 {
            format!(" ({n} copies)")
        } else {
            String::new()
        };
        out.push((true, format!("{what} never arrived{times}: {why}")));
    }
    for st in stories {
        let mut groups: Vec<(String, usize)> = Vec::new();
        for d in &st.drops {
            let what = d.what.split_whitespace().next().unwrap_or("packet");
            // Grouped by kind of reason: each late packet's "expired n s before" differs.
            let why = match &d.reason {
                Some(sim_nat::DropReason::BindingExpired { binding, .. }) => {
                    format!(
                        "binding {} → {} had expired",
                        binding.internal, binding.external
                    )
                }
                r => timeline::short_reason(r.as_ref()),
            };
            let key = format!("{what} dropped: {why}");
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some(g) => g.1 += 1,
                None => groups.push((key, 1)),
            }
        }
        for (k, n) in groups {
            out.push((true, format!("{}: {n} × {k}", st.router)));
        }
        for c in &st.changes {
            if let crate::scenario::explain::ChangeKind::Created {
                binding,
                displaced_from: Some(p),
                ..
            } = &c.what
            {
                out.push((
                    true,
                    format!(
                        "{}: {} wanted public port {p}, which an earlier flow held: mapped to {} instead",
                        st.router, binding.internal, binding.external
                    ),
                ));
            }
        }
        let expired = st
            .changes
            .iter()
            .filter(|c| matches!(c.what, crate::scenario::explain::ChangeKind::Expired { .. }))
            .count();
        if expired > 0 {
            out.push((
                false,
                format!(
                    "{}: {expired} binding(s) expired ({} s UDP timeout)",
                    st.router,
                    st.timeout.as_secs()
                ),
            ));
        }
    }
    for s in streams {
        let sent = s
            .seen
            .iter()
            .find(|(v, _)| *v == s.sender)
            .map_or(0, |(_, t)| t.len());
        let arrived = s
            .seen
            .iter()
            .filter(|(v, _)| !v.contains(':') && *v != s.sender)
            .map(|(v, t)| format!("{} at {v}", t.len()))
            .collect::<Vec<_>>();
        let line = if arrived.is_empty() {
            let last = s.seen.last().map_or("", |(v, _)| v.as_str());
            (
                true,
                format!(
                    "RTP from {} to {}: {sent} sent, none arrived (the stream stops at {last})",
                    s.sender, s.to
                ),
            )
        } else {
            (
                false,
                format!(
                    "RTP from {} to {}: {sent} sent, {} arrived",
                    s.sender,
                    s.to,
                    arrived.join(", ")
                ),
            )
        };
        out.push(line);
    }
    out
}

/// SIP requests at `router`'s WAN side: `(time, method, entry)`.
fn sip_at_wan(trace: &crate::trace::Trace, router: &str) -> Vec<(SystemTime, String, usize)> {
    let wan = format!("{router}:wan");
    trace
        .entries()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Packet {
                at,
                vantage,
                payload: Payload::Sip(s),
                ..
            } if vantage.label() == wan && !s.is_response() => {
                Some((*at, s.method_or_status().to_string(), i))
            }
            _ => None,
        })
        .collect()
}

/// One finding; `link(vantage, frame)` is where its evidence frame is on the page, if anywhere.
pub(super) fn finding(
    r: &Report,
    f: &diagnose::Finding,
    link: &dyn Fn(&str, u64) -> Option<String>,
) -> Markup {
    let vantage = r.file.trim_end_matches(".pcap");
    let sure = match f.confidence {
        Confidence::Certain => "certain",
        Confidence::Likely => "likely",
        Confidence::Possible => "possible",
    };
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let problem = f.severity == Severity::Problem;
    html! {
        details class=(if problem { "finding" } else { "finding note" }) open[problem] {
            summary {
                b { (if problem { "PROBLEM " } else { "note " }) }
                span class="kind" { "[" (kind) ", " (sure) "]" } " " b { (f.summary) }
            }
            p class="seen" { "in " (r.file) }
            ol {
                @for e in &f.evidence {
                    li {
                        @match link(vantage, e.frame) {
                            Some(href) => {
                                a href=(href) { "#" (e.frame) }
                            }
                            None => { "#" (e.frame) }
                        }
                        " " (format!("{:.3} s", e.t)) "  " (e.text)
                    }
                }
            }
            p { b { "cause: " } (f.cause) }
            @for x in &f.fixes { p { b { "fix: " } (x) } }
            @if let Some(sc) = &f.scenario { p { b { "see: " } (sc) } }
            @if let Some(st) = &f.settle { p { b { "to settle it: " } (st) } }
        }
    }
}

/// Adds a non-SIP frame to the cited-frames table (once).
fn cite(
    cited: &mut Vec<(usize, String)>,
    entry: usize,
    trace: &crate::trace::Trace,
    start: SystemTime,
) {
    if cited.iter().any(|(i, _)| *i == entry) {
        return;
    }
    if let Some(Entry::Packet {
        at,
        vantage,
        src,
        dst,
        payload,
        ..
    }) = trace.entries().get(entry)
    {
        cited.push((
            entry,
            format!(
                "{:.3} s at {vantage}: {src} → {dst} {}",
                secs(*at, start),
                payload.summary()
            ),
        ));
    }
}

/// The index of a multi-scenario run.
pub fn index(entries: &[IndexEntry], dir: &Path) -> Markup {
    let passed = entries.iter().filter(|e| e.verdict == "PASS").count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "harness run — " (passed) "/" (entries.len()) " passed" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "harness run: " (passed) " of " (entries.len()) " passed" }
                table {
                    tr { th { "verdict" } th { "scenario" } th { "summary" } }
                    @for e in entries {
                        tr {
                            td {
                                span class=(if e.verdict == "PASS" { "badge pass" } else { "badge fail" }) { (e.verdict) }
                            }
                            td {
                                @match &e.page {
                                    Some(p) => { a href=(relative(dir, p).display().to_string()) { (e.name) } }
                                    None => { (e.name) }
                                }
                            }
                            td class="seen" { (e.summary) }
                        }
                    }
                }
            }
        }
    }
}
