//! Removes namespaces left behind by harness processes that died without cleaning up.
//!
//! Only names with the project prefix whose owning process (encoded in the name, see
//! [`crate::names`]) no longer exists are touched, so parallel test binaries and other users'
//! namespaces are safe.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::names::{owner_pid, PREFIX};
use crate::netns::NETNS_DIR;

/// Removes stale namespaces of this project; returns their names.
pub fn reap_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_namespace_by_name(&name);
        reaped.push(name);
    }
    reaped
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
