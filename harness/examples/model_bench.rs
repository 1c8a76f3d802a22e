//! How many binding-timeout property cases a second the model plays (issue 17 asks ≥ 10,000):
//! `cargo run --release -p harness --example model_bench [CASES] [THREADS]`.
//!
//! Two figures: the whole case (emit the scenario file, parse it, play it on the model, judge)
//! and the play alone on an already parsed scenario, each on one thread and on `THREADS`
//! threads (default: every core). Each is given per second of wall time and per second of CPU
//! time the playing threads got: on a machine shared with other work a thread may get half a
//! core, and the second figure is what a core of its own would do.

use std::time::{Duration, Instant};

use harness::model::cases::Case;
use harness::scenario::Verdict;
use harness::seeded::Rng;

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`, returning its result, its wall time and the calling thread's CPU time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let out = f();
    (out, wall.elapsed(), thread_cpu() - cpu)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let threads: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut rng = Rng::new(17);
    let cases: Vec<Case> = (0..n).map(|_| Case::random(&mut rng)).collect();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();

    let (reachable, whole, whole_cpu) =
        timed(|| cases.iter().filter(|c| c.reachable_on_model()).count());

    let scenarios: Vec<_> = cases.iter().map(|c| c.scenario(true)).collect();
    let (passed, play, play_cpu) = timed(|| {
        scenarios
            .iter()
            .filter(|s| matches!(harness::model::verdict(s), Ok((Verdict::Pass, _))))
            .count()
    });
    assert_eq!(passed, reachable, "the same cases, the same verdicts");

    let ((), whole_par, _) = timed(|| {
        std::thread::scope(|s| {
            for chunk in cases.chunks(n.div_ceil(threads)) {
                s.spawn(move || chunk.iter().filter(|c| c.reachable_on_model()).count());
            }
        })
    });

    let ((), play_par, _) = timed(|| {
        std::thread::scope(|s| {
            for chunk in scenarios.chunks(n.div_ceil(threads)) {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|s| matches!(harness::model::verdict(s), Ok((Verdict::Pass, _))))
                        .count()
                });
            }
        })
    });

    let claimed = cases.iter().filter(|c| c.claim() == Some(true)).count();
    let broken = cases
        .iter()
        .filter(|c| c.claim() == Some(true) && !c.reachable_on_model())
        .count();
    println!("{n} binding-timeout cases on the model ({reachable} reachable, {claimed} claimed, {broken} break the property)");
    println!("                                                   per wall s   per CPU s");
    println!(
        "  whole case (emit + parse + play + judge), 1 thread: {:>8.0}    {:>8.0}",
        rate(whole),
        rate(whole_cpu)
    );
    println!(
        "  whole case, {threads} threads:                         {:>8.0}",
        rate(whole_par)
    );
    println!(
        "  play + judge only, 1 thread:                      {:>8.0}    {:>8.0}",
        rate(play),
        rate(play_cpu)
    );
    println!(
        "  play + judge only, {threads} threads:                    {:>8.0}",
        rate(play_par)
    );
}
