//! Nothing outlives a run: not on panic, not on Ctrl-C, and what a SIGKILL leaves, the reaper
//! removes. Each test drives `cleanup-child` (a real harness user in its own process) and then
//! looks at the machine: namespaces under /run/netns and processes by their command line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::require_kernel;

/// One test at a time: a killed child is reaped by any reaper, including the automatic one of
/// another test's child starting up, and each test looks at what its own kill left.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn marker() -> String {
    // A sleep duration nobody else uses, so the process can be found by its command line.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("4242.{nanos:09}")
}

fn start_child(mode: &str, marker: &str) -> Result<(Child, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanup-child"))
        .args([mode, marker])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let run = line
        .trim()
        .strip_prefix("READY ")
        .with_context(|| format!("child did not get ready: {line:?}"))?
        .to_string();
    Ok((child, run))
}

fn namespaces_of(run: &str) -> Vec<String> {
    let prefix = format!("snh-{run}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.starts_with("sleep ") && cmd.contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// Polls until `f` holds, for up to 3 s (a killed process takes a moment to be reaped).
fn eventually(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn wait_exit(child: &mut Child) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        ensure!(Instant::now() < end, "child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_live_child_really_has_namespaces_and_a_process() -> Result<()> {
    // The other tests assert absence; this one proves the probes see presence.
    require_kernel!();
    let _serial = serial();
    let m = marker();
    let (mut child, run) = start_child("wait", &m)?;
    let ns = namespaces_of(&run);
    let procs = processes_with(&m);
    // SIGINT, not SIGKILL: the child cleans up itself, so this test never races the reaper test.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    wait_exit(&mut child)?;
    ensure!(
        ns.len() == 7,
        "two_lans has 7 namespaces (internet, 2 routers, 4 hosts): {ns:?}"
    );
    ensure!(procs.len() == 1, "the sleeper must be visible: {procs:?}");
    Ok(())
}

/// Starts `cleanup-child MODE`, lets it panic, and checks it left nothing. In a `pooled-` mode
/// the run checked is the one idle in the child's process-wide pool.
fn a_panic_leaves_nothing(mode: &str) -> Result<()> {
    let _serial = serial();
    let m = marker();
    let (mut child, run) = start_child(mode, &m)?;
    ensure!(!namespaces_of(&run).is_empty(), "no topology to remove");
    let status = wait_exit(&mut child)?;
    ensure!(!status.success(), "the child must have panicked");
    all_gone(&run, &m)
}

/// Starts `cleanup-child MODE`, interrupts it as Ctrl-C does, and checks it left nothing.
fn ctrl_c_leaves_nothing(mode: &str) -> Result<()> {
    let _serial = serial();
    let m = marker();
    let (mut child, run) = start_child(mode, &m)?;
    ensure!(!namespaces_of(&run).is_empty(), "no topology to remove");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = wait_exit(&mut child)?;
    ensure!(
        status.code() == Some(130),
        "interrupted run exits 130, got {status:?}"
    );
    all_gone(&run, &m)
}

#[test]
fn a_panic_with_a_live_topology_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    a_panic_leaves_nothing("panic")
}

#[test]
fn ctrl_c_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    ctrl_c_leaves_nothing("wait")
}

/// A topology idle in the process-wide pool belongs to a static, which no unwinding drops: the
/// pool removes what it holds when the process exits, on a panic or a return from `main`.
#[test]
fn a_panic_with_a_pooled_topology_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    a_panic_leaves_nothing("pooled-panic")
}

#[test]
fn ctrl_c_with_a_pooled_topology_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    ctrl_c_leaves_nothing("pooled-wait")
}

#[test]
fn the_reaper_removes_what_a_killed_run_left_and_nothing_else() -> Result<()> {
    require_kernel!();
    let _serial = serial();
    let m = marker();
    let (mut child, run) = start_child("wait", &m)?;
    child.kill()?; // SIGKILL: no handler, no unwinding
    wait_exit(&mut child)?;
    let left = namespaces_of(&run);
    ensure!(
        !left.is_empty(),
        "SIGKILL cannot clean up; the namespaces must still be there"
    );
    // Its processes died with it (PR_SET_PDEATHSIG), even though the namespaces did not.
    processes_gone(&m)?;
    // A namespace that is not ours, and one of ours whose owner is alive, must survive the reaper.
    let foreign = format!("snhtest-foreign-{}", std::process::id());
    let path = format!("/run/netns/{foreign}");
    std::fs::write(&path, b"")?;
    let reaped = harness::reaper::reap_stale();
    let foreign_survived = std::path::Path::new(&path).exists();
    let _ = std::fs::remove_file(&path);
    ensure!(
        foreign_survived,
        "the reaper touched a namespace that is not ours"
    );
    for n in &left {
        ensure!(reaped.contains(n), "{n} was not reaped: {reaped:?}");
    }
    ensure!(
        namespaces_of(&run).is_empty(),
        "left after reaping: {:?}",
        namespaces_of(&run)
    );
    Ok(())
}

/// Waits until `pid` is a zombie: dead, its `/proc/PID` still there because nobody waited.
fn until_zombie(pid: u32) -> Result<()> {
    ensure!(
        eventually(|| harness::registry::proc_stat(pid).is_some_and(|s| s.state == 'Z')),
        "{pid} did not become a zombie"
    );
    Ok(())
}

/// SIGKILLs a fresh `cleanup-child` and leaves it a zombie; returns it (to be waited for
/// later) and its run id.
fn zombie_run(m: &str) -> Result<(Child, String)> {
    let (child, run) = start_child("wait", m)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    until_zombie(child.id())?;
    ensure!(
        std::path::Path::new(&format!("/proc/{}", child.id())).exists(),
        "a zombie keeps its /proc entry; that is what fooled the old reaper"
    );
    ensure!(
        !namespaces_of(&run).is_empty(),
        "SIGKILL cannot clean up; the namespaces must still be there"
    );
    Ok((child, run))
}

#[test]
fn the_reaper_removes_a_zombie_runs_namespaces_at_once() -> Result<()> {
    require_kernel!();
    let _serial = serial();
    let m = marker();
    let (mut child, run) = zombie_run(&m)?;
    let reaped = harness::reaper::reap_stale_runs();
    let left = namespaces_of(&run);
    wait_exit(&mut child)?;
    ensure!(
        left.is_empty(),
        "left while the owner is a zombie: {left:?}"
    );
    // A parallel test's reaper may have been first; if this one did it, it says why: the lock
    // is free, or held for a moment by another reaper testing the same lock (a parallel test's
    // automatic reap; seen in a full suite run) while the entry's PID is a zombie. Both mean the
    // owner is gone; neither may read as alive.
    if let Some(r) = reaped.iter().find(|r| r.run == run) {
        use harness::reaper::Liveness;
        ensure!(
            matches!(r.why, Liveness::LockFree | Liveness::LockHeldByAnother),
            "judged by {:?}, not by the lock and the zombie PID",
            r.why
        );
    }
    ensure!(
        !harness::registry::owner_entry_path(&run).exists(),
        "the owner entry of a reaped run must go too"
    );
    processes_gone(&m)?;
    Ok(())
}

#[test]
fn without_its_owner_entry_a_zombie_run_is_still_reaped() -> Result<()> {
    // The fallback for runs with no entry (an older harness, an emptied /run/snh) reads
    // /proc/PID/stat and does not take a zombie for a live owner.
    require_kernel!();
    let _serial = serial();
    let m = marker();
    let (mut child, run) = zombie_run(&m)?;
    std::fs::remove_file(harness::registry::owner_entry_path(&run))?;
    harness::reaper::reap_stale();
    let left = namespaces_of(&run);
    wait_exit(&mut child)?;
    ensure!(
        left.is_empty(),
        "left while the owner is a zombie: {left:?}"
    );
    Ok(())
}

/// A namespace `snh-<run>-n` pinned under `/run/netns` as `ip netns add` would, and the owner
/// entry `text` for it. (`unshare --net=FILE`, because `ip netns add` fails in a rootless run: it
/// returns to the host's network namespace at the end, which a user namespace may not enter.)
fn fake_run(run: &str, text: &str) -> Result<()> {
    let name = format!("snh-{run}-n");
    let pin = std::path::Path::new(harness::netns::NETNS_DIR).join(&name);
    std::fs::create_dir_all(harness::netns::NETNS_DIR)?;
    std::fs::write(&pin, "")?;
    let st = Command::new("unshare")
        .arg(format!("--net={}", pin.display()))
        .arg("true")
        .status()?;
    ensure!(st.success(), "unshare --net={}", pin.display());
    std::fs::create_dir_all(harness::registry::OWNERS_DIR)?;
    std::fs::write(harness::registry::owner_entry_path(run), text)?;
    Ok(())
}

fn remove_fake_run(run: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", &format!("snh-{run}-n")])
        .status();
    let _ = std::fs::remove_file(harness::registry::owner_entry_path(run));
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_runs_namespaces() -> Result<()> {
    require_kernel!();
    let _serial = serial();
    // A live process stands in for the new owner of a reused PID.
    let mut stranger = Command::new("sleep").arg("30").spawn()?;
    let pid = stranger.id();
    let real = harness::registry::proc_stat(pid).context("stat of sleep")?;
    let old = harness::registry::Owner {
        pid,
        start_ticks: real.start_ticks.saturating_sub(1000),
    };
    let now = harness::registry::Owner {
        pid,
        start_ticks: real.start_ticks,
    };
    // 1. An entry naming the PID with another start time, its lock free (the old owner died).
    let unlocked = format!("{pid}x9001");
    fake_run(&unlocked, &old.render())?;
    // 2. The same, but something still holds the lock (a reaper, a child of the old owner):
    //    the start time alone must expose it.
    let held_stale = format!("{pid}x9002");
    fake_run(&held_stale, &old.render())?;
    let lock2 = std::fs::File::open(harness::registry::owner_entry_path(&held_stale))?;
    lock2.lock()?;
    // 3. Control: a held lock and the right start time is a live run and must survive.
    let alive = format!("{pid}x9003");
    fake_run(&alive, &now.render())?;
    let lock3 = std::fs::File::open(harness::registry::owner_entry_path(&alive))?;
    lock3.lock()?;

    let reaped = harness::reaper::reap_stale_runs();
    let left = |run: &str| namespaces_of(run);
    let (l1, l2, l3) = (left(&unlocked), left(&held_stale), left(&alive));
    drop((lock2, lock3));
    for r in [&unlocked, &held_stale, &alive] {
        remove_fake_run(r);
    }
    let _ = stranger.kill();
    let _ = stranger.wait();

    ensure!(l1.is_empty(), "a free lock naming a live PID kept {l1:?}");
    ensure!(
        l2.is_empty(),
        "a held lock naming a PID with another start time kept {l2:?}"
    );
    ensure!(
        l3.len() == 1,
        "the live run's namespace was reaped: {reaped:?}"
    );
    let why = |run: &str| reaped.iter().find(|r| r.run == run).map(|r| r.why.clone());
    use harness::reaper::Liveness;
    for (run, expected) in [
        (&unlocked, Liveness::LockFree),
        (&held_stale, Liveness::LockHeldByAnother),
    ] {
        if let Some(w) = why(run) {
            ensure!(w == expected, "{run}: judged {w:?}, expected {expected:?}");
        }
    }
    Ok(())
}

#[test]
fn the_reaper_removes_files_directories_of_dead_runs_only() -> Result<()> {
    // `harness run` leaves its commands' files directory behind when a run ends in an error
    // (seen: tests/scenarios.rs's failing lone command); the reaper takes those of dead owners.
    require_kernel!();
    let _serial = serial();
    let mut gone = Command::new("true").spawn()?;
    let dead = gone.id();
    gone.wait()?;
    let dead_dir = harness::names::files_dir(&format!("{dead}x7"));
    let live_dir = harness::names::files_dir(&format!("{}x9007", std::process::id()));
    for d in [&dead_dir, &live_dir] {
        std::fs::create_dir_all(d.join("stack"))?;
    }
    harness::reaper::reap_stale();
    let (dead_left, live_left) = (dead_dir.exists(), live_dir.exists());
    let _ = std::fs::remove_dir_all(&live_dir);
    let _ = std::fs::remove_dir_all(&dead_dir);
    ensure!(!dead_left, "the files directory of a dead run survived");
    ensure!(
        live_left,
        "the files directory of a live process was removed"
    );
    Ok(())
}

/// Fails unless the run's namespaces and the marked processes are gone (soon).
fn all_gone(run: &str, m: &str) -> Result<()> {
    ensure!(
        eventually(|| namespaces_of(run).is_empty()),
        "namespaces left: {:?}",
        namespaces_of(run)
    );
    processes_gone(m)
}

/// Fails unless no process carrying marker `m` is left (soon).
fn processes_gone(m: &str) -> Result<()> {
    ensure!(
        eventually(|| processes_with(m).is_empty()),
        "processes left: {:?}",
        processes_with(m)
    );
    Ok(())
}
