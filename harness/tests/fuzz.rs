//! Every parser that reads bytes from the network, a capture or a user's file, fed generated
//! inputs from a seeded RNG: never a panic. Stable Rust, no cargo-fuzz.
//!
//! Inputs are mutations of real ones (the fixture captures' SIP, SDP, STUN, RTP and RTCP
//! payloads, the captures themselves, the catalogue's scenario files): bit flips, interesting
//! bytes and lengths, inserted, deleted, duplicated and spliced ranges, truncation. A mutated
//! valid message gets past the first length check and into the parser's depths, which random
//! bytes rarely do.
//!
//! `cargo test -p harness --test fuzz [-- NAME…]` runs `FUZZ_CASES` inputs per parser (default
//! 10,000, so CI keeps the harness alive); `just fuzz` runs a million in release. `FUZZ_SEED`
//! replays a run (the seed is always printed). A panicking input is saved under
//! `target/tmp/fuzz-panics/` and named in the failure.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::alg::{Alg, AlgFault, Direction};
use harness::diagnose::{Body, CaptureReader, Packet};
use harness::machine::Machine;
use harness::seeded::Rng;

/// splitmix64.
/// Bytes parsers trip over: delimiters of SIP, SDP and TOML, and the edges of integers.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b' ', b'\t', b':', b';', b',', b'=', b'<', b'>', b'"',
    b'[', b']', b'{', b'}', b'.', b'-', b'0', b'9', b'/', b'@', b'%', 0xc3, 0xe2,
];
/// Text that means something to one of the parsers, spliced in whole.
const TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "Content-Length: 0\r\n",
    "Content-Length: 99999999999\r\n",
    "Content-Length: -1\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK\r\n",
    "Contact: <sip:a@192.168.1.10:5060>\r\n",
    "c=IN IP4 192.168.1.10\r\n",
    "m=audio 65536 RTP/AVP 0\r\n",
    "m=audio 0 RTP/AVP\r\n",
    "a=rtcp:99999\r\n",
    "sip:",
    ";received=",
    ";rport=",
    "999999999999999999999",
    "255.255.255.255",
    "[::1]",
    " = ",
    "\"\"\"",
    "[[component]]\n",
    "[[router]]\n",
    "[[host]]\n",
    "[[step]]\n",
    "[[expect]]\n",
    "kind = \"ua\"\n",
    "nat = \"symmetric\"\n",
    "at-ms = 18446744073709551615\n",
    "t1-ms = 0\n",
    "{",
    "}",
];

/// Applies 1–8 random mutations to `seed`; `others` are spliced from.
fn mutate(rng: &mut Rng, seed: &[u8], others: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = *rng.pick(INTERESTING);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next_u64() as u8;
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            5 if len > 0 => {
                // Duplicate a range somewhere else (repeated headers, attributes, records).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 => {
                let i = rng.below(len + 1);
                v.truncate(i);
            }
            7 if len >= 2 => {
                // A 16-bit field (length, port, attribute type) set to an edge value.
                let i = rng.below(len - 1);
                let val: u16 =
                    *rng.pick(&[0, 1, 0x7fff, 0x8000, 0xffff, len as u16, len as u16 + 1]);
                v[i..i + 2].copy_from_slice(&val.to_be_bytes());
            }
            8 => {
                let t = rng.pick(TOKENS).as_bytes();
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            9 if !others.is_empty() => {
                let o = rng.pick(others);
                if !o.is_empty() {
                    let a = rng.below(o.len());
                    let b = a + rng.below(o.len() - a) + 1;
                    let i = rng.below(len + 1);
                    v.splice(i..i, o[a..b].iter().copied());
                }
            }
            10 if len > 0 => {
                // A range of one repeated byte (long lines, long numbers, zero runs).
                let i = rng.below(len);
                let n = 1 + rng.below(512);
                let b = *rng.pick(INTERESTING);
                v.splice(i..i, std::iter::repeat_n(b, n));
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}

/// Inputs a parser is fed: mutated seeds, and now and then pure random bytes.
struct Corpus {
    seeds: Vec<Vec<u8>>,
    max_len: usize,
}

impl Corpus {
    fn input(&self, rng: &mut Rng) -> Vec<u8> {
        if rng.below(20) == 0 || self.seeds.is_empty() {
            let n = rng.below(self.max_len.min(1500));
            return (0..n).map(|_| rng.next_u64() as u8).collect();
        }
        let seed = rng.pick(&self.seeds);
        mutate(rng, seed, &self.seeds, self.max_len)
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn capture_files() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .map(|p| std::fs::read(p).expect("fixture"))
        .collect();
    v.sort();
    v
}

/// Every UDP payload of the fixture captures.
fn payloads(captures: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for c in captures {
        let Ok(reader) = CaptureReader::new(&c[..]) else {
            continue;
        };
        for d in reader.flatten() {
            if let Body::Udp(b) = d.body {
                out.push(b);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn is_sip(p: &[u8]) -> bool {
    p.first().is_some_and(u8::is_ascii_uppercase)
}

fn is_stun(p: &[u8]) -> bool {
    p.len() >= 20 && p[0] < 2 && p[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

fn is_rtp_or_rtcp(p: &[u8]) -> bool {
    p.len() >= 8 && p[0] >> 6 == 2
}

fn sdp_of(p: &[u8]) -> Option<Vec<u8>> {
    let at = p.windows(4).position(|w| w == b"\r\n\r\n")?;
    let body = &p[at + 4..];
    body.starts_with(b"v=0").then(|| body.to_vec())
}

/// An IPv4/UDP packet around `payload`, lengths consistent (checksums are not checked).
fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Every datagram of a real TURN conversation (binding, allocate with its 401 and authenticated
/// retry, permission, channel bind, send indication, ChannelData, and the answers), for seeds
/// the fixture captures lack.
fn turn_conversation() -> Vec<Vec<u8>> {
    use harness::turn::{client::TurnClientConfig, TurnClient, TurnServer, TurnServerConfig};
    let local: SocketAddr = "192.168.1.10:40000".parse().expect("literal");
    let listen: SocketAddr = "203.0.113.11:3478".parse().expect("literal");
    let peer: SocketAddr = "198.51.100.20:40000".parse().expect("literal");
    let mut server =
        TurnServer::new(TurnServerConfig::new(listen, "example.org").user("alice", "pw"))
            .expect("turn server");
    let mut cfg = TurnClientConfig::new(local, listen, "alice", "pw");
    cfg.seed = 7;
    let mut client = TurnClient::new(cfg);
    let now = Instant::now();
    let mut seen = Vec::new();
    let binding = harness::stun::Message::new(
        harness::stun::Class::Request,
        harness::stun::Method::BINDING,
        harness::stun::TransactionId::from_draws(|| 42),
    );
    seen.push(binding.encode(None, true).expect("binding request"));
    client.allocate(now);
    for step in 0..12 {
        if step == 4 {
            client.create_permission(peer.ip(), now);
            let _ = client.bind_channel(peer, now);
        }
        if step >= 6 {
            let _ = client.send_to(peer, b"\x80\x00\x00\x01rtp-ish payload", now);
        }
        while let Some(t) = client.poll_transmit() {
            seen.push(t.payload.clone());
            server.handle_datagram(listen, local, &t.payload, now);
        }
        while let Some(t) = server.poll_transmit() {
            seen.push(t.payload.clone());
            if t.destination == local {
                client.handle_datagram(local, listen, &t.payload, now);
            }
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
    }
    seen
}

/// `b` with a STUN header that agrees with it: 4-byte aligned, the length field true, the magic
/// cookie in place, a trailing FINGERPRINT dropped (any mutation would break it).
fn repair_stun(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    // ChannelData (first two bits 01) is left as mutated.
    if v.len() < 20 || harness::turn::ChannelData::is_channel_data(&v) {
        return v;
    }
    if v.len() >= 28 && v[v.len() - 8..v.len() - 6] == [0x80, 0x28] {
        v.truncate(v.len() - 8);
    }
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v.truncate(20 + 0xfffc);
    let len = (v.len() - 20) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    v[0] &= 0x3f;
    v
}

/// What a target does with one input (the RNG picks its incidental choices).
type Feed = Box<dyn FnMut(&mut Rng, &[u8])>;

/// One parser under test: its corpus and what it does with an input.
struct Target {
    name: &'static str,
    corpus: Corpus,
    run: Feed,
}

fn targets() -> Vec<Target> {
    let captures = capture_files();
    let all = payloads(&captures);
    let sip: Vec<Vec<u8>> = all.iter().filter(|p| is_sip(p)).cloned().collect();
    let sdp: Vec<Vec<u8>> = sip.iter().filter_map(|p| sdp_of(p)).collect();
    let mut stun: Vec<Vec<u8>> = all.iter().filter(|p| is_stun(p)).cloned().collect();
    stun.extend(turn_conversation());
    let rtp: Vec<Vec<u8>> = all.iter().filter(|p| is_rtp_or_rtcp(p)).cloned().collect();
    let phone = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 5060);
    let server = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 5060);
    let packets: Vec<Vec<u8>> = sip.iter().map(|p| ipv4_udp(phone, server, p)).collect();
    let scenario_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut scenarios: Vec<Vec<u8>> = harness::catalogue::scenario_files(&scenario_dir)
        .expect("the catalogue")
        .iter()
        .map(|p| std::fs::read(p).expect("scenario file"))
        .collect();
    scenarios.sort();
    for (what, v) in [("SIP", &sip), ("SDP", &sdp), ("STUN", &stun), ("RTP", &rtp)] {
        assert!(
            v.len() > 1,
            "the fixture captures hold no {what} to start from"
        );
    }

    let stun_local: SocketAddr = "203.0.113.10:3478".parse().expect("literal");
    let turn_local: SocketAddr = "203.0.113.11:3478".parse().expect("literal");
    let peer: SocketAddr = "198.51.100.20:40000".parse().expect("literal");
    let t0 = Instant::now();
    let new_stun = move || {
        harness::stun::StunServer::new(harness::stun::ServerConfig::new(stun_local))
            .expect("stun server")
    };
    let new_turn = move || {
        harness::turn::TurnServer::new(
            harness::turn::TurnServerConfig::new(turn_local, "example.org").user("alice", "pw"),
        )
        .expect("turn server")
    };
    let mut stun_server = new_stun();
    let mut turn_server = new_turn();
    let mut served = 0u64;

    let mut algs: Vec<Alg> = std::iter::once(Alg::new(*server.ip(), []))
        .chain(AlgFault::ALL.iter().map(|f| Alg::new(*server.ip(), [*f])))
        .chain(std::iter::once(Alg::new(*server.ip(), AlgFault::ALL)))
        .collect();
    let sip_payloads = sip.clone();

    vec![
        Target {
            name: "sip",
            corpus: Corpus {
                seeds: sip.clone(),
                max_len: 4096,
            },
            run: Box::new(|rng, b| {
                let _ = harness::sip::message::parse(b);
                // The same bytes as a TCP stream, cut at a random place (RFC 3261 §18.3 framing).
                let cut = rng.below(b.len() + 1);
                let mut d = harness::sip::framing::StreamDecoder::server();
                d.handle_bytes(&b[..cut]);
                d.handle_bytes(&b[cut..]);
                while let Some(f) = d.poll_frame() {
                    if let Ok(f) = f {
                        let _ = harness::sip::message::parse(&f.into_bytes());
                    }
                }
            }),
        },
        Target {
            name: "sdp",
            corpus: Corpus {
                seeds: sdp,
                max_len: 2048,
            },
            run: Box::new(move |_, b| {
                let _ = harness::sip::ua::parse_sdp(b);
                let _ = harness::sbc::rewrite::rewrite_sdp(b, peer);
            }),
        },
        Target {
            name: "stun-turn",
            corpus: Corpus {
                seeds: stun,
                max_len: 1500,
            },
            run: Box::new(move |rng, b| {
                // Half the inputs repaired the way a sender would build them (length field
                // true, cookie in place, no FINGERPRINT to mismatch), so the mutation reaches
                // the attributes and the servers instead of stopping at the header checks.
                let repaired;
                let b = if rng.below(2) == 0 {
                    repaired = repair_stun(b);
                    &repaired[..]
                } else {
                    b
                };
                let _ = harness::stun::Message::decode(b);
                let _ = harness::turn::ChannelData::decode(b);
                // The servers as they sit on the wire: state carried across inputs, outputs
                // drained, rebuilt now and then so state does not only grow.
                served += 1;
                if served.is_multiple_of(10_000) {
                    stun_server = new_stun();
                    turn_server = new_turn();
                }
                let now = t0 + Duration::from_millis(served);
                let from = if rng.below(2) == 0 {
                    peer
                } else {
                    "192.0.2.7:50000".parse().expect("literal")
                };
                stun_server.handle_datagram(stun_local, from, b, now);
                while stun_server.poll_transmit().is_some() {}
                while stun_server.poll_event().is_some() {}
                let local = match turn_server.relayed_addresses().first() {
                    Some(r) if rng.below(4) == 0 => *r,
                    _ => turn_local,
                };
                turn_server.handle_datagram(local, from, b, now);
                turn_server.handle_timeout(now);
                while turn_server.poll_transmit().is_some() {}
                while turn_server.poll_event().is_some() {}
            }),
        },
        Target {
            name: "rtp-rtcp",
            corpus: Corpus {
                seeds: rtp,
                max_len: 1500,
            },
            run: Box::new(|_, b| {
                let _ = harness::rtp::RtpPacket::decode(b);
                // The trace's one decoder, which tells RTP, RTCP, STUN, TURN and SIP apart.
                let _ = harness::trace::decode_udp(b);
            }),
        },
        Target {
            name: "scenario",
            corpus: Corpus {
                seeds: scenarios,
                max_len: 64 * 1024,
            },
            run: Box::new(|_, b| {
                let text = String::from_utf8_lossy(b);
                let _ = harness::scenario::Scenario::from_str("fuzz.toml", &text);
            }),
        },
        Target {
            name: "alg",
            corpus: Corpus {
                seeds: packets,
                max_len: 4096,
            },
            run: Box::new(move |rng, b| {
                let n = rng.below(algs.len());
                let alg = &mut algs[n];
                let dir = if rng.below(2) == 0 {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                // The packet as mutated, and its payload re-wrapped with consistent lengths so
                // the rewriter itself sees the damage.
                let _ = alg.handle_packet(dir, b);
                let payload = if b.len() > 28 { &b[28..] } else { b };
                let wrapped = ipv4_udp(phone, server, payload);
                let _ = alg.handle_packet(dir, &wrapped);
                if rng.below(8) == 0 {
                    let clean = rng.pick(&sip_payloads);
                    let _ = alg.handle_sip(dir, phone, clean);
                }
            }),
        },
        Target {
            name: "capture",
            corpus: Corpus {
                seeds: captures,
                max_len: 64 * 1024,
            },
            run: Box::new(|_, b| {
                let Ok(reader) = CaptureReader::new(b) else {
                    return;
                };
                let packets: Vec<Packet> = reader
                    .take_while(Result::is_ok)
                    .filter_map(|d| d.ok().and_then(Packet::decode))
                    .collect();
                let report = harness::diagnose::analyse(packets.iter().cloned());
                let _ = harness::diagnose::report::text(&report);
                let _ = harness::import::import("fuzz.pcap", "fuzz", packets);
            }),
        },
    ]
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn main() {
    // libtest's own flags (`--nocapture`, `--test-threads`, …) are ignored; other words
    // choose targets by name.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: u64 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    // Built before the quiet hook, so a broken corpus fails loudly.
    let targets = targets();
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
    }));
    println!("fuzz: {cases} inputs per parser, FUZZ_SEED={seed}");
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-panics");
    let mut failed = Vec::new();
    let started = Instant::now();
    for (k, mut t) in targets.into_iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|o| t.name.contains(o.as_str())) {
            continue;
        }
        let mut rng = Rng::new(seed ^ (k as u64).wrapping_mul(0x1000_0000_01b3));
        let mut panics = 0u64;
        let mut slowest = Duration::ZERO;
        let begun = Instant::now();
        for i in 0..cases {
            let input = t.corpus.input(&mut rng);
            let one = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&mut rng, &input)));
            slowest = slowest.max(one.elapsed());
            if r.is_err() {
                panics += 1;
                let why = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_default();
                if panics <= 5 {
                    let _ = std::fs::create_dir_all(&saved);
                    let file = saved.join(format!("{}-{seed}-{i}.bin", t.name));
                    let _ = std::fs::write(&file, &input);
                    failed.push(format!("{}: input {i} ({}): {why}", t.name, file.display()));
                }
            }
        }
        println!(
            "fuzz: {:<10} {:>9} inputs {:>3} panics {:>8.1} s   slowest input {:.2} ms",
            t.name,
            cases,
            panics,
            begun.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1e3
        );
    }
    println!(
        "fuzz: done in {:.1} s, FUZZ_SEED={seed}",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        eprintln!("fuzz: panics (FUZZ_SEED={seed}):\n{}", failed.join("\n"));
        std::process::exit(1);
    }
}
