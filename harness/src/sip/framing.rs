//! Sans-IO RFC 3261 §18.3 stream framing: cuts the bytes of a TCP or TLS connection into SIP
//! messages by their Content-Length, and tells RFC 5626 §4.4.1 keep-alives (a CRLFCRLF ping, a
//! CRLF pong) from messages.
//!
//! A datagram is one message; a stream is not: a message can arrive in several reads and one
//! read can hold several messages, so a stream has no end of message but the one its
//! Content-Length gives. RFC 3261 §18.3 makes Content-Length mandatory on streams for that
//! reason, and a stream whose framing is lost cannot be resynchronised: every later byte could
//! be the middle of a body. So bad framing is reported once, counted, and the decoder stops
//! (its owner closes the connection, as real stacks do). Nothing here panics on any input: the
//! fuzz target feeds it arbitrary bytes in arbitrary cuts.

use std::collections::VecDeque;

/// Longest header block accepted before its blank line: a peer streaming header bytes forever
/// must not grow the buffer forever.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest body accepted (a video INVITE's SDP is a few kilobytes).
pub const MAX_BODY: usize = 1024 * 1024;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole SIP message: start line, headers, blank line and exactly Content-Length bytes
    /// of body.
    Message(Vec<u8>),
    /// RFC 5626 §4.4.1 ping: CRLFCRLF between messages. The server answers with a pong.
    Ping,
    /// RFC 5626 §4.4.1 pong: a single CRLF between messages.
    Pong,
}

impl Frame {
    /// The frame's bytes as they were on the stream, for machines that take a message or a
    /// keep-alive the same way they take a datagram.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Frame::Message(m) => m,
            Frame::Ping => b"\r\n\r\n".to_vec(),
            Frame::Pong => b"\r\n".to_vec(),
        }
    }
}

/// Why a stream's framing is lost. Each names what to look for in the capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("a message on a stream has no Content-Length (RFC 3261 §18.3 requires it on TCP/TLS)")]
    MissingContentLength,
    #[error("Content-Length `{0}` is not a number")]
    BadContentLength(String),
    #[error("no end of headers (blank line) within {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("Content-Length {0} is larger than the {MAX_BODY} bytes accepted")]
    BodyTooLong(usize),
    #[error("bytes before a start line that are not CRLF keep-alives: {0:?}")]
    Garbage(String),
}

/// What a decoder has cut so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramingStats {
    pub messages: u64,
    pub pings: u64,
    pub pongs: u64,
    /// Framing errors: at most one per stream, since the stream is dead after it.
    pub bad_framing: u64,
}

/// The framing state of one connection. Feed it what the connection reads with
/// [`StreamDecoder::handle_bytes`], then drain [`StreamDecoder::poll_frame`].
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Frames cut but not yet polled.
    ready: VecDeque<Result<Frame, FramingError>>,
    /// The framing is lost: nothing more is decoded.
    broken: bool,
    /// The client end of a flow: a lone CRLF is a pong at once. A server waits for the next
    /// byte, since a ping split after its first CRLF is not a pong.
    client: bool,
    stats: FramingStats,
}

impl StreamDecoder {
    /// The decoder of a connection we accepted (we receive pings, RFC 5626 §4.4.1).
    pub fn server() -> Self {
        Self::default()
    }

    /// The decoder of a connection we opened (we receive pongs).
    pub fn client() -> Self {
        Self {
            client: true,
            ..Self::default()
        }
    }

    /// Bytes read from the connection, in order.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(bytes);
        while let Some(cut) = self.cut() {
            match &cut {
                Ok(Frame::Message(_)) => self.stats.messages += 1,
                Ok(Frame::Ping) => self.stats.pings += 1,
                Ok(Frame::Pong) => self.stats.pongs += 1,
                Err(_) => {
                    self.stats.bad_framing += 1;
                    self.broken = true;
                    self.buf = Vec::new();
                }
            }
            self.ready.push_back(cut);
            if self.broken {
                break;
            }
        }
    }

    /// The next frame, or the framing error after which the stream is dead (the owner should
    /// close the connection).
    #[must_use]
    pub fn poll_frame(&mut self) -> Option<Result<Frame, FramingError>> {
        self.ready.pop_front()
    }

    /// Whether framing is lost: the connection is of no further use.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Bytes held for an incomplete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn stats(&self) -> &FramingStats {
        &self.stats
    }

    /// Cuts one frame off the front of the buffer, if a whole one is there.
    fn cut(&mut self) -> Option<Result<Frame, FramingError>> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Some(Ok(Frame::Ping));
        }
        if self.buf.starts_with(b"\r") {
            match (self.buf.get(1), self.buf.get(2)) {
                (None, _) => return None, // the CR's LF is on its way.
                (Some(b'\n'), None) if !self.client => return None, // maybe half a ping.
                (Some(b'\n'), Some(b'\r')) if self.buf.len() < 4 => return None,
                (Some(b'\n'), _) => {
                    self.buf.drain(..2);
                    return Some(Ok(Frame::Pong));
                }
                _ => {}
            }
        }
        let first = *self.buf.first()?;
        if !first.is_ascii_alphabetic() {
            let shown = String::from_utf8_lossy(&self.buf[..self.buf.len().min(16)]).into_owned();
            return Some(Err(FramingError::Garbage(shown)));
        }
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            return (self.buf.len() > MAX_HEADER).then_some(Err(FramingError::HeaderTooLong));
        };
        if head_end > MAX_HEADER {
            return Some(Err(FramingError::HeaderTooLong));
        }
        let body_len = match content_length(&self.buf[..head_end]) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if body_len > MAX_BODY {
            return Some(Err(FramingError::BodyTooLong(body_len)));
        }
        let total = head_end + 4 + body_len;
        if self.buf.len() < total {
            return None;
        }
        let rest = self.buf.split_off(total);
        Some(Ok(Frame::Message(std::mem::replace(&mut self.buf, rest))))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length (or compact `l`) of a header block; RFC 3261 §7.3.1 allows whitespace
/// around the colon.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let head = String::from_utf8_lossy(head);
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            return value
                .parse()
                .map_err(|_| FramingError::BadContentLength(value.chars().take(32).collect()));
        }
    }
    Err(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/TCP 192.168.1.10:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
    const INVITE: &[u8] = b"INVITE sip:bob@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.20:5060;branch=z9hG4bK2\r\nl :  10\r\n\r\nv=0\r\ns=-\r\n";

    fn frames(d: &mut StreamDecoder) -> Vec<Result<Frame, FramingError>> {
        std::iter::from_fn(|| d.poll_frame()).collect()
    }

    #[test]
    fn two_messages_in_one_read_are_cut_at_their_content_length() {
        let mut d = StreamDecoder::server();
        d.handle_bytes(&[REGISTER, INVITE].concat());
        assert_eq!(
            frames(&mut d),
            vec![
                Ok(Frame::Message(REGISTER.to_vec())),
                Ok(Frame::Message(INVITE.to_vec()))
            ]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_message_cut_at_every_byte_comes_out_whole_once() {
        let stream = [INVITE, b"\r\n\r\n", REGISTER, b"\r\n", REGISTER].concat();
        let mut d = StreamDecoder::server();
        let mut got = Vec::new();
        for b in &stream {
            d.handle_bytes(std::slice::from_ref(b));
            got.extend(frames(&mut d));
        }
        assert_eq!(
            got,
            vec![
                Ok(Frame::Message(INVITE.to_vec())),
                Ok(Frame::Ping),
                Ok(Frame::Message(REGISTER.to_vec())),
                Ok(Frame::Pong),
                Ok(Frame::Message(REGISTER.to_vec())),
            ]
        );
        assert_eq!(
            d.stats(),
            &FramingStats {
                messages: 3,
                pings: 1,
                pongs: 1,
                bad_framing: 0
            }
        );
    }

    #[test]
    fn a_body_not_yet_arrived_is_waited_for() {
        let mut d = StreamDecoder::server();
        d.handle_bytes(&INVITE[..INVITE.len() - 3]);
        assert_eq!(frames(&mut d), vec![]);
        d.handle_bytes(&INVITE[INVITE.len() - 3..]);
        assert_eq!(frames(&mut d), vec![Ok(Frame::Message(INVITE.to_vec()))]);
    }

    /// Feeds `chunks` to a server decoder; what it cut, and the decoder.
    fn fed(chunks: &[&[u8]]) -> (Vec<Result<Frame, FramingError>>, StreamDecoder) {
        let mut d = StreamDecoder::server();
        for c in chunks {
            d.handle_bytes(c);
        }
        (frames(&mut d), d)
    }

    #[test]
    fn a_ping_and_a_pong_between_messages_are_keepalives_not_messages() {
        let want = [Frame::Ping, Frame::Pong, Frame::Message(REGISTER.to_vec())];
        assert_eq!(fed(&[b"\r\n\r\n\r\n", REGISTER]).0, want.map(Ok));
    }

    #[test]
    fn a_client_takes_a_lone_crlf_as_a_pong_at_once_a_server_waits() {
        let mut client = StreamDecoder::client();
        client.handle_bytes(b"\r\n");
        assert_eq!(frames(&mut client), vec![Ok(Frame::Pong)]);
        let mut server = StreamDecoder::server();
        server.handle_bytes(b"\r\n");
        assert_eq!(frames(&mut server), vec![]);
        server.handle_bytes(b"\r\n");
        assert_eq!(frames(&mut server), vec![Ok(Frame::Ping)]);
    }

    #[test]
    fn a_message_without_content_length_kills_the_stream_once() {
        let (got, d) = fed(&[
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n\r\n",
            REGISTER,
        ]);
        assert_eq!(got, vec![Err(FramingError::MissingContentLength)]);
        assert!(d.is_broken());
        assert_eq!(d.stats().bad_framing, 1);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn bad_lengths_garbage_and_endless_headers_are_errors_not_panics() {
        let cases: [(&[u8], FramingError); 4] = [
            (
                b"BYE x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
                FramingError::BadContentLength("-1".into()),
            ),
            (
                b"BYE x SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
                FramingError::BodyTooLong(99_999_999_999),
            ),
            (
                b"\x16\x03\x01\x00",
                FramingError::Garbage("\u{16}\u{3}\u{1}\0".into()),
            ),
            (&[b'A'; MAX_HEADER + 1], FramingError::HeaderTooLong),
        ];
        for (input, want) in cases {
            let mut d = StreamDecoder::server();
            d.handle_bytes(input);
            assert_eq!(frames(&mut d), vec![Err(want)]);
        }
    }

    #[test]
    fn arbitrary_bytes_in_arbitrary_cuts_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..500 {
            let mut d = StreamDecoder::server();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let len = (seed % 64) as usize;
                let pick = [INVITE, REGISTER, b"\r\n", b"l: 3\r\n\r\n"][(seed >> 8) as usize % 4];
                let mut chunk = pick[..len.min(pick.len())].to_vec();
                if seed & 1 == 1 {
                    chunk.push((seed >> 16) as u8);
                }
                d.handle_bytes(&chunk);
                let _ = frames(&mut d);
            }
        }
    }
}
