//! A named network namespace with a worker thread that lives inside it.
//!
//! `setns` moves only the calling thread, so instead of hopping the caller's threads in and out
//! (and leaking a thread into the wrong namespace on a panic), each namespace owns one OS thread
//! that entered it once. Anything that must be *created* inside the namespace — sockets, netlink
//! connections, child processes, `/proc/sys/net` writes — runs as a job on that thread; what it
//! creates stays bound to the namespace wherever it is used afterwards. Named (bind-mounted under
//! `/run/netns`) so `ip netns exec` works for a user poking at a `--keep` topology.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::registry;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Where `ip netns` keeps its bind mounts; the harness uses the same place.
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace the harness created; removed on drop.
pub struct Netns {
    name: String,
    file: File,
    inner: Option<netns_rs::NetNs>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

impl Netns {
    /// Equivalent to `ip netns add NAME`, plus a worker thread inside it.
    pub fn create(name: &str) -> Result<Self> {
        let err = |source: std::io::Error| Error::Netns {
            name: name.to_string(),
            source,
        };
        let ns = netns_rs::NetNs::new(name).map_err(|e| match e {
            netns_rs::Error::CreateNsError(io)
                if io.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Error::NotPrivileged(format!("cannot create network namespace `{name}`"))
            }
            netns_rs::Error::UnshareError(errno) | netns_rs::Error::MountError(_, errno)
                if errno == nix::errno::Errno::EPERM =>
            {
                Error::NotPrivileged(format!("cannot create network namespace `{name}`"))
            }
            other => err(std::io::Error::other(other.to_string())),
        })?;
        registry::add_namespace(name);
        let file = ns.file().try_clone().map_err(err)?;
        let ns_file = file.try_clone().map_err(err)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<std::io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name(format!("ns:{name}"))
            .spawn(move || {
                let entered =
                    setns(ns_file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    // A panicking job must not take the namespace's only worker with it.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })
            .map_err(err)?;
        let mut me = Netns {
            name: name.to_string(),
            file,
            inner: Some(ns),
            tx: Some(tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => {
                me.teardown();
                Err(err(e))
            }
            Err(_) => {
                me.teardown();
                Err(Error::WorkerGone(name.to_string()))
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A descriptor for `IFLA_NET_NS_FD`, valid as long as `self` lives.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on the namespace's worker thread and waits for its result without blocking the
    /// async runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }))?;
        rx.await.map_err(|_| Error::WorkerGone(self.name.clone()))
    }

    /// Like [`Netns::run`], for callers outside an async context.
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }))?;
        rx.recv().map_err(|_| Error::WorkerGone(self.name.clone()))
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| Error::WorkerGone(self.name.clone()))
    }

    fn teardown(&mut self) {
        // Closing the channel ends the worker; joining it also reaps the children it spawned,
        // which get SIGKILL through PR_SET_PDEATHSIG when their parent thread exits.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(ns) = self.inner.take() {
            let _ = ns.remove();
        }
        // netns-rs leaves the mount point file when the unmount is lazy; make sure it is gone.
        let _ = std::fs::remove_file(self.path());
        registry::remove_namespace(&self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}
