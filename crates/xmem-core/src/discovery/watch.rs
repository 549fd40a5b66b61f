//! Change events: objects created and removed (inotify on the directory) and owners dying (a
//! pidfd per owner), behind one epoll descriptor, so that an event loop can wait on a watcher
//! beside everything else. Nothing is scanned periodically; only an object caught in the middle
//! of its creation is looked at again every few milliseconds until it is ready.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::os::events::{DirWatch, EventSet};

use crate::error::{Error, Result};
use crate::object::{self, ObjectKind, ObjectState};
use crate::os::process::pidfd_exited;
use crate::os::{Liveness, ProcessIdentity, ShmDir};

/// A change among the xmem objects of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An object appeared (reported once it is ready; `kind` is `None` for a file that is not
    /// a valid xmem object).
    Created {
        /// Its name.
        name: String,
        /// Its kind.
        kind: Option<ObjectKind>,
        /// Its creator (for a segment, its writer).
        owner: Option<u32>,
    },
    /// An object's name was removed.
    Removed {
        /// Its name.
        name: String,
    },
    /// The process that created an object (a segment's writer) exited or was killed.
    OwnerDied {
        /// The object's name.
        name: String,
        /// Its kind.
        kind: Option<ObjectKind>,
        /// The owner's pid.
        pid: u32,
    },
}

const INOTIFY_KEY: u64 = u64::MAX;
/// How often an object still being created is looked at again.
const UNREADY_POLL: Duration = Duration::from_millis(5);
/// How often owners watched without a pidfd (none could be had) are looked at.
const OWNER_POLL: Duration = Duration::from_millis(20);

/// Watches one directory. See [`watch`].
#[derive(Debug)]
pub struct Watcher {
    dir: ShmDir,
    events: EventSet,
    dir_watch: DirWatch,
    known: HashMap<String, Option<ObjectKind>>,
    owners: HashMap<u32, (OwnedFd, ProcessIdentity, BTreeSet<String>)>,
    /// Owners watched by polling their liveness: out of file descriptors for their pidfds.
    polled: HashMap<u32, (ProcessIdentity, BTreeSet<String>)>,
    /// Whether running short of file descriptors was reported already.
    warned: bool,
    unready: BTreeSet<String>,
    queue: VecDeque<Event>,
}

/// Watches the default directory (`$XMEM_SHM_DIR` or `/dev/shm`).
pub fn watch() -> Result<Watcher> {
    watch_in(&ShmDir::default())
}

/// Watches `dir`. Objects that exist already produce no `Created` event, but their removal and
/// their owners' deaths are reported.
pub fn watch_in(dir: &ShmDir) -> Result<Watcher> {
    let os = |op: &'static str| move |e: std::io::Error| Error::os(op, dir.path(), e);
    let dir_watch = DirWatch::new(dir.path()).map_err(os("watch"))?;
    let events = EventSet::new().map_err(os("epoll"))?;
    events.add(dir_watch.as_fd(), INOTIFY_KEY).map_err(os("epoll"))?;
    let mut w = Watcher {
        dir: dir.clone(),
        events,
        dir_watch,
        known: HashMap::new(),
        owners: HashMap::new(),
        polled: HashMap::new(),
        warned: false,
        unready: BTreeSet::new(),
        queue: VecDeque::new(),
    };
    for info in object::list(dir)? {
        w.known.insert(info.name.clone(), info.kind);
        if let Some(owner) = info.owner {
            w.track_owner(&info.name, info.kind, owner);
        }
    }
    w.queue.clear(); // owners already dead before the watch started are not news
    Ok(w)
}

impl Watcher {
    /// The objects currently known.
    pub fn known(&self) -> Vec<String> {
        let mut names: Vec<String> = self.known.keys().cloned().collect();
        names.sort();
        names
    }

    /// The next event, waiting at most `timeout` (`None`: as long as it takes). `Ok(None)` when
    /// the time ran out.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.unready.is_empty() {
                wait = Some(wait.map_or(UNREADY_POLL, |w| w.min(UNREADY_POLL)));
            }
            if !self.polled.is_empty() {
                wait = Some(wait.map_or(OWNER_POLL, |w| w.min(OWNER_POLL)));
            }
            let ready = self
                .events
                .wait(wait)
                .map_err(|e| Error::os("epoll wait", self.dir.path(), e))?;
            // Deaths first: an owner that died and then had its object removed is reported
            // as dying before the removal, not forgotten with it.
            let mut inotify_ready = false;
            for key in ready {
                match key {
                    INOTIFY_KEY => inotify_ready = true,
                    pid => self.owner_exited(pid as u32),
                }
            }
            if inotify_ready {
                self.drain_inotify()?;
            }
            self.check_polled();
            self.check_unready();
            if self.queue.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    fn drain_inotify(&mut self) -> Result<()> {
        let changes = self
            .dir_watch
            .drain()
            .map_err(|e| Error::os("inotify read", self.dir.path(), e))?;
        for c in changes {
            let Some(name) = object::name_of_file(&c.name).map(str::to_string) else {
                continue;
            };
            if c.removed {
                self.removed(&name);
            }
            if c.created {
                self.unready.insert(name.clone());
            }
            if c.written && !self.known.contains_key(&name) {
                self.unready.insert(name);
            }
        }
        Ok(())
    }

    /// Looks again at objects caught while being created.
    fn check_unready(&mut self) {
        let names: Vec<String> = self.unready.iter().cloned().collect();
        for name in names {
            let Ok(path) = object::path_of(&self.dir, &name) else {
                self.unready.remove(&name);
                continue;
            };
            let mut probed = object::probe(&path);
            if probed.as_ref().is_err_and(out_of_fds) && self.shed_pidfd() {
                probed = object::probe(&path);
            }
            match probed {
                Ok(Some(info)) if info.state == ObjectState::Initialising => {}
                Ok(Some(info)) => {
                    self.unready.remove(&name);
                    if self.known.insert(name.clone(), info.kind).is_none() {
                        let ready = info.state == ObjectState::Ready;
                        self.queue.push_back(Event::Created {
                            name: name.clone(),
                            kind: info.kind.filter(|_| ready),
                            owner: info.owner.map(|o| o.pid),
                        });
                        if let (true, Some(owner)) = (ready, info.owner) {
                            self.track_owner(&name, info.kind, owner);
                        }
                    }
                }
                // Another user's: it exists, though we cannot read what it is (as `xmem ls`).
                Err(Error::PermissionDenied { .. }) => {
                    self.unready.remove(&name);
                    if self.known.insert(name.clone(), None).is_none() {
                        self.queue.push_back(Event::Created {
                            name: name.clone(),
                            kind: None,
                            owner: None,
                        });
                    }
                }
                // Out of descriptors with none to give back: look again later, never drop it.
                Err(e) if out_of_fds(&e) => self.warn_short_of_fds(),
                // Gone again (its removal event follows), or not an object at all.
                Ok(None) | Err(_) => {
                    self.unready.remove(&name);
                }
            }
        }
    }

    fn removed(&mut self, name: &str) {
        self.unready.remove(name);
        // An owner that exited before the removal whose pidfd event is not read yet (the two
        // can arrive in one batch, or the removal in an earlier one): its death is news first.
        let dead: Vec<u32> = self
            .owners
            .iter()
            .filter(|(_, (fd, _, names))| names.contains(name) && pidfd_exited(fd))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in dead {
            self.owner_exited(pid);
        }
        self.check_polled();
        for (_, names) in self.polled.values_mut() {
            names.remove(name);
        }
        self.polled.retain(|_, (_, names)| !names.is_empty());
        if self.known.remove(name).is_some() {
            self.queue.push_back(Event::Removed {
                name: name.to_string(),
            });
        }
        let mut empty = Vec::new();
        for (pid, (_, _, names)) in self.owners.iter_mut() {
            names.remove(name);
            if names.is_empty() {
                empty.push(*pid);
            }
        }
        for pid in empty {
            if let Some((fd, _, _)) = self.owners.remove(&pid) {
                self.events.remove(fd.as_fd());
            }
        }
    }

    /// Watches `owner` with a pidfd; reports at once if it is already dead.
    fn track_owner(&mut self, name: &str, kind: Option<ObjectKind>, owner: ProcessIdentity) {
        if let Some((_, _, names)) = self.owners.get_mut(&owner.pid) {
            names.insert(name.to_string());
            return;
        }
        if let Some((_, names)) = self.polled.get_mut(&owner.pid) {
            names.insert(name.to_string());
            return;
        }
        let died = || Event::OwnerDied {
            name: name.to_string(),
            kind,
            pid: owner.pid,
        };
        // The pidfd first, then the identity check: the pidfd pins the process we checked.
        let fd = match crate::os::process::pidfd_open(owner.pid) {
            Ok(Some(fd)) => Some(fd),
            Ok(None) => {
                self.queue.push_back(died());
                return;
            }
            // No descriptor to be had (EMFILE, ENFILE, ENOMEM): no sign of a death, so watch it
            // by polling instead of reporting it dead.
            Err(_) => None,
        };
        if owner.liveness() == Liveness::Dead {
            self.queue.push_back(died());
            return;
        }
        let names = BTreeSet::from([name.to_string()]);
        match fd {
            Some(fd) if self.events.add(fd.as_fd(), u64::from(owner.pid)).is_ok() => {
                self.owners.insert(owner.pid, (fd, owner, names));
            }
            _ => {
                self.warn_short_of_fds();
                self.polled.insert(owner.pid, (owner, names));
            }
        }
    }

    /// Reports the deaths of the owners watched by polling.
    fn check_polled(&mut self) {
        let dead: Vec<u32> = self
            .polled
            .iter()
            .filter(|(_, (owner, _))| match owner.liveness() {
                Liveness::Dead => true,
                Liveness::Alive => false,
                // /proc unreadable (no descriptor to open it with): whether the pid exists.
                Liveness::Unknown => !crate::os::process::exists(owner.pid),
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in dead {
            if let Some((_, names)) = self.polled.remove(&pid) {
                for name in names {
                    let kind = self.known.get(&name).copied().flatten();
                    self.queue.push_back(Event::OwnerDied { name, kind, pid });
                }
            }
        }
    }

    /// Gives up one owner's pidfd (that owner is polled from now on), so that a new object can
    /// be opened. `false` if there was none.
    fn shed_pidfd(&mut self) -> bool {
        let Some(&pid) = self.owners.keys().next() else {
            return false;
        };
        let Some((fd, owner, names)) = self.owners.remove(&pid) else {
            return false;
        };
        self.events.remove(fd.as_fd());
        let exited = pidfd_exited(&fd);
        drop(fd);
        self.warn_short_of_fds();
        if exited {
            for name in names {
                let kind = self.known.get(&name).copied().flatten();
                self.queue.push_back(Event::OwnerDied { name, kind, pid });
            }
        } else {
            self.polled.insert(pid, (owner, names));
        }
        true
    }

    fn warn_short_of_fds(&mut self) {
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                dir = %self.dir.path().display(),
                "out of file descriptors: owners are watched by polling every {OWNER_POLL:?} from now on, and new objects are looked at again until they can be opened; raise the limit (ulimit -n)"
            );
        }
    }

    fn owner_exited(&mut self, pid: u32) {
        if let Some((fd, _, names)) = self.owners.remove(&pid) {
            self.events.remove(fd.as_fd());
            for name in names {
                let kind = self.known.get(&name).copied().flatten();
                self.queue.push_back(Event::OwnerDied { name, kind, pid });
            }
        }
    }
}

impl AsFd for Watcher {
    /// An epoll descriptor that is readable when [`Watcher::next`] has something to report.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

/// Whether `e` says this process (or the system) has no file descriptor left.
fn out_of_fds(e: &Error) -> bool {
    matches!(e, Error::Os { source, .. } if crate::os::events::out_of_fds(source))
}
