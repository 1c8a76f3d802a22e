//! Runs the sans-IO STUN machines on real UDP sockets inside a topology's nodes, through the
//! harness's one driver ([`crate::machine::driver`]): a server and a keep-alive client as
//! spawned tasks, a single Binding and RFC 5780 discovery as one-shot exchanges in the
//! caller's task.
//!
//! Events leave on an unbounded tokio channel as [`NodeEvent`]s (node name and time attached),
//! so a trace or ladder can show STUN transactions next to SIP. Drop the receiver to ignore them.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::machine::driver::{run_until, MachineTask, Record, Sockets, Stamped};
use crate::stun::{
    BindingClient, ClientConfig, DiscoveredBehaviour, Discovery, DiscoveryConfig, Event,
    ServerConfig, ServerStats, StunError, StunServer,
};
use crate::topology::Node;

/// One event of a STUN machine running on a node, stamped by the driver: what a trace shows.
pub type NodeEvent = Stamped<Event>;

/// Where drivers send their events.
pub type EventSender = mpsc::UnboundedSender<NodeEvent>;
/// Where a caller reads a driver's events.
pub type EventReceiver = mpsc::UnboundedReceiver<NodeEvent>;

/// A STUN-level failure as a harness error.
fn stun_error(what: String, e: StunError) -> Error {
    Error::Stun { what, source: e }
}

/// A [`StunServer`] answering on its sockets inside a node until dropped, stopped, or the
/// topology is torn down.
///
/// ```no_run
/// # async fn f(topo: &harness::Topology) -> harness::Result<()> {
/// use harness::stun::{ServerConfig, StunServerTask};
/// let config = ServerConfig::rfc5780(
///     "203.0.113.10:3478".parse().unwrap(),
///     "203.0.113.11:3479".parse().unwrap(),
/// );
/// let (server, _events) = StunServerTask::spawn(topo.node("server")?, config).await?;
/// assert_eq!(server.local_addresses().len(), 4);
/// # Ok(()) }
/// ```
#[must_use = "dropping the handle stops the server"]
#[derive(Debug)]
pub struct StunServerTask {
    task: MachineTask<StunServer, ServerStats>,
}

impl StunServerTask {
    /// Binds the server's 1, 2 or 4 addresses in `node` and starts answering there.
    pub async fn spawn(node: &Node, config: ServerConfig) -> Result<(Self, EventReceiver)> {
        let what = || format!("STUN server in {}", node.name());
        if config.primary.port() == 0 {
            return Err(stun_error(
                what(),
                StunError::Config(
                    "the primary port must be fixed: clients and OTHER-ADDRESS name it".into(),
                ),
            ));
        }
        let server = StunServer::new(config).map_err(|e| stun_error(what(), e))?;
        let sockets = Sockets::bind(node, &server.local_addresses()).await?;
        let snapshot = |s: &StunServer| s.stats().clone();
        let (task, rx) =
            MachineTask::launch(node, server, sockets, snapshot, |_, _| {}, Record::Nothing);
        Ok((Self { task }, rx))
    }

    /// The addresses the server answers on.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        self.task.local_addresses()
    }

    /// The server's counters as of its last input.
    pub fn stats(&self) -> ServerStats {
        self.task.state()
    }

    /// Waits up to `timeout` for the counters to satisfy `ready`; the last counters either way.
    pub async fn wait_for_stats(
        &self,
        ready: impl FnMut(&ServerStats) -> bool,
        timeout: Duration,
    ) -> Result<ServerStats, ServerStats> {
        self.task.wait_for(ready, timeout).await
    }

    /// Stops the server; its final counters, or the error that had already stopped it.
    pub async fn stop(self) -> Result<ServerStats> {
        self.task.stop().await
    }

    /// Whether the server has stopped (an I/O error, or the topology is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The node the server runs on.
    pub fn node(&self) -> &str {
        self.task.node()
    }
}

/// Learns the mapped (server-reflexive) address of `local` in `node` from the STUN server at
/// `server`: one Binding transaction with RFC 8489 retransmissions.
///
/// `local` may have port 0; the kernel's choice is used. Fails when the server never answers
/// (after 39.5 s with the default schedule) or refuses.
pub async fn binding(node: &Node, local: SocketAddr, server: SocketAddr) -> Result<SocketAddr> {
    binding_with(node, local, server, ClientConfig::default(), None).await
}

/// [`binding`] with a client configuration (retransmissions, credentials) and optional events.
/// A keep-alive in `config` is ignored: this is one transaction; see [`BindingTask`].
pub async fn binding_with(
    node: &Node,
    local: SocketAddr,
    server: SocketAddr,
    config: ClientConfig,
    events: Option<EventSender>,
) -> Result<SocketAddr> {
    let sockets = Sockets::bind(node, &[local]).await?;
    let local = sockets.addresses()[0];
    let config = ClientConfig {
        keepalive: None,
        ..config
    };
    let mut client = BindingClient::new(local, server, config);
    client.bind(Instant::now());
    let what = format!("STUN Binding from {local} in {} to {server}", node.name());
    run_until(node, client, sockets, events, |_, batch| {
        batch.iter().find_map(|e| match e {
            Event::Mapped { mapped, .. } => Some(Ok(*mapped)),
            Event::Timeout { .. } => Some(Err(Error::Io {
                what: format!("{what}: no answer"),
                source: io::ErrorKind::TimedOut.into(),
            })),
            Event::Error { error, .. } => Some(Err(stun_error(what.clone(), error.clone()))),
            _ => None,
        })
    })
    .await
}

/// A [`BindingClient`] that keeps its NAT binding alive from one socket in a node, reporting
/// every refresh and any re-mapping ([`Event::MappingChanged`]) until dropped or stopped.
#[must_use = "dropping the handle stops the keep-alives"]
#[derive(Debug)]
pub struct BindingTask {
    local: SocketAddr,
    task: MachineTask<BindingClient, Option<SocketAddr>>,
}

impl BindingTask {
    /// Binds `local` in `node` and starts binding to `server`, refreshing as `config.keepalive`
    /// says (without a keep-alive it binds once and then just listens).
    pub async fn spawn(
        node: &Node,
        local: SocketAddr,
        server: SocketAddr,
        config: ClientConfig,
    ) -> Result<(Self, EventReceiver)> {
        let sockets = Sockets::bind(node, &[local]).await?;
        let local = sockets.addresses()[0];
        let mut client = BindingClient::new(local, server, config);
        client.bind(Instant::now());
        let (task, rx) = MachineTask::launch(
            node,
            client,
            sockets,
            BindingClient::mapped,
            |_, _| {},
            Record::Nothing,
        );
        Ok((Self { local, task }, rx))
    }

    /// The socket's local address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The last mapped address learned, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.task.state()
    }

    /// Waits up to `timeout` for a first mapped address.
    pub async fn wait_mapped(&self, timeout: Duration) -> Option<SocketAddr> {
        self.task
            .wait_for(Option::is_some, timeout)
            .await
            .ok()
            .flatten()
    }

    /// Stops the keep-alives; the error that had already stopped them, if any.
    pub async fn stop(self) -> Result<()> {
        self.task.stop().await.map(drop)
    }
}

/// Runs RFC 5780 NAT behaviour discovery from `config.local` in `node` and returns what it
/// found.
///
/// The filtering tests run from `config.filtering_local`, or when that is `None` from an
/// ephemeral port on `local`'s IP (see [`crate::stun::discovery`] for why); the lifetime search
/// also uses `config.lifetime.second_local`. Ports 0 are replaced by what the kernel picked. A server that never answers is not an error
/// (the result says `mapped: None`, "UDP blocked"); a server that refuses test I is.
pub async fn discover(node: &Node, config: DiscoveryConfig) -> Result<DiscoveredBehaviour> {
    discover_with_events(node, config, None).await
}

/// [`discover`], sending every test and transaction to `events`.
pub async fn discover_with_events(
    node: &Node,
    mut config: DiscoveryConfig,
    events: Option<EventSender>,
) -> Result<DiscoveredBehaviour> {
    let what = format!(
        "RFC 5780 discovery from {} in {} against {}",
        config.local,
        node.name(),
        config.server
    );
    // Configuration errors first, in the machine's words; ports 0 are only known after binding.
    if config.local.port() != 0 && config.lifetime.is_none_or(|p| p.second_local.port() != 0) {
        Discovery::new(config.clone()).map_err(|e| stun_error(what.clone(), e))?;
    }
    // The filtering tests get a socket of their own, as RFC 5780 §4.4 recommends.
    let filtering = config
        .filtering_local
        .unwrap_or(SocketAddr::new(config.local.ip(), 0));
    let mut locals = vec![config.local, filtering];
    locals.extend(config.lifetime.map(|p| p.second_local));
    let sockets = Sockets::bind(node, &locals).await?;
    let bound = sockets.addresses();
    config.local = bound[0];
    config.filtering_local = Some(bound[1]);
    if let (Some(probe), Some(second)) = (config.lifetime.as_mut(), bound.get(2)) {
        probe.second_local = *second;
    }
    let mut discovery = Discovery::new(config).map_err(|e| stun_error(what.clone(), e))?;
    discovery.start(Instant::now());
    run_until(node, discovery, sockets, events, |discovery, batch| {
        let found = batch.iter().find_map(|e| match e {
            Event::NatDiscovered(b) => Some(b.clone()),
            _ => None,
        });
        if let Some(b) = found {
            return Some(Ok(b));
        }
        if !discovery.is_done() {
            return None;
        }
        let why = batch
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Error { error, .. } => Some(error.clone()),
                _ => None,
            })
            .unwrap_or(StunError::Config(
                "discovery stopped without a result".into(),
            ));
        Some(Err(stun_error(what.clone(), why)))
    })
    .await
}
