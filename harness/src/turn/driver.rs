//! Runs the sans-IO TURN and media machines on real UDP sockets inside a topology's nodes.
//!
//! The loop is the one of [`crate::stun::driver`] (style habit 3): report events, publish a
//! snapshot, send what is queued, then wait for the first of a datagram on any socket, the
//! machine's deadline or a command from the test, feed it in, repeat. Commands
//! ([`MachineTask::call`]) are closures run against the machine with the driver's `now`, so a
//! test can say "connect to this peer" or "start the media" without the machine knowing about
//! tasks.
//!
//! Sockets are bound with [`Node::udp_bind`] before the task starts. The TURN server's relay
//! sockets are therefore bound up front, one per port of its relay range: a namespace worker
//! cannot be reached from inside the task, and a small range (tens of ports) is all a test
//! needs. A datagram to a relay port without an allocation is absorbed, as by a real server.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::rtp::{Machine, MediaStats, MediaStream};
use crate::topology::Node;
use crate::turn::media::RelayedMedia;
use crate::turn::{TurnServer, TurnServerConfig, TurnServerStats};

const MAX_DATAGRAM: usize = 65_535;
/// More relay sockets than this is a configuration mistake for a test server.
const MAX_RELAY_PORTS: usize = 1024;

/// One event of a machine on a node, stamped by the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<E> {
    pub node: String,
    pub at: Instant,
    pub event: E,
}

/// Where a caller reads a driver's events (drop it to ignore them).
pub type Events<E> = mpsc::UnboundedReceiver<Stamped<E>>;

type Command<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

fn turn_error(what: String, e: impl std::fmt::Display) -> Error {
    Error::Io {
        what,
        source: io::Error::other(e.to_string()),
    }
}

/// A machine running on its sockets in a node until dropped or stopped (see the module docs).
#[must_use = "dropping the handle stops the machine"]
pub struct MachineTask<M: Machine, S> {
    node: String,
    locals: Vec<SocketAddr>,
    state: watch::Receiver<S>,
    commands: mpsc::UnboundedSender<Command<M>>,
    task: JoinHandle<Result<()>>,
}

impl<M: Machine, S> std::fmt::Debug for MachineTask<M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineTask")
            .field("node", &self.node)
            .field("locals", &self.locals)
            .finish()
    }
}

impl<M, S> MachineTask<M, S>
where
    M: Machine + Send + 'static,
    M::Event: Send + 'static,
    S: Clone + PartialEq + Send + Sync + 'static,
{
    /// Binds `locals` in `node` (fixed ports: the machine already names them) and runs
    /// `machine` there; `snapshot` is what [`MachineTask::state`] shows, refreshed after every
    /// input. `start` runs first, with the driver's clock (e.g. `|m, now| m.allocate(now)`).
    pub async fn spawn(
        node: &Node,
        mut machine: M,
        locals: &[SocketAddr],
        snapshot: impl Fn(&M) -> S + Send + 'static,
        start: impl FnOnce(&mut M, Instant) + Send + 'static,
    ) -> Result<(Self, Events<M::Event>)> {
        let mut sockets = Vec::with_capacity(locals.len());
        for &addr in locals {
            sockets.push((addr, node.udp_bind(addr).await?));
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(snapshot(&machine));
        let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command<M>>();
        let name = node.name().to_string();
        let task = node.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut first = 0usize;
            let mut now = Instant::now();
            let mut events_tx = Some(events_tx);
            let mut commands_open = true;
            start(&mut machine, now);
            loop {
                while let Some(event) = machine.poll_event() {
                    if let Some(tx) = &events_tx {
                        let e = Stamped {
                            node: name.clone(),
                            at: now,
                            event,
                        };
                        if tx.send(e).is_err() {
                            events_tx = None;
                        }
                    }
                }
                state_tx.send_if_modified(|s| {
                    let new = snapshot(&machine);
                    let changed = *s != new;
                    if changed {
                        *s = new;
                    }
                    changed
                });
                while let Some(t) = machine.poll_transmit() {
                    let Some((_, sock)) = sockets.iter().find(|(a, _)| *a == t.source) else {
                        return Err(Error::Io {
                            what: format!("{name}: the machine sends from {}, where no socket is bound", t.source),
                            source: io::ErrorKind::AddrNotAvailable.into(),
                        });
                    };
                    // A send refused by the kernel (no route, ICMP) is loss, not a reason to stop.
                    let _ = sock.send_to(&t.payload, t.destination).await;
                }
                let deadline = machine.poll_timeout();
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                    deadline.unwrap_or_else(Instant::now),
                ));
                let recv = poll_fn(|cx| poll_recv_any(&sockets, &mut buf, first, cx));
                tokio::select! {
                    r = recv => match r {
                        Ok((i, from, len)) => {
                            first = (i + 1) % sockets.len();
                            now = Instant::now();
                            machine.handle_datagram(sockets[i].0, from, &buf[..len], now);
                        }
                        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {}
                        Err(e) => return Err(Error::io(format!("{name}: receive"))(e)),
                    },
                    () = sleep, if deadline.is_some() => {
                        now = Instant::now().max(deadline.unwrap_or_else(Instant::now));
                        machine.handle_timeout(now);
                    }
                    cmd = commands_rx.recv(), if commands_open => match cmd {
                        Some(f) => {
                            now = Instant::now();
                            f(&mut machine, now);
                        }
                        None => commands_open = false,
                    }
                }
            }
        });
        Ok((
            Self {
                node: node.name().to_string(),
                locals: locals.to_vec(),
                state,
                commands,
                task,
            },
            events,
        ))
    }

    /// Runs `f` on the machine inside the driver, with the driver's clock, and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            turn_error(
                format!("{}: driver", self.node),
                "the machine's task has stopped",
            )
        };
        self.commands
            .send(Box::new(move |m, now| {
                let _ = tx.send(f(m, now));
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// The snapshot as of the last input.
    pub fn state(&self) -> S {
        self.state.borrow().clone()
    }

    /// Waits up to `timeout` for the snapshot to satisfy `ready`; the last snapshot either way.
    pub async fn wait_for(&self, ready: impl FnMut(&S) -> bool, timeout: Duration) -> Result<S, S> {
        let mut rx = self.state.clone();
        let got = match tokio::time::timeout(timeout, rx.wait_for(ready)).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        got.ok_or_else(|| self.state())
    }

    /// The sockets the machine runs on.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.locals
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops the machine; its last snapshot, or the error that had already stopped it.
    pub async fn stop(mut self) -> Result<S> {
        if self.task.is_finished() {
            match (&mut self.task).await {
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => {}
            }
        }
        self.task.abort();
        Ok(self.state())
    }
}

impl<M: Machine, S> Drop for MachineTask<M, S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
