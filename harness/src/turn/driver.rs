//! Runs the sans-IO TURN and media machines on real UDP sockets inside a topology's nodes,
//! through the harness's one driver ([`crate::machine::driver::MachineTask`]): what this module
//! adds is each machine's constructor and snapshot. Commands ([`MachineTask::call`]) are
//! closures run against the machine with the driver's `now`, so a test can say "connect to this
//! peer" or "start the media" without the machine knowing about tasks.
//!
//! Sockets are bound with [`Node::udp_bind`] before the task starts. The TURN server's relay
//! sockets are therefore bound up front, one per port of its relay range: a namespace worker
//! cannot be reached from inside the task, and a small range (tens of ports) is all a test
//! needs. A datagram to a relay port without an allocation is absorbed, as by a real server.

use std::io;
use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::rtp::{MediaStats, MediaStream};
use crate::topology::Node;
use crate::turn::media::RelayedMedia;
use crate::turn::{TurnServer, TurnServerConfig, TurnServerStats};

pub use crate::machine::driver::{Events, MachineTask, Stamped};

/// More relay sockets than this is a configuration mistake for a test server.
const MAX_RELAY_PORTS: usize = 1024;

fn turn_error(what: String, e: impl std::fmt::Display) -> Error {
    Error::Io {
        what,
        source: io::Error::other(e.to_string()),
    }
}

/// A [`TurnServer`] in a node; its snapshot is its counters.
pub type TurnServerTask = MachineTask<TurnServer, TurnServerStats>;

impl TurnServerTask {
    /// Binds the listening address and one socket per relay port in `node` and serves TURN.
    ///
    /// ```no_run
    /// # async fn f(topo: &harness::Topology) -> harness::Result<()> {
    /// use harness::turn::{TurnServerConfig, TurnServerTask};
    /// let config = TurnServerConfig {
    ///     relay_ports: 50000..=50031,
    ///     ..TurnServerConfig::new("203.0.113.10:3478".parse().unwrap(), "harness.test")
    /// }
    /// .user("alice", "secret");
    /// let (server, _events) = TurnServerTask::serve(topo.node("server")?, config).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve(
        node: &Node,
        config: TurnServerConfig,
    ) -> Result<(Self, Events<crate::turn::Event>)> {
        let what = || format!("TURN server in {}", node.name());
        let ports = config.relay_ports.clone();
        if ports.clone().count() > MAX_RELAY_PORTS {
            return Err(turn_error(
                what(),
                format!(
                    "relay range {ports:?} needs more than {MAX_RELAY_PORTS} sockets; narrow it"
                ),
            ));
        }
        let mut locals = vec![config.listen];
        locals.extend(ports.map(|p| SocketAddr::new(config.relay_ip, p)));
        let server = TurnServer::new(config).map_err(|e| turn_error(what(), e))?;
        Self::spawn(node, server, &locals, |s| s.stats().clone(), |_, _| {}).await
    }
}

/// What a [`RelayedMediaTask`] shows: its relayed address, whether the path to the peer is up,
/// and the media counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedMediaState {
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub ready: bool,
    pub finished: bool,
    pub stats: MediaStats,
}

/// A [`RelayedMedia`] in a node: allocates as soon as it starts.
pub type RelayedMediaTask = MachineTask<RelayedMedia, RelayedMediaState>;

impl RelayedMediaTask {
    pub async fn allocate(
        node: &Node,
        media: RelayedMedia,
    ) -> Result<(Self, Events<crate::turn::media::RelayedEvent>)> {
        let local = media.client().local();
        Self::spawn(
            node,
            media,
            &[local],
            |m| RelayedMediaState {
                relayed: m.relayed(),
                mapped: m.client().mapped(),
                ready: m.is_ready(),
                finished: m.stream().is_some_and(MediaStream::is_finished),
                stats: m.stats(),
            },
            |m, now| m.allocate(now),
        )
        .await
    }
}

/// A plain [`MediaStream`] in a node (no TURN): its snapshot is its counters.
pub type MediaTask = MachineTask<MediaStream, MediaStats>;

impl MediaTask {
    /// Binds the stream's sockets in `node`; call `start` through [`MachineTask::call`].
    pub async fn bind(
        node: &Node,
        stream: MediaStream,
    ) -> Result<(Self, Events<crate::rtp::MediaEvent>)> {
        let locals = stream.local_addresses();
        Self::spawn(node, stream, &locals, |s| s.stats().clone(), |_, _| {}).await
    }
}
