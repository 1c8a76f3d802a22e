//! Binding-timeout cases for properties at model speed: a phone behind a NAT registers, and some
//! time later somebody calls it ([`IncomingCall`], the same file the kernel properties emit).
//!
//! A [`Case`] is plain data (NAT type, refresh direction, timeout, keep-alive, registration
//! expiry, registrar and its pings, when the call comes); [`Case::scenario`] writes it as a
//! scenario file and parses it back, so what the model plays is exactly what `harness run` and
//! the kernel would. [`Case::claim`] is the property: which cases must be reachable.

use std::time::Duration;

use sim_nat::{NatBehaviour, NatType, Refresh};

use crate::scenario::emit::{CallExpectation, IncomingCall, Registrar};
use crate::scenario::{Scenario, Verdict};
use crate::seeded::Rng;
use crate::sip::{KeepAlive, Ping};

/// T1 of every case: a first INVITE retransmission 250 ms after the INVITE.
pub const T1_MS: u64 = 250;
/// How long the caller waits: past an answered first INVITE (~20 ms), before an answered
/// retransmission (≥ T1 + 20 ms). So "established" means the first INVITE got through.
pub const CALL_WINDOW_MS: u64 = 150;

/// One binding-timeout case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub nat: NatType,
    pub refresh: Refresh,
    pub timeout_secs: u32,
    /// The phone's keep-alive: `None` off; CRLF, OPTIONS or STUN with its interval.
    pub keepalive: Option<KeepAlive>,
    pub expires_secs: u64,
    /// `None`: the far-end proxy; `Some(ping)`: our SBC, pinging with `ping` (or not).
    pub sbc: Option<Option<Ping>>,
    /// From the end of registration to the call.
    pub wait_ms: u64,
}

impl Case {
    /// A random case (intervals in whole 50 ms, so shrunk values read well).
    pub fn random(rng: &mut Rng) -> Self {
        let pick = |rng: &mut Rng, n: usize| rng.below(n) as u64;
        let ms =
            |rng: &mut Rng, lo: u64, hi: u64| lo + 50 * pick(rng, ((hi - lo) / 50 + 1) as usize);
        let nat = NatType::ALL[pick(rng, 4) as usize];
        let refresh = if pick(rng, 3) == 0 {
            Refresh::OutboundOnly
        } else {
            Refresh::Both
        };
        let timeout_secs = 1 + pick(rng, 3) as u32;
        let every = Duration::from_millis(ms(rng, 500, 4000));
        let keepalive = match pick(rng, 4) {
            0 => None,
            1 => Some(KeepAlive::Crlf(every)),
            2 => Some(KeepAlive::Options(every)),
            _ => Some(KeepAlive::Stun(every)),
        };
        let ping_every = Duration::from_millis(ms(rng, 500, 4000));
        let sbc = match pick(rng, 4) {
            0 | 1 => None,
            2 => Some(None),
            _ if pick(rng, 2) == 0 => Some(Some(Ping::Crlf(ping_every))),
            _ => Some(Some(Ping::Options(ping_every))),
        };
        Case {
            nat,
            refresh,
            timeout_secs,
            keepalive,
            expires_secs: 2 + pick(rng, 9),
            sbc,
            wait_ms: ms(rng, 0, 7000),
        }
    }

    pub fn behaviour(&self) -> NatBehaviour {
        let mut b = self.nat.behaviour();
        b.refresh = self.refresh;
        b.udp_timeout_secs = self.timeout_secs;
        b
    }

    /// The property: a refresh at an interval below the timeout keeps the phone reachable. A
    /// refresh is the phone's keep-alive, its re-registration (at half the expiry), an SBC's
    /// OPTIONS ping (the phone's 200 is outbound), or, where inbound packets refresh too, an
    /// SBC's CRLF ping. `None`: the property claims nothing about this case.
    pub fn claim(&self) -> Option<bool> {
        let timeout = Duration::from_secs(self.timeout_secs.into());
        let mut refreshes = vec![Duration::from_millis(self.expires_secs * 500)];
        refreshes.extend(self.keepalive.map(|k| k.interval()));
        match self.sbc {
            Some(Some(Ping::Options(d))) => refreshes.push(d),
            Some(Some(Ping::Crlf(d))) if self.refresh == Refresh::Both => refreshes.push(d),
            _ => {}
        }
        refreshes.iter().any(|r| *r < timeout).then_some(true)
    }

    /// The file a kernel or model run plays, expecting `expect` (200 and rang, or 0).
    pub fn incoming_call(&self, reachable: bool) -> IncomingCall {
        IncomingCall {
            name: "binding-case".into(),
            summary: format!("{self}"),
            comment: vec![
                "Symptom: a binding-timeout property case.".into(),
                "Root cause: the NAT's UDP timeout against the phone's refreshes.".into(),
                "Fix: refresh below the timeout.".into(),
            ],
            t1_ms: T1_MS,
            nat: self.behaviour(),
            registrar: match self.sbc {
                None => Registrar::Proxy,
                Some(p) => Registrar::Sbc {
                    ping: p.map(|p| match p {
                        Ping::Crlf(d) => KeepAlive::Crlf(d),
                        Ping::Options(d) => KeepAlive::Options(d),
                    }),
                },
            },
            keepalive: self.keepalive,
            expires_secs: self.expires_secs,
            answer_after_ms: 20,
            wait_ms: self.wait_ms,
            call_timeout_ms: CALL_WINDOW_MS,
            expect: CallExpectation {
                status: if reachable { 200 } else { 0 },
                rang: None,
            },
        }
    }

    /// [`Case::incoming_call`] as a checked scenario.
    pub fn scenario(&self, reachable: bool) -> Scenario {
        let text = self.incoming_call(reachable).to_toml();
        Scenario::from_str("binding-case.toml", &text)
            .unwrap_or_else(|e| unreachable!("an emitted case is a valid file: {e}\n{text}"))
    }

    /// Whether the call gets through on the model (the first INVITE reaches the phone).
    pub fn reachable_on_model(&self) -> bool {
        match super::verdict(&self.scenario(true)) {
            Ok((v, _)) => v == Verdict::Pass,
            Err(_) => false,
        }
    }

    /// The same case with the call moved by `delta_ms` (clamped at 0).
    pub fn shifted(&self, delta_ms: i64) -> Self {
        Case {
            wait_ms: self.wait_ms.saturating_add_signed(delta_ms),
            ..*self
        }
    }

    /// Whether the model's verdict holds with the call anywhere within ±150 ms (every 50 ms):
    /// only such cases go to the kernel, whose timers run a few milliseconds late under load.
    pub fn away_from_boundaries(&self) -> bool {
        let v = self.reachable_on_model();
        (-3..=3).all(|k| self.shifted(k * 50).reachable_on_model() == v)
            && self.intervals().iter().all(|i| {
                let t = u64::from(self.timeout_secs) * 1000;
                i.as_millis().abs_diff(u128::from(t)) > 150
            })
    }

    fn intervals(&self) -> Vec<Duration> {
        let mut v = vec![Duration::from_millis(self.expires_secs * 500)];
        v.extend(self.keepalive.map(|k| k.interval()));
        if let Some(Some(p)) = self.sbc {
            v.push(match p {
                Ping::Crlf(d) | Ping::Options(d) => d,
            });
        }
        v
    }

    /// Smaller versions of this case, simplest first: what a shrinker tries.
    pub fn simpler(&self) -> Vec<Case> {
        let mut v = Vec::new();
        if self.wait_ms > 0 {
            v.push(Case {
                wait_ms: self.wait_ms / 2 / 50 * 50,
                ..*self
            });
            v.push(self.shifted(-50));
        }
        if self.sbc.is_some() {
            v.push(Case { sbc: None, ..*self });
        }
        if self.keepalive.is_some() {
            v.push(Case {
                keepalive: None,
                ..*self
            });
        }
        if self.refresh != Refresh::Both {
            v.push(Case {
                refresh: Refresh::Both,
                ..*self
            });
        }
        if self.nat != NatType::FullCone {
            v.push(Case {
                nat: NatType::FullCone,
                ..*self
            });
        }
        if self.expires_secs > 2 {
            v.push(Case {
                expires_secs: self.expires_secs - 1,
                ..*self
            });
        }
        v
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} NAT, {} s timeout ({:?} refresh); keep-alive {:?}; expires {} s; {}; called {} ms after registering",
            self.nat,
            self.timeout_secs,
            self.refresh,
            self.keepalive,
            self.expires_secs,
            match self.sbc {
                None => "far-end proxy".to_string(),
                Some(p) => format!("SBC pinging {p:?}"),
            },
            self.wait_ms
        )
    }
}

/// Shrinks a case on which `fails` holds to a smallest one that still fails (greedy, as
/// proptest does field by field).
pub fn shrink(mut case: Case, fails: impl Fn(&Case) -> bool) -> Case {
    'outer: loop {
        for c in case.simpler() {
            if c != case && fails(&c) {
                case = c;
                continue 'outer;
            }
        }
        return case;
    }
}
