//! ICE (RFC 8445, SDP per RFC 8839, consent per RFC 7675) for the harness's phone, sans-IO: the
//! candidates and their SDP lines ([`candidate`]), the agent that checks pairs and nominates one
//! ([`agent`]), a phone's media on one socket that gathers, checks and streams over the selected
//! pair ([`media`]), and its tokio task ([`driver`]).
//!
//! Written here rather than taken from a crate: str0m's agent lives in an internal crate of
//! str0m exported only for its own tests and pulls in str0m's DTLS/crypto backends; rice-proto
//! brings its own STUN and TURN stacks (and OpenSSL and rustls by default), while the harness
//! already has the STUN codec, the TURN client and the trace decoder its checks must share.

pub mod agent;
pub mod candidate;
pub mod driver;
pub mod media;
#[cfg(test)]
mod tests;

pub use agent::{IceAgent, IceConfig, IceEvent, Pair, PairState, Role};
pub use candidate::{pair_priority, priority, Candidate, CandidateKind, IceDescription};
pub use driver::{IceMediaState, IceMediaTask};
pub use media::{IceMedia, IceMediaConfig, IceMediaEvent};
