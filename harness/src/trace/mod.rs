//! Captured frames decoded into one ordered trace, plus the events components and routers report.
//!
//! The trace is what a field engineer would assemble by hand from tcpdump on every box: each
//! packet at each vantage point (so a packet shows up before and after each NAT), SIP with the
//! headers that matter behind NAT, STUN/TURN/RTP summarised, and events such as "binding
//! expired" interleaved by time. [`ladder`] renders it as text for terminals and snapshots.

mod decode;
pub mod defrag;
pub mod ladder;

use std::net::SocketAddrV4;
use std::time::{Duration, SystemTime};

pub use decode::{
    decode_frame, decode_icmp, decode_tcp, decode_udp, stun_of, stun_summary, tcp_of, turn_carried,
    udp_of, IcmpSummary, SipSummary, StunSummary, TurnCarrier,
};
pub use ladder::Ladder;

use crate::capture::{Direction, Frame, Vantage};

/// What one trace line is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Boxed: a summary is several times the size of every other variant.
    Sip(Box<SipSummary>),
    /// A STUN or TURN message (`Binding request`, `Allocate success relayed=…`).
    Stun(StunSummary),
    Rtp {
        payload_type: u8,
        seq: u16,
        ssrc: u32,
    },
    /// RTCP (RFC 3550 §6), told apart from RTP by its packet type (RFC 5761 §4).
    Rtcp { packet_type: u8 },
    /// TURN ChannelData (RFC 8656 §12.4) and what it carries, decoded (`None` only for
    /// ChannelData found inside TURN again, which is not unwrapped twice).
    ChannelData {
        channel: u16,
        len: usize,
        inner: Option<Box<Payload>>,
    },
    /// A CRLF or CRLFCRLF keep-alive (RFC 5626).
    KeepAlive,
    /// Anything else on UDP.
    Udp { len: usize },
    /// A TCP segment that is not a SIP message or keep-alive: a connection opened (SYN),
    /// closed (FIN) or reset (RST), or `len` bytes of something else. `flags` as on the wire.
    Tcp { flags: u8, len: usize },
    /// A TCP segment starting with a TLS record (SIP over TLS): opaque; `content_type` 22
    /// handshake, 23 application data; `len` the segment's bytes.
    Tls { content_type: u8, len: usize },
    /// An ICMP error, e.g. `port unreachable` — on the internet core they never appear.
    Icmp(IcmpSummary),
}

impl Payload {
    /// What this datagram carries inside TURN (ChannelData, a Send or Data indication) and how,
    /// when it is TURN framing around something recognised (RTP, SIP, …), not opaque bytes.
    pub fn carried(&self) -> Option<(TurnCarrier, &Payload)> {
        let (how, inner) = match self {
            Payload::ChannelData {
                channel,
                inner: Some(inner),
                ..
            } => (TurnCarrier::Channel(*channel), inner),
            Payload::Stun(StunSummary {
                method,
                carried: Some(inner),
                ..
            }) => (
                if method == "Send" {
                    TurnCarrier::Send
                } else {
                    TurnCarrier::Data
                },
                inner,
            ),
            _ => return None,
        };
        (!matches!(**inner, Payload::Udp { .. })).then_some((how, &**inner))
    }

    /// One line, as the ladder shows it: a SIP first line, `STUN Binding request`, `RTP PT 0`,
    /// `ICMP port unreachable`; relayed packets as what they carry and how, `RTP PT 0 via TURN
    /// ChannelData 0x4000`.
    pub fn summary(&self) -> String {
        if let Some((how, inner)) = self.carried() {
            return format!("{} via {how}", inner.summary());
        }
        match self {
            Payload::Sip(s) => s.first_line.clone(),
            Payload::Stun(s) => s.to_string(),
            Payload::Rtp { payload_type, .. } => format!("RTP PT {payload_type}"),
            Payload::Rtcp { packet_type } => format!("RTCP PT {packet_type}"),
            Payload::ChannelData { channel, len, .. } => {
                format!("ChannelData 0x{channel:04x} {len} bytes")
            }
            Payload::KeepAlive => "keep-alive (CRLF)".into(),
            Payload::Udp { len } => format!("UDP {len} bytes"),
            // A handshake's length moves with its signatures' DER encoding from run to run;
            // what it carries after is SIP, whose length is the message's plus a fixed overhead.
            Payload::Tls { content_type, len } => match content_type {
                20 => "TLS change cipher spec".into(),
                21 => "TLS alert".into(),
                22 => "TLS handshake".into(),
                _ => format!("TLS application data {len} bytes"),
            },
            Payload::Tcp { flags, len } => {
                let names: Vec<&str> = [
                    (decode::TCP_SYN, "SYN"),
                    (decode::TCP_FIN, "FIN"),
                    (decode::TCP_RST, "RST"),
                    (decode::TCP_ACK, "ACK"),
                ]
                .into_iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, name)| name)
                .collect();
                match len {
                    0 => format!("TCP [{}]", names.join(" ")),
                    n => format!("TCP [{}] {n} bytes", names.join(" ")),
                }
            }
            Payload::Icmp(s) => format!("ICMP {s}"),
        }
    }
}

/// One decoded packet at one vantage point, or one reported event.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Packet {
        at: SystemTime,
        vantage: Vantage,
        direction: Direction,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: Payload,
    },
    Event {
        at: SystemTime,
        /// Who reported it: a node name (`alice`, `home`).
        source: String,
        text: String,
    },
}

impl Entry {
    pub fn at(&self) -> SystemTime {
        match self {
            Entry::Packet { at, .. } | Entry::Event { at, .. } => *at,
        }
    }
}

/// An ordered trace.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    entries: Vec<Entry>,
}

impl Trace {
    /// Decodes captured frames (ARP and other non-IPv4 frames are left out).
    pub fn from_frames(frames: &[Frame]) -> Self {
        let mut entries = Vec::new();
        for (f, fragments) in defrag::whole(frames) {
            let Some(e) = decode_frame(&f) else {
                continue;
            };
            // The sender's own kernel cut it: say so where it left, once per datagram (after
            // the packet: entries at one instant keep their order).
            let cut = (fragments > 1 && f.direction == Direction::Out && f.vantage.iface == "eth0")
                .then(|| match &e {
                    Entry::Packet { payload, .. } => Some(Entry::Event {
                        at: f.at,
                        source: f.vantage.node.clone(),
                        text: format!(
                            "sent {} as a {}-byte IP datagram in {fragments} fragments (larger \
                             than its link's MTU)",
                            payload.summary(),
                            f.bytes.len() - 14
                        ),
                    }),
                    Entry::Event { .. } => None,
                })
                .flatten();
            entries.push(e);
            entries.extend(cut);
        }
        let mut t = Trace { entries };
        t.sort();
        t
    }

    /// A trace of entries already decoded (a ticket's capture read by `diagnose`), in time order.
    pub fn from_entries(entries: Vec<Entry>) -> Self {
        let mut t = Trace { entries };
        t.sort();
        t
    }

    /// Adds an event (binding expired, call established, …) at its time.
    pub fn push_event(&mut self, at: SystemTime, source: &str, text: impl Into<String>) {
        self.entries.push(Entry::Event {
            at,
            source: source.to_string(),
            text: text.into(),
        });
        self.sort();
    }

    fn sort(&mut self) {
        self.entries.sort_by_key(|e| e.at());
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Time of the first entry; ladders count from it.
    pub fn start(&self) -> Option<SystemTime> {
        self.entries.first().map(Entry::at)
    }

    /// Packets seen at `vantage` whose payload satisfies `f`.
    pub fn packets_at<'a>(
        &'a self,
        vantage: &'a str,
        f: impl Fn(&Payload) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| match e {
            Entry::Packet {
                vantage: v,
                payload,
                ..
            } => v.label() == vantage && f(payload),
            Entry::Event { .. } => false,
        })
    }

    /// Offset of `at` from the start of the trace.
    pub fn offset(&self, at: SystemTime) -> Duration {
        self.start()
            .and_then(|s| at.duration_since(s).ok())
            .unwrap_or_default()
    }
}
