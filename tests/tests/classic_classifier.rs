//! A classifier nobody here wrote — Debian's RFC 3489 `stun` client against `stund` — names every
//! NAT type the harness builds.

use anyhow::{ensure, Result};
use harness::peers::vovida_stun;
use harness::shapes;
use sim_nat::NatType;
use tests::require_kernel;

#[tokio::test]
async fn vovida_stun_names_each_classic_nat_type() -> Result<()> {
    require_kernel!();
    let runs = NatType::ALL.into_iter().map(|t| async move {
        let topo = shapes::home_lan(t).build().await?;
        let v = vovida_stun::classify(topo.node("alice")?, topo.node("server")?).await?;
        anyhow::Ok((t, v))
    });
    for r in futures::future::join_all(runs).await {
        let (t, v) = r?;
        ensure!(v.nat_type() == Some(t), "{t}: stun said `{}`", v.line);
        if t != NatType::Symmetric {
            ensure!(
                v.preserves_ports,
                "{t}: ports must be preserved: `{}`",
                v.line
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn vovida_stun_sees_through_double_nat_to_the_outer_behaviour() -> Result<()> {
    require_kernel!();
    // Full-cone home router behind a symmetric carrier NAT: the outside sees symmetric.
    let topo = shapes::double_nat(NatType::FullCone, NatType::Symmetric)
        .build()
        .await?;
    let v = vovida_stun::classify(topo.node("alice")?, topo.node("server")?).await?;
    ensure!(
        v.nat_type() == Some(NatType::Symmetric),
        "stun said `{}`",
        v.line
    );
    Ok(())
}
