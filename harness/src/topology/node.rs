//! One node of a running topology: a namespace plus what runs in it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sim_nat::{NatBehaviour, RouterPorts};

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::process::{self, Process};
use crate::topology::nft::{self, Syntax};
use crate::topology::timeline::{Recorder, Stage};

/// What a node is in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The public core: a bridge for every public host and router, and the sink for leaked
    /// private addresses.
    Internet,
    /// A router owning a LAN, NAT or not.
    Router,
    /// An end host.
    Host,
}

/// A namespace of the topology and the tasks and programs started in it.
pub struct Node {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) addrs: Vec<Ipv4Addr>,
    pub(crate) router_ports: Option<RouterPorts>,
    pub(crate) nat: Mutex<Option<NatBehaviour>>,
    /// Every NAT behaviour applied and when its conntrack timeouts took effect, so a binding's
    /// expiry can be computed with the timeout in force at its last refresh.
    nat_history: NatHistory,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The emulated consumer ALG in front of this router's LAN, when its NAT asks for one.
    alg: tokio::sync::Mutex<Option<crate::alg::EmulatedAlg>>,
    /// The NAT table as `nft -t list table` printed it right after the spec's behaviour was
    /// loaded, for a pool reset to prove the table is unchanged before it only empties the
    /// learnt sets instead of reloading it.
    pristine_nft: Mutex<Option<String>>,
    /// The conntrack sysctls a NAT may write ([`sim_nat::CONNTRACK_SYSCTLS`]) as they were
    /// before the first NAT behaviour was applied: a reset, or a reuse for another behaviour,
    /// puts back those the behaviour in force does not set itself.
    pristine_ct: Mutex<Option<Vec<(String, String)>>>,
    /// The segment bridge this node owns, if its segment has one (set at bring-up): a reset
    /// empties its learnt forwarding table and puts back its netfilter sysctl.
    pub(crate) bridge: std::sync::OnceLock<&'static str>,
    pub(crate) netlink: Netlink,
    // Last: dropping the namespace ends its worker thread, after the tasks using it are gone.
    pub(crate) ns: Netns,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("ns", &self.ns.name())
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl Node {
    /// Sysctls every node gets: IPv6 would add router solicitations and DAD to every capture
    /// (SIP-behind-NAT is v4), and a router forwarding back out of the interface a packet came
    /// in on (the internet core between two public hosts on one segment) would send ICMP
    /// redirects into every capture. `(path, value, optional)`.
    pub(crate) const BASE_SYSCTLS: [(&'static str, &'static str, bool); 4] = [
        ("net/ipv6/conf/all/disable_ipv6", "1", false),
        ("net/ipv6/conf/default/disable_ipv6", "1", false),
        ("net/ipv4/conf/all/send_redirects", "0", false),
        ("net/ipv4/conf/default/send_redirects", "0", false),
    ];

    /// On a node that owns a segment bridge: bridged frames must not cross its iptables/nft
    /// hooks twice (optional: the key exists only while `br_netfilter` is loaded).
    pub(crate) const BRIDGE_SYSCTL: (&'static str, &'static str, bool) =
        ("net/bridge/bridge-nf-call-iptables", "0", true);

    /// A namespace and its netlink connection, `lo` up; nothing else yet.
    pub(crate) async fn create(
        ns_name: String,
        name: &str,
        role: Role,
        rec: &Recorder,
    ) -> Result<Self> {
        // On the blocking pool, so the namespaces of one topology are made side by side.
        let ns = rec
            .time(Stage::Namespace, name, async {
                tokio::task::spawn_blocking(move || Netns::create(&ns_name))
                    .await
                    .map_err(|e| Error::Topology(format!("namespace creation panicked: {e}")))?
            })
            .await?;
        let netlink = rec
            .time(Stage::Netlink, name, async {
                let netlink = Netlink::open(&ns).await?;
                netlink.up("lo", None).await?;
                Ok::<_, Error>(netlink)
            })
            .await?;
        Ok(Node {
            name: name.to_string(),
            role,
            addrs: Vec::new(),
            router_ports: None,
            nat: Mutex::new(None),
            nat_history: NatHistory::default(),
            tasks: Mutex::new(Vec::new()),
            alg: tokio::sync::Mutex::new(None),
            pristine_nft: Mutex::new(None),
            pristine_ct: Mutex::new(None),
            bridge: std::sync::OnceLock::new(),
            netlink,
            ns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The namespace name, for `ip netns exec NAME …`.
    pub fn ns_name(&self) -> &str {
        self.ns.name()
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The node's addresses; for a router, its WAN address first, then its LAN address.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    /// The node's first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }

    /// The NAT behaviour currently applied, for a NAT router.
    pub fn nat(&self) -> Option<NatBehaviour> {
        self.nat.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes `/proc/sys/PATH` inside this node's namespace (per-namespace `net.*` sysctls).
    pub async fn sysctl(&self, path: &str, value: &str) -> Result<()> {
        let p = format!("/proc/sys/{path}");
        let v = value.to_string();
        self.ns
            .run(move || std::fs::write(p, v))
            .await?
            .map_err(|source| Error::Sysctl {
                ns: self.ns.name().to_string(),
                path: path.to_string(),
                source,
            })
    }

    /// Writes several `/proc/sys` entries in one trip to the namespace's worker. An entry marked
    /// optional may be missing from this kernel.
    pub(crate) async fn sysctls<P, V>(&self, entries: &[(P, V, bool)]) -> Result<()>
    where
        P: AsRef<str>,
        V: AsRef<str>,
    {
        let owned: Vec<(String, String, bool)> = entries
            .iter()
            .map(|(p, v, o)| (p.as_ref().to_string(), v.as_ref().to_string(), *o))
            .collect();
        self.ns
            .run(move || {
                for (path, value, optional) in owned {
                    let file = format!("/proc/sys/{path}");
                    // Rewriting an unchanged value is not free: `disable_ipv6` spins on RTNL,
                    // which another namespace's teardown may hold for 100 ms.
                    if std::fs::read_to_string(&file).is_ok_and(|v| v.trim() == value) {
                        continue;
                    }
                    match std::fs::write(file, value) {
                        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err((path, source)),
                        Ok(()) => {}
                    }
                }
                Ok(())
            })
            .await?
            .map_err(|(path, source)| Error::Sysctl {
                ns: self.ns.name().to_string(),
                path,
                source,
            })
    }

    /// A UDP socket bound inside this node (equivalent to `ip netns exec NS` + `bind`).
    ///
    /// A port just released (a STUN query on the phone's SIP port, then the phone) can still be
    /// held for a moment by a child another thread of this process is forking: between `fork`
    /// and `exec` the child holds a copy of every descriptor, close-on-exec or not. So `EADDRINUSE`
    /// is retried for up to half a second before it is reported.
    pub async fn udp_bind(&self, addr: SocketAddr) -> Result<tokio::net::UdpSocket> {
        let mut attempt = 0;
        let sock = loop {
            let r = self
                .ns
                .run(move || -> std::io::Result<std::net::UdpSocket> {
                    let s = std::net::UdpSocket::bind(addr)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .await?;
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                other => break other,
            }
        }
        .map_err(Error::io(format!("bind udp {addr} in {}", self.name)))?;
        tokio::net::UdpSocket::from_std(sock).map_err(Error::io("register udp socket"))
    }

    /// A TCP listener bound inside this node.
    pub async fn tcp_listen(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
        let l = self
            .ns
            .run(move || -> std::io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .await?
            .map_err(Error::io(format!("listen tcp {addr} in {}", self.name)))?;
        tokio::net::TcpListener::from_std(l).map_err(Error::io("register tcp listener"))
    }

    /// Spawns a task on the current runtime that is aborted when the topology is torn down.
    ///
    /// The task runs on the caller's runtime; its sockets belong to this node because they were
    /// created with [`Node::udp_bind`] (or inside [`Node::run`]).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let h = tokio::spawn(fut);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h.abort_handle());
        h
    }

    /// Runs a closure on the node's worker thread, i.e. inside its namespace: for code that
    /// creates its own sockets.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.ns.run(f).await
    }

    /// Starts an external program inside this node; stdout/stderr are kept.
    pub async fn start(&self, program: &str, args: &[&str]) -> Result<Process> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.start_command(cmd).await
    }

    /// Starts a program with its standard input open, for [`Process::write_line`].
    pub async fn start_interactive(&self, program: &str, args: &[&str]) -> Result<Process> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.spawn_in(cmd, true).await
    }

    /// Starts a prepared command inside this node (its env, cwd … are kept).
    pub async fn start_command(&self, cmd: Command) -> Result<Process> {
        self.spawn_in(cmd, false).await
    }

    async fn spawn_in(&self, mut cmd: Command, stdin: bool) -> Result<Process> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        process::prepare(&mut cmd);
        if stdin {
            cmd.stdin(std::process::Stdio::piped());
        }
        let child = self
            .ns
            .run(move || cmd.spawn())
            .await?
            .map_err(|e| process::spawn_error(&program, e))?;
        Ok(Process::from_child(&program, child))
    }

    /// Runs a program to completion inside this node, killing it after `timeout`.
    pub async fn output(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<(Option<std::process::ExitStatus>, String, String)> {
        let mut p = self.start(program, args).await?;
        let status = p.wait_timeout(timeout).await;
        p.kill();
        Ok((status, p.stdout(), p.stderr()))
    }

    /// Applies (or replaces, mid-scenario) this router's NAT behaviour.
    pub async fn set_nat(&self, nat: &NatBehaviour) -> Result<()> {
        self.apply_nat(nat, &Recorder::new()).await
    }

    /// [`Node::set_nat`], timing the sysctls and the ruleset into `rec`.
    pub(crate) async fn apply_nat(&self, nat: &NatBehaviour, rec: &Recorder) -> Result<()> {
        let ports = self.router_ports.clone().ok_or_else(|| {
            Error::Topology(format!("`{}` is not a router; only routers NAT", self.name))
        })?;
        let rules = sim_nat::render(nat, &ports)?;
        self.record_pristine_ct().await?;
        self.nat_sysctls(&rules, rec).await?;
        // Conntrack applies a timeout sysctl from the next packet on.
        let since = SystemTime::now();
        let first = self.nat.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        let prelude = if first {
            rules.prelude_fresh.clone()
        } else {
            rules.prelude.clone()
        };
        let steps = [
            (Syntax::Text, prelude),
            (Syntax::Json, rules.json_string()),
            (Syntax::Text, rules.epilogue.clone()),
        ];
        rec.time(Stage::Nft, &self.name, async {
            for (syntax, script) in steps {
                nft::apply(&self.ns, syntax, script).await?;
            }
            Ok::<_, Error>(())
        })
        .await?;
        // The emulated ALG lives outside the nft table (iptables NFQUEUE rules + a reader), so a
        // behaviour change stops the old one and starts what the new behaviour asks for.
        let mut alg = self.alg.lock().await;
        if let Some(old) = alg.take() {
            old.stop().await;
        }
        if let sim_nat::SipAlg::Emulated(faults) = &nat.sip_alg {
            *alg = Some(crate::alg::EmulatedAlg::start(self, faults.iter().copied()).await?);
        }
        drop(alg);
        *self.nat.lock().unwrap_or_else(|e| e.into_inner()) = Some(nat.clone());
        self.nat_history
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((since, nat.clone()));
        Ok(())
    }

    /// Writes the conntrack sysctls `rules` ask for (those already at their value are only read).
    async fn nat_sysctls(&self, rules: &sim_nat::Ruleset, rec: &Recorder) -> Result<()> {
        let sysctls: Vec<(&str, &str, bool)> = rules
            .sysctls
            .iter()
            .map(|(p, v)| (p.as_str(), v.as_str(), false))
            .collect();
        rec.time(Stage::NatSysctls, &self.name, self.sysctls(&sysctls))
            .await
    }

    /// Reads the NAT-owned conntrack sysctls, once: at bring-up, before any behaviour or user
    /// changed them. A key this kernel does not have yet (conntrack not loaded) is left out.
    async fn record_pristine_ct(&self) -> Result<()> {
        if self.role != Role::Router
            || self
                .pristine_ct
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            return Ok(());
        }
        let values = self
            .ns
            .run(|| {
                sim_nat::CONNTRACK_SYSCTLS
                    .iter()
                    .filter_map(|k| {
                        let v = std::fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
                        Some((k.to_string(), v.trim().to_string()))
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        *self.pristine_ct.lock().unwrap_or_else(|e| e.into_inner()) = Some(values);
        Ok(())
    }

    /// The conntrack sysctls as `nat` (or no NAT) wants them after a reset: the recorded
    /// pristine values, overridden by those the behaviour sets.
    fn ct_sysctls_for(&self, nat: Option<&NatBehaviour>) -> Vec<(String, String, bool)> {
        let mut want: Vec<(String, String)> = self
            .pristine_ct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        for (k, v) in nat.map(sim_nat::sysctls).unwrap_or_default() {
            match want.iter_mut().find(|(w, _)| *w == k) {
                Some(slot) => slot.1 = v,
                None => want.push((k, v)),
            }
        }
        want.into_iter().map(|(k, v)| (k, v, false)).collect()
    }

    /// Puts back `nat` (the spec's behaviour, or none) as fresh as at bring-up: the learnt sets
    /// and maps emptied (the whole table reloaded when it is not provably as loaded), the
    /// emulated ALG restarted, the history begun again.
    pub(crate) async fn restore_nat(
        &self,
        nat: Option<&NatBehaviour>,
        rec: &Recorder,
    ) -> Result<()> {
        self.nat_history
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Read and compared first; written only where a user, a `set-nat` or an earlier
        // behaviour left another value.
        rec.time(
            Stage::NatSysctls,
            &self.name,
            self.sysctls(&self.ct_sysctls_for(nat)),
        )
        .await?;
        match nat {
            Some(nat) => {
                if self.nat().as_ref() == Some(nat) && self.flush_learnt(nat, rec).await? {
                    return Ok(());
                }
                self.apply_nat(nat, rec).await?;
                let listing = rec
                    .time(Stage::Nft, &self.name, self.list_nat_table())
                    .await?;
                *self.pristine_nft.lock().unwrap_or_else(|e| e.into_inner()) = Some(listing);
                Ok(())
            }
            None => {
                if self.nat().is_some() {
                    let t = sim_nat::TABLE;
                    self.load_nft(format!("add table ip {t}\ndelete table ip {t}\n"))
                        .await?;
                    if let Some(old) = self.alg.lock().await.take() {
                        old.stop().await;
                    }
                    *self.nat.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Ok(())
            }
        }
    }

    /// Remembers the NAT table as loaded now as the one later resets compare against.
    pub(crate) async fn record_pristine_nat(&self) -> Result<()> {
        self.record_pristine_ct().await?;
        if self.nat().is_some() {
            let listing = self.list_nat_table().await?;
            *self.pristine_nft.lock().unwrap_or_else(|e| e.into_inner()) = Some(listing);
        }
        Ok(())
    }

    /// Equivalent to `nft -t list table ip TABLE`: the table without set elements.
    async fn list_nat_table(&self) -> Result<String> {
        nft::run_terse(&self.ns, format!("list table ip {}\n", sim_nat::TABLE)).await
    }

    /// The fast reset of a NAT table still holding `nat`: in one libnftables call, lists the
    /// table (tersely: rules, sets and maps without their elements) and empties every learnt set
    /// and map. True when the listing matched the one made right after loading, i.e. emptying
    /// the sets made the table as fresh as a reload would; false (the caller reloads) when the
    /// table was changed by hand, when no listing was recorded, or when a rule keeps state a
    /// listing does not show (`numgen inc`'s counter, `limit`'s tokens).
    async fn flush_learnt(&self, nat: &NatBehaviour, rec: &Recorder) -> Result<bool> {
        let Some(pristine) = self
            .pristine_nft
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(false);
        };
        let Some(ports) = self.router_ports.clone() else {
            return Ok(false);
        };
        let rules = sim_nat::render(nat, &ports)?;
        let json = rules.json_string();
        if json.contains("\"numgen\"") || json.contains("\"limit\"") {
            return Ok(false);
        }
        // Verified, not trusted: a user may have written them; rewritten only when changed.
        self.nat_sysctls(&rules, rec).await?;
        let t = sim_nat::TABLE;
        let mut script = format!("list table ip {t}\nflush map ip {t} fc\n");
        for set in learnt_sets(&rules) {
            script.push_str(&format!("flush set ip {t} {set}\n"));
        }
        let since = SystemTime::now();
        let listed = rec
            .time(Stage::Nft, &self.name, nft::run_terse(&self.ns, script))
            .await;
        match listed {
            Ok(listing) if listing == pristine => {}
            _ => return Ok(false),
        }
        self.restart_alg().await?;
        self.nat_history
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((since, nat.clone()));
        Ok(true)
    }

    /// Stops the emulated ALG, if any, and starts the one the current NAT asks for, on the
    /// calling runtime, with none of the old one's state.
    pub(crate) async fn restart_alg(&self) -> Result<()> {
        let mut alg = self.alg.lock().await;
        if let Some(old) = alg.take() {
            old.stop().await;
        }
        if let Some(sim_nat::SipAlg::Emulated(faults)) = self.nat().map(|n| n.sip_alg) {
            *alg = Some(crate::alg::EmulatedAlg::start(self, faults.iter().copied()).await?);
        }
        Ok(())
    }

    /// Equivalent to `ip netns exec NS nft -f -` with `script` on stdin, loaded in-process.
    pub(crate) async fn load_nft(&self, script: String) -> Result<()> {
        nft::apply(&self.ns, Syntax::Text, script).await
    }

    /// The NAT behaviours this router has had, shared: later changes show up in the copy.
    pub fn nat_history(&self) -> NatHistory {
        self.nat_history.clone()
    }

    pub(crate) fn abort_tasks(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// The dynamic sets a ruleset declares besides the `fc` map of its prelude (the sets a router
/// learns into: `peers`, `out`, `bound`).
fn learnt_sets(rules: &sim_nat::Ruleset) -> Vec<String> {
    use nftables::schema::{NfCmd, NfListObject, NfObject};
    rules
        .json
        .objects
        .iter()
        .filter_map(|o| match o {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Set(set))) => Some(set.name.to_string()),
            _ => None,
        })
        .collect()
}

/// A router's NAT behaviours over time: each with the instant its timeouts took effect.
#[derive(Debug, Clone, Default)]
pub struct NatHistory(Arc<Mutex<Vec<(SystemTime, NatBehaviour)>>>);

impl NatHistory {
    /// Each behaviour and when it took effect, oldest first.
    pub fn changes(&self) -> Vec<(SystemTime, NatBehaviour)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
