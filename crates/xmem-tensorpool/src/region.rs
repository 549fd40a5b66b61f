//! Region files (§2.1, §2.7): a header ring or a payload pool, mapped.
//!
//! A producer (without a driver) creates its regions: the file is sized, pre-faulted, its
//! superblock written, and only then is it announced. A consumer maps a region read-only and
//! checks its superblock against what it was told (fail closed).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use xmem_core::os::map::MapOptions;
use xmem_core::os::Mapping;
use xmem_core::segment::seqlock;

use crate::error::{Error, Result};
use crate::layout::{RegionType, Superblock, ACTIVITY_OFFSET, SLOT_SIZE, SUPERBLOCK_SIZE};
use crate::paths::AllowedDirs;
use crate::uri::ShmUri;

fn io(path: &Path, what: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn core(path: &Path, e: xmem_core::os::OsError) -> Error {
    Error::Io {
        what: "map",
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// A mapped region.
pub struct Region {
    map: Mapping,
    superblock: Superblock,
    path: PathBuf,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("superblock", &self.superblock)
            .finish()
    }
}

/// Bytes per slot: 256 in a header ring, the stride in a pool.
fn slot_size(sb: &Superblock) -> usize {
    if sb.region_type == RegionType::HeaderRing as i16 {
        SLOT_SIZE
    } else {
        sb.stride_bytes as usize
    }
}

/// Creates `dir` and its parents. A producer that ends removes the directories it leaves empty;
/// one doing so while this creates below them can take away a parent just made: then again.
fn create_dirs(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 8 => tries += 1,
            Err(e) => return Err(io(dir, "create the directory of", e)),
        }
    }
}

/// The size of a region: its superblock and its slots.
pub fn region_size(sb: &Superblock) -> u64 {
    SUPERBLOCK_SIZE as u64 + u64::from(sb.nslots) * slot_size(sb) as u64
}

impl Region {
    /// Creates (or replaces) the region file at `path` for `sb`, mode `mode`, pre-faulted, its
    /// superblock written last.
    pub fn create(path: &Path, sb: &Superblock, mode: u32) -> Result<Region> {
        sb.validate()?;
        if let Some(dir) = path.parent() {
            create_dirs(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| io(path, "create", e))?;
        let size = region_size(sb);
        file.set_len(size).map_err(|e| io(path, "size", e))?;
        let map = Mapping::map(
            &file,
            size as usize,
            MapOptions {
                writable: true,
                populate: true,
            },
            path,
        )
        .map_err(|e| core(path, e))?;
        map.prefault();
        let bytes = sb.encode();
        // SAFETY: the first 64 bytes of our own mapping, mapped for the call.
        unsafe { seqlock::store_bytes(map.base(), &bytes) };
        file.sync_all().map_err(|e| io(path, "sync", e))?;
        Ok(Region {
            map,
            superblock: *sb,
            path: path.to_path_buf(),
        })
    }

    /// Maps the region at `path` read-only and checks its superblock against `want` (the
    /// announce): magic, layout, epoch, stream, type, pool id, slots and stride (W-7.1-1).
    pub fn open(path: &Path, want: &Superblock) -> Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW) // never follow a symlink to a region (§2.6)
            .open(path)
            .map_err(|e| io(path, "open", e))?;
        Region::open_file(file, path, want, false)
    }

    /// Maps the region announced as `uri` after the containment and permission checks of
    /// `allowed` (W-15.10-1), then checks its superblock against `want`.
    pub fn open_announced(uri: &ShmUri, allowed: &AllowedDirs, want: &Superblock) -> Result<Region> {
        let file = allowed.open(uri.path(), uri.require_hugepages())?;
        Region::open_file(file, uri.path(), want, false)
    }

    /// As [`Region::open_announced`], mapped read-write: a producer attached through a driver
    /// writes the regions the driver made.
    pub fn open_announced_writable(uri: &ShmUri, allowed: &AllowedDirs, want: &Superblock) -> Result<Region> {
        let file = allowed.open_writable(uri.path(), uri.require_hugepages())?;
        Region::open_file(file, uri.path(), want, true)
    }

    /// Maps an opened region file (read-only unless `writable`) and checks its superblock
    /// against `want`.
    fn open_file(file: std::fs::File, path: &Path, want: &Superblock, writable: bool) -> Result<Region> {
        let meta = file.metadata().map_err(|e| io(path, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::Io {
                what: "open",
                path: path.to_path_buf(),
                detail: "not a regular file".into(),
            });
        }
        if meta.len() < SUPERBLOCK_SIZE as u64 {
            return Err(Error::Truncated {
                what: "a region file",
                need: SUPERBLOCK_SIZE,
                got: meta.len() as usize,
            });
        }
        let options = MapOptions {
            writable,
            populate: writable,
        };
        let map = Mapping::map(&file, meta.len() as usize, options, path).map_err(|e| core(path, e))?;
        let mut bytes = [0u8; SUPERBLOCK_SIZE];
        // SAFETY: the file is at least 64 bytes, all mapped.
        unsafe { seqlock::load_bytes(map.base(), &mut bytes) };
        let sb = Superblock::decode(&bytes)?;
        sb.check_against(want)?;
        let need = region_size(&sb);
        if meta.len() < need {
            return Err(Error::Truncated {
                what: "a region's slots",
                need: need as usize,
                got: meta.len() as usize,
            });
        }
        Ok(Region {
            map,
            superblock: sb,
            path: path.to_path_buf(),
        })
    }

    /// The superblock as mapped.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first byte of slot `i`'s area (header slot, or payload slot of `stride` bytes).
    pub(crate) fn slot_ptr(&self, i: u32) -> *mut u8 {
        let size = slot_size(&self.superblock);
        let i = i & (self.superblock.nslots - 1);
        // In bounds: `open` and `create` checked the file holds every slot.
        self.map.base().wrapping_add(SUPERBLOCK_SIZE + i as usize * size)
    }

    /// The first `len` bytes of payload slot `i` where they lie, as atomic bytes: the producer
    /// may be rewriting them while they are read. `len` was validated against the stride.
    pub(crate) fn payload_view(&self, i: u32, len: usize) -> &[AtomicU8] {
        let off = SUPERBLOCK_SIZE + (i & (self.superblock.nslots - 1)) as usize * slot_size(&self.superblock);
        self.map
            .slice_at::<AtomicU8>(off, len)
            .expect("a validated payload lies in its pool's mapping")
    }

    /// The commit word of header slot `i` (slots are 8-byte aligned: 64 + i·256).
    pub(crate) fn commit_word(&self, i: u32) -> &AtomicU64 {
        let off = SUPERBLOCK_SIZE + (i & (self.superblock.nslots - 1)) as usize * SLOT_SIZE;
        self.map
            .at::<AtomicU64>(off)
            .expect("slots were checked to fit the mapping")
    }

    /// The commit word of header slot `i` now (`seq << 1 | committed`); `None` for a pool.
    pub fn commit_word_now(&self, i: u32) -> Option<u64> {
        (self.superblock.region_type == RegionType::HeaderRing as i16)
            .then(|| self.commit_word(i).load(Ordering::Acquire))
    }

    /// A copy of header slot `i` as it is now: it may be mid-write, so decode it and compare its
    /// commit word with [`Region::commit_word_now`] after, as a consumer does, before trusting it.
    /// `None` for a payload pool (its slots are payload, not headers).
    pub fn slot_image(&self, i: u32) -> Option<[u8; SLOT_SIZE]> {
        if self.superblock.region_type != RegionType::HeaderRing as i16 {
            return None;
        }
        let mut image = [0u8; SLOT_SIZE];
        // SAFETY: header slot `i` (masked to the ring) lies in the mapping, checked when mapped;
        // the copy is made of relaxed atomic loads, so a concurrent writer is no data race.
        unsafe { seqlock::load_bytes(self.slot_ptr(i), &mut image) };
        Some(image)
    }

    /// Opens any region file read-only and validates its superblock on its own (no announce to
    /// check it against): for tools that look at what exists.
    pub fn open_any(path: &Path) -> Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| io(path, "open", e))?;
        let mut bytes = [0u8; SUPERBLOCK_SIZE];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0)
            .map_err(|e| io(path, "read the superblock of", e))?;
        let sb = Superblock::decode(&bytes)?;
        sb.validate()?;
        Region::open_file(file, path, &sb, false)
    }

    /// Stamps `activityTimestampNs` (the producer, about once per announce period).
    pub fn touch(&self, now_ns: u64) {
        let w = self
            .map
            .at::<AtomicU64>(ACTIVITY_OFFSET)
            .expect("the superblock is mapped");
        w.store(now_ns, Ordering::Relaxed);
    }

    /// The activity time stamp now in the file.
    pub fn activity_ns(&self) -> u64 {
        self.map
            .at::<AtomicU64>(ACTIVITY_OFFSET)
            .expect("the superblock is mapped")
            .load(Ordering::Relaxed)
    }
}
