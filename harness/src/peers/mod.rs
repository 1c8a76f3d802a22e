//! Real third-party programs used as peers: their verdicts confirm the harness behaves like the
//! field, because nobody here wrote them.

pub mod coturn;
pub mod sipp;
pub mod vovida_stun;
