/// Why a NAT behaviour cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The combination of axes has no meaning (RFC 4787 would call it contradictory).
    #[error("invalid NAT behaviour: {0}")]
    Invalid(String),
    /// A name in a scenario or on the command line is not one of ours.
    #[error("unknown NAT type `{given}`; valid: {valid}")]
    UnknownType { given: String, valid: &'static str },
}
