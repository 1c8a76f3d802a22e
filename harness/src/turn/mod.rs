//! Sans-IO TURN over UDP (RFC 8656) with long-term credentials (RFC 8489 §9.2): a
//! [`TurnServer`], a [`TurnClient`] allocation machine, and [`RelayedMedia`], a media stream
//! whose RTP goes through a TURN allocation — the fix for audio between phones behind
//! symmetric NATs (failure catalogue 5 and 6).
//!
//! Nothing in here opens a socket, sleeps or reads the clock. The machines speak the STUN codec
//! of [`crate::stun::codec`] and are driven like every other machine of the harness through
//! [`crate::machine::Machine`]; [`driver`] runs them on real sockets inside a topology's nodes.
//! The server has many local sockets — the listening one and one relay socket per allocation —
//! and says which one each datagram leaves from in `Transmit::source`.

pub mod client;
pub mod driver;

pub mod md5;
pub mod media;
pub mod server;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use client::{TurnClient, TurnClientConfig};
pub use driver::{MachineTask, MediaTask, RelayedMediaState, RelayedMediaTask, TurnServerTask};
pub use media::{RelayedEvent, RelayedMedia};
pub use server::{TurnServer, TurnServerConfig, TurnServerStats};

use crate::stun::codec::Method;
use crate::stun::StunError;

/// RFC 8656 defaults: an allocation lives 10 minutes unless refreshed (at most an hour), a
/// permission 5 minutes, a channel binding 10 minutes.
pub const DEFAULT_ALLOCATION_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_ALLOCATION_LIFETIME: Duration = Duration::from_secs(3600);
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Channel numbers a client may bind (RFC 8656 §12).
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
/// IANA protocol number of UDP, the only REQUESTED-TRANSPORT served.
pub const UDP: u8 = 17;

/// TURN attributes the STUN codec keeps as `Attribute::Unknown`.
pub mod attr {
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
}

/// The key of long-term credentials: `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2;
/// no SASLprep, which is the identity for the ASCII names used here).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    md5::md5(format!("{username}:{realm}:{password}").as_bytes())
}

/// A ChannelData message (RFC 8656 §12.4): channel number, length, application data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Whether `bytes` starts like ChannelData (first two bits 01), not STUN (00) or RTP (10).
    pub fn is_channel_data(bytes: &[u8]) -> bool {
        bytes.first().is_some_and(|b| (0x40..=0x7F).contains(b))
    }

    /// Decodes ChannelData; padding after the declared length (optional over UDP) is ignored.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, TurnError> {
        if bytes.len() < 4 || !Self::is_channel_data(bytes) {
            return Err(TurnError::BadChannelData(
                "shorter than its 4-byte header, or not a channel number",
            ));
        }
        let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let data = bytes.get(4..4 + len).ok_or(TurnError::BadChannelData(
            "length field is longer than the datagram",
        ))?;
        Ok(Self { channel, data })
    }

    /// Encodes without padding (RFC 8656 §12.5: not needed over UDP).
    pub fn encode(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + data.len());
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        v.extend_from_slice(&data[..data.len().min(usize::from(u16::MAX))]);
        v
    }
}

/// Name of a TURN method for messages and traces.
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::BINDING => "Binding",
        Method::ALLOCATE => "Allocate",
        Method::REFRESH => "Refresh",
        Method::SEND => "Send",
        Method::DATA => "Data",
        Method::CREATE_PERMISSION => "CreatePermission",
        Method::CHANNEL_BIND => "ChannelBind",
        _ => "unknown method",
    }
}

/// Everything the TURN machines report; one enum for server and client, so a trace shows both
/// sides of an allocation in the same words.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server: an allocation was made. Client: its allocation succeeded.
    Allocated {
        client: SocketAddr,
        relayed: SocketAddr,
        /// The client's server-reflexive address (XOR-MAPPED-ADDRESS).
        mapped: SocketAddr,
        lifetime: Duration,
    },
    /// A Refresh extended the allocation.
    Refreshed {
        relayed: SocketAddr,
        lifetime: Duration,
    },
    /// The allocation is gone: deleted by a Refresh with lifetime 0, or expired.
    AllocationEnded {
        relayed: SocketAddr,
        reason: &'static str,
    },
    /// A permission for `peer` was installed or refreshed (a CreatePermission or ChannelBind).
    PermissionCreated {
        relayed: SocketAddr,
        peer: IpAddr,
    },
    PermissionExpired {
        relayed: SocketAddr,
        peer: IpAddr,
    },
    ChannelBound {
        relayed: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    },
    ChannelExpired {
        relayed: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    },
    /// Server: a request was answered with an error (401 challenges included).
    Rejected {
        from: SocketAddr,
        method: &'static str,
        code: u16,
    },
    /// Server: data for a peer without a permission (or with no allocation) was dropped.
    Dropped {
        from: SocketAddr,
        to: SocketAddr,
        reason: &'static str,
    },
    /// Client: data from `peer` arrived through the relay.
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// Client: a transaction failed for good.
    Failed {
        method: &'static str,
        error: TurnError,
    },
    /// A datagram that is neither acceptable STUN nor ChannelData.
    Malformed {
        from: SocketAddr,
        reason: String,
    },
}

/// The one error type of the TURN module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Stun(#[from] StunError),
    #[error("{method} failed: server answered {code} ({reason})")]
    ErrorResponse {
        method: &'static str,
        code: u16,
        reason: String,
    },
    #[error("{method}: no answer from the TURN server after every retransmission; is it reachable (UDP 3478) and a TURN server?")]
    Timeout { method: &'static str },
    #[error(
        "the server challenged without REALM and NONCE; it does not speak long-term credentials"
    )]
    NoChallenge,
    #[error("no allocation yet: call allocate() and wait for Event::Allocated")]
    NotAllocated,
    #[error("malformed ChannelData: {0}")]
    BadChannelData(&'static str),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Seconds for a LIFETIME attribute: whole seconds, rounded up, at least one.
pub(crate) fn lifetime_secs(d: Duration) -> u32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.clamp(1, u64::from(u32::MAX)) as u32
}
