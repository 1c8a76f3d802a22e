//! Brings up `home_lan` with the NAT type given and runs a command in a node, printing output.
//! `cargo run -p harness --example poke -- symmetric alice stun 203.0.113.10 -v`
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nat: sim_nat::NatType = args.next().unwrap().parse()?;
    let node = args.next().unwrap();
    let prog = args.next().unwrap();
    let rest: Vec<String> = args.collect();
    let topo = harness::shapes::home_lan(nat).build().await?;
    let server = topo.node("server")?;
    let mut stund = server.start("stund", &["-h", "203.0.113.10", "-a", "203.0.113.11"]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let argv: Vec<&str> = rest.iter().map(|s| s.as_str()).collect();
    let (st, out, err) = topo.node(&node)?.output(&prog, &argv, Duration::from_secs(20)).await?;
    println!("status {st:?}\n--stdout--\n{out}\n--stderr--\n{err}");
    stund.kill();
    println!("stund: {}", stund.stdout());
    Ok(())
}
