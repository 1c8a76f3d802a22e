//! Bring-up and teardown cost of topologies, how it scales, and where bring-up time goes.
//!
//! `sudo -E cargo bench -p harness --bench bringup` (root: it creates network namespaces).
//! Plain `main` (`harness = false`), no criterion. Sends nothing anywhere: it only builds and tears
//! down namespaces, links, addresses, routes and nft rulesets, and checks at the end that none of
//! its `snh-<pid>x…` namespaces is left.
//!
//! Sections:
//! 1. one topology at a time: 1 NAT / 3 hosts (`shapes::home_lan`) and 2 NATs / 5 hosts
//!    (`shapes::two_lans` plus a fifth, public host), `RUNS` runs after `WARMUP` warm-ups of:
//!    bring-up on a kernel that has finished cleaning up, bring-up right after the previous drop
//!    (as a test suite does), the same with a `Pool` (give the topology back, reset, take it
//!    again), `drop`, and drop until the kernel's deferred namespace cleanup ends;
//! 2. N ∈ {10, 50, 100} home_lan topologies up at once: all brought up concurrently (`join_all`)
//!    and one after the other, then all dropped, with ratios to the single-topology medians;
//! 3. where a bring-up goes, per stage (namespaces, links, addresses, routes, nft, sysctls, the
//!    bridge-port forwarding wait …), read from the timeline the real `Topology::build` records
//!    of its own steps (`Topology::bring_up_timeline`) during section 1; then single pieces:
//!    `Node::set_nat` on a live router, `Netns::create` x100.
//!
//! The machine's limits are printed (and RLIMIT_NOFILE raised to its hard limit), and so is what
//! else ran meanwhile: other processes' CPU and their `snh-` namespace churn, which take the same
//! kernel locks and make every number pessimistic.
//!
//! Environment: `SNH_BENCH_RUNS` (default 20) changes the runs per measurement;
//! `SNH_BENCH_SKIP_SCALE=1` skips section 2.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::netns::Netns;
use harness::shapes::{PEER, SERVER, SERVER_ALT};
use harness::topology::{Stage, Timeline};
use harness::{Topology, TopologyBuilder, INTERNET};
use sim_nat::{NatBehaviour, NatType};

const WARMUP: usize = 2;
const DEFAULT_RUNS: usize = 20;
/// N topologies up at once, and how many times each N is repeated.
const SCALES: [(usize, usize); 3] = [(10, 5), (50, 3), (100, 2)];
/// Sequential bring-up of N is skipped when it would take longer than this.
const SEQUENTIAL_BUDGET: Duration = Duration::from_secs(30);
/// Longest wait for the kernel's deferred namespace cleanup between measurements.
const SETTLE_MAX: Duration = Duration::from_secs(20);
/// How long after a drop the kernel's namespace cleanup may take to start.
const CLEANUP_START: Duration = Duration::from_millis(60);
/// A pause in the cleanup shorter than this is part of it.
const CLEANUP_GAP: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Copy)]
struct Stats {
    n: usize,
    min: f64,
    p10: f64,
    med: f64,
    p90: f64,
    max: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(v: &[Duration]) -> Stats {
    let mut s: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    s.sort_by(|a, b| a.partial_cmp(b).expect("durations are finite"));
    if s.is_empty() {
        return Stats {
            n: 0,
            min: f64::NAN,
            p10: f64::NAN,
            med: f64::NAN,
            p90: f64::NAN,
            max: f64::NAN,
        };
    }
    // Nearest rank on the sorted sample; the median of an even sample is the mean of the two.
    let at = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    let mid = s.len() / 2;
    let med = if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    };
    Stats {
        n: s.len(),
        min: s[0],
        p10: at(0.10),
        med,
        p90: at(0.90),
        max: s[s.len() - 1],
    }
}

fn runs() -> usize {
    std::env::var("SNH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(DEFAULT_RUNS)
}

// ---------------------------------------------------------------------------------------------
// Machine limits

fn nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft open-files limit to the hard one; returns (soft before, soft after, hard).
fn raise_nofile() -> (libc::rlim_t, libc::rlim_t, libc::rlim_t) {
    let (before, hard) = nofile();
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    (before, nofile().0, hard)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// (busy, total) jiffies of the whole machine, from the `cpu` line of /proc/stat.
fn machine_cpu() -> (u64, u64) {
    let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = line
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU ticks of every kernel thread, by pid: the kernel's own share (namespace cleanup runs in
/// kworkers), to tell it apart from other user processes.
struct KernelCpu(std::collections::HashMap<u32, u64>);

impl KernelCpu {
    fn now() -> Self {
        let mut m = std::collections::HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the `(comm)`: state ppid … flags(6) … utime(11) stime(12).
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            const PF_KTHREAD: u64 = 0x0020_0000;
            if f.len() >= 12 && f[5] & PF_KTHREAD != 0 {
                m.insert(pid, f[10] + f[11]);
            }
        }
        KernelCpu(m)
    }

    /// Ticks spent since `before` (threads started meanwhile count whole).
    fn since(&self, before: &KernelCpu) -> u64 {
        self.0
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.0.get(pid).copied().unwrap_or(0)))
            .sum()
    }
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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process's namespaces still mounted under /run/netns.
fn my_namespaces() -> Vec<String> {
    let mine = format!("{}{}x", harness::names::PREFIX, std::process::id());
    std::fs::read_dir(harness::netns::NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the project's namespaces that other processes (parallel tests) have up right now.
fn foreign_namespaces() -> std::collections::HashSet<String> {
    let mine = format!("{}{}x", harness::names::PREFIX, std::process::id());
    std::fs::read_dir(harness::netns::NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(harness::names::PREFIX) && !n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default()
}

/// Other processes' namespaces: most up at once, and how many were created or removed while the
/// bench ran (creating and removing them takes the kernel locks the bench measures; namespaces
/// that just sit there do not matter).
#[derive(Default, Clone, Copy)]
struct Foreign {
    max_up: usize,
    churn: usize,
}

/// Samples other processes' namespaces every 50 ms until the bench ends.
fn start_noise_watch() -> std::sync::Arc<std::sync::Mutex<Foreign>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Foreign::default()));
    let out = seen.clone();
    let _ = std::thread::Builder::new()
        .name("noise-watch".into())
        .spawn(move || {
            let mut before = foreign_namespaces();
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = foreign_namespaces();
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                s.max_up = s.max_up.max(now.len());
                s.churn += now.symmetric_difference(&before).count();
                drop(s);
                before = now;
            }
        });
    out
}

// ---------------------------------------------------------------------------------------------
// Shapes

fn one_nat() -> TopologyBuilder {
    harness::shapes::home_lan(NatType::PortRestrictedCone)
}

/// `shapes::two_lans` (2 NATs, 4 hosts) plus a fifth host on the public segment.
fn two_nat() -> TopologyBuilder {
    Topology::builder()
        .nat(
            "home-a",
            NatType::PortRestrictedCone,
            "203.0.113.1",
            "192.168.1.1/24",
        )
        .nat(
            "home-b",
            NatType::PortRestrictedCone,
            "198.51.100.1",
            "192.168.2.1/24",
        )
        .host("alice", "home-a", "192.168.1.10")
        .host("bob", "home-b", "192.168.2.10")
        .host_with_addrs("server", INTERNET, &[SERVER, SERVER_ALT])
        .host("peer", INTERNET, PEER)
        .host("carol", INTERNET, "192.0.2.20")
}

// ---------------------------------------------------------------------------------------------
// 1. One topology at a time

struct Single {
    /// Bring-up on a kernel that has finished cleaning up earlier topologies.
    up: Stats,
    /// Bring-up right after the previous topology was dropped, as a test suite does.
    up_b2b: Stats,
    /// The previous user's topology given back to a `Pool` (reset) and taken again.
    pooled: Stats,
    /// `drop(topology)`.
    down: Stats,
    /// From the start of the drop until the kernel's deferred namespace cleanup has ended.
    cleanup: Stats,
    /// The bring-ups' own timelines (kernel idle at start).
    timelines: Vec<Timeline>,
    /// The pool resets' own timelines.
    resets: Vec<Timeline>,
}

async fn single(make: fn() -> TopologyBuilder, runs: usize) -> anyhow::Result<Single> {
    let (mut up, mut down, mut cleanup, mut b2b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut timelines = Vec::new();
    for i in 0..WARMUP + runs {
        let t = Instant::now();
        let topo = make().build().await?;
        let u = t.elapsed();
        if i >= WARMUP {
            timelines.push(topo.bring_up_timeline().clone());
        }
        let t = Instant::now();
        drop(topo);
        let d = t.elapsed();
        let c = d + settle().await?;
        if i >= WARMUP {
            up.push(u);
            down.push(d);
            cleanup.push(c);
        }
    }
    for i in 0..WARMUP + runs {
        let t = Instant::now();
        let topo = make().build().await?;
        let u = t.elapsed();
        drop(topo);
        if i >= WARMUP {
            b2b.push(u);
        }
    }
    settle().await?;
    let pool = harness::topology::Pool::new();
    let spec = make().spec().clone();
    let mut topo = pool.take(spec.clone()).await?;
    let mut pooled = Vec::new();
    let mut resets = Vec::new();
    for i in 0..WARMUP + runs {
        let t = Instant::now();
        pool.give_back(topo).await?;
        topo = pool.take(spec.clone()).await?;
        if i >= WARMUP {
            pooled.push(t.elapsed());
            resets.push(topo.reset_timeline().clone());
        }
    }
    drop((topo, pool));
    settle().await?;
    Ok(Single {
        up: stats(&up),
        up_b2b: stats(&b2b),
        pooled: stats(&pooled),
        down: stats(&down),
        cleanup: stats(&cleanup),
        timelines,
        resets,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers: CPU time and the kernel's deferred namespace cleanup

/// CPU time (user + system) of this process (all threads) and of its waited-for children.
fn cpu() -> (Duration, Duration) {
    let get = |who| {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    (get(libc::RUSAGE_SELF), get(libc::RUSAGE_CHILDREN))
}

/// Whether a kernel worker is running an item of the `netns` workqueue right now, i.e. the
/// deferred cleanup of dropped namespaces (`cleanup_net`): a kworker's name reads
/// `kworker/…+netns` while it does.
fn netns_cleanup_running() -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|e| {
        let pid = e.file_name();
        let pid = pid.to_string_lossy();
        pid.bytes().all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("kworker") && c.trim_end().ends_with("+netns"))
    })
}

/// Waits until the kernel has finished the deferred cleanup of the namespaces dropped just before
/// (it starts ~10–20 ms after the drop, once the last reference is gone, and deletes every
/// device; deleting a bridge runs `rcu_barrier()` with RTNL held, which stalls every namespace
/// creation and link change on the machine meanwhile). Returns when the cleanup ended, measured
/// from the call: zero if none was seen within `CLEANUP_START`.
async fn settle() -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut last_busy: Option<Duration> = None;
    while t.elapsed() < SETTLE_MAX {
        if netns_cleanup_running() {
            last_busy = Some(t.elapsed());
        } else {
            let quiet_enough = match last_busy {
                Some(b) => t.elapsed() - b >= CLEANUP_GAP,
                None => t.elapsed() >= CLEANUP_START,
            };
            if quiet_enough {
                return Ok(last_busy.unwrap_or(Duration::ZERO));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(t.elapsed())
}

// ---------------------------------------------------------------------------------------------
// 2. N at once

struct Scale {
    n: usize,
    mode: &'static str,
    all_up: Vec<Duration>,
    per_topo: Vec<Duration>,
    all_down: Vec<Duration>,
    /// From the start of the teardown until the kernel's deferred namespace cleanup has ended.
    cleanup: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
    peak_fds: usize,
    peak_threads: usize,
    peak_ns: usize,
}

impl Scale {
    fn new(n: usize, mode: &'static str) -> Self {
        Scale {
            n,
            mode,
            all_up: Vec::new(),
            per_topo: Vec::new(),
            all_down: Vec::new(),
            cleanup: Vec::new(),
            failures: 0,
            first_error: None,
            peak_fds: 0,
            peak_threads: 0,
            peak_ns: 0,
        }
    }

    fn record(&mut self, results: Vec<(Duration, harness::Result<Topology>)>) -> Vec<Topology> {
        let mut up = Vec::new();
        for (d, r) in results {
            match r {
                Ok(t) => {
                    self.per_topo.push(d);
                    up.push(t);
                }
                Err(e) => {
                    self.failures += 1;
                    self.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.peak_fds = self.peak_fds.max(open_fds());
        self.peak_threads = self.peak_threads.max(threads());
        self.peak_ns = self.peak_ns.max(my_namespaces().len());
        up
    }

    async fn tear_down(&mut self, topos: Vec<Topology>) -> anyhow::Result<()> {
        let t = Instant::now();
        drop(topos);
        let d = t.elapsed();
        self.all_down.push(d);
        self.cleanup.push(d + settle().await?);
        Ok(())
    }
}

async fn timed_build() -> (Duration, harness::Result<Topology>) {
    let t = Instant::now();
    let r = one_nat().build().await;
    (t.elapsed(), r)
}

async fn concurrent(n: usize, reps: usize) -> anyhow::Result<Scale> {
    let mut s = Scale::new(n, "join_all");
    for _ in 0..reps {
        let t = Instant::now();
        let results = join_all((0..n).map(|_| timed_build())).await;
        s.all_up.push(t.elapsed());
        let topos = s.record(results);
        s.tear_down(topos).await?;
    }
    Ok(s)
}

async fn sequential(n: usize, reps: usize) -> anyhow::Result<Scale> {
    let mut s = Scale::new(n, "sequential");
    for _ in 0..reps {
        let t = Instant::now();
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(timed_build().await);
        }
        s.all_up.push(t.elapsed());
        let topos = s.record(results);
        s.tear_down(topos).await?;
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// 3. Breakdown: the timeline `Topology::build` records of its own steps, and single pieces.

/// Medians over runs of each stage's time, from the bring-ups' own timelines.
struct Breakdown {
    total: Stats,
    /// Per stage: (summed over the stage's steps, wall-clock covered by the stage).
    stages: Vec<(Stage, Stats, Stats)>,
}

fn breakdown(timelines: &[Timeline], which: &[Stage]) -> Breakdown {
    let total: Vec<Duration> = timelines.iter().map(Timeline::total).collect();
    let stages = which
        .iter()
        .map(|&s| {
            let busy: Vec<Duration> = timelines.iter().map(|t| t.busy(s)).collect();
            let wall: Vec<Duration> = timelines.iter().map(|t| t.wall(s)).collect();
            (s, stats(&busy), stats(&wall))
        })
        .collect();
    Breakdown {
        total: stats(&total),
        stages,
    }
}

struct Extras {
    set_nat: Stats,
    ns_create_100: Duration,
    ns_drop_100: Duration,
}

/// Measurements of single pieces: `Node::set_nat` on a live router and `Netns::create` for 100
/// namespaces.
async fn extras(runs: usize) -> anyhow::Result<Extras> {
    let tag = format!("{}{}xf-", harness::names::PREFIX, std::process::id());
    let nat = NatBehaviour::from(NatType::PortRestrictedCone);
    let topo = one_nat().build().await?;
    let home = topo.node("home")?;
    let mut set_nat = Vec::new();
    for i in 0..WARMUP + runs {
        let t = Instant::now();
        home.set_nat(&nat).await?;
        if i >= WARMUP {
            set_nat.push(t.elapsed());
        }
    }
    drop(topo);
    settle().await?;

    let t = Instant::now();
    let many = (0..100)
        .map(|i| Netns::create(&format!("{tag}n{i}")))
        .collect::<harness::Result<Vec<_>>>()?;
    let ns_create_100 = t.elapsed();
    let t = Instant::now();
    drop(many);
    let ns_drop_100 = t.elapsed();
    settle().await?;

    Ok(Extras {
        set_nat: stats(&set_nat),
        ns_create_100,
        ns_drop_100,
    })
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("bringup: skipped, network namespaces need root (sudo -E cargo bench …)");
        return Ok(());
    }
    harness::registry::install_interrupt_handler();
    let result = bench().await;
    // Whatever happened, leave nothing behind.
    harness::registry::cleanup_all();
    let left = my_namespaces();
    let others = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with(harness::names::PREFIX))
                .count()
        })
        .unwrap_or(0);
    println!(
        "\ncleanup: {} namespace(s) of this run left; `ip netns list` shows {others} `{}` namespace(s) in all",
        left.len(),
        harness::names::PREFIX
    );
    result?;
    anyhow::ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    Ok(())
}

async fn bench() -> anyhow::Result<()> {
    let runs = runs();
    let wall = Instant::now();
    let (soft_before, soft, hard) = raise_nofile();
    println!("== machine ==");
    println!(
        "cpus {}  loadavg {}  kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read_trim("/proc/loadavg"),
        read_trim("/proc/sys/kernel/osrelease"),
    );
    println!(
        "RLIMIT_NOFILE soft {soft_before} -> {soft} (hard {hard}); threads-max {}; \
         user.max_net_namespaces {}; fs.file-max {}",
        read_trim("/proc/sys/kernel/threads-max"),
        read_trim("/proc/sys/user/max_net_namespaces"),
        read_trim("/proc/sys/fs/file-max"),
    );
    let (fds0, threads0) = (open_fds(), threads());
    let noise = start_noise_watch();
    let (busy0, total0) = machine_cpu();
    let cpu0 = cpu();
    let kernel0 = KernelCpu::now();
    settle().await?;

    // 1 ---------------------------------------------------------------------------------------
    let s1 = single(one_nat, runs).await?;
    let s2 = single(two_nat, runs).await?;
    println!("\n== one topology at a time ({runs} runs after {WARMUP} warm-ups; ms) ==");
    println!(
        "(bring-up: kernel idle at start; back-to-back: right after dropping the previous one; \
         kernel cleanup: until the kernel's deferred namespace cleanup (kworker `+netns`) has ended)"
    );
    println!(
        "{:<58} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "shape / phase", "min", "p10", "median", "p90", "max"
    );
    for (name, s) in [
        ("1 NAT/3 hosts (5 netns)", &s1),
        ("2 NAT/5 hosts (8 netns)", &s2),
    ] {
        for (phase, st) in [
            ("bring-up", s.up),
            ("bring-up back-to-back", s.up_b2b),
            ("back-to-back with a Pool (reset)", s.pooled),
            ("teardown (drop)", s.down),
            ("drop + kernel cleanup", s.cleanup),
        ] {
            println!(
                "{:<58} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
                format!("{name} {phase}"),
                st.min,
                st.p10,
                st.med,
                st.p90,
                st.max
            );
        }
    }

    // 2 ---------------------------------------------------------------------------------------
    let mut scales = Vec::new();
    let skip_scale = std::env::var_os("SNH_BENCH_SKIP_SCALE").is_some();
    for (n, reps) in SCALES.into_iter().filter(|_| !skip_scale) {
        scales.push(concurrent(n, reps).await?);
        let estimate = Duration::from_secs_f64(s1.up.med / 1e3 * n as f64);
        if estimate <= SEQUENTIAL_BUDGET {
            scales.push(sequential(n, 1).await?);
        }
    }
    println!(
        "\n== N x (1 NAT / 3 hosts) up at once (ms, medians over reps; x = ratio to the \
         single-topology median: up {:.1}, down {:.2}) ==",
        s1.up.med, s1.down.med
    );
    println!(
        "{:>4} {:<10} {:>4} {:>8} {:>7} {:>5} {:>8} {:>5} {:>7} {:>5} {:>8} {:>6} {:>6} {:>7}",
        "N",
        "mode",
        "reps",
        "all up",
        "up/N",
        "x",
        "per-topo",
        "x",
        "p90",
        "x",
        "all down",
        "down/N",
        "x",
        "cleanup"
    );
    for s in &scales {
        let up = stats(&s.all_up);
        let per = stats(&s.per_topo);
        let down = stats(&s.all_down);
        let cleanup = stats(&s.cleanup);
        let up_n = up.med / s.n as f64;
        let down_n = down.med / s.n as f64;
        println!(
            "{:>4} {:<10} {:>4} {:>8.0} {:>7.1} {:>5.2} {:>8.1} {:>5.2} {:>7.1} {:>5.2} {:>8.1} {:>6.2} {:>6.2} {:>7.0}",
            s.n,
            s.mode,
            up.n,
            up.med,
            up_n,
            up_n / s1.up.med,
            per.med,
            per.med / s1.up.med,
            per.p90,
            per.p90 / s1.up.med,
            down.med,
            down_n,
            down_n / s1.down.med,
            cleanup.med,
        );
    }
    println!(
        "(up/N, down/N: amortised per topology; per-topo: each build's own latency, from its \
         first poll; cleanup: from the start of the teardown until the kernel's deferred \
         namespace cleanup has ended)"
    );
    for s in &scales {
        if s.failures > 0 {
            println!(
                "N={} {}: {} build(s) FAILED, first: {}",
                s.n,
                s.mode,
                s.failures,
                s.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(s) = scales.iter().max_by_key(|s| s.peak_fds) {
        let per_fd = s.peak_fds.saturating_sub(fds0) as f64 / s.n as f64;
        println!(
            "limits at peak (N={} up): {} namespaces, {} open fds (baseline {fds0}, {per_fd:.1}/topology \
             -> a 1024 soft limit allows ~{:.0} topologies; here {soft}), {} threads (baseline \
             {threads0}, {:.1}/topology); all builds succeeded: {}",
            s.n,
            s.peak_ns,
            s.peak_fds,
            (1024 - fds0.min(1024)) as f64 / per_fd.max(1.0),
            s.peak_threads,
            s.peak_threads.saturating_sub(threads0) as f64 / s.n as f64,
            scales.iter().all(|s| s.failures == 0),
        );
    }

    // 3 ---------------------------------------------------------------------------------------
    let ex = extras(runs).await?;
    for (name, s) in [("1 NAT / 3 hosts", &s1), ("2 NATs / 5 hosts", &s2)] {
        for (what, timelines, which) in [
            ("bring-up", &s.timelines, &Stage::ALL[..]),
            ("pool reset", &s.resets, &Stage::RESET[..]),
        ] {
            let b = breakdown(timelines, which);
            println!(
                "\n== where one {name} {what} goes (its own timeline{}; medians over {runs} \
                 runs; ms) ==",
                if what == "bring-up" {
                    ", kernel idle at start"
                } else {
                    ", back-to-back"
                }
            );
            println!("{:<34} {:>9} {:>9} {:>6}", "stage", "sum", "wall", "share");
            for (stage, busy, wall) in &b.stages {
                println!(
                    "{:<34} {:>9.2} {:>9.2} {:>5.0}%",
                    stage.label(),
                    busy.med,
                    wall.med,
                    100.0 * wall.med / b.total.med
                );
            }
            println!(
                "{:<34} {:>9} {:>9.2}",
                format!("= whole {what}"),
                "",
                b.total.med
            );
        }
        println!(
            "(sum: the stage's steps added up, overlapping ones whole; wall: time during which \
             at least one of its steps ran; share: wall / whole)"
        );
    }
    println!();
    let line = |name: &str, st: Stats| {
        println!(
            "{:<42} {:>7.2} {:>7.2} {:>7.2}",
            name, st.med, st.p10, st.p90
        )
    };
    println!("{:<42} {:>7} {:>7} {:>7}", "piece", "median", "p10", "p90");
    line("Node::set_nat, re-applied on a live router", ex.set_nat);
    println!(
        "{:<42} {:>7.1}   ({:.2} per namespace)",
        "Netns::create x100, sequential",
        ms(ex.ns_create_100),
        ms(ex.ns_create_100) / 100.0
    );
    println!(
        "{:<42} {:>7.1}   ({:.2} per namespace)",
        "drop 100 Netns",
        ms(ex.ns_drop_100),
        ms(ex.ns_drop_100) / 100.0
    );
    let kernel1 = KernelCpu::now();
    let elapsed = wall.elapsed();
    let (busy1, total1) = machine_cpu();
    let cpu1 = cpu();
    let ours = (cpu1.0 + cpu1.1)
        .saturating_sub(cpu0.0 + cpu0.1)
        .as_secs_f64();
    let busy = (busy1 - busy0) as f64 / ticks_per_sec();
    let avail = (total1 - total0) as f64 / ticks_per_sec();
    let kernel = kernel1.since(&kernel0) as f64 / ticks_per_sec();
    // Interrupts and what escapes the two counts land in `others`: an upper bound.
    let others = (busy - ours - kernel).max(0.0);
    let foreign = *noise.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "\ntotal bench time {:.1} s; machine CPU busy {:.0}% of {:.1} cpu-s: this bench {:.1}, \
         kernel threads {:.1}, everything else {:.1}; other processes' `{}` namespaces: up to \
         {} at once, {} created or removed meanwhile{}",
        elapsed.as_secs_f64(),
        100.0 * busy / avail.max(1e-9),
        avail,
        ours,
        kernel,
        others,
        harness::names::PREFIX,
        foreign.max_up,
        foreign.churn,
        if foreign.churn > 0 || others > 0.1 * avail {
            " -- the machine was shared: numbers are pessimistic, rerun on a quiet machine"
        } else {
            ""
        }
    );
    Ok(())
}
