//! The binding-timeout property at model speed, with the kernel as the judge of the model
//! (issue 17).
//!
//! 1. Every random [`Case`] (NAT type × refresh direction × timeout × keep-alive × expiry ×
//!    registrar and its pings × when the call comes) plays on `harness::model`: a case whose
//!    phone refreshes below the timeout ([`Case::claim`]) must be reachable (the first INVITE
//!    gets through). Failures are shrunk ([`shrink`]) and printed as scenario files.
//! 2. The kernel confirms: every shrunk failure, plus [`CONFIRM`] random cases of any kind
//!    ([`Case::random_any`]: either phone calls, with or without RTP, latching or not at the
//!    public phone) away from timing boundaries (the model's outcome holds with the call moved
//!    ±150 ms and no refresh interval within 150 ms of the timeout), are written as scenario
//!    files expecting what the *model* observed (the call's status, and with media which way
//!    audio flowed) and run on the kernel, all at once. A kernel run that does not pass is a
//!    model/kernel disagreement: that is the differential property, over random cases the
//!    property itself does not constrain (unreachable ones and one-way audio included).
//!
//! Without root the kernel half is skipped (loudly, once; a failure under `CI=true`), and the
//! model half still runs. `MODEL_CASES` (default 2000, 500 in a debug build; the bench `model_bench` runs more, in
//! release) and `MODEL_SEED` pick the cases.

use std::time::Instant;

use harness::model::cases::{shrink, CallDirection, Case, MediaMode};
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use harness::seeded::Rng;

/// Random cases sent to the kernel besides every shrunk failure.
const CONFIRM: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A case fails the property when it claims reachability and the model does not reach.
fn fails(c: &Case) -> bool {
    c.claim() == Some(true) && !c.reachable_on_model()
}

#[test]
fn a_refresh_below_the_timeout_keeps_the_phone_reachable_on_the_model_and_the_kernel_agrees() {
    // A debug build plays a case about ten times slower than a release one.
    let default = if cfg!(debug_assertions) { 500 } else { 2000 };
    let n = env_or("MODEL_CASES", default) as usize;
    let seed = env_or("MODEL_SEED", 17);
    let mut rng = Rng::new(seed);
    let cases: Vec<Case> = (0..n).map(|_| Case::random(&mut rng)).collect();
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut claimed, mut reachable) = (0, 0);
    for c in &cases {
        let got = c.reachable_on_model();
        reachable += usize::from(got);
        if c.claim() == Some(true) {
            claimed += 1;
            if !got {
                failures.push(*c);
            }
        }
    }
    let took = started.elapsed();
    eprintln!(
        "model: {n} cases in {:.2} s ({:.0} cases/s, debug builds are slower: see `model_bench`), \
         {claimed} claimed reachable, {reachable} reachable, {} failures (seed {seed})",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        failures.len()
    );
    let mut shrunk: Vec<Case> = Vec::new();
    for c in failures.iter().map(|c| shrink(*c, fails)) {
        if !shrunk.contains(&c) {
            shrunk.push(c);
        }
    }
    for c in &shrunk {
        eprintln!("shrunk failure: {c}\n{}", c.incoming_call(true).to_toml());
    }
    // The kernel's sample: every shrunk failure, then random cases of any kind away from
    // boundaries.
    let mut sample: Vec<Case> = shrunk.clone();
    let mut pick = Rng::new(seed ^ 0x6b65_726e);
    let mut tries = 0;
    while sample.len() < shrunk.len() + CONFIRM && tries < 100 * CONFIRM {
        tries += 1;
        let c = Case::random_any(&mut pick);
        if !sample.contains(&c) && c.away_from_boundaries() {
            sample.push(c);
        }
    }
    eprintln!(
        "kernel sample: {} case(s), {} calling out from behind the NAT, {} with RTP ({} latching)",
        sample.len(),
        sample
            .iter()
            .filter(|c| c.direction == CallDirection::FromNatedPhone)
            .count(),
        sample.iter().filter(|c| c.media != MediaMode::Off).count(),
        sample
            .iter()
            .filter(|c| c.media == MediaMode::Rtp { latching: true })
            .count(),
    );
    if tests::kernel_available() {
        confirm_on_the_kernel(&sample);
    }
    assert!(
        shrunk.is_empty(),
        "{} case(s) break the property on the model; shrunk: {shrunk:#?}",
        failures.len()
    );
}

/// Runs each case on the kernel expecting the model's verdict; fails naming every case where
/// the two differ.
fn confirm_on_the_kernel(sample: &[Case]) {
    let verdicts: Vec<_> = sample.iter().map(Case::on_model).collect();
    let mut kinds = std::collections::BTreeMap::new();
    for v in &verdicts {
        *kinds.entry(format!("{v:?}")).or_insert(0) += 1;
    }
    eprintln!("the model's outcomes the kernel must reproduce: {kinds:?}");
    let scenarios: Vec<Scenario> = sample
        .iter()
        .zip(&verdicts)
        .map(|(c, v)| c.scenario_expecting(*v))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let jobs = harness::scenario::batch::default_jobs();
    let results = rt.block_on(scenario::batch::run_many(
        &scenarios,
        jobs,
        &RunOptions::default(),
        |_, _| {},
    ));
    let took = started.elapsed();
    eprintln!(
        "kernel: {} cases in {:.1} s ({:.2} cases/s, {jobs} at once)",
        sample.len(),
        took.as_secs_f64(),
        sample.len() as f64 / took.as_secs_f64()
    );
    let differ: Vec<String> = sample
        .iter()
        .zip(&verdicts)
        .zip(&results)
        .filter_map(|((c, v), r)| match r {
            Ok(o) if o.verdict == Verdict::Pass => None,
            Ok(o) => Some(format!(
                "{c}: model says {v:?}, kernel: {:?}\n{}",
                o.checks.iter().filter(|k| !k.1).collect::<Vec<_>>(),
                c.doc(*v).to_toml()
            )),
            Err(e) => Some(format!("{c}: kernel run failed: {e}")),
        })
        .collect();
    assert!(
        differ.is_empty(),
        "the kernel disagrees with the model on {} of {} case(s):\n{}",
        differ.len(),
        sample.len(),
        differ.join("\n")
    );
}
