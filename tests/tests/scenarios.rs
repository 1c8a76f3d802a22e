//! Every scenario of the catalogue runs with its expected verdict, and its ladder matches the
//! reviewed snapshot (`cargo insta review` after an intended change).

use std::path::PathBuf;

use anyhow::{ensure, Result};
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use tests::require_kernel;

fn catalogue() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_catalogue_file_starts_with_symptom_root_cause_and_fix() -> Result<()> {
    for f in catalogue() {
        let s = Scenario::load(&f).map_err(|e| anyhow::anyhow!("{e}"))?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_scenario_passes_and_matches_its_snapshot() -> Result<()> {
    require_kernel!();
    let files = catalogue();
    ensure!(files.len() >= 2, "the catalogue is empty");
    let runs = files.iter().map(|f| async move {
        let s = Scenario::load(f).map_err(|e| anyhow::anyhow!("{e}"))?;
        let o = scenario::run(&s, &RunOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", s.name()))?;
        anyhow::Ok(o)
    });
    let mut failed = Vec::new();
    let mut explained = Vec::new();
    for o in futures::future::join_all(runs).await {
        let o = o?;
        if o.verdict != Verdict::Pass {
            failed.push(format!(
                "{}: {:?} {:?}\n{}",
                o.name, o.checks, o.error, o.ladder
            ));
            continue;
        }
        insta::assert_snapshot!(o.name.clone(), o.snapshot);
        explained.extend(
            o.ladder
                .lines()
                .filter(|l| l.contains(" dropped ") || l.contains("swallows"))
                .map(|l| (o.name.clone(), l.to_string())),
        );
    }
    ensure!(
        failed.is_empty(),
        "scenarios failed:\n{}",
        failed.join("\n\n")
    );
    // Every packet a router dropped carries the NAT model's reason, except where an emulated
    // ALG (not the NAT) took it.
    let unexplained: Vec<&(String, String)> = explained
        .iter()
        .filter(|(name, l)| l.contains("not by its NAT") && !name.starts_with("alg-"))
        .collect();
    ensure!(
        unexplained.is_empty(),
        "the kernel dropped what the NAT model forwards: {unexplained:#?}"
    );
    let says =
        |name: &str, text: &str| explained.iter().any(|(n, l)| n == name && l.contains(text));
    // A port forward lets in what arrives on its ports: nothing crossing those routers is lost.
    for name in [
        "rtp-range-blocked-fix-port-forward",
        "pbx-behind-nat-port-forward",
        "pbx-behind-nat-no-externip",
    ] {
        ensure!(
            !says(name, " dropped "),
            "{name}: the router dropped a packet: {explained:#?}"
        );
    }
    ensure!(
        says(
            "binding-expiry",
            "dropped INVITE sip:bob@203.0.113.1:5060 from 203.0.113.10:5060 to 203.0.113.1:5060: \
             binding 192.168.1.10:5060 → 203.0.113.1:5060 (with 203.0.113.10:5060) expired"
        ),
        "binding-expiry: the dropped INVITE is not explained: {explained:#?}"
    );
    ensure!(
        says(
            "408-private-contact",
            "sent INVITE sip:bob@192.168.1.10:5060 from 203.0.113.10:5060 to 192.168.1.10:5060: \
             a private address, which the internet swallows"
        ),
        "408-private-contact: the swallowed INVITE is not explained: {explained:#?}"
    );
    Ok(())
}

/// A scenario that names a program the machine lacks fails with one line naming it.
#[tokio::test]
async fn a_missing_external_program_is_named_in_one_line() -> Result<()> {
    require_kernel!();
    let e = lone_command_error(r#"run = ["snh-no-such-softphone", "--register"]"#).await?;
    ensure!(
        e.contains("`snh-no-such-softphone` not found") && !e.contains('\n'),
        "{e}"
    );
    Ok(())
}

/// A scenario of one command on a public host: `component` is the rest of its table.
fn lone_command(component: &str) -> Result<Scenario> {
    let text = format!(
        r#"
[scenario]
name = "lone-command"

[[host]]
name = "pbx"
segment = "internet"
addrs = ["203.0.113.20"]

[[component]]
kind = "command"
name = "stack"
host = "pbx"
{component}
"#
    );
    Scenario::from_str("lone.toml", &text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The one-line error a lone command's run ends with.
async fn lone_command_error(component: &str) -> Result<String> {
    let s = lone_command(component)?;
    Ok(scenario::run(&s, &RunOptions::default())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("must fail"))?
        .to_string())
}

/// Port readiness is read from the program's namespace: a program that ends without binding its
/// port fails the run with a line naming the port and the host, instead of a later, puzzling
/// timeout; one that binds it (SIPp as a UAS on 5070) lets the run go on.
#[tokio::test]
async fn a_command_ready_on_a_port_waits_for_it_and_names_it_when_it_never_comes() -> Result<()> {
    require_kernel!();
    let e = lone_command_error("run = [\"true\"]\nready = { port = 5070 }").await?;
    ensure!(
        e.contains("never bound UDP port 5070 in `pbx`") && !e.contains('\n'),
        "{e}"
    );
    let s = lone_command(
        r#"run = ["sipp", "-sn", "uas", "-i", "{pbx.addr}", "-p", "5070", "-nostdin"]
ready = { port = 5070 }"#,
    )?;
    scenario::run(&s, &RunOptions::default()).await?;
    Ok(())
}

/// A catalogue file run across the 4 NAT types × the kernel SIP helper off and on.
async fn nat_by_helper_matrix(file: &str) -> Result<Vec<scenario::Cell>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file);
    let s = Scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let algs = [sim_nat::SipAlg::Off, sim_nat::SipAlg::Kernel];
    let cells = scenario::matrix(&s, &algs, &[None]).await?;
    ensure!(cells.len() == 8, "4 NAT types × 2 ALG modes");
    Ok(cells)
}

/// `harness matrix` on the binding-expiry scenario: with the ALG off every NAT type forgets the
/// phone after 2 s (408, as the file expects); with the kernel SIP helper on, the helper holds the
/// SIP flow open for its own 3600 s and the late call gets through on every type (kernel-facts:
/// "the SIP flow no longer expires at the UDP timeout"), so those cells differ from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binding_expiry_matrix_matches_what_the_kernel_does_per_nat_type_and_alg() -> Result<()>
{
    require_kernel!();
    let cells = nat_by_helper_matrix("binding-expiry.toml").await?;
    for c in &cells {
        match c.alg {
            sim_nat::SipAlg::Off => ensure!(c.verdict == Verdict::Pass, "{c:?}"),
            _ => ensure!(
                c.verdict == Verdict::Fail && c.failed.iter().any(|f| f == "got 200"),
                "with the kernel helper the late call must complete: {c:?}"
            ),
        }
    }
    Ok(())
}

/// The STUN keep-alive's move detection across NAT types and the kernel SIP helper: only the
/// symmetric NAT without the helper moves the flow (a new random port after the 2 s expiry), so
/// only there does the phone register a second time. Port-preserving NATs give the flow its old
/// port back, and the helper holds the SIP flow for an hour; there the phone must *not*
/// re-register (a helper rewrites the 200's Via back to the private address, which a phone
/// comparing against it would take for a move on every keep-alive), and the call arrives anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stun_keepalive_re_registers_only_where_the_nat_really_moved_the_flow() -> Result<()> {
    require_kernel!();
    let cells = nat_by_helper_matrix("binding-expiry-fix-stun-detects-move.toml").await?;
    for c in &cells {
        let moves = c.nat == sim_nat::NatType::Symmetric && c.alg == sim_nat::SipAlg::Off;
        if moves {
            ensure!(c.verdict == Verdict::Pass, "{c:?}");
        } else {
            ensure!(
                c.failed_expectations.len() == 1
                    && c.failed_expectations[0].contains("REGISTER")
                    && c.failed[0].starts_with("1 packet(s)"),
                "one REGISTER only, and the call still arrives: {c:?}"
            );
        }
    }
    Ok(())
}

/// SIPp (a stack nobody here wrote) registers through our SBC from behind every NAT type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_through_our_sbc_behind_every_nat_type() -> Result<()> {
    require_kernel!();
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/sipp-register-via-sbc.toml");
    let s = Scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cells = scenario::matrix(&s, &[sim_nat::SipAlg::Off], &[None]).await?;
    ensure!(cells.len() == 4);
    for c in &cells {
        ensure!(c.verdict == Verdict::Pass, "{c:?}");
    }
    Ok(())
}
