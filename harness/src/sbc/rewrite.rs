//! The header and body rewrites an SBC applies to messages it relays, as pure functions: SDP
//! `c=`/`m=`/`o=` to the media relay, and Contact to the SBC itself with the real target kept in
//! an `alias` parameter (Kamailio nathelper's `set_contact_alias` / `handle_ruri_alias` format,
//! `;alias=IP~PORT~1`, 1 meaning UDP).

use std::net::{IpAddr, SocketAddr};

use rsip::param::{OtherParam, OtherParamValue};
use rsip::prelude::{HeadersExt, ToTypedHeader};
use rsip::{Param, Request};

use crate::machine::Transport;
use crate::sip::message;
use crate::sip::ua::parse_sdp;

/// The URI parameter that carries the real target of a Contact rewritten to the SBC.
pub const ALIAS: &str = "alias";

/// Rewrites an SDP body so media goes through `relay`: every `c=` address and the `o=` address
/// become the relay's IP, the `m=audio` port the relay's port. Returns the new body and the
/// address the body announced before (`c=` + `m=audio`), or `None` if it announces none.
pub fn rewrite_sdp(body: &[u8], relay: SocketAddr) -> Option<(Vec<u8>, SocketAddr)> {
    let announced = parse_sdp(body)?;
    let text = std::str::from_utf8(body).ok()?;
    let fam = if relay.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if line.starts_with("c=") {
            out.push_str(&format!("c=IN {fam} {}", relay.ip()));
        } else if let Some(o) = line.strip_prefix("o=") {
            // o=<user> <sess-id> <sess-version> IN IP4 <address>: keep all but the address.
            let mut parts: Vec<&str> = o.split_whitespace().collect();
            let ip = relay.ip().to_string();
            if parts.len() == 6 {
                parts[4] = fam;
                parts[5] = &ip;
            }
            out.push_str(&format!("o={}", parts.join(" ")));
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let rest = m.split_once(' ').map_or("", |(_, r)| r);
            out.push_str(&format!("m=audio {} {rest}", relay.port()));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    Some((out.into_bytes(), announced))
}

/// `IP~PORT~PROTO`, PROTO as Kamailio numbers transports: 1 UDP, 2 TCP, 3 TLS.
fn alias_value(target: SocketAddr, transport: Transport) -> String {
    let proto = match transport {
        Transport::Udp => 1,
        Transport::Tcp => 2,
        Transport::Tls => 3,
    };
    format!("{}~{}~{proto}", target.ip(), target.port())
}

fn parse_alias(value: &str) -> Option<SocketAddr> {
    let mut it = value.split('~');
    let ip: IpAddr = it.next()?.parse().ok()?;
    let port: u16 = it.next()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn is_alias(p: &Param) -> bool {
    matches!(p, Param::Other(name, _) if name.value().eq_ignore_ascii_case(ALIAS))
}

/// The target an `alias` URI parameter names, if the URI has one.
pub fn alias_of(uri: &rsip::Uri) -> Option<SocketAddr> {
    uri.params.iter().find_map(|p| match p {
        Param::Other(name, Some(v)) if name.value().eq_ignore_ascii_case(ALIAS) => {
            parse_alias(v.value())
        }
        _ => None,
    })
}

/// Points the first Contact at `sbc`, keeping where it pointed before in `;alias=IP~PORT~PROTO`
/// (PROTO the transport `transport_of` names for that address), so in-dialog requests come to
/// the SBC and the SBC knows where to send them on (what Kamailio's `set_contact_alias` does,
/// with the host replaced too). Returns whether the message changed: a Contact that already
/// points at `sbc`, or has no IP host, is left alone.
pub fn set_contact_alias(
    msg: &mut impl HeadersExt,
    sbc: SocketAddr,
    transport_of: impl Fn(SocketAddr) -> Transport,
) -> bool {
    let Ok(h) = msg.contact_header_mut() else {
        return false;
    };
    let Ok(mut typed) = h.typed() else {
        return false;
    };
    let Some(target) = message::uri_addr(&typed.uri) else {
        return false;
    };
    if target == sbc {
        return false;
    }
    typed.uri.params.retain(|p| !is_alias(p));
    typed.uri.host_with_port = sbc.into();
    typed.uri.params.push(Param::Other(
        OtherParam::new(ALIAS),
        Some(OtherParamValue::new(alias_value(
            target,
            transport_of(target),
        ))),
    ));
    *h = typed.into();
    true
}

/// If the Request-URI points at `sbc` and carries an `alias`, restores the real target into it
/// (host and port from the alias, the parameter removed), as Kamailio's `handle_ruri_alias`
/// does with the destination. Returns whether the request changed.
pub fn handle_ruri_alias(req: &mut Request, sbc: SocketAddr) -> bool {
    if message::uri_addr(&req.uri) != Some(sbc) {
        return false;
    }
    let Some(target) = alias_of(&req.uri) else {
        return false;
    };
    req.uri.params.retain(|p| !is_alias(p));
    req.uri.host_with_port = target.into();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::SipMessage;

    const SDP: &str = "v=0\r\no=- 42 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn sdp_is_pointed_at_the_relay_and_the_announced_address_is_returned() {
        let relay: SocketAddr = "203.0.113.10:40002".parse().unwrap();
        let (body, announced) = rewrite_sdp(SDP.as_bytes(), relay).unwrap();
        assert_eq!(announced, "192.168.1.10:4000".parse().unwrap());
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("c=IN IP4 203.0.113.10\r\n"), "{text}");
        assert!(text.contains("o=- 42 1 IN IP4 203.0.113.10\r\n"), "{text}");
        assert!(text.contains("m=audio 40002 RTP/AVP 0\r\n"), "{text}");
        assert!(!text.contains("192.168"), "{text}");
        assert_eq!(parse_sdp(&body), Some(relay));
        assert_eq!(rewrite_sdp(b"v=0\r\n", relay), None);
    }

    fn invite(contact: &str, uri: &str) -> Request {
        let raw = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
        );
        match message::parse(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn a_contact_aliased_to_the_sbc_round_trips_through_the_request_uri() {
        let sbc: SocketAddr = "203.0.113.10:5060".parse().unwrap();
        let mut req = invite("sip:bob@198.51.100.1:40123", "sip:bob@example.com");
        assert!(set_contact_alias(&mut req, sbc, |_| Transport::Udp));
        let contact = message::contact_uri(&req).unwrap();
        assert_eq!(
            contact.to_string(),
            "sip:bob@203.0.113.10:5060;alias=198.51.100.1~40123~1"
        );
        assert!(
            !set_contact_alias(&mut req, sbc, |_| Transport::Udp),
            "idempotent"
        );
        // A phone on a TCP flow is aliased with Kamailio's TCP code.
        let mut tcp = invite("sip:bob@198.51.100.1:40123", "sip:bob@example.com");
        assert!(set_contact_alias(&mut tcp, sbc, |_| Transport::Tcp));
        let contact = message::contact_uri(&tcp).unwrap().to_string();
        assert!(contact.ends_with("~40123~2"), "{contact}");
        // Survives the wire.
        let again = match message::parse(&message::serialize(req)).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        };
        let uri = message::contact_uri(&again).unwrap();
        let mut bye = invite("sip:a@1.2.3.4", &uri.to_string());
        assert!(handle_ruri_alias(&mut bye, sbc));
        assert_eq!(bye.uri.to_string(), "sip:bob@198.51.100.1:40123");
        assert!(!handle_ruri_alias(&mut bye, sbc));
    }
}
