//! What xmem objects exist, who owns them and whether they live ([`list`]); what changes
//! ([`watch()`]); and removing what no live process uses any more ([`cleanup_orphans`]).

mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

pub use watch::{watch, watch_in, Event, Watcher};

use crate::error::{Error, Result};
use crate::object::{self, ObjectInfo, ObjectKind, ObjectState};
use crate::os::map::MapOptions;
use crate::os::{placement, shm, time, Liveness, Mapping, ProcessIdentity, ShmDir, ShmFile};
use crate::{pool, segment, stream};

/// One object, as `xmem ls` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Its kind, if its header says.
    pub kind: Option<ObjectKind>,
    /// Ready, initialising, abandoned or damaged.
    pub state: ObjectState,
    /// The file's size.
    pub file_size: u64,
    /// The creator (for a segment: its writer).
    pub owner: Option<ProcessIdentity>,
    /// Whether the creator lives.
    pub owner_liveness: Option<Liveness>,
    /// Creation time, ns since the epoch.
    pub created_unix_ns: u64,
    /// What the kind adds.
    pub detail: Detail,
}

/// Kind-specific facts.
#[derive(Debug, Clone)]
pub enum Detail {
    /// A buffer pool.
    Pool {
        /// Buffers.
        buffers: u32,
        /// Buffers some process holds.
        in_use: u32,
        /// Live attached processes.
        processes: usize,
        /// Attached processes that are dead (their references not yet reclaimed).
        dead_processes: usize,
    },
    /// A seqlock segment.
    Segment {
        /// Bytes of data.
        size: u64,
        /// Current version.
        version: u64,
        /// Whether the writer holds the segment's lock.
        writer_alive: bool,
        /// Time since the last write or heartbeat.
        heartbeat_age: Duration,
    },
    /// A publish/subscribe stream.
    Stream {
        /// The pool holding its frames.
        pool: String,
        /// Whether its publisher is still publishing.
        publisher_alive: bool,
        /// Frames published.
        published: u64,
        /// Subscribers (live or not yet cleaned up).
        subscribers: usize,
    },
    /// Nothing more is known (not ready, or a kind this build does not know).
    None,
    /// The common header is sound but the kind-specific part is not (a scribbled layout, a
    /// wrong size): the object cannot be used. `xmem clean --damaged` removes it.
    Damaged(String),
    /// The kind-specific part could not be read now (out of file descriptors, say).
    Unreadable(String),
}

impl Detail {
    /// `Damaged` for an error that says the object itself is broken, `Unreadable` otherwise.
    fn of_error(e: Error) -> Detail {
        match e {
            Error::Corrupt { .. }
            | Error::Truncated { .. }
            | Error::VersionMismatch { .. }
            | Error::NotXmem { .. }
            | Error::WrongKind { .. } => Detail::Damaged(e.to_string()),
            e => Detail::Unreadable(e.to_string()),
        }
    }
}

impl Entry {
    /// What is broken in the object, if it is damaged: at the header level
    /// ([`ObjectState::Damaged`]) or in its kind-specific part ([`Detail::Damaged`]).
    pub fn damage(&self) -> Option<&str> {
        match (&self.state, &self.detail) {
            (ObjectState::Damaged(why), _) | (_, Detail::Damaged(why)) => Some(why),
            _ => None,
        }
    }

    /// Whether no live process uses the object any more (a pool with no live process, a
    /// segment whose writer is gone, an object abandoned while being created).
    pub fn is_orphan(&self) -> bool {
        match (&self.state, &self.detail) {
            (ObjectState::Abandoned, _) => true,
            (ObjectState::Ready, Detail::Pool { processes, .. }) => *processes == 0,
            (ObjectState::Ready, Detail::Segment { writer_alive, .. }) => !writer_alive,
            (ObjectState::Ready, Detail::Stream { publisher_alive, .. }) => !publisher_alive,
            _ => false,
        }
    }
}

/// Every xmem object in the default directory (`$XMEM_SHM_DIR` or `/dev/shm`) and on hugetlbfs
/// mounts (where huge-page segments live).
pub fn list() -> Result<Vec<Entry>> {
    let mut entries = list_in(&ShmDir::default())?;
    for m in placement::hugetlbfs_mounts() {
        if let Ok(more) = list_in(&ShmDir::new(m.path)) {
            entries.extend(more);
        }
    }
    Ok(entries)
}

/// Every xmem object in `dir`.
pub fn list_in(dir: &ShmDir) -> Result<Vec<Entry>> {
    Ok(object::list(dir)?.into_iter().map(describe).collect())
}

/// The object at `path`, if there is one.
pub fn entry(path: &Path) -> Result<Option<Entry>> {
    Ok(object::probe(path)?.map(describe))
}

fn describe(info: ObjectInfo) -> Entry {
    let detail = match (&info.state, info.kind) {
        (ObjectState::Ready, Some(ObjectKind::Pool)) => match pool::inspect_path(&info.path, &info.name) {
            Ok(snap) => Detail::Pool {
                buffers: snap.config.count,
                in_use: snap.buffers.iter().filter(|b| !b.holder_slots.is_empty()).count() as u32,
                processes: snap
                    .processes
                    .iter()
                    .filter(|p| p.liveness != Liveness::Dead)
                    .count(),
                dead_processes: snap
                    .processes
                    .iter()
                    .filter(|p| p.liveness == Liveness::Dead)
                    .count(),
            },
            Err(e) => Detail::of_error(e),
        },
        (ObjectState::Ready, Some(ObjectKind::Segment)) => {
            match segment::inspect_path(&info.path, &info.name) {
                Ok(s) => Detail::Segment {
                    size: s.size,
                    version: s.version,
                    writer_alive: s.writer_alive,
                    heartbeat_age: s.heartbeat_age,
                },
                Err(e) => Detail::of_error(e),
            }
        }
        (ObjectState::Ready, Some(ObjectKind::Stream)) => {
            match stream::inspect_path(&info.path, &info.name) {
                Ok(s) => Detail::Stream {
                    pool: s.pool,
                    publisher_alive: s.publisher_alive,
                    published: s.published,
                    subscribers: s.subscribers.len(),
                },
                Err(e) => Detail::of_error(e),
            }
        }
        _ => Detail::None,
    };
    Entry {
        name: info.name,
        path: info.path,
        kind: info.kind,
        state: info.state,
        file_size: info.file_size,
        owner: info.owner,
        owner_liveness: info.owner_liveness,
        created_unix_ns: info.created_unix_ns,
        detail,
    }
}

/// What a cleanup did (or, on a dry run, would do) to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The references of dead processes were returned to a pool that live processes still use.
    Reclaimed {
        /// The dead processes.
        dead_processes: Vec<u32>,
        /// References returned.
        references: u64,
    },
    /// The object was removed: no live process used it for longer than the grace period.
    Removed {
        /// Why it counted as an orphan.
        why: String,
    },
    /// An orphan still inside its grace period (kept for now).
    Waiting {
        /// Time left.
        left: Duration,
    },
}

/// One object a cleanup acted on.
#[derive(Debug, Clone)]
pub struct Cleaned {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// What happened.
    pub action: Action,
}

/// Options of [`cleanup_in`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanupOptions {
    /// How long an object must have been an orphan before it is removed.
    pub grace: Duration,
    /// Report, change nothing.
    pub dry_run: bool,
    /// Also remove damaged files (`xmem.*` files that are not valid xmem objects).
    pub damaged: bool,
}

/// Removes every object in the default directory (and hugetlbfs mounts) that no live process
/// has used for at least `grace`, and returns dead processes' references to pools that live
/// processes still use. Never removes an object a live process uses.
///
/// An object's grace period starts when a cleanup first finds it orphaned (the time is kept in
/// the object's header), so repeated cleanups with the same grace behave like one long wait.
pub fn cleanup_orphans(grace: Duration) -> Result<Vec<Cleaned>> {
    let options = CleanupOptions {
        grace,
        ..Default::default()
    };
    let mut done = cleanup_in(&ShmDir::default(), options)?;
    for m in placement::hugetlbfs_mounts() {
        done.extend(cleanup_in(&ShmDir::new(m.path), options)?);
    }
    Ok(done)
}

/// [`cleanup_orphans`] in one directory, with options.
pub fn cleanup_in(dir: &ShmDir, options: CleanupOptions) -> Result<Vec<Cleaned>> {
    let mut done = Vec::new();
    for entry in list_in(dir)? {
        let mut record = |action| {
            done.push(Cleaned {
                name: entry.name.clone(),
                path: entry.path.clone(),
                action,
            })
        };
        // Return dead processes' references first: always safe, and exact.
        if entry.state == ObjectState::Ready && entry.kind == Some(ObjectKind::Pool) {
            if let Detail::Pool { dead_processes, .. } = entry.detail {
                if dead_processes > 0 {
                    match pool::reclaim_path(&entry.path, options.dry_run) {
                        Ok(r) if !r.is_empty() => record(Action::Reclaimed {
                            dead_processes: r.dead_processes,
                            references: r.references,
                        }),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(object = %entry.name, error = %e, "could not reclaim"),
                    }
                }
            }
        }
        let why = match (&entry.state, &entry.detail) {
            _ if options.damaged && entry.damage().is_some() => {
                format!("damaged: {}", entry.damage().unwrap_or_default())
            }
            // A damaged stream or segment whose owner is gone (no one holds its lock): nothing
            // can use it, and its creation lock says so even where its header cannot be trusted.
            (ObjectState::Ready, Detail::Damaged(why))
                if matches!(entry.kind, Some(ObjectKind::Stream | ObjectKind::Segment))
                    && !object::lock_is_held(&entry.path)? =>
            {
                format!("damaged ({why}) and its owner is gone")
            }
            _ if !entry.is_orphan() => continue,
            (ObjectState::Abandoned, _) => "abandoned by a creator that died while creating it".to_string(),
            (_, Detail::Pool { .. }) => "no live process has it open".to_string(),
            (_, Detail::Segment { .. }) => "its writer is gone".to_string(),
            (_, Detail::Stream { .. }) => "its publisher is gone".to_string(),
            _ => continue,
        };
        match grace_left(&entry, options) {
            Ok(Some(left)) => {
                record(Action::Waiting { left });
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(object = %entry.name, error = %e, "could not read its grace period");
                continue;
            }
        }
        let removed = if options.dry_run {
            true
        } else if entry.damage().is_some() {
            shm::unlink(&entry.path)?
        } else {
            match entry.kind {
                Some(ObjectKind::Pool) if entry.state == ObjectState::Ready => {
                    pool::clean_path(&entry.path, false)?.removed
                }
                Some(ObjectKind::Segment) if entry.state == ObjectState::Ready => {
                    segment::clean_path(&entry.path, false)?
                }
                Some(ObjectKind::Stream) if entry.state == ObjectState::Ready => {
                    stream::clean_path(&entry.path, false)?
                }
                _ => shm::unlink(&entry.path)?,
            }
        };
        if removed {
            record(Action::Removed { why });
        }
    }
    Ok(done)
}

/// Time left in an orphan's grace period (`None`: none left), starting the period if this is
/// the first cleanup to find it orphaned.
fn grace_left(entry: &Entry, options: CleanupOptions) -> Result<Option<Duration>> {
    if options.grace.is_zero() {
        return Ok(None);
    }
    let now = time::unix_now_ns();
    let since = match entry.state {
        // No usable header: the file's age stands in.
        _ if entry.damage().is_some() || entry.state == ObjectState::Abandoned => {
            ShmFile::open_read_only(&entry.path)?
                .map(|f| f.modified_unix_ns())
                .transpose()?
                .unwrap_or(now)
        }
        _ => mark_orphan(&entry.path, entry.kind, now, options.dry_run)?,
    };
    let elapsed = Duration::from_nanos(now.saturating_sub(since));
    Ok((elapsed < options.grace).then(|| options.grace - elapsed))
}

/// Records `now` as the start of the object's orphanhood unless one is recorded; returns it.
fn mark_orphan(path: &Path, kind: Option<ObjectKind>, now: u64, dry_run: bool) -> Result<u64> {
    if kind.is_none() {
        return Ok(now);
    }
    let file = if dry_run {
        ShmFile::open_read_only(path)?
    } else {
        ShmFile::open(path)?
    };
    let Some(file) = file else {
        return Ok(now);
    };
    let map = Mapping::map(
        &file,
        object::HEADER_SIZE,
        MapOptions {
            writable: !dry_run,
            populate: false,
        },
        path,
    )?;
    let h = map.at::<object::ObjectHeader>(0)?;
    if h.magic.load(Acquire) != object::OBJECT_MAGIC {
        return Err(Error::NotXmem {
            path: path.to_path_buf(),
            detail: "its header changed".into(),
        });
    }
    if dry_run {
        let since = h.orphan_since_unix_ns.load(Relaxed);
        return Ok(if since == 0 { now } else { since });
    }
    Ok(
        match h.orphan_since_unix_ns.compare_exchange(0, now, AcqRel, Acquire) {
            Ok(_) => now,
            Err(since) => since,
        },
    )
}
