//! An `AF_PACKET` socket on one interface, read with kernel timestamps.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

use super::{Direction, Frame, Vantage};

const ETH_P_ALL: u16 = 0x0003;

/// Equivalent to what `tcpdump -i IFACE` opens: a raw packet socket bound to the interface.
/// Must run on the namespace's worker thread (the interface name is resolved there).
pub(super) fn open(iface: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned right after creation.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index as i32;
        if libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let on: libc::c_int = 1;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        // Media bursts must not overflow the default buffer between two reads.
        let size: libc::c_int = 4 << 20;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
        Ok(fd)
    }
}

/// One `recvmsg`: the frame, its kernel timestamp and whether it was outgoing.
fn receive(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SystemTime, Direction)> {
    // SAFETY: all pointers refer to live, correctly sized local buffers.
    unsafe {
        let mut sll: libc::sockaddr_ll = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u8; 64];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut sll as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = SystemTime::now();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                at = UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let direction = if sll.sll_pkttype == libc::PACKET_OUTGOING {
            Direction::Out
        } else {
            Direction::In
        };
        Ok((n as usize, at, direction))
    }
}

/// Reads frames until aborted.
pub(super) async fn run(afd: AsyncFd<OwnedFd>, vantage: Vantage, frames: Arc<Mutex<Vec<Frame>>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return;
        };
        loop {
            match receive(afd.get_ref().as_raw_fd(), &mut buf) {
                Ok((n, at, direction)) => {
                    frames
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Frame {
                            at,
                            vantage: vantage.clone(),
                            direction,
                            bytes: buf[..n].to_vec(),
                        });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(_) => return,
            }
        }
    }
}
