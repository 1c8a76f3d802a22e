//! Binding-timeout cases for properties at model speed: a phone behind a NAT registers, and some
//! time later somebody calls it ([`IncomingCall`], the same file the kernel properties emit).
//!
//! A [`Case`] is plain data (NAT type, refresh direction, timeout, keep-alive, registration
//! expiry, registrar and its pings, when the call comes, who calls whom, whether RTP flows);
//! [`Case::scenario`] writes it as a scenario file and parses it back, so what the model plays is
//! exactly what `harness run` and the kernel would. [`Case::claim`] is the property: which cases
//! must be reachable. [`Case::random`] draws the property's cases (the public phone calls the
//! NATed one, no media); [`Case::random_any`] also turns the call around and adds RTP, for the
//! differential property, whose expectation is whatever the model observed ([`Case::on_model`]).

use std::time::Duration;

use sim_nat::{NatBehaviour, NatType, Refresh};

use crate::rtp::MediaVerdict;
use crate::scenario::emit::{CallExpectation, Doc, IncomingCall, Registrar, Table, CALLER, PHONE};
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
    /// Who calls whom.
    pub direction: CallDirection,
    /// Whether the established call streams RTP, and how the public phone sends it.
    pub media: MediaMode,
}

/// Who calls whom in a [`Case`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// The public phone `alice` calls `bob` behind the NAT: the binding-timeout case.
    ToNatedPhone,
    /// `bob` behind the NAT calls `alice` (registered too), his INVITE opening its own binding.
    FromNatedPhone,
}

/// The media of a [`Case`]'s call. `bob` offers his private address (no STUN); what arrives
/// depends on the registrar (the SBC relays and latches) and on `alice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// No RTP is judged (and the model plays none).
    Off,
    /// RTP both ways for [`MEDIA_MS`]; `latching`: `alice` sends to where `bob`'s RTP comes from
    /// (symmetric RTP), else to the address his SDP gave (one-way audio behind a NAT).
    Rtp { latching: bool },
}

/// How long each phone streams in a case with media (the runner adds 400 ms).
pub const MEDIA_MS: u64 = 300;

/// What a case's call did: the caller's final status (0: none within the window) and, for a
/// case with media and an established call, which way audio flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    pub media: Option<MediaVerdict>,
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
            direction: CallDirection::ToNatedPhone,
            media: MediaMode::Off,
        }
    }

    /// A random case of any kind: [`Case::random`]'s, with the call in either direction and
    /// with or without RTP (latching or not at the public phone).
    pub fn random_any(rng: &mut Rng) -> Self {
        let c = Case::random(rng);
        let direction = if rng.below(2) == 0 {
            CallDirection::ToNatedPhone
        } else {
            CallDirection::FromNatedPhone
        };
        let media = match rng.below(3) {
            0 => MediaMode::Off,
            1 => MediaMode::Rtp { latching: false },
            _ => MediaMode::Rtp { latching: true },
        };
        Case {
            direction,
            media,
            ..c
        }
    }

    /// The caller and the callee.
    pub fn parties(&self) -> (&'static str, &'static str) {
        match self.direction {
            CallDirection::ToNatedPhone => (CALLER, PHONE),
            CallDirection::FromNatedPhone => (PHONE, CALLER),
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
        if self.direction != CallDirection::ToNatedPhone {
            return None;
        }
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

    /// The file of this case expecting `expect`: [`Case::incoming_call`], turned around and
    /// with media as the case says.
    pub fn doc(&self, expect: Observed) -> Doc {
        let mut d = self.incoming_call(expect.status == 200).to_doc();
        d.summary = format!("{self}");
        let (caller, _) = self.parties();
        if self.direction == CallDirection::FromNatedPhone {
            // alice must be registered to be found, and answer within the call's window.
            d.steps
                .insert(0, Table::new().set("action", "register").set("ua", CALLER));
            for t in d.steps.iter_mut().chain(&mut d.expects) {
                for (k, v) in &mut t.fields {
                    if k == "from" {
                        *v = format!("{:?}", PHONE);
                    } else if k == "to" {
                        *v = format!("{:?}", CALLER);
                    }
                }
            }
        }
        for t in &mut d.components {
            let ua = t.fields.iter().any(|(k, v)| k == "kind" && v == "\"ua\"");
            let alice = t
                .fields
                .iter()
                .any(|(k, v)| k == "host" && v == &format!("{CALLER:?}"));
            if !ua {
                continue;
            }
            if alice && !t.fields.iter().any(|(k, _)| k == "answer-after-ms") {
                t.fields.push(("answer-after-ms".into(), "20".into()));
            }
            if let MediaMode::Rtp { latching } = self.media {
                t.fields.push(("media-ms".into(), MEDIA_MS.to_string()));
                if alice && latching {
                    t.fields.push(("latching".into(), "true".into()));
                }
            }
        }
        if let (MediaMode::Rtp { .. }, Some(m)) = (self.media, expect.media) {
            let value = match m {
                MediaVerdict::BothWays => "both-ways",
                MediaVerdict::CallerToCallee => "caller-to-callee",
                MediaVerdict::CalleeToCaller => "callee-to-caller",
                MediaVerdict::None => "none",
            };
            d.expects.push(
                Table::new()
                    .set("kind", "media")
                    .set("from", caller)
                    .set("value", value),
            );
        }
        d
    }

    /// [`Case::doc`] as a checked scenario.
    pub fn scenario_expecting(&self, expect: Observed) -> Scenario {
        let text = self.doc(expect).to_toml();
        Scenario::from_str("binding-case.toml", &text)
            .unwrap_or_else(|e| unreachable!("an emitted case is a valid file: {e}\n{text}"))
    }

    /// The case's file expecting the call established (or not), with media both ways.
    pub fn scenario(&self, reachable: bool) -> Scenario {
        self.scenario_expecting(Observed {
            status: if reachable { 200 } else { 0 },
            media: Some(MediaVerdict::BothWays),
        })
    }

    /// Whether the call gets through on the model (the first INVITE reaches the callee).
    pub fn reachable_on_model(&self) -> bool {
        if self.media != MediaMode::Off {
            return self.on_model().status == 200;
        }
        match super::verdict(&self.scenario(true)) {
            Ok((v, _)) => v == Verdict::Pass,
            Err(_) => false,
        }
    }

    /// What the call does on the model: its status and, with media, which way audio flows.
    pub fn on_model(&self) -> Observed {
        let (caller, _) = self.parties();
        let calls = super::calls(&self.scenario(true)).unwrap_or_default();
        let call = calls.iter().rev().find(|c| c.from == caller);
        Observed {
            status: call.map_or(0, |c| c.status),
            media: match self.media {
                MediaMode::Off => None,
                MediaMode::Rtp { .. } => call.and_then(|c| c.media.as_ref()).map(|m| m.verdict),
            },
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
        let v = self.on_model();
        (-3..=3).all(|k| self.shifted(k * 50).on_model() == v)
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
        if self.media != MediaMode::Off {
            v.push(Case {
                media: MediaMode::Off,
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
            "{} NAT, {} s timeout ({:?} refresh); keep-alive {:?}; expires {} s; {}; {} {} ms after registering; media {:?}",
            self.nat,
            self.timeout_secs,
            self.refresh,
            self.keepalive,
            self.expires_secs,
            match self.sbc {
                None => "far-end proxy".to_string(),
                Some(p) => format!("SBC pinging {p:?}"),
            },
            match self.direction {
                CallDirection::ToNatedPhone => "called",
                CallDirection::FromNatedPhone => "calling out",
            },
            self.wait_ms,
            self.media
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::file::{Expect, Step};

    #[test]
    fn a_case_turned_around_registers_both_phones_and_has_bob_call_alice_with_rtp() {
        let mut rng = Rng::new(1);
        let c = Case {
            direction: CallDirection::FromNatedPhone,
            media: MediaMode::Rtp { latching: true },
            ..Case::random(&mut rng)
        };
        let s = c.scenario_expecting(Observed {
            status: 200,
            media: Some(MediaVerdict::CalleeToCaller),
        });
        let steps: Vec<String> = s
            .file
            .steps
            .iter()
            .filter_map(|st| match st.get_ref() {
                Step::Register { ua, .. } => Some(format!("register {ua}")),
                Step::Call { from, to, .. } => Some(format!("call {from} -> {to}")),
                _ => None,
            })
            .collect();
        assert_eq!(
            steps,
            ["register alice", "register bob", "call bob -> alice"]
        );
        assert!(s.file.expects.iter().any(|e| matches!(
            e.get_ref(),
            Expect::Media { from, value } if from == "bob"
                && *value == crate::scenario::file::MediaVerdictDef::CalleeToCaller
        )));
        assert!(s.file.expects.iter().any(|e| matches!(
            e.get_ref(),
            Expect::Call { from, status } if from == "bob" && format!("{status:?}").contains("200")
        )));
    }
}
