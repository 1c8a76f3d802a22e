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
fn a_run_of_quotes_in_a_broken_table_is_located_not_a_panic() {
    // toml_write 0.1 counts a run of quotes in a u8; 300 of them once panicked the locator.
    let quotes = "\\\"".repeat(300);
    let (e, line) = broken(
        "proxy = \"server\"",
        &format!("proxy = \"server\"\nnote = \"{quotes}\""),
    );
    assert!(e.contains("unknown field `note`"), "{e}");
    assert_eq!(line, 29, "{e}");
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

#[test]
fn a_zero_provisional_interval_is_refused_with_what_to_do() {
    let (e, line) = broken(
        "proxy = \"server\"",
        "proxy = \"server\"\nprovisional-interval-ms = 0",
    );
    assert!(
        e.contains("provisional-interval-ms must be at least 1"),
        "{e}"
    );
    // The phone's `[[component]]`.
    assert_eq!(line, 25);
}

#[test]
fn a_call_status_is_a_number_or_a_list_and_anything_else_says_so() {
    let base = GOOD.replace(
        "[[expect]]\nkind = \"registered\"",
        "[[expect]]\nkind = \"call\"\nfrom = \"bob\"\nstatus = STATUS\n\n[[expect]]\nkind = \"registered\"",
    );
    assert!(base.contains("STATUS"));
    for ok in ["408", "[408, 480]"] {
        Scenario::from_str("ok.toml", &base.replace("STATUS", ok)).unwrap();
    }
    for (bad, says) in [
        ("\"busy\"", "a status is a number"),
        ("[]", "accepts nothing"),
    ] {
        let e = Scenario::from_str("broken.toml", &base.replace("STATUS", bad))
            .expect_err("must be refused");
        let s = e.to_string();
        assert!(s.contains(says), "{bad}: {s}");
        assert!(!s.contains('\n'), "one line: {s}");
    }
}

#[test]
fn a_type_error_in_a_kind_table_points_at_the_field_in_the_right_table() {
    let text = GOOD.to_string()
        + "\n[[expect]]\nkind = \"packet\"\nat = \"server\"\ncontains = \"REGISTER\"\nmin = \"three\"\n";
    let e = Scenario::from_str("broken.toml", &text).expect_err("must be refused");
    let s = e.to_string();
    assert!(
        s.contains("`min`: invalid type: string \"three\", expected u32"),
        "{s}"
    );
    let line = text.lines().position(|l| l.starts_with("min = ")).unwrap() + 1;
    assert_eq!((e.line, e.column), (line, 7), "{s}");
}

/// The good file with a command `sipp` on bob and `expect` appended.
fn with_log(expect: &str) -> String {
    GOOD.replace(
        "[[step]]",
        "[[component]]\nkind = \"command\"\nname = \"sipp\"\nhost = \"bob\"\nrun = [\"sipp\"]\n\n[[step]]",
    ) + "\n[[expect]]\nkind = \"log\"\ncommand = \"sipp\"\n"
        + expect
}

#[test]
fn a_log_expectation_needs_one_pattern_and_a_valid_regex() {
    Scenario::from_str("ok.toml", &with_log("contains = \"Successful call\"\n")).unwrap();
    Scenario::from_str("ok.toml", &with_log("matches = 'Successful call\\s*\\|'\n")).unwrap();
    for (bad, says) in [
        ("", "exactly one of `contains`"),
        (
            "contains = \"a\"\nmatches = \"b\"\n",
            "exactly one of `contains`",
        ),
        (
            "matches = \"(unclosed\"\n",
            "`matches`: not a regular expression",
        ),
        (
            "contains = \"a\"\nmin = 3\nmax = 1\n",
            "max = 1 is below min = 3",
        ),
        (
            "contains = \"a\"\nstream = \"stdin\"\n",
            "unknown variant `stdin`",
        ),
    ] {
        let e = Scenario::from_str("broken.toml", &with_log(bad)).expect_err(bad);
        let s = e.to_string();
        assert!(s.contains(says) && !s.contains('\n'), "{bad:?}: {s}");
    }
    let e = Scenario::from_str(
        "broken.toml",
        &with_log("contains = \"a\"\n").replace(
            "command = \"sipp\"\ncontains",
            "command = \"kamailio\"\ncontains",
        ),
    )
    .expect_err("unknown command");
    assert!(e.to_string().contains("kamailio"), "{e}");
}

#[test]
fn a_timing_expectation_names_a_vantage_and_a_sane_window() {
    let timing = |at: &str, window: &str| {
        GOOD.to_string()
            + &format!("\n[[expect]]\nkind = \"timing\"\nat = \"{at}\"\nfirst = \"REGISTER\"\nthen = \"SIP/2.0 200\"\n{window}")
    };
    Scenario::from_str("ok.toml", &timing("home:wan", "within-t1 = [0, 2]\n")).unwrap();
    Scenario::from_str("ok.toml", &timing("server", "")).unwrap();
    for (at, window, says) in [
        ("server", "within-t1 = [3, 1]\n", "0 ≤ LOW ≤ HIGH"),
        ("home", "", "a router is seen from `home:wan` or `home:lan`"),
        ("nowhere", "", "unknown host or router `nowhere`"),
        ("server", "within-t1 = 3\n", "`within-t1`"),
    ] {
        let e = Scenario::from_str("broken.toml", &timing(at, window)).expect_err(says);
        let s = e.to_string();
        assert!(
            s.contains(says) && !s.contains('\n'),
            "{at} {window:?}: {s}"
        );
    }
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

/// The good file with the field guide's diagnosis steps: a two-address STUN server, a tester
/// outside, and a STUN check, NAT classification and UDP probe with their expectations.
fn diagnosis() -> String {
    GOOD.replace(
        "addrs = [\"203.0.113.10\"]",
        "addrs = [\"203.0.113.10\", \"203.0.113.11\"]\n\n[[host]]\nname = \"tester\"\nsegment = \"internet\"\naddrs = [\"198.51.100.30\"]",
    )
    .replace(
        "[[component]]\nkind = \"proxy\"",
        "[[component]]\nkind = \"stun-server\"\nhost = \"server\"\n\n[[component]]\nkind = \"proxy\"",
    ) + r#"
[[step]]
action = "stun-check"
host = "bob"
stun-server = "server"

[[step]]
action = "classify-nat"
host = "bob"
stun-server = "server"

[[step]]
action = "probe-udp"
name = "rtp"
from = "tester"
to = "home"
listen = "bob"
ports = [10000, 20000]
samples = 5

[[expect]]
kind = "stun-address"
host = "bob"
router = "home"
value = "equal"

[[expect]]
kind = "nat-type"
host = "bob"
value = "port-restricted-cone"

[[expect]]
kind = "udp-reachable"
host = "bob"
probe = "rtp"
reached = 0
"#
}

/// Replaces `from` (which must occur) in the diagnosis file: the error and its line.
fn broken_diagnosis(from: &str, to: &str) -> (String, usize) {
    let good = diagnosis();
    assert!(good.contains(from), "{from}");
    let e = Scenario::from_str("broken.toml", &good.replacen(from, to, 1))
        .expect_err("must be refused");
    let s = e.to_string();
    assert!(!s.contains('\n') && s.starts_with("broken.toml:"), "{s}");
    (s, e.line)
}

/// The line `text` starts on in the diagnosis file.
fn line_of(text: &str) -> usize {
    let good = diagnosis();
    good[..good.find(text).expect("present")]
        .matches('\n')
        .count()
        + 1
}

#[test]
fn the_diagnosis_steps_file_is_accepted() {
    let s = Scenario::from_str("diag.toml", &diagnosis()).unwrap();
    assert_eq!(s.file.steps.len(), 4);
    assert_eq!(s.file.expects.len(), 4);
}

#[test]
fn classifying_a_nat_against_a_one_address_server_asks_for_the_second_address() {
    let (e, line) = broken_diagnosis(
        "addrs = [\"203.0.113.10\", \"203.0.113.11\"]",
        "addrs = [\"203.0.113.10\"]",
    );
    assert!(
        e.contains("classify-nat needs an RFC 5780 server with two addresses")
            && e.contains("`server` has 1"),
        "{e}"
    );
    assert_eq!(line, line_of("action = \"classify-nat\"") - 1);
}

#[test]
fn a_stun_check_against_a_host_without_a_stun_server_names_the_ones_that_have_one() {
    let (e, line) = broken_diagnosis(
        "action = \"stun-check\"\nhost = \"bob\"\nstun-server = \"server\"",
        "action = \"stun-check\"\nhost = \"bob\"\nstun-server = \"tester\"",
    );
    assert!(
        e.contains("unknown host running a stun-server `tester`") && e.contains("defined: server"),
        "{e}"
    );
    assert_eq!(line, line_of("action = \"stun-check\"") - 1);
}

#[test]
fn a_stun_address_expectation_needs_a_stun_check_of_that_host() {
    let (e, _) = broken_diagnosis(
        "kind = \"stun-address\"\nhost = \"bob\"",
        "kind = \"stun-address\"\nhost = \"server\"",
    );
    assert!(
        e.contains("unknown host with a stun-check step `server`") && e.contains("defined: bob"),
        "{e}"
    );
}

#[test]
fn an_unknown_nat_type_name_lists_the_rfc_3489_names() {
    // Located by the TOML parser: a value inside an `[[expect]]` table is reported at the start
    // of the expectations (serde buffers an internally tagged table and loses its spans).
    let (e, _) = broken_diagnosis("value = \"port-restricted-cone\"", "value = \"cone\"");
    assert!(
        e.contains("unknown variant `cone`") && e.contains("symmetric") && e.contains("full-cone"),
        "{e}"
    );
}

#[test]
fn a_probe_to_a_router_the_listener_is_not_behind_is_refused() {
    let (e, _) = broken_diagnosis("listen = \"bob\"", "listen = \"server\"");
    assert!(e.contains("`server` is not behind router `home`"), "{e}");
}

#[test]
fn a_probe_samples_a_range_it_does_not_scan_it() {
    let (e, line) = broken_diagnosis("samples = 5", "samples = 10001");
    assert!(e.contains("samples = 10001 must be 1 to 64"), "{e}");
    assert_eq!(line, line_of("action = \"probe-udp\"") - 1);
    let (e, _) = broken_diagnosis("ports = [10000, 20000]", "ports = [20000, 10000]");
    assert!(e.contains("is not a range"), "{e}");
}

#[test]
fn a_reached_count_above_the_probes_sent_could_never_hold() {
    let (e, _) = broken_diagnosis("reached = 0", "reached = 6");
    assert!(
        e.contains("reached = 6, but that probe sends only 5"),
        "{e}"
    );
    let (e, _) = broken_diagnosis("probe = \"rtp\"", "probe = \"rpt\"");
    assert!(
        e.contains("unknown probe-udp step `rpt`") && e.contains("defined: rtp"),
        "{e}"
    );
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

#[test]
fn calling_from_a_command_names_the_real_limit() {
    let command = "[[component]]\nkind = \"command\"\nname = \"softphone\"\nhost = \"server\"\nuser = \"carol\"\nrun = [\"baresip\"]\n";
    let call = "[[step]]\naction = \"call\"\nfrom = \"carol\"\nto = \"bob\"\n";
    let text = GOOD.replace("[[step]]", &format!("{command}\n{call}\n[[step]]"));
    let e = Scenario::from_str("broken.toml", &text).expect_err("a command without dial");
    let s = e.to_string();
    assert!(
        s.contains("`carol` is a command's SIP user without `dial`")
            && s.contains("give its command a `dial` action"),
        "{s}"
    );

    let dialing = command.replace(
        "run = [\"baresip\"]",
        "run = [\"baresip\"]\ndial = { stdin = \"/dial {to}\" }",
    );
    let text = GOOD.replace("[[step]]", &format!("{dialing}\n{call}\n[[step]]"));
    Scenario::from_str("ok.toml", &text).expect("a command with dial places calls");

    let held = call.replace("to = \"bob\"", "to = \"bob\"\nhold-ms = 500");
    let text = GOOD.replace("[[step]]", &format!("{dialing}\n{held}\n[[step]]"));
    let e = Scenario::from_str("broken.toml", &text).expect_err("holding needs hang-up");
    assert!(e.to_string().contains("no `hang-up` action"), "{e}");

    let both = command.replace(
        "run = [\"baresip\"]",
        "run = [\"baresip\"]\ndial = { stdin = \"/dial {to}\", run = [\"true\"] }",
    );
    let text = GOOD.replace("[[step]]", &format!("{both}\n{call}\n[[step]]"));
    let e = Scenario::from_str("broken.toml", &text).expect_err("one of stdin or run");
    assert!(e.to_string().contains("`dial` takes exactly one of"), "{e}");

    let unknown = command.replace(
        "run = [\"baresip\"]",
        "run = [\"baresip\"]\ndial = { stdin = \"/dial {callee}\" }",
    );
    let text = GOOD.replace("[[step]]", &format!("{unknown}\n{call}\n[[step]]"));
    let e = Scenario::from_str("broken.toml", &text).expect_err("unknown placeholder");
    assert!(
        e.to_string()
            .contains("unknown placeholder `{callee}` in `dial`"),
        "{e}"
    );
}

/// The good file with its proxy replaced by a command on `server` (`fields` added to it) and the
/// phone's `proxy =` set to `proxy`; the error, or `None` when the file is accepted.
fn command_registrar(fields: &str, proxy: &str) -> Result<Scenario, (String, usize)> {
    let text = GOOD
        .replacen(
            "kind = \"proxy\"\nhost = \"server\"",
            &format!("kind = \"command\"\nname = \"kam\"\nhost = \"server\"\nrun = [\"kamailio\", \"-l\", \"{{registrar.addr}}\"]\n{fields}"),
            1,
        )
        .replacen("proxy = \"server\"", &format!("proxy = \"{proxy}\""), 1);
    Scenario::from_str("broken.toml", &text).map_err(|e| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "one line: {s}");
        (s, e.line)
    })
}

#[test]
fn a_command_that_plays_the_registrar_is_named_by_a_phones_proxy_and_gives_the_registrar_placeholders(
) {
    let s = command_registrar("plays = \"registrar\"\nsip-port = 5080", "kam").expect("valid");
    let t = harness::scenario::vars::table(&s.file);
    assert_eq!(t["registrar"], "203.0.113.10:5080");
    assert_eq!(t["registrar.addr"], "203.0.113.10");
    assert_eq!(t["registrar.port"], "5080");
    // 5060 unless told otherwise.
    let s = command_registrar("plays = \"registrar\"", "kam").expect("valid");
    assert_eq!(
        harness::scenario::vars::table(&s.file)["registrar"],
        "203.0.113.10:5060"
    );
}

#[test]
fn a_phone_naming_a_command_that_does_not_play_the_registrar_is_told_how_to_declare_it() {
    let text = GOOD
        .replacen(
            "kind = \"proxy\"\nhost = \"server\"",
            "kind = \"command\"\nname = \"kam\"\nhost = \"server\"\nrun = [\"kamailio\"]",
            1,
        )
        .replacen("proxy = \"server\"", "proxy = \"kam\"", 1);
    let e = Scenario::from_str("broken.toml", &text).expect_err("must be refused");
    let (e, line) = (e.to_string(), e.line);
    assert!(
        e.contains("proxy `kam` is a command that does not play the registrar")
            && e.contains("plays = \"registrar\"")
            && e.contains("sip-port"),
        "{e}"
    );
    assert_eq!(line, 27, "the phone's [[component]]");
    // Nor does `{registrar}` exist without one.
    let text = GOOD.replacen("kind = \"proxy\"\nhost = \"server\"", "kind = \"command\"\nname = \"kam\"\nhost = \"server\"\nrun = [\"kamailio\", \"{registrar}\"]", 1);
    let e = Scenario::from_str("broken.toml", &text).expect_err("must be refused");
    assert!(
        e.to_string().contains("unknown placeholder `{registrar}`"),
        "{e}"
    );
}

#[test]
fn a_phones_proxy_that_names_nothing_lists_the_registrars_commands_included() {
    let (e, _) = command_registrar("plays = \"registrar\"", "kamailio").expect_err("refused");
    assert!(
        e.contains("proxy `kamailio` is neither IP:PORT, a host running a proxy/sbc/kamailio, nor a command with plays = \"registrar\"")
            && e.contains("kam"),
        "{e}"
    );
}

#[test]
fn a_sip_port_without_plays_is_refused_with_what_it_needs() {
    let (e, line) = command_registrar("sip-port = 5080", "203.0.113.10:5080").expect_err("refused");
    assert!(
        e.contains("command `kam`: `sip-port` is the port of a registrar")
            && e.contains("plays = \"registrar\""),
        "{e}"
    );
    assert_eq!(line, 21, "the command's [[component]]");
}

#[test]
fn a_command_registrar_named_like_a_host_running_a_proxy_is_refused() {
    let text = GOOD.replace(
        "[[step]]",
        "[[component]]\nkind = \"command\"\nname = \"server\"\nhost = \"bob\"\nrun = [\"x\"]\nplays = \"registrar\"\n\n[[step]]",
    );
    let e = Scenario::from_str("broken.toml", &text).expect_err("must be refused");
    assert!(
        e.to_string()
            .contains("`server` names both a command that plays the registrar and a host running a proxy/sbc/kamailio"),
        "{e}"
    );
}

#[test]
fn a_proxy_pinging_with_stun_is_refused_like_an_sbc() {
    let (e, line) = broken(
        "kind = \"proxy\"\nhost = \"server\"",
        "kind = \"proxy\"\nhost = \"server\"\nping = { type = \"stun\", interval-ms = 1000 }",
    );
    assert!(
        e.contains("a proxy pings with type = \"options\" or \"crlf\""),
        "{e}"
    );
    assert_eq!(line, 21);
}

#[test]
fn a_phone_offering_no_pcmu_or_an_unknown_codec_is_told_the_valid_ones() {
    let ua = "kind = \"ua\"\nhost = \"bob\"\nproxy = \"server\"";
    let (e, line) = broken(ua, &format!("{ua}\ncodecs = [\"PCMA\"]"));
    assert!(e.contains("must include PCMU"), "{e}");
    assert_eq!(line, 25, "the phone's table");
    let (e, _) = broken(ua, &format!("{ua}\ncodecs = [\"PCMU\", \"G723\"]"));
    assert!(
        e.contains("unknown codec `G723`") && e.contains("opus"),
        "{e}"
    );
}

#[test]
fn an_mtu_below_ipv4s_minimum_names_the_host() {
    let host = "addrs = [\"192.168.1.10\"]";
    let (e, _) = broken(host, &format!("{host}\nmtu = 500"));
    assert!(
        e.contains("`bob`: MTU 500 must be between 576 and 9000"),
        "{e}"
    );
}

#[test]
fn an_ice_phone_with_its_own_media_setting_or_an_ice_expectation_on_a_plain_phone_is_refused() {
    let (e, line) = broken(
        "host = \"bob\"\nproxy = \"server\"",
        "host = \"bob\"\nproxy = \"server\"\nice = true\nmedia = \"stun\"",
    );
    assert!(e.contains("ice = true") && e.contains("media"), "{e}");
    assert_eq!(line, 25, "the phone's table");
    let (e, _) = broken(
        "[[expect]]\nkind = \"registered\"",
        "[[expect]]\nkind = \"ice\"\nua = \"bob\"\nlocal = \"relay\"\n\n[[expect]]\nkind = \"registered\"",
    );
    assert!(
        e.contains("not an ICE phone") && e.contains("ice = true"),
        "{e}"
    );
}
