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

pub use packet::{is_rtp, RtpError, RtpPacket, PCMU};
pub use report::{Direction, DirectionReport, MediaReport, MediaVerdict};
pub use stream::{
    MediaConfig, MediaEvent, MediaStats, MediaStream, RtpSource, SentRuns, SourceStats,
};

/// The one sans-IO surface of every machine of the harness ([`crate::machine`]): what the
/// driver and the test-only virtual network (`rtp::sim`) run.
pub use crate::machine::Machine;

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
