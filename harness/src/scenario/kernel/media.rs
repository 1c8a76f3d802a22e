//! Media: each established call's RTP, streamed in the field's order (the callee from its
//! 200 OK, the caller once the 200 has come back) and judged per direction — from our phones'
//! own counters, and for an external program from the packets at its host's interface.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::{io_err, PhoneMedia, Running};
use crate::capture::{self, Direction, Frame, Vantage};
use crate::error::Result;
use crate::ice::{IceDescription, IceMediaTask, Role};
use crate::rtp::{MediaConfig, MediaReport, MediaStats, MediaStream};
use crate::topology::{Node, Topology};
use crate::turn::driver::{MediaTask, RelayedMediaTask};

/// The share of a direction's packets that must arrive for it to count as working.
pub(super) const WORKING: f64 = 0.95;

/// A phone's media sockets for one call, open from the offer to the end of the call: the peer
/// streams until it gets the BYE, and a closed port answers ICMP, as no phone does.
pub(super) struct OpenMedia {
    task: MediaTask,
    /// RTP + 1 (RFC 3550 §11). Our phones send no RTCP, but a peer's (baresip's) must find the
    /// port open, as on a real phone. What arrives is left unread.
    _rtcp: tokio::net::UdpSocket,
}

/// Both phones' media for a call (`None`: relayed through TURN, or not one of ours).
pub(super) struct OpenedMedia {
    pub caller: Option<OpenMedia>,
    pub callee: Option<OpenMedia>,
    /// When they were opened: the program's side of a call is counted from here.
    pub since: SystemTime,
}

impl OpenedMedia {
    /// Opens the caller's and, if it is one of our phones, the callee's media sockets.
    pub async fn open(r: &Running, caller: &str, callee: &str) -> Result<Self> {
        Ok(OpenedMedia {
            caller: open_media(r, caller).await?,
            callee: open_media(r, callee).await?,
            since: SystemTime::now(),
        })
    }

    /// What stays open until the call ends.
    pub fn held(self) -> Vec<OpenMedia> {
        self.caller.into_iter().chain(self.callee).collect()
    }
}

/// Opens `user`'s RTP and RTCP sockets, not sending until the answer gives a destination;
/// `None` unless `user` is one of our phones with direct media.
pub(super) async fn open_media(r: &Running, user: &str) -> Result<Option<OpenMedia>> {
    let Some(phone) = r.phones.get(user) else {
        return Ok(None);
    };
    let PhoneMedia::Direct {
        local,
        latching,
        duration,
    } = &phone.media
    else {
        return Ok(None);
    };
    let node = r.topo.node(&phone.host)?;
    let mut cfg = MediaConfig::pcmu(*local, None);
    cfg.latching = *latching;
    cfg.duration = *duration;
    let (task, _) = MediaTask::bind(node, MediaStream::new(cfg)).await?;
    let rtcp_at = SocketAddr::new(local.ip(), local.port().wrapping_add(1));
    let _rtcp = node.udp_bind(rtcp_at).await?;
    Ok(Some(OpenMedia { task, _rtcp }))
}

/// One phone's media in a call, aimed at the other side and ready to start.
pub(super) enum Live<'a> {
    Direct(OpenMedia),
    Relayed(&'a RelayedMediaTask),
    Ice(&'a IceMediaTask),
}

impl<'a> Live<'a> {
    /// Aims `user`'s media at `dest` (a TURN permission for a relayed phone); with how long it
    /// streams.
    pub async fn aim(
        r: &'a Running,
        user: &str,
        dest: SocketAddr,
        open: Option<OpenMedia>,
    ) -> Result<(Live<'a>, Duration)> {
        match (open, &r.phones[user].media) {
            (_, PhoneMedia::Ice { task, duration }) => {
                // The offerer is the controlling agent (RFC 8445 §6.1.1).
                let role = if rang(r, user) {
                    Role::Controlled
                } else {
                    Role::Controlling
                };
                let remote = remote_ice(r, user).ok_or_else(|| {
                    io_err(format!(
                        "{user}: the peer's SDP has no ICE attributes (a=ice-ufrag, a=ice-pwd); \
                         our ICE phone does not fall back to plain media"
                    ))
                })?;
                task.call(move |m, now| m.set_remote(remote, role, now))
                    .await?;
                Ok((Live::Ice(task), *duration))
            }
            (Some(open), PhoneMedia::Direct { duration, .. }) => {
                open.task.call(move |m, _| m.set_destination(dest)).await?;
                Ok((Live::Direct(open), *duration))
            }
            (_, PhoneMedia::Relayed(task)) => {
                task.call(move |m, now| m.connect(dest, now))
                    .await?
                    .map_err(|e| io_err(format!("{user}: TURN permission for {dest}: {e}")))?;
                let _ = task.wait_for(|s| s.ready, Duration::from_secs(5)).await;
                Ok((Live::Relayed(task), Duration::from_secs(1)))
            }
            (None, PhoneMedia::Direct { .. }) => unreachable!("a direct phone's media is opened"),
        }
    }

    pub async fn start(&self) -> Result<()> {
        match self {
            Live::Direct(o) => o.task.call(|m, now| m.start(now)).await,
            Live::Relayed(t) => t.call(|m, now| m.start_media(now)).await,
            Live::Ice(t) => {
                t.call(|m, now| m.start_media(now)).await?;
                // Media flows once a pair is nominated; the caller's wait for the callee's first
                // RTP then starts from there.
                let _ = t
                    .wait_for(|s| s.selected.is_some() || s.failed, Duration::from_secs(8))
                    .await;
                Ok(())
            }
        }
    }

    /// What it counted; its sockets go to `held`, to stay open until the call ends.
    pub fn stats(self, held: &mut Vec<OpenMedia>) -> MediaStats {
        match self {
            Live::Direct(o) => {
                let s = o.task.state();
                held.push(o);
                s
            }
            Live::Relayed(t) => t.state().stats,
            Live::Ice(t) => t.state().stats,
        }
    }
}

/// Whether `user`'s phone was called (it rang) rather than calling: the callee is ICE's
/// controlled agent.
fn rang(r: &Running, user: &str) -> bool {
    r.phones[user]
        .ua
        .events()
        .iter()
        .any(|e| matches!(&e.event, crate::sip::Event::IncomingCall { .. }))
}

/// The ICE attributes of the newest SDP `user`'s phone received (the offer a callee answered,
/// the answer a caller got).
pub(super) fn remote_ice(r: &Running, user: &str) -> Option<IceDescription> {
    r.phones[user]
        .ua
        .datagrams()
        .iter()
        .rev()
        .filter(|d| d.direction == crate::machine::Direction::Received)
        .find_map(|d| IceDescription::parse(&String::from_utf8_lossy(&d.payload)))
}

/// Waits (at most 3 s) until an ICE check (a STUN Binding request) since `since` has left
/// vantage `label`, to `to` if given, then one packet time: a callee's checks reach the
/// caller's NAT before the caller's own, as when the caller learns the answer one round trip
/// after the callee sent it (and "who sends first" then happens to ICE's checks too).
pub(super) async fn first_check_left(
    r: &Running,
    label: &str,
    to: Option<SocketAddr>,
    since: SystemTime,
) {
    let left = |frames: &[Frame]| {
        frames.iter().any(|f| {
            f.at >= since
                && f.direction == Direction::Out
                && f.vantage.label() == label
                && crate::trace::udp_of(f).is_some_and(|(_, d, p)| {
                    p.starts_with(&[0x00, 0x01])
                        && crate::stun::is_stun(p)
                        && to.is_none_or(|to| SocketAddr::V4(d) == to)
                })
        })
    };
    until_seen(r, left).await
}

/// Streams RTP both ways between two phones in a call (caller sends to `to_callee`, the
/// callee's SDP address; the callee to `to_caller`) and judges it.
pub(super) async fn between_phones(
    r: &Running,
    (caller, callee): (&str, &str),
    (to_callee, to_caller): (SocketAddr, SocketAddr),
    opened: OpenedMedia,
) -> Result<(MediaReport, Vec<OpenMedia>)> {
    let callee_exit = exit_vantage(&r.topo, &r.phones[callee].host);
    let (from_caller, caller_time, from_callee, callee_time) =
        if matches!(r.phones[callee].media, PhoneMedia::Ice { .. }) {
            // The callee checks first: it has the offer when it answers, the caller learns the
            // answer one round trip later.
            let since = SystemTime::now();
            let (callee_live, callee_time) = Live::aim(r, callee, to_caller, opened.callee).await?;
            let caller_srflx = ice_candidate(r, caller, crate::ice::CandidateKind::ServerReflexive);
            first_check_left(r, &callee_exit, caller_srflx, since).await;
            let (caller_live, caller_time) = Live::aim(r, caller, to_callee, opened.caller).await?;
            (caller_live, caller_time, callee_live, callee_time)
        } else {
            let (a, at) = Live::aim(r, caller, to_callee, opened.caller).await?;
            let (b, bt) = Live::aim(r, callee, to_caller, opened.callee).await?;
            (a, at, b, bt)
        };
    // The callee first: a phone streams as soon as it sends its 200 OK, the caller only once
    // that 200 arrives. Who sends first decides some NAT races (kernel-facts: an unreplied
    // inbound RTP flow makes masquerade move the other side's port), so the field's order is
    // kept rather than a simultaneous start whose winner varies between runs. A fixed head start
    // is not enough on a loaded machine (the callee's first packet left a router after the
    // caller's arrived there), so the caller waits (at most 3 s) until the callee's first RTP
    // has left the callee's side of the network — its outermost router's WAN, or its own
    // interface on the internet — then one packet time more.
    let since = SystemTime::now();
    from_callee.start().await?;
    first_rtp_left(r, &callee_exit, since).await;
    from_caller.start().await?;
    tokio::time::sleep(caller_time.max(callee_time) + Duration::from_millis(400)).await;
    let mut held = Vec::new();
    let caller_stats = from_caller.stats(&mut held);
    let callee_stats = from_callee.stats(&mut held);
    Ok((
        MediaReport::new(&caller_stats, &callee_stats, WORKING),
        held,
    ))
}

/// Streams the caller's RTP to an external program's SDP address and judges the call: the
/// caller's side from its own counters, the program's side from the packets at its host's
/// interface during the same window.
pub(super) async fn to_program(
    r: &Running,
    (caller, callee): (&str, &str),
    to_callee: SocketAddr,
    opened: OpenedMedia,
) -> Result<(MediaReport, Vec<OpenMedia>)> {
    let callee_vantage = Vantage::new(&r.external[callee], "eth0");
    let (live, time) = Live::aim(r, caller, to_callee, opened.caller).await?;
    // Both sides are counted from the offer on: the program may stream before our caller does.
    let from = opened.since;
    // The field's order, as for two built-in phones: the callee streams from its 200 OK, the
    // caller only once the 200 has arrived. A program starts its audio pipeline later than our
    // phone reacts to the 200, so our caller waits (at most 3 s) for the program's first RTP to
    // leave its interface; otherwise which of the two reaches a Linux NAT first, and so whether
    // masquerade moves the phone's port (kernel-facts, "who sends first"), varies between runs.
    if r.capture.is_some() {
        let waiting = SystemTime::now();
        let streams = |frames: &[Frame]| {
            let now = SystemTime::now();
            crate::rtp::observed::observe(frames, &callee_vantage, waiting, now).sent > 0
        };
        until_seen(r, streams).await;
    }
    live.start().await?;
    tokio::time::sleep(time + Duration::from_millis(400)).await;
    let mut held = opened.callee.into_iter().collect();
    let caller_stats = live.stats(&mut held);
    let until = SystemTime::now();
    let callee_stats = crate::rtp::observed::observe(&r.frames(), &callee_vantage, from, until);
    Ok((
        MediaReport::new(&caller_stats, &callee_stats, WORKING),
        held,
    ))
}

/// The pair `user`'s ICE media went over; `None` unless it is an ICE phone.
pub(super) fn ice_path(
    r: &Running,
    user: &str,
    call: usize,
) -> Option<crate::scenario::observed::IcePath> {
    let PhoneMedia::Ice { task, .. } = &r.phones.get(user)?.media else {
        return None;
    };
    let st = task.state();
    Some(crate::scenario::observed::IcePath {
        call,
        user: user.to_string(),
        selected: st.selected,
        consent_lost: st.consent_lost,
    })
}

/// `user`'s candidate of kind `kind`, if it is an ICE phone that gathered one.
fn ice_candidate(r: &Running, user: &str, kind: crate::ice::CandidateKind) -> Option<SocketAddr> {
    let PhoneMedia::Ice { task, .. } = &r.phones.get(user)?.media else {
        return None;
    };
    let d = task.state().description?;
    d.candidates
        .iter()
        .find(|c| c.kind == kind)
        .map(|c| c.address)
}

/// Where a host's packets leave its side of the network: the WAN of the outermost router it sits
/// behind (`cgnat:wan`), or the host itself on the internet.
pub(super) fn exit_vantage(topo: &Topology, host: &str) -> String {
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
pub(super) async fn first_rtp_left(r: &Running, label: &str, since: SystemTime) {
    until_seen(r, |frames| rtp_left(frames, label, since)).await
}

/// Waits (at most 3 s) until the capture shows what `seen` looks for, then one packet time.
async fn until_seen(r: &Running, seen: impl Fn(&[Frame]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !seen(&r.frames()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Whether an RTP packet has left vantage `label` since `since`.
fn rtp_left(frames: &[Frame], label: &str, since: SystemTime) -> bool {
    frames.iter().any(|f| {
        f.at >= since
            && f.direction == Direction::Out
            && f.vantage.label() == label
            && crate::trace::udp_of(f).is_some_and(|(_, _, p)| crate::rtp::is_rtp(p))
    })
}

/// Holds a calling program's RTP and RTCP inside its own host until the callee's first RTP has
/// left the callee's side of the network: the field's order, as for our own callers (see
/// [`between_phones`]). A callee streams from its 200 OK, a caller only once that 200 has come
/// back through the proxy; on a lab with no latency the two race, and which one reaches a Linux
/// NAT first decides whether masquerade moves a port (kernel-facts, "who sends first"): baresip
/// calling baresip went either way under load. Packets held are dropped in the host's output
/// hook, before its interface: to the network, and to the media verdict read off that
/// interface, the program simply started its audio those milliseconds later.
pub(super) struct MediaGate;

impl MediaGate {
    /// RTP and RTCP (version 2: the first two bits of the UDP payload are `10`; STUN's are `00`,
    /// SIP's `01`) leaving the host are dropped.
    pub async fn close(node: &Node) -> Result<Self> {
        crate::bindings::nft(
            node,
            "table inet snh_media_gate {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    meta l4proto udp @th,64,2 2 drop\n  }\n}\n".into(),
        )
        .await?;
        Ok(MediaGate)
    }

    pub async fn open(self, node: &Node) -> Result<()> {
        crate::bindings::nft(node, "delete table inet snh_media_gate\n".into()).await
    }

    /// Opens once the callee's first RTP since `since` has left its side (at most 3 s), plus
    /// one packet time. Returns the ladder's note on it.
    pub async fn open_after_callee(
        self,
        r: &Running,
        callee: &str,
        since: SystemTime,
        caller_host: &str,
    ) -> Result<String> {
        let callee_host = r
            .host_of(callee)
            .expect("checked: the callee is a phone or a program");
        let label = exit_vantage(&r.topo, callee_host);
        first_rtp_left(r, &label, since).await;
        self.open(r.topo.node(caller_host)?).await?;
        Ok(format!(
            "media: the caller's RTP held until {callee}'s first RTP left {label} (the field's order)"
        ))
    }
}

/// Whether a BYE of the call has left `vantage`.
pub(super) fn bye_left(frames: &[Frame], vantage: &capture::Vantage, call_id: &str) -> bool {
    frames.iter().filter(|f| &f.vantage == vantage).any(|f| {
        matches!(
            crate::trace::decode_frame(f),
            Some(crate::trace::Entry::Packet {
                direction: Direction::Out,
                payload: crate::trace::Payload::Sip(sip),
                ..
            }) if sip.method_or_status() == "BYE" && sip.call_id.as_deref() == Some(call_id)
        )
    })
}
