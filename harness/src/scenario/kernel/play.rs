//! Play: the file's steps in order, in real time, against the running lab. What the steps find
//! is recorded in a [`Timeline`]; the first step that cannot be carried out ends the play.

use std::net::SocketAddrV4;
use std::time::Duration;

use super::call::{self, CallTiming};
use super::{first_addr, io_err, Running};
use crate::bindings;
use crate::error::Result;
use crate::scenario::file::{Component, Step};
use crate::scenario::observed::Timeline;
use crate::scenario::Scenario;
use crate::sip::Event;

/// Plays every step of `s`; the timeline of what happened, with the error of the step that
/// stopped it, if one did.
pub(in crate::scenario) async fn play(s: &Scenario, r: &mut Running) -> Timeline {
    let mut t = Timeline::default();
    for step in &s.file.steps {
        if let Err(e) = step_once(s, r, &mut t, step.get_ref()).await {
            t.error = Some(e.to_string());
            break;
        }
    }
    t
}

async fn step_once(s: &Scenario, r: &mut Running, t: &mut Timeline, step: &Step) -> Result<()> {
    match step {
        Step::Register { ua, timeout_ms } => register(r, t, ua, *timeout_ms).await?,
        Step::Call { from, to, .. } => {
            let timing = CallTiming::of(s, step);
            match r.external.contains_key(from) {
                true => call::from_program(s, r, t, (from, to), timing).await?,
                false => call::from_phone(r, t, (from, to), timing).await?,
            }
        }
        Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Step::ExpireBinding { router, host, port } => {
            let addr = SocketAddrV4::new(first_addr(&r.topo, host)?, *port);
            bindings::expire(r.topo.node(router)?, addr).await?;
        }
        Step::FlushBindings { router } => bindings::flush(r.topo.node(router)?).await?,
        Step::SetNat { router, nat } => r.topo.node(router)?.set_nat(&nat.0).await?,
        Step::SetNatHandling { proxy, value } => {
            r.proxies[proxy].set_nat_handling(value.handling()).await?
        }
        Step::Start { command } => {
            let comp = s
                .file
                .components
                .iter()
                .map(|c| c.get_ref())
                .find(|c| matches!(c, Component::Command { name, .. } if name == command))
                .expect("checked");
            let p = super::command::start_command(s, &r.topo, comp).await?;
            r.commands.insert(command.clone(), p);
        }
        Step::WaitExit {
            command,
            timeout_ms,
        } => {
            let p = r
                .commands
                .get_mut(command)
                .ok_or_else(|| io_err(format!("command `{command}` was never started")))?;
            let st = p.wait_timeout(Duration::from_millis(*timeout_ms)).await;
            t.exits.insert(command.clone(), st.and_then(|s| s.code()));
        }
        Step::StunCheck { .. } | Step::ClassifyNat { .. } | Step::ProbeUdp { .. } => {
            let check = super::field::check(s, r, t, step).await?;
            t.field_checks.push(check);
        }
    }
    Ok(())
}

/// Registers `ua` and waits (at most `timeout_ms`) for the final response.
async fn register(r: &Running, t: &mut Timeline, ua: &str, timeout_ms: u64) -> Result<()> {
    let phone = &r.phones[ua];
    let done = |e: &Event| {
        matches!(
            e,
            Event::Registered { .. } | Event::RegistrationFailed { .. }
        )
    };
    let before = call::count(&phone.ua, done);
    phone.ua.register().await?;
    let timeout = Duration::from_millis(timeout_ms);
    if call::wait_new(&phone.ua, done, before, timeout)
        .await
        .is_none()
    {
        // Not a failure (an expectation may want the phone unregistered), but never silent:
        // the ladder says the step gave up waiting while the phone goes on.
        t.notes.push((
            r.clock.now(),
            phone.host.clone(),
            format!(
                "register: no final response within {timeout_ms} ms; the step goes on, the phone keeps trying"
            ),
        ));
    }
    Ok(())
}
