//! A trace as a plain-text SIP ladder: what a field engineer pastes into a ticket.
//!
//! ```text
//!   #  time   at          from                  to                    what
//!   1  0      bob         192.168.2.10:5060  →  203.0.113.10:5060     REGISTER sip:203.0.113.10
//!                           Via: SIP/2.0/UDP 192.168.2.10:5060;branch={b1};rport
//!                           Contact: <sip:bob@192.168.2.10:5060>
//! ```
//!
//! Normalised for snapshots: branch and tag values become `{b1}`, `{t1}` …, and ports from the
//! ephemeral and random-mapping ranges (≥ 30000, which a topology never fixes) become `{p1}` …,
//! each in order of first appearance, so a re-run renders byte for byte the same while the
//! addresses and fixed ports a topology determines stay readable. Time is shown in whole T1 units
//! when T1 is given (retransmission schedules read as 0, 1, 3, 7 …), otherwise as order only.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::time::Duration;

use super::{Entry, Payload, Trace};

/// Renders a [`Trace`].
#[derive(Debug, Clone)]
pub struct Ladder<'a> {
    trace: &'a Trace,
    vantages: Option<BTreeSet<String>>,
    t1: Option<Duration>,
    normalize: bool,
    show_rtp: bool,
    show_events: bool,
    grouped: bool,
    sip_only: bool,
    /// Public ports a NAT chose instead of keeping the inside port: random per run, whatever
    /// their value.
    moved: BTreeSet<std::net::SocketAddrV4>,
}

/// Placeholders for values that change between runs, numbered by first appearance.
#[derive(Default)]
struct Normalizer {
    seen: HashMap<(char, String), usize>,
    next: HashMap<char, usize>,
    moved: BTreeSet<std::net::SocketAddrV4>,
}

impl Normalizer {
    fn placeholder(&mut self, kind: char, value: &str) -> String {
        let key = (kind, value.to_string());
        let n = match self.seen.get(&key) {
            Some(n) => *n,
            None => {
                let n = self.next.entry(kind).or_insert(0);
                *n += 1;
                self.seen.insert(key, *n);
                *n
            }
        };
        format!("{{{kind}{n}}}")
    }

    /// Replaces `param=value` tokens (branch, tag) and unstable ports in `text`.
    fn apply(&mut self, text: &str) -> String {
        let mut out = text.to_string();
        for (param, kind) in [("branch=", 'b'), ("tag=", 't')] {
            let mut result = String::new();
            let mut rest = out.as_str();
            while let Some(i) = rest.find(param) {
                let (before, after) = rest.split_at(i + param.len());
                result.push_str(before);
                let end = after
                    .find(|c: char| c == ';' || c == ',' || c == '>' || c.is_whitespace())
                    .unwrap_or(after.len());
                result.push_str(&self.placeholder(kind, &after[..end]));
                rest = &after[end..];
            }
            result.push_str(rest);
            out = result;
        }
        let out = self.random_numbers(&out);
        self.ports(&out)
    }

    /// Values other stacks draw at random or from memory: a response's CSeq number of two or
    /// more digits (`(16962 REGISTER)`: baresip starts CSeq at random below 32768, RFC 3261
    /// §8.1.1.5, so one run in ~3000 draws a single digit and shows it) and pointer-like `0x…`
    /// hex (baresip's Contact user `alice-0x5594fefeeb80`). Our own UA and SIPp count CSeq from
    /// 1 and a catalogue call stays below 10, so their numbers stay readable.
    fn random_numbers(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(['(', '0']) {
            let (before, at) = rest.split_at(i);
            out.push_str(before);
            let digits = |t: &str, hex: bool| {
                t.find(|c: char| !(c.is_ascii_digit() || hex && c.is_ascii_hexdigit()))
                    .unwrap_or(t.len())
            };
            if let Some(num) = at.strip_prefix('(') {
                let n = digits(num, false);
                let method = &num[n..];
                if n >= 2
                    && method.starts_with(' ')
                    && method[1..].starts_with(|c: char| c.is_ascii_uppercase())
                {
                    out.push('(');
                    out.push_str(&self.placeholder('c', &num[..n]));
                    rest = &num[n..];
                    continue;
                }
            } else if let Some(hex) = at.strip_prefix("0x") {
                let n = digits(hex, true);
                let prev_alnum = before
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
                if n >= 6 && !prev_alnum {
                    out.push_str(&self.placeholder('x', &hex[..n]));
                    rest = &hex[n..];
                    continue;
                }
            }
            let ch = at.chars().next().expect("found");
            out.push(ch);
            rest = &at[ch.len_utf8()..];
        }
        out.push_str(rest);
        out
    }

    /// Ports ≥ 30000 (the kernel's ephemeral range and beyond) after `:`, `rport=` or
    /// `m=audio `, and any port a NAT moved (`IP:PORT` of [`Ladder::moved_ports`]): masquerade
    /// picks those at random from the whole range.
    fn ports(&mut self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
                let end = (i..bytes.len())
                    .find(|&j| !bytes[j].is_ascii_digit())
                    .unwrap_or(bytes.len());
                let num = &text[i..end];
                let before = &text[..i];
                // `IP:PORT`, and `IP~PORT` in Kamailio-style `;alias=IP~PORT~1`.
                let in_port_position = (before.ends_with(':') || before.ends_with('~'))
                    && before[..before.len() - 1]
                        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .next()
                        .is_some_and(|ip| ip.split('.').count() == 4)
                    || before.ends_with("rport=")
                    || before.ends_with("m=audio ");
                // `IP:PORT` of a moved binding; a bare port (rport=, m=audio, alias) by number.
                let port = num.parse::<u16>().ok();
                let moved = match before.strip_suffix(':') {
                    Some(b) => b
                        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .next()
                        .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
                        .zip(port)
                        .is_some_and(|(ip, p)| {
                            self.moved.contains(&std::net::SocketAddrV4::new(ip, p))
                        }),
                    None => port.is_some_and(|p| self.moved.iter().any(|m| m.port() == p)),
                };
                match num.parse::<u32>() {
                    Ok(_) if in_port_position && moved => {
                        out.push_str(&self.placeholder('p', num));
                    }
                    Ok(p) if in_port_position && (30000..=65535).contains(&p) => {
                        out.push_str(&self.placeholder('p', num));
                    }
                    _ => out.push_str(num),
                }
                i = end;
            } else {
                let ch = text[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }
}

impl<'a> Ladder<'a> {
    pub fn new(trace: &'a Trace) -> Self {
        Ladder {
            trace,
            vantages: None,
            t1: None,
            normalize: true,
            show_rtp: true,
            show_events: true,
            grouped: false,
            sip_only: false,
            moved: BTreeSet::new(),
        }
    }

    /// Public `IP:PORT`s a NAT allocated instead of the inside port (from the run's binding
    /// events): placeholders in a snapshot, since masquerade picks them at random.
    pub fn moved_ports(mut self, moved: impl IntoIterator<Item = std::net::SocketAddrV4>) -> Self {
        self.moved.extend(moved);
        self
    }

    /// Only these vantage points (`alice`, `home:wan` …); events are always shown.
    pub fn vantages<I: IntoIterator<Item = S>, S: Into<String>>(mut self, v: I) -> Self {
        self.vantages = Some(v.into_iter().map(Into::into).collect());
        self
    }

    /// Show time as whole multiples of T1.
    pub fn t1(mut self, t1: Duration) -> Self {
        self.t1 = Some(t1);
        self
    }

    /// Keep run-specific values (for a terminal, not a snapshot).
    pub fn raw(mut self) -> Self {
        self.normalize = false;
        self
    }

    /// Packets only: events come from other clocks (conntrack, the components' timers), so
    /// their place among packets stamped within the same millisecond can differ from run to run.
    /// Snapshots leave them out.
    pub fn without_events(mut self) -> Self {
        self.show_events = false;
        self
    }

    /// SIP only, without OPTIONS pings. Media, TURN and keep-alive packets come from several
    /// independent timers at once
    /// (two phones' RTP, two allocations, periodic pings), so which flow shows up first and how
    /// many packets a
    /// run collapses into differ between runs; a snapshot keeps what is causal and asserts media
    /// through its verdict instead.
    pub fn sip_only(mut self) -> Self {
        self.sip_only = true;
        self
    }

    /// Leave RTP out entirely (it is summarised as runs otherwise).
    pub fn without_rtp(mut self) -> Self {
        self.show_rtp = false;
        self
    }

    /// Snapshot layout: one block per SIP transaction (top-Via branch) or per non-SIP flow,
    /// blocks in order of first appearance, time counted from the block's first packet.
    ///
    /// Two independent timers (a UAS retransmitting 200 OK, a UAC retransmitting INVITE) fire
    /// within the same millisecond often enough that a global order flips between runs; inside one
    /// transaction every packet is caused by the one before, so the order is fixed, and offsets
    /// from the transaction's start do not accumulate the delays of the steps before it.
    pub fn by_transaction(mut self) -> Self {
        self.grouped = true;
        self
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let entries = self.trace.entries();
        let mut i = 0;
        while i < entries.len() {
            let e = &entries[i];
            i += 1;
            match e {
                Entry::Event { .. } if !self.show_events => {}
                Entry::Event { at, source, text } => rows.push(Row {
                    at: *at,
                    group: format!("event {source}"),
                    title: String::new(),
                    dialog: None,
                    kind: String::new(),
                    line: format!("{:<12} ** {text}", source),
                    details: Vec::new(),
                }),
                Entry::Packet {
                    at,
                    vantage,
                    src,
                    dst,
                    payload,
                    ..
                } => {
                    let label = vantage.label();
                    if self.vantages.as_ref().is_some_and(|v| !v.contains(&label)) {
                        continue;
                    }
                    if self.sip_only && !matches!(payload, Payload::Sip(s) if !is_ping(s)) {
                        continue;
                    }
                    let mut details: Vec<String> = Vec::new();
                    let (src_s, dst_s) = (src.to_string(), dst.to_string());
                    let flow = if src_s < dst_s {
                        format!("flow {src_s} {dst_s}")
                    } else {
                        format!("flow {dst_s} {src_s}")
                    };
                    let mut group = flow.clone();
                    let mut title = String::new();
                    let mut dialog = None;
                    let what = match payload {
                        Payload::Sip(s) => {
                            if let (Some(id), Some(cseq)) = (&s.call_id, &s.cseq) {
                                let mut parts = cseq.split_whitespace();
                                let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                                let rank = match parts.next() {
                                    Some("CANCEL") => 1,
                                    Some("ACK") => 2,
                                    _ => 0,
                                };
                                dialog = Some((id.clone(), n, rank));
                            }
                            if let Some(v) = s.via.first() {
                                details.push(format!("Via: {v}"));
                                if let Some(b) =
                                    v.split(';').find_map(|p| p.trim().strip_prefix("branch="))
                                {
                                    group = format!("branch {b}");
                                }
                            }
                            if let Some(c) = &s.contact {
                                details.push(format!("Contact: {c}"));
                            }
                            if let Some(c) = &s.sdp_c {
                                details.push(format!("c={c}"));
                            }
                            if let Some(m) = &s.sdp_m {
                                details.push(format!("m={m}"));
                            }
                            let mut w = s.first_line.clone();
                            if s.is_response() {
                                if let Some(c) = &s.cseq {
                                    w.push_str(&format!(" ({c})"));
                                }
                            } else {
                                title = w.clone();
                            }
                            if s.malformed {
                                w.push_str("  [malformed]");
                            }
                            w
                        }
                        _ if rtp_of(payload).is_some() => {
                            // Collapse the run of RTP on the same path (and, relayed, through the
                            // same TURN carrier) into one line.
                            let (payload_type, carrier) = rtp_of(payload).expect("guarded");
                            let mut count = 1;
                            while i < entries.len() {
                                match &entries[i] {
                                    Entry::Packet {
                                        vantage: v2,
                                        src: s2,
                                        dst: d2,
                                        payload: p2,
                                        ..
                                    } if v2 == vantage
                                        && s2 == src
                                        && d2 == dst
                                        && rtp_of(p2).is_some_and(|(_, c)| c == carrier) =>
                                    {
                                        count += 1;
                                        i += 1;
                                    }
                                    Entry::Packet { vantage: v2, .. }
                                        if self
                                            .vantages
                                            .as_ref()
                                            .is_some_and(|v| !v.contains(&v2.label())) =>
                                    {
                                        i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            if !self.show_rtp {
                                continue;
                            }
                            match carrier {
                                Some(how) => format!("RTP PT {payload_type} via {how} ×{count}"),
                                None => format!("RTP PT {payload_type} ×{count}"),
                            }
                        }
                        other => other.summary(),
                    };
                    let (from, to) = match payload {
                        Payload::Icmp(_) => (src.ip().to_string(), dst.ip().to_string()),
                        _ => (src_s, dst_s),
                    };
                    rows.push(Row {
                        at: *at,
                        group,
                        title,
                        dialog,
                        kind: what.clone(),
                        line: format!("{label:<12} {from:<22} →  {to:<22} {what}"),
                        details,
                    });
                }
            }
        }
        rows
    }

    /// `d` in whole T1, rounded with a bias towards the lower unit: a loaded machine makes
    /// packets late far more often and by more than it makes them early (a timer never fires
    /// early; only a late first copy makes the next one look early), so a response 60 % of a T1
    /// late still reads as on time and one 30 % early as well.
    fn t1_units(&self, d: Duration) -> String {
        match self.t1 {
            Some(t1) => format!("{}", t1_offset(d.as_secs_f64() / t1.as_secs_f64())),
            None => String::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut norm = Normalizer {
            moved: self.moved.clone(),
            ..Normalizer::default()
        };
        let mut out = String::new();
        let time_head = match (self.t1.is_some(), self.grouped) {
            (true, true) => "+T1",
            (true, false) => "T1",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:>3}  {:>4}  {:<12} {:<22}    {:<22} what",
            "#", time_head, "at", "from", "to"
        );
        let rows = self.rows();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut group_start: HashMap<&str, std::time::SystemTime> = HashMap::new();
        if self.grouped {
            let mut first: HashMap<&str, usize> = HashMap::new();
            let mut call_first: HashMap<&str, usize> = HashMap::new();
            let mut group_dialog: HashMap<&str, (usize, u32, u8)> = HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                first.entry(r.group.as_str()).or_insert(i);
                group_start.entry(r.group.as_str()).or_insert(r.at);
                if let Some((id, n, rank)) = &r.dialog {
                    let c = *call_first.entry(id.as_str()).or_insert(i);
                    group_dialog
                        .entry(r.group.as_str())
                        .or_insert((c, *n, *rank));
                }
            }
            let key = |g: &str| {
                let f = first[g];
                let (c, n, rank) = group_dialog.get(g).copied().unwrap_or((f, 0, 0));
                (c, n, rank, f)
            };
            // Inside a transaction, each message with its copies and retransmissions, messages in
            // order of first appearance: a UAC's INVITE retransmissions and the 200 OKs a UAS
            // retransmits towards it run on two independent timers, and only their relative
            // order, not each one's sequence, changes between runs.
            let mut kind_first: HashMap<(&str, &str), usize> = HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                kind_first
                    .entry((r.group.as_str(), r.kind.as_str()))
                    .or_insert(i);
            }
            order.sort_by_key(|&i| {
                let r = &rows[i];
                (
                    key(r.group.as_str()),
                    kind_first[&(r.group.as_str(), r.kind.as_str())],
                    i,
                )
            });
        }
        let start = self.trace.start();
        let mut current_group: Option<&str> = None;
        let mut last_copy: HashMap<(String, Vec<String>), std::time::SystemTime> = HashMap::new();
        for (n, &i) in order.iter().enumerate() {
            let r = &rows[i];
            if self.grouped && current_group != Some(r.group.as_str()) {
                current_group = Some(r.group.as_str());
                let title = rows
                    .iter()
                    .find(|x| x.group == r.group && !x.title.is_empty())
                    .map(|x| x.title.clone())
                    .unwrap_or_else(|| r.group.clone());
                let _ = writeln!(out, "── {} ──", norm.apply(&title));
            }
            // A retransmission (the same message again at the same vantage) shows the gap since
            // its previous copy, `↻1 ↻2 ↻4 …`: the timer doubling a field engineer looks for, and
            // free of the lateness that accumulates over a long retransmission schedule.
            let identity = (r.line.clone(), r.details.clone());
            let previous = if self.grouped {
                last_copy.insert(identity, r.at)
            } else {
                None
            };
            let base = match (previous, self.grouped) {
                (Some(p), _) => Some(p),
                (None, true) => group_start.get(r.group.as_str()).copied(),
                (None, false) => start,
            };
            let offset = base
                .and_then(|b| r.at.duration_since(b).ok())
                .unwrap_or_default();
            let time = match (previous, self.t1) {
                (Some(_), Some(t1)) => format!("↻{}", retransmission_gap(offset, t1)),
                _ => self.t1_units(offset),
            };
            let mut line = format!("{:>3}  {:>4}  {}", n + 1, time, r.line);
            for d in &r.details {
                line.push_str(&format!("\n{:>44}{d}", ""));
            }
            if self.normalize {
                line = norm.apply(&line);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// An offset in T1 as the ladder shows it: whole T1 below 6, even numbers below 12, multiples
/// of 4 above. A loaded machine fires a timer 100–150 ms late (seen: a 4 s answer at T1 = 200 ms
/// arriving 0.7 T1 late), and lateness grows with the wait, so a long wait ("200 OK at 20·T1")
/// gets a coarser step; each step rounds with a bias towards late, as timers only ever are.
fn t1_offset(units: f64) -> u64 {
    let step = match units {
        u if u >= 12.0 => 4.0,
        u if u >= 6.0 => 2.0,
        _ => 1.0,
    };
    ((units / step + 0.3).floor() * step) as u64
}

/// A retransmission gap in T1, snapped to the power of two the RFC 3261 timers produce (T1·2ᵏ,
/// capped at T2): a loaded machine can send the first copy late, shortening the first gap, and
/// rounding on a log scale keeps the ladder the same run to run.
fn retransmission_gap(gap: Duration, t1: Duration) -> u64 {
    let units = (gap.as_secs_f64() / t1.as_secs_f64()).max(0.5);
    2u64.pow(units.log2().round().max(0.0) as u32)
}

/// The payload type of RTP, and the TURN carrier it came in if relayed.
fn rtp_of(p: &Payload) -> Option<(u8, Option<super::TurnCarrier>)> {
    match p {
        Payload::Rtp { payload_type, .. } => Some((*payload_type, None)),
        _ => match p.carried()? {
            (how, Payload::Rtp { payload_type, .. }) => Some((*payload_type, Some(how))),
            _ => None,
        },
    }
}

/// An OPTIONS transaction: the keep-alive ping of phones and SBCs. Periodic, so how many fall
/// inside a run depends on timing; snapshots leave them out (expectations count them instead).
pub(crate) fn is_ping(s: &super::SipSummary) -> bool {
    s.first_line.starts_with("OPTIONS ")
        || s.cseq.as_deref().is_some_and(|c| c.ends_with(" OPTIONS"))
}

/// One rendered line before ordering.
struct Row {
    at: std::time::SystemTime,
    /// Transaction (`branch …`), flow or event source.
    group: String,
    /// A request line that names the group, if this row is a request.
    title: String,
    /// Call-ID, CSeq number and method rank of a SIP row: orders transactions of one call as
    /// the call does (INVITE, CANCEL, ACK of CSeq 1, then BYE of CSeq 2), whatever the race
    /// between a proxy forwarding one and a phone sending the next.
    dialog: Option<(String, u32, u8)>,
    /// What the packet is (`INVITE sip:…`, `SIP/2.0 200 OK (1 INVITE)`), whatever the vantage.
    kind: String,
    line: String,
    details: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_offsets_round_to_coarser_steps_and_tolerate_lateness() {
        for (units, shown) in [
            (0.0, 0),
            (0.6, 0),
            (0.8, 1),
            (20.0, 20),
            (20.7, 20),
            (22.7, 20),
            (18.9, 20),
            (64.0, 64),
            (66.5, 64),
            (40.0, 40),
            (7.0, 6),
            (8.2, 8),
            (9.0, 8),
        ] {
            assert_eq!(t1_offset(units), shown, "{units}");
        }
    }

    #[test]
    fn branches_tags_and_random_ports_get_stable_placeholders() {
        let mut n = Normalizer::default();
        let a = n.apply(
            "Via: SIP/2.0/UDP 203.0.113.1:41234;branch=z9hG4bKabc;rport=41234;received=203.0.113.1",
        );
        let b = n.apply("To: <sip:bob@x>;tag=98765 from 203.0.113.1:41234 and 192.168.1.10:5060 branch=z9hG4bKabc");
        assert_eq!(
            a,
            "Via: SIP/2.0/UDP 203.0.113.1:{p1};branch={b1};rport={p1};received=203.0.113.1"
        );
        assert_eq!(
            b,
            "To: <sip:bob@x>;tag={t1} from 203.0.113.1:{p1} and 192.168.1.10:5060 branch={b1}"
        );
    }

    #[test]
    fn retransmission_gaps_snap_to_the_timer_doubling() {
        let t1 = Duration::from_millis(100);
        let gap = |ms| retransmission_gap(Duration::from_millis(ms), t1);
        assert_eq!(
            [gap(40), gap(100), gap(190), gap(420), gap(790)],
            [1, 1, 2, 4, 8]
        );
    }

    #[test]
    fn a_port_a_nat_moved_is_a_placeholder_whatever_its_value() {
        let mut n = Normalizer {
            moved: ["203.0.113.1:9833".parse().unwrap()].into(),
            ..Normalizer::default()
        };
        assert_eq!(
            n.apply("203.0.113.1:9833 → 198.51.100.1:10000 rport=9833 m=audio 9833 RTP/AVP 0"),
            "203.0.113.1:{p1} → 198.51.100.1:10000 rport={p1} m=audio {p1} RTP/AVP 0"
        );
        // The same number elsewhere is another host's fixed port.
        assert_eq!(n.apply("198.51.100.20:9833"), "198.51.100.20:9833");
    }

    #[test]
    fn alias_ports_are_normalised() {
        let mut n = Normalizer::default();
        assert_eq!(
            n.apply("<sip:bob@203.0.113.10:5060;alias=198.51.100.1~44388~1>"),
            "<sip:bob@203.0.113.10:5060;alias=198.51.100.1~{p1}~1>"
        );
    }

    #[test]
    fn fixed_ports_and_non_port_numbers_stay() {
        let mut n = Normalizer::default();
        assert_eq!(
            n.apply("CSeq: 31337 INVITE 203.0.113.10:3478"),
            "CSeq: 31337 INVITE 203.0.113.10:3478"
        );
        assert_eq!(n.apply("m=audio 40000 RTP/AVP 0"), "m=audio {p1} RTP/AVP 0");
        assert_eq!(n.apply("SIP/2.0 200 OK (2 BYE)"), "SIP/2.0 200 OK (2 BYE)");
    }

    #[test]
    fn random_cseqs_and_pointer_contact_users_get_placeholders() {
        let mut n = Normalizer::default();
        assert_eq!(
            n.apply("SIP/2.0 200 OK (16962 REGISTER) <sip:alice-0x5594fefeeb80@192.168.1.10:5060>"),
            "SIP/2.0 200 OK ({c1} REGISTER) <sip:alice-{x1}@192.168.1.10:5060>"
        );
        assert_eq!(
            n.apply("(16963 REGISTER) alice-0x5594fefeeb80 (2024) a0x123456"),
            "({c2} REGISTER) alice-{x1} (2024) a0x123456"
        );
        assert_eq!(
            n.apply("(995 REGISTER) (16962 REGISTER) (1 INVITE)"),
            "({c3} REGISTER) ({c1} REGISTER) (1 INVITE)"
        );
    }
}
