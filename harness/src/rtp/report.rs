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
    /// Packets sent before the first one that arrived: lost while the path opened (a relay
    /// latches on the peer's first packet, a pinhole opens on the phone's first packet).
    pub startup: u64,
    /// `received / (sent − startup)`: how much got through once the path was open (0 when
    /// nothing was sent).
    pub ratio: f64,
    pub direction: Direction,
}

/// The longest start-up a working direction may lose: 25 packets, 0.5 s of 20 ms audio. Calls
/// through a latching relay lose what one side sends before the other side's first packet
/// reaches the relay (longer on a loaded machine); more than half a second of clipped audio is
/// a fault a caller notices.
pub const STARTUP_ALLOWANCE: u64 = 25;

impl DirectionReport {
    fn new(sender: &MediaStats, receiver: &MediaStats, threshold: f64) -> Self {
        let sent = sender.sent;
        let received = receiver.unique;
        let startup = sender
            .first_sent
            .and_then(|(ssrc, first)| {
                let got = *receiver.first_received.get(&ssrc)?;
                if sender.sent_runs.is_empty() {
                    Some(u64::from(got.wrapping_sub(first)))
                } else {
                    // Packets really sent before it, not the distance in sequence numbers.
                    sender.sent_runs.sent_before(ssrc, got)
                }
            })
            // A relay that rewrites SSRCs, or reordering around the first packet: judge it all.
            .filter(|&n| n < sent)
            .unwrap_or(0);
        let judged = sent - startup;
        let ratio = if judged == 0 {
            0.0
        } else {
            received as f64 / judged as f64
        };
        let direction = if received == 0 {
            Direction::Broken
        } else if ratio >= threshold && startup <= STARTUP_ALLOWANCE {
            Direction::Working
        } else {
            Direction::Degraded
        };
        Self {
            sent,
            received,
            startup,
            ratio,
            direction,
        }
    }
}

impl fmt::Display for DirectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({:.1} %",
            self.received,
            self.sent - self.startup,
            self.ratio * 100.0
        )?;
        if self.startup > 0 {
            write!(f, " after {} lost while the path opened", self.startup)?;
        }
        f.write_str(")")
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
