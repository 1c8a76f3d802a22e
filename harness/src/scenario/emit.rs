//! Scenario files written from concrete cases: turns one incoming-call case (a NAT, the phone's
//! keep-alive and registration settings, when the call comes) into scenario-file TOML that
//! [`Scenario::from_str`](super::Scenario::from_str) accepts and `harness run` runs.
//!
//! This is how a property test's shrunk counterexample becomes something a field engineer can run,
//! read and attach to a ticket. The file uses the vocabulary of the hand-written catalogue
//! (`scenarios/binding-expiry.toml`): a phone `bob` behind the router `home`, the registrar/proxy
//! (the far-end proxy, or our SBC with its NAT pings) on `server`, a caller `alice` on the internet; `bob` registers, time passes, `alice` calls him,
//! and the expectations say how the call must end and whether his phone rang.
//!
//! Only what differs from a named NAT type is written into the `nat` table, so a counterexample
//! reads as "symmetric with a 1 s UDP timeout", not as a dump of every field.

use std::time::Duration;

use serde::Serialize;
use sim_nat::{NatBehaviour, NatType};

use crate::sip::KeepAlive;

/// The router between the phone and the internet.
pub const ROUTER: &str = "home";
/// Its WAN address.
pub const ROUTER_WAN: &str = "203.0.113.1";
/// Its LAN address and prefix.
pub const ROUTER_LAN: &str = "192.168.1.1/24";
/// The phone that is called, behind [`ROUTER`]; also its SIP user.
pub const PHONE: &str = "bob";
/// The phone's address.
pub const PHONE_ADDR: &str = "192.168.1.10";
/// The host of the registrar/proxy (port 5060 on its first address).
pub const PROXY_HOST: &str = "server";
/// The proxy host's addresses (the second one makes it usable as an RFC 5780 STUN host too).
pub const PROXY_ADDRS: [&str; 2] = ["203.0.113.10", "203.0.113.11"];
/// The public phone that places the call; also its SIP user.
pub const CALLER: &str = "alice";
/// The caller's address.
pub const CALLER_ADDR: &str = "198.51.100.20";

/// How the call of an [`IncomingCall`] must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallExpectation {
    /// The caller's final status: 200 when established, an error status, or 0 when nothing final
    /// came within the call's `timeout-ms`.
    pub status: u16,
    /// Whether the called phone rang (an INVITE reached it) during the run; `None` leaves it
    /// unchecked (the runner judges it only once SIP has gone quiet, so a retransmission after
    /// the call's timeout may still ring).
    pub rang: Option<bool>,
}

/// The registrar/proxy on [`PROXY_HOST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrar {
    /// The far-end NAT-handling proxy (`kind = "proxy"`).
    Proxy,
    /// Our SBC (`kind = "sbc"`), pinging registered phones with `ping` (`None`: no pings).
    Sbc { ping: Option<KeepAlive> },
}

/// One concrete incoming-call case: `bob` behind `home` registers, `wait_ms` later `alice` calls
/// him through the registrar on `server`.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCall {
    /// The scenario's name (also the directory its pcaps go to).
    pub name: String,
    /// One line for `harness list`.
    pub summary: String,
    /// Comment lines for the top of the file (symptom, root cause, fix), without the `#`.
    pub comment: Vec<String>,
    /// SIP timer T1; every SIP timer scales with it.
    pub t1_ms: u64,
    pub nat: NatBehaviour,
    /// What runs on [`PROXY_HOST`].
    pub registrar: Registrar,
    /// The phone's keep-alive, if any.
    pub keepalive: Option<KeepAlive>,
    /// The registration lifetime the phone asks for (it refreshes at half of it).
    pub expires_secs: u64,
    /// How long the phone rings before it answers.
    pub answer_after_ms: u64,
    /// The pause between the phone's registration and the call.
    pub wait_ms: u64,
    /// How long the caller waits for the call to be established or to fail.
    pub call_timeout_ms: u64,
    pub expect: CallExpectation,
}

/// A TOML value as it is written in a file: `"text"` quoted and escaped, enums by their serde
/// names (`"outbound-only"`), numbers and booleans bare.
fn value(v: impl Serialize) -> String {
    let v = toml::Value::try_from(v)
        .unwrap_or_else(|e| unreachable!("every value written here is TOML: {e}"));
    let mut out = String::new();
    write_value(&mut out, &v);
    out
}

/// Written here rather than by `toml`'s serializer: strings in an imported file come from a
/// customer's capture, and toml_write 0.1 counts a run of quotes in a `u8` (a panic on 256 of
/// them in a debug build, a wrongly quoted file in a release one).
fn write_value(out: &mut String, v: &toml::Value) {
    use std::fmt::Write;
    match v {
        toml::Value::String(s) => basic_string(out, s),
        toml::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        toml::Value::Table(t) => {
            out.push('{');
            for (i, (k, item)) in t.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if bare {
                    out.push_str(k);
                } else {
                    basic_string(out, k);
                }
                out.push_str(" = ");
                write_value(out, item);
            }
            out.push_str(if t.is_empty() { "}" } else { " }" });
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn basic_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `nat = …` value for `nat`: the name of a NAT type when it is exactly that type, otherwise
/// an inline table with the type (or `mapping` + `filtering`) and what differs from it.
pub fn nat_value(nat: &NatBehaviour) -> String {
    // Exhaustive on purpose: a new NAT option must be written here too, or it would be lost.
    let NatBehaviour {
        mapping,
        filtering,
        ports,
        udp_timeout_secs,
        refresh,
        hairpinning,
        sip_alg,
        port_range,
        pool_size,
        paired_pooling,
        port_block,
        blocked_udp_ports,
        input,
        drop_fragments,
        tcp_timeout_secs,
    } = nat;
    let named = NatType::ALL
        .into_iter()
        .find(|t| t.behaviour().mapping == *mapping && t.behaviour().filtering == *filtering);
    let (mut fields, base) = match named {
        Some(t) => (vec![format!("type = {}", value(t.as_str()))], t.behaviour()),
        None => (
            vec![
                format!("mapping = {}", value(mapping)),
                format!("filtering = {}", value(filtering)),
            ],
            NatBehaviour::new(*mapping, *filtering),
        ),
    };
    let mut differs = |key: &str, same: bool, v: String| {
        if !same {
            fields.push(format!("{key} = {v}"));
        }
    };
    differs("ports", *ports == base.ports, value(ports));
    differs(
        "udp-timeout-secs",
        *udp_timeout_secs == base.udp_timeout_secs,
        value(udp_timeout_secs),
    );
    differs(
        "tcp-timeout-secs",
        *tcp_timeout_secs == base.tcp_timeout_secs,
        tcp_timeout_secs.map(value).unwrap_or_default(),
    );
    differs("refresh", *refresh == base.refresh, value(refresh));
    differs(
        "hairpinning",
        *hairpinning == base.hairpinning,
        value(hairpinning),
    );
    differs("sip-alg", *sip_alg == base.sip_alg, value(sip_alg));
    differs(
        "port-range",
        *port_range == base.port_range,
        value(port_range),
    );
    differs("pool-size", *pool_size == base.pool_size, value(pool_size));
    differs(
        "paired-pooling",
        *paired_pooling == base.paired_pooling,
        value(paired_pooling),
    );
    differs("input", *input == base.input, value(input));
    differs(
        "drop-fragments",
        *drop_fragments == base.drop_fragments,
        value(drop_fragments),
    );
    if let Some(block) = port_block {
        fields.push(format!("port-block = {}", value(block)));
    }
    if let Some(range) = blocked_udp_ports {
        fields.push(format!("blocked-udp-ports = {}", value(range)));
    }
    match named {
        Some(t) if fields.len() == 1 => value(t.as_str()),
        _ => format!("{{ {} }}", fields.join(", ")),
    }
}

/// The `keepalive = …` value of a phone: `{ type = "crlf", interval-ms = 1000 }`.
pub fn keepalive_value(k: &KeepAlive) -> String {
    let (kind, every): (&str, Duration) = match *k {
        KeepAlive::Crlf(d) => ("crlf", d),
        KeepAlive::Options(d) => ("options", d),
        KeepAlive::Stun(d) => ("stun", d),
    };
    format!(
        "{{ type = {}, interval-ms = {} }}",
        value(kind),
        every.as_millis()
    )
}

/// A comment line broken at spaces to fit `width` columns after the `# `, continuation lines
/// indented as the catalogue indents them under `Symptom:`/`Root cause:`/`Fix:`.
pub fn wrap(line: &str, width: usize) -> String {
    const INDENT: &str = "         ";
    // A line that fits keeps its spacing (the address map is aligned in columns).
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out = String::new();
    let mut current = String::new();
    for word in line.split(' ') {
        if !current.trim().is_empty() && current.chars().count() + 1 + word.chars().count() > width
        {
            out.push_str(current.trim_end());
            out.push('\n');
            current = INDENT.to_string();
        } else if !current.is_empty() && !current.ends_with(' ') {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push_str(&current);
    out
}

/// One `[[router]]`, `[[host]]`, `[[component]]`, `[[step]]` or `[[expect]]` table: comment lines
/// above it and its keys in order, each value already written as TOML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Lines written as `# …` above the table header.
    pub comment: Vec<String>,
    pub fields: Vec<(String, String)>,
}

impl Table {
    pub fn new() -> Self {
        Table::default()
    }

    /// A key with any serialisable value (text quoted, numbers and booleans bare).
    pub fn set(mut self, key: &str, v: impl Serialize) -> Self {
        self.fields.push((key.to_string(), value(v)));
        self
    }

    /// A key whose value is already TOML (from [`nat_value`] or [`keepalive_value`]).
    pub fn raw(mut self, key: &str, toml: String) -> Self {
        self.fields.push((key.to_string(), toml));
        self
    }

    pub fn comment(mut self, line: impl Into<String>) -> Self {
        self.comment.push(line.into());
        self
    }
}

/// A whole scenario file as data, in the order the catalogue writes it: the comment header, then
/// `[scenario]`, routers, hosts, components, steps and expectations. The one TOML writer of the
/// crate: [`IncomingCall`] and `import` both build one of these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    /// Header lines, written as `# …` (`Symptom: …`, `Root cause: …`, `Fix: …`).
    pub comment: Vec<String>,
    pub name: String,
    pub summary: String,
    pub t1_ms: u64,
    pub routers: Vec<Table>,
    pub hosts: Vec<Table>,
    pub components: Vec<Table>,
    pub steps: Vec<Table>,
    pub expects: Vec<Table>,
}

impl Doc {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let mut line = |text: String| {
            s.push_str(text.trim_end());
            s.push('\n');
        };
        // `split`, not `lines`: an empty line stays as a bare `#` and separates paragraphs.
        for c in self.comment.iter().flat_map(|c| c.split('\n')) {
            line(format!("# {c}"));
        }
        if !self.comment.is_empty() {
            line(String::new());
        }
        line("[scenario]".into());
        line(format!("name = {}", value(&self.name)));
        line(format!("summary = {}", value(&self.summary)));
        line(format!("t1-ms = {}", self.t1_ms));
        for (header, tables) in [
            ("router", &self.routers),
            ("host", &self.hosts),
            ("component", &self.components),
            ("step", &self.steps),
            ("expect", &self.expects),
        ] {
            for t in tables {
                line(String::new());
                for c in t.comment.iter().flat_map(|c| c.lines()) {
                    line(format!("# {c}"));
                }
                line(format!("[[{header}]]"));
                for (k, v) in &t.fields {
                    line(format!("{k} = {v}"));
                }
            }
        }
        s
    }
}

impl IncomingCall {
    /// The scenario file: comment header, topology, components, timeline, expectations.
    pub fn to_toml(&self) -> String {
        self.to_doc().to_toml()
    }

    /// The scenario as data.
    pub fn to_doc(&self) -> Doc {
        let mut d = Doc {
            comment: self.comment.clone(),
            name: self.name.clone(),
            summary: self.summary.clone(),
            t1_ms: self.t1_ms,
            ..Doc::default()
        };
        d.routers.push(
            Table::new()
                .set("name", ROUTER)
                .set("wan", ROUTER_WAN)
                .set("lan", ROUTER_LAN)
                .raw("nat", nat_value(&self.nat)),
        );
        for (name, segment, addrs) in [
            (PHONE, ROUTER, &[PHONE_ADDR][..]),
            (PROXY_HOST, crate::topology::INTERNET, &PROXY_ADDRS[..]),
            (CALLER, crate::topology::INTERNET, &[CALLER_ADDR][..]),
        ] {
            d.hosts.push(
                Table::new()
                    .set("name", name)
                    .set("segment", segment)
                    .set("addrs", addrs),
            );
        }
        d.components.push(match &self.registrar {
            Registrar::Proxy => Table::new()
                .set("kind", "proxy")
                .set("host", PROXY_HOST)
                .set("nat-handling", "far-end"),
            Registrar::Sbc { ping } => {
                let t = Table::new().set("kind", "sbc").set("host", PROXY_HOST);
                match ping {
                    Some(p) => t.raw("ping", keepalive_value(p)),
                    None => t,
                }
            }
        });
        let mut phone = Table::new()
            .set("kind", "ua")
            .set("host", PHONE)
            .set("proxy", PROXY_HOST)
            .set("expires-secs", self.expires_secs)
            .set("answer-after-ms", self.answer_after_ms);
        if let Some(k) = &self.keepalive {
            phone = phone.raw("keepalive", keepalive_value(k));
        }
        d.components.push(phone);
        d.components.push(
            Table::new()
                .set("kind", "ua")
                .set("host", CALLER)
                .set("proxy", PROXY_HOST),
        );
        d.steps
            .push(Table::new().set("action", "register").set("ua", PHONE));
        if self.wait_ms > 0 {
            d.steps
                .push(Table::new().set("action", "wait").set("ms", self.wait_ms));
        }
        d.steps.push(
            Table::new()
                .set("action", "call")
                .set("from", CALLER)
                .set("to", PHONE)
                .set("timeout-ms", self.call_timeout_ms),
        );
        d.expects.push(
            Table::new()
                .set("kind", "registered")
                .set("ua", PHONE)
                .set("value", true),
        );
        let mut call = Table::new()
            .set("kind", "call")
            .set("from", CALLER)
            .set("status", self.expect.status);
        if self.expect.status == 0 {
            call = call.comment(format!(
                "0: no final response within the call's timeout-ms ({} ms)",
                self.call_timeout_ms
            ));
        }
        d.expects.push(call);
        if let Some(rang) = self.expect.rang {
            d.expects.push(
                Table::new()
                    .set("kind", "rang")
                    .set("ua", PHONE)
                    .set("value", rang),
            );
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sim_nat::{AlgFault, Filtering, InputPolicy, Mapping, PortAllocation, Refresh, SipAlg};

    use super::*;
    use crate::scenario::file::{Component, Expect, Step};
    use crate::scenario::Scenario;

    #[test]
    fn a_string_from_a_capture_reads_back_as_written_whatever_it_holds() {
        let odd = format!(
            "{}\\ \u{1}\ttab 'single' é{}",
            "\"".repeat(300),
            "'".repeat(300)
        );
        let v = value(std::collections::BTreeMap::from([
            ("a b", vec![odd.clone()]),
            ("plain", vec![]),
        ]));
        let back: toml::Table = toml::from_str(&format!("x = {v}")).unwrap();
        let t = back["x"].as_table().unwrap();
        assert_eq!(t["a b"].as_array().unwrap()[0].as_str(), Some(odd.as_str()));
        assert!(t["plain"].as_array().unwrap().is_empty());
        assert_eq!(value("outbound-only"), "\"outbound-only\"");
    }

    fn case(nat: NatBehaviour) -> IncomingCall {
        IncomingCall {
            name: "binding-timeout-case".into(),
            summary: "a \"quoted\" summary \\ with a backslash".into(),
            comment: vec![
                "Symptom: the phone never rings.".into(),
                "two\nlines".into(),
            ],
            t1_ms: 1000,
            nat,
            registrar: Registrar::Proxy,
            keepalive: Some(KeepAlive::Crlf(Duration::from_millis(2000))),
            expires_secs: 3600,
            answer_after_ms: 100,
            wait_ms: 1250,
            call_timeout_ms: 500,
            expect: CallExpectation {
                status: 200,
                rang: Some(true),
            },
        }
    }

    #[test]
    fn a_named_type_with_only_a_shorter_timeout_is_written_as_the_catalogue_writes_it() {
        let nat = NatType::PortRestrictedCone.behaviour().with_udp_timeout(2);
        assert_eq!(
            nat_value(&nat),
            r#"{ type = "port-restricted-cone", udp-timeout-secs = 2 }"#
        );
        assert_eq!(nat_value(&NatType::Symmetric.behaviour()), r#""symmetric""#);
        let buggy = NatType::PortRestrictedCone
            .behaviour()
            .with_sip_alg(SipAlg::Emulated(vec![AlgFault::BreakDigest]));
        assert_eq!(
            nat_value(&buggy),
            r#"{ type = "port-restricted-cone", sip-alg = { emulated = ["break-digest"] } }"#
        );
        let odd = NatBehaviour::new(Mapping::AddressDependent, Filtering::EndpointIndependent)
            .with_refresh(Refresh::OutboundOnly);
        assert_eq!(
            nat_value(&odd),
            r#"{ mapping = "address-dependent", filtering = "endpoint-independent", refresh = "outbound-only" }"#
        );
    }

    #[test]
    fn a_long_comment_wraps_at_spaces_with_the_catalogue_indent_and_keeps_every_word() {
        let long = "Root cause: the phone registers its private Contact; the registrar stores it literally and forwards the INVITE there, where the internet swallows it";
        let w = wrap(long, 60);
        let lines: Vec<&str> = w.lines().collect();
        assert!(lines.len() >= 3, "{w}");
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{w}");
        assert!(lines[1..]
            .iter()
            .all(|l| l.starts_with("         ") && !l.starts_with("          ")));
        let words: Vec<&str> = w.split_whitespace().collect();
        assert_eq!(words, long.split_whitespace().collect::<Vec<_>>());
        assert_eq!(wrap("short", 60), "short");
    }

    #[test]
    fn the_emitted_file_reads_like_the_catalogue() {
        let text = case(NatType::FullCone.behaviour().with_udp_timeout(1)).to_toml();
        for want in [
            "# Symptom: the phone never rings.\n# two\n# lines\n\n[scenario]\n",
            "nat = { type = \"full-cone\", udp-timeout-secs = 1 }\n",
            "keepalive = { type = \"crlf\", interval-ms = 2000 }\n",
            "[[step]]\naction = \"wait\"\nms = 1250\n",
            "[[expect]]\nkind = \"call\"\nfrom = \"alice\"\nstatus = 200\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    fn arb_nat() -> impl Strategy<Value = NatBehaviour> {
        let mapping = prop_oneof![
            Just(Mapping::EndpointIndependent),
            Just(Mapping::AddressDependent),
            Just(Mapping::AddressAndPortDependent),
        ];
        let filtering = prop_oneof![
            Just(Filtering::EndpointIndependent),
            Just(Filtering::AddressDependent),
            Just(Filtering::AddressAndPortDependent),
        ];
        let ports = prop_oneof![
            Just(PortAllocation::Preserve),
            Just(PortAllocation::Random),
            Just(PortAllocation::Hash),
        ];
        let alg = prop_oneof![
            Just(SipAlg::Off),
            Just(SipAlg::Kernel),
            proptest::sample::subsequence(AlgFault::ALL.to_vec(), 1..=3).prop_map(SipAlg::Emulated),
        ];
        (
            (mapping, filtering, ports, 1..=120u32),
            (any::<bool>(), any::<bool>(), alg),
            (1024..40000u16, 0..20000u16, 1..=4u8, any::<bool>()),
            (
                proptest::option::of(1..=512u16),
                proptest::option::of((10000..20000u16, 0..100u16)),
                proptest::sample::select(InputPolicy::ALL.to_vec()),
            ),
        )
            .prop_map(
                |(
                    (m, f, p, t),
                    (out_only, hairpin, alg),
                    (lo, span, pool, paired),
                    (block, blocked, input),
                )| {
                    let mut b = NatBehaviour::new(m, f)
                        .with_ports(p)
                        .with_udp_timeout(t)
                        .with_hairpinning(hairpin)
                        .with_port_range(lo, lo.saturating_add(span))
                        .with_pool(pool, paired);
                    if out_only {
                        b = b.with_refresh(Refresh::OutboundOnly);
                    }
                    b = b.with_sip_alg(alg);
                    b.port_block = block;
                    b.blocked_udp_ports = blocked.map(|(lo, n)| (lo, lo + n));
                    b.with_input(input)
                },
            )
            .prop_filter("sim-nat refuses it", |b| b.validate().is_ok())
    }

    proptest! {
        #[test]
        fn every_emitted_case_parses_back_to_the_same_case(
            nat in arb_nat(),
            keepalive in proptest::option::of((0..3u8, 1..100_000u64)),
            expires_secs in 1..=7200u64,
            wait_ms in 0..100_000u64,
            call_timeout_ms in 1..100_000u64,
            status in prop_oneof![Just(0u16), Just(200), Just(408)],
            rang in proptest::option::of(any::<bool>()),
            sbc in proptest::option::of(proptest::option::of((any::<bool>(), 1..100_000u64))),
        ) {
            let ka = |(crlf, ms): (bool, u64)| {
                let d = Duration::from_millis(ms);
                if crlf { KeepAlive::Crlf(d) } else { KeepAlive::Options(d) }
            };
            // A phone may also keep alive with STUN; an SBC pings with CRLF or OPTIONS only.
            let keepalive = keepalive.map(|(kind, ms): (u8, u64)| match kind {
                0 => ka((true, ms)),
                1 => ka((false, ms)),
                _ => KeepAlive::Stun(Duration::from_millis(ms)),
            });
            let registrar = match sbc {
                None => Registrar::Proxy,
                Some(ping) => Registrar::Sbc { ping: ping.map(ka) },
            };
            let c = IncomingCall {
                registrar,
                keepalive,
                expires_secs,
                wait_ms,
                call_timeout_ms,
                expect: CallExpectation { status, rang },
                ..case(nat.clone())
            };
            let text = c.to_toml();
            let s = Scenario::from_str("emitted.toml", &text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(s.name(), c.name.as_str());
            prop_assert_eq!(&s.file.scenario.summary, &c.summary);
            prop_assert_eq!(s.file.scenario.t1_ms, c.t1_ms);
            prop_assert_eq!(s.header.lines().next(), Some("Symptom: the phone never rings."));
            prop_assert_eq!(s.topology.routers.len(), 1);
            prop_assert_eq!(s.topology.routers[0].nat.as_ref(), Some(&nat));
            let phone = s.file.components.iter().find_map(|comp| match comp.get_ref() {
                Component::Ua { host, keepalive, expires_secs, answer_after_ms, .. }
                    if host == PHONE => Some((keepalive.clone(), *expires_secs, *answer_after_ms)),
                _ => None,
            });
            let (k, expires, answer) = phone.expect("the phone is a component");
            let k = k.map(|k| k.keepalive());
            prop_assert_eq!(k, c.keepalive);
            let registrar = s.file.components.iter().find_map(|comp| match comp.get_ref() {
                Component::Proxy { host, .. } if host == PROXY_HOST => Some(Registrar::Proxy),
                Component::Sbc { host, ping, .. } if host == PROXY_HOST => Some(Registrar::Sbc {
                    ping: ping.as_ref().map(|p| p.keepalive()),
                }),
                _ => None,
            });
            prop_assert_eq!(registrar, Some(c.registrar));
            prop_assert_eq!(expires, c.expires_secs);
            prop_assert_eq!(answer, c.answer_after_ms);
            let waited: u64 = s.file.steps.iter().map(|st| match st.get_ref() {
                Step::Wait { ms } => *ms,
                _ => 0,
            }).sum();
            prop_assert_eq!(waited, c.wait_ms);
            let call = s.file.steps.iter().find_map(|st| match st.get_ref() {
                Step::Call { from, to, timeout_ms, .. } => Some((from.clone(), to.clone(), *timeout_ms)),
                _ => None,
            });
            prop_assert_eq!(call, Some((CALLER.to_string(), PHONE.to_string(), c.call_timeout_ms)));
            let expects: Vec<String> = s.file.expects.iter().map(|e| match e.get_ref() {
                Expect::Call { from, status } => format!("call {from} {status}"),
                Expect::Registered { ua, value } => format!("registered {ua} {value}"),
                Expect::Rang { ua, value } => format!("rang {ua} {value}"),
                other => format!("{other:?}"),
            }).collect();
            let mut want = vec![
                format!("registered {PHONE} true"),
                format!("call {CALLER} {status}"),
            ];
            want.extend(rang.map(|r| format!("rang {PHONE} {r}")));
            prop_assert_eq!(expects, want);
        }
    }
}
