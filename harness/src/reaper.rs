//! Removes namespaces left behind by harness processes that died without cleaning up.
//!
//! Only names with the project prefix are touched, and only those whose owning run is proven
//! gone, so parallel test binaries and other users' namespaces are safe. A run is gone when the
//! lock on its owner entry ([`crate::registry::OwnerEntry`]) is free, or when the entry names a
//! process that no longer exists with the recorded start time. A zombie or a process that reused
//! the PID cannot hold the lock, so neither keeps a dead run's namespaces alive. Namespaces with no
//! entry (made by a harness older than the entries, or after `/run/snh` was emptied) fall back to
//! `/proc/PID` read with care: a zombie is dead, and a process that started after the namespace
//! was made is not the one that made it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::names::{owner_pid, PREFIX};
use crate::netns::NETNS_DIR;
use crate::registry::{self, owner_entry_path, proc_stat, Owner, OWNERS_DIR};

/// Why the reaper judged a run's owner gone (or not); printed by `harness reap -v` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The owner holds its entry's lock and is the process the entry names.
    Alive,
    /// Nothing holds the entry's lock: the owner exited (a zombie has already let go of it).
    LockFree,
    /// The lock is held, but not by the process the entry names (that PID is gone, a zombie,
    /// or a different process with a reused PID).
    LockHeldByAnother,
    /// No entry: the PID does not exist.
    NoProcess,
    /// No entry: the PID is a zombie, dead and not yet waited for.
    Zombie,
    /// No entry: the PID belongs to a process that started after the namespace was made.
    PidReused,
}

impl Liveness {
    pub fn is_alive(&self) -> bool {
        matches!(self, Liveness::Alive)
    }
}

/// One stale run the reaper removed.
#[derive(Debug, Clone)]
pub struct Reaped {
    pub run: String,
    pub why: Liveness,
    pub namespaces: Vec<String>,
}

/// Removes stale namespaces of this project; returns their names.
pub fn reap_stale() -> Vec<String> {
    reap_stale_runs()
        .into_iter()
        .flat_map(|r| r.namespaces)
        .collect()
}

/// Removes every run of this project whose owner is gone: its processes, namespaces, files
/// directory and owner entry. Also drops owner entries no run uses any more.
pub fn reap_stale_runs() -> Vec<Reaped> {
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in namespace_names() {
        if let Some(run) = run_of(&name) {
            runs.entry(run.to_string()).or_default().push(name);
        }
    }
    let mut reaped = Vec::new();
    for (run, mut namespaces) in runs {
        let Some(pid) = owner_pid(&namespaces[0]) else {
            continue;
        };
        namespaces.sort();
        let made = oldest_namespace_time(&namespaces);
        // `held` keeps the entry locked by us while we remove the run, so a concurrent reaper
        // sees it held and checks the recorded owner, which is just as gone.
        let (why, held) = liveness(&run, pid, made);
        if why.is_alive() {
            continue;
        }
        for name in &namespaces {
            remove_namespace_by_name(name);
        }
        let _ = std::fs::remove_dir_all(crate::names::files_dir(&run));
        if let Some(file) = &held {
            registry::remove_entry_if_same(&owner_entry_path(&run), file);
        } else {
            let _ = std::fs::remove_file(owner_entry_path(&run));
        }
        reaped.push(Reaped {
            run,
            why,
            namespaces,
        });
    }
    remove_orphan_entries();
    remove_orphan_files_dirs();
    reaped
}

/// Whether run `run`'s owner is alive. When its entry's lock was free, the returned file holds
/// that lock now.
pub fn liveness(
    run: &str,
    pid: u32,
    namespace_made: Option<SystemTime>,
) -> (Liveness, Option<File>) {
    match File::open(owner_entry_path(run)) {
        Ok(file) => {
            let recorded = std::fs::read_to_string(owner_entry_path(run))
                .ok()
                .and_then(|t| Owner::parse(&t));
            match file.try_lock() {
                Ok(()) => (Liveness::LockFree, Some(file)),
                Err(_) => (held_lock_liveness(recorded), None),
            }
        }
        Err(_) => (liveness_without_entry(pid, namespace_made), None),
    }
}

/// The lock is held; alive only if the recorded owner still runs under its recorded start time.
/// (Something else can hold it for a moment: another reaper, or a child the owner forked that
/// has not yet exec'd and closed its inherited descriptors.)
fn held_lock_liveness(recorded: Option<Owner>) -> Liveness {
    let Some(owner) = recorded else {
        // Written and locked before it is renamed into place, an entry is never empty while
        // its owner lives; a held lock with an unreadable entry is still a held lock.
        return Liveness::Alive;
    };
    match proc_stat(owner.pid) {
        Some(s) if s.state != 'Z' && s.start_ticks == owner.start_ticks => Liveness::Alive,
        _ => Liveness::LockHeldByAnother,
    }
}

/// For runs with no entry: `/proc/PID`, minus zombies and processes younger than the namespace.
pub fn liveness_without_entry(pid: u32, namespace_made: Option<SystemTime>) -> Liveness {
    let Some(stat) = proc_stat(pid) else {
        return Liveness::NoProcess;
    };
    if stat.state == 'Z' {
        return Liveness::Zombie;
    }
    if let (Some(made), Some(started)) = (namespace_made, start_time(stat.start_ticks)) {
        // The start time is known to a clock tick and the namespace's time to its inode's
        // creation; a second of slack keeps a live owner from ever looking younger.
        if started > made + Duration::from_secs(1) {
            return Liveness::PidReused;
        }
    }
    Liveness::Alive
}

/// Wall-clock start of a process from its start time in ticks after boot.
fn start_time(start_ticks: u64) -> Option<SystemTime> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = clock_ticks_per_second();
    let age = uptime - start_ticks as f64 / hz;
    SystemTime::now().checked_sub(Duration::from_secs_f64(age.max(0.0)))
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// When the oldest of `namespaces` was made, read from its nsfs inode.
fn oldest_namespace_time(namespaces: &[String]) -> Option<SystemTime> {
    namespaces
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .filter_map(|m| m.modified().ok())
        .min()
}

/// Every namespace name under [`NETNS_DIR`] with the project prefix.
fn namespace_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(PREFIX))
        .collect()
}

/// The run id inside namespace name `snh-<run>-<node>`.
pub fn run_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let (run, _node) = rest.split_once('-')?;
    owner_pid(name)?;
    Some(run)
}

/// Entries (and half-written temporaries) whose lock is free belong to runs that died with
/// no namespace left; they would only pile up.
fn remove_orphan_entries() {
    let Ok(dir) = std::fs::read_dir(OWNERS_DIR) else {
        return;
    };
    for e in dir.flatten() {
        let path: PathBuf = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            registry::remove_entry_if_same(&path, &file);
        }
    }
}

/// Files directories ([`crate::names::files_dir`]) whose run has no namespace left and whose
/// owner is gone: a run that ended in an error path without removing its directory, or one
/// killed after its namespaces were already gone. Judged like a run: by its owner entry's lock,
/// else by `/proc` against the directory's age.
fn remove_orphan_files_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(dir) = std::fs::read_dir(&tmp) else {
        return;
    };
    let live: std::collections::BTreeSet<String> = namespace_names()
        .iter()
        .filter_map(|n| run_of(n).map(str::to_string))
        .collect();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(run) = name.strip_prefix("snh-files-") else {
            continue;
        };
        let Some(pid) = owner_pid(&format!("{PREFIX}{run}-x")) else {
            continue;
        };
        if live.contains(run) {
            continue;
        }
        let made = e.metadata().ok().and_then(|m| m.modified().ok());
        let (why, held) = liveness(run, pid, made);
        if why.is_alive() {
            continue;
        }
        let _ = std::fs::remove_dir_all(e.path());
        if let Some(file) = &held {
            registry::remove_entry_if_same(&owner_entry_path(run), file);
        }
    }
}

/// Kills every process inside namespace `name`, then unmounts and deletes it.
pub(crate) fn remove_namespace_by_name(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    if let Ok(meta) = std::fs::metadata(&path) {
        kill_processes_in(meta.dev(), meta.ino());
    }
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&path);
}

/// Processes whose network namespace is the given (device, inode) get SIGKILL.
fn kill_processes_in(dev: u64, ino: u64) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if meta.dev() == dev && meta.ino() == ino {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_read_from_a_namespace_name_with_dashes_in_the_node() {
        assert_eq!(run_of("snh-123x4-home-router"), Some("123x4"));
        assert_eq!(run_of("snh-nonsense-x"), None);
        assert_eq!(run_of("other-123x4-a"), None);
    }

    #[test]
    fn without_an_entry_a_live_process_older_than_the_namespace_is_its_owner() {
        let me = std::process::id();
        assert_eq!(
            liveness_without_entry(me, Some(SystemTime::now())),
            Liveness::Alive
        );
        assert_eq!(liveness_without_entry(me, None), Liveness::Alive);
    }

    #[test]
    fn without_an_entry_a_process_younger_than_the_namespace_reused_the_pid() {
        let made_long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(
            liveness_without_entry(std::process::id(), Some(made_long_ago)),
            Liveness::PidReused
        );
    }

    #[test]
    fn without_an_entry_a_missing_process_is_gone() {
        // PIDs never reach this value (pid_max is at most 2^22).
        assert_eq!(
            liveness_without_entry(u32::MAX - 1, None),
            Liveness::NoProcess
        );
    }
}
