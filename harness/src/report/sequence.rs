//! The SIP ladder as a sequence diagram: one lane per vantage point, one row per message sent,
//! each message drawn through every vantage point that saw a copy of it.
//!
//! A message is what one host put on the wire once; its copies are the same datagram seen at
//! the routers' sides and at the receiver. Copies are told apart from retransmissions by time:
//! a copy belongs to the latest message with the same transaction key sent before it that has
//! no copy at that vantage point yet (a retransmission comes at least T1 later, a copy within
//! microseconds). No IO: the trace in, a plain model and its SVG out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::SystemTime;

use svg::node::element::{Circle, Group, Line, Path, Rectangle as Rect, Text, Title};

use crate::capture::Direction;
use crate::scenario::explain::{is_private, RouterStory};
use crate::topology::TopologySpec;
use crate::trace::{Entry, Payload, SipSummary, Trace};

/// One copy of a message: where it was seen, when, and as what.
#[derive(Debug, Clone)]
pub struct Copy<'a> {
    /// Index of the packet in [`Trace::entries`]: the anchor `#e{entry}` on the page.
    pub entry: usize,
    pub lane: usize,
    pub at: SystemTime,
    pub direction: Direction,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub sip: &'a SipSummary,
}

/// A header that differs between the copies before and after a hop: a router's ALG (or
/// helper) rewrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub header: &'static str,
    pub before: String,
    pub after: String,
}

/// The hop between two consecutive copies.
#[derive(Debug, Clone, Default)]
pub struct Hop {
    /// The SIP headers or SDP lines that changed on it.
    pub rewrites: Vec<Rewrite>,
    /// The addresses NAT translated on it (`src 192.168.1.10:5060 → 203.0.113.1:5060`).
    pub translated: Vec<String>,
}

/// One message as sent once, with its copies in time order.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub copies: Vec<Copy<'a>>,
    /// `hops[i]` is between `copies[i]` and `copies[i + 1]`.
    pub hops: Vec<Hop>,
    /// 0 for the first transmission, n for the n-th retransmission of the same message.
    pub retransmission: usize,
    /// The lane of the address it was sent to, if a lane holds that address.
    pub to_lane: Option<usize>,
    /// Why it never reached its destination, when it did not.
    pub lost: Option<String>,
}

impl Message<'_> {
    pub fn origin(&self) -> &Copy<'_> {
        &self.copies[0]
    }

    /// Whether a host received it (behind a NAT, not the one its address names).
    pub fn delivered(&self, lanes: &[String]) -> bool {
        self.copies.len() > 1
            && self
                .copies
                .last()
                .is_some_and(|c| c.direction == Direction::In && is_host(&lanes[c.lane]))
    }
}

/// The lanes and messages of a run.
#[derive(Debug, Clone)]
pub struct Sequence<'a> {
    /// Vantage labels, left to right.
    pub lanes: Vec<String>,
    pub messages: Vec<Message<'a>>,
}

/// Vantage points in the order a packet crosses them: each router's inside hosts (and inner
/// routers), its LAN side, its WAN side; then the public hosts.
pub fn lane_order(topology: &TopologySpec) -> Vec<String> {
    fn behind(t: &TopologySpec, segment: &str, out: &mut Vec<String>) {
        for h in t.hosts.iter().filter(|h| h.segment == segment) {
            out.push(h.name.clone());
        }
        for r in t.routers.iter().filter(|r| r.upstream == segment) {
            behind(t, &r.name, out);
            out.push(format!("{}:lan", r.name));
            out.push(format!("{}:wan", r.name));
        }
    }
    let mut out = Vec::new();
    let internet = crate::topology::INTERNET;
    for r in topology.routers.iter().filter(|r| r.upstream == internet) {
        behind(topology, &r.name, &mut out);
        out.push(format!("{}:lan", r.name));
        out.push(format!("{}:wan", r.name));
    }
    for h in topology.hosts.iter().filter(|h| h.segment == internet) {
        out.push(h.name.clone());
    }
    out
}

/// Call-ID, CSeq, method or status, top-Via branch: the same for a message, its copies and its
/// retransmissions, whatever NAT or an ALG does to addresses.
fn key(s: &SipSummary) -> (String, String, String, String) {
    let branch = s
        .via
        .first()
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("branch=")))
        .unwrap_or("")
        .to_string();
    (
        s.call_id.clone().unwrap_or_default(),
        s.cseq.clone().unwrap_or_default(),
        s.method_or_status().to_string(),
        if branch.is_empty() {
            s.first_line.clone()
        } else {
            branch
        },
    )
}

fn is_host(label: &str) -> bool {
    !label.contains(':')
}

/// A header an ALG may rewrite, and how to read it.
type Field = (&'static str, fn(&SipSummary) -> Option<String>);

fn rewrites(a: &SipSummary, b: &SipSummary) -> Vec<Rewrite> {
    let fields: [Field; 8] = [
        ("Request-URI", |s| s.request_uri().map(str::to_string)),
        ("Via", |s| s.via.first().cloned()),
        ("Contact", |s| s.contact.clone()),
        ("SDP c=", |s| s.sdp_c.clone()),
        ("SDP m=", |s| s.sdp_m.clone()),
        ("SDP o=", |s| s.sdp_o.clone()),
        ("Content-Length", |s| s.content_length.clone()),
        ("Authorization", |s| s.authorization.clone()),
    ];
    fields
        .iter()
        .filter_map(|(header, get)| {
            let (x, y) = (get(a), get(b));
            (x != y).then(|| Rewrite {
                header,
                before: x.unwrap_or_else(|| "(none)".into()),
                after: y.unwrap_or_else(|| "(none)".into()),
            })
        })
        .collect()
}

impl<'a> Sequence<'a> {
    /// Groups the trace's SIP copies into messages. `order` is [`lane_order`]; vantage points
    /// it does not name are appended in order of appearance. `stories` date the routers' drops.
    pub fn build(trace: &'a Trace, order: &[String], stories: &[RouterStory]) -> Self {
        let mut lanes: Vec<String> = order.to_vec();
        let mut messages: Vec<Message<'a>> = Vec::new();
        // Open messages by key: indices into `messages`, latest last.
        let mut open: BTreeMap<(String, String, String, String), Vec<usize>> = BTreeMap::new();
        let mut addresses: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (entry, e) in trace.entries().iter().enumerate() {
            let Entry::Packet {
                at,
                vantage,
                direction,
                src,
                dst,
                payload,
            } = e
            else {
                continue;
            };
            let label = vantage.label();
            let lane = match lanes.iter().position(|l| *l == label) {
                Some(i) => i,
                None => {
                    lanes.push(label.clone());
                    lanes.len() - 1
                }
            };
            // Where each address lives: a host's, or a router's public side.
            if is_host(&label) || label.ends_with(":wan") {
                let own = if *direction == Direction::Out {
                    src
                } else {
                    dst
                };
                addresses.entry(*own.ip()).or_insert(lane);
            }
            let Payload::Sip(sip) = payload else {
                continue;
            };
            let copy = Copy {
                entry,
                lane,
                at: *at,
                direction: *direction,
                src: *src,
                dst: *dst,
                sip,
            };
            let k = key(sip);
            let sent_here = *direction == Direction::Out && is_host(&label);
            let target = (!sent_here)
                .then(|| {
                    open.get(&k).and_then(|ids| {
                        ids.iter().rev().copied().find(|&i| {
                            !messages[i]
                                .copies
                                .iter()
                                .any(|c| c.lane == lane && c.direction == copy.direction)
                        })
                    })
                })
                .flatten();
            match target {
                Some(i) => messages[i].copies.push(copy),
                None => {
                    let ids = open.entry(k).or_default();
                    let retransmission = ids
                        .iter()
                        .filter(|&&i| messages[i].origin().lane == lane)
                        .count();
                    ids.push(messages.len());
                    messages.push(Message {
                        copies: vec![copy],
                        hops: Vec::new(),
                        retransmission,
                        to_lane: None,
                        lost: None,
                    });
                }
            }
        }
        let drops: Vec<_> = stories.iter().flat_map(|s| &s.drops).collect();
        for m in &mut messages {
            m.hops = m
                .copies
                .windows(2)
                .map(|w| {
                    let mut translated = Vec::new();
                    if w[0].src != w[1].src {
                        translated.push(format!("source {} → {}", w[0].src, w[1].src));
                    }
                    if w[0].dst != w[1].dst {
                        translated.push(format!("destination {} → {}", w[0].dst, w[1].dst));
                    }
                    Hop {
                        rewrites: rewrites(w[0].sip, w[1].sip),
                        translated,
                    }
                })
                .collect();
            m.to_lane = addresses.get(m.origin().dst.ip()).copied();
            let origin = m.origin().clone();
            if m.delivered(&lanes) {
                continue;
            }
            let last = m.copies.last().expect("a message has a copy");
            m.lost = drops
                .iter()
                .find(|d| d.at == last.at && d.src == last.src && d.dst == last.dst)
                .map(|d| match &d.reason {
                    Some(r) => format!("dropped at {}: {r}", lanes[last.lane]),
                    None => format!(
                        "dropped at {}, not by its NAT (its SIP ALG?)",
                        lanes[last.lane]
                    ),
                })
                .or_else(|| {
                    (is_private(*origin.dst.ip()) && !is_private(*origin.src.ip())).then(|| {
                        format!(
                            "sent to the private address {}: the internet swallows it",
                            origin.dst
                        )
                    })
                })
                .or_else(|| Some("never seen arriving".to_string()));
        }
        messages.sort_by_key(|m| m.origin().at);
        Sequence { lanes, messages }
    }

    /// Number of copies drawn: every SIP packet of the trace.
    pub fn copies(&self) -> usize {
        self.messages.iter().map(|m| m.copies.len()).sum()
    }
}

const LANE_W: f64 = 170.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 46.0;
const ROW_H: f64 = 30.0;
/// An idle gap longer than this gets a band of its own, so expiries in it are visible.
const GAP_SECS: f64 = 1.0;

fn lane_x(lane: usize) -> f64 {
    LEFT + LANE_W * (lane as f64 + 0.5)
}

/// The label of a message: method and Request-URI, or status with its CSeq.
fn label(s: &SipSummary) -> String {
    if s.is_response() {
        let text = s.first_line.trim_start_matches("SIP/2.0 ");
        match &s.cseq {
            Some(c) => format!("{text} ({c})"),
            None => text.to_string(),
        }
    } else {
        s.first_line.trim_end_matches(" SIP/2.0").to_string()
    }
}

fn secs(at: SystemTime, start: SystemTime) -> f64 {
    at.duration_since(start).unwrap_or_default().as_secs_f64()
}

/// The diagram. `start` is time zero of the page (`data-t` counts from it).
pub fn svg(seq: &Sequence, start: SystemTime) -> svg::Document {
    let mut rows = Group::new().set("class", "rows");
    let mut y = TOP + ROW_H;
    let mut previous: Option<SystemTime> = None;
    for (n, m) in seq.messages.iter().enumerate() {
        let origin = m.origin();
        let t = secs(origin.at, start);
        if let Some(p) = previous {
            let gap = secs(origin.at, p);
            if gap > GAP_SECS {
                rows = rows.add(
                    Rect::new()
                        .set("class", "gap")
                        .set("x", LEFT)
                        .set("y", y - ROW_H * 0.6)
                        .set("width", LANE_W * seq.lanes.len() as f64)
                        .set("height", ROW_H * 0.8),
                );
                rows = rows.add(
                    Text::new(format!("… {gap:.1} s without SIP …"))
                        .set("class", "gap-text")
                        .set("x", LEFT + 8.0)
                        .set("y", y - ROW_H * 0.1),
                );
                y += ROW_H;
            }
        }
        previous = Some(origin.at);
        rows = rows.add(message(n, m, y, t, start, &seq.lanes));
        y += ROW_H;
        // Room for the reason a message vanished, spelled out under its first copy.
        if m.retransmission == 0 && (m.lost.is_some() || private_note(m).is_some()) {
            y += 12.0;
        }
    }
    let height = y + 10.0;
    // Room on the right for the reason a message vanished, written out under it.
    let width = LEFT + LANE_W * seq.lanes.len() as f64 + 420.0;
    let mut lanes = Group::new().set("class", "lanes");
    for (i, l) in seq.lanes.iter().enumerate() {
        let x = lane_x(i);
        lanes = lanes
            .add(
                Line::new()
                    .set("x1", x)
                    .set("y1", TOP)
                    .set("x2", x)
                    .set("y2", height)
                    .set(
                        "class",
                        if is_host(l) {
                            "lane host"
                        } else {
                            "lane router"
                        },
                    ),
            )
            .add(
                Text::new(l.clone())
                    .set("class", "lane-name")
                    .set("x", x)
                    .set("y", TOP - 14.0)
                    .set("text-anchor", "middle"),
            );
    }
    svg::Document::new()
        .set("class", "sequence")
        .set("width", width)
        .set("height", height)
        .set("viewBox", (0, 0, width as i64, height as i64))
        .add(defs())
        .add(lanes)
        .add(rows)
}

fn defs() -> svg::node::element::Definitions {
    use svg::node::element::{Definitions, Marker};
    let arrow = |id: &str, class: &str| {
        Marker::new()
            .set("id", id)
            .set("viewBox", "0 0 10 10")
            .set("refX", 9)
            .set("refY", 5)
            .set("markerWidth", 7)
            .set("markerHeight", 7)
            .set("orient", "auto-start-reverse")
            .add(
                Path::new()
                    .set("d", "M0,0 L10,5 L0,10 z")
                    .set("class", class),
            )
    };
    Definitions::new()
        .add(arrow("arrow", "arrowhead"))
        .add(arrow("arrow-lost", "arrowhead lost"))
}

fn message(n: usize, m: &Message, y: f64, t: f64, start: SystemTime, lanes: &[String]) -> Group {
    let origin = m.origin();
    let method = origin.sip.method_or_status().to_string();
    let mut class = String::from("msg");
    if m.retransmission > 0 {
        class.push_str(" retx");
    }
    if m.lost.is_some() {
        class.push_str(" lost");
    }
    if origin.sip.is_response() {
        class.push_str(" response");
    }
    let mut g = Group::new()
        .set("class", class)
        .set("id", format!("m{n}"))
        .set("data-t", format!("{t:.6}"))
        .set("data-method", method)
        .set("data-retx", m.retransmission)
        .set("data-copies", m.copies.len());
    g = g.add(
        Text::new(format!("{t:.3} s"))
            .set("class", "time")
            .set("x", 6)
            .set("y", y + 4.0),
    );
    let xs: Vec<f64> = m.copies.iter().map(|c| lane_x(c.lane)).collect();
    let first = xs[0];
    let mut last = *xs.last().expect("a copy");
    // A message that vanished: a stub half a lane towards where it was going, and a cross.
    let stub = m.lost.as_ref().map(|_| {
        // Onwards in the direction it travelled; a message seen only where it was sent goes
        // towards the lane of its destination address.
        let towards = if xs.len() > 1 {
            last - first
        } else {
            m.to_lane.map(lane_x).unwrap_or(first + LANE_W) - first
        };
        let dir = if towards < 0.0 { -1.0 } else { 1.0 };
        last + dir * LANE_W * 0.45
    });
    if let Some(s) = stub {
        last = s;
    }
    let mut d = format!("M{first:.1},{y:.1}");
    for x in xs.iter().skip(1) {
        d.push_str(&format!(" L{x:.1},{y:.1}"));
    }
    if let Some(s) = stub {
        d.push_str(&format!(" L{s:.1},{y:.1}"));
    }
    if (last - first).abs() > 0.5 {
        g = g.add(Path::new().set("class", "arrow").set("d", d).set(
            "marker-end",
            if m.lost.is_some() {
                "url(#arrow-lost)"
            } else {
                "url(#arrow)"
            },
        ));
    }
    let mut text = label(origin.sip);
    if m.retransmission > 0 {
        text = format!("↻{} {text}", m.retransmission);
    }
    let mid = (first + last) / 2.0;
    g = g.add(
        Text::new(text)
            .set("class", "label")
            .set("x", mid)
            .set("y", y - 5.0)
            .set("text-anchor", "middle")
            .add(Title::new(details(origin.sip))),
    );
    for (i, c) in m.copies.iter().enumerate() {
        let x = xs[i];
        g = g.add(
            Circle::new()
                .set("class", "copy")
                .set("id", format!("e{}", c.entry))
                .set("data-vantage", lanes[c.lane].clone())
                .set("data-t", format!("{:.6}", secs(c.at, start)))
                .set("cx", x)
                .set("cy", y)
                .set("r", 3.5)
                .add(Title::new(format!(
                    "{} at {:.3} s: {} → {}\n{}",
                    lanes[c.lane],
                    secs(c.at, start),
                    c.src,
                    c.dst,
                    details(c.sip)
                ))),
        );
    }
    for (i, hop) in m.hops.iter().enumerate() {
        let (a, b) = (xs[i], xs[i + 1]);
        let hx = (a + b) / 2.0;
        if !hop.rewrites.is_empty() {
            let what: Vec<String> = hop
                .rewrites
                .iter()
                .map(|r| format!("{}: {} → {}", r.header, r.before, r.after))
                .collect();
            let names: BTreeSet<&str> = hop.rewrites.iter().map(|r| r.header).collect();
            g = g.add(
                Group::new()
                    .set("class", "rewrite")
                    .set(
                        "data-hop",
                        format!(
                            "{}→{}",
                            lanes[m.copies[i].lane],
                            lanes[m.copies[i + 1].lane]
                        ),
                    )
                    .add(
                        Rect::new()
                            .set("x", hx - 7.0)
                            .set("y", y - 7.0)
                            .set("width", 14)
                            .set("height", 14)
                            .set("rx", 3),
                    )
                    .add(
                        Text::new(format!(
                            "✎ {}",
                            names.into_iter().collect::<Vec<_>>().join(", ")
                        ))
                        .set("x", hx)
                        .set("y", y + 17.0)
                        .set("text-anchor", "middle"),
                    )
                    .add(Title::new(format!(
                        "rewritten between {} and {}:\n{}",
                        lanes[m.copies[i].lane],
                        lanes[m.copies[i + 1].lane],
                        what.join("\n")
                    ))),
            );
        } else if !hop.translated.is_empty() {
            g = g.add(
                Circle::new()
                    .set("class", "nat")
                    .set("cx", hx)
                    .set("cy", y)
                    .set("r", 2.5)
                    .add(Title::new(format!("NAT: {}", hop.translated.join(", ")))),
            );
        }
    }
    if let Some(note) = private_note(m) {
        g = g.add(
            Text::new(format!("⚠ {note}"))
                .set("class", "private")
                .set("x", first.min(last) + 6.0)
                .set("y", y + 16.0),
        );
    }
    if let (Some(why), Some(s)) = (&m.lost, stub) {
        g = g.add(
            Text::new("✗")
                .set("class", "cross")
                .set("x", s)
                .set("y", y + 5.0)
                .set("text-anchor", "middle")
                .add(Title::new(why.clone())),
        );
        // Spelled out once per message; its retransmissions only get the cross.
        if m.retransmission == 0 {
            g = g.add(
                Text::new(why.clone())
                    .set("class", "why")
                    .set("x", first.min(s) - 4.0)
                    .set("y", y + 18.0),
            );
        }
    }
    g
}

/// A private address a message carries in Contact or SDP `c=` where it travels between public
/// addresses (after the last NAT): the cause of the field's 408s and one-way audio.
fn private_note(m: &Message) -> Option<String> {
    if m.retransmission > 0 || m.lost.is_some() {
        return None;
    }
    let last = m.copies.last()?;
    if is_private(*last.src.ip()) || is_private(*last.dst.ip()) {
        return None;
    }
    let contact = last.sip.contact.as_deref().and_then(|c| {
        let host = c.split('@').nth(1).unwrap_or(c).trim_start_matches("<sip:");
        let ip = host.split([':', '>', ';']).next()?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        is_private(ip).then(|| format!("Contact {ip} is private"))
    });
    let sdp = last.sip.sdp_c.as_deref().and_then(|c| {
        let ip: Ipv4Addr = c.rsplit(' ').next()?.parse().ok()?;
        is_private(ip).then(|| format!("SDP c= {ip} is private"))
    });
    match (contact, sdp) {
        (None, None) => None,
        (a, b) => Some(a.into_iter().chain(b).collect::<Vec<_>>().join(", ")),
    }
}

/// The NAT-relevant headers, for a tooltip.
fn details(s: &SipSummary) -> String {
    let mut out = vec![s.first_line.clone()];
    out.extend(s.via.iter().map(|v| format!("Via: {v}")));
    if let Some(c) = &s.contact {
        out.push(format!("Contact: {c}"));
    }
    if let Some(c) = &s.cseq {
        out.push(format!("CSeq: {c}"));
    }
    if let Some(c) = &s.sdp_c {
        out.push(format!("c={c}"));
    }
    if let Some(m) = &s.sdp_m {
        out.push(format!("m={m}"));
    }
    out.join("\n")
}
