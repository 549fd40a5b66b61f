//! Handing a file descriptor to another process: a broker thread that answers on an abstract
//! Unix `SOCK_SEQPACKET` socket with the descriptor in an `SCM_RIGHTS` message, and the request
//! that asks it.
//!
//! Why a broker and not `pidfd_getfd`: the latter needs ptrace rights over the holder, which
//! Docker's default seccomp profile and Yama (`ptrace_scope=1`) deny; a socket needs nothing.
//! Why abstract names: nothing is left in a file system when a holder dies. An abstract name can
//! be bound by anyone, so both sides check the other's credentials (`SO_PEERCRED`): the broker
//! admits only processes the object's file mode would admit, and the requester accepts only
//! the process it meant to ask. Abstract names belong to a network namespace: processes that
//! share `/dev/shm` but not a network namespace cannot reach each other's brokers.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::net::sockopt::{set_socket_timeout, socket_peercred, Timeout};
use rustix::net::{
    accept_with, bind, connect, listen, recvmsg, sendmsg, socket_with, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Who may receive the descriptor: whom the object's file mode admits (owner, group, others;
/// root always). Supplementary groups are not consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The object's owner.
    pub uid: u32,
    /// The object's group.
    pub gid: u32,
    /// The object's permission bits (`0o600`, `0o660`, …).
    pub mode: u32,
}

impl Admission {
    /// Whether a peer with these credentials may have the descriptor.
    pub fn admits(&self, uid: u32, gid: u32) -> bool {
        uid == 0
            || (uid == self.uid && self.mode & 0o600 != 0)
            || (gid == self.gid && self.mode & 0o060 != 0)
            || self.mode & 0o006 != 0
    }
}

/// Why a request for a descriptor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FdPassError {
    /// Nobody listens at that name (the holder died, or never served).
    #[error("no broker at {name}")]
    NoBroker {
        /// The name asked.
        name: String,
    },
    /// The broker refused: the object's mode does not admit this process.
    #[error("the broker at {name} refused this process (uid {uid}): the object's mode does not admit it")]
    Refused {
        /// The name asked.
        name: String,
        /// This process's uid.
        uid: u32,
    },
    /// The socket at that name belongs to another process than the one meant.
    #[error("the broker at {name} is pid {found}, not pid {expected}: not trusted")]
    Impostor {
        /// The name asked.
        name: String,
        /// The pid meant.
        expected: u32,
        /// The pid found.
        found: u32,
    },
    /// A system call failed, or the broker sent something that is not an answer.
    #[error("asking {name} for a descriptor: {source}")]
    Io {
        /// The name asked.
        name: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

const ANSWER_GRANTED: u8 = 1;
const ANSWER_REFUSED: u8 = 2;

fn address(name: &str) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?)
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Serves one descriptor at an abstract name until dropped.
#[derive(Debug)]
pub struct FdBroker {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdBroker {
    /// Binds `name` and answers every request the admission allows with a duplicate of `fd`.
    pub fn serve(name: &str, fd: Arc<OwnedFd>, admission: Admission) -> io::Result<FdBroker> {
        let listener = seqpacket()?;
        bind(&listener, &address(name)?)?;
        listen(&listener, 16)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xmem-fd-broker".into())
            .spawn(move || serve_loop(&listener, &fd, admission, &stopping))?;
        Ok(FdBroker {
            name: name.to_string(),
            stop,
            thread: Some(thread),
        })
    }

    /// The name it answers at.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for FdBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept: a connection of our own, which the loop sees after the stop flag.
        if let (Ok(sock), Ok(addr)) = (seqpacket(), address(&self.name)) {
            let _ = connect(&sock, &addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_loop(listener: &OwnedFd, fd: &OwnedFd, admission: Admission, stop: &AtomicBool) {
    loop {
        let conn = match accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(conn) => conn,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(_) => return,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // A peer that does not read must not hold the broker: sends time out.
        let _ = set_socket_timeout(&conn, Timeout::Send, Some(Duration::from_secs(1)));
        let admitted = socket_peercred(&conn)
            .map(|c| admission.admits(c.uid.as_raw(), c.gid.as_raw()))
            .unwrap_or(false);
        let _ = if admitted {
            let fds = [fd.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            sendmsg(
                &conn,
                &[IoSlice::new(&[ANSWER_GRANTED])],
                &mut control,
                SendFlags::NOSIGNAL,
            )
        } else {
            sendmsg(
                &conn,
                &[IoSlice::new(&[ANSWER_REFUSED])],
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        };
    }
}

/// Asks the broker at `name`, which must be process `pid`, for its descriptor.
pub fn request_fd(name: &str, pid: u32, timeout: Duration) -> Result<OwnedFd, FdPassError> {
    let io_err = |source: io::Error| FdPassError::Io {
        name: name.to_string(),
        source,
    };
    let sock = seqpacket().map_err(io_err)?;
    let _ = set_socket_timeout(&sock, Timeout::Recv, Some(timeout));
    match connect(&sock, &address(name).map_err(io_err)?) {
        Ok(()) => {}
        Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {
            return Err(FdPassError::NoBroker {
                name: name.to_string(),
            })
        }
        Err(e) => return Err(io_err(e.into())),
    }
    let cred = socket_peercred(&sock).map_err(|e| io_err(e.into()))?;
    let found = cred.pid.as_raw_nonzero().get() as u32;
    if found != pid {
        return Err(FdPassError::Impostor {
            name: name.to_string(),
            expected: pid,
            found,
        });
    }
    let mut answer = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &sock,
        &mut [IoSliceMut::new(&mut answer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io_err(e.into()))?;
    let mut received = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                // Keep the first; any other is closed as it drops.
                received.get_or_insert(fd);
            }
        }
    }
    match (got.bytes, answer[0], received) {
        (1, ANSWER_GRANTED, Some(fd)) => Ok(fd),
        (1, ANSWER_REFUSED, _) => Err(FdPassError::Refused {
            name: name.to_string(),
            uid: rustix::process::geteuid().as_raw(),
        }),
        (0, _, _) => Err(FdPassError::NoBroker {
            name: name.to_string(),
        }),
        _ => Err(io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer is neither a descriptor nor a refusal",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn memfd_with(text: &[u8]) -> OwnedFd {
        let fd = rustix::fs::memfd_create("fdpass-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(text).unwrap();
        file.into()
    }

    fn me() -> Admission {
        Admission {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mode: 0o600,
        }
    }

    fn name(tag: &str) -> String {
        format!(
            "xmem-fdpass-test/{}/{tag}/{}",
            std::process::id(),
            crate::random::u64()
        )
    }

    #[test]
    fn the_same_open_file_arrives() {
        let n = name("grant");
        let broker = FdBroker::serve(&n, Arc::new(memfd_with(b"hello")), me()).unwrap();
        for _ in 0..3 {
            let fd = request_fd(&n, std::process::id(), Duration::from_secs(2)).unwrap();
            let mut file = std::fs::File::from(fd);
            file.rewind().unwrap();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            assert_eq!(text, "hello");
        }
        drop(broker);
        assert!(matches!(
            request_fd(&n, std::process::id(), Duration::from_secs(1)),
            Err(FdPassError::NoBroker { .. })
        ));
    }

    #[test]
    fn a_broker_of_another_pid_is_not_trusted() {
        let n = name("impostor");
        let _broker = FdBroker::serve(&n, Arc::new(memfd_with(b"x")), me()).unwrap();
        let err = request_fd(&n, std::process::id() + 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FdPassError::Impostor { .. }), "{err}");
    }

    #[test]
    fn a_peer_the_mode_does_not_admit_is_refused() {
        let n = name("refuse");
        let me = me();
        if me.uid == 0 {
            // Root is always admitted; test the rule itself instead.
            let other = Admission {
                uid: 1000,
                gid: 1000,
                mode: 0o600,
            };
            assert!(!other.admits(65534, 65534));
            assert!(other.admits(1000, 5));
            assert!(!other.admits(5, 1000));
            assert!(Admission { mode: 0o660, ..other }.admits(5, 1000));
            assert!(Admission { mode: 0o604, ..other }.admits(5, 5));
            eprintln!("running as root: the refusal over a socket is tested by xmem-device's process tests");
            return;
        }
        let nobody = Admission {
            uid: me.uid + 1,
            gid: me.gid + 1,
            mode: 0o600,
        };
        let _broker = FdBroker::serve(&n, Arc::new(memfd_with(b"x")), nobody).unwrap();
        let err = request_fd(&n, std::process::id(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FdPassError::Refused { .. }), "{err}");
    }
}
