//! `harness`: the command line of the SIP-behind-NAT harness.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use harness::peers::vovida_stun;
use harness::{probe, shapes};
use sim_nat::{NatBehaviour, NatType};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Reproduce SIP-behind-NAT failures in Linux network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a home LAN behind each NAT type, measure it with UDP probes and with Debian's RFC 3489
    /// classifier (`stun`/`stund`), and print one verdict per type.
    Demo {
        /// Only these types (full-cone, restricted-cone, port-restricted-cone, symmetric).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<NatType>,
        /// Leave the topologies up until Enter is pressed, for `ip netns exec`.
        #[arg(long)]
        keep: bool,
    },
    /// Remove namespaces left by harness runs that died without cleaning up.
    Reap,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Demo { types, keep } => demo(types, keep).await,
        Command::Reap => {
            let reaped = harness::reaper::reap_stale();
            println!("removed {} stale namespace(s)", reaped.len());
            for n in reaped {
                println!("  {n}");
            }
            Ok(true)
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn short(b: &NatBehaviour) -> String {
    let m = match b.mapping {
        sim_nat::Mapping::EndpointIndependent => "EIM",
        sim_nat::Mapping::AddressDependent => "ADM",
        sim_nat::Mapping::AddressAndPortDependent => "APDM",
    };
    let f = match b.filtering {
        sim_nat::Filtering::EndpointIndependent => "EIF",
        sim_nat::Filtering::AddressDependent => "ADF",
        sim_nat::Filtering::AddressAndPortDependent => "APDF",
    };
    format!("{m}+{f}")
}

async fn demo(mut types: Vec<NatType>, keep: bool) -> Result<bool> {
    harness::preflight::check()?;
    harness::preflight::require_program("stun")?;
    harness::preflight::require_program("stund")?;
    if types.is_empty() {
        types = NatType::ALL.to_vec();
    }
    println!("Building a home LAN behind each NAT type (alice 192.168.1.10 → home 203.0.113.1 → internet)\n");
    let runs = types.iter().map(|&t| async move {
        let topo = shapes::home_lan(t).build().await?;
        let observed = probe::observe(
            topo.node("alice")?,
            topo.node("server")?,
            topo.node("peer")?,
            40000,
        )
        .await?;
        let classic = vovida_stun::classify(topo.node("alice")?, topo.node("server")?).await?;
        anyhow::Ok((t, topo, observed, classic))
    });
    let results = futures::future::join_all(runs).await;
    println!(
        "{:<22} {:<11} {:<24} {:<22} verdict",
        "NAT type", "configured", "UDP probes (RFC 4787)", "stun client (RFC 3489)"
    );
    let mut all_ok = true;
    let mut keep_alive = Vec::new();
    for r in results {
        let (t, topo, o, c) = r?;
        let configured = t.behaviour();
        let probes = NatBehaviour::new(o.mapping, o.filtering);
        let probes_ok = o.mapping == configured.mapping && o.filtering == configured.filtering;
        let classic_ok = c.nat_type() == Some(t);
        let ok = probes_ok && classic_ok;
        all_ok &= ok;
        let said = c
            .nat_type()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<22} {:<11} {:<24} {:<22} {}",
            t.to_string(),
            short(&configured),
            format!(
                "{} {}",
                short(&probes),
                if o.port_preserved {
                    "port kept"
                } else {
                    "port changed"
                }
            ),
            said,
            if ok { "OK" } else { "MISMATCH" }
        );
        if !classic_ok {
            println!("    stun printed: {}", c.line);
        }
        keep_alive.push(topo);
    }
    if keep {
        println!("\nTopologies are up. Namespaces:");
        for t in &keep_alive {
            println!("  {}", t.namespaces().join(" "));
        }
        println!("Try: ip netns exec <namespace> nft list ruleset   — press Enter to tear down.");
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    }
    drop(keep_alive);
    println!(
        "\n{}",
        if all_ok {
            "All NAT types behave as configured."
        } else {
            "Some NAT types do not behave as configured."
        }
    );
    Ok(all_ok)
}
