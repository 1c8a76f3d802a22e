//! Runs an [`IceMedia`] on its RTP socket inside a node, through the harness's one driver: this
//! module adds its constructor and its snapshot.

use std::net::SocketAddr;

use super::candidate::{Candidate, IceDescription};
use super::media::{IceMedia, IceMediaEvent};
use crate::error::Result;
use crate::machine::driver::{Events, MachineTask};
use crate::machine::Machine;
use crate::rtp::MediaStats;
use crate::topology::Node;

/// What an [`IceMediaTask`] shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceMediaState {
    /// Our SDP's ICE attributes, once gathering is over.
    pub description: Option<IceDescription>,
    /// The SDP `c=`/`m=` address (the default candidate).
    pub default: Option<SocketAddr>,
    /// The SDP `a=rtcp` address (the default RTCP candidate).
    pub default_rtcp: Option<SocketAddr>,
    /// The pair media goes over: (local, remote).
    pub selected: Option<(Candidate, Candidate)>,
    pub consent_lost: bool,
    pub failed: bool,
    pub finished: bool,
    pub stats: MediaStats,
}

/// An [`IceMedia`] in a node: gathers as soon as it starts.
pub type IceMediaTask = MachineTask<IceMedia, IceMediaState>;

impl IceMediaTask {
    pub async fn gather(node: &Node, media: IceMedia) -> Result<(Self, Events<IceMediaEvent>)> {
        let local = media.local_addresses();
        Self::spawn(
            node,
            media,
            &local,
            |m| IceMediaState {
                description: m.description().cloned(),
                default: m.default_candidate(),
                default_rtcp: m.default_rtcp(),
                selected: m.selected(),
                consent_lost: m.consent_lost(),
                failed: m.failed(),
                finished: m.stream().is_finished(),
                stats: m.stats(),
            },
            |m, now| m.gather(now),
        )
        .await
    }
}
