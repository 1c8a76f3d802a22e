//! Frame → trace entry: Ethernet, IPv4, UDP/ICMP, then SIP / STUN / RTP / keep-alive, and what
//! TURN carries (ChannelData, Send and Data indications) decoded the same way.
//!
//! Decoding never fails a trace: anything it does not understand becomes `Udp { len }` or is
//! left out (non-IPv4), and a SIP message too broken to summarise is marked `malformed`.
//!
//! This is the one place a datagram is unwrapped from TURN ([`turn_carried`]): the ladder,
//! `packet` expectations and the media verdict of a third-party phone all read relayed RTP or SIP
//! through it, so they cannot disagree on what a relayed packet was.

use std::borrow::Cow;
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
    pub from: Option<String>,
    pub to: Option<String>,
    /// The `Expires` header (a REGISTER's lifetime when Contact has no `expires=`).
    pub expires: Option<String>,
    /// `Authorization` or `Proxy-Authorization`: a SIP ALG may rewrite the digest `uri=` in it.
    pub authorization: Option<String>,
    /// `Content-Length` as written, and the body's real length in bytes: an ALG that rewrites
    /// the SDP without fixing the header leaves them apart.
    pub content_length: Option<String>,
    pub body_len: usize,
    /// SDP `c=` line value.
    pub sdp_c: Option<String>,
    /// SDP `m=` line value.
    pub sdp_m: Option<String>,
    /// SDP `o=` line value: an ALG that rewrites `c=` but not `o=` leaves the private address here.
    pub sdp_o: Option<String>,
    /// The message does not parse as SIP (no header end, bad first line).
    pub malformed: bool,
    /// The whole message in bytes (the UDP payload): past 1472 it cannot cross a 1500-byte
    /// Ethernet link in one IP packet.
    pub len: usize,
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

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        self.is_response()
            .then(|| self.method_or_status().parse().ok())
            .flatten()
    }

    /// The Request-URI of a request, as written.
    pub fn request_uri(&self) -> Option<&str> {
        (!self.is_response())
            .then(|| self.first_line.split_whitespace().nth(1))
            .flatten()
    }

    /// The CSeq number and method (`1 INVITE` → `(1, "INVITE")`).
    pub fn cseq_parts(&self) -> Option<(u32, &str)> {
        let (n, m) = self
            .cseq
            .as_deref()?
            .trim()
            .split_once(char::is_whitespace)?;
        Some((n.parse().ok()?, m.trim()))
    }
}

fn sip_summary(bytes: &[u8]) -> SipSummary {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&bytes[..i], Some(&bytes[i + 4..])),
        None => (bytes, None),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").trim().to_string();
    let mut s = SipSummary {
        malformed: body.is_none()
            || !(first.starts_with("SIP/2.0 ") || first.ends_with(" SIP/2.0")),
        first_line: first,
        body_len: body.map_or(0, <[u8]>::len),
        len: bytes.len(),
        ..Default::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let first = |slot: &mut Option<String>| {
            slot.get_or_insert_with(|| value.to_string());
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => s.via.extend(value.split(',').map(|v| v.trim().to_string())),
            "contact" | "m" => s.contact = Some(value.to_string()),
            "cseq" => s.cseq = Some(value.to_string()),
            "call-id" | "i" => s.call_id = Some(value.to_string()),
            "from" | "f" => first(&mut s.from),
            "to" | "t" => first(&mut s.to),
            "expires" => first(&mut s.expires),
            "authorization" | "proxy-authorization" => first(&mut s.authorization),
            "content-length" | "l" => first(&mut s.content_length),
            _ => {}
        }
    }
    for line in String::from_utf8_lossy(body.unwrap_or(b"")).lines() {
        if let Some(c) = line.strip_prefix("c=") {
            s.sdp_c = Some(c.trim().to_string());
        } else if let Some(m) = line.strip_prefix("m=") {
            s.sdp_m = Some(m.trim().to_string());
        } else if let Some(o) = line.strip_prefix("o=") {
            s.sdp_o = Some(o.trim().to_string());
        }
    }
    s
}

/// A datagram that starts like a SIP request or response.
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
}

/// A SIP message that does not start like one (garbage before it), told by its `SIP/2.0` line
/// end; checked after TURN framing, whose payload may be SIP.
fn contains_sip(p: &[u8]) -> bool {
    p.len() > 8 && p.windows(8).any(|w| w == b"SIP/2.0\r")
}

/// A STUN or TURN message: what it is, its transaction, and the address it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StunSummary {
    /// `Binding`, `Allocate`, … (`method 0x00a` for others).
    pub method: String,
    pub class: crate::stun::codec::Class,
    /// Pairs a response with its request.
    pub transaction: [u8; 12],
    /// (XOR-)MAPPED-ADDRESS: where the server saw the request come from.
    pub mapped: Option<std::net::SocketAddr>,
    /// What a TURN Send or Data indication carries in its DATA attribute, decoded.
    pub carried: Option<Box<Payload>>,
}

impl std::fmt::Display for StunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stun::codec::Class;
        let class = match self.class {
            Class::Request => "request",
            Class::Indication => "indication",
            Class::SuccessResponse => "success response",
            Class::ErrorResponse => "error response",
        };
        write!(f, "STUN {} {class}", self.method)?;
        if let Some(a) = self.mapped {
            write!(f, " mapped={a}")?;
        }
        Ok(())
    }
}

/// A STUN or TURN message decoded, `None` if `p` is not one.
pub fn stun_of(p: &[u8]) -> Option<StunSummary> {
    stun_decoded(p, true)
}

/// [`stun_of`], decoding a Send/Data indication's DATA too when `unwrap` (one level: what TURN
/// carries is not unwrapped again).
fn stun_decoded(p: &[u8], unwrap: bool) -> Option<StunSummary> {
    let m = crate::stun::codec::Message::decode(p).ok()?;
    let carried = unwrap
        .then(|| indication_data(&m))
        .flatten()
        .map(|inner| Box::new(decode_datagram(inner, false)));
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
    Some(StunSummary {
        method,
        class: m.class,
        transaction: m.transaction_id.0,
        mapped: m.mapped_address(),
        carried,
    })
}

/// How TURN carries an application datagram between a client and its relay (RFC 8656).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnCarrier {
    /// ChannelData on a bound channel (0x4000–0x7FFF, §12).
    Channel(u16),
    /// A Send indication, client → relay (§11.2).
    Send,
    /// A Data indication, relay → client (§11.4).
    Data,
}

impl std::fmt::Display for TurnCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnCarrier::Channel(c) => write!(f, "TURN ChannelData 0x{c:04x}"),
            TurnCarrier::Send => f.write_str("TURN Send indication"),
            TurnCarrier::Data => f.write_str("TURN Data indication"),
        }
    }
}

/// The DATA attribute of a Send or Data indication.
fn indication_data(m: &crate::stun::codec::Message) -> Option<&[u8]> {
    use crate::stun::codec::{Class, Method};
    if m.class != Class::Indication || !(m.method == Method::SEND || m.method == Method::DATA) {
        return None;
    }
    m.data()
}

/// The datagram a UDP payload carries inside TURN — ChannelData on a channel number
/// (0x4000–0x7FFF) or the DATA attribute of a Send/Data indication — and how; `None` if `p` is
/// not TURN framing. What the relay and the phone exchange is the phone's RTP or SIP, so this is
/// what a user looking for "RTP" at either end means.
pub fn turn_carried(p: &[u8]) -> Option<(TurnCarrier, Cow<'_, [u8]>)> {
    use crate::turn::ChannelData;
    // A first byte of 0x40–0x7F is exactly a channel number in 0x4000–0x7FFF.
    if ChannelData::is_channel_data(p) {
        let cd = ChannelData::decode(p).ok()?;
        return Some((TurnCarrier::Channel(cd.channel), Cow::Borrowed(cd.data)));
    }
    if p.len() < 20 || p[0] & 0xc0 != 0 {
        return None;
    }
    let m = crate::stun::codec::Message::decode(p).ok()?;
    let how = if m.method == crate::stun::codec::Method::SEND {
        TurnCarrier::Send
    } else {
        TurnCarrier::Data
    };
    indication_data(&m).map(|inner| (how, Cow::Owned(inner.to_vec())))
}

/// `STUN Binding request`, `STUN Allocate success response relayed=…`: one line for a STUN or
/// TURN message, `None` if `p` is not one.
pub fn stun_summary(p: &[u8]) -> Option<String> {
    stun_of(p).map(|s| s.to_string())
}

/// Decodes a UDP payload: SIP, STUN/TURN, ChannelData, RTP, RTCP, keep-alive, or just a length;
/// what ChannelData and Send/Data indications carry is decoded too.
pub fn decode_udp(p: &[u8]) -> Payload {
    decode_datagram(p, true)
}

/// [`decode_udp`], unwrapping TURN only when `unwrap` (one level deep).
fn decode_datagram(p: &[u8], unwrap: bool) -> Payload {
    if p == b"\r\n" || p == b"\r\n\r\n" {
        return Payload::KeepAlive;
    }
    if looks_like_sip(p) {
        return Payload::Sip(Box::new(sip_summary(p)));
    }
    if p.len() >= 20 && p[0] & 0xc0 == 0 {
        if let Some(s) = stun_decoded(p, unwrap) {
            return Payload::Stun(s);
        }
    }
    if let Ok(cd) = crate::turn::ChannelData::decode(p) {
        return Payload::ChannelData {
            channel: cd.channel,
            len: cd.data.len(),
            inner: unwrap.then(|| Box::new(decode_datagram(cd.data, false))),
        };
    }
    if contains_sip(p) {
        return Payload::Sip(Box::new(sip_summary(p)));
    }
    if crate::rtp::is_rtp(p) {
        return Payload::Rtp {
            payload_type: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        };
    }
    // RFC 5761: RTCP packet types 192–223 share the RTP version bits.
    if p.len() >= 8 && p[0] >> 6 == 2 {
        return Payload::Rtcp { packet_type: p[1] };
    }
    Payload::Udp { len: p.len() }
}

/// An ICMP error and, for destination unreachable and time exceeded, the UDP datagram it quotes
/// (RFC 792: the original IP header and the first 8 bytes of its payload).
#[derive(Debug, Clone, PartialEq)]
pub struct IcmpSummary {
    pub typ: u8,
    pub code: u8,
    /// `(source, destination)` of the quoted UDP datagram.
    pub quoted_udp: Option<(SocketAddrV4, SocketAddrV4)>,
}

impl IcmpSummary {
    pub fn is_port_unreachable(&self) -> bool {
        (self.typ, self.code) == (3, 3)
    }
}

impl std::fmt::Display for IcmpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.typ, self.code) {
            (3, 0) => f.write_str("net unreachable"),
            (3, 1) => f.write_str("host unreachable"),
            (3, 3) => f.write_str("port unreachable"),
            (3, c) => write!(f, "destination unreachable (code {c})"),
            (11, _) => f.write_str("time exceeded"),
            (0, _) => f.write_str("echo reply"),
            (8, _) => f.write_str("echo request"),
            (t, c) => write!(f, "type {t} code {c}"),
        }
    }
}

/// Decodes an ICMP message (`l4` from its type byte on); `None` if shorter than type and code.
pub fn decode_icmp(l4: &[u8]) -> Option<Payload> {
    let (&typ, &code) = (l4.first()?, l4.get(1)?);
    let quoted_udp = (typ == 3 || typ == 11)
        .then(|| {
            let ip = l4.get(8..)?;
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || ip.get(9) != Some(&17) {
                return None;
            }
            let udp = ip.get(ihl..ihl + 4)?;
            let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
            Some((
                SocketAddrV4::new(addr(12), u16::from_be_bytes([udp[0], udp[1]])),
                SocketAddrV4::new(addr(16), u16::from_be_bytes([udp[2], udp[3]])),
            ))
        })
        .flatten();
    Some(Payload::Icmp(IcmpSummary {
        typ,
        code,
        quoted_udp,
    }))
}

/// An IPv4 packet in an Ethernet frame: `(protocol, source, destination, layer-4 bytes)`; the
/// first fragment of a fragmented datagram gives the datagram's start, a later one nothing.
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
    // A fragment past the first carries no layer-4 header: its bytes are the middle of a
    // datagram ([`super::defrag`] puts them back), not a UDP header to read ports from.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
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

/// The data of the TCP segment in a frame, if it carries one: `(source, destination, data)`.
pub fn tcp_of(f: &Frame) -> Option<(SocketAddrV4, SocketAddrV4, &[u8])> {
    match ipv4_of(&f.bytes)? {
        (6, s, d, l4) if l4.len() >= 20 => {
            let offset = usize::from(l4[12] >> 4) * 4;
            Some((
                SocketAddrV4::new(s, u16::from_be_bytes([l4[0], l4[1]])),
                SocketAddrV4::new(d, u16::from_be_bytes([l4[2], l4[3]])),
                l4.get(offset..).unwrap_or(&[]),
            ))
        }
        _ => None,
    }
}

/// Decodes a TCP segment (`l4` from its header on): the SIP message or keep-alive it starts
/// with, the connection's opening, closing or reset, or its length; `None` for a bare
/// acknowledgement, which says nothing a ladder shows.
///
/// A segment is read on its own, not reassembled into the stream: SIP over TCP from the
/// harness's machines and from SIPp writes each message in one segment, so the first message of
/// a segment is the message; one that spans segments shows its first segment's headers (and a
/// short body), and a second message in the same segment is not shown.
pub fn decode_tcp(l4: &[u8]) -> Option<Payload> {
    let offset = usize::from(*l4.get(12)? >> 4) * 4;
    let flags = *l4.get(13)?;
    let data = l4.get(offset..).unwrap_or(&[]);
    if data.is_empty() {
        return (flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0)
            .then_some(Payload::Tcp { flags, len: 0 });
    }
    if data == b"\r\n" || data == b"\r\n\r\n" {
        return Some(Payload::KeepAlive);
    }
    if looks_like_sip(data) {
        return Some(Payload::Sip(Box::new(sip_summary(data))));
    }
    // A TLS record header (RFC 8446 §5.1): content type 20–23, legacy version 3.x. What it
    // carries is opaque on the wire, to the ladder as to a router's SIP ALG.
    if data.len() >= 5 && (20..=23).contains(&data[0]) && data[1] == 3 {
        return Some(Payload::Tls {
            content_type: data[0],
            len: data.len(),
        });
    }
    Some(Payload::Tcp {
        flags,
        len: data.len(),
    })
}

/// TCP header flags (RFC 9293 §3.1) a ladder names.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Decodes one frame; `None` for what a SIP ladder has no use for (ARP, IPv6, bare TCP ACKs).
pub fn decode_frame(f: &Frame) -> Option<Entry> {
    let (proto, src_ip, dst_ip, l4) = ipv4_of(&f.bytes)?;
    let (src, dst, payload) = match proto {
        17 if l4.len() >= 8 => (
            SocketAddrV4::new(src_ip, u16::from_be_bytes([l4[0], l4[1]])),
            SocketAddrV4::new(dst_ip, u16::from_be_bytes([l4[2], l4[3]])),
            decode_udp(&l4[8..]),
        ),
        1 if l4.len() >= 2 => (
            SocketAddrV4::new(src_ip, 0),
            SocketAddrV4::new(dst_ip, 0),
            decode_icmp(l4)?,
        ),
        6 if l4.len() >= 20 => (
            SocketAddrV4::new(src_ip, u16::from_be_bytes([l4[0], l4[1]])),
            SocketAddrV4::new(dst_ip, u16::from_be_bytes([l4[2], l4[3]])),
            decode_tcp(l4)?,
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
            b"REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport\r\n\
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
        let s = sip_summary(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\nc=IN IP4 192.168.1.10\r\nm=audio 4000 RTP/AVP 0\r\n");
        assert_eq!(s.method_or_status(), "200");
        assert_eq!(s.sdp_c.as_deref(), Some("IN IP4 192.168.1.10"));
        assert_eq!(s.sdp_m.as_deref(), Some("audio 4000 RTP/AVP 0"));
        let g = sip_summary(b"INVITE garbage");
        assert!(g.malformed);
    }

    #[test]
    fn keepalives_and_rtp_are_recognised() {
        assert_eq!(decode_udp(b"\r\n\r\n"), Payload::KeepAlive);
        let mut rtp = vec![0x80, 0x00, 0x00, 0x07, 0, 0, 0, 160, 0, 0, 0, 42];
        rtp.extend_from_slice(&[0xff; 160]);
        assert_eq!(
            decode_udp(&rtp),
            Payload::Rtp {
                payload_type: 0,
                seq: 7,
                ssrc: 42
            }
        );
        assert_eq!(decode_udp(&[1, 2, 3]), Payload::Udp { len: 3 });
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0x00, 0, 0, 0, 0, 0, 160, 0, 0, 0, 42];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    fn indication(method: crate::stun::codec::Method, data: &[u8]) -> Vec<u8> {
        use crate::stun::codec::{Attribute, Class, Message, TransactionId};
        Message::new(Class::Indication, method, TransactionId([7; 12]))
            .with(Attribute::XorPeerAddress(
                "198.51.100.20:4000".parse().unwrap(),
            ))
            .with(Attribute::Data(data.to_vec()))
            .encode(None, false)
            .expect("encodes")
    }

    #[test]
    fn rtp_inside_channel_data_is_decoded_and_named_with_its_channel() {
        let framed = crate::turn::ChannelData::encode(0x4000, &rtp(7));
        let p = decode_udp(&framed);
        assert_eq!(
            p.carried(),
            Some((
                TurnCarrier::Channel(0x4000),
                &Payload::Rtp {
                    payload_type: 0,
                    seq: 7,
                    ssrc: 42
                }
            ))
        );
        assert_eq!(p.summary(), "RTP PT 0 via TURN ChannelData 0x4000");
        let (how, inner) = turn_carried(&framed).unwrap();
        assert_eq!((how, &*inner), (TurnCarrier::Channel(0x4000), &rtp(7)[..]));
    }

    #[test]
    fn sip_inside_send_and_rtp_inside_data_indications_are_decoded() {
        use crate::stun::codec::Method;
        let invite = b"INVITE sip:bob@198.51.100.20 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n";
        let send = decode_udp(&indication(Method::SEND, invite));
        assert!(matches!(
            send.carried(),
            Some((TurnCarrier::Send, Payload::Sip(s))) if s.method_or_status() == "INVITE"
        ));
        assert_eq!(
            send.summary(),
            "INVITE sip:bob@198.51.100.20 SIP/2.0 via TURN Send indication"
        );
        let data = decode_udp(&indication(Method::DATA, &rtp(9)));
        assert_eq!(data.summary(), "RTP PT 0 via TURN Data indication");
        let sent = indication(Method::SEND, invite);
        let (how, inner) = turn_carried(&sent).unwrap();
        assert_eq!((how, &*inner), (TurnCarrier::Send, &invite[..]));
    }

    #[test]
    fn opaque_relayed_bytes_and_other_turn_messages_read_as_before() {
        let opaque = decode_udp(&crate::turn::ChannelData::encode(0x7fff, &[1, 2, 3]));
        assert_eq!(opaque.carried(), None);
        assert_eq!(opaque.summary(), "ChannelData 0x7fff 3 bytes");
        // ChannelData inside ChannelData is unwrapped once, not twice.
        let nested = crate::turn::ChannelData::encode(
            0x4001,
            &crate::turn::ChannelData::encode(0x4002, &rtp(1)),
        );
        assert_eq!(
            decode_udp(&nested).summary(),
            "ChannelData 0x4002 172 bytes via TURN ChannelData 0x4001"
        );
        let binding = crate::stun::codec::Message::new(
            crate::stun::codec::Class::Request,
            crate::stun::codec::Method::BINDING,
            crate::stun::codec::TransactionId([1; 12]),
        )
        .encode(None, false)
        .expect("encodes");
        assert_eq!(turn_carried(&binding), None);
        assert_eq!(decode_udp(&binding).summary(), "STUN Binding request");
    }
}
