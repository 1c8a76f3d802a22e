//! An emulated consumer-router SIP ALG with named faults (failure catalogue item 2), next to the
//! kernel's own `sip` helper (`sim_nat::SipAlg::Kernel`).
//!
//! The kernel helper rewrites SIP one correct way; the field's ALGs get it wrong in ways that
//! each have a symptom — Contact rewritten but not Via, `c=` but not the `m=` port, Content-Length
//! left stale, a digest broken into a 401 loop, SIP it cannot parse dropped, addresses a phone
//! already fixed with STUN "fixed" again. [`AlgFault`] names them as data a scenario picks;
//! [`EmulatedAlg::start`] gives a built router an ALG with those faults, and dropping the handle
//! takes it away again.
//!
//! # Where the ALG sits, and why NFQUEUE
//!
//! In the router's namespace, iptables (`-t mangle -A FORWARD -p udp --dport/--sport 5060 -j
//! NFQUEUE --queue-bypass`; nft's own `queue` statement is not in this kernel, the xt target is)
//! hands every forwarded SIP datagram to a reader thread that was spawned from the namespace's
//! worker, so its netfilter socket belongs to the router. The reader asks the sans-IO [`Alg`] for
//! a verdict and re-injects the packet — unchanged, rewritten (the whole IP packet, with the UDP
//! length, IP total length and both checksums fixed) or dropped.
//!
//! NFQUEUE rather than a TPROXY or TUN interposer: the packet stays on its path through the
//! router, so conntrack, the NAT mapping and filtering apply to it exactly as to any other packet
//! (a proxy would originate a new flow with its own mapping, and TPROXY only works in prerouting),
//! and the rewrite happens where a consumer ALG does it, in the forward path.
//!
//! **On the private side of the NAT, consistently.** Mangle FORWARD sits between the NAT's two
//! halves: an outbound packet is seen before source NAT (postrouting), an inbound one after its
//! destination was translated back (prerouting), so the ALG always sees the inside host's
//! private address and port. It writes the router's public (WAN) address, as real ALGs do, and
//! — having no view of the port NAT is about to choose — the inside host's port: right behind a
//! port-preserving NAT, the "wrong port" symptom behind one that remaps. Inbound SIP is only
//! inspected (for [`AlgFault::DropUnparseable`]); consumer ALGs' reverse rewriting is not
//! emulated.
//!
//! **A dead reader does not black-hole SIP.** `--queue-bypass` lets packets through while no
//! reader is bound (before start, after a crash), `fail-open` lets them through when a stalled
//! reader's queue (256 packets) is full, and a panic in the rewrite costs one packet its rewrite,
//! not its delivery.
//!
//! **An idle ALG costs nothing.** The reader sleeps in `poll(2)` on the queue's netlink socket
//! ([`nfqueue`], our own few hundred lines instead of a crate that hides its descriptor): a
//! reader that polled every millisecond, times thirty-two routers, starved the kernel's
//! expedited RCU grace periods and stalled every bring-up on the machine for a minute.
//!
//! The parsing and rewriting ([`rewrite`], [`packet`]) are sans-IO — bytes in, bytes out — and
//! never panic on any input (property-tested).

mod nfqueue;
pub mod packet;
mod queue;
pub mod rewrite;
#[cfg(test)]
mod tests;

pub use queue::{EmulatedAlg, SIP_PORT};
pub use rewrite::{Alg, AlgStats, Decision, Direction, SipVerdict};
pub use sim_nat::{AlgFault, UnknownFault};
