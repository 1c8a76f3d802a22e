//! Where a bring-up's (or a pool reset's) time goes: one timed event per step and node, recorded
//! by the real `Topology::build` and `Topology::reset` and read by the `bringup` bench, so the
//! breakdown cannot drift from the code it describes.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A kind of bring-up step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// `ip netns add` plus the worker thread that enters the namespace.
    Namespace,
    /// The route-netlink connection opened inside the namespace, and `lo` up.
    Netlink,
    /// Per-namespace sysctls: IPv6 and ICMP redirects off, forwarding on.
    Sysctls,
    /// A bridge for each segment with more than one member.
    Bridge,
    /// veth pairs created in place, plugged into their bridge and set up.
    Links,
    /// Interface addresses.
    Addresses,
    /// Default routes (a blackhole in the internet core).
    Routes,
    /// A NAT's conntrack timeout sysctls.
    NatSysctls,
    /// A NAT's nftables ruleset.
    Nft,
    /// Waiting until each bridge port forwards (or each bridgeless veth is operationally up).
    Forwarding,
    /// Reset: the previous user's tasks aborted and given a moment to drop their sockets.
    Abort,
    /// Reset: processes left in the namespaces found, killed and awaited.
    Kill,
    /// Reset: the check that no socket is left open in a namespace.
    Sockets,
    /// Reset: conntrack entries (bindings) and their expectations deleted.
    Conntrack,
    /// Reset: learnt neighbours (ARP), cached route exceptions (PMTU) and the MAC addresses a
    /// segment bridge learnt forgotten.
    Neighbours,
}

impl Stage {
    /// Every stage, in bring-up order.
    pub const ALL: [Stage; 10] = [
        Stage::Namespace,
        Stage::Netlink,
        Stage::Sysctls,
        Stage::Bridge,
        Stage::Links,
        Stage::Addresses,
        Stage::Routes,
        Stage::NatSysctls,
        Stage::Nft,
        Stage::Forwarding,
    ];

    /// Every stage of a pool reset, in order; a reset also records [`Stage::Sysctls`],
    /// [`Stage::NatSysctls`] and [`Stage::Nft`].
    pub const RESET: [Stage; 8] = [
        Stage::Abort,
        Stage::Kill,
        Stage::Sockets,
        Stage::Sysctls,
        Stage::Neighbours,
        Stage::Conntrack,
        Stage::NatSysctls,
        Stage::Nft,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Namespace => "namespaces",
            Stage::Netlink => "netlink socket + lo up",
            Stage::Sysctls => "sysctls",
            Stage::Bridge => "bridges",
            Stage::Links => "veths + up",
            Stage::Addresses => "addresses",
            Stage::Routes => "routes",
            Stage::NatSysctls => "NAT conntrack sysctls",
            Stage::Nft => "nft rulesets",
            Stage::Forwarding => "wait: ports forwarding",
            Stage::Abort => "abort tasks",
            Stage::Kill => "find + kill processes",
            Stage::Sockets => "open-socket check",
            Stage::Conntrack => "conntrack flush",
            Stage::Neighbours => "neighbours, route cache, bridge fdb flush",
        }
    }
}

/// One timed step: what, on which node, and when relative to the start of the bring-up.
#[derive(Debug, Clone)]
pub struct StageEvent {
    pub stage: Stage,
    pub node: String,
    pub start: Duration,
    pub took: Duration,
}

/// The timed steps of one bring-up.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    events: Vec<StageEvent>,
    total: Duration,
}

impl Timeline {
    /// Every step, in the order they ended.
    pub fn events(&self) -> &[StageEvent] {
        &self.events
    }

    /// The whole bring-up, from the first namespace to the last port forwarding.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// Time spent in `stage` summed over its steps; steps that overlapped each count whole.
    pub fn busy(&self, stage: Stage) -> Duration {
        self.events
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| e.took)
            .sum()
    }

    /// Wall-clock time during which at least one step of `stage` was running.
    pub fn wall(&self, stage: Stage) -> Duration {
        let mut spans: Vec<(Duration, Duration)> = self
            .events
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| (e.start, e.start + e.took))
            .collect();
        spans.sort();
        let mut covered = Duration::ZERO;
        let mut reach = Duration::ZERO;
        for (a, b) in spans {
            let a = a.max(reach);
            if b > a {
                covered += b - a;
                reach = b;
            }
        }
        covered
    }
}

/// Collects [`StageEvent`]s while a bring-up runs; shared by its concurrent steps.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    events: Mutex<Vec<StageEvent>>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Runs `step` and records how long it took as `stage` on `node`.
    pub(crate) async fn time<F: Future>(&self, stage: Stage, node: &str, step: F) -> F::Output {
        let t = Instant::now();
        let out = step.await;
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(StageEvent {
                stage,
                node: node.to_string(),
                start: t - self.start,
                took: t.elapsed(),
            });
        out
    }

    pub(crate) fn finish(self) -> Timeline {
        Timeline {
            total: self.start.elapsed(),
            events: self.events.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stage: Stage, start: u64, took: u64) -> StageEvent {
        StageEvent {
            stage,
            node: "n".into(),
            start: Duration::from_millis(start),
            took: Duration::from_millis(took),
        }
    }

    #[test]
    fn overlapping_steps_count_whole_in_busy_and_once_in_wall() {
        let t = Timeline {
            events: vec![
                ev(Stage::Nft, 0, 4),
                ev(Stage::Nft, 2, 4),
                ev(Stage::Nft, 10, 1),
                ev(Stage::Links, 0, 50),
            ],
            total: Duration::from_millis(60),
        };
        assert_eq!(t.busy(Stage::Nft), Duration::from_millis(9));
        assert_eq!(t.wall(Stage::Nft), Duration::from_millis(7));
        assert_eq!(t.wall(Stage::Bridge), Duration::ZERO);
    }
}
