//! Who is who in a server capture: the registrar, each SIP user and where its packets came from,
//! which users sit behind a NAT (a private Contact, Via or SDP from a public source, or a source
//! port that is not the Via port), and where each lands in the scenario — routers, phones and the
//! mapping of the capture's addresses into the documentation and private ranges. Sans-IO.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use sim_nat::{NatType, SipAlg};

use super::plan::{self, Phone, Router, SERVER};
use super::Mapped;
use crate::diagnose::fields::{self, is_private};
use crate::diagnose::rebuild::{Model, Sip};
use crate::diagnose::{Kind, Report, Severity};

/// The password written for users the capture shows being challenged (the real one is unknown).
pub const PASSWORD: &str = "secret";

/// What the capture says about one SIP user talking to the registrar.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Where its first message came from, as the server saw it.
    pub source: SocketAddrV4,
    pub contact: Option<SocketAddrV4>,
    pub via: Option<SocketAddrV4>,
    pub rport: bool,
    pub sdp: Option<SocketAddrV4>,
    pub expires: Option<u32>,
    pub challenged: bool,
    /// Its Contact is the mapping a STUN server told it: it came from STUN.
    pub stun_contact: bool,
    pub first_frame: u64,
}

impl User {
    /// The private address it reveals (Contact, Via, SDP), if any.
    pub fn private(&self) -> Option<Ipv4Addr> {
        [self.contact, self.via, self.sdp]
            .into_iter()
            .flatten()
            .map(|a| *a.ip())
            .find(|ip| is_private(*ip))
    }

    /// Its Via port differs from the port its packets came from: the NAT does not keep ports.
    pub fn port_changed(&self) -> bool {
        self.via.is_some_and(|v| v.port() != self.source.port())
    }

    pub fn natted(&self) -> bool {
        !is_private(*self.source.ip()) && (self.private().is_some() || self.port_changed())
    }
}

pub fn user_of(s: &Sip) -> Option<String> {
    let header = if s.msg.is_response() {
        s.msg.to.as_deref()
    } else {
        s.msg.from.as_deref()
    }?;
    clean(&fields::uri_user(header)?)
}

/// A SIP user as a scenario name: lower case, letters, digits and `-`.
pub fn clean(u: &str) -> Option<String> {
    let clean: String = u
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_string();
    (!clean.is_empty()).then_some(clean)
}

/// The registrar: the capture host that REGISTERs go to, else the one every SIP packet shares.
pub fn server_of(m: &Model) -> Result<Ipv4Addr, String> {
    let hosts = m.capture_hosts();
    let registers_to = m
        .sip
        .iter()
        .find(|s| s.msg.method_or_status() == "REGISTER" && !s.msg.is_response())
        .map(|s| *s.dst.ip());
    // Two hosts in every message (one phone talking to the server): the server is the one
    // requests are addressed to (a Request-URI host), else the one the first request went to.
    let addressed = || {
        let requests = || m.sip.iter().filter(|s| !s.msg.is_response());
        requests()
            .filter_map(|s| fields::uri_addr(s.msg.first_line.split_whitespace().nth(1)?))
            .map(|a| *a.ip())
            .find(|ip| hosts.contains(ip))
            .or_else(|| {
                requests()
                    .map(|s| *s.dst.ip())
                    .find(|ip| hosts.contains(ip))
            })
    };
    let server = match registers_to {
        Some(r) if hosts.is_empty() || hosts.contains(&r) => r,
        _ if hosts.len() > 1 => addressed().unwrap_or(hosts[0]),
        _ => *hosts.first().ok_or(
            "the SIP in it was not all sent to or from one host: import reads a capture taken at the SIP server",
        )?,
    };
    if is_private(server) {
        return Err(format!(
            "the capture was taken on a LAN ({server} is private): import reads a capture taken at the SIP server"
        ));
    }
    Ok(server)
}

/// Every user that sent the registrar something, in order of first appearance; an error when
/// none of them shows a NAT.
pub fn users(m: &Model, server: Ipv4Addr) -> Result<Vec<User>, String> {
    let to_server = |s: &&Sip| *s.dst.ip() == server && *s.src.ip() != server;
    let mut users: BTreeMap<String, User> = BTreeMap::new();
    for s in m.sip.iter().filter(to_server) {
        let Some(name) = user_of(s) else { continue };
        let u = users.entry(name.clone()).or_insert_with(|| User {
            name,
            source: s.src,
            contact: None,
            via: None,
            rport: true,
            sdp: None,
            expires: None,
            challenged: false,
            stun_contact: false,
            first_frame: s.frame,
        });
        if !s.msg.is_response() {
            if let Some(v) = fields::top_via(&s.msg) {
                if u.via.is_none() {
                    u.via = fields::via_addr(&v);
                    u.rport = fields::has_rport(&v);
                }
            }
            if u.contact.is_none() {
                u.contact = fields::contact_addr(&s.msg);
            }
            if s.msg.method_or_status() == "REGISTER" && u.expires.is_none() {
                u.expires = fields::expires(&s.msg);
            }
        }
        if u.sdp.is_none() {
            u.sdp = fields::sdp_media(&s.msg);
        }
    }
    for s in m.sip.iter().filter(|s| *s.src.ip() == server) {
        if matches!(s.msg.status(), Some(401 | 407)) {
            if let Some(u) = user_of(s).and_then(|n| users.get_mut(&n)) {
                u.challenged = true;
            }
        }
    }
    for u in users.values_mut() {
        u.stun_contact = u
            .contact
            .is_some_and(|c| !is_private(*c.ip()) && m.stun.iter().any(|x| x.mapped == c));
    }
    let mut users: Vec<User> = users.into_values().collect();
    users.sort_by_key(|u| u.first_frame);
    if !users.iter().any(User::natted) {
        // Phones talking from private sources to a public server: recorded on their LAN.
        if let Some(u) = users.iter().find(|u| is_private(*u.source.ip())) {
            return Err(format!(
                "the capture was taken on a LAN ({} is private): import reads a capture taken at the SIP server",
                u.source.ip()
            ));
        }
        return Err("cannot tell who is behind a NAT: capture at the server has no private address and no port change".into());
    }
    Ok(users)
}

/// Where the users land in the scenario.
pub struct Placement {
    pub mapping: Vec<Mapped>,
    pub routers: Vec<Router>,
    /// Parallel to the users: the i-th phone is the i-th user.
    pub phones: Vec<Phone>,
}

/// One router per public address NATed users share (its type from the evidence, its ALG from
/// the ALG findings), each user a phone behind its router or on the internet, and the mapping.
pub fn place(server: Ipv4Addr, users: &[User], report: &Report) -> Placement {
    let mut mapping = vec![Mapped {
        real: server,
        scenario: Ipv4Addr::new(203, 0, 113, 10),
        role: "server (registrar/proxy)".into(),
    }];
    let mut map = |real: Ipv4Addr, scenario: Ipv4Addr, role: String| {
        if !mapping.iter().any(|x| x.real == real) {
            mapping.push(Mapped {
                real,
                scenario,
                role,
            });
        }
    };
    let symmetric_seen = report.findings.iter().any(|f| f.kind == Kind::SymmetricNat);
    let faults: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .filter_map(|f| plan::alg_fault(f.kind))
        .collect();
    let mut routers: Vec<Router> = Vec::new();
    let mut phones: Vec<Phone> = Vec::new();
    let mut public_n = 0u8;
    let mut taken: Vec<String> = vec![SERVER.into()];
    let mut wans: Vec<Ipv4Addr> = Vec::new();
    for u in users {
        let mut name = u.name.clone();
        while taken.contains(&name) {
            name.push_str("-ua");
        }
        taken.push(name.clone());
        let router = if u.natted() {
            let wan = *u.source.ip();
            let k = match wans.iter().position(|w| *w == wan) {
                Some(k) => k,
                None => {
                    let k = routers.len();
                    wans.push(wan);
                    let n = k as u8 + 1;
                    let rname = if k == 0 {
                        "home".to_string()
                    } else {
                        format!("home-{n}")
                    };
                    let scenario_wan = Ipv4Addr::new(203, 0, 113, n);
                    map(
                        wan,
                        scenario_wan,
                        format!("{rname} WAN (NAT in front of {name})"),
                    );
                    let (nat_type, why, candidates) = if u.port_changed() {
                        (
                            NatType::Symmetric,
                            format!(
                                "NAT type from the capture: {name}'s packets come from port {} but its Via says {}: the router does not keep ports, so symmetric",
                                u.source.port(),
                                u.via.map_or(0, |v| v.port())
                            ),
                            Vec::new(),
                        )
                    } else if symmetric_seen {
                        (
                            NatType::Symmetric,
                            "NAT type from the capture: a STUN mapping differs from the address the server sees: symmetric".to_string(),
                            Vec::new(),
                        )
                    } else {
                        (
                            NatType::PortRestrictedCone,
                            format!(
                                "NAT type NOT decided by the capture: the router kept {name}'s port ({}); port-restricted-cone, the commonest home router, is assumed; full-cone and restricted-cone fit the capture too",
                                u.source.port()
                            ),
                            vec![
                                NatType::FullCone,
                                NatType::RestrictedCone,
                                NatType::PortRestrictedCone,
                            ],
                        )
                    };
                    let mut nat = nat_type.behaviour();
                    if !faults.is_empty() {
                        nat.sip_alg = SipAlg::Emulated(faults.clone());
                    }
                    routers.push(Router {
                        name: rname,
                        wan: scenario_wan,
                        lan: Ipv4Addr::new(192, 168, n, 1),
                        nat,
                        why,
                        candidates,
                    });
                    k
                }
            };
            Some(k)
        } else {
            None
        };
        let addr = match router {
            Some(k) => {
                let n = k as u8 + 1;
                let inside = phones
                    .iter()
                    .filter(|p| p.router.as_deref() == Some(routers[k].name.as_str()))
                    .count() as u8;
                let a = Ipv4Addr::new(192, 168, n, 10 + inside);
                if let Some(p) = u.private() {
                    map(
                        p,
                        a,
                        format!("{name} (private, behind {})", routers[k].name),
                    );
                }
                a
            }
            None => {
                let a = Ipv4Addr::new(198, 51, 100, 20 + public_n);
                public_n += 1;
                map(*u.source.ip(), a, format!("{name} (public)"));
                a
            }
        };
        phones.push(Phone {
            name,
            router: router.map(|k| routers[k].name.clone()),
            addr,
            rport: u.rport,
            stun_contact: u.stun_contact,
            keepalive: None,
            expires_secs: u.expires.filter(|&e| e != 3600).map(u64::from),
            answer_after_ms: None,
            provisional_interval_ms: None,
            media_port: u.sdp.map(|a| a.port()).filter(|&p| p != 4000),
            latching: false,
            password: u.challenged.then(|| PASSWORD.to_string()),
        });
    }
    Placement {
        mapping,
        routers,
        phones,
    }
}
