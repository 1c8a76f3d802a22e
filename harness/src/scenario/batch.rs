//! Running many scenario files: a CI job's share of them (`--shard K/N`) and several at once
//! (`-j N`), each scenario's result handed over whole as soon as it ends.
//!
//! Every scenario builds its own namespaces under its own run id, so concurrent runs share
//! nothing but the CPU; the limit only keeps a small machine from being swamped.

use std::fmt;
use std::str::FromStr;

use futures::stream::{self, StreamExt};

use super::{run, Outcome, RunOptions, Scenario};

/// `K/N`: the K-th of N CI jobs (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: a shard is K/N with 1 ≤ K ≤ N, e.g. 2/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's items: every N-th, starting at the K-th, of the list in the order given.
    /// Dealt round-robin rather than in blocks, so the slow real-peer files (sorted together by
    /// name) spread over the jobs. Every item lands in exactly one shard of the N.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index - 1)
            .map(|(_, t)| t)
            .collect()
    }
}

/// How many scenarios to run at once by default: 8 per core, at most 32. A scenario spends most
/// of its time waiting on SIP timers, so more at once is faster (42 files: 19.8 s all at once,
/// 30.6 s sixteen at a time), but with T1 at 100–200 ms every timer then fires late enough to
/// change what the wire shows: 49 at once on two cores had a 100 Trying miss T1 = 100 ms and
/// draw an INVITE retransmission. Fidelity over speed; `-j` raises it.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 8).clamp(1, 32)
}

/// A rough length of a scenario's timeline, to start the longest first: a batch then ends with
/// its longest file instead of waiting for one that started last. Its waits, each call's answer
/// delay and hold, and for a call expected to fail, a 64·T1 timeout.
pub fn estimated_length(s: &Scenario) -> std::time::Duration {
    use super::file::{Component, Expect, Step};
    let t1 = s.file.scenario.t1_ms;
    let answer_after = |user: &str| {
        s.file.components.iter().find_map(|c| match c.get_ref() {
            Component::Ua {
                user: u,
                host,
                answer_after_ms,
                ..
            } if u.as_deref().unwrap_or(host) == user => Some(*answer_after_ms),
            _ => None,
        })
    };
    let fails = |caller: &str| {
        s.file.expects.iter().any(|e| {
            matches!(e.get_ref(), Expect::Call { from, status } if from == caller && !status.contains(200))
        })
    };
    let ms: u64 = s
        .file
        .steps
        .iter()
        .map(|step| match step.get_ref() {
            Step::Wait { ms } => *ms,
            Step::Call {
                from,
                to,
                hold_ms,
                timeout_ms,
            } => {
                let failing = if fails(from) {
                    (64 * t1).min(*timeout_ms)
                } else {
                    0
                };
                answer_after(to).unwrap_or(0) + hold_ms + failing
            }
            _ => 0,
        })
        .sum();
    std::time::Duration::from_millis(ms)
}

/// Runs `scenarios` with at most `jobs` at once, the longest ([`estimated_length`]) first, and
/// calls `done` with each result as it ends (completion order); returns the results in the order
/// given.
pub async fn run_many(
    scenarios: &[Scenario],
    jobs: usize,
    opts: &RunOptions,
    mut done: impl FnMut(usize, &Result<Outcome, String>),
) -> Vec<Result<Outcome, String>> {
    let mut results: Vec<Option<Result<Outcome, String>>> =
        (0..scenarios.len()).map(|_| None).collect();
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(estimated_length(&scenarios[i])));
    let mut runs = stream::iter(order)
        .map(|i| async move { (i, run(&scenarios[i], opts).await.map_err(|e| e.to_string())) })
        .buffer_unordered(jobs.max(1));
    while let Some((i, r)) = runs.next().await {
        done(i, &r);
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every scenario ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_shards_take_every_file_exactly_once() {
        let files: Vec<usize> = (0..44).collect();
        let mut all: Vec<usize> = (1..=3)
            .flat_map(|k| Shard { index: k, count: 3 }.select(files.clone()))
            .collect();
        all.sort();
        assert_eq!(all, files);
        assert_eq!(
            "2/3".parse::<Shard>().unwrap().select(files.clone())[..3],
            [1, 4, 7]
        );
    }

    #[test]
    fn a_call_that_times_out_is_started_before_the_catalogue_s_quick_calls() {
        let load = |name: &str| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
            Scenario::load(&dir.join(format!("{name}.toml"))).unwrap()
        };
        let slow = estimated_length(&load("binding-expiry-slow-answer"));
        // answer after 4 s, hold 0.2 s, then 64·T1 at T1 = 200 ms.
        assert_eq!(slow.as_millis(), 4000 + 200 + 12_800);
        for quick in ["lan-call-works", "408-private-contact-fix-far-end"] {
            assert!(estimated_length(&load(quick)) < slow, "{quick}");
        }
    }

    #[test]
    fn a_bad_shard_says_what_a_shard_is() {
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("K/N with 1 ≤ K ≤ N"), "{bad}: {e}");
        }
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
    }
}
