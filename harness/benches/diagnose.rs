//! Throughput and memory of `harness diagnose` on a large capture, with tshark as the anchor.
//!
//! `cargo bench -p harness --bench diagnose` (no root: it only writes and reads a file).
//! Plain `main` (`harness = false`), no criterion. Writes a synthetic server-side pcap of
//! `DIAGNOSE_BENCH_MB` MB (default 100; 1024 for the 1 GB run) made of realistic healthy calls
//! behind a NAT — REGISTER/200, INVITE/100/180/200 with SDP, ACK, 20 ms G.711 RTP both ways for a
//! few seconds, BYE/200 — with 40 calls in progress at once, then measures, each in a child
//! process so that peak RSS is the measured run's own:
//! - `diagnose_file` on it (this bench re-executed with `DIAGNOSE_BENCH_CHILD=FILE`), and
//! - `tshark -r FILE -Y sip -T fields -e sip.Method` (skipped, with a line saying so, when tshark
//!   is not installed),
//!
//! `DIAGNOSE_BENCH_RUNS` times each (default 5; `DIAGNOSE_BENCH_ANCHOR_RUNS` for tshark, default
//! the same), and prints medians of wall time, MB/s and peak RSS (`ru_maxrss` from `wait4`), and
//! the ratios. The file is read from the page cache (it was just written): this measures parsing,
//! not the disk. `DIAGNOSE_BENCH_DIR` chooses where the file goes (default the temp dir);
//! `DIAGNOSE_BENCH_KEEP=1` leaves it there (to profile `DIAGNOSE_BENCH_CHILD=FILE` on it).

use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONCURRENT_CALLS: u32 = 40;
/// RTP packets per direction per call: 3 s of 20 ms packets.
const RTP_PER_CALL: u32 = 150;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const NAT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const MEDIA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 60);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(file) = std::env::var("DIAGNOSE_BENCH_CHILD") {
        child(Path::new(&file));
        return;
    }
    let mb = env_num("DIAGNOSE_BENCH_MB", 100);
    let runs = env_num("DIAGNOSE_BENCH_RUNS", 5).max(1) as usize;
    let anchor_runs = env_num("DIAGNOSE_BENCH_ANCHOR_RUNS", runs as u64) as usize;
    let dir = std::env::var_os("DIAGNOSE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("diagnose-bench-{}.pcap", std::process::id()));

    let t = Instant::now();
    let written = write_capture(&path, mb << 20).expect("write the synthetic capture");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let size_mb = size as f64 / (1u64 << 20) as f64;
    println!(
        "capture: {} ({size_mb:.0} MB, {} frames, {} calls, {} SIP messages) written in {:.2} s",
        path.display(),
        written.frames,
        written.calls,
        written.sip,
        t.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe().expect("current exe");
    let mut ours = Vec::new();
    for _ in 0..runs {
        let mut cmd = Command::new(&exe);
        cmd.env("DIAGNOSE_BENCH_CHILD", &path)
            .stdout(Stdio::piped());
        let (wall, rss, out) = measure(cmd);
        let line = String::from_utf8_lossy(&out);
        assert!(line.starts_with("ok"), "diagnose child failed: {line}");
        ours.push((wall, rss));
    }
    let (d_wall, d_rss) = medians(&ours);
    println!(
        "diagnose_file: median {:.2} s = {:.0} MB/s, peak RSS {:.1} MB (median of {runs}; runs: {})",
        d_wall.as_secs_f64(),
        size_mb / d_wall.as_secs_f64(),
        d_rss as f64 / 1024.0,
        list(&ours)
    );

    let tshark = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !tshark {
        println!("tshark: not installed, anchor skipped (apt-get install tshark)");
    } else if anchor_runs == 0 {
        println!("tshark: anchor skipped (DIAGNOSE_BENCH_ANCHOR_RUNS=0)");
    } else {
        let mut theirs = Vec::new();
        for _ in 0..anchor_runs {
            let mut cmd = Command::new("tshark");
            cmd.args(["-r"])
                .arg(&path)
                .args(["-Y", "sip", "-T", "fields", "-e", "sip.Method"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let (wall, rss, out) = measure(cmd);
            // One line per SIP frame; a response's line is empty (it has no method).
            let lines = out.iter().filter(|b| **b == b'\n').count();
            assert_eq!(
                lines as u64, written.sip,
                "tshark saw another number of SIP messages"
            );
            theirs.push((wall, rss));
        }
        let (t_wall, t_rss) = medians(&theirs);
        println!(
            "tshark -Y sip:  median {:.2} s = {:.0} MB/s, peak RSS {:.1} MB (median of {anchor_runs}; runs: {})",
            t_wall.as_secs_f64(),
            size_mb / t_wall.as_secs_f64(),
            t_rss as f64 / 1024.0,
            list(&theirs)
        );
        println!(
            "ratio: diagnose is {:.1}x tshark's speed and uses {:.2}x its peak memory",
            t_wall.as_secs_f64() / d_wall.as_secs_f64(),
            d_rss as f64 / t_rss as f64
        );
    }
    if std::env::var_os("DIAGNOSE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}

/// The child: one `diagnose_file`, its result checked, "ok" on stdout.
fn child(path: &Path) {
    let report = harness::diagnose::diagnose_file(path).expect("diagnose");
    assert!(report.calls > 0 && report.rtp_packets > 0);
    println!(
        "ok {} frames {} calls {} problems",
        report.frames,
        report.calls,
        report.findings.len()
    );
}

/// Runs a command to its end; wall time, the child's own peak RSS (KiB) and its stdout.
// The child is reaped by wait4 (for its rusage), which clippy does not know.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command) -> (Duration, i64, Vec<u8>) {
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut out = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_end(&mut s, &mut out).expect("read child stdout");
    }
    let mut status = 0;
    // SAFETY: rusage is plain data, and the pid is our own child that nobody else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    assert!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: status {status}"
    );
    (wall, usage.ru_maxrss, out)
}

fn medians(v: &[(Duration, i64)]) -> (Duration, i64) {
    let mut walls: Vec<Duration> = v.iter().map(|x| x.0).collect();
    let mut rss: Vec<i64> = v.iter().map(|x| x.1).collect();
    walls.sort();
    rss.sort();
    (walls[walls.len() / 2], rss[rss.len() / 2])
}

fn list(v: &[(Duration, i64)]) -> String {
    v.iter()
        .map(|(w, r)| format!("{:.2} s/{:.0} MB", w.as_secs_f64(), *r as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The synthetic capture

struct Written {
    frames: u64,
    calls: u64,
    sip: u64,
}

/// A pcap (microseconds, Ethernet) streamed to disk: nothing of it is held in memory.
struct Pcap<W: Write> {
    out: W,
    now: Duration,
    frames: u64,
    bytes: u64,
    sip: u64,
    ip_id: u16,
}

impl<W: Write> Pcap<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&[0; 8])?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(Pcap {
            out,
            now: Duration::from_secs(1_796_000_000),
            frames: 0,
            bytes: 24,
            sip: 0,
            ip_id: 0,
        })
    }

    fn udp(
        &mut self,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        payload: &[u8],
    ) -> std::io::Result<()> {
        let ip_len = 20 + 8 + payload.len();
        let len = 14 + ip_len;
        self.out
            .write_all(&(self.now.as_secs() as u32).to_le_bytes())?;
        self.out
            .write_all(&self.now.subsec_micros().to_le_bytes())?;
        self.out.write_all(&(len as u32).to_le_bytes())?;
        self.out.write_all(&(len as u32).to_le_bytes())?;
        let mut h = [0u8; 42];
        h[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        h[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        h[14] = 0x45;
        h[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        h[18..20].copy_from_slice(&self.ip_id.to_be_bytes());
        h[20] = 0x40; // don't fragment
        h[22] = 64;
        h[23] = 17;
        h[26..30].copy_from_slice(&src.0.octets());
        h[30..34].copy_from_slice(&dst.0.octets());
        let mut sum: u32 = h[14..34]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        h[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        h[34..36].copy_from_slice(&src.1.to_be_bytes());
        h[36..38].copy_from_slice(&dst.1.to_be_bytes());
        h[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(payload)?;
        self.frames += 1;
        self.bytes += 16 + len as u64;
        Ok(())
    }

    fn sip(&mut self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), m: &str) -> std::io::Result<()> {
        self.sip += 1;
        self.udp(src, dst, m.as_bytes())
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
    }
}

/// One call in progress: a phone behind the NAT, its mapped ports, and how far it has got.
struct Call {
    n: u64,
    sip: (Ipv4Addr, u16),
    rtp: (Ipv4Addr, u16),
    far: (Ipv4Addr, u16),
    sent: u32,
    ssrc: u32,
}

fn phone(n: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, (n / 200 % 250) as u8, (n % 200 + 20) as u8)
}

fn message(start: &str, call: &Call, cseq: &str, extra: &str, body: &str) -> String {
    let n = call.n;
    let lan = phone(n);
    let (nat, port) = call.sip;
    format!(
        "{start}\r\nVia: SIP/2.0/UDP {lan}:5060;{via}branch=z9hG4bK{n}x{cseq_n}\r\n\
         From: <sip:{n}@example.net>;tag=a{n}\r\nTo: <sip:echo@example.net>;tag=b{n}\r\n\
         Call-ID: {n}-bench@{lan}\r\nCSeq: {cseq}\r\nContact: <sip:{n}@{nat}:{port}>\r\n\
         Max-Forwards: 70\r\nUser-Agent: bench-phone/1.0\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
        cseq_n = cseq.split(' ').next().unwrap_or("1"),
        // The phone asks for rport; the server's responses carry what it saw.
        via = if start.starts_with("SIP/2.0") {
            format!("received={nat};rport={port};")
        } else {
            "rport;".to_string()
        },
        len = body.len()
    )
}

fn sdp(n: u64, addr: Ipv4Addr, port: u16) -> String {
    format!(
        "v=0\r\no=- {n} {n} IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn start(p: &mut Pcap<impl Write>, n: u64) -> std::io::Result<Call> {
    let call = Call {
        n,
        sip: (NAT, 20000 + (n % 20000) as u16),
        rtp: (NAT, 40000 + (n % 10000) as u16 * 2),
        far: (MEDIA, 30000 + (n % 10000) as u16 * 2),
        sent: 0,
        ssrc: 0x5eed_0000 ^ n as u32,
    };
    let srv = (SERVER, 5060);
    let ms = Duration::from_millis(1);
    p.sip(
        call.sip,
        srv,
        &message(
            "REGISTER sip:example.net SIP/2.0",
            &call,
            "1 REGISTER",
            "Expires: 300\r\n",
            "",
        ),
    )?;
    p.tick(ms);
    p.sip(
        srv,
        call.sip,
        &message(
            "SIP/2.0 200 OK",
            &call,
            "1 REGISTER",
            "Expires: 300\r\n",
            "",
        ),
    )?;
    p.tick(ms);
    let offer = sdp(n, call.rtp.0, call.rtp.1);
    let ct = "Content-Type: application/sdp\r\n";
    p.sip(
        call.sip,
        srv,
        &message(
            "INVITE sip:echo@example.net SIP/2.0",
            &call,
            "2 INVITE",
            ct,
            &offer,
        ),
    )?;
    p.tick(ms);
    p.sip(
        srv,
        call.sip,
        &message("SIP/2.0 100 Trying", &call, "2 INVITE", "", ""),
    )?;
    p.tick(ms);
    p.sip(
        srv,
        call.sip,
        &message("SIP/2.0 180 Ringing", &call, "2 INVITE", "", ""),
    )?;
    p.tick(ms);
    let answer = sdp(n + 1_000_000, call.far.0, call.far.1);
    p.sip(
        srv,
        call.sip,
        &message("SIP/2.0 200 OK", &call, "2 INVITE", ct, &answer),
    )?;
    p.tick(ms);
    p.sip(
        call.sip,
        srv,
        &message("ACK sip:echo@example.net SIP/2.0", &call, "2 ACK", "", ""),
    )?;
    Ok(call)
}

fn end(p: &mut Pcap<impl Write>, call: &Call) -> std::io::Result<()> {
    let srv = (SERVER, 5060);
    p.sip(
        call.sip,
        srv,
        &message("BYE sip:echo@example.net SIP/2.0", call, "3 BYE", "", ""),
    )?;
    p.tick(Duration::from_millis(1));
    p.sip(
        srv,
        call.sip,
        &message("SIP/2.0 200 OK", call, "3 BYE", "", ""),
    )
}

fn rtp(p: &mut Pcap<impl Write>, call: &mut Call) -> std::io::Result<()> {
    let mut pkt = [0u8; 172];
    pkt[0] = 0x80;
    pkt[1] = 0;
    let seq = call.sent as u16;
    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
    pkt[4..8].copy_from_slice(&(call.sent * 160).to_be_bytes());
    pkt[8..12].copy_from_slice(&call.ssrc.to_be_bytes());
    for (i, b) in pkt[12..].iter_mut().enumerate() {
        *b = 0xd5 ^ (i as u8 & 0x0f);
    }
    p.udp(call.rtp, call.far, &pkt)?;
    pkt[8..12].copy_from_slice(&(!call.ssrc).to_be_bytes());
    p.udp(call.far, call.rtp, &pkt)?;
    call.sent += 1;
    Ok(())
}

/// Writes calls until the file holds `target` bytes; every call started is also ended.
fn write_capture(path: &Path, target: u64) -> std::io::Result<Written> {
    let file = std::fs::File::create(path)?;
    let mut p = Pcap::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut calls: Vec<Call> = Vec::new();
    let mut next = 0u64;
    // Each 20 ms tick every call in progress sends one RTP packet each way; a finished call is
    // replaced by a new one while the file is short of its size.
    loop {
        while calls.len() < CONCURRENT_CALLS as usize && p.bytes < target {
            calls.push(start(&mut p, next)?);
            next += 1;
        }
        if calls.is_empty() {
            break;
        }
        for c in calls.iter_mut() {
            rtp(&mut p, c)?;
        }
        p.tick(Duration::from_millis(20));
        let mut i = 0;
        while i < calls.len() {
            // Lengths differ a little so that the calls do not all end together.
            let limit = RTP_PER_CALL + (calls[i].n % 17) as u32;
            if calls[i].sent >= limit {
                let c = calls.swap_remove(i);
                end(&mut p, &c)?;
            } else {
                i += 1;
            }
        }
    }
    p.out.flush()?;
    Ok(Written {
        frames: p.frames,
        calls: next,
        sip: p.sip,
    })
}
