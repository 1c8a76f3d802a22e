//! IPv4/UDP as NFQUEUE hands it over, sans-IO: find the UDP payload, and rebuild the packet
//! around a new payload with the UDP length, IP total length and both checksums fixed.
//!
//! A verdict that carries a payload replaces the whole IP packet, and the kernel marks it
//! `CHECKSUM_NONE`: whatever checksums we write are the ones the receiver verifies.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The parts of an IPv4/UDP packet the ALG needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp4 {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// IP header length in bytes (options included).
    header_len: usize,
    /// Where the UDP payload ends (the UDP length, not the buffer's).
    payload_end: usize,
}

impl Udp4 {
    /// Parses an unfragmented IPv4/UDP packet; `None` for anything else or anything
    /// inconsistent (lengths that do not fit the buffer).
    pub fn parse(ip: &[u8]) -> Option<Udp4> {
        let first = *ip.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(first & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        if header_len < 20 || total < header_len + 8 || total > ip.len() {
            return None;
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 || ip[9] != 17 {
            return None; // a fragment (MF or an offset), or not UDP
        }
        let udp = &ip[header_len..total];
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if udp_len < 8 || udp_len > udp.len() {
            return None;
        }
        let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        Some(Udp4 {
            src: SocketAddrV4::new(addr(12), u16::from_be_bytes([udp[0], udp[1]])),
            dst: SocketAddrV4::new(addr(16), u16::from_be_bytes([udp[2], udp[3]])),
            header_len,
            payload_end: header_len + udp_len,
        })
    }

    /// The UDP payload of `ip` (the packet this was parsed from).
    pub fn payload<'a>(&self, ip: &'a [u8]) -> &'a [u8] {
        &ip[self.header_len + 8..self.payload_end]
    }

    /// `ip` with its UDP payload replaced: IP total length, IP header checksum, UDP length and
    /// UDP checksum recomputed; the IP header (options, ID, TTL, DSCP) otherwise kept. `None`
    /// if the result would not fit in an IPv4 packet.
    pub fn with_payload(&self, ip: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
        let udp_len = u16::try_from(8 + payload.len()).ok()?;
        let total = u16::try_from(self.header_len + 8 + payload.len()).ok()?;
        let mut out = Vec::with_capacity(usize::from(total));
        out.extend_from_slice(&ip[..self.header_len]);
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let ip_sum = checksum(&[&out[..self.header_len]], 0);
        out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        out.extend_from_slice(&self.src.port().to_be_bytes());
        out.extend_from_slice(&self.dst.port().to_be_bytes());
        out.extend_from_slice(&udp_len.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(payload);
        // RFC 768: the checksum covers a pseudo header (addresses, protocol, UDP length).
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&self.src.ip().octets());
        pseudo[4..8].copy_from_slice(&self.dst.ip().octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
        let udp_sum = match checksum(&[&pseudo, &out[self.header_len..]], 0) {
            0 => 0xffff, // 0 means "no checksum" in UDP over IPv4
            s => s,
        };
        let at = self.header_len + 6;
        out[at..at + 2].copy_from_slice(&udp_sum.to_be_bytes());
        Some(out)
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub(crate) fn checksum(parts: &[&[u8]], initial: u32) -> u16 {
    let mut sum = initial;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
