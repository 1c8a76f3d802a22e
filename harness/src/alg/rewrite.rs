//! The ALG's SIP parser and rewrites, sans-IO: a datagram's bytes in, a verdict out.
//!
//! The parser is deliberately a consumer router's: strict (CRLF line ends, a recognisable start
//! line, `Name: value` fields, the mandatory headers, a Content-Length that fits), and it keeps
//! every byte it does not rewrite, so the only difference between the inside and outside copy of
//! a message is what a fault names. It never panics, whatever the bytes (property-tested).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::packet::Udp4;
use super::AlgFault;

/// Which way a datagram crosses the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the LAN towards the WAN: what the ALG rewrites.
    Outbound,
    /// From the WAN into the LAN: only [`AlgFault::DropUnparseable`] acts on it.
    Inbound,
}

/// What becomes of one datagram on the SIP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipVerdict {
    /// Forward it as it is.
    Unchanged,
    /// Forward these bytes instead.
    Rewritten(Vec<u8>),
    /// Drop it.
    Drop,
}

/// What becomes of one queued IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it continue as it is.
    Accept,
    /// Let this packet continue instead (the whole IP packet, lengths and checksums fixed).
    Replace(Vec<u8>),
    Drop,
}

/// Counters a test reads: what the ALG saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlgStats {
    pub outbound: u64,
    pub inbound: u64,
    /// Datagrams on the SIP port the parser rejected (dropped or not).
    pub unparseable: u64,
    pub rewritten: u64,
    pub dropped: u64,
    /// Messages each fault changed (or dropped).
    pub by_fault: BTreeMap<AlgFault, u64>,
}

/// The emulated ALG's decision logic for one router: its public address and its faults.
#[derive(Debug, Clone)]
pub struct Alg {
    public: Ipv4Addr,
    faults: BTreeSet<AlgFault>,
    stats: AlgStats,
}

impl Alg {
    pub fn new(public: Ipv4Addr, faults: impl IntoIterator<Item = AlgFault>) -> Self {
        Self {
            public,
            faults: faults.into_iter().collect(),
            stats: AlgStats::default(),
        }
    }

    pub fn public(&self) -> Ipv4Addr {
        self.public
    }

    pub fn faults(&self) -> &BTreeSet<AlgFault> {
        &self.faults
    }

    pub fn stats(&self) -> &AlgStats {
        &self.stats
    }

    fn has(&self, f: AlgFault) -> bool {
        self.faults.contains(&f)
    }

    /// Decides on one IP packet queued from the SIP port. Anything that is not an unfragmented
    /// IPv4/UDP packet is accepted as it is.
    pub fn handle_packet(&mut self, direction: Direction, packet: &[u8]) -> Decision {
        let Some(udp) = Udp4::parse(packet) else {
            return Decision::Accept;
        };
        match self.handle_sip(direction, udp.src, udp.payload(packet)) {
            SipVerdict::Unchanged => Decision::Accept,
            SipVerdict::Drop => Decision::Drop,
            SipVerdict::Rewritten(p) => match udp.with_payload(packet, &p) {
                Some(out) => Decision::Replace(out),
                None => Decision::Accept,
            },
        }
    }

    /// Decides on the UDP payload of a datagram on the SIP port sent by `from` (its address as
    /// the router sees it before source NAT).
    pub fn handle_sip(
        &mut self,
        direction: Direction,
        from: SocketAddrV4,
        bytes: &[u8],
    ) -> SipVerdict {
        match direction {
            Direction::Outbound => self.stats.outbound += 1,
            Direction::Inbound => self.stats.inbound += 1,
        }
        if is_keepalive(bytes) {
            return SipVerdict::Unchanged;
        }
        let Some(mut msg) = Message::parse(bytes) else {
            self.stats.unparseable += 1;
            if self.has(AlgFault::DropUnparseable) {
                self.stats.dropped += 1;
                *self
                    .stats
                    .by_fault
                    .entry(AlgFault::DropUnparseable)
                    .or_default() += 1;
                return SipVerdict::Drop;
            }
            return SipVerdict::Unchanged;
        };
        if direction == Direction::Inbound {
            return SipVerdict::Unchanged;
        }
        let applied = self.rewrite(&mut msg, from);
        if applied.is_empty() {
            return SipVerdict::Unchanged;
        }
        let out = msg.to_bytes();
        if out == bytes {
            return SipVerdict::Unchanged;
        }
        self.stats.rewritten += 1;
        for f in applied {
            *self.stats.by_fault.entry(f).or_default() += 1;
        }
        SipVerdict::Rewritten(out)
    }

    /// Applies the rewriting faults; returns those that changed something.
    fn rewrite(&self, msg: &mut Message, from: SocketAddrV4) -> BTreeSet<AlgFault> {
        let private = *from.ip();
        let public = self.public.to_string();
        let public_with_port = format!("{}:{}", self.public, from.port());
        let mut applied = BTreeSet::new();
        let is_request = msg.is_request();

        if self.has(AlgFault::RewriteContactNotVia) {
            for f in msg.fields_mut("contact") {
                if let Some(v) = replace_addr(f.value(), private, &public) {
                    f.set_value(&v);
                    applied.insert(AlgFault::RewriteContactNotVia);
                }
            }
        }
        if self.has(AlgFault::RewriteAlreadyPublic) {
            for f in msg.fields_mut("contact") {
                if let Some(v) = replace_uri_hostport(f.value(), &public_with_port) {
                    f.set_value(&v);
                    applied.insert(AlgFault::RewriteAlreadyPublic);
                }
            }
            if is_request {
                if let Some(f) = msg.fields_mut("via").next() {
                    if let Some(v) = replace_via_sent_by(f.value(), &public_with_port) {
                        f.set_value(&v);
                        applied.insert(AlgFault::RewriteAlreadyPublic);
                    }
                }
            }
        }
        if self.has(AlgFault::BreakDigest) {
            for name in ["authorization", "proxy-authorization"] {
                for f in msg.fields_mut(name) {
                    if let Some(v) = replace_digest_uri_host(f.value(), &public) {
                        f.set_value(&v);
                        applied.insert(AlgFault::BreakDigest);
                    }
                }
            }
        }

        let sdp_c = self.has(AlgFault::RewriteSdpConnectionNotMediaPort);
        let stale_length = self.has(AlgFault::RewriteWithoutFixingContentLength);
        if sdp_c || stale_length {
            if let Some(body) = rewrite_sdp(
                &msg.body,
                private,
                &public,
                sdp_c || stale_length,
                stale_length,
            ) {
                msg.body = body;
                if sdp_c {
                    applied.insert(AlgFault::RewriteSdpConnectionNotMediaPort);
                }
                if stale_length {
                    applied.insert(AlgFault::RewriteWithoutFixingContentLength);
                }
                if !stale_length {
                    let len = msg.body.len().to_string();
                    for f in msg.fields_mut("content-length") {
                        f.set_value(&format!(" {len}"));
                    }
                }
            }
        }
        applied
    }
}

/// A CRLF / CRLFCRLF keep-alive (RFC 5626): passed, never SIP.
fn is_keepalive(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// One header field as it was on the wire (folded continuation lines included).
#[derive(Debug, Clone)]
struct Field {
    /// Canonical lower-case long name (`v` → `via`).
    name: String,
    /// The text up to and including the colon, kept byte for byte.
    prefix: String,
    /// Everything after the colon.
    value: String,
}

impl Field {
    fn value(&self) -> &str {
        &self.value
    }

    fn set_value(&mut self, v: &str) {
        self.value = v.to_string();
    }
}

/// A SIP message as the ALG parses it.
#[derive(Debug, Clone)]
struct Message {
    start: String,
    fields: Vec<Field>,
    body: Vec<u8>,
    /// Bytes after Content-Length's worth of body, kept.
    tail: Vec<u8>,
}

fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        other => other,
    }
    .to_string()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn is_start_line(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let code = rest.get(..3).unwrap_or("");
        return code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
            && rest.as_bytes().get(3).is_none_or(|b| *b == b' ');
    }
    let parts: Vec<&str> = line.split(' ').collect();
    parts.len() == 3
        && is_token(parts[0])
        && parts[0].bytes().all(|b| b.is_ascii_uppercase())
        && parts[1].contains(':')
        && parts[2] == "SIP/2.0"
}

impl Message {
    fn parse(bytes: &[u8]) -> Option<Message> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let rest = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        if !is_start_line(start) {
            return None;
        }
        let mut fields: Vec<Field> = Vec::new();
        for line in lines {
            if line.contains('\r') || line.contains('\n') {
                return None; // a bare CR or LF: not what this parser understands
            }
            if line.starts_with([' ', '\t']) {
                let last = fields.last_mut()?;
                last.value.push_str("\r\n");
                last.value.push_str(line);
                continue;
            }
            let colon = line.find(':')?;
            let name = line[..colon].trim_end_matches([' ', '\t']);
            if !is_token(name) {
                return None;
            }
            fields.push(Field {
                name: canonical(name),
                prefix: line[..=colon].to_string(),
                value: line[colon + 1..].to_string(),
            });
        }
        for required in ["via", "from", "to", "call-id", "cseq"] {
            if !fields.iter().any(|f| f.name == required) {
                return None;
            }
        }
        let (body, tail) = match fields.iter().find(|f| f.name == "content-length") {
            Some(f) => {
                let n: usize = f.value.trim().parse().ok()?;
                if n > rest.len() {
                    return None; // truncated
                }
                (rest[..n].to_vec(), rest[n..].to_vec())
            }
            None => (rest.to_vec(), Vec::new()),
        };
        Some(Message {
            start: start.to_string(),
            fields,
            body,
            tail,
        })
    }

    fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/2.0 ")
    }

    fn fields_mut<'a>(&'a mut self, name: &'a str) -> impl Iterator<Item = &'a mut Field> + 'a {
        self.fields.iter_mut().filter(move |f| f.name == name)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.start.len() + self.body.len() + 512);
        out.extend_from_slice(self.start.as_bytes());
        for f in &self.fields {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(f.prefix.as_bytes());
            out.extend_from_slice(f.value.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Replaces `addr` where it stands as a whole address token in `text` (not inside a longer
/// dotted number: `192.168.1.10` does not match in `192.168.1.100`).
pub(crate) fn replace_addr(text: &str, addr: Ipv4Addr, with: &str) -> Option<String> {
    let needle = addr.to_string();
    let is_part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut changed = false;
    for (i, _) in text.match_indices(&needle) {
        let before = text[..i].chars().last();
        let after = text[i + needle.len()..].chars().next();
        if i < copied || is_part(before) || is_part(after) {
            continue;
        }
        out.push_str(&text[copied..i]);
        out.push_str(with);
        copied = i + needle.len();
        changed = true;
    }
    out.push_str(&text[copied..]);
    changed.then_some(out)
}

/// The byte span of `host[:port]` in the first `sip:`/`sips:` URI of `text`.
fn uri_hostport_span(text: &str) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let scheme = lower
        .find("sip:")
        .map(|i| i + 4)
        .or_else(|| lower.find("sips:").map(|i| i + 5))?;
    let stop = |c: char| matches!(c, '>' | ';' | '?' | ',' | '"') || c.is_whitespace();
    let uri_end = text[scheme..].find(stop).map_or(text.len(), |i| scheme + i);
    let host_start = match text[scheme..uri_end].rfind('@') {
        Some(at) => scheme + at + 1,
        None => scheme,
    };
    (host_start < uri_end).then_some((host_start, uri_end))
}

/// Replaces the URI's `host[:port]` with `hostport`.
fn replace_uri_hostport(value: &str, hostport: &str) -> Option<String> {
    let (s, e) = uri_hostport_span(value)?;
    if &value[s..e] == hostport {
        return None;
    }
    Some(format!("{}{hostport}{}", &value[..s], &value[e..]))
}

/// Replaces the sent-by of a Via value's first entry (`SIP/2.0/UDP host:port;…`).
fn replace_via_sent_by(value: &str, hostport: &str) -> Option<String> {
    let trimmed = value.trim_start();
    let lead = value.len() - trimmed.len();
    let proto_end = trimmed.find(char::is_whitespace)?;
    if !trimmed[..proto_end]
        .to_ascii_uppercase()
        .starts_with("SIP/")
    {
        return None;
    }
    let after_proto = &trimmed[proto_end..];
    let sent_by = after_proto.trim_start();
    let s = lead + proto_end + (after_proto.len() - sent_by.len());
    let len = sent_by
        .find(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .unwrap_or(sent_by.len());
    if len == 0 || &value[s..s + len] == hostport {
        return None;
    }
    Some(format!("{}{hostport}{}", &value[..s], &value[s + len..]))
}

/// Replaces the host of the digest `uri="…"` parameter with `host` (port kept).
fn replace_digest_uri_host(value: &str, host: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let mut from = 0;
    let start = loop {
        let i = from + lower[from..].find("uri=\"")?;
        let prev = lower[..i].chars().last();
        if prev.is_none_or(|c| c == ',' || c.is_whitespace()) {
            break i + 5;
        }
        from = i + 5;
    };
    let end = start + value[start..].find('"')?;
    let uri = &value[start..end];
    let (hs, he) = uri_hostport_span(uri)?;
    let hostport = &uri[hs..he];
    let port = hostport.rfind(':').map_or("", |i| &hostport[i..]);
    let new_hostport = format!("{host}{port}");
    if new_hostport == hostport {
        return None;
    }
    Some(format!(
        "{}{}{new_hostport}{}{}",
        &value[..start],
        &uri[..hs],
        &uri[he..],
        &value[end..]
    ))
}

/// Rewrites SDP `c=` (when `connection`) and `o=` (when `origin`) addresses equal to `private`.
fn rewrite_sdp(
    body: &[u8],
    private: Ipv4Addr,
    public: &str,
    connection: bool,
    origin: bool,
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.starts_with("v=") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let wanted = (connection && line.starts_with("c=")) || (origin && line.starts_with("o="));
        match wanted
            .then(|| replace_addr(line, private, public))
            .flatten()
        {
            Some(l) => {
                out.push_str(&l);
                changed = true;
            }
            None => out.push_str(line),
        }
    }
    changed.then(|| out.into_bytes())
}
