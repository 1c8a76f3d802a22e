//! Checks that fail early with the one line a user needs: which privilege or package is missing.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Debian packages that provide the programs the harness and its scenarios run.
const PACKAGES: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("stun", "stun-client"),
    ("stund", "stun-server"),
    ("sipp", "sip-tester"),
    ("turnserver", "coturn"),
    ("turnutils_natdiscovery", "coturn"),
    ("turnutils_uclient", "coturn"),
    ("kamailio", "kamailio"),
    ("rtpengine", "rtpengine-daemon"),
    ("baresip", "baresip-core"),
    ("conntrack", "conntrack"),
    ("tshark", "tshark"),
    ("tcpdump", "tcpdump"),
    ("iptables", "iptables"),
    ("sngrep", "sngrep"),
    ("chromium", "chromium"),
];

/// The Debian package that provides `program`, where known.
pub fn package_of(program: &str) -> &'static str {
    PACKAGES
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, pkg)| *pkg)
        .unwrap_or("(unknown: search with `apt-file search`)")
}

/// Where `program` is on `PATH` (plus the sbin directories a non-login root shell may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file());
    found
}

/// The path of `program`, or an error naming the package to install.
pub fn require_program(program: &str) -> Result<PathBuf> {
    find_program(program).ok_or_else(|| Error::MissingProgram {
        program: program.to_string(),
        package: package_of(program),
    })
}

/// Root (or the capabilities namespaces and nftables need), and `nft`.
pub fn check() -> Result<()> {
    if let crate::rootless::Mode::Unprivileged(why) = crate::rootless::enter() {
        if !has_net_admin() {
            return Err(Error::NotPrivileged(format!(
                "network namespaces and nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN; {why}"
            )));
        }
    }
    require_program("nft")?;
    Ok(())
}

fn has_net_admin() -> bool {
    // CapEff bit 12 is CAP_NET_ADMIN, bit 21 CAP_SYS_ADMIN.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0 && caps & (1 << 21) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let e = Error::MissingProgram {
            program: "sipp".into(),
            package: package_of("sipp"),
        };
        assert!(
            e.to_string().contains("apt-get install -y sip-tester"),
            "{e}"
        );
    }
}
