//! Notification sockets: a subscriber binds an unnamed-path (abstract) Unix datagram socket
//! that an event loop can wait on; the publisher sends it a byte when a frame is queued for it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{bind, recv, sendto, socket_with, AddressFamily, RecvFlags, SendFlags, SocketAddrUnix};
use rustix::net::{SocketFlags, SocketType};

fn address(key: u64) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(
        format!("xmem-stream-{key:016x}").as_bytes(),
    )?)
}

fn datagram_socket() -> io::Result<OwnedFd> {
    Ok(socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// The subscriber's end: a bound socket, readable while notifications are pending.
#[derive(Debug)]
pub struct NotifyReceiver {
    fd: OwnedFd,
    key: u64,
}

impl NotifyReceiver {
    /// Binds a socket at a random address (a few tries; addresses are 64-bit keys).
    pub fn bind() -> io::Result<NotifyReceiver> {
        let fd = datagram_socket()?;
        for _ in 0..8 {
            let key = super::random::u64() | 1;
            match bind(&fd, &address(key)?) {
                Ok(()) => return Ok(NotifyReceiver { fd, key }),
                Err(rustix::io::Errno::ADDRINUSE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free notification socket address",
        ))
    }

    /// The key a sender names it by.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Reads every pending notification.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while recv(&self.fd, &mut buf, RecvFlags::DONTWAIT).is_ok() {}
    }
}

impl AsFd for NotifyReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The publisher's end: one unbound socket, made on first use.
#[derive(Debug, Default)]
pub struct NotifySender {
    socket: std::sync::OnceLock<Option<OwnedFd>>,
}

impl NotifySender {
    /// Sends one byte to receiver `key`; a full socket is readable already, so failures are
    /// ignored.
    pub fn send(&self, key: u64) {
        let socket = self.socket.get_or_init(|| datagram_socket().ok());
        if let (Some(fd), Ok(addr)) = (socket, address(key)) {
            let _ = sendto(fd, &[1], SendFlags::DONTWAIT, &addr);
        }
    }
}
