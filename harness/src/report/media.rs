//! Media per direction as packets over time: one stream (an RTP SSRC) per block, one strip per
//! vantage point that saw it, so where a stream stops is where its strips stop.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::SystemTime;

use svg::node::element::{Group, Path, Text, Title};

use super::axis::Axis;
use crate::capture::Direction;
use crate::trace::{Entry, Payload, Trace};

/// One RTP stream and where it was seen.
#[derive(Debug, Clone)]
pub struct Stream {
    pub ssrc: u32,
    /// Sender and destination as the sender wrote them.
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    /// The vantage point that sent it.
    pub sender: String,
    /// Per vantage point (in lane order): the packets' times.
    pub seen: Vec<(String, Vec<SystemTime>)>,
}

impl Stream {
    /// Whether a host other than the sender captured it arriving.
    pub fn arrived(&self) -> bool {
        self.seen
            .iter()
            .any(|(v, _)| !v.contains(':') && *v != self.sender)
    }
}

/// Every RTP stream of the trace, in order of first packet.
pub fn streams(trace: &Trace, lanes: &[String]) -> Vec<Stream> {
    let mut by_ssrc: BTreeMap<u32, (SystemTime, Stream)> = BTreeMap::new();
    // Streams whose sender is known from a host sending it out (a relay re-sends it later).
    let mut confirmed = std::collections::BTreeSet::new();
    let mut per: BTreeMap<(u32, String), Vec<SystemTime>> = BTreeMap::new();
    for e in trace.entries() {
        let Entry::Packet {
            at,
            vantage,
            direction,
            src,
            dst,
            payload: Payload::Rtp { ssrc, .. },
        } = e
        else {
            continue;
        };
        let label = vantage.label();
        let s = by_ssrc.entry(*ssrc).or_insert_with(|| {
            (
                *at,
                Stream {
                    ssrc: *ssrc,
                    from: *src,
                    to: *dst,
                    sender: label.clone(),
                    seen: Vec::new(),
                },
            )
        });
        // The sender is the first host that sent it out, whatever capture saw it first.
        if *direction == Direction::Out && !label.contains(':') && confirmed.insert(*ssrc) {
            s.1.sender = label.clone();
            s.1.from = *src;
            s.1.to = *dst;
        }
        per.entry((*ssrc, label)).or_default().push(*at);
    }
    let mut out: Vec<(SystemTime, Stream)> = by_ssrc.into_values().collect();
    for (_, s) in &mut out {
        let mut seen: Vec<(String, Vec<SystemTime>)> = per
            .iter()
            .filter(|((ssrc, _), _)| *ssrc == s.ssrc)
            .map(|((_, v), times)| (v.clone(), times.clone()))
            .collect();
        let rank = |v: &str| lanes.iter().position(|l| l == v).unwrap_or(usize::MAX);
        let sender_rank = rank(&s.sender);
        // Along the path: from the sender outwards, whichever side it is on.
        seen.sort_by_key(|(v, _)| rank(v).abs_diff(sender_rank));
        s.seen = seen;
    }
    out.sort_by_key(|(first, _)| *first);
    out.into_iter().map(|(_, s)| s).collect()
}

const ROW_H: f64 = 18.0;

/// The strips of every stream.
pub fn svg(streams: &[Stream], axis: &Axis) -> svg::Document {
    let rows: usize = streams
        .iter()
        .map(|s| s.seen.len() + 1 + usize::from(!s.arrived()))
        .sum();
    let top = 30.0;
    let height = top + ROW_H * rows as f64 + 10.0;
    let width = axis.right() + 20.0;
    let mut doc = svg::Document::new()
        .set("class", "media")
        .set("width", width)
        .set("height", height)
        .set("viewBox", (0, 0, width as i64, height as i64))
        .add(axis.ticks(top - 12.0, height - top));
    let mut y = top;
    for s in streams {
        let sent = s
            .seen
            .iter()
            .find(|(v, _)| *v == s.sender)
            .map_or(0, |(_, t)| t.len());
        doc = doc.add(
            Text::new(format!(
                "{} → {} (SSRC {:08x}, sent by {})",
                s.from, s.to, s.ssrc, s.sender
            ))
            .set("class", "stream-name")
            .set("x", 6)
            .set("y", y + ROW_H * 0.7),
        );
        y += ROW_H;
        for (vantage, times) in &s.seen {
            let mut d = String::new();
            for t in times {
                d.push_str(&format!(
                    "M{:.1},{:.1}v{:.0}",
                    axis.x(*t),
                    y + 3.0,
                    ROW_H - 6.0
                ));
            }
            let share = if sent > 0 {
                times.len() as f64 * 100.0 / sent as f64
            } else {
                0.0
            };
            let class = if share < 50.0 { "strip short" } else { "strip" };
            doc = doc.add(
                Group::new()
                    .set("class", class)
                    .set("data-vantage", vantage.clone())
                    .set("data-packets", times.len())
                    .add(
                        Text::new(format!("  at {vantage}: {} packets", times.len()))
                            .set("class", "row-name")
                            .set("x", 6)
                            .set("y", y + ROW_H * 0.7),
                    )
                    .add(Path::new().set("d", d).add(Title::new(format!(
                        "{} packets of SSRC {:08x} at {vantage}",
                        times.len(),
                        s.ssrc
                    )))),
            );
            y += ROW_H;
        }
        if !s.arrived() {
            let last = s.seen.last().map_or("", |(v, _)| v.as_str());
            doc = doc.add(
                Group::new()
                    .set("class", "strip short stops")
                    .set("data-packets", 0)
                    .add(
                        Text::new(format!("  no host received it: the stream stops at {last}"))
                            .set("class", "row-name")
                            .set("x", 6)
                            .set("y", y + ROW_H * 0.7),
                    ),
            );
            y += ROW_H;
        }
    }
    doc
}
