//! Sans-IO STUN (RFC 8489 / RFC 5389, classic RFC 3489) and RFC 5780 NAT
//! behaviour discovery.
//!
//! Nothing in here opens a socket, sleeps or reads the clock. Every machine
//! is driven the same way (as in quinn-proto and str0m): feed it inputs with
//! `handle_datagram(local, from, bytes, now)` / `handle_timeout(now)`, then
//! drain `poll_transmit()`, `poll_event()` and `poll_timeout()` until they
//! are empty, and sleep until the returned deadline. This keeps the protocol
//! logic deterministic, so the test harness can run whole NAT scenarios on a
//! virtual clock in microseconds, and lets the same code run on real sockets.
//!
//! Transmits name the local socket to send from by its local address
//! (`Transmit::source`): the server has up to four (two IPs × two ports),
//! the discovery client up to three (main, filtering tests, lifetime
//! probes), and a map from local address to socket is all the I/O glue
//! needs: [`crate::machine::driver`] is that glue, one loop for every machine, and [`driver`]
//! the STUN handles on it.

pub mod attribute;
pub mod client;
pub mod codec;
pub mod discovery;
pub mod driver;
pub mod server;

#[cfg(test)]
mod testnet;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use client::{
    os_seed, BindingClient, ClientConfig, KeepAlive, KeepAliveKind, RetransmitConfig,
};
pub use codec::{
    attr_type, is_stun, Attribute, Class, Message, Method, TransactionId, FINGERPRINT_XOR,
    MAGIC_COOKIE,
};
pub use discovery::{ClassicNat, DiscoveredBehaviour, Discovery, DiscoveryConfig, LifetimeProbe};
pub use driver::{binding, binding_with, discover, discover_with_events};
pub use driver::{BindingTask, NodeEvent, StunServerTask};
pub use server::{ServerConfig, ServerStats, StunServer};

/// The one sans-IO surface of every machine of the harness, and the datagram it hands out.
pub use crate::machine::{Machine, Transmit};

/// Short-term credentials (RFC 8489 §9.1). The HMAC key is the password
/// itself, so both ends only need to agree on these two strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Everything any machine in this module reports. One enum for all of them
/// so a trace/ladder view can show client, server and discovery side by
/// side without conversions.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server: a request was answered (success or error). Emitted for every
    /// transaction so the ladder can show it.
    Answered {
        /// Local address the request arrived on.
        local: SocketAddr,
        from: SocketAddr,
        /// Where the response went (after CHANGE-REQUEST / RESPONSE-PORT).
        source: SocketAddr,
        destination: SocketAddr,
        transaction_id: TransactionId,
        /// `None` for success, else the STUN error code sent.
        error_code: Option<u16>,
        /// The request had no magic cookie (RFC 3489 client).
        classic: bool,
    },
    /// Server: a Binding indication (keep-alive) arrived; it gets no answer.
    Indication {
        local: SocketAddr,
        from: SocketAddr,
        transaction_id: TransactionId,
    },
    /// A datagram that is not acceptable STUN was dropped.
    Malformed { from: SocketAddr, reason: StunError },
    /// Client: a request left (first transmission or retransmission), so a
    /// ladder shows retransmissions and their timing.
    RequestSent {
        server: SocketAddr,
        transaction_id: TransactionId,
        attempt: u32,
    },
    /// Client: a Binding transaction succeeded.
    Mapped {
        server: SocketAddr,
        mapped: SocketAddr,
        response_origin: Option<SocketAddr>,
        other_address: Option<SocketAddr>,
    },
    /// Client: a keep-alive saw a different mapped address than before: the
    /// NAT dropped our binding and made a new one. Anything that advertised
    /// the old address (SIP Contact, SDP) is now unreachable.
    MappingChanged {
        server: SocketAddr,
        previous: SocketAddr,
        current: SocketAddr,
    },
    /// Client: no response after the full retransmission schedule.
    Timeout {
        server: SocketAddr,
        transaction_id: TransactionId,
    },
    /// Client: the transaction failed (error response or unusable answer).
    Error {
        server: SocketAddr,
        error: StunError,
    },
    /// Discovery: one RFC 5780 test finished.
    TestFinished {
        test: &'static str,
        /// Mapped address seen, or `None` if no response arrived.
        mapped: Option<SocketAddr>,
    },
    /// Discovery finished.
    NatDiscovered(DiscoveredBehaviour),
}

/// The one error type of the STUN module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error(
        "datagram of {len} bytes is shorter than the 20-byte STUN header (truncated, or not STUN)"
    )]
    Truncated { len: usize },
    #[error("first two bits are not zero: this is not STUN (RTP, DTLS or SIP on the same port?)")]
    NotStun,
    #[error("STUN header says {declared} attribute bytes but the datagram carries {actual}; it was truncated or padded in transit")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("STUN header length {0} is not a multiple of 4; the sender does not pad attributes as RFC 8489 §14 requires")]
    UnalignedLength(usize),
    #[error("magic cookie {0:#010x} is not 0x2112a442 and the message is not a classic RFC 3489 Binding message")]
    BadMagicCookie(u32),
    #[error("attribute header at offset {offset} is cut off by the end of the message")]
    AttributeHeaderTruncated { offset: usize },
    #[error("attribute {typ:#06x} at offset {offset} declares {len} bytes but only {remaining} remain in the message")]
    AttributeOverrun {
        typ: u16,
        offset: usize,
        len: usize,
        remaining: usize,
    },
    #[error("address attribute {typ:#06x} has family {family:#04x}; only 0x01 (IPv4) and 0x02 (IPv6) exist")]
    BadAddressFamily { typ: u16, family: u8 },
    #[error("attribute {typ:#06x} is malformed: {reason}")]
    BadAttribute { typ: u16, reason: &'static str },
    #[error("attribute {typ:#06x} follows FINGERPRINT, which must be the last attribute")]
    AttributeAfterFingerprint { typ: u16 },
    #[error("FINGERPRINT is {got:#010x} but the message hashes to {expected:#010x}: the datagram was corrupted or is not STUN")]
    FingerprintMismatch { expected: u32, got: u32 },
    #[error("MESSAGE-INTEGRITY does not match: both ends must use the same password")]
    IntegrityMismatch,
    #[error("message carries no MESSAGE-INTEGRITY although credentials are configured; configure credentials on both ends or on neither")]
    MissingIntegrity,
    #[error("server answered error {code} ({reason})")]
    ErrorResponse { code: u16, reason: String },
    #[error("response carries neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS; the server is broken or not a STUN server")]
    NoMappedAddress,
    #[error("response needs attributes {0:04x?} that this implementation does not understand")]
    UnknownComprehensionRequired(Vec<u16>),
    #[error("server sent no OTHER-ADDRESS: RFC 5780 tests need a server with a second IP and port (e.g. stund with -b, or ServerConfig::alternate_ip/alternate_port)")]
    NoOtherAddress,
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl StunError {
    /// Stable short name, used as the key of the server's malformed-datagram
    /// counters so operators can see *why* traffic was dropped.
    pub fn kind(&self) -> &'static str {
        match self {
            StunError::Truncated { .. } => "truncated",
            StunError::NotStun => "not_stun",
            StunError::LengthMismatch { .. } => "length_mismatch",
            StunError::UnalignedLength(_) => "unaligned_length",
            StunError::BadMagicCookie(_) => "bad_magic_cookie",
            StunError::AttributeHeaderTruncated { .. } => "attribute_header_truncated",
            StunError::AttributeOverrun { .. } => "attribute_overrun",
            StunError::BadAddressFamily { .. } => "bad_address_family",
            StunError::BadAttribute { .. } => "bad_attribute",
            StunError::AttributeAfterFingerprint { .. } => "attribute_after_fingerprint",
            StunError::FingerprintMismatch { .. } => "fingerprint_mismatch",
            StunError::IntegrityMismatch => "integrity_mismatch",
            StunError::MissingIntegrity => "missing_integrity",
            StunError::ErrorResponse { .. } => "error_response",
            StunError::NoMappedAddress => "no_mapped_address",
            StunError::UnknownComprehensionRequired(_) => "unknown_comprehension_required",
            StunError::NoOtherAddress => "no_other_address",
            StunError::Config(_) => "config",
        }
    }
}

/// Multiplies a duration, saturating, so absurd configurations
/// cannot overflow and panic.
pub(crate) fn scale(d: Duration, factor: u32) -> Duration {
    d.checked_mul(factor).unwrap_or(Duration::MAX)
}

/// `now + d` that cannot panic: `Instant + Duration::MAX` would, and the
/// durations come from user configuration. Clamps to roughly a century.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}
