//! Start: every component of the file on real sockets inside its host — servers first, then
//! programs, then phones (which discover their STUN mapping or TURN allocation before they
//! register).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{first_addr, io_err, Clock, Phone, PhoneMedia, Running};
use crate::capture::Capture;
use crate::error::Result;
use crate::rtp::MediaConfig;
use crate::scenario::file::{Component, ContactDef, MediaDef};
use crate::scenario::Scenario;
use crate::sip::driver::{ProxyTask, UaTask};
use crate::sip::{ContactSource, Timers};
use crate::stun::{ServerConfig, StunServerTask};
use crate::topology::{Node, Topology};
use crate::turn::driver::{RelayedMediaTask, TurnServerTask};
use crate::turn::{RelayedMedia, TurnClientConfig, TurnServerConfig};

/// Starts every component of `s` in `topo`, with the capture already running.
pub(in crate::scenario) async fn start(
    s: &Scenario,
    topo: Topology,
    capture: Capture,
    clock: Clock,
) -> Result<Running> {
    let mut r = Running {
        topo,
        clock,
        phones: BTreeMap::new(),
        proxies: BTreeMap::new(),
        sbcs: Vec::new(),
        kamailios: BTreeMap::new(),
        stun: Vec::new(),
        turn: Vec::new(),
        commands: BTreeMap::new(),
        external: BTreeMap::new(),
        capture: Some(capture),
    };
    // Servers first, phones last: phones talk to them as soon as they register.
    let mut comps: Vec<&Component> = s.file.components.iter().map(|c| c.get_ref()).collect();
    comps.sort_by_key(|c| c.start_order());
    for comp in comps {
        start_one(s, &mut r, comp).await?;
    }
    Ok(r)
}

async fn start_one(s: &Scenario, r: &mut Running, comp: &Component) -> Result<()> {
    let timers = Timers::scaled(Duration::from_millis(s.file.scenario.t1_ms));
    let node = r.topo.node(comp.host())?;
    match comp {
        Component::StunServer { .. } => r.stun.push(stun_server(node).await?),
        Component::TurnServer { users, .. } => {
            let mut cfg = TurnServerConfig {
                relay_ports: 50000..=50063,
                ..TurnServerConfig::new(SocketAddr::new(node.addr().into(), 3478), "harness")
            };
            for (u, p) in users {
                cfg = cfg.user(u, p);
            }
            r.turn.push(TurnServerTask::serve(node, cfg).await?.0);
        }
        Component::Sbc { .. } => {
            let cfg = comp.sbc_config(node.addr(), timers).expect("an sbc");
            r.sbcs.push(crate::sbc::SbcTask::serve(node, cfg).await?.0);
        }
        Component::Kamailio { host, .. } => {
            let k = kamailio(s, node, comp).await?;
            r.kamailios.insert(host.clone(), k);
        }
        Component::Proxy { host, .. } => {
            let cfg = comp.proxy_config(node.addr(), timers).expect("a proxy");
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
                let p = super::command::start_command(s, &r.topo, comp).await?;
                r.commands.insert(name.clone(), p);
            }
        }
        Component::Ua { .. } => {
            let (user, phone) = phone(s, &r.topo, comp, timers).await?;
            r.phones.insert(user, phone);
        }
    }
    Ok(())
}

/// An RFC 5780 server on a host with two addresses, a plain one on a host with one.
async fn stun_server(node: &Node) -> Result<StunServerTask> {
    let cfg = match node.addrs() {
        [a, b, ..] => ServerConfig::rfc5780(
            SocketAddr::new((*a).into(), 3478),
            SocketAddr::new((*b).into(), 3479),
        ),
        [a] => ServerConfig::new(SocketAddr::new((*a).into(), 3478)),
        [] => return Err(io_err(format!("{} has no address", node.name()))),
    };
    Ok(StunServerTask::spawn(node, cfg).await?.0)
}

/// Debian's Kamailio as a registrar, with the run's SIP timers.
async fn kamailio(
    s: &Scenario,
    node: &Node,
    comp: &Component,
) -> Result<crate::sbc::kamailio::Kamailio> {
    let Component::Kamailio {
        nathelper,
        natping_interval_secs,
        rtpengine,
        ..
    } = comp
    else {
        unreachable!("only a kamailio component is started here")
    };
    let listen = SocketAddr::new(node.addr().into(), 5060);
    let mut cfg = crate::sbc::kamailio::KamailioConfig::new(listen, &node.addr().to_string());
    cfg.natping_interval = *natping_interval_secs;
    cfg.nathelper = *nathelper;
    cfg.fr_timer_ms = u32::try_from(64 * s.file.scenario.t1_ms).unwrap_or(u32::MAX);
    cfg.t1_ms = u32::try_from(s.file.scenario.t1_ms).unwrap_or(u32::MAX);
    cfg.rtpengine =
        rtpengine.then(|| crate::sbc::rtpengine::RtpengineConfig::new(node.addr().into()));
    crate::sbc::kamailio::Kamailio::start(node, cfg).await
}

/// Where a phone's `proxy =` points: `IP:PORT`, or the SIP address of the registrar it names (a
/// host's proxy/sbc/kamailio, or a command playing the registrar), as the check resolved it.
fn registrar_addr(s: &Scenario, topo: &Topology, proxy: &str) -> Result<SocketAddr> {
    if let Ok(a) = proxy.parse() {
        return Ok(a);
    }
    let (host, port) = super::super::file::registrar_of(&s.file.components, proxy)
        .ok_or_else(|| io_err(format!("no registrar called `{proxy}`")))?;
    Ok(SocketAddr::new(first_addr(topo, host)?.into(), port))
}

/// A built-in phone, started: its media path found first (a STUN mapping or a TURN
/// allocation), so its first REGISTER and SDP carry the addresses it will use.
async fn phone(
    s: &Scenario,
    topo: &Topology,
    comp: &Component,
    timers: Timers,
) -> Result<(String, Phone)> {
    let Component::Ua {
        host,
        user,
        port,
        proxy,
        contact,
        stun_server,
        media_port,
        media,
        turn_server,
        turn_password,
        latching,
        media_ms,
        externip,
        localnet,
        ice,
        ..
    } = comp
    else {
        unreachable!("only a ua component is a phone")
    };
    let node = topo.node(host)?;
    let user = user.clone().unwrap_or_else(|| host.clone());
    let proxy_addr = registrar_addr(s, topo, proxy)?;
    let local = SocketAddr::new(node.addr().into(), *port);
    let mut cfg = comp
        .ua_config(&user, local, proxy_addr, timers)
        .expect("a ua component");
    let stun: Option<SocketAddr> = match stun_server {
        Some(h) => Some(SocketAddr::new(first_addr(topo, h)?.into(), 3478)),
        None => None,
    };
    if *contact == ContactDef::Stun {
        let stun = stun.expect("checked: contact = stun has a server");
        let mapped = crate::stun::binding(node, local, stun).await?;
        cfg.contact = ContactSource::External(mapped);
    }
    let media_local = SocketAddr::new(node.addr().into(), *media_port);
    // An ICE phone gathers a relayed candidate whenever it has a TURN server.
    let wants_turn = *media == MediaDef::Turn || *ice && turn_server.is_some();
    let turn = match wants_turn {
        true => Some(turn_client(
            topo,
            &user,
            media_local,
            turn_server,
            turn_password,
        )?),
        false => None,
    };
    if *ice {
        let duration = Duration::from_millis(*media_ms);
        let (sdp, attributes, media) =
            ice_media(node, &user, media_local, stun, turn, (*latching, duration)).await?;
        crate::scenario::file::set_phone_addresses(&mut cfg, sdp, *externip, localnet);
        cfg.media_attributes = attributes;
        let (ua, _) = UaTask::spawn(node, cfg).await?;
        let host = host.clone();
        return Ok((user, Phone { ua, host, media }));
    }
    let stun = stun.filter(|_| *media == MediaDef::Stun);
    let how = (*latching, Duration::from_millis(*media_ms));
    let (sdp, media) = phone_media(node, media_local, how, stun, turn).await?;
    crate::scenario::file::set_phone_addresses(&mut cfg, sdp, *externip, localnet);
    let (ua, _) = UaTask::spawn(node, cfg).await?;
    let host = host.clone();
    Ok((user, Phone { ua, host, media }))
}

/// Where a phone's SDP points and how its RTP leaves it: from its own port (offered as is, or
/// as its STUN mapping when `stun` is given), or through a TURN allocation made now.
async fn phone_media(
    node: &Node,
    local: SocketAddr,
    (latching, duration): (bool, Duration),
    stun: Option<SocketAddr>,
    turn: Option<TurnClientConfig>,
) -> Result<(SocketAddr, PhoneMedia)> {
    if let Some(turn) = turn {
        return turn_media(node, turn, latching, duration).await;
    }
    let sdp = match stun {
        Some(stun) => crate::stun::binding(node, local, stun).await?,
        None => local,
    };
    let direct = PhoneMedia::Direct {
        local,
        latching,
        duration,
    };
    Ok((sdp, direct))
}

/// A phone's TURN client: its media port, to the TURN server's host, as its user.
fn turn_client(
    topo: &Topology,
    user: &str,
    local: SocketAddr,
    server: &Option<String>,
    password: &Option<String>,
) -> Result<TurnClientConfig> {
    let h = server
        .as_deref()
        .expect("checked: media = turn has a server");
    let server = SocketAddr::new(first_addr(topo, h)?.into(), 3478);
    let pass = password.clone().unwrap_or_else(|| "secret".into());
    Ok(TurnClientConfig::new(local, server, user.to_string(), pass))
}

/// A phone's media through a TURN allocation, made now: its relayed address and the task.
async fn turn_media(
    node: &Node,
    turn: TurnClientConfig,
    latching: bool,
    duration: Duration,
) -> Result<(SocketAddr, PhoneMedia)> {
    let user = turn.username.clone();
    let mut mc = MediaConfig::pcmu(SocketAddr::from(([0, 0, 0, 0], 0)), None);
    mc.duration = duration;
    mc.latching = latching;
    let (task, _) = RelayedMediaTask::allocate(node, RelayedMedia::new(turn, mc)).await?;
    let st = task
        .wait_for(|s| s.relayed.is_some(), Duration::from_secs(5))
        .await
        .map_err(|s| io_err(format!("{user}: no TURN allocation: {s:?}")))?;
    let relayed = st.relayed.expect("waited for it");
    Ok((relayed, PhoneMedia::Relayed(task)))
}

/// A phone's ICE media, gathered now (a STUN Binding and a TURN allocation from its RTP port):
/// the SDP's default address, its ICE attribute lines and the task.
async fn ice_media(
    node: &Node,
    user: &str,
    local: SocketAddr,
    stun: Option<SocketAddr>,
    turn: Option<TurnClientConfig>,
    (latching, duration): (bool, Duration),
) -> Result<(SocketAddr, Vec<String>, PhoneMedia)> {
    let mut media = MediaConfig::pcmu(local, None);
    media.duration = duration;
    media.latching = latching;
    let config = crate::ice::IceMediaConfig {
        local,
        rtcp: Some(SocketAddr::new(local.ip(), local.port().wrapping_add(1))),
        stun_server: stun,
        turn,
        ice: crate::ice::IceConfig::default(),
        media,
    };
    let (task, _) =
        crate::ice::IceMediaTask::gather(node, crate::ice::IceMedia::new(config)).await?;
    let st = task
        .wait_for(|s| s.description.is_some(), Duration::from_secs(10))
        .await
        .map_err(|s| io_err(format!("{user}: ICE gathering did not finish: {s:?}")))?;
    let description = st.description.expect("waited for it");
    let sdp = st.default.expect("a gathered agent has a host candidate");
    let mut attributes = description.sdp_attributes();
    if let Some(rtcp) = st.default_rtcp {
        // RFC 3605: where RTCP goes when it is not RTP + 1 on the `c=` address.
        attributes.insert(0, format!("rtcp:{} IN IP4 {}", rtcp.port(), rtcp.ip()));
    }
    Ok((sdp, attributes, PhoneMedia::Ice { task, duration }))
}
