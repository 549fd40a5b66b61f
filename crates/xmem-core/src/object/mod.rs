//! What every xmem object has in common: a name, a header with its owner, a creation protocol
//! that publishes it only when it is complete, and an open protocol that trusts nothing.

mod header;
pub mod name;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

pub use header::{ObjectHeader, ObjectKind, OBJECT_MAGIC, READY};
pub use name::{file_name, name_of_file, validate_name, FILE_PREFIX, MAX_NAME_LEN};

use crate::error::{Error, Result};
use crate::os::map::MapOptions;
use crate::os::shm::Created;
use crate::os::{futex, placement, process, time, Liveness, Mapping, ProcessIdentity, ShmDir, ShmFile};

/// Size of [`ObjectHeader`].
pub const HEADER_SIZE: usize = std::mem::size_of::<ObjectHeader>();

/// Default time an `open` waits for a creator that is still initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a file too short for a header, whose lock nobody holds, is given before it is
/// judged abandoned or truncated: covers the instant between a creator's `open` and its lock.
const NO_CREATOR_GRACE: Duration = Duration::from_millis(20);

/// Layout versions above ours that a newer xmem could have written; beyond them (or at 0) the
/// version word is taken for damage, so that a scribbled header is not reported as a version
/// mismatch to be solved by upgrading.
const PLAUSIBLE_NEWER_VERSIONS: u32 = 1000;

/// An object's file, mapped.
#[derive(Debug)]
pub struct OpenObject {
    /// The file (kept open: its descriptor can be shared, and it carries the init lock).
    pub file: ShmFile,
    /// The mapping of the whole file.
    pub map: Mapping,
}

impl OpenObject {
    /// The common header.
    pub fn header(&self) -> &ObjectHeader {
        // The mapping is at least HEADER_SIZE long and page-aligned (checked when opened).
        self.map.at::<ObjectHeader>(0).expect("mapping holds a header")
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// The object's kind.
    pub kind: ObjectKind,
    /// Version of the kind-specific layout.
    pub layout_version: u32,
    /// Bytes of the kind-specific header.
    pub header_size: u32,
    /// Total size in bytes.
    pub total_size: u64,
    /// File mode (permissions), applied exactly.
    pub mode: u32,
    /// Fault all pages in at creation.
    pub populate: bool,
    /// Where the pages come from.
    pub placement: Placement,
    /// Keep the creation lock (an exclusive `flock`) for as long as the object is open: the
    /// creator stays the object's only writer, and its death frees the lock.
    pub keep_lock: bool,
}

/// Where an object's pages come from (see [`crate::os::placement`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Bind the pages to this NUMA node.
    pub numa_node: Option<u32>,
    /// Lock the pages in RAM.
    pub lock_in_memory: bool,
}

/// Outcome of [`create`].
#[derive(Debug)]
pub enum CreateOutcome {
    /// Created and published.
    Created(OpenObject),
    /// A file of that name exists already; nothing was changed.
    Exists,
}

/// Pools and streams are laid out in normal pages, and hugetlbfs refuses sizes that are not
/// whole huge pages: say so before trying, with what to do instead.
pub fn refuse_hugetlbfs(dir: &ShmDir, what: &str) -> Result<()> {
    match placement::hugetlbfs_at(dir.path()) {
        Some(m) => Err(Error::Placement {
            what: "huge pages",
            reason: format!(
                "{what} cannot be placed on the hugetlbfs mount {} yet; use a tmpfs directory such as \
                 /dev/shm (segments can use huge pages: SegmentBuilder::huge_pages)",
                m.path.display()
            ),
        }),
        None => Ok(()),
    }
}

/// Creates the object at `path`, initialises it with `init`, and publishes it.
///
/// Where the directory allows (`O_TMPFILE`: tmpfs, hugetlbfs), the object is built unnamed and
/// linked at `path` only once complete, so openers and `xmem watch` never meet it half made and a
/// creator killed on the way leaves nothing. Elsewhere it is created in place with `O_EXCL`;
/// until `init` returns the file carries an exclusive `flock` and `ready` is 0, so openers wait,
/// and if anything fails the file is removed again.
pub fn create(
    path: &Path,
    spec: &CreateSpec,
    init: impl FnOnce(&Mapping) -> Result<()>,
) -> Result<CreateOutcome> {
    // Cheap first look: building (and prefaulting) a whole object only to find the name taken
    // would waste the work. The link below still decides races.
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(CreateOutcome::Exists);
    }
    if let Some(file) = ShmFile::create_unnamed(path, spec.mode)? {
        crate::crash_point!("object.opened");
        let obj = initialise(file, spec, init)?;
        crate::crash_point!("object.before_publish");
        return Ok(if obj.file.publish()? {
            CreateOutcome::Created(obj)
        } else {
            CreateOutcome::Exists
        });
    }
    let file = match ShmFile::create_exclusive(path, spec.mode)? {
        Created::New(file) => file,
        Created::Exists => return Ok(CreateOutcome::Exists),
    };
    crate::crash_point!("object.opened");
    match initialise(file, spec, init) {
        Ok(obj) => Ok(CreateOutcome::Created(obj)),
        Err(e) => {
            let _ = crate::os::shm::unlink(path);
            Err(e)
        }
    }
}

/// For objects whose owner holds the creation lock for its whole life: the owner's pid if
/// `path` is a ready `kind` whose owner lives (its lock is held). Changes nothing.
pub fn live_owner(path: &Path, kind: ObjectKind) -> Option<u32> {
    let info = probe(path).ok()??;
    if info.state != ObjectState::Ready || info.kind != Some(kind) {
        return None;
    }
    let file = ShmFile::open_read_only(path).ok()??;
    match file.try_lock_exclusive() {
        Ok(false) => Some(info.owner.map_or(0, |o| o.pid)),
        _ => None, // free (dropping `file` lets go of it), or unknowable
    }
}

/// For objects with one owner that holds the creation lock for its whole life (a segment's
/// writer, a stream's publisher): when `path` exists, removes it if it is a `kind` whose owner is
/// gone, or an abandoned creation. `Err(pid)` if its owner lives; `Ok(Err(_))` for an object
/// that is not to be replaced (another kind, damaged).
pub fn take_over(name: &str, path: &Path, kind: ObjectKind) -> std::result::Result<Result<()>, u32> {
    let info = match probe(path) {
        Ok(Some(info)) => info,
        Ok(None) => return Ok(Ok(())), // gone meanwhile
        Err(e) => return Ok(Err(e)),
    };
    let owner = info.owner.map_or(0, |o| o.pid);
    Ok(match (&info.state, info.kind) {
        (ObjectState::Ready, Some(k)) if k == kind => {
            let file = match ShmFile::open_read_only(path) {
                Ok(Some(file)) => file,
                Ok(None) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e.into())),
            };
            match file.try_lock_exclusive() {
                Ok(true) => {}
                Ok(false) => return Err(owner),
                Err(e) => return Ok(Err(e.into())),
            }
            // Its owner is gone; we hold its lock now, so no one else takes it over meanwhile.
            tracing::info!(name, kind = %kind, "replacing an object whose owner is gone");
            crate::os::shm::unlink(path).map(|_| ()).map_err(Error::from)
        }
        (ObjectState::Abandoned, _) => crate::os::shm::unlink(path).map(|_| ()).map_err(Error::from),
        (ObjectState::Initialising, _) => return Err(owner),
        (ObjectState::Unreadable(_), _) => Err(Error::PermissionDenied {
            path: path.to_path_buf(),
            op: "replace",
        }),
        (ObjectState::Damaged(why), _) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: why.clone(),
        }),
        (ObjectState::Ready, other) => Err(Error::AlreadyExists {
            name: name.to_string(),
            detail: format!(
                "it is a {}",
                other.map_or("different object".into(), |k| k.to_string())
            ),
        }),
    })
}

/// Creates an anonymous object (a memfd), shared by handing its descriptor to other processes.
pub fn create_anonymous(spec: &CreateSpec, init: impl FnOnce(&Mapping) -> Result<()>) -> Result<OpenObject> {
    let file = ShmFile::anonymous("xmem-anonymous")?;
    let obj = initialise(file, spec, init)?;
    obj.file.seal_size()?;
    Ok(obj)
}

fn initialise(
    file: ShmFile,
    spec: &CreateSpec,
    init: impl FnOnce(&Mapping) -> Result<()>,
) -> Result<OpenObject> {
    file.lock_exclusive()?;
    file.set_size(spec.total_size)?;
    let len =
        usize::try_from(spec.total_size).map_err(|_| Error::InvalidConfig("object too large".into()))?;
    let map = Mapping::map(
        &file,
        len,
        MapOptions {
            writable: true,
            populate: false,
        },
        file.path(),
    )?;
    // The NUMA policy first: the pages are allocated just below, on the chosen node.
    if let Some(node) = spec.placement.numa_node {
        placement::bind_to_node(map.base(), len, node).map_err(|reason| Error::Placement {
            what: "NUMA binding",
            reason,
        })?;
    }
    file.reserve(spec.total_size)?;
    if spec.populate {
        map.prefault();
    }
    if spec.placement.lock_in_memory {
        placement::lock_in_memory(map.base(), len).map_err(|reason| Error::Placement {
            what: "locking in memory",
            reason,
        })?;
    }
    let h = map.at::<ObjectHeader>(0)?;
    let me = ProcessIdentity::current();
    let now = time::unix_now_ns();
    h.kind.store(spec.kind.code(), Relaxed);
    h.layout_version.store(spec.layout_version, Relaxed);
    h.header_size.store(spec.header_size, Relaxed);
    h.total_size.store(spec.total_size, Relaxed);
    h.owner_pid.store(me.pid, Relaxed);
    h.owner_uid.store(process::uid(), Relaxed);
    h.owner_start_ticks.store(me.start_ticks, Relaxed);
    h.owner_pidns.store(process::pid_namespace(), Relaxed);
    h.created_unix_ns.store(now, Relaxed);
    h.heartbeat_unix_ns.store(now, Relaxed);
    h.magic.store(OBJECT_MAGIC, Release);
    init(&map)?;
    crate::crash_point!("object.before_ready");
    h.ready.store(READY, Release);
    futex::wake(&h.ready, u32::MAX);
    if !spec.keep_lock {
        file.unlock()?;
    }
    Ok(OpenObject { file, map })
}

/// How to open.
#[derive(Debug, Clone)]
pub struct OpenSpec {
    /// The kind expected.
    pub kind: ObjectKind,
    /// The layout version this build understands.
    pub layout_version: u32,
    /// Least size of the kind-specific header.
    pub header_size: u32,
    /// How long to wait for a creator that is still initialising.
    pub timeout: Duration,
    /// Map read-write.
    pub writable: bool,
    /// Fault all pages in.
    pub populate: bool,
}

/// Opens the object at `path`. `Ok(None)` if no such file exists.
pub fn open(path: &Path, spec: &OpenSpec) -> Result<Option<OpenObject>> {
    let file = if spec.writable {
        ShmFile::open(path)?
    } else {
        ShmFile::open_read_only(path)?
    };
    match file {
        Some(file) => open_file(file, spec).map(Some),
        None => Ok(None),
    }
}

/// Validates and maps an already open file (named, or a descriptor received from a peer).
pub fn open_file(file: ShmFile, spec: &OpenSpec) -> Result<OpenObject> {
    let path = file.path().to_path_buf();
    let deadline = Instant::now() + spec.timeout;
    // 1. The creator sizes the file right after creating it; wait until the header fits. A
    // creator holds the file's lock from just after it creates the file: one that stays free
    // past a short grace means there is no creator, and waiting longer cannot help.
    let mut backoff = Duration::from_micros(20);
    let start = Instant::now();
    let size = loop {
        let size = file.size()?;
        if size >= HEADER_SIZE as u64 {
            break size;
        }
        let no_creator = start.elapsed() >= NO_CREATOR_GRACE && lock_is_free(&file)?;
        if no_creator || Instant::now() >= deadline {
            return Err(if lock_is_free(&file)? {
                if size == 0 {
                    Error::Abandoned { path }
                } else {
                    Error::Truncated {
                        path,
                        size,
                        needed: HEADER_SIZE as u64,
                    }
                }
            } else {
                Error::NotReady {
                    path,
                    waited: spec.timeout,
                }
            });
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(5));
    };
    let len = usize::try_from(size).map_err(|_| Error::Corrupt {
        path: path.clone(),
        detail: "larger than the address space".into(),
    })?;
    let map = Mapping::map(
        &file,
        len,
        MapOptions {
            writable: spec.writable,
            populate: spec.populate,
        },
        &path,
    )?;
    let h = map.at::<ObjectHeader>(0)?;
    // 2. Wait for the creator to publish it.
    loop {
        let magic = h.magic.load(Acquire);
        if magic != 0 && magic != OBJECT_MAGIC {
            return Err(Error::NotXmem {
                path,
                detail: format!("its first bytes are {:02x?}", magic.to_le_bytes()),
            });
        }
        let ready = h.ready.load(Acquire);
        if ready == READY {
            break;
        }
        if ready != 0 {
            return Err(Error::Corrupt {
                path,
                detail: format!("ready word is {ready:#x}"),
            });
        }
        if lock_is_free(&file)? {
            // The creator unlocks only after publishing; look once more, then give up on it.
            if h.ready.load(Acquire) == READY {
                break;
            }
            return Err(if magic == 0 {
                Error::NotXmem {
                    path,
                    detail: "no xmem header: it is empty, or its creator died before writing one".into(),
                }
            } else {
                Error::Abandoned { path }
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::NotReady {
                path,
                waited: spec.timeout,
            });
        }
        futex::wait(&h.ready, 0, (deadline - now).min(Duration::from_millis(10)));
    }
    // 3. Published: now check what it is.
    let kind = h.kind();
    if kind != spec.kind {
        return Err(Error::WrongKind {
            path,
            expected: spec.kind.as_str(),
            found: kind.to_string(),
        });
    }
    let version = h.layout_version.load(Relaxed);
    // A version far from ours was written by no xmem: the header is damaged, not foreign.
    if version == 0 || version > spec.layout_version.saturating_add(PLAUSIBLE_NEWER_VERSIONS) {
        return Err(Error::Corrupt {
            path,
            detail: format!(
                "layout version {version} is not one any xmem writes (this one writes {})",
                spec.layout_version
            ),
        });
    }
    if version != spec.layout_version {
        return Err(Error::VersionMismatch {
            path,
            found: version,
            supported: spec.layout_version,
        });
    }
    let total = h.total_size.load(Relaxed);
    if total > size {
        return Err(Error::Truncated {
            path,
            size,
            needed: total,
        });
    }
    if total != size {
        return Err(Error::Corrupt {
            path,
            detail: format!("header says {total} bytes, the file has {size}"),
        });
    }
    let header_size = h.header_size.load(Relaxed);
    if header_size < spec.header_size || u64::from(header_size) > total {
        return Err(Error::Corrupt {
            path,
            detail: format!("header size {header_size} is impossible"),
        });
    }
    Ok(OpenObject { file, map })
}

/// Whether some process holds the creation lock of the file at `path` (a stream's publisher
/// and a segment's writer hold it for their whole life; a creator holds it while creating).
pub fn lock_is_held(path: &Path) -> Result<bool> {
    match ShmFile::open_read_only(path)? {
        Some(file) => Ok(!lock_is_free(&file)?),
        None => Ok(false),
    }
}

fn lock_is_free(file: &ShmFile) -> Result<bool> {
    if file.try_lock_shared()? {
        file.unlock()?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// What `probe` found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectState {
    /// Published and consistent at the common-header level.
    Ready,
    /// Its creator is still initialising it.
    Initialising,
    /// Its creator died while initialising it.
    Abandoned,
    /// Not an xmem object, truncated or corrupt; the text says which.
    Damaged(String),
    /// This process may not open it (another user's object, mode 0600); the text says whose.
    Unreadable(String),
}

/// A summary of one object, as `xmem ls` shows it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The object's name (without the file prefix).
    pub name: String,
    /// The file's path.
    pub path: PathBuf,
    /// The file's size.
    pub file_size: u64,
    /// What the probe found.
    pub state: ObjectState,
    /// The kind, if the header says.
    pub kind: Option<ObjectKind>,
    /// The creator, if the header says.
    pub owner: Option<ProcessIdentity>,
    /// Whether the creator lives.
    pub owner_liveness: Option<Liveness>,
    /// Creation time, ns since the epoch.
    pub created_unix_ns: u64,
    /// Last modification time of the file, ns since the epoch.
    pub modified_unix_ns: u64,
}

/// Reads an object's common header without waiting and without changing anything.
pub fn probe(path: &Path) -> Result<Option<ObjectInfo>> {
    let Some(file) = ShmFile::open_read_only(path)? else {
        return Ok(None);
    };
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(name_of_file)
        .unwrap_or_default()
        .to_string();
    let file_size = file.size()?;
    let mut info = ObjectInfo {
        name,
        path: path.to_path_buf(),
        file_size,
        state: ObjectState::Ready,
        kind: None,
        owner: None,
        owner_liveness: None,
        created_unix_ns: 0,
        modified_unix_ns: file.modified_unix_ns().unwrap_or(0),
    };
    if file_size < HEADER_SIZE as u64 {
        info.state = if lock_is_free(&file)? {
            ObjectState::Damaged(format!("truncated: {file_size} bytes"))
        } else {
            ObjectState::Initialising
        };
        return Ok(Some(info));
    }
    let map = Mapping::map(&file, HEADER_SIZE, MapOptions::default(), path)?;
    let h = map.at::<ObjectHeader>(0)?;
    let magic = h.magic.load(Acquire);
    if magic != OBJECT_MAGIC {
        info.state = if magic == 0 && !lock_is_free(&file)? {
            ObjectState::Initialising
        } else {
            ObjectState::Damaged("not an xmem object".into())
        };
        return Ok(Some(info));
    }
    let owner = h.owner();
    info.kind = Some(h.kind());
    info.owner = Some(owner);
    info.owner_liveness = Some(owner.liveness());
    info.created_unix_ns = h.created_unix_ns.load(Relaxed);
    info.state = if h.is_ready() {
        let total = h.total_size.load(Relaxed);
        if total != file_size {
            ObjectState::Damaged(format!("header says {total} bytes, the file has {file_size}"))
        } else {
            ObjectState::Ready
        }
    } else if lock_is_free(&file)? {
        ObjectState::Abandoned
    } else {
        ObjectState::Initialising
    };
    Ok(Some(info))
}

/// Every xmem object in `dir`, probed.
pub fn list(dir: &ShmDir) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    for file in dir.list()? {
        if name_of_file(&file).is_none() {
            continue;
        }
        // A file may vanish between readdir and open; skip it then.
        match probe(&dir.join(&file)) {
            Ok(Some(info)) => out.push(info),
            Ok(None) => {}
            Err(Error::PermissionDenied { path, .. }) => {
                if let Some(info) = unreadable(&path, &file)? {
                    out.push(info);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What can be known of an object this process may not open: its owner and mode, from `lstat`.
fn unreadable(path: &Path, file: &str) -> Result<Option<ObjectInfo>> {
    let Some(st) = crate::os::shm::file_status(path)? else {
        return Ok(None); // gone meanwhile
    };
    Ok(Some(ObjectInfo {
        name: name_of_file(file).unwrap_or_default().to_string(),
        path: path.to_path_buf(),
        file_size: st.size,
        state: ObjectState::Unreadable(format!(
            "not readable by uid {}: owned by uid {} with mode {:04o}; run as that user or root, or create it with a group mode",
            crate::os::process::uid(),
            st.uid,
            st.mode
        )),
        kind: None,
        owner: None,
        owner_liveness: None,
        created_unix_ns: 0,
        modified_unix_ns: st.modified_unix_ns,
    }))
}

/// The path of the object called `name` in `dir`.
pub fn path_of(dir: &ShmDir, name: &str) -> Result<PathBuf> {
    Ok(dir.join(&file_name(name)?))
}
