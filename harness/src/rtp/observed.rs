//! Media counters of an endpoint the harness does not run (baresip, a PBX, a customer's phone),
//! read off the frames captured at that endpoint's own interface.
//!
//! Its own interface is the vantage point that matters: what crossed it inbound is what the
//! program could play, whatever its NAT did on the way. Relayed media is unwrapped (TURN
//! ChannelData, Send and Data indications), because a phone using TURN sends and receives its
//! RTP inside them and would otherwise look silent. RTCP is left out on both sides: it is not
//! audio, and programs send it on their own schedule.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::capture::{Direction, Frame, Vantage};
use crate::rtp::{is_rtp, MediaStats, RtpPacket};

/// The RTP a datagram carries: itself, or what a TURN ChannelData / Send / Data wraps (unwrapped
/// by the trace decoder, so the ladder and this count agree on what a relayed packet was).
fn inner_rtp(p: &[u8]) -> Option<RtpPacket> {
    if is_rtp(p) {
        return RtpPacket::decode(p).ok();
    }
    let (_, inner) = crate::trace::turn_carried(p)?;
    is_rtp(&inner)
        .then(|| RtpPacket::decode(&inner).ok())
        .flatten()
}

/// What `vantage` sent and received as RTP between `from` and `until`: `sent` counts outbound
/// packets, `received`/`unique` inbound ones (`unique` per SSRC and sequence number, so a
/// duplicate is not counted as audio twice).
pub fn observe(
    frames: &[Frame],
    vantage: &Vantage,
    from: SystemTime,
    until: SystemTime,
) -> MediaStats {
    let mut stats = MediaStats::default();
    let mut seen = HashSet::new();
    for f in frames {
        if &f.vantage != vantage || f.at < from || f.at > until {
            continue;
        }
        let Some((src, _, payload)) = crate::trace::udp_of(f) else {
            continue;
        };
        let Some(rtp) = inner_rtp(payload) else {
            continue;
        };
        match f.direction {
            Direction::Out => {
                stats.first_sent.get_or_insert((rtp.ssrc, rtp.sequence));
                stats.sent_runs.record(rtp.ssrc, rtp.sequence);
                stats.sent += 1;
            }
            Direction::In => {
                stats.received += 1;
                stats.first_received.entry(rtp.ssrc).or_insert(rtp.sequence);
                if seen.insert((rtp.ssrc, rtp.sequence)) {
                    stats.unique += 1;
                } else {
                    stats.duplicates += 1;
                }
                let by = stats
                    .by_source
                    .entry(std::net::SocketAddr::V4(src))
                    .or_default();
                by.packets += 1;
                if !by.ssrcs.contains(&rtp.ssrc) {
                    by.ssrcs.push(rtp.ssrc);
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::codec::{Attribute, Class, Message, Method, TransactionId};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    fn frame(direction: Direction, at: SystemTime, payload: &[u8]) -> Frame {
        crate::capture::udp_frame(
            at,
            Vantage::new("phone", "eth0"),
            direction,
            "192.168.1.10:4000".parse().unwrap(),
            "198.51.100.20:10000".parse().unwrap(),
            payload,
        )
    }

    fn rtp(seq: u16, pt: u8) -> Vec<u8> {
        RtpPacket {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: 0,
            ssrc: 7,
            payload: vec![0xff; 160],
        }
        .encode()
    }

    #[test]
    fn plain_channel_data_and_data_indications_count_rtcp_and_stray_frames_do_not() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = t0 + Duration::from_millis(10);
        let mut channel = vec![0x40, 0x00];
        let inner = rtp(2, 0);
        channel.extend_from_slice(&(inner.len() as u16).to_be_bytes());
        channel.extend_from_slice(&inner);
        let data = Message::new(Class::Indication, Method::DATA, TransactionId([1; 12]))
            .with(Attribute::XorPeerAddress(SocketAddr::from((
                Ipv4Addr::new(198, 51, 100, 20),
                4000,
            ))))
            .with(Attribute::Data(rtp(3, 0)))
            .encode(None, false)
            .expect("encodes");
        let mut rtcp = rtp(9, 0);
        rtcp[1] = 200; // sender report
        let frames = vec![
            frame(Direction::In, at, &rtp(1, 0)),
            frame(Direction::In, at, &rtp(1, 0)), // duplicate
            frame(Direction::In, at, &channel),
            frame(Direction::In, at, &data),
            frame(Direction::In, at, &rtcp),
            frame(Direction::In, t0 - Duration::from_secs(1), &rtp(4, 0)), // before the window
            frame(Direction::Out, at, &rtp(5, 0)),
            frame(Direction::Out, at, b"\r\n\r\n"),
        ];
        let s = observe(
            &frames,
            &Vantage::new("phone", "eth0"),
            t0,
            t0 + Duration::from_secs(1),
        );
        assert_eq!((s.sent, s.received, s.unique, s.duplicates), (1, 4, 3, 1));
        let other = observe(&frames, &Vantage::new("other", "eth0"), t0, at);
        assert_eq!(other, MediaStats::default());
    }
}
