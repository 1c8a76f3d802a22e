//! A harness user that dies in the ways real ones do, for `tests/cleanup.rs`.
//!
//! `cleanup-child MODE MARKER`: builds a topology, starts `sleep MARKER` inside a host, prints
//! `READY <run-id>`, then per MODE: `panic` panics, `wait` waits to be signalled. In the
//! `pooled-` modes a second topology is first taken from the process-wide pool and given back,
//! so it waits there idle (owned by a static, which no unwinding drops), and the run id printed
//! is that one's.

use std::io::Write;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let marker = args.next().unwrap_or_else(|| "3600".into());
    let (pooled, mode) = match mode.strip_prefix("pooled-") {
        Some(m) => (true, m.to_string()),
        None => (false, mode),
    };
    let idle_run = if pooled {
        let pool = harness::topology::Pool::shared();
        let idle = pool
            .take(
                harness::shapes::home_lan(sim_nat::NatType::FullCone)
                    .spec()
                    .clone(),
            )
            .await?;
        let run = idle.run_id().to_string();
        pool.give_back(idle).await?;
        anyhow::ensure!(pool.idle() == 1, "the topology given back is not idle");
        Some(run)
    } else {
        None
    };
    let topo = harness::shapes::two_lans(
        sim_nat::NatType::PortRestrictedCone,
        sim_nat::NatType::Symmetric,
    )
    .build()
    .await?;
    let _sleeper = topo.node("alice")?.start("sleep", &[&marker]).await?;
    println!("READY {}", idle_run.as_deref().unwrap_or(topo.run_id()));
    std::io::stdout().flush()?;
    match mode.as_str() {
        "panic" => panic!("deliberate panic with a live topology"),
        _ => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    }
}
