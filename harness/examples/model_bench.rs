//! How many binding-timeout property cases a second the model plays (issue 17 asks ≥ 10,000):
//! `cargo run --release -p harness --example model_bench [CASES] [THREADS]`.
//!
//! Two figures: the whole case (emit the scenario file, parse it, play it on the model, judge)
//! and the play alone on an already parsed scenario, each on one thread and on `THREADS`
//! threads (default: every core).

use std::time::Instant;

use harness::model::cases::Case;
use harness::scenario::Verdict;
use harness::seeded::Rng;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let threads: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut rng = Rng::new(17);
    let cases: Vec<Case> = (0..n).map(|_| Case::random(&mut rng)).collect();

    let t = Instant::now();
    let reachable = cases.iter().filter(|c| c.reachable_on_model()).count();
    let whole = n as f64 / t.elapsed().as_secs_f64();

    let scenarios: Vec<_> = cases.iter().map(|c| c.scenario(true)).collect();
    let t = Instant::now();
    let passed = scenarios
        .iter()
        .filter(|s| matches!(harness::model::verdict(s), Ok((Verdict::Pass, _))))
        .count();
    let play = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(passed, reachable, "the same cases, the same verdicts");

    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in cases.chunks(n.div_ceil(threads)) {
            s.spawn(move || chunk.iter().filter(|c| c.reachable_on_model()).count());
        }
    });
    let whole_par = n as f64 / t.elapsed().as_secs_f64();

    let claimed = cases.iter().filter(|c| c.claim() == Some(true)).count();
    let broken = cases
        .iter()
        .filter(|c| c.claim() == Some(true) && !c.reachable_on_model())
        .count();
    println!("{n} binding-timeout cases on the model ({reachable} reachable, {claimed} claimed, {broken} break the property)");
    println!("  whole case (emit + parse + play + judge), 1 thread: {whole:>8.0} cases/s");
    println!("  whole case, {threads} threads:                         {whole_par:>8.0} cases/s");
    println!("  play + judge only, 1 thread:                      {play:>8.0} cases/s");
}
