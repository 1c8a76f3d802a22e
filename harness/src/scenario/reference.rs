//! The scenario format's reference, generated from the types that parse the files: the JSON
//! Schema editors validate with, and `docs/scenario-format.md`. Generated, so it cannot drift
//! from what the parser accepts; a test checks the committed copies are current and that every
//! key is used by some file the tests load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use schemars::schema_for;
use serde_json::{Map, Value};

use super::file::ScenarioFile;

/// The JSON Schema of a scenario file, pretty-printed.
pub fn schema_json() -> String {
    serde_json::to_string_pretty(&schema()).expect("a schema serialises")
}

fn schema() -> Value {
    serde_json::to_value(schema_for!(ScenarioFile)).expect("a schema is JSON")
}

/// A table kind of the format and its keys: `component.ua` → `rport`, `media`, ….
pub type Keys = BTreeMap<String, BTreeSet<String>>;

/// The sections in the order a file is written, with how each is written in TOML.
const SECTIONS: &[(&str, &str, Option<&str>)] = &[
    ("scenario", "[scenario]", None),
    ("vars", "[vars]", None),
    ("router", "[[router]]", None),
    ("host", "[[host]]", None),
    ("component", "[[component]]", Some("kind")),
    ("step", "[[step]]", Some("action")),
    ("expect", "[[expect]]", Some("kind")),
];

struct Doc<'a> {
    defs: &'a Map<String, Value>,
}

impl<'a> Doc<'a> {
    /// Follows a `$ref` to its definition.
    fn resolve(&self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .rsplit('/')
                .next()
                .and_then(|n| self.defs.get(n))
                .unwrap_or(v),
            None => v,
        }
    }

    fn ref_name(v: &Value) -> Option<&str> {
        v.get("$ref")?.as_str()?.rsplit('/').next()
    }

    /// A type as a reader writes it: `integer`, `"a" \| "b"`, `list of string`, `Nat`.
    fn type_of(&self, v: &Value) -> String {
        if let Some(name) = Self::ref_name(v) {
            let def = self.resolve(v);
            if let Some(values) = string_values(def) {
                return values
                    .iter()
                    .map(|(s, _)| format!("`\"{s}\"`"))
                    .collect::<Vec<_>>()
                    .join(" \\| ");
            }
            return format!("[{name}](#{})", name.to_lowercase());
        }
        if let Some(values) = string_values(v) {
            return values
                .iter()
                .map(|(s, _)| format!("`\"{s}\"`"))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = v.get(key).and_then(Value::as_array) {
                let non_null: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                    .collect();
                return non_null
                    .iter()
                    .map(|a| self.type_of(a))
                    .collect::<Vec<_>>()
                    .join(" or ");
            }
        }
        let ty = match v.get("type") {
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("value"),
            Some(Value::String(t)) => t.as_str(),
            _ => "value",
        };
        match ty {
            "array" => match (v.get("items"), v.get("prefixItems")) {
                (_, Some(Value::Array(items))) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| self.type_of(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (Some(items), _) => format!("list of {}", self.type_of(items)),
                _ => "list".into(),
            },
            "string" if v.get("format").and_then(Value::as_str) == Some("ipv4") => {
                "IPv4 address".into()
            }
            "object" if v.get("additionalProperties").is_some_and(Value::is_object) => {
                "table of strings".into()
            }
            t => t.to_string(),
        }
    }

    /// One row per key of an object schema.
    fn key_table(&self, md: &mut String, obj: &Value, tag: Option<&str>) {
        let props = obj.get("properties").and_then(Value::as_object);
        let required: BTreeSet<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(props) = props else { return };
        md.push_str("| key | type | default | what it is for |\n|---|---|---|---|\n");
        for (k, v) in props {
            if Some(k.as_str()) == tag {
                continue;
            }
            let default = match (required.contains(k.as_str()), v.get("default")) {
                (true, _) => "**required**".to_string(),
                (false, Some(Value::Null)) | (false, None) => "—".to_string(),
                (false, Some(d)) => format!("`{}`", toml_value(d)),
            };
            let _ = writeln!(
                md,
                "| `{k}` | {} | {default} | {} |",
                self.type_of(v),
                cell(
                    &description(v)
                        .or_else(|| description(self.resolve(v)))
                        .unwrap_or_default()
                )
            );
        }
    }
}

/// The values of a string enum, each with its description.
fn string_values(v: &Value) -> Option<Vec<(String, String)>> {
    if v.get("type").and_then(Value::as_str) == Some("string") {
        if let Some(e) = v.get("enum").and_then(Value::as_array) {
            return Some(
                e.iter()
                    .filter_map(Value::as_str)
                    .map(|s| (s.to_string(), String::new()))
                    .collect(),
            );
        }
        if let Some(c) = v.get("const").and_then(Value::as_str) {
            return Some(vec![(c.to_string(), description(v).unwrap_or_default())]);
        }
    }
    let alts = v.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for a in alts {
        out.extend(string_values(a)?);
    }
    Some(out)
}

fn description(v: &Value) -> Option<String> {
    v.get("description")
        .and_then(Value::as_str)
        .map(|d| d.replace('\n', " "))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// The variants of a tagged table (`kind = …`): tag value → its object schema.
fn variants<'a>(doc: &Doc<'a>, def: &'a Value, tag: &str) -> Vec<(String, &'a Value)> {
    def.get("oneOf")
        .and_then(Value::as_array)
        .map(|alts| {
            alts.iter()
                .map(|a| doc.resolve(a))
                .filter_map(|a| {
                    let t = a.get("properties")?.get(tag)?.get("const")?.as_str()?;
                    Some((t.to_string(), a))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every table kind of the format and its keys, as the parser knows them.
pub fn keys() -> Keys {
    let schema = schema();
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let doc = Doc { defs: &defs };
    let mut out = Keys::new();
    let props_of = |v: &Value| -> BTreeSet<String> {
        v.get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    for (section, _, tag) in SECTIONS {
        let Some(prop) = schema["properties"].get(*section) else {
            continue;
        };
        let def = doc.resolve(prop.get("items").unwrap_or(prop));
        match tag {
            Some(tag) => {
                for (name, v) in variants(&doc, def, tag) {
                    let mut k = props_of(v);
                    k.remove(*tag);
                    out.insert(format!("{section}.{name}"), k);
                }
            }
            None if *section != "vars" => {
                out.insert(section.to_string(), props_of(def));
            }
            None => {}
        }
    }
    if let Some(t) = defs.get("NatTable") {
        out.insert("router.nat".into(), props_of(t));
    }
    out
}

/// Where each table kind is used, by file: the keys `files` set per table kind, and the first
/// table of each kind as written (for the reference's examples).
#[derive(Debug, Default)]
pub struct Usage {
    pub keys: Keys,
    pub examples: BTreeMap<String, (String, String)>,
}

/// Reads which keys the given scenario files use (`name`, TOML text).
pub fn usage(files: &[(String, String)]) -> Usage {
    let mut u = Usage::default();
    for (name, text) in files {
        let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
            continue;
        };
        for (section, header, tag) in SECTIONS {
            let tables: Vec<&toml_edit::Table> = match doc.get(section) {
                Some(toml_edit::Item::ArrayOfTables(a)) => a.iter().collect(),
                Some(toml_edit::Item::Table(t)) => vec![t],
                _ => continue,
            };
            for t in tables {
                let kind = match tag {
                    Some(tag) => match t.get(tag).and_then(|v| v.as_str()) {
                        Some(k) => format!("{section}.{k}"),
                        None => continue,
                    },
                    None => section.to_string(),
                };
                for (k, v) in t.iter() {
                    u.keys
                        .entry(kind.clone())
                        .or_default()
                        .insert(k.to_string());
                    if *section == "router" && k == "nat" {
                        if let Some(nat) = v.as_inline_table() {
                            let n = u.keys.entry("router.nat".into()).or_default();
                            n.extend(nat.iter().map(|(k, _)| k.to_string()));
                        }
                    }
                }
                u.examples.entry(kind).or_insert_with(|| {
                    let mut d = toml_edit::DocumentMut::new();
                    for (k, v) in t.iter() {
                        d.insert(k, v.clone());
                    }
                    let body = d.to_string();
                    (name.clone(), format!("{header}\n{}", body.trim_end()))
                });
            }
        }
    }
    u
}

/// Keys of the format that no file in `usage` sets, as `kind.key`.
pub fn unused(usage: &Usage) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, keys) in keys() {
        let used = usage.keys.get(&kind);
        if used.is_none() {
            out.push(format!("{kind} (no file has one)"));
            continue;
        }
        for k in keys {
            if !used.is_some_and(|u| u.contains(&k)) {
                out.push(format!("{kind}.{k}"));
            }
        }
    }
    out
}

/// `docs/scenario-format.md`: every section, kind and key with its type, default and purpose,
/// each kind with an example taken from a file the tests load; then the value types.
pub fn markdown(usage: &Usage) -> String {
    let schema = schema();
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let doc = Doc { defs: &defs };
    let mut md = String::from(
        "# The scenario file format\n\n\
         Generated from the types that parse scenario files (`cargo run -p harness -- schema` \
         prints the same as a JSON Schema; `docs/scenario-format.schema.json` holds it for \
         editors). Regenerate with `just reference`; the test `reference` fails when this file \
         is stale or a key has no example. Check files without running them with \
         `harness check FILE…`. Every error names the file, line and column.\n\n\
         Each example is the first such table in the named file, which the tests load.\n\n\
         Start an editor-validated file with `#:schema ../docs/scenario-format.schema.json` \
         (taplo, Even Better TOML).\n",
    );
    let example = |md: &mut String, kind: &str| match usage.examples.get(kind) {
        Some((file, text)) => {
            let _ = writeln!(md, "\nExample (from `{file}`):\n\n```toml\n{text}\n```");
        }
        None => md.push_str("\n*No example yet.*\n"),
    };
    for (section, header, tag) in SECTIONS {
        let Some(prop) = schema["properties"].get(*section) else {
            continue;
        };
        let _ = writeln!(md, "\n## `{header}`\n");
        let def = doc.resolve(prop.get("items").unwrap_or(prop));
        if let Some(d) = description(prop).or_else(|| description(def)) {
            let _ = writeln!(md, "{d}\n");
        }
        match tag {
            Some(tag) => {
                let vs = variants(&doc, def, tag);
                let _ = writeln!(
                    md,
                    "`{tag}` is one of: {}.",
                    vs.iter()
                        .map(|(n, _)| format!("[`{n}`](#{section}-{n})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for (name, v) in vs {
                    let _ = writeln!(
                        md,
                        "\n<a id=\"{section}-{name}\"></a>\n### `{tag} = \"{name}\"`\n"
                    );
                    if let Some(d) = description(v) {
                        let _ = writeln!(md, "{d}\n");
                    }
                    doc.key_table(&mut md, v, Some(tag));
                    example(&mut md, &format!("{section}.{name}"));
                }
            }
            None if *section == "vars" => example(&mut md, section),
            None => {
                doc.key_table(&mut md, def, None);
                example(&mut md, section);
            }
        }
    }
    md.push_str("\n## Value types\n");
    for (name, def) in &defs {
        if matches!(
            name.as_str(),
            "Meta" | "RouterDef" | "HostDef" | "Component" | "Step" | "Expect"
        ) {
            continue;
        }
        let _ = writeln!(md, "\n### {name}\n");
        if let Some(d) = description(def) {
            let _ = writeln!(md, "{d}\n");
        }
        if let Some(values) = string_values(def) {
            md.push_str("| value | meaning |\n|---|---|\n");
            for (v, d) in values {
                let _ = writeln!(md, "| `\"{v}\"` | {} |", cell(&d));
            }
        } else if def.get("properties").is_some() {
            doc.key_table(&mut md, def, None);
            if name == "NatTable" {
                example(&mut md, "router.nat");
            }
        } else {
            let _ = writeln!(md, "{}", doc.type_of(def));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_every_tagged_section_has_its_keys() {
        let k = keys();
        assert!(k["component.ua"].contains("rport"), "{k:?}");
        assert!(k["step.call"].contains("timeout-ms"), "{k:?}");
        assert!(
            !k["expect.call"].contains("kind"),
            "the tag is not a key: {k:?}"
        );
        assert!(k["router.nat"].contains("udp-timeout-secs"), "{k:?}");
        assert!(k["router"].contains("upstream"), "{k:?}");
    }

    #[test]
    fn usage_finds_keys_inside_inline_nat_tables_and_reports_the_rest_unused() {
        let file = "[scenario]\nname = \"x\"\n\n[[router]]\nname = \"r\"\nwan = \"203.0.113.1\"\nlan = \"192.168.1.1/24\"\nnat = { type = \"symmetric\", hairpinning = true }\n";
        let u = usage(&[("x.toml".into(), file.into())]);
        assert!(u.keys["router.nat"].contains("hairpinning"));
        let missing = unused(&u);
        assert!(
            missing.contains(&"router.upstream".to_string()),
            "{missing:?}"
        );
        assert!(!missing.contains(&"router.nat".to_string()), "{missing:?}");
        assert!(
            missing.iter().any(|m| m.starts_with("component.ua ")),
            "{missing:?}"
        );
        assert!(u.examples["router"]
            .1
            .starts_with("[[router]]\nname = \"r\""));
    }

    #[test]
    fn the_reference_lists_values_with_their_meaning() {
        let md = markdown(&Usage::default());
        assert!(md.contains("### `kind = \"ua\"`"), "{md}");
        assert!(md.contains("| `\"outbound-only\"` |"), "{md}");
        assert!(md.contains("| `t1-ms` | integer | `500` |"), "{md}");
    }
}
