//! SIP message helpers on top of `rsip` 0.4: parse a UDP datagram into a
//! validated message (or a typed [`MessageError`], never a panic), serialize
//! with a correct Content-Length, and read/modify the headers NAT traversal
//! is about: the top Via with `received`/`rport` (RFC 3581), Contact,
//! Call-ID, CSeq, branch and tags.

use std::net::{IpAddr, SocketAddr};

use rsip::headers::{self, Header, UntypedHeader};
use rsip::prelude::{HasHeaders, HeadersExt, ToTypedHeader};
use rsip::{Method, Request, Response, SipMessage, StatusCode};

use super::scan;

/// RFC 3261 §8.1.1.7: every branch we create starts with this cookie.
pub const BRANCH_MAGIC: &str = "z9hG4bK";

/// Default SIP port (RFC 3261 §19.1.2).
pub const SIP_PORT: u16 = 5060;

/// Why a datagram is not acceptable SIP. Every variant names the thing to
/// look at in a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("empty datagram (a keep-alive is CRLF only; this had nothing)")]
    Empty,
    #[error("not a SIP message (bad start line or header syntax): {0}")]
    Unparsable(String),
    #[error("mandatory header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {header} is malformed: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("Content-Length says {declared} bytes but {actual} arrived: truncated in transit, or an ALG rewrote the body without fixing Content-Length")]
    ContentLength { declared: usize, actual: usize },
    #[error("CSeq method {cseq} does not match the request method {method}")]
    CSeqMismatch { method: String, cseq: String },
}

impl MessageError {
    /// Stable short name, the key of malformed-datagram counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageError::Empty => "empty",
            MessageError::Unparsable(_) => "unparsable",
            MessageError::MissingHeader(_) => "missing_header",
            MessageError::BadHeader { .. } => "bad_header",
            MessageError::ContentLength { .. } => "content_length",
            MessageError::CSeqMismatch { .. } => "cseq_mismatch",
        }
    }
}

/// A CRLF keep-alive (RFC 5626 §3.5.1: "\r\n\r\n" ping, "\r\n" pong), not a message.
pub fn is_keepalive(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// Parses one UDP datagram and checks what every later layer relies on: a
/// top Via with a sent-by and branch, From, To, Call-ID, a CSeq matching
/// the method, and a Content-Length that fits the body (RFC 3261 §18.3: a
/// shorter body is an error, extra bytes are dropped).
pub fn parse(bytes: &[u8]) -> Result<SipMessage, MessageError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(MessageError::Empty);
    }
    let mut msg = match scan::message(bytes) {
        Some(m) => m,
        None => SipMessage::try_from(bytes).map_err(|e| {
            // rsip echoes the whole input; keep the log line short.
            MessageError::Unparsable(e.to_string().chars().take(120).collect())
        })?,
    };
    normalize_headers(msg.headers_mut());
    validate(&mut msg)?;
    Ok(msg)
}

fn validate(msg: &mut SipMessage) -> Result<(), MessageError> {
    let via = top_via(msg)?;
    if via.branch.is_none() {
        return Err(bad(
            "Via",
            "no branch parameter (RFC 2543 peers are not supported)",
        ));
    }
    for (name, present) in [
        ("From", msg.from_header().is_ok()),
        ("To", msg.to_header().is_ok()),
    ] {
        if !present {
            return Err(MessageError::MissingHeader(name));
        }
    }
    from_tag(msg)?;
    to_tag(msg)?;
    call_id(msg)?;
    let (_, cseq_method) = cseq(msg)?;
    if let SipMessage::Request(r) = msg {
        if r.method != cseq_method {
            return Err(MessageError::CSeqMismatch {
                method: r.method.to_string(),
                cseq: cseq_method.to_string(),
            });
        }
    }
    let declared = match msg.headers().iter().find_map(|h| match h {
        Header::ContentLength(l) => Some(l.value().trim().to_string()),
        _ => None,
    }) {
        Some(v) => Some(v.parse::<usize>().map_err(|e| bad("Content-Length", e))?),
        None => None,
    };
    let actual = msg.body().len();
    match declared {
        Some(d) if d > actual => {
            return Err(MessageError::ContentLength {
                declared: d,
                actual,
            })
        }
        Some(d) => msg.body_mut().truncate(d),
        None => {}
    }
    Ok(())
}

fn bad(header: &'static str, reason: impl ToString) -> MessageError {
    MessageError::BadHeader {
        header,
        reason: reason.to_string(),
    }
}

/// Whether `bytes` may hold a Contact header once parsed: "contact" in any case, or a line
/// starting with the compact form `m`. `false` means [`parse`] would give no Contact.
pub fn may_have_contact(bytes: &[u8]) -> bool {
    let long = bytes.iter().enumerate().any(|(i, b)| {
        b.eq_ignore_ascii_case(&b'c')
            && bytes
                .get(i..i + 7)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"contact"))
    });
    let compact = bytes.windows(3).any(|w| {
        w[0] == b'\n' && (w[1] == b'm' || w[1] == b'M') && matches!(w[2], b':' | b' ' | b'\t')
    });
    long || compact
}

/// Maps compact header names (RFC 3261 §7.3.3) to their long forms, which
/// rsip 0.4 does not know, and splits comma-joined Via values into one
/// header each so "top Via" means the first hop.
fn normalize_headers(headers: &mut rsip::Headers) {
    let needed = headers.iter().any(|h| match h {
        Header::Other(..) => true,
        Header::Via(v) => v.value().contains(','),
        _ => false,
    });
    if !needed {
        return;
    }
    let old: Vec<Header> = std::mem::take(headers).into();
    let mut out = Vec::with_capacity(old.len());
    for h in old {
        let h = match h {
            Header::Other(name, value) => match name.to_ascii_lowercase().as_str() {
                "v" => Header::Via(headers::Via::new(value)),
                "i" => Header::CallId(headers::CallId::new(value)),
                "f" => Header::From(headers::From::new(value)),
                "t" => Header::To(headers::To::new(value)),
                "m" => Header::Contact(headers::Contact::new(value)),
                "l" => Header::ContentLength(headers::ContentLength::new(value)),
                "c" => Header::ContentType(headers::ContentType::new(value)),
                _ => Header::Other(name, value),
            },
            h => h,
        };
        match h {
            Header::Via(v) if v.value().contains(',') => {
                for part in v.value().split(',') {
                    out.push(Header::Via(headers::Via::new(part.trim())));
                }
            }
            h => out.push(h),
        }
    }
    *headers = out.into();
}

/// Serializes with a Content-Length that matches the body.
pub fn serialize(msg: impl Into<SipMessage>) -> Vec<u8> {
    let mut msg = msg.into();
    let len = msg.body().len();
    msg.headers_mut()
        .unique_push(Header::ContentLength(headers::ContentLength::new(
            len.to_string(),
        )));
    scan::serialize(&msg)
}

/// The RFC 3581 `rport` parameter of a Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// The client did not ask: responses go to the Via port.
    Absent,
    /// `;rport` without value: the client asks the server to fill in the
    /// source port and answer there.
    Requested,
    /// `;rport=N`, filled by a server.
    Filled(u16),
}

/// One Via header value, the part NAT traversal is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// e.g. "UDP".
    pub transport: String,
    /// sent-by host as written (IP or name).
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub received: Option<IpAddr>,
    pub rport: Rport,
    /// Other parameters, each rendered with its leading ';'.
    pub other: Vec<String>,
}

impl Via {
    /// A UDP Via for `sent_by`, with a branch and optionally an empty `rport`.
    pub fn udp(sent_by: SocketAddr, branch: impl Into<String>, rport: bool) -> Self {
        Self {
            transport: "UDP".into(),
            host: sent_by.ip().to_string(),
            port: Some(sent_by.port()),
            branch: Some(branch.into()),
            received: None,
            rport: if rport {
                Rport::Requested
            } else {
                Rport::Absent
            },
            other: Vec::new(),
        }
    }

    /// The same Via with another transport (`SIP/2.0/TCP`).
    pub fn over(mut self, transport: crate::machine::Transport) -> Self {
        self.transport = transport.via_name().into();
        self
    }

    /// Parses a Via header value (rsip's tokenizer, or the same answer from [`scan::via`]).
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        if let Some(via) = scan::via(value) {
            return Ok(via);
        }
        Self::parse_with_rsip(value)
    }

    /// [`Via::parse`] with rsip's tokenizer only.
    fn parse_with_rsip(value: &str) -> Result<Self, MessageError> {
        let typed = headers::Via::new(value)
            .typed()
            .map_err(|e| bad("Via", e))?;
        let hp = &typed.uri.host_with_port;
        let mut via = Via {
            transport: typed.transport.to_string(),
            host: hp.host.to_string(),
            port: hp.port.map(|p| *p.value()),
            branch: None,
            received: None,
            rport: Rport::Absent,
            other: Vec::new(),
        };
        for p in typed.params {
            match p {
                rsip::Param::Branch(b) => via.branch = Some(b.to_string()),
                rsip::Param::Received(r) => {
                    via.received = Some(
                        r.value()
                            .parse()
                            .map_err(|e| bad("Via", format!("received: {e}")))?,
                    )
                }
                rsip::Param::Other(name, value) if name.value().eq_ignore_ascii_case("rport") => {
                    via.rport = match value {
                        None => Rport::Requested,
                        Some(v) => Rport::Filled(
                            v.value()
                                .parse()
                                .map_err(|e| bad("Via", format!("rport: {e}")))?,
                        ),
                    }
                }
                p => via.other.push(p.to_string()),
            }
        }
        Ok(via)
    }

    /// The sent-by as a socket address, if the host is an IP literal.
    pub fn sent_by(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port.unwrap_or(SIP_PORT)))
    }

    /// What a server does on receipt (RFC 3261 §18.2.1, RFC 3581 §4): add
    /// `received` when the sent-by host is not the source IP (always when
    /// `rport` was asked for), and fill `rport` if asked and `honour_rport`.
    pub fn stamp(&mut self, source: SocketAddr, honour_rport: bool) {
        let asked = self.rport == Rport::Requested && honour_rport;
        if asked || self.host != source.ip().to_string() {
            self.received = Some(source.ip());
        }
        if asked {
            self.rport = Rport::Filled(source.port());
        }
    }

    /// Where responses go (RFC 3261 §18.2.2 and RFC 3581 §4) after
    /// [`Via::stamp`]: `received` (else sent-by) IP, and the filled `rport`
    /// or else the Via port. `None` if the sent-by is a name and there is
    /// no `received` (no resolver in here).
    pub fn response_target(&self) -> Option<SocketAddr> {
        let ip = match self.received {
            Some(ip) => ip,
            None => self.host.parse().ok()?,
        };
        let port = match self.rport {
            Rport::Filled(p) => p,
            _ => self.port.unwrap_or(SIP_PORT),
        };
        Some(SocketAddr::new(ip, port))
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Pieces written as they are: this runs for every message a machine sends.
        for part in ["SIP/2.0/", &self.transport, " ", &self.host] {
            f.write_str(part)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(b) = &self.branch {
            f.write_str(";branch=")?;
            f.write_str(b)?;
        }
        if let Some(r) = self.received {
            write!(f, ";received={r}")?;
        }
        match self.rport {
            Rport::Absent => {}
            Rport::Requested => write!(f, ";rport")?,
            Rport::Filled(p) => write!(f, ";rport={p}")?,
        }
        for o in &self.other {
            f.write_str(o)?;
        }
        Ok(())
    }
}

fn via_header(via: &Via) -> Header {
    Header::Via(headers::Via::new(via.to_string()))
}

/// The first (topmost) Via.
pub fn top_via(msg: &impl HasHeaders) -> Result<Via, MessageError> {
    let v = msg
        .headers()
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
        .ok_or(MessageError::MissingHeader("Via"))?;
    Via::parse(v.value())
}

/// Replaces the topmost Via.
pub fn set_top_via(msg: &mut impl HasHeaders, via: &Via) {
    if let Some(h) = msg
        .headers_mut()
        .iter_mut()
        .find(|h| matches!(h, Header::Via(_)))
    {
        *h = via_header(via);
    }
}

/// Adds a Via on top (a proxy forwarding a request).
pub fn push_via(msg: &mut impl HasHeaders, via: &Via) {
    let mut all: Vec<Header> = std::mem::take(msg.headers_mut()).into();
    all.insert(0, via_header(via));
    *msg.headers_mut() = all.into();
}

/// Removes the topmost Via (a proxy forwarding a response) and returns it.
pub fn pop_via(msg: &mut impl HasHeaders) -> Option<Via> {
    let mut all: Vec<Header> = std::mem::take(msg.headers_mut()).into();
    let idx = all.iter().position(|h| matches!(h, Header::Via(_)));
    let popped = idx.map(|i| all.remove(i));
    *msg.headers_mut() = all.into();
    match popped {
        Some(Header::Via(v)) => Via::parse(v.value()).ok(),
        _ => None,
    }
}

/// The number of Via headers.
pub fn via_count(msg: &impl HasHeaders) -> usize {
    msg.headers()
        .iter()
        .filter(|h| matches!(h, Header::Via(_)))
        .count()
}

pub fn call_id(msg: &impl HeadersExt) -> Result<String, MessageError> {
    let v = msg
        .call_id_header()
        .map_err(|_| MessageError::MissingHeader("Call-ID"))?
        .value()
        .trim()
        .to_string();
    if v.is_empty() {
        return Err(bad("Call-ID", "empty"));
    }
    Ok(v)
}

/// CSeq number and method.
pub fn cseq(msg: &impl HeadersExt) -> Result<(u32, Method), MessageError> {
    let h = msg
        .cseq_header()
        .map_err(|_| MessageError::MissingHeader("CSeq"))?;
    if let Some(c) = scan::cseq(h.value()) {
        return Ok(c);
    }
    let typed = h.typed().map_err(|e| bad("CSeq", e))?;
    Ok((typed.seq, typed.method))
}

/// The `tag` of From (`None` if absent).
pub fn from_tag(msg: &impl HeadersExt) -> Result<Option<String>, MessageError> {
    let h = msg
        .from_header()
        .map_err(|_| MessageError::MissingHeader("From"))?;
    if let Some(t) = scan::tag(h.value()) {
        return Ok(t);
    }
    let typed = h.typed().map_err(|e| bad("From", e))?;
    Ok(typed.tag().map(|t| t.to_string()))
}

/// The `tag` of To (`None` outside a dialog).
pub fn to_tag(msg: &impl HeadersExt) -> Result<Option<String>, MessageError> {
    let h = msg
        .to_header()
        .map_err(|_| MessageError::MissingHeader("To"))?;
    if let Some(t) = scan::tag(h.value()) {
        return Ok(t);
    }
    let typed = h.typed().map_err(|e| bad("To", e))?;
    Ok(typed.tag().map(|t| t.to_string()))
}

/// Adds a tag to To if it has none (a UAS creating a dialog).
pub fn set_to_tag(msg: &mut impl HeadersExt, tag: &str) {
    if let Ok(h) = msg.to_header_mut() {
        let untagged = match scan::tag(h.value()) {
            Some(t) => t.is_none(),
            None => h.typed().is_ok_and(|typed| typed.tag().is_none()),
        };
        if untagged {
            *h = headers::To::new(format!("{};tag={tag}", h.value()));
        }
    }
}

/// The URI in the From header.
pub fn from_uri(msg: &impl HeadersExt) -> Option<rsip::Uri> {
    msg.from_header().ok()?.typed().ok().map(|t| t.uri)
}

/// The URI of the first Contact.
pub fn contact_uri(msg: &impl HeadersExt) -> Option<rsip::Uri> {
    let h = msg.contact_header().ok()?;
    match scan::contact_uri(h.value()) {
        Some(uri) => uri,
        None => h.typed().ok().map(|c| c.uri),
    }
}

/// Rewrites the host and port of the first Contact (what Kamailio's
/// `fix_nated_contact` does with the source address).
pub fn set_contact_address(msg: &mut impl HeadersExt, addr: SocketAddr) {
    if let Ok(h) = msg.contact_header_mut() {
        if let Ok(mut typed) = h.typed() {
            typed.uri.host_with_port = addr.into();
            *h = typed.into();
        }
    }
}

/// Registration lifetime asked for: the Contact's `expires` parameter,
/// else the Expires header.
pub fn expires(msg: &impl HeadersExt) -> Option<u32> {
    if let Ok(h) = msg.contact_header() {
        match scan::contact_expires(h.value()) {
            Some(e) => {
                if let Some(Ok(v)) = e.map(str::parse) {
                    return Some(v);
                }
            }
            None => {
                if let Ok(c) = h.typed() {
                    if let Some(Ok(v)) = c.expires().map(|e| e.value().parse()) {
                        return Some(v);
                    }
                }
            }
        }
    }
    msg.expires_header()?.value().trim().parse().ok()
}

/// A URI's host and port as a socket address, if the host is an IP literal.
pub fn uri_addr(uri: &rsip::Uri) -> Option<SocketAddr> {
    match &uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => Some(SocketAddr::new(
            *ip,
            uri.host_with_port.port.map_or(SIP_PORT, |p| *p.value()),
        )),
        rsip::Host::Domain(_) => None,
    }
}

/// Parses a URI such as `sip:bob@192.0.2.1:5060`.
pub fn parse_uri(s: &str) -> Result<rsip::Uri, MessageError> {
    rsip::Uri::try_from(s).map_err(|e| bad("Request-URI", e))
}

/// The value of the first header named `name` (case-insensitive), e.g. for
/// headers rsip keeps as `Other`.
pub fn header_value(msg: &impl HasHeaders, name: &str) -> Option<String> {
    msg.headers().iter().find_map(|h| match h {
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.clone()),
        h => {
            let s = h.to_string();
            let (n, v) = s.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        }
    })
}

/// Builds a response to `req` as RFC 3261 §8.2.6 says: Vias, From, To,
/// Call-ID and CSeq copied; for 18x/2xx to INVITE also Record-Route.
/// Adds `to_tag` to To if given and To has none.
pub fn response(req: &Request, status: u16, to_tag: Option<&str>) -> Response {
    let mut headers = rsip::Headers::default();
    let dialog = req.method == Method::Invite && (101..300).contains(&status);
    for h in req.headers.iter() {
        match h {
            Header::Via(_)
            | Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::CSeq(_) => headers.push(h.clone()),
            Header::RecordRoute(_) if dialog => headers.push(h.clone()),
            _ => {}
        }
    }
    let mut resp = Response {
        // rsip would write "RequestTimeout"; send the RFC reason phrase.
        status_code: match reason_phrase(status) {
            Some(reason) => StatusCode::Other(status, reason.into()),
            None => StatusCode::from(status),
        },
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    if let Some(tag) = to_tag {
        set_to_tag(&mut resp, tag);
    }
    resp
}

/// The RFC 3261 §21 reason phrase of the status codes this module sends.
pub fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => return None,
    })
}

/// Short description for ladders and logs: "INVITE sip:…" or "180 Ringing".
pub fn summary(msg: &SipMessage) -> String {
    match msg {
        SipMessage::Request(r) => format!("{} {}", r.method, r.uri),
        SipMessage::Response(r) => {
            let code = r.status_code.code();
            match reason_phrase(code) {
                Some(reason) => format!("{code} {reason}"),
                None => r.status_code.to_string(),
            }
        }
    }
}

/// Status code of a response as a number.
pub fn status(resp: &Response) -> u16 {
    resp.status_code.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@10.0.0.2:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nabcd";

    #[test]
    fn a_valid_invite_parses_and_exposes_the_nat_relevant_headers() {
        let msg = parse(INVITE.as_bytes()).unwrap();
        let via = top_via(&msg).unwrap();
        assert_eq!(via.sent_by(), Some("10.0.0.2:5060".parse().unwrap()));
        assert_eq!(via.branch.as_deref(), Some("z9hG4bK776asdhds"));
        assert_eq!(via.rport, Rport::Requested);
        assert_eq!(call_id(&msg).unwrap(), "a84b4c76e66710@pc33");
        assert_eq!(cseq(&msg).unwrap(), (314159, Method::Invite));
        assert_eq!(from_tag(&msg).unwrap().as_deref(), Some("1928301774"));
        assert_eq!(to_tag(&msg).unwrap(), None);
        let contact = contact_uri(&msg).unwrap();
        assert_eq!(uri_addr(&contact), Some("10.0.0.2:5060".parse().unwrap()));
        assert_eq!(msg.body(), b"abcd");
    }

    #[test]
    fn a_server_stamps_received_and_rport_and_answers_the_source_port() {
        let mut via = Via::parse("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport").unwrap();
        let src: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        via.stamp(src, true);
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;received=203.0.113.7;rport=40001"
        );
        assert_eq!(via.response_target(), Some(src));
        let reparsed = Via::parse(&via.to_string()).unwrap();
        assert_eq!(reparsed, via);
    }

    #[test]
    fn without_rport_a_server_answers_the_received_ip_but_the_via_port() {
        let mut via = Via::parse("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1").unwrap();
        via.stamp("203.0.113.7:40001".parse().unwrap(), true);
        assert_eq!(
            via.response_target(),
            Some("203.0.113.7:5060".parse().unwrap())
        );
    }

    #[test]
    fn compact_headers_and_comma_joined_vias_are_understood() {
        let raw = "OPTIONS sip:x@192.0.2.1 SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKa, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKb\r\nf: <sip:a@b>;tag=1\r\nt: <sip:x@192.0.2.1>\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        let mut msg = parse(raw.as_bytes()).unwrap();
        assert_eq!(via_count(&msg), 2);
        assert_eq!(top_via(&msg).unwrap().port, Some(5070));
        pop_via(&mut msg);
        assert_eq!(top_via(&msg).unwrap().branch.as_deref(), Some("z9hG4bKb"));
    }

    #[test]
    fn a_body_shorter_than_content_length_is_rejected_and_a_longer_one_truncated() {
        let short = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert_eq!(
            parse(short.as_bytes()).unwrap_err(),
            MessageError::ContentLength {
                declared: 40,
                actual: 4
            }
        );
        let long = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(parse(long.as_bytes()).unwrap().body(), b"ab");
    }

    #[test]
    fn garbage_truncation_and_a_missing_via_are_typed_errors() {
        assert!(matches!(parse(b"hello"), Err(MessageError::Unparsable(_))));
        assert_eq!(parse(b""), Err(MessageError::Empty));
        assert!(parse(&INVITE.as_bytes()[..60]).is_err());
        let no_via: String = INVITE
            .lines()
            .filter(|l| !l.starts_with("Via"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace('\n', "\r\n");
        assert_eq!(
            parse(no_via.as_bytes()).unwrap_err(),
            MessageError::MissingHeader("Via")
        );
    }

    #[test]
    fn a_long_error_echo_is_cut_on_a_character_boundary() {
        // Found by the proptest: rsip echoes the input, which may be
        // multi-byte UTF-8 where a byte-based cut would panic.
        let garbage = "é".repeat(200);
        assert!(matches!(
            parse(garbage.as_bytes()),
            Err(MessageError::Unparsable(_))
        ));
        let shrunk = [0, 128, 0, 128, 0, 128, 0, 128, 128, 128, 128];
        assert!(matches!(parse(&shrunk), Err(MessageError::Unparsable(_))));
    }

    #[test]
    fn serialize_fixes_content_length_and_reparses() {
        let mut msg = parse(INVITE.as_bytes()).unwrap();
        *msg.body_mut() = b"v=0\r\n".to_vec();
        let bytes = serialize(msg);
        let again = parse(&bytes).unwrap();
        assert_eq!(again.body(), b"v=0\r\n");
    }

    #[test]
    fn a_response_copies_the_transaction_headers_and_adds_a_to_tag() {
        let SipMessage::Request(req) = parse(INVITE.as_bytes()).unwrap() else {
            unreachable!()
        };
        let resp = response(&req, 180, Some("xyz"));
        let bytes = serialize(resp);
        let back = parse(&bytes).unwrap();
        assert_eq!(to_tag(&back).unwrap().as_deref(), Some("xyz"));
        assert_eq!(
            top_via(&back).unwrap().branch.as_deref(),
            Some("z9hG4bK776asdhds")
        );
    }

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = INVITE.as_bytes().to_vec();
        let len = base.len();
        prop::collection::vec((0..len, any::<u8>(), 0u8..4), 1..8).prop_map(move |edits| {
            let mut b = base.clone();
            for (pos, byte, op) in edits {
                let pos = pos.min(b.len().saturating_sub(1));
                match op {
                    0 => b[pos] = byte,
                    1 => b.insert(pos, byte),
                    2 => {
                        b.remove(pos);
                    }
                    _ => b.truncate(pos),
                }
                if b.is_empty() {
                    break;
                }
            }
            b
        })
    }

    /// Messages in the shapes our machines send, for the fast paths' equivalence tests.
    const RESPONSE: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-1-2;received=203.0.113.1;rport=40001\r\n\
Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKp1\r\n\
From: <sip:alice@203.0.113.10>;tag=a1\r\n\
To: \"Bob\" <sip:bob@203.0.113.10:5060;user=phone>;tag=b2\r\n\
Call-ID: c1@192.168.1.10\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:alice@192.168.1.10:5060>;expires=60\r\n\
Content-Length: 0\r\n\r\n";

    /// Interesting bytes to splice into header values and start lines.
    fn edits(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
        let alphabet: &[u8] = b";=<>:@. \t\r\n/\"SIPsipUDPtag0123456789abz-";
        let len = base.len();
        prop::collection::vec((0..len, prop::sample::select(alphabet), 0u8..3), 1..6).prop_map(
            move |edits| {
                let mut b = base.as_bytes().to_vec();
                for (pos, byte, op) in edits {
                    let pos = pos.min(b.len().saturating_sub(1));
                    match op {
                        0 => b[pos] = byte,
                        1 => b.insert(pos, byte),
                        _ => {
                            b.remove(pos);
                        }
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            },
        )
    }

    /// Where the fast paths answer, they answer what rsip answers.
    fn same_as_rsip(bytes: &[u8]) -> Result<(), TestCaseError> {
        if parse(bytes).is_ok_and(|m| m.contact_header().is_ok()) {
            prop_assert!(may_have_contact(bytes));
        }
        if let Some(fast) = scan::message(bytes) {
            prop_assert_eq!(SipMessage::try_from(bytes).ok(), Some(fast.clone()));
            prop_assert_eq!(scan::serialize(&fast), fast.to_string().into_bytes());
        }
        if let Ok(msg) = SipMessage::try_from(bytes) {
            prop_assert_eq!(scan::serialize(&msg), msg.to_string().into_bytes());
            for h in msg.headers().iter() {
                match h {
                    Header::Via(v) => {
                        if let Some(fast) = scan::via(v.value()) {
                            prop_assert_eq!(Via::parse_with_rsip(v.value()), Ok(fast));
                        }
                    }
                    Header::From(f) => {
                        if let Some(fast) = scan::tag(f.value()) {
                            let typed = f.typed().ok().map(|t| t.tag().map(|t| t.to_string()));
                            prop_assert_eq!(typed, Some(fast));
                        }
                    }
                    Header::To(t) => {
                        if let Some(fast) = scan::tag(t.value()) {
                            let typed = t.typed().ok().map(|t| t.tag().map(|t| t.to_string()));
                            prop_assert_eq!(typed, Some(fast));
                        }
                    }
                    Header::Contact(c) => {
                        if let Some(fast) = scan::contact_uri(c.value()) {
                            prop_assert_eq!(c.typed().ok().map(|c| c.uri), fast);
                        }
                        if let Some(fast) = scan::contact_expires(c.value()) {
                            let typed = c
                                .typed()
                                .ok()
                                .map(|c| c.expires().map(|e| e.value().to_string()));
                            prop_assert_eq!(typed, Some(fast.map(str::to_string)));
                        }
                    }
                    Header::CSeq(c) => {
                        if let Some(fast) = scan::cseq(c.value()) {
                            let typed = c.typed().ok().map(|t| (t.seq, t.method));
                            prop_assert_eq!(typed, Some(fast));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_fast_paths_take_the_messages_our_machines_send() {
        for raw in [INVITE, RESPONSE] {
            let fast = scan::message(raw.as_bytes()).expect("the fast path takes it");
            assert_eq!(Ok(fast), SipMessage::try_from(raw.as_bytes()));
            same_as_rsip(raw.as_bytes()).unwrap();
        }
        let msg = parse(RESPONSE.as_bytes()).unwrap();
        for h in msg.headers().iter() {
            match h {
                Header::Via(v) => assert!(scan::via(v.value()).is_some(), "{v}"),
                Header::From(v) => assert!(scan::tag(v.value()).is_some(), "{v}"),
                Header::To(v) => assert!(scan::tag(v.value()).is_some(), "{v}"),
                Header::CSeq(v) => assert!(scan::cseq(v.value()).is_some(), "{v}"),
                Header::Contact(v) => assert!(scan::contact_uri(v.value()).is_some(), "{v}"),
                _ => {}
            }
        }
    }

    proptest! {
        #[test]
        fn the_fast_paths_agree_with_rsip_on_edited_messages(
            bytes in prop_oneof![edits(INVITE), edits(RESPONSE), mutated()]
        ) {
            same_as_rsip(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_valid_messages_parse_or_fail_with_a_typed_error(bytes in mutated()) {
            if let Ok(msg) = parse(&bytes) {
                // Whatever passed validation must serve every accessor the
                // transaction layer uses, and survive a round trip.
                prop_assert!(top_via(&msg).is_ok());
                prop_assert!(call_id(&msg).is_ok());
                prop_assert!(cseq(&msg).is_ok());
                let _ = contact_uri(&msg);
                let _ = parse(&serialize(msg));
            }
        }
    }
}
