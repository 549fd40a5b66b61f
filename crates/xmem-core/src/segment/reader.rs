//! Readers of a segment: [`ReaderBuilder`], [`SegmentReader`], and the views a write or a
//! read works through ([`SegmentView`], [`Snapshot`]).

use super::*;

/// The segment's data inside [`SegmentWriter::write_with`]: written in place with atomic stores,
/// so that readers racing the write stay within the language's rules.
#[derive(Debug)]
pub struct SegmentView<'a> {
    pub(super) data: *mut u8,
    pub(super) size: usize,
    pub(super) _writer: PhantomData<&'a mut SegmentWriter>,
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
    pub(super) name: String,
    pub(super) dir: Option<ShmDir>,
    pub(super) max_retries: u32,
    pub(super) on_writer_gone: OnWriterGone,
    pub(super) open_timeout: Duration,
    pub(super) expect_type: Option<TypeInfo>,
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

    pub(super) fn check_type(&self, m: &Mapped) -> Result<()> {
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
    pub(super) name: String,
    pub(super) m: Mapped,
    pub(super) last_version: Option<u64>,
    /// Once the writer is seen gone it stays gone (a new writer means a new segment).
    pub(super) gone: Cell<bool>,
    pub(super) last_liveness_ns: Cell<u64>,
    pub(super) max_retries: u32,
    pub(super) on_writer_gone: OnWriterGone,
}

/// How often (at most) a reader asks the kernel whether an idle writer still lives.
pub(super) const LIVENESS_INTERVAL_NS: u64 = 10_000_000;

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
    pub(super) fn consistent<R>(&mut self, mut copy: impl FnMut() -> R) -> Result<(R, u64)> {
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
    pub(super) fn check_writer_gone(&self, version: u64) -> Result<()> {
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

    pub(super) fn gone_error(&self) -> Error {
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
    pub(super) data: *const u8,
    pub(super) size: usize,
    pub(super) _reader: PhantomData<&'a SegmentReader>,
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
