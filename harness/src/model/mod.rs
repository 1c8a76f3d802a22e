//! The virtual-time twin of the kernel backend: a scenario plays in one process on
//! [`sim_nat::NatModel`] routers, with the same sans-IO machines the kernel run drives, a clock
//! that jumps from deadline to deadline, and per-link records a capture would have made.
//!
//! The kernel is the reference: what the model does not model is listed in ARCHITECTURE.md
//! ("The model backend"), and a file that needs what it cannot run is refused with the reason.

pub mod agent;
pub mod cases;
pub mod net;
pub mod play;
pub mod wire;

pub use net::{Fate, Net};
pub use play::{calls, refusal, run, verdict};
