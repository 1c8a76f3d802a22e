//! Frames for the model's per-link records: the bytes a capture on that link would have read, so
//! the trace decoder, the ladder and the pcap writer take them as they take the kernel's.

use std::net::{Ipv4Addr, SocketAddrV4};

/// An Ethernet + IPv4 header carrying `protocol` and `l4`, header checksum filled in (Wireshark
/// flags a zero one); MAC addresses are zero, as nothing reads them.
fn ipv4_frame(protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(14 + 20 + l4.len());
    b.extend_from_slice(&[0u8; 12]);
    b.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let mut ip = [
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    b.extend_from_slice(&ip);
    b.extend_from_slice(l4);
    b
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP header and payload of a datagram (checksum zero: "none", valid over IPv4).
fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    l4.extend_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// A UDP datagram as an Ethernet frame.
pub fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    ipv4_frame(17, *src.ip(), *dst.ip(), &udp(src, dst, payload))
}

/// The ICMP port unreachable (type 3, code 3) `from` sends back for the datagram `src → dst`,
/// quoting its IP header and first 8 bytes as RFC 792 asks.
pub fn port_unreachable(
    from: Ipv4Addr,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let original = udp_frame(src, dst, payload);
    let quoted = &original[14..(14 + 28).min(original.len())];
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(1, from, *src.ip(), &icmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Direction, Frame, Vantage};
    use crate::trace::{Entry, Payload, Trace};
    use std::time::SystemTime;

    fn frame(bytes: Vec<u8>) -> Frame {
        Frame {
            at: SystemTime::UNIX_EPOCH,
            vantage: Vantage::new("alice", "eth0"),
            direction: Direction::Out,
            bytes,
        }
    }

    #[test]
    fn the_trace_decoder_reads_a_model_datagram_and_its_icmp_error() {
        let a: SocketAddrV4 = "192.168.1.10:5060".parse().unwrap();
        let b: SocketAddrV4 = "203.0.113.10:5060".parse().unwrap();
        let t = Trace::from_frames(&[
            frame(udp_frame(a, b, b"\r\n\r\n")),
            frame(port_unreachable(*b.ip(), a, b, b"\r\n\r\n")),
        ]);
        let e = t.entries();
        assert!(matches!(&e[0], Entry::Packet { src, dst, .. } if *src == a && *dst == b));
        assert!(matches!(
            &e[1],
            Entry::Packet { payload: Payload::Icmp(i), .. } if i.quoted_udp == Some((a, b))
        ));
    }

    #[test]
    fn the_ip_header_checksum_verifies() {
        let f = udp_frame(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            b"x",
        );
        assert_eq!(checksum(&f[14..34]), 0);
    }
}
