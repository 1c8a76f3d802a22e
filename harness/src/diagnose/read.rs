//! Capture files → the UDP datagrams and ICMP errors in them, one at a time.
//!
//! pcap (micro- and nanosecond, either byte order) and pcapng (any number of interfaces, each
//! with its own link type and timestamp resolution) are read with `pcap-file`; Ethernet (with
//! VLAN tags), Linux cooked SLL and SLL2, raw IPv4 (LINKTYPE_RAW 101, DLT_RAW 12/14,
//! LINKTYPE_IPV4 228) and BSD loopback are peeled with `etherparse`, and IPv4 fragments are
//! reassembled. Reading streams: one record is in memory at a time (plus fragments waiting for
//! their siblings), so a capture of gigabytes reads in constant memory. Anything that is not
//! IPv4 UDP or ICMP is counted and skipped; a damaged file ends the stream with one error.

use std::collections::VecDeque;
use std::io::{Cursor, Read};
use std::net::SocketAddrV4;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etherparse::defrag::IpDefragPool;
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice, UdpSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

/// What an IPv4 packet carried that diagnosis reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A UDP payload.
    Udp(Vec<u8>),
    /// An ICMP message from its type byte on.
    Icmp(Vec<u8>),
}

/// One UDP datagram or ICMP message of a capture, numbered as Wireshark numbers frames (from 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Datagram {
    pub frame: u64,
    pub at: SystemTime,
    /// Ports are 0 for ICMP.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub body: Body,
}

/// Why a capture could not be read (further).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// Records read before the problem (0: the file is unusable).
    pub frames: u64,
    pub what: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.frames == 0 {
            f.write_str(&self.what)
        } else {
            write!(f, "{} after frame {}", self.what, self.frames)
        }
    }
}

/// How many records of each sort the reader met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    /// Packet records (frames), whatever they carried.
    pub frames: u64,
    /// IPv4 UDP datagrams and ICMP messages handed out (a reassembled datagram counts once).
    pub datagrams: u64,
    /// IPv4 fragments seen.
    pub fragments: u64,
    /// Frames skipped: not IPv4 (ARP, IPv6), not UDP/ICMP (TCP), an unknown link type, or too
    /// damaged to peel.
    pub skipped: u64,
}

/// Fragments older than this (capture time) are given up, as a host's reassembly timer would.
const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

enum Source<R: Read> {
    Pcap {
        reader: PcapReader<R>,
        link: DataLink,
        nanos: bool,
    },
    PcapNg {
        reader: PcapNgReader<R>,
        /// Per interface of the current section: link type and seconds per timestamp unit.
        interfaces: Vec<(DataLink, Resolution)>,
        /// The last timestamp seen: Simple Packet Blocks carry none.
        last: SystemTime,
    },
}

/// A pcapng `if_tsresol`: timestamp units per second as a power of 10 or of 2.
#[derive(Debug, Clone, Copy)]
enum Resolution {
    Decimal(u8),
    Binary(u8),
}

impl Resolution {
    fn of(options: &[InterfaceDescriptionOption]) -> Self {
        options
            .iter()
            .find_map(|o| match o {
                InterfaceDescriptionOption::IfTsResol(r) if r & 0x80 == 0 => {
                    Some(Resolution::Decimal(*r))
                }
                InterfaceDescriptionOption::IfTsResol(r) => Some(Resolution::Binary(r & 0x7f)),
                _ => None,
            })
            .unwrap_or(Resolution::Decimal(6))
    }

    fn time(self, units: u64) -> SystemTime {
        let (per_sec, ok) = match self {
            Resolution::Decimal(d) if d <= 19 => (10u128.pow(u32::from(d)), true),
            Resolution::Binary(b) if b <= 63 => (1u128 << b, true),
            _ => (1, false),
        };
        if !ok {
            return UNIX_EPOCH;
        }
        let nanos = u128::from(units) * 1_000_000_000 / per_sec;
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Streams the datagrams of a pcap or pcapng capture. Ends after the first error.
pub struct CaptureReader<R: Read> {
    source: Option<Source<Chained<R>>>,
    defrag: IpDefragPool<SystemTime, ()>,
    ready: VecDeque<Datagram>,
    stats: ReadStats,
    failed: bool,
}

/// A packet record: its link type, time and bytes.
type Record = (DataLink, SystemTime, Vec<u8>);

type Chained<R> = std::io::Chain<Cursor<Vec<u8>>, R>;

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl<R: Read> CaptureReader<R> {
    /// Reads the file header; an empty file, an unknown format or a damaged header is an error.
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let fail = |what: String| ReadError { frames: 0, what };
        let mut magic = Vec::with_capacity(4);
        (&mut input)
            .take(4)
            .read_to_end(&mut magic)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if magic.is_empty() {
            return Err(fail("empty file".into()));
        }
        let is_pcap = PCAP_MAGICS.iter().any(|m| m[..] == magic[..]);
        let is_ng = magic[..] == PCAPNG_MAGIC;
        let input = Cursor::new(magic).chain(input);
        let source = if is_pcap {
            let reader =
                PcapReader::new(input).map_err(|e| fail(format!("damaged pcap header ({e})")))?;
            let h = reader.header();
            Source::Pcap {
                link: h.datalink,
                nanos: h.ts_resolution == TsResolution::NanoSecond,
                reader,
            }
        } else if is_ng {
            let reader = PcapNgReader::new(input)
                .map_err(|e| fail(format!("damaged pcapng section header ({e})")))?;
            Source::PcapNg {
                reader,
                interfaces: Vec::new(),
                last: UNIX_EPOCH,
            }
        } else {
            return Err(fail(
                "not a capture file (neither pcap nor pcapng magic)".into(),
            ));
        };
        Ok(CaptureReader {
            source: Some(source),
            defrag: IpDefragPool::new(),
            ready: VecDeque::new(),
            stats: ReadStats::default(),
            failed: false,
        })
    }

    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The next record's link type, time and bytes; `None` at the end of the file.
    fn next_record(&mut self) -> Option<Result<Record, String>> {
        loop {
            match self.source.as_mut()? {
                Source::Pcap {
                    reader,
                    link,
                    nanos,
                } => {
                    // Raw records: pcap-file's checked ones refuse `orig_len > snaplen`, which
                    // every capture taken with `tcpdump -s` has.
                    let r = reader.next_raw_packet()?;
                    return Some(match r {
                        Ok(p) => {
                            let frac = if *nanos {
                                u64::from(p.ts_frac)
                            } else {
                                u64::from(p.ts_frac) * 1000
                            };
                            let at = UNIX_EPOCH
                                + Duration::from_secs(p.ts_sec.into())
                                + Duration::from_nanos(frac);
                            Ok((*link, at, p.data.into_owned()))
                        }
                        Err(e) => Err(damage(&e)),
                    });
                }
                Source::PcapNg {
                    reader,
                    interfaces,
                    last,
                } => {
                    let block = match reader.next_block()? {
                        Ok(b) => b,
                        Err(e) => return Some(Err(damage(&e))),
                    };
                    match block {
                        Block::SectionHeader(_) => interfaces.clear(),
                        Block::InterfaceDescription(i) => {
                            interfaces.push((i.linktype, Resolution::of(&i.options)))
                        }
                        Block::EnhancedPacket(p) => {
                            let Some(&(link, res)) = interfaces.get(p.interface_id as usize) else {
                                return Some(Err(format!(
                                    "packet on interface {} that no interface block describes",
                                    p.interface_id
                                )));
                            };
                            // pcap-file reads the 64-bit count as nanoseconds; it is in the
                            // interface's units (microseconds unless if_tsresol says otherwise).
                            let units = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
                            *last = res.time(units);
                            return Some(Ok((link, *last, p.data.into_owned())));
                        }
                        Block::Packet(p) => {
                            let Some(&(link, res)) = interfaces.get(usize::from(p.interface_id))
                            else {
                                return Some(Err(format!(
                                    "packet on interface {} that no interface block describes",
                                    p.interface_id
                                )));
                            };
                            *last = res.time(p.timestamp);
                            return Some(Ok((link, *last, p.data.into_owned())));
                        }
                        Block::SimplePacket(p) => {
                            let Some(&(link, _)) = interfaces.first() else {
                                return Some(Err(
                                    "simple packet block before any interface block".into()
                                ));
                            };
                            return Some(Ok((link, *last, p.data.into_owned())));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Peels one frame down to IPv4 and queues what it carries.
    fn peel(&mut self, link: DataLink, at: SystemTime, bytes: &[u8]) {
        let frame = self.stats.frames;
        let sliced = match link {
            DataLink::ETHERNET => SlicedPacket::from_ethernet(bytes).ok(),
            DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(bytes).ok(),
            // SLL2: protocol type (2), reserved (2), interface index (4), ARPHRD (2), packet
            // type (1), address length (1), address (8); the network layer starts at 20.
            DataLink::LINUX_SLL2 => bytes.get(20..).and_then(|rest| {
                let proto = EtherType(u16::from_be_bytes([bytes[0], bytes[1]]));
                SlicedPacket::from_ether_type(proto, rest).ok()
            }),
            DataLink::RAW | DataLink::IPV4 | DataLink::Unknown(12) | DataLink::Unknown(14) => {
                SlicedPacket::from_ip(bytes).ok()
            }
            // BSD loopback: a 4-byte address family in host order, then the IP packet.
            DataLink::NULL | DataLink::LOOP => {
                bytes.get(4..).and_then(|ip| SlicedPacket::from_ip(ip).ok())
            }
            _ => None,
        };
        let Some(p) = sliced else {
            self.stats.skipped += 1;
            return;
        };
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            self.stats.skipped += 1;
            return;
        };
        let (src_ip, dst_ip) = (ip.header().source_addr(), ip.header().destination_addr());
        let at_ports =
            |s: u16, d: u16| (SocketAddrV4::new(src_ip, s), SocketAddrV4::new(dst_ip, d));
        if ip.header().is_fragmenting_payload() {
            self.stats.fragments += 1;
            if self.stats.fragments.is_multiple_of(256) {
                let horizon = at.checked_sub(FRAGMENT_TIMEOUT).unwrap_or(UNIX_EPOCH);
                self.defrag.retain(|t| *t >= horizon);
            }
            let whole = match self.defrag.process_sliced_packet(&p, at, ()) {
                Ok(Some(w)) => w,
                Ok(None) => return,
                Err(_) => {
                    self.stats.skipped += 1;
                    return;
                }
            };
            let body = match whole.ip_number {
                etherparse::IpNumber::UDP => UdpSlice::from_slice(&whole.payload).ok().map(|u| {
                    (
                        at_ports(u.source_port(), u.destination_port()),
                        Body::Udp(u.payload().to_vec()),
                    )
                }),
                etherparse::IpNumber::ICMP => {
                    Some((at_ports(0, 0), Body::Icmp(whole.payload.clone())))
                }
                _ => None,
            };
            self.defrag.return_buf(whole);
            match body {
                Some(((src, dst), body)) => self.push(frame, at, src, dst, body),
                None => self.stats.skipped += 1,
            }
            return;
        }
        match &p.transport {
            Some(TransportSlice::Udp(u)) => {
                let (src, dst) = at_ports(u.source_port(), u.destination_port());
                self.push(frame, at, src, dst, Body::Udp(u.payload().to_vec()));
            }
            Some(TransportSlice::Icmpv4(i)) => {
                let (src, dst) = at_ports(0, 0);
                self.push(frame, at, src, dst, Body::Icmp(i.slice().to_vec()));
            }
            _ => self.stats.skipped += 1,
        }
    }

    fn push(
        &mut self,
        frame: u64,
        at: SystemTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        body: Body,
    ) {
        self.stats.datagrams += 1;
        self.ready.push_back(Datagram {
            frame,
            at,
            src,
            dst,
            body,
        });
    }
}

/// One line for a damaged record: a file cut short says so in the words a user expects.
fn damage(e: &pcap_file::PcapError) -> String {
    match e {
        pcap_file::PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file is truncated (its last record is cut short)".into()
        }
        e => format!("damaged record ({e})"),
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Datagram, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Some(Ok(d));
            }
            if self.failed {
                return None;
            }
            match self.next_record()? {
                Ok((link, at, bytes)) => {
                    self.stats.frames += 1;
                    self.peel(link, at, &bytes);
                }
                Err(what) => {
                    self.failed = true;
                    self.source = None;
                    return Some(Err(ReadError {
                        frames: self.stats.frames,
                        what,
                    }));
                }
            }
        }
    }
}
