//! The verdict on a call's audio from both ends' counters: both ways, one way, or none.

use std::fmt;

use crate::rtp::stream::MediaStats;

/// How one direction of a call's audio fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// At least the threshold share of what was sent arrived.
    Working,
    /// Some but not enough arrived: loss, not a blocked path.
    Degraded,
    /// Nothing arrived.
    Broken,
}

/// One direction: what one side sent and the other received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectionReport {
    pub sent: u64,
    /// Distinct packets received.
    pub received: u64,
    /// `received / sent` (0 when nothing was sent).
    pub ratio: f64,
    pub direction: Direction,
}

impl DirectionReport {
    fn new(sender: &MediaStats, receiver: &MediaStats, threshold: f64) -> Self {
        let sent = sender.sent;
        let received = receiver.unique;
        let ratio = if sent == 0 {
            0.0
        } else {
            received as f64 / sent as f64
        };
        let direction = if received == 0 {
            Direction::Broken
        } else if ratio >= threshold {
            Direction::Working
        } else {
            Direction::Degraded
        };
        Self {
            sent,
            received,
            ratio,
            direction,
        }
    }
}

impl fmt::Display for DirectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({:.1} %)",
            self.received,
            self.sent,
            self.ratio * 100.0
        )
    }
}

/// Which way audio flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaVerdict {
    BothWays,
    /// One-way audio: the callee hears the caller, not the other way round.
    CallerToCallee,
    /// One-way audio: the caller hears the callee only.
    CalleeToCaller,
    /// No audio (or too little to call working) in either direction.
    None,
}

/// Both directions of a call and the verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaReport {
    pub caller_to_callee: DirectionReport,
    pub callee_to_caller: DirectionReport,
    pub verdict: MediaVerdict,
}

impl MediaReport {
    /// Judges a call from the caller's and the callee's counters: a direction works when at
    /// least `threshold` (e.g. 0.95) of the packets sent arrived.
    pub fn new(caller: &MediaStats, callee: &MediaStats, threshold: f64) -> Self {
        let caller_to_callee = DirectionReport::new(caller, callee, threshold);
        let callee_to_caller = DirectionReport::new(callee, caller, threshold);
        let verdict = match (
            caller_to_callee.direction == Direction::Working,
            callee_to_caller.direction == Direction::Working,
        ) {
            (true, true) => MediaVerdict::BothWays,
            (true, false) => MediaVerdict::CallerToCallee,
            (false, true) => MediaVerdict::CalleeToCaller,
            (false, false) => MediaVerdict::None,
        };
        Self {
            caller_to_callee,
            callee_to_caller,
            verdict,
        }
    }
}

impl fmt::Display for MediaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            MediaVerdict::BothWays => "audio both ways",
            MediaVerdict::CallerToCallee => "one-way audio: caller → callee only",
            MediaVerdict::CalleeToCaller => "one-way audio: callee → caller only",
            MediaVerdict::None => "no audio",
        };
        write!(
            f,
            "caller→callee {}, callee→caller {}: {verdict}",
            self.caller_to_callee, self.callee_to_caller
        )
    }
}
