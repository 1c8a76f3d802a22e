//! The named ways a consumer router's SIP ALG gets SIP wrong, as data a scenario picks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One misbehaviour of an emulated SIP ALG (failure catalogue item 2).
///
/// Each fault is one isolated rewrite (or drop), so a scenario composes a router from the faults
/// it saw in the field, and a test can show that exactly the header a fault names changed. An
/// emulated ALG with no faults passes SIP untouched. Rewrites apply to SIP leaving through the
/// router's WAN side and write the router's public address, as consumer ALGs do; the port they
/// write is the one the inside host used (the ALG runs before source NAT and assumes the NAT keeps
/// ports — wrong whenever it does not).
///
/// Scenario files name them in kebab-case: `sip-alg = { emulated = ["break-digest"] }`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AlgFault {
    /// Contact's private address becomes the public address (port kept); Via is left private,
    /// so the two disagree and a registrar that trusts Contact sends calls to the public address
    /// on the private port.
    RewriteContactNotVia,
    /// SDP `c=` becomes the public address but `m=` keeps the private port, and — unlike the
    /// kernel helper — no expectation is opened for it: the far end sends its RTP to a port the
    /// NAT never mapped (one-way audio).
    RewriteSdpConnectionNotMediaPort,
    /// SDP `o=` and `c=` become the public address, but Content-Length keeps the old body
    /// length: a body that shrank is "truncated" to every strict parser downstream.
    RewriteWithoutFixingContentLength,
    /// The digest `uri=` of Authorization / Proxy-Authorization is treated as an address to
    /// translate (its host becomes the public address): the server's digest over the URI no
    /// longer matches the phone's response, and every authenticated REGISTER gets 401 again.
    BreakDigest,
    /// Anything on the SIP port the ALG's strict parser rejects is dropped, in both directions:
    /// bare-LF line ends, junk, truncated bodies — and STUN sent from the SIP port (RFC 5626
    /// keep-alives, STUN discovery on the SIP socket).
    DropUnparseable,
    /// Via sent-by (of requests) and Contact are replaced by the public address and the inside
    /// host's source port whatever they held — even an address the phone already fixed with
    /// STUN. Behind a NAT that does not keep ports that port is wrong: responses and calls go
    /// where no binding exists ("double NAT fix").
    RewriteAlreadyPublic,
}

impl AlgFault {
    /// Every fault, in declaration order.
    pub const ALL: [AlgFault; 6] = [
        AlgFault::RewriteContactNotVia,
        AlgFault::RewriteSdpConnectionNotMediaPort,
        AlgFault::RewriteWithoutFixingContentLength,
        AlgFault::BreakDigest,
        AlgFault::DropUnparseable,
        AlgFault::RewriteAlreadyPublic,
    ];

    /// The kebab-case name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            AlgFault::RewriteContactNotVia => "rewrite-contact-not-via",
            AlgFault::RewriteSdpConnectionNotMediaPort => "rewrite-sdp-connection-not-media-port",
            AlgFault::RewriteWithoutFixingContentLength => "rewrite-without-fixing-content-length",
            AlgFault::BreakDigest => "break-digest",
            AlgFault::DropUnparseable => "drop-unparseable",
            AlgFault::RewriteAlreadyPublic => "rewrite-already-public",
        }
    }
}

impl fmt::Display for AlgFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault name, with the valid ones in its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SIP ALG fault `{0}`; valid: rewrite-contact-not-via, rewrite-sdp-connection-not-media-port, rewrite-without-fixing-content-length, break-digest, drop-unparseable, rewrite-already-public")]
pub struct UnknownFault(pub String);

impl FromStr for AlgFault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlgFault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}
