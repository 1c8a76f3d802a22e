//! A network simulation and integration harness for SIP VoIP behind NAT.
//!
//! Topologies of Linux network namespaces joined by nftables NATs of every RFC 4787 behaviour
//! ([`topology`]), components and external programs running inside their hosts ([`Node`],
//! [`Process`]), and the cleanup that keeps a machine free of leftovers ([`registry`],
//! [`reaper`]).

pub mod alg;
pub mod bindings;
pub mod capture;
pub mod catalogue;
pub mod diagnose;
pub mod error;
pub mod ice;
pub mod import;
pub mod junit;
pub mod machine;
pub mod model;
pub mod names;
mod netlink;
pub mod netns;
pub mod peers;
pub mod preflight;
pub mod probe;
pub mod process;
pub mod reaper;
pub mod registry;
pub mod report;
pub mod rootless;
pub mod rtp;
pub mod sbc;
pub mod scenario;
pub mod seeded;
pub mod sip;
pub mod stun;
pub mod topology;
pub mod trace;
pub mod turn;

pub use error::{Error, Result};
pub use process::Process;
pub use topology::{shapes, Node, Role, Topology, TopologyBuilder, TopologySpec, INTERNET};
