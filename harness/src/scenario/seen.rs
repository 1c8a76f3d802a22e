//! `kind = "packet"` expectations: counting captured packets the way a user searches a pcap.
//!
//! An external program cannot be asked what it sent or received, so what crossed an interface is
//! the evidence. Matching a SIP message against its whole text (not the ladder's one-line summary)
//! lets a file check a header an ALG rewrote or a Contact a softphone registered.
//!
//! What TURN carries is matched too, always: a relayed packet's summary names what it carries
//! and how (`RTP PT 0 via TURN ChannelData 0x4000`), and SIP relayed through TURN is searched in
//! its whole text like SIP on the wire. The unwrapping is the trace decoder's
//! ([`crate::trace::turn_carried`]), the same one the ladder and the media verdict read.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::capture::Frame;
use crate::trace::{decode_frame, tcp_of, turn_carried, udp_of, Entry, Payload};

/// A `from`/`to` filter: an address, or an address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    Ip(Ipv4Addr),
    Socket(SocketAddrV4),
}

impl Address {
    pub fn parse(s: &str) -> Option<Self> {
        s.parse()
            .map(Address::Socket)
            .or_else(|_| s.parse().map(Address::Ip))
            .ok()
    }

    fn matches(self, a: SocketAddrV4) -> bool {
        match self {
            Address::Ip(ip) => *a.ip() == ip,
            Address::Socket(s) => a == s,
        }
    }
}

/// What to look for.
#[derive(Debug, Clone)]
pub struct PacketQuery<'a> {
    /// A vantage label: `server`, `home:wan`.
    pub at: &'a str,
    pub contains: &'a str,
    pub from: Option<Address>,
    pub to: Option<Address>,
}

/// Matching packets and the first one's summary (for the verdict line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub count: u32,
    pub first: Option<String>,
}

/// One captured packet a query matched: when the vantage saw it, and its one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub at: std::time::SystemTime,
    pub line: String,
}

/// The frames `q` matches, in capture order.
pub fn matching(frames: &[Frame], q: &PacketQuery) -> Vec<Match> {
    let mut out = Vec::new();
    for f in frames {
        if f.vantage.label() != q.at {
            continue;
        }
        let Some(Entry::Packet {
            src, dst, payload, ..
        }) = decode_frame(f)
        else {
            continue;
        };
        if q.from.is_some_and(|a| !a.matches(src)) || q.to.is_some_and(|a| !a.matches(dst)) {
            continue;
        }
        let summary = payload.summary();
        let sip_text = match (&payload, udp_of(f).or_else(|| tcp_of(f))) {
            (Payload::Sip(_), Some((_, _, body))) => {
                Some(String::from_utf8_lossy(body).into_owned())
            }
            (p, Some((_, _, body))) if matches!(p.carried(), Some((_, Payload::Sip(_)))) => {
                turn_carried(body).map(|(_, inner)| String::from_utf8_lossy(&inner).into_owned())
            }
            _ => None,
        };
        let hit =
            summary.contains(q.contains) || sip_text.is_some_and(|text| text.contains(q.contains));
        if hit {
            out.push(Match {
                at: f.at,
                line: match payload {
                    // ICMP has no ports.
                    Payload::Icmp(_) => format!("{} → {} {summary}", src.ip(), dst.ip()),
                    _ => format!("{src} → {dst} {summary}"),
                },
            });
        }
    }
    out
}

/// Counts the frames `q` matches.
pub fn count(frames: &[Frame], q: &PacketQuery) -> Found {
    let m = matching(frames, q);
    Found {
        count: m.len() as u32,
        first: m.into_iter().next().map(|m| m.line),
    }
}

/// `first`, then `then` after it, at one vantage: the two packets and the time between them,
/// or what was missing.
pub fn order(
    frames: &[Frame],
    at: &str,
    first: &str,
    then: &str,
) -> Result<(Match, Match, std::time::Duration), String> {
    let q = |contains| PacketQuery {
        at,
        contains,
        from: None,
        to: None,
    };
    let a = matching(frames, &q(first))
        .into_iter()
        .min_by_key(|m| m.at)
        .ok_or_else(|| format!("no {first:?} at {at}"))?;
    let b = matching(frames, &q(then))
        .into_iter()
        .filter(|m| m.at > a.at)
        .min_by_key(|m| m.at)
        .ok_or_else(|| format!("no {then:?} at {at} after {first:?}"))?;
    let gap = b.at.duration_since(a.at).unwrap_or_default();
    Ok((a, b, gap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_or_without_a_port() {
        assert_eq!(
            Address::parse("203.0.113.1"),
            Some(Address::Ip(Ipv4Addr::new(203, 0, 113, 1)))
        );
        let s = Address::parse("203.0.113.1:5060").unwrap();
        assert!(s.matches("203.0.113.1:5060".parse().unwrap()));
        assert!(!s.matches("203.0.113.1:5061".parse().unwrap()));
        assert!(
            Address::Ip(Ipv4Addr::new(203, 0, 113, 1)).matches("203.0.113.1:9".parse().unwrap())
        );
        assert_eq!(Address::parse("server"), None);
        assert_eq!(Address::parse("203.0.113.1:99999"), None);
    }

    fn frame(vantage: &str, payload: &[u8]) -> Frame {
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[203, 0, 113, 10, 192, 168, 1, 10]);
        b.extend_from_slice(&ip);
        b.extend_from_slice(&3478u16.to_be_bytes());
        b.extend_from_slice(&5060u16.to_be_bytes());
        b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        Frame {
            at: std::time::SystemTime::UNIX_EPOCH,
            vantage: crate::capture::Vantage::new(vantage, "eth0"),
            direction: crate::capture::Direction::In,
            bytes: b,
        }
    }

    #[test]
    fn a_packet_expectation_finds_sip_and_rtp_relayed_through_turn() {
        let invite =
            b"INVITE sip:alice@192.168.1.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060\r\n\r\n";
        let mut rtp = vec![0x80, 0x08, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42];
        rtp.extend_from_slice(&[0xd5; 160]);
        let frames = [
            frame("alice", &crate::turn::ChannelData::encode(0x4000, invite)),
            frame("alice", &crate::turn::ChannelData::encode(0x4001, &rtp)),
        ];
        let q = |contains| PacketQuery {
            at: "alice",
            contains,
            from: Address::parse("203.0.113.10:3478"),
            to: None,
        };
        // A header of the relayed SIP, not only its first line.
        assert_eq!(count(&frames, &q("Via: SIP/2.0/UDP 198.51.100.1")).count, 1);
        assert_eq!(count(&frames, &q("RTP PT 8")).count, 1);
        assert_eq!(count(&frames, &q("via TURN ChannelData")).count, 2);
        assert_eq!(
            count(&frames, &q("RTP")).first.as_deref(),
            Some("203.0.113.10:3478 → 192.168.1.10:5060 RTP PT 8 via TURN ChannelData 0x4001")
        );
        assert_eq!(count(&frames, &q("RTP PT 0")).count, 0);
    }
}
