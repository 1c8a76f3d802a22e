//! SIGKILL `harness run` at random moments of a catalogue scenario, then prove one `harness reap`
//! (or the next run's automatic reap) leaves nothing of it: no namespace, no owner entry, no
//! files directory, no process inside its namespaces or naming its run, no descriptor holding a
//! namespace (and with it the veths and nft rulesets inside), no link in the root namespace.
//!
//! Kernel test, root. `KILL9_ROUNDS` (default 8, about 16 s; `just kill9` runs 20, about 40 s) and `KILL9_SEED` (default:
//! the clock; always printed) choose how many kills and when. Half the killed runs are left
//! zombies until after the reap, because that is what fooled the old reaper.

use harness::seeded::Rng;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The scenarios killed: short, several namespaces, external processes (baresip; kamailio,
/// which forks children PR_SET_PDEATHSIG does not reach).
const SCENARIOS: &[&str] = &[
    "baresip-one-way-audio.toml",
    "408-private-contact-fix-kamailio.toml",
];

/// Kill moments are drawn from 0 to this many ms after `harness run` starts (the two scenarios
/// take about 4.2 s), and one in four from the first [`BRING_UP_MS`], where namespaces, veths
/// and rulesets are being made.
const WINDOW_MS: u64 = 4000;
const BRING_UP_MS: u64 = 300;

/// splitmix64: a seeded, reproducible source of kill moments without a dependency.
fn kernel_available() -> bool {
    match harness::preflight::check() {
        Ok(()) => true,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "kernel test cannot run under CI: {e}");
            eprintln!("\n!!! SKIPPING KERNEL TEST: {e}\n");
            false
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Names in `dir` that start with `prefix`.
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

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// What a killed run `snh-<pid>x…` was using when it died.
struct Killed {
    pid: u32,
    round: usize,
    /// Inodes of its namespaces, read before the reap.
    inodes: HashSet<u64>,
    namespaces: usize,
    processes: usize,
}

impl Killed {
    fn run_prefix(&self) -> String {
        format!("{}x", self.pid)
    }

    fn record(pid: u32, round: usize) -> Killed {
        let prefix = format!("snh-{pid}x");
        let names = names_in(Path::new("/run/netns"), &prefix);
        let inodes: HashSet<u64> = names
            .iter()
            .filter_map(|n| std::fs::metadata(Path::new("/run/netns").join(n)).ok())
            .map(|m| m.ino())
            .collect();
        let mut k = Killed {
            pid,
            round,
            inodes,
            namespaces: names.len(),
            processes: 0,
        };
        k.processes = k.processes_left().len();
        k
    }

    /// Processes inside its namespaces, or whose command line names its run.
    fn processes_left(&self) -> Vec<String> {
        let mut found = Vec::new();
        let needle = format!("snh-{}", self.run_prefix());
        let files = format!("snh-files-{}", self.run_prefix());
        for p in pids() {
            if p == self.pid {
                continue;
            }
            let in_ns = std::fs::metadata(format!("/proc/{p}/ns/net"))
                .is_ok_and(|m| self.inodes.contains(&m.ino()));
            let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            if in_ns || cmd.contains(&needle) || cmd.contains(&files) {
                found.push(format!("{p} {cmd}"));
            }
        }
        found
    }

    /// Everything of the run still on the machine, one line per item.
    fn leftovers(&self, root_links: &HashSet<String>) -> Vec<String> {
        let run = self.run_prefix();
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
        for p in self.processes_left() {
            left.push(format!("process {p}"));
        }
        // A descriptor on a namespace keeps it, its veths and its rulesets alive unmounted.
        for p in pids() {
            for fd in std::fs::read_dir(format!("/proc/{p}/fd"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if let Some(ino) = t
                    .strip_prefix("net:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|i| i.parse::<u64>().ok())
                {
                    if self.inodes.contains(&ino) {
                        left.push(format!("descriptor {} of process {p}", fd.path().display()));
                    }
                }
            }
        }
        for l in root_link_names() {
            if !root_links.contains(&l) {
                left.push(format!("root-namespace link {l}"));
            }
        }
        left
    }
}

fn root_link_names() -> HashSet<String> {
    names_in(Path::new("/sys/class/net"), "")
        .into_iter()
        .collect()
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn start_run(file: &Path, out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("run")
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .arg("-j1")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness run starts")
}

fn harness_reap() -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("reap")
        .output()
        .expect("harness reap runs");
    assert!(o.status.success(), "harness reap failed: {o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
// Half the killed runs are kept zombies until after the reap on purpose; each is waited for
// later in the round.
#[allow(clippy::zombie_processes)]
fn a_run_killed_at_any_moment_leaves_nothing_after_one_reap() {
    if !kernel_available() {
        return;
    }
    let rounds = env_u64("KILL9_ROUNDS").unwrap_or(8) as usize;
    let seed = env_u64("KILL9_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("kill9: {rounds} rounds, KILL9_SEED={seed}");
    let mut rng = Rng::new(seed);
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let out: PathBuf = std::env::temp_dir().join(format!("snh-kill9-{}", std::process::id()));
    let root_links = root_link_names();
    let started = Instant::now();
    let mut failures = Vec::new();
    // A run killed and left for the next run's automatic reap, checked once that run is up.
    let mut pending: Option<Killed> = None;
    for round in 0..rounds {
        let file = scenarios.join(SCENARIOS[rng.below(SCENARIOS.len())]);
        let window = if rng.below(4) == 0 {
            BRING_UP_MS
        } else {
            WINDOW_MS
        };
        let delay = Duration::from_millis(rng.below(window as usize) as u64);
        let zombie = rng.below(2) == 0;
        // The last round always uses `harness reap`, so nothing is left when the test ends.
        let next_run_reaps = round + 1 < rounds && rng.below(3) == 0;
        let t0 = Instant::now();
        let mut child = start_run(&file, &out);
        if let Some(prev) = pending.take() {
            // The new run reaps before it makes its first namespace.
            let prefix = format!("snh-{}x", child.id());
            let up = wait_for(Duration::from_secs(15), || {
                !names_in(Path::new("/run/netns"), &prefix).is_empty()
            });
            let left = prev.leftovers(&root_links);
            eprintln!(
                "kill9: round {}: the next run's automatic reap left {} item(s){}",
                prev.round,
                left.len(),
                if up {
                    ""
                } else {
                    " (the next run never came up)"
                }
            );
            if !up || !left.is_empty() {
                failures.push(format!(
                    "round {} (left for the next run, up: {up}): {left:?}",
                    prev.round
                ));
            }
        }
        std::thread::sleep(delay.saturating_sub(t0.elapsed()));
        let pid = child.id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL");
        if !zombie {
            let _ = child.wait();
        } else {
            // Dead but not waited for: its /proc entry stays.
            wait_for(Duration::from_secs(3), || {
                harness::registry::proc_stat(pid).is_none_or(|s| s.state == 'Z')
            });
        }
        let killed = Killed::record(pid, round);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let how = if next_run_reaps {
            "left for the next run".to_string()
        } else {
            harness_reap()
        };
        eprintln!(
            "kill9: round {round}: {name} killed at {} ms{}, {} namespace(s) and {} process(es) left by the kill; {how}",
            delay.as_millis(),
            if zombie { " (kept a zombie)" } else { "" },
            killed.namespaces,
            killed.processes,
        );
        if next_run_reaps {
            if zombie {
                let _ = child.wait();
            }
            pending = Some(killed);
            continue;
        }
        // SIGKILLed processes take a moment to leave /proc.
        wait_for(Duration::from_secs(2), || {
            killed.leftovers(&root_links).is_empty()
        });
        let left = killed.leftovers(&root_links);
        if zombie {
            let _ = child.wait();
        }
        if !left.is_empty() {
            failures.push(format!("round {round} ({name} at {delay:?}): {left:?}"));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    eprintln!(
        "kill9: {rounds} rounds in {:.1} s, KILL9_SEED={seed}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "KILL9_SEED={seed}: left behind after reaping:\n{}",
        failures.join("\n")
    );
}
