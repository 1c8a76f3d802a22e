//! The scenario a capture implies, as plain data ([`Plan`]), its file ([`Plan::to_doc`]) and the
//! fix twins ([`Plan::fixes`]): each fix the diagnosis names that the scenario format can express
//! is one change to a copy of the plan plus the expectations of success.

use std::net::Ipv4Addr;

use sim_nat::{AlgFault, NatBehaviour, NatType, SipAlg};

use super::Mapped;
use crate::scenario::emit::{keepalive_value, nat_value, wrap, Doc, Table};
use crate::sip::KeepAlive;

/// A router of the scenario: a NAT the capture shows a phone behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    pub name: String,
    pub wan: Ipv4Addr,
    /// The LAN's router address; the LAN is its /24.
    pub lan: Ipv4Addr,
    pub nat: NatBehaviour,
    /// Why this NAT type: the evidence, or that the capture does not decide it.
    pub why: String,
    /// NAT types the capture cannot tell apart (empty when it decides).
    pub candidates: Vec<NatType>,
}

/// A phone of the scenario (a host running a UA), named after its SIP user.
#[derive(Debug, Clone, PartialEq)]
pub struct Phone {
    pub name: String,
    /// The router it sits behind, or `None` on the internet.
    pub router: Option<String>,
    pub addr: Ipv4Addr,
    pub rport: bool,
    /// Contact from STUN rather than its interface.
    pub stun_contact: bool,
    pub keepalive: Option<KeepAlive>,
    pub expires_secs: Option<u64>,
    pub answer_after_ms: Option<u64>,
    /// How often it repeated its 180 while ringing, when it did.
    pub provisional_interval_ms: Option<u64>,
    pub media_port: Option<u16>,
    pub latching: bool,
    pub password: Option<String>,
}

/// How the registrar treats NATed phones, and why the plan says so.
#[derive(Debug, Clone, PartialEq)]
pub struct Registrar {
    pub far_end: bool,
    pub why: String,
    /// Users that must authenticate (the capture shows challenges), with the invented password.
    pub users: Vec<(String, String)>,
    /// A STUN server next to it (a phone's Contact came from STUN).
    pub stun: bool,
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Register {
        ua: String,
    },
    Wait {
        ms: u64,
        why: String,
    },
    Call {
        from: String,
        to: String,
        hold_ms: u64,
    },
}

/// What the run must show: what the capture showed (or, in a fix twin, success).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Registered { ua: String, value: bool },
    Call { from: String, status: u16 },
    Rang { ua: String, value: bool },
}

/// A fix the scenario format can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Far-end NAT traversal at the registrar (source address, rport).
    FarEnd,
    /// rport in the phones' Via.
    Rport,
    /// A keep-alive below the NAT's UDP timeout.
    KeepAlive,
    /// The router's SIP ALG off.
    AlgOff,
    /// The far end latches onto where the phone's RTP comes from.
    Latching,
}

impl Fix {
    pub fn suffix(self) -> &'static str {
        match self {
            Fix::FarEnd => "far-end",
            Fix::Rport => "rport",
            Fix::KeepAlive => "keepalive",
            Fix::AlgOff => "alg-off",
            Fix::Latching => "latching",
        }
    }
}

/// The scenario a capture implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub summary: String,
    /// `Symptom:`, `Root cause:`, `Fix:` lines, then notes (mapping, NAT, timers).
    pub comment: Vec<String>,
    pub t1_ms: u64,
    pub mapping: Vec<Mapped>,
    pub routers: Vec<Router>,
    /// The registrar's host addresses (the second for an RFC 5780 STUN server).
    pub server: [Ipv4Addr; 2],
    pub registrar: Registrar,
    pub phones: Vec<Phone>,
    pub steps: Vec<Action>,
    pub expect: Vec<Outcome>,
    /// Fixes the diagnosis names, in the order it names them.
    pub fixes: Vec<Fix>,
    /// The NAT's UDP timeout in the scenario, when an expired binding set it.
    pub udp_timeout_secs: Option<u32>,
}

/// `real → scenario  (role)` lines for stdout and the file's comment.
pub fn mapping_lines(m: &[Mapped]) -> Vec<String> {
    m.iter()
        .map(|m| format!("{:<15} → {:<15} ({})", m.real, m.scenario, m.role))
        .collect()
}

/// The host name of the registrar/proxy.
pub const SERVER: &str = "server";

impl Plan {
    /// The file's text as data.
    pub fn to_doc(&self) -> Doc {
        let mut d = Doc {
            comment: self.comment.clone(),
            name: self.name.clone(),
            summary: self.summary.clone(),
            t1_ms: self.t1_ms,
            ..Doc::default()
        };
        for r in &self.routers {
            let mut t = Table::new()
                .set("name", &r.name)
                .set("wan", r.wan.to_string())
                .set("lan", format!("{}/24", r.lan))
                .raw("nat", nat_value(&r.nat));
            t.comment.push(wrap(&r.why, 98));
            d.routers.push(t);
        }
        for p in &self.phones {
            d.hosts.push(
                Table::new()
                    .set("name", &p.name)
                    .set(
                        "segment",
                        p.router.as_deref().unwrap_or(crate::topology::INTERNET),
                    )
                    .set("addrs", [p.addr.to_string()]),
            );
        }
        d.hosts.push(
            Table::new()
                .set("name", SERVER)
                .set("segment", crate::topology::INTERNET)
                .set("addrs", self.server.map(|a| a.to_string())),
        );
        if self.registrar.stun {
            d.components
                .push(Table::new().set("kind", "stun-server").set("host", SERVER));
        }
        let mut proxy = Table::new()
            .set("kind", "proxy")
            .set("host", SERVER)
            .set(
                "nat-handling",
                if self.registrar.far_end {
                    "far-end"
                } else {
                    "literal"
                },
            )
            .comment(wrap(&self.registrar.why, 98));
        if !self.registrar.users.is_empty() {
            let users: std::collections::BTreeMap<&str, &str> = self
                .registrar
                .users
                .iter()
                .map(|(u, p)| (u.as_str(), p.as_str()))
                .collect();
            proxy = proxy.set("users", users);
        }
        d.components.push(proxy);
        for p in &self.phones {
            let mut t = Table::new()
                .set("kind", "ua")
                .set("host", &p.name)
                .set("proxy", SERVER);
            if !p.rport {
                t = t.set("rport", false);
            }
            if p.stun_contact {
                t = t.set("contact", "stun").set("stun-server", SERVER);
            }
            if let Some(k) = &p.keepalive {
                t = t.raw("keepalive", keepalive_value(k));
            }
            if let Some(e) = p.expires_secs {
                t = t.set("expires-secs", e);
            }
            if let Some(a) = p.answer_after_ms {
                t = t.set("answer-after-ms", a);
            }
            if let Some(r) = p.provisional_interval_ms {
                t = t.set("provisional-interval-ms", r);
            }
            if let Some(m) = p.media_port {
                t = t.set("media-port", m);
            }
            if p.latching {
                t = t.set("latching", true);
            }
            // A latching end drops what its peer sent before the first packet it can latch onto
            // arrived: a few packets, close to the 5 % a "both ways" verdict allows over the
            // default second of media (94 % was seen under load). Three seconds judge the fix,
            // not the latch-up (binding-expiry-slow-answer-fix-sbc-pings does the same).
            if self.phones.iter().any(|p| p.latching) {
                t = t.set("media-ms", 3000u64);
            }
            if let Some(pw) = &p.password {
                t = t.set("password", pw);
            }
            d.components.push(t);
        }
        for s in &self.steps {
            d.steps.push(match s {
                Action::Register { ua } => Table::new().set("action", "register").set("ua", ua),
                Action::Wait { ms, why } => Table::new()
                    .set("action", "wait")
                    .set("ms", *ms)
                    .comment(why.clone()),
                Action::Call { from, to, hold_ms } => {
                    let t = Table::new()
                        .set("action", "call")
                        .set("from", from)
                        .set("to", to);
                    if *hold_ms > 0 {
                        t.set("hold-ms", *hold_ms)
                    } else {
                        t
                    }
                }
            });
        }
        for e in &self.expect {
            d.expects.push(match e {
                Outcome::Registered { ua, value } => Table::new()
                    .set("kind", "registered")
                    .set("ua", ua)
                    .set("value", *value),
                Outcome::Call { from, status } => Table::new()
                    .set("kind", "call")
                    .set("from", from)
                    .set("status", *status),
                Outcome::Rang { ua, value } => Table::new()
                    .set("kind", "rang")
                    .set("ua", ua)
                    .set("value", *value),
            });
        }
        // A latching twin asks for audio both ways on every call (the fix is about media).
        if self.phones.iter().any(|p| p.latching) {
            for s in &self.steps {
                if let Action::Call { from, .. } = s {
                    d.expects.push(
                        Table::new()
                            .set("kind", "media")
                            .set("from", from)
                            .set("value", "both-ways"),
                    );
                }
            }
        }
        d
    }

    /// One copy of the plan per fix, changed by that fix and expecting success: every phone
    /// registered, every call established and ringing.
    pub fn fixes(&self) -> Vec<(String, Plan)> {
        self.fixes
            .iter()
            .map(|&fix| {
                let mut p = self.clone();
                p.name = format!("{}-fix-{}", self.name, fix.suffix());
                let (summary, applied) = match fix {
                    Fix::FarEnd => {
                        p.registrar.far_end = true;
                        p.registrar.why =
                            "far-end NAT handling: the registrar stores the REGISTER's source address and answers to source address and port".into();
                        ("the registrar does far-end NAT traversal", "nat-handling = \"far-end\" at the registrar")
                    }
                    Fix::Rport => {
                        p.registrar.far_end = true;
                        for ph in &mut p.phones {
                            ph.rport = true;
                        }
                        ("the phones put rport in Via and the registrar honours it", "rport = true on the phones (the default), far-end registrar")
                    }
                    Fix::KeepAlive => {
                        let secs = self.udp_timeout_secs.unwrap_or(30).max(1);
                        let every = std::time::Duration::from_millis(u64::from(secs) * 1000 / 2);
                        for ph in p.phones.iter_mut().filter(|ph| ph.router.is_some()) {
                            ph.keepalive = Some(KeepAlive::Crlf(every));
                        }
                        ("CRLF keep-alives at half the NAT's UDP timeout keep the binding open", "keepalive = { type = \"crlf\" } at half the NAT's timeout on the phones behind it")
                    }
                    Fix::AlgOff => {
                        for r in &mut p.routers {
                            r.nat.sip_alg = SipAlg::Off;
                        }
                        ("the router's SIP ALG is off", "sip-alg = \"off\" on the router")
                    }
                    Fix::Latching => {
                        for ph in p.phones.iter_mut().filter(|ph| ph.router.is_none()) {
                            ph.latching = true;
                        }
                        ("the public end latches onto where the NATed phone's RTP comes from", "latching = true on the public phones (an SBC's media relay does the same)")
                    }
                };
                p.summary = format!("{} — fixed: {summary}", self.name);
                p.comment = [
                    format!("Symptom (fixed): the capture's failure, reproduced by {}.toml, does not happen.", self.name),
                    format!("Root cause addressed: {summary}."),
                    format!("Fix applied: {applied}."),
                ]
                .iter()
                .map(|l| wrap(l, 98))
                .collect();
                p.comment.extend(
                    self.comment
                        .iter()
                        .skip_while(|l| !l.is_empty())
                        .cloned(),
                );
                p.expect = success(&p);
                (format!("-fix-{}", fix.suffix()), p)
            })
            .collect()
    }
}

/// Every phone that registers is registered, every call is established and rings.
fn success(p: &Plan) -> Vec<Outcome> {
    let mut out = Vec::new();
    for s in &p.steps {
        match s {
            Action::Register { ua } => out.push(Outcome::Registered {
                ua: ua.clone(),
                value: true,
            }),
            // A callee that is no phone of the scenario is unknown to its registrar: success
            // is the registrar's 404 reaching the caller.
            Action::Call { from, to, .. } if !p.phones.iter().any(|ph| ph.name == *to) => {
                out.push(Outcome::Call {
                    from: from.clone(),
                    status: 404,
                });
            }
            Action::Call { from, to, .. } => {
                out.push(Outcome::Call {
                    from: from.clone(),
                    status: 200,
                });
                out.push(Outcome::Rang {
                    ua: to.clone(),
                    value: true,
                });
            }
            Action::Wait { .. } => {}
        }
    }
    out.dedup();
    out
}

/// The emulated ALG fault a diagnosis kind stands for.
pub fn alg_fault(kind: crate::diagnose::Kind) -> Option<AlgFault> {
    use crate::diagnose::Kind;
    match kind {
        Kind::DigestUriMismatch => Some(AlgFault::BreakDigest),
        Kind::ContentLengthMismatch => Some(AlgFault::RewriteWithoutFixingContentLength),
        _ => None,
    }
}
