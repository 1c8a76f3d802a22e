//! The machines a model run hosts, behind one surface: what the network needs of an endpoint
//! (its sockets, datagrams in and out, its deadline), whatever protocol it speaks.

use crate::machine::Machine as _;
use std::net::SocketAddr;
use std::time::Instant;

use crate::rtp::MediaStream;
use crate::sbc::{Sbc, SbcEvent};
use crate::sip::{self, Proxy, Ua};
use crate::stun::{BindingClient, StunServer};

/// One machine on one host.
pub enum Machine {
    Ua(Box<Ua>),
    Proxy(Box<Proxy>),
    Sbc(Box<Sbc>),
    StunServer(Box<StunServer>),
    StunClient(Box<BindingClient>),
    Media(Box<MediaStream>),
}

/// A datagram a machine wants sent: `(source socket, destination, bytes)`.
pub type Out = (SocketAddr, SocketAddr, Vec<u8>);

/// What a machine reported, for the run's judge and trace.
#[derive(Debug, Clone)]
pub enum Report {
    Sip(sip::Event),
    Mapped(SocketAddr),
}

/// A machine, the host it runs on, and what it reported with when.
pub struct Agent {
    pub host: String,
    /// The SIP user of a phone (or of a phone's media stream).
    pub user: Option<String>,
    pub machine: Machine,
    pub reports: Vec<(Instant, Report)>,
    /// Addresses the machine listens on (fixed for all but the SBC, whose relay grows).
    locals: Vec<SocketAddr>,
}

impl Agent {
    pub fn new(host: &str, user: Option<String>, machine: Machine) -> Self {
        let mut a = Self {
            host: host.to_string(),
            user,
            machine,
            reports: Vec::new(),
            locals: Vec::new(),
        };
        a.locals = a.compute_locals();
        a
    }

    fn compute_locals(&self) -> Vec<SocketAddr> {
        match &self.machine {
            Machine::Ua(u) => vec![u.config().local],
            Machine::Proxy(p) => vec![p.config().local],
            Machine::Sbc(s) => s.local_addresses(),
            Machine::StunServer(s) => s.local_addresses(),
            Machine::StunClient(c) => vec![c.local()],
            Machine::Media(m) => vec![m.local()],
        }
    }

    /// Whether the machine has a socket bound to `addr`.
    pub fn listens_on(&self, addr: SocketAddr) -> bool {
        match &self.machine {
            Machine::Sbc(s) => s.local_addresses().contains(&addr),
            _ => self.locals.contains(&addr),
        }
    }

    pub fn deliver(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        match &mut self.machine {
            Machine::Ua(u) => u.handle_datagram(from, bytes, now),
            Machine::Proxy(p) => p.handle_datagram(from, bytes, now),
            Machine::Sbc(s) => s.handle_datagram(local, from, bytes, now),
            Machine::StunServer(s) => s.handle_datagram(local, from, bytes, now),
            Machine::StunClient(c) => c.handle_datagram(local, from, bytes, now),
            Machine::Media(m) => m.handle_datagram(local, from, bytes, now),
        }
        self.drain(now);
    }

    pub fn fire(&mut self, now: Instant) {
        match &mut self.machine {
            Machine::Ua(u) => u.handle_timeout(now),
            Machine::Proxy(p) => p.handle_timeout(now),
            Machine::Sbc(s) => s.handle_timeout(now),
            Machine::StunServer(s) => s.handle_timeout(now),
            Machine::StunClient(c) => c.handle_timeout(now),
            Machine::Media(m) => m.handle_timeout(now),
        }
        self.drain(now);
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.machine {
            Machine::Ua(u) => u.poll_timeout(),
            Machine::Proxy(p) => p.poll_timeout(),
            Machine::Sbc(s) => s.poll_timeout(),
            Machine::StunServer(s) => s.poll_timeout(),
            Machine::StunClient(c) => c.poll_timeout(),
            Machine::Media(m) => m.poll_timeout(),
        }
    }

    pub fn transmit(&mut self) -> Option<Out> {
        match &mut self.machine {
            Machine::Ua(u) => u
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
            Machine::Proxy(p) => p
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
            Machine::Sbc(s) => s
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
            Machine::StunServer(s) => s
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
            Machine::StunClient(c) => c
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
            Machine::Media(m) => m
                .poll_transmit()
                .map(|t| (t.source, t.destination, t.payload)),
        }
    }

    /// Whether a SIP transaction of this machine is in progress (quiet-wait).
    pub fn pending(&self) -> bool {
        match &self.machine {
            Machine::Ua(u) => u.pending(),
            Machine::Proxy(p) => p.pending(),
            Machine::Sbc(s) => s.pending(),
            _ => false,
        }
    }

    /// Moves the machine's events into its reports, dated `now`.
    fn drain(&mut self, now: Instant) {
        match &mut self.machine {
            Machine::Ua(u) => {
                while let Some(e) = u.poll_event() {
                    self.reports.push((now, Report::Sip(e)));
                }
            }
            Machine::Proxy(p) => {
                while let Some(e) = p.poll_event() {
                    self.reports.push((now, Report::Sip(e)));
                }
            }
            Machine::Sbc(s) => {
                while let Some(e) = s.poll_event() {
                    if let SbcEvent::Sip(e) = e {
                        self.reports.push((now, Report::Sip(e)));
                    }
                }
            }
            Machine::StunServer(s) => while s.poll_event().is_some() {},
            Machine::StunClient(c) => {
                while let Some(e) = c.poll_event() {
                    if let crate::stun::Event::Mapped { mapped, .. } = e {
                        self.reports.push((now, Report::Mapped(mapped)));
                    }
                }
            }
            Machine::Media(m) => while m.poll_event().is_some() {},
        }
    }

    /// The SIP events reported so far.
    pub fn sip_events(&self) -> impl Iterator<Item = &sip::Event> {
        self.reports.iter().filter_map(|(_, r)| match r {
            Report::Sip(e) => Some(e),
            Report::Mapped(_) => None,
        })
    }
}
