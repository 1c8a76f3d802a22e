//! External programs (`command` components): started inside their host with their files
//! written and their placeholders filled in, waited on until ready, and acted on (`dial`,
//! `hang-up`).

use std::path::PathBuf;
use std::time::Duration;

use super::{io_err, Running};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::scenario::file::{ActionDef, Component, PortProtocol, ReadyDef};
use crate::scenario::Scenario;
use crate::topology::{Node, Topology};

/// Where the files of this run's commands go; removed when the run ends.
pub(super) fn files_root(topo: &Topology) -> PathBuf {
    crate::names::files_dir(topo.run_id())
}

/// Writes a command's files, substitutes its arguments, starts it inside its host and waits
/// until it is ready.
pub(super) async fn start_command(
    s: &Scenario,
    topo: &Topology,
    comp: &Component,
) -> Result<Process> {
    let Component::Command {
        name,
        host,
        run,
        ready,
        files,
        ..
    } = comp
    else {
        unreachable!("only commands are started here");
    };
    // Per topology: cells of a matrix run the same command concurrently.
    let dir = files_root(topo).join(name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let fill = |t: &str| {
        super::super::vars::apply(&s.vars, t).replace("{dir}", &dir.display().to_string())
    };
    let mut args: Vec<String> = run.iter().map(|a| fill(a)).collect();
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, fill(text))
            .map_err(Error::io(format!("write {}", path.display())))?;
        for a in &mut args {
            *a = a.replace(&format!("{{file:{file}}}"), &path.display().to_string());
        }
    }
    let node = topo.node(host)?;
    let argv: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let mut p = if comp.types_commands() {
        node.start_interactive(&args[0], &argv).await?
    } else {
        node.start(&args[0], &argv).await?
    };
    if let Some(ready) = ready {
        wait_ready(&mut p, name, host, ready).await?;
    }
    Ok(p)
}

/// Waits until a started program is ready: it printed a line, bound a port, or had its delay.
async fn wait_ready(p: &mut Process, name: &str, host: &str, ready: &ReadyDef) -> Result<()> {
    if let Some(line) = &ready.log {
        if !p.wait_for_output(line, Duration::from_secs(10)).await {
            return Err(io_err(format!(
                "command `{name}` never printed `{line}`{}",
                last_words(p)
            )));
        }
    }
    if let Some(port) = ready.port {
        let tcp = ready.protocol == PortProtocol::Tcp;
        if !p.wait_for_port(port, tcp, Duration::from_secs(10)).await {
            let what = if tcp { "listened on TCP" } else { "bound UDP" };
            return Err(io_err(format!(
                "command `{name}` never {what} port {port} in `{host}`{}",
                last_words(p)
            )));
        }
    }
    if let Some(ms) = ready.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// `; its last line: …` — one line for an error, however much the program printed.
fn last_words(p: &Process) -> String {
    let out = format!("{}\n{}", p.stdout(), p.stderr());
    let last = out.lines().map(str::trim).rfind(|l| !l.is_empty());
    match last {
        Some(l) => format!("; its last line: {l}"),
        None => String::new(),
    }
}

/// The command whose SIP user is `user`: its name and its `dial` and `hang-up` actions.
pub(super) fn dialer<'a>(
    s: &'a Scenario,
    user: &str,
) -> (&'a str, Option<&'a ActionDef>, Option<&'a ActionDef>) {
    s.file
        .components
        .iter()
        .find_map(|c| match c.get_ref() {
            Component::Command {
                name,
                user: Some(u),
                dial,
                hang_up,
                ..
            } if u == user => Some((name.as_str(), dial.as_ref(), hang_up.as_ref())),
            _ => None,
        })
        .expect("checked: a command plays the user")
}

/// Does `action` to command `name`: types its line into the program, or runs its program in
/// the command's host; `{to}` is the user called. Returns the ladder's note on what was done,
/// if anything was.
pub(super) async fn act(
    s: &Scenario,
    r: &mut Running,
    (name, host): (&str, &str),
    action: &ActionDef,
    to: &str,
) -> Result<Option<String>> {
    let fill = |t: &str| super::super::vars::apply(&s.vars, t).replace("{to}", to);
    if let Some(line) = &action.stdin {
        let line = fill(line);
        let p = r
            .commands
            .get_mut(name)
            .ok_or_else(|| io_err(format!("command `{name}` is not running (never started?)")))?;
        p.write_line(&line)?;
        return Ok(Some(format!("{name}: typed `{line}`")));
    }
    let argv: Vec<String> = action.run.iter().flatten().map(|a| fill(a)).collect();
    if argv.is_empty() {
        return Ok(None);
    }
    run_in(r.topo.node(host)?, name, &argv).await?;
    Ok(Some(format!("{name}: ran `{}`", argv.join(" "))))
}

/// Runs `argv` in `node` for command `name`, and fails unless it succeeds within 10 s.
async fn run_in(node: &Node, name: &str, argv: &[String]) -> Result<()> {
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let (status, out, err) = node
        .output(&argv[0], &args, Duration::from_secs(10))
        .await?;
    if status.is_some_and(|st| st.success()) {
        return Ok(());
    }
    Err(io_err(format!(
        "command `{name}`: `{}` {} ({})",
        argv.join(" "),
        status.map_or("did not finish within 10 s".into(), |st| format!(
            "failed: {st}"
        )),
        format!("{out}\n{err}").trim()
    )))
}
