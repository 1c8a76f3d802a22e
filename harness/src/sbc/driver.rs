//! Runs the [`Sbc`] on real sockets inside a node: its SIP socket and every relay port, bound up
//! front, driven by the harness's one loop, [`crate::machine::driver::MachineTask`] (the
//! same loop as the TURN server's; style habit 3).

use std::io;
use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::sbc::{Sbc, SbcConfig, SbcEvent, SbcState};
use crate::topology::Node;
use crate::turn::driver::{Events, MachineTask};

/// More relay sockets than this is a configuration mistake for a test SBC.
const MAX_RELAY_PORTS: usize = 1024;

/// An [`Sbc`] in a node; its snapshot is [`SbcState`].
pub type SbcTask = MachineTask<Sbc, SbcState>;

impl SbcTask {
    /// Binds the SIP socket and one socket per relay port in `node` and serves.
    ///
    /// ```no_run
    /// # async fn f(topo: &harness::Topology) -> harness::Result<()> {
    /// use harness::sbc::{Ping, SbcConfig, SbcTask};
    /// use std::time::Duration;
    /// let config = SbcConfig {
    ///     ping: Some(Ping::Options(Duration::from_secs(1))),
    ///     relay_ports: 40000..=40031,
    ///     ..SbcConfig::new("203.0.113.10:5060".parse().unwrap(), "example.com")
    /// };
    /// let (sbc, _events) = SbcTask::serve(topo.node("server")?, config).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve(node: &Node, config: SbcConfig) -> Result<(Self, Events<SbcEvent>)> {
        let invalid = |why: String| Error::Io {
            what: format!("SBC in {}: {why}", node.name()),
            source: io::ErrorKind::InvalidInput.into(),
        };
        if config.sip.port() == 0 {
            return Err(invalid(
                "the SIP port must be fixed, phones are configured with it".into(),
            ));
        }
        let ports = config.relay_ports.clone();
        if ports.clone().count() > MAX_RELAY_PORTS {
            return Err(invalid(format!(
                "relay range {ports:?} needs more than {MAX_RELAY_PORTS} sockets; narrow it"
            )));
        }
        if ports.contains(&config.sip.port()) && config.relay_ip == config.sip.ip() {
            return Err(invalid(format!(
                "relay range {ports:?} contains the SIP port {}",
                config.sip.port()
            )));
        }
        let listen = crate::machine::stream::Listen {
            streams: config
                .streams
                .iter()
                .map(|t| (crate::sip::proxy::listen_address(config.sip, *t), *t))
                .collect(),
        };
        let sbc = Sbc::new(config);
        let locals: Vec<SocketAddr> = sbc.local_addresses();
        let mut sockets = crate::machine::Sockets::bind(node, &locals).await?;
        if !listen.streams.is_empty() {
            sockets = sockets.with_streams(node, &listen).await?;
        }
        Ok(Self::launch(
            node,
            sbc,
            sockets,
            Sbc::snapshot,
            |_, _| {},
            crate::machine::driver::Record::Nothing,
        ))
    }
}
