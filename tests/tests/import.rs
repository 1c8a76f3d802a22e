//! `harness import` round trip on the kernel, over the whole catalogue: every scenario file runs,
//! its server capture is imported, and the imported scenario — addresses, NAT, registrar, timers
//! and timeline read off the packets alone — expects at least the original's call status,
//! ringing and registration verdicts and passes; a failure file's fix twins pass with success,
//! a fix file's capture imports into a scenario expecting success. What a server capture cannot
//! carry (media, an external program, a double NAT hidden by an ALG) is listed with the reason,
//! and the list is checked: import refuses those files in one line, or the test shows what the
//! import leaves out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Result};
use harness::scenario::{Component, Expect, Scenario};
use tests::{call_verdicts as verdicts, require_kernel, run_all_passing};

/// Catalogue failures and the fix twins import must write for each.
const TWINS: &[(&str, &[&str])] = &[
    ("408-private-contact", &["-fix-far-end"]),
    ("408-outgoing-no-rport", &["-fix-rport"]),
    ("binding-expiry", &["-fix-keepalive"]),
    ("alg-break-digest", &["-fix-alg-off"]),
    ("alg-content-length", &["-fix-alg-off"]),
    ("one-way-audio-private-sdp", &["-fix-latching"]),
    ("symmetric-stun-contact", &["-fix-far-end"]),
];

/// Catalogue files import refuses, the reason, and the words its one-line error must contain.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "408-private-contact-kernel-alg",
        "the kernel SIP ALG rewrites Contact and Via: the server capture shows no NAT at all",
        "cannot tell who is behind a NAT",
    ),
    (
        "rtp-range-blocked-fix-port-forward",
        "the phone writes the router's public address itself (externip) and the port-preserving \
         NAT keeps its ports: the server capture shows no NAT at all",
        "cannot tell who is behind a NAT",
    ),
    (
        "alg-off-without-restart",
        "the kernel SIP ALG rewrites every REGISTER the server sees: no NAT in the capture",
        "cannot tell who is behind a NAT",
    ),
    (
        "alg-off-with-restart",
        "the kernel SIP ALG rewrote the first REGISTER; import does not yet place a phone behind \
         a NAT from a later one (its private Contact after the restart)",
        "cannot tell who is behind a NAT",
    ),
    (
        "tcp-binding-expiry",
        "the phone registers over TCP, which diagnose and import do not read yet: the server \
         capture shows only the caller's UDP",
        "cannot tell who is behind a NAT",
    ),
    (
        "tcp-binding-expiry-fix-keepalive",
        "the phone registers over TCP, which diagnose and import do not read yet: the server \
         capture shows only the caller's UDP",
        "cannot tell who is behind a NAT",
    ),
    (
        "tcp-binding-expiry-fix-sbc-pings",
        "the phone registers over TCP through the SBC, which diagnose and import do not read \
         yet: the server capture shows only the caller's UDP",
        "cannot tell who is behind a NAT",
    ),
    (
        "408-outgoing-no-rport-fix-tcp",
        "SIPp calls over TCP, which diagnose and import do not read yet: the server capture \
         shows only the callee's UDP",
        "cannot tell who is behind a NAT",
    ),
    (
        "408-fragmented-invite-fix-tcp",
        "the phone speaks TCP, which diagnose and import do not read yet: the server capture \
         shows only the callee's UDP",
        "cannot tell who is behind a NAT",
    ),
    (
        "alg-break-digest-fix-tls",
        "the phone speaks TLS, which a capture cannot read (nor can import): the server capture \
         shows only the caller's UDP",
        "cannot tell who is behind a NAT",
    ),
];

/// Catalogue files with no server capture to import, and why.
const NO_SERVER_CAPTURE: &[(&str, &str)] = &[
    (
        "lan-call-works",
        "everyone is on one LAN with the registrar: no capture beyond a NAT, nothing to import",
    ),
    (
        "pbx-behind-nat-port-forward",
        "the PBX behind the NAT is the server: there is no server on the internet, and its own \
         capture is a LAN capture, which import refuses",
    ),
    (
        "pbx-behind-nat-no-externip",
        "the PBX behind the NAT is the server: there is no server on the internet, and its own \
         capture is a LAN capture, which import refuses",
    ),
];

/// Catalogue files whose signalling verdicts round-trip but whose point lies beyond what a
/// server capture carries; each with the reason and what the original checks that the import
/// cannot (an expectation kind or a component kind the imported file does not have).
const SIGNALLING_ONLY: &[(&str, &str, &[&str])] = &[
    ("baresip-one-way-audio", "baresip: external program (imported as the harness's phone); media-only failure: a server capture has no media", &["command", "media"]),
    ("baresip-one-way-audio-fix-stun", "baresip: external program; its STUN-discovered SDP is media", &["command", "media"]),
    ("baresip-symmetric-stun", "baresip: external program; media-only failure: a server capture has no media", &["command", "media"]),
    ("baresip-symmetric-stun-fix-turn", "baresip: external program; TURN relays media, which a server capture does not see", &["command", "media", "turn-server"]),
    ("baresip-calls-baresip", "baresip calls baresip: external programs (imported as the harness's phones); media is not in a server capture", &["command", "media"]),
    ("baresip-calls-baresip-port-restricted", "baresip calls baresip: media-only failure (who sends first); a server capture has no media", &["command", "media"]),
    ("baresip-calls-baresip-port-restricted-caller", "baresip calls baresip: media-only failure (who sends first); a server capture has no media", &["command", "media"]),
    ("coturn-relays-our-phones", "coturn: external program relaying media, which a server capture does not see", &["command", "media"]),
    ("baresip-ice-calls-both-ways", "baresip with ICE: external program (imported as the harness's phone); checks and media are not in a server capture", &["command", "ice", "log", "media", "turn-server"]),
    ("baresip-ice-full-cone-nats-direct", "baresip with ICE: external program (imported as the harness's phone); checks and media are not in a server capture", &["command", "ice", "log", "media", "turn-server"]),
    ("baresip-ice-port-restricted-nat", "baresip with ICE: external program (imported as the harness's phone); checks and media are not in a server capture", &["command", "ice", "log", "media", "turn-server"]),
    ("baresip-ice-symmetric-nats-relay", "baresip with ICE and TURN: external program (imported as the harness's phone); checks and relayed media are not in a server capture", &["command", "ice", "log", "media", "turn-server"]),
    ("ice-symmetric-nats-coturn", "coturn: external program relaying ICE checks and media, which a server capture does not see", &["command", "ice", "media"]),
    ("ice-symmetric-nats-picks-relay", "ICE: checks and media go phone to phone or through TURN, which a server capture does not see", &["ice", "media", "turn-server"]),
    ("ice-full-cone-nats-picks-direct", "ICE: checks and media go phone to phone, which a server capture does not see", &["ice", "media", "turn-server"]),
    ("one-way-audio-who-sends-first-fix-ice", "ICE: the checks that heal the collision and the media are not in a server capture", &["ice", "media", "turn-server"]),
    ("no-audio-symmetric-stun", "media-only failure: a server capture has no media", &["media"]),
    ("no-audio-symmetric-stun-fix-turn", "TURN relays media, which a server capture does not see", &["media", "turn-server"]),
    ("one-way-audio-private-sdp", "media-only failure: a server capture has no media (the -fix-latching twin asks for audio)", &["media"]),
    ("one-way-audio-private-sdp-fix-latching", "latching is a media fix: a server capture has no media", &["media"]),
    ("one-way-audio-who-sends-first", "media-only failure: a server capture has no media", &["media"]),
    ("one-way-audio-who-sends-first-fix-latching", "latching is a media fix: a server capture has no media", &["media"]),
    ("one-way-audio-who-sends-first-fix-input-firewall", "the router's input firewall decides the media: a server capture has no media", &["media"]),
    ("rtp-range-blocked", "media-only failure: a server capture has no media", &["media"]),
    ("sbc-symmetric-nats", "SBC media relay: a server capture has no media; the SBC is imported as a registrar", &["media", "sbc"]),
    ("binding-expiry-fix-sbc-pings", "SBC keep-alive pings: the SBC is imported as a registrar with far-end handling", &["sbc"]),
    ("binding-expiry-slow-answer-fix-sbc-pings", "SBC keep-alive pings: the SBC is imported as a registrar with far-end handling", &["sbc"]),
    ("408-private-contact-fix-kamailio", "Kamailio: external program (imported as the harness's registrar)", &["kamailio"]),
    ("sbc-symmetric-nats-kamailio-rtpengine", "Kamailio + rtpengine: external programs (imported as the harness's registrar); the relay's media is not in a server capture", &["kamailio", "media"]),
    ("sbc-symmetric-nats-kamailio-no-rtpengine", "Kamailio: external program (imported as the harness's registrar); media-only failure: a server capture has no media", &["kamailio", "media"]),
    ("408-private-contact-kamailio-no-nathelper", "Kamailio: external program (imported as the harness's registrar, literal: the INVITE went to the private Contact)", &["kamailio"]),
    ("sipp-register-via-sbc", "SIPp: external program, its exit code is not in a capture", &["command", "exit-code", "sbc"]),
    ("kamailio-by-hand-as-registrar", "Kamailio as a command: external program (imported as the harness's registrar); its log is not in a capture", &["command", "log"]),
    ("sipp-fragmented-invite", "SIPp: external program, its exit codes and statistics are not in a capture, and its video INVITE never reached the server (the router dropped its fragments)", &["command", "exit-code", "log"]),
    ("sipp-uac-behind-nat", "SIPp: external program, its exit code and its own statistics are not in a capture", &["command", "exit-code", "log"]),
    ("diagnosis-steps", "the field guide's diagnosis steps (STUN check, NAT type, UDP probes to the RTP range) run on the phone's LAN and outside: the server sees only their STUN to it, and import reads one NAT where the CGNAT makes two", &["nat-type", "stun-address", "udp-reachable"]),
    ("diagnosis-steps-fix-public-ip", "the field guide's diagnosis steps (STUN check, NAT type, UDP probes to the RTP range) run on the phone's LAN and outside: the server sees only their STUN to it", &["nat-type", "stun-address", "udp-reachable"]),
];

/// Catalogue files whose call never reaches the server, so its capture holds no INVITE: the
/// import keeps what the server saw (the registrations) and cannot expect the call. Each with
/// the reason and exactly the verdicts the import cannot carry.
const CALL_NOT_AT_SERVER: &[(&str, &str, &[&str])] = &[(
    "408-fragmented-invite",
    "the phone's router drops the INVITE's IP fragments: the server's capture has the REGISTERs \
     only",
    &["alice rang: false", "bob's call ends with 408"],
)];

/// Scenarios running at once: each builds its own namespaces, the host has two cores.
const AT_ONCE: usize = 16;

fn catalogue_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn catalogue(name: &str) -> PathBuf {
    catalogue_dir().join(format!("{name}.toml"))
}

fn load(path: &Path) -> Result<Scenario> {
    Scenario::load(path).map_err(|e| anyhow!("{e}"))
}

/// What a file checks or runs beyond SIP phones and a registrar: expectation and component
/// kinds a server capture cannot carry.
fn beyond_signalling(s: &Scenario) -> BTreeSet<&'static str> {
    let expects = s.file.expects.iter().filter_map(|e| match e.get_ref() {
        Expect::Media { .. } => Some("media"),
        Expect::Ice { .. } => Some("ice"),
        Expect::ExitCode { .. } => Some("exit-code"),
        Expect::Log { .. } => Some("log"),
        Expect::StunAddress { .. } => Some("stun-address"),
        Expect::NatType { .. } => Some("nat-type"),
        Expect::UdpReachable { .. } => Some("udp-reachable"),
        _ => None,
    });
    let components = s.file.components.iter().filter_map(|c| match c.get_ref() {
        Component::Command { .. } => Some("command"),
        Component::Sbc { .. } => Some("sbc"),
        Component::Kamailio { .. } => Some("kamailio"),
        Component::TurnServer { .. } => Some("turn-server"),
        _ => None,
    });
    expects.chain(components).collect()
}

/// Every catalogue file, by name.
fn catalogue_names() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(catalogue_dir())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_server_capture_imports_into_a_scenario_with_the_same_verdicts(
) -> Result<()> {
    require_kernel!();
    let started = std::time::Instant::now();
    let names = catalogue_names()?;
    for name in REFUSED
        .iter()
        .map(|r| r.0)
        .chain(SIGNALLING_ONLY.iter().map(|r| r.0))
        .chain(NO_SERVER_CAPTURE.iter().map(|r| r.0))
        .chain(CALL_NOT_AT_SERVER.iter().map(|r| r.0))
    {
        ensure!(
            names.iter().any(|n| n == name),
            "{name} is listed but not in the catalogue"
        );
    }
    let out = std::env::temp_dir().join(format!("snh-import-{}", std::process::id()));
    let originals: Vec<PathBuf> = names.iter().map(|n| catalogue(n)).collect();
    run_all_passing(&originals, &out.join("original"), AT_ONCE).await?;

    let mut files = Vec::new();
    let mut problems = Vec::new();
    for name in &names {
        let pcap = out.join("original").join(name).join("server.pcap");
        if let Some((_, why)) = NO_SERVER_CAPTURE.iter().find(|r| r.0 == name) {
            if pcap.exists() {
                problems.push(format!(
                    "{name} is listed as having no server capture ({why}) but has one"
                ));
            }
            continue;
        }
        let imported = harness::import::import_file(&pcap, name);
        if let Some((_, why, says)) = REFUSED.iter().find(|r| r.0 == name) {
            match imported {
                Err(e) => {
                    let e = e.to_string();
                    if !e.contains(says) || e.contains('\n') {
                        problems.push(format!(
                            "{name} ({why}): import's error is not the one line expected: {e}"
                        ));
                    }
                }
                Ok(_) => problems.push(format!(
                    "{name} is listed as refused ({why}) but imports: take it off the list"
                )),
            }
            continue;
        }
        let imported = match imported {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        // One folder per original: a fix file's name may equal another import's twin.
        let dir = out.join("imported").join(name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, imported.scenario.to_toml())?;
        let original = load(&catalogue(name))?;
        let copy = load(&path)?;
        // The import may say more than the original (who registered, who rang): those it read
        // off the capture, and the run below checks them; it must not say less or otherwise.
        let missing: Vec<_> = verdicts(&original)
            .difference(&verdicts(&copy))
            .cloned()
            .collect();
        let listed = CALL_NOT_AT_SERVER.iter().find(|c| c.0 == name);
        let expected: Vec<&str> = listed.map(|c| c.2.to_vec()).unwrap_or_default();
        if missing != expected {
            problems.push(match listed {
                Some((_, why, _)) => format!(
                    "{name} ({why}): the import misses {missing:?}, the list says {expected:?}"
                ),
                None => format!(
                    "{name}: the import expects {:?}, missing the catalogue's {missing:?}",
                    verdicts(&copy)
                ),
            });
        }
        let lost: BTreeSet<&str> = beyond_signalling(&original)
            .difference(&beyond_signalling(&copy))
            .copied()
            .collect();
        match SIGNALLING_ONLY.iter().find(|s| s.0 == name) {
            Some((_, why, listed)) => {
                let listed: BTreeSet<&str> = listed.iter().copied().collect();
                if lost != listed {
                    problems.push(format!(
                        "{name} ({why}): the import leaves out {lost:?}, the list says {listed:?}"
                    ));
                }
            }
            None if !lost.is_empty() => problems.push(format!(
                "{name}: the import leaves out {lost:?}; list it in SIGNALLING_ONLY with the reason"
            )),
            None => {}
        }
        let got: Vec<&str> = imported.fixes.iter().map(|(s, _)| s.as_str()).collect();
        if let Some((_, twins)) = TWINS.iter().find(|t| t.0 == name) {
            if got != *twins {
                problems.push(format!("{name}: fix twins {got:?}, expected {twins:?}"));
            }
        }
        files.push(path);
        for (suffix, doc) in &imported.fixes {
            let path = dir.join(format!("{name}{suffix}.toml"));
            std::fs::write(&path, doc.to_toml())?;
            let twin = load(&path)?;
            if !verdicts(&twin)
                .iter()
                .all(|v| !v.contains("408") && !v.ends_with("false"))
            {
                problems.push(format!(
                    "{name}{suffix} does not expect success: {:?}",
                    verdicts(&twin)
                ));
            }
            files.push(path);
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    run_all_passing(&files, &out.join("runs"), AT_ONCE).await?;
    eprintln!(
        "{} catalogue files, {} imported scenarios and twins run in {:.0} s",
        names.len(),
        files.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
