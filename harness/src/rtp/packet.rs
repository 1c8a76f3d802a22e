//! RTP packets (RFC 3550 §5.1): encode, and decode any datagram without panicking.

/// Payload type of G.711 µ-law (RFC 3551): 8 kHz, 160 bytes per 20 ms.
pub const PCMU: u8 = 0;

const HEADER_LEN: usize = 12;

/// One RTP packet. CSRCs and header extensions are skipped on decode (nothing here mixes
/// streams); padding is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    /// 7 bits.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

/// Why a datagram is not an RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("datagram of {len} bytes is shorter than the 12-byte RTP header")]
    Truncated { len: usize },
    #[error("RTP version is {0}, not 2: this is not RTP (STUN, DTLS or SIP on the media port?)")]
    BadVersion(u8),
    #[error("payload type {0} is in the RTCP range 72–76 (RFC 5761): RTCP on the RTP port")]
    Rtcp(u8),
    #[error("header declares {count} CSRCs that the datagram does not hold")]
    CsrcOverrun { count: usize },
    #[error("header extension runs past the end of the datagram")]
    ExtensionOverrun,
    #[error(
        "padding length {padding} is zero or longer than the {available} bytes after the header"
    )]
    BadPadding { padding: usize, available: usize },
}

impl RtpError {
    /// Stable short name, the key of malformed-packet counters.
    pub fn kind(&self) -> &'static str {
        match self {
            RtpError::Truncated { .. } => "truncated",
            RtpError::BadVersion(_) => "bad_version",
            RtpError::Rtcp(_) => "rtcp",
            RtpError::CsrcOverrun { .. } => "csrc_overrun",
            RtpError::ExtensionOverrun => "extension_overrun",
            RtpError::BadPadding { .. } => "bad_padding",
        }
    }
}

/// Cheap demultiplexing test (RFC 7983): version 2 and not RTCP. Lets an I/O layer tell RTP
/// from STUN on the same port before decoding.
pub fn is_rtp(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] >> 6 == 2 && !(192..=223).contains(&bytes[1])
}

impl RtpPacket {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEADER_LEN + self.payload.len());
        buf.push(0x80);
        buf.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        buf.extend_from_slice(&self.sequence.to_be_bytes());
        buf.extend_from_slice(&self.timestamp.to_be_bytes());
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        buf.extend_from_slice(&self.payload);
        buf
    }

    /// Decodes one datagram. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<RtpPacket, RtpError> {
        if bytes.len() < HEADER_LEN {
            return Err(RtpError::Truncated { len: bytes.len() });
        }
        let version = bytes[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padded = bytes[0] & 0x20 != 0;
        let extension = bytes[0] & 0x10 != 0;
        let csrcs = usize::from(bytes[0] & 0x0f);
        let marker = bytes[1] & 0x80 != 0;
        let payload_type = bytes[1] & 0x7f;
        if (72..=76).contains(&payload_type) {
            return Err(RtpError::Rtcp(payload_type));
        }
        let sequence = u16::from_be_bytes([bytes[2], bytes[3]]);
        let timestamp = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let ssrc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let mut start = HEADER_LEN + 4 * csrcs;
        if start > bytes.len() {
            return Err(RtpError::CsrcOverrun { count: csrcs });
        }
        if extension {
            let Some(ext) = bytes.get(start..start + 4) else {
                return Err(RtpError::ExtensionOverrun);
            };
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
            if start > bytes.len() {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        let mut end = bytes.len();
        if padded {
            let padding = usize::from(bytes[end - 1]);
            let available = end - start;
            if padding == 0 || padding > available {
                return Err(RtpError::BadPadding { padding, available });
            }
            end -= padding;
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            payload: bytes[start..end].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pcmu_packet_survives_encode_and_decode() {
        let p = RtpPacket {
            marker: true,
            payload_type: PCMU,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
            payload: vec![0xff; 160],
        };
        let bytes = p.encode();
        assert_eq!(bytes.len(), 172);
        assert_eq!(&bytes[..2], &[0x80, 0x80]);
        assert!(is_rtp(&bytes));
        assert_eq!(RtpPacket::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn csrcs_extension_and_padding_are_skipped() {
        let mut b = vec![0x80 | 0x20 | 0x10 | 1, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // one extension word
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = RtpPacket::decode(&b).unwrap();
        assert_eq!(p.payload, b"abc");
        assert_eq!((p.payload_type, p.sequence, p.ssrc), (8, 1, 3));
    }

    #[test]
    fn stun_sip_and_rtcp_are_refused_with_a_reason() {
        let stun = [0u8; 20];
        assert_eq!(RtpPacket::decode(&stun), Err(RtpError::BadVersion(0)));
        assert!(!is_rtp(&stun));
        assert_eq!(
            RtpPacket::decode(b"INVITE sip:bob").unwrap_err().kind(),
            "bad_version"
        );
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(RtpPacket::decode(&rtcp), Err(RtpError::Rtcp(72)));
        assert!(!is_rtp(&rtcp));
        assert_eq!(
            RtpPacket::decode(&[0x80; 5]),
            Err(RtpError::Truncated { len: 5 })
        );
        let mut overrun = vec![0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        overrun.extend_from_slice(&[0; 8]);
        assert_eq!(
            RtpPacket::decode(&overrun),
            Err(RtpError::CsrcOverrun { count: 15 })
        );
    }

    proptest! {
        #[test]
        fn the_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RtpPacket::decode(&bytes);
        }

        #[test]
        fn encoded_packets_decode_to_themselves(
            marker in any::<bool>(),
            pt in (0u8..128).prop_filter("not RTCP", |pt| !(72..=76).contains(pt)),
            sequence in any::<u16>(),
            timestamp in any::<u32>(),
            ssrc in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let p = RtpPacket { marker, payload_type: pt, sequence, timestamp, ssrc, payload };
            prop_assert_eq!(RtpPacket::decode(&p.encode()), Ok(p));
        }
    }
}
