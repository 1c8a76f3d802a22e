//! Binding events as ladder lines, each expiry at the instant the binding really expired.
//!
//! Conntrack reports an expired binding only when it notices: when the next packet of the flow
//! looks the tuple up, or when its garbage collector passes by — often the very packet that
//! needed the binding, so a "removed" line at that instant reads as if that packet removed it.
//! The real instant is the timeout after the last packet that refreshed the binding, so this
//! module dates an "expired" line there, from the packets captured on the router's two sides
//! and the timeout in force at that last refresh, and marks the destroy event as the moment
//! conntrack noticed.
//!
//! What refreshes a binding: on this kernel, a packet of the flow in *either* direction
//! (kernel-facts: inbound packets alone kept a binding alive), as long as the router let it
//! through; with `refresh = "outbound-only"` the router's guard drops inbound packets once the
//! last outbound one is a timeout old, so only outbound packets count. Which timeout: the
//! router's `udp-timeout-secs`, which the harness writes to both of conntrack's UDP timeouts
//! (`nf_conntrack_udp_timeout` for an unreplied flow, `_stream` for one that saw a reply), so
//! one number holds for both; a flow to port 5060 created while the kernel SIP helper was on
//! is held for the helper's `sip_timeout` instead.
//!
//! No IO: conntrack events, the trace's packets and the router's NAT history in, dated lines out.

use std::net::SocketAddrV4;
use std::time::{Duration, SystemTime};

use sim_nat::{NatBehaviour, Refresh, SipAlg};

use super::{Binding, BindingEvent, Opened};
use crate::capture::Direction;
use crate::trace::{Entry, Payload, Trace};

/// How far a destroy event may precede the computed expiry and still be that expiry: the
/// capture and conntrack stamp on different paths, and conntrack counts in jiffies.
const SLACK: Duration = Duration::from_millis(150);

/// When and why a binding expired.
#[derive(Debug, Clone, PartialEq)]
struct Expiry {
    at: SystemTime,
    timeout: Duration,
    /// The last packet that refreshed it (time, one-line summary, whether it came in), or
    /// `None` if none was captured (then the timeout runs from its creation).
    last: Option<(SystemTime, String, bool)>,
    /// Only outbound packets counted.
    outbound_only: bool,
}

/// The behaviour in force at `t`: the last applied at or before it (the first if none was).
fn nat_at(history: &[(SystemTime, NatBehaviour)], t: SystemTime) -> Option<&NatBehaviour> {
    history
        .iter()
        .rev()
        .find(|(since, _)| *since <= t)
        .or(history.first())
        .map(|(_, n)| n)
}

/// When `b`, alive from `opened` (its creation event, if seen), expired by `until`, or `None`
/// if nothing is known about the router's timeouts.
fn expiry(
    b: &Binding,
    opened: Option<SystemTime>,
    until: SystemTime,
    trace: &Trace,
    router: &str,
    history: &[(SystemTime, NatBehaviour)],
) -> Option<Expiry> {
    let at_open = nat_at(history, opened.unwrap_or(until))?;
    // The helper is attached when a flow is created, to the original direction's port 5060.
    let original_dport = match b.direction {
        Opened::Outbound => b.remote.port(),
        Opened::Inbound | Opened::ToRouter => b.external.port(),
    };
    let helper = at_open.sip_alg == SipAlg::Kernel && original_dport == 5060;
    let outbound_only =
        |t: SystemTime| nat_at(history, t).is_some_and(|n| n.refresh == Refresh::OutboundOnly);
    let mut candidates: Vec<(SystemTime, String, bool)> = trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Packet {
                at,
                vantage,
                direction,
                src,
                dst,
                payload,
                // Conntrack stamps an event when the tool reads it, after the capture stamped the
                // packet that caused it: the creating packet may be a little older than its event.
            } if vantage.node == router
                && opened.is_none_or(|o| *at + SLACK >= o)
                && *at <= until =>
            {
                let side = |iface: &str, d: Direction, s: SocketAddrV4, t: SocketAddrV4| {
                    vantage.iface == iface && *direction == d && *src == s && *dst == t
                };
                let inbound = match b.direction {
                    // Through the router: the copy that left it, so the router let it pass.
                    Opened::Outbound | Opened::Inbound => {
                        if side("wan", Direction::Out, b.external, b.remote) {
                            false
                        } else if side("lan", Direction::Out, b.remote, b.internal) {
                            if outbound_only(*at) {
                                return None;
                            }
                            true
                        } else {
                            return None;
                        }
                    }
                    // To the router itself: it never leaves.
                    Opened::ToRouter if side("wan", Direction::In, b.remote, b.external) => true,
                    Opened::ToRouter => return None,
                };
                Some((*at, what(payload), inbound))
            }
            _ => None,
        })
        .collect();
    candidates.sort_by_key(|(at, _, _)| *at);
    let timeout_at = |t: SystemTime| -> Option<Duration> {
        Some(if helper {
            sim_nat::SIP_HELPER_TIMEOUT
        } else {
            Duration::from_secs(nat_at(history, t)?.udp_timeout_secs.into())
        })
    };
    // Each packet refreshes the binding only while it is alive: one that comes after the
    // expiry (conntrack may report the destroy after it) belongs to the flow's next life.
    let mut expires = match opened {
        Some(o) => Some(o + timeout_at(o)?),
        None => None,
    };
    let mut last = None;
    for c in candidates {
        if expires.is_some_and(|e| c.0 > e + SLACK) {
            break;
        }
        expires = Some(c.0 + timeout_at(c.0)?);
        last = Some(c);
    }
    let at = expires?;
    Some(Expiry {
        at,
        timeout: timeout_at(last.as_ref().map_or(at, |(t, _, _)| *t))?,
        outbound_only: last.as_ref().is_some_and(|(t, _, _)| outbound_only(*t)),
        last,
    })
}

/// A packet as the ladder names it; a SIP response with its CSeq (`200 OK (1 REGISTER)`).
fn what(p: &Payload) -> String {
    match p {
        Payload::Sip(s) if s.is_response() => match &s.cseq {
            Some(c) => format!("{} ({c})", s.first_line),
            None => s.first_line.clone(),
        },
        Payload::Sip(s) => s.first_line.trim_end_matches(" SIP/2.0").to_string(),
        other => other.summary(),
    }
}

fn created_text(b: &Binding) -> String {
    match b.direction {
        Opened::ToRouter => format!(
            "unsolicited packet from {} to the router's own {}: no binding, but conntrack holds the port until it times out",
            b.remote, b.external
        ),
        Opened::Inbound => format!(
            "binding {} ← {} created by an inbound packet from {} (a looser filter let it in)",
            b.internal, b.external, b.remote
        ),
        Opened::Outbound => format!(
            "binding {} → {} created (remote {})",
            b.internal, b.external, b.remote
        ),
    }
}

/// `binding A → B (remote C)` or `the hold on port B for C`.
fn name(b: &Binding) -> String {
    match b.direction {
        Opened::ToRouter => format!("the hold on port {} for {}", b.external, b.remote),
        _ => format!(
            "binding {} → {} (remote {})",
            b.internal, b.external, b.remote
        ),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn expired_text(b: &Binding, x: &Expiry, trace: &Trace) -> String {
    let since = match &x.last {
        Some((at, what, inbound)) => format!(
            "since its last refresh at {}: {what}, {}",
            secs(trace.offset(*at)),
            if *inbound { "inbound" } else { "outbound" }
        ),
        None => "since it was created (no packet of it captured)".into(),
    };
    let rule = if x.outbound_only {
        "; inbound packets do not refresh it on this router"
    } else {
        ""
    };
    format!(
        "{} expired (timeout {} s {since}{rule})",
        name(b),
        x.timeout.as_secs()
    )
}

/// Every binding event of one router as `(when, text)`: creations as reported, an expiry at
/// its real instant plus the moment conntrack noticed it, a deletion (a flush, an
/// `expire-binding` step) as such, and the expiry of a binding conntrack had not yet noticed
/// when the capture ended. With no NAT history, destroy events say only that conntrack noticed.
pub(super) fn lines(
    events: &[BindingEvent],
    trace: &Trace,
    router: &str,
    history: &[(SystemTime, NatBehaviour)],
) -> Vec<(SystemTime, String)> {
    let mut events: Vec<&BindingEvent> = events.iter().collect();
    events.sort_by_key(|e| match e {
        BindingEvent::Created { at, .. } | BindingEvent::Destroyed { at, .. } => *at,
    });
    let mut out = Vec::new();
    let mut open: Vec<(Binding, SystemTime)> = Vec::new();
    let same = |a: &Binding, b: &Binding| {
        (a.internal, a.external, a.remote, a.direction)
            == (b.internal, b.external, b.remote, b.direction)
    };
    for e in events {
        match e {
            BindingEvent::Created { at, binding } => {
                out.push((*at, created_text(binding)));
                open.push((binding.clone(), *at));
            }
            BindingEvent::Destroyed { at, binding: b } => {
                let opened = open
                    .iter()
                    .position(|(o, _)| same(o, b))
                    .map(|i| open.remove(i).1);
                let x = expiry(b, opened, *at, trace, router, history);
                match x {
                    Some(x) if x.at <= *at + SLACK => {
                        let expired = x.at.min(*at);
                        out.push((expired, expired_text(b, &x, trace)));
                        let late = at.duration_since(expired).unwrap_or_default();
                        let verb = match b.direction {
                            Opened::ToRouter => "released the port",
                            _ => "removed it",
                        };
                        let text = if x.outbound_only {
                            format!(
                                "conntrack removed its entry of {}, {} after the binding expired (inbound packets kept the entry itself alive, or nothing looked it up sooner)",
                                name(b),
                                secs(late)
                            )
                        } else {
                            format!(
                                "conntrack noticed the expiry of {} and {verb}, {} after it expired (at the next packet of the flow or its garbage collection; not caused by that packet)",
                                name(b),
                                secs(late)
                            )
                        };
                        out.push((*at, text));
                    }
                    Some(x) => {
                        let left = x.at.duration_since(*at).unwrap_or_default();
                        out.push((
                            *at,
                            match b.direction {
                                Opened::ToRouter => format!(
                                    "port {} held for {} released before it timed out ({} left: deleted, e.g. a flush)",
                                    b.external, b.remote, secs(left)
                                ),
                                _ => format!(
                                    "binding {} → {} removed before it timed out (remote {}; {} left: deleted by a flush, an expire-binding step or a restart, not expired)",
                                    b.internal, b.external, b.remote, secs(left)
                                ),
                            },
                        ));
                    }
                    None => out.push((
                        *at,
                        match b.direction {
                            Opened::ToRouter => format!(
                                "port {} held for {} released (noticed by conntrack)",
                                b.external, b.remote
                            ),
                            _ => format!(
                                "binding {} → {} removed (remote {}; noticed by conntrack, it may have expired earlier)",
                                b.internal, b.external, b.remote
                            ),
                        },
                    )),
                }
            }
        }
    }
    // Expired, but nothing looked the tuple up and the garbage collector had not come by.
    if let Some(end) = trace.entries().last().map(Entry::at) {
        for (b, opened) in open {
            if let Some(x) = expiry(&b, Some(opened), end, trace, router, history) {
                if x.at <= end {
                    let why = if x.outbound_only {
                        "the router's guard drops inbound packets from here on; conntrack's own entry, refreshed by inbound packets, may live on"
                    } else {
                        "conntrack had not noticed by the end of the capture"
                    };
                    let text = format!("{} ({why})", expired_text(&b, &x, trace));
                    out.push((x.at, text));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Vantage;

    const T0: u64 = 1_000_000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(T0 + ms)
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn packet(ms: u64, iface: &str, direction: Direction, src: &str, dst: &str) -> Entry {
        Entry::Packet {
            at: at(ms),
            vantage: Vantage::new("home", iface),
            direction,
            src: sa(src),
            dst: sa(dst),
            payload: Payload::KeepAlive,
        }
    }

    fn binding() -> Binding {
        Binding {
            internal: sa("192.168.1.10:5060"),
            external: sa("203.0.113.1:5060"),
            remote: sa("203.0.113.10:5060"),
            seconds_left: 0,
            replied: true,
            direction: Opened::Outbound,
        }
    }

    fn history(nat: NatBehaviour) -> Vec<(SystemTime, NatBehaviour)> {
        vec![(at(0), nat)]
    }

    fn two_seconds() -> NatBehaviour {
        sim_nat::NatType::PortRestrictedCone
            .behaviour()
            .with_udp_timeout(2)
    }

    /// A REGISTER out at 100 ms, its answer in at 300 ms, and the INVITE that finds the binding
    /// gone at 5 s.
    fn trace() -> Trace {
        Trace::from_entries(vec![
            packet(
                100,
                "wan",
                Direction::Out,
                "203.0.113.1:5060",
                "203.0.113.10:5060",
            ),
            packet(
                300,
                "wan",
                Direction::In,
                "203.0.113.10:5060",
                "203.0.113.1:5060",
            ),
            packet(
                301,
                "lan",
                Direction::Out,
                "203.0.113.10:5060",
                "192.168.1.10:5060",
            ),
            packet(
                5000,
                "wan",
                Direction::In,
                "203.0.113.10:5060",
                "203.0.113.1:5060",
            ),
        ])
    }

    fn events() -> Vec<BindingEvent> {
        vec![
            BindingEvent::Created {
                at: at(100),
                binding: binding(),
            },
            BindingEvent::Destroyed {
                at: at(5001),
                binding: binding(),
            },
        ]
    }

    #[test]
    fn an_expiry_is_dated_a_timeout_after_the_last_refresh_and_the_destroy_is_marked_noticed() {
        let l = lines(&events(), &trace(), "home", &history(two_seconds()));
        assert_eq!(l.len(), 3, "{l:#?}");
        assert_eq!(
            l[1].0,
            at(2301),
            "the answer refreshed it, in either direction"
        );
        assert_eq!(
            l[1].1,
            "binding 192.168.1.10:5060 → 203.0.113.1:5060 (remote 203.0.113.10:5060) expired \
             (timeout 2 s since its last refresh at 0.20 s: keep-alive (CRLF), inbound)"
        );
        assert_eq!(l[2].0, at(5001));
        assert!(
            l[2].1.starts_with(
                "conntrack noticed the expiry of binding 192.168.1.10:5060 → 203.0.113.1:5060 \
                 (remote 203.0.113.10:5060) and removed it, 2.70 s after it expired"
            ),
            "{}",
            l[2].1
        );
    }

    #[test]
    fn on_an_outbound_only_router_the_answer_does_not_refresh() {
        let mut nat = two_seconds();
        nat.refresh = Refresh::OutboundOnly;
        let l = lines(&events(), &trace(), "home", &history(nat));
        assert_eq!(l[1].0, at(2100));
        assert!(l[1]
            .1
            .contains("outbound; inbound packets do not refresh it"));
    }

    #[test]
    fn a_binding_deleted_before_its_timeout_is_not_called_expired() {
        let mut ev = events();
        ev[1] = BindingEvent::Destroyed {
            at: at(1000),
            binding: binding(),
        };
        let l = lines(&ev, &trace(), "home", &history(two_seconds()));
        assert_eq!(l.len(), 2);
        assert!(l[1].1.starts_with(
            "binding 192.168.1.10:5060 → 203.0.113.1:5060 removed before it timed out"
        ));
    }

    #[test]
    fn the_sip_helper_holds_a_sip_flow_for_its_own_timeout() {
        let mut nat = two_seconds();
        nat.sip_alg = SipAlg::Kernel;
        let l = lines(&events(), &trace(), "home", &history(nat));
        assert!(l[1].1.contains("removed before it timed out"), "{l:#?}");
    }

    #[test]
    fn an_expiry_conntrack_never_noticed_is_still_shown_and_nothing_is_guessed_without_history() {
        let l = lines(&events()[..1], &trace(), "home", &history(two_seconds()));
        assert_eq!(l[1].0, at(2301));
        assert!(l[1]
            .1
            .ends_with("(conntrack had not noticed by the end of the capture)"));
        let l = lines(&events(), &trace(), "home", &[]);
        assert!(l[1]
            .1
            .contains("noticed by conntrack, it may have expired earlier"));
    }
}
