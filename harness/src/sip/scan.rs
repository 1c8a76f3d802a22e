//! Fast paths under `rsip`'s parsers for the well-formed messages our machines exchange, so the
//! model plays thousands of cases a second (issue 17): `rsip`'s nom tokenizers format an error
//! string echoing the rest of the datagram for every alternative they try, and its typed headers
//! allocate a URI per look.
//!
//! Each function gives exactly what the `rsip` path in [`super::message`] gives, or `None` where it
//! is not sure to, and the caller then takes the `rsip` path (so malformed or unusual input gets
//! `rsip`'s answer and error, byte for byte). The grammars accepted here are strict subsets of
//! `rsip`'s; `message.rs`'s tests hold both paths equal on generated and mutated messages.

use std::net::IpAddr;

use rsip::common::{method, status_code, uri, version};
use rsip::headers::header;
use rsip::headers::UntypedHeader as _;
use rsip::prelude::HasHeaders as _;
use rsip::{Header, Method, SipMessage};

use super::message::{Rport, Via};

/// `rsip`'s `is_token`: ASCII alphanumerics and `-.!%*_+`'~`.
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// The first "\r\n" in `hay`.
fn find_crlf(hay: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let i = from + hay[from..].iter().position(|b| *b == b'\r')?;
        if hay.get(i + 1) == Some(&b'\n') {
            return Some(i);
        }
        from = i + 1;
    }
}

/// `rsip::SipMessage::try_from(bytes)` for a message whose request URI starts with `sip:` or
/// `sips:` and whose header block ends in an empty line: the start line is read by `rsip`'s own
/// tokenizers on that line alone (their errors echo a line, not the datagram), the headers are
/// split as `rsip`'s `many0(header)` splits them, and `rsip` converts the tokens.
pub fn message(bytes: &[u8]) -> Option<SipMessage> {
    let line_end = find_crlf(bytes)?;
    let line = &bytes[..line_end];
    let rest = &bytes[line_end + 2..];
    // `rsip` takes the header block up to the first "\r\n\r\n" and cuts it at every "\r\n":
    // the same cuts as walking the CRLFs until one is followed by another.
    let mut headers = Vec::with_capacity(16);
    let mut pos = 0;
    let body = loop {
        let i = pos + find_crlf(&rest[pos..])?;
        if i == 0 {
            return None;
        }
        headers.push(header_line(&rest[pos..i])?);
        if rest[i + 2..].starts_with(b"\r\n") {
            break &rest[i + 4..];
        }
        pos = i + 2;
    };
    if line.starts_with(b"SIP/") {
        let (rem, version) = version::Tokenizer::tokenize(line).ok()?;
        let spaces = rem
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if spaces == 0 {
            return None;
        }
        let (rem, status_code) = status_code::Tokenizer::tokenize(&rem[spaces..]).ok()?;
        if !rem.is_empty() {
            return None;
        }
        return Some(SipMessage::Response(rsip::Response {
            version: version.try_into().ok()?,
            status_code: status_code.try_into().ok()?,
            headers: headers.into(),
            body: body.to_vec(),
        }));
    }
    let (rem, method) = method::Tokenizer::tokenize(line).ok()?;
    let rem = rem.strip_prefix(b" ")?;
    let scheme = rem.get(..5)?.to_ascii_lowercase();
    if !(scheme.starts_with(b"sip:") || scheme == b"sips:") {
        // Elsewhere `rsip`'s scheme alternative `take_until("://")` reads past the line.
        return None;
    }
    let (rem, uri) = uri::Tokenizer::tokenize(rem).ok()?;
    let rem = rem.strip_prefix(b" ")?;
    let (rem, version) = version::Tokenizer::tokenize(rem).ok()?;
    if !rem.is_empty() {
        return None;
    }
    Some(SipMessage::Request(rsip::Request {
        method: method.try_into().ok()?,
        uri: uri.try_into().ok()?,
        version: version.try_into().ok()?,
        headers: headers.into(),
        body: body.to_vec(),
    }))
}

/// One header line as `rsip`'s header tokenizer reads it: a token name, ':', spaces or tabs,
/// the value.
fn header_line(line: &[u8]) -> Option<Header> {
    let name_len = line.iter().take_while(|b| is_token(**b)).count();
    if name_len == 0 || line.get(name_len) != Some(&b':') {
        return None;
    }
    let value = &line[name_len + 1..];
    let spaces = value
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    header(&line[..name_len], &value[spaces..])
}

/// One header as `rsip` converts its tokens (names compared without case, the value as UTF-8):
/// the names our machines write map straight to their variant, the rest go through `rsip`.
fn header(name: &[u8], value: &[u8]) -> Option<Header> {
    use rsip::headers as h;
    let v = || std::str::from_utf8(value).ok().map(str::to_string);
    // `name` written exactly as `rsip` writes it: straight to its variant.
    macro_rules! known {
        ($($text:literal => $variant:ident),* $(,)?) => {
            match name {
                $($text => Header::$variant(h::$variant::new(v()?)),)*
                _ => header::Tokenizer { name, value }.try_into().ok()?,
            }
        };
    }
    Some(known! {
        b"Via" => Via, b"From" => From, b"To" => To, b"Call-ID" => CallId, b"CSeq" => CSeq,
        b"Contact" => Contact, b"Max-Forwards" => MaxForwards, b"Content-Length" => ContentLength,
        b"Content-Type" => ContentType, b"Expires" => Expires, b"Record-Route" => RecordRoute,
        b"Route" => Route,
    })
}

/// [`Via::parse`] for `SIP/2.0/UDP` (or TCP, TLS) with an IPv4 sent-by, an optional port, and
/// only `branch`, `received` and `rport` parameters, as our machines and common phones write it.
pub fn via(value: &str) -> Option<Via> {
    let rest = value.strip_prefix("SIP/2.0/")?;
    let (transport, rest) = rest.split_once(' ')?;
    if !matches!(transport, "UDP" | "TCP" | "TLS") {
        return None;
    }
    let (sent_by, params) = match rest.find(';') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, sent_port) = match sent_by.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (sent_by, None),
    };
    // std's parser takes only the dotted-quad form without leading zeros, which is also how
    // `rsip` prints the address back.
    host.parse::<std::net::Ipv4Addr>().ok()?;
    let mut via = Via {
        transport: transport.to_string(),
        host: host.to_string(),
        port: sent_port,
        branch: None,
        received: None,
        rport: Rport::Absent,
        other: Vec::new(),
    };
    params_of(params, |name, value| {
        match (name, value) {
            ("branch", Some(b)) if !b.is_empty() => via.branch = Some(b.to_string()),
            ("received", Some(r)) => match r.parse::<IpAddr>() {
                Ok(ip) => via.received = Some(ip),
                Err(_) => return false,
            },
            ("rport", None) => via.rport = Rport::Requested,
            ("rport", Some(p)) => match port(p) {
                Some(p) => via.rport = Rport::Filled(p),
                None => return false,
            },
            _ => return false,
        }
        true
    })?;
    Some(via)
}

/// A port as `rsip` and `Via::parse` read it (`u16::from_str`), digits only.
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `;name[=value]` parameters as `rsip`'s `many0(param)` reads them, the whole string consumed,
/// names non-empty: each handed to `each`, which says whether to go on. `None`: malformed, or
/// `each` stopped.
fn params_of<'a>(s: &'a str, mut each: impl FnMut(&'a str, Option<&'a str>) -> bool) -> Option<()> {
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.strip_prefix(';')?;
        let n = rest.bytes().take_while(|b| is_token(*b)).count();
        if n == 0 {
            return None;
        }
        let name = &rest[..n];
        rest = &rest[n..];
        let value = match rest.strip_prefix('=') {
            Some(r) => {
                let v = r.bytes().take_while(|b| is_token(*b)).count();
                rest = &r[v..];
                Some(&r[..v])
            }
            None => None,
        };
        if !each(name, value) {
            return None;
        }
    }
    Some(())
}

/// A name-addr value (`"Name" <sip:user@host:port;p=v>;p=v`, as From, To and Contact carry
/// it) cut as `rsip`'s typed tokenizer cuts it, when `rsip` is sure to convert it: the URI
/// simple ([`simple_uri`]) and every parameter convertible. The URI text, and the value of the
/// first parameter named `wanted` that has one.
fn name_addr<'a>(value: &'a str, wanted: &str) -> Option<(&'a str, Option<&'a str>)> {
    let open = value.find('<')?;
    let after = &value[open + 1..];
    let close = after.find('>')?;
    let uri = &after[..close];
    if !simple_uri(uri) {
        return None;
    }
    // `rsip` keeps a parameter without a value as another kind: the first with one counts.
    let mut found = None;
    params_of(&after[close + 1..], |n, v| {
        if found.is_none() && v.is_some() && n.eq_ignore_ascii_case(wanted) {
            found = v;
        }
        convertible(n)
    })?;
    Some((uri, found))
}

/// The `tag` of a From or To value, as `typed().tag()` gives it; `None`: take `rsip`'s path.
pub fn tag(value: &str) -> Option<Option<String>> {
    let (_, tag) = name_addr(value, "tag")?;
    Some(tag.map(str::to_string))
}

/// A Contact value's URI, as `typed().map(|c| c.uri)` gives it; `None`: take `rsip`'s path.
pub fn contact_uri(value: &str) -> Option<Option<rsip::Uri>> {
    let (uri, _) = name_addr(value, "")?;
    Some(rsip::Uri::try_from(uri).ok())
}

/// A Contact value's `expires` parameter, as `typed().expires()` gives it: `Some(None)` when it
/// has none; `None`: take `rsip`'s path.
pub fn contact_expires(value: &str) -> Option<Option<&str>> {
    let (_, expires) = name_addr(value, "expires")?;
    Some(expires)
}

/// Whether `rsip` turns a parameter of this name into a `Param` whatever its value (its
/// `transport` and `method` parameters parse theirs and may fail).
fn convertible(name: &str) -> bool {
    !name.eq_ignore_ascii_case("transport") && !name.eq_ignore_ascii_case("method")
}

/// `sip:[user@]host[:port](;name[=value])*` with a plain user, a dotted host and digits for a
/// port: a URI `rsip` tokenizes and converts without fail.
fn simple_uri(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("sip:") else {
        return false;
    };
    let (addr, params) = match rest.find(';') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let hostport = match addr.split_once('@') {
        Some((user, hp)) => {
            let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'+';
            if user.is_empty() || !user.bytes().all(plain) {
                return false;
            }
            hp
        }
        None => addr,
    };
    let (host, port_ok) = match hostport.split_once(':') {
        Some((h, p)) => (h, port(p).is_some()),
        None => (hostport, true),
    };
    let hosty = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    port_ok
        && !host.is_empty()
        && host.bytes().all(hosty)
        && params_of(params, |n, _| convertible(n)).is_some()
}

/// `CSeq` as `rsip` reads it (`take_until(" ")`, `space1`, the rest; `u32` and `Method` parsed
/// the same way); `None` where `rsip` would fail, so its error is the one reported.
pub fn cseq(value: &str) -> Option<(u32, Method)> {
    let (seq, rest) = value.split_once(' ')?;
    let method = rest.trim_start_matches([' ', '\t']);
    Some((seq.parse().ok()?, method.parse().ok()?))
}

/// `msg.to_string().into_bytes()`, written straight into one buffer (the same bytes: rsip's
/// `Display` joins the start line, each header and "\r\n" between them, an empty line, and the
/// body read lossily as UTF-8).
pub fn serialize(msg: &SipMessage) -> Vec<u8> {
    use std::fmt::Write as _;
    let body = msg.body();
    let mut s = String::with_capacity(512 + body.len());
    // Writing to a String cannot fail.
    let _ = match msg {
        SipMessage::Request(r) => write!(s, "{} {} {}\r\n", r.method, r.uri, r.version),
        SipMessage::Response(r) => write!(s, "{} {}\r\n", r.version, r.status_code),
    };
    for h in msg.headers().iter() {
        // The headers machines write most, without the formatting machinery; `rsip` writes
        // each as "Name: value" with these names.
        let (name, value) = match h {
            Header::Via(v) => ("Via", v.value()),
            Header::From(v) => ("From", v.value()),
            Header::To(v) => ("To", v.value()),
            Header::CallId(v) => ("Call-ID", v.value()),
            Header::CSeq(v) => ("CSeq", v.value()),
            Header::Contact(v) => ("Contact", v.value()),
            Header::MaxForwards(v) => ("Max-Forwards", v.value()),
            Header::ContentLength(v) => ("Content-Length", v.value()),
            Header::ContentType(v) => ("Content-Type", v.value()),
            h => {
                let _ = write!(s, "{h}\r\n");
                continue;
            }
        };
        for part in [name, ": ", value, "\r\n"] {
            s.push_str(part);
        }
    }
    s.push_str("\r\n");
    s.push_str(&String::from_utf8_lossy(body));
    s.into_bytes()
}
