//! A harness user that dies in the ways real ones do, for `tests/cleanup.rs`.
//!
//! `cleanup-child MODE MARKER`: builds a topology, starts `sleep MARKER` inside a host, prints
//! `READY <run-id>`, then per MODE: `panic` panics, `wait` waits to be signalled.

use std::io::Write;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let marker = args.next().unwrap_or_else(|| "3600".into());
    let topo = harness::shapes::two_lans(
        sim_nat::NatType::PortRestrictedCone,
        sim_nat::NatType::Symmetric,
    )
    .build()
    .await?;
    let _sleeper = topo.node("alice")?.start("sleep", &[&marker]).await?;
    println!("READY {}", topo.run_id());
    std::io::stdout().flush()?;
    match mode.as_str() {
        "panic" => panic!("deliberate panic with a live topology"),
        _ => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    }
}
