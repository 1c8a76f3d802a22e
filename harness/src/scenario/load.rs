//! Load and check: a scenario file read and parsed ([`file`]), then checked — every name it
//! uses resolves, the topology's rules hold, every placeholder is known — with each error
//! located at `file:line:column` and naming the valid values. The checked [`Scenario`] is what
//! every backend plays.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;

use toml::Spanned;

use super::file::{self, Component, Expect, FileError, ScenarioFile, Step};
use super::{seen, vars, Scenario};
use crate::topology::{HostSpec, RouterSpec, TopologySpec, INTERNET};

/// Checks parsed file `f`, read from `path` as `text`.
pub(super) fn check(path: &str, text: &str, f: ScenarioFile) -> Result<Scenario, FileError> {
    let c = Checker { file: path, text };
    let (topology, nodes) = topology(&c, &f)?;
    let vars = vars::table(&f);
    let names = components(&c, &f, nodes, &vars)?;
    for comp in &f.components {
        phone(&c, &names, comp)?;
    }
    let mut recorded = Recorded::default();
    for step in &f.steps {
        self::step(&c, &f, &topology, &names, &mut recorded, step)?;
    }
    for e in &f.expects {
        expect(&c, &names, &recorded, e)?;
    }
    if f.scenario.t1_ms == 0 {
        return Err(c.err(0..0, "t1-ms must be at least 1"));
    }
    Ok(Scenario {
        path: path.to_string(),
        header: header(text),
        file: f,
        topology,
        vars,
    })
}

/// The comment block at the top of the file (symptom, root cause, fix).
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        // `#:schema …` is a directive for editors (taplo), not part of the story.
        .filter(|l| !l.starts_with("#:"))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The topology the file describes, checked node by node and then by the topology's own rules
/// (subnets, clashes, documentation ranges); with the names of all its nodes.
fn topology(c: &Checker, f: &ScenarioFile) -> Result<(TopologySpec, BTreeSet<String>), FileError> {
    let routers: BTreeSet<String> = f.routers.iter().map(|r| r.name.get_ref().clone()).collect();
    let mut nodes = Nodes {
        names: BTreeSet::new(),
        segments: routers
            .iter()
            .cloned()
            .chain([INTERNET.to_string()])
            .collect(),
        neither: format!("neither `internet` nor a router ({})", one_of(&routers)),
    };
    let mut spec = TopologySpec::default();
    for r in &f.routers {
        spec.routers.push(router(c, &mut nodes, r)?);
    }
    for h in &f.hosts {
        spec.hosts.push(host(c, &mut nodes, h)?);
    }
    for (i, r) in f.routers.iter().enumerate() {
        spec.routers[i].forwards = check_forwards(c, r, &f.hosts)?;
    }
    // Located at the node the rule's message names.
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
    Ok((spec, nodes.names))
}

/// The nodes named so far, and the segments a node may attach to.
struct Nodes {
    names: BTreeSet<String>,
    /// `internet` and the routers' LANs.
    segments: BTreeSet<String>,
    /// What a segment is when it is none of them, for the message.
    neither: String,
}

impl Nodes {
    /// A new node `name`, attached to `segment`; `said(name, segment)` starts the message
    /// when the segment does not exist.
    fn add(
        &mut self,
        c: &Checker,
        name: &Spanned<String>,
        segment: &Spanned<String>,
        said: impl FnOnce(&str, &str) -> String,
    ) -> Result<(), FileError> {
        let (span, node) = (name.span(), name.get_ref());
        crate::names::check_node_name(node).map_err(|m| c.err(span.clone(), m))?;
        if node == INTERNET || !self.names.insert(node.clone()) {
            let why = format!("node name `{node}` is used twice or reserved");
            return Err(c.err(span, why));
        }
        if self.segments.contains(segment.get_ref()) {
            return Ok(());
        }
        let why = format!("{} {}", said(node, segment.get_ref()), self.neither);
        Err(c.err(segment.span(), why))
    }
}

/// A router: a new node, upstream of it `internet` or a router, and a LAN.
fn router(c: &Checker, nodes: &mut Nodes, r: &file::RouterDef) -> Result<RouterSpec, FileError> {
    let said = |n: &str, up: &str| format!("router `{n}`: upstream `{up}` is");
    nodes.add(c, &r.name, &r.upstream, said)?;
    let (lan, lan_prefix) = parse_cidr(r.lan.get_ref()).ok_or_else(|| {
        c.err(
            r.lan.span(),
            format!(
                "lan `{}` must be ADDRESS/PREFIX, e.g. 192.168.1.1/24",
                r.lan.get_ref()
            ),
        )
    })?;
    Ok(RouterSpec {
        name: r.name.get_ref().clone(),
        upstream: r.upstream.get_ref().clone(),
        wan: *r.wan.get_ref(),
        lan,
        lan_prefix,
        nat: r.nat.as_ref().map(|n| n.get_ref().0.clone()),
        forwards: Vec::new(),
        wan_mtu: r.wan_mtu,
    })
}

/// A host: a new node, on `internet` or a router's LAN, with an address.
fn host(c: &Checker, nodes: &mut Nodes, h: &file::HostDef) -> Result<HostSpec, FileError> {
    let name = h.name.get_ref();
    let said = |n: &str, on: &str| format!("host `{n}` is attached to `{on}`, which is");
    nodes.add(c, &h.name, &h.segment, said)?;
    if h.addrs.get_ref().is_empty() {
        return Err(c.err(
            h.addrs.span(),
            format!("host `{name}` needs at least one address"),
        ));
    }
    Ok(HostSpec {
        name: name.clone(),
        segment: h.segment.get_ref().clone(),
        addrs: h.addrs.get_ref().clone(),
        mtu: h.mtu,
    })
}

/// What the file defines that components, steps and expectations may name.
#[derive(Default)]
struct Names {
    /// Every node, hosts and routers: components may run on either.
    nodes: BTreeSet<String>,
    hosts: BTreeSet<String>,
    routers: BTreeSet<String>,
    /// Our phones' SIP users.
    uas: BTreeSet<String>,
    /// Of those, the ones doing ICE.
    ice: BTreeSet<String>,
    /// Hosts running our `proxy` (what `set-nat-handling` changes).
    proxies: BTreeSet<String>,
    /// What a phone's `proxy =` may name: name → whether a command plays it.
    registrars: BTreeMap<String, bool>,
    /// Hosts running a STUN server.
    stun: BTreeSet<String>,
    commands: BTreeSet<String>,
    /// SIP users answered by commands: callees only, the harness cannot drive them.
    external_users: BTreeSet<String>,
    /// Of those, the ones a `call` step can start from (`dial`): user → can hang up.
    dialers: BTreeMap<String, bool>,
}

/// Every component checked, and the names they define.
fn components(
    c: &Checker,
    f: &ScenarioFile,
    nodes: BTreeSet<String>,
    vars: &BTreeMap<String, String>,
) -> Result<Names, FileError> {
    let mut n = Names {
        nodes,
        hosts: f.hosts.iter().map(|h| h.name.get_ref().clone()).collect(),
        routers: f.routers.iter().map(|r| r.name.get_ref().clone()).collect(),
        ..Names::default()
    };
    for comp in &f.components {
        component(c, &mut n, comp, vars)?;
    }
    Ok(n)
}

fn component(
    c: &Checker,
    n: &mut Names,
    comp: &Spanned<Component>,
    vars: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    let span = comp.span();
    let host = comp.get_ref().host();
    if !n.nodes.contains(host) {
        return Err(c.err(
            span,
            format!("component on unknown host `{host}` ({})", one_of(&n.nodes)),
        ));
    }
    pings(c, comp)?;
    registrar(c, n, comp)?;
    match comp.get_ref() {
        Component::Proxy { host, .. } => {
            n.proxies.insert(host.clone());
        }
        Component::StunServer { host } => {
            n.stun.insert(host.clone());
        }
        Component::Sbc { .. } | Component::Kamailio { .. } | Component::TurnServer { .. } => {}
        Component::Ua {
            host,
            user,
            provisional_interval_ms,
            ice,
            ..
        } => {
            if *provisional_interval_ms == Some(0) {
                return Err(c.err(
                    span,
                    "provisional-interval-ms must be at least 1 (leave it out for one 180)",
                ));
            }
            let u = user.clone().unwrap_or_else(|| host.clone());
            if n.external_users.contains(&u) || !n.uas.insert(u.clone()) {
                return Err(c.err(span, format!("two phones are called `{u}`")));
            }
            if *ice {
                n.ice.insert(u);
            }
        }
        Component::Command { .. } => command(c, n, comp.get_ref(), span, vars)?,
    }
    Ok(())
}

/// A proxy's or SBC's pings: OPTIONS or CRLF.
fn pings(c: &Checker, comp: &Spanned<Component>) -> Result<(), FileError> {
    if let Component::Sbc { ping: Some(p), .. } | Component::Proxy { ping: Some(p), .. } =
        comp.get_ref()
    {
        if p.kind == file::KeepAliveKind::Stun {
            return Err(c.err(
                comp.span(),
                format!(
                    "{} pings with type = \"options\" or \"crlf\": a phone does not answer STUN requests",
                    if matches!(comp.get_ref(), Component::Sbc { .. }) { "an SBC" } else { "a proxy" }
                ),
            ));
        }
    }
    Ok(())
}

/// The registrar a component is, if any: one name is a command's or a host's, not both.
fn registrar(c: &Checker, n: &mut Names, comp: &Spanned<Component>) -> Result<(), FileError> {
    let Some((name, _)) = comp.get_ref().registrar() else {
        return Ok(());
    };
    let command = matches!(comp.get_ref(), Component::Command { .. });
    match n.registrars.insert(name.to_string(), command) {
        Some(was_command) if command != was_command => Err(c.err(
            comp.span(),
            format!(
                "`{name}` names both a command that plays the registrar and a host running a proxy/sbc/kamailio: rename the command so a phone's `proxy = \"{name}\"` names one of them"
            ),
        )),
        _ => Ok(()),
    }
}

/// A command: something to run, actions that make sense together, known placeholders, and
/// names no other command or phone has.
fn command(
    c: &Checker,
    n: &mut Names,
    comp: &Component,
    span: Range<usize>,
    vars: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    let Component::Command {
        name,
        run,
        user,
        files,
        dial,
        hang_up,
        plays,
        sip_port,
        ..
    } = comp
    else {
        unreachable!("only commands are checked here")
    };
    if run.is_empty() {
        return Err(c.err(span, format!("command `{name}`: `run` is empty")));
    }
    for (key, action) in [("dial", dial), ("hang-up", hang_up)] {
        if let Some(a) = action {
            command_action(c, span.clone(), name, key, a, vars)?;
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
    if sip_port.is_some() && plays.is_none() {
        return Err(c.err(
            span,
            format!("command `{name}`: `sip-port` is the port of a registrar; add `plays = \"registrar\"`, or leave `sip-port` out"),
        ));
    }
    if let (Some(u), Some(_)) = (user, dial) {
        n.dialers.insert(u.clone(), hang_up.is_some());
    }
    command_placeholders(c, span.clone(), name, run, files, vars)?;
    if let Some(u) = user {
        if n.uas.contains(u) || !n.external_users.insert(u.clone()) {
            return Err(c.err(span, format!("two phones are called `{u}`")));
        }
    }
    if !n.commands.insert(name.clone()) {
        return Err(c.err(span, format!("two commands are called `{name}`")));
    }
    Ok(())
}

/// A command's `dial` or `hang-up` (`key`): one way to do it, and known placeholders (`{to}`
/// is the user called).
fn command_action(
    c: &Checker,
    span: Range<usize>,
    name: &str,
    key: &str,
    a: &file::ActionDef,
    vars: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    if a.stdin.is_some() == a.run.is_some() {
        return Err(c.err(
            span,
            format!("command `{name}`: `{key}` takes exactly one of `stdin = \"…\"` (a line for its standard input) or `run = [...]` (a program run in its host)"),
        ));
    }
    if a.run.as_ref().is_some_and(Vec::is_empty) {
        return Err(c.err(span, format!("command `{name}`: `{key}.run` is empty")));
    }
    for p in a.texts().flat_map(vars::placeholders) {
        if p != "to" && !vars::known(vars, &[], p) {
            let mut names: BTreeSet<String> = vars.keys().cloned().collect();
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
    Ok(())
}

/// The placeholders in a command's `run` and files: the file's, `{dir}`, and `{file:NAME}` of
/// its own files.
fn command_placeholders(
    c: &Checker,
    span: Range<usize>,
    name: &str,
    run: &[String],
    files: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    let file_names: Vec<&str> = files.keys().map(String::as_str).collect();
    let texts = run.iter().map(|a| ("`run`".to_string(), a.as_str())).chain(
        files
            .iter()
            .map(|(n, t)| (format!("file `{n}`"), t.as_str())),
    );
    for (where_, text) in texts {
        for p in vars::placeholders(text) {
            if !vars::known(vars, &file_names, p) {
                let mut names: BTreeSet<String> = vars.keys().cloned().collect();
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
    Ok(())
}

/// A phone's references: its STUN and TURN servers, its registrar, and `externip`.
fn phone(c: &Checker, n: &Names, comp: &Spanned<Component>) -> Result<(), FileError> {
    let Component::Ua {
        proxy,
        contact,
        stun_server,
        media,
        turn_server,
        externip,
        localnet,
        ice,
        ..
    } = comp.get_ref()
    else {
        return Ok(());
    };
    if *ice && *media != file::MediaDef::Local {
        return Err(c.err(
            comp.span(),
            "ice = true gathers its own candidates (from `stun-server` and `turn-server`): leave `media` at \"local\"".to_string(),
        ));
    }
    // A STUN or TURN server may be ours (a component) or a program the scenario runs (coturn
    // as a command): any host will do.
    let names_node = |s: &Option<String>| s.as_ref().is_some_and(|s| n.nodes.contains(s));
    let needs = match media {
        file::MediaDef::Stun if !names_node(stun_server) => {
            Some(("media = \"stun\"", "stun-server"))
        }
        file::MediaDef::Turn if !names_node(turn_server) => {
            Some(("media = \"turn\"", "turn-server"))
        }
        _ => None,
    };
    if let Some((what, key)) = needs {
        return Err(c.err(
            comp.span(),
            format!("{what} needs `{key}` naming a host ({})", one_of(&n.nodes)),
        ));
    }
    check_externip(c, comp.span(), *externip, localnet, *contact, *media)?;
    if let Some(offer) = super::phone::offer(comp.get_ref()) {
        offer.check().map_err(|m| c.err(comp.span(), m))?;
    }
    phone_registrar(c, n, comp.span(), proxy)?;
    if *contact == file::ContactDef::Stun && !names_node(stun_server) {
        return Err(c.err(
            comp.span(),
            format!(
                "contact = \"stun\" needs `stun-server` naming a host ({})",
                one_of(&n.nodes)
            ),
        ));
    }
    Ok(())
}

/// A phone's `proxy =`: `IP:PORT`, or a registrar the file defines.
fn phone_registrar(
    c: &Checker,
    n: &Names,
    span: Range<usize>,
    proxy: &str,
) -> Result<(), FileError> {
    if proxy.parse::<std::net::SocketAddr>().is_ok() || n.registrars.contains_key(proxy) {
        return Ok(());
    }
    let why = if n.commands.contains(proxy) {
        format!(
            "proxy `{proxy}` is a command that does not play the registrar: declare `plays = \"registrar\"` on it (and `sip-port = N` if it does not serve SIP on 5060)"
        )
    } else {
        let names: BTreeSet<String> = n.registrars.keys().cloned().collect();
        format!(
            "proxy `{proxy}` is neither IP:PORT, a host running a proxy/sbc/kamailio, nor a command with plays = \"registrar\" ({})",
            one_of(&names)
        )
    };
    Err(c.err(span, why))
}

/// `name` is one of `set`, the `what`s the file defines.
fn known(
    c: &Checker,
    set: &BTreeSet<String>,
    what: &str,
    name: &str,
    span: Range<usize>,
) -> Result<(), FileError> {
    if set.contains(name) {
        Ok(())
    } else {
        Err(c.err(span, format!("unknown {what} `{name}` ({})", one_of(set))))
    }
}

/// What the diagnosis steps record, for the expectations that read it.
#[derive(Default)]
struct Recorded {
    /// Hosts with a `stun-check` step.
    stun_checked: BTreeSet<String>,
    /// Hosts with a `classify-nat` step.
    classified: BTreeSet<String>,
    /// Every `probe-udp` step: its name, the host listening, how many ports it samples.
    probes: Vec<(Option<String>, String, u16)>,
}

fn step(
    c: &Checker,
    f: &ScenarioFile,
    spec: &TopologySpec,
    n: &Names,
    rec: &mut Recorded,
    s: &Spanned<Step>,
) -> Result<(), FileError> {
    let sp = s.span();
    match s.get_ref() {
        Step::StunCheck {
            host, stun_server, ..
        }
        | Step::ClassifyNat {
            host, stun_server, ..
        } => {
            known(c, &n.hosts, "host", host, sp.clone())?;
            let what = "host running a stun-server";
            known(c, &n.stun, what, stun_server, sp.clone())?;
            if let Step::ClassifyNat { .. } = s.get_ref() {
                rfc5780_server(c, f, stun_server, sp)?;
                rec.classified.insert(host.clone());
            } else {
                rec.stun_checked.insert(host.clone());
            }
        }
        Step::ProbeUdp { .. } => probe_step(c, spec, n, rec, s)?,
        Step::Register { ua, .. } => known(c, &n.uas, "phone", ua, sp)?,
        Step::Call { from, hold_ms, .. } if n.external_users.contains(from) => {
            program_call(c, n, from, *hold_ms, sp)?
        }
        Step::Call { from, .. } => known(c, &n.uas, "phone", from, sp)?,
        Step::Wait { .. } => {}
        Step::ExpireBinding { router, host, .. } => {
            known(c, &n.routers, "router", router, sp.clone())?;
            known(c, &n.nodes, "host", host, sp)?;
        }
        Step::FlushBindings { router } | Step::SetNat { router, .. } => {
            known(c, &n.routers, "router", router, sp)?
        }
        Step::SetNatHandling { proxy, .. } => known(c, &n.proxies, "proxy host", proxy, sp)?,
        Step::WaitExit { command, .. } | Step::Start { command } => {
            known(c, &n.commands, "command", command, sp)?
        }
    }
    Ok(())
}

/// The STUN server `classify-nat` asks: an RFC 5780 one, on a host with two addresses.
fn rfc5780_server(
    c: &Checker,
    f: &ScenarioFile,
    stun_server: &str,
    sp: Range<usize>,
) -> Result<(), FileError> {
    let addrs = f
        .hosts
        .iter()
        .find(|h| h.name.get_ref() == stun_server)
        .map_or(0, |h| h.addrs.get_ref().len());
    if addrs < 2 {
        return Err(c.err(
            sp,
            format!(
                "classify-nat needs an RFC 5780 server with two addresses; \
                 `{stun_server}` has {addrs}: give it a second one in `addrs`"
            ),
        ));
    }
    Ok(())
}

/// `probe-udp`: from a host to a router's WAN, towards a host behind it, sampling a range.
fn probe_step(
    c: &Checker,
    spec: &TopologySpec,
    n: &Names,
    rec: &mut Recorded,
    s: &Spanned<Step>,
) -> Result<(), FileError> {
    let Step::ProbeUdp {
        name,
        from,
        to,
        listen,
        ports: (lo, hi),
        samples,
        ..
    } = s.get_ref()
    else {
        unreachable!("only probe-udp steps are checked here")
    };
    let sp = s.span();
    known(c, &n.hosts, "host", from, sp.clone())?;
    known(c, &n.routers, "router", to, sp.clone())?;
    known(c, &n.hosts, "host", listen, sp.clone())?;
    let size = u32::from(*hi).saturating_sub(u32::from(*lo)) + 1;
    let why = if !behind(spec, listen, to) {
        format!(
            "probe-udp: `{listen}` is not behind router `{to}`: probes to \
             `{to}`'s WAN address can never reach it"
        )
    } else if lo > hi {
        format!("probe-udp: ports = [{lo}, {hi}] is not a range (low, high)")
    } else if *samples == 0 || *samples > file::MAX_PROBE_SAMPLES || u32::from(*samples) > size {
        format!(
            "probe-udp: samples = {samples} must be 1 to {} and at most the \
             {size} ports of the range: probes sample a range, they do not scan it",
            file::MAX_PROBE_SAMPLES
        )
    } else if let Some(name) = name
        .as_ref()
        .filter(|m| rec.probes.iter().any(|p| p.0.as_ref() == Some(m)))
    {
        format!("two probe-udp steps are named `{name}`")
    } else {
        rec.probes.push((name.clone(), listen.clone(), *samples));
        return Ok(());
    };
    Err(c.err(sp, why))
}

/// A `call` from a command's SIP user: its command can dial, and hang up if the call is held.
fn program_call(
    c: &Checker,
    n: &Names,
    from: &str,
    hold_ms: u64,
    sp: Range<usize>,
) -> Result<(), FileError> {
    match n.dialers.get(from) {
        None => Err(c.err(
            sp,
            format!(
                "`{from}` is a command's SIP user without `dial`: the harness can call it, but to make it place a call give its command a `dial` action (a line for its standard input, e.g. baresip's `dial = {{ stdin = \"/dial sip:{{to}}@…\" }}`, or a program to run); callers now: {}",
                one_of(&n.uas.iter().chain(n.dialers.keys()).cloned().collect())
            ),
        )),
        Some(false) if hold_ms > 0 => Err(c.err(
            sp,
            format!("`{from}`'s command has no `hang-up` action: a call from it with `hold-ms` needs one (baresip: `hang-up = {{ stdin = \"/hangup\" }}`)"),
        )),
        Some(_) => Ok(()),
    }
}

/// An expectation on what the phones and programs said; those on the wire and on the diagnosis
/// steps are checked by [`expect_on_the_wire`] and [`expect_of_field_check`].
fn expect(c: &Checker, n: &Names, rec: &Recorded, e: &Spanned<Expect>) -> Result<(), FileError> {
    let sp = e.span();
    match e.get_ref() {
        Expect::Call { from, .. } | Expect::Media { from, .. } if n.dialers.contains_key(from) => {
            Ok(())
        }
        Expect::Call { from, .. } | Expect::Media { from, .. } => {
            known(c, &n.uas, "phone", from, sp)
        }
        Expect::Registered { ua, .. } | Expect::Rang { ua, .. } => {
            known(c, &n.uas, "phone", ua, sp)
        }
        Expect::Ice { ua, .. } => {
            known(c, &n.uas, "phone", ua, sp.clone())?;
            if n.ice.contains(ua) {
                Ok(())
            } else {
                Err(c.err(
                    sp,
                    format!("`{ua}` is not an ICE phone: give its `ua` component `ice = true`"),
                ))
            }
        }
        Expect::ExitCode { command, .. } => known(c, &n.commands, "command", command, sp),
        Expect::Log {
            command,
            contains,
            matches,
            min,
            max,
            ..
        } => {
            known(c, &n.commands, "command", command, sp.clone())?;
            log_pattern(c, sp.clone(), contains.as_deref(), matches.as_deref())?;
            bounds(c, sp, *min, *max)
        }
        Expect::Timing { .. } | Expect::Packet { .. } => expect_on_the_wire(c, n, e),
        Expect::StunAddress { .. } | Expect::NatType { .. } | Expect::UdpReachable { .. } => {
            expect_of_field_check(c, n, rec, e)
        }
    }
}

/// An expectation on the captured packets: where, and what could match.
fn expect_on_the_wire(c: &Checker, n: &Names, e: &Spanned<Expect>) -> Result<(), FileError> {
    let sp = e.span();
    match e.get_ref() {
        Expect::Timing { at, within_t1, .. } => {
            check_vantage(c, &n.routers, &n.nodes, at, sp.clone())?;
            match within_t1 {
                Some((lo, hi)) if !(0.0..=*hi).contains(lo) => Err(c.err(
                    sp,
                    format!("within-t1 = [{lo}, {hi}]: give [LOW, HIGH] with 0 ≤ LOW ≤ HIGH"),
                )),
                _ => Ok(()),
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
            check_vantage(c, &n.routers, &n.nodes, at, sp.clone())?;
            for a in [from, to].into_iter().flatten() {
                if seen::Address::parse(a).is_none() {
                    let why = format!(
                        "`{a}` is not an address: write `203.0.113.1` or `203.0.113.1:5060`"
                    );
                    return Err(c.err(sp, why));
                }
            }
            bounds(c, sp, *min, *max)
        }
        _ => unreachable!("only expectations on packets are checked here"),
    }
}

/// An expectation on what a diagnosis step found: the step is in the file.
fn expect_of_field_check(
    c: &Checker,
    n: &Names,
    rec: &Recorded,
    e: &Spanned<Expect>,
) -> Result<(), FileError> {
    let sp = e.span();
    match e.get_ref() {
        Expect::StunAddress { host, router, .. } => {
            known(c, &n.routers, "router", router, sp.clone())?;
            let what = "host with a stun-check step";
            known(c, &rec.stun_checked, what, host, sp)
        }
        Expect::NatType { host, .. } => {
            let what = "host with a classify-nat step";
            known(c, &rec.classified, what, host, sp)
        }
        Expect::UdpReachable {
            host,
            probe,
            reached,
        } => udp_reachable(c, rec, sp, host, probe.as_deref(), *reached),
        _ => unreachable!("only expectations on diagnosis steps are checked here"),
    }
}

/// `min` and `max` that something could meet.
fn bounds(
    c: &Checker,
    sp: Range<usize>,
    min: Option<u32>,
    max: Option<u32>,
) -> Result<(), FileError> {
    let (min, max) = file::packet_bounds(min, max);
    match max {
        Some(m) if m < min => Err(c.err(
            sp,
            format!("max = {m} is below min = {min}: nothing could hold"),
        )),
        _ => Ok(()),
    }
}

/// `udp-reachable`: a probe step that exists, listens on the host, and sends enough.
fn udp_reachable(
    c: &Checker,
    rec: &Recorded,
    sp: Range<usize>,
    host: &str,
    probe: Option<&str>,
    reached: u16,
) -> Result<(), FileError> {
    let step = match probe {
        Some(p) => {
            let named: BTreeSet<String> = rec.probes.iter().filter_map(|p| p.0.clone()).collect();
            known(c, &named, "probe-udp step", p, sp.clone())?;
            rec.probes.iter().find(|x| x.0.as_deref() == Some(p))
        }
        None => {
            let listening: BTreeSet<String> = rec.probes.iter().map(|p| p.1.clone()).collect();
            let what = "host listening in a probe-udp step";
            known(c, &listening, what, host, sp.clone())?;
            rec.probes.iter().rev().find(|x| x.1 == host)
        }
    };
    match step {
        Some((_, listen, _)) if listen != host => Err(c.err(
            sp,
            format!("that probe listens on `{listen}`, not `{host}`"),
        )),
        Some((_, _, samples)) if reached > *samples => Err(c.err(
            sp,
            format!("reached = {reached}, but that probe sends only {samples}: nothing could hold"),
        )),
        _ => Ok(()),
    }
}

/// A log expectation's pattern: exactly one of a text and a regular expression.
fn log_pattern(
    c: &Checker,
    sp: Range<usize>,
    contains: Option<&str>,
    matches: Option<&str>,
) -> Result<(), FileError> {
    match (contains, matches) {
        (Some(_), None) => Ok(()),
        (None, Some(re)) => regex::Regex::new(re).map(drop).map_err(|e| {
            let e = e.to_string().replace('\n', " ");
            c.err(sp, format!("`matches`: not a regular expression: {e}"))
        }),
        _ => Err(c.err(
            sp,
            "a log expectation needs exactly one of `contains` (text) and `matches` (a regular expression)",
        )),
    }
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

pub(super) fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
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
    let mut out: Vec<sim_nat::PortForward> = Vec::new();
    for fw in &r.forward {
        let new = forward(c, r, hosts, fw)?;
        if let Some(old) = out
            .iter()
            .find(|o| o.ports.0 <= new.ports.1 && new.ports.0 <= o.ports.1)
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
        out.push(new);
    }
    Ok(out)
}

/// One `forward` of router `r`: UDP, a port range, to a host on its LAN.
fn forward(
    c: &Checker,
    r: &file::RouterDef,
    hosts: &[file::HostDef],
    fw: &file::ForwardDef,
) -> Result<sim_nat::PortForward, FileError> {
    let name = r.name.get_ref();
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
    let addr = forwarded_to(c, name, hosts, &fw.to)?;
    Ok(sim_nat::PortForward::udp(ports.0, ports.1, addr))
}

/// The first address of host `to`, which must be on router `router`'s LAN.
fn forwarded_to(
    c: &Checker,
    router: &str,
    hosts: &[file::HostDef],
    to: &Spanned<String>,
) -> Result<Ipv4Addr, FileError> {
    let behind: BTreeSet<String> = hosts
        .iter()
        .filter(|h| h.segment.get_ref() == router)
        .map(|h| h.name.get_ref().clone())
        .collect();
    let (span, to) = (to.span(), to.get_ref());
    let Some(host) = hosts.iter().find(|h| h.name.get_ref() == to) else {
        return Err(c.err(
            span,
            format!(
                "forward to unknown host `{to}` (hosts behind `{router}`: {})",
                one_of(&behind)
            ),
        ));
    };
    if host.segment.get_ref() != router {
        return Err(c.err(
            span,
            format!(
                "host `{to}` is on `{}`, not behind router `{router}`: a router forwards only to its own LAN (hosts behind `{router}`: {})",
                host.segment.get_ref(),
                one_of(&behind)
            ),
        ));
    }
    host.addrs.get_ref().first().copied().ok_or_else(|| {
        c.err(
            host.addrs.span(),
            format!("host `{to}` needs at least one address"),
        )
    })
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
