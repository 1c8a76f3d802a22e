//! Names of what the harness creates: project prefix, run id, node name.
//!
//! Every namespace is `snh-<pid>x<n>-<node>`: the prefix marks it as ours, the owning process id
//! lets [`crate::reaper`] tell a stale one (its process is gone) from one a parallel test still
//! uses, and `n` keeps two topologies of one process apart.

use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this project creates, and of nothing else.
pub const PREFIX: &str = "snh-";

/// Identifies one topology for its whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        RunId(format!("{}x{}", std::process::id(), n))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace name of `node` in this run.
    pub fn ns_name(&self, node: &str) -> String {
        format!("{PREFIX}{}-{node}", self.0)
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

/// The process that created namespace `name`, if `name` is one of ours.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Where the files of run `run`'s commands go (configs, scripts); the reaper removes it with the
/// run's namespaces.
pub fn files_dir(run: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("snh-files-{run}"))
}

/// Node names become part of namespace names and nft/ip arguments: keep them plain.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name `{name}`: use 1–32 characters from a–z, 0–9, `-` and `_`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_back_from_a_namespace_name() {
        let run = RunId::new();
        let name = run.ns_name("alice");
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        assert_eq!(owner_pid("other-ns"), None);
        assert_eq!(owner_pid("snh-nonsense"), None);
    }

    #[test]
    fn two_runs_of_one_process_differ() {
        assert_ne!(RunId::new(), RunId::new());
    }
}
