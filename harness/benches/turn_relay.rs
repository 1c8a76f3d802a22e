//! Packets per second our TURN relay forwards on one core, side by side with coturn (issue 6).
//!
//! `sudo -E cargo bench -p harness --bench turn_relay` (root: it creates network namespaces).
//! Plain `main` (`harness = false`), no criterion. Traffic stays between the topology's own
//! namespaces; every loop is bounded in count and time (≤ 10 s per run, ≤ 3 min in all).
//!
//! Topology: `shapes::two_lans(FullCone, FullCone)`: alice (192.168.1.10) behind `home-a`, bob
//! (192.168.2.10) behind `home-b`, the TURN server on `server` (203.0.113.10:3478, relay ports
//! 50000–50031). Each run starts a fresh server, either
//! - ours: `TurnServerTask::serve` on a dedicated thread with a current-thread tokio runtime,
//!   that thread pinned to CPU `SERVER_CPU`; or
//! - coturn: `Coturn::start` with long-term credentials and `-m 1` (one relay thread besides
//!   its listener and authentication threads), and every coturn thread pinned to the same CPU
//!   with `sched_setaffinity`;
//!
//! then alice and bob each allocate (user alice, long-term credentials) and bind a channel to
//! the other's relayed address with our sans-IO `TurnClient`, driven by a small blocking loop
//! on their own sockets. Then alice blasts ChannelData carrying 172-byte RTP-sized payloads
//! (12-byte RTP header + 160 bytes of PCMU) as fast as one blocking `send` loop goes, for
//! `BLAST`, and bob counts what arrives. Each packet crosses the server twice: client →
//! alice's relay → bob's relay → bob (what every call between two relayed phones does).
//! Rates are measured in the window [`WARM`, `BLAST`] after the start. Sender and receiver are
//! pinned to the other CPU, so the server's core runs nothing of theirs; the kernel's
//! forwarding work that a `send` triggers (veth, bridge, NAT) is charged to the CPU that sends.
//!
//! Which side saturated is read from the counters: the sender's rate against the forwarded
//! rate, the server namespace's UDP `RcvbufErrors` (its sockets overflowed: the server did not
//! keep up), the server's CPU use and bob's `RcvbufErrors` (the receiver did not keep up).
//!
//! `SNH_TURN_FLAT=1` puts alice (203.0.113.20) and bob (198.51.100.20) on the public segment
//! instead, without NATs, which shows how much of the per-packet cost is the kernel's NAT path.
//!
//! Environment: `SNH_TURN_RUNS` (default 5, 1–5) repetitions per server, `SNH_TURN_SECS`
//! (default 3, 1–8) seconds of blast per run, `SNH_TURN_COTURN_THREADS` (default 1) for `-m`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use harness::machine::Machine;
use harness::peers::coturn::{Coturn, CoturnConfig};
use harness::shapes::{self, SERVER, SERVER_ALT};
use harness::turn::{
    ChannelData, Event, TurnClient, TurnClientConfig, TurnServerConfig, TurnServerStats,
    TurnServerTask,
};
use harness::{Node, Topology, INTERNET};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use sim_nat::NatType;

/// Public addresses of alice and bob in the flat topology (`SNH_TURN_FLAT=1`).
const FLAT_ALICE: &str = "203.0.113.20";
const FLAT_BOB: &str = "198.51.100.20";
const REALM: &str = "harness.test";
const USER: &str = "alice";
const PASSWORD: &str = "secret";
const PORT: u16 = 3478;
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 50000..=50031;
/// RTP header + 20 ms of PCMU.
const PAYLOAD: usize = 172;

const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 0;
/// Start-up transients are left out of the rates.
const WARM: Duration = Duration::from_millis(500);
/// What arrives after the sender stops still counts towards the totals (not the rates).
const DRAIN: Duration = Duration::from_millis(300);
const SETUP: Duration = Duration::from_secs(5);
/// A hard ceiling on the sender loop, whatever the clock says.
const MAX_PACKETS: u64 = 50_000_000;
/// The whole bench stops starting new runs past this.
const BUDGET: Duration = Duration::from_secs(150);

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn env_num(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(*range.start(), *range.end())
}

fn pin(tid: i32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(tid), &set).with_context(|| format!("pin {tid} to {cpu}"))?;
    Ok(())
}

fn pin_self(cpu: usize) -> Result<()> {
    pin(0, cpu)
}

// ---------------------------------------------------------------------------------------------
// Counters: /proc/stat per CPU, /proc/<pid>/task/<tid>/stat, UDP MIB per namespace

/// (busy, total) clock ticks of one CPU.
fn cpu_ticks(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let key = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&key)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// (utime, stime) of the given threads of `pid`, in clock ticks.
fn thread_ticks(pid: u32, tids: &[i32]) -> (u64, u64) {
    tids.iter()
        .map(|tid| {
            let s =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| {
                f.get(i - 3)
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (n(14), n(15))
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Udp {
    in_datagrams: u64,
    out_datagrams: u64,
    rcvbuf_errors: u64,
}

/// The UDP MIB of `node`'s namespace (read by its worker thread: /proc/thread-self/net).
fn udp_mib(node: &Node) -> Udp {
    let text = node
        .netns()
        .run_blocking(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return Udp::default();
    };
    let get = |name: &str| {
        h.split_whitespace()
            .position(|k| k == name)
            .and_then(|i| v.split_whitespace().nth(i))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    Udp {
        in_datagrams: get("InDatagrams"),
        out_datagrams: get("OutDatagrams"),
        rcvbuf_errors: get("RcvbufErrors"),
    }
}

/// A snapshot of everything sampled at the window's edges.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    server_cpu: (u64, u64),
    client_cpu: (u64, u64),
    server_threads: (u64, u64),
    server_udp: Udp,
    bob_udp: Udp,
}

// ---------------------------------------------------------------------------------------------
// Clients: our sans-IO TurnClient on a blocking socket

fn bind_in(node: &Node, addr: SocketAddr) -> Result<UdpSocket> {
    node.netns()
        .run_blocking(move || UdpSocket::bind(addr))?
        .with_context(|| format!("bind {addr} in {}", node.name()))
}

/// Runs `client` on `sock` until `done` holds, at most `within` (and at most 10 000 turns).
fn drive(
    client: &mut TurnClient,
    sock: &UdpSocket,
    done: impl Fn(&TurnClient) -> bool,
    within: Duration,
) -> Result<()> {
    let end = Instant::now() + within;
    let local = client.local();
    let mut buf = [0u8; 2048];
    for _ in 0..10_000 {
        while let Some(t) = client.poll_transmit() {
            let _ = sock.send_to(&t.payload, t.destination);
        }
        while let Some(e) = client.poll_event() {
            if let Event::Failed { method, error } = e {
                bail!("{method} failed: {error}");
            }
        }
        if done(client) {
            return Ok(());
        }
        let now = Instant::now();
        ensure!(
            now < end,
            "no answer from the TURN server within {within:?}"
        );
        let wake = client.poll_timeout().map_or(end, |t| t.min(end));
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => client.handle_datagram(local, from, &buf[..n], Instant::now()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
    }
    bail!("client loop did not settle")
}

struct Pair {
    alice: UdpSocket,
    bob: UdpSocket,
    /// Bob's channel number for alice's relayed address: what the received ChannelData carries.
    bob_channel: u16,
    alice_channel: u16,
}

/// Both clients allocate, then bind a channel to the other's relayed address.
fn setup_clients(topo: &Topology, server: SocketAddr, port: u16) -> Result<Pair> {
    let alice_addr = SocketAddr::new(topo.node("alice")?.addr().into(), port);
    let bob_addr = SocketAddr::new(topo.node("bob")?.addr().into(), port);
    let alice_sock = bind_in(topo.node("alice")?, alice_addr)?;
    let bob_sock = bind_in(topo.node("bob")?, bob_addr)?;
    let cfg = |local: SocketAddr, n: u64| {
        let mut c = TurnClientConfig::new(local, server, USER, PASSWORD);
        c.seed = u64::from(port) * 7919 + n;
        c
    };
    let mut alice = TurnClient::new(cfg(alice_addr, 0));
    let mut bob = TurnClient::new(cfg(bob_addr, 1));
    let now = Instant::now();
    alice.allocate(now);
    bob.allocate(now);
    drive(&mut alice, &alice_sock, |c| c.relayed().is_some(), SETUP).context("alice allocates")?;
    drive(&mut bob, &bob_sock, |c| c.relayed().is_some(), SETUP).context("bob allocates")?;
    let (ar, br) = (alice.relayed().unwrap(), bob.relayed().unwrap());
    let alice_channel = alice.bind_channel(br, Instant::now())?;
    let bob_channel = bob.bind_channel(ar, Instant::now())?;
    drive(&mut alice, &alice_sock, |c| c.channel(br).is_some(), SETUP)
        .context("alice binds a channel")?;
    drive(&mut bob, &bob_sock, |c| c.channel(ar).is_some(), SETUP)
        .context("bob binds a channel")?;
    // One packet each way proves the path before the clock starts.
    let probe = |from: &UdpSocket, ch: u16, to: &UdpSocket, want: u16| -> Result<()> {
        to.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            from.send_to(&ChannelData::encode(ch, b"probe"), server)?;
            if let Ok((n, _)) = to.recv_from(&mut buf) {
                if ChannelData::decode(&buf[..n]).is_ok_and(|cd| cd.channel == want) {
                    return Ok(());
                }
            }
        }
        bail!("no ChannelData came through the relay")
    };
    probe(&alice_sock, alice_channel, &bob_sock, bob_channel).context("alice -> bob probe")?;
    probe(&bob_sock, bob_channel, &alice_sock, alice_channel).context("bob -> alice probe")?;
    Ok(Pair {
        alice: alice_sock,
        bob: bob_sock,
        bob_channel,
        alice_channel,
    })
}

// ---------------------------------------------------------------------------------------------
// One blast

#[derive(Debug, Clone)]
struct Run {
    server: &'static str,
    sent_pps: f64,
    fwd_pps: f64,
    send_errors: u64,
    server_thread_cpu: f64,
    server_thread_user: f64,
    server_core_busy: f64,
    client_core_busy: f64,
    server_rcvbuf_errors_ps: f64,
    server_in_pps: f64,
    server_out_pps: f64,
    bob_rcvbuf_errors: u64,
}

impl Run {
    fn saturated(&self) -> &'static str {
        let loss = 1.0 - self.fwd_pps / self.sent_pps.max(1.0);
        if self.bob_rcvbuf_errors > 0 && self.server_rcvbuf_errors_ps < 1.0 {
            "receiver"
        } else if loss > 0.05 && self.server_rcvbuf_errors_ps > 0.0 {
            // The server's threads got less than 80% of their core: something else ran there.
            if self.server_thread_cpu < 80.0 && self.server_core_busy > 95.0 {
                "server*"
            } else {
                "server"
            }
        } else if loss <= 0.02 {
            "sender"
        } else {
            "unclear"
        }
    }
}

fn socket_buffer(sock: &UdpSocket, bytes: i32) {
    // SAFETY: setsockopt reads an int we own; failure leaves the default, which is fine.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        );
    }
}

/// Blasts alice → bob through `server` and samples the counters; `server_task` names the
/// threads whose CPU time is the server's.
fn blast(
    topo: &Topology,
    name: &'static str,
    server: SocketAddr,
    server_task: (u32, Vec<i32>),
    port: u16,
    secs: Duration,
) -> Result<Run> {
    let pair = setup_clients(topo, server, port)?;
    socket_buffer(&pair.bob, 8 << 20);
    let server_node = topo.node("server")?;
    let bob_node = topo.node("bob")?;
    let sample = || Sample {
        at: Instant::now(),
        server_cpu: cpu_ticks(SERVER_CPU),
        client_cpu: cpu_ticks(CLIENT_CPU),
        server_threads: thread_ticks(server_task.0, &server_task.1),
        server_udp: udp_mib(server_node),
        bob_udp: udp_mib(bob_node),
    };
    let mut rtp = vec![0xFFu8; PAYLOAD];
    rtp[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 0xDE, 0xAD, 0xBE, 0xEF]);
    let frame = ChannelData::encode(pair.alice_channel, &rtp);
    let t0 = Instant::now() + Duration::from_millis(100);
    let (t_warm, t_end) = (t0 + WARM, t0 + secs);
    let want = pair.bob_channel;
    let frame_len = frame.len();
    let (alice, bob) = (pair.alice, pair.bob);
    alice.connect(server)?;
    let (first, last, sender, receiver) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(move || -> Result<(u64, u64, u64, u64)> {
            pin_self(CLIENT_CPU)?;
            while Instant::now() < t0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (mut sent, mut errors) = (0u64, 0u64);
            let (mut at_warm, mut at_end) = (None, None);
            while sent + errors < MAX_PACKETS {
                for _ in 0..16 {
                    match alice.send(&frame) {
                        Ok(_) => sent += 1,
                        Err(_) => errors += 1,
                    }
                }
                let now = Instant::now();
                if at_warm.is_none() && now >= t_warm {
                    at_warm = Some(sent);
                }
                if now >= t_end {
                    at_end = Some(sent);
                    break;
                }
            }
            let w = at_warm.unwrap_or(0);
            Ok((at_end.unwrap_or(sent) - w, sent, errors, w))
        });
        let receiver = s.spawn(move || -> Result<(u64, u64)> {
            pin_self(CLIENT_CPU)?;
            bob.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut buf = [0u8; 2048];
            let mut count = 0u64;
            let (mut at_warm, mut at_end) = (None, None);
            let stop = t_end + DRAIN;
            // Bounded: one turn per datagram or per 20 ms timeout, until `stop`.
            for _ in 0..(MAX_PACKETS + 1_000) {
                if let Ok((n, _)) = bob.recv_from(&mut buf) {
                    if n == frame_len && u16::from_be_bytes([buf[0], buf[1]]) == want {
                        count += 1;
                    }
                }
                let now = Instant::now();
                if at_warm.is_none() && now >= t_warm {
                    at_warm = Some(count);
                }
                if at_end.is_none() && now >= t_end {
                    at_end = Some(count);
                }
                if now >= stop {
                    break;
                }
            }
            Ok((at_end.unwrap_or(count) - at_warm.unwrap_or(0), count))
        });
        std::thread::sleep(t_warm.saturating_duration_since(Instant::now()));
        let first = sample();
        std::thread::sleep(t_end.saturating_duration_since(Instant::now()));
        let last = sample();
        let sender = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let receiver = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        Ok((first, last, sender, receiver))
    })?;
    let window = (t_end - t_warm).as_secs_f64();
    let dt = (last.at - first.at).as_secs_f64().max(1e-3);
    let tps = ticks_per_sec();
    let busy =
        |a: (u64, u64), b: (u64, u64)| 100.0 * (b.0 - a.0) as f64 / ((b.1 - a.1) as f64).max(1.0);
    Ok(Run {
        server: name,
        sent_pps: sender.0 as f64 / window,
        fwd_pps: receiver.0 as f64 / window,
        send_errors: sender.2,
        server_thread_cpu: 100.0
            * ((last.server_threads.0 + last.server_threads.1)
                - (first.server_threads.0 + first.server_threads.1)) as f64
            / tps
            / dt,
        server_thread_user: 100.0 * (last.server_threads.0 - first.server_threads.0) as f64
            / tps
            / dt,
        server_core_busy: busy(first.server_cpu, last.server_cpu),
        client_core_busy: busy(first.client_cpu, last.client_cpu),
        server_rcvbuf_errors_ps: (last.server_udp.rcvbuf_errors - first.server_udp.rcvbuf_errors)
            as f64
            / dt,
        server_in_pps: (last.server_udp.in_datagrams - first.server_udp.in_datagrams) as f64 / dt,
        server_out_pps: (last.server_udp.out_datagrams - first.server_udp.out_datagrams) as f64
            / dt,
        bob_rcvbuf_errors: last.bob_udp.rcvbuf_errors - first.bob_udp.rcvbuf_errors,
    })
}

// ---------------------------------------------------------------------------------------------
// The two servers

fn run_ours(topo: &Topology, port: u16, secs: Duration) -> Result<(Run, TurnServerStats)> {
    let server_node = topo.node("server")?;
    let config = TurnServerConfig {
        relay_ports: RELAY_PORTS,
        ..TurnServerConfig::new(sa(SERVER, PORT), REALM)
    }
    .user(USER, PASSWORD);
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = mpsc::channel::<i32>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = s.spawn(move || -> Result<TurnServerStats> {
            pin_self(SERVER_CPU)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (task, events) = TurnServerTask::serve(server_node, config).await?;
                drop(events);
                let _ = ready_tx.send(nix::unistd::gettid().as_raw());
                // Bounded: the bench sends `stop` after its blast, or drops it on error.
                let _ = tokio::time::timeout(Duration::from_secs(30), stop_rx).await;
                Ok(task.stop().await?)
            })
        });
        let result = ready_rx
            .recv_timeout(SETUP)
            .context("our TURN server did not start")
            .and_then(|tid| {
                blast(
                    topo,
                    "ours",
                    sa(SERVER, PORT),
                    (std::process::id(), vec![tid]),
                    port,
                    secs,
                )
            });
        let _ = stop_tx.send(());
        let stats = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
        Ok((result?, stats?))
    })
}

/// The pid of the `turnserver` running in `node`'s namespace.
fn coturn_pid(node: &Node) -> Result<u32> {
    let ino = std::fs::metadata(node.netns().path())?.ino();
    let want = format!("net:[{ino}]");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap_or_default();
        if comm.trim() == "turnserver" && ns.to_string_lossy() == want {
            return Ok(pid);
        }
    }
    bail!("no turnserver process in {}", node.name())
}

fn tids(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn coturn_config(server: &Node, threads: u64) -> CoturnConfig {
    let mut c = CoturnConfig::stun_only(server);
    c.port = PORT;
    c.stun_only = false;
    c.no_auth = false;
    c.extra_args = vec![
        "--lt-cred-mech".into(),
        "--user".into(),
        format!("{USER}:{PASSWORD}"),
        "--realm".into(),
        REALM.into(),
        "--relay-ip".into(),
        SERVER.into(),
        "--min-port".into(),
        RELAY_PORTS.start().to_string(),
        "--max-port".into(),
        RELAY_PORTS.end().to_string(),
        "-m".into(),
        threads.to_string(),
    ];
    c
}

fn run_coturn(
    rt: &tokio::runtime::Runtime,
    topo: &Topology,
    port: u16,
    secs: Duration,
    threads: u64,
) -> Result<(Run, usize)> {
    let node = topo.node("server")?;
    let coturn = rt.block_on(Coturn::start(node, coturn_config(node, threads)))?;
    let result = (|| {
        let pid = coturn_pid(node)?;
        // Threads made later inherit the affinity of the (pinned) thread that makes them.
        for tid in tids(pid) {
            pin(tid, SERVER_CPU)?;
        }
        let r = blast(
            topo,
            "coturn",
            coturn.primary(),
            (pid, tids(pid)),
            port,
            secs,
        );
        let n = tids(pid).len();
        r.map(|r| (r, n))
    })();
    let log = coturn.log();
    coturn.stop();
    result.with_context(|| format!("coturn said:\n{log}"))
}

// ---------------------------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench(rt: &tokio::runtime::Runtime, topo: &Topology, shape: &str) -> Result<()> {
    let runs = env_num("SNH_TURN_RUNS", 5, 1..=5) as usize;
    let secs = Duration::from_secs(env_num("SNH_TURN_SECS", 3, 1..=8));
    let threads = env_num("SNH_TURN_COTURN_THREADS", 1, 0..=8);
    let start = Instant::now();
    println!(
        "{shape}; alice -> server -> bob, ChannelData with {PAYLOAD}-byte \
         payloads; {runs} runs x {secs:?} per server (rates over the last {:?}); server on CPU \
         {SERVER_CPU}, sender+receiver on CPU {CLIENT_CPU}; ours: 1 current-thread runtime; \
         coturn: -m {threads}, all threads pinned",
        secs - WARM
    );
    println!(
        "{:<7} {:>3} {:>9} {:>9} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "server",
        "run",
        "sent/s",
        "fwd/s",
        "loss%",
        "srvCPU%",
        "srvUsr%",
        "core1%",
        "core0%",
        "srvIn/s",
        "srvOut/s",
        "srvDrop/s",
        "bobDrop",
        "saturated"
    );
    let mut all: Vec<Run> = Vec::new();
    let mut notes = Vec::new();
    'outer: for i in 0..runs {
        for which in ["ours", "coturn"] {
            if start.elapsed() > BUDGET {
                notes.push(format!("stopped after {:?}: time budget", start.elapsed()));
                break 'outer;
            }
            // Fresh client ports each run: no old conntrack entry or allocation is reused.
            let port = 4000 + (all.len() as u16) * 2;
            let r = if which == "ours" {
                run_ours(topo, port, secs).map(|(r, st)| {
                    if i == 0 {
                        notes.push(format!(
                            "ours, run 0: to_peer {} to_client {} dropped {}/{}",
                            st.to_peer,
                            st.to_client,
                            st.dropped_no_permission,
                            st.dropped_no_allocation
                        ));
                    }
                    r
                })
            } else {
                run_coturn(rt, topo, port, secs, threads).map(|(r, n)| {
                    if i == 0 {
                        notes.push(format!("coturn had {n} threads, all on CPU {SERVER_CPU}"));
                    }
                    r
                })
            };
            let r = r.with_context(|| format!("{which}, run {i}"))?;
            println!(
                "{:<7} {:>3} {:>9.0} {:>9.0} {:>6.1} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>9}",
                r.server,
                i,
                r.sent_pps,
                r.fwd_pps,
                100.0 * (1.0 - r.fwd_pps / r.sent_pps.max(1.0)),
                r.server_thread_cpu,
                r.server_thread_user,
                r.server_core_busy,
                r.client_core_busy,
                r.server_in_pps,
                r.server_out_pps,
                r.server_rcvbuf_errors_ps,
                r.bob_rcvbuf_errors,
                r.saturated()
            );
            if r.send_errors > 0 {
                notes.push(format!("{which} run {i}: {} send errors", r.send_errors));
            }
            all.push(r);
        }
    }
    let med = |name: &str, f: fn(&Run) -> f64| {
        median(all.iter().filter(|r| r.server == name).map(f).collect())
    };
    let (ours, coturn) = (med("ours", |r| r.fwd_pps), med("coturn", |r| r.fwd_pps));
    println!("\nmedians (packets/s arriving at bob, i.e. forwarded end to end):");
    for name in ["ours", "coturn"] {
        println!(
            "  {:<7} fwd {:>9.0}/s  sent {:>9.0}/s  server threads CPU {:>4.0}% (user {:>3.0}%)  core {SERVER_CPU} busy {:>4.0}%",
            name,
            med(name, |r| r.fwd_pps),
            med(name, |r| r.sent_pps),
            med(name, |r| r.server_thread_cpu),
            med(name, |r| r.server_thread_user),
            med(name, |r| r.server_core_busy),
        );
    }
    println!("  ratio ours/coturn = {:.2}", ours / coturn);
    if all.iter().any(|r| r.saturated() == "server*") {
        println!(
            "  server*: the server's core was busy but its threads got < 80% of it: other \
             processes shared CPU {SERVER_CPU}; that run understates the server"
        );
    }
    for n in notes {
        println!("  note: {n}");
    }
    println!("total {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("turn_relay: skipped, network namespaces need root (sudo -E cargo bench …)");
        return Ok(());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!("turn_relay: skipped, needs 2 CPUs (server on one, clients on the other)");
        return Ok(());
    }
    harness::registry::install_interrupt_handler();
    // Everything the bench itself starts (namespace workers, coturn's log readers) stays off the
    // server's CPU; only the server thread (or coturn) is moved there.
    pin_self(CLIENT_CPU)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flat = std::env::var("SNH_TURN_FLAT").is_ok_and(|v| v == "1");
    let (shape, builder) = if flat {
        (
            "flat: server, alice and bob all public, no NAT",
            Topology::builder()
                .host_with_addrs("server", INTERNET, &[SERVER, SERVER_ALT])
                .host("alice", INTERNET, FLAT_ALICE)
                .host("bob", INTERNET, FLAT_BOB),
        )
    } else {
        (
            "two_lans(FullCone, FullCone)",
            shapes::two_lans(NatType::FullCone, NatType::FullCone),
        )
    };
    let result = rt
        .block_on(builder.build())
        .map_err(anyhow::Error::from)
        .and_then(|topo| {
            let r = bench(&rt, &topo, shape);
            let _guard = rt.enter();
            drop(topo);
            r
        });
    harness::registry::cleanup_all();
    result
}
