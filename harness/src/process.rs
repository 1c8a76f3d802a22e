//! An external program running inside a host's namespace (sipp, stund, kamailio, a user's binary).
//!
//! It is started by the namespace's worker thread, so it inherits the namespace; it leads its own
//! process group, so killing the group also kills whatever it forked; and it carries
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the topology even if nobody calls `kill`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::registry;

/// A running external program; killed (with its whole process group) on drop.
pub struct Process {
    program: String,
    child: Child,
    pgid: i32,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
}

/// Prepares `cmd` to run as its own process group that dies with its parent thread.
pub(crate) fn prepare(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Maps a spawn error to one that names the package when the program is missing.
pub(crate) fn spawn_error(program: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::MissingProgram {
            program: program.to_string(),
            package: crate::preflight::package_of(program),
        }
    } else {
        Error::Io {
            what: format!("start `{program}`"),
            source: e,
        }
    }
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
}

impl Process {
    pub(crate) fn from_child(program: &str, mut child: Child) -> Self {
        let pgid = child.id() as i32;
        registry::add_process_group(pgid);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(o) = child.stdout.take() {
            drain(o, stdout.clone());
        }
        if let Some(e) = child.stderr.take() {
            drain(e, stderr.clone());
        }
        Process {
            program: program.to_string(),
            child,
            pgid,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the program printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Everything the program printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The exit status, if the program has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the program to end, at most `timeout`; `None` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                // Give the output drains a moment to read what the pipes still hold.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until stdout or stderr contains `needle` (a readiness line), at most `timeout`.
    pub async fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || self.try_status().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the program and everything it forked.
    pub fn kill(&mut self) {
        // The group outlives its leader while anything it forked still runs: always signal it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        if self.try_status().is_none() {
            self.status = self.child.wait().ok();
        }
        registry::remove_process_group(self.pgid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
