//! IPv4 fragments put back together per vantage point, so the trace decodes whole datagrams (an
//! INVITE larger than the MTU) once, as the receiving kernel would. No IO.
//!
//! The captures keep the fragments themselves (the pcaps must show what was on the wire); only
//! the decoded trace sees the reassembled datagram, at the instant its first fragment was seen
//! (when the datagram started to cross that vantage point: a drop the router's first fragment
//! explains then follows the phone's send, not precedes it).
//! A set that never completes at a vantage point (a fragment lost before it) stays as it was:
//! its first fragment decodes as the truncated datagram it is, the others as nothing.

use std::collections::HashMap;

use crate::capture::{Direction, Frame, Vantage};

/// An IPv4 fragment's place in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The IPv4 identification shared by the datagram's fragments.
    pub id: u16,
    /// Where this fragment's payload starts, in bytes.
    pub offset: usize,
    /// More fragments follow (MF).
    pub more: bool,
}

/// The fragment fields of an Ethernet frame carrying IPv4, if it is a fragment.
pub fn fragment_of(frame: &[u8]) -> Option<Fragment> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    let more = flags & 0x2000 != 0;
    let offset = usize::from(flags & 0x1fff) * 8;
    (more || offset != 0).then_some(Fragment {
        id: u16::from_be_bytes([ip[4], ip[5]]),
        offset,
        more,
    })
}

/// `frames` with each complete set of fragments replaced by one frame holding the whole datagram
/// (in the place of its last fragment, at the time of its first); with the number of fragments
/// it came in.
pub fn whole(frames: &[Frame]) -> Vec<(Frame, usize)> {
    type Key = (Vantage, bool, [u8; 4], [u8; 4], u8, u16);
    let key = |f: &Frame, id: u16| -> Key {
        let ip = &f.bytes[14..];
        (
            f.vantage.clone(),
            f.direction == Direction::In,
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
            ip[9],
            id,
        )
    };
    let mut pending: HashMap<Key, Vec<usize>> = HashMap::new();
    // Index of a fragment → the datagram completed there, or `None` to leave it out.
    let mut replace: HashMap<usize, Option<(Frame, usize)>> = HashMap::new();
    for (i, f) in frames.iter().enumerate() {
        let Some(frag) = fragment_of(&f.bytes) else {
            continue;
        };
        let k = key(f, frag.id);
        let set = pending.entry(k.clone()).or_default();
        set.push(i);
        if let Some(datagram) = reassemble(frames, set) {
            for &j in set.iter() {
                replace.insert(j, None);
            }
            replace.insert(i, Some((datagram, set.len())));
            pending.remove(&k);
        }
    }
    frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match replace.remove(&i) {
            None => Some((f.clone(), 1)),
            Some(whole) => whole,
        })
        .collect()
}

/// The whole datagram, once the fragments at `set` cover it from offset 0 to a last fragment.
fn reassemble(frames: &[Frame], set: &[usize]) -> Option<Frame> {
    let mut parts: Vec<(Fragment, &[u8], &Frame)> = set
        .iter()
        .filter_map(|&i| {
            let f = &frames[i];
            let frag = fragment_of(&f.bytes)?;
            let ip = &f.bytes[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
            (ihl >= 20 && total >= ihl).then(|| (frag, &ip[ihl..total], f))
        })
        .collect();
    parts.sort_by_key(|(frag, _, _)| frag.offset);
    let mut payload = Vec::new();
    for (frag, bytes, _) in &parts {
        if frag.offset > payload.len() {
            return None; // a gap: a fragment is still missing
        }
        let end = frag.offset + bytes.len();
        if end > payload.len() {
            payload.extend_from_slice(&bytes[payload.len() - frag.offset..]);
        }
    }
    let (last, _, _) = parts.last()?;
    let (first, _, first_frame) = parts.first()?;
    if last.more || first.offset != 0 {
        return None;
    }
    let ip = &first_frame.bytes[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = u16::try_from(ihl + payload.len()).ok()?;
    let mut bytes = first_frame.bytes[..14 + ihl].to_vec();
    bytes[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
    // Keep DF, clear MF and the offset: the datagram as the receiving kernel hands it up.
    bytes[14 + 6] &= 0x40;
    bytes[14 + 7] = 0;
    bytes.extend_from_slice(&payload);
    let oldest = parts.iter().map(|(_, _, f)| f.at).min()?;
    Some(Frame {
        at: oldest,
        vantage: first_frame.vantage.clone(),
        direction: first_frame.direction,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// An Ethernet + IPv4 frame of a fragment: `payload` at byte `offset` of datagram `id`.
    fn fragment(id: u16, offset: usize, more: bool, payload: &[u8], at_ms: u64) -> Frame {
        let mut b = vec![0u8; 14];
        b[12] = 0x08;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 192, 168, 1, 10, 203, 0, 113, 10,
        ];
        let total = (20 + payload.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&ip);
        b.extend_from_slice(payload);
        Frame {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
            vantage: Vantage::new("alice", "eth0"),
            direction: Direction::Out,
            bytes: b,
        }
    }

    #[test]
    fn two_fragments_become_one_datagram_at_the_first_ones_time() {
        let head = [7u8; 16];
        let tail = [9u8; 5];
        let frames = vec![
            fragment(1, 0, true, &head, 10),
            fragment(1, 16, false, &tail, 11),
        ];
        let out = whole(&frames);
        assert_eq!(out.len(), 1);
        let (f, n) = &out[0];
        assert_eq!(*n, 2);
        assert_eq!(f.at, frames[0].at);
        assert_eq!(fragment_of(&f.bytes), None, "no longer a fragment");
        assert_eq!(&f.bytes[14 + 20..], [&head[..], &tail[..]].concat());
        assert_eq!(u16::from_be_bytes([f.bytes[16], f.bytes[17]]), 20 + 21);
    }

    #[test]
    fn an_incomplete_set_is_left_as_it_was_seen() {
        let frames = vec![fragment(1, 0, true, &[7u8; 16], 10)];
        let out = whole(&frames);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 1);
        assert!(fragment_of(&out[0].0.bytes).is_some());
    }
}
