//! Sans-IO SIP over UDP, TCP and TLS (RFC 3261, RFC 3581 rport, RFC 5626 CRLF keep-alives and
//! flows, RFC 5923 connection reuse): message helpers, stream framing, transactions, a user agent
//! and a registrar/proxy. A stream flow's messages arrive framed ([`framing`]) with their
//! transport; the machines only need to know which transport a peer is reached over.
//!
//! Nothing in here opens a socket, sleeps or reads the clock. Every machine
//! is driven like the STUN ones ([`crate::stun`]) and like quinn-proto and
//! str0m: feed it `handle_datagram(from, bytes, now)` / `handle_timeout(now)`,
//! then drain `poll_transmit()`, `poll_event()` and `poll_timeout()`. Time
//! only moves when the caller says so, which is what lets a test reproduce
//! the field's "100 Trying, then 408 after 64·T1" in microseconds with the
//! real RFC 3261 timer arithmetic.
//!
//! Layers, bottom up: [`message`] (parse/serialize on top of `rsip`, Via
//! `received`/`rport`, typed errors for malformed datagrams),
//! [`transaction`] (RFC 3261 §17 client/server state machines and timers
//! A–K), then the two transaction users: [`ua`] (a phone) and [`proxy`]
//! (a registrar + stateful proxy whose [`proxy::NatHandling`] switch decides
//! whether it reproduces or fixes the private-Contact 408, and whose
//! [`ping::NatPinger`] keeps registered phones' NAT bindings open).

pub mod driver;
pub mod framing;
pub mod message;
pub mod ping;
pub mod proxy;
mod scan;
pub mod sdp;
pub mod transaction;
pub mod ua;

#[cfg(test)]
mod testnet;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use driver::{Datagram, Direction, NodeEvent, ProxyTask, SipTask, UaTask, WireStats};
pub use message::MessageError;
pub use ping::{NatPinger, Ping};
pub use proxy::{ContactHandling, NatHandling, Proxy, ProxyConfig, ProxyStats};
pub use transaction::Timers;
pub use ua::{ContactSource, KeepAlive, Media, Ua, UaConfig};

/// The one sans-IO surface of every machine of the harness, and the datagram it hands out. The
/// UA and the proxy own one UDP socket each, whose address they know from their configuration.
pub use crate::machine::{Machine, Transmit, Transport};

crate::machine::impl_one_socket_machine!(Ua, Event, |m| m.config().local);
crate::machine::impl_one_socket_machine!(Proxy, Event, |m| m.config().local);

/// Everything a SIP machine reports. One enum for UA and proxy so a ladder
/// can show both side by side.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// UA: the registrar accepted our Contact for `expires`.
    Registered { contact: String, expires: Duration },
    /// UA: REGISTER failed with this final status (408 when Timer F fired).
    RegistrationFailed { status: u16 },
    /// UA: an INVITE arrived for us.
    IncomingCall { call_id: String, from: String },
    /// UA (caller): the callee is ringing (180/183).
    CallRinging { call_id: String },
    /// UA: the call is up (caller: 200 received and ACKed; callee: ACK received).
    CallEstablished {
        call_id: String,
        /// The peer's SDP `c=` address with its `m=audio` port.
        remote_media: Option<SocketAddr>,
    },
    /// UA: the call failed with this status: 408 after Timer B, 487 after
    /// CANCEL, or whatever final error response arrived.
    CallFailed { call_id: String, status: u16 },
    /// UA: the call ended (BYE sent/received and answered, or CANCEL received).
    CallEnded { call_id: String },
    /// Proxy: a binding was stored in the location service; `target` is
    /// where the proxy will send requests for `aor`.
    ContactBound {
        aor: String,
        contact: String,
        target: SocketAddr,
    },
    /// Proxy: a request was forwarded to `target`.
    Forwarded {
        method: String,
        call_id: String,
        target: SocketAddr,
    },
    /// Proxy: a forwarded request's client transaction timed out (Timer B/F)
    /// and the proxy answered 408 upstream.
    ForwardTimedOut { method: String, call_id: String },
    /// UA: a STUN keep-alive's answer shows the flow's public address moved (the NAT dropped
    /// the binding and mapped the next packet anew); the UA re-registers.
    FlowMappingChanged { old: SocketAddr, new: SocketAddr },
    /// A datagram that is not acceptable SIP was dropped (and counted).
    MalformedDatagram {
        from: SocketAddr,
        error: MessageError,
    },
}

/// SplitMix64 for branches, tags, Call-IDs, nonces and cnonces. Sans-IO
/// code takes its randomness from a configured seed so virtual runs are
/// reproducible; not cryptographic.
#[derive(Debug, Clone)]
pub(crate) struct Ids(u64);

impl Ids {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn token(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// An RFC 3261 §8.1.1.7 branch: starts with the magic cookie.
    pub(crate) fn branch(&mut self) -> String {
        format!("{}{}", message::BRANCH_MAGIC, self.token())
    }
}

/// `now + d` that cannot panic on absurd configurations.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}

/// Earliest of optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
