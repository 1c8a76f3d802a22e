//! What this process has created and not yet removed, so an interrupt can still clean up.
//!
//! Drop handles teardown on the normal path and on panic; this registry covers the path where
//! nothing unwinds: Ctrl-C or SIGTERM on `cargo test` or `harness run`. [`install_interrupt_handler`]
//! removes every live namespace and kills every live child process group, then exits.

use std::collections::HashSet;
use std::sync::{Mutex, Once};

static NAMESPACES: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

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
