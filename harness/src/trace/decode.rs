//! Frame → trace entry: Ethernet, IPv4, UDP/ICMP, then SIP / STUN / RTP / keep-alive.
//!
//! Decoding never fails a trace: anything it does not understand becomes `Udp { len }` or is
//! left out (non-IPv4), and a SIP message too broken to summarise is marked `malformed`.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Entry, Payload};
use crate::capture::Frame;

/// The NAT-relevant parts of a SIP message, as text from the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SipSummary {
    /// Request line or status line.
    pub first_line: String,
    /// Every Via value, top first.
    pub via: Vec<String>,
    pub contact: Option<String>,
    pub cseq: Option<String>,
    pub call_id: Option<String>,
    /// SDP `c=` line value.
    pub sdp_c: Option<String>,
    /// SDP `m=` line value.
    pub sdp_m: Option<String>,
    /// The message does not parse as SIP (no header end, bad first line).
    pub malformed: bool,
}

impl SipSummary {
    /// `INVITE`, `REGISTER`, … or the status code as text.
    pub fn method_or_status(&self) -> &str {
        let mut words = self.first_line.split_whitespace();
        match words.next() {
            Some(w) if w.starts_with("SIP/") => words.next().unwrap_or(""),
            Some(w) => w,
            None => "",
        }
    }

    pub fn is_response(&self) -> bool {
        self.first_line.starts_with("SIP/")
    }
}

fn sip_summary(text: &str) -> SipSummary {
    let (head, body) = match text.split_once("\r\n\r\n") {
        Some((h, b)) => (h, Some(b)),
        None => (text, None),
    };
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").trim().to_string();
    let mut s = SipSummary {
        malformed: body.is_none()
            || !(first.starts_with("SIP/2.0 ") || first.ends_with(" SIP/2.0")),
        first_line: first,
        ..Default::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => s.via.extend(value.split(',').map(|v| v.trim().to_string())),
            "contact" | "m" => s.contact = Some(value.to_string()),
            "cseq" => s.cseq = Some(value.to_string()),
            "call-id" | "i" => s.call_id = Some(value.to_string()),
            _ => {}
        }
    }
    for line in body.unwrap_or("").lines() {
        if let Some(c) = line.strip_prefix("c=") {
            s.sdp_c = Some(c.trim().to_string());
        } else if let Some(m) = line.strip_prefix("m=") {
            s.sdp_m = Some(m.trim().to_string());
        }
    }
    s
}

fn looks_like_sip(p: &[u8]) -> bool {
    const STARTS: [&[u8]; 14] = [
        b"SIP/2.0 ",
        b"INVITE ",
        b"ACK ",
        b"BYE ",
        b"CANCEL ",
        b"REGISTER ",
        b"OPTIONS ",
        b"PRACK ",
        b"SUBSCRIBE ",
        b"NOTIFY ",
        b"PUBLISH ",
        b"INFO ",
        b"REFER ",
        b"MESSAGE ",
    ];
    STARTS.iter().any(|s| p.starts_with(s))
        || (p.len() > 8 && p.windows(8).any(|w| w == b"SIP/2.0\r"))
}

/// `STUN Binding request`, `STUN Allocate success response relayed=…`: one line for a STUN or
/// TURN message, `None` if `p` is not one.
pub fn stun_summary(p: &[u8]) -> Option<String> {
    let m = crate::stun::codec::Message::decode(p).ok()?;
    let method = match m.method.0 {
        0x001 => "Binding".to_string(),
        0x003 => "Allocate".into(),
        0x004 => "Refresh".into(),
        0x006 => "Send".into(),
        0x007 => "Data".into(),
        0x008 => "CreatePermission".into(),
        0x009 => "ChannelBind".into(),
        other => format!("method 0x{other:03x}"),
    };
    use crate::stun::codec::Class;
    let class = match m.class {
        Class::Request => "request",
        Class::Indication => "indication",
        Class::SuccessResponse => "success response",
        Class::ErrorResponse => "error response",
    };
    let mut s = format!("STUN {method} {class}");
    if let Some(a) = m.mapped_address() {
        s.push_str(&format!(" mapped={a}"));
    }
    Some(s)
}

fn payload_of(p: &[u8]) -> Payload {
    if p == b"\r\n" || p == b"\r\n\r\n" {
        return Payload::KeepAlive;
    }
    if looks_like_sip(p) {
        return Payload::Sip(sip_summary(&String::from_utf8_lossy(p)));
    }
    if p.len() >= 20 && p[0] & 0xc0 == 0 {
        if let Some(s) = stun_summary(p) {
            return Payload::Stun(s);
        }
    }
    if p.len() >= 4 && (0x40..=0x7f).contains(&p[0]) {
        let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if len + 4 <= p.len() {
            return Payload::ChannelData {
                channel: u16::from_be_bytes([p[0], p[1]]),
                len,
            };
        }
    }
    if p.len() >= 12 && p[0] >> 6 == 2 {
        return Payload::Rtp {
            payload_type: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        };
    }
    Payload::Udp { len: p.len() }
}

fn icmp_summary(typ: u8, code: u8) -> String {
    match (typ, code) {
        (3, 0) => "net unreachable".into(),
        (3, 1) => "host unreachable".into(),
        (3, 3) => "port unreachable".into(),
        (3, c) => format!("destination unreachable (code {c})"),
        (11, _) => "time exceeded".into(),
        (0, _) => "echo reply".into(),
        (8, _) => "echo request".into(),
        (t, c) => format!("type {t} code {c}"),
    }
}

/// An IPv4 packet in an Ethernet frame: `(protocol, source, destination, layer-4 bytes)`.
fn ipv4_of(b: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, &[u8])> {
    if b.len() < 14 + 20 || b[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &b[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((ip[9], src_ip, dst_ip, &ip[ihl..total]))
}

/// The UDP datagram in a frame, if it carries one: `(source, destination, payload)`.
pub fn udp_of(f: &Frame) -> Option<(SocketAddrV4, SocketAddrV4, &[u8])> {
    match ipv4_of(&f.bytes)? {
        (17, s, d, l4) if l4.len() >= 8 => Some((
            SocketAddrV4::new(s, u16::from_be_bytes([l4[0], l4[1]])),
            SocketAddrV4::new(d, u16::from_be_bytes([l4[2], l4[3]])),
            &l4[8..],
        )),
        _ => None,
    }
}

/// Decodes one frame; `None` for what a SIP ladder has no use for (ARP, IPv6, TCP).
pub fn decode_frame(f: &Frame) -> Option<Entry> {
    let (proto, src_ip, dst_ip, l4) = ipv4_of(&f.bytes)?;
    let (src, dst, payload) = match proto {
        17 if l4.len() >= 8 => (
            SocketAddrV4::new(src_ip, u16::from_be_bytes([l4[0], l4[1]])),
            SocketAddrV4::new(dst_ip, u16::from_be_bytes([l4[2], l4[3]])),
            payload_of(&l4[8..]),
        ),
        1 if l4.len() >= 2 => (
            SocketAddrV4::new(src_ip, 0),
            SocketAddrV4::new(dst_ip, 0),
            Payload::Icmp(icmp_summary(l4[0], l4[1])),
        ),
        _ => return None,
    };
    Some(Entry::Packet {
        at: f.at,
        vantage: f.vantage.clone(),
        direction: f.direction,
        src,
        dst,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_is_summarised_with_its_nat_headers() {
        let s = sip_summary(
            "REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport\r\n\
             Contact: <sip:bob@192.168.1.10:5060>\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(s.method_or_status(), "REGISTER");
        assert_eq!(
            s.via,
            vec!["SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport"]
        );
        assert_eq!(s.contact.as_deref(), Some("<sip:bob@192.168.1.10:5060>"));
        assert!(!s.malformed);
    }

    #[test]
    fn sdp_lines_are_kept_and_garbage_is_marked_not_fatal() {
        let s = sip_summary("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\nc=IN IP4 192.168.1.10\r\nm=audio 4000 RTP/AVP 0\r\n");
        assert_eq!(s.method_or_status(), "200");
        assert_eq!(s.sdp_c.as_deref(), Some("IN IP4 192.168.1.10"));
        assert_eq!(s.sdp_m.as_deref(), Some("audio 4000 RTP/AVP 0"));
        let g = sip_summary("INVITE garbage");
        assert!(g.malformed);
    }

    #[test]
    fn keepalives_and_rtp_are_recognised() {
        assert_eq!(payload_of(b"\r\n\r\n"), Payload::KeepAlive);
        let mut rtp = vec![0x80, 0x00, 0x00, 0x07, 0, 0, 0, 160, 0, 0, 0, 42];
        rtp.extend_from_slice(&[0xff; 160]);
        assert_eq!(
            payload_of(&rtp),
            Payload::Rtp {
                payload_type: 0,
                seq: 7,
                ssrc: 42
            }
        );
        assert_eq!(payload_of(&[1, 2, 3]), Payload::Udp { len: 3 });
    }
}
