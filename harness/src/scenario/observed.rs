//! What a run observed, as plain data: the seam between a backend that plays a scenario and the
//! phases that are pure.
//!
//! A backend — the kernel's namespaces in real time (`scenario/kernel/`), or a model of the same
//! lab in virtual time — builds, starts and plays a checked [`Scenario`](super::Scenario) and
//! hands over one [`Observed`]. [`super::judge`] and [`super::report`] read nothing else: no
//! socket, no namespace, no clock. The same file played on two backends is therefore judged and
//! reported by the same code, and the two outcomes differ only where what was observed differs.
//!
//! A backend ends as `scenario::run` does:
//!
//! ```text
//! let observed: Observed = …;                       // the backend's own build, start and play
//! let checks = scenario::judge::judge(&s, &observed);
//! let mut outcome = scenario::report::outcome(&s, &observed, checks);
//! outcome.pcaps = scenario::report::write_files(dir, &s, &observed, &outcome.ladder)?;
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::SystemTime;

use super::checks::{Classified, FieldCheck, ProbeRun, StunCheck};
use super::file::LogStream;
use crate::bindings::BindingEvent;
use crate::capture::Frame;
use crate::rtp::MediaReport;
use crate::sip::Event;
use crate::trace::Trace;

/// Everything a run observed, on one wall clock ([`SystemTime`]; a virtual-time backend starts
/// its clock wherever it likes, as long as every field shares it).
///
/// What a backend must fill in, field by field:
/// - `frames`: every packet, as a whole Ethernet + IPv4 frame, at every vantage point the
///   kernel backend captures (`capture::default_vantages`): each host's `eth0`, each router's
///   `lan` and `wan`; the direction as the node's interface saw it (a router's forwarded packet
///   enters `lan` and leaves `wan`, translated). Packet expectations, the ladder, the pcaps, the
///   NAT explanations and the media verdicts of external programs are read from them.
/// - `trace`: the same frames decoded once (`Trace::from_frames`), plus each NAT router's own
///   binding events as ladder lines (the kernel backend adds conntrack's).
/// - `phones`: each built-in phone's host, media path and SIP events (registered, ringing,
///   established …) with their times.
/// - `proxies`: each built-in proxy's SIP events, by host.
/// - `commands`: each external program started, with its output and exit code.
/// - `moved_ports`: the public ports NAT routers allocated instead of the inside port (masquerade
///   moving a port, a symmetric NAT's random ports): they differ from run to run, so the
///   snapshot shows placeholders for them. The kernel backend reads them off conntrack's events.
/// - `conntrack`: each NAT router's binding events as the kernel reported them, for the run
///   report (empty on a backend without conntrack).
/// - `timeline`: what playing the steps recorded (calls and their media, the diagnosis steps,
///   the runner's notes, the step that failed).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub frames: Vec<Frame>,
    pub trace: Trace,
    /// Built-in phones by SIP user.
    pub phones: BTreeMap<String, Phone>,
    /// Built-in proxies' events by host.
    pub proxies: BTreeMap<String, Vec<(SystemTime, Event)>>,
    /// External programs by command name; only those that were started.
    pub commands: BTreeMap<String, Program>,
    /// Logs of programs run as built-in components (a `kamailio` component's), as
    /// `(file name, text)`, written beside the pcaps.
    pub logs: Vec<(String, String)>,
    /// Public ports NAT routers moved off the inside port.
    pub moved_ports: Vec<SocketAddrV4>,
    /// `conntrack -E` of each NAT router: `(router, events)`.
    pub conntrack: Vec<(String, Vec<BindingEvent>)>,
    pub timeline: Timeline,
}

/// A built-in phone as the run saw it.
#[derive(Debug, Clone)]
pub struct Phone {
    pub host: String,
    pub media: MediaPath,
    /// Its SIP machine's events, oldest first.
    pub events: Vec<(SystemTime, Event)>,
}

impl Phone {
    /// Whether its last registration attempt ended registered.
    pub fn registered(&self) -> bool {
        self.events
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::Registered { .. } => Some(true),
                Event::RegistrationFailed { .. } => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// Whether a call ever reached it.
    pub fn rang(&self) -> bool {
        self.events
            .iter()
            .any(|(_, e)| matches!(e, Event::IncomingCall { .. }))
    }
}

/// How a built-in phone's RTP leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// From its own RTP port.
    Direct,
    /// Through a TURN allocation.
    Relayed,
    /// Over the pair ICE nominated ([`Timeline::ice`] says which).
    Ice,
}

/// An external program (a `command` component) that was started.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub stdout: String,
    pub stderr: String,
    /// Its exit code: from its `wait-exit` step, or, if it has ended by the end of the run, from
    /// then; `None` while it runs (or killed by a signal).
    pub exit: Option<i32>,
}

impl Program {
    /// What it wrote to standard output, standard error, or both (output first).
    pub fn output(&self, stream: LogStream) -> String {
        match stream {
            LogStream::Stdout => self.stdout.clone(),
            LogStream::Stderr => self.stderr.clone(),
            LogStream::Both => self.stdout.clone() + &self.stderr,
        }
    }
}

/// What playing the timeline recorded, in step order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Every call placed, in order.
    pub calls: Vec<Call>,
    /// What the field guide's diagnosis steps found, in order.
    pub field_checks: Vec<FieldCheck>,
    /// Exit codes read by `wait-exit` steps.
    pub exits: BTreeMap<String, Option<i32>>,
    /// The runner's own lines for the ladder: `(when, host, text)`.
    pub notes: Vec<(SystemTime, String, String)>,
    /// Which candidate pair each ICE phone's media went over, per call, in order.
    pub ice: Vec<IcePath>,
    /// A step that could not be carried out (the run stops there and fails).
    pub error: Option<String>,
}

/// The candidate pair an ICE phone's media went over in a call (`None`: no pair was nominated).
#[derive(Debug, Clone)]
pub struct IcePath {
    /// The call's index in [`Timeline::calls`].
    pub call: usize,
    pub user: String,
    /// (local, remote).
    pub selected: Option<(crate::ice::Candidate, crate::ice::Candidate)>,
    /// RFC 7675 consent expired during the call: media stopped.
    pub consent_lost: bool,
}

/// One call a phone or a program placed.
#[derive(Debug, Clone)]
pub struct Call {
    pub from: String,
    pub to: String,
    /// 200 if established, the final status if it failed, 0 if nothing final came.
    pub status: u16,
    /// Both directions of its media, when it was established and media ran.
    pub media: Option<MediaReport>,
}

impl Timeline {
    /// The outcome of the last call `from` placed.
    pub fn last_call(&self, from: &str) -> Option<&Call> {
        self.calls.iter().rev().find(|c| c.from == from)
    }

    /// The media of the last call `from` placed that ran media.
    pub fn last_media(&self, from: &str) -> Option<&MediaReport> {
        self.calls
            .iter()
            .rev()
            .filter(|c| c.from == from)
            .find_map(|c| c.media.as_ref())
    }

    /// Each caller whose calls ran media, by name, with the media of its last such call and
    /// whom its last call went to.
    pub fn media_by_caller(&self) -> BTreeMap<&str, (&MediaReport, &str)> {
        let mut out = BTreeMap::new();
        for c in &self.calls {
            if let Some(m) = self.last_media(&c.from) {
                let to = self.last_call(&c.from).map_or("callee", |l| l.to.as_str());
                out.insert(c.from.as_str(), (m, to));
            }
        }
        out
    }

    /// The pair `user`'s media went over in its last ICE call.
    pub fn last_ice(&self, user: &str) -> Option<&IcePath> {
        self.ice.iter().rev().find(|p| p.user == user)
    }

    /// The last `stun-check` from `host`.
    pub fn stun_check(&self, host: &str) -> Option<&StunCheck> {
        self.field_checks.iter().rev().find_map(|c| match c {
            FieldCheck::Stun { host: h, check, .. } if h == host => Some(check),
            _ => None,
        })
    }

    /// The last `classify-nat` from `host`.
    pub fn classified(&self, host: &str) -> Option<&Classified> {
        self.field_checks.iter().rev().find_map(|c| match c {
            FieldCheck::Nat { host: h, found, .. } if h == host => Some(found),
            _ => None,
        })
    }

    /// Every `probe-udp`, in order.
    pub fn probes(&self) -> impl DoubleEndedIterator<Item = &ProbeRun> {
        self.field_checks.iter().filter_map(|c| match c {
            FieldCheck::Probe { run, .. } => Some(run),
            _ => None,
        })
    }
}
