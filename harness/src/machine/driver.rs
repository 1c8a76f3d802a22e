//! Runs any sans-IO [`Machine`] on real UDP sockets inside a topology's node: the one loop of
//! the harness (style habit 3), as quinn's connection driver is for quinn-proto.
//!
//! The loop, for every machine: drain the machine's events, publish what the handle may see,
//! send what it queued, then wait for the first of a command from the handle, a datagram on any
//! of its sockets or its deadline, feed that in with the `now` of its arrival, and repeat.
//! Machines differ in their state machines, not in their loops; what each family adds (the SIP
//! verbs, a STUN server's counters, a TURN allocation's readiness) is a constructor and a few
//! methods on the handle in its own module.
//!
//! What this module owns, so no family repeats it:
//! - **sockets**: one per local address the machine names in `Transmit::source`, bound inside
//!   the node ([`Sockets::bind`], port 0 resolved to the kernel's pick); read round-robin so a
//!   busy socket cannot starve the others; a receive error that only echoes an ICMP error of an
//!   earlier send is counted, not fatal; a send error is counted, because an element keeps
//!   serving others when one destination is unreachable.
//! - **timers**: the machine's `poll_timeout`, never fired early (`now` is at least the deadline).
//! - **commands**: closures run on the machine inside the loop with the loop's clock
//!   ([`MachineTask::call`]), so a handle can do whatever the machine's API offers without a
//!   command enum that lags behind it; what a command queued is sent before the loop waits again.
//! - **event fan-out**: every event, stamped with the node and the `now` of the input that made
//!   it ([`Stamped`]), goes to an unbounded channel (drop the receiver to ignore them) and, when
//!   asked for ([`Record::History`]), into the handle's history with every datagram the socket
//!   sent and received ([`Datagram`]).
//! - **the watch-channel discipline** (below).
//!
//! # Why a handle cannot deadlock on its watch channel
//!
//! The loop publishes through a `tokio::sync::watch` channel, whose value sits behind a
//! read-write lock that queues new readers behind a waiting writer. A reader that holds a read
//! guard and asks for a second one while the loop waits to write therefore waits forever: that
//! is how `SipTask::wait_for` once hung a property run (it matched events inside
//! `Receiver::wait_for`, whose guard was still alive when it read the events again).
//!
//! Here that cannot be written. The handle holds the receiver inside a private module
//! (`published::Reader`) whose field nothing else can reach, and which offers three things
//! only: copy out under the guard with a plain `fn` (which cannot capture the handle, so it
//! cannot ask for a second guard meanwhile) and drop the guard before returning; mark the value
//! seen; await `changed()`, which holds no guard. `Receiver::wait_for`, which hands a guard to
//! its caller, cannot be called. Waiting ([`MachineTask::wait_until`]) runs the caller's
//! predicate on owned copies with no guard held. So no guard ever lives across an `.await`,
//! while caller code runs, or while a second one is asked for.
//!
//! Publication order, per input: the snapshot before the input's datagrams leave (whoever sees
//! a STUN server's answer on the wire also sees it counted), the events and the datagram log
//! after they left (whoever sees an event also sees the datagrams its input sent).

use std::fmt;
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
use crate::machine::stream::{Listen, StreamInput, Streams, Written};
use crate::machine::{Machine, Transport};
use crate::topology::Node;

/// Largest UDP payload: a truncated read would turn a malformed-datagram count into a lie.
const MAX_DATAGRAM: usize = 65_535;

/// One event of a machine on a node, stamped by the driver: what a trace or ladder shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<E> {
    /// The node the machine runs on (`alice`, `server` …).
    pub node: String,
    /// The `now` of the input that produced the event.
    pub at: Instant,
    pub event: E,
}

/// Where a caller reads a driver's events (drop it to ignore them).
pub type Events<E> = mpsc::UnboundedReceiver<Stamped<E>>;

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

/// What the sockets did, whatever the machine made of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Datagrams that left a socket (`sendto` succeeded).
    pub sent: u64,
    pub received: u64,
    /// `sendto` failures (no route: ENETUNREACH, …); the datagram never left.
    pub send_errors: u64,
    /// Receive errors reported by a socket (an ICMP error queued on it); nothing to feed.
    pub recv_errors: u64,
    /// The last send or receive error, for a failure message.
    pub last_error: Option<String>,
    /// Stream flows (TCP, TLS) that ended: closed or reset by the peer, framing lost, or a
    /// connect that failed.
    pub streams_ended: u64,
}

/// What a task keeps for its handle besides the snapshot and the wire counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Nothing: a server under a flood must not keep every datagram.
    Nothing,
    /// Every event and every datagram sent and received, for waiting on events that may have
    /// come before the wait and for counting what really left the socket (the SIP machines).
    History,
}

/// A machine's sockets, bound inside its node before the machine starts.
#[derive(Debug)]
pub struct Sockets {
    list: Vec<(SocketAddr, UdpSocket)>,
    streams: Option<Streams>,
}

impl Sockets {
    /// Binds one UDP socket per address inside `node` (with [`Node::udp_bind`]); each keeps the
    /// address it really got (port 0 becomes the port the kernel picked).
    pub async fn bind(node: &Node, locals: &[SocketAddr]) -> Result<Self> {
        let mut list = Vec::with_capacity(locals.len());
        for &addr in locals {
            let sock = node.udp_bind(addr).await?;
            let bound = sock.local_addr().map_err(Error::io(format!(
                "local address of {addr} in {}",
                node.name()
            )))?;
            list.push((bound, sock));
        }
        Ok(Self {
            list,
            streams: None,
        })
    }

    /// Also listens for stream flows (TCP) inside `node`, and lets the machine open them
    /// ([`crate::machine::stream`]).
    pub async fn with_streams(mut self, node: &Node, listen: &Listen) -> Result<Self> {
        self.streams = Some(Streams::listen(node, listen).await?);
        Ok(self)
    }

    /// The bound addresses, in the order they were asked for.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.list.iter().map(|(a, _)| *a).collect()
    }
}

type Command<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// What woke the loop.
enum Input<M> {
    Datagram {
        socket: usize,
        from: SocketAddr,
        len: usize,
    },
    Timeout(Instant),
    Command(Command<M>),
    /// Something from the stream flows: a framed message, a connection opened or ended.
    Stream(StreamInput),
    /// A receive error that says nothing about a datagram to feed.
    RecvError(io::Error),
    /// Every handle is gone.
    Closed,
}

/// What one round of sending did.
#[derive(Default)]
struct Sent {
    datagrams: Vec<Datagram>,
    count: u64,
    errors: u64,
    last_error: Option<String>,
}

/// One machine, its sockets and where its events go: the loop's state.
struct Driver<M: Machine> {
    node: String,
    machine: M,
    sockets: Vec<(SocketAddr, UdpSocket)>,
    streams: Option<Streams>,
    events: Option<mpsc::UnboundedSender<Stamped<M::Event>>>,
    record: Record,
    buf: Vec<u8>,
    /// Socket polled first next time, so a busy socket cannot starve the others.
    first: usize,
    /// `now` of the last input, stamped on the events it produced.
    now: Instant,
}

impl<M: Machine> Driver<M>
where
    M::Event: Clone,
{
    fn new(node: &Node, machine: M, sockets: Sockets, record: Record) -> Self {
        assert!(
            !sockets.list.is_empty(),
            "a machine needs at least one socket"
        );
        Self {
            node: node.name().to_string(),
            machine,
            sockets: sockets.list,
            streams: sockets.streams,
            events: None,
            record,
            buf: vec![0; MAX_DATAGRAM],
            first: 0,
            now: Instant::now(),
        }
    }

    fn drain_events(&mut self) -> Vec<Stamped<M::Event>> {
        std::iter::from_fn(|| self.machine.poll_event())
            .map(|event| Stamped {
                node: self.node.clone(),
                at: self.now,
                event,
            })
            .collect()
    }

    /// Sends every queued transmit from the socket it names, or down the stream flow the
    /// machine says it takes; first what waited for a connection that is now open.
    async fn send_queued(&mut self) -> Result<Sent> {
        let mut sent = Sent::default();
        if let Some(streams) = self.streams.as_mut() {
            for (remote, payload, written) in streams.flush().await {
                self.count_write(&mut sent, remote, payload, written);
            }
        }
        while let Some(t) = self.machine.poll_transmit() {
            let transport = self.machine.transport_of(&t);
            if transport != Transport::Udp {
                let Some(streams) = self.streams.as_mut() else {
                    sent.errors += 1;
                    sent.last_error = Some(format!(
                        "{} to {}: this machine has no stream flows",
                        transport.via_name(),
                        t.destination
                    ));
                    continue;
                };
                let written = streams
                    .send(t.source, t.destination, transport, &t.payload)
                    .await;
                self.count_write(&mut sent, t.destination, t.payload, written);
                continue;
            }
            let Some((local, sock)) = self.sockets.iter().find(|(a, _)| *a == t.source) else {
                return Err(Error::Io {
                    what: format!(
                        "{}: the machine sends from {}, where no socket is bound",
                        self.node, t.source
                    ),
                    source: io::ErrorKind::AddrNotAvailable.into(),
                });
            };
            let written = match sock.send_to(&t.payload, t.destination).await {
                Ok(_) => Written::Sent { local: *local },
                Err(e) => Written::Failed(format!("send to {}: {e}", t.destination)),
            };
            self.count_write(&mut sent, t.destination, t.payload, written);
        }
        Ok(sent)
    }

    /// Counts what one send did, and keeps the message in the history if asked to.
    fn count_write(&self, sent: &mut Sent, remote: SocketAddr, payload: Vec<u8>, written: Written) {
        match written {
            Written::Sent { local } => {
                sent.count += 1;
                if self.record == Record::History {
                    sent.datagrams.push(Datagram {
                        node: self.node.clone(),
                        at: Instant::now(),
                        direction: Direction::Sent,
                        local,
                        remote,
                        payload,
                    });
                }
            }
            Written::Queued => {}
            Written::Failed(why) => {
                sent.errors += 1;
                sent.last_error = Some(why);
            }
        }
    }

    /// Hands events to the channel; stops cloning for nobody once its receiver is gone.
    fn forward(&mut self, batch: Vec<Stamped<M::Event>>) {
        let Some(tx) = &self.events else { return };
        for e in batch {
            if tx.send(e).is_err() {
                self.events = None;
                return;
            }
        }
    }

    /// Waits for a command, a datagram on any socket or the machine's deadline, whichever comes
    /// first (commands first: what the test asked for happens before what the network brings).
    async fn next_input(
        &mut self,
        commands: Option<&mut mpsc::UnboundedReceiver<Command<M>>>,
    ) -> Input<M> {
        let deadline = self.machine.poll_timeout();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or_else(Instant::now),
        ));
        let has_commands = commands.is_some();
        let command = async {
            match commands {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let Driver {
            sockets,
            streams,
            buf,
            first,
            ..
        } = self;
        let has_streams = streams.is_some();
        let stream = async {
            match streams {
                Some(s) => s.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let recv = poll_fn(|cx| poll_recv_any(sockets, buf, *first, cx));
        tokio::select! {
            biased;
            c = command, if has_commands => match c {
                Some(c) => Input::Command(c),
                None => Input::Closed,
            },
            r = recv => match r {
                Ok((socket, from, len)) => Input::Datagram { socket, from, len },
                Err(e) => Input::RecvError(e),
            },
            Some(s) = stream, if has_streams => Input::Stream(s),
            // Never tell the machine it is earlier than the deadline it asked for.
            () = sleep, if deadline.is_some() => Input::Timeout(
                Instant::now().max(deadline.unwrap_or_else(Instant::now)),
            ),
        }
    }

    /// Feeds one input to the machine; what the handle should record of it, or the error that
    /// ends the loop. `Ok(None)` with `Input::Closed`: every handle is gone.
    fn feed(&mut self, input: Input<M>) -> Result<Option<Fed>> {
        match input {
            Input::Datagram { socket, from, len } => {
                self.first = (socket + 1) % self.sockets.len();
                self.now = Instant::now();
                let local = self.sockets[socket].0;
                let payload = &self.buf[..len];
                let datagram = (self.record == Record::History).then(|| Datagram {
                    node: self.node.clone(),
                    at: self.now,
                    direction: Direction::Received,
                    local,
                    remote: from,
                    payload: payload.to_vec(),
                });
                self.machine.handle_datagram(local, from, payload, self.now);
                Ok(Some(Fed::Received(datagram)))
            }
            Input::Timeout(now) => {
                self.now = now;
                self.machine.handle_timeout(now);
                Ok(Some(Fed::Nothing))
            }
            Input::Command(command) => {
                self.now = Instant::now();
                command(&mut self.machine, self.now);
                Ok(Some(Fed::Nothing))
            }
            Input::RecvError(e) => {
                // An ICMP error of an earlier send, queued on the socket: nothing to feed.
                let transient = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                );
                if !transient {
                    return Err(Error::Io {
                        what: format!("{}: receive", self.node),
                        source: e,
                    });
                }
                Ok(Some(Fed::RecvError(format!("recv: {e}"))))
            }
            Input::Stream(input) => {
                let mut input = Some(input);
                if let Some(streams) = self.streams.as_mut() {
                    streams.on_input(&mut input);
                }
                Ok(Some(match input {
                    Some(StreamInput::Frame {
                        local,
                        remote,
                        transport,
                        frame: Ok(frame),
                    }) => {
                        self.now = Instant::now();
                        let payload = frame.into_bytes();
                        self.machine
                            .handle_stream_message(local, remote, transport, &payload, self.now);
                        Fed::Received((self.record == Record::History).then(|| Datagram {
                            node: self.node.clone(),
                            at: self.now,
                            direction: Direction::Received,
                            local,
                            remote,
                            payload,
                        }))
                    }
                    Some(StreamInput::Frame {
                        remote,
                        frame: Err(e),
                        ..
                    }) => Fed::StreamEnded(format!("stream from {remote}: {e}")),
                    Some(
                        StreamInput::Closed { why, .. } | StreamInput::ConnectFailed { why, .. },
                    ) => Fed::StreamEnded(why),
                    Some(StreamInput::Opened { .. }) | None => Fed::Nothing,
                }))
            }
            Input::Closed => Ok(None),
        }
    }
}

/// What the handle records of one input.
enum Fed {
    Received(Option<Datagram>),
    RecvError(String),
    /// A stream flow ended (or lost its framing), and why.
    StreamEnded(String),
    Nothing,
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

/// Runs `machine` on `sockets` in the caller's task until `check`, shown the machine and each
/// input's events, returns a result: a one-shot exchange (a STUN Binding, RFC 5780 discovery).
/// A send error ends it too: the caller asked for this exchange and nothing else.
pub async fn run_until<M, R>(
    node: &Node,
    machine: M,
    sockets: Sockets,
    events: Option<mpsc::UnboundedSender<Stamped<M::Event>>>,
    mut check: impl FnMut(&M, &[M::Event]) -> Option<Result<R>>,
) -> Result<R>
where
    M: Machine,
    M::Event: Clone,
{
    let mut driver = Driver::new(node, machine, sockets, Record::Nothing);
    driver.events = events;
    loop {
        let batch = driver.drain_events();
        let plain: Vec<M::Event> = batch.iter().map(|e| e.event.clone()).collect();
        let verdict = check(&driver.machine, &plain);
        driver.forward(batch);
        let sent = driver.send_queued().await?;
        if let Some(why) = sent.last_error {
            return Err(Error::Io {
                what: format!("{}: {why}", driver.node),
                source: io::ErrorKind::NetworkUnreachable.into(),
            });
        }
        if let Some(result) = verdict {
            return result;
        }
        let input = driver.next_input(None).await;
        driver.feed(input)?;
    }
}

/// Everything a handle can observe, published by the loop once per input.
struct Observed<S, E> {
    snapshot: S,
    events: Vec<Stamped<E>>,
    datagrams: Vec<Datagram>,
    wire: WireStats,
    /// Why the loop ended, once it has.
    stopped: Option<String>,
}

/// The handle's side of the watch channel, in a module of its own so nothing else in the driver
/// can reach the receiver and take a read guard (see the module docs).
mod published {
    use tokio::sync::watch;

    /// A watch receiver whose read guard never leaves this module.
    pub(super) struct Reader<T>(watch::Receiver<T>);

    impl<T> Clone for Reader<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T> Reader<T> {
        pub(super) fn new(rx: watch::Receiver<T>) -> Self {
            Self(rx)
        }

        /// Runs `f` under the read guard and drops the guard before returning. `f` is a plain
        /// `fn`: it cannot capture a handle, so it cannot ask for a second guard meanwhile.
        pub(super) fn copy<A, R>(&self, arg: A, f: fn(&T, A) -> R) -> R {
            f(&self.0.borrow(), arg)
        }

        /// Marks the current value seen, so [`Reader::changed`] waits for the next one.
        pub(super) fn mark_seen(&mut self) {
            drop(self.0.borrow_and_update());
        }

        /// Waits for a value not yet seen; an error once the loop is gone. Holds no guard.
        pub(super) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
            self.0.changed().await
        }
    }
}

/// How a wait ended.
#[derive(Debug)]
pub enum Waited<R> {
    Ready(R),
    /// The loop has stopped (an error, or the topology is gone).
    Stopped,
    TimedOut,
}

/// A machine running on its sockets in a node until the handle is dropped, [`stop`]ped, or the
/// topology is torn down (see the module docs). `S` is the snapshot the handle shows, taken
/// from the machine after every input.
///
/// [`stop`]: MachineTask::stop
#[must_use = "dropping the handle stops the machine"]
pub struct MachineTask<M: Machine, S> {
    node: String,
    locals: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Command<M>>,
    observed: published::Reader<Observed<S, M::Event>>,
    task: JoinHandle<Result<()>>,
}

impl<M: Machine, S> fmt::Debug for MachineTask<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineTask")
            .field("node", &self.node)
            .field("locals", &self.locals)
            .finish_non_exhaustive()
    }
}

impl<M, S> MachineTask<M, S>
where
    M: Machine + Send + 'static,
    M::Event: Clone + Send + Sync + 'static,
    S: Clone + PartialEq + Send + Sync + 'static,
{
    /// Binds `locals` in `node` (fixed ports: the machine already names them) and runs
    /// `machine` there; `snapshot` is what [`MachineTask::state`] shows, refreshed after every
    /// input. `start` runs first, with the driver's clock (e.g. `|m, now| m.allocate(now)`).
    pub async fn spawn(
        node: &Node,
        machine: M,
        locals: &[SocketAddr],
        snapshot: impl Fn(&M) -> S + Send + 'static,
        start: impl FnOnce(&mut M, Instant) + Send + 'static,
    ) -> Result<(Self, Events<M::Event>)> {
        let sockets = Sockets::bind(node, locals).await?;
        Ok(Self::launch(
            node,
            machine,
            sockets,
            snapshot,
            start,
            Record::Nothing,
        ))
    }

    /// Runs `machine` on sockets already bound in `node` (so the machine could be built with
    /// the ports the kernel picked); `record` says whether the handle keeps a history.
    pub fn launch(
        node: &Node,
        machine: M,
        sockets: Sockets,
        snapshot: impl Fn(&M) -> S + Send + 'static,
        start: impl FnOnce(&mut M, Instant) + Send + 'static,
        record: Record,
    ) -> (Self, Events<M::Event>) {
        let locals = sockets.addresses();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command<M>>();
        let (observed_tx, observed) = watch::channel(Observed {
            snapshot: snapshot(&machine),
            events: Vec::new(),
            datagrams: Vec::new(),
            wire: WireStats::default(),
            stopped: None,
        });
        let mut driver = Driver::new(node, machine, sockets, record);
        driver.events = Some(events_tx);
        let task = node.spawn(async move {
            driver.now = Instant::now();
            start(&mut driver.machine, driver.now);
            let end = serve(&mut driver, &mut commands_rx, &observed_tx, snapshot).await;
            let why = match &end {
                Ok(()) => "every handle was dropped".to_string(),
                Err(e) => e.to_string(),
            };
            observed_tx.send_modify(|o| o.stopped = Some(why));
            end
        });
        let handle = Self {
            node: node.name().to_string(),
            locals,
            commands,
            observed: published::Reader::new(observed),
            task,
        };
        (handle, events)
    }
}

/// The loop of a spawned task: publish, send, wait, feed (see the module docs for the order).
async fn serve<M: Machine, S: PartialEq>(
    driver: &mut Driver<M>,
    commands: &mut mpsc::UnboundedReceiver<Command<M>>,
    observed: &watch::Sender<Observed<S, M::Event>>,
    snapshot: impl Fn(&M) -> S,
) -> Result<()>
where
    M::Event: Clone,
{
    loop {
        let batch = driver.drain_events();
        let now = snapshot(&driver.machine);
        observed.send_if_modified(|o| {
            let changed = o.snapshot != now;
            if changed {
                o.snapshot = now;
            }
            changed
        });
        let sent = driver.send_queued().await?;
        let history = driver.record == Record::History;
        observed.send_if_modified(|o| {
            let changed = sent.count > 0 || sent.errors > 0 || (history && !batch.is_empty());
            o.wire.sent += sent.count;
            o.wire.send_errors += sent.errors;
            if sent.last_error.is_some() {
                o.wire.last_error = sent.last_error;
            }
            o.datagrams.extend(sent.datagrams);
            if history {
                o.events.extend(batch.iter().cloned());
            }
            changed
        });
        driver.forward(batch);
        let input = driver.next_input(Some(commands)).await;
        match driver.feed(input)? {
            None => return Ok(()),
            Some(Fed::Nothing) => {}
            Some(Fed::Received(datagram)) => observed.send_modify(|o| {
                o.wire.received += 1;
                o.datagrams.extend(datagram);
            }),
            Some(Fed::RecvError(why)) => observed.send_modify(|o| {
                o.wire.recv_errors += 1;
                o.wire.last_error = Some(why);
            }),
            Some(Fed::StreamEnded(why)) => observed.send_modify(|o| {
                o.wire.streams_ended += 1;
                o.wire.last_error = Some(why);
            }),
        }
    }
}

impl<M: Machine, S: Clone> MachineTask<M, S>
where
    M::Event: Clone,
{
    /// Copies out of the published value (see [`published::Reader::copy`]).
    fn read<A, R>(&self, arg: A, f: fn(&Observed<S, M::Event>, A) -> R) -> R {
        self.observed.copy(arg, f)
    }

    /// Waits up to `timeout` until `check`, run with no guard held (it reads through the
    /// handle's accessors, which copy), says it has what it waits for.
    pub async fn wait_until<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<R>,
    ) -> Waited<R> {
        let mut rx = self.observed.clone();
        let until = tokio::time::Instant::now() + timeout;
        loop {
            rx.mark_seen();
            if let Some(r) = check(self) {
                return Waited::Ready(r);
            }
            if self.stopped().is_some() {
                return Waited::Stopped;
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return check(self).map_or(Waited::Stopped, Waited::Ready);
                }
                Err(_) => return check(self).map_or(Waited::TimedOut, Waited::Ready),
            }
        }
    }

    /// Runs `f` on the machine inside the driver, with the driver's clock, and returns its
    /// result; what `f` queued is sent before the loop waits again.
    pub async fn call<R: Send + 'static>(
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

    /// The error a handle reports once the loop has stopped.
    pub fn stopped_error(&self) -> Error {
        let why = self
            .stopped()
            .unwrap_or_else(|| "the topology was torn down".into());
        Error::Io {
            what: format!("machine in {} has stopped: {why}", self.node),
            source: io::ErrorKind::BrokenPipe.into(),
        }
    }

    /// The snapshot as of the last input.
    pub fn state(&self) -> S {
        self.read((), |o, ()| o.snapshot.clone())
    }

    /// Waits up to `timeout` for the snapshot to satisfy `ready`; the last snapshot either way.
    pub async fn wait_for(
        &self,
        mut ready: impl FnMut(&S) -> bool,
        timeout: Duration,
    ) -> Result<S, S> {
        let waited = self
            .wait_until(timeout, |t| {
                let s = t.state();
                ready(&s).then_some(s)
            })
            .await;
        match waited {
            Waited::Ready(s) => Ok(s),
            Waited::Stopped | Waited::TimedOut => Err(self.state()),
        }
    }

    /// Every event from the `from`-th on, oldest first (with [`Record::History`]; none without).
    pub fn events_since(&self, from: usize) -> Vec<Stamped<M::Event>> {
        self.read(from, |o, from| o.events.get(from..).unwrap_or(&[]).to_vec())
    }

    /// Waits up to `timeout` for an event satisfying `matches`, looking at every event since
    /// the start (so one that came before the call counts); the first match.
    pub async fn wait_event(
        &self,
        mut matches: impl FnMut(&M::Event) -> bool,
        timeout: Duration,
    ) -> Waited<Stamped<M::Event>> {
        let mut seen = 0;
        self.wait_until(timeout, |t| {
            let new = t.events_since(seen);
            seen += new.len();
            new.into_iter().find(|e| matches(&e.event))
        })
        .await
    }

    /// Every datagram sent and received so far, oldest first (with [`Record::History`]).
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.read((), |o, ()| o.datagrams.clone())
    }

    /// The sockets' counters.
    pub fn wire_stats(&self) -> WireStats {
        self.read((), |o, ()| o.wire.clone())
    }

    /// Why the loop ended, once it has ended by itself.
    pub fn stopped(&self) -> Option<String> {
        self.read((), |o, ()| o.stopped.clone())
    }

    /// The sockets the machine runs on.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// The node the machine runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the loop has stopped (an I/O error, or the topology is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
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
