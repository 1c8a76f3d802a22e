//! Kamailio (Debian `kamailio`, 5.6) as the far-end SBC in place of ours: a registrar + proxy
//! nobody here wrote, doing far-end NAT traversal with nathelper the way deployments do.
//!
//! The configuration ([`KamailioConfig::render`]) is the smallest one that does the job:
//! usrloc in memory (`db_mode 0`, no database), one UDP listener on the public address, no DNS.
//! On every request `force_rport()`; when `nat_uac_test("19")` says the sender is NATed
//! (private Contact, Via host ≠ source, or source port ≠ Via port) a REGISTER gets
//! `fix_nated_register()` (the binding's received address is the source), any other first-hop
//! request `set_contact_alias()`, and the contact is flagged for nathelper's OPTIONS pings
//! (`sipping_bflag`) every `natping_interval`. In-dialog requests are loose-routed and
//! `handle_ruri_alias()` sends them to the alias; replies from a NATed callee get
//! `set_contact_alias()` too. Media is not relayed unless `rtpengine` is set: then
//! [`super::rtpengine`] runs in the same host and `rtpengine_manage()` rewrites every SDP (the
//! offer in the INVITE, the answer in its reply, the delete on BYE) to the relay, with
//! `SIP-source-address` where the SDP carries a private address (`nat_uac_test("8")`).
//!
//! The process runs in the foreground (`-DD`, children still forked) logging to stderr (`-E`),
//! with its runtime directory in a private temporary directory; it is ready when its UDP port
//! answers an OPTIONS with 200.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::preflight;
use crate::process::Process;
use crate::topology::Node;

/// How long Kamailio may take to answer its first OPTIONS.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// The route that hands every SDP to rtpengine: offers, answers and the delete on BYE/CANCEL are
/// told apart by `rtpengine_manage()` itself.
const MEDIA_ROUTE: &str = "route[MEDIA] {
\tif (is_method(\"BYE|CANCEL\")) {
\t\trtpengine_manage();
\t} else if (has_body(\"application/sdp\")) {
\t\tif (nat_uac_test(\"8\")) {
\t\t\trtpengine_manage(\"SIP-source-address replace-origin replace-session-connection\");
\t\t} else {
\t\t\trtpengine_manage(\"replace-origin replace-session-connection\");
\t\t}
\t}
}
";

/// What the Kamailio SBC should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KamailioConfig {
    /// `listen=udp:IP:PORT`.
    pub listen: SocketAddr,
    /// `alias=`: the domain it is registrar for.
    pub domain: String,
    /// Far-end NAT traversal with nathelper (`force_rport`, `fix_nated_register`,
    /// `set_contact_alias`, pings). Off: the stock registrar, which honours `rport` when the
    /// phone asks (the core does RFC 3581) but stores and forwards the Contact as written.
    pub nathelper: bool,
    /// nathelper `natping_interval` in seconds (0: no pings).
    pub natping_interval: u32,
    /// tm `fr_timer` (non-INVITE and INVITE-before-provisional timeout), ms.
    pub fr_timer_ms: u32,
    /// tm `retr_timer1` (T1) in ms; `retr_timer2` (T2) is 8 times it, as RFC 3261 has them.
    /// The scenario's T1, so Kamailio's retransmissions double from the same T1 as every
    /// other SIP element's.
    pub t1_ms: u32,
    /// `debug=` log level (2: info, 3: debug).
    pub debug: u8,
    /// rtpengine as the media relay, started in the same host.
    pub rtpengine: Option<super::rtpengine::RtpengineConfig>,
}

impl KamailioConfig {
    /// Listens on `listen` for `domain`, pings NATed contacts every 15 s, fr_timer 3.2 s.
    pub fn new(listen: SocketAddr, domain: &str) -> Self {
        Self {
            listen,
            domain: domain.into(),
            nathelper: true,
            natping_interval: 15,
            fr_timer_ms: 3200,
            t1_ms: 500,
            debug: 2,
            rtpengine: None,
        }
    }

    /// The `kamailio.cfg` text.
    pub fn render(&self) -> String {
        let (nat_module, nat_params, nat_route, nat_reply) = if self.nathelper {
            (
                "loadmodule \"nathelper.so\"\n",
                format!(
                    "modparam(\"nathelper|registrar\", \"received_avp\", \"$avp(RECEIVED)\")\n\
                     modparam(\"nathelper\", \"natping_interval\", {natping})\n\
                     modparam(\"nathelper\", \"ping_nated_only\", 1)\n\
                     modparam(\"nathelper\", \"sipping_bflag\", 7)\n\
                     modparam(\"nathelper\", \"sipping_from\", \"sip:pinger@{domain}\")\n",
                    natping = self.natping_interval,
                    domain = self.domain
                ),
                "\tforce_rport();\n\
                 \tif (nat_uac_test(\"19\")) {\n\
                 \t\tif (is_method(\"REGISTER\")) {\n\
                 \t\t\tfix_nated_register();\n\
                 \t\t} else if (is_first_hop()) {\n\
                 \t\t\tset_contact_alias();\n\
                 \t\t}\n\
                 \t\tsetbflag(6);\n\
                 \t\tsetbflag(7);\n\
                 \t}\n",
                "onreply_route[NAT_REPLY] {\n\tif (nat_uac_test(\"1\")) {\n\t\tset_contact_alias();\n\t}\n}\n",
            )
        } else {
            ("", String::new(), "", "")
        };
        let on_reply = if self.nathelper || self.rtpengine.is_some() {
            "\tt_on_reply(\"NAT_REPLY\");\n"
        } else {
            ""
        };
        let ruri_alias = if self.nathelper {
            "\t\t\thandle_ruri_alias();\n"
        } else {
            ""
        };
        let (media_module, media_request, media_reply) = match &self.rtpengine {
            Some(_) => (
                format!(
                    "loadmodule \"rtpengine.so\"\nmodparam(\"rtpengine\", \"rtpengine_sock\", \"udp:{}\")\n",
                    super::rtpengine::NG
                ),
                "\troute(MEDIA);\n",
                "\troute(MEDIA);\n",
            ),
            None => (String::new(), "", ""),
        };
        let nat_reply = match (self.nathelper, self.rtpengine.is_some()) {
            (_, true) => format!(
                "onreply_route[NAT_REPLY] {{\n{}{media_reply}}}\n\n{MEDIA_ROUTE}",
                if self.nathelper {
                    "\tif (nat_uac_test(\"1\")) {\n\t\tset_contact_alias();\n\t}\n"
                } else {
                    ""
                }
            ),
            (true, false) => nat_reply.to_string(),
            (false, false) => String::new(),
        };
        format!(
            r#"#!KAMAILIO
# Registrar/proxy (harness::sbc::kamailio), usrloc in memory; far-end NAT traversal with
# nathelper unless `nathelper = false`.
debug={debug}
log_stderror=yes
fork=yes
children=2
listen=udp:{ip}:{port}
alias="{domain}"
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=no
disable_tcp=yes
disable_sctp=yes
mhomed=0

loadpath "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
{nat_module}{media_module}
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "nat_bflag", 6)
modparam("registrar", "max_expires", 3600)
{nat_params}modparam("tm", "fr_timer", {fr})
modparam("tm", "fr_inv_timer", 30000)
modparam("tm", "retr_timer1", {t1})
modparam("tm", "retr_timer2", {t2})

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
{nat_route}	if (has_totag()) {{
		if (loose_route()) {{
{ruri_alias}{media_request}			t_relay();
			exit;
		}}
		if (is_method("ACK")) {{
			if (t_check_trans()) {{
				t_relay();
			}}
			exit;
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	t_check_trans();
	if (is_method("REGISTER")) {{
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
		sl_send_reply("200", "OK");
		exit;
	}}
	if (uri == myself) {{
		if (!lookup("location")) {{
			sl_send_reply("404", "Not Found");
			exit;
		}}
	}}
	record_route();
{media_request}{on_reply}	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}

{nat_reply}
"#,
            debug = self.debug,
            ip = self.listen.ip(),
            port = self.listen.port(),
            domain = self.domain,
            fr = self.fr_timer_ms,
            t1 = self.t1_ms,
            t2 = self.t1_ms.saturating_mul(8),
        )
    }
}

/// A running Kamailio; killed (and its directory removed) when dropped.
pub struct Kamailio {
    process: Process,
    config: KamailioConfig,
    dir: PathBuf,
    /// Its media relay, stopped after it.
    rtpengine: Option<super::rtpengine::Rtpengine>,
}

impl std::fmt::Debug for Kamailio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kamailio")
            .field("pid", &self.process.pid())
            .field("listen", &self.config.listen)
            .finish()
    }
}

impl Kamailio {
    /// Writes the configuration to a private temporary directory, starts
    /// `kamailio -f CFG -DD -E -Y DIR` in `node` and waits until it answers OPTIONS.
    pub async fn start(node: &Node, config: KamailioConfig) -> Result<Kamailio> {
        preflight::require_program("kamailio")?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("snh-kamailio-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!(
            "create Kamailio directory {}",
            dir.display()
        )))?;
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, config.render())
            .map_err(Error::io(format!("write {}", cfg.display())))?;
        let rtpengine = match &config.rtpengine {
            Some(c) => {
                Some(super::rtpengine::Rtpengine::start(node, c, dir.join("rtpengine")).await?)
            }
            None => None,
        };
        let (cfg_s, dir_s) = (cfg.display().to_string(), dir.display().to_string());
        let process = node
            .start(
                "kamailio",
                &[
                    "-f", &cfg_s, "-DD", "-E", "-Y", &dir_s, "-m", "32", "-M", "8",
                ],
            )
            .await?;
        let mut k = Kamailio {
            process,
            config,
            dir,
            rtpengine,
        };
        if let Err(why) = k.ready(node).await {
            let log = k.log();
            k.process.kill();
            return Err(Error::Io {
                what: format!(
                    "kamailio in `{}` did not answer OPTIONS on {} within {READY_WITHIN:?} \
                     ({why}); it said:\n{log}",
                    node.name(),
                    k.config.listen
                ),
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
        Ok(k)
    }

    /// Sends OPTIONS from the node itself every 100 ms until a 200 comes back.
    async fn ready(&mut self, node: &Node) -> std::result::Result<(), String> {
        let listen = self.config.listen;
        let options = |n: u32, me: SocketAddr| {
            format!(
                "OPTIONS sip:{listen} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ready{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:ready@{me}>;tag=r{n}\r\nTo: <sip:{listen}>\r\n\
                 Call-ID: ready{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let ok = |reply: &[u8]| reply.starts_with(b"SIP/2.0 200");
        super::until_answered(&mut self.process, node, listen, READY_WITHIN, options, ok).await
    }

    pub fn listen(&self) -> SocketAddr {
        self.config.listen
    }

    /// Everything it logged so far, and its rtpengine's after it.
    pub fn log(&self) -> String {
        let mut log = format!("{}{}", self.process.stdout(), self.process.stderr());
        if let Some(r) = &self.rtpengine {
            log.push_str("\n--- rtpengine ---\n");
            log.push_str(&r.log());
        }
        log
    }

    /// Stops it (also done on drop).
    pub fn stop(mut self) {
        self.process.kill();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
