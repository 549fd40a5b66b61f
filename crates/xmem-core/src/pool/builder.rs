//! Creating and opening pools: [`PoolBuilder`], the header a creator writes, and removing a
//! pool nobody uses.

use super::*;

/// Configuration for creating or opening a pool. Start with [`BufferPool::builder`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    pub(super) name: Option<String>,
    pub(super) dir: ShmDir,
    pub(super) count: u32,
    pub(super) size: u64,
    pub(super) alignment: u32,
    pub(super) mode: u32,
    pub(super) prefault: bool,
    pub(super) open_timeout: Duration,
    pub(super) spin: Duration,
    /// Manager word of the slot to attach (a stream subscriber's private attachment).
    pub(super) manager: u64,
    /// Map the buffers read-only and refuse write access (a stream subscriber's attachment).
    pub(super) read_only: bool,
    /// For a device pool: its allocation, recorded in the header at create.
    pub(super) device: Option<DeviceRecord>,
}

impl PoolBuilder {
    pub(super) fn new(name: Option<&str>) -> Self {
        PoolBuilder {
            name: name.map(str::to_string),
            dir: ShmDir::default(),
            count: 8,
            size: 0,
            alignment: 64,
            mode: 0o600,
            prefault: true,
            open_timeout: object::DEFAULT_OPEN_TIMEOUT,
            spin: DEFAULT_SPIN,
            manager: 0,
            read_only: false,
            device: None,
        }
    }

    /// Number of buffers (default 8).
    pub fn buffers(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Bytes per buffer (required when creating).
    pub fn buffer_size(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    /// Alignment of each buffer: a power of two from 8 to 2 MiB (default 64, a cache line).
    pub fn alignment(mut self, alignment: u32) -> Self {
        self.alignment = alignment;
        self
    }

    /// File mode of the pool (default `0o600`; `0o660` shares it with the group).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Fault every page in at create/open so that no acquire pays for a first touch (default on).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Directory of the shared-memory file (default `$XMEM_SHM_DIR` or `/dev/shm`).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = ShmDir::new(dir);
        self
    }

    /// How long `open` waits for a creator that is still initialising (default 2 s).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// How long a blocking acquire spins before it parks (default 5 µs).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Creates a device pool: the buffers live in the allocation `device` describes, which the
    /// caller made and hands to every process that attaches (xmem-device does both); the pool's
    /// file holds only the bookkeeping. `device.bytes` must hold `count × stride`.
    pub fn device_storage(mut self, device: DeviceRecord) -> Self {
        self.device = Some(device);
        self
    }

    /// Raises the buffers' alignment to at least `alignment` (a device's own minimum).
    pub fn alignment_at_least(mut self, alignment: u32) -> Self {
        self.alignment = self.alignment.max(alignment);
        self
    }

    /// Bytes a device allocation needs for this configuration: `count × stride`.
    pub fn device_bytes_needed(&self) -> Result<u64> {
        Ok(PoolLayout::compute_for(self.config(), Storage::Device)?.arena_bytes)
    }

    /// The pool's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(super) fn storage(&self) -> Storage {
        if self.device.is_some() {
            Storage::Device
        } else {
            Storage::Host
        }
    }

    pub(super) fn layout(&self) -> Result<PoolLayout> {
        let layout = PoolLayout::compute_for(self.config(), self.storage())?;
        if let Some(device) = &self.device {
            if device.bytes < layout.arena_bytes {
                return Err(Error::InvalidConfig(format!(
                    "a device allocation of {} bytes cannot hold {} buffers of stride {}",
                    device.bytes, layout.config.count, layout.stride
                )));
            }
        }
        Ok(layout)
    }

    pub(super) fn config(&self) -> PoolConfig {
        PoolConfig {
            count: self.count,
            size: self.size,
            alignment: self.alignment,
        }
    }

    pub(super) fn path(&self) -> Result<PathBuf> {
        match &self.name {
            Some(name) => object::path_of(&self.dir, name),
            None => Err(Error::InvalidConfig(
                "an anonymous pool has no name to open".into(),
            )),
        }
    }

    pub(super) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| "anonymous".into())
    }

    /// Creates the pool; fails with [`Error::AlreadyExists`] if a live one has the name. A pool
    /// of that name whose processes are all dead is removed and replaced.
    pub fn create(&self) -> Result<BufferPool> {
        let path = self.path()?;
        object::refuse_hugetlbfs(&self.dir, "a pool")?;
        let layout = self.layout()?;
        for _ in 0..8 {
            match object::create(&path, &self.create_spec(&layout), |map| {
                init_pool(map, &layout, self.device.as_ref())
            })? {
                CreateOutcome::Created(obj) => return self.finish_open(obj, Some(path)),
                CreateOutcome::Exists => {
                    if !remove_if_orphan(&path, self.open_timeout)? {
                        return Err(Error::AlreadyExists {
                            name: self.label(),
                            detail: describe_users(&path, self.open_timeout),
                        });
                    }
                }
            }
        }
        Err(Error::AlreadyExists {
            name: self.label(),
            detail: "it keeps being re-created by another process".into(),
        })
    }

    /// Creates an anonymous pool (a memfd): no name, shared by handing [`BufferPool::fd`] to
    /// other processes, gone when the last of them closes it.
    pub fn create_anonymous(&self) -> Result<BufferPool> {
        let layout = self.layout()?;
        let obj = object::create_anonymous(&self.create_spec(&layout), |map| {
            init_pool(map, &layout, self.device.as_ref())
        })?;
        self.finish_open(obj, None)
    }

    /// Opens an existing pool.
    pub fn open(&self) -> Result<BufferPool> {
        let path = self.path()?;
        for _ in 0..8 {
            let Some(file) = ShmFile::open(&path)? else {
                return Err(Error::NotFound {
                    name: self.label(),
                    path,
                });
            };
            if let Some(pool) = reuse(&file)? {
                return Ok(pool);
            }
            let obj = object::open_file(file, &open_spec(true, self.prefault, self.open_timeout))?;
            match self.finish_open(obj, Some(path.clone())) {
                Err(Error::NotFound { .. }) => continue, // it was closing: look again
                other => return other,
            }
        }
        Err(Error::NotFound {
            name: self.label(),
            path,
        })
    }

    /// Opens the pool if it exists (checking that its configuration matches), else creates it.
    pub fn open_or_create(&self) -> Result<BufferPool> {
        for _ in 0..8 {
            match self.open() {
                Ok(pool) => {
                    let have = pool.config();
                    let want = self.config();
                    if have != want {
                        return Err(Error::ConfigMismatch {
                            name: self.label(),
                            detail: format!("it has {have:?}, asked for {want:?}"),
                        });
                    }
                    return Ok(pool);
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.create() {
                Err(Error::AlreadyExists { .. }) => continue, // lost a race: open theirs
                other => return other,
            }
        }
        self.open()
    }

    pub(super) fn create_spec(&self, layout: &PoolLayout) -> CreateSpec {
        CreateSpec {
            kind: ObjectKind::Pool,
            layout_version: LAYOUT_VERSION,
            header_size: std::mem::size_of::<PoolHeader>() as u32,
            total_size: layout.total,
            mode: self.mode,
            populate: self.prefault,
            placement: Default::default(),
            keep_lock: false,
        }
    }

    pub(super) fn finish_open(&self, obj: OpenObject, path: Option<PathBuf>) -> Result<BufferPool> {
        let key = obj.file.identity()?;
        let map = PoolMap::new(self.label(), obj)?;
        let creator_ns = map.header().object.owner_pidns.load(Relaxed);
        let pidns = process::pid_namespace();
        if creator_ns != 0 && pidns != 0 && creator_ns != pidns {
            return Err(Error::ForeignPidNamespace { pool: self.label() });
        }
        let me = ProcessIdentity::current();
        let slot = match registry::attach(&map, me, pidns, self.manager) {
            Ok(slot) => slot,
            Err(AttachError::Full) => {
                return Err(Error::TooManyProcesses {
                    pool: self.label(),
                    max: MAX_PROCESSES,
                })
            }
            Err(AttachError::Closing) => {
                return Err(Error::NotFound {
                    name: self.label(),
                    path: map.path_buf(),
                })
            }
        };
        // A stream subscriber's attachment only reads buffers: map them read-only, so that a
        // write through a view that knows no read-only flag (a torch tensor, a raw pointer)
        // faults here instead of changing what the publisher and other subscribers see.
        if self.read_only && map.storage == Storage::Host {
            let arena = map.layout.arena;
            map.object
                .map
                .protect_read_only(arena, map.object.map.len() - arena)?;
        }
        // Return what dead processes left behind before anyone waits for it.
        registry::sweep(&map, me, false);
        let count = map.layout.config.count as usize;
        let inner = PoolInner {
            local: (0..count).map(|_| LocalEntry::default()).collect(),
            me: slot_bit(slot),
            slot,
            identity: me,
            parking: Mutex::new(0),
            spin: self.spin,
            cursor: AtomicUsize::new(slot),
            handles: AtomicUsize::new(0),
            private: self.manager != 0,
            read_only: self.read_only,
            key,
            path,
            kept: KeptHints::new(map.hint_words().len()),
            map,
        };
        let reusable = !inner.private;
        Ok(BufferPool {
            ptr: lifetime::register(inner, key, reusable),
        })
    }
}

/// Writes a fresh pool's header and marks every buffer free.
fn init_pool(map: &crate::os::Mapping, layout: &PoolLayout, device: Option<&DeviceRecord>) -> Result<()> {
    let h = map.at::<PoolHeader>(0)?;
    h.buffer_count.store(layout.config.count, Relaxed);
    h.alignment.store(layout.config.alignment, Relaxed);
    h.buffer_size.store(layout.config.size, Relaxed);
    h.pool_id.store(random_id(), Relaxed);
    match device {
        None => h.storage.store(Storage::Host.code(), Relaxed),
        Some(device) => {
            h.storage.store(Storage::Device.code(), Relaxed);
            h.device_kind.store(device.kind.code(), Relaxed);
            for (d, s) in h.device_uuid.iter().zip(device.uuid) {
                d.store(s, Relaxed);
            }
            h.device_bytes.store(device.bytes, Relaxed);
        }
    }
    h.max_processes.store(MAX_PROCESSES as u32, Relaxed);
    h.layout_hash.store(layout::LAYOUT_HASH, Relaxed);
    let hints = map.slice_at::<AtomicU64>(layout.hints, layout.hint_words)?;
    for (w, word) in hints.iter().enumerate() {
        let first = w as u64 * 64;
        let n = (u64::from(layout.config.count) - first).min(64);
        word.store(if n == 64 { u64::MAX } else { (1u64 << n) - 1 }, Relaxed);
    }
    Ok(())
}

fn random_id() -> u64 {
    let id = crate::os::random::u64();
    // The token carries the low 32 bits; keep them non-zero.
    if id as u32 == 0 {
        id | 1
    } else {
        id
    }
}

/// Removes the pool at `path` if no live process uses it (or it was never finished).
/// Returns whether the name is free now.
fn remove_if_orphan(path: &Path, timeout: Duration) -> Result<bool> {
    let obj = match object::open(path, &open_spec(true, false, timeout)) {
        Ok(Some(obj)) => obj,
        Ok(None) => return Ok(true),
        Err(Error::Abandoned { .. }) => {
            return crate::os::shm::unlink(path).map(|_| true).map_err(Error::from)
        }
        Err(e) => return Err(e),
    };
    let map = PoolMap::new(path.display().to_string(), obj)?;
    registry::sweep(&map, ProcessIdentity::current(), false);
    close_if_unused(&map, path)
}

/// Closes and unlinks the pool if nobody is attached. Returns whether it is gone.
pub(super) fn close_if_unused(map: &PoolMap, path: &Path) -> Result<bool> {
    if registry::anyone_attached(map) {
        return Ok(false);
    }
    // CLOSED stops any process that is attaching right now; it will look for the name again.
    match map
        .header()
        .registry
        .compare_exchange(0, layout::REGISTRY_CLOSED, AcqRel, Acquire)
    {
        Ok(_) => {}
        Err(layout::REGISTRY_CLOSED) => {} // its last process is removing it already
        Err(_) => return Ok(false),        // someone attached meanwhile
    }
    unlink_if_same(path, map)?;
    Ok(true)
}

/// Unlinks `path` only if it still names the object `map` maps (not a newer pool of that name).
pub(super) fn unlink_if_same(path: &Path, map: &PoolMap) -> Result<()> {
    crate::os::shm::unlink_if_same(path, map.object.file.identity()?)
        .map(|_| ())
        .map_err(Error::from)
}

fn describe_users(path: &Path, timeout: Duration) -> String {
    match object::open(path, &open_spec(false, false, timeout)) {
        Ok(Some(obj)) => match PoolMap::new(String::new(), obj) {
            Ok(map) => {
                let pids = registry::live_pids(&map);
                format!("attached processes: {pids:?}")
            }
            Err(e) => e.to_string(),
        },
        Ok(None) => "it just disappeared".into(),
        Err(e) => e.to_string(),
    }
}
