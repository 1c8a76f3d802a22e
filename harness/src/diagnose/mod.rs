//! From a capture to the cause: `harness diagnose FILE…`.
//!
//! A ticket's capture (tcpdump or sngrep at the SIP server, sometimes on the customer's LAN) is
//! read as a stream of datagrams ([`read`]), each decoded once by [`crate::trace`], rebuilt into
//! registrations, transactions, calls with their SDP and media flows, STUN exchanges and ICMP
//! errors ([`rebuild`]), and judged by the field guide's rules ([`findings`]) into a [`Report`]
//! ([`report`] renders it for people or as JSON). [`analyse`] does no IO: it takes decoded
//! packets, so a scenario run can diagnose its own captures with the same rules.

pub mod fields;
pub mod findings;
pub mod read;
pub mod rebuild;
pub mod report;

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

pub use read::{Body, CaptureReader, Datagram, ReadError, ReadStats};

use crate::error::{Error, Result};
use crate::trace::{Entry, Payload, Trace};

/// One decoded UDP datagram or ICMP message, numbered as in the capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub frame: u64,
    pub at: SystemTime,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Payload,
}

impl Packet {
    /// Decodes a datagram read from a capture with the trace's decoder (the only one).
    pub fn decode(d: Datagram) -> Option<Packet> {
        let payload = match &d.body {
            Body::Udp(b) => crate::trace::decode_udp(b),
            Body::Icmp(b) => crate::trace::decode_icmp(b)?,
        };
        Some(Packet {
            frame: d.frame,
            at: d.at,
            src: d.src,
            dst: d.dst,
            payload,
        })
    }
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// The capture shows it happening.
    Certain,
    /// The capture fits this cause and no other the guide knows; another capture would prove it.
    Likely,
    /// One explanation among others; the capture named in `settle` decides.
    Possible,
}

/// Whether a finding explains a failure or only tells what the capture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Problem,
    Note,
}

/// The field guide's causes (and the notes that go with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A private address in Contact, Via or SDP `c=` that is not where the packet came from.
    PrivateAddress,
    /// No `rport` in the top Via while the source port differs from the Via port.
    NoRport,
    /// A request retransmitted until its transaction timer (Timer B for INVITE) ran out.
    RequestTimeout,
    /// A request to a NATed contact after an idle gap, unanswered, with no keep-alives seen.
    BindingExpired,
    /// Headers or SDP rewritten inconsistently: the signature of a SIP ALG.
    AlgRewrite,
    /// Content-Length does not match the body.
    ContentLengthMismatch,
    /// The digest `uri=` differs from the Request-URI (401 loop).
    DigestUriMismatch,
    /// Media in one direction only.
    OneWayAudio,
    /// Media in neither direction.
    NoAudio,
    /// An answered call and no RTP across a point on its media path.
    RtpBlocked,
    /// The NAT maps per destination: a STUN-learnt address is not what others see.
    SymmetricNat,
    /// A request too large for one IP packet retransmitted until its timer ran out: the
    /// signature of a router or firewall that drops IP fragments.
    FragmentedRequest,
    /// The capture ends in a damaged or cut-short record.
    CaptureTruncated,
}

/// One line of evidence: where in the capture, and what it shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// 1-based frame number (as Wireshark and sngrep count).
    pub frame: u64,
    /// Seconds since the capture's first packet.
    pub t: f64,
    pub text: String,
}

/// A cause the capture shows (or suggests), with its evidence and what fixes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    pub confidence: Confidence,
    /// One line: what happened.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// The field guide's cause, in plain words.
    pub cause: String,
    pub fixes: Vec<String>,
    /// The catalogue file that reproduces the same failure.
    pub scenario: Option<String>,
    /// What capture would settle it, where the evidence is partial.
    pub settle: Option<String>,
}

/// What a capture holds and what is wrong in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub file: String,
    pub frames: u64,
    pub datagrams: u64,
    pub sip_messages: usize,
    pub dialogs: usize,
    pub registrations: usize,
    pub calls: usize,
    pub rtp_packets: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding explains a failure.
    pub fn has_problem(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Problem)
    }
}

/// Rebuilds what the packets show and judges it. No IO: packets in, report out.
pub fn analyse(packets: impl IntoIterator<Item = Packet>) -> Report {
    let model = rebuild::Model::build(packets);
    let findings = findings::judge(&model);
    Report {
        file: String::new(),
        frames: model.frames,
        datagrams: model.datagrams,
        sip_messages: model.sip.len(),
        dialogs: model.dialogs(),
        registrations: model.registrations().len(),
        calls: model.calls().len(),
        rtp_packets: model.rtp_packets(),
        findings,
    }
}

/// Reads and diagnoses one capture file. An unreadable file is an error; one that is damaged
/// after some frames is diagnosed as far as it goes, with a finding saying where it stops.
pub fn diagnose_file(path: &Path) -> Result<Report> {
    let name = path.display().to_string();
    let bad = |e: ReadError| Error::Capture {
        file: name.clone(),
        what: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(Error::io(format!("open {name}")))?;
    let mut reader = CaptureReader::new(std::io::BufReader::new(file)).map_err(bad)?;
    let mut failure = None;
    let packets = std::iter::from_fn(|| loop {
        match reader.next()? {
            Ok(d) => {
                if let Some(p) = Packet::decode(d) {
                    return Some(p);
                }
            }
            Err(e) => {
                failure = Some(e);
                return None;
            }
        }
    });
    let mut report = analyse(packets);
    let stats = reader.stats();
    if let Some(e) = failure {
        if stats.frames == 0 {
            return Err(bad(e));
        }
        report.findings.push(findings::truncated(&e));
    }
    report.file = name;
    report.frames = stats.frames;
    Ok(report)
}

/// The packets one vantage point of a scenario run saw, numbered as in its pcap, for
/// [`analyse`]. Frames the trace left out (ARP) are not counted, so numbers can fall short of
/// the pcap's by those.
pub fn packets_at(trace: &Trace, vantage: &str) -> Vec<Packet> {
    trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Packet {
                at,
                vantage: v,
                src,
                dst,
                payload,
                ..
            } if v.label() == vantage => Some((at, src, dst, payload)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (at, src, dst, payload))| Packet {
            frame: i as u64 + 1,
            at: *at,
            src: *src,
            dst: *dst,
            payload: payload.clone(),
        })
        .collect()
}

/// A SIP datagram as a capture holds it (`\n` written as CRLF, `secs` after an arbitrary
/// start): the packets that the rule tests and import's tests are made of.
#[cfg(test)]
pub(crate) fn test_sip(frame: u64, secs: f64, src: &str, dst: &str, text: &str) -> Packet {
    Packet::decode(Datagram {
        frame,
        at: std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(1000.0 + secs),
        src: src.parse().expect("a test address"),
        dst: dst.parse().expect("a test address"),
        body: Body::Udp(text.replace('\n', "\r\n").into_bytes()),
    })
    .expect("a UDP datagram decodes")
}

#[cfg(test)]
mod tests;
