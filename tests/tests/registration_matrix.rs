//! The registration matrix of issue 7: NAT type × SIP ALG (off, the kernel helper, each emulated
//! consumer fault) × registrar (a far-end-NAT proxy, or our SBC), every cell's verdict asserted.
//!
//! A phone behind the router registers with digest authentication. Only one ALG fault breaks
//! registration whatever the NAT and registrar: `break-digest`, which rewrites the digest `uri`
//! (401 loop). The others corrupt what registration does not depend on (SDP, Content-Length of a
//! body REGISTER does not have, Contact, Via sent-by — both registrars answer to the source
//! address and port because the phone asks for rport), so the phone registers and the damage
//! shows later, in calls (see the `alg-*` scenarios).

use anyhow::{ensure, Result};
use harness::scenario::{self, Scenario, Verdict};
use sim_nat::{AlgFault, SipAlg};
use tests::require_kernel;

fn scenario(registrar: &str) -> Scenario {
    let text = format!(
        r#"
[scenario]
name = "registration-matrix"
t1-ms = 100

[[router]]
name = "home"
wan = "203.0.113.1"
lan = "192.168.1.1/24"
nat = "port-restricted-cone"

[[host]]
name = "bob"
segment = "home"
addrs = ["192.168.1.10"]

[[host]]
name = "server"
segment = "internet"
addrs = ["203.0.113.10"]

{registrar}
users = {{ bob = "s3cret" }}

[[component]]
kind = "ua"
host = "bob"
proxy = "server"
password = "s3cret"

[[step]]
action = "register"
ua = "bob"
timeout-ms = 8000

[[expect]]
kind = "registered"
ua = "bob"
value = true
"#
    );
    Scenario::from_str("registration-matrix.toml", &text).expect("valid")
}

fn algs() -> Vec<SipAlg> {
    let mut v = vec![SipAlg::Off, SipAlg::Kernel];
    v.extend(AlgFault::ALL.into_iter().map(|f| SipAlg::Emulated(vec![f])));
    v
}

/// Runs every cell behind `registrar` (named as a failure names it: `far-end proxy`) and checks
/// each verdict. A wrong cell is named in one line, followed by its ladder; every cell's time and
/// where it went are printed either way.
async fn check(registrar: &str, component: &str) -> Result<Vec<String>> {
    let cells = scenario::matrix(&scenario(component), &algs(), &[None]).await?;
    ensure!(cells.len() == 4 * 8, "{} cells", cells.len());
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for c in &cells {
        let broken = c.alg == SipAlg::Emulated(vec![AlgFault::BreakDigest]);
        let want = if broken { Verdict::Fail } else { Verdict::Pass };
        table.push(format!(
            "{:<60} {:<5} {:>6.2} s  ({})",
            c.name(),
            format!("{:?}", c.verdict),
            c.duration.as_secs_f64(),
            c.phases
        ));
        if c.verdict != want {
            let observed = if c.failed.is_empty() {
                "every expectation held".to_string()
            } else {
                c.failed.join("; ")
            };
            wrong.push(format!(
                "{} × {registrar}: {observed}, expected {}\n{}",
                c.name(),
                if broken {
                    "a failure"
                } else {
                    "registered = true"
                },
                c.ladder
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{}\n\nevery cell:\n{}",
        wrong.join("\n\n"),
        table.join("\n")
    );
    Ok(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_through_a_far_end_proxy_fails_only_with_the_digest_breaking_alg() -> Result<()>
{
    require_kernel!();
    let t = check(
        "far-end proxy",
        "[[component]]\nkind = \"proxy\"\nhost = \"server\"\nnat-handling = \"far-end\"",
    )
    .await?;
    eprintln!("{}", t.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_through_our_sbc_fails_only_with_the_digest_breaking_alg() -> Result<()> {
    require_kernel!();
    let t = check(
        "our SBC",
        "[[component]]\nkind = \"sbc\"\nhost = \"server\"",
    )
    .await?;
    eprintln!("{}", t.join("\n"));
    Ok(())
}
