//! Scenarios: a customer's topology, the components in it, a timeline and expectations — read from
//! a file, checked with located errors, and run.

pub mod batch;
pub mod checks;
pub mod emit;
pub mod explain;
pub mod file;
mod matrix;
mod phone;
mod placed;
pub mod reference;
mod run;
pub mod seen;
pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

pub use file::{Component, Expect, FileError, ScenarioFile, Step};
pub use matrix::{matrix, matrix_with_fragments, Cell};
pub use run::{run, Outcome, Phases, RunOptions, Verdict};

use crate::topology::{HostSpec, RouterSpec, TopologySpec, INTERNET};

/// A scenario that parsed and whose every reference resolves.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: String,
    pub file: ScenarioFile,
    pub topology: TopologySpec,
    /// The comment block at the top of the file (symptom, root cause, fix).
    pub header: String,
    /// Commands' `{…}` placeholders and their values ([`vars::table`]).
    pub vars: std::collections::BTreeMap<String, String>,
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> FileError {
        let (line, column) = file::line_col(self.text, span.start);
        FileError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// `at = "…"`: a host, or a router's side (`home:wan`, `home:lan`).
fn check_vantage(
    c: &Checker,
    routers: &BTreeSet<String>,
    hosts: &BTreeSet<String>,
    at: &str,
    sp: Range<usize>,
) -> Result<(), FileError> {
    let (node, side) = at.split_once(':').unwrap_or((at, ""));
    if routers.contains(node) {
        if side != "wan" && side != "lan" {
            return Err(c.err(
                sp,
                format!("`at = \"{at}\"`: a router is seen from `{node}:wan` or `{node}:lan`"),
            ));
        }
    } else if side.is_empty() {
        if !hosts.contains(node) {
            return Err(c.err(
                sp,
                format!("unknown host or router `{node}` ({})", one_of(hosts)),
            ));
        }
    } else {
        return Err(c.err(
            sp,
            format!(
                "`at = \"{at}\"`: only a router has sides; a host is named alone ({})",
                one_of(hosts)
            ),
        ));
    }
    Ok(())
}

fn one_of(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none are defined".into()
    } else {
        format!(
            "defined: {}",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok().filter(|p| *p <= 32)?))
}

/// Whether `host` sits behind `router`, directly or through routers nested in its LAN.
fn behind(spec: &TopologySpec, host: &str, router: &str) -> bool {
    let mut segment = spec
        .hosts
        .iter()
        .find(|h| h.name == host)
        .map(|h| h.segment.as_str());
    // Each hop goes one router upstream; a chain longer than the routers is a loop.
    for _ in 0..=spec.routers.len() {
        match segment {
            Some(s) if s == router => return true,
            Some(s) => segment = spec.router(s).map(|r| r.upstream.as_str()),
            None => return false,
        }
    }
    false
}

/// A router's `forward` entries as port forwards to its hosts' first addresses: each names a
/// known transport, a port range, and a host on this router's LAN, and no two overlap.
fn check_forwards(
    c: &Checker,
    r: &file::RouterDef,
    hosts: &[file::HostDef],
) -> Result<Vec<sim_nat::PortForward>, FileError> {
    let name = r.name.get_ref();
    let behind: BTreeSet<String> = hosts
        .iter()
        .filter(|h| h.segment.get_ref() == name)
        .map(|h| h.name.get_ref().clone())
        .collect();
    let mut out: Vec<(sim_nat::PortForward, Range<usize>)> = Vec::new();
    for fw in &r.forward {
        if r.nat.is_none() {
            return Err(c.err(
                fw.ports.span(),
                format!("router `{name}` forwards ports but has no `nat`: without translation every LAN address is reachable already"),
            ));
        }
        if fw.proto.get_ref() != "udp" {
            return Err(c.err(
                fw.proto.span(),
                format!(
                    "proto `{}`: only \"udp\" is forwarded (SIP and RTP here are UDP)",
                    fw.proto.get_ref()
                ),
            ));
        }
        let ports = file::parse_port_range(fw.ports.get_ref()).ok_or_else(|| {
            c.err(
                fw.ports.span(),
                format!(
                    "ports `{}` must be \"N\" or \"N-M\" with 1 ≤ N ≤ M ≤ 65535, e.g. \"10000-20000\"",
                    fw.ports.get_ref()
                ),
            )
        })?;
        let to = fw.to.get_ref();
        let Some(host) = hosts.iter().find(|h| h.name.get_ref() == to) else {
            return Err(c.err(
                fw.to.span(),
                format!(
                    "forward to unknown host `{to}` (hosts behind `{name}`: {})",
                    one_of(&behind)
                ),
            ));
        };
        if host.segment.get_ref() != name {
            return Err(c.err(
                fw.to.span(),
                format!(
                    "host `{to}` is on `{}`, not behind router `{name}`: a router forwards only to its own LAN (hosts behind `{name}`: {})",
                    host.segment.get_ref(),
                    one_of(&behind)
                ),
            ));
        }
        let Some(addr) = host.addrs.get_ref().first() else {
            return Err(c.err(
                host.addrs.span(),
                format!("host `{to}` needs at least one address"),
            ));
        };
        let new = sim_nat::PortForward::udp(ports.0, ports.1, *addr);
        if let Some((old, _)) = out
            .iter()
            .find(|(o, _)| o.ports.0 <= new.ports.1 && new.ports.0 <= o.ports.1)
        {
            return Err(c.err(
                fw.ports.span(),
                format!(
                    "ports {} overlap the forward of {} to {}: a WAN port goes to one host",
                    new.range_text(),
                    old.range_text(),
                    old.to
                ),
            ));
        }
        out.push((new, fw.ports.span()));
    }
    Ok(out.into_iter().map(|(f, _)| f).collect())
}

/// A phone's `externip` and `localnet`: networks that parse, `localnet` only next to
/// `externip`, and no second source for the same addresses (STUN Contact, STUN or TURN media).
fn check_externip(
    c: &Checker,
    span: Range<usize>,
    externip: Option<Ipv4Addr>,
    localnet: &[String],
    contact: file::ContactDef,
    media: file::MediaDef,
) -> Result<(), FileError> {
    for n in localnet {
        if parse_cidr(n).is_none() {
            return Err(c.err(
                span.clone(),
                format!("localnet `{n}` must be NETWORK/PREFIX, e.g. 192.168.1.0/24"),
            ));
        }
    }
    if externip.is_none() {
        if !localnet.is_empty() {
            return Err(c.err(
                span,
                "localnet names the destinations that do NOT get `externip`; without `externip` it changes nothing",
            ));
        }
        return Ok(());
    }
    if contact == file::ContactDef::Stun {
        return Err(c.err(
            span,
            "externip and contact = \"stun\" both set the Contact address: give one",
        ));
    }
    if media != file::MediaDef::Local {
        return Err(c.err(
            span,
            "externip sets the SDP address too: it needs media = \"local\" (the router forwards media-port)",
        ));
    }
    Ok(())
}

/// Parsed `localnet` entries (checked when the file loaded).
pub fn localnets(localnet: &[String]) -> Vec<(Ipv4Addr, u8)> {
    localnet.iter().filter_map(|n| parse_cidr(n)).collect()
}

impl Scenario {
    /// Reads, parses and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let (parsed, text) = file::load(path)?;
        Self::check(&path.display().to_string(), &text, parsed)
    }

    /// Parses and checks scenario text.
    pub fn from_str(name: &str, text: &str) -> Result<Self, FileError> {
        let parsed = file::parse(name, text)?;
        Self::check(name, text, parsed)
    }

    fn check(path: &str, text: &str, f: ScenarioFile) -> Result<Self, FileError> {
        let c = Checker { file: path, text };
        let header = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            // `#:schema …` is a directive for editors (taplo), not part of the story.
            .filter(|l| !l.starts_with("#:"))
            .map(|l| l.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join("\n");

        // Nodes and segments.
        let mut nodes = BTreeSet::new();
        let routers: BTreeSet<String> =
            f.routers.iter().map(|r| r.name.get_ref().clone()).collect();
        let mut segments = routers.clone();
        segments.insert(INTERNET.to_string());
        let mut spec = TopologySpec::default();
        for r in &f.routers {
            let name = r.name.get_ref();
            crate::names::check_node_name(name).map_err(|m| c.err(r.name.span(), m))?;
            if name == INTERNET || !nodes.insert(name.clone()) {
                return Err(c.err(
                    r.name.span(),
                    format!("node name `{name}` is used twice or reserved"),
                ));
            }
            if !segments.contains(r.upstream.get_ref()) {
                return Err(c.err(
                    r.upstream.span(),
                    format!(
                        "router `{name}`: upstream `{}` is neither `internet` nor a router ({})",
                        r.upstream.get_ref(),
                        one_of(&routers)
                    ),
                ));
            }
            let (lan, lan_prefix) = parse_cidr(r.lan.get_ref()).ok_or_else(|| {
                c.err(
                    r.lan.span(),
                    format!(
                        "lan `{}` must be ADDRESS/PREFIX, e.g. 192.168.1.1/24",
                        r.lan.get_ref()
                    ),
                )
            })?;
            spec.routers.push(RouterSpec {
                name: name.clone(),
                upstream: r.upstream.get_ref().clone(),
                wan: *r.wan.get_ref(),
                lan,
                lan_prefix,
                nat: r.nat.as_ref().map(|n| n.get_ref().0.clone()),
                forwards: Vec::new(),
                wan_mtu: r.wan_mtu,
            });
        }
        for h in &f.hosts {
            let name = h.name.get_ref();
            crate::names::check_node_name(name).map_err(|m| c.err(h.name.span(), m))?;
            if name == INTERNET || !nodes.insert(name.clone()) {
                return Err(c.err(
                    h.name.span(),
                    format!("node name `{name}` is used twice or reserved"),
                ));
            }
            if !segments.contains(h.segment.get_ref()) {
                return Err(c.err(
                    h.segment.span(),
                    format!(
                        "host `{name}` is attached to `{}`, which is neither `internet` nor a router ({})",
                        h.segment.get_ref(),
                        one_of(&routers)
                    ),
                ));
            }
            if h.addrs.get_ref().is_empty() {
                return Err(c.err(
                    h.addrs.span(),
                    format!("host `{name}` needs at least one address"),
                ));
            }
            spec.hosts.push(HostSpec {
                name: name.clone(),
                segment: h.segment.get_ref().clone(),
                addrs: h.addrs.get_ref().clone(),
                mtu: h.mtu,
            });
        }
        for (i, r) in f.routers.iter().enumerate() {
            spec.routers[i].forwards = check_forwards(&c, r, &f.hosts)?;
        }
        // Topology rules (subnets, clashes, documentation ranges), located at the node they name.
        if let Err(e) = spec.validate() {
            let msg = e.to_string();
            let span = f
                .hosts
                .iter()
                .map(|h| (h.name.get_ref(), h.addrs.span()))
                .chain(f.routers.iter().map(|r| (r.name.get_ref(), r.wan.span())))
                .filter(|(n, _)| msg.contains(&format!("`{n}`")))
                .map(|(_, s)| s)
                .next_back()
                .unwrap_or(0..0);
            return Err(c.err(span, msg));
        }

        // Components.
        let hosts: BTreeSet<String> = nodes.clone();
        let var_table = vars::table(&f);
        let mut uas = BTreeSet::new();
        // Hosts running our `proxy` (what `set-nat-handling` changes).
        let mut proxies = BTreeSet::new();
        // What a phone's `proxy =` may name: name → whether a command plays it.
        let mut registrars: std::collections::BTreeMap<String, bool> =
            std::collections::BTreeMap::new();
        let mut stun = BTreeSet::new();
        let mut turn = BTreeSet::new();
        let mut commands = BTreeSet::new();
        // SIP users answered by commands: callees only, the harness cannot drive them.
        let mut external_users = BTreeSet::new();
        // Of those, the ones a `call` step can start from (`dial`): user → can hang up.
        let mut dialers = BTreeMap::new();
        for comp in &f.components {
            let span = comp.span();
            let host = comp.get_ref().host();
            if !hosts.contains(host) {
                return Err(c.err(
                    span,
                    format!("component on unknown host `{host}` ({})", one_of(&hosts)),
                ));
            }
            if let Component::Sbc { ping: Some(p), .. } | Component::Proxy { ping: Some(p), .. } =
                comp.get_ref()
            {
                if p.kind == file::KeepAliveKind::Stun {
                    return Err(c.err(
                        span.clone(),
                        format!(
                            "{} pings with type = \"options\" or \"crlf\": a phone does not answer STUN requests",
                            if matches!(comp.get_ref(), Component::Sbc { .. }) { "an SBC" } else { "a proxy" }
                        ),
                    ));
                }
            }
            if let Some((name, _)) = comp.get_ref().registrar() {
                let command = matches!(comp.get_ref(), Component::Command { .. });
                match registrars.insert(name.to_string(), command) {
                    Some(was_command) if command != was_command => {
                        return Err(c.err(
                            span,
                            format!(
                                "`{name}` names both a command that plays the registrar and a host running a proxy/sbc/kamailio: rename the command so a phone's `proxy = \"{name}\"` names one of them"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            match comp.get_ref() {
                Component::Proxy { host, .. } => {
                    proxies.insert(host.clone());
                }
                Component::Sbc { .. } | Component::Kamailio { .. } => {}
                Component::StunServer { host } => {
                    stun.insert(host.clone());
                }
                Component::TurnServer { host, .. } => {
                    turn.insert(host.clone());
                }
                Component::Ua {
                    host,
                    user,
                    provisional_interval_ms,
                    ..
                } => {
                    if *provisional_interval_ms == Some(0) {
                        return Err(c.err(
                            span,
                            "provisional-interval-ms must be at least 1 (leave it out for one 180)",
                        ));
                    }
                    let u = user.clone().unwrap_or_else(|| host.clone());
                    if external_users.contains(&u) || !uas.insert(u.clone()) {
                        return Err(c.err(span, format!("two phones are called `{u}`")));
                    }
                }
                Component::Command {
                    name,
                    run,
                    user,
                    files,
                    dial,
                    hang_up,
                    plays,
                    sip_port,
                    ..
                } => {
                    if run.is_empty() {
                        return Err(c.err(span, format!("command `{name}`: `run` is empty")));
                    }
                    for (key, action) in [("dial", dial), ("hang-up", hang_up)] {
                        let Some(a) = action else { continue };
                        if a.stdin.is_some() == a.run.is_some() {
                            return Err(c.err(
                                span,
                                format!("command `{name}`: `{key}` takes exactly one of `stdin = \"…\"` (a line for its standard input) or `run = [...]` (a program run in its host)"),
                            ));
                        }
                        if a.run.as_ref().is_some_and(Vec::is_empty) {
                            return Err(
                                c.err(span, format!("command `{name}`: `{key}.run` is empty"))
                            );
                        }
                        for p in a.texts().flat_map(vars::placeholders) {
                            if p != "to" && !vars::known(&var_table, &[], p) {
                                let mut names: BTreeSet<String> =
                                    var_table.keys().cloned().collect();
                                names.insert("to".into());
                                return Err(c.err(
                                    span,
                                    format!(
                                        "command `{name}`: unknown placeholder `{{{p}}}` in `{key}` ({})",
                                        one_of(&names)
                                    ),
                                ));
                            }
                        }
                    }
                    if dial.is_some() && user.is_none() {
                        return Err(c.err(
                            span,
                            format!("command `{name}`: `dial` needs `user`, the SIP user a `call` step names as its caller"),
                        ));
                    }
                    if hang_up.is_some() && dial.is_none() {
                        return Err(c.err(
                            span,
                            format!("command `{name}`: `hang-up` ends the calls `dial` places; give `dial` too"),
                        ));
                    }
                    if let (Some(u), Some(_)) = (user, dial) {
                        dialers.insert(u.clone(), hang_up.is_some());
                    }
                    if sip_port.is_some() && plays.is_none() {
                        return Err(c.err(
                            span,
                            format!("command `{name}`: `sip-port` is the port of a registrar; add `plays = \"registrar\"`, or leave `sip-port` out"),
                        ));
                    }
                    let file_names: Vec<&str> = files.keys().map(String::as_str).collect();
                    let texts = run.iter().map(|a| ("`run`".to_string(), a.as_str())).chain(
                        files
                            .iter()
                            .map(|(n, t)| (format!("file `{n}`"), t.as_str())),
                    );
                    for (where_, text) in texts {
                        for p in vars::placeholders(text) {
                            if !vars::known(&var_table, &file_names, p) {
                                let mut names: BTreeSet<String> =
                                    var_table.keys().cloned().collect();
                                names.insert("dir".into());
                                names.extend(file_names.iter().map(|f| format!("file:{f}")));
                                return Err(c.err(
                                    span,
                                    format!(
                                        "command `{name}`: unknown placeholder `{{{p}}}` in {where_} ({})",
                                        one_of(&names)
                                    ),
                                ));
                            }
                        }
                    }
                    if let Some(u) = user {
                        if uas.contains(u) || !external_users.insert(u.clone()) {
                            return Err(c.err(span, format!("two phones are called `{u}`")));
                        }
                    }
                    if !commands.insert(name.clone()) {
                        return Err(c.err(span, format!("two commands are called `{name}`")));
                    }
                }
            }
        }
        for comp in &f.components {
            if let Component::Ua {
                proxy,
                contact,
                stun_server,
                media,
                turn_server,
                ..
            } = comp.get_ref()
            {
                // A STUN or TURN server may be ours (a component) or a program the scenario runs
                // (coturn as a command): any host will do.
                if *media == file::MediaDef::Stun
                    && !stun_server.as_ref().is_some_and(|s| hosts.contains(s))
                {
                    return Err(c.err(
                        comp.span(),
                        format!(
                            "media = \"stun\" needs `stun-server` naming a host ({})",
                            one_of(&hosts)
                        ),
                    ));
                }
                if *media == file::MediaDef::Turn
                    && !turn_server.as_ref().is_some_and(|s| hosts.contains(s))
                {
                    return Err(c.err(
                        comp.span(),
                        format!(
                            "media = \"turn\" needs `turn-server` naming a host ({})",
                            one_of(&hosts)
                        ),
                    ));
                }
                if let Component::Ua {
                    externip, localnet, ..
                } = comp.get_ref()
                {
                    check_externip(&c, comp.span(), *externip, localnet, *contact, *media)?;
                }
                if let Some(offer) = phone::offer(comp.get_ref()) {
                    offer.check().map_err(|m| c.err(comp.span(), m))?;
                }
                let is_addr = proxy.parse::<std::net::SocketAddr>().is_ok();
                if !is_addr && !registrars.contains_key(proxy) {
                    let why = if commands.contains(proxy) {
                        format!(
                            "proxy `{proxy}` is a command that does not play the registrar: declare `plays = \"registrar\"` on it (and `sip-port = N` if it does not serve SIP on 5060)"
                        )
                    } else {
                        let names: BTreeSet<String> = registrars.keys().cloned().collect();
                        format!(
                            "proxy `{proxy}` is neither IP:PORT, a host running a proxy/sbc/kamailio, nor a command with plays = \"registrar\" ({})",
                            one_of(&names)
                        )
                    };
                    return Err(c.err(comp.span(), why));
                }
                if *contact == file::ContactDef::Stun {
                    match stun_server {
                        Some(s) if hosts.contains(s) => {}
                        _ => {
                            return Err(c.err(
                                comp.span(),
                                format!(
                                    "contact = \"stun\" needs `stun-server` naming a host ({})",
                                    one_of(&hosts)
                                ),
                            ))
                        }
                    }
                }
            }
        }
        let check_ref = |set: &BTreeSet<String>, what: &str, name: &str, span: Range<usize>| {
            if set.contains(name) {
                Ok(())
            } else {
                Err(c.err(span, format!("unknown {what} `{name}` ({})", one_of(set))))
            }
        };
        let host_names: BTreeSet<String> =
            f.hosts.iter().map(|h| h.name.get_ref().clone()).collect();
        // What the diagnosis steps recorded, for the expectations that read it.
        let mut stun_checked = BTreeSet::new();
        let mut classified = BTreeSet::new();
        let mut probes: Vec<(Option<String>, String, u16)> = Vec::new();
        for s in &f.steps {
            let sp = s.span();
            match s.get_ref() {
                Step::StunCheck {
                    host, stun_server, ..
                }
                | Step::ClassifyNat {
                    host, stun_server, ..
                } => {
                    check_ref(&host_names, "host", host, sp.clone())?;
                    check_ref(&stun, "host running a stun-server", stun_server, sp.clone())?;
                    if let Step::ClassifyNat { .. } = s.get_ref() {
                        let addrs = f
                            .hosts
                            .iter()
                            .find(|h| h.name.get_ref() == stun_server)
                            .map_or(0, |h| h.addrs.get_ref().len());
                        if addrs < 2 {
                            return Err(c.err(
                                sp,
                                format!(
                                    "classify-nat needs an RFC 5780 server with two addresses;                                      `{stun_server}` has {addrs}: give it a second one in `addrs`"
                                ),
                            ));
                        }
                        classified.insert(host.clone());
                    } else {
                        stun_checked.insert(host.clone());
                    }
                }
                Step::ProbeUdp {
                    name,
                    from,
                    to,
                    listen,
                    ports: (lo, hi),
                    samples,
                    ..
                } => {
                    check_ref(&host_names, "host", from, sp.clone())?;
                    check_ref(&routers, "router", to, sp.clone())?;
                    check_ref(&host_names, "host", listen, sp.clone())?;
                    if !behind(&spec, listen, to) {
                        return Err(c.err(
                            sp,
                            format!(
                                "probe-udp: `{listen}` is not behind router `{to}`: probes to                                  `{to}`'s WAN address can never reach it"
                            ),
                        ));
                    }
                    if lo > hi {
                        return Err(c.err(
                            sp,
                            format!("probe-udp: ports = [{lo}, {hi}] is not a range (low, high)"),
                        ));
                    }
                    let size = u32::from(*hi) - u32::from(*lo) + 1;
                    if *samples == 0
                        || *samples > file::MAX_PROBE_SAMPLES
                        || u32::from(*samples) > size
                    {
                        return Err(c.err(
                            sp,
                            format!(
                                "probe-udp: samples = {samples} must be 1 to {} and at most the                                  {size} ports of the range: probes sample a range, they do not scan it",
                                file::MAX_PROBE_SAMPLES
                            ),
                        ));
                    }
                    if name
                        .as_ref()
                        .is_some_and(|n| probes.iter().any(|p| p.0.as_ref() == Some(n)))
                    {
                        return Err(c.err(
                            sp,
                            format!(
                                "two probe-udp steps are named `{}`",
                                name.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    probes.push((name.clone(), listen.clone(), *samples));
                }
                Step::Register { ua, .. } => check_ref(&uas, "phone", ua, sp)?,
                Step::Call { from, hold_ms, .. } if external_users.contains(from) => {
                    match dialers.get(from) {
                        None => {
                            return Err(c.err(
                                sp,
                                format!(
                                    "`{from}` is a command's SIP user without `dial`: the harness can call it, but to make it place a call give its command a `dial` action (a line for its standard input, e.g. baresip's `dial = {{ stdin = \"/dial sip:{{to}}@…\" }}`, or a program to run); callers now: {}",
                                    one_of(&uas.iter().chain(dialers.keys()).cloned().collect())
                                ),
                            ))
                        }
                        Some(false) if *hold_ms > 0 => {
                            return Err(c.err(
                                sp,
                                format!("`{from}`'s command has no `hang-up` action: a call from it with `hold-ms` needs one (baresip: `hang-up = {{ stdin = \"/hangup\" }}`)"),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                Step::Call { from, .. } => check_ref(&uas, "phone", from, sp)?,
                Step::Wait { .. } => {}
                Step::ExpireBinding { router, host, .. } => {
                    check_ref(&routers, "router", router, sp.clone())?;
                    check_ref(&hosts, "host", host, sp)?;
                }
                Step::FlushBindings { router } | Step::SetNat { router, .. } => {
                    check_ref(&routers, "router", router, sp)?
                }
                Step::SetNatHandling { proxy, .. } => check_ref(&proxies, "proxy host", proxy, sp)?,
                Step::WaitExit { command, .. } | Step::Start { command } => {
                    check_ref(&commands, "command", command, sp)?
                }
            }
        }
        for e in &f.expects {
            let sp = e.span();
            match e.get_ref() {
                Expect::Call { from, .. } | Expect::Media { from, .. }
                    if dialers.contains_key(from) => {}
                Expect::Call { from, .. } => check_ref(&uas, "phone", from, sp)?,
                Expect::Registered { ua, .. } | Expect::Rang { ua, .. } => {
                    check_ref(&uas, "phone", ua, sp)?
                }
                Expect::Media { from, .. } => check_ref(&uas, "phone", from, sp)?,
                Expect::ExitCode { command, .. } => check_ref(&commands, "command", command, sp)?,
                Expect::Timing { at, within_t1, .. } => {
                    check_vantage(&c, &routers, &hosts, at, sp.clone())?;
                    if let Some((lo, hi)) = within_t1 {
                        if !(0.0..=*hi).contains(lo) {
                            return Err(c.err(
                                sp,
                                format!("within-t1 = [{lo}, {hi}]: give [LOW, HIGH] with 0 ≤ LOW ≤ HIGH"),
                            ));
                        }
                    }
                }
                Expect::StunAddress { host, router, .. } => {
                    check_ref(&routers, "router", router, sp.clone())?;
                    check_ref(&stun_checked, "host with a stun-check step", host, sp)?;
                }
                Expect::NatType { host, .. } => {
                    check_ref(&classified, "host with a classify-nat step", host, sp)?
                }
                Expect::UdpReachable {
                    host,
                    probe,
                    reached,
                } => {
                    let step = match probe {
                        Some(p) => {
                            let named: BTreeSet<String> =
                                probes.iter().filter_map(|p| p.0.clone()).collect();
                            check_ref(&named, "probe-udp step", p, sp.clone())?;
                            probes.iter().find(|x| x.0.as_ref() == Some(p))
                        }
                        None => {
                            let listening: BTreeSet<String> =
                                probes.iter().map(|p| p.1.clone()).collect();
                            check_ref(
                                &listening,
                                "host listening in a probe-udp step",
                                host,
                                sp.clone(),
                            )?;
                            probes.iter().rev().find(|x| &x.1 == host)
                        }
                    };
                    if let Some((_, listen, samples)) = step {
                        if listen != host {
                            return Err(c.err(
                                sp,
                                format!("that probe listens on `{listen}`, not `{host}`"),
                            ));
                        }
                        if reached > samples {
                            return Err(c.err(
                                sp,
                                format!(
                                    "reached = {reached}, but that probe sends only {samples}: nothing could hold"
                                ),
                            ));
                        }
                    }
                }
                Expect::Log {
                    command,
                    contains,
                    matches,
                    min,
                    max,
                    ..
                } => {
                    check_ref(&commands, "command", command, sp.clone())?;
                    match (contains, matches) {
                        (Some(_), None) => {}
                        (None, Some(re)) => {
                            if let Err(e) = regex::Regex::new(re) {
                                let e = e.to_string().replace('\n', " ");
                                return Err(c.err(sp, format!("`matches`: not a regular expression: {e}")));
                            }
                        }
                        _ => {
                            return Err(c.err(
                                sp,
                                "a log expectation needs exactly one of `contains` (text) and `matches` (a regular expression)",
                            ))
                        }
                    }
                    let (min, max) = file::packet_bounds(*min, *max);
                    if max.is_some_and(|m| m < min) {
                        return Err(c.err(
                            sp,
                            format!(
                                "max = {} is below min = {min}: nothing could hold",
                                max.unwrap_or(0)
                            ),
                        ));
                    }
                }
                Expect::Packet {
                    at,
                    from,
                    to,
                    min,
                    max,
                    ..
                } => {
                    check_vantage(&c, &routers, &hosts, at, sp.clone())?;
                    for a in [from, to].into_iter().flatten() {
                        if seen::Address::parse(a).is_none() {
                            return Err(c.err(
                                sp,
                                format!("`{a}` is not an address: write `203.0.113.1` or `203.0.113.1:5060`"),
                            ));
                        }
                    }
                    let (min, max) = file::packet_bounds(*min, *max);
                    if max.is_some_and(|m| m < min) {
                        return Err(c.err(
                            sp,
                            format!(
                                "max = {} is below min = {min}: nothing could hold",
                                max.unwrap_or(0)
                            ),
                        ));
                    }
                }
            }
        }
        if f.scenario.t1_ms == 0 {
            return Err(c.err(0..0, "t1-ms must be at least 1"));
        }
        Ok(Scenario {
            path: path.to_string(),
            file: f,
            topology: spec,
            header,
            vars: var_table,
        })
    }

    pub fn name(&self) -> &str {
        &self.file.scenario.name
    }

    /// A copy with every NAT router's behaviour replaced by `f(old)`: what `harness matrix` runs.
    pub fn with_nats(&self, f: impl Fn(&sim_nat::NatBehaviour) -> sim_nat::NatBehaviour) -> Self {
        let mut s = self.clone();
        for r in &mut s.topology.routers {
            if let Some(n) = &r.nat {
                r.nat = Some(f(n));
            }
        }
        s
    }
}
