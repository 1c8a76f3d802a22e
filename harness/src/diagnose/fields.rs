//! The addresses inside header values and SDP lines, read from a [`SipSummary`]'s text.
//!
//! Header syntax is rsip's (through [`crate::sip::message`]); this module only picks the parts
//! NAT diagnosis compares with the packet's own addresses.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::sip::message::{self, Rport, Via};
use crate::trace::SipSummary;

/// RFC 1918, carrier-grade NAT (RFC 6598, 100.64/10) and link-local (169.254/16): addresses that
/// mean nothing beyond the network that assigned them.
pub fn is_private(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b))
}

fn v4(addr: std::net::SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        std::net::SocketAddr::V4(a) => Some(a),
        std::net::SocketAddr::V6(_) => None,
    }
}

/// The top Via, parsed.
pub fn top_via(s: &SipSummary) -> Option<Via> {
    Via::parse(s.via.first()?).ok()
}

/// A Via's sent-by as an IPv4 socket address (port 5060 when absent).
pub fn via_addr(v: &Via) -> Option<SocketAddrV4> {
    v4(v.sent_by()?)
}

pub fn has_rport(v: &Via) -> bool {
    v.rport != Rport::Absent
}

/// `<sip:bob@192.168.1.10:5060>;expires=60` → the URI inside, without parameters.
fn uri_text(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The address of a URI as written in a header value or request line.
pub fn uri_addr(value: &str) -> Option<SocketAddrV4> {
    let uri = message::parse_uri(uri_text(value)).ok()?;
    v4(message::uri_addr(&uri)?)
}

/// The user part of a URI in a header value or request line (`"Bob" <sip:bob@host>` → `bob`).
pub fn uri_user(value: &str) -> Option<String> {
    let uri = message::parse_uri(uri_text(value)).ok()?;
    Some(uri.auth?.user)
}

pub fn contact_addr(s: &SipSummary) -> Option<SocketAddrV4> {
    uri_addr(s.contact.as_deref()?)
}

/// The registration lifetime asked for: the Contact's `expires=`, else the Expires header.
pub fn expires(s: &SipSummary) -> Option<u32> {
    let from_contact = s.contact.as_deref().and_then(|c| {
        c.split(';')
            .skip(1)
            .find_map(|p| p.trim().strip_prefix("expires="))
            .and_then(|v| v.trim().parse().ok())
    });
    from_contact.or_else(|| s.expires.as_deref()?.trim().parse().ok())
}

/// The IPv4 address at the end of an SDP `c=` or `o=` value (`IN IP4 192.168.1.10`).
pub fn sdp_ip(line: &str) -> Option<Ipv4Addr> {
    line.split_whitespace().last()?.parse().ok()
}

/// Where the SDP of `s` asks for media: `c=` address and `m=` port.
pub fn sdp_media(s: &SipSummary) -> Option<SocketAddrV4> {
    let ip = sdp_ip(s.sdp_c.as_deref()?)?;
    let port = s
        .sdp_m
        .as_deref()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(SocketAddrV4::new(ip, port))
}

/// The `uri="…"` of a digest Authorization.
pub fn digest_uri(authorization: &str) -> Option<&str> {
    let at = authorization.find("uri=")?;
    let rest = authorization[at + 4..].trim_start();
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(',').next().map(str::trim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_include_carrier_nat_and_link_local() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "169.254.1.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.1", "100.128.0.1", "8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn addresses_are_read_from_contact_sdp_and_digest() {
        assert_eq!(
            uri_addr("<sip:bob@192.168.1.10:5070>;expires=60"),
            Some("192.168.1.10:5070".parse().unwrap())
        );
        assert_eq!(
            uri_addr("sip:bob@203.0.113.1"),
            Some("203.0.113.1:5060".parse().unwrap())
        );
        assert_eq!(
            digest_uri(r#"Digest username="bob", realm="x", uri="sip:203.0.113.10", response="1""#),
            Some("sip:203.0.113.10")
        );
        assert_eq!(
            sdp_ip("- 1 1 IN IP4 192.168.1.10"),
            Some("192.168.1.10".parse().unwrap())
        );
    }
}
