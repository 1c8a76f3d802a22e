//! What this process has created and not yet removed, so an interrupt can still clean up, and
//! the on-disk owner entry that lets another process tell whether a run is still alive.
//!
//! Drop handles teardown on the normal path and on panic; this registry covers the path where
//! nothing unwinds: Ctrl-C or SIGTERM on `cargo test` or `harness run`. [`install_interrupt_handler`]
//! removes every live namespace and kills every live child process group, then exits.
//!
//! SIGKILL leaves everything behind, and the reaper must then decide whether the owner is gone.
//! `/proc/PID` cannot answer that: a killed process keeps it while it is a zombie, and a new
//! process may get the same PID. So each run keeps an [`OwnerEntry`] in [`OWNERS_DIR`], a file
//! that names the owner (PID and start time) and on which the owner holds an exclusive `flock`
//! for the run's whole life. The kernel drops that lock when the process exits, before it
//! becomes a zombie, so a lock the reaper can take is proof the owner is gone.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

static NAMESPACES: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static ENTRIES: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Where live runs keep their owner entries (`<run-id>.owner`); tmpfs, so a reboot empties it.
pub const OWNERS_DIR: &str = "/run/snh";

/// The owner entry of run `run` (a [`crate::names::RunId`] string).
pub fn owner_entry_path(run: &str) -> PathBuf {
    Path::new(OWNERS_DIR).join(format!("{run}.owner"))
}

/// Who owns a run, as its entry records it: enough to recognise the same process later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot. Two processes that share a PID
    /// never share it.
    pub start_ticks: u64,
}

impl Owner {
    /// Parses an entry's text, `PID START_TICKS`.
    pub fn parse(text: &str) -> Option<Owner> {
        let mut it = text.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let start_ticks = it.next()?.parse().ok()?;
        Some(Owner { pid, start_ticks })
    }

    /// The entry text for this owner.
    pub fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_ticks)
    }
}

/// What `/proc/PID/stat` says about a process: its state letter and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, … and `Z` for a zombie (dead, not yet waited for).
    pub state: char,
    /// Field 22, in clock ticks after boot.
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`; `None` when no such process exists.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) sits in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3; field 22 is index 19.
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// A run's owner entry, locked for as long as this value lives; removed on drop.
#[derive(Debug)]
pub struct OwnerEntry {
    path: PathBuf,
    file: File,
}

impl OwnerEntry {
    /// Writes and locks the entry of run `run` for this process.
    ///
    /// The file is written and locked under a temporary name and renamed into place, so a
    /// reaper never sees an entry whose lock is not yet taken.
    pub fn create(run: &str) -> std::io::Result<OwnerEntry> {
        std::fs::create_dir_all(OWNERS_DIR)?;
        let pid = std::process::id();
        let start_ticks = proc_stat(pid)
            .map(|s| s.start_ticks)
            .ok_or_else(|| std::io::Error::other("cannot read /proc/self/stat"))?;
        let path = owner_entry_path(run);
        let tmp = Path::new(OWNERS_DIR).join(format!(".{run}.{pid}.tmp"));
        let mut file = File::create(&tmp)?;
        file.lock()?;
        file.write_all(Owner { pid, start_ticks }.render().as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        ENTRIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(path.clone());
        Ok(OwnerEntry { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnerEntry {
    fn drop(&mut self) {
        remove_entry_if_same(&self.path, &self.file);
        if let Some(set) = ENTRIES.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(&self.path);
        }
    }
}

/// Removes `path` only if it is still the file `file` has open, so an entry that a new run
/// with a reused PID has just renamed into place is not deleted by whoever held the old one.
pub(crate) fn remove_entry_if_same(path: &Path, file: &File) {
    let (Ok(on_disk), Ok(open)) = (std::fs::metadata(path), file.metadata()) else {
        return;
    };
    if on_disk.dev() == open.dev() && on_disk.ino() == open.ino() {
        let _ = std::fs::remove_file(path);
    }
}

pub(crate) fn add_namespace(name: &str) {
    NAMESPACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string());
}

pub(crate) fn remove_namespace(name: &str) {
    if let Some(set) = NAMESPACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        set.remove(name);
    }
}

pub(crate) fn add_process_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pgid);
}

pub(crate) fn remove_process_group(pgid: i32) {
    if let Some(set) = GROUPS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        set.remove(&pgid);
    }
}

/// Namespaces this process created that still exist.
pub fn live_namespaces() -> Vec<String> {
    NAMESPACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default()
}

/// Kills every live child process group and removes every live namespace of this process.
pub fn cleanup_all() {
    let groups: Vec<i32> = GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();
    for pgid in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for name in live_namespaces() {
        crate::reaper::remove_namespace_by_name(&name);
        remove_namespace(&name);
    }
    // The process exits next, which frees the locks; removing the entries spares the reaper.
    let entries = ENTRIES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    for path in entries {
        let _ = std::fs::remove_file(path);
    }
}

/// On SIGINT/SIGTERM/SIGHUP: clean up everything live, then exit with 130.
///
/// Idempotent; [`crate::Topology::build`] calls it, so tests and the CLI get it without asking.
pub fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("snh-interrupt".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("harness: signal {sig}: removing namespaces and processes");
                    cleanup_all();
                    std::process::exit(130);
                }
            });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) Z 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_proc_stat(line),
            Some(ProcStat {
                state: 'Z',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_proc_stat("4242 (x) R 1"), None);
    }

    #[test]
    fn this_process_is_running_and_has_a_start_time() {
        let me = proc_stat(std::process::id()).expect("own stat");
        assert_ne!(me.state, 'Z');
        assert!(me.start_ticks > 0);
    }

    #[test]
    fn an_owner_entry_round_trips() {
        let o = Owner {
            pid: 17,
            start_ticks: 123456789,
        };
        assert_eq!(Owner::parse(&o.render()), Some(o));
        assert_eq!(Owner::parse("17"), None);
        assert_eq!(Owner::parse(""), None);
    }
}
