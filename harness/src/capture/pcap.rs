//! Classic pcap files (nanosecond variant), the format every tool reads.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

use super::Frame;

/// Magic of nanosecond-resolution pcap; Wireshark, tcpdump and sngrep all read it.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// Writes `frames` as a pcap file at `path`.
pub fn write_pcap(path: &Path, frames: &[&Frame]) -> Result<()> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.bytes.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC_NS.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for f in frames {
        let t = f.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let len = f.bytes.len() as u32;
        out.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&t.subsec_nanos().to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&f.bytes);
    }
    let mut file =
        std::fs::File::create(path).map_err(Error::io(format!("create {}", path.display())))?;
    file.write_all(&out)
        .map_err(Error::io(format!("write {}", path.display())))
}

/// Reads a pcap file written by [`write_pcap`] (or any little-endian pcap): timestamps and frames.
pub fn read_pcap(path: &Path) -> Result<Vec<(SystemTime, Vec<u8>)>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(Error::io(format!("read {}", path.display())))?;
    let bad = |why: &str| Error::Io {
        what: format!("{}: {why}", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    };
    if bytes.len() < 24 {
        return Err(bad("shorter than a pcap header"));
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let nanos = match magic {
        MAGIC_NS => true,
        0xa1b2_c3d4 => false,
        _ => return Err(bad("not a little-endian pcap file")),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let word = |o: usize| u32::from_le_bytes(bytes[at + o..at + o + 4].try_into().expect("4"));
        let (secs, frac, incl) = (word(0), word(4), word(8) as usize);
        let start = at + 16;
        if start + incl > bytes.len() {
            return Err(bad("truncated record"));
        }
        let sub = if nanos { frac } else { frac * 1000 };
        out.push((
            UNIX_EPOCH + Duration::new(secs.into(), sub),
            bytes[start..start + incl].to_vec(),
        ));
        at = start + incl;
    }
    Ok(out)
}
