//! Runs a checked [`Scenario`]: topology up, capture on, components started, timeline played,
//! expectations judged, trace and ladder assembled, pcaps written, everything torn down.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::file::{
    ActionDef, Component, ContactDef, Expect, LogStream, MediaDef, MediaVerdictDef, Step, StunVsWan,
};
use super::Scenario;
use crate::bindings::{self, BindingWatch};
use crate::capture::{self, Capture};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::rtp::{MediaConfig, MediaReport, MediaStream, MediaVerdict};
use crate::sip::driver::{ProxyTask, UaTask};
use crate::sip::{ContactSource, Event, Media, ProxyConfig, Timers, UaConfig};
use crate::stun::{ServerConfig, StunServerTask};
use crate::topology::{Role, Topology};
use crate::trace::{Ladder, Trace};
use crate::turn::driver::{MediaTask, RelayedMediaTask, TurnServerTask};
use crate::turn::{RelayedMedia, TurnClientConfig, TurnServerConfig};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to write `<scenario>/<vantage>.pcap` and `<scenario>/ladder.txt`.
    pub out_dir: Option<PathBuf>,
    /// Before tearing down, print the namespaces and wait for Enter on stdin, so a user can
    /// look around with `ip netns exec` (nft rulesets, conntrack, tcpdump).
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
}

/// What a run showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub verdict: Verdict,
    /// Each expectation: its description, whether it held, what was observed.
    pub checks: Vec<(String, bool, String)>,
    /// A step that could not be carried out (the run stops there and fails).
    pub error: Option<String>,
    /// The normalised ladder (hosts and the WAN side of every router), with events.
    pub ladder: String,
    /// The same without events: stable run to run, for snapshots.
    pub snapshot: String,
    pub trace: Trace,
    pub pcaps: Vec<PathBuf>,
    pub duration: Duration,
    /// How long each phase took, in order: where a slow run spent its time.
    pub phases: Phases,
    /// For a failed run, what `harness diagnose` says of each host's capture (those that show a
    /// problem): the field guide's cause next to the expectation that failed.
    pub diagnosis: Vec<crate::diagnose::Report>,
    /// What the field guide's diagnosis steps (`stun-check`, `classify-nat`, `probe-udp`) found,
    /// one line each in step order (a probe's lines indented under it), with the NAT model's
    /// reason for every probe a router kept.
    pub field_checks: Vec<String>,
    /// What the model of each NAT router the run left alone saw: bindings and drops, for the
    /// run report's binding timelines.
    pub nat: Vec<super::explain::RouterStory>,
    /// What `conntrack -E` reported in each NAT router: the kernel's own binding events.
    pub bindings: Vec<(String, Vec<bindings::BindingEvent>)>,
}

/// The wall time of each phase of a run (`build 0.21 s, components 0.01 s, play 2.40 s, …`).
#[derive(Debug, Clone, Default)]
pub struct Phases {
    done: Vec<(&'static str, Duration)>,
    since: Option<Instant>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            done: Vec::new(),
            since: Some(Instant::now()),
        }
    }

    /// Ends the phase under way, named `name`, and starts the next.
    fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        let since = self.since.replace(now).unwrap_or(now);
        self.done.push((name, now - since));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Duration)> + '_ {
        self.done.iter().copied()
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {:.2} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

fn io_err(what: String) -> Error {
    Error::Io {
        what,
        source: std::io::ErrorKind::Other.into(),
    }
}

/// The outcome of the last call each phone placed: 200 if established, the final status if it
/// failed, 0 if nothing final came.
type CallResults = BTreeMap<String, u16>;

/// How a phone's RTP leaves it.
enum PhoneMedia {
    /// From its own RTP port (SDP: its interface address or the STUN mapping of that port).
    Direct {
        local: SocketAddr,
        latching: bool,
        duration: Duration,
    },
    /// Through a TURN allocation made when the phone started.
    Relayed(RelayedMediaTask),
}

struct Running {
    topo: Topology,
    uas: BTreeMap<String, (UaTask, String)>,
    media: BTreeMap<String, PhoneMedia>,
    reports: BTreeMap<String, MediaReport>,
    /// Events of the runner itself (media verdicts), for the trace.
    notes: Vec<(Instant, String, String)>,
    _turn: Vec<TurnServerTask>,
    sbcs: Vec<crate::sbc::SbcTask>,
    kamailios: BTreeMap<String, crate::sbc::kamailio::Kamailio>,
    proxies: BTreeMap<String, ProxyTask>,
    _stun: Vec<StunServerTask>,
    commands: BTreeMap<String, Process>,
    exits: BTreeMap<String, Option<i32>>,
    calls: CallResults,
    /// Whom each phone's last call went to.
    calls_to: BTreeMap<String, String>,
    /// SIP users answered by commands (`user = …`): user → host.
    external: BTreeMap<String, String>,
    /// The run's capture: media of external programs is judged from it.
    capture: Option<Capture>,
    /// The last `stun-check` of each host.
    stun_checks: BTreeMap<String, super::checks::StunCheck>,
    /// The last `classify-nat` of each host.
    classified: BTreeMap<String, super::checks::Classified>,
    /// Every `probe-udp`, in order.
    probes: Vec<super::checks::ProbeRun>,
    /// What the diagnosis steps found, in order, as the snapshot shows it.
    check_lines: Vec<String>,
    /// The same with random ports and the NAT model's reasons kept, for the outcome.
    check_report: Vec<String>,
}

impl Running {
    /// What the run's capture holds so far (nothing once it has been stopped).
    fn frames(&self) -> Vec<capture::Frame> {
        self.capture
            .as_ref()
            .map(Capture::snapshot)
            .unwrap_or_default()
    }
}

fn first_addr(topo: &Topology, host: &str) -> Result<std::net::Ipv4Addr> {
    Ok(topo.node(host)?.addr())
}

/// Where a phone's `proxy =` points: `IP:PORT`, or the SIP address of the registrar it names (a
/// host's proxy/sbc/kamailio, or a command playing the registrar), as the check resolved it.
fn registrar_addr(s: &Scenario, topo: &Topology, proxy: &str) -> Result<SocketAddr> {
    if let Ok(a) = proxy.parse() {
        return Ok(a);
    }
    let (host, port) = s
        .file
        .components
        .iter()
        .map(|c| c.get_ref())
        .find_map(|c| match c.registrar() {
            Some((name, port)) if name == proxy => Some((c.host(), port)),
            _ => None,
        })
        .ok_or_else(|| io_err(format!("no registrar called `{proxy}`")))?;
    Ok(SocketAddr::new(first_addr(topo, host)?.into(), port))
}

async fn start_components(s: &Scenario, topo: Topology) -> Result<Running> {
    let t1 = Duration::from_millis(s.file.scenario.t1_ms);
    let timers = Timers::scaled(t1);
    let mut r = Running {
        topo,
        uas: BTreeMap::new(),
        media: BTreeMap::new(),
        reports: BTreeMap::new(),
        notes: Vec::new(),
        _turn: Vec::new(),
        sbcs: Vec::new(),
        kamailios: BTreeMap::new(),
        proxies: BTreeMap::new(),
        _stun: Vec::new(),
        commands: BTreeMap::new(),
        exits: BTreeMap::new(),
        calls: BTreeMap::new(),
        calls_to: BTreeMap::new(),
        external: BTreeMap::new(),
        capture: None,
        stun_checks: BTreeMap::new(),
        classified: BTreeMap::new(),
        probes: Vec::new(),
        check_lines: Vec::new(),
        check_report: Vec::new(),
    };
    // Servers first, phones last: phones talk to them as soon as they register.
    let order = |c: &Component| match c {
        Component::StunServer { .. } | Component::TurnServer { .. } => 0,
        Component::Proxy { .. } | Component::Sbc { .. } | Component::Kamailio { .. } => 1,
        Component::Command { .. } => 2,
        Component::Ua { .. } => 3,
    };
    let mut comps: Vec<&Component> = s.file.components.iter().map(|c| c.get_ref()).collect();
    comps.sort_by_key(|c| order(c));
    for comp in comps {
        match comp {
            Component::StunServer { host } => {
                let node = r.topo.node(host)?;
                let cfg = match node.addrs() {
                    [a, b, ..] => ServerConfig::rfc5780(
                        SocketAddr::new((*a).into(), 3478),
                        SocketAddr::new((*b).into(), 3479),
                    ),
                    [a] => ServerConfig::new(SocketAddr::new((*a).into(), 3478)),
                    [] => return Err(io_err(format!("{host} has no address"))),
                };
                let (task, _) = StunServerTask::spawn(node, cfg).await?;
                r._stun.push(task);
            }
            Component::Sbc {
                host,
                port,
                ping,
                users,
            } => {
                let node = r.topo.node(host)?;
                let sip = SocketAddr::new(node.addr().into(), *port);
                let mut cfg = crate::sbc::SbcConfig::new(sip, &node.addr().to_string());
                cfg.timers = timers;
                cfg.users = users.clone();
                cfg.ping = ping.as_ref().and_then(|k| k.ping());
                let (task, _) = crate::sbc::SbcTask::serve(node, cfg).await?;
                r.sbcs.push(task);
            }
            Component::Kamailio {
                host,
                nathelper,
                natping_interval_secs,
                rtpengine,
            } => {
                let node = r.topo.node(host)?;
                let listen = SocketAddr::new(node.addr().into(), 5060);
                let mut cfg =
                    crate::sbc::kamailio::KamailioConfig::new(listen, &node.addr().to_string());
                cfg.natping_interval = *natping_interval_secs;
                cfg.nathelper = *nathelper;
                cfg.fr_timer_ms = u32::try_from(64 * s.file.scenario.t1_ms).unwrap_or(u32::MAX);
                cfg.t1_ms = u32::try_from(s.file.scenario.t1_ms).unwrap_or(u32::MAX);
                cfg.rtpengine = rtpengine
                    .then(|| crate::sbc::rtpengine::RtpengineConfig::new(node.addr().into()));
                let k = crate::sbc::kamailio::Kamailio::start(node, cfg).await?;
                r.kamailios.insert(host.clone(), k);
            }
            Component::TurnServer { host, users } => {
                let node = r.topo.node(host)?;
                let mut cfg = TurnServerConfig {
                    relay_ports: 50000..=50063,
                    ..TurnServerConfig::new(SocketAddr::new(node.addr().into(), 3478), "harness")
                };
                for (u, p) in users {
                    cfg = cfg.user(u, p);
                }
                let (task, _) = TurnServerTask::serve(node, cfg).await?;
                r._turn.push(task);
            }
            Component::Proxy {
                host,
                port,
                users,
                ping,
                ..
            } => {
                let node = r.topo.node(host)?;
                let local = SocketAddr::new(node.addr().into(), *port);
                let nat = comp.proxy_nat_handling().expect("a proxy");
                let mut cfg = ProxyConfig::new(local, &node.addr().to_string(), nat);
                cfg.timers = timers;
                cfg.users = users.clone();
                cfg.ping = ping.as_ref().and_then(|k| k.ping());
                let (task, _) = ProxyTask::spawn(node, cfg).await?;
                r.proxies.insert(host.clone(), task);
            }
            Component::Command {
                name,
                autostart,
                user,
                host,
                ..
            } => {
                if let Some(u) = user {
                    r.external.insert(u.clone(), host.clone());
                }
                if *autostart {
                    let p = start_command(s, &r.topo, comp).await?;
                    r.commands.insert(name.clone(), p);
                }
            }
            Component::Ua {
                host,
                user,
                port,
                proxy,
                rport,
                contact,
                stun_server,
                keepalive,
                expires_secs,
                answer_after_ms,
                provisional_interval_ms,
                password,
                media_port,
                media,
                turn_server,
                turn_password,
                latching,
                media_ms,
                externip,
                localnet,
            } => {
                let node = r.topo.node(host)?;
                let user = user.clone().unwrap_or_else(|| host.clone());
                let proxy_addr = registrar_addr(s, &r.topo, proxy)?;
                let local = SocketAddr::new(node.addr().into(), *port);
                let mut cfg = UaConfig::new(&user, &proxy_addr.ip().to_string(), local, proxy_addr);
                cfg.timers = timers;
                cfg.rport = *rport;
                cfg.expires = Duration::from_secs(*expires_secs);
                cfg.answer_after = Some(Duration::from_millis(*answer_after_ms));
                cfg.ring_every = provisional_interval_ms.map(Duration::from_millis);
                cfg.password = password.clone();
                cfg.media = Media {
                    address: IpAddr::V4(node.addr()),
                    port: *media_port,
                };
                cfg.keepalive = keepalive.as_ref().map(|k| k.keepalive());
                let stun_addr = match stun_server {
                    Some(h) => Some(SocketAddr::new(first_addr(&r.topo, h)?.into(), 3478)),
                    None => None,
                };
                if *contact == ContactDef::Stun {
                    let stun = stun_addr.expect("checked: contact = stun has a server");
                    let mapped = crate::stun::binding(node, local, stun).await?;
                    cfg.contact = ContactSource::External(mapped);
                }
                let media_local = SocketAddr::new(node.addr().into(), *media_port);
                let duration = Duration::from_millis(*media_ms);
                let (sdp, phone_media) = match media {
                    MediaDef::Local | MediaDef::Stun => {
                        let sdp = if *media == MediaDef::Stun {
                            let stun = stun_addr.expect("checked: media = stun has a server");
                            crate::stun::binding(node, media_local, stun).await?
                        } else {
                            media_local
                        };
                        let direct = PhoneMedia::Direct {
                            local: media_local,
                            latching: *latching,
                            duration,
                        };
                        (sdp, direct)
                    }
                    MediaDef::Turn => {
                        let h = turn_server
                            .as_deref()
                            .expect("checked: media = turn has a server");
                        let server = SocketAddr::new(first_addr(&r.topo, h)?.into(), 3478);
                        let pass = turn_password.clone().unwrap_or_else(|| "secret".into());
                        let mut mc = MediaConfig::pcmu(SocketAddr::from(([0, 0, 0, 0], 0)), None);
                        mc.duration = duration;
                        mc.latching = *latching;
                        let rm = RelayedMedia::new(
                            TurnClientConfig::new(media_local, server, user.clone(), pass),
                            mc,
                        );
                        let (task, _) = RelayedMediaTask::allocate(node, rm).await?;
                        let st = task
                            .wait_for(|s| s.relayed.is_some(), Duration::from_secs(5))
                            .await
                            .map_err(|s| io_err(format!("{user}: no TURN allocation: {s:?}")))?;
                        let relayed = st.relayed.expect("waited for it");
                        (relayed, PhoneMedia::Relayed(task))
                    }
                };
                cfg.media = Media {
                    address: sdp.ip(),
                    port: sdp.port(),
                };
                if let Some(ext) = externip {
                    cfg.contact = ContactSource::External(SocketAddr::new((*ext).into(), *port));
                    cfg.external_media = Some((*ext).into());
                    cfg.localnet = super::localnets(localnet);
                }
                r.media.insert(user.clone(), phone_media);
                let (task, _) = UaTask::spawn(node, cfg).await?;
                r.uas.insert(user, (task, host.clone()));
            }
        }
    }
    Ok(r)
}

/// Where the files of this run's commands go; removed when the run ends.
fn files_root(topo: &Topology) -> PathBuf {
    crate::names::files_dir(topo.run_id())
}

/// Removes the run's files directory when dropped, whichever way the run ends.
struct FilesDir(PathBuf);

impl Drop for FilesDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a command's files, substitutes its arguments, starts it inside its host and waits
/// until it is ready.
async fn start_command(s: &Scenario, topo: &Topology, comp: &Component) -> Result<Process> {
    let Component::Command {
        name,
        host,
        run,
        ready,
        files,
        ..
    } = comp
    else {
        unreachable!("only commands are started here");
    };
    // Per topology: cells of a matrix run the same command concurrently.
    let dir = files_root(topo).join(name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mut args: Vec<String> = run
        .iter()
        .map(|a| super::vars::apply(&s.vars, a).replace("{dir}", &dir.display().to_string()))
        .collect();
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(
            &path,
            super::vars::apply(&s.vars, text).replace("{dir}", &dir.display().to_string()),
        )
        .map_err(Error::io(format!("write {}", path.display())))?;
        for a in &mut args {
            *a = a.replace(&format!("{{file:{file}}}"), &path.display().to_string());
        }
    }
    let node = topo.node(host)?;
    let argv: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let mut p = if comp.types_commands() {
        node.start_interactive(&args[0], &argv).await?
    } else {
        node.start(&args[0], &argv).await?
    };
    let log = ready.as_ref().and_then(|r| r.log.clone());
    let delay = ready.as_ref().and_then(|r| r.delay_ms);
    if let Some(line) = log {
        if !p.wait_for_output(&line, Duration::from_secs(10)).await {
            return Err(io_err(format!(
                "command `{name}` never printed `{line}`{}",
                last_words(&p)
            )));
        }
    }
    if let Some(r) = ready.as_ref().filter(|r| r.port.is_some()) {
        let port = r.port.unwrap_or_default();
        let tcp = r.protocol == super::file::PortProtocol::Tcp;
        if !p.wait_for_port(port, tcp, Duration::from_secs(10)).await {
            let what = if tcp { "listened on TCP" } else { "bound UDP" };
            return Err(io_err(format!(
                "command `{name}` never {what} port {port} in `{host}`{}",
                last_words(&p)
            )));
        }
    }
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(p)
}

/// A phone's media sockets for one call, open from the offer to the end of the call: the peer
/// streams until it gets the BYE, and a closed port answers ICMP, as no phone does.
struct OpenMedia {
    task: MediaTask,
    /// RTP + 1 (RFC 3550 §11). Our phones send no RTCP, but a peer's (baresip's) must find the
    /// port open, as on a real phone. What arrives is left unread.
    _rtcp: tokio::net::UdpSocket,
}

/// Both phones' media for a call (`None`: relayed through TURN, or not one of ours).
struct OpenedMedia {
    caller: Option<OpenMedia>,
    callee: Option<OpenMedia>,
    since: SystemTime,
}

/// Opens `user`'s RTP and RTCP sockets, not sending until the answer gives a destination.
async fn open_media(r: &Running, user: &str) -> Result<Option<OpenMedia>> {
    let Some(PhoneMedia::Direct {
        local,
        latching,
        duration,
    }) = r.media.get(user)
    else {
        return Ok(None);
    };
    let node = r.topo.node(&r.uas[user].1)?;
    let mut cfg = MediaConfig::pcmu(*local, None);
    cfg.latching = *latching;
    cfg.duration = *duration;
    let (task, _) = MediaTask::bind(node, MediaStream::new(cfg)).await?;
    let rtcp_at = SocketAddr::new(local.ip(), local.port().wrapping_add(1));
    let _rtcp = node.udp_bind(rtcp_at).await?;
    Ok(Some(OpenMedia { task, _rtcp }))
}

/// `; its last line: …` — one line for an error, however much the program printed.
fn last_words(p: &Process) -> String {
    let out = format!("{}\n{}", p.stdout(), p.stderr());
    let last = out.lines().map(str::trim).rfind(|l| !l.is_empty());
    match last {
        Some(l) => format!("; its last line: {l}"),
        None => String::new(),
    }
}

/// Waits until `ua` has more events matching `m` than `before`; the newest match.
async fn wait_new(
    ua: &UaTask,
    m: impl Fn(&Event) -> bool,
    before: usize,
    timeout: Duration,
) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let hits: Vec<Event> = ua
            .events()
            .into_iter()
            .map(|e| e.event)
            .filter(|e| m(e))
            .collect();
        if hits.len() > before {
            return hits.last().cloned();
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn count(ua: &UaTask, m: impl Fn(&Event) -> bool) -> usize {
    ua.events().iter().filter(|e| m(&e.event)).count()
}

async fn play(s: &Scenario, r: &mut Running) -> Result<()> {
    for step in &s.file.steps {
        match step.get_ref() {
            Step::Register { ua, timeout_ms } => {
                let (task, _) = &r.uas[ua];
                let done = |e: &Event| {
                    matches!(
                        e,
                        Event::Registered { .. } | Event::RegistrationFailed { .. }
                    )
                };
                let before = count(task, done);
                task.register().await?;
                if wait_new(task, done, before, Duration::from_millis(*timeout_ms))
                    .await
                    .is_none()
                {
                    // Not a failure (an expectation may want the phone unregistered), but never
                    // silent: the ladder says the step gave up waiting while the phone goes on.
                    let host = r.uas[ua].1.clone();
                    r.notes.push((
                        Instant::now(),
                        host,
                        format!(
                            "register: no final response within {timeout_ms} ms; the step goes on, the phone keeps trying"
                        ),
                    ));
                }
            }
            Step::Call {
                from,
                to,
                hold_ms,
                timeout_ms,
            } if r.external.contains_key(from) => {
                let timing = CallTiming {
                    hold: Duration::from_millis(*hold_ms),
                    timeout: Duration::from_millis(*timeout_ms),
                    t1: Duration::from_millis(s.file.scenario.t1_ms),
                };
                call_from_command(s, r, from, to, timing).await?
            }
            Step::Call {
                from,
                to,
                hold_ms,
                timeout_ms,
            } => {
                // Both phones' media sockets exist from the offer on, as on real phones: RTP
                // that arrives before a side starts streaming is received, not refused.
                let opened = OpenedMedia {
                    caller: open_media(r, from).await?,
                    callee: match r.uas.contains_key(to) {
                        true => open_media(r, to).await?,
                        false => None,
                    },
                    since: SystemTime::now(),
                };
                // A callee answering its second call already holds the first one's
                // CallEstablished: only a newer one is this call's.
                let est = |e: &Event| matches!(e, Event::CallEstablished { .. });
                let callee_before = r.uas.get(to).map_or(0, |(t, _)| count(t, est));
                let (task, _) = &r.uas[from];
                let id = task.call(to).await?;
                let final_of = |e: &Event| match e {
                    Event::CallEstablished { call_id, .. } => (call_id == &id).then_some(200),
                    Event::CallFailed { call_id, status } => (call_id == &id).then_some(*status),
                    _ => None,
                };
                let t1 = Duration::from_millis(s.file.scenario.t1_ms);
                let deadline = Instant::now() + Duration::from_millis(*timeout_ms);
                let status = loop {
                    let task = &r.uas[from].0;
                    if let Some(st) = task.events().iter().find_map(|e| final_of(&e.event)) {
                        break st;
                    }
                    if Instant::now() >= deadline {
                        break 0;
                    }
                    if unanswerable(r, t1).await {
                        r.notes.push((
                            Instant::now(),
                            r.uas[from].1.clone(),
                            format!("call: no final response, and none can come (no transaction pending anywhere, no program running): the step ends before its {timeout_ms} ms"),
                        ));
                        break 0;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                r.calls.insert(from.clone(), status);
                r.calls_to.insert(from.clone(), to.clone());
                let caller_remote =
                    r.uas[from]
                        .0
                        .events()
                        .into_iter()
                        .find_map(|e| match e.event {
                            Event::CallEstablished {
                                call_id,
                                remote_media,
                            } if call_id == id => remote_media,
                            _ => None,
                        });
                let mut held = Vec::new();
                let report = if status != 200 {
                    None
                } else if r.external.contains_key(to) {
                    match caller_remote {
                        Some(remote) => {
                            let (report, h) =
                                stream_media_observed(r, from, to, remote, opened).await?;
                            held = h;
                            Some(report)
                        }
                        None => None,
                    }
                } else if r.uas.contains_key(to) {
                    // The callee's side is up once it has the ACK.
                    let callee = &r.uas[to].0;
                    let callee_remote =
                        match wait_new(callee, est, callee_before, Duration::from_secs(5)).await {
                            Some(Event::CallEstablished { remote_media, .. }) => remote_media,
                            _ => None,
                        };
                    match (caller_remote, callee_remote) {
                        (Some(a), Some(b)) => {
                            let (report, h) = stream_media(r, from, to, a, b, opened).await?;
                            held = h;
                            Some(report)
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(report) = report {
                    r.notes.push((
                        Instant::now(),
                        r.uas[from].1.clone(),
                        format!("media: {report}"),
                    ));
                    r.reports.insert(from.clone(), report);
                }
                let (task, _) = &r.uas[from];
                if status == 200 && *hold_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
                    task.hang_up(&id).await?;
                    let ended =
                        |e: &Event| matches!(e, Event::CallEnded { call_id } if call_id == &id);
                    wait_new(task, ended, 0, Duration::from_secs(10)).await;
                }
                drop(held);
            }
            Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::ExpireBinding { router, host, port } => {
                let addr = SocketAddrV4::new(first_addr(&r.topo, host)?, *port);
                bindings::expire(r.topo.node(router)?, addr).await?;
            }
            Step::FlushBindings { router } => bindings::flush(r.topo.node(router)?).await?,
            Step::SetNat { router, nat } => r.topo.node(router)?.set_nat(&nat.0).await?,
            Step::SetNatHandling { proxy, value } => {
                r.proxies[proxy].set_nat_handling(value.handling()).await?
            }
            Step::Start { command } => {
                let comp = s
                    .file
                    .components
                    .iter()
                    .map(|c| c.get_ref())
                    .find(|c| matches!(c, Component::Command { name, .. } if name == command))
                    .expect("checked");
                let p = start_command(s, &r.topo, comp).await?;
                r.commands.insert(command.clone(), p);
            }
            Step::WaitExit {
                command,
                timeout_ms,
            } => {
                let p = r
                    .commands
                    .get_mut(command)
                    .ok_or_else(|| io_err(format!("command `{command}` was never started")))?;
                let st = p.wait_timeout(Duration::from_millis(*timeout_ms)).await;
                r.exits.insert(command.clone(), st.and_then(|s| s.code()));
            }
            Step::StunCheck {
                host,
                stun_server,
                port,
            } => {
                let node = r.topo.node(host)?;
                let local = SocketAddr::new(node.addr().into(), *port);
                let server = SocketAddr::new(first_addr(&r.topo, stun_server)?.into(), 3478);
                let c = super::checks::stun_check(node, local, server).await;
                r.notes.push((Instant::now(), host.clone(), c.line(false)));
                r.check_lines.push(format!("{host}: {}", c.line(true)));
                r.check_report.push(format!("{host}: {}", c.line(false)));
                r.stun_checks.insert(host.clone(), c);
            }
            Step::ClassifyNat {
                host,
                stun_server,
                port,
            } => {
                let node = r.topo.node(host)?;
                let local = SocketAddr::new(node.addr().into(), *port);
                let server = SocketAddr::new(first_addr(&r.topo, stun_server)?.into(), 3478);
                let c = super::checks::classify_nat(node, local, server).await;
                r.notes.push((Instant::now(), host.clone(), c.to_string()));
                r.check_lines.push(format!("{host}: {c}"));
                r.check_report.push(format!("{host}: {c}"));
                r.classified.insert(host.clone(), c);
            }
            Step::ProbeUdp {
                name,
                from,
                to,
                listen,
                ports,
                samples,
                inside_sends_first,
            } => {
                let wan = s
                    .topology
                    .router(to)
                    .map(|r| r.wan)
                    .ok_or_else(|| io_err(format!("no router `{to}`")))?;
                let sampled = super::checks::sample(ports.0, ports.1, *samples);
                // Each probe step its own source ports, 100 apart (at most 64 samples).
                let step_no = u16::try_from(r.probes.len()).unwrap_or(u16::MAX);
                let plan = super::checks::ProbePlan {
                    prober: r.topo.node(from)?,
                    listener: r.topo.node(listen)?,
                    wan,
                    source_base: 40000u16.saturating_add(step_no.saturating_mul(100)),
                    inside_sends_first: *inside_sends_first,
                };
                let probes = super::checks::probe_udp(plan, &sampled).await?;
                let mut run = super::checks::ProbeRun {
                    name: name.clone(),
                    from: from.clone(),
                    router: to.clone(),
                    wan,
                    listen: listen.clone(),
                    range: *ports,
                    inside_sends_first: *inside_sends_first,
                    probes,
                };
                // The kernel already reported each ICMP error to the prober's socket; wait (a
                // bounded while) until the capture has read those frames too, so the run names
                // who sent each one however loaded the machine is.
                let deadline = Instant::now() + Duration::from_secs(2);
                let frames = loop {
                    let frames = r.frames();
                    if run.icmp_seen(&frames) || Instant::now() >= deadline {
                        break frames;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                run.explain(&frames, &nat_drops(s, &r.topo, &frames));
                let now = Instant::now();
                r.notes.push((now, from.clone(), run.summary()));
                for line in run.lines(true, false) {
                    r.notes.push((now, from.clone(), line));
                }
                r.check_lines.push(format!("{from}: {}", run.summary()));
                for line in run.lines(false, true) {
                    r.check_lines.push(format!("  {line}"));
                }
                r.check_report.push(format!("{from}: {}", run.summary()));
                for line in run.lines(true, false) {
                    r.check_report.push(format!("  {line}"));
                }
                r.probes.push(run);
            }
        }
    }
    Ok(())
}

/// Waits until the run's SIP has nothing left to say, so the ladder's tail does not depend on
/// when the last step returned: a UAS resends its 2xx until the ACK comes (or Timer H), a proxy
/// answers what it forwarded. Our machines say when nothing is pending, and the run ends 2·T1
/// after the last SIP then (what was just sent must reach the capture).
/// Programs cannot be asked; with one running, the run ends after 10·T1 without SIP on any link
/// (longer than T2, 8·T1, the widest gap between retransmissions). Never past 80·T1.
async fn settle(s: &Scenario, r: &Running) {
    for (task, _) in r.uas.values() {
        let _ = task.with(|m, _| m.wind_down()).await;
    }
    let t1 = Duration::from_millis(s.file.scenario.t1_ms);
    let deadline = Instant::now() + t1 * 80;
    let programs = !r.commands.is_empty() || !r.kamailios.is_empty();
    let quiet_enough = if programs {
        t1 * 10
    } else {
        // What was sent just now may still be on its way into the capture's buffer.
        (t1 * 2).max(Duration::from_millis(100))
    };
    loop {
        tokio::time::sleep(Duration::from_millis(20).min(t1)).await;
        if Instant::now() >= deadline {
            return;
        }
        let quiet = last_sip(&r.frames())
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_none_or(|d| d >= quiet_enough);
        if quiet && !ours_pending(r).await {
            return;
        }
    }
}

/// Whether a call can no longer get a final response: none of our machines has anything pending
/// (the caller's INVITE in Proceeding is not: RFC 3261 gives it no timer, it waits for ever), no
/// program that could answer is running, and the last SIP has had 2·T1 to reach the capture.
/// The step then ends here instead of at its `timeout-ms`, with the same verdict: no final
/// response.
async fn unanswerable(r: &Running, t1: Duration) -> bool {
    // Asking the machines first: while they are busy (a 2xx retransmitted for 64·T1), the
    // capture is not copied every poll.
    if !r.commands.is_empty() || !r.kamailios.is_empty() || ours_pending(r).await {
        return false;
    }
    last_sip(&r.frames())
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|d| d >= (t1 * 2).max(Duration::from_millis(100)))
}

/// When the last SIP message (pings aside) was captured.
fn last_sip(frames: &[capture::Frame]) -> Option<SystemTime> {
    frames
        .iter()
        .rev()
        .find(|f| {
            matches!(
                crate::trace::decode_frame(f),
                Some(crate::trace::Entry::Packet {
                    payload: crate::trace::Payload::Sip(ref s),
                    ..
                }) if !crate::trace::ladder::is_ping(s)
            )
        })
        .map(|f| f.at)
}

/// Whether one of our SIP machines has a transaction in progress. A machine that has stopped
/// has nothing pending.
async fn ours_pending(r: &Running) -> bool {
    for (task, _) in r.uas.values() {
        if task.with(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    for task in r.proxies.values() {
        if task.with(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    for task in &r.sbcs {
        if task.call(|m, _| m.pending()).await.unwrap_or(false) {
            return true;
        }
    }
    false
}

/// The public ports routers allocated instead of the inside port (masquerade moving a port, a
/// symmetric NAT's random ports): they differ from run to run.
fn moved_ports(bindings: &[(String, Vec<crate::bindings::BindingEvent>)]) -> Vec<SocketAddrV4> {
    bindings
        .iter()
        .flat_map(|(_, events)| events)
        .filter_map(|e| match e {
            crate::bindings::BindingEvent::Created { binding, .. }
                if binding.direction == crate::bindings::Opened::Outbound
                    && binding.external.port() != binding.internal.port() =>
            {
                Some(binding.external)
            }
            _ => None,
        })
        .collect()
}

/// A `call` step's durations.
struct CallTiming {
    hold: Duration,
    timeout: Duration,
    t1: Duration,
}

/// The command whose SIP user is `user`: its name and its `dial` and `hang-up` actions.
fn dialer<'a>(
    s: &'a Scenario,
    user: &str,
) -> (&'a str, Option<&'a ActionDef>, Option<&'a ActionDef>) {
    s.file
        .components
        .iter()
        .find_map(|c| match c.get_ref() {
            Component::Command {
                name,
                user: Some(u),
                dial,
                hang_up,
                ..
            } if u == user => Some((name.as_str(), dial.as_ref(), hang_up.as_ref())),
            _ => None,
        })
        .expect("checked: a command plays the user")
}

/// Does `action` to command `name`: types its line into the program, or runs its program in
/// the command's host; `{to}` is the user called. The ladder notes what was done.
async fn act(
    s: &Scenario,
    r: &mut Running,
    name: &str,
    host: &str,
    action: &ActionDef,
    to: &str,
) -> Result<()> {
    let fill = |t: &str| super::vars::apply(&s.vars, t).replace("{to}", to);
    if let Some(line) = &action.stdin {
        let line = fill(line);
        let p = r
            .commands
            .get_mut(name)
            .ok_or_else(|| io_err(format!("command `{name}` is not running (never started?)")))?;
        p.write_line(&line)?;
        r.notes.push((
            Instant::now(),
            host.to_string(),
            format!("{name}: typed `{line}`"),
        ));
    } else if let Some(argv) = &action.run {
        let argv: Vec<String> = argv.iter().map(|a| fill(a)).collect();
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let node = r.topo.node(host)?;
        let (status, out, err) = node
            .output(&argv[0], &args, Duration::from_secs(10))
            .await?;
        if !status.is_some_and(|st| st.success()) {
            return Err(io_err(format!(
                "command `{name}`: `{}` {} ({})",
                argv.join(" "),
                status.map_or("did not finish within 10 s".into(), |st| format!(
                    "failed: {st}"
                )),
                format!("{out}\n{err}").trim()
            )));
        }
        r.notes.push((
            Instant::now(),
            host.to_string(),
            format!("{name}: ran `{}`", argv.join(" ")),
        ));
    }
    Ok(())
}

/// A call placed by a command (a softphone the harness cannot ask): it is made to dial, and the
/// call's outcome and media are read off the packets at its host's interface.
async fn call_from_command(
    s: &Scenario,
    r: &mut Running,
    from: &str,
    to: &str,
    timing: CallTiming,
) -> Result<()> {
    let (name, dial, hang_up) = dialer(s, from);
    let host = r.external[from].clone();
    let vantage = capture::Vantage::new(&host, "eth0");
    let callee_media = match r.uas.contains_key(to) {
        true => open_media(r, to).await?,
        false => None,
    };
    let est = |e: &Event| matches!(e, Event::CallEstablished { .. });
    let callee_before = r.uas.get(to).map_or(0, |(t, _)| count(t, est));
    let since = SystemTime::now();
    let gate = MediaGate::close(r.topo.node(&host)?).await?;
    act(
        s,
        r,
        name,
        &host,
        dial.expect("checked: a caller dials"),
        to,
    )
    .await?;
    // A challenge (401/407) is final only if the program does not send the INVITE again.
    let grace = timing.t1 * 4;
    let deadline = Instant::now() + timing.timeout;
    let call = loop {
        let call = super::placed::placed_call(&r.frames(), &vantage, since, to);
        let settled = call.as_ref().is_some_and(|c| {
            c.established()
                || c.answer.is_some_and(|(_, at)| {
                    SystemTime::now().duration_since(at).unwrap_or_default() > grace
                })
        });
        if settled || Instant::now() >= deadline {
            break call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = call.as_ref().and_then(|c| c.answer).map_or(0, |(st, _)| st);
    r.calls.insert(from.to_string(), status);
    r.calls_to.insert(from.to_string(), to.to_string());
    if !call
        .as_ref()
        .is_some_and(super::placed::PlacedCall::established)
    {
        return gate.open(r.topo.node(&host)?).await;
    }
    let callee = match r.uas.get(to) {
        Some((task, _)) => match wait_new(task, est, callee_before, Duration::from_secs(5)).await {
            Some(Event::CallEstablished {
                remote_media: Some(to_caller),
                ..
            }) => Some((to_caller, callee_media)),
            _ => None,
        },
        None => None,
    };
    let mut held = Vec::new();
    let gated;
    let callee_stats = match callee {
        // Our phone answers: it streams to the program's SDP address, as in stream_media.
        Some((to_caller, Some(open))) => {
            let duration = match r.media.get(to) {
                Some(PhoneMedia::Direct { duration, .. }) => *duration,
                _ => Duration::from_secs(1),
            };
            open.task
                .call(move |m, _| m.set_destination(to_caller))
                .await?;
            open.task.call(|m, now| m.start(now)).await?;
            gated = gate.open_after_callee(r, to, since, &host).await?;
            tokio::time::sleep(duration + Duration::from_millis(400)).await;
            let st = open.task.state();
            held.push(open);
            Some(st)
        }
        Some((to_caller, None)) => match r.media.get(to) {
            Some(PhoneMedia::Relayed(task)) => {
                task.call(move |m, now| m.connect(to_caller, now))
                    .await?
                    .map_err(|e| io_err(format!("{to}: TURN permission for {to_caller}: {e}")))?;
                let _ = task.wait_for(|s| s.ready, Duration::from_secs(5)).await;
                task.call(|m, now| m.start_media(now)).await?;
                gated = gate.open_after_callee(r, to, since, &host).await?;
                tokio::time::sleep(Duration::from_millis(1400)).await;
                Some(task.state().stats)
            }
            _ => return gate.open(r.topo.node(&host)?).await,
        },
        // Another program answers: both sides stream on their own; watch them a while.
        None if r.external.contains_key(to) => {
            gated = gate.open_after_callee(r, to, since, &host).await?;
            tokio::time::sleep(Duration::from_millis(1400)).await;
            None
        }
        None => return gate.open(r.topo.node(&host)?).await,
    };
    r.notes.push(gated);
    let until = SystemTime::now();
    // Frames carry the kernel's receive time: the window's last frames may reach the capture's
    // buffer a little later, so read it after a moment, bounded by `until`.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let frames = r.frames();
    let caller_stats = crate::rtp::observed::observe(&frames, &vantage, since, until);
    let callee_stats = callee_stats.unwrap_or_else(|| {
        let at = capture::Vantage::new(&r.external[to], "eth0");
        crate::rtp::observed::observe(&frames, &at, since, until)
    });
    let report = MediaReport::new(&caller_stats, &callee_stats, 0.95);
    r.notes
        .push((Instant::now(), host.clone(), format!("media: {report}")));
    r.reports.insert(from.to_string(), report);
    if timing.hold > Duration::ZERO {
        tokio::time::sleep(timing.hold).await;
        let hang_up = hang_up.expect("checked: a call held for a while is hung up");
        act(s, r, name, &host, hang_up, to).await?;
        let call_id = call.map(|c| c.call_id).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !bye_left(&r.frames(), &vantage, &call_id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(held);
    Ok(())
}

/// Holds a calling program's RTP and RTCP inside its own host until the callee's first RTP has
/// left the callee's side of the network: the field's order, as for our own callers (see
/// [`stream_media`]). A callee streams from its 200 OK, a caller only once that 200 has come
/// back through the proxy; on a lab with no latency the two race, and which one reaches a Linux
/// NAT first decides whether masquerade moves a port (kernel-facts, "who sends first"): baresip
/// calling baresip went either way under load. Packets held are dropped in the host's output
/// hook, before its interface: to the network, and to the media verdict read off that
/// interface, the program simply started its audio those milliseconds later.
struct MediaGate;

impl MediaGate {
    /// RTP and RTCP (version 2: the first two bits of the UDP payload are `10`; STUN's are `00`,
    /// SIP's `01`) leaving the host are dropped.
    async fn close(node: &crate::topology::Node) -> Result<Self> {
        crate::bindings::nft(
            node,
            "table inet snh_media_gate {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    meta l4proto udp @th,64,2 2 drop\n  }\n}\n".into(),
        )
        .await?;
        Ok(MediaGate)
    }

    async fn open(self, node: &crate::topology::Node) -> Result<()> {
        crate::bindings::nft(node, "delete table inet snh_media_gate\n".into()).await
    }

    /// Opens once the callee's first RTP since `since` has left its side (at most 3 s), plus
    /// one packet time.
    /// Returns the ladder's note on it.
    async fn open_after_callee(
        self,
        r: &Running,
        callee: &str,
        since: SystemTime,
        caller_host: &str,
    ) -> Result<(Instant, String, String)> {
        let callee_host = r
            .uas
            .get(callee)
            .map(|(_, h)| h.clone())
            .or_else(|| r.external.get(callee).cloned())
            .expect("checked: the callee is a phone or a program");
        let label = exit_vantage(&r.topo, &callee_host);
        first_rtp_left(r, &label, since).await;
        self.open(r.topo.node(caller_host)?).await?;
        Ok((
            Instant::now(),
            caller_host.to_string(),
            format!("media: the caller's RTP held until {callee}'s first RTP left {label} (the field's order)"),
        ))
    }
}

/// Whether a BYE of the call has left `vantage`.
fn bye_left(frames: &[capture::Frame], vantage: &capture::Vantage, call_id: &str) -> bool {
    frames.iter().filter(|f| &f.vantage == vantage).any(|f| {
        matches!(
            crate::trace::decode_frame(f),
            Some(crate::trace::Entry::Packet {
                direction: capture::Direction::Out,
                payload: crate::trace::Payload::Sip(sip),
                ..
            }) if sip.method_or_status() == "BYE" && sip.call_id.as_deref() == Some(call_id)
        )
    })
}

/// Where a host's packets leave its side of the network: the WAN of the outermost router it sits
/// behind (`cgnat:wan`), or the host itself on the internet.
fn exit_vantage(topo: &Topology, host: &str) -> String {
    let spec = topo.spec();
    let mut segment = spec
        .hosts
        .iter()
        .find(|h| h.name == host)
        .map(|h| h.segment.clone());
    let mut outermost = None;
    // Each hop goes one router upstream; a chain longer than the routers is a loop.
    for _ in 0..=spec.routers.len() {
        match segment.as_deref().and_then(|s| spec.router(s)) {
            Some(r) => {
                outermost = Some(r.name.clone());
                segment = Some(r.upstream.clone());
            }
            None => break,
        }
    }
    match outermost {
        Some(r) => format!("{r}:wan"),
        None => host.to_string(),
    }
}

/// Waits (at most 3 s) until the callee's first RTP since `since` has left vantage `label`, its
/// side of the network, then one packet time more: when a caller may start streaming.
async fn first_rtp_left(r: &Running, label: &str, since: SystemTime) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !rtp_left(&r.frames(), label, since) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Whether an RTP packet has left vantage `label` since `since`.
fn rtp_left(frames: &[capture::Frame], label: &str, since: SystemTime) -> bool {
    frames.iter().any(|f| {
        f.at >= since
            && f.direction == capture::Direction::Out
            && f.vantage.label() == label
            && crate::trace::udp_of(f).is_some_and(|(_, _, p)| crate::rtp::is_rtp(p))
    })
}

/// Streams RTP both ways between two phones in a call (caller sends to `to_callee`, the
/// callee's SDP address; the callee to `to_caller`) and judges it.
async fn stream_media(
    r: &mut Running,
    caller: &str,
    callee: &str,
    to_callee: SocketAddr,
    to_caller: SocketAddr,
    opened: OpenedMedia,
) -> Result<(MediaReport, Vec<OpenMedia>)> {
    enum Live {
        Direct(OpenMedia),
        Relayed(String),
    }
    let mut live = Vec::new();
    let mut longest = Duration::ZERO;
    let OpenedMedia {
        caller: caller_media,
        callee: callee_media,
        ..
    } = opened;
    for (user, dest, open) in [
        (caller, to_callee, caller_media),
        (callee, to_caller, callee_media),
    ] {
        match (open, r.media.get(user).expect("every phone has media")) {
            (Some(open), PhoneMedia::Direct { duration, .. }) => {
                longest = longest.max(*duration);
                open.task.call(move |m, _| m.set_destination(dest)).await?;
                live.push(Live::Direct(open));
            }
            (_, PhoneMedia::Relayed(task)) => {
                task.call(move |m, now| m.connect(dest, now))
                    .await?
                    .map_err(|e| io_err(format!("{user}: TURN permission for {dest}: {e}")))?;
                let _ = task.wait_for(|s| s.ready, Duration::from_secs(5)).await;
                longest = longest.max(Duration::from_secs(1));
                live.push(Live::Relayed(user.to_string()));
            }
            (None, PhoneMedia::Direct { .. }) => unreachable!("a direct phone's media is opened"),
        }
    }
    // The callee first: a phone streams as soon as it sends its 200 OK, the caller only once
    // that 200 arrives. Who sends first decides some NAT races (kernel-facts: an unreplied
    // inbound RTP flow makes masquerade move the other side's port), so the field's order is
    // kept rather than a simultaneous start whose winner varies between runs. A fixed head start
    // is not enough on a loaded machine (the callee's first packet left a router after the
    // caller's arrived there), so the caller waits (at most 3 s) until the callee's first RTP
    // has left the callee's side of the network — its outermost router's WAN, or its own
    // interface on the internet — then one packet time more.
    let callee_exit = r
        .uas
        .get(callee)
        .map(|(_, host)| exit_vantage(&r.topo, host));
    let since = SystemTime::now();
    for (i, l) in live.iter().enumerate().rev() {
        if i == 0 && live.len() > 1 {
            match &callee_exit {
                Some(label) => first_rtp_left(r, label, since).await,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        match l {
            Live::Direct(o) => o.task.call(|m, now| m.start(now)).await?,
            Live::Relayed(user) => {
                if let Some(PhoneMedia::Relayed(t)) = r.media.get(user) {
                    t.call(|m, now| m.start_media(now)).await?;
                }
            }
        }
    }
    tokio::time::sleep(longest + Duration::from_millis(400)).await;
    let mut stats = Vec::new();
    let mut held = Vec::new();
    for l in live {
        stats.push(match l {
            Live::Direct(o) => {
                let s = o.task.state();
                held.push(o);
                s
            }
            Live::Relayed(user) => match r.media.get(&user) {
                Some(PhoneMedia::Relayed(t)) => t.state().stats,
                _ => Default::default(),
            },
        });
    }
    Ok((MediaReport::new(&stats[0], &stats[1], 0.95), held))
}

/// Streams the caller's RTP to an external program's SDP address and judges the call: the
/// caller's side from its own counters, the program's side from the packets at its host's
/// interface during the same window.
async fn stream_media_observed(
    r: &mut Running,
    caller: &str,
    callee: &str,
    to_callee: SocketAddr,
    opened: OpenedMedia,
) -> Result<(MediaReport, Vec<OpenMedia>)> {
    let callee_vantage = capture::Vantage::new(&r.external[callee], "eth0");
    let (direct, wait) = match (opened.caller, r.media.get(caller)) {
        (Some(open), Some(PhoneMedia::Direct { duration, .. })) => {
            open.task
                .call(move |m, _| m.set_destination(to_callee))
                .await?;
            (Some(open), *duration + Duration::from_millis(400))
        }
        (_, Some(PhoneMedia::Relayed(task))) => {
            task.call(move |m, now| m.connect(to_callee, now))
                .await?
                .map_err(|e| io_err(format!("{caller}: TURN permission for {to_callee}: {e}")))?;
            let _ = task.wait_for(|s| s.ready, Duration::from_secs(5)).await;
            (None, Duration::from_millis(1400))
        }
        _ => unreachable!("a direct phone's media is opened"),
    };
    // Both sides are counted from the offer on: the program may stream before our caller does.
    let from = opened.since;
    let waiting = SystemTime::now();
    // The field's order, as for two built-in phones: the callee streams from its 200 OK, the
    // caller only once the 200 has arrived. A program starts its audio pipeline later than our
    // phone reacts to the 200, so our caller waits (at most 3 s) for the program's first RTP to
    // leave its interface; otherwise which of the two reaches a Linux NAT first, and so whether
    // masquerade moves the phone's port (kernel-facts, "who sends first"), varies between runs.
    if let Some(cap) = r.capture.as_ref() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let seen = crate::rtp::observed::observe(
                &cap.snapshot(),
                &callee_vantage,
                waiting,
                SystemTime::now(),
            );
            if seen.sent > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    let caller_stats = match (direct, r.media.get(caller)) {
        (Some(open), _) => {
            open.task.call(|m, now| m.start(now)).await?;
            tokio::time::sleep(wait).await;
            let s = open.task.state();
            held.push(open);
            s
        }
        (None, Some(PhoneMedia::Relayed(task))) => {
            task.call(|m, now| m.start_media(now)).await?;
            tokio::time::sleep(wait).await;
            task.state().stats
        }
        (None, _) => unreachable!("a phone without a media task relays"),
    };
    let until = SystemTime::now();
    let callee_stats = crate::rtp::observed::observe(&r.frames(), &callee_vantage, from, until);
    Ok((MediaReport::new(&caller_stats, &callee_stats, 0.95), held))
}

fn judge(s: &Scenario, r: &mut Running) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    // Taken once, when the first packet expectation asks: the capture is still running.
    let mut frames: Option<Vec<capture::Frame>> = None;
    for e in &s.file.expects {
        let (what, ok, seen) = match e.get_ref() {
            Expect::Call { from, status } => {
                let got = r.calls.get(from).copied();
                (
                    format!("{from}'s call ends with {status}"),
                    got.is_some_and(|g| status.contains(g)),
                    match got {
                        Some(0) => "no final response".to_string(),
                        Some(c) => format!("got {c}"),
                        None => "no call was placed".to_string(),
                    },
                )
            }
            Expect::Registered { ua, value } => {
                let (task, _) = &r.uas[ua];
                let reg = task
                    .events()
                    .iter()
                    .rev()
                    .find_map(|e| match &e.event {
                        Event::Registered { .. } => Some(true),
                        Event::RegistrationFailed { .. } => Some(false),
                        _ => None,
                    })
                    .unwrap_or(false);
                (
                    format!("{ua} {} registered", if *value { "is" } else { "is not" }),
                    reg == *value,
                    format!("registered = {reg}"),
                )
            }
            Expect::Media { from, value } => {
                let want = match value {
                    MediaVerdictDef::BothWays => MediaVerdict::BothWays,
                    MediaVerdictDef::CallerToCallee => MediaVerdict::CallerToCallee,
                    MediaVerdictDef::CalleeToCaller => MediaVerdict::CalleeToCaller,
                    MediaVerdictDef::None => MediaVerdict::None,
                };
                let got = r.reports.get(from);
                (
                    format!("{from}'s call has {value:?} audio"),
                    got.is_some_and(|g| g.verdict == want),
                    got.map_or("no media ran (no established call)".into(), |g| {
                        g.to_string()
                    }),
                )
            }
            Expect::Rang { ua, value } => {
                let (task, _) = &r.uas[ua];
                let rang = task
                    .events()
                    .iter()
                    .any(|e| matches!(e.event, Event::IncomingCall { .. }));
                (
                    format!("{ua} {}", if *value { "rings" } else { "never rings" }),
                    rang == *value,
                    format!("rang = {rang}"),
                )
            }
            Expect::ExitCode { command, code } => {
                let got = r.exits.get(command).copied().flatten().or_else(|| {
                    r.commands
                        .get_mut(command)
                        .and_then(|p| p.try_status())
                        .and_then(|s| s.code())
                });
                (
                    format!("{command} exits with {code}"),
                    got == Some(*code),
                    format!("exit = {got:?}"),
                )
            }
            Expect::Timing {
                at,
                first,
                then,
                within_t1,
            } => {
                let frames = frames.get_or_insert_with(|| r.frames());
                let t1 = Duration::from_millis(s.file.scenario.t1_ms).as_secs_f64();
                let window = within_t1
                    .map(|(lo, hi)| format!(" {lo}–{hi}·T1 later"))
                    .unwrap_or_default();
                let what = format!("{first:?} then {then:?} at {at}{window}");
                match super::seen::order(frames, at, first, then) {
                    Ok((_, b, gap)) => {
                        let in_t1 = gap.as_secs_f64() / t1;
                        (
                            what,
                            within_t1.is_none_or(|(lo, hi)| (lo..=hi).contains(&in_t1)),
                            format!(
                                "{:.1}·T1 ({:.3} s) later: {}",
                                in_t1,
                                gap.as_secs_f64(),
                                b.line
                            ),
                        )
                    }
                    Err(missing) => (what, false, missing),
                }
            }
            Expect::Log {
                command,
                contains,
                matches,
                stream,
                min,
                max,
            } => {
                let text = r.commands.get(command).map(|p| match stream {
                    LogStream::Stdout => p.stdout(),
                    LogStream::Stderr => p.stderr(),
                    LogStream::Both => p.stdout() + &p.stderr(),
                });
                let re = matches
                    .as_deref()
                    .map(|m| regex::Regex::new(m).expect("checked when the file loaded"));
                let hits: Vec<&str> = text
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .filter(|l| match (&re, contains) {
                        (Some(re), _) => re.is_match(l),
                        (None, Some(c)) => l.contains(c.as_str()),
                        (None, None) => false,
                    })
                    .collect();
                let (min, max) = super::file::packet_bounds(*min, *max);
                let range = match max {
                    Some(0) => "never".to_string(),
                    Some(m) if m == min => format!("{m} line(s)"),
                    Some(m) => format!("{min} to {m} lines"),
                    None => format!("at least {min} line(s)"),
                };
                let pattern = match (contains, matches) {
                    (Some(c), _) => format!("{c:?}"),
                    (_, Some(m)) => format!("/{m}/"),
                    _ => String::new(),
                };
                let n = hits.len() as u32;
                (
                    format!("{command}'s output has {pattern} in {range}"),
                    text.is_some() && n >= min && max.is_none_or(|m| n <= m),
                    match (text.is_some(), hits.first()) {
                        (false, _) => "the command never started".to_string(),
                        (true, Some(first)) => format!("{n} line(s), first: {}", first.trim()),
                        (true, None) => "0 lines".to_string(),
                    },
                )
            }
            Expect::Packet {
                at,
                contains,
                from,
                to,
                min,
                max,
            } => {
                let q = super::seen::PacketQuery {
                    at,
                    contains,
                    from: from.as_deref().and_then(super::seen::Address::parse),
                    to: to.as_deref().and_then(super::seen::Address::parse),
                };
                let frames = frames.get_or_insert_with(|| r.frames());
                let found = super::seen::count(frames, &q);
                let (min, max) = super::file::packet_bounds(*min, *max);
                let range = match max {
                    Some(0) => "never".to_string(),
                    Some(m) if m == min => format!("{m} time(s)"),
                    Some(m) => format!("{min} to {m} times"),
                    None => format!("at least {min} time(s)"),
                };
                let path = match (from, to) {
                    (Some(f), Some(t)) => format!(" {f} → {t}"),
                    (Some(f), None) => format!(" from {f}"),
                    (None, Some(t)) => format!(" to {t}"),
                    (None, None) => String::new(),
                };
                (
                    format!("{contains:?}{path} seen at {at} {range}"),
                    found.count >= min && max.is_none_or(|m| found.count <= m),
                    match found.first {
                        Some(first) => format!("{} packet(s), first: {first}", found.count),
                        None => "0 packets".to_string(),
                    },
                )
            }
            Expect::StunAddress {
                host,
                router,
                value,
            } => {
                let wan = s.topology.router(router).map(|r| r.wan);
                let check = r.stun_checks.get(host);
                let mapped = check.and_then(|c| c.mapped.as_ref().ok());
                let same = mapped.is_some_and(|m| Some(m.ip()) == wan.map(IpAddr::V4));
                let wan = wan.map_or("?".into(), |w| w.to_string());
                let verb = match value {
                    StunVsWan::Equal => "equals",
                    StunVsWan::Differs => "differs from",
                };
                (
                    format!("{host}'s STUN address {verb} {router}'s WAN address {wan}"),
                    mapped.is_some()
                        && match value {
                            StunVsWan::Equal => same,
                            StunVsWan::Differs => !same,
                        },
                    match check {
                        Some(c) => c.line(false),
                        None => "no stun-check ran".into(),
                    },
                )
            }
            Expect::NatType {
                host,
                value,
                mapping,
                filtering,
            } => {
                let got = r.classified.get(host);
                let found = got.and_then(|c| c.found.as_ref().ok());
                let ok = got.is_some_and(|c| c.classic() == value.classic())
                    && mapping.is_none_or(|m| found.and_then(|b| b.mapping) == Some(m))
                    && filtering.is_none_or(|f| found.and_then(|b| b.filtering) == Some(f));
                let mut what = format!("{host} is behind a {} NAT", value.classic());
                if let Some(m) = mapping {
                    what.push_str(&format!(", mapping {}", super::checks::kebab(Some(*m))));
                }
                if let Some(f) = filtering {
                    what.push_str(&format!(", filtering {}", super::checks::kebab(Some(*f))));
                }
                (
                    what,
                    ok,
                    got.map_or("no classify-nat ran".into(), |c| c.to_string()),
                )
            }
            Expect::UdpReachable {
                host,
                probe,
                reached,
            } => {
                let run = match probe {
                    Some(p) => r.probes.iter().find(|x| x.name.as_ref() == Some(p)),
                    None => r.probes.iter().rev().find(|x| &x.listen == host),
                };
                let label = probe
                    .as_ref()
                    .map(|p| format!("probe \"{p}\""))
                    .unwrap_or_else(|| "the last UDP probe".into());
                (
                    format!("{label} reaches {host} {reached} time(s)"),
                    run.is_some_and(|x| x.reached() == usize::from(*reached)),
                    run.map_or("the probe did not run".into(), |x| x.summary()),
                )
            }
        };
        out.push((what, ok, seen));
    }
    out
}

fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::Registered { contact, expires } => {
            format!("registered {contact} for {} s", expires.as_secs())
        }
        Event::RegistrationFailed { status } => format!("registration failed: {status}"),
        Event::IncomingCall { from, .. } => format!("incoming call from {from}: ringing"),
        Event::CallEstablished { remote_media, .. } => match remote_media {
            Some(m) => format!("call established, media to {m}"),
            None => "call established".into(),
        },
        Event::CallFailed { status, .. } => format!("call failed: {status}"),
        Event::CallEnded { .. } => "call ended".into(),
        Event::ContactBound { aor, target, .. } => format!("location: {aor} → {target}"),
        Event::ForwardTimedOut { method, .. } => {
            format!("forwarded {method} timed out: 408 upstream")
        }
        Event::MalformedDatagram { from, error } => {
            format!("malformed datagram from {from} dropped ({})", error.kind())
        }
        Event::FlowMappingChanged { old, new } => {
            format!("STUN keep-alive: flow moved from {old} to {new}, re-registering")
        }
        Event::CallRinging { .. } | Event::Forwarded { .. } => return None,
    })
}

/// Runs `s` and reports; the topology is gone when this returns.
pub async fn run(s: &Scenario, opts: &RunOptions) -> Result<Outcome> {
    let started = Instant::now();
    let wall = SystemTime::now();
    let mut phases = Phases::start();
    let topo = Topology::build(s.topology.clone()).await?;
    // Declared before the running components, so dropped after them (programs gone first), on
    // every way out, errors included.
    let _files = FilesDir(files_root(&topo));
    phases.end("build");
    let capture = Capture::start(&topo).await?;
    let mut watches = Vec::new();
    if crate::preflight::find_program("conntrack").is_some() {
        for n in topo
            .nodes()
            .filter(|n| n.role() == Role::Router && n.nat().is_some())
        {
            watches.push((n.name().to_string(), BindingWatch::start(n).await?));
        }
    }
    phases.end("capture and binding watches");
    let mut running = start_components(s, topo).await?;
    running.capture = Some(capture);
    phases.end("components");
    let error = play(s, &mut running).await.err().map(|e| e.to_string());
    phases.end("play");
    settle(s, &running).await;
    phases.end("settle");
    let checks = judge(s, &mut running);
    let frames = match running.capture.take() {
        Some(c) => c.stop().await,
        None => Vec::new(),
    };
    let mut trace = Trace::from_frames(&frames);
    for (router, w) in &watches {
        w.add_to(&mut trace, router);
    }
    let (drops, nat) = explain_drops(s, &running.topo, &frames);
    for (at, source, text) in drops {
        trace.push_event(at, &source, text);
    }
    let kernel_bindings: Vec<_> = watches
        .iter()
        .map(|(router, w)| (router.clone(), w.events()))
        .collect();
    let to_wall = |at: Instant| wall + at.saturating_duration_since(started);
    for (task, host) in running.uas.values() {
        for e in task.events() {
            if let Some(text) = describe(&e.event) {
                trace.push_event(to_wall(e.at), host, text);
            }
        }
    }
    for (at, host, text) in &running.notes {
        trace.push_event(to_wall(*at), host, text.clone());
    }
    for (host, task) in &running.proxies {
        for e in task.events() {
            if let Some(text) = describe(&e.event) {
                trace.push_event(to_wall(e.at), host, text);
            }
        }
    }
    let vantages: Vec<String> = running
        .topo
        .nodes()
        .filter_map(|n| match n.role() {
            Role::Host => Some(n.name().to_string()),
            Role::Router => Some(format!("{}:wan", n.name())),
            Role::Internet => None,
        })
        .collect();
    let base = Ladder::new(&trace)
        .moved_ports(moved_ports(&kernel_bindings))
        .vantages(vantages)
        .t1(Duration::from_millis(s.file.scenario.t1_ms));
    let ladder = base.clone().render();
    let mut snapshot = base.without_events().sip_only().by_transaction().render();
    // Media in the snapshot as verdicts per direction, not packet counts: which packets of a
    // stream land before a latch or a pinhole opens varies by a packet or two between runs.
    for (caller, report) in &running.reports {
        let how = |user: &str| match running.media.get(user) {
            Some(PhoneMedia::Relayed(_)) => "via TURN",
            Some(PhoneMedia::Direct { .. }) => "direct",
            None => "seen at its interface",
        };
        let callee = running
            .calls_to
            .get(caller)
            .cloned()
            .unwrap_or_else(|| "callee".into());
        snapshot.push_str(&format!(
            "── media of {caller}'s call ──\n  {caller} ({}) → {callee} ({}): {:?}\n  {callee} → {caller}: {:?}\n  verdict: {:?}\n",
            how(caller),
            how(&callee),
            report.caller_to_callee.direction,
            report.callee_to_caller.direction,
            report.verdict
        ));
    }
    if !running.check_lines.is_empty() {
        snapshot.push_str("── diagnosis checks ──\n");
        for line in &running.check_lines {
            snapshot.push_str(&format!("  {line}\n"));
        }
    }
    let mut pcaps = Vec::new();
    if let Some(dir) = &opts.out_dir {
        let dir = dir.join(s.name());
        pcaps = capture::write_pcaps(&frames, &dir)?;
        std::fs::write(dir.join("ladder.txt"), &ladder)
            .map_err(Error::io(format!("write {}", dir.display())))?;
        // External programs' output stays with the run's other artefacts.
        for (host, k) in &running.kamailios {
            std::fs::write(dir.join(format!("kamailio-{host}.log")), k.log())
                .map_err(Error::io(format!("write {}", dir.display())))?;
        }
        for (name, p) in &running.commands {
            let log = format!(
                "--- stdout ---\n{}\n--- stderr ---\n{}",
                p.stdout(),
                p.stderr()
            );
            std::fs::write(dir.join(format!("{name}.log")), log)
                .map_err(Error::io(format!("write {}", dir.display())))?;
        }
    }
    if opts.keep {
        println!("\nThe topology of {} is still up:", s.name());
        for n in running.topo.nodes() {
            println!("  ip netns exec {}   # {}", n.ns_name(), n.name());
        }
        println!("Press Enter to tear it down.");
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    }
    let verdict = if error.is_none() && checks.iter().all(|c| c.1) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    phases.end("judge and report");
    let diagnosis = if verdict == Verdict::Fail {
        diagnose_hosts(&running.topo, &trace)
    } else {
        Vec::new()
    };
    let field_checks = std::mem::take(&mut running.check_report);
    drop(running);
    drop(_files);
    phases.end("teardown");
    Ok(Outcome {
        name: s.name().to_string(),
        verdict,
        checks,
        error,
        ladder,
        snapshot,
        trace,
        pcaps,
        duration: started.elapsed(),
        phases,
        diagnosis,
        field_checks,
        nat,
        bindings: kernel_bindings,
    })
}

/// Why each packet that vanished did: at a NAT router the model of its NAT fed the same packets
/// (for routers the timeline leaves alone), and what public hosts sent to private addresses;
/// with the models' stories for the run report's binding timelines.
fn explain_drops(
    s: &Scenario,
    topo: &Topology,
    frames: &[capture::Frame],
) -> (
    Vec<(SystemTime, String, String)>,
    Vec<super::explain::RouterStory>,
) {
    let stories = nat_stories(s, topo, frames);
    let mut out: Vec<(SystemTime, String, String)> = stories
        .iter()
        .flat_map(|st| {
            st.drops
                .iter()
                .map(|d| (d.at, st.router.clone(), d.to_string()))
        })
        .collect();
    let public_hosts = s
        .topology
        .hosts
        .iter()
        .filter(|h| h.segment == crate::topology::INTERNET)
        .map(|h| h.name.clone())
        .collect();
    out.extend(super::explain::swallowed(frames, &public_hosts));
    (out, stories)
}

/// Every packet a NAT router kept, with its model's reason, for the routers the timeline leaves
/// alone.
fn nat_drops(
    s: &Scenario,
    topo: &Topology,
    frames: &[capture::Frame],
) -> Vec<super::explain::Dropped> {
    nat_stories(s, topo, frames)
        .into_iter()
        .flat_map(|st| {
            let router = st.router.clone();
            st.drops
                .into_iter()
                .map(move |d| super::explain::Dropped::of(&router, d))
        })
        .collect()
}

/// What the model of each NAT router saw, for the routers the timeline leaves alone (one it
/// changes, flushes or expires is left unexplained rather than explained wrongly).
fn nat_stories(
    s: &Scenario,
    topo: &Topology,
    frames: &[capture::Frame],
) -> Vec<super::explain::RouterStory> {
    let touched: std::collections::BTreeSet<&str> = s
        .file
        .steps
        .iter()
        .filter_map(|step| match step.get_ref() {
            Step::SetNat { router, .. }
            | Step::ExpireBinding { router, .. }
            | Step::FlushBindings { router } => Some(router.as_str()),
            _ => None,
        })
        .collect();
    let mut stories = Vec::new();
    for n in topo.nodes().filter(|n| n.role() == Role::Router) {
        let (Some(nat), Some(ports), Some(spec)) =
            (n.nat(), n.router_ports.clone(), s.topology.router(n.name()))
        else {
            continue;
        };
        if touched.contains(n.name()) {
            continue;
        }
        stories.push(super::explain::router_story(
            frames,
            &super::explain::Router {
                name: n.name().to_string(),
                nat,
                public: ports.public,
                lan: (spec.lan, spec.lan_prefix),
                subscribers: ports.subscribers,
                forwards: ports.forwards,
            },
        ));
    }
    stories
}

/// The diagnosis of each host's capture, as `harness diagnose` would give it for that host's
/// pcap; only the captures that show a problem.
fn diagnose_hosts(topo: &Topology, trace: &Trace) -> Vec<crate::diagnose::Report> {
    topo.nodes()
        .filter(|n| n.role() == Role::Host)
        .filter_map(|n| {
            let mut report = crate::diagnose::analyse(crate::diagnose::packets_at(trace, n.name()));
            report.file = format!("{}.pcap", n.name());
            report.has_problem().then_some(report)
        })
        .collect()
}
