//! nftables rulesets applied in-process through libnftables, the library `nft` itself is built on.
//!
//! One `nft -f -` process costs ≈ 2.4 ms before it does anything, and a NAT needs three loads
//! (prelude, typed JSON rules, epilogue): over half of a bring-up went to process starts. Calling
//! `nft_run_cmd_from_buffer` gives the same parser, the same netlink batch and the same error
//! messages without a process. The library is opened with `dlopen` (Debian's `libnftables1`,
//! a dependency of `nftables`, ships only `libnftables.so.1`, no link-time `.so`), and each
//! namespace's worker thread keeps its own context, so the netlink socket the context opens lives
//! in that namespace.
//!
//! One exception keeps the `nft` process: libnftables 1.0.6 waits for netlink replies with
//! `select()`, which aborts the whole process (glibc's fortify check) on a descriptor ≥
//! `FD_SETSIZE` (1024). A process that raised its open-files limit and holds many topologies
//! (the bench's 100 at once, a suite on the pool: 1,300 descriptors measured) can hand a new
//! context such a descriptor, so a worker loads through `nft -f -` instead, as before, whenever
//! its context's socket is not known to be below that limit. Checking the lowest free descriptor
//! before making the context is not enough: other threads open descriptors between the check and
//! the library's `socket()`, so the socket the context really got is found and checked after.
//!
//! libmnl opens that socket without `SOCK_CLOEXEC`; left so, every program the harness starts
//! (sipp, kamailio, `nft` itself) would inherit a netlink socket into some other host's
//! namespace. The socket is marked close-on-exec as soon as it is found.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// The soname Debian's `libnftables1` installs.
const LIBRARY: &str = "libnftables.so.1";
const PACKAGE: &str = "libnftables1";
/// `NFT_CTX_DEFAULT` of `<nftables/libnftables.h>`.
const CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_TERSE` (`nft -t`): sets and maps listed without their elements.
const OUTPUT_TERSE: u32 = 1 << 11;
/// `NFT_CTX_OUTPUT_JSON`: in libnftables 1.0.6 it also makes the parser read JSON input first,
/// as `nft -j -f` does (`nft_ctx_input_set_flags` came later).
const OUTPUT_JSON: u32 = 1 << 4;

type Ctx = *mut c_void;

/// The few libnftables entry points the harness needs.
struct Api {
    ctx_new: unsafe extern "C" fn(u32) -> Ctx,
    ctx_free: unsafe extern "C" fn(Ctx),
    output_set_flags: unsafe extern "C" fn(Ctx, u32),
    buffer_output: unsafe extern "C" fn(Ctx) -> c_int,
    buffer_error: unsafe extern "C" fn(Ctx) -> c_int,
    get_output_buffer: unsafe extern "C" fn(Ctx) -> *const c_char,
    get_error_buffer: unsafe extern "C" fn(Ctx) -> *const c_char,
    run_cmd_from_buffer: unsafe extern "C" fn(Ctx, *const c_char) -> c_int,
}

/// Serialises every call into the library: libnftables 1.0.6 does not promise that contexts on
/// different threads share no state, and a load takes well under a millisecond.
static LOCK: Mutex<()> = Mutex::new(());

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|_| Error::MissingProgram {
            program: LIBRARY.to_string(),
            package: PACKAGE,
        })
}

fn load() -> std::result::Result<Api, String> {
    let name = CString::new(LIBRARY).expect("no NUL in the soname");
    // SAFETY: dlopen with a valid C string; the handle is never closed, so the symbols stay valid
    // for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("dlopen {LIBRARY} failed"));
    }
    let sym = |s: &str| -> std::result::Result<*mut c_void, String> {
        let c = CString::new(s).expect("no NUL in a symbol name");
        // SAFETY: a valid handle and C string.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            Err(format!("{LIBRARY} has no {s}"))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol has the C signature of <nftables/libnftables.h> it is cast to.
    unsafe {
        Ok(Api {
            ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(u32) -> Ctx>(sym(
                "nft_ctx_new",
            )?),
            ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx)>(sym(
                "nft_ctx_free",
            )?),
            output_set_flags: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx, u32)>(
                sym("nft_ctx_output_set_flags")?,
            ),
            buffer_output: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> c_int>(
                sym("nft_ctx_buffer_output")?,
            ),
            buffer_error: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> c_int>(
                sym("nft_ctx_buffer_error")?,
            ),
            get_output_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(Ctx) -> *const c_char,
            >(sym("nft_ctx_get_output_buffer")?),
            get_error_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(Ctx) -> *const c_char,
            >(sym("nft_ctx_get_error_buffer")?),
            run_cmd_from_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(Ctx, *const c_char) -> c_int,
            >(sym("nft_run_cmd_from_buffer")?),
        })
    }
}

/// A libnftables context owned by one namespace worker thread.
struct Context {
    api: &'static Api,
    ctx: Ctx,
}

impl Context {
    /// Frees the context where [`LOCK`] is already held (dropping it would take the lock again).
    fn free_locked(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `ctx` came from `nft_ctx_new`; `Drop` will not run for it.
        unsafe { (this.api.ctx_free)(this.ctx) };
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `ctx` came from `nft_ctx_new` and is freed once.
        unsafe { (self.api.ctx_free)(self.ctx) };
    }
}

/// How this thread loads rulesets.
enum Loader {
    Library(Context),
    /// `nft -f -`: a context here would get a descriptor `select()` cannot take.
    Process,
}

/// A new context's socket takes the lowest free descriptor: from this one up, making a context
/// is not tried at all (its socket would be checked and refused anyway, most likely).
const LOW_FD_LIMIT: i32 = libc::FD_SETSIZE as i32 - 64;

thread_local! {
    /// This thread's loader, chosen on first use: on a namespace worker, inside its namespace.
    static LOADER: RefCell<Option<Loader>> = const { RefCell::new(None) };
}

/// The lowest free descriptor number right now.
fn lowest_free_fd() -> i32 {
    // SAFETY: open/close of /dev/null, a descriptor we own for an instant.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::close(fd);
        }
        fd
    }
}

/// A library context when its socket is below `FD_SETSIZE`, else the process. Call with
/// [`LOCK`] held, so no other context is being made meanwhile.
fn new_loader(api: &'static Api) -> std::result::Result<Loader, String> {
    let hint = lowest_free_fd();
    if hint >= LOW_FD_LIMIT {
        return Ok(Loader::Process);
    }
    let ctx = new_context(api)?;
    Ok(match claim_context_socket(hint) {
        Some(fd) if fd < libc::FD_SETSIZE as i32 => Loader::Library(ctx),
        // Above the limit, or not found: a `select()` on it could abort the process.
        _ => {
            ctx.free_locked();
            Loader::Process
        }
    })
}

/// Whether `fd` is a netfilter netlink socket without close-on-exec: while [`LOCK`] is held, only
/// the context just made can own one, because every earlier context's socket was marked.
fn is_unclaimed_netfilter_socket(fd: i32) -> bool {
    let int_opt = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int of the stated length; an error leaves `v` unused.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &raw mut len)
        };
        (rc == 0).then_some(v)
    };
    // SAFETY: F_GETFD on any number is harmless; -1 for a closed one.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0
        && flags & libc::FD_CLOEXEC == 0
        && int_opt(libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
        && int_opt(libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
}

/// Finds the socket of the context just made (first at `hint`, the lowest descriptor free
/// before it was made, else among all open ones), marks it close-on-exec and returns it.
fn claim_context_socket(hint: i32) -> Option<i32> {
    let fd = if is_unclaimed_netfilter_socket(hint) {
        hint
    } else {
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&fd| is_unclaimed_netfilter_socket(fd))?
    };
    // SAFETY: sets a flag on a descriptor the context owns and keeps open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}

/// `nft -f -` (`-j` for JSON) with `script` on stdin, on the calling thread; its output.
fn run_process(syntax: Syntax, script: &str) -> std::result::Result<String, String> {
    use std::io::Write;
    let nft = crate::preflight::require_program("nft").map_err(|e| e.to_string())?;
    let args: &[&str] = match syntax {
        Syntax::Text => &["-f", "-"],
        Syntax::Json => &["-j", "-f", "-"],
        Syntax::Terse => &["-t", "-f", "-"],
    };
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = std::process::Command::new(&nft)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes())?;
        child.wait_with_output()
    };
    let out = run().map_err(|e| format!("run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// What to load: nft's text syntax or its JSON schema; `Terse` is text whose listings leave set
/// elements out (`nft -t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    Text,
    Json,
    Terse,
}

/// Runs `script` on the calling thread, in the thread's namespace; returns what nft printed, or
/// nft's error text on failure. Call it on a namespace worker only (see [`apply`]).
fn run_here(
    api: &'static Api,
    syntax: Syntax,
    script: &str,
) -> std::result::Result<String, String> {
    let text = CString::new(script).map_err(|_| "the ruleset contains a NUL byte".to_string())?;
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = LOADER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(new_loader(api)?);
        }
        Ok::<_, String>(match cell.as_ref() {
            Some(Loader::Library(c)) => Some(c.ctx),
            _ => None,
        })
    })?;
    let Some(ctx) = ctx else {
        drop(guard);
        return run_process(syntax, script);
    };
    let flags = match syntax {
        Syntax::Text => 0,
        Syntax::Json => OUTPUT_JSON,
        Syntax::Terse => OUTPUT_TERSE,
    };
    // SAFETY: a live context of this thread, a NUL-terminated script; the buffers returned are
    // owned by the context and copied before the next call.
    unsafe {
        (api.output_set_flags)(ctx, flags);
        let rc = (api.run_cmd_from_buffer)(ctx, text.as_ptr());
        (api.output_set_flags)(ctx, 0);
        // Drain both buffers so they do not grow across loads.
        let out = CStr::from_ptr((api.get_output_buffer)(ctx))
            .to_string_lossy()
            .into_owned();
        let err = CStr::from_ptr((api.get_error_buffer)(ctx))
            .to_string_lossy()
            .trim()
            .to_string();
        if rc == 0 {
            Ok(out)
        } else if err.is_empty() {
            Err(format!("libnftables returned {rc}"))
        } else {
            Err(err)
        }
    }
}

/// A context with its output and errors buffered (kept off the test's terminal, errors handed
/// back to the caller).
fn new_context(api: &'static Api) -> std::result::Result<Context, String> {
    // SAFETY: plain constructor; the result is checked for NULL.
    let ctx = unsafe { (api.ctx_new)(CTX_DEFAULT) };
    if ctx.is_null() {
        return Err("nft_ctx_new failed".to_string());
    }
    // SAFETY: a live context.
    unsafe {
        (api.buffer_output)(ctx);
        (api.buffer_error)(ctx);
    }
    Ok(Context { api, ctx })
}

/// Equivalent to `ip netns exec NS nft -f -` (or `nft -j -f -` for [`Syntax::Json`]) with
/// `script` on stdin, without the process.
pub(crate) async fn apply(ns: &Netns, syntax: Syntax, script: String) -> Result<()> {
    run(ns, syntax, script).await.map(drop)
}

/// Equivalent to `ip netns exec NS nft -t -f -`: runs `script`, whose listings leave set elements
/// out, and returns what it printed.
pub(crate) async fn run_terse(ns: &Netns, script: String) -> Result<String> {
    run(ns, Syntax::Terse, script).await
}

/// [`apply`] for a script that prints (`list table …`): what nft printed.
async fn run(ns: &Netns, syntax: Syntax, script: String) -> Result<String> {
    let api = api()?;
    ns.run(move || run_here(api, syntax, &script))
        .await?
        .map_err(|stderr| Error::Nft {
            ns: ns.name().to_string(),
            stderr,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RunId;

    /// Root only: it creates a namespace. Under `CI=true` a missing privilege fails the test.
    fn privileged() -> bool {
        let root = nix::unistd::geteuid().is_root();
        assert!(
            root || std::env::var_os("CI").is_none(),
            "CI=true: this kernel test needs root"
        );
        root
    }

    #[tokio::test]
    async fn text_and_json_load_in_process_and_a_rejected_script_reports_nfts_own_message() {
        if !privileged() {
            return;
        }
        let ns = Netns::create(&RunId::new().ns_name("nft")).expect("namespace");
        apply(&ns, Syntax::Text, "add table ip t\n".into())
            .await
            .expect("text loads");
        let json = r#"{"nftables":[{"add":{"chain":{"family":"ip","table":"t","name":"c"}}}]}"#;
        apply(&ns, Syntax::Json, json.into())
            .await
            .expect("json loads");
        apply(&ns, Syntax::Text, "add rule ip t c accept\n".into())
            .await
            .expect("the chain made from JSON exists");
        match apply(&ns, Syntax::Text, "add chain ip nosuch c\n".into()).await {
            Err(Error::Nft { stderr, .. }) => {
                assert!(stderr.contains("No such file or directory"), "{stderr}");
                assert!(stderr.contains("nosuch"), "{stderr}");
            }
            other => panic!("expected nft's rejection, got {other:?}"),
        }
        // The rejection left no stale text behind for the next load.
        apply(&ns, Syntax::Text, "add table ip u\n".into())
            .await
            .expect("loads after a rejection");
    }
    #[tokio::test]
    async fn programs_started_after_a_load_inherit_no_netlink_socket_of_the_library() {
        if !privileged() {
            return;
        }
        let ns = Netns::create(&RunId::new().ns_name("nftx")).expect("namespace");
        apply(&ns, Syntax::Text, "add table ip t\n".into())
            .await
            .expect("loads");
        let listing = ns
            .run(|| {
                // No context is half-made while the lock is held, so any socket the child sees
                // was left open to it.
                let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
                std::process::Command::new("sh")
                    .args(["-c", "ls -l /proc/$$/fd"])
                    .output()
            })
            .await
            .expect("worker")
            .expect("sh runs");
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("pipe:"), "{listing}");
        assert!(
            !listing.contains("socket:"),
            "a socket leaked into the child:\n{listing}"
        );
    }

    #[tokio::test]
    async fn a_context_whose_socket_lands_past_fd_setsize_is_found_and_refused() {
        if !privileged() {
            return;
        }
        let ns = Netns::create(&RunId::new().ns_name("nftfd")).expect("namespace");
        let api = api().expect("libnftables1");
        let (found, wrong_hint, high, loader_high) = ns
            .run(move || {
                use nix::sys::resource::{getrlimit, setrlimit, Resource};
                let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
                if soft < 4096 {
                    setrlimit(Resource::RLIMIT_NOFILE, hard.min(4096), hard).expect("setrlimit");
                }
                let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
                // The socket is found where it landed even when the hint is wrong (another
                // thread took the lowest free descriptor first).
                let hint = lowest_free_fd();
                let ctx = new_context(api).expect("context");
                let found = claim_context_socket(hint);
                let ctx2 = new_context(api).expect("context");
                let wrong_hint = claim_context_socket(0);
                // Every descriptor below FD_SETSIZE taken: the next context lands above it.
                let mut held = Vec::new();
                while lowest_free_fd() < libc::FD_SETSIZE as i32 {
                    // SAFETY: a descriptor this test owns and closes below.
                    held.push(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) });
                }
                let ctx3 = new_context(api).expect("context");
                let high = claim_context_socket(0);
                let loader_high = matches!(new_loader(api), Ok(Loader::Process));
                ctx3.free_locked();
                for fd in held {
                    // SAFETY: opened above.
                    unsafe { libc::close(fd) };
                }
                ctx.free_locked();
                ctx2.free_locked();
                (found.map(|fd| (fd, hint)), wrong_hint, high, loader_high)
            })
            .await
            .expect("worker");
        let (fd, hint) = found.expect("the new context's socket is found");
        assert!(fd >= hint, "{fd} < {hint}");
        assert!(wrong_hint.is_some_and(|f| f != fd), "{wrong_hint:?}");
        let high = high.expect("found above FD_SETSIZE too");
        assert!(high >= libc::FD_SETSIZE as i32, "{high}");
        assert!(
            loader_high,
            "with no descriptor below the limit the process is used"
        );
    }
}
