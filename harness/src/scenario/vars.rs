//! The `{…}` placeholders in a command's arguments and files: the scenario's own facts, so a
//! customer's config is written once and follows the topology.
//!
//! Everything but `{dir}` and `{file:NAME}` is known from the file alone, so an unknown or
//! misspelt placeholder is refused when the file is checked, with the names that exist, instead of
//! reaching the program as literal text it would misread.

use std::collections::BTreeMap;

use super::file::{Component, ScenarioFile};

/// The STUN/TURN port of our servers.
const STUN_PORT: u16 = 3478;

/// `name → value` for every placeholder the file defines (`{dir}` and `{file:…}` excepted).
pub fn table(f: &ScenarioFile) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert("scenario.t1-ms".to_string(), f.scenario.t1_ms.to_string());
    let mut first_addr = BTreeMap::new();
    for h in &f.hosts {
        let name = h.name.get_ref();
        for (key, a) in ["addr", "addr2"].iter().zip(h.addrs.get_ref()) {
            t.insert(format!("{name}.{key}"), a.to_string());
        }
        if let Some(a) = h.addrs.get_ref().first() {
            first_addr.insert(name.clone(), a.to_string());
        }
    }
    for r in &f.routers {
        let name = r.name.get_ref();
        let wan = r.wan.get_ref().to_string();
        let lan = r
            .lan
            .get_ref()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        t.insert(format!("{name}.addr"), wan.clone());
        t.insert(format!("{name}.addr2"), lan);
        first_addr.insert(name.clone(), wan);
    }
    for (k, v) in &f.vars {
        t.insert(format!("vars.{k}"), v.clone());
    }
    let at = |host: &str, port: u16| first_addr.get(host).map(|a| (a.clone(), port));
    // A server placeholder in three forms: `{NAME}` (IP:PORT), `{NAME.addr}`, `{NAME.port}`;
    // the first server of its kind in the file gives it. A host called `registrar` keeps
    // `{registrar.addr}` for itself, and then there is no `.port` form either.
    let mut server = |name: &str, addr: Option<(String, u16)>| {
        if let Some((ip, port)) = addr {
            if !t.contains_key(name) {
                t.insert(name.to_string(), format!("{ip}:{port}"));
                if !t.contains_key(&format!("{name}.addr")) {
                    t.insert(format!("{name}.addr"), ip);
                    t.insert(format!("{name}.port"), port.to_string());
                }
            }
        }
    };
    for c in &f.components {
        let c = c.get_ref();
        if let Some((_, port)) = c.registrar() {
            server("registrar", at(c.host(), port));
        }
        match c {
            Component::StunServer { host } => server("stun-server", at(host, STUN_PORT)),
            Component::TurnServer { host, .. } => server("turn-server", at(host, STUN_PORT)),
            _ => {}
        }
    }
    for c in &f.components {
        match c.get_ref() {
            Component::Proxy { users, .. } | Component::Sbc { users, .. } => {
                for (u, p) in users {
                    t.entry(format!("password.{u}"))
                        .or_insert_with(|| p.clone());
                }
            }
            Component::TurnServer { users, .. } => {
                for (u, p) in users {
                    t.entry(format!("turn-password.{u}"))
                        .or_insert_with(|| p.clone());
                }
            }
            _ => {}
        }
    }
    t
}

/// The placeholder names in `text`: `{name}` where the name is ours in shape (lower case,
/// digits, `-`, `.`, `:`), so a config file's own braces (`route {`, `${HOME}`, JSON) pass.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let name = &rest[..close];
        let ours = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':' | '_')
            });
        if ours {
            out.push(name);
            rest = &rest[close + 1..];
        }
    }
    out
}

/// Whether `name` is a placeholder that `table` (or the runner) fills for a command with
/// `files`.
pub fn known(table: &BTreeMap<String, String>, files: &[&str], name: &str) -> bool {
    table.contains_key(name)
        || name == "dir"
        || name
            .strip_prefix("file:")
            .is_some_and(|f| files.contains(&f))
}

/// `text` with every placeholder of `table` replaced (the runner adds `dir` and `file:…`).
pub fn apply(table: &BTreeMap<String, String>, text: &str) -> String {
    let mut out = text.to_string();
    for (k, v) in table {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_shape_of_braces_is_a_placeholder() {
        assert_eq!(
            placeholders("sip:{vars.user}@{registrar} route { x } ${HOME} {\"a\":1} {file:a.cfg}"),
            vec!["vars.user", "registrar", "file:a.cfg"]
        );
        assert_eq!(placeholders("{unclosed"), Vec::<&str>::new());
    }
}
