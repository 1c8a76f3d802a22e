//! Runs the sans-IO SIP machines ([`Ua`], [`Proxy`]) on a real UDP socket inside a topology's
//! node.
//!
//! The loop is the STUN driver's ([`crate::stun::driver`]), as style habit 3 asks: send what the
//! machine queued and report its events, then wait for the first of a datagram, the machine's
//! deadline or a command from the handle, feed that in, and repeat. Commands are closures run
//! on the machine with the `now` of their arrival (`register`, `call`, `hang_up`, … are thin
//! wrappers), so the handle can do whatever the machine's API offers without a command enum
//! that lags behind it.
//!
//! What the loop saw is kept three ways, all stamped with the node name and an [`Instant`] so a
//! ladder can merge them with captures and with other nodes: machine events on an unbounded
//! channel ([`NodeEvent`], like the STUN driver's), the same events plus every datagram sent and
//! received ([`Datagram`]) in the handle's history (for [`SipTask::wait_for`] and for counting
//! what really left the socket), and counters ([`SipTask::stats`], [`SipTask::wire_stats`]).
//!
//! UDP only; a send error (a route that refuses) is counted, not fatal, because a SIP element
//! keeps serving other transactions when one destination is unreachable.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::sip::proxy::Binding;
use crate::sip::ua::UaStats;
use crate::sip::{
    message, Event, Machine, NatHandling, Proxy, ProxyConfig, ProxyStats, Ua, UaConfig,
};
use crate::topology::Node;

/// Largest UDP payload: a truncated read would turn a malformed-datagram count into a lie.
const MAX_DATAGRAM: usize = 65_535;

/// One event of a SIP machine running on a node, stamped by the driver: what a ladder shows.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// The node the machine runs on (`alice`, `server` …).
    pub node: String,
    /// The `now` of the input that produced the event.
    pub at: Instant,
    pub event: Event,
}

/// Where a caller reads a driver's events.
pub type EventReceiver = mpsc::UnboundedReceiver<NodeEvent>;

/// Which way a [`Datagram`] went through the machine's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One datagram as the machine's socket saw it: sent only once `sendto` succeeded, that is, it
/// left for the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Datagram {
    pub node: String,
    /// When it was sent, or when the driver read it.
    pub at: Instant,
    pub direction: Direction,
    /// The machine's socket address.
    pub local: SocketAddr,
    /// The peer: destination of a sent datagram, source of a received one.
    pub remote: SocketAddr,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// What the datagram is, in ladder words: `INVITE`, `100 Trying`, `CRLF`, or
    /// `malformed (…)`.
    pub fn summary(&self) -> String {
        if message::is_keepalive(&self.payload) {
            return "CRLF".into();
        }
        // RFC 5626 STUN keep-alives and their answers share the SIP flow.
        if let Some(stun) = crate::trace::stun_summary(&self.payload) {
            return stun;
        }
        match message::parse(&self.payload) {
            Ok(m) => message::summary(&m),
            Err(e) => format!("malformed ({})", e.kind()),
        }
    }

    /// Whether this is a request with `method` (`"INVITE"`), judged by its request line alone
    /// so it also works on what the machine deemed malformed.
    pub fn is_request(&self, method: &str) -> bool {
        self.payload
            .strip_prefix(method.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b' '))
    }

    /// The status code of a response (`SIP/2.0 408 …`), judged by the status line alone.
    pub fn status(&self) -> Option<u16> {
        let rest = self.payload.strip_prefix(b"SIP/2.0 ")?;
        std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::Sent => "->",
            Direction::Received => "<-",
        };
        write!(
            f,
            "{} {} {arrow} {}: {}",
            self.node,
            self.local,
            self.remote,
            self.summary()
        )
    }
}

/// What the socket did, whatever the machine made of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Datagrams that left the socket (`sendto` succeeded).
    pub sent: u64,
    pub received: u64,
    /// `sendto` failures (no route: ENETUNREACH, …); the datagram never left.
    pub send_errors: u64,
    /// Receive errors reported by the socket (an ICMP error queued on it); nothing to feed.
    pub recv_errors: u64,
    /// The last send or receive error, for a failure message.
    pub last_error: Option<String>,
}

/// The machines this driver runs: a [`Machine`] whose counters a handle can read.
pub trait Component: Machine + Send + 'static {
    type Stats: Clone + Default + PartialEq + fmt::Debug + Send + Sync + 'static;
    fn component_stats(&self) -> &Self::Stats;
}

impl Component for Ua {
    type Stats = UaStats;
    fn component_stats(&self) -> &UaStats {
        self.stats()
    }
}

impl Component for Proxy {
    type Stats = ProxyStats;
    fn component_stats(&self) -> &ProxyStats {
        self.stats()
    }
}

/// Everything the handle can observe, published by the loop once per input.
#[derive(Debug, Clone)]
struct Observed<S> {
    events: Vec<NodeEvent>,
    datagrams: Vec<Datagram>,
    stats: S,
    wire: WireStats,
    /// Why the loop ended, once it has.
    stopped: Option<String>,
}

type Command<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// What woke the loop.
enum Input<M> {
    Datagram {
        from: SocketAddr,
        len: usize,
    },
    Timeout(Instant),
    Command(Command<M>),
    /// A receive error that says nothing about a datagram to feed.
    RecvError(io::Error),
    /// Every handle is gone.
    Closed,
}

/// One machine, its socket and where its observations go.
struct Driver<M: Component> {
    node: String,
    local: SocketAddr,
    machine: M,
    socket: UdpSocket,
    commands: mpsc::UnboundedReceiver<Command<M>>,
    events: Option<mpsc::UnboundedSender<NodeEvent>>,
    observed: watch::Sender<Observed<M::Stats>>,
    buf: Vec<u8>,
    /// `now` of the last input, stamped on the events it produced.
    now: Instant,
}

impl<M: Component> Driver<M> {
    async fn run(&mut self) -> Result<()> {
        loop {
            let batch: Vec<NodeEvent> = std::iter::from_fn(|| self.machine.poll_event())
                .map(|event| NodeEvent {
                    node: self.node.clone(),
                    at: self.now,
                    event,
                })
                .collect();
            let (sent, wire) = self.send_queued().await;
            self.publish(batch, sent, wire);
            match self.next_input().await {
                Input::Datagram { from, len } => {
                    self.now = Instant::now();
                    let payload = &self.buf[..len];
                    self.observed.send_modify(|o| {
                        o.wire.received += 1;
                        o.datagrams.push(Datagram {
                            node: self.node.clone(),
                            at: self.now,
                            direction: Direction::Received,
                            local: self.local,
                            remote: from,
                            payload: payload.to_vec(),
                        });
                    });
                    self.machine.handle_datagram(from, payload, self.now);
                }
                Input::Timeout(now) => {
                    self.now = now;
                    self.machine.handle_timeout(now);
                }
                Input::Command(command) => {
                    self.now = Instant::now();
                    command(&mut self.machine, self.now);
                }
                Input::RecvError(e) => {
                    let transient = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::HostUnreachable
                            | io::ErrorKind::NetworkUnreachable
                    );
                    self.observed.send_modify(|o| {
                        o.wire.recv_errors += 1;
                        o.wire.last_error = Some(format!("recv: {e}"));
                    });
                    if !transient {
                        return Err(Error::Io {
                            what: format!("{}: receive SIP on {}", self.node, self.local),
                            source: e,
                        });
                    }
                }
                Input::Closed => return Ok(()),
            }
        }
    }

    /// Sends every queued transmit; returns the datagrams that left and the error tally.
    async fn send_queued(&mut self) -> (Vec<Datagram>, WireStats) {
        let mut sent = Vec::new();
        let mut wire = WireStats::default();
        while let Some(t) = self.machine.poll_transmit() {
            debug_assert_eq!(t.source, self.local, "a SIP machine owns one socket");
            match self.socket.send_to(&t.payload, t.destination).await {
                Ok(_) => sent.push(Datagram {
                    node: self.node.clone(),
                    at: Instant::now(),
                    direction: Direction::Sent,
                    local: self.local,
                    remote: t.destination,
                    payload: t.payload,
                }),
                Err(e) => {
                    wire.send_errors += 1;
                    wire.last_error = Some(format!("send to {}: {e}", t.destination));
                }
            }
        }
        (sent, wire)
    }

    /// Publishes one input's worth of observations to the handle and the event channel.
    fn publish(&mut self, batch: Vec<NodeEvent>, sent: Vec<Datagram>, wire: WireStats) {
        let stats = self.machine.component_stats();
        self.observed.send_if_modified(|o| {
            let changed =
                !batch.is_empty() || !sent.is_empty() || wire.send_errors > 0 || o.stats != *stats;
            o.wire.sent += sent.len() as u64;
            o.wire.send_errors += wire.send_errors;
            if wire.last_error.is_some() {
                o.wire.last_error = wire.last_error;
            }
            o.datagrams.extend(sent);
            o.events.extend(batch.iter().cloned());
            if o.stats != *stats {
                o.stats.clone_from(stats);
            }
            changed
        });
        let Some(tx) = &self.events else { return };
        for e in batch {
            if tx.send(e).is_err() {
                // Nobody listens any more; stop cloning events for nobody.
                self.events = None;
                return;
            }
        }
    }

    /// Waits for a datagram, the machine's deadline or a command, whichever comes first.
    async fn next_input(&mut self) -> Input<M> {
        let deadline = self.machine.poll_timeout();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or_else(Instant::now),
        ));
        let Driver {
            socket,
            buf,
            commands,
            ..
        } = self;
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(c) => Input::Command(c),
                None => Input::Closed,
            },
            r = socket.recv_from(buf) => match r {
                Ok((len, from)) => Input::Datagram { from, len },
                Err(e) => Input::RecvError(e),
            },
            // Never tell the machine it is earlier than the deadline it asked for.
            _ = sleep, if deadline.is_some() => Input::Timeout(
                Instant::now().max(deadline.unwrap_or_else(Instant::now)),
            ),
        }
    }
}

/// A SIP machine running on its socket inside a node until the handle is dropped, or the
/// topology is torn down. [`UaTask`] and [`ProxyTask`] add the verbs of each machine.
#[must_use = "dropping the handle stops the machine"]
pub struct SipTask<M: Component> {
    node: String,
    local: SocketAddr,
    commands: mpsc::UnboundedSender<Command<M>>,
    observed: watch::Receiver<Observed<M::Stats>>,
    task: JoinHandle<()>,
}

/// A phone on a node: `register`, `call`, `answer`, `hang_up`, …
pub type UaTask = SipTask<Ua>;
/// A registrar/proxy on a node.
pub type ProxyTask = SipTask<Proxy>;

impl<M: Component> fmt::Debug for SipTask<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTask")
            .field("node", &self.node)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Binds `local` inside `node`; returns the socket and the address it really got.
async fn bind(node: &Node, local: SocketAddr) -> Result<(UdpSocket, SocketAddr)> {
    let socket = node.udp_bind(local).await?;
    let bound = socket.local_addr().map_err(Error::io(format!(
        "local address of {local} in {}",
        node.name()
    )))?;
    Ok((socket, bound))
}

impl<M: Component> SipTask<M> {
    /// Starts the loop for `machine` on `socket` (already bound in `node` at `local`).
    fn start(
        node: &Node,
        machine: M,
        socket: UdpSocket,
        local: SocketAddr,
    ) -> (Self, EventReceiver) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (observed_tx, observed) = watch::channel(Observed {
            events: Vec::new(),
            datagrams: Vec::new(),
            stats: machine.component_stats().clone(),
            wire: WireStats::default(),
            stopped: None,
        });
        let mut driver = Driver {
            node: node.name().to_string(),
            local,
            machine,
            socket,
            commands: commands_rx,
            events: Some(events_tx),
            observed: observed_tx,
            buf: vec![0; MAX_DATAGRAM],
            now: Instant::now(),
        };
        let task = node.spawn(async move {
            let why = match driver.run().await {
                Ok(()) => "every handle was dropped".to_string(),
                Err(e) => e.to_string(),
            };
            driver.observed.send_modify(|o| o.stopped = Some(why));
        });
        let handle = Self {
            node: node.name().to_string(),
            local,
            commands: commands_tx,
            observed,
            task,
        };
        (handle, events_rx)
    }

    fn stopped_error(&self) -> Error {
        let why = self
            .observed
            .borrow()
            .stopped
            .clone()
            .unwrap_or_else(|| "the topology was torn down".into());
        Error::Io {
            what: format!("SIP machine in {} has stopped: {why}", self.node),
            source: io::ErrorKind::BrokenPipe.into(),
        }
    }

    /// Runs `f` on the machine inside its loop, with the loop's `now`, and returns its result;
    /// what `f` queued is sent before the loop waits again.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let command: Command<M> = Box::new(move |m, now| {
            let _ = tx.send(f(m, now));
        });
        if self.commands.send(command).is_err() {
            return Err(self.stopped_error());
        }
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Waits up to `timeout` for an event satisfying `matches`, looking at every event since the
    /// start (so one that came before the call counts); the first match.
    pub async fn wait_for(
        &self,
        mut matches: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<NodeEvent> {
        let mut rx = self.observed.clone();
        // `wait_for` returns a read guard on the watch channel: it must be gone before anything
        // borrows again. A second read lock taken while the driver waits to write deadlocks
        // (parking_lot queues new readers behind a waiting writer). This hung a property run.
        let timed_out = tokio::time::timeout(
            timeout,
            rx.wait_for(|o| o.stopped.is_some() || o.events.iter().any(|e| matches(&e.event))),
        )
        .await
        .is_err();
        if let Some(e) = self.events().into_iter().find(|e| matches(&e.event)) {
            return Ok(e);
        }
        match timed_out {
            false => Err(self.stopped_error()),
            true => Err(Error::Io {
                what: format!(
                    "{}: no such SIP event within {timeout:?}; events: {:?}; datagrams: {:?}",
                    self.node,
                    self.events().iter().map(|e| &e.event).collect::<Vec<_>>(),
                    self.datagrams()
                ),
                source: io::ErrorKind::TimedOut.into(),
            }),
        }
    }

    /// Waits up to `timeout` for the machine's counters to satisfy `ready`; the last counters
    /// either way.
    pub async fn wait_for_stats(
        &self,
        mut ready: impl FnMut(&M::Stats) -> bool,
        timeout: Duration,
    ) -> Result<M::Stats, M::Stats> {
        let mut rx = self.observed.clone();
        // The guard `wait_for` returns is dropped at once (see `wait_for` above).
        let waited = matches!(
            tokio::time::timeout(
                timeout,
                rx.wait_for(|o| o.stopped.is_some() || ready(&o.stats)),
            )
            .await,
            Ok(Ok(_))
        );
        let stats = self.stats();
        match waited {
            true if ready(&stats) => Ok(stats),
            _ => Err(stats),
        }
    }

    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<NodeEvent> {
        self.observed.borrow().events.clone()
    }

    /// Every datagram sent and received so far, oldest first.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.observed.borrow().datagrams.clone()
    }

    /// The machine's counters as of its last input.
    pub fn stats(&self) -> M::Stats {
        self.observed.borrow().stats.clone()
    }

    /// The socket's counters.
    pub fn wire_stats(&self) -> WireStats {
        self.observed.borrow().wire.clone()
    }

    /// The machine's socket address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The node the machine runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the loop has stopped (a socket error, or the topology is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<M: Component> Drop for SipTask<M> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SipTask<Ua> {
    /// Binds `config.local` in `node` (port 0: the kernel's pick, which then goes into Via and
    /// Contact) and starts the phone. It does nothing until told to register or call.
    pub async fn spawn(node: &Node, mut config: UaConfig) -> Result<(Self, EventReceiver)> {
        let (socket, local) = bind(node, config.local).await?;
        config.local = local;
        Ok(Self::start(node, Ua::new(config), socket, local))
    }

    /// Starts (or refreshes) the registration.
    pub async fn register(&self) -> Result<()> {
        self.with(|ua, now| ua.register(now)).await
    }

    /// Calls `target` (`bob`, or a full `sip:` URI); the Call-ID.
    pub async fn call(&self, target: &str) -> Result<String> {
        let t = target.to_string();
        self.with(move |ua, now| ua.call(&t, now))
            .await?
            .map_err(|e| Error::Io {
                what: format!("{}: cannot call `{target}`: {e}", self.node),
                source: io::ErrorKind::InvalidInput.into(),
            })
    }

    /// Answers a ringing call (200 OK with SDP).
    pub async fn answer(&self, call_id: &str) -> Result<()> {
        let id = call_id.to_string();
        self.with(move |ua, now| ua.answer(&id, now)).await
    }

    /// BYE, CANCEL or 603, whichever the call's state asks for.
    pub async fn hang_up(&self, call_id: &str) -> Result<()> {
        let id = call_id.to_string();
        self.with(move |ua, now| ua.hang_up(&id, now)).await
    }

    /// Sends an OPTIONS to `target` through the proxy.
    pub async fn options(&self, target: &str) -> Result<()> {
        let t = target.to_string();
        self.with(move |ua, now| ua.options(&t, now)).await
    }

    /// Tells the phone its public address (from STUN), for a
    /// [`crate::sip::ContactSource::Discovered`] Contact from the next request on.
    pub async fn set_discovered_address(&self, addr: SocketAddr) -> Result<()> {
        self.with(move |ua, _| ua.set_discovered_address(addr))
            .await
    }

    pub async fn is_registered(&self) -> Result<bool> {
        self.with(|ua, _| ua.is_registered()).await
    }
}

impl SipTask<Proxy> {
    /// Binds `config.local` in `node` (its port must be fixed: phones are configured with it)
    /// and starts the registrar/proxy.
    pub async fn spawn(node: &Node, mut config: ProxyConfig) -> Result<(Self, EventReceiver)> {
        if config.local.port() == 0 {
            return Err(Error::Io {
                what: format!(
                    "SIP proxy in {}: the port must be fixed, phones are configured with it",
                    node.name()
                ),
                source: io::ErrorKind::InvalidInput.into(),
            });
        }
        let (socket, local) = bind(node, config.local).await?;
        config.local = local;
        Ok(Self::start(node, Proxy::new(config), socket, local))
    }

    /// The location-service entry of `user`, if registered and not expired.
    pub async fn binding(&self, user: &str) -> Result<Option<Binding>> {
        let u = user.to_string();
        self.with(move |p, now| p.binding(&u, now).cloned()).await
    }

    /// Switches between reproducing and fixing the private-Contact failure, mid-scenario.
    pub async fn set_nat_handling(&self, nat: NatHandling) -> Result<()> {
        self.with(move |p, _| p.set_nat_handling(nat)).await
    }
}
