//! The one STUN attribute module: every attribute the harness speaks (RFC 8489, the RFC 3489
//! aliases, RFC 5780 and the TURN attributes of RFC 8656), as type numbers, as one typed enum,
//! and as one typed accessor per attribute on a decoded [`Message`].
//!
//! Whoever reads an attribute (the STUN client, server and discovery, the TURN client and
//! server, the UA's RFC 5626 keep-alive, the proxy's and the SBC's answer to it, the trace
//! decoder) asks the message for it by name here, instead of matching over
//! `Message::attributes` in its own words; the wire format of each value is the codec's
//! ([`crate::stun::codec`]).

use std::net::SocketAddr;

use crate::stun::codec::Message;

/// Attribute type numbers. Values below 0x8000 are comprehension-required:
/// a receiver that does not know them must reject the message.
pub mod attr_type {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// RFC 3489 name of what RFC 5780 calls RESPONSE-ORIGIN.
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// RFC 3489 name of what RFC 5780 calls OTHER-ADDRESS.
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PADDING: u16 = 0x0026;
    pub const RESPONSE_PORT: u16 = 0x0027;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    pub const OTHER_ADDRESS: u16 = 0x802C;
    /// ICE (RFC 8445 §16.1): the priority a peer-reflexive candidate found by the check gets.
    pub const PRIORITY: u16 = 0x0024;
    /// ICE: the controlling agent nominates the pair this check is sent on.
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// ICE: the sender is the controlled agent; the value is its tie-breaker.
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE: the sender is the controlling agent; the value is its tie-breaker.
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// A decoded attribute. Address attributes hold the *un-XORed* address, so
/// callers never deal with the obfuscation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(String),
    /// Decoded HMAC; encoders compute it instead (see [`Message::encode`]).
    MessageIntegrity([u8; 20]),
    /// Decoded CRC (already verified); encoders compute it instead.
    Fingerprint(u32),
    ErrorCode {
        code: u16,
        reason: String,
    },
    UnknownAttributes(Vec<u16>),
    Software(String),
    ChangeRequest {
        change_ip: bool,
        change_port: bool,
    },
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    /// RFC 3489 predecessor of RESPONSE-ORIGIN (type 0x0004).
    SourceAddress(SocketAddr),
    /// RFC 3489 predecessor of OTHER-ADDRESS (type 0x0005).
    ChangedAddress(SocketAddr),
    ResponsePort(u16),
    Padding(Vec<u8>),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    Lifetime(u32),
    Data(Vec<u8>),
    Realm(String),
    Nonce(String),
    ChannelNumber(u16),
    /// IANA protocol number (17 = UDP).
    RequestedTransport(u8),
    /// Anything else, kept raw so that unknown comprehension-optional
    /// attributes survive and later modules can interpret them.
    Unknown {
        typ: u16,
        value: Vec<u8>,
    },
}

impl Attribute {
    pub fn typ(&self) -> u16 {
        use attr_type::*;
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::ErrorCode { .. } => ERROR_CODE,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => SOFTWARE,
            Attribute::ChangeRequest { .. } => CHANGE_REQUEST,
            Attribute::ResponseOrigin(_) => RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => OTHER_ADDRESS,
            Attribute::SourceAddress(_) => SOURCE_ADDRESS,
            Attribute::ChangedAddress(_) => CHANGED_ADDRESS,
            Attribute::ResponsePort(_) => RESPONSE_PORT,
            Attribute::Padding(_) => PADDING,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::Data(_) => DATA,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }
}

/// One accessor per attribute: the first occurrence's value, matched by the listed variants
/// in order (an RFC 3489 alias after the RFC 5780 name).
macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident -> $ret:ty { $($pat:pat => $val:expr),+ $(,)? })*) => {
        impl Message {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Option<$ret> {
                    self.attributes.iter().find_map(|a| match a {
                        $($pat => Some($val),)+
                        _ => None,
                    })
                }
            )*
        }
    };
}

accessors! {
    /// XOR-MAPPED-ADDRESS (use [`Message::mapped_address`] to fall back to the classic one).
    xor_mapped_address -> SocketAddr { Attribute::XorMappedAddress(x) => *x }
    /// The classic RFC 3489 MAPPED-ADDRESS.
    classic_mapped_address -> SocketAddr { Attribute::MappedAddress(x) => *x }
    /// RESPONSE-ORIGIN or its RFC 3489 alias SOURCE-ADDRESS.
    response_origin -> SocketAddr {
        Attribute::ResponseOrigin(x) | Attribute::SourceAddress(x) => *x
    }
    /// OTHER-ADDRESS or its RFC 3489 alias CHANGED-ADDRESS.
    other_address -> SocketAddr {
        Attribute::OtherAddress(x) | Attribute::ChangedAddress(x) => *x
    }
    /// `(change_ip, change_port)`.
    change_request -> (bool, bool) {
        Attribute::ChangeRequest { change_ip, change_port } => (*change_ip, *change_port)
    }
    response_port -> u16 { Attribute::ResponsePort(p) => *p }
    username -> &str { Attribute::Username(u) => u.as_str() }
    software -> &str { Attribute::Software(u) => u.as_str() }
    error_code -> (u16, &str) { Attribute::ErrorCode { code, reason } => (*code, reason.as_str()) }
    /// TURN: the peer of a Send/Data indication, CreatePermission or ChannelBind.
    xor_peer_address -> SocketAddr { Attribute::XorPeerAddress(p) => *p }
    /// TURN: the relayed transport address an Allocate success gives.
    xor_relayed_address -> SocketAddr { Attribute::XorRelayedAddress(r) => *r }
    /// TURN: the datagram a Send/Data indication carries.
    data -> &[u8] { Attribute::Data(d) => d.as_slice() }
    /// TURN: LIFETIME in seconds.
    lifetime -> u32 { Attribute::Lifetime(s) => *s }
    realm -> &str { Attribute::Realm(r) => r.as_str() }
    nonce -> &str { Attribute::Nonce(n) => n.as_str() }
    channel_number -> u16 { Attribute::ChannelNumber(c) => *c }
    /// TURN: the IANA protocol number asked for (17 = UDP).
    requested_transport -> u8 { Attribute::RequestedTransport(p) => *p }
}

impl Message {
    /// TURN: every XOR-PEER-ADDRESS, in order (a CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> Vec<SocketAddr> {
        let peers = self.attributes.iter().filter_map(|a| match a {
            Attribute::XorPeerAddress(p) => Some(*p),
            _ => None,
        });
        peers.collect()
    }

    /// The raw value of an attribute the codec keeps undecoded (the ICE ones).
    fn raw(&self, typ: u16) -> Option<&[u8]> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Unknown { typ: t, value } if *t == typ => Some(value.as_slice()),
            _ => None,
        })
    }

    /// ICE: PRIORITY (RFC 8445 §7.1.1).
    pub fn ice_priority(&self) -> Option<u32> {
        let v: [u8; 4] = self.raw(attr_type::PRIORITY)?.try_into().ok()?;
        Some(u32::from_be_bytes(v))
    }

    /// ICE: whether USE-CANDIDATE is present (RFC 8445 §7.1.2).
    pub fn use_candidate(&self) -> bool {
        self.raw(attr_type::USE_CANDIDATE).is_some()
    }

    /// ICE: ICE-CONTROLLING's tie-breaker (RFC 8445 §7.1.3).
    pub fn ice_controlling(&self) -> Option<u64> {
        let v: [u8; 8] = self.raw(attr_type::ICE_CONTROLLING)?.try_into().ok()?;
        Some(u64::from_be_bytes(v))
    }

    /// ICE: ICE-CONTROLLED's tie-breaker (RFC 8445 §7.1.3).
    pub fn ice_controlled(&self) -> Option<u64> {
        let v: [u8; 8] = self.raw(attr_type::ICE_CONTROLLED)?.try_into().ok()?;
        Some(u64::from_be_bytes(v))
    }

    /// XOR-MAPPED-ADDRESS, else the classic MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address()
            .or_else(|| self.classic_mapped_address())
    }
}
