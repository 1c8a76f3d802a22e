//! A router's NAT bindings as first-class objects: list them, expire one, flush them all, watch
//! them come and go.
//!
//! The kernel is the source of truth: bindings are conntrack entries (read and deleted with the
//! `conntrack` tool inside the router's namespace) plus the elements our ruleset learnt into its
//! dynamic sets (`fc`, `peers`, `out`, `bound`), which a forgotten binding must lose too — or a
//! full-cone NAT would keep forwarding to it.

mod expiry;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::process::Process;
use crate::topology::{NatHistory, Node};

/// One UDP binding as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The inside endpoint (phone).
    pub internal: SocketAddrV4,
    /// Its public face on this router.
    pub external: SocketAddrV4,
    /// The outside endpoint of this flow.
    pub remote: SocketAddrV4,
    /// Seconds until conntrack forgets it unless a packet refreshes it.
    pub seconds_left: u32,
    /// Whether the outside has answered (conntrack's `[UNREPLIED]` cleared).
    pub replied: bool,
    /// Who opened the flow.
    pub direction: Opened,
}

/// Which side opened a flow through the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The inside sent first (source NAT).
    Outbound,
    /// The outside sent first and a looser filter let it in (destination NAT).
    Inbound,
    /// The outside sent to the router's own address and nothing took it: no translation, but the
    /// entry occupies the public port until it times out (the port-poisoning of kernel-facts).
    ToRouter,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arrow = match self.direction {
            Opened::Outbound => "→",
            Opened::Inbound => "←",
            Opened::ToRouter => "⇠",
        };
        write!(
            f,
            "{} {arrow} {} (remote {}) {}s left{}",
            self.internal,
            self.external,
            self.remote,
            self.seconds_left,
            if self.replied { "" } else { " unreplied" }
        )
    }
}

struct Tuple {
    src: SocketAddrV4,
    dst: SocketAddrV4,
}

fn field<'a>(words: &[&'a str], key: &str, nth: usize) -> Option<&'a str> {
    words
        .iter()
        .filter_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .nth(nth)
}

fn tuple(words: &[&str], nth: usize) -> Option<Tuple> {
    let ip = |k| field(words, k, nth)?.parse::<Ipv4Addr>().ok();
    let port = |k| field(words, k, nth)?.parse::<u16>().ok();
    Some(Tuple {
        src: SocketAddrV4::new(ip("src")?, port("sport")?),
        dst: SocketAddrV4::new(ip("dst")?, port("dport")?),
    })
}

/// Parses one line of `conntrack -L -p udp` (or the body of a `conntrack -E` event).
pub fn parse_line(line: &str) -> Option<Binding> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let udp = words.iter().position(|w| *w == "udp")?;
    // `udp 17 SECONDS src=…`: the number after the protocol number is the time left (absent in
    // DESTROY events).
    let seconds_left = words.get(udp + 2).and_then(|w| w.parse().ok()).unwrap_or(0);
    let orig = tuple(&words, 0)?;
    let reply = tuple(&words, 1)?;
    let replied = !words.contains(&"[UNREPLIED]");
    let (internal, external, remote, direction) = if reply.dst != orig.src {
        (orig.src, reply.dst, orig.dst, Opened::Outbound)
    } else if reply.src != orig.dst {
        (reply.src, orig.dst, orig.src, Opened::Inbound)
    } else {
        (orig.dst, orig.dst, orig.src, Opened::ToRouter)
    };
    Some(Binding {
        internal,
        external,
        remote,
        seconds_left,
        replied,
        direction,
    })
}

async fn conntrack(node: &Node, args: &[&str]) -> Result<String> {
    crate::preflight::require_program("conntrack")?;
    let (status, out, err) = node
        .output("conntrack", args, Duration::from_secs(10))
        .await?;
    match status {
        // `-D` exits 1 when nothing matched; that is not an error for us.
        Some(s) if s.success() || (args.first() == Some(&"-D") && s.code() == Some(1)) => Ok(out),
        _ => Err(Error::Io {
            what: format!(
                "conntrack {} in {}: {}",
                args.join(" "),
                node.name(),
                err.trim()
            ),
            source: std::io::Error::other("conntrack failed"),
        }),
    }
}

pub(crate) async fn nft(node: &Node, script: String) -> Result<()> {
    node.load_nft(script).await
}

/// The live UDP bindings of router `node`.
pub async fn list(node: &Node) -> Result<Vec<Binding>> {
    let out = conntrack(node, &["-L", "-p", "udp"]).await?;
    Ok(out.lines().filter_map(parse_line).collect())
}

/// Makes the router forget every binding of `internal` now, as a router reboot or a flaky
/// consumer NAT does to one phone; returns how many flows were dropped.
pub async fn expire(node: &Node, internal: SocketAddrV4) -> Result<usize> {
    let doomed: Vec<Binding> = list(node)
        .await?
        .into_iter()
        .filter(|b| b.internal == internal && b.direction != Opened::ToRouter)
        .collect();
    let ip = internal.ip().to_string();
    let port = internal.port().to_string();
    conntrack(
        node,
        &[
            "-D",
            "-p",
            "udp",
            "--orig-src",
            &ip,
            "--orig-port-src",
            &port,
        ],
    )
    .await?;
    conntrack(
        node,
        &[
            "-D",
            "-p",
            "udp",
            "--reply-src",
            &ip,
            "--reply-port-src",
            &port,
        ],
    )
    .await?;
    let mut script = String::new();
    let t = sim_nat::TABLE;
    for b in &doomed {
        let (ext, rip, rport) = (b.external.port(), b.remote.ip(), b.remote.port());
        // Deleting an absent element fails the whole batch, so each is its own command line
        // guarded by `add` first (add is idempotent, then delete always finds it).
        for (set, elem) in [
            ("fc", format!("{ext} : {ip} . {port}")),
            ("peers", format!("{ext} . {rip}")),
            ("out", format!("{ext} . {rip} . {rport}")),
            ("bound", format!("{ext}")),
        ] {
            let key = elem.split(" : ").next().unwrap_or(&elem).to_string();
            script.push_str(&format!(
                "add element ip {t} {set} {{ {elem} }}\ndelete element ip {t} {set} {{ {key} }}\n"
            ));
        }
    }
    if !script.is_empty() {
        // Sets that this behaviour does not use are absent: filter the script to present ones.
        let present = present_sets(node).await?;
        let script: String = script
            .lines()
            .filter(|l| present.iter().any(|s| l.contains(&format!(" {t} {s} {{"))))
            .map(|l| format!("{l}\n"))
            .collect();
        nft(node, script).await?;
    }
    Ok(doomed.len())
}

async fn present_sets(node: &Node) -> Result<Vec<&'static str>> {
    let (_, out, _) = node
        .output(
            "nft",
            &["list", "table", "ip", sim_nat::TABLE],
            Duration::from_secs(10),
        )
        .await?;
    Ok(["fc", "peers", "out", "bound"]
        .into_iter()
        .filter(|s| out.contains(&format!("set {s} {{")) || out.contains(&format!("map {s} {{")))
        .collect())
}

/// Forgets every binding, as a router reboot does.
pub async fn flush(node: &Node) -> Result<()> {
    conntrack(node, &["-F"]).await?;
    let t = sim_nat::TABLE;
    let script: String = present_sets(node)
        .await?
        .into_iter()
        .map(|s| {
            if s == "fc" {
                format!("flush map ip {t} fc\n")
            } else {
                format!("flush set ip {t} {s}\n")
            }
        })
        .collect();
    nft(node, script).await
}

/// What happened to a binding, as `conntrack -E` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingEvent {
    Created {
        at: SystemTime,
        binding: Binding,
    },
    /// The kernel removed it: on deletion at once, on expiry when conntrack's garbage collector
    /// gets to it (which may be seconds after the binding stopped working; the reference model
    /// in sim-nat gives the exact instant).
    Destroyed {
        at: SystemTime,
        binding: Binding,
    },
}

/// A running `conntrack -E` inside a router, collecting binding events.
pub struct BindingWatch {
    process: Process,
    started: SystemTime,
    /// The router's NAT behaviours, for the timeout in force when a binding last refreshed.
    history: NatHistory,
}

impl BindingWatch {
    /// Starts watching `node`'s UDP bindings; events before this call are not seen.
    pub async fn start(node: &Node) -> Result<Self> {
        crate::preflight::require_program("conntrack")?;
        let process = node
            .start(
                "conntrack",
                &["-E", "-p", "udp", "-e", "NEW,DESTROY", "-o", "timestamp"],
            )
            .await?;
        // conntrack subscribes to the netlink group before printing anything; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(BindingWatch {
            process,
            started: SystemTime::now(),
            history: node.nat_history(),
        })
    }

    /// The events seen so far, with the kernel's timestamps.
    pub fn events(&self) -> Vec<BindingEvent> {
        self.process
            .stdout()
            .lines()
            .filter_map(|l| {
                let b = parse_line(l)?;
                let at = event_time(l).unwrap_or(self.started);
                if l.contains("[NEW]") {
                    Some(BindingEvent::Created { at, binding: b })
                } else if l.contains("[DESTROY]") {
                    Some(BindingEvent::Destroyed { at, binding: b })
                } else {
                    None
                }
            })
            .collect()
    }

    /// Adds every event seen so far to `trace`, as reported by `router`: creations, and each
    /// expiry at the instant the binding really expired (its timeout after the last packet that
    /// refreshed it, read from `trace`'s captures at `router`) apart from the later moment
    /// conntrack noticed and removed it (see [`expiry`]).
    pub fn add_to(&self, trace: &mut crate::trace::Trace, router: &str) {
        let lines = expiry::lines(&self.events(), trace, router, &self.history.changes());
        for (at, text) in lines {
            trace.push_event(at, router, text);
        }
    }
}

/// The `[seconds.micros]` prefix `conntrack -E -o timestamp` puts on each event.
fn event_time(line: &str) -> Option<SystemTime> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    let (secs, micros) = inner.split_once('.')?;
    Some(UNIX_EPOCH + Duration::new(secs.parse().ok()?, micros.parse::<u32>().ok()? * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_flow_is_read_as_internal_to_external() {
        let b = parse_line(
            "udp      17 28 src=192.168.1.10 dst=203.0.113.10 sport=5060 dport=3478 \
             src=203.0.113.10 dst=203.0.113.1 sport=3478 dport=40000 [ASSURED] mark=0 use=1",
        )
        .unwrap();
        assert_eq!(b.internal, "192.168.1.10:5060".parse().unwrap());
        assert_eq!(b.external, "203.0.113.1:40000".parse().unwrap());
        assert_eq!(b.remote, "203.0.113.10:3478".parse().unwrap());
        assert_eq!(b.seconds_left, 28);
        assert!(b.replied);
        assert_eq!(b.direction, Opened::Outbound);
    }

    #[test]
    fn an_inbound_dnat_flow_and_a_poisoned_port_are_told_apart() {
        let dnat = parse_line(
            "udp 17 29 src=198.51.100.20 dst=203.0.113.1 sport=9 dport=5060 [UNREPLIED] \
             src=192.168.1.10 dst=198.51.100.20 sport=5060 dport=9 mark=0 use=1",
        )
        .unwrap();
        assert_eq!(dnat.direction, Opened::Inbound);
        assert_eq!(dnat.internal, "192.168.1.10:5060".parse().unwrap());
        assert!(!dnat.replied);
        let poison = parse_line(
            "udp 17 29 src=198.51.100.20 dst=203.0.113.1 sport=9 dport=4000 [UNREPLIED] \
             src=203.0.113.1 dst=198.51.100.20 sport=4000 dport=9 mark=0 use=1",
        )
        .unwrap();
        assert_eq!(poison.direction, Opened::ToRouter);
    }

    #[test]
    fn an_event_line_parses_without_a_timeout() {
        let e = parse_line(
            "[1700000000.123456]\t [DESTROY] udp      17 src=192.168.1.10 dst=203.0.113.10 \
             sport=5060 dport=3478 src=203.0.113.10 dst=203.0.113.1 sport=3478 dport=5060",
        )
        .unwrap();
        assert_eq!(e.seconds_left, 0);
        assert_eq!(e.internal, "192.168.1.10:5060".parse().unwrap());
    }
}
