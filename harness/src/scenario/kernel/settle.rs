//! Settle: after the last step, wait until the run's SIP has nothing left to say, so the
//! ladder's tail does not depend on when the last step returned.

use std::time::{Duration, Instant, SystemTime};

use super::Running;
use crate::capture::Frame;
use crate::scenario::Scenario;
use crate::trace::{Entry, Payload};

/// Waits until nothing is pending: a UAS resends its 2xx until the ACK comes (or Timer H), a
/// proxy answers what it forwarded. Our machines say when nothing is pending, and the run ends
/// 2·T1 after the last SIP then (what was just sent must reach the capture). Programs cannot be
/// asked; with one running, the run ends after 10·T1 without SIP on any link (longer than T2,
/// 8·T1, the widest gap between retransmissions). Never past 80·T1.
pub(in crate::scenario) async fn settle(s: &Scenario, r: &Running) {
    for phone in r.phones.values() {
        let _ = phone.ua.with(|m, _| m.wind_down()).await;
    }
    let t1 = Duration::from_millis(s.file.scenario.t1_ms);
    let deadline = Instant::now() + t1 * 80;
    let quiet_enough = if r.programs() {
        t1 * 10
    } else {
        // What was sent just now may still be on its way into the capture's buffer.
        (t1 * 2).max(Duration::from_millis(100))
    };
    loop {
        tokio::time::sleep(Duration::from_millis(20).min(t1)).await;
        if Instant::now() >= deadline {
            return;
        }
        let quiet = last_sip(&r.frames())
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_none_or(|d| d >= quiet_enough);
        if quiet && !ours_pending(r).await {
            return;
        }
    }
}

/// Whether a call can no longer get a final response: none of our machines has anything pending
/// (the caller's INVITE in Proceeding is not: RFC 3261 gives it no timer, it waits for ever), no
/// program that could answer is running, and the last SIP has had 2·T1 to reach the capture.
/// The step then ends here instead of at its `timeout-ms`, with the same verdict: no final
/// response.
pub(super) async fn unanswerable(r: &Running, t1: Duration) -> bool {
    // Asking the machines first: while they are busy (a 2xx retransmitted for 64·T1), the
    // capture is not copied every poll.
    if r.programs() || ours_pending(r).await {
        return false;
    }
    last_sip(&r.frames())
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|d| d >= (t1 * 2).max(Duration::from_millis(100)))
}

/// When the last SIP message (pings aside) was captured.
fn last_sip(frames: &[Frame]) -> Option<SystemTime> {
    frames
        .iter()
        .rev()
        .find(|f| {
            matches!(
                crate::trace::decode_frame(f),
                Some(Entry::Packet {
                    payload: Payload::Sip(ref s),
                    ..
                }) if !crate::trace::ladder::is_ping(s)
            )
        })
        .map(|f| f.at)
}

/// Whether one of our SIP machines has a transaction in progress. A machine that has stopped
/// has nothing pending.
async fn ours_pending(r: &Running) -> bool {
    for phone in r.phones.values() {
        if phone.ua.with(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    for task in r.proxies.values() {
        if task.with(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    for task in &r.sbcs {
        if task.call(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    false
}
