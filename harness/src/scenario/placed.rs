//! A call placed by a program the harness cannot ask (a softphone started as a command), read
//! off the packets at its host's interface: the INVITE it sent to the user called, and the final
//! response that INVITE got.
//!
//! A softphone answering a challenge (401/407) sends the INVITE again with a higher CSeq and the
//! same Call-ID, so the outcome is the final response to the newest INVITE, and a challenge is
//! final only once no newer INVITE follows it (the runner gives it a grace period).

use std::time::SystemTime;

use crate::capture::{Direction, Frame, Vantage};
use crate::trace::{decode_frame, Entry, Payload};

/// What the packets say about a placed call so far.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedCall {
    pub call_id: String,
    /// The CSeq number of the newest INVITE sent.
    pub cseq: u32,
    /// The final response to that INVITE, and when it arrived.
    pub answer: Option<(u16, SystemTime)>,
}

impl PlacedCall {
    pub fn established(&self) -> bool {
        self.answer.is_some_and(|(s, _)| (200..300).contains(&s))
    }
}

/// Whether a request to `to` (its Request-URI or To header) is addressed to that user.
fn addressed_to(uri: &str, to: &str) -> bool {
    let user = uri
        .split_once("sip:")
        .map_or(uri, |(_, rest)| rest)
        .split(['@', ';', '>'])
        .next()
        .unwrap_or("");
    user == to
}

/// The first INVITE to `to` that left `vantage` from `since` on, and its outcome so far.
pub fn placed_call(
    frames: &[Frame],
    vantage: &Vantage,
    since: SystemTime,
    to: &str,
) -> Option<PlacedCall> {
    let mut sip: Vec<(SystemTime, Direction, Box<crate::trace::SipSummary>)> = frames
        .iter()
        .filter(|f| &f.vantage == vantage && f.at >= since)
        .filter_map(|f| match decode_frame(f)? {
            Entry::Packet {
                at,
                direction,
                payload: Payload::Sip(s),
                ..
            } if !s.malformed => Some((at, direction, s)),
            _ => None,
        })
        .collect();
    sip.sort_by_key(|(at, ..)| *at);
    let call_id = sip.iter().find_map(|(_, d, s)| {
        let invite = *d == Direction::Out && s.method_or_status() == "INVITE";
        let to_user = s.request_uri().is_some_and(|u| addressed_to(u, to))
            || s.to.as_deref().is_some_and(|t| addressed_to(t, to));
        (invite && to_user).then(|| s.call_id.clone()).flatten()
    })?;
    let mut call = PlacedCall {
        call_id,
        cseq: 0,
        answer: None,
    };
    for (at, d, s) in &sip {
        if s.call_id.as_deref() != Some(call.call_id.as_str()) {
            continue;
        }
        let Some((n, "INVITE")) = s.cseq_parts() else {
            continue;
        };
        match (d, s.status()) {
            (Direction::Out, None) if n > call.cseq => {
                call.cseq = n;
                call.answer = None;
            }
            (Direction::In, Some(st)) if st >= 200 && n == call.cseq && call.answer.is_none() => {
                call.answer = Some((st, *at));
            }
            _ => {}
        }
    }
    Some(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(at_ms: u64, dir: Direction, sip: &str) -> Frame {
        let (phone, server) = ("192.168.1.10:5060", "203.0.113.10:5060");
        let (src, dst) = match dir {
            Direction::Out => (phone, server),
            Direction::In => (server, phone),
        };
        crate::capture::udp_frame(
            at(at_ms),
            Vantage::new("alice", "eth0"),
            dir,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            sip.as_bytes(),
        )
    }

    fn invite(cseq: u32, to: &str) -> String {
        format!(
            "INVITE sip:{to}@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:alice@203.0.113.10>;tag=a\r\nTo: <sip:{to}@203.0.113.10>\r\nCall-ID: c1\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn response(status: &str, cseq: u32) -> String {
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:alice@203.0.113.10>;tag=a\r\nTo: <sip:bob@203.0.113.10>;tag=b\r\nCall-ID: c1\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_challenged_invite_sent_again_is_judged_by_the_answer_to_the_newest() {
        let frames = vec![
            frame(10, Direction::Out, &invite(1, "bob")),
            frame(
                20,
                Direction::In,
                &response("407 Proxy Authentication Required", 1),
            ),
            frame(30, Direction::Out, &invite(2, "bob")),
            frame(40, Direction::In, &response("180 Ringing", 2)),
            frame(50, Direction::In, &response("200 OK", 2)),
        ];
        let v = Vantage::new("alice", "eth0");
        let early = placed_call(&frames[..2], &v, at(0), "bob").expect("an INVITE");
        assert_eq!(early.answer, Some((407, at(20))));
        let call = placed_call(&frames, &v, at(0), "bob").expect("an INVITE");
        assert_eq!(call.cseq, 2);
        assert_eq!(call.answer, Some((200, at(50))));
        assert!(call.established());
    }

    #[test]
    fn an_invite_to_someone_else_or_before_the_step_is_not_this_call() {
        let frames = vec![
            frame(10, Direction::Out, &invite(1, "bob")),
            frame(20, Direction::Out, &invite(1, "bobby")),
        ];
        let v = Vantage::new("alice", "eth0");
        assert!(placed_call(&frames, &v, at(15), "bob").is_none());
        assert!(placed_call(&frames, &Vantage::new("bob", "eth0"), at(0), "bob").is_none());
        let unanswered = placed_call(&frames, &v, at(0), "bob").expect("an INVITE");
        assert_eq!(unanswered.answer, None);
        assert!(!unanswered.established());
    }
}
