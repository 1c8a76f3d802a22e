//! The catalogue read beside the field guide: which scenario files show each line of the guide,
//! rendered as `docs/catalogue.md`, so that a line no file shows is listed as a gap instead of
//! disappearing from view.
//!
//! The guide's lines live in `docs/field-guide.toml`; each scenario names the lines it shows in
//! `[scenario] guide = [...]`. A line the harness cannot express carries the reason instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::scenario::{file, Scenario};

/// The guide's sections, in the order the guide gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Symptom,
    RootCause,
    Diagnosis,
    Fix,
    Prevention,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Symptom => "Symptoms",
            Section::RootCause => "Root causes",
            Section::Diagnosis => "Diagnosis steps",
            Section::Fix => "Fixes",
            Section::Prevention => "Prevention",
        }
    }
}

/// One line of the guide.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuideLine {
    pub id: String,
    pub section: Section,
    /// Where the line was read: `guide`, `issue-26` or `design-brief`.
    pub source: String,
    pub text: String,
    /// Why no scenario can show this line.
    pub cannot: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuideFile {
    line: Vec<GuideLine>,
}

/// One catalogue file, as the document lists it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The file's name without `.toml`.
    pub name: String,
    pub summary: String,
    /// Guide line ids, each with its position for error messages.
    pub guide: Vec<(String, String)>,
}

/// The repository's guide file and scenario folder, found from this crate's folder.
pub fn default_paths() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    (root.join("docs/field-guide.toml"), root.join("scenarios"))
}

/// Reads `docs/field-guide.toml`.
pub fn load_guide(path: &Path) -> Result<Vec<GuideLine>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path.display().to_string()))?;
    let f: GuideFile = toml::from_str(&text).map_err(|e| Error::Guide {
        file: path.display().to_string(),
        what: e.to_string().trim().replace('\n', " "),
    })?;
    let mut seen = BTreeMap::new();
    for l in &f.line {
        if seen.insert(l.id.clone(), ()).is_some() {
            return Err(Error::Guide {
                file: path.display().to_string(),
                what: format!("line id `{}` appears twice", l.id),
            });
        }
    }
    Ok(f.line)
}

/// The scenario files (`*.toml`) of a folder, in name order.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir.display().to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads every `*.toml` of the catalogue folder, in name order.
pub fn load_entries(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for p in scenario_files(dir)? {
        let s = Scenario::load(&p).map_err(|e| Error::Guide {
            file: p.display().to_string(),
            what: e.to_string(),
        })?;
        let text = std::fs::read_to_string(&p).map_err(Error::io(p.display().to_string()))?;
        let guide = s
            .file
            .scenario
            .guide
            .iter()
            .map(|g| {
                let (line, col) = file::line_col(&text, g.span().start);
                (g.get_ref().clone(), format!("{}:{line}:{col}", p.display()))
            })
            .collect();
        let name = p
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Entry {
            name,
            summary: s.file.scenario.summary.clone(),
            guide,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What is wrong between the guide and the catalogue, one line each: an id no guide line has,
/// a line no file shows and no reason excuses, a line excused although a file shows it.
pub fn problems(guide: &[GuideLine], entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    let shown = shown_by(guide, entries);
    for e in entries {
        for (id, at) in &e.guide {
            if !guide.iter().any(|l| &l.id == id) {
                out.push(format!(
                    "{at}: `{id}` is not a line of the field guide (docs/field-guide.toml)"
                ));
            }
        }
    }
    for l in guide {
        let files = &shown[&l.id];
        match (&l.cannot, files.is_empty()) {
            (None, true) => out.push(format!(
                "guide line `{}` ({}) is shown by no catalogue file: add `{}` to a file's \
                 `guide` list, or say in docs/field-guide.toml why the harness cannot show it",
                l.id, l.text, l.id
            )),
            (Some(_), false) => out.push(format!(
                "guide line `{}` says the harness cannot show it, but {} do: drop its `cannot`",
                l.id,
                files.join(", ")
            )),
            _ => {}
        }
    }
    out
}

/// Guide line id → names of the files that show it.
fn shown_by(guide: &[GuideLine], entries: &[Entry]) -> BTreeMap<String, Vec<String>> {
    let mut shown: BTreeMap<String, Vec<String>> =
        guide.iter().map(|l| (l.id.clone(), Vec::new())).collect();
    for e in entries {
        for (id, _) in &e.guide {
            if let Some(v) = shown.get_mut(id) {
                v.push(e.name.clone());
            }
        }
    }
    shown
}

/// The document: every guide line by section with the files that show it (or why none can),
/// then every file with the lines it shows.
pub fn markdown(guide: &[GuideLine], entries: &[Entry]) -> String {
    let shown = shown_by(guide, entries);
    let mut md = String::new();
    md.push_str(
        "# The catalogue beside the field guide\n\n\
         Generated by `cargo run -p harness -- catalogue > docs/catalogue.md` from \
         `docs/field-guide.toml` and the `guide = [...]` list of each file in `scenarios/`; the \
         test `catalogue_doc` fails when this file is stale or a guide line has no file and no \
         reason. Run a file with `cargo run --release -p harness -- run scenarios/NAME.toml`.\n\n\
         Where each line was read: **guide** = the stored copy of the guide (it ends inside \
         diagnosis step 1), **issue-26** = quoted in issue 26, **design-brief** = the design \
         brief's summary of the guide, **issue-19** = not the guide's: a field fault and its \
         fixes named in the project's issue 19.\n",
    );
    let covered = guide.iter().filter(|l| !shown[&l.id].is_empty()).count();
    let _ = writeln!(
        md,
        "\n{covered} of {} guide lines are shown by at least one file; {} cannot be, each with \
         the reason.",
        guide.len(),
        guide.iter().filter(|l| l.cannot.is_some()).count()
    );
    let mut sections: Vec<Section> = guide.iter().map(|l| l.section).collect();
    sections.sort();
    sections.dedup();
    for section in sections {
        let _ = writeln!(md, "\n## {}\n", section.title());
        md.push_str("| guide line | read from | shown by |\n|---|---|---|\n");
        for l in guide.iter().filter(|l| l.section == section) {
            let files = &shown[&l.id];
            let by = match (&l.cannot, files.is_empty()) {
                (Some(why), _) => format!("**cannot be shown**: {why}"),
                (None, true) => "**no file yet**".to_string(),
                (None, false) => files
                    .iter()
                    .map(|f| {
                        let role = if f.contains("-fix-") { " (fix)" } else { "" };
                        format!("[`{f}`](../scenarios/{f}.toml){role}")
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            let _ = writeln!(
                md,
                "| {} <sub>`{}`</sub> | {} | {} |",
                cell(&l.text),
                l.id,
                l.source,
                cell(&by)
            );
        }
    }
    md.push_str("\n## Every file\n\n| file | what it shows | guide lines |\n|---|---|---|\n");
    for e in entries {
        let ids: Vec<String> = e.guide.iter().map(|(id, _)| format!("`{id}`")).collect();
        let _ = writeln!(
            md,
            "| [`{n}`](../scenarios/{n}.toml) | {} | {} |",
            cell(&e.summary),
            if ids.is_empty() {
                "—".to_string()
            } else {
                ids.join(" ")
            },
            n = e.name
        );
    }
    md
}

/// Text safe inside a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, cannot: Option<&str>) -> GuideLine {
        GuideLine {
            id: id.into(),
            section: Section::Fix,
            source: "guide".into(),
            text: format!("text of {id}"),
            cannot: cannot.map(Into::into),
        }
    }

    fn entry(name: &str, ids: &[&str]) -> Entry {
        Entry {
            name: name.into(),
            summary: format!("summary of {name}"),
            guide: ids
                .iter()
                .map(|i| (i.to_string(), format!("{name}.toml:3:10")))
                .collect(),
        }
    }

    #[test]
    fn a_line_without_a_file_or_a_reason_is_a_problem_and_shows_as_a_gap() {
        let guide = [line("a", None), line("b", None)];
        let entries = [entry("one", &["a"])];
        let p = problems(&guide, &entries);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("`b`"), "{p:?}");
        let md = markdown(&guide, &entries);
        assert!(
            md.contains("| text of b <sub>`b`</sub> | guide | **no file yet** |"),
            "{md}"
        );
        assert!(md.contains("[`one`](../scenarios/one.toml)"), "{md}");
    }

    #[test]
    fn an_unknown_id_is_named_with_its_file_and_line() {
        let guide = [line("a", None)];
        let entries = [entry("one", &["a", "nope"])];
        let p = problems(&guide, &entries);
        assert_eq!(
            p,
            ["one.toml:3:10: `nope` is not a line of the field guide (docs/field-guide.toml)"]
        );
    }

    #[test]
    fn a_reason_is_shown_and_contradicting_it_with_a_file_is_a_problem() {
        let guide = [line("a", Some("the phone is ours"))];
        assert!(problems(&guide, &[]).is_empty());
        assert!(markdown(&guide, &[]).contains("**cannot be shown**: the phone is ours"));
        let p = problems(&guide, &[entry("one", &["a"])]);
        assert!(p[0].contains("drop its `cannot`"), "{p:?}");
    }
}
