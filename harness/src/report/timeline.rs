//! A router's bindings over time: each binding's life from creation through the packets that
//! refreshed it to its expiry, the packets that arrived after it died with the model's reason,
//! and what conntrack itself reported (its garbage collector removes an entry late, so the
//! model's expiry is the instant that matters and the kernel's mark the confirmation).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::SystemTime;

use sim_nat::{Binding, DropReason, Side};
use svg::node::element::{Group, Line, Path, Rectangle as Rect, Text, Title};

use super::axis::Axis;
use super::Anchors;
use crate::bindings::{BindingEvent, Opened};
use crate::scenario::explain::{ChangeKind, RouterStory};

const ROW_H: f64 = 34.0;

/// What a row of the timeline is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RowKey {
    Binding(SocketAddrV4, SocketAddrV4, SocketAddrV4),
    /// An inbound packet nothing admitted, holding `to` towards `from`.
    Unsolicited(SocketAddrV4, SocketAddrV4),
    /// Drops that name no binding.
    Other,
}

/// A mark on a row.
struct Mark {
    at: SystemTime,
    kind: &'static str,
    text: String,
    /// The packet it is about, to link to.
    packet: Option<(SocketAddrV4, SocketAddrV4)>,
    /// Written next to the mark (the first drop on a row, an expiry).
    label: Option<String>,
}

#[derive(Default)]
struct Row {
    /// Each life: created, and ended (expired, removed, released) if it did. An unsolicited
    /// flow can be held and released several times.
    lives: Vec<(SystemTime, Option<SystemTime>)>,
    marks: Vec<Mark>,
}

/// The row for `k`, added below the others the first time.
fn row<'m>(rows: &'m mut BTreeMap<RowKey, Row>, order: &mut Vec<RowKey>, k: RowKey) -> &'m mut Row {
    if !rows.contains_key(&k) {
        order.push(k.clone());
    }
    rows.entry(k).or_default()
}

/// A drop's reason in a few words, for the label on the timeline (the full one is on hover).
pub(super) fn short_reason(r: Option<&DropReason>) -> String {
    match r {
        Some(DropReason::BindingExpired { ago, .. }) => {
            format!("binding expired {:.1} s before", ago.as_secs_f64())
        }
        Some(DropReason::NoBinding { .. }) => "nothing bound to that port".into(),
        Some(DropReason::FilteredByAddress { .. }) => "filtered by address".into(),
        Some(DropReason::FilteredByPort { .. }) => "filtered by port".into(),
        Some(DropReason::OutboundIdle { .. }) => "inside idle, inbound refused".into(),
        Some(DropReason::TupleTaken { .. }) => "flow tuple already taken".into(),
        Some(DropReason::Fragmented) => "IP fragments dropped".into(),
        Some(other) => other.to_string(),
        None => "not by the NAT (an ALG?)".into(),
    }
}

fn binding_key(b: &Binding) -> RowKey {
    RowKey::Binding(b.internal, b.external, b.remote)
}

fn row_title(k: &RowKey) -> String {
    match k {
        RowKey::Binding(i, e, r) => format!("{i} → {e} ⇄ {r}"),
        RowKey::Unsolicited(from, to) => format!("unsolicited: {from} holds {to}"),
        RowKey::Other => "no binding".into(),
    }
}

/// One router's timeline, from the model's story (if the model followed the router) and
/// conntrack's events. `sip_at_wan`: SIP requests at the router's WAN side, for orientation.
pub fn svg(
    router: &str,
    story: Option<&RouterStory>,
    kernel: &[BindingEvent],
    sip_at_wan: &[(SystemTime, String, usize)],
    axis: &Axis,
    anchors: &Anchors,
) -> svg::Document {
    let t_of = |at: SystemTime| axis.t(at);
    let mut rows: BTreeMap<RowKey, Row> = BTreeMap::new();
    let mut order: Vec<RowKey> = Vec::new();
    if let Some(story) = story {
        for c in &story.changes {
            let (k, kind, text) = match &c.what {
                ChangeKind::Created {
                    binding,
                    opened_by,
                    displaced_from,
                } => {
                    let by = match opened_by {
                        Side::Inside => "an outbound packet",
                        Side::Outside => "an inbound packet",
                    };
                    let moved = displaced_from
                        .map(|p| format!("; port {p} was taken, so it got {}", binding.external))
                        .unwrap_or_default();
                    (
                        binding_key(binding),
                        "created",
                        format!("created by {by}{moved}"),
                    )
                }
                ChangeKind::Refreshed { binding, by } => (
                    binding_key(binding),
                    match by {
                        Side::Inside => "refresh-out",
                        Side::Outside => "refresh-in",
                    },
                    format!(
                        "refreshed by an {} packet",
                        if *by == Side::Inside {
                            "outbound"
                        } else {
                            "inbound"
                        }
                    ),
                ),
                ChangeKind::Expired { binding } => (
                    binding_key(binding),
                    "expired",
                    format!("expired: {} s without a packet", story.timeout.as_secs()),
                ),
                ChangeKind::Removed { binding } => {
                    (binding_key(binding), "removed", "removed".to_string())
                }
                ChangeKind::UnsolicitedHeld { from, to } => (
                    RowKey::Unsolicited(*from, *to),
                    "created",
                    format!("{from} sent to {to} first: conntrack holds the port for it"),
                ),
                ChangeKind::UnsolicitedReleased { from, to } => (
                    RowKey::Unsolicited(*from, *to),
                    "released",
                    "released: the port is free again".to_string(),
                ),
            };
            let r = row(&mut rows, &mut order, k);
            match kind {
                "created" => r.lives.push((c.at, None)),
                "expired" | "removed" | "released" => {
                    if let Some((_, end @ None)) = r.lives.last_mut() {
                        *end = Some(c.at);
                    }
                }
                _ => {}
            }
            let label = match &c.what {
                ChangeKind::Expired { .. } => Some(format!("expired {:.2} s", t_of(c.at))),
                ChangeKind::Created {
                    binding,
                    displaced_from: Some(p),
                    ..
                } => Some(format!(
                    "port {p} was taken: mapped to {}",
                    binding.external.port()
                )),
                _ => None,
            };
            r.marks.push(Mark {
                at: c.at,
                kind,
                text,
                packet: c.packet,
                label,
            });
        }
        for d in &story.drops {
            let k = d.binding().map_or(RowKey::Other, |b| binding_key(&b));
            let what = d.what.split_whitespace().next().unwrap_or("a packet");
            row(&mut rows, &mut order, k).marks.push(Mark {
                at: d.at,
                kind: "drop",
                text: d.to_string(),
                packet: Some((d.src, d.dst)),
                label: Some(format!(
                    "{what} dropped: {}",
                    short_reason(d.reason.as_ref())
                )),
            });
        }
    }
    for e in kernel {
        let (at, b, kind, text) = match e {
            BindingEvent::Created { at, binding } => {
                (*at, binding, "kernel-created", "conntrack: new entry")
            }
            BindingEvent::Destroyed { at, binding } => (
                *at,
                binding,
                "kernel-removed",
                "conntrack: entry destroyed (its garbage collector may come late)",
            ),
        };
        let k = match b.direction {
            Opened::ToRouter => RowKey::Unsolicited(b.remote, b.external),
            _ => RowKey::Binding(b.internal, b.external, b.remote),
        };
        let r = row(&mut rows, &mut order, k);
        // Without the model, the kernel's events are the binding's life.
        if story.is_none() {
            match kind {
                "kernel-created" => r.lives.push((at, None)),
                _ => {
                    if let Some((_, end @ None)) = r.lives.last_mut() {
                        *end = Some(at);
                    }
                }
            }
        }
        r.marks.push(Mark {
            at,
            kind,
            text: text.to_string(),
            packet: None,
            label: None,
        });
    }
    let top = 40.0;
    let height = top + ROW_H * (order.len() as f64 + 1.0) + 16.0;
    let width = axis.right() + 20.0;
    let mut doc = svg::Document::new()
        .set("class", "timeline")
        .set("data-router", router)
        .set("width", width)
        .set("height", height)
        .set("viewBox", (0, 0, width as i64, height as i64))
        .add(axis.ticks(top - 12.0, height - top))
        .add(
            Text::new(format!("SIP requests at {router}:wan"))
                .set("class", "row-name")
                .set("x", 6)
                .set("y", top + ROW_H * 0.5),
        );
    // Orientation row: the SIP requests crossing the WAN side.
    let mut sip = Group::new().set("class", "sip-row");
    let mut last_label = f64::MIN;
    for (at, method, entry) in sip_at_wan {
        let x = axis.x(*at);
        // Retransmissions bunch up: a label only where there is room for it.
        let room = x - last_label > 48.0;
        if room {
            last_label = x;
        }
        sip = sip
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", top + 6.0)
                    .set("y2", height - 8.0)
                    .set("class", "sip-tick"),
            )
            .add(
                svg::node::element::Anchor::new()
                    .set("href", format!("#e{entry}"))
                    .add(
                        Text::new(if room { method.clone() } else { String::new() })
                            .set("class", "sip-method")
                            .set("data-t", format!("{:.6}", axis.t(*at)))
                            .set("x", x + 2.0)
                            .set("y", top + ROW_H * 0.5),
                    ),
            );
    }
    doc = doc.add(sip);
    for (i, k) in order.iter().enumerate() {
        let y = top + ROW_H * (i as f64 + 1.0) + ROW_H / 2.0;
        let r = &rows[k];
        let mut g = Group::new()
            .set("class", "binding")
            .set("data-binding", row_title(k));
        g = g.add(
            Text::new(row_title(k))
                .set("class", "row-name")
                .set("x", 6)
                .set("y", y + 4.0),
        );
        for &(from, to) in &r.lives {
            let x1 = axis.x(from);
            let x2 = to.map_or(axis.right(), |t| axis.x(t));
            g = g.add(
                Rect::new()
                    .set("class", if to.is_some() { "life ended" } else { "life" })
                    .set("x", x1)
                    .set("y", y - 5.0)
                    .set("width", (x2 - x1).max(1.0))
                    .set("height", 10),
            );
        }
        let mut dead_label_done = false;
        for m in &r.marks {
            let x = axis.x(m.at);
            let t = axis.t(m.at);
            let link = m
                .packet
                .and_then(|(s, d)| anchors.at_router(router, m.at, s, d));
            let shape = match m.kind {
                "created" => Path::new().set("d", format!("M{x},{} v20", y - 10.0)),
                "refresh-out" => Path::new().set("d", format!("M{x},{y} v-10")),
                "refresh-in" => Path::new().set("d", format!("M{x},{y} v10")),
                "expired" | "removed" | "released" => Path::new().set(
                    "d",
                    format!(
                        "M{},{} l12,12 M{},{} l-12,12",
                        x - 6.0,
                        y - 6.0,
                        x + 6.0,
                        y - 6.0
                    ),
                ),
                "drop" => Path::new().set(
                    "d",
                    format!(
                        "M{},{} l8,8 M{},{} l-8,8",
                        x - 4.0,
                        y - 4.0,
                        x + 4.0,
                        y - 4.0
                    ),
                ),
                "kernel-created" => Path::new().set("d", format!("M{x},{} l-4,-7 h8 z", y - 7.0)),
                _ => Path::new().set("d", format!("M{},{} h8 v8 h-8 z", x - 4.0, y + 7.0)),
            };
            let mut mark = Group::new()
                .set("class", format!("mark {}", m.kind))
                .set("data-kind", m.kind)
                .set("data-t", format!("{t:.6}"))
                .add(shape.add(Title::new(format!("{t:.3} s: {}", m.text))));
            if let Some(l) = &m.label {
                if m.kind != "drop" || !dead_label_done {
                    dead_label_done |= m.kind == "drop";
                    mark = mark.add(
                        Text::new(l.clone())
                            .set("class", format!("mark-text {}-text", m.kind))
                            .set("x", x + 8.0)
                            .set(
                                "y",
                                if m.kind == "expired" {
                                    y - 8.0
                                } else {
                                    y + 15.0
                                },
                            ),
                    );
                }
            }
            g = match link {
                Some(e) => g.add(
                    svg::node::element::Anchor::new()
                        .set("href", format!("#e{e}"))
                        .add(mark),
                ),
                None => g.add(mark),
            };
        }
        doc = doc.add(g);
    }
    doc
}
