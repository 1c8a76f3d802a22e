//! Build: the lab's namespaces, links, addresses and NAT rulesets, then what watches them — a
//! capture on every link and conntrack's event stream in every NAT router.

use std::path::PathBuf;

use crate::bindings::BindingWatch;
use crate::capture::Capture;
use crate::error::Result;
use crate::scenario::Scenario;
use crate::topology::{Pool, Role, Topology};

/// The topology of a scenario, up, and the directory its commands' files go in.
pub(in crate::scenario) struct Lab {
    pub topo: Topology,
    pub files: FilesDir,
}

/// Brings `s`'s topology up (or takes one of its shape from `pool`), after refusing what this
/// process's privileges cannot build.
pub(in crate::scenario) async fn build(s: &Scenario, pool: Option<&Pool>) -> Result<Lab> {
    let kernel_helper = s.topology.routers.iter().find(|r| {
        r.nat
            .as_ref()
            .is_some_and(|n| n.sip_alg == sim_nat::SipAlg::Kernel)
    });
    if let Some(r) = kernel_helper {
        if let Some(why) = crate::rootless::limits(crate::rootless::Feature::KernelSipHelper) {
            return Err(crate::Error::NotPrivileged(format!(
                "router `{}` uses the kernel SIP helper, but {why}",
                r.name
            )));
        }
    }
    let topo = match pool {
        Some(pool) => pool.take(s.topology.clone()).await?,
        None => Topology::build(s.topology.clone()).await?,
    };
    let files = FilesDir(super::command::files_root(&topo));
    Ok(Lab { topo, files })
}

/// Whether a run of `s` may give its topology back to a pool: not when it runs commands of the
/// user's own, which may change what a reset neither undoes nor checks (links, qdiscs, tables of
/// their own in a host).
pub(in crate::scenario) fn reusable(s: &Scenario) -> bool {
    !s.file
        .components
        .iter()
        .any(|c| matches!(c.as_ref(), crate::scenario::file::Component::Command { .. }))
}

/// Removes the run's files directory when dropped, whichever way the run ends.
pub(in crate::scenario) struct FilesDir(PathBuf);

impl Drop for FilesDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What watches the lab while it runs.
pub(in crate::scenario) struct Watching {
    pub capture: Capture,
    /// `conntrack -E` in each NAT router, by router (none without the `conntrack` program).
    pub watches: Vec<(String, BindingWatch)>,
}

/// Starts capturing on every link of `topo` and watching every NAT router's bindings.
pub(in crate::scenario) async fn watch(topo: &Topology) -> Result<Watching> {
    let capture = Capture::start(topo).await?;
    let mut watches = Vec::new();
    if crate::preflight::find_program("conntrack").is_some() {
        for n in topo
            .nodes()
            .filter(|n| n.role() == Role::Router && n.nat().is_some())
        {
            watches.push((n.name().to_string(), BindingWatch::start(n).await?));
        }
    }
    Ok(Watching { capture, watches })
}
