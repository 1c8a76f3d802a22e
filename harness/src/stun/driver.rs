//! Runs the sans-IO STUN machines on real UDP sockets inside a topology's nodes.
//!
//! One loop drives every machine (style habit 3), as quinn's connection driver does for
//! quinn-proto: report the machine's events and send what it queued, then wait for the first of
//! a datagram on any of its sockets or its deadline, feed that in, and repeat. The machines
//! differ; the loop does not. There is one socket per local address the machine names in
//! `Transmit::source`, each bound inside the node with [`Node::udp_bind`].
//!
//! Events leave on an unbounded tokio channel as [`NodeEvent`]s (node name and time attached),
//! so a trace or ladder can show STUN transactions next to SIP. Drop the receiver to ignore them.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::stun::{
    BindingClient, ClientConfig, DiscoveredBehaviour, Discovery, DiscoveryConfig, Event, Machine,
    ServerConfig, ServerStats, StunError, StunServer,
};
use crate::topology::Node;

/// Largest UDP payload. STUN messages are far smaller, but a truncated read would turn a
/// malformed-datagram count into a lie.
const MAX_DATAGRAM: usize = 65_535;

/// One event of a machine running on a node, stamped by the driver: what a trace shows.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// The node the machine runs on (`alice`, `server` …).
    pub node: String,
    /// The `now` of the input that produced the event.
    pub at: Instant,
    pub event: Event,
}

/// Where drivers send their events.
pub type EventSender = mpsc::UnboundedSender<NodeEvent>;
/// Where a caller reads a driver's events.
pub type EventReceiver = mpsc::UnboundedReceiver<NodeEvent>;

/// A STUN-level failure as a harness error.
fn stun_error(what: String, e: StunError) -> Error {
    Error::Stun { what, source: e }
}

/// Binds one UDP socket per address inside `node`; returns each with the address it really got
/// (port 0 becomes the port the kernel picked).
async fn bind_all(node: &Node, locals: &[SocketAddr]) -> Result<Vec<(SocketAddr, UdpSocket)>> {
    let mut out = Vec::with_capacity(locals.len());
    for &addr in locals {
        let sock = node.udp_bind(addr).await?;
        let bound = sock.local_addr().map_err(Error::io(format!(
            "local address of {addr} in {}",
            node.name()
        )))?;
        out.push((bound, sock));
    }
    Ok(out)
}

/// What woke the loop.
enum Input {
    Datagram {
        socket: usize,
        from: SocketAddr,
        len: usize,
    },
    Timeout(Instant),
    /// A receive error that says nothing about this datagram path (an ICMP echo of an earlier
    /// send); nothing to feed.
    Spurious,
}

/// One machine, its sockets and where its events go.
struct Driver<M> {
    node: String,
    machine: M,
    sockets: Vec<(SocketAddr, UdpSocket)>,
    events: Option<EventSender>,
    buf: Vec<u8>,
    /// Socket polled first next time, so a busy socket cannot starve the others.
    first: usize,
    /// `now` of the last input, stamped on the events it produced.
    now: Instant,
}

impl<M: Machine> Driver<M> {
    fn new(
        node: &Node,
        machine: M,
        sockets: Vec<(SocketAddr, UdpSocket)>,
        events: Option<EventSender>,
    ) -> Self {
        assert!(!sockets.is_empty(), "a machine needs at least one socket");
        Self {
            node: node.name().to_string(),
            machine,
            sockets,
            events,
            buf: vec![0; MAX_DATAGRAM],
            first: 0,
            now: Instant::now(),
        }
    }

    /// The loop: report events, let `check` decide whether we are done, send what is queued,
    /// then wait for one input and feed it.
    async fn run<R>(
        &mut self,
        mut check: impl FnMut(&M, &[Event]) -> Option<Result<R>>,
    ) -> Result<R> {
        self.now = Instant::now();
        loop {
            let batch: Vec<Event> = std::iter::from_fn(|| self.machine.poll_event()).collect();
            let verdict = check(&self.machine, &batch);
            self.forward(batch);
            self.send_queued().await?;
            if let Some(result) = verdict {
                return result;
            }
            self.step().await?;
        }
    }

    fn forward(&mut self, batch: Vec<Event>) {
        let Some(tx) = &self.events else { return };
        for event in batch {
            let sent = tx.send(NodeEvent {
                node: self.node.clone(),
                at: self.now,
                event,
            });
            if sent.is_err() {
                // Nobody listens any more; stop cloning events for nobody.
                self.events = None;
                return;
            }
        }
    }

    async fn send_queued(&mut self) -> Result<()> {
        while let Some(t) = self.machine.poll_transmit() {
            let Some((_, sock)) = self.sockets.iter().find(|(a, _)| *a == t.source) else {
                return Err(Error::Io {
                    what: format!(
                        "{}: the STUN machine sends from {}, where no socket is bound",
                        self.node, t.source
                    ),
                    source: io::ErrorKind::AddrNotAvailable.into(),
                });
            };
            sock.send_to(&t.payload, t.destination)
                .await
                .map_err(Error::io(format!(
                    "{}: send STUN from {} to {}",
                    self.node, t.source, t.destination
                )))?;
        }
        Ok(())
    }

    /// Waits for a datagram on any socket or the machine's deadline, and feeds it in.
    async fn step(&mut self) -> Result<()> {
        let deadline = self.machine.poll_timeout();
        let input = {
            let Driver {
                sockets,
                buf,
                first,
                ..
            } = self;
            let recv = poll_fn(|cx| poll_recv_any(sockets, buf, *first, cx));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or_else(Instant::now),
            ));
            tokio::select! {
                r = recv => match r {
                    Ok((socket, from, len)) => Input::Datagram { socket, from, len },
                    Err(e) if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) => Input::Spurious,
                    Err(e) => {
                        return Err(Error::io(format!("{}: receive STUN", self.node))(e));
                    }
                },
                () = sleep, if deadline.is_some() => {
                    // Never tell the machine it is earlier than the deadline it asked for.
                    Input::Timeout(Instant::now().max(deadline.unwrap_or_else(Instant::now)))
                }
            }
        };
        match input {
            Input::Datagram { socket, from, len } => {
                self.first = (socket + 1) % self.sockets.len();
                self.now = Instant::now();
                let local = self.sockets[socket].0;
                self.machine
                    .handle_datagram(local, from, &self.buf[..len], self.now);
            }
            Input::Timeout(now) => {
                self.now = now;
                self.machine.handle_timeout(now);
            }
            Input::Spurious => {}
        }
        Ok(())
    }
}

/// Polls every socket once, starting at `first`; the first datagram wins.
fn poll_recv_any(
    sockets: &[(SocketAddr, UdpSocket)],
    buf: &mut [u8],
    first: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(usize, SocketAddr, usize)>> {
    let n = sockets.len();
    for k in 0..n {
        let i = (first + k) % n;
        let mut rb = ReadBuf::new(buf);
        match sockets[i].1.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(from)) => return Poll::Ready(Ok((i, from, rb.filled().len()))),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    Poll::Pending
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
    node: String,
    locals: Vec<SocketAddr>,
    stats: watch::Receiver<ServerStats>,
    task: JoinHandle<Result<()>>,
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
        let locals = server.local_addresses();
        let sockets = bind_all(node, &locals).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stats_tx, stats) = watch::channel(ServerStats::default());
        let mut driver = Driver::new(node, server, sockets, Some(tx));
        let task = node.spawn(async move {
            driver
                .run(|server: &StunServer, _| {
                    // Published before the responses leave, so whoever sees an answer also
                    // sees it counted.
                    stats_tx.send_if_modified(|s| {
                        let changed = s != server.stats();
                        if changed {
                            s.clone_from(server.stats());
                        }
                        changed
                    });
                    None::<Result<()>>
                })
                .await
        });
        let handle = Self {
            node: node.name().to_string(),
            locals,
            stats,
            task,
        };
        Ok((handle, rx))
    }

    /// The addresses the server answers on.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// The server's counters as of its last input.
    pub fn stats(&self) -> ServerStats {
        self.stats.borrow().clone()
    }

    /// Waits up to `timeout` for the counters to satisfy `ready`; the last counters either way.
    pub async fn wait_for_stats(
        &self,
        ready: impl FnMut(&ServerStats) -> bool,
        timeout: Duration,
    ) -> Result<ServerStats, ServerStats> {
        let mut rx = self.stats.clone();
        let got = match tokio::time::timeout(timeout, rx.wait_for(ready)).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        got.ok_or_else(|| self.stats())
    }

    /// Stops the server; its final counters, or the error that had already stopped it.
    pub async fn stop(mut self) -> Result<ServerStats> {
        if self.task.is_finished() {
            match (&mut self.task).await {
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => {}
            }
        }
        self.task.abort();
        Ok(self.stats())
    }

    /// Whether the server has stopped (an I/O error, or the topology is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The node the server runs on.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Drop for StunServerTask {
    fn drop(&mut self) {
        self.task.abort();
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
    let sockets = bind_all(node, &[local]).await?;
    let local = sockets[0].0;
    let config = ClientConfig {
        keepalive: None,
        ..config
    };
    let mut client = BindingClient::new(local, server, config);
    client.bind(Instant::now());
    let what = format!("STUN Binding from {local} in {} to {server}", node.name());
    let mut driver = Driver::new(node, client, sockets, events);
    driver
        .run(|_, batch| {
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
    mapped: watch::Receiver<Option<SocketAddr>>,
    task: JoinHandle<Result<()>>,
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
        let sockets = bind_all(node, &[local]).await?;
        let local = sockets[0].0;
        let mut client = BindingClient::new(local, server, config);
        client.bind(Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        let (mapped_tx, mapped) = watch::channel(None);
        let mut driver = Driver::new(node, client, sockets, Some(tx));
        let task = node.spawn(async move {
            driver
                .run(|client: &BindingClient, _| {
                    mapped_tx.send_if_modified(|m| {
                        let changed = *m != client.mapped();
                        *m = client.mapped();
                        changed
                    });
                    None::<Result<()>>
                })
                .await
        });
        Ok((
            Self {
                local,
                mapped,
                task,
            },
            rx,
        ))
    }

    /// The socket's local address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The last mapped address learned, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        *self.mapped.borrow()
    }

    /// Waits up to `timeout` for a first mapped address.
    pub async fn wait_mapped(&self, timeout: Duration) -> Option<SocketAddr> {
        let mut rx = self.mapped.clone();
        let got = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        got.ok().and_then(|r| r.ok().and_then(|m| *m))
    }

    /// Stops the keep-alives; the error that had already stopped them, if any.
    pub async fn stop(mut self) -> Result<()> {
        if self.task.is_finished() {
            match (&mut self.task).await {
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => {}
            }
        }
        self.task.abort();
        Ok(())
    }
}

impl Drop for BindingTask {
    fn drop(&mut self) {
        self.task.abort();
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
    let sockets = bind_all(node, &locals).await?;
    config.local = sockets[0].0;
    config.filtering_local = Some(sockets[1].0);
    if let (Some(probe), Some((second, _))) = (config.lifetime.as_mut(), sockets.get(2)) {
        probe.second_local = *second;
    }
    let mut discovery = Discovery::new(config).map_err(|e| stun_error(what.clone(), e))?;
    discovery.start(Instant::now());
    let mut driver = Driver::new(node, discovery, sockets, events);
    driver
        .run(|discovery: &Discovery, batch| {
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
