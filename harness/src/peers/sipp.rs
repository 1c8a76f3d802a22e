//! SIPp (Debian `sip-tester`) inside a node: a SIP peer nobody here wrote, whose verdict says
//! whether our UA and proxy speak SIP as the field does.
//!
//! One call of SIPp is one scenario run to completion in the foreground (`-m`, `-timeout`, never
//! `-bg`): the built-in `uac` and `uas`, or a scenario file written to a private temporary
//! directory, which is also SIPp's working directory so its `-trace_err` log lands there and can
//! be read back. The exit code is the verdict (SIPp's manual): 0 every call succeeded, 1 at
//! least one failed, 97 stopped by an internal command, 99 no call was processed, 255/254 a
//! fatal error (254: a socket could not be bound).
//!
//! ```no_run
//! # async fn f(topo: &harness::Topology) -> harness::Result<()> {
//! use harness::peers::sipp::{Scenario, Sipp};
//! let uac = Sipp::new(Scenario::Uac, "198.51.100.20:5070".parse().unwrap())
//!     .remote("203.0.113.10:5060".parse().unwrap())
//!     .service("bob");
//! let outcome = uac.run(topo.node("peer")?).await?;
//! assert!(outcome.succeeded(), "{outcome}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::preflight;
use crate::process::Process;
use crate::topology::Node;

/// What SIPp plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Built-in `-sn uac`: INVITE (SDP), optional 100/180/183, 200, ACK, BYE, 200. It does not
    /// REGISTER.
    Uac,
    /// Built-in `-sn uas`: INVITE, 180, 200, ACK, BYE, 200, then 4 s of time-wait.
    Uas,
    /// REGISTER `sip:[service]@[remote_ip]` with a Contact of SIPp's own address (private behind
    /// a NAT, as a phone writes it), asking for `expires` seconds; expects 200.
    Register { expires: u32 },
    /// Any scenario XML, written to a file and passed with `-sf`.
    Xml { name: String, xml: String },
}

impl Scenario {
    /// The XML of [`Scenario::Register`]: one REGISTER with `rport` in Via (RFC 3581) and
    /// retransmissions every 500 ms (SIPp's T1), then a 200 OK.
    pub fn register_xml(expires: u32) -> String {
        format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:[service]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Expires: {expires}
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" rtd="true">
  </recv>
</scenario>
"#
        )
    }

    /// `-sn NAME` or the XML to write for `-sf`.
    fn source(&self) -> ScenarioSource {
        match self {
            Scenario::Uac => ScenarioSource::BuiltIn("uac"),
            Scenario::Uas => ScenarioSource::BuiltIn("uas"),
            Scenario::Register { expires } => ScenarioSource::File {
                name: "register".into(),
                xml: Self::register_xml(*expires),
            },
            Scenario::Xml { name, xml } => ScenarioSource::File {
                name: name.clone(),
                xml: xml.clone(),
            },
        }
    }
}

enum ScenarioSource {
    BuiltIn(&'static str),
    File { name: String, xml: String },
}

/// One SIPp run: the scenario, where SIPp listens, whom it talks to.
#[derive(Debug, Clone)]
pub struct Sipp {
    pub scenario: Scenario,
    /// `-i` and `-p`: the address SIPp binds and writes into Via/Contact.
    pub local: SocketAddr,
    /// The remote host (a UAC's target; a UAS needs none).
    pub remote: Option<SocketAddr>,
    /// `-s`: the user part SIPp calls or registers.
    pub service: Option<String>,
    /// `-m`: calls to process before exiting.
    pub calls: u32,
    /// `-timeout`: SIPp gives up (and fails) after this long; the process is killed a few
    /// seconds later if it has not exited.
    pub timeout: Duration,
    /// Anything else, appended as is.
    pub extra_args: Vec<String>,
}

impl Sipp {
    /// One call of `scenario` from `local`, 20 s timeout.
    pub fn new(scenario: Scenario, local: SocketAddr) -> Self {
        Self {
            scenario,
            local,
            remote: None,
            service: None,
            calls: 1,
            timeout: Duration::from_secs(20),
            extra_args: Vec::new(),
        }
    }

    pub fn remote(mut self, remote: SocketAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    pub fn service(mut self, user: &str) -> Self {
        self.service = Some(user.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts SIPp in `node`; [`SippRun::wait`] collects the verdict.
    pub async fn start(&self, node: &Node) -> Result<SippRun> {
        let program = preflight::require_program("sipp")?;
        let dir = TempDir::new()?;
        let mut args: Vec<String> = Vec::new();
        match self.scenario.source() {
            ScenarioSource::BuiltIn(name) => args.extend(["-sn".into(), name.into()]),
            ScenarioSource::File { name, xml } => {
                let path = dir.path().join(format!("{name}.xml"));
                std::fs::write(&path, xml)
                    .map_err(Error::io(format!("write SIPp scenario {}", path.display())))?;
                args.extend(["-sf".into(), path.display().to_string()]);
            }
        }
        if let Some(remote) = self.remote {
            args.push(remote.to_string());
        }
        args.extend([
            "-i".into(),
            self.local.ip().to_string(),
            "-p".into(),
            self.local.port().to_string(),
            "-m".into(),
            self.calls.to_string(),
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)),
            "-timeout_error".into(),
            "-trace_err".into(),
            // No terminal to read commands from; the screen goes to the (piped) stdout.
            "-nostdin".into(),
        ]);
        if let Some(s) = &self.service {
            args.extend(["-s".into(), s.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let mut cmd = Command::new(&program);
        cmd.args(&args).current_dir(dir.path());
        let process = node.start_command(cmd).await?;
        Ok(SippRun {
            args,
            process,
            dir,
            kill_after: self.timeout + Duration::from_secs(5),
        })
    }

    /// Starts SIPp in `node` and waits for its verdict.
    pub async fn run(&self, node: &Node) -> Result<SippOutcome> {
        self.start(node).await?.wait().await
    }
}

/// A SIPp process running in a node; killed (and its directory removed) on drop.
pub struct SippRun {
    args: Vec<String>,
    process: Process,
    dir: TempDir,
    kill_after: Duration,
}

impl fmt::Debug for SippRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SippRun")
            .field("args", &self.args)
            .field("pid", &self.process.pid())
            .finish()
    }
}

impl SippRun {
    /// Waits for SIPp to exit (killing it after its own timeout plus 5 s) and reads its verdict.
    pub async fn wait(mut self) -> Result<SippOutcome> {
        let status = self.process.wait_timeout(self.kill_after).await;
        self.process.kill();
        let errors = read_error_logs(self.dir.path());
        Ok(SippOutcome {
            verdict: SippVerdict::from_status(status),
            args: self.args.clone(),
            stdout: self.process.stdout(),
            stderr: self.process.stderr(),
            errors,
        })
    }
}

/// What SIPp's exit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippVerdict {
    /// Exit 0: every call succeeded.
    AllCallsSucceeded,
    /// Exit 1: at least one call failed (an unexpected message, a timeout, …).
    SomeCallsFailed,
    /// Exit 97: stopped by an internal command.
    Stopped,
    /// Exit 99: no call was processed.
    NoCalls,
    /// Any other exit code: a fatal error (255: scenario or option, 254: socket bind).
    Fatal(i32),
    /// Killed by a signal, or still running at the deadline (then killed).
    Killed,
}

impl SippVerdict {
    fn from_status(status: Option<ExitStatus>) -> Self {
        match status.and_then(|s| s.code()) {
            Some(0) => SippVerdict::AllCallsSucceeded,
            Some(1) => SippVerdict::SomeCallsFailed,
            Some(97) => SippVerdict::Stopped,
            Some(99) => SippVerdict::NoCalls,
            Some(c) => SippVerdict::Fatal(c),
            None => SippVerdict::Killed,
        }
    }
}

/// The verdict of one SIPp run with what it printed, for a failure message.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    pub verdict: SippVerdict,
    pub args: Vec<String>,
    pub stdout: String,
    pub stderr: String,
    /// The `-trace_err` log: every unexpected message SIPp saw.
    pub errors: String,
}

impl SippOutcome {
    pub fn succeeded(&self) -> bool {
        self.verdict == SippVerdict::AllCallsSucceeded
    }
}

impl fmt::Display for SippOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sipp {}: {:?}", self.args.join(" "), self.verdict)?;
        if !self.errors.trim().is_empty() {
            writeln!(f, "--- errors log\n{}", self.errors.trim_end())?;
        }
        if !self.stderr.trim().is_empty() {
            writeln!(f, "--- stderr\n{}", self.stderr.trim_end())?;
        }
        // The last screen is the statistics summary; earlier ones repeat it.
        let tail: Vec<&str> = self.stdout.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        write!(f, "--- stdout (tail)\n{}", tail.join("\n"))
    }
}

fn read_error_logs(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut out = String::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("_errors.log") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// A directory of this process under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("snh-sipp-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(Error::io(format!(
            "create SIPp directory {}",
            path.display()
        )))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
