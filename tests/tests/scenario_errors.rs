//! Broken scenario files get one precise line each: file, line, column, what is wrong, and the
//! valid values where there is a list.

use harness::scenario::Scenario;

const GOOD: &str = r#"[scenario]
name = "ok"
t1-ms = 50

[[router]]
name = "home"
wan = "203.0.113.1"
lan = "192.168.1.1/24"
nat = "port-restricted-cone"

[[host]]
name = "bob"
segment = "home"
addrs = ["192.168.1.10"]

[[host]]
name = "server"
segment = "internet"
addrs = ["203.0.113.10"]

[[component]]
kind = "proxy"
host = "server"

[[component]]
kind = "ua"
host = "bob"
proxy = "server"

[[step]]
action = "register"
ua = "bob"

[[expect]]
kind = "registered"
ua = "bob"
value = true
"#;

/// Replaces `from` (which must occur) in the good file and returns the error.
fn broken(from: &str, to: &str) -> (String, usize) {
    assert!(GOOD.contains(from), "{from}");
    let text = GOOD.replacen(from, to, 1);
    let e = Scenario::from_str("broken.toml", &text).expect_err("must be refused");
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    assert!(s.starts_with("broken.toml:"), "{s}");
    (s, e.line)
}

#[test]
fn the_good_file_is_accepted() {
    Scenario::from_str("good.toml", GOOD).unwrap();
}

#[test]
fn an_unknown_key_is_named_with_the_valid_ones() {
    let (e, line) = broken("t1-ms = 50", "t1-msec = 50");
    assert!(
        e.contains("unknown field `t1-msec`") && e.contains("t1-ms"),
        "{e}"
    );
    assert_eq!(line, 3);
}

#[test]
fn a_wrong_type_is_named() {
    let (e, line) = broken("t1-ms = 50", "t1-ms = \"fast\"");
    assert!(
        e.contains("invalid type: string \"fast\", expected u64"),
        "{e}"
    );
    assert_eq!(line, 3);
}

#[test]
fn an_unknown_nat_type_lists_the_valid_ones() {
    let (e, line) = broken("nat = \"port-restricted-cone\"", "nat = \"full-cone-ish\"");
    assert!(
        e.contains("unknown NAT type `full-cone-ish`") && e.contains("symmetric"),
        "{e}"
    );
    assert_eq!(line, 9);
}

#[test]
fn a_contradictory_nat_table_says_why() {
    let (e, line) = broken(
        "nat = \"port-restricted-cone\"",
        "nat = { mapping = \"endpoint-independent\", filtering = \"address-dependent\", ports = \"random\" }",
    );
    assert!(
        e.contains("endpoint-independent mapping needs the same port"),
        "{e}"
    );
    assert_eq!(line, 9);
}

#[test]
fn a_dangling_link_names_the_segment_and_the_routers() {
    let (e, line) = broken("segment = \"home\"", "segment = \"office\"");
    assert!(e.contains("`office`") && e.contains("defined: home"), "{e}");
    assert_eq!(line, 13);
}

#[test]
fn an_address_clash_names_both_nodes() {
    let (e, _) = broken("addrs = [\"192.168.1.10\"]", "addrs = [\"192.168.1.1\"]");
    assert!(
        e.contains("`home`") && e.contains("`bob`") && e.contains("192.168.1.1"),
        "{e}"
    );
}

#[test]
fn a_private_address_on_the_internet_is_refused() {
    let (e, _) = broken("addrs = [\"203.0.113.10\"]", "addrs = [\"10.0.0.5\"]");
    assert!(e.contains("documentation range"), "{e}");
}

#[test]
fn a_lan_without_prefix_shows_the_form() {
    let (e, line) = broken("lan = \"192.168.1.1/24\"", "lan = \"192.168.1.1\"");
    assert!(e.contains("ADDRESS/PREFIX"), "{e}");
    assert_eq!(line, 8);
}

#[test]
fn an_unknown_component_kind_lists_the_kinds() {
    let (e, line) = broken("kind = \"proxy\"", "kind = \"b2bua\"");
    assert!(
        e.contains("unknown variant `b2bua`") && e.contains("stun-server"),
        "{e}"
    );
    assert_eq!(line, 22);
}

#[test]
fn a_step_naming_an_unknown_phone_lists_the_phones() {
    let (e, _) = broken(
        "action = \"register\"\nua = \"bob\"",
        "action = \"register\"\nua = \"carol\"",
    );
    assert!(
        e.contains("unknown phone `carol`") && e.contains("defined: bob"),
        "{e}"
    );
}

#[test]
fn a_duplicate_node_name_is_refused() {
    let (e, line) = broken("name = \"server\"", "name = \"bob\"");
    assert!(e.contains("`bob` is used twice"), "{e}");
    assert_eq!(line, 17);
}

#[test]
fn a_toml_syntax_error_is_located() {
    let (e, line) = broken("name = \"ok\"", "name = \"ok");
    assert!(e.contains("broken.toml:2:"), "{e}");
    assert_eq!(line, 2);
}

#[test]
fn a_missing_required_key_is_named() {
    let (e, _) = broken("proxy = \"server\"\n", "");
    assert!(e.contains("missing field `proxy`"), "{e}");
}

#[test]
fn an_sbc_pinging_with_stun_is_refused_with_the_types_it_can_use() {
    let (e, line) = broken(
        "kind = \"proxy\"\nhost = \"server\"",
        "kind = \"sbc\"\nhost = \"server\"\nping = { type = \"stun\", interval-ms = 1000 }",
    );
    assert!(
        e.contains("\"options\" or \"crlf\"") && e.contains("STUN"),
        "{e}"
    );
    assert_eq!(line, 21, "the SBC component");
}

#[test]
fn a_packet_expectation_names_where_it_can_look_and_what_an_address_is() {
    // The good file's `registered` expectation, replaced by a `packet` one with `fields`.
    let packet = |fields: &str| {
        broken(
            "kind = \"registered\"\nua = \"bob\"\nvalue = true",
            &format!("kind = \"packet\"\ncontains = \"REGISTER\"\n{fields}"),
        )
    };
    let (e, line) = packet("at = \"home\"");
    assert!(e.contains("`home:wan` or `home:lan`"), "{e}");
    assert_eq!(line, 34, "the [[expect]]");
    let (e, _) = packet("at = \"server:wan\"");
    assert!(
        e.contains("only a router has sides") && e.contains("server"),
        "{e}"
    );
    let (e, _) = packet("at = \"server\"\nfrom = \"home\"");
    assert!(e.contains("`home` is not an address"), "{e}");
    let (e, _) = packet("at = \"server\"\nmin = 2\nmax = 1");
    assert!(e.contains("max = 1 is below min = 2"), "{e}");
}

#[test]
fn a_misspelt_placeholder_in_a_command_is_named_with_the_ones_that_exist() {
    let command =
        "kind = \"command\"\nname = \"phone\"\nhost = \"bob\"\nrun = [\"sipp\", \"{registar}\"]";
    let (e, line) = broken("kind = \"ua\"\nhost = \"bob\"\nproxy = \"server\"", command);
    assert!(
        e.contains("unknown placeholder `{registar}` in `run`")
            && e.contains("registrar")
            && e.contains("server.addr"),
        "{e}"
    );
    assert_eq!(line, 25, "the command component");
    // In a config file too; a config's own braces are left alone.
    let command = "kind = \"command\"\nname = \"phone\"\nhost = \"bob\"\nrun = [\"baresip\", \"-f\", \"{dir}\"]\nfiles = { accounts = \"route { x } ${HOME} <sip:bob@{vars.domian}>\" }";
    let (e, _) = broken("kind = \"ua\"\nhost = \"bob\"\nproxy = \"server\"", command);
    assert!(
        e.contains("unknown placeholder `{vars.domian}` in file `accounts`"),
        "{e}"
    );
}

#[test]
fn the_scenarios_facts_and_its_vars_are_placeholders() {
    let text = GOOD.replace(
        "[[router]]",
        "[vars]\ndomain = \"example.test\"\n\n[[router]]",
    ) + "\n[[component]]\nkind = \"command\"\nname = \"phone\"\nhost = \"bob\"\nrun = [\"x\", \"{vars.domain}\", \"{registrar}\", \"{home.addr2}\", \"{file:a}\"]\nfiles = { a = \"{bob.addr}\" }\n";
    let s = Scenario::from_str("vars.toml", &text).expect("valid");
    let t = harness::scenario::vars::table(&s.file);
    assert_eq!(t["vars.domain"], "example.test");
    assert_eq!(t["registrar"], "203.0.113.10:5060");
    assert_eq!(t["home.addr"], "203.0.113.1");
    assert_eq!(t["home.addr2"], "192.168.1.1");
    assert_eq!(t["bob.addr"], "192.168.1.10");
}

/// The good file with a router `forward` list in place of its plain NAT line.
fn forwarding(forward: &str) -> Result<Scenario, harness::scenario::FileError> {
    let text = GOOD.replacen(
        "nat = \"port-restricted-cone\"",
        &format!("nat = \"port-restricted-cone\"\nforward = [{forward}]"),
        1,
    );
    Scenario::from_str("fwd.toml", &text)
}

fn forward_error(forward: &str) -> (String, usize, usize) {
    let e = forwarding(forward).expect_err("must be refused");
    let s = e.to_string();
    assert!(!s.contains('\n') && s.starts_with("fwd.toml:10:"), "{s}");
    (s, e.line, e.column)
}

#[test]
fn a_port_forward_resolves_its_host_to_the_address_behind_the_router() {
    let s = forwarding(
        r#"{ proto = "udp", ports = "10000-20000", to = "bob" }, { ports = "5060", to = "bob" }"#,
    )
    .unwrap();
    let home = s.topology.router("home").unwrap();
    assert_eq!(
        home.forwards,
        vec![
            sim_nat::PortForward::udp(10000, 20000, "192.168.1.10".parse().unwrap()),
            sim_nat::PortForward::udp(5060, 5060, "192.168.1.10".parse().unwrap()),
        ]
    );
}

#[test]
fn a_forward_to_an_unknown_host_names_the_hosts_behind_the_router_at_its_column() {
    let (e, _, column) = forward_error(r#"{ proto = "udp", ports = "10000-20000", to = "pbx" }"#);
    assert!(
        e.contains("unknown host `pbx`") && e.contains("hosts behind `home`: defined: bob"),
        "{e}"
    );
    assert_eq!(column, 57, "{e}"); // the `"pbx"` value
}

#[test]
fn a_forward_to_a_host_elsewhere_says_where_it_is() {
    let (e, ..) = forward_error(r#"{ ports = "5060", to = "server" }"#);
    assert!(
        e.contains("host `server` is on `internet`, not behind router `home`"),
        "{e}"
    );
}

#[test]
fn a_bad_or_reversed_port_range_shows_the_form() {
    for ports in ["20000-10000", "0", "10000-", "70000", "rtp"] {
        let (e, ..) = forward_error(&format!(r#"{{ ports = "{ports}", to = "bob" }}"#));
        assert!(
            e.contains(&format!("ports `{ports}` must be \"N\" or \"N-M\"")),
            "{e}"
        );
    }
}

#[test]
fn overlapping_forwards_name_the_forward_they_clash_with() {
    let (e, _, column) =
        forward_error(r#"{ ports = "10000-20000", to = "bob" }, { ports = "20000", to = "bob" }"#);
    assert!(
        e.contains("ports 20000 overlap the forward of 10000-20000 to 192.168.1.10"),
        "{e}"
    );
    assert_eq!(column, 61, "{e}"); // the second `"20000"`
}

#[test]
fn a_tcp_forward_is_refused_with_the_reason() {
    let (e, ..) = forward_error(r#"{ proto = "tcp", ports = "5060", to = "bob" }"#);
    assert!(e.contains("proto `tcp`: only \"udp\" is forwarded"), "{e}");
}

#[test]
fn externip_and_localnet_are_checked_on_the_phone() {
    let phone = "kind = \"ua\"\nhost = \"bob\"\nproxy = \"server\"";
    let with = |extra: &str| {
        let text = GOOD.replacen(phone, &format!("{phone}\n{extra}"), 1);
        Scenario::from_str("ua.toml", &text).map(|_| ())
    };
    with("externip = \"203.0.113.1\"\nlocalnet = [\"192.168.1.0/24\"]").unwrap();
    for (extra, says) in [
        (
            "localnet = [\"192.168.1.0/24\"]",
            "without `externip` it changes nothing",
        ),
        (
            "externip = \"203.0.113.1\"\nlocalnet = [\"192.168.1.0\"]",
            "localnet `192.168.1.0` must be NETWORK/PREFIX",
        ),
        (
            "externip = \"203.0.113.1\"\ncontact = \"stun\"\nstun-server = \"server\"",
            "externip and contact = \"stun\" both set the Contact address",
        ),
        ("externip = \"203.0.113.999\"", "invalid"),
    ] {
        let e = with(extra).expect_err(extra).to_string();
        assert!(e.contains(says) && !e.contains('\n'), "{extra}: {e}");
    }
}
