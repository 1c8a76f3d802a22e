//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Whether kernel tests can run here; says so loudly when they cannot, and fails under CI.
///
/// Returns `false` (the caller returns early) only outside CI: a developer without root still gets
/// a green unit-test run, but never silently. Under `CI=true` a kernel test that cannot run is a
/// failure, because a CI that skips them proves nothing.
pub fn kernel_available() -> bool {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| remove_stale_markers(&std::env::temp_dir()));
    match harness::preflight::check() {
        Ok(()) => true,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if ci {
                panic!("kernel test cannot run under CI: {e}");
            }
            skipped_loudly(&e.to_string());
            false
        }
    }
}

/// Says once per `cargo test` run (not once per test, not once per test binary) that kernel
/// tests were skipped and why, in a banner nobody can miss; the model tests
/// (`model_catalogue`, `model_properties`) and unit tests still ran. "Once" is kept by a marker
/// file named after the process that started the test binaries (cargo) and its start time,
/// created atomically by the first binary that skips; markers of runs whose cargo is gone are
/// removed, so at most the last run's marker is ever left in the temporary directory.
fn skipped_loudly(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir();
        let cargo = std::os::unix::process::parent_id();
        let Some(started) = start_time(cargo) else {
            return;
        };
        let marker = dir.join(format!("{MARKER}{cargo}-{started}"));
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        if first {
            let bar = "!".repeat(78);
            // Written to the stream itself, not through `eprintln!`, which libtest captures
            // and shows only for failing tests: a passing skipped test would say nothing.
            let banner = format!(
                "\n{bar}\n!!! KERNEL TESTS SKIPPED: {why}\n!!! Only unit and model tests ran. \
                 Run as root for the kernel tests; under CI=true this is a failure.\n{bar}\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
        }
    });
}

/// The name every "kernel tests skipped" marker starts with; `PID-STARTTIME` follows.
const MARKER: &str = "snh-kernel-tests-skipped-";

/// When process `pid` started (field 22 of `/proc/PID/stat`, in clock ticks since boot): with the
/// pid, it names one process, where a pid alone may be reused or name a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Removes the markers of `cargo test` runs whose cargo has exited.
fn remove_stale_markers(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(MARKER)) else {
            continue;
        };
        let live = rest
            .split_once('-')
            .and_then(|(pid, started)| Some((pid.parse().ok()?, started.parse().ok()?)))
            .is_some_and(|(pid, started): (u32, u64)| start_time(pid) == Some(started));
        if !live {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Fails the calling test (under CI) or returns from it (elsewhere) when the kernel is unusable.
#[macro_export]
macro_rules! require_kernel {
    () => {
        if !$crate::kernel_available() {
            return Ok(());
        }
    };
}

/// `SocketAddr` from an address literal and a port; panics on a typo in a test's own constant.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("a literal address"), port)
}

/// Waits up to `wait` for one datagram; `None` if nothing came.
pub async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            buf.truncate(n);
            Some((buf, from))
        }
        _ => None,
    }
}

/// How long a test waits for a datagram that should arrive (or shows it did not).
pub const DELIVERY: Duration = Duration::from_millis(300);

/// Runs each scenario file (at most `at_once` at a time, each with its own topology), writing its
/// pcaps under `out`, and fails naming every file whose run did not pass.
pub async fn run_all_passing(
    files: &[std::path::PathBuf],
    out: &std::path::Path,
    at_once: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use harness::scenario::{self, RunOptions, Scenario, Verdict};
    let runs = files.iter().map(|f| async move {
        let s = Scenario::load(f).map_err(|e| anyhow::anyhow!("{e}"))?;
        let opts = RunOptions {
            out_dir: Some(out.to_path_buf()),
            ..RunOptions::default()
        };
        let o = scenario::run(&s, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        anyhow::ensure!(
            o.verdict == Verdict::Pass,
            "{} did not pass: {:?} {:?}",
            f.display(),
            o.error,
            o.checks
        );
        anyhow::Ok(())
    });
    let failed: Vec<String> = futures::stream::iter(runs)
        .buffer_unordered(at_once)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

/// The call, ringing and registration verdicts a scenario expects, as comparable text
/// (`bob's call ends with 408`, `bob rang: false`, `bob registered: true`).
pub fn call_verdicts(s: &harness::scenario::Scenario) -> std::collections::BTreeSet<String> {
    use harness::scenario::Expect;
    s.file
        .expects
        .iter()
        .filter_map(|e| match e.get_ref() {
            Expect::Call { from, status } => Some(format!("{from}'s call ends with {status}")),
            Expect::Rang { ua, value } => Some(format!("{ua} rang: {value}")),
            Expect::Registered { ua, value } => Some(format!("{ua} registered: {value}")),
            _ => None,
        })
        .collect()
}
pub mod lab;

/// Before libtest starts its threads, a non-root `cargo test` enters its own user and mount
/// namespace (`harness::rootless`), so kernel tests run without sudo where the kernel allows
/// unprivileged user namespaces. Root runs are untouched.
#[ctor::ctor]
fn enter_rootless() {
    harness::rootless::enter();
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn markers_of_exited_runs_are_removed_and_the_live_run_s_is_kept() {
        let dir = std::env::temp_dir().join(format!("snh-marker-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        let live = dir.join(format!("{MARKER}{me}-{}", start_time(me).unwrap()));
        let reused = dir.join(format!("{MARKER}{me}-1"));
        let gone = dir.join(format!("{MARKER}4194304-1"));
        let old_style = dir.join(format!("{MARKER}{me}"));
        let other = dir.join("something-else");
        for f in [&live, &reused, &gone, &old_style, &other] {
            std::fs::write(f, b"").unwrap();
        }
        remove_stale_markers(&dir);
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(left, [live, other]);
    }
}
