//! Plays a checked [`Scenario`] on the model: the file's topology as a [`Net`], its built-in
//! components as sans-IO machines, its steps on a virtual clock that jumps from deadline to
//! deadline, then the same judge, ladder and snapshot as the kernel run ([`scenario::run`]).
//!
//! The timeline follows the kernel runner's, step by step, because the wire depends on it:
//! servers start before phones, a phone with `contact`/`media = "stun"` asks the STUN server
//! first, a call opens both phones' media sockets before the INVITE, the callee streams first and
//! the caller 20 ms after the callee's first RTP left its side, both stream for their
//! `media-ms` plus 400 ms, and the run ends 2·T1 after the last SIP once nothing is pending.
//!
//! [`scenario::run`]: crate::scenario::run

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::agent::{Agent, Machine, Report};
use super::net::{Fate, Net};
use crate::error::{Error, Result};
use crate::rtp::{MediaConfig, MediaReport, MediaStream};
use crate::sbc::Sbc;
use crate::scenario::file::{Component, ContactDef, MediaDef, Step, TransportDef};
use crate::scenario::judge::{self, Check};
use crate::scenario::observed::{Call, MediaPath, Observed, Phone};
use crate::scenario::{report, Outcome, RunOptions, Scenario, Verdict};
use crate::sip::{ContactSource, Event, Proxy, Timers, Ua};
use crate::stun::{BindingClient, ClientConfig, ServerConfig, StunServer};
use crate::trace::Trace;

/// Why the model cannot play `s`, in one line; `None` if it can.
pub fn refusal(s: &Scenario) -> Option<String> {
    for c in &s.file.components {
        match c.get_ref() {
            Component::Command { name, .. } => {
                return Some(format!(
                    "needs the external program of command `{name}`, which only the kernel runs"
                ))
            }
            Component::Kamailio { host, .. } => {
                return Some(format!(
                    "needs Kamailio (on {host}), which only the kernel runs"
                ))
            }
            Component::TurnServer { host, .. } => {
                return Some(format!("TURN (on {host}) is not played on the model yet"))
            }
            Component::Ua {
                ice: true, host, ..
            } => {
                return Some(format!(
                "{host} does ICE (connectivity checks over real NATs), not played on the model yet"
            ))
            }
            Component::Ua {
                media: MediaDef::Turn,
                host,
                ..
            } => {
                return Some(format!(
                    "{host} relays media through TURN, not played on the model yet"
                ))
            }
            Component::Ua {
                transport, host, ..
            } if *transport != TransportDef::Udp => {
                return Some(format!(
                    "{host} speaks SIP over TCP: the model carries datagrams and has no TCP"
                ))
            }
            _ => {}
        }
    }
    for r in &s.topology.routers {
        if r.nat.as_ref().is_some_and(|n| n.drop_fragments) || r.wan_mtu.is_some() {
            return Some(format!(
                "router {} drops fragments or sets its link MTU: the model carries datagrams \
                 whole and does not fragment them",
                r.name
            ));
        }
        if r.nat
            .as_ref()
            .is_some_and(|n| n.sip_alg == sim_nat::SipAlg::Kernel)
        {
            return Some(format!(
                "router {} runs the kernel SIP helper, whose rewrites the model does not make",
                r.name
            ));
        }
    }
    if let Some(h) = s.topology.hosts.iter().find(|h| h.mtu.is_some()) {
        return Some(format!(
            "host {} sets its link MTU: the model carries datagrams whole and does not fragment \
             them",
            h.name
        ));
    }
    for st in &s.file.steps {
        let what = match st.get_ref() {
            Step::StunCheck { .. } => "stun-check",
            Step::ClassifyNat { .. } => "classify-nat",
            Step::ProbeUdp { .. } => "probe-udp",
            Step::SetNat { .. } => "set-nat",
            _ => continue,
        };
        return Some(format!("step `{what}` is not played on the model yet"));
    }
    None
}

/// The running model: network, machines, clock.
struct World {
    net: Net,
    agents: Vec<Agent>,
    now: Instant,
    t1: Duration,
    /// When the last SIP message (pings aside) left a machine.
    last_sip: Option<Instant>,
    /// Whether an expectation reads media verdicts (without records, RTP is played only then).
    media_judged: bool,
}

impl World {
    /// Carries every datagram the machines want sent until none has anything left.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.agents.len() {
                while let Some((src, dst, payload)) = self.agents[i].transmit() {
                    moved = true;
                    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
                        continue;
                    };
                    if is_sip_not_ping(&payload) {
                        self.last_sip = Some(self.now);
                    }
                    let host = self.agents[i].host.clone();
                    if let Fate::Delivered {
                        host,
                        from,
                        to,
                        payload,
                        ..
                    } = self.net.send(&host, s, d, &payload, self.now)
                    {
                        let to = SocketAddr::V4(to);
                        let now = self.now;
                        if let Some(a) = self
                            .agents
                            .iter_mut()
                            .find(|a| a.host == host && a.listens_on(to))
                        {
                            a.deliver(to, SocketAddr::V4(from), &payload, now);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs every deadline up to `until`, stopping early once `done` holds; the clock ends at
    /// `until` or at the instant `done` first held. Returns whether `done` held.
    fn run_until(&mut self, until: Instant, mut done: impl FnMut(&World) -> bool) -> bool {
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            let next = self.agents.iter().filter_map(Agent::deadline).min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    for a in &mut self.agents {
                        if a.deadline().is_some_and(|d| d <= now) {
                            a.fire(now);
                        }
                    }
                }
                _ => {
                    self.now = self.now.max(until);
                    self.flush();
                    return done(self);
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    fn ua(&self, user: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|a| matches!(a.machine, Machine::Ua(_)) && a.user.as_deref() == Some(user))
    }

    fn ua_mut(&mut self, i: usize) -> &mut Ua {
        match &mut self.agents[i].machine {
            Machine::Ua(u) => u,
            _ => unreachable!("index of a phone"),
        }
    }

    fn pending(&self) -> bool {
        self.agents.iter().any(Agent::pending)
    }

    /// Nothing pending, and the last SIP 2·T1 ago (the kernel runner's quiet-wait).
    fn quiet(&self) -> bool {
        !self.pending()
            && self
                .last_sip
                .is_none_or(|at| self.now.duration_since(at) >= (self.t1 * 2).max(QUIET_FLOOR))
    }

    /// Runs a STUN Binding from `local` on `host` to `server`: the mapped address.
    fn stun_binding(
        &mut self,
        host: &str,
        local: SocketAddr,
        server: SocketAddr,
    ) -> Result<SocketAddr> {
        let mut c = BindingClient::new(local, server, ClientConfig::default());
        c.bind(self.now);
        self.agents
            .push(Agent::new(host, None, Machine::StunClient(Box::new(c))));
        let i = self.agents.len() - 1;
        let until = self.now + Duration::from_secs(40);
        self.run_until(until, |w| {
            w.agents[i]
                .reports
                .iter()
                .any(|r| matches!(r.1, Report::Mapped(_)))
        });
        let agent = self.agents.remove(i);
        agent
            .reports
            .iter()
            .find_map(|(_, r)| match r {
                Report::Mapped(m) => Some(*m),
                _ => None,
            })
            .ok_or_else(|| Error::Io {
                what: format!("STUN Binding from {local} in {host} to {server}: no answer"),
                source: std::io::ErrorKind::TimedOut.into(),
            })
    }
}

/// Whether `payload` is a SIP message other than a NAT ping (OPTIONS and its answers), as the
/// kernel runner's quiet-wait counts SIP; read off the bytes, not decoded, to keep properties at
/// model speed.
fn is_sip_not_ping(payload: &[u8]) -> bool {
    let sip = payload.first().is_some_and(u8::is_ascii_uppercase);
    let ping = payload.starts_with(b"OPTIONS ")
        || (1..payload.len()).any(|i| {
            payload[i] == b'O' && payload[i - 1] == b' ' && payload[i..].starts_with(b"OPTIONS\r\n")
        });
    sip && !ping
}

/// The shortest quiet-wait, as the kernel runner's (what was sent must reach the capture).
const QUIET_FLOOR: Duration = Duration::from_millis(100);

/// A phone's media settings.
struct PhoneMedia {
    local: SocketAddr,
    latching: bool,
    duration: Duration,
}

/// What the steps leave for the judge: every call placed, in order.
#[derive(Default)]
struct Played {
    calls: Vec<Call>,
}

fn host_addr(s: &Scenario, host: &str) -> Result<std::net::Ipv4Addr> {
    s.topology
        .hosts
        .iter()
        .find(|h| h.name == host)
        .and_then(|h| h.addrs.first().copied())
        .ok_or_else(|| Error::NoSuchNode(host.to_string()))
}

fn registrar_addr(s: &Scenario, proxy: &str) -> Result<SocketAddr> {
    if let Ok(a) = proxy.parse() {
        return Ok(a);
    }
    let (host, port) = crate::scenario::file::registrar_of(&s.file.components, proxy)
        .ok_or_else(|| Error::Topology(format!("no registrar called `{proxy}`")))?;
    Ok(SocketAddr::new(host_addr(s, host)?.into(), port))
}

/// Starts the components in the kernel runner's order: servers, then phones.
fn start(s: &Scenario, w: &mut World) -> Result<BTreeMap<String, PhoneMedia>> {
    let timers = Timers::scaled(w.t1);
    let mut media = BTreeMap::new();
    let mut comps: Vec<&Component> = s.file.components.iter().map(|c| c.get_ref()).collect();
    comps.sort_by_key(|c| c.start_order());
    for comp in comps {
        match comp {
            Component::StunServer { host } => {
                let addrs = &s
                    .topology
                    .hosts
                    .iter()
                    .find(|h| &h.name == host)
                    .ok_or_else(|| Error::NoSuchNode(host.clone()))?
                    .addrs;
                let cfg = match addrs.as_slice() {
                    [a, b, ..] => ServerConfig::rfc5780(
                        SocketAddr::new((*a).into(), 3478),
                        SocketAddr::new((*b).into(), 3479),
                    ),
                    [a] => ServerConfig::new(SocketAddr::new((*a).into(), 3478)),
                    [] => return Err(Error::Topology(format!("{host} has no address"))),
                };
                let server = StunServer::new(cfg).map_err(|e| Error::Stun {
                    what: format!("STUN server on {host}"),
                    source: e,
                })?;
                w.agents.push(Agent::new(
                    host,
                    None,
                    Machine::StunServer(Box::new(server)),
                ));
            }
            Component::Sbc { host, .. } => {
                let cfg = comp
                    .sbc_config(host_addr(s, host)?, timers)
                    .expect("an sbc");
                let sbc = Machine::Sbc(Box::new(Sbc::new(cfg)));
                w.agents.push(Agent::new(host, None, sbc));
            }
            Component::Proxy { host, .. } => {
                let cfg = comp
                    .proxy_config(host_addr(s, host)?, timers)
                    .expect("a proxy");
                let proxy = Machine::Proxy(Box::new(Proxy::new(cfg)));
                w.agents.push(Agent::new(host, None, proxy));
            }
            Component::Ua {
                host,
                user,
                port,
                proxy,
                contact,
                stun_server,
                media_port,
                media: media_def,
                latching,
                media_ms,
                externip,
                localnet,
                ..
            } => {
                let addr = host_addr(s, host)?;
                let user = user.clone().unwrap_or_else(|| host.clone());
                let proxy_addr = registrar_addr(s, proxy)?;
                let local = SocketAddr::new(addr.into(), *port);
                let mut cfg = comp
                    .ua_config(&user, local, proxy_addr, timers)
                    .expect("a ua component");
                let stun_addr = match stun_server {
                    Some(h) => Some(SocketAddr::new(host_addr(s, h)?.into(), 3478)),
                    None => None,
                };
                if *contact == ContactDef::Stun {
                    let stun = stun_addr.expect("checked: contact = stun has a server");
                    let mapped = w.stun_binding(host, local, stun)?;
                    cfg.contact = ContactSource::External(mapped);
                }
                let media_local = SocketAddr::new(addr.into(), *media_port);
                let sdp = if *media_def == MediaDef::Stun {
                    let stun = stun_addr.expect("checked: media = stun has a server");
                    w.stun_binding(host, media_local, stun)?
                } else {
                    media_local
                };
                crate::scenario::file::set_phone_addresses(&mut cfg, sdp, *externip, localnet);
                media.insert(
                    user.clone(),
                    PhoneMedia {
                        local: media_local,
                        latching: *latching,
                        duration: Duration::from_millis(*media_ms),
                    },
                );
                w.agents.push(Agent::new(
                    host,
                    Some(user),
                    Machine::Ua(Box::new(Ua::new(cfg))),
                ));
            }
            Component::TurnServer { .. }
            | Component::Kamailio { .. }
            | Component::Command { .. } => {
                unreachable!("refused before the run")
            }
        }
    }
    Ok(media)
}

/// The newest event of phone `i` matching `m` after the first `before`.
fn count(w: &World, i: usize, m: impl Fn(&Event) -> bool) -> usize {
    w.agents[i].sip_events().filter(|e| m(e)).count()
}

/// Plays the steps.
fn play(
    s: &Scenario,
    w: &mut World,
    media: &BTreeMap<String, PhoneMedia>,
    p: &mut Played,
) -> Result<()> {
    for step in &s.file.steps {
        match step.get_ref() {
            Step::Register { ua, timeout_ms } => {
                let i = w.ua(ua).ok_or_else(|| Error::NoSuchNode(ua.clone()))?;
                let done = |e: &Event| {
                    matches!(
                        e,
                        Event::Registered { .. } | Event::RegistrationFailed { .. }
                    )
                };
                let before = count(w, i, done);
                let now = w.now;
                w.ua_mut(i).register(now);
                let until = w.now + Duration::from_millis(*timeout_ms);
                w.run_until(until, |w| count(w, i, done) > before);
            }
            Step::Call {
                from,
                to,
                hold_ms,
                timeout_ms,
            } => {
                call(w, media, p, from, to, *hold_ms, *timeout_ms)?;
            }
            Step::Wait { ms } => w.run_for(Duration::from_millis(*ms)),
            Step::ExpireBinding { router, host, port } => {
                let addr = SocketAddrV4::new(host_addr(s, host)?, *port);
                let now = w.now;
                w.net
                    .nat_mut(router)
                    .ok_or_else(|| Error::NoSuchNode(router.clone()))?
                    .expire(addr, now);
            }
            Step::FlushBindings { router } => {
                let now = w.now;
                w.net
                    .nat_mut(router)
                    .ok_or_else(|| Error::NoSuchNode(router.clone()))?
                    .flush(now);
            }
            Step::SetNatHandling { proxy, value } => {
                let h = value.handling();
                for a in &mut w.agents {
                    if &a.host == proxy {
                        if let Machine::Proxy(p) = &mut a.machine {
                            p.set_nat_handling(h);
                        }
                    }
                }
            }
            Step::SetNat { .. }
            | Step::Start { .. }
            | Step::WaitExit { .. }
            | Step::StunCheck { .. }
            | Step::ClassifyNat { .. }
            | Step::ProbeUdp { .. } => unreachable!("refused before the run"),
        }
    }
    Ok(())
}

/// A `call` step, as the kernel runner plays it between two of our phones.
#[allow(clippy::too_many_arguments)]
fn call(
    w: &mut World,
    media: &BTreeMap<String, PhoneMedia>,
    p: &mut Played,
    from: &str,
    to: &str,
    hold_ms: u64,
    timeout_ms: u64,
) -> Result<()> {
    let caller = w
        .ua(from)
        .ok_or_else(|| Error::NoSuchNode(from.to_string()))?;
    let callee = w.ua(to);
    // Both phones' media sockets exist from the offer on.
    let mut streams = Vec::new();
    for (user, i) in [(from, Some(caller)), (to, callee)] {
        if let (Some(m), Some(i)) = (media.get(user), i) {
            let mut cfg = MediaConfig::pcmu(m.local, None);
            cfg.latching = m.latching;
            cfg.duration = m.duration;
            let host = w.agents[i].host.clone();
            w.agents.push(Agent::new(
                &host,
                Some(user.to_string()),
                Machine::Media(Box::new(MediaStream::new(cfg))),
            ));
            streams.push(w.agents.len() - 1);
        }
    }
    let est = |e: &Event| matches!(e, Event::CallEstablished { .. });
    let callee_before = callee.map_or(0, |i| count(w, i, est));
    let now = w.now;
    let id = w.ua_mut(caller).call(to, now).map_err(|e| Error::Io {
        what: format!("{from} calls {to}: {e}"),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let final_of = |w: &World| {
        w.agents[caller].sip_events().find_map(|e| match e {
            Event::CallEstablished { call_id, .. } if call_id == &id => Some(200),
            Event::CallFailed { call_id, status } if call_id == &id => Some(*status),
            _ => None,
        })
    };
    let deadline = w.now + Duration::from_millis(timeout_ms);
    w.run_until(deadline, |w| final_of(w).is_some() || w.quiet());
    let status = final_of(w).unwrap_or(0);
    let mut report = None;
    let remote_of = |w: &World, i: usize, nth: usize| {
        w.agents[i]
            .sip_events()
            .filter_map(|e| match e {
                Event::CallEstablished {
                    call_id,
                    remote_media,
                } => Some((call_id.clone(), *remote_media)),
                _ => None,
            })
            .nth(nth)
    };
    if status == 200 {
        if let (Some(ci), [sa, sb]) = (callee, streams.as_slice()) {
            let caller_remote = w.agents[caller].sip_events().find_map(|e| match e {
                Event::CallEstablished {
                    call_id,
                    remote_media,
                } if call_id == &id => *remote_media,
                _ => None,
            });
            let until = w.now + Duration::from_secs(5);
            w.run_until(until, |w| count(w, ci, est) > callee_before);
            let callee_remote = remote_of(w, ci, callee_before).and_then(|(_, m)| m);
            if let (Some(a), Some(b)) = (caller_remote, callee_remote) {
                if w.net.record || w.media_judged {
                    report = Some(stream(w, (*sa, a), (*sb, b), media, from, to));
                } else {
                    // Nothing reads the RTP: its time passes, its packets are not played.
                    w.run_for(media_time(media, from, to) + MEDIA_TAIL);
                }
            }
        }
        if hold_ms > 0 {
            w.run_for(Duration::from_millis(hold_ms));
            let now = w.now;
            w.ua_mut(caller).hang_up(&id, now);
            let ended = |w: &World| {
                w.agents[caller]
                    .sip_events()
                    .any(|e| matches!(e, Event::CallEnded { call_id } if call_id == &id))
            };
            let until = w.now + Duration::from_secs(10);
            w.run_until(until, ended);
        }
    }
    // The media sockets close with the step.
    for i in streams.into_iter().rev() {
        w.agents.remove(i);
    }
    p.calls.push(Call {
        from: from.to_string(),
        to: to.to_string(),
        status,
        media: report,
    });
    Ok(())
}

/// The longer of two phones' `media-ms`.
fn media_time(media: &BTreeMap<String, PhoneMedia>, caller: &str, callee: &str) -> Duration {
    [caller, callee]
        .iter()
        .filter_map(|u| media.get(*u).map(|m| m.duration))
        .max()
        .unwrap_or_default()
}

/// From the callee's first RTP to the end of media: the caller's 20 ms later start, then
/// `media-ms` + 400 ms, as the kernel runner waits.
const MEDIA_TAIL: Duration = Duration::from_millis(420);

/// Streams RTP both ways (the callee first, the caller 20 ms after the callee's first RTP left
/// its side) for the longer `media-ms` plus 400 ms, and judges it.
fn stream(
    w: &mut World,
    (caller_i, to_callee): (usize, SocketAddr),
    (callee_i, to_caller): (usize, SocketAddr),
    media: &BTreeMap<String, PhoneMedia>,
    caller: &str,
    callee: &str,
) -> MediaReport {
    let longest = media_time(media, caller, callee);
    let now = w.now;
    for (i, dest) in [(callee_i, to_caller), (caller_i, to_callee)] {
        if let Machine::Media(m) = &mut w.agents[i].machine {
            m.set_destination(dest);
        }
    }
    if let Machine::Media(m) = &mut w.agents[callee_i].machine {
        m.start(now);
    }
    // Zero latency: the callee's first packet has left its side at once.
    w.run_for(Duration::from_millis(20));
    let now = w.now;
    if let Machine::Media(m) = &mut w.agents[caller_i].machine {
        m.start(now);
    }
    w.run_for(longest + Duration::from_millis(400));
    let stats = |w: &World, i: usize| match &w.agents[i].machine {
        Machine::Media(m) => m.stats().clone(),
        _ => Default::default(),
    };
    MediaReport::new(&stats(w, caller_i), &stats(w, callee_i), 0.95)
}

/// Plays `s` to its end: the world after settling, what the steps left, and a step's error.
fn play_all(s: &Scenario, record: bool) -> Result<(World, Played, Option<String>)> {
    if let Some(why) = refusal(s) {
        return Err(Error::ModelRefused {
            file: s.name().to_string(),
            why,
        });
    }
    let origin = Instant::now();
    let mut net = Net::new(&s.topology, origin)?;
    net.record = record;
    let mut w = World {
        net,
        agents: Vec::new(),
        now: origin,
        t1: Duration::from_millis(s.file.scenario.t1_ms),
        last_sip: None,
        media_judged: s
            .file
            .expects
            .iter()
            .any(|e| matches!(e.get_ref(), crate::scenario::file::Expect::Media { .. })),
    };
    let media = start(s, &mut w)?;
    let mut played = Played::default();
    let error = play(s, &mut w, &media, &mut played)
        .err()
        .map(|e| e.to_string());
    // Settle: phones wind down, then quiet-wait (never past 80·T1).
    for a in &mut w.agents {
        if let Machine::Ua(u) = &mut a.machine {
            u.wind_down();
        }
    }
    let until = w.now + w.t1 * 80;
    w.run_until(until, World::quiet);
    Ok((w, played, error))
}

/// What the model run observed, in the form both backends hand to the judge and the report
/// (`scenario::observed`): the per-link records, each phone's and proxy's SIP events on the
/// records' clock, the calls, the ports NATs moved.
fn observed(mut w: World, played: Played, error: Option<String>) -> Observed {
    let frames = w.net.take_frames();
    let mut o = Observed {
        trace: Trace::from_frames(&frames),
        frames,
        moved_ports: w.net.moved_ports().to_vec(),
        ..Observed::default()
    };
    for a in &w.agents {
        let events = a
            .reports
            .iter()
            .filter_map(|(at, r)| match r {
                Report::Sip(e) => Some((w.net.wall(*at), e.clone())),
                Report::Mapped(_) => None,
            })
            .collect();
        match (&a.machine, &a.user) {
            (Machine::Ua(_), Some(user)) => {
                o.phones.insert(
                    user.clone(),
                    Phone {
                        host: a.host.clone(),
                        media: MediaPath::Direct,
                        events,
                    },
                );
            }
            (Machine::Proxy(_) | Machine::Sbc(_), _) => {
                o.proxies.entry(a.host.clone()).or_default().extend(events);
            }
            _ => {}
        }
    }
    o.timeline.calls = played.calls;
    o.timeline.error = error;
    o
}

/// The verdict and checks of `s` on the model, with no records kept: what a property needs, at
/// model speed. Expectations on packets (`packet`, `timing`) see no packets here; use [`run`].
pub fn verdict(s: &Scenario) -> Result<(Verdict, Vec<Check>)> {
    let (w, played, error) = play_all(s, false)?;
    let failed = error.is_some();
    let checks = judge::judge(s, &observed(w, played, error));
    let verdict = if !failed && checks.iter().all(|c| c.1) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    Ok((verdict, checks))
}

/// The calls `s` places on the model, in order, each with its final status and, when it was
/// established and a `media` expectation made the model play RTP, its media: what a
/// differential property compares with the kernel's run. No records are kept.
pub fn calls(s: &Scenario) -> Result<Vec<Call>> {
    let (_, played, _) = play_all(s, false)?;
    Ok(played.calls)
}

/// Runs `s` on the model and reports as [`crate::scenario::run`] does, through the same judge
/// and report: verdict, checks, ladder, snapshot, trace, the NAT model's explanations, and one
/// synthesized pcap per link under `opts.out_dir`.
pub fn run(s: &Scenario, opts: &RunOptions) -> Result<Outcome> {
    let started = Instant::now();
    let (w, played, error) = play_all(s, true)?;
    let o = observed(w, played, error);
    let checks = judge::judge(s, &o);
    let mut outcome = report::outcome(s, &o, checks);
    if let Some(dir) = &opts.out_dir {
        outcome.pcaps = report::write_files(dir, s, &o, &outcome.ladder)?;
    }
    outcome.duration = started.elapsed();
    Ok(outcome)
}
