//! Waiting on many descriptors (epoll) and on a directory's changes (inotify): what discovery's
//! watcher is built on.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::fs::inotify;
use rustix::io::Errno;

/// A set of descriptors, each with a key, to wait on together; itself readable when one is.
#[derive(Debug)]
pub struct EventSet {
    epoll: OwnedFd,
}

impl EventSet {
    /// An empty set.
    pub fn new() -> io::Result<EventSet> {
        Ok(EventSet {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    /// Adds `fd` (readable: an event) with `key`.
    pub fn add(&self, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        Ok(epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::IN,
        )?)
    }

    /// Removes `fd` (a descriptor not in the set is no error).
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
    }

    /// The keys of the descriptors ready, waiting at most `timeout` (`None`: until one is); a
    /// signal ends the wait early with none.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<u64>> {
        let ts = timeout.map(|w| rustix::time::Timespec {
            tv_sec: w.as_secs() as _,
            tv_nsec: w.subsec_nanos() as _,
        });
        let mut events = Vec::with_capacity(16);
        match epoll::wait(&self.epoll, spare_capacity(&mut events), ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => Ok(events.iter().map(|e| e.data.u64()).collect()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for EventSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// What happened to one file of a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file's name.
    pub name: String,
    /// Removed or renamed away.
    pub removed: bool,
    /// Created or renamed in.
    pub created: bool,
    /// Closed after writing.
    pub written: bool,
}

/// A directory's changes (inotify), readable when some are pending.
#[derive(Debug)]
pub struct DirWatch {
    inotify: OwnedFd,
}

impl DirWatch {
    /// Watches `dir` for files created, removed, renamed, closed after writing.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let inotify = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CLOSE_WRITE;
        inotify::add_watch(&inotify, dir, flags)?;
        Ok(DirWatch { inotify })
    }

    /// The changes pending, in order (file names that are not UTF-8 are left out).
    pub fn drain(&self) -> io::Result<Vec<FileChange>> {
        use inotify::ReadFlags as F;
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut out = Vec::new();
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    let Some(name) = ev.file_name().and_then(|n| n.to_str().ok()) else {
                        continue;
                    };
                    let f = ev.events();
                    out.push(FileChange {
                        name: name.to_string(),
                        removed: f.intersects(F::DELETE | F::MOVED_FROM),
                        created: f.intersects(F::CREATE | F::MOVED_TO),
                        written: f.contains(F::CLOSE_WRITE),
                    });
                }
                Err(Errno::AGAIN) | Err(Errno::INTR) => return Ok(out),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for DirWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

/// Whether `e` says this process (or the system) has no file descriptor left.
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::MFILE.raw_os_error() || c == Errno::NFILE.raw_os_error())
}
