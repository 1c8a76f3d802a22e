//! Every scenario of the catalogue, one test each: it runs with its expected verdict, its ladder
//! matches the reviewed snapshot (`cargo insta review` after an intended change), and every
//! packet a router dropped carries the NAT model's reason.
//!
//! One test per file (libtest-mimic) rather than one test for all, so that
//! `cargo nextest run -p tests --test catalogue --partition count:K/N` spreads the catalogue
//! over CI jobs. Under `cargo test` they run as many at once as `harness run` does by default
//! (8 per core): a scenario mostly waits on SIP timers, and each builds its own namespaces.
//!
//! Topologies come from the process-wide pool (`Pool::shared`): a scenario that passed gives its
//! topology back, reset, to the next scenario of the same wiring, so the kernel's deferred
//! namespace cleanup leaves the suite's path. Off unless `SNH_POOL=1` (see `use_pool`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use harness::topology::Pool;
use libtest_mimic::{Arguments, Failed, Trial};

fn catalogue() -> Vec<PathBuf> {
    let (_, dir) = harness::catalogue::default_paths();
    harness::catalogue::scenario_files(&dir).expect("scenarios/ exists")
}

fn load(f: &Path) -> Result<Scenario> {
    Scenario::load(f).map_err(|e| anyhow::anyhow!("{e}"))
}

fn every_file_starts_with_symptom_root_cause_and_fix() -> Result<()> {
    for f in catalogue() {
        let s = load(&f)?;
        let h = s.header.to_lowercase();
        ensure!(
            h.contains("symptom") && h.contains("root cause") && h.contains("fix"),
            "{}: the opening comment must say symptom, root cause and fix",
            f.display()
        );
        ensure!(
            !s.file.scenario.summary.is_empty(),
            "{}: summary missing",
            f.display()
        );
    }
    Ok(())
}

/// Drops a file's ladder must explain in the model's words, beyond "every drop has a reason".
const EXPLAINED: &[(&str, &str)] = &[
    (
        "binding-expiry",
        "dropped INVITE sip:bob@203.0.113.1:5060 from 203.0.113.10:5060 to 203.0.113.1:5060: \
         binding 192.168.1.10:5060 → 203.0.113.1:5060 (with 203.0.113.10:5060) expired",
    ),
    (
        "408-private-contact",
        "sent INVITE sip:bob@192.168.1.10:5060 from 203.0.113.10:5060 to 192.168.1.10:5060: \
         a private address, which the internet swallows",
    ),
];

/// Files whose routers forward what they must let in: nothing crossing them may be dropped.
const NO_DROPS: &[&str] = &[
    "rtp-range-blocked-fix-port-forward",
    "pbx-behind-nat-port-forward",
    "pbx-behind-nat-no-externip",
];

fn passes_and_matches_its_snapshot(f: &Path) -> Result<()> {
    if !tests::kernel_available() {
        return Ok(());
    }
    let s = load(f)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pool = use_pool().then(Pool::shared);
    let o = rt
        .block_on(scenario::run_with(&s, &RunOptions::default(), pool))
        .map_err(|e| anyhow::anyhow!("{}: {e}", s.name()))?;
    ensure!(
        o.verdict == Verdict::Pass,
        "{}: {:?} {:?}\n{}",
        o.name,
        o.checks,
        o.error,
        o.ladder
    );
    insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(format!("scenarios__{}", o.name), o.snapshot);
    });
    let drops: Vec<&str> = o
        .ladder
        .lines()
        .filter(|l| l.contains(" dropped ") || l.contains("swallows"))
        .collect();
    // Every packet a router dropped carries the NAT model's reason, except where an emulated
    // ALG (not the NAT) took it.
    let unexplained: Vec<&&str> = drops
        .iter()
        .filter(|l| l.contains("not by its NAT") && !o.name.starts_with("alg-"))
        .collect();
    ensure!(
        unexplained.is_empty(),
        "{}: the kernel dropped what the NAT model forwards: {unexplained:#?}",
        o.name
    );
    ensure!(
        !NO_DROPS.contains(&o.name.as_str()) || !drops.iter().any(|l| l.contains(" dropped ")),
        "{}: a router dropped a packet: {drops:#?}",
        o.name
    );
    for (name, text) in EXPLAINED {
        if *name == o.name {
            ensure!(
                drops.iter().any(|l| l.contains(text)),
                "{name}: the drop is not explained as {text:?}: {drops:#?}"
            );
        }
    }
    Ok(())
}

/// Whether scenarios share topologies through the pool (`SNH_POOL=1`: yes). Off by default: with
/// idle pooled topologies holding descriptors, a clean-clone CI run aborted in libnftables'
/// `select()` on a descriptor past FD_SETSIZE (the per-thread guard in topology/nft.rs checks
/// only when a context is made), and the pool saved no wall time here.
fn use_pool() -> bool {
    std::env::var("SNH_POOL").is_ok_and(|v| v == "1")
}

fn trial(name: impl Into<String>, f: impl FnOnce() -> Result<()> + Send + 'static) -> Trial {
    Trial::test(name, move || {
        f().map_err(|e| Failed::from(format!("{e:?}")))
    })
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(harness::scenario::batch::default_jobs());
    }
    let files = catalogue();
    assert!(files.len() >= 2, "the catalogue is empty");
    let mut trials = vec![trial(
        "every_file_starts_with_symptom_root_cause_and_fix",
        every_file_starts_with_symptom_root_cause_and_fix,
    )];
    for f in files {
        let name = f
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        trials.push(trial(format!("scenario::{name}"), move || {
            passes_and_matches_its_snapshot(&f)
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if use_pool() {
        let c = Pool::shared().counts();
        eprintln!(
            "topology pool: {} built, {} reused ({} with other NATs), {} refused, {} evicted",
            c.built, c.reused, c.renatted, c.refused, c.evicted
        );
    }
    // The idle topologies outlive the tests: remove them before exiting.
    Pool::shared().clear();
    conclusion.exit();
}
