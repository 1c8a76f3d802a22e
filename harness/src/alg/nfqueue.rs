//! A minimal NFQUEUE client on a raw `NETLINK_NETFILTER` socket: bind a queue, wait for packets,
//! give verdicts. The message encoding and decoding are plain functions over bytes
//! ([`config_bind`], [`decode`], [`verdict_message`]); [`NfQueue`] is the thin socket around them.
//!
//! Why not a crate: the `nfq` crate this replaced hides its descriptor, so its reader could only
//! poll in a sleep loop. Thirty-two routers' readers each waking every millisecond starved the
//! kernel: with preemptible RCU and no RCU boosting (this kernel), expedited grace periods —
//! which every veth creation and namespace teardown waits for while holding the rtnl lock — took
//! a minute, and every bring-up on the machine stalled behind them (issue 22: 80 s stalls in
//! 6 of 30 registration-matrix runs, none in 30 once the readers slept 20 ms between polls).
//! Here the reader sleeps in `poll(2)` on the queue's socket and on a pipe that tells it to stop,
//! so an idle ALG costs no wake-ups at all and a queued packet is read at once.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_PAYLOAD: u16 = 10;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// What becomes of a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// One queued packet: the kernel's id for the verdict, the interface it came in on, the IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    /// 0 for a packet the router itself sent.
    pub indev: u32,
    pub payload: Vec<u8>,
}

/// What one datagram from the kernel carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Packet(Packet),
    /// The answer to a request sent with `NLM_F_ACK`: 0, or a negative errno.
    Ack(i32),
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netfilter netlink message: header, `nfgenmsg` for `queue`, then each attribute.
fn message(kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]); // family, NFNETLINK_V0
    m.extend_from_slice(&queue.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(align4(m.len()), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The requests that bind `queue` (equivalent to libnetfilter_queue's `nfq_create_queue`,
/// `nfq_set_mode(NFQNL_COPY_PACKET)`, `nfq_set_queue_maxlen` and `NFQA_CFG_F_FAIL_OPEN`), each
/// asking for an acknowledgement.
pub fn config_bind(queue: u16, max_len: u32, first_seq: u32) -> Vec<Vec<u8>> {
    let cmd = [NFQNL_CFG_CMD_BIND, 0, 0, 0];
    let mut params = 0xffffu32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    let fail_open = NFQA_CFG_F_FAIL_OPEN.to_be_bytes();
    vec![
        message(
            NFQNL_MSG_CONFIG,
            NLM_F_ACK,
            first_seq,
            queue,
            &[(NFQA_CFG_CMD, &cmd)],
        ),
        message(
            NFQNL_MSG_CONFIG,
            NLM_F_ACK,
            first_seq + 1,
            queue,
            &[
                (NFQA_CFG_PARAMS, &params),
                (NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes()),
                (NFQA_CFG_FLAGS, &fail_open),
                (NFQA_CFG_MASK, &fail_open),
            ],
        ),
    ]
}

/// The verdict on packet `id`, with the bytes to forward instead of the original if any.
pub fn verdict_message(queue: u16, id: u32, verdict: Verdict, replace: Option<&[u8]>) -> Vec<u8> {
    let mut hdr = (verdict as u32).to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    let mut attrs: Vec<(u16, &[u8])> = vec![(NFQA_VERDICT_HDR, &hdr)];
    if let Some(p) = replace {
        attrs.push((NFQA_PAYLOAD, p));
    }
    message(NFQNL_MSG_VERDICT, 0, 0, queue, &attrs)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Decodes one datagram from the kernel (it may hold several messages). Anything malformed ends
/// the decoding with what was read so far; the kernel never sends that, and a reader must not
/// panic on it either.
pub fn decode(datagram: &[u8]) -> Vec<Incoming> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) = (u32_at(datagram, at), u16_at(datagram, at + 4)) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        let body = &datagram[at + NLMSG_HDRLEN..at + len];
        match kind {
            NLMSG_ERROR => {
                if let Some(e) = body.get(..4) {
                    out.push(Incoming::Ack(i32::from_ne_bytes(
                        e.try_into().expect("four bytes"),
                    )));
                }
            }
            NLMSG_DONE => {}
            k if k == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET => {
                if let Some(p) = decode_packet(body) {
                    out.push(Incoming::Packet(p));
                }
            }
            _ => {}
        }
        at += align4(len);
    }
    out
}

fn decode_packet(body: &[u8]) -> Option<Packet> {
    let mut at = NFGENMSG_LEN;
    let (mut id, mut indev, mut payload) = (None, 0, None);
    while let (Some(len), Some(kind)) = (u16_at(body, at), u16_at(body, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > body.len() {
            break;
        }
        let value = &body[at + 4..at + len];
        match kind & 0x3fff {
            NFQA_PACKET_HDR => id = be32(value),
            NFQA_IFINDEX_INDEV => indev = be32(value).unwrap_or(0),
            NFQA_PAYLOAD => payload = Some(value.to_vec()),
            _ => {}
        }
        at += align4(len);
    }
    Some(Packet {
        id: id?,
        indev,
        payload: payload.unwrap_or_default(),
    })
}

/// A bound queue. Lives in the namespace of the thread that bound it.
pub struct NfQueue {
    fd: OwnedFd,
    queue: u16,
    buf: Vec<u8>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl NfQueue {
    /// Binds `queue` with room for `max_len` packets; a full queue lets packets through
    /// (fail-open) rather than dropping them.
    pub fn bind(queue: u16, max_len: u32) -> io::Result<Self> {
        // SAFETY: plain socket calls with valid, correctly sized arguments; the fd is owned at
        // once.
        let fd = unsafe {
            let fd = cvt(libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_NETFILTER,
            ))?;
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            cvt(libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            ))?;
            // A burst larger than the socket buffer must not turn into ENOBUFS on recv: the queue
            // itself bounds what waits (and fails open).
            let on: libc::c_int = 1;
            cvt(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_NO_ENOBUFS,
                &on as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            ))?;
            fd
        };
        let mut q = NfQueue {
            fd,
            queue,
            buf: vec![0u8; 1 << 17],
        };
        for (i, request) in config_bind(queue, max_len, 1).into_iter().enumerate() {
            q.send(&request)?;
            q.await_ack(i as u32 + 1)?;
        }
        Ok(q)
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: `message` is a live buffer of the given length; a zeroed sockaddr_nl is the
        // kernel's address.
        unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as u16;
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr() as *const libc::c_void,
                message.len(),
                0,
                &to as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits (up to a second) for the kernel's answer to request `seq`.
    fn await_ack(&mut self, _seq: u32) -> io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from nfnetlink_queue",
                ));
            }
            if !wait_readable(self.fd.as_raw_fd(), None, left.as_millis() as i32)? {
                continue;
            }
            for m in self.recv()? {
                match m {
                    Incoming::Ack(0) => return Ok(()),
                    Incoming::Ack(e) => return Err(io::Error::from_raw_os_error(-e)),
                    // Nothing is queued before the rules exist; a packet here would only be
                    // a stray one, and it still gets its verdict.
                    Incoming::Packet(p) => self.verdict(p.id, Verdict::Accept, None)?,
                }
            }
        }
    }

    /// Reads one datagram's worth of messages without blocking (empty when there is none).
    pub fn recv(&mut self) -> io::Result<Vec<Incoming>> {
        // SAFETY: `buf` is a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        Ok(decode(&self.buf[..n as usize]))
    }

    /// Gives packet `id` its verdict (and, to accept a rewritten packet, its new bytes).
    pub fn verdict(&self, id: u32, verdict: Verdict, replace: Option<&[u8]>) -> io::Result<()> {
        self.send(&verdict_message(self.queue, id, verdict, replace))
    }

    /// Sleeps until a packet is queued (`true`) or `stop` becomes readable (`false`).
    pub fn wait(&self, stop: RawFd) -> io::Result<bool> {
        wait_readable(self.fd.as_raw_fd(), Some(stop), -1)
    }
}

/// `poll(2)` on `fd` (and `stop`): whether `fd` is readable; `false` on a timeout or when `stop`
/// is readable.
fn wait_readable(fd: RawFd, stop: Option<RawFd>, timeout_ms: i32) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a live array of two pollfd; a negative fd is ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if n >= 0 {
            // The stop pipe signals by its writer closing: POLLHUP, whatever was asked for.
            return Ok(fds[1].revents == 0 && fds[0].revents & libc::POLLIN != 0);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            // A signal is not a reason to stop waiting forever; a bounded wait just ends.
            io::ErrorKind::Interrupted if timeout_ms < 0 => continue,
            io::ErrorKind::Interrupted => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message as the kernel sends it (`nfqnl_build_packet_message`).
    fn packet_message(id: u32, indev: u32, payload: &[u8]) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(2); // NF_INET_FORWARD
        message(
            NFQNL_MSG_PACKET,
            0,
            0,
            7,
            &[
                (NFQA_PACKET_HDR, &hdr),
                (NFQA_IFINDEX_INDEV, &indev.to_be_bytes()),
                (NFQA_PAYLOAD | 0x4000, payload),
            ],
        )
    }

    #[test]
    fn a_datagram_with_two_packets_decodes_to_both_with_their_ids_and_devices() {
        let mut d = packet_message(41, 3, b"\x45\x00abc");
        d.extend(packet_message(42, 0, b"xyz12"));
        assert_eq!(
            decode(&d),
            vec![
                Incoming::Packet(Packet {
                    id: 41,
                    indev: 3,
                    payload: b"\x45\x00abc".to_vec()
                }),
                Incoming::Packet(Packet {
                    id: 42,
                    indev: 0,
                    payload: b"xyz12".to_vec()
                }),
            ]
        );
    }

    #[test]
    fn an_error_answer_decodes_to_its_errno() {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&(-libc::EBUSY).to_ne_bytes());
        m.extend_from_slice(&[0u8; NLMSG_HDRLEN]); // the request's header, echoed
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(decode(&m), vec![Incoming::Ack(-libc::EBUSY)]);
    }

    #[test]
    fn a_verdict_carries_the_id_the_verdict_and_the_new_bytes_aligned() {
        let m = verdict_message(5060, 9, Verdict::Accept, Some(b"12345"));
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(
            u16_at(&m, 4),
            Some((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT)
        );
        assert_eq!(&m[18..20], &5060u16.to_be_bytes());
        // verdict header attribute: len 12, type 2, accept, id 9
        assert_eq!(u16_at(&m, 20), Some(12));
        assert_eq!(be32(&m[24..]), Some(1));
        assert_eq!(be32(&m[28..]), Some(9));
        assert_eq!(u16_at(&m, 32), Some(9));
        assert_eq!(u16_at(&m, 34), Some(NFQA_PAYLOAD));
        assert_eq!(&m[36..41], b"12345");
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
