//! Property tests of NAT binding timeouts against a phone's keep-alive and re-registration
//! settings, on the kernel NAT, with sim-nat's [`NatModel`] as the oracle (issue 8).
//!
//! A [`Case`] is a NAT (an RFC 3489 type, refreshed by traffic in both directions or outbound
//! only), its UDP binding timeout (1–3 s), the phone's keep-alive (none, CRLF, OPTIONS or an
//! RFC 5626 STUN Binding request from the SIP socket, which the registrar answers on the same
//! flow, and its interval), the registration expiry it asks for (it re-registers at half of it), the registrar
//! (the far-end proxy, or our SBC pinging the phone: no pings, CRLF or OPTIONS, and their
//! interval), and when the call comes: after the phone's n-th outbound packet (0: the REGISTER),
//! by some delay, plus a little jitter — so a shrunk case reads "the call came 1160 ms after the
//! REGISTER". Each case is turned into a scenario file by [`harness::scenario::emit`] *first*,
//! parsed back, and run from what the file says: the topology is the file's, the components and
//! the timeline are the file's. So a counterexample printed as a file is exactly what ran, and
//! `harness run case.toml` replays it.
//!
//! # Properties
//! 1. [`kernel_agrees_with_the_model`]: every datagram the registrar sends towards the phone
//!    (REGISTER and OPTIONS answers, CRLF pongs, the INVITE) reaches it on the kernel iff
//!    `NatModel`, fed the packets that really crossed the router at the instants they crossed it,
//!    forwards it; in particular the incoming INVITE gets through iff the binding the registrar
//!    stored was refreshed by an outbound packet (keep-alive, re-REGISTER) within the timeout
//!    before it — or, with our SBC, by one of its NAT pings: on a NAT refreshed by inbound traffic
//!    too (Linux, `Refresh::Both`) any ping that reached the phone, on any NAT an OPTIONS ping the
//!    phone answered (its 200 OK is outbound); the model is fed the pings as they left the SBC's
//!    SIP socket and the phone's answers as it sent them. For port-preserving NATs that is "some
//!    refresh within the timeout"; for the symmetric NAT (random ports) a keep-alive after an
//!    expiry opens a *new* mapping the registrar does not know, so only a gapless chain of
//!    refreshes since the last REGISTER keeps the phone reachable. The model knows both; a closed formula would need a case per NAT.
//! 2. [`phone_is_reachable`]: whenever a refresh (keep-alive or re-registration) runs at an
//!    interval shorter than the timeout, the incoming INVITE reaches the phone, whenever it comes.
//!    The same check on a keep-alive 1 s *longer* than the timeout must fail, and does:
//!    `a_keepalive_one_second_longer_than_the_timeout_is_caught_…` shrinks the counterexample,
//!    prints it as a scenario file and replays that file with the scenario runner.
//! 3. The binding lifetime RFC 5780 discovery measures (`harness::stun`'s lifetime probe) is the
//!    configured timeout, for every NAT type, refresh direction and timeout (all 24 combinations,
//!    not sampled: there are only 24).
//!
//! "Reaches the phone" means the *first* INVITE transmission: T1 is 250 ms, so the first
//! retransmission comes 250 ms after the INVITE, and the call must be established within
//! [`CALL_WINDOW`] (150 ms; the phone answers after 20 ms). A case therefore ends 200 ms after its
//! call instead of waiting 64·T1 for a 408, and the emitted file says the same in the existing
//! vocabulary: `timeout-ms = 150` on the call and `expect call status 200` (and `rang`), or
//! `status 0` — no final response within the timeout — when the INVITE is lost.
//!
//! # Margins
//! Conntrack counts its timeouts in jiffies, and on a 2-core runner that brings up dozens of
//! namespaces the phone's timers and the call fire a few (rarely tens of) milliseconds late.
//! Cases are not retried; instead no case is *generated* within ±[`MARGIN`] (150 ms) of a
//! boundary: the model's verdict on the planned schedule must not change when the INVITE moves
//! anywhere in ±150 ms (checked every 10 ms) nor when the SBC's pings, on their own timer, move
//! anywhere in ±150 ms (every 50 ms), and for a NAT that does not preserve ports no gap
//! between two of the phone's packets may be within 150 ms of the timeout. The run is then judged
//! against the model fed the *observed* packet times, and a run whose INVITE verdict differs
//! between the planned and the observed schedule is reported as drift, never silently passed.
//!
//! # Running cases concurrently, and shrinking
//! proptest's runner is synchronous, so one proptest case is a *batch* ([`Batch`]): a `Vec` of
//! cases, every topology of which is brought up first and whose timelines then run concurrently
//! in one tokio runtime shared by the file's tests. Bring-ups (both cores busy with namespaces and
//! `nft` for seconds) never overlap any timeline, of this batch or of another test ([`QUIET`]).
//! A batch fails if any of its cases does, and then shrinks element-wise, like
//! proptest's own `Vec`: first it drops cases one at a time (down to one), then it shrinks each
//! remaining case field by field. Every case's run is memoised ([`MEMO`]), so dropping a case
//! costs nothing, and each shrinking step runs only the one case that changed on the kernel.
//!
//! Failures are saved by proptest under `tests/proptest-regressions/properties/` (one file per
//! property, replayed first on the next run; a saved seed regenerates its whole batch, so it costs
//! one batch per run). The broken-setting test saves nothing: its failure is the expected outcome,
//! and it uses a fixed seed, so its batch and its shrinking path are the same on every run.
//!
//! Property 2 draws the registrar too (proxy or SBC with or without pings): pings only add
//! refreshes, so a phone refreshing faster than the timeout must stay reachable behind either.
//!
//! # Not covered
//! The kernel SIP helper keeps SIP flows for an hour whatever the timeout (kernel-facts), so
//! every NAT here has it off. A STUN keep-alive's answer that shows the flow moved makes the
//! phone re-register at once (RFC 5626 §4.4.2); the oracle plays that REGISTER, but not the shift
//! it gives the phone's own re-registration timer, so such a move is only generated when no
//! re-registration is due before the call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use futures::future::join_all;
use harness::capture::{self, Capture, Frame, Vantage};
use harness::rtp::Machine;
use harness::sbc::{Sbc, SbcConfig};
use harness::scenario::emit::{self, CallExpectation, IncomingCall, Registrar};
use harness::scenario::file::{Component, Step};
use harness::scenario::{self, RunOptions, Scenario};
use harness::shapes::{self, SERVER, SERVER_ALT};
use harness::sip::{
    Datagram, Direction, Event, KeepAlive, Media, ProxyConfig, ProxyTask, Timers, UaConfig, UaTask,
};
use harness::stun::{
    self, DiscoveryConfig, LifetimeProbe, RetransmitConfig, ServerConfig, StunServerTask, Transmit,
};
use harness::trace::udp_of;
use harness::turn::driver::MachineTask;
use harness::Topology;
use proptest::sample::select;
use proptest::strategy::{NewTree, Strategy, ValueTree};
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError,
    TestRng, TestRunner,
};
use sim_nat::{NatBehaviour, NatModel, NatType, PortAllocation, Refresh};
use tests::require_kernel;

/// SIP T1: the first INVITE retransmission comes this long after the INVITE. Not longer: the
/// scenario runner waits for 10·T1 of SIP silence before it judges, so replaying an emitted
/// counterexample takes about 25·T1.
const T1: Duration = Duration::from_millis(250);
/// How long the phone rings before it answers.
const ANSWER_AFTER: Duration = Duration::from_millis(20);
/// How long the caller waits for the call (the call step's `timeout-ms`): well after an answered
/// first INVITE (~20 ms), before an answered retransmission (≥ T1 + 20 ms).
const CALL_WINDOW: Duration = Duration::from_millis(150);
/// No case is generated within this distance of a boundary (see the module docs).
const MARGIN: Duration = Duration::from_millis(150);
/// How finely the margin is scanned.
const MARGIN_STEP: Duration = Duration::from_millis(10);
/// A round trip through the router in the planned schedule (measured well under 1 ms).
const RTT: Duration = Duration::from_millis(1);
/// The longest the capture may lag behind the sockets before what it has not seen is reported
/// as missed (it lags by microseconds; this only bounds a broken capture).
const CAPTURE_WAIT: Duration = Duration::from_secs(2);
/// After the call window: lets datagrams in flight reach their sockets' histories.
const SETTLE: Duration = Duration::from_millis(50);
/// How long a registration may take (one round trip, normally).
const STEP: Duration = Duration::from_secs(3);

/// Cases per batch of property 1 and of property 2: together ~64 cases in one batch each.
const AGREEMENT_BATCH: usize = 48;
const REACHABLE_BATCH: usize = 16;
/// The broken-setting test's batch: enough that some case lands in a dead window.
const BROKEN_BATCH: usize = 8;
/// The latest a call may come, from the first REGISTER: keeps a batch under ~10 s.
const MAX_CALL: Duration = Duration::from_secs(7);

const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const PHONE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 5060);
const REGISTRAR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 5060);
const LAN: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 168, 1, 1), 24);

// --- cases ---------------------------------------------------------------------------------------

/// How the phone keeps its binding open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeepAliveSetting {
    Off,
    Crlf {
        interval_ms: u64,
    },
    Options {
        interval_ms: u64,
    },
    /// RFC 5626 STUN Binding requests to the registrar from the SIP socket (phones only).
    Stun {
        interval_ms: u64,
    },
}

impl KeepAliveSetting {
    fn sip(self) -> Option<KeepAlive> {
        match self {
            Self::Off => None,
            Self::Crlf { interval_ms } => Some(KeepAlive::Crlf(ms(interval_ms))),
            Self::Options { interval_ms } => Some(KeepAlive::Options(ms(interval_ms))),
            Self::Stun { interval_ms } => Some(KeepAlive::Stun(ms(interval_ms))),
        }
    }

    fn interval(self) -> Option<Duration> {
        self.sip().map(|k| k.interval())
    }

    /// `("CRLF", 1000)`: the mechanism's name and interval, `None` when off.
    fn parts(self) -> Option<(&'static str, u64)> {
        match self {
            Self::Off => None,
            Self::Crlf { interval_ms } => Some(("CRLF", interval_ms)),
            Self::Options { interval_ms } => Some(("OPTIONS", interval_ms)),
            Self::Stun { interval_ms } => Some(("STUN", interval_ms)),
        }
    }

    /// One of the phone's mechanisms (`kind` 0: CRLF, 1: OPTIONS, 2: STUN).
    fn phone(kind: u8, interval_ms: u64) -> Self {
        match kind {
            0 => Self::Crlf { interval_ms },
            1 => Self::Options { interval_ms },
            _ => Self::Stun { interval_ms },
        }
    }
}

impl fmt::Display for KeepAliveSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parts() {
            None => f.write_str("no keep-alive"),
            Some((k, n)) => write!(f, "{k} keep-alive every {n} ms"),
        }
    }
}

/// What registers the phone: the far-end proxy, or our SBC with its NAT pings (none, CRLF or
/// OPTIONS, and their interval; a ping leaves from the SBC's SIP socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RegistrarSetting {
    Proxy,
    Sbc(KeepAliveSetting),
}

impl RegistrarSetting {
    fn emitted(self) -> Registrar {
        match self {
            Self::Proxy => Registrar::Proxy,
            Self::Sbc(p) => Registrar::Sbc { ping: p.sip() },
        }
    }
}

impl fmt::Display for RegistrarSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proxy => f.write_str("far-end proxy"),
            Self::Sbc(p) => match p.parts() {
                None => f.write_str("SBC without NAT pings"),
                Some((k, n)) => write!(f, "SBC with {k} pings every {n} ms"),
            },
        }
    }
}

/// One concrete binding-timeout case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Case {
    nat: NatType,
    refresh: Refresh,
    timeout_secs: u32,
    keepalive: KeepAliveSetting,
    /// The registration lifetime the phone asks for; it re-registers at half of it.
    expires_secs: u32,
    /// The call comes after the phone's packet number `after_packet` (0: the REGISTER; counted in
    /// the order the phone sends REGISTERs and keep-alives)…
    after_packet: usize,
    /// …this long after it…
    delay_ms: u64,
    /// …plus this little jitter (shrinks to 0).
    jitter_ms: u64,
    /// The registrar (last: it shrinks to the proxy once the rest is minimal).
    registrar: RegistrarSetting,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Case {
    fn behaviour(&self) -> NatBehaviour {
        self.nat
            .behaviour()
            .with_udp_timeout(self.timeout_secs)
            .with_refresh(self.refresh)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.into())
    }

    /// How often the phone re-registers.
    fn reregister_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.expires_secs) * 500)
    }

    /// The shortest interval at which something refreshes the binding.
    fn refresh_interval(&self) -> Duration {
        let reg = self.reregister_every();
        self.keepalive.interval().map_or(reg, |k| k.min(reg))
    }

    fn refresh_name(&self) -> &'static str {
        match self.refresh {
            Refresh::Both => "both",
            Refresh::OutboundOnly => "outbound-only",
        }
    }

    fn name(&self) -> String {
        let ka = match self.keepalive.parts() {
            None => "no-keepalive".to_string(),
            Some((k, n)) => format!("{}-{n}ms", k.to_lowercase()),
        };
        let reg = match self.registrar {
            RegistrarSetting::Proxy => String::new(),
            RegistrarSetting::Sbc(p) => match p.parts() {
                None => "-sbc".into(),
                Some((k, n)) => format!("-sbc-{}-{n}ms", k.to_lowercase()),
            },
        };
        format!(
            "binding-timeout-{}-{}-{}s-{ka}-expires-{}s-call-{}ms{reg}",
            self.nat,
            self.refresh_name(),
            self.timeout_secs,
            self.expires_secs,
            self.wait_ms()
        )
    }

    /// What the phone sends on its own until `horizon`: offsets from the first REGISTER.
    fn packets(&self, horizon: Duration) -> Vec<(Duration, Sent)> {
        let mut sent = Vec::new();
        // The phone refreshes its registration half the granted lifetime after each 200 OK.
        let mut t = Duration::ZERO;
        while t <= horizon {
            sent.push((t, Sent::Register));
            if matches!(self.keepalive, KeepAliveSetting::Stun { .. }) {
                // A STUN keep-alive phone learns the flow's mapping as soon as the 200 arrives.
                sent.push((t + RTT, Sent::KeepAlive));
            }
            t += RTT + self.reregister_every();
        }
        // Keep-alives run on their own timer, started by the first REGISTER.
        if let Some(every) = self.keepalive.interval() {
            let mut t = every;
            while t <= horizon {
                sent.push((t, Sent::KeepAlive));
                t += every;
            }
        }
        sent.sort_by_key(|(t, _)| *t);
        sent
    }

    /// The packet the call follows: `after_packet`, or the last one if the phone sends fewer.
    fn packet_before_call(&self) -> (usize, Duration, Option<Duration>) {
        let all = self.packets(MAX_CALL);
        let n = self.after_packet.min(all.len() - 1);
        (n, all[n].0, all.get(n + 1).map(|(t, _)| *t))
    }

    /// When the registrar's INVITE crosses the router, from the first REGISTER. The call cannot
    /// come before the registration is answered.
    fn invite_at(&self) -> Duration {
        let (_, t, _) = self.packet_before_call();
        (t + ms(self.delay_ms + self.jitter_ms)).max(2 * RTT)
    }

    /// The scenario's pause between the registration (answered one RTT after REGISTER) and the
    /// call (whose INVITE the registrar forwards one RTT later).
    fn wait_ms(&self) -> u64 {
        (self.invite_at() - 2 * RTT).as_millis() as u64
    }

    /// What the phone sends, and when the INVITE reaches the router, as planned.
    fn plan(&self) -> Plan {
        let invite = self.invite_at();
        let horizon = invite + MARGIN + Duration::from_secs(1);
        // The SBC's ping timer starts when the first REGISTER reaches it.
        let mut pings = Vec::new();
        let mut answered = false;
        if let RegistrarSetting::Sbc(p) = self.registrar {
            answered = matches!(p, KeepAliveSetting::Options { .. });
            if let Some(every) = p.interval() {
                let mut t = RTT + every;
                while t <= horizon {
                    pings.push(t);
                    t += every;
                }
            }
        }
        Plan {
            sent: self.packets(horizon),
            invite,
            pings,
            answered,
            stun: matches!(self.keepalive, KeepAliveSetting::Stun { .. }),
        }
    }

    /// The scenario file of this case, expecting `expect`, with `comment` on top.
    fn scenario(&self, expect: CallExpectation, comment: Vec<String>) -> IncomingCall {
        IncomingCall {
            name: self.name(),
            summary: format!(
                "{}, {} s UDP timeout ({} refresh); {}; phone with {}, expires {} s; called {} ms after registering",
                self.nat,
                self.timeout_secs,
                self.refresh_name(),
                self.registrar,
                self.keepalive,
                self.expires_secs,
                self.wait_ms()
            ),
            comment,
            t1_ms: T1.as_millis() as u64,
            nat: self.behaviour(),
            registrar: self.registrar.emitted(),
            keepalive: self.keepalive.sip(),
            expires_secs: self.expires_secs.into(),
            answer_after_ms: ANSWER_AFTER.as_millis() as u64,
            wait_ms: self.wait_ms(),
            call_timeout_ms: CALL_WINDOW.as_millis() as u64,
            expect,
        }
    }
}

/// What the phone sends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Register,
    KeepAlive,
}

#[derive(Debug, Clone)]
struct Plan {
    sent: Vec<(Duration, Sent)>,
    /// When the registrar's INVITE reaches the router.
    invite: Duration,
    /// When the SBC's NAT pings reach the router, and whether the phone answers them (OPTIONS).
    pings: Vec<Duration>,
    answered: bool,
    /// The keep-alive is STUN: an answer showing a moved flow makes the phone re-register.
    stun: bool,
}

impl Plan {
    /// The phone's last packet before the INVITE.
    fn last_sent_before(&self, at: Duration) -> Option<(Duration, Sent)> {
        self.sent.iter().copied().rev().find(|(t, _)| *t < at)
    }
}

// --- the oracle ----------------------------------------------------------------------------------

/// An arbitrary but fixed origin for the model's clock.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// What the model says about the INVITE.
#[derive(Debug, Clone)]
struct Prediction {
    delivered: bool,
    /// The model's reason for dropping it.
    why: Option<String>,
}

fn shifted(t: Duration, shift_ms: i64) -> Duration {
    let shift = Duration::from_millis(shift_ms.unsigned_abs());
    if shift_ms >= 0 {
        t + shift
    } else {
        t.saturating_sub(shift)
    }
}

/// Runs the planned schedule through `NatModel`, with the INVITE moved by `shift_ms` and the
/// SBC's pings by `ping_shift_ms`.
fn predict(nat: &NatBehaviour, plan: &Plan, shift_ms: i64, ping_shift_ms: i64) -> Prediction {
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        Out(usize),
        Answer(usize),
        Ping,
        Pong,
        Invite,
        /// A packet the phone sends in reaction (index into `reactions`), and its answer.
        ReactOut(usize),
        ReactAnswer(usize),
    }
    let invite = shifted(plan.invite, shift_ms);
    let mut events: BinaryHeap<Reverse<(Duration, Ev)>> = BinaryHeap::new();
    for (i, (t, _)) in plan.sent.iter().enumerate() {
        events.push(Reverse((*t, Ev::Out(i))));
        // The registrar answers REGISTER and OPTIONS with a 200, a CRLF ping with a CRLF pong,
        // a STUN request with its answer.
        events.push(Reverse((*t + RTT, Ev::Answer(i))));
    }
    for t in &plan.pings {
        let t = shifted(*t, ping_shift_ms).max(RTT);
        events.push(Reverse((t, Ev::Ping)));
        if plan.answered {
            events.push(Reverse((t + RTT, Ev::Pong)));
        }
    }
    events.push(Reverse((invite, Ev::Invite)));
    // Whether the last ping reached the phone (and so is answered).
    let mut ping_delivered = false;
    let mut model = NatModel::new(nat.clone(), PUBLIC, LAN).expect("valid NAT");
    let mut mapped: Vec<Option<SocketAddrV4>> = vec![None; plan.sent.len()];
    let mut target = None;
    // RFC 5626 §4.4.2 as our phone does it: the STUN answer after each registration is the
    // flow's mapping; a later answer that differs makes it register again at once (and learn
    // the new mapping). The re-registration's REGISTER and STUN request are `reactions`.
    let mut flow: Option<SocketAddrV4> = None;
    let mut reactions: Vec<(Sent, Option<SocketAddrV4>)> = Vec::new();
    while let Some(Reverse((t, ev))) = events.pop() {
        let now = *ORIGIN + t;
        match ev {
            Ev::Out(i) => {
                let v = model.outbound(PHONE, REGISTRAR, now);
                mapped[i] = v.forwarded().map(|(src, _)| src);
                if plan.sent[i].1 == Sent::Register {
                    // The far-end registrar stores the REGISTER's source.
                    target = mapped[i].or(target);
                }
            }
            Ev::ReactOut(k) => {
                let v = model.outbound(PHONE, REGISTRAR, now);
                let m = v.forwarded().map(|(src, _)| src);
                reactions[k].1 = m;
                if reactions[k].0 == Sent::Register {
                    target = m.or(target);
                }
                events.push(Reverse((t + RTT, Ev::ReactAnswer(k))));
            }
            Ev::Answer(_) | Ev::ReactAnswer(_) => {
                let (to, kind, reaction) = match ev {
                    Ev::Answer(i) => (mapped[i], plan.sent[i].1, false),
                    Ev::ReactAnswer(k) => (reactions[k].1, reactions[k].0, true),
                    _ => unreachable!("only answers here"),
                };
                let Some(to) = to else { continue };
                let delivered = model.inbound(REGISTRAR, to, now).forwarded().is_some();
                if !plan.stun || !delivered {
                    continue;
                }
                match kind {
                    // A STUN request right after learns the mapping anew: the plan's own after
                    // a planned REGISTER, a reaction after a re-registration.
                    Sent::Register => {
                        flow = None;
                        if reaction {
                            reactions.push((Sent::KeepAlive, None));
                            events.push(Reverse((t, Ev::ReactOut(reactions.len() - 1))));
                        }
                    }
                    Sent::KeepAlive => {
                        if flow.is_some_and(|f| f != to) {
                            reactions.push((Sent::Register, None));
                            events.push(Reverse((t, Ev::ReactOut(reactions.len() - 1))));
                        }
                        flow = Some(to);
                    }
                }
            }
            // The SBC pings the address the phone registered from.
            Ev::Ping => {
                ping_delivered = target
                    .is_some_and(|to| model.inbound(REGISTRAR, to, now).forwarded().is_some());
            }
            // The phone's 200 OK to an OPTIONS ping is outbound.
            Ev::Pong => {
                if std::mem::take(&mut ping_delivered) {
                    let _ = model.outbound(PHONE, REGISTRAR, now);
                }
            }
            Ev::Invite => {
                let Some(to) = target else {
                    return Prediction {
                        delivered: false,
                        why: Some("no REGISTER before the INVITE".into()),
                    };
                };
                let v = model.inbound(REGISTRAR, to, now);
                return Prediction {
                    delivered: v.forwarded().is_some(),
                    why: v.drop_reason().map(ToString::to_string),
                };
            }
        }
    }
    unreachable!("the INVITE is one of the events")
}

/// Whether the case stays clear of every boundary by [`MARGIN`] (see the module docs).
fn clear_of_boundaries(c: &Case) -> bool {
    let nat = c.behaviour();
    let plan = c.plan();
    let base = predict(&nat, &plan, 0, 0).delivered;
    let (margin, step) = (MARGIN.as_millis() as i64, MARGIN_STEP.as_millis() as i64);
    let earliest = (2 * RTT).as_millis() as i64;
    // The SBC's pings run on its own clock: they may drift too (coarser steps: it is a product).
    let ping_shifts: Vec<i64> = if plan.pings.is_empty() {
        vec![0]
    } else {
        (-margin..=margin).step_by(5 * step as usize).collect()
    };
    let stable = (-margin..=margin)
        .step_by(step as usize)
        .filter(|s| plan.invite.as_millis() as i64 + s >= earliest)
        .all(|s| {
            ping_shifts
                .iter()
                .all(|p| predict(&nat, &plan, s, *p).delivered == base)
        });
    // The gaps between the phone's packets up to the INVITE.
    let gaps: Vec<Duration> = plan
        .sent
        .windows(2)
        .filter(|w| w[1].0 <= plan.invite + MARGIN)
        .map(|w| w[1].0 - w[0].0)
        .collect();
    // Without port preservation, an expiry between two of the phone's packets moves it to a new
    // port: every gap must be clearly shorter or clearly longer than the timeout.
    let gaps_clear = nat.ports == PortAllocation::Preserve
        || gaps.iter().all(|g| g.abs_diff(c.timeout()) >= MARGIN);
    // An SBC's pings keep a binding only as a chain, each arriving before the previous refresh
    // runs out. Their spacing is fixed, so no shift above moves it: the interval itself must be
    // clear of the timeout (a 1000 ms OPTIONS ping against a 1 s timeout passed or failed by the
    // millisecond; it was caught as drift).
    let pings_clear = match c.registrar {
        RegistrarSetting::Sbc(p) => p
            .interval()
            .is_none_or(|i| i.abs_diff(c.timeout()) >= MARGIN),
        RegistrarSetting::Proxy => true,
    };
    // A STUN keep-alive whose answer shows a moved flow makes the phone re-register (RFC 5626
    // §4.4.2); `predict` plays that REGISTER, but not the shift it gives the phone's own
    // re-registration timer, so with a short expiry no gap longer than the timeout (which moves
    // the flow where ports are not preserved) may come before the INVITE.
    let stun_clear = !matches!(c.keepalive, KeepAliveSetting::Stun { .. })
        || nat.ports == PortAllocation::Preserve
        || c.reregister_every() > plan.invite + MARGIN
        || gaps.iter().all(|g| *g + MARGIN <= c.timeout());
    stable && gaps_clear && pings_clear && stun_clear
}

// --- strategies ----------------------------------------------------------------------------------

/// The NATs under test, simplest first (proptest's `select` shrinks towards the front).
fn arb_nat() -> impl Strategy<Value = (NatType, Refresh)> {
    let all: Vec<(NatType, Refresh)> = [Refresh::Both, Refresh::OutboundOnly]
        .into_iter()
        .flat_map(|r| NatType::ALL.into_iter().map(move |t| (t, r)))
        .collect();
    select(all)
}

/// Registration expiries: mostly an hour (no re-registration during a case; it shrinks there),
/// sometimes 1–6 s.
fn arb_expires() -> impl Strategy<Value = u32> {
    proptest::prop_oneof![
        3 => proptest::strategy::Just(3600),
        1 => 1..=6u32,
    ]
}

/// No keep-alive 40 % of the time, else CRLF, OPTIONS or STUN every 0.3–4 s in 100 ms steps.
fn arb_keepalive() -> impl Strategy<Value = KeepAliveSetting> {
    proptest::prop_oneof![
        2 => proptest::strategy::Just(KeepAliveSetting::Off),
        3 => (0..3u8, 3..=40u64).prop_map(|(k, n)| KeepAliveSetting::phone(k, n * 100)),
    ]
}

/// When the call comes: after one of the phone's first four packets, 0–4 s later in 50 ms
/// steps, plus 0–40 ms of jitter.
fn arb_when() -> impl Strategy<Value = (usize, u64, u64)> {
    (0..=3usize, 0..=80u64, 0..=4u64).prop_map(|(n, d, j)| (n, d * 50, j * 10))
}

fn case(
    (nat, refresh): (NatType, Refresh),
    timeout_secs: u32,
    keepalive: KeepAliveSetting,
    expires_secs: u32,
    (after_packet, delay_ms, jitter_ms): (usize, u64, u64),
) -> Case {
    Case {
        nat,
        refresh,
        timeout_secs,
        keepalive,
        expires_secs,
        after_packet,
        delay_ms,
        jitter_ms,
        registrar: RegistrarSetting::Proxy,
    }
}

/// The far-end proxy half of the time, else our SBC without pings, or with CRLF or OPTIONS
/// pings every 0.3–4 s.
fn arb_registrar() -> impl Strategy<Value = RegistrarSetting> {
    proptest::prop_oneof![
        3 => proptest::strategy::Just(RegistrarSetting::Proxy),
        1 => proptest::strategy::Just(RegistrarSetting::Sbc(KeepAliveSetting::Off)),
        1 => (3..=40u64).prop_map(|n| RegistrarSetting::Sbc(KeepAliveSetting::Crlf {
            interval_ms: n * 100
        })),
        1 => (3..=40u64).prop_map(|n| RegistrarSetting::Sbc(KeepAliveSetting::Options {
            interval_ms: n * 100
        })),
    ]
}

/// Whether a generated case is one the properties can judge: its call comes after the packet it
/// names and clear of the next one, within [`MAX_CALL`], and clear of every binding boundary.
fn well_placed(c: &Case) -> bool {
    let (_, _, next) = c.packet_before_call();
    let invite = c.invite_at();
    invite <= MAX_CALL - MARGIN
        && next.is_none_or(|next| invite + MARGIN <= next)
        && clear_of_boundaries(c)
}

/// Any case (property 1).
fn arb_case() -> impl Strategy<Value = Case> {
    (
        arb_nat(),
        1..=3u32,
        arb_keepalive(),
        arb_expires(),
        arb_when(),
        arb_registrar(),
    )
        .prop_map(|(n, t, k, e, w, r)| Case {
            registrar: r,
            ..case(n, t, k, e, w)
        })
        .prop_filter("the call is not well placed", well_placed)
}

/// Cases whose keep-alive or re-registration runs faster than the timeout, by the margin
/// (property 2).
fn arb_refreshed_case() -> impl Strategy<Value = Case> {
    (arb_nat(), 1..=3u32)
        .prop_flat_map(|(nat, t)| {
            let below = u64::from(t) * 1000 - MARGIN.as_millis() as u64;
            let keepalive_below = (0..3u8, 3..=below / 100, arb_expires())
                .prop_map(|(k, n, e)| (KeepAliveSetting::phone(k, n * 100), e));
            let short_expiries: Vec<u32> =
                (1..=6).filter(|e| u64::from(*e) * 500 <= below).collect();
            let reregistration_below =
                select(short_expiries).prop_map(|e| (KeepAliveSetting::Off, e));
            (
                proptest::strategy::Just((nat, t)),
                proptest::prop_oneof![keepalive_below, reregistration_below],
                arb_when(),
                arb_registrar(),
            )
        })
        .prop_map(|((n, t), (k, e), w, r)| Case {
            registrar: r,
            ..case(n, t, k, e, w)
        })
        .prop_filter("the call is not well placed", well_placed)
}

/// The deliberately broken setting: a keep-alive 1 s longer than the timeout, no re-registration.
/// Fields are ordered for shrinking (proptest shrinks a tuple front to back): the timeout and the
/// packet the call follows first, so every later step runs a short case; the call's delay last,
/// so it ends at the smallest delay that still fails for the NAT the others shrank to.
fn arb_broken_case() -> impl Strategy<Value = Case> {
    (1..=3u32, 0..=3usize, arb_nat(), 0..3u8, 0..=80u64, 0..=4u64)
        .prop_map(|(t, n, nat, kind, delay, jitter)| {
            let k = KeepAliveSetting::phone(kind, u64::from(t) * 1000 + 1000);
            case(nat, t, k, 3600, (n, delay * 50, jitter * 10))
        })
        .prop_filter("the call is not well placed", well_placed)
}

// --- batches -------------------------------------------------------------------------------------

/// `size` cases run as one proptest case; shrinks like proptest's `Vec` but down to one case
/// (see the module docs).
#[derive(Debug)]
struct Batch<S> {
    element: S,
    size: usize,
}

#[derive(Debug, Clone, Copy)]
enum BatchShrink {
    Drop(usize),
    Element(usize),
}

struct BatchTree<T> {
    elements: Vec<T>,
    included: Vec<bool>,
    next: BatchShrink,
    last: Option<BatchShrink>,
}

impl<S: Strategy> Strategy for Batch<S> {
    type Tree = BatchTree<S::Tree>;
    type Value = Vec<S::Value>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let elements = (0..self.size)
            .map(|_| self.element.new_tree(runner))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchTree {
            included: vec![true; elements.len()],
            elements,
            next: BatchShrink::Drop(0),
            last: None,
        })
    }
}

impl<T: ValueTree> ValueTree for BatchTree<T> {
    type Value = Vec<T::Value>;

    fn current(&self) -> Vec<T::Value> {
        self.elements
            .iter()
            .zip(&self.included)
            .filter(|(_, inc)| **inc)
            .map(|(e, _)| e.current())
            .collect()
    }

    fn simplify(&mut self) -> bool {
        if let BatchShrink::Drop(ix) = self.next {
            let left = self.included.iter().filter(|i| **i).count();
            if ix < self.elements.len() && left > 1 {
                self.included[ix] = false;
                self.last = Some(BatchShrink::Drop(ix));
                self.next = BatchShrink::Drop(ix + 1);
                return true;
            }
            self.next = BatchShrink::Element(0);
        }
        while let BatchShrink::Element(ix) = self.next {
            if ix >= self.elements.len() {
                return false;
            }
            if self.included[ix] && self.elements[ix].simplify() {
                self.last = Some(BatchShrink::Element(ix));
                return true;
            }
            self.next = BatchShrink::Element(ix + 1);
        }
        false
    }

    fn complicate(&mut self) -> bool {
        match self.last {
            None => false,
            Some(BatchShrink::Drop(ix)) => {
                self.included[ix] = true;
                self.last = None;
                true
            }
            Some(BatchShrink::Element(ix)) => {
                if self.elements[ix].complicate() {
                    true
                } else {
                    self.last = None;
                    false
                }
            }
        }
    }
}

// --- the kernel run ------------------------------------------------------------------------------

/// One runtime for every test of this file, so concurrent tests share its two workers.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// Keeps bring-up (dozens of namespaces, `nft` processes: both cores busy for seconds) apart from
/// the timing-sensitive part of any test of this file: timelines hold it shared, bring-ups hold
/// it exclusively. Without it a call of one test came 200 ms late while another test built its
/// batch.
static QUIET: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(Default::default);

/// Every case run so far and what the kernel did: shrinking re-runs only what changed.
static MEMO: LazyLock<Mutex<HashMap<Case, Result<Run, String>>>> = LazyLock::new(Default::default);

/// What one case's run showed.
#[derive(Debug, Clone)]
struct Run {
    /// When the phone's first REGISTER left: the origin of the plan's offsets.
    origin: Instant,
    /// Everything the phone's and the registrar's sockets sent and received.
    phone: Vec<Datagram>,
    proxy: Vec<Datagram>,
    /// The caller's call was established within its timeout.
    established: bool,
    /// Both sides of the router (and the hosts), stamped by the kernel.
    frames: Vec<Frame>,
    /// One instant on both clocks, read together: turns the capture's wall-clock stamps into
    /// the sockets' monotonic ones.
    clock: (Instant, SystemTime),
}

impl Run {
    fn instant(&self, wall: SystemTime) -> Instant {
        let (mono, real) = self.clock;
        match wall.duration_since(real) {
            Ok(after) => mono + after,
            Err(e) => mono.checked_sub(e.duration()).unwrap_or(mono),
        }
    }
}

/// Our SBC, recording what its SIP socket sends and receives as a SIP driver does.
struct RecordedSbc {
    sbc: Sbc,
    node: String,
    log: std::sync::Arc<Mutex<Vec<Datagram>>>,
}

impl RecordedSbc {
    fn record(&self, at: Instant, direction: Direction, remote: SocketAddr, payload: &[u8]) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Datagram {
                node: self.node.clone(),
                at,
                direction,
                local: self.sbc.config().sip,
                remote,
                payload: payload.to_vec(),
            });
    }
}

impl Machine for RecordedSbc {
    type Event = harness::sbc::SbcEvent;
    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, b: &[u8], now: Instant) {
        if local == self.sbc.config().sip {
            self.record(now, Direction::Received, from, b);
        }
        self.sbc.handle_datagram(local, from, b, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.sbc.handle_timeout(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.sbc.poll_transmit()?;
        if t.source == self.sbc.config().sip {
            // The driver sends it right away: stamped as a SIP driver stamps a send.
            self.record(Instant::now(), Direction::Sent, t.destination, &t.payload);
        }
        Some(t)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        self.sbc.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.sbc.poll_timeout()
    }
    fn local_addresses(&self) -> Vec<SocketAddr> {
        self.sbc.local_addresses()
    }
}

/// The registrar a lab runs.
enum RegistrarTask {
    Proxy(ProxyTask),
    Sbc {
        _task: MachineTask<RecordedSbc, ()>,
        log: std::sync::Arc<Mutex<Vec<Datagram>>>,
    },
}

impl RegistrarTask {
    fn datagrams(&self) -> Vec<Datagram> {
        match self {
            Self::Proxy(p) => p.datagrams(),
            Self::Sbc { log, .. } => log.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A case's topology and components, up and idle.
struct Lab {
    scenario: Scenario,
    proxy: RegistrarTask,
    uas: HashMap<String, UaTask>,
    /// Every link, the router's two sides included: the model is fed what crossed the router
    /// when the kernel saw it cross, not when a busy runtime got round to stamping it.
    capture: Capture,
    // Last: the tasks above stop before their namespaces go.
    _topo: Topology,
}

/// Emits the case, parses the file back, and brings up what the file describes.
async fn lab(case: &Case) -> Result<Lab> {
    let text = case
        .scenario(
            CallExpectation {
                status: 200,
                rang: Some(true),
            },
            vec![],
        )
        .to_toml();
    let scenario = Scenario::from_str(&format!("{}.toml", case.name()), &text)
        .map_err(|e| anyhow::anyhow!("the emitted scenario does not parse: {e}\n{text}"))?;
    let topo = Topology::build(scenario.topology.clone()).await?;
    // The router's two sides only: the phone's and the registrar's own sockets record the rest.
    let capture = Capture::start_on(
        &topo,
        vec![
            Vantage::new(emit::ROUTER, "lan"),
            Vantage::new(emit::ROUTER, "wan"),
        ],
    )
    .await?;
    let t1 = Duration::from_millis(scenario.file.scenario.t1_ms);
    let mut proxy = None;
    let mut uas = HashMap::new();
    // As the scenario runner does it: the proxy first, phones after.
    let mut components: Vec<&Component> = scenario
        .file
        .components
        .iter()
        .map(|c| c.get_ref())
        .collect();
    components.sort_by_key(|c| matches!(c, Component::Ua { .. }));
    for comp in components {
        match comp {
            Component::Proxy {
                host, port, users, ..
            } => {
                let node = topo.node(host)?;
                let local = SocketAddr::new(node.addr().into(), *port);
                let nat = comp.proxy_nat_handling().expect("a proxy");
                let mut cfg = ProxyConfig::new(local, &node.addr().to_string(), nat);
                cfg.timers = Timers::scaled(t1);
                cfg.users = users.clone();
                proxy = Some(RegistrarTask::Proxy(ProxyTask::spawn(node, cfg).await?.0));
            }
            // The emitted cases are UDP only: no `transports`.
            Component::Sbc {
                host,
                port,
                ping,
                users,
                ..
            } => {
                let node = topo.node(host)?;
                let sip = SocketAddr::new(node.addr().into(), *port);
                let mut cfg = SbcConfig::new(sip, &node.addr().to_string());
                cfg.timers = Timers::scaled(t1);
                cfg.users = users.clone();
                cfg.ping = ping.as_ref().and_then(|k| k.ping());
                let log = std::sync::Arc::new(Mutex::new(Vec::new()));
                let sbc = RecordedSbc {
                    sbc: Sbc::new(cfg),
                    node: node.name().to_string(),
                    log: log.clone(),
                };
                let locals = sbc.local_addresses();
                let (task, _) = MachineTask::spawn(node, sbc, &locals, |_| (), |_, _| {}).await?;
                proxy = Some(RegistrarTask::Sbc { _task: task, log });
            }
            Component::Ua {
                host,
                user,
                port,
                proxy: proxy_host,
                rport,
                keepalive,
                expires_secs,
                answer_after_ms,
                password,
                media_port,
                ..
            } => {
                let node = topo.node(host)?;
                let user = user.clone().unwrap_or_else(|| host.clone());
                let registrar = SocketAddr::new(topo.node(proxy_host)?.addr().into(), 5060);
                let local = SocketAddr::new(node.addr().into(), *port);
                let mut cfg = UaConfig::new(&user, &registrar.ip().to_string(), local, registrar);
                cfg.timers = Timers::scaled(t1);
                cfg.rport = *rport;
                cfg.expires = Duration::from_secs(*expires_secs);
                cfg.answer_after = Some(ms(*answer_after_ms));
                cfg.password = password.clone();
                cfg.media = Media {
                    address: node.addr().into(),
                    port: *media_port,
                };
                cfg.keepalive = keepalive.as_ref().map(|k| k.keepalive());
                uas.insert(user, UaTask::spawn(node, cfg).await?.0);
            }
            other => bail!("an emitted case has no {other:?}"),
        }
    }
    Ok(Lab {
        scenario,
        proxy: proxy.context("the emitted case has a proxy")?,
        uas,
        capture,
        _topo: topo,
    })
}

/// Plays the scenario's timeline as the scenario runner does and records what the sockets saw.
///
/// One difference, for fidelity to the plan rather than to a loaded machine: pauses are kept on
/// a clock started when the first REGISTER leaves (the registration counts as answered one RTT
/// later), so a slow 200 OK does not push the call later relative to the phone's keep-alives.
async fn play(lab: &Lab) -> Result<Run> {
    let mut established = false;
    let mut clock = Instant::now();
    for step in &lab.scenario.file.steps {
        match step.get_ref() {
            Step::Register { ua, timeout_ms } => {
                let phone = &lab.uas[ua];
                clock = Instant::now() + RTT;
                phone.register().await?;
                phone
                    .wait_for(
                        |e| matches!(e, Event::Registered { .. }),
                        ms(*timeout_ms).min(STEP),
                    )
                    .await
                    .with_context(|| format!("{ua} did not register"))?;
            }
            Step::Wait { ms: pause } => {
                clock += ms(*pause);
                tokio::time::sleep_until(clock.into()).await;
            }
            Step::Call {
                from,
                to,
                timeout_ms,
                ..
            } => {
                let caller = &lab.uas[from];
                let id = caller.call(to).await?;
                established = caller
                    .wait_for(
                        |e| match e {
                            Event::CallEstablished { call_id, .. }
                            | Event::CallFailed { call_id, .. } => *call_id == id,
                            _ => false,
                        },
                        ms(*timeout_ms),
                    )
                    .await
                    .is_ok_and(|e| matches!(e.event, Event::CallEstablished { .. }));
            }
            other => bail!("an emitted case has no step {other:?}"),
        }
    }
    // What the sockets handled up to here is judged; the capture is read once it holds every
    // copy of it (a frame is in it once the capture task got round to reading it), or after
    // CAPTURE_WAIT, when what is still missing is reported as missed, never guessed.
    tokio::time::sleep(SETTLE).await;
    let cutoff = Instant::now();
    let sent_before = |list: &[Datagram], towards: Option<Ipv4Addr>| {
        list.iter()
            .filter(|d| d.direction == Direction::Sent && d.at <= cutoff)
            .filter(|d| towards.is_none_or(|ip| d.remote.ip() == std::net::IpAddr::V4(ip)))
            .count()
    };
    let phone: Vec<Datagram> = lab.uas[emit::PHONE]
        .datagrams()
        .into_iter()
        .filter(|d| d.at <= cutoff)
        .collect();
    let proxy: Vec<Datagram> = lab
        .proxy
        .datagrams()
        .into_iter()
        .filter(|d| d.at <= cutoff)
        .collect();
    let want_lan = sent_before(&phone, None);
    let want_wan = sent_before(&proxy, Some(PUBLIC));
    let seen = |frames: &[Frame], iface: &str, dir: capture::Direction| {
        frames
            .iter()
            .filter(|f| f.vantage.iface == iface && f.direction == dir && udp_of(f).is_some())
            .count()
    };
    let waited = Instant::now();
    let frames = loop {
        let frames = lab.capture.snapshot();
        let complete = seen(&frames, "lan", capture::Direction::In) >= want_lan
            && seen(&frames, "wan", capture::Direction::In) >= want_wan;
        if complete || waited.elapsed() >= CAPTURE_WAIT {
            break frames;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let origin = phone
        .iter()
        .find(|d| d.direction == Direction::Sent)
        .map(|d| d.at)
        .context("the phone sent nothing")?;
    Ok(Run {
        origin,
        phone,
        proxy,
        established,
        frames,
        clock: (Instant::now(), SystemTime::now()),
    })
}

/// Runs `cases` on the kernel (those not run before), all concurrently: every topology first,
/// then every timeline at once. Also says how many ran now (the rest were memoised).
fn run_cases(cases: &[Case]) -> (Vec<Result<Run, String>>, usize) {
    let missing: Vec<Case> = {
        let memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        cases
            .iter()
            .filter(|c| !memo.contains_key(c) && seen.insert(**c))
            .copied()
            .collect()
    };
    let fresh = missing.len();
    if fresh > 0 {
        let runs = RUNTIME.block_on(async {
            let labs = {
                let _busy = QUIET.write().await;
                join_all(missing.iter().map(lab)).await
            };
            let quiet = QUIET.read().await;
            let runs = join_all(labs.iter().map(|l| async move {
                match l {
                    Ok(l) => play(l).await.map_err(|e| format!("{e:#}")),
                    Err(e) => Err(format!("{e:#}")),
                }
            }))
            .await;
            drop(quiet);
            // Tear down only once every timeline is over.
            let _busy = QUIET.write().await;
            drop(labs);
            runs
        });
        let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        memo.extend(missing.into_iter().zip(runs));
    }
    let memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    (cases.iter().map(|c| memo[c].clone()).collect(), fresh)
}

// --- judging a run -------------------------------------------------------------------------------

/// One datagram the registrar sent towards the phone, and what became of it.
#[derive(Debug, Clone)]
struct Inbound {
    /// Since the first REGISTER.
    at: Duration,
    what: String,
    kernel: bool,
    model: bool,
    /// The model's reason for dropping it.
    why: Option<String>,
}

/// What a run showed, next to what the model says about it.
#[derive(Debug, Clone)]
struct Judged {
    /// Every datagram towards the phone, judged by the kernel and by the model.
    inbound: Vec<Inbound>,
    /// The first INVITE towards the phone (index into `inbound`).
    invite: Option<usize>,
    /// The model's verdict on the planned schedule.
    planned: Prediction,
    /// The phone's last packet before the INVITE, as observed: offset and what it was.
    last_sent: Option<(Duration, String)>,
    /// Datagrams a socket handled that the router's capture never saw cross (then the model
    /// was not fed everything, and the run cannot be judged).
    missed: Vec<String>,
    /// Every datagram at every vantage point (see [`timeline`]).
    timeline: Vec<String>,
    /// How far the sockets' stamps put a datagram's crossing from when the router's capture saw
    /// it cross (the earlier of sender's and receiver's stamp, minus the kernel's), at the most
    /// early and the most late: what an oracle fed socket stamps would have been off by.
    stamp_error: (Duration, Duration),
}

impl Judged {
    fn invite(&self) -> Option<&Inbound> {
        self.invite.map(|i| &self.inbound[i])
    }

    fn reached(&self) -> bool {
        self.invite().is_some_and(|i| i.kernel)
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// One datagram as one vantage point saw it: a socket's history or the router's capture.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    src: Option<SocketAddrV4>,
    dst: Option<SocketAddrV4>,
    payload: Vec<u8>,
    /// One line, for a socket's copy (the capture's copies are the same bytes).
    what: String,
}

impl Seen {
    fn of_datagram(d: &Datagram) -> Self {
        let (src, dst) = match d.direction {
            Direction::Sent => (d.local, d.remote),
            Direction::Received => (d.remote, d.local),
        };
        Seen {
            at: d.at,
            src: v4(src),
            dst: v4(dst),
            payload: d.payload.clone(),
            what: d.summary(),
        }
    }
}

/// What a hop between two vantage points can do to datagrams.
#[derive(Debug, Clone, Copy)]
enum Hop {
    /// A socket and the router's interface on the same link: nothing is lost, and the order
    /// stays. The `k`-th copy of some bytes on one side is the `k`-th on the other, however late
    /// a busy runtime stamped either.
    Link,
    /// Through the router, both sides stamped by the kernel: a copy may be dropped, none is
    /// reordered, so a copy leaves after it came in and before the next identical one came in.
    Router,
}

/// Pairs each of `sent` with the copy of the same bytes in `received` that is the same datagram
/// across `hop` (both lists in the order their vantage point saw them). No time window: only the
/// hop's own rules, so no stamp however late can part a datagram from its copy.
fn pair(sent: &[Seen], received: &[Seen], hop: Hop) -> Vec<Option<usize>> {
    let mut used = vec![false; received.len()];
    sent.iter()
        .enumerate()
        .map(|(i, s)| {
            let same = |r: &Seen| r.payload == s.payload;
            let hit = match hop {
                Hop::Link => received
                    .iter()
                    .enumerate()
                    .position(|(j, r)| !used[j] && same(r)),
                Hop::Router => {
                    let next = sent[i + 1..].iter().find(|n| n.payload == s.payload);
                    received.iter().enumerate().position(|(j, r)| {
                        !used[j] && same(r) && r.at >= s.at && next.is_none_or(|n| r.at < n.at)
                    })
                }
            };
            if let Some(j) = hit {
                used[j] = true;
            }
            hit
        })
        .collect()
}

/// A run's datagrams at every vantage point, and which copies are the same datagram.
///
/// The router's two sides come from the capture, stamped by the kernel as the frames crossed its
/// interfaces; the phone and the registrar are their sockets' histories, stamped by their drivers
/// (after the fact, by however long a loaded runtime takes to get to them).
struct Vantages {
    /// What the phone sent, reaching the router's LAN side, leaving its WAN side, reaching the
    /// registrar: `path_out[i]` is the phone's `i`-th datagram at each later hop.
    phone_sent: Vec<Seen>,
    lan_in: Vec<Seen>,
    wan_out: Vec<Seen>,
    proxy_got: Vec<Seen>,
    path_out: Vec<[Option<usize>; 3]>,
    /// What the registrar sent towards the phone's public address, at the WAN side, leaving the
    /// LAN side, reaching the phone.
    towards_phone: Vec<Datagram>,
    wan_in: Vec<Seen>,
    lan_out: Vec<Seen>,
    phone_got: Vec<Seen>,
    path_in: Vec<[Option<usize>; 3]>,
}

/// Follows each datagram hop by hop: `hops[0]` pairs with `from`, `hops[1]` with that, …
fn follow(from: &[Seen], hops: [(&[Seen], Hop); 3]) -> Vec<[Option<usize>; 3]> {
    let mut out = vec![[None; 3]; from.len()];
    let mut at: Vec<Option<Seen>> = from.iter().cloned().map(Some).collect();
    for (h, (hop, kind)) in hops.iter().enumerate() {
        // Pair the copies that reached the previous hop; a lost copy stays lost.
        let present: Vec<usize> = (0..from.len()).filter(|i| at[*i].is_some()).collect();
        let prev: Vec<Seen> = present
            .iter()
            .map(|i| at[*i].clone().expect("present"))
            .collect();
        let hits = pair(&prev, hop, *kind);
        for (k, i) in present.into_iter().enumerate() {
            out[i][h] = hits[k];
            at[i] = hits[k].map(|j| hop[j].clone());
        }
    }
    out
}

impl Vantages {
    fn of(run: &Run) -> Self {
        let socket = |list: &[Datagram], dir: Direction| -> Vec<Seen> {
            list.iter()
                .filter(|d| d.direction == dir)
                .map(Seen::of_datagram)
                .collect()
        };
        let router = |iface: &str, dir: capture::Direction| -> Vec<Seen> {
            run.frames
                .iter()
                .filter(|f| {
                    f.vantage.node == emit::ROUTER && f.vantage.iface == iface && f.direction == dir
                })
                .filter_map(|f| {
                    let (src, dst, payload) = udp_of(f)?;
                    Some(Seen {
                        at: run.instant(f.at),
                        src: Some(src),
                        dst: Some(dst),
                        payload: payload.to_vec(),
                        what: String::new(),
                    })
                })
                .collect()
        };
        let phone_sent = socket(&run.phone, Direction::Sent);
        let lan_in = router("lan", capture::Direction::In);
        let wan_out = router("wan", capture::Direction::Out);
        let proxy_got = socket(&run.proxy, Direction::Received);
        let path_out = follow(
            &phone_sent,
            [
                (&lan_in, Hop::Link),
                (&wan_out, Hop::Router),
                (&proxy_got, Hop::Link),
            ],
        );
        let towards_phone: Vec<Datagram> = run
            .proxy
            .iter()
            .filter(|d| d.direction == Direction::Sent)
            .filter(|d| d.remote.ip() == std::net::IpAddr::V4(PUBLIC))
            .cloned()
            .collect();
        let sent: Vec<Seen> = towards_phone.iter().map(Seen::of_datagram).collect();
        let wan_in = router("wan", capture::Direction::In);
        let lan_out = router("lan", capture::Direction::Out);
        let phone_got = socket(&run.phone, Direction::Received);
        let path_in = follow(
            &sent,
            [
                (&wan_in, Hop::Link),
                (&lan_out, Hop::Router),
                (&phone_got, Hop::Link),
            ],
        );
        Vantages {
            phone_sent,
            lan_in,
            wan_out,
            proxy_got,
            path_out,
            towards_phone,
            wan_in,
            lan_out,
            phone_got,
            path_in,
        }
    }

    /// When the phone's `i`-th datagram crossed the router, by the kernel's clock: when it left
    /// the WAN side, or, had the router not forwarded it, when it reached the LAN side.
    fn out_crossed(&self, i: usize) -> Option<Instant> {
        let [lan, wan, _] = self.path_out[i];
        wan.map(|j| self.wan_out[j].at)
            .or(lan.map(|j| self.lan_in[j].at))
    }

    /// The phone's `i`-th datagram as it left the router: its external source is the mapping.
    fn mapping(&self, i: usize) -> Option<SocketAddrV4> {
        self.path_out[i][1].and_then(|j| self.wan_out[j].src)
    }

    /// When the registrar's `i`-th datagram towards the phone reached the router's WAN side.
    fn in_crossed(&self, i: usize) -> Option<Instant> {
        self.path_in[i][0].map(|j| self.wan_in[j].at)
    }

    /// Whether the router forwarded it into the LAN: the kernel's verdict, read off its LAN side.
    fn forwarded(&self, i: usize) -> bool {
        self.path_in[i][1].is_some()
    }
}

/// Replays what crossed the router through the model, at the instants the kernel saw it cross,
/// and sets it beside what the kernel did.
fn judge(case: &Case, run: &Run) -> Judged {
    let v = Vantages::of(run);
    let mut model = NatModel::new(case.behaviour(), PUBLIC, LAN).expect("valid NAT");
    // Kernel external port → the model's (they differ when the NAT picks ports at random).
    let mut port_of: HashMap<u16, u16> = HashMap::new();
    // The origin of every offset: the first REGISTER leaving the router.
    let origin = v.out_crossed(0).unwrap_or(run.origin);
    let mut missed = Vec::new();
    let mut order: Vec<(Instant, bool, usize)> = Vec::new();
    for i in 0..v.phone_sent.len() {
        match v.out_crossed(i) {
            Some(at) => order.push((at, false, i)),
            None => missed.push(format!("the phone's {}", v.phone_sent[i].what)),
        }
    }
    for (i, d) in v.towards_phone.iter().enumerate() {
        match v.in_crossed(i) {
            Some(at) => order.push((at, true, i)),
            None => missed.push(format!("the registrar's {}", d.summary())),
        }
    }
    order.sort();
    let mut inbound = Vec::new();
    let mut invite = None;
    // The model's word on each datagram towards the phone, for the timeline.
    let mut said: HashMap<usize, String> = HashMap::new();
    for (at, is_inbound, i) in order {
        if !is_inbound {
            let Some(to) = v.phone_sent[i].dst else {
                continue;
            };
            let m = model.outbound(PHONE, to, at);
            if let (Some((model_mapping, _)), Some(k)) = (m.forwarded(), v.mapping(i)) {
                port_of.insert(k.port(), model_mapping.port());
            }
            continue;
        }
        let d = &v.towards_phone[i];
        let Some(to) = v4(d.remote) else { continue };
        let port = port_of.get(&to.port()).copied().unwrap_or(to.port());
        let m = model.inbound(REGISTRAR, SocketAddrV4::new(PUBLIC, port), at);
        if invite.is_none() && d.is_request("INVITE") {
            invite = Some(inbound.len());
        }
        said.insert(
            i,
            match m.drop_reason() {
                None => "model: forwards".to_string(),
                Some(why) => format!("model: drops ({why})"),
            },
        );
        inbound.push(Inbound {
            at: at.saturating_duration_since(origin),
            what: d.summary(),
            kernel: v.forwarded(i),
            model: m.forwarded().is_some(),
            why: m.drop_reason().map(ToString::to_string),
        });
    }
    let invite_at = invite.map(|i: usize| origin + inbound[i].at);
    let mut stamp_error = (Duration::ZERO, Duration::ZERO);
    let mut note = |stamped: Instant, kernel: Option<Instant>| {
        if let Some(k) = kernel {
            stamp_error.0 = stamp_error.0.max(k.saturating_duration_since(stamped));
            stamp_error.1 = stamp_error.1.max(stamped.saturating_duration_since(k));
        }
    };
    for (i, s) in v.phone_sent.iter().enumerate() {
        let got = v.path_out[i][2].map(|j| v.proxy_got[j].at);
        note(got.map_or(s.at, |g| g.min(s.at)), v.out_crossed(i));
    }
    for (i, d) in v.towards_phone.iter().enumerate() {
        let got = v.path_in[i][2].map(|j| v.phone_got[j].at);
        note(got.map_or(d.at, |g| g.min(d.at)), v.in_crossed(i));
    }
    let last_sent = invite_at.and_then(|t| {
        (0..v.phone_sent.len())
            .filter_map(|i| v.out_crossed(i).map(|at| (at, i)))
            .filter(|(at, _)| *at < t)
            .max()
            .map(|(at, i)| {
                (
                    at.saturating_duration_since(origin),
                    v.phone_sent[i].what.clone(),
                )
            })
    });
    Judged {
        inbound,
        invite,
        planned: predict(&case.behaviour(), &case.plan(), 0, 0),
        last_sent,
        missed,
        timeline: timeline(&v, origin, &said),
        stamp_error,
    }
}

/// Every datagram between the phone and the registrar with the instant each vantage point saw
/// it, in ms from the first REGISTER leaving the router — the table a failing case prints, so
/// the next reader sees at once where two clocks parted.
fn timeline(v: &Vantages, origin: Instant, model: &HashMap<usize, String>) -> Vec<String> {
    let ms = |t: Option<Instant>| match t {
        Some(t) if t >= origin => format!("{:>8.1}", (t - origin).as_secs_f64() * 1e3),
        Some(t) => format!("{:>8.1}", -((origin - t).as_secs_f64() * 1e3)),
        None => format!("{:>8}", "-"),
    };
    let mut rows: Vec<(Instant, String)> = Vec::new();
    for (i, s) in v.phone_sent.iter().enumerate() {
        let [lan, wan, proxy] = v.path_out[i];
        let mapped = v.mapping(i).map(|m| m.to_string()).unwrap_or_default();
        // In the order the router saw them, where it did.
        rows.push((
            v.out_crossed(i).unwrap_or(s.at),
            format!(
                "{} {} {} {}  → {:<36} {mapped}",
                ms(Some(s.at)),
                ms(lan.map(|j| v.lan_in[j].at)),
                ms(wan.map(|j| v.wan_out[j].at)),
                ms(proxy.map(|j| v.proxy_got[j].at)),
                v.phone_sent[i].what.clone(),
            ),
        ));
    }
    for (i, d) in v.towards_phone.iter().enumerate() {
        let [wan, lan, phone] = v.path_in[i];
        rows.push((
            v.in_crossed(i).unwrap_or(d.at),
            format!(
                "{} {} {} {}  ← {:<36} {} {}",
                ms(phone.map(|j| v.phone_got[j].at)),
                ms(lan.map(|j| v.lan_out[j].at)),
                ms(wan.map(|j| v.wan_in[j].at)),
                ms(Some(d.at)),
                d.summary(),
                d.remote,
                model
                    .get(&i)
                    .map(String::as_str)
                    .unwrap_or("model: never saw it"),
            ),
        ));
    }
    rows.sort_by_key(|r| r.0);
    let mut out = vec![format!(
        "{:>8} {:>8} {:>8} {:>8}     (ms from the first REGISTER leaving the router; - = not seen there)",
        "phone", "home:lan", "home:wan", "server"
    )];
    out.extend(rows.into_iter().map(|r| r.1));
    out
}

/// A case a property does not hold for, with the scenario file that reproduces it.
#[derive(Debug, Clone)]
struct Violation {
    case: Case,
    /// What went wrong, then the case's datagrams at every vantage point with the model's
    /// verdicts.
    what: String,
    scenario: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}\n  {}\n  as a scenario file (`harness run case.toml`):\n\n{}",
            self.case, self.what, self.scenario
        )
    }
}

/// The file's header: what was tested, planned, predicted and seen.
fn comment(property: &str, case: &Case, j: &Judged) -> Vec<String> {
    let plan = case.plan();
    let last = plan
        .last_sent_before(plan.invite)
        .map(|(t, what)| {
            let what = match what {
                Sent::Register => "REGISTER",
                Sent::KeepAlive => "keep-alive",
            };
            format!(
                "{} ms after the phone's last packet ({what})",
                (plan.invite - t).as_millis()
            )
        })
        .unwrap_or_default();
    let seen = match j.invite() {
        Some(i) if i.kernel => format!(
            "the INVITE reached the phone ({} ms after REGISTER)",
            i.at.as_millis()
        ),
        Some(i) => format!(
            "the INVITE was lost ({} ms after REGISTER)",
            i.at.as_millis()
        ),
        None => "no INVITE left the registrar".to_string(),
    };
    let reregister = if case.reregister_every() > MAX_CALL {
        "no re-REGISTER before the call".to_string()
    } else {
        format!(
            "re-REGISTER every {} ms",
            case.reregister_every().as_millis()
        )
    };
    let refresh = match case.refresh {
        Refresh::Both => "refreshed by packets in both directions",
        Refresh::OutboundOnly => "refreshed by outbound packets only",
    };
    vec![
        format!("Counterexample to `{property}` (tests/tests/properties.rs), shrunk by proptest."),
        format!(
            "Setting: {}, registration expiry {} s ({reregister}); registrar: {}; NAT {} with a {} s UDP timeout, {refresh}.",
            case.keepalive, case.expires_secs, case.registrar, case.nat, case.timeout_secs,
        ),
        format!("The call's INVITE reaches the router {last}."),
        format!(
            "sim-nat's model: {}.",
            match &j.planned.why {
                None => "the binding is alive, the INVITE gets through".to_string(),
                Some(why) => format!("dropped: {why}"),
            }
        ),
        format!("Kernel: {seen}."),
        format!(
            "The call must connect within {} ms: T1 = {} ms puts the first INVITE retransmission after that, so only the first INVITE counts.",
            CALL_WINDOW.as_millis(),
            T1.as_millis()
        ),
    ]
}

fn violation(
    property: &str,
    case: &Case,
    j: &Judged,
    what: String,
    expect: CallExpectation,
) -> Violation {
    Violation {
        case: *case,
        what: format!(
            "{what}\n  what each vantage point saw:\n    {}",
            j.timeline.join("\n    ")
        ),
        scenario: case.scenario(expect, comment(property, case, j)).to_toml(),
    }
}

/// The model's verdict on the plan, as the scenario file's expectation.
fn expected_by_model(j: &Judged) -> CallExpectation {
    if j.planned.delivered {
        CallExpectation {
            status: 200,
            rang: Some(true),
        }
    } else {
        // Not "never rang": a retransmission after the call's timeout may still get through.
        CallExpectation {
            status: 0,
            rang: None,
        }
    }
}

/// Property 1: the kernel forwards exactly what the model forwards, and the run stayed close
/// enough to its plan that the planned verdict is the observed one.
fn kernel_agrees_with_the_model(case: &Case, run: &Run) -> Result<(), Violation> {
    const NAME: &str = "kernel_agrees_with_the_model";
    let j = judge(case, run);
    let fail = |what: String| Err(violation(NAME, case, &j, what, expected_by_model(&j)));
    if !j.missed.is_empty() {
        return fail(format!(
            "the router's capture never saw these cross, so the model could not be fed them: {}",
            j.missed.join("; ")
        ));
    }
    let Some(invite) = j.invite() else {
        return fail("no INVITE left the registrar towards the phone".into());
    };
    let disagree: Vec<String> = j
        .inbound
        .iter()
        .filter(|i| i.kernel != i.model)
        .map(|i| {
            format!(
                "{} at {} ms: kernel {}, model {}{}",
                i.what,
                i.at.as_millis(),
                if i.kernel { "delivered" } else { "dropped" },
                if i.model { "forwards" } else { "drops" },
                i.why
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !disagree.is_empty() {
        return fail(format!(
            "kernel and model disagree: {}",
            disagree.join("; ")
        ));
    }
    if invite.model != j.planned.delivered {
        let planned = case.plan().invite;
        return fail(format!(
            "drift: the INVITE was planned at {} ms and crossed the router at {} ms, which moved \
             it across a binding boundary (planned: {}, observed: {}); MARGIN ({} ms) is too small \
             for this machine",
            planned.as_millis(),
            invite.at.as_millis(),
            j.planned.delivered,
            invite.model,
            MARGIN.as_millis()
        ));
    }
    if invite.kernel && !run.established {
        return fail(format!(
            "the INVITE reached the phone but the call was not established within {} ms",
            CALL_WINDOW.as_millis()
        ));
    }
    Ok(())
}

/// Property 2 (and the broken setting): the incoming INVITE reaches the phone.
fn phone_is_reachable(case: &Case, run: &Run) -> Result<(), Violation> {
    const NAME: &str = "phone_is_reachable";
    let j = judge(case, run);
    if j.reached() && run.established {
        return Ok(());
    }
    let want = CallExpectation {
        status: 200,
        rang: Some(true),
    };
    let last = j
        .last_sent
        .as_ref()
        .map(|(t, what)| {
            format!(
                "; the phone's last packet before it: {what} at {} ms",
                t.as_millis()
            )
        })
        .unwrap_or_default();
    let what = match j.invite() {
        None => "no INVITE left the registrar towards the phone".to_string(),
        Some(i) if !i.kernel => format!(
            "the INVITE ({} ms after REGISTER) did not reach the phone{last}; model: {}",
            i.at.as_millis(),
            i.why.as_deref().unwrap_or("forwards it")
        ),
        Some(_) => format!(
            "the INVITE reached the phone but the call was not established within {} ms",
            CALL_WINDOW.as_millis()
        ),
    };
    let mut v = violation(NAME, case, &j, what, want);
    let fix = format!(
        "# Fix: a keep-alive or re-registration interval below the {} s UDP timeout, e.g. \
         keepalive = {{ type = \"crlf\", interval-ms = {} }}.\n",
        case.timeout_secs,
        u64::from(case.timeout_secs) * 500
    );
    if let Some(at) = v.scenario.find("\n\n[scenario]") {
        v.scenario.insert_str(at + 1, &fix);
    }
    Err(v)
}

type Property = fn(&Case, &Run) -> Result<(), Violation>;

/// Runs `batch` on the kernel and checks `property` on each case.
fn check_batch(label: &str, batch: &[Case], property: Property) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let (runs, fresh) = run_cases(batch);
    let mut failures = Vec::new();
    let (mut reached, mut drift) = (0, Duration::ZERO);
    let mut stamps = (Duration::ZERO, Duration::ZERO);
    let sbcs = batch
        .iter()
        .filter(|c| matches!(c.registrar, RegistrarSetting::Sbc(_)))
        .count();
    let (mut pings, mut pings_through) = (0, 0);
    for (case, run) in batch.iter().zip(&runs) {
        match run {
            Err(e) => failures.push(format!("{case:?}\n  harness error: {e}")),
            Ok(run) => {
                let j = judge(case, run);
                if matches!(case.registrar, RegistrarSetting::Sbc(_)) {
                    for i in &j.inbound {
                        if i.what.starts_with("OPTIONS") || i.what == "CRLF" {
                            pings += 1;
                            pings_through += usize::from(i.kernel);
                        }
                    }
                }
                reached += usize::from(j.reached());
                stamps = (stamps.0.max(j.stamp_error.0), stamps.1.max(j.stamp_error.1));
                if let Some(i) = j.invite() {
                    drift = drift.max(i.at.abs_diff(case.plan().invite));
                }
                if let Err(v) = property(case, run) {
                    failures.push(v.to_string());
                }
            }
        }
    }
    if fresh == 0 {
        // A shrinking step that only dropped cases: nothing new to report.
        return if failures.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(failures.join("\n\n")))
        };
    }
    eprintln!(
        "{label}: {} case(s), {fresh} run now, in {:.1} s: INVITE reached the phone in {reached}, \
         lost in {}; largest INVITE drift from plan {} ms; {sbcs} with our SBC ({pings} of its \
         NAT pings or CRLF pongs towards the phone, {pings_through} through); socket stamps \
         {} ms early to {} ms late against the router's capture; {} failed",
        batch.len(),
        started.elapsed().as_secs_f64(),
        batch.len() - reached,
        drift.as_millis(),
        stamps.0.as_millis(),
        stamps.1.as_millis(),
        failures.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(failures.join("\n\n")))
    }
}

/// Batches per property run (`PROPERTY_BATCHES`, default 1).
fn batches() -> u32 {
    std::env::var("PROPERTY_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs `property` over batches of `size` cases from `cases`, shrinking and saving failures to
/// `regressions` (relative to the `tests` crate).
fn check_property(
    label: &str,
    regressions: &'static str,
    cases: impl Strategy<Value = Case>,
    size: usize,
    property: Property,
) -> Result<()> {
    let config = ProptestConfig {
        cases: batches(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // A real failure shrinks case by case on the kernel; bound it.
        max_shrink_iters: 4096,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let batch = Batch {
        element: cases,
        size,
    };
    match runner.run(&batch, |b| check_batch(label, &b, property)) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, minimal)) => {
            bail!(
                "{why}\n\nminimal failing batch ({} case(s)): {minimal:#?}",
                minimal.len()
            )
        }
        Err(TestError::Abort(why)) => bail!("proptest gave up: {why}"),
    }
}

// --- the tests -----------------------------------------------------------------------------------

#[test]
fn an_incoming_invite_reaches_the_phone_exactly_when_the_model_says_its_binding_is_alive(
) -> Result<()> {
    require_kernel!();
    check_property(
        "kernel agrees with the model",
        "proptest-regressions/properties/kernel_agrees_with_the_model.txt",
        arb_case(),
        AGREEMENT_BATCH,
        kernel_agrees_with_the_model,
    )
}

#[test]
fn a_keepalive_or_reregistration_faster_than_the_timeout_keeps_the_phone_reachable() -> Result<()> {
    require_kernel!();
    check_property(
        "phone is reachable",
        "proptest-regressions/properties/phone_is_reachable.txt",
        arb_refreshed_case(),
        REACHABLE_BATCH,
        phone_is_reachable,
    )
}

#[test]
fn the_model_agrees_that_a_refresh_faster_than_the_timeout_keeps_the_phone_reachable() {
    // The virtual-clock twin of the test above: thousands of cases in well under a second.
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&arb_refreshed_case(), |c| {
            let p = predict(&c.behaviour(), &c.plan(), 0, 0);
            proptest::prop_assert!(
                p.delivered && c.refresh_interval() + MARGIN <= c.timeout(),
                "{c:?}: {p:?}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_oracle_plays_the_re_registration_a_moved_stun_flow_triggers() {
    // Symmetric NAT, 1 s timeout, keep-alive every 2 s: each keep-alive finds the flow expired
    // and gets a new port. The call comes 300 ms after the first keep-alive (packet 2, after the
    // REGISTER and the STUN request that learns the mapping).
    let late = |keepalive| Case {
        nat: NatType::Symmetric,
        refresh: Refresh::Both,
        timeout_secs: 1,
        keepalive,
        expires_secs: 3600,
        after_packet: 2,
        delay_ms: 300,
        jitter_ms: 0,
        registrar: RegistrarSetting::Proxy,
    };
    let stun = late(KeepAliveSetting::Stun { interval_ms: 2000 });
    let crlf = late(KeepAliveSetting::Crlf { interval_ms: 2000 });
    let p = predict(&stun.behaviour(), &stun.plan(), 0, 0);
    assert!(
        p.delivered,
        "the STUN answer shows the move, the phone re-registers: {p:?}"
    );
    assert!(clear_of_boundaries(&stun), "and the case may be generated");
    let p = predict(&crlf.behaviour(), &crlf.plan(), 0, 0);
    assert!(
        !p.delivered,
        "a CRLF keep-alive learns nothing: the registrar's mapping is dead"
    );
}

#[test]
fn the_model_says_sbc_pings_keep_a_linux_binding_and_answered_options_pings_any_binding(
) -> Result<()> {
    // The property on the oracle, over the SBC cases property 1 runs: pings faster than
    // the timeout keep the phone reachable when they refresh the binding (inbound refresh, or the
    // phone's outbound answer to an OPTIONS), and CRLF pings on an outbound-only NAT change
    // nothing (on port-preserving NATs). Also: some generated cases are decided by the pings alone.
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let mut decided_by_pings = 0;
    for _ in 0..2000 {
        let c = arb_case()
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let RegistrarSetting::Sbc(ping) = c.registrar else {
            continue;
        };
        let plan = c.plan();
        let with = predict(&c.behaviour(), &plan, 0, 0).delivered;
        let without = predict(
            &c.behaviour(),
            &Plan {
                pings: vec![],
                ..plan.clone()
            },
            0,
            0,
        )
        .delivered;
        decided_by_pings += usize::from(with != without);
        let refreshes = match ping {
            KeepAliveSetting::Off => false,
            KeepAliveSetting::Crlf { .. } => c.refresh == Refresh::Both,
            KeepAliveSetting::Options { .. } => true,
            KeepAliveSetting::Stun { .. } => unreachable!("an SBC does not ping with STUN"),
        };
        if refreshes && ping.interval().is_some_and(|i| i + MARGIN <= c.timeout()) {
            ensure!(
                with,
                "{c:?}: pings faster than the timeout, yet the INVITE is lost"
            );
        }
        // (Only where ports are preserved: elsewhere a ping may clear an expired mapping in the
        // model, and the phone's next packet then draws its new port from another state.)
        if !refreshes && c.behaviour().ports == PortAllocation::Preserve {
            ensure!(
                with == without,
                "{c:?}: pings that refresh nothing changed the verdict"
            );
        }
    }
    eprintln!("generated: {decided_by_pings} SBC case(s) decided by the pings");
    ensure!(
        decided_by_pings > 0,
        "no generated case is decided by the SBC's pings"
    );
    Ok(())
}

#[test]
fn the_generated_cases_cover_both_verdicts_on_every_nat() -> Result<()> {
    // Property 1 is only as good as its mix: a strategy whose INVITEs nearly always get through
    // would say little about expiry. Checked on the model, so it costs nothing.
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let mut seen: HashMap<(NatType, Refresh), (u32, u32)> = HashMap::new();
    // Cases a STUN keep-alive's move detection decides: the same case with CRLF at the same
    // interval gets the other verdict.
    let mut decided_by_stun = 0;
    for _ in 0..2000 {
        let c = arb_case()
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let reached = predict(&c.behaviour(), &c.plan(), 0, 0).delivered;
        if let KeepAliveSetting::Stun { interval_ms } = c.keepalive {
            let crlf = Case {
                keepalive: KeepAliveSetting::Crlf { interval_ms },
                ..c
            };
            decided_by_stun +=
                usize::from(predict(&crlf.behaviour(), &crlf.plan(), 0, 0).delivered != reached);
        }
        let n = seen.entry((c.nat, c.refresh)).or_default();
        if reached {
            n.0 += 1;
        } else {
            n.1 += 1;
        }
    }
    let (reached, lost) = seen
        .values()
        .fold((0, 0), |(r, l), (r2, l2)| (r + r2, l + l2));
    eprintln!("generated: INVITE reaches the phone in {reached}, lost in {lost}: {seen:?}");
    ensure!(seen.len() == 8, "{seen:?}");
    ensure!(
        seen.values().all(|(r, l)| *r > 0 && *l > 0),
        "a NAT without both verdicts: {seen:?}"
    );
    let share = f64::from(lost) / f64::from(reached + lost);
    ensure!((0.3..=0.7).contains(&share), "{:.0} % lost", share * 100.0);
    eprintln!(
        "generated: {decided_by_stun} case(s) decided by a STUN keep-alive seeing the flow move"
    );
    ensure!(
        decided_by_stun > 0,
        "no case exercises the STUN move detection"
    );
    Ok(())
}

#[test]
fn a_keepalive_one_second_longer_than_the_timeout_is_caught_shrunk_and_emitted_as_a_scenario(
) -> Result<()> {
    require_kernel!();
    let config = ProptestConfig {
        cases: 1,
        // An expected failure: nothing to save.
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    };
    // A fixed seed: the same batch and the same shrinking path on every run.
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let batch = Batch {
        element: arb_broken_case(),
        size: BROKEN_BATCH,
    };
    let started = Instant::now();
    let result = runner.run(&batch, |b| {
        check_batch("broken setting", &b, phone_is_reachable)
    });
    let minimal = match result {
        Err(TestError::Fail(_, minimal)) => minimal,
        Ok(()) => bail!("the property held for keep-alives 1 s slower than the timeout"),
        Err(TestError::Abort(why)) => bail!("proptest gave up: {why}"),
    };
    ensure!(minimal.len() == 1, "shrunk to {minimal:#?}");
    let case = minimal[0];
    let run = MEMO.lock().unwrap_or_else(|e| e.into_inner())[&case]
        .clone()
        .map_err(anyhow::Error::msg)?;
    let Err(v) = phone_is_reachable(&case, &run) else {
        bail!("the shrunk case passes: {case:?}");
    };
    ensure!(
        !predict(&case.behaviour(), &case.plan(), 0, 0).delivered,
        "the model expects {case:?} to be reachable"
    );
    eprintln!(
        "caught and shrunk in {:.1} s to:\n{v}",
        started.elapsed().as_secs_f64()
    );
    // The printed file is a scenario the runner accepts, and replaying it fails the same way.
    let s = Scenario::from_str("counterexample.toml", &v.scenario)?;
    let outcome = RUNTIME.block_on(async {
        // Its own bring-up and its timeline: alone.
        let _busy = QUIET.write().await;
        scenario::run(&s, &RunOptions::default()).await
    })?;
    ensure!(
        outcome.verdict == scenario::Verdict::Fail,
        "the emitted scenario passes: {:?}\n{}",
        outcome.checks,
        outcome.ladder
    );
    let call = outcome
        .checks
        .iter()
        .find(|(what, _, _)| what.contains("call ends with"))
        .context("a call check")?;
    ensure!(!call.1, "{:?}", outcome.checks);
    eprintln!("`harness run` on it: {:?}", outcome.checks);
    Ok(())
}

/// Every NAT type and refresh direction, with a 1, 2 and 3 s timeout.
fn lifetime_cases() -> Vec<(NatType, Refresh, u32)> {
    let mut out = Vec::new();
    for r in [Refresh::Both, Refresh::OutboundOnly] {
        for t in NatType::ALL {
            for secs in 1..=3 {
                out.push((t, r, secs));
            }
        }
    }
    out
}

/// A home LAN with our RFC 5780 STUN server on `server`, for one lifetime probe.
async fn lifetime_lab(nat: NatBehaviour) -> Result<(Topology, StunServerTask)> {
    let topo = shapes::home_lan(nat).build().await?;
    let config = ServerConfig::rfc5780(
        SocketAddr::new(SERVER.parse()?, 3478),
        SocketAddr::new(SERVER_ALT.parse()?, 3479),
    );
    let (stun, _) = StunServerTask::spawn(topo.node("server")?, config).await?;
    Ok((topo, stun))
}

/// Property 3, for one NAT: the binding lifetime RFC 5780 discovery measures from `alice`.
///
/// The search halves [0.6 s, 4.6 s] down to 0.25 s, so it waits 0.6 + k·0.25 s, never within
/// 100 ms of a whole second (the same margin idea as [`MARGIN`]), and for a timeout of T s it
/// must end with [T − 0.15 s, T + 0.1 s]: the lifetime it reports is T − 0.15 s exactly.
async fn lifetime(topo: &Topology) -> Result<Duration> {
    let alice = |port| SocketAddr::new(Ipv4Addr::new(192, 168, 1, 10).into(), port);
    let config = DiscoveryConfig {
        retransmit: RetransmitConfig {
            rto: Duration::from_millis(100),
            max_transmissions: 3,
            final_wait_factor: 4,
        },
        lifetime: Some(LifetimeProbe {
            second_local: alice(40001),
            min: Duration::from_millis(600),
            max: Duration::from_millis(4600),
            resolution: Duration::from_millis(250),
        }),
        ..DiscoveryConfig::new(alice(40000), SocketAddr::new(SERVER.parse()?, 3478))
    };
    let found = stun::discover(topo.node("alice")?, config).await?;
    found
        .binding_lifetime
        .with_context(|| format!("no lifetime measured: {found:?}"))
}

#[test]
fn the_discovered_binding_lifetime_is_the_configured_udp_timeout_for_every_nat() -> Result<()> {
    require_kernel!();
    let started = Instant::now();
    let cases = lifetime_cases();
    let found: Vec<Result<Duration>> = RUNTIME.block_on(async {
        let labs = {
            let _busy = QUIET.write().await;
            join_all(cases.iter().map(|(t, r, secs)| {
                lifetime_lab(t.behaviour().with_udp_timeout(*secs).with_refresh(*r))
            }))
            .await
        };
        let quiet = QUIET.read().await;
        let found = join_all(labs.iter().map(|l| async move {
            match l {
                Ok((topo, _)) => lifetime(topo).await,
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            }
        }))
        .await;
        drop(quiet);
        let _busy = QUIET.write().await;
        drop(labs);
        found
    });
    let mut failures = Vec::new();
    for ((t, r, secs), found) in cases.iter().zip(found) {
        let want = Duration::from_secs((*secs).into()) - Duration::from_millis(150);
        match found {
            Ok(got) if got.abs_diff(want) <= Duration::from_millis(1) => {}
            Ok(got) => failures.push(format!(
                "{t}, {r:?} refresh, {secs} s timeout: lifetime {} ms, expected {} ms (the last \
                 wait below {secs} s)",
                got.as_millis(),
                want.as_millis()
            )),
            Err(e) => failures.push(format!("{t}, {r:?}, {secs} s: {e:#}")),
        }
    }
    eprintln!(
        "lifetime probe: {} NATs in {:.1} s, {} wrong",
        cases.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
