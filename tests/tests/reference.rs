//! `docs/scenario-format.md` and `docs/scenario-format.schema.json` are generated from the types
//! that parse scenario files; they must be current, and every key of the format must be used by
//! a file the tests load (the catalogue or `docs/examples/`), so each has a working example.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use harness::scenario::{reference, Scenario};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    harness::catalogue::scenario_files(dir).unwrap_or_default()
}

#[test]
fn the_format_reference_is_current_and_every_key_has_an_example() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["scenarios", "docs/examples"] {
        for f in toml_files(&root.join(dir)) {
            // Every example must load, or it would document something the parser refuses.
            Scenario::load(&f).map_err(|e| anyhow::anyhow!("{e}"))?;
            let text = std::fs::read_to_string(&f)?;
            files.push((
                format!("{dir}/{}", f.file_name().unwrap().to_string_lossy()),
                text,
            ));
        }
    }
    let usage = reference::usage(&files);
    let md = reference::markdown(&usage);
    let schema = reference::schema_json() + "\n";
    let md_path = root.join("docs/scenario-format.md");
    let schema_path = root.join("docs/scenario-format.schema.json");
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&md_path, &md)?;
        std::fs::write(&schema_path, &schema)?;
    }
    let unused = reference::unused(&usage);
    ensure!(
        unused.is_empty(),
        "keys no catalogue file or docs/examples file uses (add an example):\n{}",
        unused.join("\n")
    );
    for (path, want) in [(&md_path, &md), (&schema_path, &schema)] {
        let have = std::fs::read_to_string(path).unwrap_or_default();
        ensure!(
            &have == want,
            "{} is stale: regenerate with `just reference` and commit it",
            path.display()
        );
    }
    Ok(())
}
