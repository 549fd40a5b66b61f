//! Making and opening segments: [`SegmentBuilder`] and its placement options, and taking over
//! a name whose writer is gone.

use super::*;

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
    pub(super) name: String,
    pub(super) dir: Option<ShmDir>,
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) huge_pages: HugePages,
    pub(super) numa_node: Option<u32>,
    pub(super) lock_in_memory: bool,
    pub(super) prefault: bool,
    pub(super) type_info: Option<TypeInfo>,
    pub(super) initial_version: u64,
}

/// What a typed segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TypeInfo {
    pub(super) hash: u64,
    pub(super) size: u64,
    pub(super) name: &'static str,
}

impl TypeInfo {
    pub(super) fn of<T: 'static>() -> TypeInfo {
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
    pub(super) fn new(name: &str) -> Self {
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
    pub(super) fn place(&self) -> Result<(ShmDir, u64, bool)> {
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
pub(super) fn take_over_or_refuse(name: &str, path: &Path) -> Result<()> {
    object::take_over(name, path, ObjectKind::Segment).map_err(|pid| Error::WriterExists {
        name: name.to_string(),
        pid,
    })?
}
