//! Runs the sans-IO SIP machines ([`Ua`], [`Proxy`]) on a real UDP socket inside a topology's
//! node, through the harness's one driver ([`crate::machine::driver`]).
//!
//! [`SipTask`] is that driver's handle with the SIP verbs on it: `register`, `call`, `hang_up`,
//! … are commands, closures run on the machine with the `now` of their arrival. What the loop
//! saw is kept three ways, all stamped with the node name and an [`Instant`] so a ladder can
//! merge them with captures and with other nodes: machine events on an unbounded channel
//! ([`NodeEvent`]), the same events plus every datagram sent and received ([`Datagram`]) in the
//! handle's history (for [`SipTask::wait_for`] and for counting what really left the socket),
//! and counters ([`SipTask::stats`], [`SipTask::wire_stats`]).
//!
//! UDP, and TCP when the machine's configuration asks for it (the driver frames the stream
//! flows, see [`crate::machine::stream`]); a send error (a route that refuses) is counted, not fatal, because a SIP element
//! keeps serving other transactions when one destination is unreachable.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::machine::driver::{MachineTask, Record, Sockets, Stamped, Waited};
use crate::machine::stream::Listen;
use crate::machine::Transport;
use crate::sip::proxy::Binding;
use crate::sip::ua::UaStats;
use crate::sip::{
    message, Event, Machine, NatHandling, Proxy, ProxyConfig, ProxyStats, Ua, UaConfig,
};
use crate::topology::Node;

pub use crate::machine::driver::{Datagram, Direction, WireStats};

/// One event of a SIP machine running on a node, stamped by the driver: what a ladder shows.
pub type NodeEvent = Stamped<Event>;

/// Where a caller reads a driver's events.
pub type EventReceiver = mpsc::UnboundedReceiver<NodeEvent>;

/// What a [`Datagram`] is to SIP.
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

/// The machines this driver runs: a [`Machine`] whose counters a handle can read.
pub trait Component: Machine<Event = Event> + Send + 'static {
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

/// A SIP machine running on its socket inside a node until the handle is dropped, or the
/// topology is torn down. [`UaTask`] and [`ProxyTask`] add the verbs of each machine.
#[must_use = "dropping the handle stops the machine"]
pub struct SipTask<M: Component> {
    task: MachineTask<M, M::Stats>,
    local: SocketAddr,
}

/// A phone on a node: `register`, `call`, `answer`, `hang_up`, …
pub type UaTask = SipTask<Ua>;
/// A registrar/proxy on a node.
pub type ProxyTask = SipTask<Proxy>;

impl<M: Component> fmt::Debug for SipTask<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTask")
            .field("node", &self.task.node())
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<M: Component> SipTask<M> {
    /// Binds `local` in `node` (port 0: the kernel's pick) and starts the machine `make` builds
    /// for the address really bound. `streams`: it may open stream flows (TCP), and listens
    /// for them at the bound address over each transport listed.
    async fn start(
        node: &Node,
        local: SocketAddr,
        streams: Option<&[Transport]>,
        make: impl FnOnce(SocketAddr) -> M,
    ) -> Result<(Self, EventReceiver)> {
        let mut sockets = Sockets::bind(node, &[local]).await?;
        let local = sockets.addresses()[0];
        if let Some(listen) = streams {
            let listen = Listen {
                streams: listen
                    .iter()
                    .map(|t| (crate::sip::proxy::listen_address(local, *t), *t))
                    .collect(),
            };
            sockets = sockets.with_streams(node, &listen).await?;
        }
        let snapshot = |m: &M| m.component_stats().clone();
        let (task, events) = MachineTask::launch(
            node,
            make(local),
            sockets,
            snapshot,
            |_, _| {},
            Record::History,
        );
        Ok((Self { task, local }, events))
    }

    fn stopped_error(&self) -> Error {
        let why = self
            .task
            .stopped()
            .unwrap_or_else(|| "the topology was torn down".into());
        Error::Io {
            what: format!("SIP machine in {} has stopped: {why}", self.node()),
            source: io::ErrorKind::BrokenPipe.into(),
        }
    }

    /// Runs `f` on the machine inside its loop, with the loop's `now`, and returns its result;
    /// what `f` queued is sent before the loop waits again.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<R> {
        self.task.call(f).await.map_err(|_| self.stopped_error())
    }

    /// Waits up to `timeout` for an event satisfying `matches`, looking at every event since the
    /// start (so one that came before the call counts); the first match.
    pub async fn wait_for(
        &self,
        matches: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<NodeEvent> {
        match self.task.wait_event(matches, timeout).await {
            Waited::Ready(e) => Ok(e),
            Waited::Stopped => Err(self.stopped_error()),
            Waited::TimedOut => Err(Error::Io {
                what: format!(
                    "{}: no such SIP event within {timeout:?}; events: {:?}; datagrams: {:?}",
                    self.node(),
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
        ready: impl FnMut(&M::Stats) -> bool,
        timeout: Duration,
    ) -> Result<M::Stats, M::Stats> {
        self.task.wait_for(ready, timeout).await
    }

    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<NodeEvent> {
        self.task.events_since(0)
    }

    /// Every datagram sent and received so far, oldest first.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.task.datagrams()
    }

    /// The machine's counters as of its last input.
    pub fn stats(&self) -> M::Stats {
        self.task.state()
    }

    /// The socket's counters.
    pub fn wire_stats(&self) -> WireStats {
        self.task.wire_stats()
    }

    /// The machine's socket address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The node the machine runs on.
    pub fn node(&self) -> &str {
        self.task.node()
    }

    /// Whether the loop has stopped (a socket error, or the topology is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl SipTask<Ua> {
    /// Binds `config.local` in `node` (port 0: the kernel's pick, which then goes into Via and
    /// Contact) and starts the phone. It does nothing until told to register or call.
    pub async fn spawn(node: &Node, mut config: UaConfig) -> Result<(Self, EventReceiver)> {
        let streams = config.transport.is_reliable().then_some(&[][..]);
        Self::start(node, config.local, streams, |local| {
            config.local = local;
            Ua::new(config)
        })
        .await
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
                what: format!("{}: cannot call `{target}`: {e}", self.node()),
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
        let streams = config.streams.clone();
        let streams = (!streams.is_empty()).then_some(&streams[..]);
        Self::start(node, config.local, streams, |local| {
            config.local = local;
            Proxy::new(config)
        })
        .await
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
