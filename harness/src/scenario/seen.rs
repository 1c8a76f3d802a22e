//! `kind = "packet"` expectations: counting captured packets the way a user searches a pcap.
//!
//! An external program cannot be asked what it sent or received, so what crossed an interface is
//! the evidence. Matching a SIP message against its whole text (not the ladder's one-line summary)
//! lets a file check a header an ALG rewrote or a Contact a softphone registered.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::capture::Frame;
use crate::trace::{decode_frame, udp_of, Entry, Payload};

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

/// Counts the frames `q` matches.
pub fn count(frames: &[Frame], q: &PacketQuery) -> Found {
    let mut found = Found::default();
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
        let hit = match (&payload, udp_of(f)) {
            (Payload::Sip(_), Some((_, _, body))) => {
                String::from_utf8_lossy(body).contains(q.contains)
            }
            _ => summary.contains(q.contains),
        };
        if hit {
            found.count += 1;
            found.first.get_or_insert_with(|| match payload {
                // ICMP has no ports.
                Payload::Icmp(_) => format!("{} → {} {summary}", src.ip(), dst.ip()),
                _ => format!("{src} → {dst} {summary}"),
            });
        }
    }
    found
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
}
