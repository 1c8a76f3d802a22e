//! Runs a checked [`Scenario`] on the kernel, phase by phase:
//!
//! ```text
//! build → watch → start → play → settle → observe ─┬→ judge → report → write files
//!  (kernel::…, real namespaces and sockets)         │   (pure: any backend's Observed)
//! ```
//!
//! Each phase hands the next plain data or the running lab; from `observe` on, nothing touches
//! the kernel, and a backend that plays the file on the NAT model joins there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::explain::RouterStory;
use super::judge::Check;
use super::report;
use super::{judge, kernel, Scenario};
use crate::bindings::BindingEvent;
use crate::error::Result;
use crate::topology::Pool;
use crate::trace::Trace;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to write `<scenario>/<vantage>.pcap` and `<scenario>/ladder.txt`.
    pub out_dir: Option<PathBuf>,
    /// Before tearing down, print the namespaces and wait for Enter on stdin, so a user can
    /// look around with `ip netns exec` (nft rulesets, conntrack, tcpdump).
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
}

/// What a run showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub verdict: Verdict,
    /// Each expectation: its description, whether it held, what was observed.
    pub checks: Vec<Check>,
    /// A step that could not be carried out (the run stops there and fails).
    pub error: Option<String>,
    /// The normalised ladder (hosts and the WAN side of every router), with events.
    pub ladder: String,
    /// The same without events: stable run to run, for snapshots.
    pub snapshot: String,
    pub trace: Trace,
    pub pcaps: Vec<PathBuf>,
    pub duration: Duration,
    /// How long each phase took, in order: where a slow run spent its time.
    pub phases: Phases,
    /// For a failed run, what `harness diagnose` says of each host's capture (those that show a
    /// problem): the field guide's cause next to the expectation that failed.
    pub diagnosis: Vec<crate::diagnose::Report>,
    /// What the field guide's diagnosis steps (`stun-check`, `classify-nat`, `probe-udp`) found,
    /// one line each in step order (a probe's lines indented under it), with the NAT model's
    /// reason for every probe a router kept.
    pub field_checks: Vec<String>,
    /// What the model of each NAT router the run left alone saw: bindings and drops, for the
    /// run report's binding timelines.
    pub nat: Vec<RouterStory>,
    /// What `conntrack -E` reported in each NAT router: the kernel's own binding events.
    pub bindings: Vec<(String, Vec<BindingEvent>)>,
}

/// Runs `s` and reports; the topology is gone when this returns.
pub async fn run(s: &Scenario, opts: &RunOptions) -> Result<Outcome> {
    run_with(s, opts, None).await
}

/// [`run`] on a topology taken from `pool` (one of the same shape, reset, when there is one),
/// given back when the run ends with an outcome. A run that ends in an error or a panic drops
/// its topology instead, and so does a scenario with commands of its own (see
/// `kernel::reusable`), so nothing a failed or unchecked user did is handed on.
pub async fn run_with(s: &Scenario, opts: &RunOptions, pool: Option<&Pool>) -> Result<Outcome> {
    let pool = pool.filter(|_| kernel::reusable(s) && !opts.keep);
    let clock = kernel::Clock::start();
    let mut phases = Phases::start();
    // The files directory is held until the components are gone (programs first), on every way
    // out, errors included.
    let kernel::Lab { topo, files } = kernel::build(s, pool).await?;
    phases.end("build");
    let watching = kernel::watch(&topo).await?;
    phases.end("capture and binding watches");
    let mut running = kernel::start(s, topo, watching.capture, clock).await?;
    phases.end("components");
    let timeline = kernel::play(s, &mut running).await;
    phases.end("play");
    kernel::settle(s, &running).await;
    phases.end("settle");
    let observed = kernel::observe(&mut running, watching.watches, timeline).await;
    let checks = judge::judge(s, &observed);
    let mut outcome = report::outcome(s, &observed, checks);
    if let Some(dir) = &opts.out_dir {
        outcome.pcaps = report::write_files(dir, s, &observed, &outcome.ladder)?;
    }
    phases.end("judge and report");
    if opts.keep {
        keep(s, &running.topo).await;
    }
    match pool {
        Some(pool) => {
            // Components first (their tasks, sockets and programs), so the reset finds them gone.
            let topo = {
                let running = running;
                running.topo
            };
            // A refused topology (a socket still held …) is dropped by the pool: the run's
            // outcome stands either way.
            drop(pool.give_back(topo).await);
        }
        None => drop(running),
    }
    drop(files);
    phases.end("teardown");
    outcome.duration = clock.elapsed();
    outcome.phases = phases;
    Ok(outcome)
}

/// Prints the namespaces of the lab and waits for Enter.
async fn keep(s: &Scenario, topo: &crate::topology::Topology) {
    println!("\nThe topology of {} is still up:", s.name());
    for n in topo.nodes() {
        println!("  ip netns exec {}   # {}", n.ns_name(), n.name());
    }
    println!("Press Enter to tear it down.");
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
}

/// The wall time of each phase of a run (`build 0.21 s, components 0.01 s, play 2.40 s, …`).
#[derive(Debug, Clone, Default)]
pub struct Phases {
    done: Vec<(&'static str, Duration)>,
    since: Option<Instant>,
}

impl Phases {
    pub fn start() -> Self {
        Phases {
            done: Vec::new(),
            since: Some(Instant::now()),
        }
    }

    /// Ends the phase under way, named `name`, and starts the next.
    pub fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        let since = self.since.replace(now).unwrap_or(now);
        self.done.push((name, now - since));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Duration)> + '_ {
        self.done.iter().copied()
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {:.2} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}
