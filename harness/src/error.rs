use std::io;

/// Everything that can go wrong building or running a topology, each with the fix a user needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces, veths and nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN.
    #[error(
        "{0}: run as root (or with CAP_NET_ADMIN and CAP_SYS_ADMIN), e.g. `sudo -E cargo test`"
    )]
    NotPrivileged(String),
    /// A program the harness or a scenario needs is not installed.
    #[error("`{program}` not found: install the Debian package `{package}` (apt-get install -y {package})")]
    MissingProgram {
        program: String,
        package: &'static str,
    },
    /// The topology description contradicts itself.
    #[error("{file}: not run on the model: {why}")]
    ModelRefused { file: String, why: String },
    #[error("invalid topology: {0}")]
    Topology(String),
    #[error(transparent)]
    Nat(#[from] sim_nat::Error),
    #[error("network namespace `{name}`: {source}")]
    Netns {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink ({what}): {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("nft in `{ns}` rejected the ruleset: {stderr}")]
    Nft { ns: String, stderr: String },
    #[error("sysctl {path} in `{ns}`: {source}")]
    Sysctl {
        ns: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no node named `{0}` in this topology")]
    NoSuchNode(String),
    #[error("the worker of namespace `{0}` is gone (the topology is being torn down)")]
    WorkerGone(String),
    /// A STUN transaction or configuration failed (timeout, error response, bad config).
    #[error("STUN {what}: {source}")]
    Stun {
        what: String,
        #[source]
        source: crate::stun::StunError,
    },
    /// A capture file `harness diagnose` cannot read: not pcap/pcapng, empty, or damaged.
    #[error("{file}: {what}")]
    Capture { file: String, what: String },
    /// A capture `harness import` cannot turn into a scenario (no SIP, no NAT to be seen).
    #[error("{file}: cannot import: {what}")]
    Import { file: String, what: String },
    /// `docs/field-guide.toml` or a scenario's `guide` list is wrong.
    #[error("{file}: {what}")]
    Guide { file: String, what: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
