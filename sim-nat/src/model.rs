//! A sans-IO reference model of one NAT router: what Linux conntrack plus the ruleset of
//! [`render`](crate::render) do to UDP, with no sockets and no clock (time comes in as `now`).
//!
//! The model reproduces the *kernel*, not an idealised RFC 4787 NAT (measured in
//! `shared/kernel-facts.md`):
//! - state is conntrack entries keyed by full 5-tuples, each with an original and a reply tuple;
//!   a packet matching either is translated by the entry and refreshes it, in both directions
//!   (Linux) — with [`Refresh::OutboundOnly`] the `pre_raw` guard drops inbound packets before
//!   conntrack unless the `out`/`bound`/`peers` sets (refreshed by outbound packets only) hold
//!   them, and a dropped packet refreshes nothing;
//! - a new outbound flow is source-NATed as `nf_nat` does it: `preserve` first reuses the mapping
//!   of an existing flow from the same internal endpoint (`find_appropriate_src`), then the
//!   internal port, then a random free port of the kernel's default range; `random`
//!   (`fully-random`) picks a free port of `port_range` per flow; `hash` always takes its hashed
//!   port and, when that tuple is taken, the kernel drops the packet at conntrack confirmation;
//! - looser filtering is the `fc` map (external port → internal endpoint, first value kept, as
//!   nft's `update` does) and for address-dependent filtering the `peers` set, learnt from every
//!   packet that leaves on the WAN, with the binding timeout;
//! - an inbound packet nothing admits is delivered to the router itself, and conntrack keeps it
//!   as an unreplied flow for the UDP timeout: that tuple is then taken, so a later outbound flow
//!   that would map onto it is moved to another port ("who sends first" in kernel-facts) — unless
//!   the router has an input firewall ([`InputPolicy::Drop`] / [`InputPolicy::Reject`]), which
//!   discards the packet before conntrack confirms its entry, so nothing is kept;
//! - with [`SipAlg::Kernel`], a flow whose first packet goes to port 5060 lives
//!   [`SIP_HELPER_TIMEOUT`] (the helper's `sip_timeout`), though the sets keep the UDP timeout;
//! - hairpinning (REQ-9) DNATs through `fc` and source-NATs with the sender's mapping;
//! - a static port forward ([`PortForward`], [`NatModel::with_forwards`]) sends a new inbound
//!   flow to its ports to its host before any filter or guard is asked, and what that host sends
//!   from a forwarded port is source-NATed as a plain port-preserving `snat` does it (the
//!   existing mapping of that endpoint, else the same port, else the kernel's default range);
//! - an address pool picks the address from the source alone when paired (`persistent`), from
//!   both addresses when not; a subscriber's port block is its whole range, so once it is full
//!   towards a remote the next flow there is dropped, and non-subscribers are not mapped at all.
//!
//! Time is [`Instant`], like every other sans-IO machine of the project: a driver passes the same
//! clock it reads for its sockets and the model's events line up with a kernel test's. Tests pick
//! an arbitrary origin and add [`Duration`]s; nothing here reads the clock. Time never runs
//! backwards: an earlier `now` than one already seen is taken as that one.
//!
//! Drive it with [`NatModel::outbound`] / [`NatModel::inbound`] per packet, [`NatModel::handle_timeout`]
//! at [`NatModel::poll_timeout`], and drain [`NatModel::poll_event`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::{
    Error, Filtering, InputPolicy, Mapping, NatBehaviour, PortAllocation, PortForward, Refresh,
    SipAlg,
};

/// How long the kernel's `sip` helper holds a SIP flow: its `sip_timeout`, fixed because the
/// helper is built into this kernel.
pub const SIP_HELPER_TIMEOUT: Duration = Duration::from_secs(3600);

/// The port the ruleset assigns the `sip` helper to (`udp dport 5060 ct helper set "sip5060"`).
const SIP_PORT: u16 = 5060;

/// How many expired bindings the model remembers to explain why a late packet was dropped.
const REMEMBERED_EXPIRIES: usize = 64;

/// nf_nat gives up on finding a free port after this many tries per round (NF_NAT_MAX_ATTEMPTS).
const MAX_ATTEMPTS: u32 = 128;

/// One translated flow: an internal endpoint, the external address it appears as, and the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    /// The endpoint inside (for a hairpinned flow, the sender).
    pub internal: SocketAddrV4,
    /// What the peer sees: the router's public address and the mapped port.
    pub external: SocketAddrV4,
    /// The other end (for a hairpinned flow, the internal receiver).
    pub remote: SocketAddrV4,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} (with {})",
            self.internal, self.external, self.remote
        )
    }
}

/// Which side of the router a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The LAN.
    Inside,
    /// The WAN.
    Outside,
}

/// What the router does with one packet.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The packet leaves the router as `src → dst` (for an outbound packet `src` is the mapping;
    /// for an inbound one `dst` is the internal endpoint).
    Forward {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    /// The packet never reaches the other side.
    Drop { reason: DropReason },
}

impl Verdict {
    /// The translated packet, if it was forwarded.
    pub fn forwarded(&self) -> Option<(SocketAddrV4, SocketAddrV4)> {
        match self {
            Verdict::Forward { src, dst } => Some((*src, *dst)),
            Verdict::Drop { .. } => None,
        }
    }

    /// Why the packet was dropped, if it was.
    pub fn drop_reason(&self) -> Option<&DropReason> {
        match self {
            Verdict::Forward { .. } => None,
            Verdict::Drop { reason } => Some(reason),
        }
    }
}

/// Why the router dropped a packet, in words a field engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Nothing is bound to this external port: the router takes the packet for itself, has no
    /// such service, and conntrack keeps it as an unreplied flow for the UDP timeout.
    NoBinding { to: SocketAddrV4 },
    /// Nothing is bound to this external port, and the router's input firewall (`drop` or
    /// `reject`) discarded the packet before conntrack kept it: no port is taken.
    InputFirewall {
        to: SocketAddrV4,
        policy: InputPolicy,
    },
    /// A binding held this port but expired `ago` before this packet.
    BindingExpired { binding: Binding, ago: Duration },
    /// A binding holds this port, but its internal endpoint never sent to this address.
    FilteredByAddress {
        binding: Binding,
        from: SocketAddrV4,
    },
    /// The internal endpoint sent to this address, but not to this port (port-dependent filter).
    FilteredByPort {
        binding: Binding,
        from: SocketAddrV4,
    },
    /// The binding exists, but new or inbound packets get in only while the inside keeps sending
    /// (outbound-only refresh, or the learnt `fc`/`peers` entries of a looser filter) and the last
    /// packet out on it was `last_outbound_ago` ago (`None`: the inside never sent on it).
    OutboundIdle {
        binding: Binding,
        last_outbound_ago: Option<Duration>,
        timeout: Duration,
    },
    /// Conntrack already holds the flow `tuple` (src → dst) the translation would create; the new
    /// entry clashes and conntrack drops the packet at confirmation (`insert_failed`).
    TupleTaken { tuple: (SocketAddrV4, SocketAddrV4) },
    /// A carrier NAT with port blocks maps only its subscribers (the `drop` after their rules).
    NotASubscriber { src: SocketAddrV4 },
    /// No port of `range` is free towards `remote` (nf_nat gave up: a full port block, or a
    /// `fully-random` range with no free port).
    PortsExhausted {
        remote: SocketAddrV4,
        range: (u16, u16),
    },
    /// A packet from the inside to the router's public address, and hairpinning is off (or
    /// nothing is bound to that port).
    NoHairpin { to: SocketAddrV4 },
    /// The packet does not cross this router the way it was handed in.
    NotThroughRouter { why: &'static str },
    /// The datagram came in IP fragments and the router drops fragments
    /// ([`crate::NatBehaviour::drop_fragments`]) before conntrack sees them: no binding is made
    /// or refreshed, and the whole datagram is lost.
    Fragmented,
}

/// `1.2 s`, or `350 ms` below a second.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NoBinding { to } => write!(
                f,
                "nothing is bound to {to}: the router kept the packet for itself as an unreplied \
                 flow, which now holds that port towards its sender"
            ),
            DropReason::InputFirewall { to, policy } => write!(
                f,
                "nothing is bound to {to}: the router's input firewall {} the packet, and \
                 conntrack keeps nothing of it",
                match policy {
                    InputPolicy::Reject => "rejected (ICMP port unreachable)",
                    _ => "dropped",
                }
            ),
            DropReason::BindingExpired { binding, ago } => write!(
                f,
                "binding {binding} expired {} before this packet",
                human(*ago)
            ),
            DropReason::FilteredByAddress { binding, from } => write!(
                f,
                "filtered by address: {} never sent to {} from {}",
                binding.internal,
                from.ip(),
                binding.external
            ),
            DropReason::FilteredByPort { binding, from } => write!(
                f,
                "filtered by port: {} sent to {} but never to {from}",
                binding.internal,
                from.ip()
            ),
            DropReason::OutboundIdle {
                binding,
                last_outbound_ago,
                timeout,
            } => match last_outbound_ago {
                Some(ago) => write!(
                    f,
                    "binding {binding} admits this packet only while the inside keeps sending; \
                     its last packet out was {} ago (timeout {})",
                    human(*ago),
                    human(*timeout)
                ),
                None => write!(
                    f,
                    "binding {binding} admits this packet only while the inside keeps sending, \
                     and the inside never sent on it"
                ),
            },
            DropReason::TupleTaken { tuple: (a, b) } => write!(
                f,
                "conntrack already holds the flow {a} → {b}: the new flow clashes and is dropped \
                 at confirmation"
            ),
            DropReason::NotASubscriber { src } => write!(
                f,
                "{} has no port block on this carrier NAT, which maps only its subscribers",
                src.ip()
            ),
            DropReason::PortsExhausted { remote, range } => write!(
                f,
                "no free port in {}-{} towards {remote}",
                range.0, range.1
            ),
            DropReason::NoHairpin { to } => write!(
                f,
                "{to} is the router's own address and it does not hairpin this packet"
            ),
            DropReason::NotThroughRouter { why } => write!(f, "not through this router: {why}"),
            DropReason::Fragmented => f.write_str(
                "it came in IP fragments, and the router drops fragments (drop-fragments) before \
                 conntrack reassembles them: the whole datagram is lost",
            ),
        }
    }
}

/// A binding as it stands at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingView {
    pub binding: Binding,
    pub opened_by: Side,
    /// Conntrack has seen a packet in the reply direction.
    pub replied: bool,
    /// Since the flow's first packet.
    pub age: Duration,
    /// Since the flow's last packet.
    pub idle: Duration,
    /// Until conntrack forgets the flow (and the mapping with it) unless a packet refreshes it.
    pub time_left: Duration,
    /// With [`Refresh::OutboundOnly`]: how much longer packets from `remote` pass the inbound
    /// guard (zero once it has lapsed). `None` when both directions refresh.
    pub inbound_guard_left: Option<Duration>,
}

/// An inbound packet the router took for itself, held by conntrack as an unreplied flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsolicitedView {
    pub from: SocketAddrV4,
    /// The router's public address and the port that is now taken towards `from`.
    pub to: SocketAddrV4,
    pub time_left: Duration,
}

/// Something that happened to a binding, with the instant it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingEvent {
    Created {
        binding: Binding,
        opened_by: Side,
        at: Instant,
        /// Port preservation wanted this port, but its tuple was taken.
        displaced_from: Option<u16>,
    },
    Refreshed {
        binding: Binding,
        by: Side,
        at: Instant,
        until: Instant,
    },
    /// The binding timed out at `at`, `timeout` after its last packet.
    Expired {
        binding: Binding,
        at: Instant,
        last_packet: Instant,
    },
    /// [`NatModel::expire`] or [`NatModel::flush`] removed it.
    Removed { binding: Binding, at: Instant },
    /// An inbound packet nothing admitted; conntrack holds it until `until`.
    UnsolicitedHeld {
        from: SocketAddrV4,
        to: SocketAddrV4,
        at: Instant,
        until: Instant,
    },
    /// The unreplied flow of an unsolicited packet is gone; its port is free again.
    UnsolicitedReleased {
        from: SocketAddrV4,
        to: SocketAddrV4,
        at: Instant,
    },
}

/// How a conntrack entry came to be, which decides what it translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Opened from the inside towards the WAN: source NAT.
    Outbound,
    /// Opened from the WAN and DNATed through `fc`.
    Inbound,
    /// Opened from the inside towards the public address, DNATed through `fc` and source-NATed.
    Hairpin,
    /// Opened from the WAN towards the router itself: translates nothing, only takes a tuple.
    Local,
}

type Tuple = (SocketAddrV4, SocketAddrV4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Original,
    Reply,
}

/// One conntrack entry.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    original: Tuple,
    reply: Tuple,
    created: Instant,
    last_packet: Instant,
    /// Last packet of this flow that left on the WAN (the packets that refresh the sets).
    last_outbound: Option<Instant>,
    timeout: Duration,
    expires: Instant,
    replied: bool,
}

impl Entry {
    fn binding(&self) -> Option<Binding> {
        match self.kind {
            Kind::Outbound | Kind::Hairpin => Some(Binding {
                internal: self.original.0,
                external: self.reply.1,
                remote: self.reply.0,
            }),
            Kind::Inbound => Some(Binding {
                internal: self.reply.0,
                external: self.original.1,
                remote: self.original.0,
            }),
            Kind::Local => None,
        }
    }

    fn opened_by(&self) -> Side {
        match self.kind {
            Kind::Outbound | Kind::Hairpin => Side::Inside,
            Kind::Inbound | Kind::Local => Side::Outside,
        }
    }

    fn matches(&self, t: Tuple) -> Option<Dir> {
        if self.original == t {
            Some(Dir::Original)
        } else if self.reply == t {
            Some(Dir::Reply)
        } else {
            None
        }
    }

    /// The packet as it leaves the router after this entry translated it.
    fn translate(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => (self.reply.1, self.reply.0),
            Dir::Reply => (self.original.1, self.original.0),
        }
    }

    /// Whether a packet in `dir` leaves on the WAN (and so feeds the `post_learn` chain).
    fn leaves_on_wan(&self, dir: Dir) -> bool {
        matches!(
            (self.kind, dir),
            (Kind::Outbound, Dir::Original) | (Kind::Inbound, Dir::Reply)
        )
    }
}

/// A binding that is gone, kept to explain later drops.
#[derive(Debug, Clone, Copy)]
struct Gone {
    binding: Binding,
    at: Instant,
}

/// The reference model of one NAT router (see the module docs for what it reproduces).
#[derive(Debug, Clone)]
pub struct NatModel {
    behaviour: NatBehaviour,
    /// The first public address; the pool counts `pool_size` upwards from it.
    public: Ipv4Addr,
    /// Inside addresses in port-block order (`RouterPorts::subscribers`).
    subscribers: Vec<Ipv4Addr>,
    /// Static port forwards on the first public address (`RouterPorts::forwards`).
    forwards: Vec<PortForward>,
    net: u32,
    mask: u32,
    timeout: Duration,
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    /// `map fc`: external port → (internal endpoint, expiry).
    fc: BTreeMap<u16, (SocketAddrV4, Instant)>,
    /// `set peers` (address-dependent filtering only): (external port, remote address) → expiry.
    peers: BTreeMap<(u16, Ipv4Addr), Instant>,
    /// `set out` (outbound-only refresh only): (external port, remote) → expiry.
    out: BTreeMap<(u16, SocketAddrV4), Instant>,
    /// `set bound` (outbound-only refresh only): external port → expiry.
    bound: BTreeMap<u16, Instant>,
    gone: VecDeque<Gone>,
    events: VecDeque<BindingEvent>,
    rng: u64,
    /// The next `numgen inc` value of sequential allocation.
    sequence: u32,
    now: Option<Instant>,
}

impl NatModel {
    /// A router with public address `public` in front of `internal_net` (address, prefix length),
    /// behaving as `behaviour`. Refuses what [`NatBehaviour::validate`] refuses, as `render` does.
    pub fn new(
        behaviour: NatBehaviour,
        public: Ipv4Addr,
        internal_net: (Ipv4Addr, u8),
    ) -> Result<Self, Error> {
        behaviour.validate()?;
        let (addr, prefix) = internal_net;
        if prefix > 32 {
            return Err(Error::Invalid(format!(
                "internal network {addr}/{prefix}: a prefix is at most 32 bits"
            )));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Self {
            timeout: Duration::from_secs(behaviour.udp_timeout_secs.into()),
            behaviour,
            public,
            subscribers: Vec::new(),
            forwards: Vec::new(),
            net: u32::from(addr) & mask,
            mask,
            entries: BTreeMap::new(),
            next_id: 0,
            fc: BTreeMap::new(),
            peers: BTreeMap::new(),
            out: BTreeMap::new(),
            bound: BTreeMap::new(),
            gone: VecDeque::new(),
            events: VecDeque::new(),
            rng: 0x5e1d_5e1d_5e1d_5e1d,
            sequence: 0,
            now: None,
        })
    }

    /// The inside addresses that get a port block each, in block order, as
    /// `RouterPorts::subscribers` lists them (needed only with [`NatBehaviour::port_block`]).
    pub fn with_subscribers(mut self, subscribers: Vec<Ipv4Addr>) -> Self {
        self.subscribers = subscribers;
        self
    }

    /// The router's static port forwards, as `RouterPorts::forwards` lists them; refuses
    /// overlapping ones as `render` does.
    pub fn with_forwards(mut self, forwards: Vec<PortForward>) -> Result<Self, Error> {
        PortForward::validate_all(&forwards)?;
        self.forwards = forwards;
        Ok(self)
    }

    /// The same router with another seed for its random port choices (deterministic per seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }

    pub fn behaviour(&self) -> &NatBehaviour {
        &self.behaviour
    }

    pub fn public(&self) -> Ipv4Addr {
        self.public
    }

    /// A packet from the LAN (`src` inside) towards `dst`.
    pub fn outbound(&mut self, src: SocketAddrV4, dst: SocketAddrV4, now: Instant) -> Verdict {
        let now = self.advance(now);
        if !self.is_inside(*src.ip()) {
            return not_through("the source is not on the inside network");
        }
        if self.is_inside(*dst.ip()) {
            return not_through("both ends are on the inside network: the LAN switches it");
        }
        if let Some((s, d)) = self.pass((src, dst), Side::Inside, now) {
            return Verdict::Forward { src: s, dst: d };
        }
        if self.is_public(*dst.ip()) {
            return self.hairpin(src, dst, now);
        }
        let allocated = if PortForward::is_static_source(&self.forwards, src) {
            self.allocate_static(src, dst)
        } else {
            self.allocate(src, dst)
        };
        let (external, displaced_from) = match allocated {
            Ok(p) => p,
            Err(reason) => return Verdict::Drop { reason },
        };
        let id = self.insert(Kind::Outbound, (src, dst), (dst, external), dst.port(), now);
        self.learn(id, now);
        self.created(id, displaced_from);
        Verdict::Forward { src: external, dst }
    }

    /// A packet from the WAN (`src`) towards `dst`, normally the public address.
    pub fn inbound(&mut self, src: SocketAddrV4, dst: SocketAddrV4, now: Instant) -> Verdict {
        let now = self.advance(now);
        if !self.is_public(*dst.ip()) {
            return not_through("the destination is not one of the router's public addresses");
        }
        if self.is_inside(*src.ip()) {
            return not_through("the source is on the inside network");
        }
        // pre_raw, before conntrack: a refused packet neither refreshes nor creates an entry.
        let forward = self.forward_target(dst);
        if self.behaviour.refresh == Refresh::OutboundOnly
            && forward.is_none()
            && !self.raw_admits(src, dst, now)
        {
            return Verdict::Drop {
                reason: self.diagnose(src, dst, now),
            };
        }
        let to_router = self
            .lookup((src, dst))
            .and_then(|(id, _)| self.entries.get(&id))
            .map(|e| e.kind == Kind::Local);
        if let Some((s, d)) = self.pass((src, dst), Side::Outside, now) {
            if to_router == Some(true) {
                // Another packet of an unsolicited flow: it refreshes the hold and stays out.
                return Verdict::Drop {
                    reason: self.diagnose(src, dst, now),
                };
            }
            return Verdict::Forward { src: s, dst: d };
        }
        // pre_nat: a forward, else a looser filter through `fc`, DNATs a new flow.
        if let Some(internal) = forward.or_else(|| self.dnat_target(src, dst, now)) {
            if self.taken((internal, src)) {
                return Verdict::Drop {
                    reason: DropReason::TupleTaken {
                        tuple: (internal, src),
                    },
                };
            }
            let id = self.insert(Kind::Inbound, (src, dst), (internal, src), dst.port(), now);
            self.created(id, None);
            return Verdict::Forward { src, dst: internal };
        }
        // Nothing admits it: it is for the router itself. An input firewall discards it before
        // conntrack confirms its entry; without one, conntrack keeps it.
        if !self.behaviour.input.keeps_unsolicited() {
            return Verdict::Drop {
                reason: match self.diagnose(src, dst, now) {
                    DropReason::NoBinding { to } => DropReason::InputFirewall {
                        to,
                        policy: self.behaviour.input,
                    },
                    other => other,
                },
            };
        }
        let id = self.insert(Kind::Local, (src, dst), (dst, src), dst.port(), now);
        if let Some(e) = self.entries.get(&id) {
            self.events.push_back(BindingEvent::UnsolicitedHeld {
                from: src,
                to: dst,
                at: now,
                until: e.expires,
            });
        }
        Verdict::Drop {
            reason: self.diagnose(src, dst, now),
        }
    }

    /// Lets time pass to `now`: bindings whose timeout has run out are gone (with an event).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When the next binding or unsolicited flow times out, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.expires).min()
    }

    /// The next thing that happened to a binding, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BindingEvent> {
        self.events.pop_front()
    }

    /// The bindings alive at `now`, oldest first. Read-only: call [`Self::handle_timeout`] to
    /// also get the events of those that expired.
    pub fn bindings(&self, now: Instant) -> Vec<BindingView> {
        let now = self.now.map_or(now, |last| now.max(last));
        self.entries
            .values()
            .filter(|e| e.expires > now)
            .filter_map(|e| {
                let binding = e.binding()?;
                let inbound_guard_left =
                    (self.behaviour.refresh == Refresh::OutboundOnly).then(|| {
                        self.raw_guard_expiry(binding.remote, binding.external.port(), now)
                            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
                    });
                Some(BindingView {
                    binding,
                    opened_by: e.opened_by(),
                    replied: e.replied,
                    age: now.saturating_duration_since(e.created),
                    idle: now.saturating_duration_since(e.last_packet),
                    time_left: e.expires.saturating_duration_since(now),
                    inbound_guard_left,
                })
            })
            .collect()
    }

    /// The unsolicited inbound flows conntrack holds at `now` (each takes a port towards its
    /// sender), oldest first.
    pub fn unsolicited(&self, now: Instant) -> Vec<UnsolicitedView> {
        let now = self.now.map_or(now, |last| now.max(last));
        self.entries
            .values()
            .filter(|e| e.kind == Kind::Local && e.expires > now)
            .map(|e| UnsolicitedView {
                from: e.original.0,
                to: e.original.1,
                time_left: e.expires.saturating_duration_since(now),
            })
            .collect()
    }

    /// Forgets every binding of `internal` now, as if it had timed out: its conntrack entries
    /// (`conntrack -D`), its `fc` entries, and the set elements of its external ports that no
    /// other binding uses. `now` dates the [`BindingEvent::Removed`] events.
    pub fn expire(&mut self, internal: SocketAddrV4, now: Instant) {
        let now = self.advance(now);
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.binding().is_some_and(|b| b.internal == internal))
            .map(|(id, _)| *id)
            .collect();
        let mut ports = BTreeSet::new();
        for id in ids {
            if let Some(b) = self.entries.remove(&id).and_then(|e| e.binding()) {
                ports.insert(b.external.port());
                self.bury(b, now);
                self.events.push_back(BindingEvent::Removed {
                    binding: b,
                    at: now,
                });
            }
        }
        let still_used: BTreeSet<u16> = self
            .entries
            .values()
            .filter_map(|e| e.binding())
            .map(|b| b.external.port())
            .collect();
        let freed = |p: &u16| ports.contains(p) && !still_used.contains(p);
        self.fc.retain(|_, (v, _)| *v != internal);
        self.peers.retain(|(p, _), _| !freed(p));
        self.out.retain(|(p, _), _| !freed(p));
        self.bound.retain(|p, _| !freed(p));
    }

    /// Forgets everything, as `conntrack -F` plus flushing every dynamic set (a router reboot).
    pub fn flush(&mut self, now: Instant) {
        let now = self.advance(now);
        for e in std::mem::take(&mut self.entries).into_values() {
            match e.binding() {
                Some(b) => {
                    self.bury(b, now);
                    self.events.push_back(BindingEvent::Removed {
                        binding: b,
                        at: now,
                    });
                }
                None => self.events.push_back(BindingEvent::UnsolicitedReleased {
                    from: e.original.0,
                    to: e.original.1,
                    at: now,
                }),
            }
        }
        self.fc.clear();
        self.peers.clear();
        self.out.clear();
        self.bound.clear();
    }

    // --- time ------------------------------------------------------------------------------

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| now.max(last));
        self.now = Some(now);
        let mut dead: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, e)| (e.expires, *id))
            .collect();
        dead.sort();
        for (_, id) in dead {
            let Some(e) = self.entries.remove(&id) else {
                continue;
            };
            match e.binding() {
                Some(b) => {
                    self.bury(b, e.expires);
                    self.events.push_back(BindingEvent::Expired {
                        binding: b,
                        at: e.expires,
                        last_packet: e.last_packet,
                    });
                }
                None => self.events.push_back(BindingEvent::UnsolicitedReleased {
                    from: e.original.0,
                    to: e.original.1,
                    at: e.expires,
                }),
            }
        }
        // nft set elements die when their expiry is not after now (`nft_set_elem_expired`).
        self.fc.retain(|_, (_, exp)| *exp > now);
        self.peers.retain(|_, exp| *exp > now);
        self.out.retain(|_, exp| *exp > now);
        self.bound.retain(|_, exp| *exp > now);
        now
    }

    fn bury(&mut self, binding: Binding, at: Instant) {
        if self.gone.len() == REMEMBERED_EXPIRIES {
            self.gone.pop_front();
        }
        self.gone.push_back(Gone { binding, at });
    }

    // --- conntrack -------------------------------------------------------------------------

    fn is_inside(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.net
    }

    fn is_public(&self, ip: Ipv4Addr) -> bool {
        let first = u32::from(self.public);
        let ip = u32::from(ip);
        ip >= first && ip - first < u32::from(self.behaviour.pool_size.max(1))
    }

    fn lookup(&self, t: Tuple) -> Option<(u64, Dir)> {
        self.entries
            .iter()
            .find_map(|(id, e)| e.matches(t).map(|d| (*id, d)))
    }

    /// `nf_conntrack_tuple_taken`: some entry holds `t` in either direction.
    fn taken(&self, t: Tuple) -> bool {
        self.lookup(t).is_some()
    }

    fn flow_timeout(&self, first_dport: u16) -> Duration {
        if self.behaviour.sip_alg == SipAlg::Kernel && first_dport == SIP_PORT {
            SIP_HELPER_TIMEOUT
        } else {
            self.timeout
        }
    }

    fn insert(
        &mut self,
        kind: Kind,
        original: Tuple,
        reply: Tuple,
        first_dport: u16,
        now: Instant,
    ) -> u64 {
        let timeout = self.flow_timeout(first_dport);
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                kind,
                original,
                reply,
                created: now,
                last_packet: now,
                last_outbound: None,
                timeout,
                expires: now + timeout,
                replied: false,
            },
        );
        id
    }

    fn created(&mut self, id: u64, displaced_from: Option<u16>) {
        if let Some(e) = self.entries.get(&id) {
            if let Some(binding) = e.binding() {
                self.events.push_back(BindingEvent::Created {
                    binding,
                    opened_by: e.opened_by(),
                    at: e.created,
                    displaced_from,
                });
            }
        }
    }

    /// A packet of an existing flow, if `packet` belongs to one: refresh it, learn if it leaves
    /// on the WAN, and translate.
    fn pass(&mut self, packet: Tuple, by: Side, now: Instant) -> Option<Tuple> {
        let (id, dir) = self.lookup(packet)?;
        let e = self.entries.get_mut(&id)?;
        e.last_packet = now;
        e.expires = now + e.timeout;
        if dir == Dir::Reply {
            e.replied = true;
        }
        let translated = e.translate(dir);
        let wan = e.leaves_on_wan(dir);
        let refreshed = e.binding().map(|b| BindingEvent::Refreshed {
            binding: b,
            by,
            at: now,
            until: e.expires,
        });
        if wan {
            self.learn(id, now);
        }
        if let Some(ev) = refreshed {
            self.events.push_back(ev);
        }
        Some(translated)
    }

    /// `post_learn`: a packet of flow `id` left on the WAN.
    fn learn(&mut self, id: u64, now: Instant) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.last_outbound = Some(now);
        let Some(b) = e.binding() else {
            return;
        };
        let until = now + self.timeout;
        let port = b.external.port();
        // `update @fc { k : v }` refreshes a live element's timeout but keeps its value.
        match self.fc.get_mut(&port) {
            Some((_, exp)) => *exp = until,
            None => {
                self.fc.insert(port, (b.internal, until));
            }
        }
        if self.behaviour.filtering == Filtering::AddressDependent {
            self.peers.insert((port, *b.remote.ip()), until);
        }
        if self.behaviour.refresh == Refresh::OutboundOnly {
            self.out.insert((port, b.remote), until);
            self.bound.insert(port, until);
        }
    }

    // --- source NAT ------------------------------------------------------------------------

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per seed, good enough to spread ports.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The external address for a new flow `src → remote` (`remote` is the post-DNAT
    /// destination), as `get_unique_tuple` picks it; with the port preservation wanted but lost.
    fn allocate(
        &mut self,
        src: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<(SocketAddrV4, Option<u16>), DropReason> {
        let used = |m: &Self, ext: SocketAddrV4| m.taken((remote, ext));
        let block = match self.behaviour.port_block {
            None => None,
            Some(_) => {
                let index = self.subscribers.iter().position(|s| s == src.ip());
                match index.and_then(|i| crate::port_block(&self.behaviour, i)) {
                    Some(b) => Some(b),
                    None => return Err(DropReason::NotASubscriber { src }),
                }
            }
        };
        // find_best_ips_proto: the pool address hashes the source (and, unpaired, the destination).
        let addr = self.pool_address(*src.ip(), *remote.ip());
        match self.behaviour.ports {
            PortAllocation::Preserve => self.preserve(src, remote, addr, block),
            PortAllocation::Random => {
                let (lo, hi) = block.unwrap_or(self.behaviour.port_range);
                self.free_port(addr, lo, hi, remote).map(|ext| (ext, None))
            }
            PortAllocation::Sequential => {
                // `numgen inc`: the next port for every new flow; a taken one drops, as for hash.
                let (lo, hi) = self.behaviour.port_range;
                let span = u32::from(hi - lo) + 1;
                let port = lo + (self.sequence % span) as u16;
                self.sequence = self.sequence.wrapping_add(1);
                let ext = SocketAddrV4::new(addr, port);
                if used(self, ext) {
                    Err(DropReason::TupleTaken {
                        tuple: (remote, ext),
                    })
                } else {
                    Ok((ext, None))
                }
            }
            PortAllocation::Hash => {
                // The range is one port: nf_nat tries it and, if taken, confirmation drops.
                let ext = SocketAddrV4::new(addr, self.hash_port(src, remote));
                if used(self, ext) {
                    Err(DropReason::TupleTaken {
                        tuple: (remote, ext),
                    })
                } else {
                    Ok((ext, None))
                }
            }
        }
    }

    /// A plain `snat` to `addr` (the port kept when it can be), as `get_unique_tuple` does it:
    /// `find_appropriate_src` reuses the newest mapping of the same internal endpoint, then the
    /// internal port, then a free port of `block` or the kernel's default range.
    fn preserve(
        &mut self,
        src: SocketAddrV4,
        remote: SocketAddrV4,
        addr: Ipv4Addr,
        block: Option<(u16, u16)>,
    ) -> Result<(SocketAddrV4, Option<u16>), DropReason> {
        let used = |m: &Self, ext: SocketAddrV4| m.taken((remote, ext));
        let in_block = |port: u16| block.is_none_or(|(lo, hi)| (lo..=hi).contains(&port));
        let reuse = self
            .entries
            .values()
            .rev()
            .filter(|e| e.original.0 == src && e.kind != Kind::Local)
            .map(|e| e.reply.1)
            .find(|ext| self.is_public(*ext.ip()) && in_block(ext.port()));
        if let Some(ext) = reuse {
            if !used(self, ext) {
                return Ok((ext, None));
            }
        }
        let keep = SocketAddrV4::new(addr, src.port());
        if in_block(src.port()) && !used(self, keep) {
            return Ok((keep, None));
        }
        // nf_nat_l4proto_unique_tuple: the block, or without one the kernel's defaults.
        let (lo, hi) = block.unwrap_or(match src.port() {
            0..=511 => (1, 511),
            512..=1023 => (600, 1023),
            _ => (1024, 65535),
        });
        self.free_port(addr, lo, hi, remote)
            .map(|ext| (ext, Some(src.port())))
    }

    /// A new flow from a forwarded port of its host: the forward's own `snat` to the WAN address,
    /// ahead of the mapping, the port block and the pool.
    fn allocate_static(
        &mut self,
        src: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<(SocketAddrV4, Option<u16>), DropReason> {
        let addr = self.public;
        self.preserve(src, remote, addr, None)
    }

    /// Where a forward sends a new flow to `dst` (the first public address only).
    fn forward_target(&self, dst: SocketAddrV4) -> Option<SocketAddrV4> {
        if *dst.ip() != self.public {
            return None;
        }
        PortForward::target(&self.forwards, dst.port())
    }

    /// The pool address for a new flow: the first address without a pool; with one, a hash of
    /// the source address (`persistent`, paired pooling) or of both addresses.
    fn pool_address(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Addr {
        let size = u64::from(self.behaviour.pool_size.max(1));
        if size == 1 {
            return self.public;
        }
        let mut h = u64::from(u32::from(src)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if !self.behaviour.paired_pooling {
            h ^= u64::from(u32::from(dst)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        }
        h ^= h >> 29;
        Ipv4Addr::from(u32::from(self.public) + (h % size) as u32)
    }

    /// A free port of `lo..=hi` towards `remote`, searched as nf_nat does: from a random offset,
    /// up to 128 ports, then ever smaller windows from new random offsets.
    fn free_port(
        &mut self,
        addr: Ipv4Addr,
        lo: u16,
        hi: u16,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, DropReason> {
        let size = u32::from(hi) - u32::from(lo) + 1;
        let mut attempts = size.min(MAX_ATTEMPTS);
        let mut off = (self.next_random() % u64::from(size)) as u32;
        loop {
            for _ in 0..attempts {
                let ext = SocketAddrV4::new(addr, (u32::from(lo) + off % size) as u16);
                off = off.wrapping_add(1);
                if !self.taken((remote, ext)) {
                    return Ok(ext);
                }
            }
            if attempts >= size || attempts < 2 {
                return Err(DropReason::PortsExhausted {
                    remote,
                    range: (lo, hi),
                });
            }
            attempts /= 2;
            off = (self.next_random() % u64::from(size)) as u32;
        }
    }

    /// The `jhash … mod N offset lo` of the rendered `snat`: any hash of the same fields will do,
    /// the model promises only that equal fields give equal ports.
    fn hash_port(&self, src: SocketAddrV4, dst: SocketAddrV4) -> u16 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ 0x5e1d;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&src.ip().octets());
        eat(&src.port().to_be_bytes());
        match self.behaviour.mapping {
            Mapping::EndpointIndependent => {}
            Mapping::AddressDependent => eat(&dst.ip().octets()),
            Mapping::AddressAndPortDependent => {
                eat(&dst.ip().octets());
                eat(&dst.port().to_be_bytes());
            }
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        let (lo, hi) = self.behaviour.port_range;
        let size = u64::from(hi) - u64::from(lo) + 1;
        (u64::from(lo) + h % size) as u16
    }

    // --- filtering -------------------------------------------------------------------------

    /// The latest expiry of the set elements that let a packet from `from` to `port` pass
    /// `pre_raw` (outbound-only refresh).
    fn raw_guard_expiry(&self, from: SocketAddrV4, port: u16, now: Instant) -> Option<Instant> {
        let live = |t: Option<&Instant>| t.copied().filter(|t| *t > now);
        let extra = match self.behaviour.filtering {
            Filtering::EndpointIndependent => live(self.bound.get(&port)),
            Filtering::AddressDependent => live(self.peers.get(&(port, *from.ip()))),
            Filtering::AddressAndPortDependent => None,
        };
        live(self.out.get(&(port, from))).max(extra)
    }

    fn raw_admits(&self, src: SocketAddrV4, dst: SocketAddrV4, now: Instant) -> bool {
        self.raw_guard_expiry(src, dst.port(), now).is_some()
    }

    /// `pre_nat`: where a looser filter sends a new inbound flow.
    fn dnat_target(
        &self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        now: Instant,
    ) -> Option<SocketAddrV4> {
        let port = dst.port();
        let admitted = match self.behaviour.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => {
                self.peers.get(&(port, *src.ip())).is_some_and(|t| *t > now)
            }
            Filtering::AddressAndPortDependent => false,
        };
        if !admitted {
            return None;
        }
        self.fc
            .get(&port)
            .filter(|(_, t)| *t > now)
            .map(|(internal, _)| *internal)
    }

    /// Why an inbound packet `src → dst` did not get in.
    fn diagnose(&self, src: SocketAddrV4, dst: SocketAddrV4, now: Instant) -> DropReason {
        let live: Vec<(Binding, Option<Instant>)> = self
            .entries
            .values()
            .filter(|e| e.expires > now)
            .filter_map(|e| e.binding().map(|b| (b, e.last_outbound)))
            .filter(|(b, _)| b.external == dst)
            .collect();
        let idle = |(b, last): (Binding, Option<Instant>)| DropReason::OutboundIdle {
            binding: b,
            last_outbound_ago: last.map(|t| now.saturating_duration_since(t)),
            timeout: self.timeout,
        };
        if live.is_empty() {
            let gone = self
                .gone
                .iter()
                .rev()
                .filter(|g| g.binding.external == dst)
                .max_by_key(|g| (g.binding.remote == src, g.at));
            return match gone {
                Some(g) => DropReason::BindingExpired {
                    binding: g.binding,
                    ago: now.saturating_duration_since(g.at),
                },
                None => DropReason::NoBinding { to: dst },
            };
        }
        let newest_out =
            |v: &[(Binding, Option<Instant>)]| v.iter().copied().max_by_key(|(_, last)| *last);
        if let Some(exact) = live.iter().find(|(b, _)| b.remote == src) {
            // Conntrack would have let it in: the outbound-only guard stopped it.
            return idle(*exact);
        }
        let same_address: Vec<_> = live
            .iter()
            .copied()
            .filter(|(b, _)| b.remote.ip() == src.ip())
            .collect();
        match self.behaviour.filtering {
            Filtering::AddressAndPortDependent => match same_address.first() {
                Some((b, _)) => DropReason::FilteredByPort {
                    binding: *b,
                    from: src,
                },
                None => DropReason::FilteredByAddress {
                    binding: live[0].0,
                    from: src,
                },
            },
            Filtering::AddressDependent => match newest_out(&same_address) {
                Some(b) => idle(b),
                None => DropReason::FilteredByAddress {
                    binding: live[0].0,
                    from: src,
                },
            },
            Filtering::EndpointIndependent => match newest_out(&live) {
                Some(b) => idle(b),
                None => DropReason::NoBinding { to: dst },
            },
        }
    }

    // --- hairpinning -----------------------------------------------------------------------

    /// A new flow from the inside to the public address: DNAT through `fc`, then the sender's
    /// source NAT, so the receiver sees the sender's mapping (REQ-9).
    fn hairpin(&mut self, src: SocketAddrV4, dst: SocketAddrV4, now: Instant) -> Verdict {
        let target = self.forward_target(dst).or_else(|| {
            self.fc
                .get(&dst.port())
                .filter(|(_, t)| *t > now)
                .map(|(internal, _)| *internal)
        });
        let Some(target) = target.filter(|_| self.behaviour.hairpinning) else {
            return Verdict::Drop {
                reason: DropReason::NoHairpin { to: dst },
            };
        };
        let (external, displaced_from) = match self.allocate(src, target) {
            Ok(p) => p,
            Err(reason) => return Verdict::Drop { reason },
        };
        let id = self.insert(
            Kind::Hairpin,
            (src, dst),
            (target, external),
            dst.port(),
            now,
        );
        self.created(id, displaced_from);
        Verdict::Forward {
            src: external,
            dst: target,
        }
    }
}

fn not_through(why: &'static str) -> Verdict {
    Verdict::Drop {
        reason: DropReason::NotThroughRouter { why },
    }
}

// --- the probe of harness/src/probe.rs, against the model ----------------------------------------

/// How long the kernel probe waits for a datagram before calling it dropped
/// (`harness::probe::PROBE_WAIT`); the model's virtual clock advances by it per lost probe.
pub const PROBE_WAIT: Duration = Duration::from_millis(300);

/// Where the probe sends from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSetup {
    /// The inside host (the client).
    pub client: Ipv4Addr,
    /// The public server's two addresses.
    pub server: [Ipv4Addr; 2],
    /// Another public host.
    pub peer: Ipv4Addr,
    /// The first port used on every side.
    pub base: u16,
}

impl ProbeSetup {
    /// The hosts of `harness::shapes::home_lan`, probing from port 40000 as `tests/tests/grid.rs`.
    pub fn home_lan() -> Self {
        Self {
            client: Ipv4Addr::new(192, 168, 1, 10),
            server: [
                Ipv4Addr::new(203, 0, 113, 10),
                Ipv4Addr::new(203, 0, 113, 11),
            ],
            peer: Ipv4Addr::new(198, 51, 100, 20),
            base: 40000,
        }
    }
}

/// What the probe concluded, as `harness::probe::Observed` reports it for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// The mapping kept the internal port.
    pub port_preserved: bool,
    /// The first mapping seen.
    pub mapped: SocketAddrV4,
}

/// Why the probe could not conclude.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Invalid(#[from] Error),
    /// A packet the kernel probe requires to arrive was dropped by the model.
    #[error("probe {what} never arrived: {reason}")]
    Lost {
        what: &'static str,
        reason: DropReason,
    },
}

/// Runs the probe sequence of `harness::probe::observe` against `nat`, starting at `start` (a
/// delivered packet takes 1 ms of virtual time, a lost one [`PROBE_WAIT`]): the client sends from
/// `base` to the server's `(a, base)`, `(a, base+1)`, `(b, base)` (mapping); a second client socket
/// `base+1` sends to `(a, base)`, then the peer, `(a, base+1)` and `(a, base)` send to its mapping
/// (filtering).
pub fn observe(
    nat: &mut NatModel,
    setup: &ProbeSetup,
    start: Instant,
) -> Result<Observation, ProbeError> {
    let tick = Duration::from_millis(1);
    let mut now = start;
    let [a, b] = setup.server;
    let base = setup.base;
    let s1 = SocketAddrV4::new(a, base);
    let s2 = SocketAddrV4::new(a, base + 1);
    let s3 = SocketAddrV4::new(b, base);
    let p = SocketAddrV4::new(setup.peer, base);
    let c = SocketAddrV4::new(setup.client, base);
    let f = SocketAddrV4::new(setup.client, base + 1);
    let send_out = |nat: &mut NatModel, from, to, what, now: &mut Instant| {
        let v = nat.outbound(from, to, *now);
        *now += tick;
        match v {
            Verdict::Forward { src, .. } => Ok(src),
            Verdict::Drop { reason } => Err(ProbeError::Lost { what, reason }),
        }
    };
    let mut seen = Vec::new();
    for s in [s1, s2, s3] {
        seen.push(send_out(nat, c, s, "mapping", &mut now)?);
    }
    let mapping = if seen[0] != seen[1] {
        Mapping::AddressAndPortDependent
    } else if seen[0] != seen[2] {
        Mapping::AddressDependent
    } else {
        Mapping::EndpointIndependent
    };
    let m = send_out(nat, f, s1, "filtering", &mut now)?;
    let reaches_f = |nat: &mut NatModel, from, now: &mut Instant| {
        let v = nat.inbound(from, m, *now);
        let arrived = v.forwarded().is_some_and(|(_, dst)| dst == f);
        *now += if arrived { tick } else { PROBE_WAIT };
        (arrived, v)
    };
    let (from_other_address, _) = reaches_f(nat, p, &mut now);
    let (from_other_port, _) = reaches_f(nat, s2, &mut now);
    let (from_same_endpoint, v) = reaches_f(nat, s1, &mut now);
    if !from_same_endpoint {
        return Err(ProbeError::Lost {
            what: "reply from the contacted endpoint",
            reason: v
                .drop_reason()
                .cloned()
                .unwrap_or(DropReason::NoBinding { to: m }),
        });
    }
    let filtering = if from_other_address {
        Filtering::EndpointIndependent
    } else if from_other_port {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Ok(Observation {
        mapping,
        filtering,
        port_preserved: seen[0].port() == base,
        mapped: seen[0],
    })
}

/// [`observe`] on a fresh model of `behaviour` as the `home` router of `harness::shapes::home_lan`
/// (public 203.0.113.1, LAN 192.168.1.0/24): the model's answer to `tests/tests/grid.rs`.
pub fn observe_home_lan(
    behaviour: &NatBehaviour,
    start: Instant,
) -> Result<Observation, ProbeError> {
    let mut nat = NatModel::new(
        behaviour.clone(),
        Ipv4Addr::new(203, 0, 113, 1),
        (Ipv4Addr::new(192, 168, 1, 0), 24),
    )?;
    observe(&mut nat, &ProbeSetup::home_lan(), start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NatType;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The `home` router of `harness::shapes::home_lan`.
    fn home(b: NatBehaviour) -> NatModel {
        NatModel::new(
            b,
            Ipv4Addr::new(203, 0, 113, 1),
            (Ipv4Addr::new(192, 168, 1, 0), 24),
        )
        .unwrap()
    }

    fn events(nat: &mut NatModel) -> Vec<BindingEvent> {
        std::iter::from_fn(|| nat.poll_event()).collect()
    }

    const ALICE: &str = "192.168.1.10:5060";
    const S1: &str = "203.0.113.10:5060";
    const S2: &str = "203.0.113.10:5061";

    fn grid() -> Vec<NatBehaviour> {
        use Filtering as F;
        use Mapping as M;
        use PortAllocation as P;
        let mut out = Vec::new();
        for m in [
            M::EndpointIndependent,
            M::AddressDependent,
            M::AddressAndPortDependent,
        ] {
            for f in [
                F::EndpointIndependent,
                F::AddressDependent,
                F::AddressAndPortDependent,
            ] {
                for p in [P::Preserve, P::Random, P::Hash] {
                    let b = NatBehaviour::new(m, f).with_ports(p);
                    if b.validate().is_ok() {
                        out.push(b);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_grid_point_is_observed_as_configured_by_the_kernel_probe_sequence() {
        let points = grid();
        assert_eq!(points.len(), 15);
        let t0 = Instant::now();
        for b in points {
            let o = observe_home_lan(&b, t0).unwrap();
            assert_eq!(
                (o.mapping, o.filtering, o.port_preserved),
                (b.mapping, b.filtering, b.ports == PortAllocation::Preserve),
                "{b:?}"
            );
            assert_eq!(*o.mapped.ip(), Ipv4Addr::new(203, 0, 113, 1));
        }
    }

    #[test]
    fn a_port_clash_moves_the_second_host_and_its_later_flows_stay_moved() {
        let t0 = Instant::now();
        let mut nat = home(NatType::PortRestrictedCone.behaviour());
        let alice = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        assert_eq!(alice, sa("203.0.113.1:5060"));
        let bob = sa("192.168.1.11:5060");
        let moved = nat.outbound(bob, sa(S1), t0).forwarded().unwrap().0;
        assert_ne!(moved.port(), 5060, "(S1 → 203.0.113.1:5060) is alice's");
        // find_appropriate_src: bob's next flow reuses his moved mapping, though 5060 would be
        // free towards S2.
        let again = nat.outbound(bob, sa(S2), t0).forwarded().unwrap().0;
        assert_eq!(again, moved);
        assert_eq!(
            nat.outbound(sa(ALICE), sa(S2), t0).forwarded().unwrap().0,
            alice
        );
        let displaced: Vec<_> = events(&mut nat)
            .into_iter()
            .filter_map(|e| match e {
                BindingEvent::Created { displaced_from, .. } => Some(displaced_from),
                _ => None,
            })
            .collect();
        assert_eq!(displaced, [None, Some(5060), None, None]);
    }

    #[test]
    fn a_binding_dies_exactly_at_its_timeout_and_a_late_packet_says_how_late() {
        let t0 = Instant::now();
        let b = NatType::PortRestrictedCone.behaviour().with_udp_timeout(2);
        let mut alive = home(b.clone());
        let m = alive.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        let just_before = t0 + Duration::from_secs(2) - Duration::from_nanos(1);
        assert_eq!(
            alive.bindings(just_before)[0].time_left,
            Duration::from_nanos(1)
        );
        assert!(alive.inbound(sa(S1), m, just_before).forwarded().is_some());

        let mut dead = home(b);
        let m = dead.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        assert!(dead.bindings(t0 + Duration::from_secs(2)).is_empty());
        let mut at = |d| {
            dead.inbound(sa(S1), m, t0 + d)
                .drop_reason()
                .cloned()
                .unwrap()
        };
        let binding = Binding {
            internal: sa(ALICE),
            external: m,
            remote: sa(S1),
        };
        assert_eq!(
            at(Duration::from_secs(2)),
            DropReason::BindingExpired {
                binding,
                ago: Duration::ZERO
            }
        );
        let late = at(ms(3200)).to_string();
        assert_eq!(
            late,
            "binding 192.168.1.10:5060 → 203.0.113.1:5060 (with 203.0.113.10:5060) expired \
             1.2 s before this packet"
        );
    }

    #[test]
    fn inbound_packets_keep_a_linux_binding_alive() {
        let t0 = Instant::now();
        let mut nat = home(NatType::PortRestrictedCone.behaviour().with_udp_timeout(2));
        let m = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        for i in 1..=10 {
            let now = t0 + ms(400 * i);
            assert_eq!(
                nat.inbound(sa(S1), m, now).forwarded(),
                Some((sa(S1), sa(ALICE))),
                "ping {i}"
            );
            assert_eq!(nat.bindings(now)[0].time_left, Duration::from_secs(2));
        }
    }

    #[test]
    fn outbound_only_refresh_ignores_inbound_keepalives_and_refused_ones_refresh_nothing() {
        for t in NatType::ALL {
            let t0 = Instant::now();
            let mut nat = home(
                t.behaviour()
                    .with_udp_timeout(2)
                    .with_refresh(Refresh::OutboundOnly),
            );
            let m = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
            for i in 1..=6 {
                let now = t0 + ms(400 * i);
                let v = nat.inbound(sa(S1), m, now);
                if i < 5 {
                    assert!(v.forwarded().is_some(), "{t}: ping at {:?}", now - t0);
                } else {
                    assert!(
                        matches!(
                            v.drop_reason(),
                            Some(DropReason::OutboundIdle { last_outbound_ago: Some(a), .. })
                                if *a == ms(400 * i)
                        ),
                        "{t}: {v:?}"
                    );
                }
            }
            // The last admitted ping (1.6 s) refreshed conntrack to 3.6 s; the refused ones did not.
            let view = &nat.bindings(t0 + ms(2400))[0];
            assert_eq!(view.time_left, ms(1200), "{t}");
            assert_eq!(view.inbound_guard_left, Some(Duration::ZERO), "{t}");
            // The inside's own keep-alive finds the same mapping and reopens the guard.
            let again = nat.outbound(sa(ALICE), sa(S1), t0 + ms(2500));
            assert_eq!(again.forwarded().unwrap().0, m, "{t}");
            assert!(nat.inbound(sa(S1), m, t0 + ms(2600)).forwarded().is_some());
        }
    }

    /// Mirrors `tests/tests/topology.rs`: two port-restricted NATs, alice sends first.
    #[test]
    fn a_first_unsolicited_packet_makes_the_far_nat_remap_the_answer() {
        let t0 = Instant::now();
        let prc = NatType::PortRestrictedCone.behaviour();
        let mut home_a = home(prc.clone());
        let mut home_b = NatModel::new(
            prc,
            Ipv4Addr::new(198, 51, 100, 1),
            (Ipv4Addr::new(192, 168, 2, 0), 24),
        )
        .unwrap();
        let (alice, bob) = (sa("192.168.1.10:4000"), sa("192.168.2.10:4000"));
        let bob_pub = sa("198.51.100.1:4000");
        let (a_src, _) = home_a.outbound(alice, bob_pub, t0).forwarded().unwrap();
        assert_eq!(a_src, sa("203.0.113.1:4000"));
        let v = home_b.inbound(a_src, bob_pub, t0);
        assert_eq!(
            v.drop_reason(),
            Some(&DropReason::NoBinding { to: bob_pub })
        );
        assert_eq!(home_b.unsolicited(t0)[0].time_left, Duration::from_secs(30));

        let (b_src, _) = home_b
            .outbound(bob, a_src, t0 + ms(10))
            .forwarded()
            .unwrap();
        assert_ne!(
            b_src, bob_pub,
            "the unreplied flow holds 198.51.100.1:4000 towards alice"
        );
        assert!(matches!(
            home_a.inbound(b_src, a_src, t0 + ms(10)).drop_reason(),
            Some(DropReason::FilteredByPort { .. })
        ));
        // The move sticks: STUN would now report the new port.
        let (stun, _) = home_b
            .outbound(bob, sa("203.0.113.10:3478"), t0 + ms(20))
            .forwarded()
            .unwrap();
        assert_eq!(stun, b_src);
        assert!(events(&mut home_b).iter().any(|e| matches!(
            e,
            BindingEvent::Created {
                displaced_from: Some(4000),
                ..
            }
        )));
    }

    #[test]
    fn with_outbound_only_refresh_an_unsolicited_packet_dies_before_conntrack_and_poisons_nothing()
    {
        let t0 = Instant::now();
        let mut home_b = NatModel::new(
            NatType::PortRestrictedCone
                .behaviour()
                .with_refresh(Refresh::OutboundOnly),
            Ipv4Addr::new(198, 51, 100, 1),
            (Ipv4Addr::new(192, 168, 2, 0), 24),
        )
        .unwrap();
        let bob_pub = sa("198.51.100.1:4000");
        let alice_pub = sa("203.0.113.1:4000");
        assert!(home_b
            .inbound(alice_pub, bob_pub, t0)
            .drop_reason()
            .is_some());
        assert!(home_b.unsolicited(t0).is_empty());
        let v = home_b.outbound(sa("192.168.2.10:4000"), alice_pub, t0);
        assert_eq!(v.forwarded().unwrap().0, bob_pub);
    }

    /// Kernel-facts: a router's own input firewall decides the collision. Under `drop` and
    /// `reject` the early packet is discarded before conntrack keeps it, so the inside keeps its
    /// port; the far end gets in once the inside has answered.
    #[test]
    fn an_input_firewall_keeps_nothing_of_an_unsolicited_packet() {
        for policy in [InputPolicy::Drop, InputPolicy::Reject] {
            let t0 = Instant::now();
            let mut nat = home(NatType::PortRestrictedCone.behaviour().with_input(policy));
            let (peer, mine) = (sa("198.51.100.20:4000"), sa("203.0.113.1:5060"));
            assert_eq!(
                nat.inbound(peer, mine, t0).drop_reason(),
                Some(&DropReason::InputFirewall { to: mine, policy }),
                "{policy}"
            );
            assert!(nat.unsolicited(t0).is_empty(), "{policy}");
            assert!(events(&mut nat).is_empty(), "{policy}");
            let out = nat.outbound(sa(ALICE), peer, t0 + ms(10));
            assert_eq!(out.forwarded().unwrap().0, mine, "{policy}: port kept");
            assert!(nat.inbound(peer, mine, t0 + ms(20)).forwarded().is_some());
            // A packet another binding's filter refuses is still explained by that filter.
            let other = sa("198.51.100.21:4000");
            // (the filtered packet is for the router too, and the firewall keeps nothing of it)
            assert!(matches!(
                nat.inbound(other, mine, t0 + ms(30)).drop_reason(),
                Some(DropReason::FilteredByAddress { .. })
            ));
            assert!(nat.unsolicited(t0 + ms(30)).is_empty(), "{policy}");
        }
    }

    #[test]
    fn the_poisoned_port_is_free_again_once_the_unreplied_flow_times_out() {
        let t0 = Instant::now();
        let mut nat = home(NatType::PortRestrictedCone.behaviour().with_udp_timeout(2));
        let peer = sa("198.51.100.20:4000");
        let mine = sa("203.0.113.1:4000");
        let _ = nat.inbound(peer, mine, t0);
        let _ = nat.inbound(peer, mine, t0 + ms(1500)); // refreshes the hold to 3.5 s
        assert_eq!(nat.poll_timeout(), Some(t0 + ms(3500)));
        let v = nat.outbound(sa("192.168.1.10:4000"), peer, t0 + ms(3500));
        assert_eq!(v.forwarded().unwrap().0, mine);
    }

    #[test]
    fn a_hashed_port_whose_tuple_is_taken_drops_the_flow_instead_of_moving_it() {
        let t0 = Instant::now();
        let b = NatBehaviour::new(
            Mapping::AddressDependent,
            Filtering::AddressAndPortDependent,
        );
        let (h, _) = home(b.clone())
            .outbound(sa(ALICE), sa(S1), t0)
            .forwarded()
            .unwrap();
        let mut nat = home(b);
        let _ = nat.inbound(sa(S1), h, t0);
        assert_eq!(
            nat.outbound(sa(ALICE), sa(S1), t0).drop_reason(),
            Some(&DropReason::TupleTaken { tuple: (sa(S1), h) })
        );
    }

    #[test]
    fn a_full_port_block_refuses_the_next_flow_to_the_same_remote_only() {
        let t0 = Instant::now();
        let b = NatType::PortRestrictedCone
            .behaviour()
            .with_port_range(1024, 1027)
            .with_port_block(2);
        let subs = vec![Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 3)];
        let mut cgn = NatModel::new(
            b,
            Ipv4Addr::new(203, 0, 113, 1),
            (Ipv4Addr::new(100, 64, 0, 0), 24),
        )
        .unwrap()
        .with_subscribers(subs);
        let sub = |port| SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 3), port);
        let mut ports = Vec::new();
        for p in [5000, 5001] {
            ports.push(
                cgn.outbound(sub(p), sa(S1), t0)
                    .forwarded()
                    .unwrap()
                    .0
                    .port(),
            );
        }
        ports.sort();
        assert_eq!(ports, [1026, 1027], "the second subscriber's block");
        assert_eq!(
            cgn.outbound(sub(5002), sa(S1), t0).drop_reason(),
            Some(&DropReason::PortsExhausted {
                remote: sa(S1),
                range: (1026, 1027)
            })
        );
        assert!(cgn.outbound(sub(5002), sa(S2), t0).forwarded().is_some());
        let stranger = sa("100.64.0.9:5000");
        assert_eq!(
            cgn.outbound(stranger, sa(S1), t0).drop_reason(),
            Some(&DropReason::NotASubscriber { src: stranger })
        );
    }

    #[test]
    fn a_paired_pool_keeps_a_host_on_one_address_and_an_unpaired_one_does_not() {
        let t0 = Instant::now();
        let addrs = |paired| {
            let mut nat = home(NatType::PortRestrictedCone.behaviour().with_pool(4, paired));
            let mut seen = BTreeSet::new();
            for i in 0..16u8 {
                let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 6000 + u16::from(i));
                let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, i + 1), 5060);
                seen.insert(*nat.outbound(src, dst, t0).forwarded().unwrap().0.ip());
            }
            seen.len()
        };
        assert_eq!(addrs(true), 1);
        assert!(addrs(false) > 1);
    }

    #[test]
    fn expire_and_flush_forget_bindings_and_a_late_invite_says_so() {
        let t0 = Instant::now();
        let mut nat = home(NatType::FullCone.behaviour());
        let m = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        let carol = sa("192.168.1.11:5062");
        let _ = nat.outbound(carol, sa(S1), t0);
        nat.expire(sa(ALICE), t0 + ms(500));
        assert_eq!(nat.bindings(t0 + ms(500)).len(), 1);
        // Full cone: even the `fc` entry is gone, so nobody gets in.
        let v = nat.inbound(sa("198.51.100.20:5060"), m, t0 + ms(700));
        assert_eq!(
            v.drop_reason().unwrap().to_string(),
            "binding 192.168.1.10:5060 → 203.0.113.1:5060 (with 203.0.113.10:5060) expired \
             200 ms before this packet"
        );
        nat.flush(t0 + ms(800));
        assert!(nat.bindings(t0 + ms(800)).is_empty());
        assert!(nat.unsolicited(t0 + ms(800)).is_empty());
        let removed = events(&mut nat)
            .into_iter()
            .filter(|e| matches!(e, BindingEvent::Removed { .. }))
            .count();
        assert_eq!(removed, 2);
    }

    #[test]
    fn events_tell_a_binding_s_life_in_order() {
        let t0 = Instant::now();
        let mut nat = home(NatType::PortRestrictedCone.behaviour().with_udp_timeout(2));
        let m = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        let _ = nat.inbound(sa(S1), m, t0 + ms(1000));
        assert_eq!(nat.poll_timeout(), Some(t0 + ms(3000)));
        nat.handle_timeout(t0 + ms(5000));
        let binding = Binding {
            internal: sa(ALICE),
            external: m,
            remote: sa(S1),
        };
        assert_eq!(
            events(&mut nat),
            [
                BindingEvent::Created {
                    binding,
                    opened_by: Side::Inside,
                    at: t0,
                    displaced_from: None
                },
                BindingEvent::Refreshed {
                    binding,
                    by: Side::Outside,
                    at: t0 + ms(1000),
                    until: t0 + ms(3000)
                },
                BindingEvent::Expired {
                    binding,
                    at: t0 + ms(3000),
                    last_packet: t0 + ms(1000)
                },
            ]
        );
        assert_eq!(nat.poll_timeout(), None);
    }

    #[test]
    fn the_kernel_sip_helper_holds_a_sip_flow_past_the_udp_timeout() {
        // kernel-facts: with a 3 s timeout, an INVITE 6 s after REGISTER still reached the phone.
        let t0 = Instant::now();
        let proxy = sa("203.0.113.10:5060");
        for (alg, arrives) in [(SipAlg::Kernel, true), (SipAlg::Off, false)] {
            let mut nat = home(
                NatType::PortRestrictedCone
                    .behaviour()
                    .with_udp_timeout(3)
                    .with_sip_alg(alg.clone()),
            );
            let m = nat.outbound(sa(ALICE), proxy, t0).forwarded().unwrap().0;
            let invite = nat.inbound(proxy, m, t0 + Duration::from_secs(6));
            assert_eq!(invite.forwarded().is_some(), arrives, "{alg:?}: {invite:?}");
        }
    }

    #[test]
    fn hairpinning_delivers_with_the_senders_public_address_only_when_on() {
        let t0 = Instant::now();
        let carol = sa("192.168.1.11:5062");
        for on in [true, false] {
            let mut nat = home(NatType::FullCone.behaviour().with_hairpinning(on));
            let alice_pub = nat
                .outbound(sa(ALICE), sa("203.0.113.10:3478"), t0)
                .forwarded()
                .unwrap()
                .0;
            let v = nat.outbound(carol, alice_pub, t0 + ms(1));
            if on {
                assert_eq!(v.forwarded(), Some((sa("203.0.113.1:5062"), sa(ALICE))));
                // alice's answer goes back through the same flow.
                let back = nat.outbound(sa(ALICE), sa("203.0.113.1:5062"), t0 + ms(2));
                assert_eq!(back.forwarded(), Some((alice_pub, carol)));
            } else {
                assert_eq!(
                    v.drop_reason(),
                    Some(&DropReason::NoHairpin { to: alice_pub })
                );
            }
        }
    }

    fn pbx_forwarded(b: NatBehaviour) -> NatModel {
        home(b)
            .with_forwards(vec![PortForward::udp(
                10000,
                20000,
                Ipv4Addr::new(192, 168, 1, 20),
            )])
            .unwrap()
    }

    #[test]
    fn a_forwarded_port_lets_the_first_inbound_packet_in_behind_any_filter() {
        for b in [
            NatType::Symmetric.behaviour(),
            NatType::PortRestrictedCone
                .behaviour()
                .with_refresh(Refresh::OutboundOnly),
        ] {
            let mut nat = pbx_forwarded(b.clone());
            let t0 = Instant::now();
            let v = nat.inbound(sa("198.51.100.20:4000"), sa("203.0.113.1:10000"), t0);
            assert_eq!(
                v.forwarded(),
                Some((sa("198.51.100.20:4000"), sa("192.168.1.20:10000"))),
                "{b:?}"
            );
            // Long after the flow died, with nothing sent out: still in.
            let later = nat.inbound(
                sa("203.0.113.10:7000"),
                sa("203.0.113.1:19999"),
                t0 + Duration::from_secs(300),
            );
            assert!(later.forwarded().is_some(), "{b:?}: {later:?}");
            // A port outside the forward is filtered as before.
            let other = nat.inbound(sa("198.51.100.20:4000"), sa("203.0.113.1:9999"), t0);
            assert!(other.forwarded().is_none(), "{b:?}");
        }
    }

    #[test]
    fn a_forwarded_host_keeps_its_port_outbound_behind_a_symmetric_nat_and_others_do_not() {
        let mut nat = pbx_forwarded(NatType::Symmetric.behaviour());
        let t0 = Instant::now();
        let pbx = nat.outbound(sa("192.168.1.20:10000"), sa(S1), t0);
        assert_eq!(pbx.forwarded().unwrap().0, sa("203.0.113.1:10000"));
        // The same endpoint to a second remote: the same port (find_appropriate_src).
        let again = nat.outbound(sa("192.168.1.20:10000"), sa(S2), t0);
        assert_eq!(again.forwarded().unwrap().0, sa("203.0.113.1:10000"));
        // Its SIP port is not forwarded here: random, like any flow of this NAT.
        let sip = nat.outbound(sa("192.168.1.20:5060"), sa(S1), t0);
        assert_ne!(sip.forwarded().unwrap().0.port(), 5060);
        // Another host's forwarded-range port is not static.
        let other = nat.outbound(sa("192.168.1.10:10000"), sa(S2), t0);
        assert_ne!(other.forwarded().unwrap().0.port(), 10000);
    }

    #[test]
    fn the_far_end_sending_first_to_a_forwarded_port_cannot_take_it_from_its_host() {
        let mut nat = pbx_forwarded(NatType::PortRestrictedCone.behaviour());
        let t0 = Instant::now();
        let first = nat.inbound(sa("198.51.100.20:4000"), sa("203.0.113.1:10000"), t0);
        assert!(first.forwarded().is_some());
        // The host's answer is the reply of that flow: same port, no "who sends first" move.
        let answer = nat.outbound(sa("192.168.1.20:10000"), sa("198.51.100.20:4000"), t0);
        assert_eq!(
            answer.forwarded(),
            Some((sa("203.0.113.1:10000"), sa("198.51.100.20:4000")))
        );
        assert!(events(&mut nat).iter().all(|e| !matches!(
            e,
            BindingEvent::UnsolicitedHeld { .. }
                | BindingEvent::Created {
                    displaced_from: Some(_),
                    ..
                }
        )));
    }

    #[test]
    fn a_hairpinned_packet_to_a_forwarded_port_reaches_its_host_only_with_hairpinning() {
        for on in [true, false] {
            let mut nat =
                pbx_forwarded(NatType::PortRestrictedCone.behaviour().with_hairpinning(on));
            let v = nat.outbound(sa(ALICE), sa("203.0.113.1:10000"), Instant::now());
            assert_eq!(
                v.forwarded(),
                on.then(|| (sa("203.0.113.1:5060"), sa("192.168.1.20:10000"))),
                "hairpinning {on}"
            );
        }
    }

    #[test]
    fn address_dependent_filtering_names_the_address_it_refused() {
        let t0 = Instant::now();
        let mut nat = home(NatType::RestrictedCone.behaviour());
        let m = nat.outbound(sa(ALICE), sa(S1), t0).forwarded().unwrap().0;
        assert!(nat.inbound(sa(S2), m, t0).forwarded().is_some());
        let v = nat.inbound(sa("198.51.100.20:5060"), m, t0);
        assert_eq!(
            v.drop_reason().unwrap().to_string(),
            "filtered by address: 192.168.1.10:5060 never sent to 198.51.100.20 from \
             203.0.113.1:5060"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Out { host: u8, port: u8, remote: u8 },
            In { remote: u8, target: u8 },
            Wait(u16),
        }

        const PORTS: [u16; 3] = [4000, 4001, 5060];

        fn remote(i: u8) -> SocketAddrV4 {
            [
                "203.0.113.10:3478",
                "203.0.113.10:3479",
                "203.0.113.11:3478",
                "198.51.100.20:4000",
                "198.51.100.1:4000",
            ][usize::from(i) % 5]
                .parse()
                .unwrap()
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..2u8, 0..3u8, 0..5u8).prop_map(|(host, port, remote)| Op::Out {
                    host,
                    port,
                    remote
                }),
                (0..5u8, any::<u8>()).prop_map(|(remote, target)| Op::In { remote, target }),
                (0..3000u16).prop_map(Op::Wait),
            ]
        }

        fn behaviour() -> impl Strategy<Value = NatBehaviour> {
            (0..15usize, any::<bool>(), 1..4u32, any::<bool>()).prop_map(
                |(i, outbound_only, t, narrow)| {
                    let mut b = grid()[i].clone().with_udp_timeout(t);
                    if outbound_only {
                        b = b.with_refresh(Refresh::OutboundOnly);
                    }
                    if narrow {
                        // Few ports: clashes and exhaustion happen.
                        b = b.with_port_range(30000, 30003);
                    }
                    b
                },
            )
        }

        proptest! {
            /// No sequence panics; a binding lives exactly `timeout` past its last packet; with
            /// outbound-only refresh nothing gets in more than `timeout` after the last packet out
            /// of its external port.
            #[test]
            fn a_binding_never_outlives_its_timeout_since_its_last_packet(
                b in behaviour(),
                seed in any::<u64>(),
                ops in prop::collection::vec(op(), 1..80),
            ) {
                let timeout = Duration::from_secs(b.udp_timeout_secs.into());
                let outbound_only = b.refresh == Refresh::OutboundOnly;
                let mut nat = home(b).with_seed(seed);
                let t0 = Instant::now();
                let mut now = t0;
                let mut last: BTreeMap<Binding, Instant> = BTreeMap::new();
                let mut last_out_port: BTreeMap<u16, Instant> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Wait(n) => now += ms(n.into()),
                        Op::Out { host, port, remote: r } => {
                            let src = SocketAddrV4::new(
                                Ipv4Addr::new(192, 168, 1, 10 + host),
                                PORTS[usize::from(port)],
                            );
                            let dst = remote(r);
                            if let Some((ext, _)) = nat.outbound(src, dst, now).forwarded() {
                                last.insert(Binding { internal: src, external: ext, remote: dst }, now);
                                last_out_port.insert(ext.port(), now);
                            }
                        }
                        Op::In { remote: r, target } => {
                            let mut ports: Vec<u16> = PORTS.to_vec();
                            ports.extend(nat.bindings(now).iter().map(|v| v.binding.external.port()));
                            let dst = SocketAddrV4::new(
                                nat.public(),
                                ports[usize::from(target) % ports.len()],
                            );
                            let src = remote(r);
                            if let Some((_, internal)) = nat.inbound(src, dst, now).forwarded() {
                                last.insert(Binding { internal, external: dst, remote: src }, now);
                                if outbound_only {
                                    let out = last_out_port.get(&dst.port());
                                    prop_assert!(
                                        out.is_some_and(|t| now - *t < timeout),
                                        "{src} → {dst} got in {:?} after the last packet out",
                                        out.map(|t| now - *t)
                                    );
                                }
                            }
                        }
                    }
                    let views = nat.bindings(now);
                    for v in &views {
                        let seen = last.get(&v.binding);
                        prop_assert!(seen.is_some(), "{} exists without a packet", v.binding);
                        let idle = now - *seen.unwrap();
                        prop_assert!(idle < timeout, "{} outlived its timeout", v.binding);
                        prop_assert_eq!(v.time_left, timeout - idle);
                    }
                    for (b, t) in &last {
                        if now - *t < timeout {
                            prop_assert!(
                                views.iter().any(|v| v.binding == *b),
                                "{} died early", b
                            );
                        }
                    }
                    while nat.poll_event().is_some() {}
                }
            }
        }
    }
}
