//! Seqlock segments: one writer publishes a latest value (a state, a configuration, a small
//! tensor) that any number of readers in any processes take without locks and without ever
//! seeing a torn value.
//!
//! ```no_run
//! use xmem_core::segment::{SegmentReader, SegmentWriter};
//! # fn main() -> xmem_core::Result<()> {
//! let mut w = SegmentWriter::create("robot.state", 4096)?;   // exclusive: one writer
//! w.write(b"pose 1.0 2.0 0.5")?;
//! // … any number of readers, in any processes:
//! let mut r = SegmentReader::open("robot.state")?;
//! let mut buf = [0u8; 16];
//! let version = r.read_into(&mut buf)?;                        // one complete write, always
//! # Ok(()) }
//! ```
//!
//! The writer holds an exclusive `flock` on the segment for its whole life: a second writer
//! gets [`Error::WriterExists`], and readers learn that the writer died (the kernel drops the
//! lock) exactly, whatever happened to its pid. See [`seqlock`] for the version protocol.

mod layout;
pub mod seqlock;

#[cfg(all(test, loom))]
mod model;

use std::cell::Cell;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

pub use layout::{MAX_SIZE, MIN_SIZE};

use self::layout::{
    SegmentHeader, LAYOUT_HASH, LAYOUT_VERSION, PAGE, PLACED_HUGE, PLACED_LOCKED, PLACED_NUMA,
};
use self::seqlock::{load_bytes, read_begin, read_validate, store_bytes, write_begin, write_end};
use crate::error::{Error, Result};
use crate::object::{self, CreateOutcome, CreateSpec, ObjectKind, OpenObject, OpenSpec, Placement};
use crate::os::{placement, shm, time, ProcessIdentity, ShmDir, ShmFile};

/// Whether to put a segment on huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Normal pages (the default).
    #[default]
    Off,
    /// Huge pages if the machine has them ready; else normal pages and a warning.
    Prefer,
    /// Huge pages, or [`Error::Placement`] saying how to get them.
    Require,
}

/// What a reader does once the writer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWriterGone {
    /// Keep returning the last complete value (the default).
    #[default]
    ReturnStale,
    /// Fail with [`Error::WriterGone`] instead of returning a value no one will update.
    Fail,
}

/// Configuration for creating a segment. Start with [`SegmentWriter::builder`].
#[derive(Debug, Clone)]
pub struct SegmentBuilder {
    name: String,
    dir: Option<ShmDir>,
    size: u64,
    mode: u32,
    huge_pages: HugePages,
    numa_node: Option<u32>,
    lock_in_memory: bool,
    prefault: bool,
    type_info: Option<TypeInfo>,
    initial_version: u64,
}

/// What a typed segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TypeInfo {
    hash: u64,
    size: u64,
    name: &'static str,
}

impl TypeInfo {
    fn of<T: 'static>() -> TypeInfo {
        let name = std::any::type_name::<T>();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        h ^= (std::mem::size_of::<T>() as u64) << 32 | std::mem::align_of::<T>() as u64;
        TypeInfo {
            hash: h | 1, // never 0, which means "bytes"
            size: std::mem::size_of::<T>() as u64,
            name,
        }
    }
}

impl SegmentBuilder {
    fn new(name: &str) -> Self {
        SegmentBuilder {
            name: name.to_string(),
            dir: None,
            size: PAGE,
            mode: 0o600,
            huge_pages: HugePages::Off,
            numa_node: None,
            lock_in_memory: false,
            prefault: true,
            type_info: None,
            initial_version: 0,
        }
    }

    /// Bytes of data: 4 KiB to 1 GiB, whole 4 KiB pages (default 4 KiB).
    pub fn size(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    /// File mode (default `0o600`; `0o644` lets other users read).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Put the segment on huge pages (a hugetlbfs mount).
    pub fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Bind the segment's pages to a NUMA node.
    pub fn numa_node(mut self, node: u32) -> Self {
        self.numa_node = Some(node);
        self
    }

    /// Lock the segment's pages in RAM (`mlock`).
    pub fn lock_in_memory(mut self, lock: bool) -> Self {
        self.lock_in_memory = lock;
        self
    }

    /// Fault every page in at creation (default on).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Directory of the segment's file (default `$XMEM_SHM_DIR` or `/dev/shm`).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(ShmDir::new(dir));
        self
    }

    /// The version the segment starts at (must be even). For testing version wrap-around.
    #[doc(hidden)]
    pub fn initial_version(mut self, version: u64) -> Self {
        self.initial_version = version & !1;
        self
    }

    /// Where the file goes and its page size, honouring the huge-page option.
    fn place(&self) -> Result<(ShmDir, u64, bool)> {
        let base = self.dir.clone().unwrap_or_default();
        if self.huge_pages == HugePages::Off {
            return Ok((base, PAGE, false));
        }
        let mount =
            placement::hugetlbfs_at(base.path()).or_else(|| placement::hugetlbfs_mounts().into_iter().next());
        let problem = match &mount {
            None => Some(
                "no hugetlbfs file system is mounted; mount one (`mount -t hugetlbfs none /dev/hugepages`) \
                 and reserve pages (`sysctl vm.nr_hugepages=N`)"
                    .to_string(),
            ),
            Some(m) => {
                let need = layout::total_size(self.size, m.page_size) / m.page_size;
                let free = placement::free_huge_pages(m.page_size);
                (free < need).then(|| {
                    format!(
                        "{need} huge pages of {} KiB are needed and {free} are free; reserve more (`sysctl vm.nr_hugepages=N`)",
                        m.page_size / 1024
                    )
                })
            }
        };
        match (problem, mount) {
            (None, Some(m)) => Ok((ShmDir::new(m.path), m.page_size, true)),
            (Some(reason), _) if self.huge_pages == HugePages::Require => Err(Error::Placement {
                what: "huge pages",
                reason,
            }),
            (reason, _) => {
                tracing::warn!(segment = %self.name, reason = ?reason, "huge pages unavailable; using normal pages");
                Ok((base, PAGE, false))
            }
        }
    }

    /// Creates the segment and becomes its only writer. A segment of that name whose writer died
    /// is replaced; one whose writer lives gives [`Error::WriterExists`].
    pub fn create(&self) -> Result<SegmentWriter> {
        layout::validate_size(self.size)?;
        let (dir, page, huge) = self.place()?;
        let path = object::path_of(&dir, &self.name)?;
        let spec = CreateSpec {
            kind: ObjectKind::Segment,
            layout_version: LAYOUT_VERSION,
            header_size: std::mem::size_of::<SegmentHeader>() as u32,
            total_size: layout::total_size(self.size, page),
            mode: self.mode,
            populate: self.prefault,
            placement: Placement {
                numa_node: self.numa_node,
                lock_in_memory: self.lock_in_memory,
            },
            keep_lock: true,
        };
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        let placed = flag(huge, PLACED_HUGE)
            | flag(self.lock_in_memory, PLACED_LOCKED)
            | flag(self.numa_node.is_some(), PLACED_NUMA);
        for _ in 0..4 {
            let init = |map: &crate::os::Mapping| {
                let h = map.at::<SegmentHeader>(0)?;
                h.data_offset.store(page, Relaxed);
                h.data_size.store(self.size, Relaxed);
                h.page_size.store(page, Relaxed);
                h.type_hash.store(self.type_info.map_or(0, |t| t.hash), Relaxed);
                h.type_size.store(self.type_info.map_or(0, |t| t.size), Relaxed);
                h.placement.store(placed, Relaxed);
                h.numa_node.store(self.numa_node.unwrap_or(0), Relaxed);
                h.layout_hash.store(LAYOUT_HASH, Relaxed);
                h.version.store(self.initial_version, Relaxed);
                h.heartbeat_ns.store(time::monotonic_coarse_ns(), Relaxed);
                Ok(())
            };
            match object::create(&path, &spec, init)? {
                CreateOutcome::Created(obj) => return SegmentWriter::new(self.name.clone(), path, obj),
                CreateOutcome::Exists => take_over_or_refuse(&self.name, &path)?,
            }
        }
        Err(Error::AlreadyExists {
            name: self.name.clone(),
            detail: "it keeps being re-created by another process".into(),
        })
    }
}

/// An existing object holds the name: remove it if it is a segment whose writer is gone (or an
/// abandoned creation), else refuse.
fn take_over_or_refuse(name: &str, path: &Path) -> Result<()> {
    object::take_over(name, path, ObjectKind::Segment).map_err(|pid| Error::WriterExists {
        name: name.to_string(),
        pid,
    })?
}

/// Pointers into a validated segment mapping.
#[derive(Debug)]
struct Mapped {
    obj: OpenObject,
    header: *const SegmentHeader,
    data: *mut u8,
    size: usize,
}

// SAFETY: the pointers point into `obj.map`, owned here; the header is atomics and the data is
// accessed only through atomic copies (readers) or by the single writer.
unsafe impl Send for Mapped {}
// SAFETY: as above; shared access only reads atomically.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(obj: OpenObject) -> Result<Mapped> {
        let path = obj.map.path().to_path_buf();
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            detail,
        };
        let h = obj.map.at::<SegmentHeader>(0)?;
        if h.layout_hash.load(Relaxed) != LAYOUT_HASH {
            return Err(Error::VersionMismatch {
                path: path.clone(),
                found: (h.layout_hash.load(Relaxed) >> 32) as u32,
                supported: (LAYOUT_HASH >> 32) as u32,
            });
        }
        let page = h.page_size.load(Relaxed);
        let offset = h.data_offset.load(Relaxed);
        let size = h.data_size.load(Relaxed);
        if !page.is_power_of_two() || page < PAGE || offset != page {
            return Err(corrupt(format!("page size {page}, data offset {offset}")));
        }
        layout::validate_size(size).map_err(|e| corrupt(e.to_string()))?;
        if layout::total_size(size, page) != obj.map.len() as u64 {
            return Err(corrupt(format!(
                "{size} bytes of data on {page}-byte pages do not make a {}-byte file",
                obj.map.len()
            )));
        }
        // SAFETY: offset + size ≤ mapping length (checked just above).
        let data = unsafe { obj.map.base().add(offset as usize) };
        Ok(Mapped {
            header: h,
            data,
            size: size as usize,
            obj,
        })
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: points into the mapping owned by self (validated in `new`).
        unsafe { &*self.header }
    }

    fn writer(&self) -> ProcessIdentity {
        self.header().object.owner()
    }
}

/// The one writer of a segment. Dropping it removes the segment's name; readers keep the last
/// value and see [`SegmentReader::writer_alive`] turn false.
#[derive(Debug)]
pub struct SegmentWriter {
    name: String,
    path: PathBuf,
    m: Mapped,
    /// Writes since the heartbeat was last stamped.
    unstamped: u32,
}

/// A write stamps the heartbeat once in this many writes: reading a clock costs a quarter of a
/// 1 KiB write, and the heartbeat only informs (liveness comes from the writer's lock).
const STAMP_EVERY: u32 = 32;

impl SegmentWriter {
    /// Creates segment `name` of `size` bytes (4 KiB to 1 GiB, whole 4 KiB pages).
    pub fn create(name: &str, size: u64) -> Result<SegmentWriter> {
        Self::builder(name).size(size).create()
    }

    /// Starts configuring segment `name`.
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder::new(name)
    }

    fn new(name: String, path: PathBuf, obj: OpenObject) -> Result<SegmentWriter> {
        Ok(SegmentWriter {
            name,
            path,
            m: Mapped::new(obj)?,
            unstamped: STAMP_EVERY,
        })
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of data.
    pub fn size(&self) -> usize {
        self.m.size
    }

    /// The current version (even; grows by 2 per write, wrapping).
    pub fn version(&self) -> u64 {
        self.m.header().version.load(Relaxed)
    }

    /// Publishes `bytes` at the start of the segment.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_at(0, bytes)
    }

    /// Publishes `bytes` at `offset`; the rest of the segment keeps its bytes.
    #[inline]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        check_range(offset, bytes.len(), self.m.size)?;
        let h = self.m.header();
        let v = write_begin(&h.version);
        // SAFETY: offset + len ≤ size (checked), inside the mapping we own.
        unsafe { store_bytes(self.m.data.add(offset), bytes) };
        crate::crash_point!("segment.mid_write");
        write_end(&h.version, v);
        self.stamp();
        Ok(())
    }

    /// Stamps the heartbeat on the first write and then every [`STAMP_EVERY`] writes.
    #[inline(always)]
    fn stamp(&mut self) {
        self.unstamped += 1;
        if self.unstamped >= STAMP_EVERY {
            self.unstamped = 0;
            self.heartbeat();
        }
    }

    /// Publishes whatever `f` writes through the view, as one write: readers see all of it or
    /// none of it.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut SegmentView<'_>) -> R) -> R {
        let h = self.m.header();
        let v = write_begin(&h.version);
        let mut view = SegmentView {
            data: self.m.data,
            size: self.m.size,
            _writer: PhantomData,
        };
        let r = f(&mut view);
        write_end(&h.version, v);
        self.stamp();
        r
    }

    /// Stamps the heartbeat (the time of the last sign of life, shown by `xmem ls`). Writes
    /// stamp it too, at least every 32 writes; a writer that may pause calls this to show it lives.
    pub fn heartbeat(&self) {
        self.m
            .header()
            .heartbeat_ns
            .store(time::monotonic_coarse_ns(), Relaxed);
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // Remove the name only if it is still ours (a writer that took over may have replaced it).
        let mine = self.m.obj.file.identity().ok();
        if let Ok(Some(file)) = ShmFile::open_read_only(&self.path) {
            if file.identity().ok() == mine {
                let _ = shm::unlink(&self.path);
            }
        }
    }
}

fn check_range(offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds {
            offset: offset as u64,
            len: len as u64,
            size: size as u64,
        }),
    }
}

/// The segment's data inside [`SegmentWriter::write_with`]: written in place with atomic stores,
/// so that readers racing the write stay within the language's rules.
#[derive(Debug)]
pub struct SegmentView<'a> {
    data: *mut u8,
    size: usize,
    _writer: PhantomData<&'a mut SegmentWriter>,
}

impl SegmentView<'_> {
    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Never true: segments have at least 4 KiB.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Writes `bytes` at `offset`.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        check_range(offset, bytes.len(), self.size)?;
        // SAFETY: in range (checked); the writer is the only writer.
        unsafe { store_bytes(self.data.add(offset), bytes) };
        Ok(())
    }

    /// Writes `value` (native byte order) at `offset`.
    pub fn write_u64(&mut self, offset: usize, value: u64) -> Result<()> {
        self.write(offset, &value.to_ne_bytes())
    }

    /// Reads the current bytes at `offset` (the writer's own data: no race).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        check_range(offset, out.len(), self.size)?;
        // SAFETY: in range (checked).
        unsafe { load_bytes(self.data.add(offset), out) };
        Ok(())
    }
}

/// Configuration for opening a segment. Start with [`SegmentReader::builder`].
#[derive(Debug, Clone)]
pub struct ReaderBuilder {
    name: String,
    dir: Option<ShmDir>,
    max_retries: u32,
    on_writer_gone: OnWriterGone,
    open_timeout: Duration,
    expect_type: Option<TypeInfo>,
}

impl ReaderBuilder {
    /// Attempts before a read gives up with [`Error::Contended`] (default 100,000; each one
    /// that meets a write in progress spins or yields).
    pub fn max_retries(mut self, attempts: u32) -> Self {
        self.max_retries = attempts.max(1);
        self
    }

    /// What reads do once the writer is gone (default: keep returning the last value).
    pub fn on_writer_gone(mut self, policy: OnWriterGone) -> Self {
        self.on_writer_gone = policy;
        self
    }

    /// Directory of the segment's file (default `$XMEM_SHM_DIR` or `/dev/shm`, then any
    /// hugetlbfs mount).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(ShmDir::new(dir));
        self
    }

    /// How long to wait for a writer that is still creating the segment (default 2 s).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Opens the segment.
    pub fn open(&self) -> Result<SegmentReader> {
        let spec = OpenSpec {
            kind: ObjectKind::Segment,
            layout_version: LAYOUT_VERSION,
            header_size: std::mem::size_of::<SegmentHeader>() as u32,
            timeout: self.open_timeout,
            writable: false,
            populate: true,
        };
        let mut dirs = vec![self.dir.clone().unwrap_or_default()];
        if self.dir.is_none() {
            dirs.extend(
                placement::hugetlbfs_mounts()
                    .into_iter()
                    .map(|m| ShmDir::new(m.path)),
            );
        }
        let first = object::path_of(&dirs[0], &self.name)?;
        for dir in &dirs {
            let path = object::path_of(dir, &self.name)?;
            if let Some(obj) = object::open(&path, &spec)? {
                let m = Mapped::new(obj)?;
                self.check_type(&m)?;
                return Ok(SegmentReader {
                    name: self.name.clone(),
                    last_version: None,
                    gone: Cell::new(false),
                    last_liveness_ns: Cell::new(0),
                    max_retries: self.max_retries,
                    on_writer_gone: self.on_writer_gone,
                    m,
                });
            }
        }
        Err(Error::NotFound {
            name: self.name.clone(),
            path: first,
        })
    }

    fn check_type(&self, m: &Mapped) -> Result<()> {
        let h = m.header();
        let (hash, size) = (h.type_hash.load(Relaxed), h.type_size.load(Relaxed));
        let describe = |hash: u64, size: u64| {
            if hash == 0 {
                "raw bytes".to_string()
            } else {
                format!("a {size}-byte typed value")
            }
        };
        match self.expect_type {
            Some(t) if t.hash != hash || t.size != size => Err(Error::TypeMismatch {
                name: self.name.clone(),
                expected: format!("{} ({} bytes)", t.name, t.size),
                found: describe(hash, size),
            }),
            _ => Ok(()),
        }
    }
}

/// A reader of a segment. Readers register nowhere and write nothing: any number may come and
/// go, and one that is killed leaves nothing behind.
#[derive(Debug)]
pub struct SegmentReader {
    name: String,
    m: Mapped,
    last_version: Option<u64>,
    /// Once the writer is seen gone it stays gone (a new writer means a new segment).
    gone: Cell<bool>,
    last_liveness_ns: Cell<u64>,
    max_retries: u32,
    on_writer_gone: OnWriterGone,
}

/// How often (at most) a reader asks the kernel whether an idle writer still lives.
const LIVENESS_INTERVAL_NS: u64 = 10_000_000;

impl SegmentReader {
    /// Opens segment `name` with default settings.
    pub fn open(name: &str) -> Result<SegmentReader> {
        Self::builder(name).open()
    }

    /// Starts configuring a reader of segment `name`.
    pub fn builder(name: &str) -> ReaderBuilder {
        ReaderBuilder {
            name: name.to_string(),
            dir: None,
            max_retries: 100_000,
            on_writer_gone: OnWriterGone::ReturnStale,
            open_timeout: object::DEFAULT_OPEN_TIMEOUT,
            expect_type: None,
        }
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of data.
    pub fn size(&self) -> usize {
        self.m.size
    }

    /// The version of the last value this reader returned (`None` before its first read).
    pub fn version(&self) -> Option<u64> {
        self.last_version
    }

    /// Whether a newer value than the last one returned has been (or is being) written.
    pub fn has_changed(&self) -> bool {
        Some(self.m.header().version.load(Acquire)) != self.last_version
    }

    /// The writer's pid.
    pub fn writer_pid(&self) -> u32 {
        self.m.writer().pid
    }

    /// Time since the writer's last heartbeat (explicit, or one of its last 32 writes).
    pub fn heartbeat_age(&self) -> Duration {
        let last = self.m.header().heartbeat_ns.load(Relaxed);
        Duration::from_nanos(time::monotonic_coarse_ns().saturating_sub(last))
    }

    /// Whether the writer still lives: it holds the segment's lock, which the kernel drops when
    /// it exits or is killed (exact, whatever happens to its pid). Two system calls.
    pub fn writer_alive(&self) -> bool {
        if !self.gone.get() {
            let gone = matches!(self.m.obj.file.try_lock_shared(), Ok(true));
            if gone {
                let _ = self.m.obj.file.unlock();
            }
            self.gone.set(gone);
            self.last_liveness_ns.set(time::monotonic_coarse_ns());
        }
        !self.gone.get()
    }

    /// Copies the value's first `buf.len()` bytes into `buf`; returns its version.
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<u64> {
        check_range(0, buf.len(), self.m.size)?;
        let data = self.m.data;
        // SAFETY: buf.len() ≤ size (checked), so the copy stays in the mapping.
        let ((), v) = self.consistent(|| unsafe { load_bytes(data, buf) })?;
        Ok(v)
    }

    /// The whole value.
    pub fn read(&mut self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.m.size];
        self.read_into(&mut buf)?;
        Ok(buf)
    }

    /// Runs `f` on a snapshot until it ran on one complete value, and returns its result.
    ///
    /// `f` may run more than once and may see a torn value on the runs whose result is thrown
    /// away, so it must not trust what it reads (no unchecked indexing with a value read).
    pub fn read_with<R>(&mut self, mut f: impl FnMut(&Snapshot<'_>) -> R) -> Result<R> {
        let snapshot = Snapshot {
            data: self.m.data,
            size: self.m.size,
            _reader: PhantomData,
        };
        Ok(self.consistent(|| f(&snapshot))?.0)
    }

    /// The seqlock read loop: bounded retries, writer death detected while waiting.
    fn consistent<R>(&mut self, mut copy: impl FnMut() -> R) -> Result<(R, u64)> {
        let version = &self.m.header().version;
        let (mut stuck_on, mut stuck) = (u64::MAX, 0u32);
        for attempt in 0..self.max_retries {
            match read_begin(version) {
                Some(s) => {
                    let r = copy();
                    if read_validate(version, s) {
                        self.check_writer_gone(s)?;
                        self.last_version = Some(s);
                        return Ok((r, s));
                    }
                }
                None => {
                    // A write in progress. Stuck on one odd version, the writer may have died
                    // in the middle of it.
                    let now = version.load(Relaxed);
                    if now == stuck_on {
                        stuck += 1;
                    } else {
                        (stuck_on, stuck) = (now, 0);
                    }
                    if stuck == 64 && !self.writer_alive() {
                        return Err(self.gone_error());
                    }
                }
            }
            if attempt < 32 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Err(if self.writer_alive() {
            Error::Contended {
                name: self.name.clone(),
                attempts: self.max_retries,
            }
        } else {
            self.gone_error()
        })
    }

    /// With [`OnWriterGone::Fail`], a value no one has updated since the last read is checked
    /// against the writer's liveness (at most every 10 ms: it costs system calls).
    fn check_writer_gone(&self, version: u64) -> Result<()> {
        if self.on_writer_gone == OnWriterGone::ReturnStale {
            return Ok(());
        }
        let idle = self.last_version.is_none_or(|last| last == version);
        let due = self.gone.get()
            || time::monotonic_coarse_ns().saturating_sub(self.last_liveness_ns.get())
                >= LIVENESS_INTERVAL_NS;
        if idle && due && !self.writer_alive() {
            return Err(self.gone_error());
        }
        Ok(())
    }

    fn gone_error(&self) -> Error {
        Error::WriterGone {
            name: self.name.clone(),
            pid: self.m.writer().pid,
        }
    }
}

/// The data as [`SegmentReader::read_with`] sees it: read with atomic loads. Until the read is
/// validated, what it returns may be torn.
#[derive(Debug)]
pub struct Snapshot<'a> {
    data: *const u8,
    size: usize,
    _reader: PhantomData<&'a SegmentReader>,
}

impl Snapshot<'_> {
    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Never true: segments have at least 4 KiB.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Copies bytes at `offset` into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        check_range(offset, out.len(), self.size)?;
        // SAFETY: in range (checked).
        unsafe { load_bytes(self.data.add(offset), out) };
        Ok(())
    }

    /// Reads a `u64` (native byte order) at `offset`.
    pub fn read_u64(&self, offset: usize) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }
}

/// A segment holding one plain-old-data value of type `T`.
///
/// ```no_run
/// use xmem_core::segment::Segment;
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Pose { x: f64, y: f64, theta: f64 }
/// # fn main() -> xmem_core::Result<()> {
/// let mut w = Segment::<Pose>::create("robot.pose")?;
/// w.write(&Pose { x: 1.0, y: 2.0, theta: 0.5 })?;
/// let mut r = Segment::<Pose>::open("robot.pose")?;   // TypeMismatch for another type
/// let pose: Pose = r.read()?;
/// # Ok(()) }
/// ```
pub struct Segment<T>(PhantomData<T>);

impl<T: bytemuck::Pod> Segment<T> {
    /// Configures a segment sized for `T` and marked as holding `T`.
    pub fn builder(name: &str) -> SegmentBuilder {
        let t = TypeInfo::of::<T>();
        let mut b = SegmentBuilder::new(name).size(t.size.max(1).div_ceil(PAGE) * PAGE);
        b.type_info = Some(t);
        b
    }

    /// Creates the segment and becomes its writer.
    pub fn create(name: &str) -> Result<TypedWriter<T>> {
        Self::builder(name).create().map(|inner| TypedWriter {
            inner,
            _t: PhantomData,
        })
    }

    /// Opens the segment; [`Error::TypeMismatch`] if it holds another type.
    pub fn open(name: &str) -> Result<TypedReader<T>> {
        let mut b = SegmentReader::builder(name);
        b.expect_type = Some(TypeInfo::of::<T>());
        Self::open_with(b)
    }

    /// Opens the segment with reader settings.
    pub fn open_with(mut builder: ReaderBuilder) -> Result<TypedReader<T>> {
        builder.expect_type = Some(TypeInfo::of::<T>());
        builder.open().map(|inner| TypedReader {
            inner,
            _t: PhantomData,
        })
    }
}

/// The writer of a [`Segment<T>`].
pub struct TypedWriter<T> {
    inner: SegmentWriter,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> TypedWriter<T> {
    /// Publishes `value`.
    pub fn write(&mut self, value: &T) -> Result<()> {
        self.inner.write(bytemuck::bytes_of(value))
    }

    /// Publishes `f` applied to the current value (read back from the segment).
    pub fn update(&mut self, f: impl FnOnce(&mut T)) -> Result<()> {
        let mut value: T = bytemuck::Zeroable::zeroed();
        self.inner.write_with(|view| -> Result<()> {
            view.read(0, bytemuck::bytes_of_mut(&mut value))?;
            f(&mut value);
            view.write(0, bytemuck::bytes_of(&value))
        })
    }

    /// The untyped writer.
    pub fn inner(&self) -> &SegmentWriter {
        &self.inner
    }
}

/// A reader of a [`Segment<T>`].
pub struct TypedReader<T> {
    inner: SegmentReader,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> TypedReader<T> {
    /// The value (always one complete write).
    pub fn read(&mut self) -> Result<T> {
        let mut value: T = bytemuck::Zeroable::zeroed();
        self.inner.read_into(bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// The untyped reader (version, liveness, ...).
    pub fn inner(&mut self) -> &mut SegmentReader {
        &mut self.inner
    }
}

/// What `xmem ls` and `xmem inspect` show about a segment.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Bytes of data.
    pub size: u64,
    /// Page size of the mapping.
    pub page_size: u64,
    /// Current version.
    pub version: u64,
    /// The writer.
    pub writer: ProcessIdentity,
    /// Whether the writer holds the segment's lock.
    pub writer_alive: bool,
    /// Time since the last write or heartbeat.
    pub heartbeat_age: Duration,
    /// Size of the typed value (0: raw bytes).
    pub type_size: u64,
    /// On huge pages.
    pub huge_pages: bool,
    /// Locked in RAM.
    pub locked: bool,
    /// Bound to this NUMA node.
    pub numa_node: Option<u32>,
}

/// Reads a segment's header without joining it.
pub fn inspect_path(path: &Path, label: &str) -> Result<SegmentInfo> {
    let r = ReaderBuilder {
        name: label.to_string(),
        dir: path.parent().map(ShmDir::new),
        ..SegmentReader::builder(label)
    }
    .open()?;
    let h = r.m.header();
    let placed = h.placement.load(Relaxed);
    Ok(SegmentInfo {
        size: r.m.size as u64,
        page_size: h.page_size.load(Relaxed),
        version: h.version.load(Acquire),
        writer: r.m.writer(),
        type_size: h.type_size.load(Relaxed),
        huge_pages: placed & PLACED_HUGE != 0,
        locked: placed & PLACED_LOCKED != 0,
        numa_node: (placed & PLACED_NUMA != 0).then(|| h.numa_node.load(Relaxed)),
        heartbeat_age: r.heartbeat_age(),
        writer_alive: r.writer_alive(),
    })
}

/// Removes the segment at `path` if its writer is gone. Returns whether it did (or, with
/// `dry_run`, would).
pub fn clean_path(path: &Path, dry_run: bool) -> Result<bool> {
    match object::probe(path)? {
        Some(info) if info.kind == Some(ObjectKind::Segment) => {}
        _ => return Ok(false), // gone, or not a segment (pools hold no lock: never judge them here)
    }
    let Some(file) = ShmFile::open_read_only(path)? else {
        return Ok(false);
    };
    if !file.try_lock_exclusive()? {
        return Ok(false); // a writer holds it
    }
    if !dry_run {
        shm::unlink(path)?;
    }
    Ok(true)
}
