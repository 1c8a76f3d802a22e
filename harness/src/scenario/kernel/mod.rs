//! The phases of a run that touch the kernel: build the lab (namespaces, veths, nftables NAT)
//! and watch it (capture on every link, conntrack's events), start the components on real
//! sockets inside it, play the timeline in real time, let it settle, and collect what the
//! capture and the components saw into an [`Observed`].
//!
//! Everything here needs root and takes as long as its timers. What leaves it is plain data: a
//! backend that plays the same file on the NAT model in virtual time replaces this module, and
//! nothing after it ([`super::judge`], [`super::report`]).
//!
//! [`Observed`]: super::observed::Observed

mod build;
mod call;
mod command;
mod field;
mod media;
mod observe;
mod play;
mod settle;
mod start;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

pub(super) use build::{build, reusable, watch, Lab};
pub(super) use observe::observe;
pub(super) use play::play;
pub(super) use settle::settle;
pub(super) use start::start;

use crate::capture::{self, Capture};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sip::driver::{ProxyTask, UaTask};
use crate::stun::StunServerTask;
use crate::topology::Topology;
use crate::turn::driver::{RelayedMediaTask, TurnServerTask};

/// The lab with everything started in it: what the steps act on. Dropping it stops every
/// component and program, then tears the namespaces down.
pub(super) struct Running {
    /// First, so dropped first, as it always was: namespaces go, then the tasks and programs
    /// that ran in them are stopped.
    pub topo: Topology,
    /// The run's clock: machines stamp events with [`Instant`]s, captures with wall time.
    pub clock: Clock,
    /// Built-in phones by SIP user.
    pub phones: BTreeMap<String, Phone>,
    /// Built-in proxies by host.
    pub proxies: BTreeMap<String, ProxyTask>,
    pub sbcs: Vec<crate::sbc::SbcTask>,
    /// Kamailio components by host.
    pub kamailios: BTreeMap<String, crate::sbc::kamailio::Kamailio>,
    pub stun: Vec<StunServerTask>,
    pub turn: Vec<TurnServerTask>,
    /// External programs started so far, by command name.
    pub commands: BTreeMap<String, Process>,
    /// SIP users answered by commands (`user = …`): user → host.
    pub external: BTreeMap<String, String>,
    /// The run's capture: the steps that wait on the wire read it, and media of external
    /// programs is judged from it. `None` once it has been stopped.
    pub capture: Option<Capture>,
}

/// A built-in phone: its SIP machine, its host and how its RTP leaves it.
pub(super) struct Phone {
    pub ua: UaTask,
    pub host: String,
    pub media: PhoneMedia,
}

/// How a phone's RTP leaves it.
pub(super) enum PhoneMedia {
    /// From its own RTP port (SDP: its interface address or the STUN mapping of that port).
    Direct {
        local: SocketAddr,
        latching: bool,
        duration: Duration,
    },
    /// Through a TURN allocation made when the phone started.
    Relayed(RelayedMediaTask),
    /// Over the candidate pair ICE nominates; candidates gathered when the phone started.
    Ice {
        task: crate::ice::IceMediaTask,
        duration: Duration,
    },
}

impl Running {
    /// What the run's capture holds so far (nothing once it has been stopped).
    fn frames(&self) -> Vec<capture::Frame> {
        self.capture
            .as_ref()
            .map(Capture::snapshot)
            .unwrap_or_default()
    }

    /// Whether a program is running that could answer SIP (a command or a Kamailio): the
    /// harness cannot ask it whether it has anything pending.
    fn programs(&self) -> bool {
        !self.commands.is_empty() || !self.kamailios.is_empty()
    }

    /// The host of the phone or program that answers as `user`.
    fn host_of(&self, user: &str) -> Option<&str> {
        self.phones
            .get(user)
            .map(|p| p.host.as_str())
            .or_else(|| self.external.get(user).map(String::as_str))
    }
}

/// The run's two clocks in one: machines stamp events with [`Instant`]s, the capture with the
/// kernel's wall time; everything observed is dated on the wall clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    started: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            started: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `at` on the wall clock.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.started)
    }

    pub fn now(&self) -> SystemTime {
        self.wall(Instant::now())
    }

    /// How long the run has taken so far.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn io_err(what: String) -> Error {
    Error::Io {
        what,
        source: std::io::ErrorKind::Other.into(),
    }
}

fn first_addr(topo: &Topology, host: &str) -> Result<Ipv4Addr> {
    Ok(topo.node(host)?.addr())
}
