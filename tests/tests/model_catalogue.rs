//! The model backend held to the kernel on the catalogue: every file the model does not refuse
//! plays on `harness::model` with the kernel's verdict (every catalogue file passes on the
//! kernel) and the kernel's reviewed snapshot ladder (`snapshots/scenarios__NAME.snap`, made by
//! `catalogue.rs` on the kernel). No root needed: the kernel's side is the reviewed snapshot.
//!
//! A file that does not agree yet is listed in [`KNOWN_DIFFERENCES`] with the reason; the test
//! fails if any other file disagrees, and also when a listed file starts agreeing (take it off
//! the list), so the list only shrinks.

use std::path::Path;
use std::time::Instant;

use harness::scenario::{RunOptions, Scenario, Verdict};

/// Files the model does not reproduce yet, and why. The kernel is the reference: each is a
/// model gap to close, not a snapshot to change.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The body of an insta snapshot file (after its `---` header).
fn snapshot_body(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix("---\n")?;
    let end = rest.find("\n---\n")?;
    Some(rest[end + 5..].to_string())
}

/// The first line where two ladders differ, with both versions.
fn first_difference(kernel: &str, model: &str) -> String {
    let (k, m): (Vec<&str>, Vec<&str>) = (kernel.lines().collect(), model.lines().collect());
    for i in 0..k.len().max(m.len()) {
        let (a, b) = (k.get(i).copied(), m.get(i).copied());
        if a != b {
            return format!(
                "line {}:\n  kernel: {}\n  model:  {}",
                i + 1,
                a.unwrap_or("<end>"),
                b.unwrap_or("<end>")
            );
        }
    }
    "no difference".into()
}

#[test]
fn every_built_in_only_catalogue_file_gives_the_kernel_verdict_and_snapshot_on_the_model() {
    let (_, dir) = harness::catalogue::default_paths();
    let files = harness::catalogue::scenario_files(&dir).expect("scenarios/ exists");
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let (mut agree, mut differ, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for f in &files {
        let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        let name = s.name().to_string();
        if let Some(why) = harness::model::refusal(&s) {
            refused.push(format!("{name}: {why}"));
            continue;
        }
        let o = match harness::model::run(&s, &RunOptions::default()) {
            Ok(o) => o,
            Err(e) => {
                differ.push((name, format!("error: {e}")));
                continue;
            }
        };
        let kernel = snapshot_body(&snaps.join(format!("scenarios__{name}.snap")));
        let why = match kernel {
            None => Some("no kernel snapshot".to_string()),
            Some(_) if o.verdict != Verdict::Pass => Some(format!(
                "verdict {:?} (kernel: Pass): {:?} {:?}",
                o.verdict,
                o.checks.iter().filter(|c| !c.1).collect::<Vec<_>>(),
                o.error
            )),
            Some(k) if k.trim_end() != o.snapshot.trim_end() => Some(format!(
                "ladder differs at {}",
                first_difference(&k, &o.snapshot)
            )),
            Some(_) => None,
        };
        match why {
            None => agree.push(name),
            Some(w) => differ.push((name, w)),
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "model: {} agree, {} differ, {} refused, in {:.3} s",
        agree.len(),
        differ.len(),
        refused.len(),
        elapsed.as_secs_f64()
    );
    for a in &agree {
        eprintln!("  agrees: {a}");
    }
    for (n, w) in &differ {
        eprintln!("  DIFFERS: {n}: {w}");
    }
    for r in &refused {
        eprintln!("  refused: {r}");
    }
    let unexpected: Vec<&(String, String)> = differ
        .iter()
        .filter(|(n, _)| !KNOWN_DIFFERENCES.iter().any(|(k, _)| k == n))
        .collect();
    let now_agree: Vec<&&str> = KNOWN_DIFFERENCES
        .iter()
        .map(|(k, _)| k)
        .filter(|k| agree.iter().any(|a| a == *k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the model disagrees with the kernel on: {unexpected:#?}"
    );
    assert!(
        now_agree.is_empty(),
        "these now agree; take them off KNOWN_DIFFERENCES: {now_agree:?}"
    );
    assert!(!agree.is_empty(), "no catalogue file agrees");
}
