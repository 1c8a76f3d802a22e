//! `harness`: the command line of the SIP-behind-NAT harness.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use harness::peers::vovida_stun;
use harness::scenario::{self, RunOptions, Scenario, Verdict};
use harness::{probe, shapes};
use sim_nat::{NatBehaviour, NatType};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Reproduce SIP-behind-NAT failures in Linux network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a home LAN behind each NAT type, measure it with UDP probes and with Debian's RFC 3489
    /// classifier (`stun`/`stund`), and print one verdict per type.
    Demo {
        /// Only these types (full-cone, restricted-cone, port-restricted-cone, symmetric).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<NatType>,
        /// Leave the topologies up until Enter is pressed, for `ip netns exec`.
        #[arg(long)]
        keep: bool,
    },
    /// Run scenario files: verdict, ladder, pcaps; exit 1 if any fails.
    Run(RunArgs),
    /// Merge JUnit reports (e.g. of `harness run --shard K/N --junit …` jobs) into one.
    JunitMerge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Check scenario files without running them (for pre-commit hooks and CI): each error
    /// names file, line and column. Exit 1 if any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files, for editors (taplo, Even Better TOML) and
    /// validators; `docs/scenario-format.schema.json` holds the same.
    Schema,
    /// List the scenario catalogue with one line each.
    List {
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
    },
    /// Run one scenario across NAT types × SIP ALG off/kernel, as a table of verdicts.
    Matrix {
        file: PathBuf,
        /// UDP binding timeouts to try as well (seconds); none: keep the file's.
        #[arg(long = "timeout", value_name = "SECS")]
        timeouts: Vec<u32>,
        /// Also try every router dropping IP fragments and passing them (`drop-fragments`).
        #[arg(long)]
        fragments: bool,
        /// Write each cell's run report into this folder (`NAT-ALG[-TIMEOUT].html`) and an
        /// `index.html` linking them.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Remove namespaces left by harness runs that died without cleaning up.
    Reap,
    /// Print `docs/catalogue.md`: every line of the field guide beside the catalogue files that
    /// show it. Exit 1 (with the reasons on stderr) when a line has no file and no reason.
    Catalogue {
        /// The guide's lines.
        #[arg(long, default_value = "docs/field-guide.toml")]
        guide: PathBuf,
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
    },
    /// Read captures (pcap/pcapng from tcpdump, sngrep, Wireshark) and name the field guide's
    /// causes they show. Exit 0 healthy, 1 a problem found, 2 a file unreadable.
    Diagnose {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON array of reports on stdout, for tools.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML page per capture: the findings linked to their
        /// frames, the SIP ladder (one lane per address) and media. With one file PATH is the
        /// page; with several it is a folder of `NAME.html` pages and an `index.html`.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
    },
    /// Write a scenario that reproduces a capture taken at the SIP server (and a `-fix-…` twin
    /// for each fix the diagnosis names); prints the address mapping and the commands to run.
    Import {
        file: PathBuf,
        /// The scenario file to write; twins go next to it as `NAME-fix-….toml`.
        #[arg(short, long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before any thread exists: a non-root user enters its own user + mount namespace here.
    harness::rootless::enter();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Demo { types, keep } => demo(types, keep).await,
        Command::Run(args) => run(args).await,
        Command::JunitMerge { files, out } => junit_merge(&files, &out),
        Command::Check { files } => check(&files),
        Command::Schema => {
            println!("{}", harness::scenario::reference::schema_json());
            Ok(true)
        }
        Command::List { dir } => list(dir),
        Command::Catalogue { guide, dir } => catalogue(&guide, &dir),
        Command::Matrix {
            file,
            timeouts,
            fragments,
            report,
        } => matrix(file, timeouts, fragments, report).await,
        Command::Diagnose {
            files,
            json,
            report,
        } => return diagnose(&files, json, report.as_deref()),
        Command::Import { file, out } => import(&file, &out),
        Command::Reap => {
            let runs = harness::reaper::reap_stale_runs();
            let count: usize = runs.iter().map(|r| r.namespaces.len()).sum();
            println!("removed {count} stale namespace(s)");
            for r in runs {
                println!("  run {} ({:?}):", r.run, r.why);
                for n in r.namespaces {
                    println!("    {n}");
                }
            }
            Ok(true)
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Imports `file` into `out` and its fix twins; prints the mapping and what to run next.
fn import(file: &std::path::Path, out: &std::path::Path) -> Result<bool> {
    let name = out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow::anyhow!("{}: not a file name", out.display()))?;
    let imported = harness::import::import_file(file, name)?;
    let dir = out.parent().unwrap_or(std::path::Path::new(""));
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    }
    let mut written = vec![out.to_path_buf()];
    std::fs::write(out, imported.scenario.to_toml())
        .map_err(|e| anyhow::anyhow!("write {}: {e}", out.display()))?;
    for (suffix, doc) in &imported.fixes {
        let path = dir.join(format!("{name}{suffix}.toml"));
        std::fs::write(&path, doc.to_toml())
            .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "addresses (capture → scenario):");
    for l in imported.mapping_lines() {
        let _ = writeln!(text, "  {l}");
    }
    let _ = writeln!(text, "wrote:");
    for w in &written {
        let _ = writeln!(text, "  {}", w.display());
    }
    let _ = writeln!(text, "next:");
    let _ = writeln!(
        text,
        "  harness run {}    # must PASS: it expects the capture's failure",
        out.display()
    );
    for w in &written[1..] {
        let _ = writeln!(
            text,
            "  harness run {}    # the fix: must PASS with success",
            w.display()
        );
    }
    if imported
        .plan
        .routers
        .iter()
        .any(|r| !r.candidates.is_empty())
    {
        let _ = writeln!(
            text,
            "  harness matrix {}    # the capture does not decide the NAT type",
            out.display()
        );
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(true)
}

/// Diagnoses each file on its own (frame numbers are per file); exit 2 if any is unreadable,
/// else 1 if any shows a problem.
fn diagnose(files: &[PathBuf], json: bool, report: Option<&std::path::Path>) -> ExitCode {
    use harness::diagnose;
    let mut reports = Vec::new();
    let mut unreadable = false;
    let mut index = Vec::new();
    for f in files {
        match diagnose::diagnose_file(f) {
            Ok(r) => {
                if let Some(at) = report {
                    let page = if files.len() == 1 {
                        at.to_path_buf()
                    } else {
                        let stem = f.file_stem().unwrap_or_default().to_string_lossy();
                        at.join(format!("{stem}.html"))
                    };
                    match harness::report::write_capture(f, &r, &page) {
                        Ok(()) => eprintln!("report: {}", page.display()),
                        Err(e) => {
                            eprintln!("harness diagnose: {e}");
                            unreadable = true;
                        }
                    }
                    index.push(harness::report::IndexEntry {
                        name: f.display().to_string(),
                        verdict: if r.has_problem() { "FAIL" } else { "PASS" }.into(),
                        summary: r
                            .findings
                            .first()
                            .map(|x| x.summary.clone())
                            .unwrap_or_default(),
                        page: Some(page),
                    });
                }
                reports.push(r)
            }
            Err(e) => {
                eprintln!("harness diagnose: {e}");
                unreadable = true;
            }
        }
    }
    let out = if json {
        diagnose::report::json(&reports) + "\n"
    } else {
        let texts: Vec<String> = reports.iter().map(diagnose::report::text).collect();
        texts.join("\n")
    };
    if let (Some(at), true) = (report, files.len() > 1) {
        if let Err(e) = harness::report::write_index(&index, &at.join("index.html")) {
            eprintln!("harness diagnose: {e}");
        }
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    if unreadable {
        ExitCode::from(2)
    } else if reports.iter().any(diagnose::Report::has_problem) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn short(b: &NatBehaviour) -> String {
    let m = match b.mapping {
        sim_nat::Mapping::EndpointIndependent => "EIM",
        sim_nat::Mapping::AddressDependent => "ADM",
        sim_nat::Mapping::AddressAndPortDependent => "APDM",
    };
    let f = match b.filtering {
        sim_nat::Filtering::EndpointIndependent => "EIF",
        sim_nat::Filtering::AddressDependent => "ADF",
        sim_nat::Filtering::AddressAndPortDependent => "APDF",
    };
    format!("{m}+{f}")
}

async fn demo(mut types: Vec<NatType>, keep: bool) -> Result<bool> {
    harness::preflight::check()?;
    harness::preflight::require_program("stun")?;
    harness::preflight::require_program("stund")?;
    if types.is_empty() {
        types = NatType::ALL.to_vec();
    }
    println!("Building a home LAN behind each NAT type (alice 192.168.1.10 → home 203.0.113.1 → internet)\n");
    let runs = types.iter().map(|&t| async move {
        let topo = shapes::home_lan(t).build().await?;
        let observed = probe::observe(
            topo.node("alice")?,
            topo.node("server")?,
            topo.node("peer")?,
            40000,
        )
        .await?;
        let classic = vovida_stun::classify(topo.node("alice")?, topo.node("server")?).await?;
        anyhow::Ok((t, topo, observed, classic))
    });
    let results = futures::future::join_all(runs).await;
    println!(
        "{:<22} {:<11} {:<24} {:<22} verdict",
        "NAT type", "configured", "UDP probes (RFC 4787)", "stun client (RFC 3489)"
    );
    let mut all_ok = true;
    let mut keep_alive = Vec::new();
    for r in results {
        let (t, topo, o, c) = r?;
        let configured = t.behaviour();
        let probes = NatBehaviour::new(o.mapping, o.filtering);
        let probes_ok = o.mapping == configured.mapping && o.filtering == configured.filtering;
        let classic_ok = c.nat_type() == Some(t);
        let ok = probes_ok && classic_ok;
        all_ok &= ok;
        let said = c
            .nat_type()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<22} {:<11} {:<24} {:<22} {}",
            t.to_string(),
            short(&configured),
            format!(
                "{} {}",
                short(&probes),
                if o.port_preserved {
                    "port kept"
                } else {
                    "port changed"
                }
            ),
            said,
            if ok { "OK" } else { "MISMATCH" }
        );
        if !classic_ok {
            println!("    stun printed: {}", c.line);
        }
        keep_alive.push(topo);
    }
    if keep {
        println!("\nTopologies are up. Namespaces:");
        for t in &keep_alive {
            println!("  {}", t.namespaces().join(" "));
        }
        println!("Try: ip netns exec <namespace> nft list ruleset   — press Enter to tear down.");
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    }
    drop(keep_alive);
    println!(
        "\n{}",
        if all_ok {
            "All NAT types behave as configured."
        } else {
            "Some NAT types do not behave as configured."
        }
    );
    Ok(all_ok)
}

fn load_all(files: &[PathBuf]) -> Result<Vec<Scenario>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match Scenario::load(f) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where pcaps and ladders go (one folder per scenario).
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Do not print the ladder.
    #[arg(long, short)]
    quiet: bool,
    /// Write a JUnit XML report for CI.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Leave each topology up until Enter is pressed, for `ip netns exec` (runs one at a
    /// time).
    #[arg(long)]
    keep: bool,
    /// Scenarios run at once (default: 8 per core, at most 32); each one's output is printed
    /// whole when it ends.
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Run only this CI job's share of the files: `K/N` takes every N-th file from the K-th
    /// (shards 1/N … N/N together run each file once). Merge their `--junit` reports with
    /// `harness junit-merge`.
    #[arg(long, value_name = "K/N")]
    shard: Option<harness::scenario::batch::Shard>,
    /// Print the files this run (this shard) would run, one per line, and run nothing.
    #[arg(long)]
    list: bool,
    /// Write a self-contained HTML page per scenario (`OUT/NAME/report.html`; with several
    /// files also `OUT/index.html`). The value, if given, is where the page goes when one
    /// file runs, or where the index goes when several do.
    #[arg(long, value_name = "PATH")]
    #[allow(clippy::option_option)]
    report: Option<Option<PathBuf>>,
    /// Play the files in one process on the NAT model, in virtual time (no root, no
    /// namespaces, no sleeping); a file that needs what the model cannot run (an external
    /// program) is listed as refused, with the reason.
    #[arg(long)]
    model: bool,
}

async fn run(a: RunArgs) -> Result<bool> {
    let files = match a.shard {
        Some(sh) => sh.select(a.files),
        None => a.files,
    };
    if a.list {
        for f in &files {
            println!("{}", f.display());
        }
        return Ok(true);
    }
    let scenarios = load_all(&files)?;
    let opts = RunOptions {
        out_dir: Some(a.out.clone()),
        keep: a.keep,
    };
    if a.model {
        return run_model(&scenarios, &opts, a.quiet);
    }
    // Waiting for Enter makes sense for one topology at a time.
    let jobs = if a.keep {
        1
    } else {
        a.jobs.unwrap_or_else(scenario::batch::default_jobs)
    };
    let total = scenarios.len();
    if let Some(sh) = a.shard {
        eprintln!("shard {sh}: {total} file(s)");
    }
    eprintln!(
        "running {total} scenario(s), {} at once",
        jobs.min(total.max(1))
    );
    let started = std::time::Instant::now();
    let mut finished = 0;
    let results = scenario::batch::run_many(&scenarios, jobs, &opts, |i, r| {
        finished += 1;
        // Printed whole, so concurrent scenarios never interleave.
        print!(
            "{}",
            report_one(&scenarios[i], r, a.quiet, &a.out, finished, total)
        );
    })
    .await;
    let named: Vec<(String, std::result::Result<scenario::Outcome, String>)> = scenarios
        .iter()
        .map(|s| s.name().to_string())
        .zip(results)
        .collect();
    let pages = match &a.report {
        Some(at) => write_reports(&scenarios, &named, &a.out, at.as_deref())?,
        None => Default::default(),
    };
    if let Some(path) = &a.junit {
        let suite = match a.shard {
            Some(sh) => format!("harness run (shard {sh})"),
            None => "harness run".to_string(),
        };
        std::fs::write(
            path,
            harness::junit::testsuite_with_pages(&suite, &named, &pages),
        )?;
    }
    let passed = named
        .iter()
        .filter(|(_, r)| matches!(r, Ok(o) if o.verdict == Verdict::Pass))
        .count();
    println!(
        "\n{passed} passed, {} failed in {:.1} s",
        named.len() - passed,
        started.elapsed().as_secs_f64()
    );
    Ok(passed == named.len())
}

/// `harness run --model`: each file on the NAT model, one after another (a file takes
/// milliseconds); refused files are listed with their reason and do not fail the run.
fn run_model(scenarios: &[Scenario], opts: &RunOptions, quiet: bool) -> Result<bool> {
    let started = std::time::Instant::now();
    let (mut passed, mut failed, mut refused) = (0, 0, Vec::new());
    for s in scenarios {
        if let Some(why) = harness::model::refusal(s) {
            refused.push(format!("{}: {why}", s.name()));
            continue;
        }
        let r = harness::model::run(s, opts).map_err(|e| e.to_string());
        match &r {
            Ok(o) if o.verdict == Verdict::Pass => passed += 1,
            _ => failed += 1,
        }
        let out = opts
            .out_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("runs"));
        print!(
            "{}",
            report_one(s, &r, quiet, out, passed + failed, scenarios.len())
        );
    }
    if !refused.is_empty() {
        println!("\nrefused by the model ({}):", refused.len());
        for line in &refused {
            println!("  {line}");
        }
    }
    println!(
        "\nmodel: {passed} passed, {failed} failed, {} refused in {:.3} s",
        refused.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(failed == 0)
}

/// The run reports (`--report`): one page per scenario, and an index when several ran. Returns
/// each scenario's page, for the JUnit report to link to.
fn write_reports(
    scenarios: &[Scenario],
    named: &[(String, std::result::Result<scenario::Outcome, String>)],
    out: &std::path::Path,
    at: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    use harness::report;
    let mut pages = std::collections::BTreeMap::new();
    let mut index = Vec::new();
    for (s, (name, r)) in scenarios.iter().zip(named) {
        let page = match r {
            Ok(o) => {
                let page = match at {
                    Some(at) if scenarios.len() == 1 => at.to_path_buf(),
                    _ => out.join(name).join("report.html"),
                };
                let started = std::time::Instant::now();
                report::write_run(s, o, &page)?;
                let size = std::fs::metadata(&page).map(|m| m.len()).unwrap_or(0);
                eprintln!(
                    "report: {} ({} KiB in {:.0} ms)",
                    page.display(),
                    size.div_ceil(1024),
                    started.elapsed().as_secs_f64() * 1e3
                );
                pages.insert(name.clone(), page.clone());
                Some(page)
            }
            Err(_) => None,
        };
        index.push(report::IndexEntry {
            name: name.clone(),
            verdict: match r {
                Ok(o) if o.verdict == Verdict::Pass => "PASS".into(),
                Ok(_) => "FAIL".into(),
                Err(e) => format!("ERROR: {e}"),
            },
            summary: s.file.scenario.summary.clone(),
            page,
        });
    }
    if scenarios.len() > 1 {
        let path = at.map_or_else(|| out.join("index.html"), std::path::Path::to_path_buf);
        std::fs::create_dir_all(out)?;
        report::write_index(&index, &path)?;
        eprintln!("report index: {}", path.display());
    }
    Ok(pages)
}

/// Everything `harness run` prints about one scenario, as one block.
fn report_one(
    s: &Scenario,
    r: &std::result::Result<scenario::Outcome, String>,
    quiet: bool,
    out: &std::path::Path,
    n: usize,
    total: usize,
) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let o = match r {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(t, "[{n}/{total}] ERROR {}: {e}", s.name());
            return t;
        }
    };
    if !quiet {
        let _ = writeln!(t, "\n=== {} ===\n{}", o.name, o.ladder);
    }
    if !o.field_checks.is_empty() {
        let _ = writeln!(t, "\nDiagnosis steps:");
        for line in &o.field_checks {
            let _ = writeln!(t, "  {line}");
        }
    }
    for (what, ok, seen) in &o.checks {
        let _ = writeln!(t, "  {} {what} ({seen})", if *ok { "✓" } else { "✗" });
    }
    if let Some(e) = &o.error {
        let _ = writeln!(t, "  ✗ step failed: {e}");
    }
    if !o.diagnosis.is_empty() {
        let _ = writeln!(t, "\nWhat `harness diagnose` finds in this run's captures:");
        for r in &o.diagnosis {
            t.push_str(&harness::diagnose::report::text(r));
        }
        t.push('\n');
    }
    let _ = writeln!(
        t,
        "[{n}/{total}] {} {} in {:.1} s — pcaps and ladder in {}",
        if o.verdict == Verdict::Pass {
            "PASS"
        } else {
            "FAIL"
        },
        o.name,
        o.duration.as_secs_f64(),
        out.join(&o.name).display()
    );
    t
}

fn junit_merge(files: &[PathBuf], out: &std::path::Path) -> Result<bool> {
    let mut reports = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        reports.push((f.display().to_string(), text));
    }
    let merged = harness::junit::merge(&reports).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(out, merged)?;
    Ok(true)
}

fn check(files: &[PathBuf]) -> Result<bool> {
    let mut ok = true;
    for f in files {
        match Scenario::load(f) {
            Ok(s) => println!("ok {} ({})", f.display(), s.name()),
            Err(e) => {
                ok = false;
                println!("{e}");
            }
        }
    }
    Ok(ok)
}

fn list(dir: PathBuf) -> Result<bool> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut ok = true;
    for f in files {
        match Scenario::load(&f) {
            Ok(s) => println!("{:<44} {}", f.display(), s.file.scenario.summary),
            Err(e) => {
                ok = false;
                println!("{:<44} INVALID: {e}", f.display())
            }
        }
    }
    Ok(ok)
}

fn catalogue(guide: &std::path::Path, dir: &std::path::Path) -> Result<bool> {
    let lines = harness::catalogue::load_guide(guide)?;
    let entries = harness::catalogue::load_entries(dir)?;
    print!("{}", harness::catalogue::markdown(&lines, &entries));
    let problems = harness::catalogue::problems(&lines, &entries);
    for p in &problems {
        eprintln!("{p}");
    }
    Ok(problems.is_empty())
}

async fn matrix(
    file: PathBuf,
    timeouts: Vec<u32>,
    fragments: bool,
    report: Option<PathBuf>,
) -> Result<bool> {
    let s = Scenario::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let algs = [sim_nat::SipAlg::Off, sim_nat::SipAlg::Kernel];
    let timeouts: Vec<Option<u32>> = if timeouts.is_empty() {
        vec![None]
    } else {
        timeouts.into_iter().map(Some).collect()
    };
    let fragments: Vec<Option<bool>> = if fragments {
        vec![Some(false), Some(true)]
    } else {
        vec![None]
    };
    eprintln!(
        "running {} cells concurrently …",
        NatType::ALL.len() * algs.len() * timeouts.len() * fragments.len()
    );
    let cells = scenario::matrix_with_fragments(&s, &algs, &timeouts, &fragments).await?;
    println!(
        "{}: expectations per NAT type (rows) × SIP ALG{}{} (columns)\n",
        s.name(),
        if timeouts.len() > 1 {
            " × UDP timeout"
        } else {
            ""
        },
        if fragments.len() > 1 {
            " × fragments"
        } else {
            ""
        }
    );
    let label = |c: &scenario::Cell| {
        let alg = match &c.alg {
            sim_nat::SipAlg::Off => "alg off".to_string(),
            sim_nat::SipAlg::Kernel => "alg kernel".to_string(),
            sim_nat::SipAlg::Emulated(f) => format!("alg {f:?}"),
        };
        let alg = match c.udp_timeout_secs {
            Some(t) => format!("{alg} {t}s"),
            None => alg,
        };
        match c.drop_fragments {
            Some(true) => format!("{alg} frag drop"),
            Some(false) => format!("{alg} frag pass"),
            None => alg,
        }
    };
    let columns = algs.len() * timeouts.len() * fragments.len();
    let mut header = format!("{:<22}", "");
    for c in cells.iter().take(columns) {
        header.push_str(&format!("{:<34}", label(c)));
    }
    println!("{header}");
    // A cell says whether it differs and what it saw, cut to the column; the full story of each
    // differing cell follows the table, numbered.
    let mut notes = Vec::new();
    for row in cells.chunks(columns) {
        let mut line = format!("{:<22}", row[0].nat.to_string());
        for c in row {
            let cell = if c.verdict == Verdict::Pass {
                "as expected".to_string()
            } else {
                notes.push(c);
                let full = format!("[{}] DIFFERS: {}", notes.len(), c.failed.join("; "));
                if full.chars().count() > 32 {
                    format!("{}…", full.chars().take(31).collect::<String>())
                } else {
                    full
                }
            };
            line.push_str(&format!("{cell:<34}"));
        }
        println!("{line}");
    }
    for (i, c) in notes.iter().enumerate() {
        println!("\n[{}] {} × {}:", i + 1, c.nat, label(c));
        for (what, seen) in c.failed_expectations.iter().zip(&c.failed) {
            println!("    ✗ {what} ({seen})");
        }
        for e in c.failed.iter().skip(c.failed_expectations.len()) {
            println!("    error: {e}");
        }
    }
    if let Some(dir) = report {
        std::fs::create_dir_all(&dir)?;
        let mut index = Vec::new();
        for c in &cells {
            let name: String = label(c)
                .replace(' ', "-")
                .chars()
                .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '-')
                .collect();
            let page = dir.join(format!("{}-{name}.html", c.nat));
            std::fs::write(&page, &c.report)?;
            index.push(harness::report::IndexEntry {
                name: format!("{} × {}", c.nat, label(c)),
                verdict: if c.verdict == Verdict::Pass {
                    "PASS"
                } else {
                    "FAIL"
                }
                .into(),
                summary: c.failed.join("; "),
                page: Some(page),
            });
        }
        let path = dir.join("index.html");
        harness::report::write_index(&index, &path)?;
        eprintln!("report index: {}", path.display());
    }
    Ok(cells.iter().all(|c| c.verdict == Verdict::Pass))
}
