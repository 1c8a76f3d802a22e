//! Renders a [`NatBehaviour`] into the nftables ruleset and conntrack settings of a router.
//!
//! Linux conntrack by itself is an endpoint-independent-mapping, address-and-port-dependent
//! filtering NAT that refreshes in both directions. Every other point of the RFC 4787 space is
//! built from the recipes measured in `shared/kernel-facts.md`:
//! - mapping comes from the source-NAT statement (`snat` keeps ports, `fully-random` or a `jhash`
//!   over the fields the mapping depends on changes them);
//! - looser filtering comes from a dynamic map `fc` (external port → internal endpoint) learnt
//!   *after* source NAT and used to DNAT new inbound flows, guarded for address-dependent filtering
//!   by a dynamic set of (external port, remote address) the inside has sent to;
//! - outbound-only refresh comes from a dynamic set refreshed on the outbound path only that guards
//!   inbound packets;
//! - a static port forward ([`PortForward`]) DNATs new inbound flows to its ports before any
//!   filter is asked, is exempt from the outbound-only guard and opens its ports in a
//!   `blocked-udp-ports` firewall, and source-NATs what its host sends from them to the same WAN
//!   port (a port-preserving `snat` ahead of the mapping's own);
//! - the binding timeout is the per-namespace conntrack UDP timeouts plus the same timeout on every
//!   dynamic set, so the kernel's binding and ours die together.
//!
//! nft 1.0.6 (Debian 12) cannot express two things in JSON: a map whose data is a concatenation
//! (it silently creates a *set* and later segfaults) and the `update @map { key : value }`
//! statement ("stmt ops map have no json callback"). Those travel as nft text: the table and the
//! `fc` map in [`Ruleset::prelude`], the two learning rules in [`Ruleset::epilogue`]; everything
//! else is the typed JSON of the `nftables` crate. Apply prelude, JSON, epilogue, in that order.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::expr::{self, Expression, NamedExpression};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables, SetType, SetTypeValue};
use nftables::stmt::{self, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::{
    Error, Filtering, InputPolicy, Mapping, NatBehaviour, PortAllocation, PortForward, Refresh,
    SipAlg,
};

/// Name of the table every NAT rule lives in, so one `delete table` undoes the whole NAT.
pub const TABLE: &str = "snh_nat";

/// Priority of the fragment-dropping chain: below conntrack's defragmentation
/// (`NF_IP_PRI_CONNTRACK_DEFRAG`, -400), so the chain sees the fragments themselves. Measured: a
/// chain at -300 sees only the reassembled datagram.
pub const BEFORE_DEFRAG: i32 = -450;

/// The bits of the IPv4 `frag-off` field that make a packet a fragment: more-fragments (0x2000)
/// and the 13-bit offset (0x1fff). DF (0x4000) is not one of them.
const FRAGMENT_BITS: u32 = 0x3fff;

/// The router's interfaces and addresses the ruleset refers to.
#[derive(Debug, Clone)]
pub struct RouterPorts {
    /// Interface towards the outside (the public segment or the carrier's network).
    pub wan: String,
    /// Interface towards the inside (the LAN bridge).
    pub lan: String,
    /// The router's external address, which mappings use (the first of its pool).
    pub public: Ipv4Addr,
    /// Inside addresses that get a port block each, in block order (carrier-grade NAT).
    pub subscribers: Vec<Ipv4Addr>,
    /// Static port forwards to inside hosts, on the WAN address [`Self::public`].
    pub forwards: Vec<PortForward>,
}

/// What a router namespace needs to behave as a [`NatBehaviour`].
#[derive(Debug, Clone)]
pub struct Ruleset {
    /// nft text, first: replaces any older version of [`TABLE`] and creates the `fc` map.
    pub prelude: String,
    /// The same for a router that has no NAT table yet: without `delete table`, whose kernel
    /// cleanup `nft` waits for (≈ 10 ms, a third of a topology's bring-up, measured).
    pub prelude_fresh: String,
    /// Typed ruleset for `nft -j -f -`, second.
    pub json: Nftables<'static>,
    /// nft text, last: the rules that learn bindings into `fc`.
    pub epilogue: String,
    /// `/proc/sys` paths (relative to `/proc/sys/`) and values to write in the router namespace.
    pub sysctls: Vec<(String, String)>,
}

impl Ruleset {
    /// The JSON document as `nft -j -f -` reads it.
    pub fn json_string(&self) -> String {
        serde_json::to_string(&self.json).expect("nftables schema always serializes")
    }
}

/// Every per-namespace conntrack sysctl some behaviour's [`sysctls`] may write: what a router
/// reused for another behaviour must have put back to its own earlier value, as a behaviour
/// that does not name one leaves it as it found it.
pub const CONNTRACK_SYSCTLS: [&str; 3] = [
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
];

/// The sysctls `nat` needs in its router's namespace (forwarding, and the conntrack timeouts
/// that are its binding timeouts), as (path under `/proc/sys`, value).
pub fn sysctls(nat: &NatBehaviour) -> Vec<(String, String)> {
    let secs = nat.udp_timeout_secs.to_string();
    let mut out = vec![
        ("net/ipv4/ip_forward".into(), "1".into()),
        (CONNTRACK_SYSCTLS[0].into(), secs.clone()),
        (CONNTRACK_SYSCTLS[1].into(), secs),
    ];
    if let Some(tcp) = nat.tcp_timeout_secs {
        out.push((CONNTRACK_SYSCTLS[2].into(), tcp.to_string()));
    }
    out
}

/// Builds the ruleset and conntrack settings that make a router behave as `nat`.
pub fn render(nat: &NatBehaviour, ports: &RouterPorts) -> Result<Ruleset, Error> {
    nat.validate()?;
    PortForward::validate_all(&ports.forwards)?;
    let t = nat.udp_timeout_secs;
    let mut b = Builder::default();

    // Delete-then-create: `add table` is idempotent, `delete` then empties any older version, so
    // a behaviour can be changed mid-scenario by rendering again.
    let fc_map = format!(
        "add map ip {TABLE} fc {{ type inet_service : ipv4_addr . inet_service; flags timeout; \
         timeout {t}s; }}\n"
    );
    let prelude =
        format!("add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip {TABLE}\n{fc_map}");
    let prelude_fresh = format!("add table ip {TABLE}\n{fc_map}");
    let address_dependent = nat.filtering == Filtering::AddressDependent;
    let outbound_only = nat.refresh == Refresh::OutboundOnly;
    if address_dependent {
        b.set("peers", &[SetType::InetService, SetType::Ipv4Addr], t);
    }
    if outbound_only {
        b.set(
            "out",
            &[
                SetType::InetService,
                SetType::Ipv4Addr,
                SetType::InetService,
            ],
            t,
        );
        b.set("bound", &[SetType::InetService], t);
    }
    if nat.sip_alg == SipAlg::Kernel {
        b.cmd(NfCmd::Add(NfListObject::CTHelper(schema::CTHelper {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: "sip5060".into(),
            handle: None,
            _type: "sip".into(),
            protocol: Some("udp".into()),
            l3proto: Some("ip".into()),
        })));
    }

    if nat.drop_fragments {
        b.chain(
            "pre_frag",
            NfChainType::Filter,
            NfHook::Prerouting,
            BEFORE_DEFRAG,
        );
        // Every fragment, the first one too (MF set or a non-zero offset): nothing of the
        // datagram reaches conntrack's reassembly. Measured: dropping only the non-initial ones
        // loses the datagram as well (the first waits in the router's reassembly queue and
        // expires after `ipfrag_time`, 30 s, without an ICMP error), but leaves kernel state
        // behind for no difference on the wire.
        b.rule(
            "pre_frag",
            vec![
                neq(
                    Expression::BinaryOperation(Box::new(expr::BinaryOperation::AND(
                        payload("ip", "frag-off"),
                        Expression::Number(FRAGMENT_BITS),
                    ))),
                    Expression::Number(0),
                ),
                drop(),
            ],
        );
    }
    if outbound_only {
        b.chain("pre_raw", NfChainType::Filter, NfHook::Prerouting, -300);
    }
    b.chain("pre_filter", NfChainType::Filter, NfHook::Prerouting, -150);
    b.chain("pre_nat", NfChainType::NAT, NfHook::Prerouting, -100);
    b.chain("post_nat", NfChainType::NAT, NfHook::Postrouting, 100);
    b.chain("post_learn", NfChainType::Filter, NfHook::Postrouting, 200);
    if nat.input != InputPolicy::Accept {
        b.chain("input", NfChainType::Filter, NfHook::Input, 0);
    }
    if let Some((lo, hi)) = nat.blocked_udp_ports {
        b.chain("forward", NfChainType::Filter, NfHook::Forward, 0);
        let range = || {
            Expression::Range(Box::new(expr::Range {
                range: [Expression::Number(lo.into()), Expression::Number(hi.into())],
            }))
        };
        // A port forward opens its ports for its host, as router firmware adds an accept rule
        // for each forward (OpenWrt's redirects do): inbound after DNAT, outbound before SNAT.
        for f in &ports.forwards {
            for (addr, field) in [("daddr", "dport"), ("saddr", "sport")] {
                b.rule(
                    "forward",
                    vec![
                        eq(payload("ip", addr), s(&f.to.to_string())),
                        eq(payload("udp", field), port_range(f.ports)),
                        Statement::Accept(None),
                    ],
                );
            }
        }
        for field in ["dport", "sport"] {
            b.rule("forward", vec![eq(payload("udp", field), range()), drop()]);
        }
    }

    let wan_in = || eq(meta(expr::MetaKey::Iifname), s(&ports.wan));
    let wan_out = || eq(meta(expr::MetaKey::Oifname), s(&ports.wan));
    let lan_in = || eq(meta(expr::MetaKey::Iifname), s(&ports.lan));
    let lan_out = || eq(meta(expr::MetaKey::Oifname), s(&ports.lan));
    let udp = || eq(meta(expr::MetaKey::L4proto), s("udp"));

    // --- pre_filter: what may enter at all ----------------------------------------------------
    if nat.sip_alg == SipAlg::Kernel {
        b.rule(
            "pre_filter",
            vec![
                eq(payload("udp", "dport"), Expression::Number(5060)),
                Statement::CTHelper("sip5060".into()),
            ],
        );
    }
    if outbound_only {
        // A forwarded port admits whatever arrives: the forward is a standing rule, not a binding
        // the inside has to keep alive.
        for f in &ports.forwards {
            b.rule(
                "pre_raw",
                vec![
                    wan_in(),
                    udp(),
                    eq(payload("ip", "daddr"), s(&ports.public.to_string())),
                    eq(payload("udp", "dport"), port_range(f.ports)),
                    Statement::Accept(None),
                ],
            );
        }
        // An inbound packet gets in only while an *outbound* packet has refreshed its binding:
        // towards that very endpoint, or — for looser filtering — any binding on the port (EIF) or
        // one towards that address (ADF). Dropped at raw priority, before conntrack sees it, so a
        // refused packet cannot refresh (or, arriving first, poison) a conntrack entry either.
        let mut rule = vec![
            wan_in(),
            udp(),
            neq(
                concat(vec![
                    payload("udp", "dport"),
                    payload("ip", "saddr"),
                    payload("udp", "sport"),
                ]),
                s("@out"),
            ),
        ];
        match nat.filtering {
            Filtering::EndpointIndependent => {
                rule.push(neq(payload("udp", "dport"), s("@bound")));
            }
            Filtering::AddressDependent => rule.push(neq(
                concat(vec![payload("udp", "dport"), payload("ip", "saddr")]),
                s("@peers"),
            )),
            Filtering::AddressAndPortDependent => {}
        }
        rule.push(drop());
        b.rule("pre_raw", rule);
    }

    // --- input: the router's own firewall on the WAN ------------------------------------------
    // Only new flows addressed to the router itself get here: replies match conntrack
    // (`established`), and a forwarded or DNAT'd flow takes the forward hook. The packet is
    // discarded before conntrack's confirmation (at the end of the input hook), so no unreplied
    // entry is left to take a port ("who sends first", kernel-facts).
    let new_from_wan = || {
        vec![
            wan_in(),
            Statement::Match(stmt::Match {
                left: ct("state", None),
                right: s("new"),
                op: Operator::IN,
            }),
        ]
    };
    match nat.input {
        InputPolicy::Accept => {}
        InputPolicy::Drop => {
            let mut rule = new_from_wan();
            rule.push(drop());
            b.rule("input", rule);
        }
        InputPolicy::Reject => {
            // OpenWrt fw4's `handle_reject` with its defaults (tcp_reject_code = tcp-reset,
            // any_reject_code = port-unreachable).
            let mut tcp = new_from_wan();
            tcp.push(eq(meta(expr::MetaKey::L4proto), s("tcp")));
            tcp.push(Statement::Reject(Some(stmt::Reject::new(
                Some(stmt::RejectType::TCPReset),
                None,
            ))));
            b.rule("input", tcp);
            let mut other = new_from_wan();
            other.push(Statement::Reject(Some(stmt::Reject::new(
                Some(stmt::RejectType::ICMP),
                Some(nftables::types::RejectCode::PortUnreach),
            ))));
            b.rule("input", other);
        }
    }

    // --- pre_nat: inbound flows a looser filter admits, and hairpinning -----------------------
    let dnat_via_fc = || {
        Statement::DNAT(Some(stmt::NAT {
            addr: Some(Expression::Named(NamedExpression::Map(Box::new(
                expr::Map {
                    key: payload("udp", "dport"),
                    data: s("@fc"),
                },
            )))),
            family: Some(stmt::NATFamily::IP),
            port: None,
            flags: None,
        }))
    };
    // A forward comes first: a new flow to its ports goes to its host whatever the filtering
    // (a flow conntrack already knows never reaches a nat chain, so the host's own flows and
    // other hosts' replies on those ports keep going where they went).
    let dnat_forward = |f: &PortForward| {
        Statement::DNAT(Some(stmt::NAT {
            addr: Some(s(&f.to.to_string())),
            family: Some(stmt::NATFamily::IP),
            port: None,
            flags: None,
        }))
    };
    // A forward's DNAT, for packets entering on `side` (the WAN; the LAN for hairpinning).
    let forward = |b: &mut Builder, side: Statement<'static>, f: &PortForward| {
        b.rule(
            "pre_nat",
            vec![
                side,
                udp(),
                eq(payload("ip", "daddr"), s(&ports.public.to_string())),
                eq(payload("udp", "dport"), port_range(f.ports)),
                dnat_forward(f),
            ],
        );
    };
    for f in &ports.forwards {
        forward(&mut b, wan_in(), f);
    }
    match nat.filtering {
        Filtering::EndpointIndependent => b.rule("pre_nat", vec![wan_in(), udp(), dnat_via_fc()]),
        Filtering::AddressDependent => b.rule(
            "pre_nat",
            vec![
                wan_in(),
                udp(),
                eq(
                    concat(vec![payload("udp", "dport"), payload("ip", "saddr")]),
                    s("@peers"),
                ),
                dnat_via_fc(),
            ],
        ),
        Filtering::AddressAndPortDependent => {}
    }
    if nat.hairpinning {
        // NAT loopback ("reflection") of a forward: the LAN reaches the forwarded host at the
        // public address too.
        for f in &ports.forwards {
            forward(&mut b, lan_in(), f);
        }
        b.rule(
            "pre_nat",
            vec![
                lan_in(),
                udp(),
                eq(payload("ip", "daddr"), s(&ports.public.to_string())),
                dnat_via_fc(),
            ],
        );
    }

    // --- post_nat: the mapping itself ----------------------------------------------------------
    let source_nat = snat_statement(nat, ports.public, None);
    if nat.hairpinning {
        // REQ-9: a hairpinned packet carries the sender's *external* address, so the receiver
        // sees what a peer on the internet would see.
        b.rule(
            "post_nat",
            vec![
                lan_in(),
                lan_out(),
                udp(),
                Statement::Match(stmt::Match {
                    left: ct("status", None),
                    right: s("dnat"),
                    op: Operator::IN,
                }),
                source_nat.clone(),
            ],
        );
    }
    // What a forwarded host sends from a forwarded port keeps that port (a plain `snat` to the
    // WAN address preserves the port while its tuple is free), so its flows leave from the port
    // the forward and its `externip` advertise, whatever the mapping does to other flows.
    for f in &ports.forwards {
        b.rule(
            "post_nat",
            vec![
                wan_out(),
                udp(),
                eq(payload("ip", "saddr"), s(&f.to.to_string())),
                eq(payload("udp", "sport"), port_range(f.ports)),
                Statement::SNAT(Some(stmt::NAT {
                    addr: Some(s(&ports.public.to_string())),
                    family: Some(stmt::NATFamily::IP),
                    port: None,
                    flags: None,
                })),
            ],
        );
    }
    match nat.port_block {
        None => b.rule("post_nat", vec![wan_out(), udp(), source_nat]),
        Some(size) => {
            for (i, sub) in ports.subscribers.iter().enumerate() {
                let block = port_block(nat, i).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} subscribers × {size} ports do not fit in port-range {}-{}",
                        ports.subscribers.len(),
                        nat.port_range.0,
                        nat.port_range.1
                    ))
                })?;
                b.rule(
                    "post_nat",
                    vec![
                        wan_out(),
                        udp(),
                        eq(payload("ip", "saddr"), s(&sub.to_string())),
                        snat_statement(nat, ports.public, Some(block)),
                    ],
                );
            }
            // A carrier NAT maps only its subscribers; anything else gets no mapping at all.
            b.rule("post_nat", vec![wan_out(), udp(), drop()]);
        }
    }
    // TCP and ICMP get a plain mapping to the public address: port-preserving, except that a
    // NAT allocating random ports (`masquerade random`, the symmetric type) randomises TCP source
    // ports too (from its port range), as Linux does for every protocol, so SIP over TCP meets
    // the port a real symmetric NAT gives it. Hashed ports and port blocks are UDP-only here.
    let public = || s(&ports.public.to_string());
    if nat.ports == PortAllocation::Random {
        let (lo, hi) = nat.port_range;
        b.rule(
            "post_nat",
            vec![
                wan_out(),
                eq(meta(expr::MetaKey::L4proto), s("tcp")),
                Statement::SNAT(Some(stmt::NAT {
                    addr: Some(public()),
                    family: Some(stmt::NATFamily::IP),
                    // From the same range as its UDP ports.
                    port: Some(Expression::Range(Box::new(expr::Range {
                        range: [Expression::Number(lo.into()), Expression::Number(hi.into())],
                    }))),
                    flags: Some(HashSet::from([stmt::NATFlag::FullyRandom])),
                })),
            ],
        );
    }
    b.rule(
        "post_nat",
        vec![
            wan_out(),
            Statement::SNAT(Some(stmt::NAT {
                addr: Some(public()),
                family: Some(stmt::NATFamily::IP),
                port: None,
                flags: None,
            })),
        ],
    );

    // --- post_learn: bindings, learnt from what actually left ---------------------------------
    if address_dependent {
        b.rule(
            "post_learn",
            vec![
                wan_out(),
                udp(),
                set_update(
                    "@peers",
                    concat(vec![payload("udp", "sport"), payload("ip", "daddr")]),
                ),
            ],
        );
    }
    if outbound_only {
        b.rule(
            "post_learn",
            vec![
                wan_out(),
                udp(),
                set_update(
                    "@out",
                    concat(vec![
                        payload("udp", "sport"),
                        payload("ip", "daddr"),
                        payload("udp", "dport"),
                    ]),
                ),
            ],
        );
        b.rule(
            "post_learn",
            vec![
                wan_out(),
                udp(),
                set_update("@bound", payload("udp", "sport")),
            ],
        );
    }
    // After source NAT `udp sport` is the external port. For a flow the inside opened the
    // internal endpoint is the original source; for one the outside opened (DNAT), it is the
    // reply source.
    let wan = &ports.wan;
    let epilogue = format!(
        "add rule ip {TABLE} post_learn oifname \"{wan}\" meta l4proto udp ct direction original \
         update @fc {{ udp sport : ct original ip saddr . ct original proto-src }}\n\
         add rule ip {TABLE} post_learn oifname \"{wan}\" meta l4proto udp ct direction reply \
         update @fc {{ udp sport : ct reply ip saddr . ct reply proto-src }}\n"
    );

    let sysctls = sysctls(nat);
    Ok(Ruleset {
        prelude,
        prelude_fresh,
        json: Nftables {
            objects: Cow::Owned(b.objects),
        },
        epilogue,
        sysctls,
    })
}

/// The source-NAT statement that gives the configured mapping and port allocation; `ports`
/// narrows the port range (a subscriber's block).
fn snat_statement(
    nat: &NatBehaviour,
    public: Ipv4Addr,
    ports: Option<(u16, u16)>,
) -> Statement<'static> {
    let (lo, hi) = ports.unwrap_or(nat.port_range);
    let range = |a: Expression<'static>, b: Expression<'static>| {
        Expression::Range(Box::new(expr::Range { range: [a, b] }))
    };
    let hashed = |fields: Vec<Expression<'static>>| {
        Expression::Named(NamedExpression::JHash(expr::JHash {
            hash_mod: u32::from(hi - lo) + 1,
            offset: Some(u32::from(lo)),
            expr: Box::new(concat(fields)),
            seed: Some(0x5e1d),
        }))
    };
    let mut flags = HashSet::new();
    let port = match (nat.mapping, nat.ports) {
        (_, PortAllocation::Preserve) => {
            ports.map(|_| range(Expression::Number(lo.into()), Expression::Number(hi.into())))
        }
        (_, PortAllocation::Random) => {
            flags.insert(stmt::NATFlag::FullyRandom);
            Some(range(
                Expression::Number(lo.into()),
                Expression::Number(hi.into()),
            ))
        }
        // Evaluated once per new flow (nat chains see only a connection's first packet).
        (_, PortAllocation::Sequential) => {
            Some(Expression::Named(NamedExpression::Numgen(expr::Numgen {
                mode: expr::NgMode::Inc,
                ng_mod: u32::from(hi - lo) + 1,
                offset: Some(u32::from(lo)),
            })))
        }
        (Mapping::EndpointIndependent, PortAllocation::Hash) => Some(hashed(vec![
            payload("ip", "saddr"),
            payload("udp", "sport"),
        ])),
        (Mapping::AddressDependent, PortAllocation::Hash) => Some(hashed(vec![
            payload("ip", "saddr"),
            payload("udp", "sport"),
            payload("ip", "daddr"),
        ])),
        (Mapping::AddressAndPortDependent, PortAllocation::Hash) => Some(hashed(vec![
            payload("ip", "saddr"),
            payload("udp", "sport"),
            payload("ip", "daddr"),
            payload("udp", "dport"),
        ])),
    };
    let addr = if nat.pool_size > 1 {
        // `persistent` makes Linux pick the address from the source address alone: paired
        // pooling. Without it the destination enters the choice too.
        if nat.paired_pooling {
            flags.insert(stmt::NATFlag::Persistent);
        }
        range(
            s(&public.to_string()),
            s(&pool_last(nat, public).to_string()),
        )
    } else {
        s(&public.to_string())
    };
    Statement::SNAT(Some(stmt::NAT {
        addr: Some(addr),
        family: Some(stmt::NATFamily::IP),
        port,
        flags: (!flags.is_empty()).then_some(flags),
    }))
}

/// The last address of the NAT's pool.
pub fn pool_last(nat: &NatBehaviour, public: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(public) + u32::from(nat.pool_size.max(1)) - 1)
}

/// The port block of the `index`-th subscriber, if it fits in the range.
pub fn port_block(nat: &NatBehaviour, index: usize) -> Option<(u16, u16)> {
    let size = u32::from(nat.port_block?);
    let (lo, hi) = nat.port_range;
    let first = u32::from(lo) + size * u32::try_from(index).ok()?;
    let last = first + size - 1;
    (last <= u32::from(hi)).then_some((first as u16, last as u16))
}

#[derive(Default)]
struct Builder {
    objects: Vec<NfObject<'static>>,
}

impl Builder {
    fn cmd(&mut self, c: NfCmd<'static>) {
        self.objects.push(NfObject::CmdObject(c));
    }

    fn chain(&mut self, name: &str, kind: NfChainType, hook: NfHook, prio: i32) {
        self.cmd(NfCmd::Add(NfListObject::Chain(schema::Chain {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: name.to_string().into(),
            newname: None,
            handle: None,
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            dev: None,
            policy: Some(NfChainPolicy::Accept),
        })));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.cmd(NfCmd::Add(NfListObject::Rule(schema::Rule {
            family: NfFamily::IP,
            table: TABLE.into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(expr),
            handle: None,
            index: None,
            comment: None,
        })));
    }

    fn set(&mut self, name: &str, key: &[SetType], timeout: u32) {
        self.cmd(NfCmd::Add(NfListObject::Set(Box::new(schema::Set {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: name.to_string().into(),
            handle: None,
            set_type: set_type(key),
            policy: None,
            flags: Some(HashSet::from([schema::SetFlag::Timeout])),
            elem: None,
            timeout: Some(timeout),
            gc_interval: None,
            size: None,
            comment: None,
        }))));
    }
}

fn set_type(types: &[SetType]) -> SetTypeValue<'static> {
    match types {
        [one] => SetTypeValue::Single(*one),
        many => SetTypeValue::Concatenated(Cow::Owned(many.to_vec())),
    }
}

/// `lo-hi` as an nft range, or the one port.
fn port_range((lo, hi): (u16, u16)) -> Expression<'static> {
    if lo == hi {
        Expression::Number(lo.into())
    } else {
        Expression::Range(Box::new(expr::Range {
            range: [Expression::Number(lo.into()), Expression::Number(hi.into())],
        }))
    }
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn meta(key: expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(expr::Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(expr::Payload::PayloadField(
        expr::PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ct(key: &'static str, dir: Option<expr::CTDir>) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(expr::CT {
        key: key.into(),
        family: None,
        dir,
    }))
}

fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn neq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

fn set_update(set: &'static str, elem: Expression<'static>) -> Statement<'static> {
    Statement::Set(stmt::Set {
        op: stmt::SetOp::Update,
        elem,
        set: set.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NatType;

    fn ports() -> RouterPorts {
        RouterPorts {
            wan: "wan".into(),
            lan: "lan".into(),
            public: Ipv4Addr::new(203, 0, 113, 1),
            subscribers: vec![Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 3)],
            forwards: Vec::new(),
        }
    }

    #[test]
    fn every_classic_type_renders() {
        for t in NatType::ALL {
            let r = render(&t.behaviour(), &ports()).unwrap();
            let json = r.json_string();
            assert!(json.contains("snh_nat"), "{json}");
            assert!(r.epilogue.contains("update @fc"));
            assert!(r.prelude.contains("add map"));
        }
    }

    #[test]
    fn port_blocks_give_each_subscriber_its_own_range() {
        let b = NatType::PortRestrictedCone
            .behaviour()
            .with_port_range(1024, 2047)
            .with_port_block(512);
        let r = render(&b, &ports()).unwrap().json_string();
        assert!(r.contains("100.64.0.2") && r.contains("100.64.0.3"), "{r}");
        assert!(
            r.contains("[1024,1535]") && r.contains("[1536,2047]"),
            "{r}"
        );
        let three = RouterPorts {
            subscribers: vec![Ipv4Addr::new(100, 64, 0, 9); 3],
            ..ports()
        };
        assert!(
            render(&b, &three).is_err(),
            "three blocks of 512 do not fit in 1024 ports"
        );
    }

    #[test]
    fn a_paired_pool_is_persistent() {
        let b = NatType::PortRestrictedCone.behaviour().with_pool(4, true);
        let r = render(&b, &ports()).unwrap().json_string();
        assert!(r.contains("203.0.113.4") && r.contains("persistent"), "{r}");
        let unpaired = NatType::PortRestrictedCone.behaviour().with_pool(4, false);
        assert!(!render(&unpaired, &ports())
            .unwrap()
            .json_string()
            .contains("persistent"));
    }

    #[test]
    fn symmetric_uses_fully_random_ports() {
        let r = render(&NatType::Symmetric.behaviour(), &ports()).unwrap();
        assert!(r.json_string().contains("fully-random"));
    }

    #[test]
    fn a_forward_dnats_its_ports_keeps_them_outbound_and_passes_every_guard() {
        let pbx = Ipv4Addr::new(192, 168, 1, 20);
        let with = RouterPorts {
            forwards: vec![PortForward::udp(10000, 20000, pbx)],
            ..ports()
        };
        let b = NatType::Symmetric
            .behaviour()
            .with_refresh(Refresh::OutboundOnly)
            .with_hairpinning(true)
            .with_blocked_udp_ports(10000, 20000);
        let r = render(&b, &with).unwrap().json_string();
        // Inbound and hairpinned DNAT, the static SNAT, the raw-guard accept, two firewall
        // accepts: the range appears once for each.
        assert_eq!(r.matches("[10000,20000]").count(), 6 + 2, "{r}");
        assert_eq!(r.matches("192.168.1.20").count(), 2 + 1 + 2, "{r}");
        let without = render(&b, &ports()).unwrap().json_string();
        assert!(!without.contains("192.168.1.20"));
        let clash = RouterPorts {
            forwards: vec![
                PortForward::udp(10000, 20000, pbx),
                PortForward::udp(15000, 15000, pbx),
            ],
            ..ports()
        };
        assert!(render(&b, &clash).is_err());
    }

    #[test]
    fn only_a_firewalled_router_has_an_input_chain() {
        let plain = render(&NatType::PortRestrictedCone.behaviour(), &ports()).unwrap();
        assert!(!plain.json_string().contains("\"input\""));
        let drop = NatType::PortRestrictedCone
            .behaviour()
            .with_input(InputPolicy::Drop);
        let r = render(&drop, &ports()).unwrap().json_string();
        assert!(
            r.contains("\"hook\":\"input\"") && r.contains("\"drop\""),
            "{r}"
        );
        assert!(!r.contains("reject"), "{r}");
        let reject = NatType::PortRestrictedCone
            .behaviour()
            .with_input(InputPolicy::Reject);
        let r = render(&reject, &ports()).unwrap().json_string();
        assert!(
            r.contains("tcp reset") && r.contains("port-unreachable"),
            "{r}"
        );
    }

    #[test]
    fn only_a_fragment_dropping_router_has_a_chain_before_defrag() {
        let json = |b: NatBehaviour| render(&b, &ports()).unwrap().json_string();
        let home = || NatType::PortRestrictedCone.behaviour();
        assert!(!json(home()).contains("frag-off"));
        let r = json(home().with_drop_fragments(true));
        // MF and the offset (0x3fff), at -450: before conntrack's defrag at -400.
        for part in ["\"prio\":-450", "\"field\":\"frag-off\"", "16383"] {
            assert!(r.contains(part), "{part} in {r}");
        }
    }

    #[test]
    fn timeout_reaches_conntrack_and_sets() {
        let b = NatType::FullCone.behaviour().with_udp_timeout(7);
        let r = render(&b, &ports()).unwrap();
        assert!(r
            .sysctls
            .iter()
            .any(|(k, v)| k.ends_with("udp_timeout_stream") && v == "7"));
        assert!(r.prelude.contains("timeout 7s"), "{}", r.prelude);
    }
}
