//! The stream flows (TCP, and TLS over it with [`super::tls`]'s certificates) of a machine running in the [`super::driver`]: listening,
//! connecting, one connection per peer, framing what each reads into messages, and writing
//! what the machine sends down the connection it names.
//!
//! A stream is the driver's business, not the machine's (style habit 1): the machine sees one
//! framed message at a time with the peer's address and the transport it came on, and says
//! where a message goes by address. The connection to a peer is found by that address, so a
//! request towards a phone goes down the connection the phone opened (RFC 5923 connection
//! reuse; RFC 5626's flow): behind a NAT a new inbound connection could never reach it. Only
//! when there is no connection to the address is one opened, from the machine's own address
//! when it is free (a phone's TCP source port is its SIP port, as its Via says), else from an
//! ephemeral port.
//!
//! Connections are read by tasks of their own that frame with
//! [`crate::sip::framing::StreamDecoder`] and hand frames to the driver's loop over a channel,
//! so the loop still waits on one thing at a time. A framing error ends the connection, as
//! RFC 3261 §18.3 leaves no way to find the next message.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::machine::Transport;
use crate::sip::framing::{Frame, FramingError, StreamDecoder};
use crate::topology::Node;

/// How long a connect may take before the messages waiting for it are dropped: past any
/// transaction's Timer B at the T1 scenarios use, so the machine's own timer decides.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a machine listens on besides its UDP sockets.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// `(address, transport)`: TCP (or TLS) listeners, bound inside the node.
    pub streams: Vec<(SocketAddr, Transport)>,
}

/// What the stream side tells the loop.
pub(super) enum StreamInput {
    /// A connection was accepted or connected.
    Opened {
        local: SocketAddr,
        remote: SocketAddr,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        reader: JoinHandle<()>,
    },
    /// A frame was cut from a connection (or its framing was lost).
    Frame {
        local: SocketAddr,
        remote: SocketAddr,
        transport: Transport,
        frame: std::result::Result<Frame, FramingError>,
    },
    /// The connection to `remote` ended (closed, reset, framing lost).
    Closed { remote: SocketAddr, why: String },
    /// A connect to `remote` failed; what waited for it is dropped.
    ConnectFailed { remote: SocketAddr, why: String },
}

struct Connection {
    local: SocketAddr,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What a write did, for the driver's history and counters.
pub(super) enum Written {
    /// Went down the connection from `local`.
    Sent {
        local: SocketAddr,
    },
    /// Waits for a connect in progress.
    Queued,
    Failed(String),
}

/// Every stream flow of one machine.
pub(super) struct Streams {
    /// The node's namespace, for sockets opened after start.
    netns: OwnedFd,
    tx: mpsc::UnboundedSender<StreamInput>,
    pub(super) rx: mpsc::UnboundedReceiver<StreamInput>,
    connections: HashMap<SocketAddr, Connection>,
    /// Messages for a peer whose connect is in progress, in order.
    waiting: HashMap<SocketAddr, Vec<Vec<u8>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("connections", &self.connections.keys().collect::<Vec<_>>())
            .field("waiting", &self.waiting.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Streams {
    /// Binds the listeners inside `node` and starts accepting.
    pub(super) async fn listen(node: &Node, listen: &Listen) -> Result<Self> {
        // SAFETY: the descriptor belongs to the node's `Netns`, alive for this call; it is
        // duplicated at once, so the copy outlives nothing it depends on.
        let netns = unsafe { BorrowedFd::borrow_raw(node.netns().fd()) }
            .try_clone_to_owned()
            .map_err(Error::io(format!(
                "duplicate the namespace of {}",
                node.name()
            )))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut me = Self {
            netns,
            tx,
            rx,
            connections: HashMap::new(),
            waiting: HashMap::new(),
            tasks: Vec::new(),
        };
        for &(addr, transport) in &listen.streams {
            let listener = node.tcp_listen(addr).await?;
            let tls = match transport {
                Transport::Tls => Some(tokio_rustls::TlsAcceptor::from(
                    crate::machine::tls::server_config(addr.ip())?,
                )),
                _ => None,
            };
            let tx = me.tx.clone();
            me.tasks
                .push(tokio::spawn(accept(listener, transport, tls, tx)));
        }
        Ok(me)
    }

    /// Takes what a reader or connector reported; what the loop feeds the machine, if anything.
    pub(super) fn on_input(&mut self, input: &mut Option<StreamInput>) {
        match input.take() {
            Some(StreamInput::Opened {
                local,
                remote,
                writer,
                reader,
                ..
            }) => {
                self.connections.insert(
                    remote,
                    Connection {
                        local,
                        writer,
                        reader,
                    },
                );
                // Nothing to feed; flush is the loop's next step ([`Streams::flush`]).
            }
            Some(StreamInput::Closed { remote, why }) => {
                self.connections.remove(&remote);
                *input = Some(StreamInput::Closed { remote, why });
            }
            Some(StreamInput::ConnectFailed { remote, why }) => {
                self.waiting.remove(&remote);
                *input = Some(StreamInput::ConnectFailed { remote, why });
            }
            other => *input = other,
        }
    }

    /// Writes what waited for connections that are now open; one `(remote, payload, result)`
    /// per message.
    pub(super) async fn flush(&mut self) -> Vec<(SocketAddr, Vec<u8>, Written)> {
        let ready: Vec<SocketAddr> = self
            .waiting
            .keys()
            .filter(|r| self.connections.contains_key(r))
            .copied()
            .collect();
        let mut out = Vec::new();
        for remote in ready {
            for payload in self.waiting.remove(&remote).unwrap_or_default() {
                let w = self.write(remote, &payload).await;
                out.push((remote, payload, w));
            }
        }
        out
    }

    /// Sends `payload` to `remote` down its connection, opening one from `source` (`transport`)
    /// if there is none.
    pub(super) async fn send(
        &mut self,
        source: SocketAddr,
        remote: SocketAddr,
        transport: Transport,
        payload: &[u8],
    ) -> Written {
        if self.connections.contains_key(&remote) {
            return self.write(remote, payload).await;
        }
        let first = !self.waiting.contains_key(&remote);
        self.waiting
            .entry(remote)
            .or_default()
            .push(payload.to_vec());
        if first {
            let netns = match self.netns.try_clone() {
                Ok(fd) => fd,
                Err(e) => return Written::Failed(format!("namespace: {e}")),
            };
            let tx = self.tx.clone();
            self.tasks.push(tokio::spawn(async move {
                let opened = tokio::time::timeout(CONNECT_TIMEOUT, connect(netns, source, remote))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
                let opened = match opened {
                    Ok(tcp) => {
                        let local = tcp.local_addr().unwrap_or(source);
                        match transport {
                            Transport::Tls => tls_client(tcp, remote).await,
                            _ => Ok(Box::new(tcp) as Box<dyn Stream>),
                        }
                        .map(|s| (s, local))
                    }
                    Err(e) => Err(e),
                };
                match opened {
                    Ok((stream, local)) => {
                        opened_stream(stream, local, remote, transport, true, &tx)
                    }
                    Err(e) => {
                        let _ = tx.send(StreamInput::ConnectFailed {
                            remote,
                            why: format!("connect to {remote}: {e}"),
                        });
                    }
                }
            }));
        }
        Written::Queued
    }

    async fn write(&mut self, remote: SocketAddr, payload: &[u8]) -> Written {
        let Some(c) = self.connections.get_mut(&remote) else {
            return Written::Failed(format!("no connection to {remote}"));
        };
        let local = c.local;
        match c.writer.write_all(payload).await {
            Ok(()) => Written::Sent { local },
            Err(e) => {
                self.connections.remove(&remote);
                Written::Failed(format!("write to {remote}: {e}"))
            }
        }
    }
}

/// A byte stream a flow runs on: a TCP connection, or TLS over one.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

/// The TLS client side over `tcp`, checking the server's certificate against `remote`'s address.
async fn tls_client(tcp: TcpStream, remote: SocketAddr) -> io::Result<Box<dyn Stream>> {
    let config = crate::machine::tls::client_config().map_err(io::Error::other)?;
    let name = rustls::pki_types::ServerName::IpAddress(remote.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Box::new(tls))
}

/// Accepts connections for as long as the machine runs; over TLS, completes the handshake
/// first (in its own task: a peer that never finishes it must not hold up the next).
async fn accept(
    listener: TcpListener,
    transport: Transport,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::UnboundedSender<StreamInput>,
) {
    while let Ok((tcp, remote)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(remote);
        match &tls {
            None => opened_stream(Box::new(tcp), local, remote, transport, false, &tx),
            Some(acceptor) => {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(s) => opened_stream(Box::new(s), local, remote, transport, false, &tx),
                        Err(e) => {
                            let _ = tx.send(StreamInput::Closed {
                                remote,
                                why: format!("TLS handshake with {remote}: {e}"),
                            });
                        }
                    }
                });
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Splits a new connection, starts its reader and hands the writer to the loop.
fn opened_stream(
    stream: Box<dyn Stream>,
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
    client: bool,
    tx: &mpsc::UnboundedSender<StreamInput>,
) {
    let (mut rd, wr) = tokio::io::split(stream);
    let rtx = tx.clone();
    let reader = tokio::spawn(async move {
        let mut decoder = if client {
            StreamDecoder::client()
        } else {
            StreamDecoder::server()
        };
        let mut buf = vec![0u8; 16 * 1024];
        let why = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break "closed by the peer".to_string(),
                Ok(n) => decoder.handle_bytes(&buf[..n]),
                Err(e) => break e.to_string(),
            }
            while let Some(frame) = decoder.poll_frame() {
                let _ = rtx.send(StreamInput::Frame {
                    local,
                    remote,
                    transport,
                    frame,
                });
            }
            if decoder.is_broken() {
                break "framing lost".to_string();
            }
        };
        let _ = rtx.send(StreamInput::Closed { remote, why });
    });
    let _ = tx.send(StreamInput::Opened {
        local,
        remote,
        writer: Box::new(wr),
        reader,
    });
}

/// Opens a TCP connection from `source` (its port if free, else an ephemeral one) to `remote`
/// inside the namespace `netns`: the socket is made on a short-lived thread that enters it.
async fn connect(netns: OwnedFd, source: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = tokio::task::spawn_blocking(move || -> io::Result<std::net::TcpStream> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                let bind = |addr: SocketAddr| -> io::Result<std::net::TcpStream> {
                    let sock = socket2::Socket::new(
                        socket2::Domain::IPV4,
                        socket2::Type::STREAM,
                        Some(socket2::Protocol::TCP),
                    )?;
                    sock.set_reuse_address(true)?;
                    sock.set_nonblocking(true)?;
                    sock.bind(&addr.into())?;
                    Ok(sock.into())
                };
                bind(source).or_else(|_| bind(SocketAddr::new(source.ip(), 0)))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("socket thread panicked")))
        })
    })
    .await
    .map_err(io::Error::other)??;
    let stream = TcpSocket::from_std_stream(socket).connect(remote).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
