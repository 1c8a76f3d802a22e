//! The page of a ticket's capture (`harness diagnose FILE --report PAGE`): the diagnosis with its
//! evidence linked to the frames, the SIP ladder with one lane per address, and media per
//! direction.
//!
//! A capture is one vantage point, so lanes are the addresses in it (as sngrep draws them): a
//! message goes from its source's lane to its destination's. Whether it arrived is not in a
//! single capture, so nothing is marked lost here; the findings say what the capture shows.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::SystemTime;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::axis::Axis;
use super::page::{finding, STYLE};
use super::sequence::{self, Sequence};
use super::{media, relative};
use crate::capture::{Direction, Vantage};
use crate::diagnose::{CaptureReader, Packet, Report};
use crate::error::{Error, Result};
use crate::trace::{Entry, Payload, Trace};

/// Most SIP messages drawn: beyond this a diagram is no longer read, and a browser slows down.
const MAX_SIP: usize = 3000;

/// A capture as a trace: each datagram once at its source's lane (sent) and once at its
/// destination's (towards it), and each frame's place in it.
fn trace_of(path: &Path) -> Result<(Trace, HashMap<u64, usize>, bool)> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(Error::io(format!("open {name}")))?;
    let mut reader =
        CaptureReader::new(std::io::BufReader::new(file)).map_err(|e| Error::Capture {
            file: name.clone(),
            what: e.to_string(),
        })?;
    let mut entries = Vec::new();
    let mut frames: Vec<(u64, SystemTime, SocketAddrV4, SocketAddrV4)> = Vec::new();
    let mut sip = 0;
    let mut cut = false;
    // A damaged tail is the diagnosis's to report; draw what was read.
    while let Some(Ok(d)) = reader.next() {
        let Some(p) = Packet::decode(d) else { continue };
        if matches!(p.payload, Payload::Sip(_)) {
            sip += 1;
            if sip > MAX_SIP {
                cut = true;
                continue;
            }
        }
        frames.push((p.frame, p.at, p.src, p.dst));
        for (host, direction) in [(p.src, Direction::Out), (p.dst, Direction::In)] {
            entries.push(Entry::Packet {
                at: p.at,
                vantage: Vantage::new(&host.ip().to_string(), "eth0"),
                direction,
                src: p.src,
                dst: p.dst,
                payload: p.payload.clone(),
            });
        }
    }
    let trace = Trace::from_entries(entries);
    let mut sent: HashMap<(SystemTime, SocketAddrV4, SocketAddrV4), usize> = HashMap::new();
    for (i, e) in trace.entries().iter().enumerate() {
        if let Entry::Packet {
            at,
            direction: Direction::Out,
            src,
            dst,
            payload: Payload::Sip(_),
            ..
        } = e
        {
            sent.entry((*at, *src, *dst)).or_insert(i);
        }
    }
    let by_frame = frames
        .into_iter()
        .filter_map(|(f, at, s, d)| sent.get(&(at, s, d)).map(|&i| (f, i)))
        .collect();
    Ok((trace, by_frame, cut))
}

/// The page of `path`, diagnosed as `report`, with links relative to `page_dir`.
pub fn capture_page(path: &Path, report: &Report, page_dir: &Path) -> Result<String> {
    let (trace, by_frame, cut) = trace_of(path)?;
    let start = trace.start().unwrap_or(SystemTime::UNIX_EPOCH);
    let end = trace.entries().last().map_or(start, Entry::at);
    let seq = Sequence::build(&trace, &[], &[]);
    let axis = Axis::new(start, end, 420.0, 900.0);
    let streams = media::streams(&trace, &seq.lanes);
    let link = |_: &str, frame: u64| by_frame.get(&frame).map(|i| format!("#e{i}"));
    let problem = report.has_problem();
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (report.file) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 {
                    span class=(if problem { "badge fail" } else { "badge pass" }) {
                        (if problem { "PROBLEM" } else { "HEALTHY" })
                    }
                    a href=(relative(page_dir, path).display().to_string()) { (report.file) }
                }
                p class="summary" {
                    (report.frames) " frames, " (report.datagrams) " UDP/ICMP datagrams, "
                    (report.sip_messages) " SIP messages, " (report.dialogs) " dialogs ("
                    (report.calls) " calls, " (report.registrations) " registrations), "
                    (report.rtp_packets) " media packets"
                }
                h2 id="diagnosis" { "Diagnosis" }
                @if report.findings.is_empty() {
                    p { "None of the field guide's failures shows in this capture." }
                }
                @for f in &report.findings {
                    (finding(report, f, &link))
                }
                h2 id="ladder" { "SIP ladder" }
                p class="legend" {
                    "One lane per address in the capture; one row per message (hover a dot for its "
                    "headers). ↻n and dashes: the n-th retransmission. A single capture cannot show "
                    "whether a message arrived."
                    @if cut { " Only the first " (MAX_SIP) " SIP messages are drawn." }
                }
                div class="scroll" { (PreEscaped(sequence::svg(&seq, start).to_string())) }
                h2 id="media" { "Media" }
                @if streams.is_empty() {
                    p { "No RTP in the capture." }
                } @else {
                    div class="scroll" { (PreEscaped(media::svg(&streams, &axis).to_string())) }
                }
            }
        }
    };
    Ok(page.into_string())
}
