//! The test lab most kernel tests build: phones and a registrar/proxy on a `shapes` topology,
//! with T1 scaled down so that the field's 408 (Timer B = 64·T1) comes in seconds.
//!
//! One place for the addresses `shapes` hands out, the scaled timers, and the few steps every
//! SIP test takes (register, wait for a call to settle, complete a call), so that a change to one
//! of them (a new event, a different T1) cannot leave one test file behind the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use harness::shapes::SERVER;
use harness::sip::{Event, NatHandling, ProxyConfig, ProxyTask, Timers, UaConfig, UaTask};
use harness::Topology;
use sim_nat::{NatBehaviour, NatType};

use crate::sa;

/// Scaled so that Timer B/F (64·T1, the field's 408) fires at 3.2 s.
pub const T1: Duration = Duration::from_millis(50);
pub const DOMAIN: &str = "example.com";
/// alice's address behind `home` / `home-a` in `shapes::home_lan` and `shapes::two_lans`.
pub const ALICE: &str = "192.168.1.10";
/// bob's address behind `home-b` in `shapes::two_lans`.
pub const BOB: &str = "192.168.2.10";
/// The WAN address of `home` (`home_lan`) and `home-a` (`two_lans`).
pub const HOME_A: &str = "203.0.113.1";
/// The WAN address of `home-b` (`two_lans`).
pub const HOME_B: &str = "198.51.100.1";
/// How long a step that needs a few round trips may take.
pub const STEP: Duration = Duration::from_secs(3);

/// When a transaction that gets no answer gives up (the 408 of the field).
pub fn timer_b() -> Duration {
    Timers::scaled(T1).timeout()
}

/// What most home routers are (Linux conntrack's own filtering).
pub fn prc() -> NatBehaviour {
    NatType::PortRestrictedCone.behaviour()
}

pub fn symmetric() -> NatBehaviour {
    NatType::Symmetric.behaviour()
}

/// A registrar/proxy on `server`:5060 at the lab's T1.
pub fn proxy_config(nat: NatHandling) -> ProxyConfig {
    ProxyConfig {
        timers: Timers::scaled(T1),
        ..ProxyConfig::new(sa(SERVER, 5060), DOMAIN, nat)
    }
}

/// A phone on `ip`:5060 registering at `server`, answering after 2·T1.
pub fn phone(user: &str, ip: &str, seed: u64) -> UaConfig {
    UaConfig {
        timers: Timers::scaled(T1),
        answer_after: Some(T1 * 2),
        seed,
        ..UaConfig::new(user, DOMAIN, sa(ip, 5060), sa(SERVER, 5060))
    }
}

/// A proxy on `server` and phones on named nodes of one topology.
///
/// Field order matters: the tasks stop before the namespaces they live in go.
pub struct Lab {
    pub proxy: ProxyTask,
    phones: BTreeMap<String, UaTask>,
    pub topo: Topology,
}

impl Lab {
    /// Starts the proxy on `server`.
    pub async fn new(topo: Topology, proxy: ProxyConfig) -> Result<Lab> {
        let (proxy, _) = ProxyTask::spawn(topo.node("server")?, proxy).await?;
        Ok(Lab {
            proxy,
            phones: BTreeMap::new(),
            topo,
        })
    }

    /// Starts a phone on `node`, known afterwards by its user name.
    pub async fn phone(mut self, node: &str, config: UaConfig) -> Result<Lab> {
        let user = config.user.clone();
        let (ua, _) = UaTask::spawn(self.topo.node(node)?, config).await?;
        self.phones.insert(user, ua);
        Ok(self)
    }

    /// The phone of `user`; panics on a test's own typo.
    pub fn ua(&self, user: &str) -> &UaTask {
        self.phones
            .get(user)
            .unwrap_or_else(|| panic!("the lab has no phone {user}"))
    }
}

/// Registers and waits for the 200.
pub async fn register(ua: &UaTask) -> Result<()> {
    ua.register().await?;
    ua.wait_for(|e| matches!(e, Event::Registered { .. }), STEP)
        .await
        .with_context(|| format!("{} did not register", ua.node()))?;
    Ok(())
}

/// Registers again and waits for a `Registered` newer than this call (`wait_for` would also
/// accept an earlier one).
pub async fn register_anew(ua: &UaTask) -> Result<()> {
    let since = Instant::now();
    ua.register().await?;
    let deadline = since + STEP;
    while Instant::now() < deadline {
        if ua
            .events()
            .iter()
            .any(|e| e.at >= since && matches!(e.event, Event::Registered { .. }))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{} did not register again: {:?}", ua.node(), ua.events())
}

/// How `call` ended at the caller within `wait`: `None` when it was established, else the
/// final status it failed with.
pub async fn call_settles(caller: &UaTask, call: &str, wait: Duration) -> Result<Option<u16>> {
    let done = caller
        .wait_for(
            |e| match e {
                Event::CallEstablished { call_id, .. } | Event::CallFailed { call_id, .. } => {
                    call_id == call
                }
                _ => false,
            },
            wait,
        )
        .await?;
    Ok(match done.event {
        Event::CallFailed { status, .. } => Some(status),
        _ => None,
    })
}

/// `from` calls `target` (the user of `to`); the call connects on both sides and `from`'s BYE
/// ends it on both. The call's id.
pub async fn complete_call(from: &UaTask, to: &UaTask, target: &str) -> Result<String> {
    complete_call_within(from, to, target, STEP).await
}

/// [`complete_call`], each step within `step`.
pub async fn complete_call_within(
    from: &UaTask,
    to: &UaTask,
    target: &str,
    step: Duration,
) -> Result<String> {
    let call = from.call(target).await?;
    let is = |c: &str| c == call;
    for ua in [from, to] {
        ua.wait_for(
            |e| matches!(e, Event::CallEstablished { call_id, .. } if is(call_id)),
            step,
        )
        .await
        .with_context(|| format!("{} saw no established call", ua.node()))?;
    }
    from.hang_up(&call).await?;
    for ua in [from, to] {
        ua.wait_for(
            |e| matches!(e, Event::CallEnded { call_id } if is(call_id)),
            step,
        )
        .await
        .with_context(|| format!("{} did not see the call end", ua.node()))?;
    }
    Ok(call)
}

/// Waits up to Timer B for `ua`'s call to fail; the final status and when it came.
pub async fn call_fails(ua: &UaTask, call: &str) -> Result<(u16, Instant)> {
    let failed = ua
        .wait_for(
            |e| matches!(e, Event::CallFailed { call_id, .. } if call_id == call),
            timer_b() + STEP,
        )
        .await?;
    match failed.event {
        Event::CallFailed { status, .. } => Ok((status, failed.at)),
        other => bail!("waited for a failed call, got {other:?}"),
    }
}

/// SIPp on `bob` (behind `home-b`) registers bob with its private Contact at `server`, then
/// answers as SIPp's built-in UAS on the same port, once, within 10 s. `registered` checks what
/// the registrar stored before the UAS starts.
pub async fn sipp_bob_registers_then_answers<F, Fut>(
    topo: &Topology,
    registered: F,
) -> Result<harness::peers::sipp::SippRun>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use harness::peers::sipp::{Scenario, Sipp};
    let bob = topo.node("bob")?;
    let outcome = Sipp::new(Scenario::Register { expires: 300 }, sa(BOB, 5060))
        .remote(sa(SERVER, 5060))
        .service("bob")
        .timeout(Duration::from_secs(5))
        .run(bob)
        .await?;
    anyhow::ensure!(outcome.succeeded(), "SIPp did not register: {outcome}");
    registered().await?;
    Ok(Sipp::new(Scenario::Uas, sa(BOB, 5060))
        .timeout(Duration::from_secs(10))
        .start(bob)
        .await?)
}

/// `shapes::two_lans` with one UDP socket on each end host: alice 192.168.1.10:4000 (behind
/// `home-a`), bob 192.168.2.10:4000 (behind `home-b`), the server on `SERVER`:3478.
pub struct TwoLanSockets {
    pub alice: tokio::net::UdpSocket,
    pub bob: tokio::net::UdpSocket,
    pub server: tokio::net::UdpSocket,
    pub topo: Topology,
}

impl TwoLanSockets {
    pub async fn build(a: impl Into<NatBehaviour>, b: impl Into<NatBehaviour>) -> Result<Self> {
        let topo = harness::shapes::two_lans(a, b).build().await?;
        Ok(TwoLanSockets {
            alice: topo.node("alice")?.udp_bind(sa(ALICE, 4000)).await?,
            bob: topo.node("bob")?.udp_bind(sa(BOB, 4000)).await?,
            server: topo.node("server")?.udp_bind(sa(SERVER, 3478)).await?,
            topo,
        })
    }
}

/// `caller` calls `target`, answered by a SIPp UAS (whose side cannot be watched but by its
/// exit): the call comes up at the caller, its BYE ends it, and SIPp reports success.
pub async fn call_sipp_uas(
    caller: &UaTask,
    target: &str,
    uas: harness::peers::sipp::SippRun,
) -> Result<()> {
    let call = caller.call(target).await?;
    caller
        .wait_for(
            |e| matches!(e, Event::CallEstablished { call_id, .. } if *call_id == call),
            STEP,
        )
        .await?;
    caller.hang_up(&call).await?;
    caller
        .wait_for(|e| matches!(e, Event::CallEnded { .. }), STEP)
        .await?;
    let outcome = uas.wait().await?;
    anyhow::ensure!(outcome.succeeded(), "{outcome}");
    Ok(())
}

/// SIPp's built-in UAC on the public `peer` (198.51.100.20:5070) calls `user` through `server`
/// once, within 10 s; its outcome.
pub async fn sipp_uac_calls(
    topo: &Topology,
    user: &str,
) -> Result<harness::peers::sipp::SippOutcome> {
    use harness::peers::sipp::{Scenario, Sipp};
    Ok(Sipp::new(Scenario::Uac, sa(harness::shapes::PEER, 5070))
        .remote(sa(SERVER, 5060))
        .service(user)
        .timeout(Duration::from_secs(10))
        .run(topo.node("peer")?)
        .await?)
}
