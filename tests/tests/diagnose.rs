//! `harness diagnose` on the catalogue's own captures: each failing scenario's pcap names the
//! cause its `# Root cause:` header states, and each fix's pcap does not.
//!
//! The real-peer files (`baresip-*`, `sipp-*`, `coturn-*`, `*-kamailio`, `sbc-symmetric-nats`)
//! are left out to keep this under a minute on two cores; their failures repeat ones below.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use harness::diagnose::{self, Confidence, Kind, Report, Severity};
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use tests::require_kernel;

/// (catalogue file, pcap of the run, finding kind, whether the pcap must show it).
const EXPECTED: &[(&str, &str, Kind, bool)] = &[
    ("408-private-contact", "server", Kind::PrivateAddress, true),
    ("408-private-contact", "server", Kind::RequestTimeout, true),
    (
        "408-private-contact-fix-far-end",
        "server",
        Kind::PrivateAddress,
        false,
    ),
    (
        "408-private-contact-fix-stun",
        "server",
        Kind::PrivateAddress,
        false,
    ),
    // The kernel helper rewrites Contact consistently: the server sees a healthy phone.
    (
        "408-private-contact-kernel-alg",
        "server",
        Kind::PrivateAddress,
        false,
    ),
    ("408-outgoing-no-rport", "server", Kind::NoRport, true),
    (
        "408-outgoing-no-rport-fix-rport",
        "server",
        Kind::NoRport,
        false,
    ),
    ("binding-expiry", "server", Kind::BindingExpired, true),
    (
        "binding-expiry-fix-keepalive",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-fix-proxy-pings",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-fix-sbc-pings",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-fix-stun-keepalive",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-fix-stun-detects-move",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "alg-content-length",
        "server",
        Kind::ContentLengthMismatch,
        true,
    ),
    (
        "alg-content-length-fix-alg-off",
        "server",
        Kind::ContentLengthMismatch,
        false,
    ),
    ("alg-break-digest", "server", Kind::DigestUriMismatch, true),
    (
        "alg-break-digest-fix-alg-off",
        "server",
        Kind::DigestUriMismatch,
        false,
    ),
    // The server is not on the media path; the router's WAN side is.
    ("rtp-range-blocked", "home-wan", Kind::RtpBlocked, true),
    (
        "rtp-range-blocked-fix-port-forward",
        "home-wan",
        Kind::RtpBlocked,
        false,
    ),
    (
        "rtp-range-blocked-fix-port-forward",
        "home-wan",
        Kind::OneWayAudio,
        false,
    ),
    // The PBX's private SDP reaches the remote phone, whose RTP goes there.
    (
        "pbx-behind-nat-no-externip",
        "alice",
        Kind::PrivateAddress,
        true,
    ),
    (
        "pbx-behind-nat-no-externip",
        "alice",
        Kind::OneWayAudio,
        true,
    ),
    (
        "pbx-behind-nat-port-forward",
        "alice",
        Kind::PrivateAddress,
        false,
    ),
    (
        "pbx-behind-nat-port-forward",
        "alice",
        Kind::OneWayAudio,
        false,
    ),
    (
        "one-way-audio-private-sdp",
        "alice",
        Kind::OneWayAudio,
        true,
    ),
    (
        "one-way-audio-private-sdp-fix-latching",
        "alice",
        Kind::OneWayAudio,
        false,
    ),
    // The slow-answer face: the 200 OK to the silent caller is never acknowledged.
    (
        "binding-expiry-slow-answer",
        "server",
        Kind::BindingExpired,
        true,
    ),
    (
        "binding-expiry-slow-answer-fix-keepalive",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-slow-answer-fix-provisional-interval",
        "server",
        Kind::BindingExpired,
        false,
    ),
    (
        "binding-expiry-slow-answer-provisional-outbound-refresh",
        "server",
        Kind::BindingExpired,
        true,
    ),
    (
        "one-way-audio-who-sends-first",
        "office",
        Kind::OneWayAudio,
        true,
    ),
    (
        "one-way-audio-who-sends-first-fix-latching",
        "office",
        Kind::OneWayAudio,
        false,
    ),
    (
        "one-way-audio-who-sends-first-fix-input-firewall",
        "office",
        Kind::OneWayAudio,
        false,
    ),
    (
        "no-audio-symmetric-stun",
        "home-b-wan",
        Kind::SymmetricNat,
        true,
    ),
    // The callee's NAT (home-b) shows it: its RTP leaves before the caller's arrives.
    ("no-audio-symmetric-stun", "alice", Kind::NoAudio, true),
    (
        "no-audio-symmetric-stun-fix-turn",
        "home-b-wan",
        Kind::SymmetricNat,
        false,
    ),
    (
        "no-audio-symmetric-stun-fix-turn",
        "alice",
        Kind::NoAudio,
        false,
    ),
    ("symmetric-stun-contact", "server", Kind::SymmetricNat, true),
    (
        "symmetric-stun-contact-fix-far-end",
        "server",
        Kind::SymmetricNat,
        false,
    ),
];

/// A problem the report stands behind: certain or likely, not merely possible.
fn shows(r: &Report, kind: Kind) -> bool {
    r.findings.iter().any(|f| {
        f.kind == kind && f.severity == Severity::Problem && f.confidence <= Confidence::Likely
    })
}

fn catalogue(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_catalogue_capture_names_its_root_cause_and_fixes_do_not() -> Result<()> {
    require_kernel!();
    let out = std::env::temp_dir().join(format!("snh-diagnose-{}", std::process::id()));
    let mut files: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    files.dedup();
    let runs = files.iter().map(|name| {
        let out = out.clone();
        async move {
            let s = Scenario::load(&catalogue(name)).map_err(|e| anyhow::anyhow!("{e}"))?;
            let opts = RunOptions {
                out_dir: Some(out),
                ..RunOptions::default()
            };
            let o = scenario::run(&s, &opts)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            ensure!(
                o.verdict == Verdict::Pass,
                "{name} did not reproduce: {:?}",
                o.checks
            );
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    let mut wrong = Vec::new();
    for (name, pcap, kind, expected) in EXPECTED {
        let path = out.join(name).join(format!("{pcap}.pcap"));
        let report = diagnose::diagnose_file(Path::new(&path))?;
        if shows(&report, *kind) != *expected {
            wrong.push(format!(
                "{name} {pcap}.pcap: expected {kind:?} {}, got:\n{}",
                if *expected { "shown" } else { "absent" },
                diagnose::report::text(&report)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// A run that fails ends with what `harness diagnose` says of its pcaps: the field's 408 file,
/// told to expect the call to connect, fails, and its server capture's findings — the private
/// Contact and the INVITE timing out — come with the failure, the same as `diagnose` gives for
/// the `server.pcap` the run wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_ends_with_the_diagnosis_of_its_captures() -> Result<()> {
    require_kernel!();
    let text = std::fs::read_to_string(catalogue("408-private-contact"))?
        .replace("status = 408", "status = 200");
    let s = Scenario::from_str("408-expected-to-connect.toml", &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = std::env::temp_dir().join(format!("snh-failed-run-{}", std::process::id()));
    let o = scenario::run(
        &s,
        &RunOptions {
            out_dir: Some(out.clone()),
            ..RunOptions::default()
        },
    )
    .await?;
    ensure!(o.verdict == Verdict::Fail, "{:?}", o.checks);
    let server = o
        .diagnosis
        .iter()
        .find(|r| r.file == "server.pcap")
        .ok_or_else(|| anyhow::anyhow!("no diagnosis of server.pcap: {:#?}", o.diagnosis))?;
    ensure!(
        shows(server, Kind::PrivateAddress) && shows(server, Kind::RequestTimeout),
        "{}",
        diagnose::report::text(server)
    );
    let from_file = diagnose::diagnose_file(&out.join(s.name()).join("server.pcap"))?;
    let kinds = |r: &Report| r.findings.iter().map(|f| f.kind).collect::<Vec<_>>();
    let _ = std::fs::remove_dir_all(&out);
    ensure!(
        kinds(server) == kinds(&from_file),
        "the run says {:?}, diagnose on its pcap says {:?}",
        kinds(server),
        kinds(&from_file)
    );
    Ok(())
}
