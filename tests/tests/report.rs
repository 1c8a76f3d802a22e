//! The run report in a real browser: three catalogue runs written as pages, each opened in
//! headless Chromium, which must render it without a console error; the DOM it built must draw
//! every SIP packet of the run's trace, and binding-expiry's timeline must put the binding's
//! expiry before the INVITE that then arrived at the dead binding. The page of a capture
//! (`harness diagnose --report`) must draw each SIP message the capture holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use harness::capture::Direction;
use harness::scenario::{self, Outcome, RunOptions, Scenario};
use harness::trace::{Entry, Payload};
use tests::require_kernel;

/// Chromium, or `None` (with a loud line) outside CI; under `CI=true` a missing browser fails.
fn chromium() -> Option<PathBuf> {
    let found = harness::preflight::find_program("chromium");
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "the report test needs chromium under CI: apt-get install -y chromium"
        );
        eprintln!("\n!!! SKIPPING REPORT TEST: chromium not found (apt-get install -y chromium)\n");
    }
    found
}

/// What the browser made of a page: the DOM it built and what it logged to its console.
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Opens `page` in headless Chromium (no network, a throw-away profile) and dumps its DOM.
fn render(browser: &Path, page: &Path) -> Result<Rendered> {
    let profile = std::env::temp_dir().join(format!("snh-report-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.canonicalize()?.display()))
        .output()
        .context("run chromium")?;
    let _ = std::fs::remove_dir_all(&profile);
    ensure!(
        out.status.success(),
        "chromium failed on {}",
        page.display()
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    Ok(Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
    })
}

/// The attributes of every `<tag …>` start tag in `dom` whose class list contains `class`.
fn elements(dom: &str, tag: &str, class: &str) -> Vec<BTreeMap<String, String>> {
    dom.split('<')
        .filter_map(|t| t.strip_prefix(tag))
        .filter(|t| t.starts_with([' ', '>']))
        .map(|t| {
            let head = t.split('>').next().unwrap_or("");
            let mut attrs = BTreeMap::new();
            let mut rest = head;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].rsplit(' ').next().unwrap_or("").to_string();
                let value_and_more = &rest[eq + 2..];
                let end = value_and_more.find('"').unwrap_or(value_and_more.len());
                attrs.insert(name, value_and_more[..end].to_string());
                rest = &value_and_more[(end + 1).min(value_and_more.len())..];
            }
            attrs
        })
        .filter(|a| {
            a.get("class")
                .is_some_and(|c| c.split_whitespace().any(|w| w == class))
        })
        .collect()
}

fn t_of(a: &BTreeMap<String, String>) -> f64 {
    a.get("data-t")
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN)
}

/// SIP packets in the trace (every copy at every vantage point), and those a host sent.
fn sip_counts(o: &Outcome) -> (usize, usize) {
    let sip: Vec<_> = o
        .trace
        .entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Packet {
                vantage,
                direction,
                payload: Payload::Sip(_),
                ..
            } => Some((vantage.iface == "eth0", *direction)),
            _ => None,
        })
        .collect();
    let sent = sip
        .iter()
        .filter(|(host, d)| *host && *d == Direction::Out)
        .count();
    (sip.len(), sent)
}

async fn run_and_write(file: &str, dir: &Path) -> Result<(Outcome, PathBuf)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file);
    let s = Scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let o = scenario::run(
        &s,
        &RunOptions {
            out_dir: Some(dir.to_path_buf()),
            keep: false,
        },
    )
    .await?;
    let page = dir.join(s.name()).join("report.html");
    harness::report::write_run(&s, &o, &page)?;
    Ok((o, page))
}

/// The console check can fail: a page that logs an error is caught.
fn console_check_catches(browser: &Path, dir: &Path) -> Result<()> {
    let canary = dir.join("canary.html");
    std::fs::write(
        &canary,
        "<!DOCTYPE html><html><body><script>console.error('canary')</script></body></html>",
    )?;
    let r = render(browser, &canary)?;
    ensure!(
        r.console.iter().any(|l| l.contains("canary")),
        "chromium's console output is not where the test reads it: {:?}",
        r.console
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_report_renders_in_a_browser_and_draws_what_the_run_captured() -> Result<()> {
    require_kernel!();
    let Some(browser) = chromium() else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("snh-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    console_check_catches(&browser, &dir)?;
    let (a, b, c) = tokio::join!(
        run_and_write("408-private-contact.toml", &dir),
        run_and_write("binding-expiry.toml", &dir),
        run_and_write("one-way-audio-who-sends-first.toml", &dir),
    );
    let runs = [a?, b?, c?];
    for (o, page) in &runs {
        let html = std::fs::read_to_string(page)?;
        // Self-contained: the only URL in it is the SVG namespace.
        let urls = html.matches("http://").count() + html.matches("https://").count();
        let namespaces = html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
        ensure!(urls == namespaces, "{}: a link to the outside", o.name);
        ensure!(
            !html.contains("<script") && !html.contains("src=\""),
            "{}: an external asset",
            o.name
        );

        let r = render(&browser, page)?;
        ensure!(
            r.console.is_empty(),
            "{}: console says {:?}",
            o.name,
            r.console
        );
        let (copies, sent) = sip_counts(o);
        ensure!(copies > 0, "{}: the run captured no SIP", o.name);
        let drawn = elements(&r.dom, "circle", "copy").len();
        let messages = elements(&r.dom, "g", "msg").len();
        ensure!(
            drawn == copies,
            "{}: {drawn} SIP copies drawn, the trace holds {copies}",
            o.name
        );
        ensure!(
            messages == sent,
            "{}: {messages} messages drawn, hosts sent {sent}",
            o.name
        );
    }

    // binding-expiry: the binding dies (2 s idle) before alice's INVITE, and the INVITE the
    // server forwards arrives at the dead binding.
    let (o, page) = &runs[1];
    let dom = render(&browser, page)?.dom;
    let invite = elements(&dom, "g", "msg")
        .into_iter()
        .find(|m| m.get("data-method").map(String::as_str) == Some("INVITE"))
        .context("an INVITE in the diagram")?;
    let marks = elements(&dom, "g", "mark");
    let expired: Vec<f64> = marks
        .iter()
        .filter(|m| m.get("data-kind").map(String::as_str) == Some("expired"))
        .map(t_of)
        .collect();
    let Some(first_expiry) = expired.iter().copied().reduce(f64::min) else {
        bail!("{}: no expiry on the binding timeline", o.name);
    };
    ensure!(
        first_expiry < t_of(&invite),
        "{}: binding expired at {first_expiry:.3} s, INVITE at {:.3} s",
        o.name,
        t_of(&invite)
    );
    ensure!(
        marks
            .iter()
            .any(|m| m.get("data-kind").map(String::as_str) == Some("drop")
                && t_of(m) >= t_of(&invite)),
        "{}: no packet dropped at the dead binding after the INVITE",
        o.name
    );

    // 408-private-contact: the INVITE to the private Contact is drawn as lost.
    let (o, page) = &runs[0];
    let dom = render(&browser, page)?.dom;
    ensure!(
        elements(&dom, "g", "lost")
            .iter()
            .any(|m| m.get("data-method").map(String::as_str) == Some("INVITE")),
        "{}: the INVITE to the private address is not marked lost",
        o.name
    );

    // `harness diagnose --report` on the server's capture of the same run: one lane per address,
    // each SIP message drawn from its sender to its receiver.
    let capture = dir.join(&o.name).join("server.pcap");
    let diagnosis = harness::diagnose::diagnose_file(&capture)?;
    let page = dir.join("server-capture.html");
    harness::report::write_capture(&capture, &diagnosis, &page)?;
    let r = render(&browser, &page)?;
    ensure!(
        r.console.is_empty(),
        "capture page: console says {:?}",
        r.console
    );
    ensure!(
        elements(&r.dom, "g", "msg").len() == diagnosis.sip_messages,
        "capture page: {} messages drawn, the capture holds {}",
        elements(&r.dom, "g", "msg").len(),
        diagnosis.sip_messages
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
