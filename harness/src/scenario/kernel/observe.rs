//! Observe: stop the capture and collect what the lab saw — packets, conntrack's binding
//! events, the machines' events, the programs' output — into plain data.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use super::{PhoneMedia, Running};
use crate::bindings::{BindingEvent, BindingWatch, Opened};
use crate::scenario::observed::{self, MediaPath, Observed, Program, Timeline};
use crate::trace::Trace;

/// Everything `r` observed, with what playing the steps recorded; the capture is stopped.
pub(in crate::scenario) async fn observe(
    r: &mut Running,
    watches: Vec<(String, BindingWatch)>,
    timeline: Timeline,
) -> Observed {
    let frames = match r.capture.take() {
        Some(c) => c.stop().await,
        None => Vec::new(),
    };
    let mut trace = Trace::from_frames(&frames);
    for (router, w) in &watches {
        w.add_to(&mut trace, router);
    }
    let conntrack: Vec<_> = watches
        .iter()
        .map(|(router, w)| (router.clone(), w.events()))
        .collect();
    let clock = r.clock;
    let events = |events: Vec<crate::sip::driver::NodeEvent>| {
        events
            .into_iter()
            .map(|e| (clock.wall(e.at), e.event))
            .collect::<Vec<_>>()
    };
    let phones = r.phones.iter().map(|(user, p)| {
        let media = match p.media {
            PhoneMedia::Direct { .. } => MediaPath::Direct,
            PhoneMedia::Relayed(_) => MediaPath::Relayed,
            PhoneMedia::Ice { .. } => MediaPath::Ice,
        };
        let host = p.host.clone();
        let events = events(p.ua.events());
        (
            user.clone(),
            observed::Phone {
                host,
                media,
                events,
            },
        )
    });
    let proxies = r
        .proxies
        .iter()
        .map(|(h, p)| (h.clone(), events(p.events())));
    Observed {
        phones: phones.collect(),
        proxies: proxies.collect(),
        commands: programs(r, &timeline),
        logs: r
            .kamailios
            .iter()
            .map(|(host, k)| (format!("kamailio-{host}.log"), k.log()))
            .collect(),
        moved_ports: moved_ports(&conntrack),
        conntrack,
        frames,
        trace,
        timeline,
    }
}

/// Each program started: its output so far and its exit code (from its `wait-exit` step, or
/// now if it has ended).
fn programs(r: &mut Running, timeline: &Timeline) -> BTreeMap<String, Program> {
    r.commands
        .iter_mut()
        .map(|(name, p)| {
            let waited = timeline.exits.get(name).copied().flatten();
            let program = Program {
                stdout: p.stdout(),
                stderr: p.stderr(),
                exit: waited.or_else(|| p.try_status().and_then(|s| s.code())),
            };
            (name.clone(), program)
        })
        .collect()
}

/// The public ports routers allocated instead of the inside port (masquerade moving a port, a
/// symmetric NAT's random ports): they differ from run to run.
fn moved_ports(bindings: &[(String, Vec<BindingEvent>)]) -> Vec<SocketAddrV4> {
    bindings
        .iter()
        .flat_map(|(_, events)| events)
        .filter_map(|e| match e {
            BindingEvent::Created { binding, .. }
                if binding.direction == Opened::Outbound
                    && binding.external.port() != binding.internal.port() =>
            {
                Some(binding.external)
            }
            _ => None,
        })
        .collect()
}
