//! The `call` step: a call placed by one of our phones (asked for its outcome) or by an
//! external program (made to dial, its outcome read off the packets at its host), then its
//! media, then the hang-up after `hold-ms`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::media::{self, Live, MediaGate, OpenMedia, OpenedMedia};
use super::Running;
use crate::capture::Vantage;
use crate::error::Result;
use crate::rtp::{MediaReport, MediaStats};
use crate::scenario::observed::{Call, Timeline};
use crate::scenario::placed::{placed_call, PlacedCall};
use crate::scenario::Scenario;
use crate::sip::driver::UaTask;
use crate::sip::Event;

/// A `call` step's durations.
pub(super) struct CallTiming {
    pub hold: Duration,
    pub timeout: Duration,
    pub t1: Duration,
}

impl CallTiming {
    /// The durations of `call` step `step` of `s`.
    pub fn of(s: &Scenario, step: &crate::scenario::Step) -> Self {
        let ms = |ms: u64| Duration::from_millis(ms);
        let (hold, timeout) = match step {
            crate::scenario::Step::Call {
                hold_ms,
                timeout_ms,
                ..
            } => (ms(*hold_ms), ms(*timeout_ms)),
            _ => unreachable!("only a call step is timed"),
        };
        let t1 = ms(s.file.scenario.t1_ms);
        CallTiming { hold, timeout, t1 }
    }
}

/// Waits until `ua` has more events matching `m` than `before`; the newest match.
pub(super) async fn wait_new(
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

/// How many of `ua`'s events match `m`.
pub(super) fn count(ua: &UaTask, m: impl Fn(&Event) -> bool) -> usize {
    ua.events().iter().filter(|e| m(&e.event)).count()
}

fn established(e: &Event) -> bool {
    matches!(e, Event::CallEstablished { .. })
}

/// How many calls `user` (if one of our phones) has had established so far: a callee answering
/// its second call already holds the first one's `CallEstablished`, and only a newer one is
/// this call's.
fn established_so_far(r: &Running, user: &str) -> usize {
    r.phones.get(user).map_or(0, |p| count(&p.ua, established))
}

/// Where `user`'s phone was told to send media once its next call was established (waiting at
/// most 5 s for it, after `before` earlier ones): the callee's side is up once it has the ACK.
async fn answered_to(r: &Running, user: &str, before: usize) -> Option<SocketAddr> {
    let phone = r.phones.get(user)?;
    match wait_new(&phone.ua, established, before, Duration::from_secs(5)).await {
        Some(Event::CallEstablished { remote_media, .. }) => remote_media,
        _ => None,
    }
}

/// A call placed by one of our phones.
pub(super) async fn from_phone(
    r: &Running,
    t: &mut Timeline,
    (from, to): (&str, &str),
    timing: CallTiming,
) -> Result<()> {
    // Both phones' media sockets exist from the offer on, as on real phones: RTP that arrives
    // before a side starts streaming is received, not refused.
    let opened = OpenedMedia::open(r, from, to).await?;
    let callee_before = established_so_far(r, to);
    let caller = &r.phones[from];
    let id = caller.ua.call(to).await?;
    let status = final_status(r, t, from, &id, &timing).await;
    let (media, held) = match status {
        200 => media_of(r, (from, to), &id, callee_before, opened).await?,
        _ => (None, opened.held()),
    };
    if let Some(report) = &media {
        t.notes.push((
            r.clock.now(),
            caller.host.clone(),
            format!("media: {report}"),
        ));
    }
    let call = t.calls.len();
    for user in [from, to] {
        if let Some(path) = media::ice_path(r, user, call) {
            let host = r.phones[user].host.clone();
            if let Some((l, rem)) = &path.selected {
                t.notes
                    .push((r.clock.now(), host, format!("ICE: media over {l} ↔ {rem}")));
            }
            t.ice.push(path);
        }
    }
    let (from, to) = (from.to_string(), to.to_string());
    t.calls.push(Call {
        from,
        to,
        status,
        media,
    });
    if status == 200 && timing.hold > Duration::ZERO {
        tokio::time::sleep(timing.hold).await;
        caller.ua.hang_up(&id).await?;
        let ended = |e: &Event| matches!(e, Event::CallEnded { call_id } if call_id == &id);
        wait_new(&caller.ua, ended, 0, Duration::from_secs(10)).await;
    }
    drop(held);
    Ok(())
}

/// Waits for the final response to call `id` of phone `from`: 200 if established, its status
/// if it failed, 0 if none came within the step's timeout or none can come any more.
async fn final_status(
    r: &Running,
    t: &mut Timeline,
    from: &str,
    id: &str,
    timing: &CallTiming,
) -> u16 {
    let caller = &r.phones[from];
    let final_of = |e: &Event| match e {
        Event::CallEstablished { call_id, .. } => (call_id == id).then_some(200),
        Event::CallFailed { call_id, status } => (call_id == id).then_some(*status),
        _ => None,
    };
    let deadline = Instant::now() + timing.timeout;
    loop {
        if let Some(st) = caller.ua.events().iter().find_map(|e| final_of(&e.event)) {
            return st;
        }
        if Instant::now() >= deadline {
            return 0;
        }
        if super::settle::unanswerable(r, timing.t1).await {
            let ms = timing.timeout.as_millis();
            t.notes.push((
                r.clock.now(),
                caller.host.clone(),
                format!("call: no final response, and none can come (no transaction pending anywhere, no program running): the step ends before its {ms} ms"),
            ));
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The media of an established call from one of our phones, and the sockets to keep open
/// until it ends.
async fn media_of(
    r: &Running,
    (from, to): (&str, &str),
    id: &str,
    callee_before: usize,
    opened: OpenedMedia,
) -> Result<(Option<MediaReport>, Vec<OpenMedia>)> {
    let caller_remote = r.phones[from]
        .ua
        .events()
        .into_iter()
        .find_map(|e| match e.event {
            Event::CallEstablished {
                call_id,
                remote_media,
            } if call_id == id => remote_media,
            _ => None,
        });
    let remotes = if r.external.contains_key(to) {
        caller_remote.map(|a| (a, None))
    } else if r.phones.contains_key(to) {
        let callee_remote = answered_to(r, to, callee_before).await;
        caller_remote.zip(callee_remote).map(|(a, b)| (a, Some(b)))
    } else {
        None
    };
    let (report, held) = match remotes {
        Some((to_callee, Some(to_caller))) => {
            let dests = (to_callee, to_caller);
            media::between_phones(r, (from, to), dests, opened).await?
        }
        Some((to_callee, None)) => media::to_program(r, (from, to), to_callee, opened).await?,
        None => return Ok((None, opened.held())),
    };
    Ok((Some(report), held))
}

/// A call a program was made to dial, up to its outcome: the media gate closed before, the
/// callee's calls so far and its media sockets opened from the offer on.
struct Dialled {
    /// The program's host.
    host: String,
    since: SystemTime,
    gate: MediaGate,
    callee_before: usize,
    callee_media: Option<OpenMedia>,
}

/// A call placed by a command (a softphone the harness cannot ask): it is made to dial, and the
/// call's outcome and media are read off the packets at its host's interface.
pub(super) async fn from_program(
    s: &Scenario,
    r: &mut Running,
    t: &mut Timeline,
    (from, to): (&str, &str),
    timing: CallTiming,
) -> Result<()> {
    let (name, dial, hang_up) = super::command::dialer(s, from);
    let host = r.external[from].clone();
    let dialled = Dialled {
        callee_media: media::open_media(r, to).await?,
        callee_before: established_so_far(r, to),
        since: SystemTime::now(),
        gate: MediaGate::close(r.topo.node(&host)?).await?,
        host: host.clone(),
    };
    let dial = dial.expect("checked: a caller dials");
    act(s, r, t, (name, &host), dial, to).await?;
    let vantage = Vantage::new(&host, "eth0");
    let call = placed(r, &vantage, dialled.since, to, &timing).await;
    let status = call.as_ref().and_then(|c| c.answer).map_or(0, |(st, _)| st);
    let media = match call.as_ref().is_some_and(PlacedCall::established) {
        true => program_media(r, t, to, dialled).await?,
        false => {
            dialled.gate.open(r.topo.node(&host)?).await?;
            None
        }
    };
    let report = media.as_ref().map(|(report, _)| *report);
    let (from, to_user) = (from.to_string(), to.to_string());
    t.calls.push(Call {
        from,
        to: to_user,
        status,
        media: report,
    });
    let Some((report, held)) = media else {
        return Ok(());
    };
    t.notes
        .push((r.clock.now(), host.clone(), format!("media: {report}")));
    if let Some(path) = media::ice_path(r, to, t.calls.len() - 1) {
        if let Some((l, rem)) = &path.selected {
            let host = r.phones[to].host.clone();
            t.notes
                .push((r.clock.now(), host, format!("ICE: media over {l} ↔ {rem}")));
        }
        t.ice.push(path);
    }
    if timing.hold > Duration::ZERO {
        tokio::time::sleep(timing.hold).await;
        let hang_up = hang_up.expect("checked: a call held for a while is hung up");
        act(s, r, t, (name, &host), hang_up, to).await?;
        let call_id = call.map(|c| c.call_id).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !media::bye_left(&r.frames(), &vantage, &call_id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(held);
    Ok(())
}

/// Does a command's action, noting it on the ladder.
async fn act(
    s: &Scenario,
    r: &mut Running,
    t: &mut Timeline,
    (name, host): (&str, &str),
    action: &crate::scenario::file::ActionDef,
    to: &str,
) -> Result<()> {
    if let Some(note) = super::command::act(s, r, (name, host), action, to).await? {
        t.notes.push((r.clock.now(), host.to_string(), note));
    }
    Ok(())
}

/// The call the program at `vantage` placed to `to` since `since`, once it is established or
/// its final answer has stood for 4·T1 (a challenge, 401/407, is final only if the program does
/// not send the INVITE again); as it stands at the step's timeout otherwise.
async fn placed(
    r: &Running,
    vantage: &Vantage,
    since: SystemTime,
    to: &str,
    timing: &CallTiming,
) -> Option<PlacedCall> {
    let grace = timing.t1 * 4;
    let deadline = Instant::now() + timing.timeout;
    loop {
        let call = placed_call(&r.frames(), vantage, since, to);
        let settled = call.as_ref().is_some_and(|c| {
            c.established()
                || c.answer.is_some_and(|(_, at)| {
                    SystemTime::now().duration_since(at).unwrap_or_default() > grace
                })
        });
        if settled || Instant::now() >= deadline {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The media of a call a program placed and got established: our phone answering streams to
/// the program's SDP address, once the gate lets the program's RTP out in the field's order;
/// another program streams on its own. Both sides are read off the packets at the programs'
/// interfaces, but for our phone's own counters. `None` when no media could run.
async fn program_media(
    r: &Running,
    t: &mut Timeline,
    to: &str,
    d: Dialled,
) -> Result<Option<(MediaReport, Vec<OpenMedia>)>> {
    let answer = answered_to(r, to, d.callee_before).await;
    let (callee_stats, held, note) = match answer {
        Some(to_caller) => {
            let (live, time) = Live::aim(r, to, to_caller, d.callee_media).await?;
            live.start().await?;
            let note = d.gate.open_after_callee(r, to, d.since, &d.host).await?;
            tokio::time::sleep(time + Duration::from_millis(400)).await;
            let mut held = Vec::new();
            (Some(live.stats(&mut held)), held, note)
        }
        None if r.external.contains_key(to) => {
            // Another program answers: both sides stream on their own; watch them a while.
            let note = d.gate.open_after_callee(r, to, d.since, &d.host).await?;
            tokio::time::sleep(Duration::from_millis(1400)).await;
            (None, Vec::new(), note)
        }
        None => {
            d.gate.open(r.topo.node(&d.host)?).await?;
            return Ok(None);
        }
    };
    t.notes.push((r.clock.now(), d.host.clone(), note));
    let report = observed_media(r, (&d.host, to), d.since, callee_stats).await;
    Ok(Some((report, held)))
}

/// The media of a program's call from the packets at its host's interface since `since`, and
/// the callee's side from our phone's counters or its program's interface.
async fn observed_media(
    r: &Running,
    (caller_host, callee): (&str, &str),
    since: SystemTime,
    callee_stats: Option<MediaStats>,
) -> MediaReport {
    let until = SystemTime::now();
    // Frames carry the kernel's receive time: the window's last frames may reach the capture's
    // buffer a little later, so read it after a moment, bounded by `until`.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let frames = r.frames();
    let at = |host: &str| Vantage::new(host, "eth0");
    let observe = |host: &str| crate::rtp::observed::observe(&frames, &at(host), since, until);
    let caller_stats = observe(caller_host);
    let callee_stats = callee_stats.unwrap_or_else(|| observe(&r.external[callee]));
    MediaReport::new(&caller_stats, &callee_stats, media::WORKING)
}
