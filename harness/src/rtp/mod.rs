//! Sans-IO RTP media (RFC 3550): the packet format, a [`MediaStream`] that plays a phone's (or
//! an SBC's) half of a call's audio, and the [`MediaReport`] that turns two streams' counters into
//! the verdict a field engineer asks for: audio both ways, one way, or none.
//!
//! Nothing here opens a socket or reads the clock. A stream is driven like every other machine of
//! the harness (`handle_datagram(local, from, bytes, now)`, `handle_timeout(now)`, then drain
//! `poll_transmit` / `poll_event` / `poll_timeout`), so the one-way-audio failures of the
//! catalogue (private `c=` address, asymmetric RTP, symmetric NAT) reproduce on a virtual clock
//! through `sim_nat::NatModel` as well as on the kernel.

pub mod observed;
pub mod packet;
pub mod report;
pub mod stream;

#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Instant;

pub use packet::{is_rtp, RtpError, RtpPacket, PCMU};
pub use report::{Direction, DirectionReport, MediaReport, MediaVerdict};
pub use stream::{MediaConfig, MediaEvent, MediaStats, MediaStream, RtpSource, SourceStats};

use crate::stun::Transmit;

/// The sans-IO surface shared by the media and TURN machines, so one driver
/// ([`crate::turn::driver`]) and one virtual network run them all. It is
/// [`crate::stun::Machine`] with the event type left open: inputs are `handle_*` with `now`
/// last, outputs are drained with `poll_*`.
pub trait Machine {
    /// What the machine reports.
    type Event;
    /// A datagram arrived on the socket bound to `local`.
    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant);
    /// The deadline from [`Machine::poll_timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// A datagram to send from the socket bound to `Transmit::source`.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When to call [`Machine::handle_timeout`] next; `None`: only a datagram can wake it.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Every local address the machine sends from or listens on right now (a TURN server's
    /// grows and shrinks with its allocations).
    fn local_addresses(&self) -> Vec<SocketAddr>;
}

/// SplitMix64: tiny and deterministic per seed; SSRCs, initial sequence numbers, transaction ids
/// and nonces need to differ, not to be secret.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
