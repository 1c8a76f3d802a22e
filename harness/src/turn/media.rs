//! A media stream whose RTP goes through a TURN allocation, as a softphone with a TURN server
//! configured sends it: the SDP advertises the relayed address, RTP to the peer leaves as
//! ChannelData (or Send indications), and what the peer sends arrives relayed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::machine::Machine;
use crate::rtp::{MediaConfig, MediaEvent, MediaStats, MediaStream};
use crate::stun::Transmit;
use crate::turn::{Event, TurnClient, TurnClientConfig, TurnError};

/// What [`RelayedMedia`] reports: its allocation's events and its stream's.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayedEvent {
    Turn(Event),
    Media(MediaEvent),
}

/// A [`TurnClient`] carrying a [`MediaStream`] (see the module docs). The stream's local
/// address is the relayed address: that is where the peer sends, and what it sees RTP from.
#[derive(Debug)]
pub struct RelayedMedia {
    client: TurnClient,
    template: MediaConfig,
    stream: Option<MediaStream>,
    peer: Option<SocketAddr>,
    use_channel: bool,
    start_requested: bool,
    send_errors: u64,
    events: VecDeque<RelayedEvent>,
}

impl RelayedMedia {
    /// `media.local` and `media.destination` are replaced by the relayed address and the peer
    /// given to [`RelayedMedia::connect`].
    pub fn new(turn: TurnClientConfig, media: MediaConfig) -> Self {
        Self {
            client: TurnClient::new(turn),
            template: media,
            stream: None,
            peer: None,
            use_channel: true,
            start_requested: false,
            send_errors: 0,
            events: VecDeque::new(),
        }
    }

    /// Send with Send indications only, never binding a channel.
    pub fn without_channel(mut self) -> Self {
        self.use_channel = false;
        self
    }

    pub fn allocate(&mut self, now: Instant) {
        self.client.allocate(now);
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        self.client.relayed()
    }

    pub fn client(&self) -> &TurnClient {
        &self.client
    }

    pub fn stream(&self) -> Option<&MediaStream> {
        self.stream.as_ref()
    }

    pub fn stats(&self) -> MediaStats {
        self.stream
            .as_ref()
            .map(|s| s.stats().clone())
            .unwrap_or_default()
    }

    /// Whether the path to the peer is set up (permission, and the channel if used).
    pub fn is_ready(&self) -> bool {
        let Some(peer) = self.peer else { return false };
        self.client.has_permission(peer.ip())
            && (!self.use_channel || self.client.channel(peer).is_some())
    }

    /// Sends to `peer` (its relayed or public address, from its SDP): installs the permission
    /// and binds a channel, now or once allocated.
    pub fn connect(&mut self, peer: SocketAddr, now: Instant) -> Result<(), TurnError> {
        self.peer = Some(peer);
        self.client.create_permission(peer.ip(), now);
        if self.use_channel {
            self.client.bind_channel(peer, now)?;
        }
        self.pump(now);
        Ok(())
    }

    /// Starts the media as soon as the path is ready.
    pub fn start_media(&mut self, now: Instant) {
        self.start_requested = true;
        self.pump(now);
    }

    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.client.poll_event() {
            if let Event::Data { peer, data } = &e {
                if let (Some(s), Some(relayed)) = (&mut self.stream, self.client.relayed()) {
                    s.handle_datagram(relayed, *peer, data, now);
                }
                continue;
            }
            self.events.push_back(RelayedEvent::Turn(e));
        }
        if self.stream.is_none() {
            if let (Some(relayed), Some(peer)) = (self.client.relayed(), self.peer) {
                self.stream = Some(MediaStream::new(MediaConfig {
                    local: relayed,
                    destination: Some(peer),
                    source: crate::rtp::RtpSource::Symmetric,
                    ..self.template.clone()
                }));
            }
        }
        if self.start_requested && self.is_ready() {
            if let Some(s) = &mut self.stream {
                s.start(now);
            }
        }
        if let Some(s) = &mut self.stream {
            while let Some(t) = s.poll_transmit() {
                if self.client.send_to(t.destination, &t.payload, now).is_err() {
                    self.send_errors += 1;
                }
            }
            while let Some(e) = s.poll_event() {
                self.events.push_back(RelayedEvent::Media(e));
            }
        }
    }
}

impl Machine for RelayedMedia {
    type Event = RelayedEvent;

    fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.client.handle_datagram(local, from, bytes, now);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if let Some(s) = &mut self.stream {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.client.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<RelayedEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let stream = self.stream.as_ref().and_then(MediaStream::poll_timeout);
        [self.client.poll_timeout(), stream]
            .into_iter()
            .flatten()
            .min()
    }

    fn local_addresses(&self) -> Vec<SocketAddr> {
        vec![self.client.local()]
    }
}
