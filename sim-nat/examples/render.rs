//! Prints the ruleset for a NAT type: `cargo run -p sim-nat --example render -- symmetric`.
use std::net::Ipv4Addr;

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "full-cone".into());
    let mut b = name
        .parse::<sim_nat::NatType>()
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
        .behaviour();
    if std::env::args().any(|a| a == "--outbound-only") {
        b = b.with_refresh(sim_nat::Refresh::OutboundOnly);
    }
    if std::env::args().any(|a| a == "--hairpin") {
        b = b.with_hairpinning(true);
    }
    if std::env::args().any(|a| a == "--alg") {
        b = b.with_sip_alg(sim_nat::SipAlg::Kernel);
    }
    let ports = sim_nat::RouterPorts {
        wan: "wan".into(),
        lan: "lan".into(),
        public: Ipv4Addr::new(203, 0, 113, 1),
        subscribers: vec![Ipv4Addr::new(100, 64, 0, 2)],
        forwards: Vec::new(),
    };
    let r = sim_nat::render(&b, &ports).unwrap();
    println!("{}", r.json_string());
    eprintln!("{}{}", r.prelude, r.epilogue);
}
