//! The one sans-IO surface every protocol machine of the harness shares (STUN client, server and
//! discovery, SIP UA and proxy, SBC, TURN client and server, RTP streams), and the one tokio
//! [`driver`] that runs any of them on real sockets inside a node.
//!
//! A machine never opens a socket, sleeps or reads the clock (style habit 1): inputs are
//! `handle_*` with `now` last, outputs are drained with `poll_*` (quinn-proto's and str0m's
//! shape). Because the trait is the same for all of them, the tokio driver and the test-only
//! virtual networks (`rtp::sim`, the STUN and SIP test nets) run every machine without knowing
//! which protocol it speaks.

pub mod driver;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::time::Instant;

pub use driver::{Datagram, Direction, Events, MachineTask, Sockets, Stamped, WireStats};

/// A datagram a machine wants sent. The I/O layer must send `payload` from the socket bound to
/// `source`, because RFC 5780 tests (and an SBC's relay legs) hinge on *which* local address and
/// port a datagram leaves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Local address of the socket to send from.
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// How a message travels between a machine and a peer. UDP is a datagram per message; TCP and
/// TLS are stream flows (one connection per peer) that the driver frames into messages
/// ([`crate::sip::framing`]) before the machine sees them, so the machine still takes one
/// message at a time and only needs to know which transport it came on and goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The name in a Via (`SIP/2.0/TCP`) and in scenario files (lower case there).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// RFC 3261 §17: over a reliable transport a transaction does not retransmit (Timers A, E,
    /// G off) and does not linger for retransmissions (D, I, J, K zero).
    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }
}

/// The sans-IO surface of every protocol machine, so one driver ([`driver::MachineTask`]) and
/// one virtual network run them all: inputs are `handle_*` with `now` last, outputs are drained
/// with `poll_*`.
pub trait Machine {
    /// What the machine reports.
    type Event;
    /// A datagram arrived on the socket bound to `local`.
    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant);
    /// The deadline from [`Machine::poll_timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// A datagram to send from the socket bound to `Transmit::source`.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When to call [`Machine::handle_timeout`] next; `None`: only a datagram can wake it.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;
    /// Every local address the machine sends from or listens on right now (a TURN server's
    /// grows and shrinks with its allocations).
    fn local_addresses(&self) -> Vec<SocketAddr>;
    /// A whole message (or a keep-alive) arrived on the stream flow (TCP or TLS connection)
    /// from `from`, framed by the driver. A machine that only speaks UDP takes it as a datagram.
    fn handle_stream_message(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
        now: Instant,
    ) {
        let _ = transport;
        self.handle_datagram(local, from, bytes, now);
    }
    /// Which transport `t` goes out on: UDP unless the machine knows its destination as a
    /// stream flow. Asked by the driver for every transmit.
    fn transport_of(&self, t: &Transmit) -> Transport {
        let _ = t;
        Transport::Udp
    }
}

/// Implements [`Machine`] for a machine that owns one socket and has inherent
/// `handle_datagram(from, bytes, now)`, `handle_timeout`, `poll_*` methods (the SIP UA and
/// proxy, whose transaction layer knows its one local address): the driver's `local` is then the
/// only one there is. The other machines implement the trait directly.
macro_rules! impl_one_socket_machine {
    ($t:ty, $event:ty, |$m:ident| $local:expr) => {
        impl $crate::machine::Machine for $t {
            type Event = $event;
            fn handle_datagram(
                &mut self,
                _local: std::net::SocketAddr,
                from: std::net::SocketAddr,
                bytes: &[u8],
                now: std::time::Instant,
            ) {
                <$t>::handle_datagram(self, from, bytes, now)
            }
            fn handle_timeout(&mut self, now: std::time::Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self) -> Option<$crate::machine::Transmit> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<$event> {
                <$t>::poll_event(self)
            }
            fn poll_timeout(&self) -> Option<std::time::Instant> {
                <$t>::poll_timeout(self)
            }
            fn local_addresses(&self) -> Vec<std::net::SocketAddr> {
                let $m = self;
                vec![$local]
            }
            fn handle_stream_message(
                &mut self,
                _local: std::net::SocketAddr,
                from: std::net::SocketAddr,
                transport: $crate::machine::Transport,
                bytes: &[u8],
                now: std::time::Instant,
            ) {
                <$t>::note_flow(self, from, transport);
                <$t>::handle_datagram(self, from, bytes, now)
            }
            fn transport_of(&self, t: &$crate::machine::Transmit) -> $crate::machine::Transport {
                <$t>::transport_to(self, t.destination)
            }
        }
    };
}
pub(crate) use impl_one_socket_machine;
