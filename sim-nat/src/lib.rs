//! NAT behaviour as data, in the vocabulary of RFC 4787, and its rendering to nftables.
//!
//! Customers' routers differ along a handful of independent axes (how a mapping is chosen, which
//! inbound packets it admits, how ports are picked, how long a binding lives and which direction
//! keeps it alive). [`NatBehaviour`] names those axes; the RFC 3489 names ([`NatType`]) are
//! shorthands for four points of that space. [`render`] turns a behaviour into the nftables
//! ruleset and conntrack settings that make a Linux router namespace *observably* behave that way
//! (recipes measured on this kernel: `shared/kernel-facts.md`).

mod alg;
mod behaviour;
mod error;
mod forward;
mod model;
mod nft;

pub use alg::{AlgFault, UnknownFault};
pub use behaviour::{
    Filtering, InputPolicy, Mapping, NatBehaviour, NatType, PortAllocation, Preset, Refresh, SipAlg,
};
pub use error::Error;
pub use forward::PortForward;
pub use model::{
    observe, observe_home_lan, Binding, BindingEvent, BindingView, DropReason, NatModel,
    Observation, ProbeError, ProbeSetup, Side, UnsolicitedView, Verdict, PROBE_WAIT,
    SIP_HELPER_TIMEOUT,
};
pub use nft::{
    pool_last, port_block, render, sysctls, RouterPorts, Ruleset, CONNTRACK_SYSCTLS, TABLE,
};
