//! `harness import` round trip on the kernel: a catalogue failure runs, its server capture is
//! imported, and the imported scenario — addresses, NAT, registrar, timers and timeline read off
//! the packets alone — reproduces the same failure (its expectations, equal to the original's
//! call status, ringing and registration, pass), while each fix twin passes with success.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Result};
use harness::scenario::{self, Expect, RunOptions, Scenario, Verdict};
use tests::require_kernel;

/// Catalogue failures whose server capture must import, and the fix twins each must get.
const CASES: &[(&str, &[&str])] = &[
    ("408-private-contact", &["-fix-far-end"]),
    ("408-outgoing-no-rport", &["-fix-rport"]),
    ("binding-expiry", &["-fix-keepalive"]),
    ("alg-break-digest", &["-fix-alg-off"]),
    ("one-way-audio-private-sdp", &["-fix-latching"]),
    ("symmetric-stun-contact", &["-fix-far-end"]),
];

fn catalogue(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"))
}

/// Runs each file concurrently (each builds its own topology); every run must pass.
async fn run_all(files: &[PathBuf], out: &Path) -> Result<()> {
    let runs = files.iter().map(|f| async move {
        let s = Scenario::load(f).map_err(|e| anyhow!("{e}"))?;
        let opts = RunOptions {
            out_dir: Some(out.to_path_buf()),
            ..RunOptions::default()
        };
        let o = scenario::run(&s, &opts)
            .await
            .map_err(|e| anyhow!("{}: {e}", f.display()))?;
        ensure!(
            o.verdict == Verdict::Pass,
            "{} did not pass: {:?} {:?}",
            f.display(),
            o.error,
            o.checks
        );
        anyhow::Ok(())
    });
    let failed: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

/// The call, ringing and registration verdicts a file expects, as comparable text.
fn verdicts(s: &Scenario) -> BTreeSet<String> {
    s.file
        .expects
        .iter()
        .filter_map(|e| match e.get_ref() {
            Expect::Call { from, status } => Some(format!("{from}'s call ends with {status}")),
            Expect::Rang { ua, value } => Some(format!("{ua} rang: {value}")),
            Expect::Registered { ua, value } => Some(format!("{ua} registered: {value}")),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_server_captures_reproduce_their_failure_and_the_twins_fix_it() -> Result<()> {
    require_kernel!();
    let out = std::env::temp_dir().join(format!("snh-import-{}", std::process::id()));
    let originals: Vec<PathBuf> = CASES.iter().map(|(n, _)| catalogue(n)).collect();
    run_all(&originals, &out.join("original")).await?;

    let written = out.join("imported");
    std::fs::create_dir_all(&written)?;
    let mut files = Vec::new();
    for (name, twins) in CASES {
        let pcap = out.join("original").join(name).join("server.pcap");
        let imported = harness::import::import_file(&pcap, name)?;
        let path = written.join(format!("{name}.toml"));
        std::fs::write(&path, imported.scenario.to_toml())?;
        let original = Scenario::load(&catalogue(name)).map_err(|e| anyhow!("{e}"))?;
        let copy = Scenario::load(&path).map_err(|e| anyhow!("{e}"))?;
        ensure!(
            verdicts(&copy) == verdicts(&original),
            "{name}: the import expects {:?}, the catalogue {:?}",
            verdicts(&copy),
            verdicts(&original)
        );
        let got: Vec<&str> = imported.fixes.iter().map(|(s, _)| s.as_str()).collect();
        ensure!(
            got == *twins,
            "{name}: fix twins {got:?}, expected {twins:?}"
        );
        files.push(path);
        for (suffix, doc) in &imported.fixes {
            let path = written.join(format!("{name}{suffix}.toml"));
            std::fs::write(&path, doc.to_toml())?;
            let twin = Scenario::load(&path).map_err(|e| anyhow!("{e}"))?;
            ensure!(
                verdicts(&twin)
                    .iter()
                    .all(|v| !v.contains("408") && !v.ends_with("false")),
                "{name}{suffix} does not expect success: {:?}",
                verdicts(&twin)
            );
            files.push(path);
        }
    }
    run_all(&files, &out.join("runs")).await?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
