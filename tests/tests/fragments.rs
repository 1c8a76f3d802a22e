//! A router that drops IP fragments, on the kernel: a video phone's INVITE larger than the MTU
//! leaves the phone in fragments (its own kernel cuts it) and none of them passes the router,
//! while the same phone's small INVITE goes through — across every NAT type, with the router's
//! fragment drop off and on (`harness matrix --fragments`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Result};
use harness::capture::read_pcap;
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use harness::trace::defrag::fragment_of;
use tests::require_kernel;

fn load(name: &str) -> Result<Scenario> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).map_err(|e| anyhow!("{e}"))
}

/// `(fragments, frames carrying "INVITE sip:alice")` in one vantage point's pcap.
fn fragments_and_invites(pcap: &Path) -> Result<(usize, usize)> {
    let frames = read_pcap(pcap)?;
    let fragments = frames
        .iter()
        .filter(|(_, b)| fragment_of(b).is_some())
        .count();
    let invites = frames
        .iter()
        .filter(|(_, b)| b.windows(16).any(|w| w == b"INVITE sip:alice"))
        .count();
    Ok((fragments, invites))
}

/// Runs `s` with its pcaps written to a temporary folder, hands the scenario's pcap folder to
/// `read`, and removes the folder whatever happened.
async fn run_reading_pcaps<T>(
    s: &Scenario,
    read: impl Fn(&Path) -> Result<T>,
) -> Result<(harness::scenario::Outcome, T)> {
    let dir = std::env::temp_dir().join(format!("snh-{}-{}", s.name(), std::process::id()));
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        keep: false,
    };
    let o = scenario::run(s, &opts).await;
    let read = o.as_ref().ok().map(|_| read(&dir.join(s.name())));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((o?, read.expect("read after a run that did not fail")?))
}

/// [`fragments_and_invites`] at bob, the router's LAN and WAN sides, and the server.
fn count_all(pcap: &dyn Fn(&str) -> PathBuf) -> Result<[(usize, usize); 4]> {
    Ok([
        fragments_and_invites(&pcap("bob"))?,
        fragments_and_invites(&pcap("home-lan"))?,
        fragments_and_invites(&pcap("home-wan"))?,
        fragments_and_invites(&pcap("server"))?,
    ])
}

/// On real packets: every INVITE copy leaves bob in two fragments and reaches the router's LAN
/// side as such; nothing of it (no fragment, no INVITE) leaves the router's WAN side or reaches
/// the server; the ladder names the router's fragment drop as the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_invite_is_fragmented_by_the_phone_and_nothing_of_it_passes_the_router(
) -> Result<()> {
    require_kernel!();
    let s = load("408-fragmented-invite")?;
    let (o, counted) = run_reading_pcaps(&s, |dir| {
        count_all(&|v: &str| dir.join(format!("{v}.pcap")))
    })
    .await?;
    ensure!(o.verdict == Verdict::Pass, "{:?}\n{}", o.checks, o.ladder);
    let [bob, lan, wan, server] = counted;
    let (bob_frags, bob_invites) = bob;
    // Timer B at 64·T1 lets Timer A send the INVITE 7 times (RFC 3261 §17.1.1.2).
    ensure!(
        bob_invites >= 6 && bob_frags == 2 * bob_invites,
        "each INVITE in two fragments at bob: {bob_frags} fragments, {bob_invites} INVITEs"
    );
    let (lan_frags, lan_invites) = lan;
    ensure!(
        lan_frags == bob_frags && lan_invites == bob_invites,
        "the router's LAN side sees them all: {lan_frags} fragments, {lan_invites} INVITEs"
    );
    for (v, (frags, invites)) in [("home-wan", wan), ("server", server)] {
        ensure!(
            frags == 0 && invites == 0,
            "nothing past the router at {v}: {frags} fragments, {invites} INVITEs"
        );
    }
    ensure!(
        o.ladder
            .contains("came in IP fragments, and the router drops fragments"),
        "the ladder says why:\n{}",
        o.ladder
    );
    Ok(())
}

/// The matrix over the fragment axis: the large INVITE gets 200 on every NAT type while the
/// router passes fragments and 408 when it drops them; the small INVITE gets 200 in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_large_invite_needs_the_router_to_pass_fragments() -> Result<()> {
    require_kernel!();
    let both = [Some(false), Some(true)];
    let off = [sim_nat::SipAlg::Off];
    let (large, small) = futures::future::try_join(
        scenario::matrix_with_fragments(&load("408-fragmented-invite")?, &off, &[None], &both),
        scenario::matrix_with_fragments(
            &load("408-fragmented-invite-fix-smaller-sdp")?,
            &off,
            &[None],
            &both,
        ),
    )
    .await?;
    ensure!(large.len() == 8 && small.len() == 8, "4 NAT types × 2");
    for c in &large {
        // The file expects 408: passing fragments must make the call complete instead.
        match c.drop_fragments {
            Some(true) => ensure!(c.verdict == Verdict::Pass, "{}: {:?}", c.name(), c.failed),
            _ => ensure!(
                c.failed.iter().any(|f| f == "got 200"),
                "{}: the large INVITE must get 200 through a router passing fragments: {:?}",
                c.name(),
                c.failed
            ),
        }
    }
    for c in &small {
        ensure!(c.verdict == Verdict::Pass, "{}: {:?}", c.name(), c.failed);
    }
    Ok(())
}

/// Inbound too: a public video phone calls bob behind the fragment-dropping router; the proxy's
/// kernel cuts the forwarded INVITE, its fragments reach the router's WAN side and nothing of
/// them its LAN, and the proxy's transaction times out (408 to the caller, bob never rings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_invite_towards_the_phone_is_lost_at_the_router_as_well() -> Result<()> {
    require_kernel!();
    let file = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/408-fragmented-invite.toml"),
    )?;
    // The same topology and phones; alice offers the video and calls bob.
    let (head, _) = file
        .split_once("[[component]]                   # a video phone")
        .ok_or_else(|| anyhow!("the catalogue file changed shape"))?;
    let text = format!(
        r#"{}
[[component]]
kind = "ua"
host = "bob"
proxy = "server"

[[component]]
kind = "ua"
host = "alice"
proxy = "server"
codecs = ["PCMU", "PCMA", "G722", "G729", "GSM", "opus", "iLBC", "speex", "AMR-WB", "G726-32",
          "telephone-event"]
video = true

[[expect]]
kind = "call"
from = "alice"
status = 408

[[expect]]
kind = "rang"
ua = "bob"
value = false

[[expect]]
kind = "packet"
at = "home:wan"
contains = "INVITE sip:bob"
min = 2

[[expect]]
kind = "packet"
at = "home:lan"
contains = "INVITE sip:bob"
max = 0

# What happens, after what must hold.
[[step]]
action = "register"
ua = "bob"
[[step]]
action = "call"
from = "alice"
to = "bob"
hold-ms = 200
"#,
        head.replace(
            "name = \"408-fragmented-invite\"",
            "name = \"fragmented-invite-inbound\""
        )
    );
    let s = Scenario::from_str("inbound.toml", &text).map_err(|e| anyhow!("{e}"))?;
    let o = scenario::run(&s, &RunOptions::default()).await?;
    ensure!(o.verdict == Verdict::Pass, "{:?}\n{}", o.checks, o.ladder);
    ensure!(
        o.ladder.contains("dropped INVITE sip:bob")
            && o.ladder
                .contains("came in IP fragments, and the router drops fragments"),
        "the ladder says why:\n{}",
        o.ladder
    );
    Ok(())
}

/// Per-link MTU on real packets (`docs/examples/video-phone-small-mtu.toml`): bob's link has MTU
/// 1420, so his kernel cuts the INVITE into a 1420-byte first fragment; the router passes
/// fragments, re-cuts the datagram at the size it received (not at its 1492-byte WAN MTU) and
/// the call completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_link_mtu_decides_where_its_kernel_cuts_the_invite() -> Result<()> {
    require_kernel!();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples/video-phone-small-mtu.toml");
    let s = Scenario::load(&path).map_err(|e| anyhow!("{e}"))?;
    // The first fragment of each datagram cut at a vantage point: its IP length.
    let first_fragments = |pcap: PathBuf| -> Result<Vec<usize>> {
        Ok(read_pcap(&pcap)?
            .iter()
            .filter(|(_, b)| fragment_of(b).is_some_and(|f| f.offset == 0))
            .map(|(_, b)| b.len() - 14)
            .collect())
    };
    let (o, (bob, wan)) = run_reading_pcaps(&s, |dir| {
        Ok((
            first_fragments(dir.join("bob.pcap"))?,
            first_fragments(dir.join("home-wan.pcap"))?,
        ))
    })
    .await?;
    ensure!(o.verdict == Verdict::Pass, "{:?}\n{}", o.checks, o.ladder);
    // Every copy of the INVITE (one, unless a loaded machine made Timer A fire) alike.
    let cut_at = |v: &[usize]| !v.is_empty() && v.iter().all(|&n| n == 1420);
    ensure!(cut_at(&bob), "bob's INVITE cut at its link's MTU: {bob:?}");
    ensure!(cut_at(&wan), "re-cut at the size received: {wan:?}");
    Ok(())
}
