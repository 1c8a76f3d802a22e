//! `harness import` on captures the project did not make (Kamailio and SIPp behind a plain Linux
//! NAT, `tests/fixtures/`, other addresses and ports than the catalogue's: server
//! 192.0.2.50:5080, router 198.51.100.77, LAN 10.20.30.0/24): the written scenario, run on the
//! kernel, reproduces what the capture showed, and each fix twin passes with success.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Result};
use harness::scenario::Scenario;
use tests::{require_kernel, run_all_passing};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Imports `capture` as `name` into `dir`; returns the scenario's path and its twins' paths.
fn import(capture: &str, name: &str, dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let imported = harness::import::import_file(&fixture(capture), name)?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, imported.scenario.to_toml())?;
    let mut twins = Vec::new();
    for (suffix, doc) in &imported.fixes {
        let p = dir.join(format!("{name}{suffix}.toml"));
        std::fs::write(&p, doc.to_toml())?;
        twins.push(p);
    }
    Ok((path, twins))
}

fn verdicts(path: &Path) -> Result<BTreeSet<String>> {
    let s = Scenario::load(path).map_err(|e| anyhow!("{e}"))?;
    Ok(tests::call_verdicts(&s))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_server_captures_import_into_scenarios_that_reproduce_them_and_twins_that_fix_them(
) -> Result<()> {
    require_kernel!();
    let out = std::env::temp_dir().join(format!("snh-import-fixtures-{}", std::process::id()));
    let written = out.join("imported");

    // No rport behind a symmetric NAT: the server's 404 goes to the Via port, which the NAT
    // never mapped, so the caller (SIPp, user `sipp`) hears nothing and its own Timer B ends
    // the call with 408. The callee is Kamailio's `service`, no phone: the fixed twin hears
    // the registrar's 404.
    let (no_rport, twins) = import("symmetric-nat-no-rport.pcap", "no-rport", &written)?;
    ensure!(
        verdicts(&no_rport)? == set(&["sipp's call ends with 408"]),
        "{:?}",
        verdicts(&no_rport)?
    );
    ensure!(
        twins.len() == 1 && twins[0].ends_with("no-rport-fix-rport.toml"),
        "{twins:?}"
    );
    ensure!(verdicts(&twins[0])? == set(&["sipp's call ends with 404"]));
    let mut files = vec![no_rport];
    files.extend(twins);

    // A private Contact stored literally: the far end's INVITE goes to 10.20.30.40 and is
    // swallowed; Kamailio's Timer B (cut to 5 s) ends it with 408, the phone never rings.
    let (private, twins) = import(
        "private-contact-swallowed.pcap",
        "private-contact",
        &written,
    )?;
    ensure!(
        verdicts(&private)?
            == set(&[
                "phone registered: true",
                "sipp's call ends with 408",
                "phone rang: false"
            ]),
        "{:?}",
        verdicts(&private)?
    );
    ensure!(
        twins.len() == 1 && twins[0].ends_with("private-contact-fix-far-end.toml"),
        "{twins:?}"
    );
    files.push(private);
    files.extend(twins);

    // The healthy call was recorded on the phone's LAN, not at the server: import says so in
    // one line rather than guess a topology.
    let e =
        harness::import::import_file(&fixture("healthy-call-port-preserving.pcapng"), "healthy")
            .err()
            .ok_or_else(|| anyhow!("a LAN capture of the healthy call imported"))?
            .to_string();
    ensure!(!e.contains('\n') && e.contains("taken on a LAN"), "{e}");

    run_all_passing(&files, &out.join("runs"), files.len().max(1)).await?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
