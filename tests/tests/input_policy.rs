//! A router's own input firewall (`input = "accept" | "drop" | "reject"` on a NAT, issue 23) on
//! the kernel, with sim-nat's [`NatModel`] as the oracle.
//!
//! 1. [`each_input_policy_decides_who_sends_first_on_the_kernel`]: the catalogue's
//!    `one-way-audio-who-sends-first-fix-input-firewall.toml` (a phone with STUN media behind a
//!    port-restricted NAT; the office phone it calls streams first) under each policy: `accept`
//!    (a plain Linux box) keeps the office's early RTP as an unreplied flow to the router, which
//!    moves the phone's port, and the caller hears nothing; `drop` and `reject` discard it before
//!    conntrack confirms it, and the call has audio both ways. The router answers ICMP port
//!    unreachable under `accept` (its own UDP stack) and `reject` (the firewall), never under
//!    `drop`; the trace the ladder is drawn from shows which.
//!    [`tcp_to_the_router_is_reset_or_ignored_as_firmware_does`]: TCP to the router is reset under
//!    `accept` and `reject` and times out under `drop`; the inside's own connections pass.
//! 2. [`the_media_verdict_on_the_kernel_is_the_models`]: over NAT type × input policy × who sends
//!    first, the media verdict of a real call is what `NatModel` predicts when fed the same media
//!    packets. A case is a scenario file whose media expectation *is* the model's prediction, so a
//!    counterexample prints as a file `harness run` replays. Who sends first is who is called: the
//!    callee streams from its 200 OK, the caller once the 200 has arrived (the scenario runner
//!    orders them so).
//!
//! There are only 24 cases; a run draws [`BATCH`] of them (`PROPERTY_BATCHES` batches, default
//! 1) and runs a batch's scenarios concurrently, as `properties.rs` does.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use harness::bindings::{BindingEvent, Opened};
use harness::scenario::{self, Outcome, RunOptions, Scenario, Verdict};
use harness::trace::{Entry, Payload};
use proptest::sample::select;
use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestError, TestRunner,
};
use sim_nat::{InputPolicy, NatBehaviour, NatModel, NatType};
use tests::require_kernel;

const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Scenario runs a proptest case holds (run concurrently).
const BATCH: usize = 6;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

async fn run(s: &Scenario) -> Result<Outcome> {
    scenario::run(s, &RunOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", s.name()))
}

/// The ICMP errors the router itself sent, as the trace decodes them.
fn icmp_from_router(o: &Outcome) -> Vec<String> {
    o.trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Packet {
                src,
                payload: p @ Payload::Icmp(_),
                ..
            } if *src.ip() == ROUTER => Some(p.summary()),
            _ => None,
        })
        .collect()
}

/// The media check's observation: `caller→callee …: audio both ways`.
fn media(o: &Outcome) -> String {
    o.checks
        .iter()
        .find(|(what, _, _)| what.contains("audio"))
        .map_or_else(|| "no media check".into(), |(_, _, seen)| seen.clone())
}

// --- 1. each policy on the kernel ----------------------------------------------------------------

#[test]
fn each_input_policy_decides_who_sends_first_on_the_kernel() -> Result<()> {
    require_kernel!();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/one-way-audio-who-sends-first-fix-input-firewall.toml");
    let base = Scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runs = InputPolicy::ALL.map(|policy| {
        let s = base.with_nats(|n| n.clone().with_input(policy));
        async move { anyhow::Ok((policy, run(&s).await?)) }
    });
    let mut failures = Vec::new();
    for r in RUNTIME.block_on(futures::future::join_all(runs)) {
        let (policy, o) = r?;
        let held = o.bindings.iter().flat_map(|(_, ev)| ev).any(|e| {
            matches!(e, BindingEvent::Created { binding, .. } if binding.direction == Opened::ToRouter)
        });
        let icmp = icmp_from_router(&o);
        let audio = media(&o);
        let (want_audio, want_held, want_icmp) = match policy {
            InputPolicy::Accept => ("one-way audio: caller → callee only", true, true),
            InputPolicy::Drop => ("audio both ways", false, false),
            InputPolicy::Reject => ("audio both ways", false, true),
        };
        let got = (audio.contains(want_audio), held, !icmp.is_empty());
        if got != (true, want_held, want_icmp) || !icmp.iter().all(|s| s == "ICMP port unreachable")
        {
            failures.push(format!(
                "{policy}: media `{audio}`, conntrack held the early RTP: {held}, router's ICMP: \
                 {icmp:?}\n{}",
                o.ladder
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// fw4's `handle_reject` answers TCP with a reset: a connection to a closed port of the router is
/// refused at once under `reject`, as under `accept` (the router's own TCP stack resets it), and
/// times out under `drop`. Replies of the inside's own TCP flows are untouched (`established`).
#[test]
fn tcp_to_the_router_is_reset_or_ignored_as_firmware_does() -> Result<()> {
    require_kernel!();
    let runs = InputPolicy::ALL.map(|policy| async move {
        let nat = NatType::PortRestrictedCone.behaviour().with_input(policy);
        let topo = harness::shapes::home_lan(nat).build().await?;
        let to_router = topo
            .node("peer")?
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &"203.0.113.1:8080".parse().expect("an address"),
                    Duration::from_millis(800),
                )
                .map(|_| ())
                .map_err(|e| e.kind())
            })
            .await?;
        // The inside's own connection out: its SYN-ACK is a reply and gets in under every policy.
        let listener = topo
            .node("server")?
            .tcp_listen(tests::sa(harness::shapes::SERVER, 5061))
            .await?;
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let outbound = topo
            .node("alice")?
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &"203.0.113.10:5061".parse().expect("an address"),
                    Duration::from_millis(800),
                )
                .map(|_| ())
                .map_err(|e| e.kind())
            })
            .await?;
        let _ = accept.await;
        anyhow::Ok((policy, to_router, outbound))
    });
    for r in RUNTIME.block_on(futures::future::join_all(runs)) {
        let (policy, to_router, outbound) = r?;
        let want = match policy {
            InputPolicy::Drop => Err(std::io::ErrorKind::TimedOut),
            _ => Err(std::io::ErrorKind::ConnectionRefused),
        };
        ensure!(
            to_router == want,
            "{policy}: TCP to the router: {to_router:?}, want {want:?}"
        );
        ensure!(
            outbound.is_ok(),
            "{policy}: alice's own TCP connection out: {outbound:?}"
        );
    }
    Ok(())
}

// --- 2. the property -----------------------------------------------------------------------------

/// One call: the home router's NAT type and input policy, and who streams first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Case {
    nat: NatType,
    input: InputPolicy,
    /// The phone behind the NAT is called, so its RTP leaves first; otherwise it calls the office
    /// phone, whose RTP reaches the router first.
    phone_first: bool,
}

impl Case {
    fn behaviour(&self) -> NatBehaviour {
        self.nat.behaviour().with_input(self.input)
    }

    fn name(&self) -> String {
        format!(
            "input-{}-{}-{}-first",
            self.nat,
            self.input,
            if self.phone_first { "phone" } else { "office" }
        )
    }

    /// Who calls whom: (caller, callee) by UA name.
    fn parties(&self) -> (&'static str, &'static str) {
        if self.phone_first {
            ("bob", "alice")
        } else {
            ("alice", "bob")
        }
    }

    /// The media verdict the model predicts, from the caller's side, as the file writes it.
    fn predicted(&self) -> &'static str {
        let (to_office, to_phone) = model_media(&self.behaviour(), self.phone_first);
        let (out, back) = if self.phone_first {
            (to_phone, to_office)
        } else {
            (to_office, to_phone)
        };
        match (out, back) {
            (true, true) => "both-ways",
            (true, false) => "caller-to-callee",
            (false, true) => "callee-to-caller",
            (false, false) => "none",
        }
    }

    /// The scenario file of this case: the catalogue's who-sends-first call with this router,
    /// expecting the model's verdict.
    fn file(&self) -> String {
        let (caller, callee) = self.parties();
        let nat = harness::scenario::emit::nat_value(&self.behaviour());
        format!(
            r#"# The media verdict NatModel predicts for this call (tests/tests/input_policy.rs).
[scenario]
name = "{name}"
summary = "STUN media behind {nat_type} with input = {input}; {caller} calls {callee}"
t1-ms = 200

[[router]]
name = "home"
wan = "203.0.113.1"
lan = "192.168.1.1/24"
nat = {nat}

[[host]]
name = "alice"
segment = "home"
addrs = ["192.168.1.10"]

[[host]]
name = "server"
segment = "internet"
addrs = ["203.0.113.10", "203.0.113.11"]

[[host]]
name = "office"
segment = "internet"
addrs = ["198.51.100.20"]

[[component]]
kind = "stun-server"
host = "server"

[[component]]
kind = "proxy"
host = "server"
nat-handling = "far-end"

[[component]]
kind = "ua"
host = "alice"
proxy = "server"
stun-server = "server"
media = "stun"
media-ms = 2000

[[component]]
kind = "ua"
host = "office"
user = "bob"
proxy = "server"
media-ms = 2000

[[step]]
action = "register"
ua = "{callee}"

[[step]]
action = "call"
from = "{caller}"
to = "{callee}"
hold-ms = 100

[[expect]]
kind = "call"
from = "{caller}"
status = 200

[[expect]]
kind = "media"
from = "{caller}"
value = "{verdict}"
"#,
            name = self.name(),
            nat_type = self.nat,
            input = self.input,
            verdict = self.predicted(),
        )
    }
}

/// Which directions of the call's media get through the model: (phone → office, office →
/// phone). The phone asks STUN for its RTP port's mapping and offers it; the office sends there,
/// the phone to the office's own address; the first sender's first packets go out before the
/// other starts (as the 200 OK races the RTP), then both stream. A direction works if every packet
/// of the steady state arrives, and is broken if none does.
fn model_media(nat: &NatBehaviour, phone_first: bool) -> (bool, bool) {
    let phone = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 10000);
    let office = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 20000);
    let stun = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 3478);
    let mut m =
        NatModel::new(nat.clone(), ROUTER, (Ipv4Addr::new(192, 168, 1, 0), 24)).expect("valid");
    let t0 = Instant::now();
    let mut now = t0;
    let mut tick = || {
        now += Duration::from_millis(10);
        now
    };
    let (offered, _) = m
        .outbound(phone, stun, tick())
        .forwarded()
        .expect("the STUN request leaves");
    assert!(m.inbound(stun, offered, tick()).forwarded().is_some());
    let to_office = |m: &mut NatModel, at| m.outbound(phone, office, at).forwarded().is_some();
    let to_phone = |m: &mut NatModel, at| {
        m.inbound(office, offered, at)
            .forwarded()
            .is_some_and(|(_, d)| d == phone)
    };
    for _ in 0..3 {
        let at = tick();
        if phone_first {
            to_office(&mut m, at);
        } else {
            to_phone(&mut m, at);
        }
    }
    let (mut out, mut back) = (0, 0);
    const STEADY: usize = 20;
    for _ in 0..STEADY {
        out += usize::from(to_office(&mut m, tick()));
        back += usize::from(to_phone(&mut m, tick()));
    }
    for n in [out, back] {
        assert!(
            n == 0 || n == STEADY,
            "the model's steady state is all or nothing, got {n} of {STEADY}"
        );
    }
    (out == STEADY, back == STEADY)
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        select(NatType::ALL.to_vec()),
        select(InputPolicy::ALL.to_vec()),
        proptest::bool::ANY,
    )
        .prop_map(|(nat, input, phone_first)| Case {
            nat,
            input,
            phone_first,
        })
}

/// Runs a batch of cases concurrently; fails naming every case whose kernel verdict is not the
/// model's, with its file.
fn check_batch(cases: &[Case]) -> Result<(), TestCaseError> {
    let runs = cases.iter().map(|c| async move {
        let text = c.file();
        let s = Scenario::from_str(&c.name(), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let o = run(&s).await?;
        anyhow::Ok((c, text, o))
    });
    let mut failures = Vec::new();
    for r in RUNTIME.block_on(futures::future::join_all(runs)) {
        match r {
            Ok((_, _, o)) if o.verdict == Verdict::Pass => {}
            Ok((c, text, o)) => failures.push(format!(
                "{c:?}: the kernel's verdict is not the model's ({})\n{:?}\n{text}",
                c.predicted(),
                o.checks
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(failures.join("\n\n")))
    }
}

#[test]
fn the_media_verdict_on_the_kernel_is_the_models() -> Result<()> {
    require_kernel!();
    let batches = std::env::var("PROPERTY_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: batches,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/input_policy/media_verdict.txt",
        ))),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let batch = proptest::collection::vec(arb_case(), 1..=BATCH);
    match runner.run(&batch, |b| check_batch(&b)) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, minimal)) => bail!("{why}\n\nminimal failing batch: {minimal:?}"),
        Err(TestError::Abort(why)) => bail!("proptest gave up: {why}"),
    }
}

/// The model's own verdicts, without the kernel: what the property holds the kernel to.
#[test]
fn the_model_predicts_the_collision_only_without_an_input_firewall() -> Result<()> {
    for nat in NatType::ALL {
        for input in InputPolicy::ALL {
            for phone_first in [false, true] {
                let c = Case {
                    nat,
                    input,
                    phone_first,
                };
                let want = match (nat, input, phone_first) {
                    // A symmetric NAT's RTP mapping is not the STUN one: the office's RTP is lost.
                    (NatType::Symmetric, _, false) => "caller-to-callee",
                    (NatType::Symmetric, _, true) => "callee-to-caller",
                    // The office's early RTP takes the STUN port unless a full cone admits it or
                    // a firewall discards it.
                    (
                        NatType::RestrictedCone | NatType::PortRestrictedCone,
                        InputPolicy::Accept,
                        false,
                    ) => "caller-to-callee",
                    _ => "both-ways",
                };
                ensure!(c.predicted() == want, "{c:?}: model says {}", c.predicted());
            }
        }
    }
    Scenario::from_str(
        "x",
        &Case {
            nat: NatType::FullCone,
            input: InputPolicy::Reject,
            phone_first: true,
        }
        .file(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("a case's file parses")?;
    Ok(())
}
