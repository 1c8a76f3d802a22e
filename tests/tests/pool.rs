//! A pooled topology is reset for its next user, and nothing of the previous user leaks into it.

use anyhow::{ensure, Context, Result};
use harness::shapes::{self, SERVER};
use harness::topology::Pool;
use sim_nat::NatType;
use tests::{recv_within, require_kernel, sa, DELIVERY};

/// The learnt full-cone map of `home`, as nft lists it.
async fn fc_map(topo: &harness::Topology) -> Result<String> {
    let (_, out, err) = topo
        .node("home")?
        .output(
            "nft",
            &["list", "map", "ip", sim_nat::TABLE, "fc"],
            std::time::Duration::from_secs(5),
        )
        .await?;
    ensure!(err.trim().is_empty(), "nft list map: {err}");
    Ok(out)
}

/// Alice's public face as the server sees it, from one datagram sent from 192.168.1.10:4000;
/// both sockets are closed again when it returns.
async fn alice_seen_by_server(topo: &harness::Topology) -> Result<std::net::SocketAddr> {
    let (alice, server) = (topo.node("alice")?, topo.node("server")?);
    let from_alice = alice.udp_bind(sa("192.168.1.10", 4000)).await?;
    let at_server = server.udp_bind(sa(SERVER, 3478)).await?;
    from_alice.send_to(b"hello", sa(SERVER, 3478)).await?;
    let (_, seen) = recv_within(&at_server, DELIVERY)
        .await
        .context("alice → server")?;
    Ok(seen)
}

/// A pool, the spec of a home LAN behind `nat`, a topology taken for it and its run id.
async fn first_user(
    nat: NatType,
) -> Result<(Pool, harness::TopologySpec, harness::Topology, String)> {
    let pool = Pool::new();
    let spec = shapes::home_lan(nat).spec().clone();
    let topo = pool.take(spec.clone()).await?;
    let run = topo.run_id().to_string();
    Ok((pool, spec, topo, run))
}

/// The previous user leaves a NAT binding, the entry its full-cone map learnt, and a process
/// running in alice; after the reset the same namespaces come back with none of them, and the
/// NAT still works.
#[tokio::test]
async fn a_reused_topology_keeps_no_binding_learnt_entry_or_process_of_its_previous_user(
) -> Result<()> {
    require_kernel!();
    let (pool, spec, topo, first_run) = first_user(NatType::FullCone).await?;
    alice_seen_by_server(&topo).await?;
    let home = topo.node("home")?;
    ensure!(
        !harness::bindings::list(home).await?.is_empty(),
        "the first user's packet left no binding to catch"
    );
    let learnt = fc_map(&topo).await?;
    ensure!(
        learnt.contains("4000"),
        "the full-cone map learnt nothing: {learnt}"
    );
    let sleeper = topo.node("alice")?.start("sleep", &["30"]).await?;
    let pid = sleeper.pid();
    // A user that loses track of its process.
    std::mem::forget(sleeper);

    let reset = pool.give_back(topo).await?;
    ensure!(
        reset.killed.contains(&("alice".to_string(), pid)),
        "the reset did not find the leftover process: {reset:?}"
    );
    let topo = pool.take(spec).await?;
    ensure!(
        topo.run_id() == first_run,
        "the pooled topology was not reused"
    );
    let home = topo.node("home")?;
    let left = harness::bindings::list(home).await?;
    ensure!(left.is_empty(), "bindings survived the reset: {left:?}");
    let learnt = fc_map(&topo).await?;
    ensure!(
        !learnt.contains("4000"),
        "the full-cone map kept its entry: {learnt}"
    );
    ensure!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).is_err(),
        "process {pid} still runs in the namespace"
    );
    // Still a working NAT.
    let from = alice_seen_by_server(&topo).await?;
    ensure!(from == sa("203.0.113.1", 4000), "alice seen as {from}");
    Ok(())
}

/// A socket the previous user still holds cannot be taken back from it: the pool refuses the
/// topology, and the next user gets a new one.
#[tokio::test]
async fn a_socket_still_held_by_the_previous_user_stops_the_reuse() -> Result<()> {
    require_kernel!();
    let (pool, spec, topo, first_run) = first_user(NatType::PortRestrictedCone).await?;
    let held = topo
        .node("alice")?
        .udp_bind(sa("192.168.1.10", 5060))
        .await?;
    let refused = pool.give_back(topo).await;
    let err = refused.err().context("a held socket went unnoticed")?;
    ensure!(
        err.to_string().contains("socket") && err.to_string().contains("alice"),
        "unexpected refusal: {err}"
    );
    ensure!(pool.idle() == 0, "the refused topology was kept");
    drop(held);
    let next = pool.take(spec).await?;
    ensure!(next.run_id() != first_run, "the refused topology came back");
    Ok(())
}

/// What `cmd` prints in `node`; fails on anything on stderr.
async fn shows(topo: &harness::Topology, node: &str, cmd: &[&str]) -> Result<String> {
    let (_, out, err) = topo
        .node(node)?
        .output(cmd[0], &cmd[1..], std::time::Duration::from_secs(5))
        .await?;
    ensure!(err.trim().is_empty(), "{cmd:?} in {node}: {err}");
    Ok(out)
}

const UDP_TIMEOUT: &str = "net/netfilter/nf_conntrack_udp_timeout";

/// `home`'s UDP conntrack timeout, as its sysctl reads.
async fn read_timeout(topo: &harness::Topology) -> Result<String> {
    Ok(topo
        .node("home")?
        .run(|| std::fs::read_to_string(format!("/proc/sys/{UDP_TIMEOUT}")))
        .await??)
}

/// A previous user shortens the router's conntrack timeout and leaves learnt neighbours and
/// bridge forwarding entries behind; the next one adds a chain to its NAT table by hand. Each
/// reset undoes it: the timeout is the spec's, the first packet resolves its neighbour (and the
/// bridge its port) again as on a fresh topology, and the table is as loaded.
#[tokio::test]
async fn a_reused_topology_keeps_no_sysctl_neighbour_or_hand_made_rule_of_its_previous_user(
) -> Result<()> {
    require_kernel!();
    let (pool, spec, topo, first_run) = first_user(NatType::PortRestrictedCone).await?;
    let table = sim_nat::TABLE;
    let list_table = ["nft", "-t", "list", "table", "ip", table];
    let loaded = shows(&topo, "home", &list_table).await?;
    let timeout = read_timeout(&topo).await?;
    alice_seen_by_server(&topo).await?;
    let neighbours = shows(&topo, "alice", &["ip", "-4", "neigh", "show"]).await?;
    ensure!(
        neighbours.contains("192.168.1.1"),
        "alice learnt no neighbour to forget: {neighbours}"
    );
    topo.node("home")?.sysctl(UDP_TIMEOUT, "7").await?;
    let fdb = ["bridge", "fdb", "show", "br", "inet", "dynamic"];
    let learnt = shows(&topo, "internet", &fdb).await?;
    ensure!(
        !learnt.trim().is_empty(),
        "the internet bridge learnt no address to forget"
    );

    pool.give_back(topo).await?;
    let topo = pool.take(spec.clone()).await?;
    ensure!(
        topo.run_id() == first_run,
        "the pooled topology was not reused"
    );
    let now = read_timeout(&topo).await?;
    ensure!(
        now == timeout,
        "udp timeout {now:?}, the spec says {timeout:?}"
    );
    for node in ["alice", "home", "internet", "server"] {
        let left = shows(&topo, node, &["ip", "-4", "neigh", "show"]).await?;
        ensure!(left.trim().is_empty(), "{node} kept neighbours: {left}");
    }
    let left = shows(&topo, "internet", &fdb).await?;
    ensure!(
        left.trim().is_empty(),
        "the bridge kept learnt addresses: {left}"
    );
    let from = alice_seen_by_server(&topo).await?;
    ensure!(from == sa("203.0.113.1", 4000), "alice seen as {from}");

    shows(
        &topo,
        "home",
        &["nft", "add", "chain", "ip", table, "by_hand"],
    )
    .await?;
    pool.give_back(topo).await?;
    let topo = pool.take(spec).await?;
    ensure!(
        topo.run_id() == first_run,
        "the pooled topology was not reused"
    );
    let listed = shows(&topo, "home", &list_table).await?;
    ensure!(
        listed == loaded,
        "the NAT table is not as loaded:\n{listed}\nexpected:\n{loaded}"
    );
    let from = alice_seen_by_server(&topo).await?;
    ensure!(from == sa("203.0.113.1", 4000), "alice seen as {from}");
    Ok(())
}

/// A topology given back on one runtime serves a test on another (each catalogue test has its
/// own): its netlink connections are reopened there. Asked for the same wiring with another NAT,
/// the pool hands it over with that NAT's table, exactly as a fresh bring-up loads it.
#[test]
fn a_topology_moves_to_the_next_runtime_and_takes_on_the_next_users_nat() -> Result<()> {
    require_kernel!();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let pool = Pool::new();
    let first_run = runtime()?.block_on(async {
        let topo = pool
            .take(shapes::home_lan(NatType::FullCone).spec().clone())
            .await?;
        let run = topo.run_id().to_string();
        alice_seen_by_server(&topo).await?;
        pool.give_back(topo).await?;
        anyhow::Ok(run)
    })?;
    runtime()?.block_on(async {
        let symmetric = shapes::home_lan(NatType::Symmetric).spec().clone();
        let topo = pool.take(symmetric.clone()).await?;
        ensure!(
            topo.run_id() == first_run,
            "the pooled topology was not reused"
        );
        let list_table = ["nft", "-t", "list", "table", "ip", sim_nat::TABLE];
        let listed = shows(&topo, "home", &list_table).await?;
        let fresh = harness::Topology::build(symmetric).await?;
        let expected = shows(&fresh, "home", &list_table).await?;
        ensure!(
            listed == expected,
            "the reused router's table:\n{listed}\na fresh symmetric one:\n{expected}"
        );
        let seen = alice_seen_by_server(&topo).await?;
        ensure!(
            seen.ip() == sa("203.0.113.1", 0).ip(),
            "alice seen as {seen}"
        );
        // Its netlink works on this runtime: the reset flushes neighbours through it.
        pool.give_back(topo).await?;
        anyhow::Ok(())
    })?;
    ensure!(pool.counts().renatted == 1, "{:?}", pool.counts());
    Ok(())
}

const TCP_TIMEOUT: &str = "net/netfilter/nf_conntrack_tcp_timeout_established";

/// `home`'s conntrack sysctl `path`, as read there.
async fn read_home(topo: &harness::Topology, path: &'static str) -> Result<String> {
    Ok(topo
        .node("home")?
        .run(move || std::fs::read_to_string(format!("/proc/sys/{path}")))
        .await??
        .trim()
        .to_string())
}

/// A behaviour that sets a conntrack timeout the next one does not name (`tcp-timeout-secs`),
/// and a `set-nat` on a router that had no NAT, both leave their sysctls behind unless the reset
/// puts back what the router had before any behaviour: the next user would see TCP bindings
/// expire after 17 s, or UDP ones after 9 s, on a router whose spec says neither.
#[tokio::test]
async fn a_reused_router_keeps_no_conntrack_timeout_of_an_earlier_behaviour_or_set_nat(
) -> Result<()> {
    require_kernel!();
    let pool = Pool::new();
    let plain = shapes::home_lan(NatType::PortRestrictedCone).spec().clone();
    let mut with_tcp = plain.clone();
    with_tcp.routers[0]
        .nat
        .as_mut()
        .expect("a NAT")
        .tcp_timeout_secs = Some(17);
    let fresh = harness::Topology::build(plain.clone()).await?;
    let (fresh_tcp, fresh_udp) = (
        read_home(&fresh, TCP_TIMEOUT).await?,
        read_home(&fresh, UDP_TIMEOUT).await?,
    );
    drop(fresh);

    let topo = pool.take(with_tcp).await?;
    let first_run = topo.run_id().to_string();
    ensure!(
        read_home(&topo, TCP_TIMEOUT).await? == "17",
        "tcp-timeout-secs not applied"
    );
    pool.give_back(topo).await?;
    let topo = pool.take(plain).await?;
    ensure!(
        topo.run_id() == first_run,
        "the pooled topology was not reused"
    );
    let tcp = read_home(&topo, TCP_TIMEOUT).await?;
    ensure!(
        tcp == fresh_tcp,
        "TCP established timeout {tcp}, a fresh router of this spec has {fresh_tcp}"
    );
    ensure!(read_home(&topo, UDP_TIMEOUT).await? == fresh_udp);
    drop(topo);

    let mut no_nat = shapes::home_lan(NatType::FullCone).spec().clone();
    no_nat.routers[0].nat = None;
    let topo = pool.take(no_nat.clone()).await?;
    let run = topo.run_id().to_string();
    let before = read_home(&topo, UDP_TIMEOUT).await?;
    let mut short = sim_nat::NatBehaviour::from(NatType::Symmetric);
    short.udp_timeout_secs = 9;
    topo.node("home")?.set_nat(&short).await?;
    ensure!(
        read_home(&topo, UDP_TIMEOUT).await? == "9",
        "set-nat not applied"
    );
    pool.give_back(topo).await?;
    let topo = pool.take(no_nat).await?;
    ensure!(topo.run_id() == run, "the pooled topology was not reused");
    let udp = read_home(&topo, UDP_TIMEOUT).await?;
    ensure!(
        udp == before,
        "UDP timeout {udp} after a reset, {before} before the set-nat"
    );
    Ok(())
}
