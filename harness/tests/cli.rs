//! The `harness` binary's exit codes and error lines, as a script or CI job sees them:
//! `diagnose` exits 0 on a healthy capture, 1 on a problem, 2 on a file it cannot read (with one
//! line saying why); `import` of something that is not a capture fails in one line. Reads files
//! only: no root, no namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn harness(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("the harness binary runs")
}

/// A scratch file with `bytes` in it, unique to this test process and `name`.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("snh-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).expect("write scratch file");
    p
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn diagnose_exits_0_on_a_healthy_capture() {
    let f = fixture("healthy-call-port-preserving.pcapng");
    let o = harness(&["diagnose".as_ref(), f.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("healthy-call-port-preserving"));
}

#[test]
fn diagnose_exits_1_when_it_finds_a_problem() {
    let f = fixture("private-contact-swallowed.pcap");
    let o = harness(&["diagnose".as_ref(), f.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("PROBLEM [private-address"));
}

#[test]
fn diagnose_exits_2_with_one_line_on_an_empty_or_missing_or_foreign_file() {
    let empty = scratch("empty.pcap", b"");
    let text = scratch("notes.txt", b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n");
    let missing = std::env::temp_dir().join("snh-cli-no-such-file.pcap");
    for f in [&empty, &text, &missing] {
        let o = harness(&["diagnose".as_ref(), f.as_os_str()]);
        assert_eq!(o.status.code(), Some(2), "{}: {o:?}", f.display());
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "{}: {lines:?}", f.display());
        assert!(
            lines[0].starts_with("harness diagnose: ") && lines[0].contains(&*f.to_string_lossy()),
            "{lines:?}"
        );
    }
    // One unreadable file among good ones still exits 2: the run is not to be trusted.
    let good = fixture("healthy-call-port-preserving.pcapng");
    let o = harness(&["diagnose".as_ref(), good.as_os_str(), empty.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let _ = std::fs::remove_file(empty);
    let _ = std::fs::remove_file(text);
}

#[test]
fn import_of_a_file_that_is_not_a_capture_fails_in_one_line() {
    let text = scratch("ticket.txt", b"customer says: no audio since Tuesday\n");
    let out = std::env::temp_dir().join(format!("snh-cli-{}-out.toml", std::process::id()));
    let o = harness(&[
        "import".as_ref(),
        text.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("harness: ") && lines[0].contains(&*text.to_string_lossy()),
        "{lines:?}"
    );
    assert!(
        !out.exists(),
        "nothing is written for a file that is not a capture"
    );
    let _ = std::fs::remove_file(text);
}

#[test]
fn import_of_a_lan_capture_says_so_in_one_line() {
    let f = fixture("healthy-call-port-preserving.pcapng");
    let out = std::env::temp_dir().join(format!("snh-cli-{}-lan.toml", std::process::id()));
    let o = harness(&[
        "import".as_ref(),
        f.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("taken on a LAN"), "{lines:?}");
    assert!(!out.exists());
}

#[test]
fn import_of_a_server_capture_exits_0_and_writes_the_scenario_and_its_twin() {
    let f = fixture("private-contact-swallowed.pcap");
    let dir = std::env::temp_dir().join(format!("snh-cli-{}-import", std::process::id()));
    let out = dir.join("ticket.toml");
    let o = harness(&[
        "import".as_ref(),
        f.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(out.exists() && dir.join("ticket-fix-far-end.toml").exists());
    assert!(String::from_utf8_lossy(&o.stdout).contains("192.0.2.50      → 203.0.113.10"));
    let _ = std::fs::remove_dir_all(dir);
}

fn catalogue_files() -> Vec<PathBuf> {
    let (_, dir) = harness::catalogue::default_paths();
    harness::catalogue::scenario_files(&dir).expect("scenarios/ exists")
}

#[test]
fn three_shards_of_the_catalogue_run_every_file_exactly_once() {
    let files = catalogue_files();
    let mut listed = Vec::new();
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            "--list".as_ref(),
            "--shard".as_ref(),
            shard.as_ref(),
        ];
        args.extend(files.iter().map(|f| f.as_os_str()));
        let o = harness(&args);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let mine: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(PathBuf::from)
            .collect();
        // Dealt round-robin: no shard gets more than one file more than another.
        assert!(
            mine.len().abs_diff(files.len() / 3) <= 1,
            "{shard}: {mine:?}"
        );
        listed.extend(mine);
    }
    listed.sort();
    assert_eq!(listed, files);
}

#[test]
fn a_bad_shard_is_refused_with_what_a_shard_is() {
    let o = harness(&[
        "run".as_ref(),
        "--shard".as_ref(),
        "4/3".as_ref(),
        "x.toml".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("K/N with 1 ≤ K ≤ N"),
        "{o:?}"
    );
}

#[test]
fn check_passes_the_catalogue_and_names_file_line_and_column_of_a_broken_file() {
    let files = catalogue_files();
    let mut args: Vec<&std::ffi::OsStr> = vec!["check".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let o = harness(&args);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        files.len()
    );

    let broken = scratch(
        "broken.toml",
        b"[scenario]\nname = \"x\"\nt1-ms = \"fast\"\n",
    );
    let o = harness(&["check".as_ref(), broken.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("{}:3:", broken.display())) && out.contains("expected u64"),
        "{out}"
    );
}
