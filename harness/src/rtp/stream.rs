//! A sans-IO media endpoint: one side of a call's audio, as a phone or an SBC's media relay plays
//! it, with the receive-side counters that tell one-way audio from loss.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::rtp::packet::{RtpError, RtpPacket, PCMU};
use crate::rtp::SplitMix;
use crate::stun::Transmit;

/// Which local socket RTP leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpSource {
    /// Symmetric RTP (RFC 4961): send from the socket we receive on, the address SDP advertises.
    /// Behind a NAT this is what makes a latching peer's answer come back through the binding.
    Symmetric,
    /// Asymmetric RTP: send from another local socket. A latching peer then answers a NAT
    /// binding nobody listens behind: one-way audio.
    Asymmetric(SocketAddr),
}

/// What one media endpoint does for the length of a call.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The receive socket: the address this side's SDP `c=`/`m=` advertises.
    pub local: SocketAddr,
    /// Where to send: the peer's SDP `c=`/`m=`. `None` with `latching`: wait for the peer's
    /// first packet, as an SBC does before it knows where a NATed phone really is.
    pub destination: Option<SocketAddr>,
    pub source: RtpSource,
    /// Send to where the peer's RTP actually comes from once the first packet arrived, instead
    /// of what its SDP said (media latching, "comedia").
    pub latching: bool,
    /// How long to send. `duration / ptime` packets leave.
    pub duration: Duration,
    /// Packetisation time: one packet per `ptime`.
    pub ptime: Duration,
    pub payload_type: u8,
    /// Bytes of payload per packet (160 for PCMU at 20 ms).
    pub payload_len: usize,
    /// RTP clock ticks per packet (160 for 8 kHz at 20 ms).
    pub timestamp_step: u32,
    /// Seeds the SSRC and the initial sequence number and timestamp (RFC 3550 §5.1: random).
    pub seed: u64,
}

impl MediaConfig {
    /// PCMU, 20 ms, 160-byte payloads, symmetric, not latching, 5 s, seeded from the OS.
    pub fn pcmu(local: SocketAddr, destination: Option<SocketAddr>) -> Self {
        Self {
            local,
            destination,
            source: RtpSource::Symmetric,
            latching: false,
            duration: Duration::from_secs(5),
            ptime: Duration::from_millis(20),
            payload_type: PCMU,
            payload_len: 160,
            timestamp_step: 160,
            seed: crate::stun::os_seed(),
        }
    }

    /// How many packets the stream sends.
    pub fn packets(&self) -> u64 {
        if self.ptime.is_zero() {
            return 0;
        }
        (self.duration.as_nanos() / self.ptime.as_nanos()) as u64
    }
}

/// What a stream reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    Started {
        ssrc: u32,
    },
    /// The first RTP packet from a source address (a peer, or the same peer through a new NAT
    /// binding).
    NewSource {
        from: SocketAddr,
        ssrc: u32,
    },
    /// Latching switched the destination to where the peer's RTP comes from.
    Latched {
        previous: Option<SocketAddr>,
        current: SocketAddr,
    },
    /// A datagram on the media port that is not RTP.
    Malformed {
        from: SocketAddr,
        reason: RtpError,
    },
    /// Every packet was sent.
    Finished {
        sent: u64,
    },
}

/// Packets from one source address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub packets: u64,
    pub ssrcs: Vec<u32>,
}

/// Send and receive counters of one media endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub sent: u64,
    /// Packets not sent because there was nowhere to send them yet (latching, no peer packet).
    pub held: u64,
    /// Valid RTP on the receive socket, duplicates included.
    pub received: u64,
    /// Distinct packets received (per SSRC and extended sequence number).
    pub unique: u64,
    pub by_source: BTreeMap<SocketAddr, SourceStats>,
    /// Gaps in the sequence numbers, from each SSRC's first to its highest packet.
    pub lost: u64,
    /// Packets older than one already received.
    pub out_of_order: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// RTP that arrived on the asymmetric send socket, where a phone does not listen.
    pub stray: u64,
    /// Where latching pointed the stream, if it did.
    pub latched: Option<SocketAddr>,
    /// SSRC and sequence number of the first packet sent: with the receiver's
    /// [`MediaStats::first_received`] it tells packets lost while the path opened (a relay not
    /// yet latched, a pinhole not yet open) from loss once audio flows.
    pub first_sent: Option<(u32, u16)>,
    /// Per SSRC, the sequence number of the first packet received.
    pub first_received: BTreeMap<u32, u16>,
    /// The sequence numbers really sent, as runs: a sender may skip numbers while it sends
    /// nothing (baresip's sequence runs on while ICE settles), so the distance from the first
    /// sent to the first received number is not a count of packets lost on the way.
    pub sent_runs: SentRuns,
}

/// Runs of consecutive (SSRC, sequence number) as sent, in sending order; at most
/// [`SentRuns::MAX`] runs, after which it knows nothing (a sender that jumps that often gives no
/// start-up estimate rather than a wrong one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentRuns {
    runs: Vec<(u32, u16, u64)>,
    overflow: bool,
}

impl SentRuns {
    pub const MAX: usize = 256;

    /// One more packet sent.
    pub fn record(&mut self, ssrc: u32, seq: u16) {
        if let Some((s, first, count)) = self.runs.last_mut() {
            if *s == ssrc && first.wrapping_add(*count as u16) == seq && *count < 0x8000 {
                *count += 1;
                return;
            }
        }
        if self.runs.len() == Self::MAX {
            self.overflow = true;
        } else {
            self.runs.push((ssrc, seq, 1));
        }
    }

    /// Whether nothing was recorded (stats made by hand, or an endpoint that sent nothing).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && !self.overflow
    }

    /// How many packets of `ssrc` were sent before the one numbered `seq`; `None` when `seq` was
    /// never sent (or the runs overflowed).
    pub fn sent_before(&self, ssrc: u32, seq: u16) -> Option<u64> {
        if self.overflow {
            return None;
        }
        let mut before = 0;
        for &(_, first, count) in self.runs.iter().filter(|r| r.0 == ssrc) {
            let offset = u64::from(seq.wrapping_sub(first));
            if offset < count {
                return Some(before + offset);
            }
            before += count;
        }
        None
    }
}

/// Per-SSRC sequence accounting (RFC 3550 A.1, simplified: no probation).
#[derive(Debug, Clone)]
struct SeqTracker {
    base: u64,
    highest: u64,
    seen: HashSet<u64>,
}

impl SeqTracker {
    fn new(seq: u16) -> Self {
        // Start in the second cycle so a reordered packet from before `seq` stays positive.
        let ext = (1 << 16) + u64::from(seq);
        Self {
            base: ext,
            highest: ext,
            seen: HashSet::from([ext]),
        }
    }

    /// The extended sequence number of `seq` nearest to the highest one seen.
    fn extend(&self, seq: u16) -> u64 {
        let cycle = self.highest & !0xffff;
        let candidates = [
            cycle.wrapping_sub(1 << 16) | u64::from(seq),
            cycle | u64::from(seq),
            (cycle + (1 << 16)) | u64::from(seq),
        ];
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(self.highest))
            .unwrap_or(cycle | u64::from(seq))
    }

    /// Records a packet: `(duplicate, out_of_order)`.
    fn record(&mut self, seq: u16) -> (bool, bool) {
        let ext = self.extend(seq);
        if !self.seen.insert(ext) {
            return (true, false);
        }
        let late = ext < self.highest;
        self.highest = self.highest.max(ext);
        self.base = self.base.min(ext);
        (false, late)
    }

    fn lost(&self) -> u64 {
        (self.highest - self.base + 1).saturating_sub(self.seen.len() as u64)
    }
}

/// One side of a call's audio (see the module docs).
#[derive(Debug)]
pub struct MediaStream {
    config: MediaConfig,
    destination: Option<SocketAddr>,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    total: u64,
    next_send: Option<Instant>,
    trackers: BTreeMap<u32, SeqTracker>,
    stats: MediaStats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
}

impl MediaStream {
    pub fn new(config: MediaConfig) -> Self {
        let mut rng = SplitMix(config.seed);
        let ssrc = rng.next_u64() as u32;
        let sequence = rng.next_u64() as u16;
        let timestamp = rng.next_u64() as u32;
        Self {
            destination: config.destination,
            total: config.packets(),
            config,
            ssrc,
            sequence,
            timestamp,
            next_send: None,
            trackers: BTreeMap::new(),
            stats: MediaStats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts sending: the first packet leaves at `now`.
    pub fn start(&mut self, now: Instant) {
        if self.next_send.is_some() || self.stats.sent + self.stats.held > 0 {
            return;
        }
        self.next_send = Some(now);
        self.events
            .push_back(MediaEvent::Started { ssrc: self.ssrc });
        self.handle_timeout(now);
    }

    /// Where to send, once the answer says so: a phone opens its media socket when it makes or
    /// receives the offer, before it knows the peer's address.
    pub fn set_destination(&mut self, destination: SocketAddr) {
        self.destination = Some(destination);
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn local(&self) -> SocketAddr {
        self.config.local
    }

    /// Where packets go now (after latching, where the peer's RTP comes from).
    pub fn destination(&self) -> Option<SocketAddr> {
        self.destination
    }

    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// Every packet has been sent (or held).
    pub fn is_finished(&self) -> bool {
        self.stats.sent + self.stats.held >= self.total
    }

    fn send_from(&self) -> SocketAddr {
        match self.config.source {
            RtpSource::Symmetric => self.config.local,
            RtpSource::Asymmetric(a) => a,
        }
    }

    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.config.local];
        if let RtpSource::Asymmetric(a) = self.config.source {
            v.push(a);
        }
        v
    }
}

impl Machine for MediaStream {
    type Event = MediaEvent;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], _: Instant) {
        let packet = match RtpPacket::decode(bytes) {
            Ok(p) => p,
            Err(reason) => {
                self.stats.malformed += 1;
                self.events
                    .push_back(MediaEvent::Malformed { from, reason });
                return;
            }
        };
        if local != self.config.local {
            self.stats.stray += 1;
            return;
        }
        self.stats.received += 1;
        let source = self.stats.by_source.entry(from).or_default();
        source.packets += 1;
        if !source.ssrcs.contains(&packet.ssrc) {
            source.ssrcs.push(packet.ssrc);
            if source.ssrcs.len() == 1 {
                self.events.push_back(MediaEvent::NewSource {
                    from,
                    ssrc: packet.ssrc,
                });
            }
        }
        let (duplicate, late) = match self.trackers.get_mut(&packet.ssrc) {
            Some(t) => t.record(packet.sequence),
            None => {
                self.trackers
                    .insert(packet.ssrc, SeqTracker::new(packet.sequence));
                self.stats
                    .first_received
                    .insert(packet.ssrc, packet.sequence);
                (false, false)
            }
        };
        if duplicate {
            self.stats.duplicates += 1;
        } else {
            self.stats.unique += 1;
        }
        if late {
            self.stats.out_of_order += 1;
        }
        self.stats.lost = self.trackers.values().map(SeqTracker::lost).sum();
        if self.config.latching && self.stats.latched.is_none() {
            self.stats.latched = Some(from);
            if self.destination != Some(from) {
                self.events.push_back(MediaEvent::Latched {
                    previous: self.destination,
                    current: from,
                });
            }
            self.destination = Some(from);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next_send.filter(|at| *at <= now) {
            if self.is_finished() {
                self.next_send = None;
                break;
            }
            match self.destination {
                Some(destination) => {
                    let packet = RtpPacket {
                        marker: self.stats.sent == 0,
                        payload_type: self.config.payload_type,
                        sequence: self.sequence,
                        timestamp: self.timestamp,
                        ssrc: self.ssrc,
                        payload: vec![0xff; self.config.payload_len],
                    };
                    self.transmits.push_back(Transmit {
                        source: self.send_from(),
                        destination,
                        payload: packet.encode(),
                    });
                    self.stats
                        .first_sent
                        .get_or_insert((self.ssrc, self.sequence));
                    self.stats.sent_runs.record(self.ssrc, self.sequence);
                    self.stats.sent += 1;
                }
                None => self.stats.held += 1,
            }
            self.sequence = self.sequence.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(self.config.timestamp_step);
            self.next_send = Some(at + self.config.ptime);
            if self.is_finished() {
                self.next_send = None;
                self.events.push_back(MediaEvent::Finished {
                    sent: self.stats.sent,
                });
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_send
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        self.local_addresses()
    }
}
