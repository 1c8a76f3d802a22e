//! An external program running inside a host's namespace (sipp, stund, kamailio, a user's binary).
//!
//! It is started by the namespace's worker thread, so it inherits the namespace; it leads its own
//! process group, so killing the group also kills whatever it forked; and it carries
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the topology even if nobody calls `kill`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// How many of the output drains have read their pipe to its end.
    drained: Arc<AtomicUsize>,
    drains: usize,
    status: Option<ExitStatus>,
    /// Open only for a program the harness types commands into (a softphone's `dial`).
    stdin: Option<std::process::ChildStdin>,
}

/// After the program exits, the longest to wait for its pipes to reach their end: they do at once
/// unless something it forked still holds them open (a daemon), and then nothing more will come
/// from the program itself anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

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
    // execvp reports EACCES, not ENOENT, when a directory on PATH could not be searched (a
    // non-root user whose PATH still names /root/.cargo/bin) and the program is nowhere else.
    let nowhere = e.kind() == std::io::ErrorKind::PermissionDenied
        && !program.contains('/')
        && crate::preflight::find_program(program).is_none();
    if e.kind() == std::io::ErrorKind::NotFound || nowhere {
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

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>, done: Arc<AtomicUsize>) {
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
        done.fetch_add(1, Ordering::Release);
    });
}

impl Process {
    pub(crate) fn from_child(program: &str, mut child: Child) -> Self {
        let pgid = child.id() as i32;
        let stdin = child.stdin.take();
        registry::add_process_group(pgid);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(AtomicUsize::new(0));
        let mut drains = 0;
        if let Some(o) = child.stdout.take() {
            drain(o, stdout.clone(), drained.clone());
            drains += 1;
        }
        if let Some(e) = child.stderr.take() {
            drain(e, stderr.clone(), drained.clone());
            drains += 1;
        }
        Process {
            program: program.to_string(),
            child,
            pgid,
            stdout,
            stderr,
            drained,
            drains,
            status: None,
            stdin,
        }
    }

    /// Writes one line to the program's standard input, as a user types a command into it.
    pub fn write_line(&mut self, line: &str) -> Result<(), Error> {
        use std::io::Write;
        let what = || format!("write `{line}` to the standard input of `{}`", self.program);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error::Io {
                what: what(),
                source: std::io::ErrorKind::NotConnected.into(),
            });
        };
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|source| Error::Io {
                what: what(),
                source,
            })
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
                // Everything it printed is read once the pipes reach their end (a loaded machine
                // may run the drain threads well after the exit: a fixed pause once lost the
                // whole output of turnutils_natdiscovery).
                let exited = Instant::now();
                while self.drained.load(Ordering::Acquire) < self.drains
                    && exited.elapsed() < DRAIN_WAIT
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
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

    /// Waits until a socket on `port` is bound (UDP) or listening (TCP) in the program's network
    /// namespace, at most `timeout`. Read from `/proc/PID/net/*`, which shows the namespace of
    /// PID: no tool is needed inside the host, and a port the program's children bind counts.
    pub async fn wait_for_port(&mut self, port: u16, tcp: bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let files: &[&str] = if tcp {
            &["tcp", "tcp6"]
        } else {
            &["udp", "udp6"]
        };
        loop {
            let pid = self.pid();
            let bound = files.iter().any(|f| {
                std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                    .is_ok_and(|table| port_in_table(&table, port, tcp))
            });
            if bound {
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

/// Whether a `/proc/net/{udp,tcp}[6]` table has a socket on local `port` (TCP: in LISTEN, `0A`).
fn port_in_table(table: &str, port: u16, tcp: bool) -> bool {
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1).unwrap_or_default();
        let state = cols.nth(1).unwrap_or_default();
        let p = local
            .rsplit_once(':')
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
        p == Some(port) && (!tcp || state == "0A")
    })
}

#[cfg(test)]
mod port_tests {
    use super::port_in_table;

    const UDP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  731: 0A0171CB:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41297 2 0000000000000000 0
";
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A0171CB:13C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41300 1 0000000000000000 100 0 0 10 0
   1: 0A0171CB:0D96 0B0171CB:13C4 01 00000000:00000000 00:00000000 00000000     0        0 41301 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn a_bound_udp_port_and_a_listening_tcp_port_are_found_and_others_are_not() {
        assert!(port_in_table(UDP, 5060, false));
        assert!(!port_in_table(UDP, 5061, false));
        assert!(port_in_table(TCP, 5060, true));
        // 3478 (0x0D96) is only the local end of an established connection, not a listener.
        assert!(!port_in_table(TCP, 3478, true));
        assert!(!port_in_table("", 5060, false));
    }
}
