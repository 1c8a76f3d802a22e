//! Nothing outlives a run: not on panic, not on Ctrl-C, and what a SIGKILL leaves, the reaper
//! removes. Each test drives `cleanup-child` (a real harness user in its own process) and then
//! looks at the machine: namespaces under /run/netns and processes by their command line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::require_kernel;

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

#[test]
fn a_panic_with_a_live_topology_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    let m = marker();
    let (mut child, run) = start_child("panic", &m)?;
    let status = wait_exit(&mut child)?;
    ensure!(!status.success(), "the child must have panicked");
    ensure!(
        eventually(|| namespaces_of(&run).is_empty()),
        "namespaces left: {:?}",
        namespaces_of(&run)
    );
    ensure!(
        eventually(|| processes_with(&m).is_empty()),
        "processes left: {:?}",
        processes_with(&m)
    );
    Ok(())
}

#[test]
fn ctrl_c_leaves_nothing_behind() -> Result<()> {
    require_kernel!();
    let m = marker();
    let (mut child, run) = start_child("wait", &m)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = wait_exit(&mut child)?;
    ensure!(
        status.code() == Some(130),
        "interrupted run exits 130, got {status:?}"
    );
    ensure!(
        eventually(|| namespaces_of(&run).is_empty()),
        "namespaces left: {:?}",
        namespaces_of(&run)
    );
    ensure!(
        eventually(|| processes_with(&m).is_empty()),
        "processes left: {:?}",
        processes_with(&m)
    );
    Ok(())
}

#[test]
fn the_reaper_removes_what_a_killed_run_left_and_nothing_else() -> Result<()> {
    require_kernel!();
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
    ensure!(
        eventually(|| processes_with(&m).is_empty()),
        "processes left: {:?}",
        processes_with(&m)
    );
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
