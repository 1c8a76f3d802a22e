//! `docs/catalogue.md` is generated from `docs/field-guide.toml` and the catalogue files'
//! `guide` lists; it must be up to date, and every guide line must have a file or a reason.

use anyhow::{ensure, Result};
use harness::catalogue;

#[test]
fn docs_catalogue_md_is_generated_from_the_guide_and_the_catalogue() -> Result<()> {
    let (guide_path, dir) = catalogue::default_paths();
    let guide = catalogue::load_guide(&guide_path)?;
    let entries = catalogue::load_entries(&dir)?;
    let want = catalogue::markdown(&guide, &entries);
    let md = guide_path.with_file_name("catalogue.md");
    if std::env::var_os("UPDATE_CATALOGUE").is_some() {
        std::fs::write(&md, &want)?;
    }
    let problems = catalogue::problems(&guide, &entries);
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    let have = std::fs::read_to_string(&md).unwrap_or_default();
    ensure!(
        have == want,
        "{} is stale: regenerate it with `UPDATE_CATALOGUE=1 cargo test -p tests --test \
         catalogue_doc` (or `just catalogue`) and commit it",
        md.display()
    );
    Ok(())
}

#[test]
fn every_catalogue_file_names_the_guide_lines_it_shows() -> Result<()> {
    let (_, dir) = catalogue::default_paths();
    let bare: Vec<String> = catalogue::load_entries(&dir)?
        .into_iter()
        .filter(|e| e.guide.is_empty())
        .map(|e| e.name)
        .collect();
    ensure!(
        bare.is_empty(),
        "these files show no line of the field guide (`[scenario] guide = [...]`): {}",
        bare.join(", ")
    );
    Ok(())
}
