//! Soak: the whole catalogue, round after round, several scenarios at once, and what each round
//! leaves on the machine (`just soak`). Kernel backend, root.
//!
//! `soak [--rounds N] [--jobs J] [--out DIR] [FILE…]` runs `harness run -j J` on the files
//! (default: the catalogue) N times (default 10), one `harness` process per round, and reports:
//! - each file's pass rate, and every flake (a file that both passed and failed) with the
//!   ladder and checks of each failing round;
//! - after each round, what the round left: namespaces, owner entries and files directories of
//!   its runs, processes descended from it (this process is a child subreaper, so a forked
//!   daemon that outlived its parent is still counted), descriptors on namespaces, and the root
//!   namespace's conntrack entries and the system's open files compared with before the round;
//! - peak memory: the harness process's own peak RSS, and the peak summed RSS of the harness and
//!   every process under it (baresip, kamailio, sipp, coturn), sampled every 100 ms, and the
//!   harness's peak descriptor count.
//!
//! Exits 1 if any file failed in any round or anything was left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Default)]
struct FileStats {
    passed: usize,
    failed: Vec<(usize, String)>,
}

/// What one round measured.
#[derive(Default)]
struct Round {
    seconds: f64,
    harness_max_rss_kb: u64,
    tree_peak_rss_kb: u64,
    peak_fds: usize,
    left: Vec<String>,
    conntrack_delta: i64,
    open_files_delta: i64,
}

fn harness_bin() -> PathBuf {
    // target/<profile>/examples/soak → target/<profile>/harness
    let me = std::env::current_exe().expect("own path");
    me.parent()
        .and_then(Path::parent)
        .map(|d| d.join("harness"))
        .expect("target directory")
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Field 4 of /proc/PID/stat.
fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live (non-zombie) process below `root`.
fn descendants(root: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = pids()
        .into_iter()
        .filter_map(|p| ppid(p).map(|pp| (p, pp)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out.retain(|p| harness::registry::proc_stat(*p as u32).is_some_and(|s| s.state != 'Z'));
    out
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn count_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn read_i64(path: &str) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn names_in(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Reaps zombies reparented to this subreaper.
fn reap_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// What round `pid` (the harness process, now exited) left behind.
fn leftovers(pid: u32) -> Vec<String> {
    let run = format!("{pid}x");
    let mut left = Vec::new();
    for n in names_in(Path::new("/run/netns"), &format!("snh-{run}")) {
        left.push(format!("namespace {n}"));
    }
    for n in names_in(Path::new(harness::registry::OWNERS_DIR), &run) {
        left.push(format!("owner entry {n}"));
    }
    for n in names_in(&std::env::temp_dir(), &format!("snh-files-{run}")) {
        left.push(format!("files directory {n}"));
    }
    let me = std::process::id() as i32;
    for p in descendants(me) {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        left.push(format!("process {p} {cmd}"));
    }
    left
}

/// Splits `harness run` output into each scenario's block, keyed by name.
fn blocks(stdout: &str) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let mut block = String::new();
    for line in stdout.lines() {
        block.push_str(line);
        block.push('\n');
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((_, rest)) = rest.split_once("] ") else {
            continue;
        };
        let (ok, rest) = if let Some(r) = rest.strip_prefix("PASS ") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("FAIL ") {
            (false, r)
        } else if let Some(r) = rest.strip_prefix("ERROR ") {
            (false, r)
        } else {
            continue;
        };
        let name = rest
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        out.push((name, ok, std::mem::take(&mut block)));
    }
    out
}

fn main() -> anyhow::Result<()> {
    let mut rounds = 10usize;
    let mut jobs: Option<usize> = None;
    let mut out = PathBuf::from("runs/soak");
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" | "-n" => rounds = args.next().unwrap_or_default().parse()?,
            "--jobs" | "-j" => jobs = Some(args.next().unwrap_or_default().parse()?),
            "--out" => out = PathBuf::from(args.next().unwrap_or_default()),
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        files = harness::catalogue::scenario_files(Path::new("scenarios"))?;
    }
    let bin = harness_bin();
    anyhow::ensure!(
        bin.exists(),
        "{} not built (cargo build --release -p harness)",
        bin.display()
    );
    // Orphans of a round (a daemon's forked children) are reparented here, not to init, so
    // they can be counted.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let jobs_arg = jobs.map(|j| format!("-j{j}"));
    eprintln!(
        "soak: {} file(s) × {rounds} round(s), {}",
        files.len(),
        jobs_arg.as_deref().unwrap_or("default -j")
    );
    let mut per_file: BTreeMap<String, FileStats> = BTreeMap::new();
    let mut measured: Vec<Round> = Vec::new();
    let started = Instant::now();
    for k in 1..=rounds {
        let round_out = out.join(format!("round-{k}"));
        let conntrack_before = read_i64("/proc/sys/net/netfilter/nf_conntrack_count");
        let files_before = read_i64("/proc/sys/fs/file-nr");
        let t0 = Instant::now();
        let mut cmd = Command::new(&bin);
        cmd.arg("run").arg("--out").arg(&round_out);
        if let Some(j) = &jobs_arg {
            cmd.arg(j);
        }
        let stdout_path = out.join(format!("round-{k}.txt"));
        std::fs::create_dir_all(&out)?;
        let mut child = cmd
            .args(&files)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id() as i32;
        let mut r = Round::default();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            let tree: u64 = std::iter::once(pid)
                .chain(descendants(pid))
                .map(|p| status_kb(p, "VmRSS:"))
                .sum();
            r.tree_peak_rss_kb = r.tree_peak_rss_kb.max(tree);
            r.harness_max_rss_kb = r.harness_max_rss_kb.max(status_kb(pid, "VmHWM:"));
            r.peak_fds = r.peak_fds.max(count_fds(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        r.seconds = t0.elapsed().as_secs_f64();
        // Give SIGKILLed processes a moment to leave /proc before counting them.
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            reap_children();
            r.left = leftovers(pid as u32);
            if r.left.is_empty() || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        r.conntrack_delta =
            read_i64("/proc/sys/net/netfilter/nf_conntrack_count") - conntrack_before;
        r.open_files_delta = read_i64("/proc/sys/fs/file-nr") - files_before;
        let text = std::fs::read_to_string(&stdout_path)?;
        let results = blocks(&text);
        let passed = results.iter().filter(|(_, ok, _)| *ok).count();
        for (name, ok, block) in results {
            let s = per_file.entry(name).or_default();
            if ok {
                s.passed += 1;
            } else {
                s.failed.push((k, block));
            }
        }
        eprintln!(
            "soak: round {k}/{rounds}: {passed}/{} passed in {:.1} s; left: {} item(s); \
             root conntrack {:+}, open files {:+}; peak RSS harness {} MB, all processes {} MB; \
             peak fds {}",
            files.len(),
            r.seconds,
            r.left.len(),
            r.conntrack_delta,
            r.open_files_delta,
            r.harness_max_rss_kb / 1024,
            r.tree_peak_rss_kb / 1024,
            r.peak_fds,
        );
        for l in &r.left {
            eprintln!("soak:   left: {l}");
        }
        measured.push(r);
    }

    println!(
        "\nsoak: {rounds} round(s) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("\npass rate per file:");
    let mut bad = false;
    for (name, s) in &per_file {
        let total = s.passed + s.failed.len();
        println!("  {:>3}/{:<3} {name}", s.passed, total);
        bad |= !s.failed.is_empty() || total != rounds;
    }
    for (name, s) in per_file.iter().filter(|(_, s)| !s.failed.is_empty()) {
        let kind = if s.passed > 0 {
            "FLAKE"
        } else {
            "FAILS ALWAYS"
        };
        println!(
            "\n{kind}: {name} failed in round(s) {:?}",
            s.failed.iter().map(|f| f.0).collect::<Vec<_>>()
        );
        for (k, block) in &s.failed {
            println!("--- round {k} ---\n{block}");
        }
    }
    let left: usize = measured.iter().map(|r| r.left.len()).sum();
    println!(
        "\nleft after rounds: {} item(s) in total (namespaces, owner entries, files dirs, processes)",
        left
    );
    println!(
        "root-namespace conntrack entries per round: {:?}",
        measured
            .iter()
            .map(|r| r.conntrack_delta)
            .collect::<Vec<_>>()
    );
    println!(
        "system open files per round (shared machine, noisy): {:?}",
        measured
            .iter()
            .map(|r| r.open_files_delta)
            .collect::<Vec<_>>()
    );
    println!(
        "peak RSS: harness {} MB, harness + every process under it {} MB; peak harness fds {}",
        measured
            .iter()
            .map(|r| r.harness_max_rss_kb)
            .max()
            .unwrap_or(0)
            / 1024,
        measured
            .iter()
            .map(|r| r.tree_peak_rss_kb)
            .max()
            .unwrap_or(0)
            / 1024,
        measured.iter().map(|r| r.peak_fds).max().unwrap_or(0),
    );
    println!(
        "peak fds per round: {:?}",
        measured.iter().map(|r| r.peak_fds).collect::<Vec<_>>()
    );
    if bad || left > 0 {
        std::process::exit(1);
    }
    Ok(())
}
